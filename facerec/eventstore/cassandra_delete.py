"""Deleting from the Cassandra event store: by age (the retention sweep) and by person
(erasure). An event lives in five tables (by id, camera, person, region, time); each
deletion finds the events through one of them and removes every copy by primary key.

Rows also carry a TTL, so the node expires them by itself; deleting by age still matters
when retention was shortened after the rows were written (their TTL is the old one), and
when the store's clock is not the node's (tests). Bucket rows (``event_buckets``) of buckets
wholly past the horizon go too, so reads stop visiting them.
"""

# ruff: noqa: S608 - CQL is built from fixed names and the store's validated keyspace;
# every value is a bind marker.
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from cassandra.concurrent import execute_concurrent
from cassandra.query import PreparedStatement

from facerec.eventstore.base import DAY_MS, MAX_LIMIT, DeletedRecords, SightingQuery
from facerec.records import RecognitionEvent

if TYPE_CHECKING:
    from facerec.eventstore.cassandra import CassandraEventStore, _Index

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class CassandraDeletes:
    """The deletion statements of one store, prepared once."""

    def __init__(self, store: CassandraEventStore, indexes: Iterable[_Index]) -> None:
        self.store = store
        self.indexes = tuple(indexes)
        ks, s = store.keyspace, store._session
        self._by_id = s.prepare(f"DELETE FROM {ks}.events_by_id WHERE event_id = ?")
        self._by_index = {
            ix.dim: s.prepare(
                f"DELETE FROM {ks}.{ix.table} WHERE "
                + (f"{ix.column} = ? AND " if ix.column else "")
                + "bucket = ? AND capture_ts = ? AND event_id = ?"
            )
            for ix in self.indexes
        }
        self._select_index = {
            ix.dim: s.prepare(
                f"SELECT body FROM {ks}.{ix.table} WHERE "
                + (f"{ix.column} = ? AND " if ix.column else "")
                + "bucket = ? AND capture_ts < ?"
            )
            for ix in self.indexes
        }
        self._bucket = s.prepare(
            f"DELETE FROM {ks}.event_buckets WHERE dim = ? AND part_key = ? AND bucket = ?"
        )
        self._sighting_by_id = s.prepare(f"DELETE FROM {ks}.sightings_by_id WHERE sighting_id = ?")
        self._sighting_by_time = s.prepare(
            f"DELETE FROM {ks}.sightings_by_time WHERE bucket = ? AND first_seen_ms = ? "
            "AND sighting_id = ?"
        )
        self._old_sightings = s.prepare(
            f"SELECT sighting_id, first_seen_ms FROM {ks}.sightings_by_time "
            "WHERE bucket = ? AND first_seen_ms < ?"
        )
        statements: list[PreparedStatement] = [
            self._by_id,
            self._bucket,
            self._sighting_by_id,
            self._sighting_by_time,
            self._old_sightings,
            *self._by_index.values(),
            *self._select_index.values(),
        ]
        for stmt in statements:
            stmt.consistency_level = store._cl
            stmt.is_idempotent = True

    # ------------------------------------------------------------------ helpers
    def _run(self, work: list[tuple[PreparedStatement, tuple[Any, ...]]]) -> None:
        if work:
            execute_concurrent(self.store._session, work, concurrency=64, raise_on_first_error=True)

    def _buckets(self, dim: str, key: str, last: int) -> list[int]:
        rows = self.store._session.execute(
            self.store._select_buckets, (dim, key, _INT32_MIN, min(_INT32_MAX, last))
        )
        return [int(r.bucket) for r in rows]

    def _event_rows(self, e: RecognitionEvent) -> Iterator[tuple[PreparedStatement, tuple]]:
        yield self._by_id, (e.event_id,)
        for ix in self.indexes:
            bucket = e.capture_ts // ix.bucket_ms
            part = (ix.key(e), bucket) if ix.column else (bucket,)
            yield self._by_index[ix.dim], (*part, e.capture_ts, e.event_id)

    def _drop_buckets(self, buckets: Iterable[tuple[str, str, int]]) -> None:
        found = set(buckets)
        self._run([(self._bucket, b) for b in found])
        self.store._known_buckets.difference_update(found)

    def _events_of(self, dim: str, key: str, before: int) -> Iterator[RecognitionEvent]:
        """Every event in ``dim``'s table under ``key`` captured before ``before``."""
        ix = next(i for i in self.indexes if i.dim == dim)
        for bucket in self._buckets(dim, key, (before - 1) // ix.bucket_ms):
            part = (key, bucket) if ix.column else (bucket,)
            for row in self.store._session.execute(self._select_index[dim], (*part, before)):
                yield RecognitionEvent.from_json(row.body)

    def _delete_events(self, events: Iterable[RecognitionEvent]) -> list[RecognitionEvent]:
        gone = {e.event_id: e for e in events}
        self._run([w for e in gone.values() for w in self._event_rows(e)])
        return list(gone.values())

    # ------------------------------------------------------------------ by age
    def purge(self, events_before: int | None, sightings_before: int | None) -> DeletedRecords:
        events = sightings = 0
        if events_before is not None:
            gone = self._delete_events(self._events_of("time", "", events_before))
            events = len(gone)
            past: list[tuple[str, str, int]] = []
            for e in gone:
                for ix in self.indexes:
                    bucket = e.capture_ts // ix.bucket_ms
                    if (bucket + 1) * ix.bucket_ms <= events_before:
                        past.append((ix.dim, ix.key(e), bucket))
            self._drop_buckets(past)
        if sightings_before is not None:
            work: list[tuple[PreparedStatement, tuple[Any, ...]]] = []
            past = []
            for bucket in self._buckets("sightings", "", (sightings_before - 1) // DAY_MS):
                rows = self.store._session.execute(self._old_sightings, (bucket, sightings_before))
                for r in rows:
                    work.append((self._sighting_by_id, (r.sighting_id,)))
                    work.append((self._sighting_by_time, (bucket, r.first_seen_ms, r.sighting_id)))
                    sightings += 1
                if (bucket + 1) * DAY_MS <= sightings_before:
                    past.append(("sightings", "", bucket))
            self._run(work)
            self._drop_buckets(past)
        return DeletedRecords(events, sightings)

    # ------------------------------------------------------------------ by person
    def erase_identity(self, person_id: str) -> DeletedRecords:
        # bucket rows stay: another process (the job) may hold them in its cache of known
        # buckets and write the same person's next event there without a new one
        gone = self._delete_events(self._events_of("person", person_id, 2**63 - 1))
        work: list[tuple[PreparedStatement, tuple[Any, ...]]] = []
        query, cursor = SightingQuery(identity=person_id), None
        ids: set[str] = set()
        while True:
            page, cursor = self.store.search_sightings(query, limit=MAX_LIMIT, cursor=cursor)
            for s in page:
                ids.add(s.sighting_id)
                work.append((self._sighting_by_id, (s.sighting_id,)))
                work.append(
                    (
                        self._sighting_by_time,
                        (s.first_seen_ms // DAY_MS, s.first_seen_ms, s.sighting_id),
                    )
                )
            if cursor is None:
                break
        self._run(work)
        return DeletedRecords(len(gone), len(ids))
