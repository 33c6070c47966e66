"""The audit log: who recognised, verified, searched, enrolled, erased or exported whom.

One row per call (time, key name, role, action, route, HTTP status, outcome) in the
enrollment store's database, and one row per person the call involved (the ids it queried
or returned), so "every call that touched Ada" is an index lookup. The log is append-only:
``AuditLog`` has no way to change a record, with two exceptions the law asks for:

* erasure: ``replace_subject`` rewrites an erased person's id to a tombstone id (the calls
  stay on record, the person is no longer named; the tombstone still ties them together);
* retention: ``purge_before`` deletes records older than ``retention.audit_days``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from facerec.eventstore import InvalidCursor
from facerec.eventstore.base import EventQuery, check_limit
from facerec.records import now_ms
from index_builder.schema import audit_records, audit_subjects
from index_builder.store import EnrollmentStore

TOMBSTONE_PREFIX = "erased:"
_ID_LEN = 64  # people.id's length: longer ids were never a person's


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at_ms: int
    key_name: str
    role: str
    action: str
    method: str
    route: str
    status: int
    outcome: str
    subjects: tuple[str, ...]
    """Person ids the call queried or returned (tombstone ids for erased people)."""


@dataclass(frozen=True)
class AuditQuery:
    """Filters of ``AuditLog.search``; the time range is half-open, ``start_ms <= at_ms <
    end_ms``."""

    key_name: str | None = None
    person_id: str | None = None
    action: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        EventQuery(start_ms=self.start_ms, end_ms=self.end_ms)  # the events' range check


def new_tombstone_id() -> str:
    """A fresh id that stands for an erased person in the audit log: random, so it cannot
    be traced back to the person's id."""
    return f"{TOMBSTONE_PREFIX}{uuid.uuid4().hex}"


class AuditLog:
    """Audit records in the enrollment store's database (SQLite or PostgreSQL)."""

    def __init__(self, store: EnrollmentStore, clock: Callable[[], int] = now_ms) -> None:
        """``clock``: epoch ms stamped on records and that retention counts from."""
        self.engine = store.engine
        self.clock = clock

    def record(
        self,
        *,
        key_name: str,
        role: str,
        action: str,
        method: str,
        route: str,
        status: int,
        outcome: str,
        subjects: Iterable[str] = (),
    ) -> int:
        """Append one record; its id."""
        people = sorted({s[:_ID_LEN] for s in subjects if s})
        with self.engine.begin() as conn:
            record_id = conn.execute(
                insert(audit_records)
                .values(
                    at_ms=self.clock(),
                    key_name=key_name[:128],
                    role=role[:16],
                    action=action[:32],
                    method=method[:8],
                    route=route[:256],
                    status=status,
                    outcome=outcome[:64],
                )
                .returning(audit_records.c.id)
            ).scalar_one()
            if people:
                conn.execute(
                    insert(audit_subjects),
                    [{"record_id": record_id, "person_id": p} for p in people],
                )
        return int(record_id)

    def search(
        self, query: AuditQuery, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[AuditRecord], str | None]:
        """One page of matching records, newest first, and the cursor of the next page."""
        check_limit(limit)
        r = audit_records.c
        stmt = select(audit_records).order_by(r.id.desc()).limit(limit + 1)
        if cursor is not None:
            if not cursor.isdigit():
                raise InvalidCursor(
                    f"cursor {cursor[:40]!r} is not one GET /audit returned: expected the "
                    "'next_cursor' of a previous page"
                )
            stmt = stmt.where(r.id < int(cursor))
        if query.key_name is not None:
            stmt = stmt.where(r.key_name == query.key_name)
        if query.action is not None:
            stmt = stmt.where(r.action == query.action)
        if query.start_ms is not None:
            stmt = stmt.where(r.at_ms >= query.start_ms)
        if query.end_ms is not None:
            stmt = stmt.where(r.at_ms < query.end_ms)
        if query.person_id is not None:
            stmt = stmt.where(
                r.id.in_(
                    select(audit_subjects.c.record_id).where(
                        audit_subjects.c.person_id == query.person_id
                    )
                )
            )
        with self.engine.connect() as conn:
            rows = conn.execute(stmt).all()[: limit + 1]
            ids = [row.id for row in rows[:limit]]
            subjects: dict[int, list[str]] = {i: [] for i in ids}
            if ids:
                for rid, pid in conn.execute(
                    select(audit_subjects.c.record_id, audit_subjects.c.person_id)
                    .where(audit_subjects.c.record_id.in_(ids))
                    .order_by(audit_subjects.c.person_id)
                ):
                    subjects[rid].append(pid)
        page = [
            AuditRecord(
                id=row.id,
                at_ms=row.at_ms,
                key_name=row.key_name,
                role=row.role,
                action=row.action,
                method=row.method,
                route=row.route,
                status=row.status,
                outcome=row.outcome,
                subjects=tuple(subjects[row.id]),
            )
            for row in rows[:limit]
        ]
        return page, (str(page[-1].id) if len(rows) > limit else None)

    def replace_subject(self, person_id: str, tombstone_id: str) -> int:
        """Erasure: every record naming ``person_id`` names ``tombstone_id`` instead; how
        many records were rewritten."""
        with self.engine.begin() as conn:
            return conn.execute(
                update(audit_subjects)
                .where(audit_subjects.c.person_id == person_id)
                .values(person_id=tombstone_id)
            ).rowcount

    def purge_before(self, before_ms: int) -> int:
        """Retention: delete the records made before ``before_ms``; how many went."""
        old = select(audit_records.c.id).where(audit_records.c.at_ms < before_ms)
        with self.engine.begin() as conn:
            conn.execute(delete(audit_subjects).where(audit_subjects.c.record_id.in_(old)))
            return conn.execute(
                delete(audit_records).where(audit_records.c.at_ms < before_ms)
            ).rowcount
