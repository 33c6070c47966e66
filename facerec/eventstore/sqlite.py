"""SQLite event store: the default backend for one node, development and tests.

One table keyed by ``event_id`` (upsert = idempotent), the event kept as its JSON plus the
columns the API filters on, an index per query shape ending in ``(capture_ts, event_id)`` so
every page is an index range scan. WAL lets the API read while the job writes.
Retention counts from capture time (sightings: first seen): expired rows are hidden from
reads at once and deleted by ``purge_expired`` (called from ``write`` at most every
``purge_interval_s``, and by the retention sweep).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from facerec.eventstore.base import (
    DeletedRecords,
    EventQuery,
    EventStore,
    Position,
    SightingQuery,
    check_limit,
    merge_sighting,
    retention_ms,
)
from facerec.records import UNKNOWN, CameraStatus, RecognitionEvent, Sighting, now_ms
from facerec.sqlite_wal import use_wal

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    event_id   TEXT PRIMARY KEY,
    capture_ts INTEGER NOT NULL,
    camera_id  TEXT NOT NULL,
    region     TEXT NOT NULL,
    identity   TEXT NOT NULL,
    frame_id   TEXT NOT NULL,
    body       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_time ON events (capture_ts, event_id);
CREATE INDEX IF NOT EXISTS events_by_camera ON events (camera_id, capture_ts, event_id);
CREATE INDEX IF NOT EXISTS events_by_person ON events (identity, capture_ts, event_id);
CREATE INDEX IF NOT EXISTS events_by_region ON events (region, capture_ts, event_id);
CREATE INDEX IF NOT EXISTS events_by_frame ON events (frame_id);
CREATE TABLE IF NOT EXISTS sightings (
    sighting_id   TEXT PRIMARY KEY,
    first_seen_ms INTEGER NOT NULL,
    camera_id     TEXT NOT NULL,
    region        TEXT NOT NULL,
    identity      TEXT NOT NULL,
    body          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sightings_by_time ON sightings (first_seen_ms, sighting_id);
CREATE INDEX IF NOT EXISTS sightings_by_camera ON sightings (camera_id, first_seen_ms, sighting_id);
CREATE INDEX IF NOT EXISTS sightings_by_person ON sightings (identity, first_seen_ms, sighting_id);
CREATE TABLE IF NOT EXISTS camera_status (
    camera_id     TEXT PRIMARY KEY,
    window_end_ms INTEGER NOT NULL,
    body          TEXT NOT NULL
);
"""

_UPSERT_CAMERA_STATUS = """
INSERT INTO camera_status (camera_id, window_end_ms, body) VALUES (?, ?, ?)
ON CONFLICT (camera_id) DO UPDATE SET
    window_end_ms = excluded.window_end_ms, body = excluded.body
WHERE excluded.window_end_ms >= camera_status.window_end_ms
"""

_UPSERT_SIGHTING = """
INSERT INTO sightings (sighting_id, first_seen_ms, camera_id, region, identity, body)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (sighting_id) DO UPDATE SET
    first_seen_ms = excluded.first_seen_ms, camera_id = excluded.camera_id,
    region = excluded.region, identity = excluded.identity, body = excluded.body
"""

_UPSERT = """
INSERT INTO events (event_id, capture_ts, camera_id, region, identity, frame_id, body)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (event_id) DO UPDATE SET
    capture_ts = excluded.capture_ts, camera_id = excluded.camera_id,
    region = excluded.region, identity = excluded.identity,
    frame_id = excluded.frame_id, body = excluded.body
"""


class SqliteEventStore(EventStore):
    def __init__(
        self,
        path: str | Path,
        *,
        ttl_days: int = 90,
        sightings_ttl_days: int | None = None,
        purge_interval_s: float = 600.0,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        """``clock``: epoch ms that retention counts from (tests move it).
        ``sightings_ttl_days``: the sightings' retention; None: ``ttl_days``."""
        self.path = Path(path)
        self.clock = clock
        self.retention = retention_ms(ttl_days)
        self.sighting_retention = retention_ms(
            ttl_days if sightings_ttl_days is None else sightings_ttl_days
        )
        self.purge_interval_s = purge_interval_s
        self._last_purge = 0.0
        self._lock = threading.Lock()
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path), check_same_thread=False, isolation_level=None, timeout=10.0
        )
        use_wal(self._db)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    # ----------------------------------------------------------------------- writes
    def _horizon(self, now: int | None = None, *, sightings: bool = False) -> int | None:
        """Oldest capture_ts (``sightings``: first_seen_ms) still retained, or None when
        nothing expires."""
        retention = self.sighting_retention if sightings else self.retention
        if retention is None:
            return None
        return (now if now is not None else self.clock()) - retention

    def write(self, events: Sequence[RecognitionEvent]) -> int:
        horizon = self._horizon()
        rows: dict[str, tuple[Any, ...]] = {}
        for e in events:
            if not isinstance(e, RecognitionEvent):
                raise TypeError(f"write expects RecognitionEvent items; got {type(e).__name__}")
            if horizon is not None and e.capture_ts < horizon:
                continue
            rows[e.event_id] = (
                e.event_id, e.capture_ts, e.camera_id, e.region, e.identity, e.frame_id,
                e.to_json(),
            )
        if rows:
            with self._lock:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.executemany(_UPSERT, rows.values())
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
        due = time.monotonic() - self._last_purge > self.purge_interval_s
        if (self.retention or self.sighting_retention) is not None and due:
            self.purge_expired()
        return len(rows)

    def purge_expired(self, now: int | None = None) -> DeletedRecords:
        self._last_purge = time.monotonic()
        events_before = self._horizon(now)
        sightings_before = self._horizon(now, sightings=True)
        events = sightings = 0
        with self._lock:
            if events_before is not None:
                events = self._db.execute(
                    "DELETE FROM events WHERE capture_ts < ?", (events_before,)
                ).rowcount
            if sightings_before is not None:
                sightings = self._db.execute(
                    "DELETE FROM sightings WHERE first_seen_ms < ?", (sightings_before,)
                ).rowcount
        if events or sightings:
            log.info("event store %s: purged %d events and %d sightings past retention",
                     self.path, events, sightings)
        return DeletedRecords(events, sightings)

    def erase_identity(self, person_id: str) -> DeletedRecords:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                events = self._db.execute(
                    "DELETE FROM events WHERE identity = ?", (person_id,)
                ).rowcount
                sightings = self._db.execute(
                    "DELETE FROM sightings WHERE identity = ?", (person_id,)
                ).rowcount
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return DeletedRecords(events, sightings)

    # ----------------------------------------------------------------------- reads
    def get(self, event_id: str) -> RecognitionEvent | None:
        sql = "SELECT body FROM events WHERE event_id = ?"
        params: list[str | int] = [event_id]
        horizon = self._horizon()
        if horizon is not None:
            sql += " AND capture_ts >= ?"
            params.append(horizon)
        with self._lock:
            row = self._db.execute(sql, params).fetchone()
        return RecognitionEvent.from_json(row[0]) if row else None

    def _where(
        self,
        equal: dict[str, str | None],
        time_column: str,
        start_ms: int | None,
        end_ms: int | None,
        after: Position | None,
        key_column: str,
        extra: tuple[str, list[Any]] | None = None,
        horizon: int | None = None,
    ) -> tuple[str, list[Any]]:
        """WHERE for a search: ``equal`` columns, the half-open time range (retention's
        horizon included), the page's position on ``(time_column, key_column)``."""
        clauses = [f"{column} = ?" for column, value in equal.items() if value is not None]
        params: list[Any] = [value for value in equal.values() if value is not None]
        if extra is not None:
            clauses.append(extra[0])
            params += extra[1]
        lower = [v for v in (start_ms, horizon) if v is not None]
        if lower:
            clauses.append(f"{time_column} >= ?")
            params.append(max(lower))
        if end_ms is not None:
            clauses.append(f"{time_column} < ?")
            params.append(end_ms)
        if after is not None:
            clauses.append(f"({time_column}, {key_column}) < (?, ?)")
            params += [after.capture_ts, after.event_id]
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _where_events(self, q: EventQuery, after: Position | None) -> tuple[str, list[Any]]:
        equal = {"camera_id": q.camera_id, "identity": q.identity, "region": q.region}
        return self._where(
            equal, "capture_ts", q.start_ms, q.end_ms, after, "event_id",
            horizon=self._horizon(),
        )

    def search(
        self,
        *,
        camera_id: str | None = None,
        region: str | None = None,
        identity: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[RecognitionEvent], str | None]:
        check_limit(limit)
        q = EventQuery(camera_id, region, identity, start_ms, end_ms)
        after = Position.decode(cursor) if cursor else None
        where, params = self._where_events(q, after)
        sql = (
            f"SELECT body FROM events{where} "  # noqa: S608 - clauses are fixed strings
            "ORDER BY capture_ts DESC, event_id DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, [*params, limit + 1]).fetchall()
        events = [RecognitionEvent.from_json(r[0]) for r in rows[:limit]]
        if len(rows) <= limit:
            return events, None
        return events, Position(events[-1].capture_ts, events[-1].event_id).encode()

    def count(
        self,
        *,
        camera_id: str | None = None,
        region: str | None = None,
        identity: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> int:
        where, params = self._where_events(
            EventQuery(camera_id, region, identity, start_ms, end_ms), None
        )
        with self._lock:
            (n,) = self._db.execute(f"SELECT COUNT(*) FROM events{where}", params).fetchone()  # noqa: S608
        return int(n)

    # ----------------------------------------------------------------------- sightings
    def _stored_sightings(self, ids: list[str]) -> dict[str, Sighting]:
        marks = ",".join("?" * len(ids))
        rows = self._db.execute(
            f"SELECT body FROM sightings WHERE sighting_id IN ({marks})", ids  # noqa: S608
        ).fetchall()
        return {(s := Sighting.from_json(r[0])).sighting_id: s for r in rows}

    def _upsert_sightings(self, merge: Any) -> list[Sighting]:
        """In one write transaction: ``merge(stored by id)`` -> the rows to write."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = merge(self)
                self._db.executemany(_UPSERT_SIGHTING, [
                    (s.sighting_id, s.first_seen_ms, s.camera_id, s.region, s.identity,
                     s.to_json())
                    for s in rows
                ])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return list(rows)

    def write_sightings(self, sightings: Sequence[Sighting]) -> int:
        horizon = self._horizon(sightings=True)
        latest: dict[str, Sighting] = {}
        for s in sightings:
            if not isinstance(s, Sighting):
                raise TypeError(f"write_sightings expects Sighting items; got {type(s).__name__}")
            if horizon is not None and s.first_seen_ms < horizon:
                continue
            kept = merge_sighting(latest.get(s.sighting_id), s)
            latest[s.sighting_id] = kept or latest[s.sighting_id]
        if not latest:
            return 0

        def merge(store: SqliteEventStore) -> list[Sighting]:
            stored = store._stored_sightings(list(latest))
            return [
                kept for s in latest.values()
                if (kept := merge_sighting(stored.get(s.sighting_id), s)) is not None
            ]

        return len(self._upsert_sightings(merge))

    def get_sighting(self, sighting_id: str) -> Sighting | None:
        with self._lock:
            found = self._stored_sightings([sighting_id]).get(sighting_id)
        horizon = self._horizon(sightings=True)
        if found is None or (horizon is not None and found.first_seen_ms < horizon):
            return None
        return found

    def search_sightings(
        self, query: SightingQuery, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Sighting], str | None]:
        check_limit(limit)
        after = Position.decode(cursor) if cursor else None
        equal = {"camera_id": query.camera_id, "identity": query.identity,
                 "region": query.region}
        unknown = None if query.unknown is None else (
            "identity = ?" if query.unknown else "identity != ?", [UNKNOWN]
        )
        where, params = self._where(equal, "first_seen_ms", query.start_ms, query.end_ms,
                                    after, "sighting_id", unknown,
                                    horizon=self._horizon(sightings=True))
        sql = (
            f"SELECT body FROM sightings{where} "  # noqa: S608 - clauses are fixed strings
            "ORDER BY first_seen_ms DESC, sighting_id DESC LIMIT ?"
        )
        with self._lock:
            rows = self._db.execute(sql, [*params, limit + 1]).fetchall()
        found = [Sighting.from_json(r[0]) for r in rows[:limit]]
        if len(rows) <= limit:
            return found, None
        last = found[-1]
        return found, Position(last.first_seen_ms, last.sighting_id).encode()

    def review_sighting(
        self, sighting_id: str, identity: str, review: dict[str, object]
    ) -> Sighting | None:
        def merge(store: SqliteEventStore) -> list[Sighting]:
            stored = store._stored_sightings([sighting_id]).get(sighting_id)
            if stored is None:
                return []
            return [replace(stored, identity=identity, review=dict(review), updated_ms=now_ms())]

        rows = self._upsert_sightings(merge)
        return rows[0] if rows else None

    # ----------------------------------------------------------------------- cameras
    def write_camera_status(self, statuses: Sequence[CameraStatus]) -> int:
        rows = [(c.camera_id, c.window_end_ms, c.to_json()) for c in statuses]
        if rows:
            with self._lock:
                self._db.executemany(_UPSERT_CAMERA_STATUS, rows)
        return len(rows)

    def camera_statuses(self) -> list[CameraStatus]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM camera_status ORDER BY camera_id").fetchall()
        return [CameraStatus.from_json(r[0]) for r in rows]

    def ping(self) -> bool:
        try:
            with self._lock:
                return self._db.execute("SELECT 1").fetchone() == (1,)
        except sqlite3.Error as exc:
            log.warning("event store %s does not answer: %s", self.path, exc)
            return False

    def close(self) -> None:
        with self._lock:
            self._db.close()
