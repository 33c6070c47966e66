"""Tables of the enrollment store (SQLAlchemy Core, portable across SQLite and PostgreSQL).

* ``people``: who can be recognised; ``external_ref`` links to the operator's own records.
* ``templates``: one embedding per accepted enrollment image (float32 bytes, unit norm).
* ``changes``: the change log. ``seq`` is monotonic; one row per template added
  (``enroll``) and per person erased (``delete``). Snapshots record the highest ``seq``
  they include, so a matcher knows which deltas a snapshot already covers.
* ``unknown_faces``, ``unknown_meta``: clusters of unknown faces (``index_builder.unknowns``):
  per unknown sighting the embedding of its crop and its cluster; the clusters' counters.
* ``api_keys``: the API keys of ``facerec keys create`` (``index_builder.keys``): a public
  id, name, role and the key's SHA-256 only; revoked keys stay listed.
* ``audit_records``, ``audit_subjects``: who called what on biometric data and results
  (``index_builder.audit``): one row per call, one per person it involved. Append-only but
  for erasure (a person's id becomes a tombstone id) and retention.

Tables carry no schema name: tests isolate themselves with ``schema_translate_map``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()
_Json = JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments an INTEGER PRIMARY KEY; BigInteger stays BIGINT elsewhere
_Seq = BigInteger().with_variant(Integer(), "sqlite")

people = Table(
    "people",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("external_ref", String(256), nullable=True, unique=True),
    Column("display_name", String(256), nullable=False),
    Column("metadata", _Json, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

templates = Table(
    "templates",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("person_id", String(64), ForeignKey("people.id", ondelete="CASCADE"), nullable=False),
    Column("embedding", LargeBinary, nullable=False),
    Column("model_id", String(128), nullable=False),
    Column("quality", _Json, nullable=False, default=dict),
    Column("image_sha256", String(64), nullable=False),
    Column("seq", _Seq, nullable=False, doc="seq of the change that added this template"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_templates_person", "person_id"),
    Index("ix_templates_model_seq", "model_id", "seq"),
)

changes = Table(
    "changes",
    metadata,
    Column("seq", _Seq, primary_key=True, autoincrement=True),
    Column(
        "kind",
        String(16),
        nullable=False,
        doc="enroll | delete (a person) | remove (one template)",
    ),
    Column("person_id", String(64), nullable=False),
    Column("template_id", String(64), nullable=True),
    Column("model_id", String(128), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    sqlite_autoincrement=True,  # never reuse a seq, even after the highest row is gone
)

unknown_faces = Table(
    "unknown_faces",
    metadata,
    Column("sighting_id", String(128), primary_key=True),
    Column(
        "cluster_id",
        BigInteger,
        nullable=True,
        doc="null: not clustered (its crop could not be embedded, see refused)",
    ),
    Column("embedding", LargeBinary, nullable=True, doc="of the crop; float32 bytes, unit norm"),
    Column("model_id", String(128), nullable=True),
    Column("camera_id", String(128), nullable=False),
    Column("region", String(128), nullable=False),
    Column("first_seen_ms", BigInteger, nullable=False),
    Column("last_seen_ms", BigInteger, nullable=False),
    Column("quality", Float, nullable=False, doc="the sighting's best_quality when embedded"),
    Column("evidence_key", String(512), nullable=True, doc="the crop embedded"),
    Column("status", String(16), nullable=False, doc="the sighting's: open or closed"),
    Column("refused", String(512), nullable=True, doc="why the crop was not embedded"),
    Index("ix_unknown_faces_cluster", "cluster_id"),
)

unknown_meta = Table(
    "unknown_meta",
    metadata,
    Column("name", String(32), primary_key=True),
    Column(
        "value",
        BigInteger,
        nullable=False,
        doc="generation: bumped by every write (another process reloads); next_cluster_id",
    ),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True, doc="public: part of the key, shown by list"),
    Column("name", String(128), nullable=False, doc="who holds the key"),
    Column("role", String(16), nullable=False),
    Column("key_hash", String(80), nullable=False, doc="sha256:<hex> of the whole key"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

audit_records = Table(
    "audit_records",
    metadata,
    Column("id", _Seq, primary_key=True, autoincrement=True),
    Column("at_ms", BigInteger, nullable=False, doc="when the call ended (epoch ms)"),
    Column("key_name", String(128), nullable=False, doc="'' when no valid key was given"),
    Column("role", String(16), nullable=False),
    Column("action", String(32), nullable=False, doc="recognize, verify, people.read, ..."),
    Column("method", String(8), nullable=False),
    Column("route", String(256), nullable=False, doc="route template: /people/{person_id}"),
    Column("status", Integer, nullable=False, doc="HTTP status of the answer"),
    Column("outcome", String(64), nullable=False, doc="ok, or the error's reason code"),
    Index("ix_audit_records_at", "at_ms"),
    Index("ix_audit_records_key", "key_name", "at_ms"),
    sqlite_autoincrement=True,
)

audit_subjects = Table(
    "audit_subjects",
    metadata,
    Column(
        "record_id",
        _Seq,
        ForeignKey("audit_records.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("person_id", String(64), primary_key=True, doc="or the tombstone id after erasure"),
    Index("ix_audit_subjects_person", "person_id"),
)
