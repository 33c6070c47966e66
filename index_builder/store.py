"""The enrollment store: people, their face templates and the change log.

One implementation on SQLAlchemy 2.x Core: SQLite by default
(``sqlite:///<data_dir>/enrollment.sqlite``), PostgreSQL in production
(``postgresql+psycopg://...``). Every write is one transaction that also appends to the
change log, so ``seq`` order is commit order: on PostgreSQL writers take a transaction-level
advisory lock (enrollment is rare; this keeps a snapshot's ``max_change_seq`` exact).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, create_engine, delete, event, func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from facerec.config import Settings
from facerec.errors import FaceRecError
from facerec.models import EMBEDDING_DIM
from facerec.sqlite_wal import use_wal
from index_builder.schema import changes, metadata, people, templates

_LOCK_KEY = 0x66616365  # "face": PostgreSQL advisory lock serialising change-log writers
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class PersonNotFound(FaceRecError):
    reason = "person_not_found"


class TemplateNotFound(FaceRecError):
    reason = "template_not_found"


class DuplicatePerson(FaceRecError):
    """A person with this id or external_ref already exists."""

    reason = "conflict"


class DuplicateTemplate(FaceRecError):
    """The person already has a template from this very photo (same sha256)."""

    reason = "duplicate_photo"

    def __init__(self, message: str, existing: Template) -> None:
        super().__init__(message)
        self.existing = existing


@dataclass(frozen=True)
class Person:
    id: str
    display_name: str
    external_ref: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    template_count: int = 0


@dataclass(frozen=True)
class Template:
    id: str
    person_id: str
    model_id: str
    quality: dict[str, Any]
    image_sha256: str
    seq: int
    created_at: datetime
    embedding: np.ndarray | None = field(default=None, repr=False)


@dataclass(frozen=True)
class NewTemplate:
    """A face template about to be stored: what enrollment computed from one photo."""

    embedding: np.ndarray = field(repr=False)
    model_id: str
    quality: dict[str, Any] = field(default_factory=dict)
    image_sha256: str = ""


@dataclass(frozen=True)
class Change:
    seq: int
    kind: str
    person_id: str
    template_id: str | None
    model_id: str | None
    created_at: datetime


def _utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything here is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


def _vector_bytes(vector: np.ndarray) -> bytes:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    if v.shape != (EMBEDDING_DIM,):
        raise ValueError(f"embedding must have {EMBEDDING_DIM} values, got {v.shape[0]}")
    if not np.all(np.isfinite(v)):
        raise ValueError("embedding contains NaN or infinity")
    return v.tobytes()


class EnrollmentStore:
    """People, templates and the change log. Thread-safe (one pooled engine)."""

    def __init__(self, url: str, schema: str | None = None, echo: bool = False) -> None:
        if schema is not None and not _SCHEMA_RE.match(schema):
            raise ValueError(f"schema name must match {_SCHEMA_RE.pattern}, got {schema!r}")
        self.url = url
        self.schema = schema
        if url.startswith("sqlite:///"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, pool_pre_ping=True)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        self._raw_engine = engine
        self.engine: Engine = (
            engine.execution_options(schema_translate_map={None: schema}) if schema else engine
        )

    @classmethod
    def from_settings(cls, settings: Settings, create: bool = True) -> EnrollmentStore:
        store = cls(settings.enrollment_url())
        if create:
            store.create_schema()
        return store

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    # ------------------------------------------------------------------ lifecycle
    def create_schema(self) -> None:
        """Create the tables (and the schema, when one is set) if they do not exist."""
        if self.schema and self.dialect == "postgresql":
            with self._raw_engine.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
        metadata.create_all(self.engine)

    def drop_schema(self) -> None:
        """Drop everything this store created (tests)."""
        if self.schema and self.dialect == "postgresql":
            with self._raw_engine.begin() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE'))
        else:
            metadata.drop_all(self.engine)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(func.count()).select_from(changes).where(changes.c.seq < 0))
            return True
        except Exception:  # readiness probe: any failure means "not ready"
            return False

    def close(self) -> None:
        self._raw_engine.dispose()

    def _write(self) -> Any:
        """A write transaction; on PostgreSQL serialised so seq order == commit order."""
        return _WriteTx(self.engine)

    # ------------------------------------------------------------------ people
    def create_person(
        self,
        display_name: str,
        external_ref: str | None = None,
        metadata: dict[str, Any] | None = None,
        person_id: str | None = None,
    ) -> Person:
        now = _now()
        pid = person_id or uuid.uuid4().hex
        try:
            with self._write() as conn:
                conn.execute(
                    insert(people).values(
                        id=pid,
                        external_ref=external_ref,
                        display_name=display_name,
                        metadata=metadata or {},
                        created_at=now,
                        updated_at=now,
                    )
                )
        except IntegrityError as exc:
            raise DuplicatePerson(
                f"a person with id {pid!r} or external_ref {external_ref!r} already exists"
            ) from exc
        return Person(pid, display_name, external_ref, metadata or {}, now, now, 0)

    def get_person(self, person_id: str) -> Person:
        with self.engine.connect() as conn:
            row = conn.execute(_person_query().where(people.c.id == person_id)).first()
        if row is None:
            raise PersonNotFound(f"no person with id {person_id!r}")
        return _person(row)

    def list_people(self, limit: int = 50, offset: int = 0) -> tuple[list[Person], int]:
        """A page of people ordered by creation, and the total count."""
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(people)).scalar_one()
            rows = conn.execute(
                _person_query()
                .order_by(people.c.created_at, people.c.id)
                .limit(limit)
                .offset(offset)
            ).all()
        return [_person(r) for r in rows], int(total)

    def update_person(self, person_id: str, **fields: Any) -> Person:
        """Change ``display_name``, ``external_ref`` and/or ``metadata``."""
        allowed = {"display_name", "external_ref", "metadata"}
        unknown = set(fields) - allowed
        if unknown:
            raise ValueError(f"cannot update {sorted(unknown)}; updatable: {sorted(allowed)}")
        try:
            with self._write() as conn:
                done = conn.execute(
                    update(people)
                    .where(people.c.id == person_id)
                    .values(**fields, updated_at=_now())
                )
                if done.rowcount == 0:
                    raise PersonNotFound(f"no person with id {person_id!r}")
        except IntegrityError as exc:
            raise DuplicatePerson(
                f"external_ref {fields.get('external_ref')!r} belongs to another person"
            ) from exc
        return self.get_person(person_id)

    def delete_person(self, person_id: str) -> Change:
        """Erase a person: their templates go, a ``delete`` change (tombstone) is logged."""
        now = _now()
        with self._write() as conn:
            exists = conn.execute(select(people.c.id).where(people.c.id == person_id)).first()
            if exists is None:
                raise PersonNotFound(f"no person with id {person_id!r}")
            conn.execute(delete(templates).where(templates.c.person_id == person_id))
            conn.execute(delete(people).where(people.c.id == person_id))
            seq = conn.execute(
                insert(changes)
                .values(kind="delete", person_id=person_id, created_at=now)
                .returning(changes.c.seq)
            ).scalar_one()
        return Change(int(seq), "delete", person_id, None, None, now)

    # ------------------------------------------------------------------ templates
    def add_templates(
        self,
        person_id: str,
        items: Sequence[NewTemplate],
    ) -> list[Template]:
        """Add templates in one transaction; each gets its own ``enroll`` change (and seq).

        A photo the person already has a template from (same non-empty sha256, stored or
        earlier in ``items``) raises ``DuplicateTemplate`` and nothing is stored: checked
        inside the write transaction, so two requests with the same photo cannot both
        store it."""
        now = _now()
        out: list[Template] = []
        with self._write() as conn:
            exists = conn.execute(select(people.c.id).where(people.c.id == person_id)).first()
            if exists is None:
                raise PersonNotFound(f"no person with id {person_id!r}")
            for item in items:
                if item.image_sha256:
                    _refuse_duplicate(conn, person_id, item.image_sha256, item.model_id)
                model_id, quality, sha = item.model_id, item.quality, item.image_sha256
                blob = _vector_bytes(item.embedding)
                tid = uuid.uuid4().hex
                seq = int(
                    conn.execute(
                        insert(changes)
                        .values(
                            kind="enroll",
                            person_id=person_id,
                            template_id=tid,
                            model_id=model_id,
                            created_at=now,
                        )
                        .returning(changes.c.seq)
                    ).scalar_one()
                )
                conn.execute(
                    insert(templates).values(
                        id=tid,
                        person_id=person_id,
                        embedding=blob,
                        model_id=model_id,
                        quality=quality,
                        image_sha256=sha,
                        seq=seq,
                        created_at=now,
                    )
                )
                vec = np.frombuffer(blob, dtype=np.float32)
                out.append(Template(tid, person_id, model_id, quality, sha, seq, now, vec))
            conn.execute(update(people).where(people.c.id == person_id).values(updated_at=now))
        return out

    def add_template(
        self,
        person_id: str,
        embedding: np.ndarray,
        model_id: str,
        quality: dict[str, Any] | None = None,
        image_sha256: str = "",
    ) -> Template:
        item = NewTemplate(embedding, model_id, quality or {}, image_sha256)
        return self.add_templates(person_id, [item])[0]

    def find_template(
        self, person_id: str, image_sha256: str, model_id: str | None = None
    ) -> Template | None:
        """The person's template made from the photo with this sha256 (by ``model_id``,
        when given), if any."""
        with self.engine.connect() as conn:
            row = conn.execute(_same_photo(person_id, image_sha256, model_id)).first()
        return _template(row, False) if row is not None else None

    def get_template(
        self, person_id: str, template_id: str, with_embedding: bool = False
    ) -> Template:
        """Template ``template_id`` of ``person_id``: ``PersonNotFound`` for an unknown
        person, ``TemplateNotFound`` for a template that is not theirs."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(templates).where(
                    templates.c.person_id == person_id, templates.c.id == template_id
                )
            ).first()
        if row is None:
            self.get_person(person_id)
            raise TemplateNotFound(f"person {person_id!r} has no template {template_id!r}")
        return _template(row, with_embedding)

    def delete_template(self, person_id: str, template_id: str) -> tuple[Template, Change]:
        """Remove one template of a person; a ``remove`` change is logged (a snapshot after
        it leaves the template out). Returns the removed template and the change."""
        now = _now()
        with self._write() as conn:
            row = conn.execute(
                select(templates).where(
                    templates.c.person_id == person_id, templates.c.id == template_id
                )
            ).first()
            if row is None:
                exists = conn.execute(select(people.c.id).where(people.c.id == person_id)).first()
                if exists is None:
                    raise PersonNotFound(f"no person with id {person_id!r}")
                raise TemplateNotFound(f"person {person_id!r} has no template {template_id!r}")
            removed = _template(row, False)
            conn.execute(delete(templates).where(templates.c.id == template_id))
            seq = conn.execute(
                insert(changes)
                .values(
                    kind="remove",
                    person_id=person_id,
                    template_id=template_id,
                    model_id=removed.model_id,
                    created_at=now,
                )
                .returning(changes.c.seq)
            ).scalar_one()
            conn.execute(update(people).where(people.c.id == person_id).values(updated_at=now))
        return removed, Change(int(seq), "remove", person_id, template_id, removed.model_id, now)

    def list_templates(self, person_id: str, with_embeddings: bool = False) -> list[Template]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(templates)
                .where(templates.c.person_id == person_id)
                .order_by(templates.c.seq)
            ).all()
        return [_template(r, with_embeddings) for r in rows]

    def iter_vectors(
        self, model_id: str, max_seq: int | None = None, batch: int = 10_000
    ) -> Iterator[tuple[str, str, np.ndarray]]:
        """``(template_id, person_id, vector)`` of a model, ordered by seq (deterministic)."""
        query = (
            select(templates.c.id, templates.c.person_id, templates.c.embedding)
            .where(templates.c.model_id == model_id)
            .order_by(templates.c.seq)
        )
        if max_seq is not None:
            query = query.where(templates.c.seq <= max_seq)
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=batch).execute(query)
            for tid, pid, blob in result:
                yield tid, pid, np.frombuffer(blob, dtype=np.float32)

    def count_templates(self, model_id: str | None = None, max_seq: int | None = None) -> int:
        query = select(func.count()).select_from(templates)
        if model_id is not None:
            query = query.where(templates.c.model_id == model_id)
        if max_seq is not None:
            query = query.where(templates.c.seq <= max_seq)
        with self.engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    # ------------------------------------------------------------------ change log
    def max_seq(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.coalesce(func.max(changes.c.seq), 0))).scalar_one())

    def changes_since(self, seq: int = 0, limit: int = 10_000) -> list[Change]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(changes).where(changes.c.seq > seq).order_by(changes.c.seq).limit(limit)
            ).all()
        return [
            Change(int(r.seq), r.kind, r.person_id, r.template_id, r.model_id, _utc(r.created_at))
            for r in rows
        ]


class _WriteTx:
    def __init__(self, engine: Engine) -> None:
        self._ctx = engine.begin()

    def __enter__(self) -> Connection:
        conn = self._ctx.__enter__()
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        return conn

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


def _same_photo(person_id: str, image_sha256: str, model_id: str | None) -> Any:
    """Templates of the person from this photo: with ``model_id``, only that model's (a photo
    enrolled again after the crop or model changed is a new template, not a duplicate)."""
    query = select(templates).where(
        templates.c.person_id == person_id, templates.c.image_sha256 == image_sha256
    )
    return query if model_id is None else query.where(templates.c.model_id == model_id)


def _refuse_duplicate(
    conn: Connection, person_id: str, image_sha256: str, model_id: str | None = None
) -> None:
    row = conn.execute(_same_photo(person_id, image_sha256, model_id)).first()
    if row is not None:
        existing = _template(row, False)
        raise DuplicateTemplate(
            f"person {person_id!r} already has template {existing.id} from this photo "
            f"(sha256 {image_sha256[:12]}...)",
            existing,
        )


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=10000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
    use_wal(dbapi_conn)


def _person_query() -> Any:
    n = (
        select(func.count())
        .select_from(templates)
        .where(templates.c.person_id == people.c.id)
        .scalar_subquery()
    )
    return select(people, n.label("template_count"))


def _person(row: Any) -> Person:
    return Person(
        id=row.id,
        display_name=row.display_name,
        external_ref=row.external_ref,
        metadata=dict(row.metadata or {}),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        template_count=int(row.template_count),
    )


def _template(row: Any, with_embedding: bool) -> Template:
    return Template(
        id=row.id,
        person_id=row.person_id,
        model_id=row.model_id,
        quality=dict(row.quality or {}),
        image_sha256=row.image_sha256,
        seq=int(row.seq),
        created_at=_utc(row.created_at),
        embedding=np.frombuffer(row.embedding, dtype=np.float32) if with_embedding else None,
    )
