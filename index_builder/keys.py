"""API keys kept in the enrollment store's database (``facerec keys create|list|revoke``).

A key is ``frk_<id>_<secret>``: ``id`` (8 hex digits) is public and names the key in
listings and logs; ``secret`` is ``secrets.token_urlsafe(32)`` (256 random bits). Only
``sha256:<hex>`` of the whole key is stored (``facerec.config.api_key_hash`` says why a plain
SHA-256 suffices), so the database, its backups and its replicas cannot authenticate
anyone. A key is printed once, when created.

Looking a key up reads its row by id and compares hashes in constant time. Nothing is
cached: a revocation holds from the next request on, in every API process, without a
restart (a primary-key read per request is cheap beside any route's own work).
"""

from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast, get_args

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from facerec.config import ApiRole, api_key_hash
from facerec.errors import FaceRecError
from index_builder.schema import api_keys
from index_builder.store import EnrollmentStore, _utc

KEY_PREFIX = "frk_"
_KEY_RE = re.compile(r"^frk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}$")
_ID_RE = re.compile(r"^[0-9a-f]{8}$")
ROLES: tuple[str, ...] = get_args(ApiRole)


class KeyNotFound(FaceRecError):
    reason = "key_not_found"


@dataclass(frozen=True)
class StoredKey:
    """A stored key as listed: everything but the key."""

    id: str
    name: str
    role: ApiRole
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _stored(row: Row[Any]) -> StoredKey:
    m = row._mapping
    revoked = _utc(m["revoked_at"]) if m["revoked_at"] is not None else None
    return StoredKey(m["id"], m["name"], m["role"], _utc(m["created_at"]), revoked)


def key_id_of(key: str) -> str | None:
    """The public id of a key of this store's form, else None (e.g. a configured key)."""
    found = _KEY_RE.match(key)
    return found.group(1) if found else None


class KeyStore:
    """Stored API keys, in the enrollment store's database (SQLite or PostgreSQL)."""

    def __init__(self, store: EnrollmentStore) -> None:
        self.engine = store.engine

    def create(self, name: str, role: str) -> tuple[StoredKey, str]:
        """A new active key: its listing and the key itself, which is not kept anywhere."""
        name = name.strip()
        if not name or len(name) > 128:
            raise ValueError("a key's name must have 1 to 128 characters")
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        for _ in range(5):  # ids are 32 random bits: a clash is rare, never silent
            key_id = secrets.token_hex(4)
            key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
            now = datetime.now(UTC)
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        insert(api_keys).values(
                            id=key_id,
                            name=name,
                            role=role,
                            key_hash=api_key_hash(key),
                            created_at=now,
                            revoked_at=None,
                        )
                    )
            except IntegrityError:
                continue
            return StoredKey(key_id, name, cast(ApiRole, role), now, None), key
        raise RuntimeError("could not draw an unused key id in 5 tries")

    def list(self, include_revoked: bool = True) -> list[StoredKey]:
        query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            return [_stored(r) for r in conn.execute(query).all()]

    def revoke(self, key_id: str) -> StoredKey:
        """Revoke the key with this id (revoking it again changes nothing)."""
        if not _ID_RE.match(key_id):
            raise KeyNotFound(
                f"a key id is 8 hex digits (as `facerec keys list` shows), got {key_id!r}"
            )
        with self.engine.begin() as conn:
            conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None:
            raise KeyNotFound(f"no stored key with id {key_id!r}")
        return _stored(row)

    def lookup(self, key: str) -> StoredKey | None:
        """The active stored key ``key`` is, else None (unknown, malformed or revoked)."""
        key_id = key_id_of(key)
        if key_id is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.key_hash.encode(), api_key_hash(key).encode()):
            return None
        return _stored(row)
