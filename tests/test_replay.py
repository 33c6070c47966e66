"""Audit replay (jobs/replay.py) against a real Apache Kafka broker, with real faces
(celebrity5) in a short synthetic video whose frames are produced as FrameRecords."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from pathlib import Path

import cv2
import pytest
from kafka import KafkaProducer
from typer.testing import CliRunner

from facerec.config import Settings
from facerec.eventstore import open_event_store
from facerec.records import FrameRecord, RecognitionEvent, make_frame_id, now_ms
from index_builder.snapshot import write_snapshot
from jobs.kafka_range import RangeError, parse_offsets, parse_time
from jobs.replay import ReplayRequest, replay_events_to_store, run_replay
from jobs.replay_report import compare
from jobs.walkthrough import Segment, write_face_video
from testkit.videos import CELEBRITY5_THRESHOLD, gallery_from_photos
from udfs.image import encode_jpeg
from udfs.match import Matcher
from udfs.pipeline import RecognitionPipeline

pytestmark = [pytest.mark.integration, pytest.mark.data]
PEOPLE = ("ben_afflek", "elton_john", "madonna")
ERASED = "madonna"
FIRST_PART = 20
"""Frames produced before the mid-range mark (two segments of 10)."""


@pytest.fixture(scope="module")
def gallery(engine, celebrity5):
    """3 usable train photos per identity of celebrity5 (all 5 identities)."""
    return gallery_from_photos(engine, celebrity5 / "train", per_person=3)


def _payloads(video: Path, camera: str = "cam-1") -> list[bytes]:
    cap = cv2.VideoCapture(str(video))
    session, out = now_ms(), []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        seq = len(out)
        out.append(FrameRecord(camera, "lobby", make_frame_id(camera, session, seq), seq,
                               session + seq * 100, img.shape[1], img.shape[0],
                               encode_jpeg(img), ingest_ts=session + seq * 100).encode())
    cap.release()
    return out


def _produce(bootstrap: str, topic: str, values: list[bytes], key: bytes = b"lobby") -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=16 << 20)
    for v in values:
        producer.send(topic, key=key, value=v)
    producer.flush()
    producer.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory, kafka_broker, engine, celebrity5, gallery):
    """Snapshots, a frames topic (first part, a mid-range mark, second part), and the
    original events in the event store and on an events topic."""
    from udfs.evaluation import list_identities

    root = tmp_path_factory.mktemp("replay")
    bootstrap = kafka_broker.bootstrap_servers
    settings = Settings(data_dir=root / "data", kafka={"bootstrap_servers": bootstrap},
                        match={"threshold": CELEBRITY5_THRESHOLD})
    tids, pids, vecs = gallery
    snaps = settings.data_dir / "snapshots"
    model = engine.model_id
    write_snapshot(snaps, tids, pids, vecs, model_id=model, max_change_seq=1,
                   snapshot_id="snap-all")
    keep = [i for i, p in enumerate(pids) if p != ERASED]
    write_snapshot(snaps, [tids[i] for i in keep], [pids[i] for i in keep], vecs[keep],
                   model_id=model, max_change_seq=2, snapshot_id="snap-erased")

    val = list_identities(celebrity5 / "val")
    video = root / "scene.avi"
    write_face_video(video, [Segment(n, val[n][0], moving_frames=6, static_frames=4)
                             for n in PEOPLE], fps=10)
    payloads = _payloads(video)
    assert len(payloads) == 30

    suffix = uuid.uuid4().hex[:8]
    frames_topic, events_topic = f"replay-frames-{suffix}", f"replay-events-{suffix}"
    t_start = now_ms()
    time.sleep(0.05)
    _produce(bootstrap, frames_topic, payloads[:FIRST_PART])
    time.sleep(0.05)
    t_mid = now_ms()
    time.sleep(0.05)
    _produce(bootstrap, frames_topic, payloads[FIRST_PART:])

    matcher = Matcher(model, threshold=settings.match.threshold)
    matcher.load_snapshot(snaps / "snap-all")
    original = RecognitionPipeline(settings, engine, matcher).process(payloads)
    matcher.close()
    assert original.events and not original.dead_letters
    assert original.sightings
    with open_event_store(settings) as store:
        store.write(original.events)
        store.write_sightings([u.sighting for u in original.sightings])
    _produce(bootstrap, events_topic, [e.to_json().encode() for e in original.events],
             key=b"events")
    frame_ids = [FrameRecord.decode(p).frame_id for p in payloads]
    return {"settings": settings, "frames_topic": frames_topic, "events_topic": events_topic,
            "t_start": t_start, "t_mid": t_mid, "events": original.events,
            "frame_ids": frame_ids, "payloads": payloads, "root": root}


def _request(world, **kw) -> ReplayRequest:
    kw.setdefault("start_ms", world["t_start"])
    return ReplayRequest(topic=world["frames_topic"], progress=False, **kw)


def test_given_unchanged_snapshot_when_replayed_then_every_decision_is_same(world, engine):
    out = world["root"] / "report-same"
    report = run_replay(world["settings"], _request(world, out_dir=out), engine=engine)
    s = report.summary

    assert s["snapshot"]["id"] == "snap-all" and s["snapshot"]["chosen_by"] == "original events"
    assert s["frames"]["replayed"] == 30
    assert s["events"]["compared"] == len(world["events"]) > 0
    assert s["decisions"]["same"] == len(world["events"])
    assert sum(s["decisions"].values()) == s["decisions"]["same"]
    # same range from the start of the camera: both gates saw the same frames
    assert s["frames"]["original_only"] == s["frames"]["replay_only_with_faces"] == 0
    assert s["throughput_fps"] > 0
    lines = (out / "decisions.jsonl").read_text().splitlines()
    assert len(lines) == len(world["events"])
    assert json.loads((out / "summary.json").read_text()) == s
    # the sightings too: one per person, each decided the same way again
    assert s["sightings"]["original"] == s["sightings"]["same"] == len(PEOPLE)
    assert s["sightings"]["changed_identity"] == s["sightings"]["replayed_only"] == 0


def test_given_person_erased_when_replayed_then_only_their_faces_change(world, engine):
    report = run_replay(world["settings"], _request(world, snapshot="snap-erased"), engine=engine)
    before = {e.event_id: e for e in world["events"]}
    erased = [d for d in report.decisions if before[d["event_id"]].identity == ERASED]
    others = [d for d in report.decisions if before[d["event_id"]].identity != ERASED]

    assert erased, f"the original run must have recognised {ERASED}"
    assert {d["classification"] for d in erased} <= {"no_longer_matched", "changed_identity"}
    assert all(d["replayed"]["identity"] != ERASED for d in erased)
    assert others and all(d["classification"] == "same" for d in others)
    assert report.summary["snapshot"]["id"] == "snap-erased"
    sightings = report.summary["sightings"]
    assert [(c["was"], c["now"]) for c in sightings["changed"]] == [(ERASED, "unknown")]
    assert sightings["same"] == len(PEOPLE) - 1


def test_given_range_end_when_replayed_then_later_frames_are_not(world, engine, kafka_broker):
    report = run_replay(
        world["settings"], _request(world, end_ms=world["t_mid"], originals="topic",
                                    events_topic=world["events_topic"]), engine=engine)
    first = set(world["frame_ids"][:FIRST_PART])
    replayed = {d["frame_id"] for d in report.decisions}

    assert report.summary["frames"]["replayed"] == FIRST_PART
    assert replayed and replayed <= first
    assert report.summary["original_source"].startswith("topic:")
    assert set(report.summary["decisions"]) and all(
        d["classification"] == "same" for d in report.decisions)

    # a live topic: records keep arriving during the replay; it stops at the planned end
    topic = f"replay-live-{uuid.uuid4().hex[:8]}"
    _produce(kafka_broker.bootstrap_servers, topic, world["payloads"][FIRST_PART:])
    halt = threading.Event()

    def keep_producing() -> None:
        last = FrameRecord.decode(world["payloads"][-1])
        producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap_servers)
        seq = 0
        while not halt.is_set():
            seq += 1
            late = dataclasses.replace(last, frame_id=f"late:{seq}", seq=last.seq + seq)
            producer.send(topic, key=b"lobby", value=late.encode()).get(10)
        producer.close()

    thread = threading.Thread(target=keep_producing, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        live = run_replay(world["settings"], ReplayRequest(topic, progress=False), engine=engine)
    finally:
        halt.set()
        thread.join(10)
    planned = sum(r["end"] - r["start"] for r in live.summary["range"]["offsets"])
    assert live.summary["frames"]["replayed"] == planned >= 30 - FIRST_PART
    assert time.monotonic() - started < 60


def test_given_range_starting_on_static_frames_when_replayed_then_fresh_gate_reported_apart(
    world, engine
):
    from jobs.kafka_range import open_consumer, plan_ranges

    consumer = open_consumer(world["settings"].kafka)
    [part] = [r for r in plan_ranges(consumer, world["frames_topic"]) if r.size]
    consumer.close()
    with_faces = {e.frame_id for e in world["events"]}
    # a still frame the original gate dropped (the background needs a few frames to settle)
    i = next(i for i, f in enumerate(world["frame_ids"]) if f not in with_faces)
    first = world["frame_ids"][i]

    report = run_replay(world["settings"], ReplayRequest(
        world["frames_topic"], offsets={part.partition: (i, i + 5)}, progress=False),
        engine=engine)
    kinds = {d["frame_id"]: d["classification"] for d in report.decisions}

    assert report.summary["frames"]["replayed"] == 5
    assert kinds[first] == "replayed_frame_only"  # a fresh gate passes the first frame
    assert report.summary["frames"]["replay_only_with_faces"] == 1
    assert {k for f, k in kinds.items() if f != first} == {"same"}


def test_given_events_topic_when_replayed_into_empty_store_then_same_events(world, tmp_path):
    settings = world["settings"].model_copy(
        update={"events": world["settings"].events.model_copy(
            update={"sqlite_path": tmp_path / "rebuilt.sqlite"})})
    first = replay_events_to_store(settings, world["events_topic"], progress=False)
    again = replay_events_to_store(settings, world["events_topic"], progress=False)

    with open_event_store(settings) as store:
        rebuilt, cursor = store.search(limit=1000)
    assert cursor is None
    assert first["read"] == again["read"] == len(world["events"]) and first["invalid"] == 0
    assert sorted(e.to_json() for e in rebuilt) == sorted(e.to_json() for e in world["events"])


def _cli(args: list[str], world) -> tuple[int, str]:
    from jobs.cli.main import app

    env = {"FACEREC_DATA_DIR": str(world["settings"].data_dir), "FACEREC_CONFIG": ""}
    result = CliRunner().invoke(app, ["replay", *args], env=env)
    return result.exit_code, result.output + (result.stderr or "")


def test_given_bad_requests_when_cli_runs_then_clear_message_and_exit_2(world, kafka_broker):
    common = ["--topic", world["frames_topic"], "--bootstrap", kafka_broker.bootstrap_servers,
              "--no-progress"]
    code, out = _cli(["frames", *common, "--snapshot", "snap-nope"], world)
    assert code == 2 and "unknown snapshot id 'snap-nope'" in out and "snap-all" in out

    code, out = _cli(["frames", *common, "--from", str(now_ms() + 3_600_000)], world)
    assert code == 2 and "empty range" in out

    code, out = _cli(["frames", *common, "--from", "yesterday-ish"], world)
    assert code == 2 and "ISO 8601" in out

    code, out = _cli(["events", "--topic", "t", "--bootstrap", "127.0.0.1:1"], world)
    assert code == 2 and "unreachable at 127.0.0.1:1" in out and "Traceback" not in out


def test_given_times_and_offsets_when_parsed_then_epoch_ms_and_ranges():
    assert parse_time("1718006400000") == 1718006400000
    assert parse_time("2024-06-10T08:00:00Z") == parse_time("2024-06-10T08:00:00") == 1718006400000
    assert parse_time("2024-06-10T10:00:00+02:00") == 1718006400000
    assert parse_offsets(["0:10-20", "3:0-5"]) == {0: (10, 20), 3: (0, 5)}
    for bad in (["0:20-10"], ["x"], ["0:1-2", "0:3-4"]):
        with pytest.raises(RangeError):
            parse_offsets(bad)


def test_given_pairs_when_compared_then_classified():
    def ev(frame: str, i: int, identity: str) -> RecognitionEvent:
        from facerec.records import make_event_id

        return RecognitionEvent(make_event_id(frame, i), frame, "c", "r", 1, i, (0, 0, 1, 1),
                                identity, 0.5, 0.9, 1.1, "s", "m", {})

    original = [ev("f1", 0, "a"), ev("f1", 1, "b"), ev("f1", 2, "unknown"), ev("f1", 3, "d"),
                ev("f1", 4, "e"), ev("f2", 0, "a")]
    replayed = [ev("f1", 0, "a"), ev("f1", 1, "c"), ev("f1", 2, "x"), ev("f1", 3, "unknown"),
                ev("f1", 5, "y"), ev("f3", 0, "z")]
    kinds = {(d["frame_id"], d["face_index"]): d["classification"]
             for d in compare(original, replayed, analysed={"f1", "f3"})}
    assert kinds == {
        ("f1", 0): "same", ("f1", 1): "changed_identity", ("f1", 2): "newly_matched",
        ("f1", 3): "no_longer_matched", ("f1", 4): "original_only", ("f1", 5): "replayed_only",
        ("f2", 0): "original_frame_only", ("f3", 0): "replayed_frame_only",
    }
