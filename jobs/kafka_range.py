"""Bounded reads of a Kafka topic: a time range or explicit offsets -> per-partition
``[start, end)`` offset ranges, fixed once when planned, then read up to exactly those ends.

Because every end offset is fixed before the first fetch (``offsets_for_times`` of the range
end, or the partition's end offset at planning time when nothing is that late), a read never
waits for data beyond the range end: it is safe on a live topic that keeps growing.

Time ranges are in broker record time (the producer's create time, or the broker's append
time), which is what ``offsets_for_times`` indexes; for frames that is within the ingest
latency of the capture time.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError, NoBrokersAvailable

from facerec.config import KafkaConfig

FETCH_MAX_BYTES = 64 << 20
"""kafka-python's default 1 MB receive limit is smaller than one fetch of frame records."""
_OFFSETS_RE = re.compile(r"^(\d+):(\d+)-(\d+)$")


class RangeError(Exception):
    """A range that cannot be read: unknown topic, empty range, unreachable broker. The
    message says what was asked and what was found; the CLI prints it (exit code 2)."""


@dataclass(frozen=True)
class PartitionRange:
    partition: int
    start: int
    end: int
    """Exclusive."""

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)

    def as_dict(self) -> dict[str, int]:
        return {"partition": self.partition, "start": self.start, "end": self.end}


def parse_time(value: str) -> int:
    """Epoch milliseconds from ``1718000000000`` (epoch ms), ``now``, or an ISO 8601 time
    (``2024-06-10T08:00:00Z``; a time without zone is taken as UTC)."""
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if text.lower() == "now":
        return time.time_ns() // 1_000_000
    try:
        dt = datetime.fromisoformat(text)
    except ValueError as exc:
        raise RangeError(
            f"time {value!r}: expected epoch milliseconds, 'now' or ISO 8601 "
            "(e.g. 2024-06-10T08:00:00Z)"
        ) from exc
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def iso(ms: int | None) -> str | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def parse_offsets(specs: list[str]) -> dict[int, tuple[int, int]]:
    """``["0:100-250", "1:0-80"]`` -> {partition: (start, end)}; ends are exclusive."""
    out: dict[int, tuple[int, int]] = {}
    for spec in specs:
        m = _OFFSETS_RE.match(spec.strip())
        if not m:
            raise RangeError(f"offsets {spec!r}: expected PARTITION:START-END, e.g. 0:100-250")
        p, start, end = (int(g) for g in m.groups())
        if end < start:
            raise RangeError(f"offsets {spec!r}: end {end} is before start {start}")
        if p in out:
            raise RangeError(f"offsets: partition {p} given twice")
        out[p] = (start, end)
    return out


def open_consumer(kafka: KafkaConfig, **extra: Any) -> KafkaConsumer:
    """A group-less consumer (partitions are assigned by hand); an unreachable broker raises
    ``RangeError`` within a few seconds instead of a kafka-python traceback."""
    conf: dict[str, Any] = {
        **kafka.client_options(),
        "enable_auto_commit": False,
        "group_id": None,
        "receive_message_max_bytes": FETCH_MAX_BYTES,
        "fetch_max_bytes": FETCH_MAX_BYTES,
        "max_partition_fetch_bytes": 16 << 20,
        "request_timeout_ms": 15_000,
        "api_version_auto_timeout_ms": 5_000,
        **extra,
    }
    try:
        return KafkaConsumer(**conf)
    except NoBrokersAvailable as exc:
        raise RangeError(
            f"Kafka broker unreachable at {kafka.bootstrap_servers} "
            "(set kafka.bootstrap_servers or FACEREC_KAFKA__BOOTSTRAP_SERVERS)"
        ) from exc


def _offsets_at(
    consumer: KafkaConsumer, tps: list[TopicPartition], ts: int, fallback: dict[Any, int]
) -> dict[TopicPartition, int]:
    """First offset whose timestamp is >= ``ts`` per partition; ``fallback`` (the end offset)
    when no record is that late (Kafka answers None)."""
    found = consumer.offsets_for_times({tp: ts for tp in tps})
    out = {}
    for tp in tps:
        hit = found.get(tp)
        out[tp] = fallback[tp] if hit is None else int(hit.offset)
    return out


def plan_ranges(
    consumer: KafkaConsumer,
    topic: str,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    offsets: dict[int, tuple[int, int]] | None = None,
    partitions: set[int] | None = None,
) -> list[PartitionRange]:
    """Per-partition ``[start, end)`` for the time range (or the explicit offsets), clamped
    to what the topic holds now. Without ``start_ms`` the range starts at the beginning,
    without ``end_ms`` at the current end."""
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise RangeError(f"empty time range: --to ({iso(end_ms)}) is not after --from "
                         f"({iso(start_ms)})")
    try:
        known = consumer.partitions_for_topic(topic)
        if not known:
            raise RangeError(f"topic {topic!r} does not exist (or has no partitions)")
        wanted = sorted(known if partitions is None else known & partitions)
        if offsets:
            unknown = sorted(set(offsets) - known)
            if unknown:
                raise RangeError(f"topic {topic!r} has no partition(s) {unknown}; it has "
                                 f"{sorted(known)}")
            wanted = sorted(offsets)
        tps = [TopicPartition(topic, p) for p in wanted]
        first = consumer.beginning_offsets(tps)
        last = consumer.end_offsets(tps)
        if offsets:
            starts = {tp: offsets[tp.partition][0] for tp in tps}
            ends = {tp: offsets[tp.partition][1] for tp in tps}
        else:
            starts = first if start_ms is None else _offsets_at(consumer, tps, start_ms, last)
            ends = last if end_ms is None else _offsets_at(consumer, tps, end_ms, last)
    except KafkaError as exc:
        raise RangeError(f"cannot plan the range of {topic!r}: {exc!r}") from exc
    ranges = []
    for tp in tps:
        start = max(starts[tp], first[tp])
        end = min(ends[tp], last[tp])
        ranges.append(PartitionRange(tp.partition, start, max(start, end)))
    return ranges


def read_ranges(
    consumer: KafkaConsumer,
    topic: str,
    ranges: list[PartitionRange],
    *,
    stall_timeout_s: float = 30.0,
) -> Iterator[Any]:
    """Yield the ``ConsumerRecord``s of ``ranges`` (in offset order per partition) and stop
    when every partition reached its end offset. Raises ``RangeError`` when no record comes
    for ``stall_timeout_s`` although some are due (deleted by retention, broker gone)."""
    active = {TopicPartition(topic, r.partition): r for r in ranges if r.size}
    if not active:
        return
    consumer.assign(list(active))
    for tp, r in active.items():
        consumer.seek(tp, r.start)
    last_progress = time.monotonic()
    while active:
        try:
            polled = consumer.poll(timeout_ms=500)
        except KafkaError as exc:
            raise RangeError(f"reading {topic!r} failed: {exc!r}") from exc
        for tp, records in polled.items():
            wanted = active.get(tp)
            if wanted is None:
                continue
            for record in records:
                if record.offset >= wanted.end:
                    break
                last_progress = time.monotonic()
                yield record
        for tp in list(active):
            if consumer.position(tp) >= active[tp].end:
                consumer.pause(tp)
                del active[tp]
        if active and time.monotonic() - last_progress > stall_timeout_s:
            left = {tp.partition: (consumer.position(tp), r.end) for tp, r in active.items()}
            raise RangeError(
                f"no record from {topic!r} for {stall_timeout_s:.0f}s although the range is "
                f"not done (partition: (position, end)) {left}"
            )


def in_time(record: Any, start_ms: int | None, end_ms: int | None) -> bool:
    """Whether a record's timestamp lies in ``[start_ms, end_ms)``: the planned offsets come
    from ``offsets_for_times``, and create times can be out of order in a partition (several
    producers, a spool re-sent after an outage); this keeps a time range exact."""
    return (start_ms is None or record.timestamp >= start_ms) and (
        end_ms is None or record.timestamp < end_ms
    )


def peek(consumer: KafkaConsumer, topic: str, partition: int, offset: int) -> Any | None:
    """The record at ``offset`` (or the next one), or None."""
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    consumer.seek(tp, offset)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        polled = consumer.poll(timeout_ms=500, max_records=1)
        for record in polled.get(tp, []):
            return record
    return None
