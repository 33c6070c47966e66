"""One contract for every event store backend: SQLite, and Cassandra (a node the session
starts from the fetched jars, or the cluster ``FACEREC_CASSANDRA_HOSTS`` names: the
``cassandra_hosts`` fixture)."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from facerec.eventstore import EventStore, InvalidCursor, InvalidQuery, open_event_store
from facerec.eventstore.base import DAY_MS, SightingQuery
from facerec.records import (
    CameraStatus,
    RecognitionEvent,
    Sighting,
    make_event_id,
    make_frame_id,
    make_sighting_id,
    now_ms,
)


def _open_cassandra(
    hosts_spec: str, ttl_days: int, clock: Callable[[], int], sightings_ttl_days: int | None = None
) -> tuple[EventStore, Callable[[], None]]:
    from facerec.eventstore.cassandra import CassandraEventStore

    hosts, port = [], 9042
    for h in hosts_spec.split(","):
        host, _, p = h.strip().partition(":")
        hosts.append(host)
        port = int(p) if p else port
    keyspace = f"facerec_test_{uuid.uuid4().hex[:12]}"
    store = CassandraEventStore(hosts, port=port, keyspace=keyspace, ttl_days=ttl_days,
                                sightings_ttl_days=sightings_ttl_days, consistency="ONE",
                                clock=clock)

    def drop() -> None:
        store._session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
        store.close()

    return store, drop


@pytest.fixture(params=["sqlite", "cassandra"])
def make_store(request, tmp_path: Path) -> Iterator[Callable[..., EventStore]]:
    """Factory: ``make_store(ttl_days=90, clock=now_ms)`` -> a fresh, empty store of the
    backend, its retention counted from ``clock``."""
    hosts = request.getfixturevalue("cassandra_hosts") if request.param == "cassandra" else ""
    cleanups = []

    def make(ttl_days: int = 90, clock: Callable[[], int] = now_ms,
             sightings_ttl_days: int | None = None) -> EventStore:
        if request.param == "sqlite":
            from facerec.eventstore.sqlite import SqliteEventStore

            store = SqliteEventStore(
                tmp_path / f"ev-{len(cleanups)}.sqlite", ttl_days=ttl_days, clock=clock,
                sightings_ttl_days=sightings_ttl_days,
            )
            cleanups.append(store.close)
            return store
        store, drop = _open_cassandra(hosts, ttl_days, clock, sightings_ttl_days)
        cleanups.append(drop)
        return store

    yield make
    for cleanup in cleanups:
        cleanup()


@pytest.fixture
def store(make_store) -> EventStore:
    return make_store()


def event(camera: str, ts: int, identity: str = "alice", region: str = "eu", face: int = 0,
          seq: int = 0, name: str | None = None) -> RecognitionEvent:
    frame_id = make_frame_id(camera, 1_700_000_000_000, seq)
    return RecognitionEvent(
        event_id=make_event_id(frame_id, face), frame_id=frame_id, camera_id=camera,
        region=region, capture_ts=ts, face_index=face, box=(1.0, 2.5, 30.0, 40.0),
        identity=identity, distance=0.42, score=0.97, threshold=1.1, snapshot_id="snap-1",
        model_id="facenet-20180408", stages={"ingest": ts + 1, "match": ts + 9},
        display_name=name,
    )


@pytest.fixture
def corpus() -> list[RecognitionEvent]:
    """60 events over 3 days, 3 cameras, 2 regions, 3 identities, many capture_ts ties."""
    base = now_ms() - 4 * DAY_MS
    out = []
    for seq in range(30):
        ts = base + (seq // 3) * (DAY_MS // 4)  # 3 frames share a timestamp; 2.5 days span
        cam = f"cam-{seq % 3}"
        for face in range(2):
            out.append(event(cam, ts, identity=["alice", "bob", "unknown"][(seq + face) % 3],
                             region="eu" if cam != "cam-2" else "us", face=face, seq=seq))
    return out


def newest_first(events: list[RecognitionEvent]) -> list[RecognitionEvent]:
    return sorted(events, key=lambda e: (e.capture_ts, e.event_id), reverse=True)


def all_pages(store: EventStore, limit: int, **filters) -> list[RecognitionEvent]:
    out, cursor, pages = [], None, 0
    while True:
        page, cursor = store.search(limit=limit, cursor=cursor, **filters)
        assert len(page) <= limit
        out += page
        pages += 1
        assert pages < 1000, "cursor never ended"
        if cursor is None:
            return out
        assert len(page) == limit, "a short page must be the last one"


def test_given_written_event_when_get_then_identical(store: EventStore) -> None:
    e = event("cam-a", now_ms() - 1000, name="Alice A.")
    assert store.write([e]) == 1
    assert store.get(e.event_id) == e
    assert store.get(str(uuid.uuid4())) is None
    assert store.ping()


def test_given_duplicates_and_replays_when_written_then_one_row_each(
    store: EventStore, corpus: list[RecognitionEvent]
) -> None:
    assert store.write(corpus + corpus[:10]) == len(corpus)  # in-batch duplicates count once
    assert store.write(corpus[5:25]) == 20  # a replay
    assert store.count() == len(corpus)
    assert all_pages(store, 1000) == newest_first(corpus)
    renamed = event("cam-0", corpus[0].capture_ts, identity=corpus[0].identity, seq=0, name="x")
    assert renamed.event_id == corpus[0].event_id
    store.write([renamed])
    assert store.get(renamed.event_id) == renamed  # upsert: the latest write wins
    assert store.count() == len(corpus)


def test_given_corpus_when_paging_then_newest_first_without_gaps(
    store: EventStore, corpus: list[RecognitionEvent]
) -> None:
    store.write(corpus)
    expected = newest_first(corpus)
    for limit in (1, 7, 60, 100):
        assert all_pages(store, limit) == expected, f"limit={limit}"
    page, cursor = store.search(limit=60)
    assert page == expected and cursor is None


@pytest.mark.parametrize(
    "filters",
    [
        {"camera_id": "cam-1"},
        {"region": "us"},
        {"identity": "bob"},
        {"identity": "unknown", "region": "eu"},
        {"camera_id": "cam-0", "identity": "alice"},
        {"camera_id": "cam-2", "region": "eu"},  # contradictory: nothing
        {"camera_id": "nobody"},
    ],
)
def test_given_filters_when_search_then_exactly_the_matching_events(
    store: EventStore, corpus: list[RecognitionEvent], filters: dict
) -> None:
    store.write(corpus)
    expected = newest_first([
        e for e in corpus if all(getattr(e, k) == v for k, v in filters.items())
    ])
    assert all_pages(store, 4, **filters) == expected
    assert store.count(**filters) == len(expected)


def test_given_time_range_when_search_then_half_open(
    store: EventStore, corpus: list[RecognitionEvent]
) -> None:
    store.write(corpus)
    stamps = sorted({e.capture_ts for e in corpus})
    start, end = stamps[2], stamps[7]  # spans day buckets; both ends on exact timestamps
    for filters in ({}, {"camera_id": "cam-1"}, {"identity": "alice"}, {"region": "eu"}):
        expected = newest_first([
            e for e in corpus
            if start <= e.capture_ts < end
            and all(getattr(e, k) == v for k, v in filters.items())
        ])
        assert expected
        got = all_pages(store, 5, start_ms=start, end_ms=end, **filters)
        assert got == expected, filters
        assert store.count(start_ms=start, end_ms=end, **filters) == len(expected)
    assert all_pages(store, 50, start_ms=stamps[-1]) == newest_first(
        [e for e in corpus if e.capture_ts == stamps[-1]])
    assert all_pages(store, 50, end_ms=stamps[1]) == newest_first(
        [e for e in corpus if e.capture_ts == stamps[0]])


def test_given_bad_arguments_when_search_then_typed_errors(store: EventStore) -> None:
    store.write([event("cam-a", now_ms())])
    with pytest.raises(InvalidCursor, match="expected"):
        store.search(cursor="not-a-cursor")
    with pytest.raises(InvalidCursor):
        store.search(cursor="WyJ4IiwxXQ")  # ["x",1]: wrong types
    huge = base64.urlsafe_b64encode(json.dumps([2**70, "e"]).encode()).decode()
    with pytest.raises(InvalidCursor, match="64 bits"):
        store.search(cursor=huge)
    with pytest.raises(InvalidQuery, match="limit"):
        store.search(limit=0)
    with pytest.raises(InvalidQuery, match="end_ms"):
        store.search(start_ms=10, end_ms=10)
    with pytest.raises(TypeError, match="RecognitionEvent"):
        store.write([{"event_id": "x"}])  # type: ignore[list-item]


def test_given_retention_when_event_is_older_then_not_stored(make_store) -> None:
    store = make_store(ttl_days=2)
    fresh, stale = event("cam-a", now_ms() - DAY_MS), event("cam-a", now_ms() - 3 * DAY_MS, seq=1)
    assert store.write([fresh, stale]) == 1
    assert store.get(stale.event_id) is None
    assert all_pages(store, 10, camera_id="cam-a") == [fresh]


# --------------------------------------------------------------------------- SQLite only
def test_given_sqlite_when_retention_passes_then_hidden_and_purged(tmp_path: Path) -> None:
    from facerec.eventstore.sqlite import SqliteEventStore

    path = tmp_path / "events.sqlite"
    old = event("cam-a", now_ms() - 5 * DAY_MS)
    with SqliteEventStore(path, ttl_days=30) as store:
        store.write([old, event("cam-a", now_ms(), seq=1)])
    with SqliteEventStore(path, ttl_days=3) as store:  # retention shortened: hidden at once
        assert store.get(old.event_id) is None
        assert store.count() == 1
        assert store.purge_expired().events == 1
    with SqliteEventStore(path, ttl_days=30) as store:  # and really gone
        assert store.count() == 1


def _open_and_write(path: str, seq: int, start, results) -> None:
    from facerec.eventstore.sqlite import SqliteEventStore

    start.wait()
    try:
        with SqliteEventStore(path) as store:
            store.write([event("cam-a", now_ms(), seq=seq)])
        results.put("ok")
    except Exception as exc:  # reported to the test, which names it
        results.put(repr(exc))


def test_given_processes_opening_a_new_sqlite_store_at_once_then_all_write(
    tmp_path: Path,
) -> None:
    """The job's parallel event-store writers open one new file together. SQLite refused the
    switch to WAL at once ("database is locked") for about 1 in 40 openers before
    ``use_wal`` retried it; 40 rounds of four make a miss show up here."""
    import multiprocessing as mp

    from facerec.eventstore.sqlite import SqliteEventStore

    ctx = mp.get_context("fork")
    for round_ in range(40):
        path = str(tmp_path / f"events-{round_}.sqlite")
        start, results = ctx.Barrier(4), ctx.Queue()
        procs = [
            ctx.Process(target=_open_and_write, args=(path, i, start, results)) for i in range(4)
        ]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        outcomes = Counter(results.get(timeout=10) for _ in procs)
        assert outcomes == {"ok": 4}, (round_, outcomes)
        with SqliteEventStore(path) as store:
            assert store.count() == 4


def test_given_settings_when_open_event_store_then_sqlite_under_data_dir(tmp_path: Path) -> None:
    from facerec.config import Settings

    with open_event_store(Settings(data_dir=tmp_path)) as store:
        store.write([event("cam-a", now_ms())])
        assert store.ping()
    assert (tmp_path / "events.sqlite").is_file()


def test_given_no_server_when_cassandra_module_loads_then_cql_matches_the_queries() -> None:
    from facerec.eventstore.cassandra import _INDEXES, CassandraEventStore

    ddl = {ix.dim: ix.ddl("facerec") for ix in _INDEXES}
    assert "PRIMARY KEY ((camera_id, bucket), capture_ts, event_id)" in ddl["camera"]
    assert "PRIMARY KEY ((identity, bucket), capture_ts, event_id)" in ddl["person"]
    assert "CLUSTERING ORDER BY (capture_ts DESC, event_id DESC)" in ddl["time"]
    assert all("USING TTL ?" in ix.insert_cql("facerec") for ix in _INDEXES)
    assert all(ix.select_cql("ks").count("?") == 7 - (ix.column is None) for ix in _INDEXES)
    with pytest.raises(ValueError, match="keyspace"):  # refused before any connection
        CassandraEventStore(["127.0.0.1"], keyspace="Bad-Name; DROP")
    with pytest.raises(ValueError, match="consistency"):
        CassandraEventStore(["127.0.0.1"], consistency="SOME")


# ------------------------------------------------------------------------------ sightings
def sighting(camera: str, first: int, identity: str = "alice", frames: int = 5,
             status: str = "open", n: int = 0, region: str = "eu") -> Sighting:
    sid = make_sighting_id(camera, make_frame_id(camera, 1_700_000_000_000, n), 0)
    return Sighting(
        sighting_id=sid, camera_id=camera, region=region, status=status,  # type: ignore[arg-type]
        identity=identity, first_seen_ms=first, last_seen_ms=first + 1000 * frames,
        frames=frames, votes={identity: frames}, best_distance=0.6, best_quality=0.8,
        best_frame_id=make_frame_id(camera, 1_700_000_000_000, n), best_box=(1.0, 2.0, 3.0, 4.0),
        evidence_key=f"sightings/x/{sid}.jpg", snapshot_id="snap-1", model_id="m",
        threshold=1.05,
    )


def test_given_sighting_updates_when_written_then_the_latest_and_never_back(store) -> None:
    base = now_ms() - DAY_MS
    opened = sighting("cam-1", base, frames=3)
    closed = replace(opened, frames=9, status="closed", last_seen_ms=base + 9000)
    assert store.write_sightings([opened]) == 1
    assert store.write_sightings([closed]) == 1
    # a job restored from a checkpoint publishes the sighting again, with fewer frames
    assert store.write_sightings([opened]) == 0
    assert store.get_sighting(opened.sighting_id) == closed
    assert store.get_sighting("no-such-sighting") is None


def test_given_a_reviewed_sighting_when_the_job_writes_it_again_then_the_review_stays(
    store,
) -> None:
    s = sighting("cam-1", now_ms() - 1000, identity="alice", frames=3)
    store.write_sightings([s])
    review = {"action": "assign", "by": "admin", "at": now_ms()}
    reviewed = store.review_sighting(s.sighting_id, "bob", review)
    assert reviewed is not None and reviewed.identity == "bob" and reviewed.review == review
    store.write_sightings([replace(s, frames=7, status="closed")])
    stored = store.get_sighting(s.sighting_id)
    assert stored is not None
    assert (stored.identity, stored.review, stored.frames) == ("bob", review, 7)
    assert store.review_sighting("no-such-sighting", "bob", review) is None


def test_given_sightings_when_searched_then_filtered_newest_first_in_pages(store) -> None:
    base = now_ms() - 3 * DAY_MS
    written = [
        sighting(f"cam-{n % 3}", base + n * (DAY_MS // 8), identity=["alice", "unknown"][n % 2],
                 n=n, region="eu" if n % 3 else "us")
        for n in range(20)
    ]
    store.write_sightings(written)

    def pages(query: SightingQuery, limit: int) -> list[Sighting]:
        out, cursor = [], None
        while True:
            page, cursor = store.search_sightings(query, limit=limit, cursor=cursor)
            out += page
            if cursor is None:
                return out

    def expected(query: SightingQuery) -> list[str]:
        kept = [s for s in written if query.matches(s)]
        return [s.sighting_id for s in sorted(
            kept, key=lambda s: (s.first_seen_ms, s.sighting_id), reverse=True)]

    for query in (
        SightingQuery(),
        SightingQuery(camera_id="cam-1"),
        SightingQuery(unknown=True),
        SightingQuery(unknown=False, region="eu"),
        SightingQuery(identity="alice", start_ms=base + DAY_MS // 2, end_ms=base + 2 * DAY_MS),
    ):
        ids = [s.sighting_id for s in pages(query, 3)]
        assert ids == expected(query), query
        assert ids, query
    with pytest.raises(InvalidQuery):
        store.search_sightings(SightingQuery(), limit=0)
    with pytest.raises(InvalidQuery):
        SightingQuery(start_ms=10, end_ms=10)
    with pytest.raises(InvalidCursor):
        store.search_sightings(SightingQuery(), cursor="garbage!")


def test_given_retention_when_a_sighting_is_older_then_not_stored(make_store) -> None:
    store = make_store(ttl_days=1)
    old = sighting("cam-1", now_ms() - 2 * DAY_MS)
    assert store.write_sightings([old]) == 0
    assert store.get_sighting(old.sighting_id) is None


def camera_status(camera: str, end_ms: int, frames: int = 50, gated_out: int = 35) -> CameraStatus:
    return CameraStatus(
        camera_id=camera, region="eu", window_start_ms=end_ms - 10_000, window_end_ms=end_ms,
        frames=frames, gated_out=gated_out, analysed=frames - gated_out, faces=7,
    )


def test_given_camera_windows_when_written_in_any_order_then_the_newest_per_camera(store) -> None:
    t = now_ms()
    assert store.camera_statuses() == []
    assert store.write_camera_status([camera_status("cam-b", t), camera_status("cam-a", t)]) == 2
    newer = camera_status("cam-a", t + 10_000, frames=40, gated_out=10)
    store.write_camera_status([newer])
    store.write_camera_status([camera_status("cam-a", t - 10_000, frames=1, gated_out=1)])
    got = store.camera_statuses()
    assert [c.camera_id for c in got] == ["cam-a", "cam-b"]
    assert got[0] == newer
    assert got[0].frames_per_s == pytest.approx(4.0) and got[0].gate_share == pytest.approx(0.25)
    assert got[1].gate_share == pytest.approx(0.7)


# ------------------------------------------------------------- time under the test's control
HOUR_MS = 3_600_000
FIXED_DAY = 20_600 * DAY_MS
"""A fixed UTC midnight (2026-05-26): bucket edges fall where the test puts them, whatever
day it runs on; the stores' clock is set a few days after it."""


def test_given_a_set_clock_when_events_straddle_bucket_edges_then_pages_and_ranges_exact(
    make_store,
) -> None:
    store = make_store(ttl_days=30, clock=lambda: FIXED_DAY + 3 * DAY_MS)
    d = FIXED_DAY
    # the last and first ms of days and hours (hour buckets: the time-only table), an empty
    # day between, and ties on one timestamp
    stamps = [d - 1, d, d, d + 1, d + HOUR_MS - 1, d + HOUR_MS, d + DAY_MS - 1,
              d + 2 * DAY_MS, d + 2 * DAY_MS + 5]
    events = [event(f"cam-{i % 2}", ts, identity=("alice", "bob")[i % 3 == 0], seq=i)
              for i, ts in enumerate(stamps)]
    assert store.write(events) == len(events)
    for limit in (1, 2, 3, 4):
        assert all_pages(store, limit) == newest_first(events), limit
        assert all_pages(store, limit, camera_id="cam-0") == newest_first(
            [e for e in events if e.camera_id == "cam-0"])
    for start, end in ((d, d + DAY_MS), (d + HOUR_MS, d + 2 * DAY_MS), (d - 1, d + 1)):
        want = newest_first([e for e in events if start <= e.capture_ts < end])
        assert all_pages(store, 2, start_ms=start, end_ms=end) == want, (start - d, end - d)
        assert all_pages(store, 2, identity="alice", start_ms=start, end_ms=end) == [
            e for e in want if e.identity == "alice"]

    sightings = [sighting(f"cam-{i % 2}", ts, n=i) for i, ts in enumerate(stamps)]
    assert store.write_sightings(sightings) == len(sightings)
    by_time = sorted(sightings, key=lambda s: (s.first_seen_ms, s.sighting_id), reverse=True)
    for limit in (1, 2, 5):
        got, cursor = [], None
        while True:
            page, cursor = store.search_sightings(SightingQuery(), limit=limit, cursor=cursor)
            got += page
            if cursor is None:
                break
        assert got == by_time, limit
    day_one, _ = store.search_sightings(SightingQuery(start_ms=d, end_ms=d + DAY_MS), limit=50)
    assert day_one == [s for s in by_time if d <= s.first_seen_ms < d + DAY_MS]


def test_given_a_moving_clock_when_retention_runs_out_then_events_and_sightings_expire(
    make_store,
) -> None:
    """The store's clock puts the event 3 s before the retention horizon; the node (whose
    own clock runs the TTL) and SQLite (which reads the store's clock) agree once both
    clocks have passed it."""
    import time

    now = [0]
    store = make_store(ttl_days=1, clock=lambda: now[0])
    now[0] = now_ms()
    ts = now[0] - DAY_MS + 3_000
    kept, doomed = event("cam-a", now[0], seq=1), event("cam-a", ts)
    s = sighting("cam-a", ts)
    assert store.write([doomed, kept]) == 2 and store.write_sightings([s]) == 1
    written = now_ms()  # the node counts each TTL (3 s) from the write it received
    assert store.get(doomed.event_id) == doomed and store.get_sighting(s.sighting_id) == s
    time.sleep(max(0.0, (written + 3_200 - now_ms()) / 1000))
    now[0] = written + 3_200
    assert store.get(doomed.event_id) is None and store.get_sighting(s.sighting_id) is None
    assert all_pages(store, 10) == [kept]
    assert store.search_sightings(SightingQuery(), limit=10) == ([], None)


# ------------------------------------------------------- deletion: retention sweep, erasure
def test_given_a_set_clock_when_purged_then_only_rows_past_each_retention_go(make_store) -> None:
    """Events kept 2 days, sightings 5: the clock moves 3 days on, and the sweep deletes
    the events (and their bucket rows) but not the sightings, then the sightings too."""
    now = [FIXED_DAY + DAY_MS]
    store = make_store(ttl_days=2, sightings_ttl_days=5, clock=lambda: now[0])
    d = FIXED_DAY
    old = [event("cam-a", d, seq=1), event("cam-b", d + HOUR_MS, identity="bob", seq=2)]
    new = event("cam-a", d + DAY_MS, seq=3)
    s_old, s_new = sighting("cam-a", d, n=1), sighting("cam-a", d + 4 * DAY_MS, n=2)
    assert store.write([*old, new]) == 3
    now[0] = d + 4 * DAY_MS
    assert store.write_sightings([s_old, s_new]) == 2
    now[0] = d + 2 * DAY_MS + HOUR_MS + 1  # past both old events, not the new one
    removed = store.purge_expired()
    assert (removed.events, removed.sightings) == (2, 0)
    assert all(store.get(e.event_id) is None for e in old)
    assert all_pages(store, 10) == [new]
    assert all_pages(store, 10, identity="bob") == []
    assert all_pages(store, 10, camera_id="cam-a") == [new]
    assert store.get_sighting(s_old.sighting_id) == s_old  # sightings: 5 days
    assert store.purge_expired(now=d + 5 * DAY_MS + 1).sightings == 1
    assert store.get_sighting(s_old.sighting_id) is None
    assert store.search_sightings(SightingQuery(), limit=10)[0] == [s_new]
    assert store.purge_expired(now=d + 5 * DAY_MS + 1) == type(removed)(0, 0)  # idempotent


def test_given_zero_retention_when_purged_then_nothing_goes(make_store) -> None:
    store = make_store(ttl_days=0, clock=lambda: FIXED_DAY)
    e = event("cam-a", FIXED_DAY - 3000 * DAY_MS)
    assert store.write([e]) == 1
    assert store.purge_expired(now=FIXED_DAY + 3000 * DAY_MS) == type(
        store.purge_expired())(0, 0)
    assert store.get(e.event_id) == e


def test_given_a_person_when_erased_then_their_events_and_sightings_go_only(make_store) -> None:
    store = make_store()
    t = now_ms() - DAY_MS
    alice = [event(f"cam-{i % 2}", t + i * HOUR_MS, identity="alice", seq=i) for i in range(5)]
    bob = [event("cam-0", t + i, identity="bob", seq=10 + i) for i in range(3)]
    sightings = [sighting("cam-0", t + i, identity=("alice", "bob")[i % 2], n=i)
                 for i in range(4)]
    store.write([*alice, *bob])
    store.write_sightings(sightings)
    removed = store.erase_identity("alice")
    assert (removed.events, removed.sightings) == (5, 2)
    assert all(store.get(e.event_id) is None for e in alice)
    assert all_pages(store, 3) == newest_first(bob)
    assert all_pages(store, 3, identity="alice") == []
    assert all_pages(store, 3, camera_id="cam-1") == []
    left, _ = store.search_sightings(SightingQuery(), limit=10)
    assert {s.identity for s in left} == {"bob"} and len(left) == 2
    assert store.erase_identity("alice") == type(removed)(0, 0)
    assert store.erase_identity("nobody") == type(removed)(0, 0)
