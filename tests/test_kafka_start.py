"""Where the job's frames source starts (``job.kafka_start``: group, earliest, latest, an epoch
ms timestamp), on the real Flink Kafka connector against the real broker.

Each test runs the job's own frames source (``jobs.flink_sources.kafka_frames``, as the job
builds it from the settings) on a MiniCluster, collecting the raw records: the same connector
and broker requests as the whole job, without the face pipeline's Python workers and
TensorFlow start, which would cost a minute per mode and test nothing more about offsets."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from facerec.config import Settings
from testkit.kafka import produce

pytestmark = [pytest.mark.flink, pytest.mark.integration]
OLD = [f"old-{i}".encode() for i in range(5)]


def _settings(tmp_path, kafka_broker, topic: str, **job: Any) -> Settings:
    return Settings(
        data_dir=tmp_path,
        kafka={"bootstrap_servers": kafka_broker.bootstrap_servers, "frames_topic": topic},
        job={
            "kafka_group_id": f"{topic}-group",
            "checkpoint_interval_ms": 500,
            "flink_options": {"restart-strategy.type": "none"},
            **job,
        },
    )


def _frames(settings: Settings):
    from jobs.flink_sources import kafka_frames
    from jobs.recognition import create_env

    return kafka_frames(create_env(settings), settings)


def _read(settings: Settings) -> list[bytes]:
    """Everything the source reads up to the topic's end offsets at its start."""
    bounded = settings.model_copy(
        update={"job": settings.job.model_copy(update={"kafka_bounded": True})}
    )
    with _frames(bounded).execute_and_collect("kafka-start") as results:
        return [bytes(r) for r in results]


def test_given_earliest_when_source_starts_then_it_reads_the_whole_topic(
    tmp_path, kafka_broker, topic_name
):
    produce(kafka_broker.bootstrap_servers, topic_name, OLD)
    assert _read(_settings(tmp_path, kafka_broker, topic_name, kafka_start="earliest")) == OLD


def test_given_timestamp_when_source_starts_then_it_reads_from_the_first_record_at_or_after_it(
    tmp_path, kafka_broker, topic_name
):
    t0 = 1_700_000_000_000
    produce(kafka_broker.bootstrap_servers, topic_name, OLD,
            timestamps_ms=[t0 + 1000 * i for i in range(len(OLD))])
    start = str(t0 + 2500)  # between the third and the fourth record
    assert _read(_settings(tmp_path, kafka_broker, topic_name, kafka_start=start)) == OLD[3:]


def _committed(settings: Settings) -> dict[int, int]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap_servers)
    try:
        committed = admin.list_consumer_group_offsets(settings.job.kafka_group_id)
    finally:
        admin.close()
    return {tp.partition: o.offset for tp, o in committed.items()}


def _read_until_committed(settings: Settings, count: int, offset: int) -> list[bytes]:
    """The first ``count`` records of a running (unbounded) source; the job is cancelled once
    a checkpoint has committed ``offset`` for the group, as a job an operator stops and
    submits again without a savepoint."""
    read: list[bytes] = []
    with _frames(settings).execute_and_collect("kafka-start-group") as results:
        for record in results:
            read.append(bytes(record))
            if len(read) == count:
                break
        deadline = time.monotonic() + 60
        while _committed(settings) != {0: offset}:
            assert time.monotonic() < deadline, (_committed(settings), offset)
            time.sleep(0.5)
    return read


def test_given_group_when_source_starts_then_it_resumes_from_the_offsets_checkpoints_committed(
    tmp_path, kafka_broker, topic_name
):
    settings = _settings(tmp_path, kafka_broker, topic_name)  # kafka_start: group, the default
    assert settings.job.kafka_start == "group"
    produce(kafka_broker.bootstrap_servers, topic_name, OLD)
    # a group with no committed offsets starts at the earliest
    assert _read_until_committed(settings, len(OLD), len(OLD)) == OLD
    new = [b"new-0", b"new-1"]
    produce(kafka_broker.bootstrap_servers, topic_name, new)
    # the first run's checkpoints committed its offsets: the second goes on from them
    assert _read_until_committed(settings, len(new), len(OLD) + len(new)) == new


def test_given_latest_when_source_starts_then_only_records_produced_after_it_are_read(
    tmp_path, kafka_broker, topic_name
):
    produce(kafka_broker.bootstrap_servers, topic_name, OLD)
    settings = _settings(tmp_path, kafka_broker, topic_name, kafka_start="latest")
    halt = threading.Event()

    def keep_producing() -> None:
        # the source looks the end offsets up once it runs: produce until it sees records
        for i in range(600):
            if halt.wait(0.2):
                return
            produce(kafka_broker.bootstrap_servers, topic_name, [f"new-{i}".encode()])

    producer = threading.Thread(target=keep_producing, daemon=True)
    read: list[bytes] = []
    started = time.monotonic()
    with _frames(settings).execute_and_collect("kafka-start-latest") as results:
        producer.start()
        try:
            for record in results:  # unbounded: leaving the loop cancels the job
                read.append(bytes(record))
                if len(read) == 3:
                    break
        finally:
            halt.set()
            producer.join(10)
    assert all(r.startswith(b"new-") for r in read), read
    numbers = [int(r.split(b"-")[1]) for r in read]
    assert numbers == sorted(numbers) and numbers == list(range(numbers[0], numbers[0] + 3))
    assert time.monotonic() - started < 120
