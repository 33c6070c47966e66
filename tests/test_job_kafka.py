"""The Kafka path of the job: the official Flink connector. Without its jar the job must
refuse to start with a message naming the jar; with ``FLINK_KAFKA_CONNECTOR_JAR`` set the
job reads frames from and writes events to a real Kafka-protocol broker."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facerec.config import Settings

JAR = os.environ.get("FLINK_KAFKA_CONNECTOR_JAR")


def test_given_no_connector_jar_when_kafka_job_built_then_it_refuses_naming_the_jar(tmp_path):
    from jobs.flink_sources import KafkaConnectorMissing
    from jobs.recognition import build_job

    with pytest.raises(KafkaConnectorMissing, match="flink-sql-connector-kafka"):
        build_job(Settings(data_dir=tmp_path), "kafka")
    missing = tmp_path / "nope.jar"
    with pytest.raises(KafkaConnectorMissing, match=str(missing)):
        build_job(Settings(data_dir=tmp_path, job={"kafka_connector_jar": missing}), "kafka")


def test_given_no_connector_jar_when_cli_runs_kafka_then_exit_2_with_reason(tmp_path, monkeypatch):
    from jobs.cli.main import app

    monkeypatch.setenv("FACEREC_DATA_DIR", str(tmp_path))
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


@pytest.mark.flink
@pytest.mark.integration
@pytest.mark.data
@pytest.mark.skipif(
    not JAR, reason="set FLINK_KAFKA_CONNECTOR_JAR to the flink-sql-connector-kafka jar"
)
def test_given_frames_in_kafka_when_job_runs_then_events_in_kafka(
    tmp_path, kafka_broker, topic_name, engine, celebrity5
):
    from kafka import KafkaConsumer, KafkaProducer

    from facerec.records import FrameRecord, index_message
    from index_builder.snapshot import write_snapshot
    from jobs.recognition import build_job

    frames_topic, events_topic, index_topic = (
        f"{topic_name}-{t}" for t in ("frames", "events", "index")
    )
    madonna = sorted((celebrity5 / "train" / "madonna").iterdir())[3:6]
    vecs = np.stack([engine.single_face(p.read_bytes()).embedding for p in madonna])
    info = write_snapshot(
        tmp_path / "snapshots",
        ["t1", "t2", "t3"],
        ["madonna"] * 3,
        vecs,
        model_id=engine.model_id,
        max_change_seq=0,
    )
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, acks="all")
    producer.send(
        index_topic,
        index_message("snapshot", seq=0, manifest=info.manifest, path=str(info.path)).encode(),
    )
    probe = next((celebrity5 / "val" / "madonna").iterdir()).read_bytes()
    for seq in range(3):
        record = FrameRecord("cam-k", "north", f"cam-k:0:{seq:09d}", seq, 1000 + seq, 0, 0, probe)
        producer.send(frames_topic, key=b"north", value=record.encode())
    producer.flush()

    settings = Settings(
        data_dir=tmp_path,
        kafka={
            "bootstrap_servers": kafka_broker.bootstrap,
            "frames_topic": frames_topic,
            "events_topic": events_topic,
            "index_topic": index_topic,
        },
        job={
            "kafka_connector_jar": Path(JAR),
            "kafka_start": "earliest",
            "motion": {"enabled": False},
        },
    )
    _, streams = build_job(settings, "kafka")
    with streams.events.execute_and_collect("kafka-test") as results:
        events = [json.loads(next(results)) for _ in range(3)]
    assert {e["identity"] for e in events} == {"madonna"}
    consumer = KafkaConsumer(
        events_topic,
        bootstrap_servers=kafka_broker.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    published = {json.loads(m.value)["event_id"] for m in consumer}
    assert published >= {e["event_id"] for e in events}
