"""The job on Kafka, through the official Flink connector (the jar `make setup` fetched) and a
real Apache Kafka broker, run as an operator would: `facerec ingest` produces the frames,
enrolled people reach the job through the index topic, `facerec job run --source kafka`
writes events to the events topic and the event store. Bad records become dead letters;
exactly-once events go through Kafka transactions. Without its jar the job refuses to start
and says which jar it needs."""

from __future__ import annotations

import base64
import json
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner, Result

from facerec.config import Settings, load_settings
from facerec.records import FrameRecord, dead_letter_within, make_frame_id, now_ms
from testkit.kafka import produce, read_topic
from testkit.kafka_jobs import topic_names
from testkit.videos import CELEBRITY5_THRESHOLD

ENROLLED = ("ben_afflek", "madonna", "mindy_kaling")
STRANGERS = ("elton_john", "jerry_seinfeld")
"""Shown to the cameras, never enrolled: must come out as unknown. (Their val photos lie at
1.19 or more from the enrolled people's first four train photos; the threshold is 1.05.)"""
PHOTOS_PER_PERSON = 4
IMAGE_LIMIT = 1_000_000
"""images.max_bytes in the bad-records run: a frame above it is oversized (Kafka takes up to
16 MiB, so a frame over the default 20 MB could not reach the job at all)."""


# ------------------------------------------------------------------------ without the jar
def test_given_missing_connector_jar_when_kafka_job_built_then_it_refuses_naming_the_jar(
    tmp_path,
):
    from jobs.flink_sources import KafkaConnectorMissing
    from jobs.recognition import build_job

    missing = tmp_path / "nope.jar"
    settings = Settings(data_dir=tmp_path, job={"kafka_connector_jar": missing})
    with pytest.raises(KafkaConnectorMissing, match="flink-sql-connector-kafka") as refused:
        build_job(settings, "kafka")
    assert str(missing) in str(refused.value)


def test_given_make_setup_when_no_jar_configured_then_the_fetched_connector_is_used():
    from jobs.flink_sources import connector_jar
    from jobs.services.versions import JVM_DIR, versions

    jar = connector_jar(Settings())
    version = versions()["FLINK_KAFKA_CONNECTOR_VERSION"]
    assert jar == JVM_DIR / "flink-kafka" / f"flink-sql-connector-kafka-{version}.jar"
    assert jar.is_file(), "run `make setup`: it fetches the connector"


def test_given_missing_jar_when_cli_runs_kafka_then_exit_2_with_reason(tmp_path, monkeypatch):
    from jobs.cli.main import app

    monkeypatch.setenv("FACEREC_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FACEREC_JOB__KAFKA_CONNECTOR_JAR", str(tmp_path / "nope.jar"))
    result = CliRunner().invoke(app, ["job", "run", "--source", "kafka"])
    assert result.exit_code == 2
    assert "flink-sql-connector-kafka" in result.output


def test_given_unknown_source_when_job_built_then_clear_error(tmp_path):
    from jobs.recognition import build_job
    from jobs.sources import SourceError

    with pytest.raises(ValueError, match="video:PATH"):
        build_job(Settings(data_dir=tmp_path), "s3://bucket")
    with pytest.raises(SourceError, match="no such file"):
        build_job(Settings(data_dir=tmp_path), f"video:{tmp_path / 'missing.mp4'}")


def test_given_exactly_once_when_transactions_shorter_than_checkpoints_then_refused():
    from pydantic import ValidationError

    sink = {"delivery": "exactly-once", "transaction_timeout_ms": 5_000}
    with pytest.raises(ValidationError, match="longer than checkpoint_interval_ms"):
        Settings(job={"checkpoint_interval_ms": 10_000, "events_sink": sink})
    with pytest.raises(ValidationError, match="kafka_start"):
        Settings(job={"kafka_start": "yesterday"})


def test_given_dead_letter_too_large_for_kafka_when_fitted_then_payload_left_to_the_file():
    small = json.dumps({"reason": "bad_record", "payload": base64.b64encode(b"x" * 10).decode()})
    assert dead_letter_within(small, 1 << 20) == small
    big = json.dumps({"reason": "invalid_image", "payload": base64.b64encode(b"y" * 2_000_000)
                      .decode()})
    fitted = json.loads(dead_letter_within(big, 1 << 20))
    assert fitted == {"reason": "invalid_image", "payload": "", "payload_bytes": 2_000_000}


# ------------------------------------------------------------------------ the job on Kafka
def _configure(
    tmp: Path, bootstrap: str, prefix: str, job: dict[str, Any], **sections: Any
) -> tuple[Settings, Path]:
    """A configuration file for the commands: topics and consumer group of this test only,
    sources bounded (the job ends once it read what the topics held), no restarts."""
    topics = topic_names(prefix)
    tree = {
        "data_dir": str(tmp / "data"),
        "kafka": {"bootstrap_servers": bootstrap, **topics},
        "index": {"publish_kafka": True},
        "match": {"threshold": CELEBRITY5_THRESHOLD},
        "job": {
            "kafka_group_id": f"{prefix}-job",
            "kafka_bounded": True,
            "flink_options": {"restart-strategy.type": "none"},
            **job,
        },
        **sections,
    }
    path = tmp / "facerec.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_settings(path), path


def _facerec(*args: str) -> Result:
    from jobs.cli.main import app

    return CliRunner().invoke(app, list(args), env={"FACEREC_CONFIG": ""})


def _enroll(settings: Settings, engine, train: Path, people: Sequence[str]) -> None:
    """Enroll the first photos of each person and publish a snapshot: enroll deltas, then the
    snapshot manifest, on the index topic."""
    from index_builder.enrollment import EnrollmentService, Photo
    from index_builder.publish import IndexPublisher
    from index_builder.store import EnrollmentStore
    from udfs.evaluation import list_identities

    photos = list_identities(train)
    store = EnrollmentStore.from_settings(settings)
    publisher = IndexPublisher.from_settings(settings)
    try:
        service = EnrollmentService(settings, store, publisher, engine)
        for name in people:
            store.create_person(name.replace("_", " ").title(), person_id=name)
            enrolled = service.enroll(
                name,
                [Photo(str(p), p.read_bytes()) for p in photos[name]],
                all_or_nothing=False,
                limit=PHOTOS_PER_PERSON,
            )
            assert len(enrolled.templates) == PHOTOS_PER_PERSON and enrolled.published
        service.publish_snapshot()
    finally:
        publisher.close()
        store.close()


def _stored_ids(settings: Settings) -> set[str]:
    from facerec.eventstore import open_event_store

    with open_event_store(settings) as store:
        events, _ = store.search(limit=1000)
    return {e.event_id for e in events}


def _seq(event: dict[str, Any]) -> int:
    return int(event["frame_id"].rsplit(":", 1)[1])


@pytest.mark.flink
@pytest.mark.integration
@pytest.mark.data
def test_given_ingested_walkthrough_when_job_reads_kafka_then_events_name_the_people(
    tmp_path, kafka_broker, topic_name, engine, celebrity5
):
    from jobs.walkthrough import Segment, write_face_video
    from udfs.evaluation import list_identities

    bootstrap = kafka_broker.bootstrap_servers
    settings, config = _configure(tmp_path, bootstrap, topic_name, job={})
    _enroll(settings, engine, celebrity5 / "train", ENROLLED)
    val = list_identities(celebrity5 / "val")
    shown = [ENROLLED[0], STRANGERS[0], ENROLLED[1], STRANGERS[1], ENROLLED[2]]
    video = tmp_path / "walkthrough.avi"
    truth = write_face_video(
        video, [Segment(n, val[n][0], moving_frames=6, static_frames=4) for n in shown], fps=10
    )

    ingest = _facerec("ingest", "--config", str(config), "--url", str(video), "--camera-id",
                      "lobby-1", "--region", "lobby", "--fps", "0", "--drain-timeout", "30")
    assert ingest.exit_code == 0, ingest.output
    report = json.loads(ingest.stdout[ingest.stdout.index("{"):])
    assert report["lobby-1"]["sent"] == len(truth) and report["lobby-1"]["spool_left"] == 0

    run = _facerec("job", "run", "--source", "kafka", "--config", str(config), "--quiet")
    assert run.exit_code == 0, run.output
    # every frame was read, and gated out or analysed; none was undecodable
    assert f"camera lobby-1: {len(truth)} frames" in run.stdout, run.stdout
    assert "dead letters: 0" in run.stdout

    events = [json.loads(v) for v in read_topic(bootstrap, settings.kafka.events_topic).values()]
    seen = Counter((truth[_seq(e)][0], e["identity"]) for e in events)
    for person in ENROLLED:
        on_screen = sum(n for (who, _), n in seen.items() if who == person)
        assert on_screen and seen[(person, person)] / on_screen >= 0.9, seen
    for person in STRANGERS:
        assert {identity for (who, identity) in seen if who == person} == {"unknown"}, seen
    # no failure, so no replay: each event once, and the event store holds the same ones
    ids = [e["event_id"] for e in events]
    assert len(set(ids)) == len(ids)
    assert _stored_ids(settings) == set(ids)
    # the sightings topic: each walk-in once (its last publication closed at the end of the
    # input), the enrolled people named, the strangers unknown
    published = [json.loads(v) for v in read_topic(bootstrap, settings.kafka.sightings_topic)
                 .values()]
    final = {s["sighting_id"]: s for s in published}
    assert {s["status"] for s in final.values()} == {"closed"}
    named = sorted(s["identity"] for s in final.values() if s["identity"] != "unknown")
    assert named == sorted(ENROLLED), [(s["identity"], s["votes"]) for s in final.values()]
    assert len(final) == len(shown), [(s["identity"], s["votes"]) for s in final.values()]


@dataclass(frozen=True)
class BadRun:
    settings: Settings
    bad: list[bytes]
    good_seqs: set[int]
    output: str


@pytest.fixture(scope="module")
def bad_records_run(tmp_path_factory, kafka_broker, engine, celebrity5) -> BadRun:
    """One exactly-once job run over a frames topic where undecodable bytes, a wrong magic, a
    truncated JPEG and an oversized frame sit between frames of an enrolled person."""
    from udfs.evaluation import list_identities
    from udfs.image import encode_jpeg

    tmp = tmp_path_factory.mktemp("kafka-bad")
    prefix = f"bad-{uuid.uuid4().hex[:8]}"
    settings, config = _configure(
        tmp,
        kafka_broker.bootstrap_servers,
        prefix,
        # every frame analysed (a truncated JPEG's grey half would otherwise pass as motion)
        job={"motion": {"enabled": False}, "events_sink": {"transactional_id_prefix": prefix}},
        images={"max_bytes": IMAGE_LIMIT},
    )
    _enroll(settings, engine, celebrity5 / "train", ["madonna"])
    image = cv2.imread(str(list_identities(celebrity5 / "val")["madonna"][0]))
    jpeg = encode_jpeg(image)
    noise = np.random.default_rng(7).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)
    huge = encode_jpeg(noise, 95)
    assert len(huge) > IMAGE_LIMIT
    session = now_ms()

    def frame(seq: int, data: bytes = jpeg) -> bytes:
        return FrameRecord("door-1", "door", make_frame_id("door-1", session, seq), seq,
                           session + seq * 100, image.shape[1], image.shape[0], data,
                           ingest_ts=now_ms()).encode()

    bad = [b"undecodable: no frame record", b"XX" + frame(2)[2:],
           frame(3, jpeg[: len(jpeg) // 2]), frame(4, huge)]
    produce(kafka_broker.bootstrap_servers, settings.kafka.frames_topic,
            [frame(0), frame(1), *bad, frame(5), frame(6), frame(7)], key=b"door")
    run = _facerec("job", "run", "--source", "kafka", "--config", str(config), "--quiet",
                   "--delivery", "exactly-once")
    assert run.exit_code == 0, run.output
    return BadRun(settings, bad, {0, 1, 5, 6, 7}, run.stdout)


@pytest.mark.flink
@pytest.mark.integration
@pytest.mark.data
def test_given_bad_records_in_kafka_when_job_runs_then_dead_letters_and_later_frames_go_on(
    bad_records_run, kafka_broker
):
    settings = bad_records_run.settings
    topic = read_topic(kafka_broker.bootstrap_servers, settings.kafka.dead_letter_topic)
    files = sorted(settings.dead_letters_path().glob("*.jsonl"))
    in_files = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    for dead in ([json.loads(v) for v in topic.values()], in_files):
        assert Counter(d["reason"] for d in dead) == {
            "bad_record": 2, "invalid_image": 1, "image_too_large": 1}, dead
        # each with the record as it came, so nothing is lost
        assert sorted(base64.b64decode(d["payload"]) for d in dead) == sorted(bad_records_run.bad)
    assert "dead letters: 4" in bad_records_run.output
    # the job went on: the frames after the bad ones were recognised
    events = [json.loads(v) for v in read_topic(
        kafka_broker.bootstrap_servers, settings.kafka.events_topic).values()]
    assert {_seq(e) for e in events if e["identity"] == "madonna"} == bad_records_run.good_seqs


@pytest.mark.flink
@pytest.mark.integration
@pytest.mark.data
def test_given_exactly_once_sink_when_job_writes_events_then_read_committed_sees_each_once(
    bad_records_run, kafka_broker
):
    bootstrap, settings = kafka_broker.bootstrap_servers, bad_records_run.settings
    committed = read_topic(bootstrap, settings.kafka.events_topic)
    ids = [json.loads(v)["event_id"] for v in committed.values()]
    # one face per good frame, each event once, the same events as in the event store
    assert len(ids) == len(set(ids)) == len(bad_records_run.good_seqs)
    assert set(ids) == _stored_ids(settings)
    # written in transactions: each commit left a marker that takes an offset of its own
    assert committed.offsets > len(committed.records)
    # while dead letters, at least once, were not
    dead = read_topic(bootstrap, settings.kafka.dead_letter_topic)
    assert dead.offsets == len(dead.records)
