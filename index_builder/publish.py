"""Publishing index messages (``facerec.records.index_message``) and following them.

Every snapshot manifest, enrollment delta and deletion goes to

* the local manifests directory, one JSON file per message named
  ``<ts_ms>-<seq>-<kind>-<rand>.json`` (zero-padded: name order = time order), which is
  what the embedded default and the API follow; and
* when ``settings.index.publish_kafka``, the Kafka topic ``settings.kafka.index_topic``
  (acks=all, one fixed key so every message lands in one partition, in order).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from facerec.config import KafkaConfig, Settings
from facerec.records import IndexKind, index_message, now_ms
from index_builder.snapshot import SnapshotInfo
from index_builder.store import Change, Template

log = logging.getLogger(__name__)
INDEX_KEY = b"facerec-index"


class IndexPublisher:
    """Writes index messages to the manifests directory and optionally to Kafka."""

    def __init__(
        self,
        directory: Path,
        kafka: KafkaConfig | None = None,
        topic: str | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.topic = topic or (kafka.index_topic if kafka else None)
        self.timeout_s = timeout_s
        self._kafka_config = kafka
        self._producer: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> IndexPublisher:
        return cls(
            settings.manifests_path(), settings.kafka if settings.index.publish_kafka else None
        )

    def _kafka(self) -> Any:
        if self._producer is None and self._kafka_config is not None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                acks="all", retries=5, linger_ms=0, **self._kafka_config.client_options()
            )
        return self._producer

    def publish(self, kind: IndexKind, seq: int, **body: Any) -> str:
        """Publish one message; returns the JSON text. Kafka failures raise (after the local
        copy is written) so a caller can report that the delta did not reach the job."""
        message = index_message(kind, seq=int(seq), **body)
        with self._lock:
            name = f"{now_ms():013d}-{int(seq):012d}-{kind}-{secrets.token_hex(3)}.json"
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
            with os.fdopen(fd, "w") as f:
                f.write(message)
            os.replace(tmp, self.directory / name)
            producer = self._kafka()
            if producer is not None:
                future = producer.send(self.topic, value=message.encode(), key=INDEX_KEY)
                producer.flush(self.timeout_s)
                future.get(timeout=self.timeout_s)
        return message

    def publish_snapshot(self, info: SnapshotInfo) -> str:
        return self.publish(
            "snapshot",
            info.manifest["max_change_seq"],
            manifest=info.manifest,
            path=str(info.path.resolve()),
        )

    def publish_enroll(self, template: Template) -> str:
        if template.embedding is None:
            raise ValueError(f"template {template.id} has no embedding to publish")
        return self.publish(
            "enroll",
            template.seq,
            person_id=template.person_id,
            template_id=template.id,
            vector=np.asarray(template.embedding, dtype=np.float32).tolist(),
            model_id=template.model_id,
        )

    def publish_delete(self, change: Change) -> str:
        return self.publish("delete", change.seq, person_id=change.person_id)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close(timeout=self.timeout_s)
            self._producer = None


class LocalIndexLog:
    """Follows the manifests directory: ``poll()`` returns messages not seen before, in name
    order. The first poll starts at the newest snapshot message (older ones are superseded)
    and includes every delta file (a matcher drops those the snapshot already covers)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._seen: set[str] = set()
        self._started = False

    def _names(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(n for n in os.listdir(self.directory) if n.endswith(".json") and n[0] != ".")

    def poll(self) -> list[dict[str, Any]]:
        names = [n for n in self._names() if n not in self._seen]
        if not self._started:
            self._started = True
            snaps = [n for n in names if "-snapshot-" in n]
            if snaps:
                skipped = {n for n in names if "-snapshot-" in n and n != snaps[-1]}
                self._seen |= skipped
                names = [n for n in names if n not in skipped]
        out = []
        for n in names:
            self._seen.add(n)
            try:
                out.append(json.loads((self.directory / n).read_text()))
            except (OSError, ValueError) as exc:
                log.warning("skipping index message %s: %s", n, exc)
        return out

    def follow(self, apply: Callable[[dict[str, Any]], Any]) -> int:
        """Apply every new message; returns how many were applied."""
        messages = self.poll()
        for m in messages:
            apply(m)
        return len(messages)


def read_kafka_messages(
    kafka: KafkaConfig, topic: str, expected: int, timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """Read ``expected`` index messages from the start of ``topic`` (tests, audits)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=int(timeout_s * 1000),
        **kafka.client_options(),
    )
    out: list[dict[str, Any]] = []
    try:
        for record in consumer:
            out.append(json.loads(record.value))
            if len(out) >= expected:
                break
    finally:
        consumer.close()
    return out
