"""Kafka topics in tests: produce records, and read a whole topic back up to its end offsets
(committed records only, by default: what a ``read_committed`` consumer sees)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer

from facerec.config import KafkaConfig
from jobs.kafka_range import open_consumer, plan_ranges, read_ranges
from jobs.services.kafka import MESSAGE_MAX_BYTES


def produce(
    bootstrap_servers: str,
    topic: str,
    values: Sequence[bytes],
    *,
    key: bytes | None = None,
    timestamps_ms: Sequence[int] | None = None,
) -> None:
    """Send ``values`` in order (acks=all) and wait until the broker has them all."""
    producer = KafkaProducer(
        bootstrap_servers=bootstrap_servers, acks="all", max_request_size=MESSAGE_MAX_BYTES
    )
    try:
        futures = [
            producer.send(
                topic,
                key=key,
                value=value,
                timestamp_ms=None if timestamps_ms is None else timestamps_ms[i],
            )
            for i, value in enumerate(values)
        ]
        producer.flush(30)
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close()


@dataclass(frozen=True)
class TopicContents:
    records: list[Any]
    """kafka-python ``ConsumerRecord``s, partition by partition, in offset order."""
    offsets: int
    """Offsets the partitions span: one per record, plus one per transaction marker (and per
    aborted record when read committed)."""

    def values(self) -> list[bytes]:
        return [r.value for r in self.records]


def read_topic(bootstrap_servers: str, topic: str, *, committed: bool = True) -> TopicContents:
    """Every record of ``topic`` from its start to its end offsets now."""
    isolation = "read_committed" if committed else "read_uncommitted"
    consumer = open_consumer(
        KafkaConfig(bootstrap_servers=bootstrap_servers), isolation_level=isolation
    )
    try:
        ranges = plan_ranges(consumer, topic)
        records = list(read_ranges(consumer, topic, ranges))
    finally:
        consumer.close()
    return TopicContents(records, sum(r.size for r in ranges))
