"""How far the job is behind its frames topic.

The Kafka source commits the offsets it has read to the job's consumer group when a
checkpoint completes (``job.checkpoint_interval_ms``, 10 s by default): the lag against
those offsets is what a Kafka lag exporter shows, and it includes frames read since the last
checkpoint. Before the first checkpoint commits, the group has no offsets; the lag is then
taken from the offsets the source has read (``currentOffset`` of the source's
``KafkaSourceReader`` metrics, through Flink's REST API), and failing that only the topic's
end offsets are known.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from facerec.config import Settings

SOURCE_NAME = "kafka-frames"
_CURRENT = re.compile(r"KafkaSourceReader\.topic\.(.+)\.partition\.(\d+)\.currentOffset$")


@dataclass
class Lag:
    topic: str
    group: str
    ends: dict[int, int] = field(default_factory=dict)
    committed: dict[int, int] = field(default_factory=dict)
    read: dict[int, int] = field(default_factory=dict)
    error: str | None = None

    def _behind(self, positions: dict[int, int]) -> int:
        return sum(max(0, end - positions.get(p, 0)) for p, end in self.ends.items())

    @property
    def committed_lag(self) -> int | None:
        return self._behind(self.committed) if self.committed else None

    @property
    def read_lag(self) -> int | None:
        return self._behind(self.read) if self.read else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "group": self.group,
            "end_offsets": self.ends,
            "committed_offsets": self.committed,
            "read_offsets": self.read,
            "committed_lag": self.committed_lag,
            "read_lag": self.read_lag,
            "error": self.error,
        }

    def describe(self) -> str:
        head = f"lag of {self.topic} (group {self.group}): "
        if self.error:
            return head + f"unknown ({self.error})"
        total = sum(self.ends.values())
        parts = []
        if self.committed_lag is not None:
            parts.append(
                f"{self.committed_lag} frames after the offsets the last checkpoint committed"
            )
        else:
            parts.append("no committed offsets yet (the job commits them when a checkpoint "
                         "completes)")
        if self.read_lag is not None:
            parts.append(f"{self.read_lag} not yet read by the job's source (its read "
                         "offsets, Flink REST)")
        elif self.committed_lag is None:
            parts.append("the source's read offsets are not reported yet: showing the "
                         f"topic's size only, {total} frames")
        per = ", ".join(
            f"p{p} end {end}"
            + (f" committed {self.committed[p]}" if p in self.committed else "")
            + (f" read {self.read[p]}" if p in self.read else "")
            for p, end in sorted(self.ends.items())
        )
        return head + "; ".join(parts) + (f" [{per}]" if per else "")


def frames_lag(
    settings: Settings, flink_get: Callable[[str], Any] | None, job_id: str | None
) -> Lag:
    """The lag of the job's frames source: committed offsets of its group against the
    topic's end offsets, and the offsets its source reports having read."""
    kafka = settings.kafka
    lag = Lag(kafka.frames_topic, settings.job.kafka_group_id)
    try:
        lag.committed, lag.ends = frames_offsets(settings)
    except Exception as exc:  # broker down or unreachable: say so, status goes on
        lag.error = f"Kafka: {exc}"
        return lag
    if flink_get is not None and job_id:
        try:
            lag.read = _source_read_offsets(flink_get, job_id, kafka.frames_topic)
        except (OSError, KeyError, ValueError):
            pass  # the job is not running or reports no offsets yet
    return lag


def frames_offsets(settings: Settings) -> tuple[dict[int, int], dict[int, int]]:
    """(offsets the job's group committed, end offsets) per partition of the frames topic;
    partitions the group has not committed to are left out."""
    from kafka import KafkaAdminClient, TopicPartition
    from kafka.errors import KafkaError

    from jobs.kafka_range import open_consumer

    kafka = settings.kafka
    admin = KafkaAdminClient(**kafka.client_options(), request_timeout_ms=5000,
                             api_version_auto_timeout_ms=5000)
    try:
        committed = admin.list_consumer_group_offsets(settings.job.kafka_group_id)
    except KafkaError:
        # a broker on which no group has committed yet has no offsets topic, hence no
        # coordinator to ask: no committed offsets
        committed = {}
    finally:
        admin.close()
    consumer = open_consumer(kafka)
    try:
        parts = consumer.partitions_for_topic(kafka.frames_topic) or set()
        ends = consumer.end_offsets([TopicPartition(kafka.frames_topic, p) for p in parts])
    finally:
        consumer.close()
    return (
        {tp.partition: o.offset for tp, o in committed.items()
         if tp.topic == kafka.frames_topic and o.offset >= 0},
        {tp.partition: int(o) for tp, o in ends.items()},
    )


def _source_read_offsets(
    flink_get: Callable[[str], Any], job_id: str, topic: str
) -> dict[int, int]:
    job = flink_get(f"/jobs/{job_id}")
    vertex = next(v for v in job["vertices"] if SOURCE_NAME in v["name"])
    base = f"/jobs/{job_id}/vertices/{vertex['id']}/metrics"
    names = (topic, topic.replace(".", "_"))  # the reporter's scope turns dots into '_'
    wanted = [
        m["id"] for m in flink_get(base)
        if (found := _CURRENT.search(m["id"])) and found.group(1) in names
    ]
    if not wanted:
        return {}
    out: dict[int, int] = {}
    for metric in flink_get(f"{base}?get={','.join(wanted)}"):
        found = _CURRENT.search(metric["id"])
        value = float(metric["value"])
        if found and value >= 0:
            out[int(found.group(2))] = max(out.get(int(found.group(2)), 0), int(value))
    return out
