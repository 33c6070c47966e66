"""Apache Cassandra event store (production), one table per query served.

=================  ==============================  =========================================
table              partition key                   serves
=================  ==============================  =========================================
events_by_id       (event_id)                      get(event_id)
events_by_camera   (camera_id, bucket = day)       search(camera_id=...)
events_by_person   (identity, bucket = day)        search(identity=...)
events_by_region   (region, bucket = day)          search(region=...)
events_by_time     (bucket = hour)                 search() by time range only
event_buckets      (dim, part_key) -> bucket       which buckets hold events of a key
sightings_by_id    (sighting_id)                   get_sighting, the read before an upsert
sightings_by_time  (bucket = day)                  search_sightings (other filters on rows)
=================  ==============================  =========================================

Every search table clusters by ``(capture_ts DESC, event_id DESC)``: a page is one slice
``(capture_ts, event_id) < upper AND (capture_ts, event_id) >= lower`` per bucket, walking
the non-empty buckets newest first (read from ``event_buckets``, so no empty day is ever
queried). The most selective filter picks the table (camera, then person, then region, then
time); the other filters are applied to the rows read. Writes are idempotent upserts keyed
by event id (same primary key -> same row), so at-least-once duplicates collapse.
``USING TTL`` is the time left until the capture time leaves the retention window, so both
backends expire events at the same moment. Time-window compaction drops expired SSTables.

A sighting upsert reads the stored sighting first (``merge_sighting``: never back, reviews
kept). One operator instance publishes a given sighting, so job writes do not race each
other; a review that lands between the job's read and write of a still-open sighting is
overwritten (a window of milliseconds, closed once the sighting is).
"""

# ruff: noqa: S608 - CQL is built only from fixed names and the keyspace, which
# __init__ validates against _KEYSPACE_RE; every value is a bind marker.
from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cassandra import ConsistencyLevel
from cassandra.cluster import Cluster, NoHostAvailable, Session
from cassandra.concurrent import execute_concurrent
from cassandra.policies import ExponentialReconnectionPolicy
from cassandra.query import PreparedStatement

from facerec.eventstore.base import (
    DAY_MS,
    DeletedRecords,
    EventQuery,
    EventStore,
    Position,
    SightingQuery,
    check_limit,
    merge_sighting,
    retention_ms,
)
from facerec.eventstore.cassandra_delete import CassandraDeletes
from facerec.records import CameraStatus, RecognitionEvent, Sighting, now_ms

log = logging.getLogger(__name__)

HOUR_MS = 3_600_000
_KEYSPACE_RE = re.compile(r"^[a-z][a-z0-9_]{0,47}$")
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_BIGINT_MIN, _BIGINT_MAX = -(2**63), 2**63 - 1
_MAX_TTL_S = 630_720_000  # Cassandra's ceiling: 20 years
_TWCS = (
    "compaction = {'class': 'TimeWindowCompactionStrategy', "
    "'compaction_window_unit': 'DAYS', 'compaction_window_size': 1}"
)


@dataclass(frozen=True)
class _Index:
    dim: str
    table: str
    column: str | None
    """Partition column besides ``bucket``; None for the time table."""
    bucket_ms: int

    def key(self, e: RecognitionEvent) -> str:
        return "" if self.column is None else str(getattr(e, self.column))

    def ddl(self, ks: str) -> str:
        col = f"{self.column} text, " if self.column else ""
        part = f"({self.column}, bucket)" if self.column else "(bucket)"
        return (
            f"CREATE TABLE IF NOT EXISTS {ks}.{self.table} ("
            f"{col}bucket int, capture_ts bigint, event_id text, body text, "
            f"PRIMARY KEY ({part}, capture_ts, event_id)) "
            f"WITH CLUSTERING ORDER BY (capture_ts DESC, event_id DESC) AND {_TWCS}"
        )

    def insert_cql(self, ks: str) -> str:
        cols = f"{self.column}, " if self.column else ""
        marks = "?, " if self.column else ""
        return (
            f"INSERT INTO {ks}.{self.table} ({cols}bucket, capture_ts, event_id, body) "
            f"VALUES ({marks}?, ?, ?, ?) USING TTL ?"
        )

    def select_cql(self, ks: str) -> str:
        key = f"{self.column} = ? AND " if self.column else ""
        return (
            f"SELECT body FROM {ks}.{self.table} WHERE {key}bucket = ? "
            "AND (capture_ts, event_id) < (?, ?) AND (capture_ts, event_id) >= (?, ?) LIMIT ?"
        )


_INDEXES = (
    _Index("camera", "events_by_camera", "camera_id", DAY_MS),
    _Index("person", "events_by_person", "identity", DAY_MS),
    _Index("region", "events_by_region", "region", DAY_MS),
    _Index("time", "events_by_time", None, HOUR_MS),
)
_TABLES = {
    "events_by_id", "event_buckets", *(ix.table for ix in _INDEXES), "sightings_by_id",
    "sightings_by_time", "camera_status",
}


@dataclass
class _Prepared:
    insert: PreparedStatement
    select: PreparedStatement


class CassandraEventStore(EventStore):
    def __init__(
        self,
        hosts: Sequence[str],
        *,
        port: int = 9042,
        keyspace: str = "facerec",
        replication_factor: int = 1,
        consistency: str = "LOCAL_QUORUM",
        ttl_days: int = 90,
        sightings_ttl_days: int | None = None,
        create_schema: bool = True,
        connect_timeout: float = 10.0,
        clock: Callable[[], int] = now_ms,
        connect_retry_s: float = 60.0,
    ) -> None:
        """``clock``: epoch ms that retention (each row's TTL) counts from (tests move it;
        the node expires a row by its own clock once the TTL has run).
        ``sightings_ttl_days``: the sightings' retention; None: ``ttl_days``.
        ``connect_retry_s``: how long to keep trying a cluster that does not answer yet (a
        node restarting, or too busy to accept a connection in ``connect_timeout``)."""
        self.clock = clock
        if consistency not in ConsistencyLevel.name_to_value:
            raise ValueError(
                f"consistency {consistency!r} is not a Cassandra level; expected one of "
                f"{sorted(ConsistencyLevel.name_to_value)}"
            )
        if not _KEYSPACE_RE.match(keyspace):
            raise ValueError(
                f"keyspace {keyspace!r}: expected lower-case letters, digits and '_', "
                "starting with a letter, at most 48 characters"
            )
        self.keyspace = keyspace
        self.retention = retention_ms(ttl_days)
        self.sighting_retention = retention_ms(
            ttl_days if sightings_ttl_days is None else sightings_ttl_days
        )
        self._cl = ConsistencyLevel.name_to_value[consistency]
        # back in the pool within seconds of a node's restart (the driver's default backoff
        # grows to 10 minutes, long after the node is back)
        self._cluster = Cluster(
            list(hosts),
            port=port,
            connect_timeout=connect_timeout,
            reconnection_policy=ExponentialReconnectionPolicy(0.5, 5.0),
        )
        self._session: Session = self._connect(connect_retry_s)
        self._known_buckets: set[tuple[str, str, int]] = set()
        try:
            if create_schema:
                self._create_schema(replication_factor)
            self._prepare()
        except Exception:
            self._cluster.shutdown()
            raise

    def _connect(self, retry_s: float) -> Session:
        deadline = time.monotonic() + retry_s
        delay = 0.5
        while True:
            try:
                return self._cluster.connect()
            except NoHostAvailable as exc:
                if time.monotonic() + delay > deadline:
                    self._cluster.shutdown()
                    raise
                log.warning("Cassandra not reachable yet (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ----------------------------------------------------------------------- schema
    def _create_schema(self, replication_factor: int) -> None:
        ks = self.keyspace
        known = self._cluster.metadata.keyspaces.get(ks)
        if known is not None and set(known.tables) >= _TABLES:
            # every job operator opens a store: the first one creates the schema, the
            # others only read the driver's schema metadata (DDL is slow on a busy node)
            return
        statements = [
            f"CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = "
            f"{{'class': 'SimpleStrategy', 'replication_factor': {int(replication_factor)}}}",
            f"CREATE TABLE IF NOT EXISTS {ks}.events_by_id ("
            "event_id text PRIMARY KEY, capture_ts bigint, body text)",
            f"CREATE TABLE IF NOT EXISTS {ks}.event_buckets ("
            "dim text, part_key text, bucket int, PRIMARY KEY ((dim, part_key), bucket)) "
            "WITH CLUSTERING ORDER BY (bucket DESC)",
            *(ix.ddl(ks) for ix in _INDEXES),
            f"CREATE TABLE IF NOT EXISTS {ks}.sightings_by_id ("
            "sighting_id text PRIMARY KEY, first_seen_ms bigint, body text)",
            f"CREATE TABLE IF NOT EXISTS {ks}.sightings_by_time ("
            "bucket int, first_seen_ms bigint, sighting_id text, body text, "
            "PRIMARY KEY ((bucket), first_seen_ms, sighting_id)) "
            "WITH CLUSTERING ORDER BY (first_seen_ms DESC, sighting_id DESC)",
            f"CREATE TABLE IF NOT EXISTS {ks}.camera_status ("
            "camera_id text PRIMARY KEY, body text)",
        ]
        for cql in statements:
            self._session.execute(cql, timeout=60.0)

    def _prepare(self) -> None:
        ks, s = self.keyspace, self._session
        self._insert_by_id = s.prepare(
            f"INSERT INTO {ks}.events_by_id (event_id, capture_ts, body) VALUES (?, ?, ?) "
            "USING TTL ?"
        )
        self._get_by_id = s.prepare(
            f"SELECT body FROM {ks}.events_by_id WHERE event_id = ?"
        )
        self._insert_bucket = s.prepare(
            f"INSERT INTO {ks}.event_buckets (dim, part_key, bucket) VALUES (?, ?, ?) USING TTL ?"
        )
        self._select_buckets = s.prepare(
            f"SELECT bucket FROM {ks}.event_buckets "
            "WHERE dim = ? AND part_key = ? AND bucket >= ? AND bucket <= ?"
        )
        self._insert_sighting = s.prepare(
            f"INSERT INTO {ks}.sightings_by_id (sighting_id, first_seen_ms, body) "
            "VALUES (?, ?, ?) USING TTL ?"
        )
        self._get_sighting = s.prepare(
            f"SELECT body FROM {ks}.sightings_by_id WHERE sighting_id = ?"
        )
        self._insert_sighting_by_time = s.prepare(
            f"INSERT INTO {ks}.sightings_by_time (bucket, first_seen_ms, sighting_id, body) "
            "VALUES (?, ?, ?, ?) USING TTL ?"
        )
        self._select_sightings = s.prepare(
            f"SELECT body FROM {ks}.sightings_by_time WHERE bucket = ? "
            "AND (first_seen_ms, sighting_id) < (?, ?) "
            "AND (first_seen_ms, sighting_id) >= (?, ?)"
        )
        # written with the window's end as the cell timestamp: the newest window wins
        # whatever order the writes arrive in, without a read or a lightweight transaction
        self._insert_camera_status = s.prepare(
            f"INSERT INTO {ks}.camera_status (camera_id, body) VALUES (?, ?) USING TIMESTAMP ?"
        )
        self._select_camera_status = s.prepare(f"SELECT body FROM {ks}.camera_status")
        self._ix = {
            ix.dim: _Prepared(s.prepare(ix.insert_cql(ks)), s.prepare(ix.select_cql(ks)))
            for ix in _INDEXES
        }
        for stmt in (self._insert_by_id, self._get_by_id, self._insert_bucket,
                     self._select_buckets, self._insert_sighting, self._get_sighting,
                     self._insert_sighting_by_time, self._select_sightings,
                     self._insert_camera_status, self._select_camera_status,
                     *(p.insert for p in self._ix.values()),
                     *(p.select for p in self._ix.values())):
            stmt.consistency_level = self._cl
            stmt.is_idempotent = True  # upserts and reads: safe for the driver to retry
        self._deletes = CassandraDeletes(self, _INDEXES)

    # ----------------------------------------------------------------------- writes
    def _ttl_s(self, newest_ts: int, now: int, *, sightings: bool = False) -> int | None:
        """Seconds until ``newest_ts`` leaves retention (``sightings``: the sightings');
        0 = no TTL; None = already expired."""
        retention = self.sighting_retention if sightings else self.retention
        if retention is None:
            return 0
        left_ms = newest_ts + retention - now
        return min(_MAX_TTL_S, math.ceil(left_ms / 1000)) if left_ms > 0 else None

    def write(self, events: Sequence[RecognitionEvent]) -> int:
        now = self.clock()
        batch: dict[str, tuple[RecognitionEvent, int]] = {}
        for e in events:
            if not isinstance(e, RecognitionEvent):
                raise TypeError(f"write expects RecognitionEvent items; got {type(e).__name__}")
            ttl = self._ttl_s(e.capture_ts, now)
            if ttl is not None:
                batch[e.event_id] = (e, ttl)
        work: list[tuple[PreparedStatement, tuple[Any, ...]]] = []
        new_buckets: list[tuple[str, str, int]] = []
        for e, ttl in batch.values():
            body = e.to_json()
            work.append((self._insert_by_id, (e.event_id, e.capture_ts, body, ttl)))
            for ix in _INDEXES:
                bucket = e.capture_ts // ix.bucket_ms
                part = (ix.key(e), bucket) if ix.column else (bucket,)
                work.append((self._ix[ix.dim].insert, (*part, e.capture_ts, e.event_id, body, ttl)))
                b = (ix.dim, ix.key(e), bucket)
                if b not in self._known_buckets:
                    # a bucket row lives as long as the newest event it may hold
                    bttl = self._ttl_s((bucket + 1) * ix.bucket_ms, now)
                    work.append((self._insert_bucket, (*b, bttl or 0)))
                    new_buckets.append(b)
        if work:
            execute_concurrent(self._session, work, concurrency=64, raise_on_first_error=True)
        if len(self._known_buckets) > 100_000:
            self._known_buckets.clear()
        self._known_buckets.update(new_buckets)  # only once the writes succeeded
        return len(batch)

    # ----------------------------------------------------------------------- reads
    def get(self, event_id: str) -> RecognitionEvent | None:
        row = self._session.execute(self._get_by_id, (event_id,)).one()
        return RecognitionEvent.from_json(row.body) if row else None

    def _buckets(self, ix: _Index, key: str, lo_ts: int, hi_ts: int) -> Iterator[int]:
        lo = max(_INT32_MIN, lo_ts // ix.bucket_ms)
        hi = min(_INT32_MAX, hi_ts // ix.bucket_ms)
        for row in self._session.execute(self._select_buckets, (ix.dim, key, lo, hi)):
            yield int(row.bucket)

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
        if camera_id is not None:
            ix, key = _INDEXES[0], camera_id
        elif identity is not None:
            ix, key = _INDEXES[1], identity
        elif region is not None:
            ix, key = _INDEXES[2], region
        else:
            ix, key = _INDEXES[3], ""
        covered = sum(v is not None for v in (camera_id, identity, region)) <= 1
        upper = (end_ms, "") if end_ms is not None else (_BIGINT_MAX, "")
        if after is not None and (after.capture_ts, after.event_id) < upper:
            upper = (after.capture_ts, after.event_id)
        lower = (start_ms if start_ms is not None else _BIGINT_MIN, "")
        found: list[RecognitionEvent] = []
        select = self._ix[ix.dim].select
        for bucket in self._buckets(ix, key, lower[0], upper[0]):
            part = (key, bucket) if ix.column else (bucket,)
            want = limit + 1 - len(found) if covered else _INT32_MAX
            rows = self._session.execute(select, (*part, *upper, *lower, want))
            for row in rows:
                e = RecognitionEvent.from_json(row.body)
                if q.matches(e):
                    found.append(e)
                    if len(found) > limit:
                        break
            if len(found) > limit:
                break
        page = found[:limit]
        more = len(found) > limit
        return page, Position(page[-1].capture_ts, page[-1].event_id).encode() if more else None

    # ----------------------------------------------------------------------- sightings
    def _write_sightings(self, sightings: Sequence[Sighting]) -> None:
        now = self.clock()
        work: list[tuple[PreparedStatement, tuple[Any, ...]]] = []
        for s in sightings:
            ttl = self._ttl_s(s.first_seen_ms, now, sightings=True)
            if ttl is None:
                continue
            body, bucket = s.to_json(), s.first_seen_ms // DAY_MS
            work.append((self._insert_sighting, (s.sighting_id, s.first_seen_ms, body, ttl)))
            work.append((self._insert_sighting_by_time,
                         (bucket, s.first_seen_ms, s.sighting_id, body, ttl)))
            b = ("sightings", "", bucket)
            if b not in self._known_buckets:
                bttl = self._ttl_s((bucket + 1) * DAY_MS, now, sightings=True)
                work.append((self._insert_bucket, (*b, bttl or 0)))
                self._known_buckets.add(b)
        if work:
            execute_concurrent(self._session, work, concurrency=64, raise_on_first_error=True)

    def write_sightings(self, sightings: Sequence[Sighting]) -> int:
        now = self.clock()
        latest: dict[str, Sighting] = {}
        for s in sightings:
            if not isinstance(s, Sighting):
                raise TypeError(f"write_sightings expects Sighting items; got {type(s).__name__}")
            if self._ttl_s(s.first_seen_ms, now, sightings=True) is None:
                continue
            kept = merge_sighting(latest.get(s.sighting_id), s)
            latest[s.sighting_id] = kept or latest[s.sighting_id]
        rows = [
            kept for s in latest.values()
            if (kept := merge_sighting(self.get_sighting(s.sighting_id), s)) is not None
        ]
        self._write_sightings(rows)
        return len(rows)

    def get_sighting(self, sighting_id: str) -> Sighting | None:
        row = self._session.execute(self._get_sighting, (sighting_id,)).one()
        return Sighting.from_json(row.body) if row else None

    def search_sightings(
        self, query: SightingQuery, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Sighting], str | None]:
        check_limit(limit)
        after = Position.decode(cursor) if cursor else None
        upper = (query.end_ms, "") if query.end_ms is not None else (_BIGINT_MAX, "")
        if after is not None and (after.capture_ts, after.event_id) < upper:
            upper = (after.capture_ts, after.event_id)
        lower = (query.start_ms if query.start_ms is not None else _BIGINT_MIN, "")
        found: list[Sighting] = []
        lo = max(_INT32_MIN, lower[0] // DAY_MS)
        hi = min(_INT32_MAX, upper[0] // DAY_MS)
        buckets = self._session.execute(self._select_buckets, ("sightings", "", lo, hi))
        for bucket in (int(r.bucket) for r in buckets):
            for row in self._session.execute(self._select_sightings,
                                             (bucket, *upper, *lower)):
                s = Sighting.from_json(row.body)
                if query.matches(s):
                    found.append(s)
                    if len(found) > limit:
                        break
            if len(found) > limit:
                break
        page = found[:limit]
        more = len(found) > limit
        last = page[-1] if page else None
        return page, (
            Position(last.first_seen_ms, last.sighting_id).encode() if more and last else None
        )

    def review_sighting(
        self, sighting_id: str, identity: str, review: dict[str, object]
    ) -> Sighting | None:
        stored = self.get_sighting(sighting_id)
        if stored is None:
            return None
        reviewed = replace(stored, identity=identity, review=dict(review), updated_ms=now_ms())
        self._write_sightings([reviewed])
        return reviewed

    # ----------------------------------------------------------------------- deletion
    def purge_expired(self, now: int | None = None) -> DeletedRecords:
        at = now if now is not None else self.clock()
        return self._deletes.purge(
            None if self.retention is None else at - self.retention,
            None if self.sighting_retention is None else at - self.sighting_retention,
        )

    def erase_identity(self, person_id: str) -> DeletedRecords:
        return self._deletes.erase_identity(person_id)

    # ----------------------------------------------------------------------- cameras
    def write_camera_status(self, statuses: Sequence[CameraStatus]) -> int:
        work = [
            (self._insert_camera_status, (c.camera_id, c.to_json(), c.window_end_ms * 1000))
            for c in statuses
        ]
        if work:
            execute_concurrent(self._session, work, concurrency=64, raise_on_first_error=True)
        return len(work)

    def camera_statuses(self) -> list[CameraStatus]:
        rows = self._session.execute(self._select_camera_status)
        return sorted((CameraStatus.from_json(r.body) for r in rows), key=lambda c: c.camera_id)

    def ping(self) -> bool:
        try:
            return self._session.execute(
                "SELECT release_version FROM system.local", timeout=5.0
            ).one() is not None
        except Exception as exc:  # any driver failure means "not healthy"
            log.warning("Cassandra keyspace %s does not answer: %s", self.keyspace, exc)
            return False

    def close(self) -> None:
        self._cluster.shutdown()
