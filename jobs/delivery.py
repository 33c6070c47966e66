"""Deliver one camera's frame records to Kafka in order, with no loss when the broker is down.

Healthy: records go straight to the producer (acks=all, retries, one request in flight so
the order per camera holds), at most ``max_pending`` unacknowledged. Degraded: as soon as a
send fails or the oldest unacked record is older than ``send_timeout_s``, the producer is
aborted, every unacknowledged record is moved to the camera's on-disk spool *in order*, and
new records are appended behind them. A drainer thread re-sends the spool oldest first with
backoff; when it is empty the camera sends directly again. So every frame reaches the topic
at least once, and the first copy of each frame arrives in capture order (a frame sent
before an outage may be delivered twice; downstream dedups by frame id).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError
from prometheus_client import Counter, Gauge, Histogram

from facerec.config import IngestConfig, KafkaConfig
from jobs.spool import Spool

log = logging.getLogger(__name__)
_LABELS = ("camera", "region")

FRAMES_READ = Counter("facerec_ingest_frames_read", "Frames decoded from the camera.", _LABELS)
FRAMES_SENT = Counter("facerec_ingest_frames_sent", "Frames acknowledged by Kafka.", _LABELS)
FRAMES_SPOOLED = Counter(
    "facerec_ingest_frames_spooled", "Frames written to the on-disk spool.", _LABELS
)
FRAMES_SHED = Counter(
    "facerec_ingest_frames_shed", "Oldest spooled frames deleted because the spool was full.",
    _LABELS,
)
FRAMES_DROPPED = Counter(
    "facerec_ingest_frames_dropped",
    "Frames read but not sent (fps cap, encode error, record larger than Kafka takes).",
    _LABELS,
)
RECONNECTS = Counter(
    "facerec_ingest_camera_reconnects", "Camera (re)connection attempts after a failure.", _LABELS
)
SEND_SECONDS = Histogram(
    "facerec_ingest_send_seconds", "From producer.send to broker acknowledgement.", _LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
_COUNTERS = {
    "read": FRAMES_READ, "sent": FRAMES_SENT, "spooled": FRAMES_SPOOLED, "shed": FRAMES_SHED,
    "dropped": FRAMES_DROPPED, "reconnects": RECONNECTS,
}
SPOOL_DEPTH = Gauge("facerec_ingest_spool_depth", "Frames waiting in the spool.", _LABELS)


@dataclass
class CameraStats:
    """Per-camera counts (mirrors the Prometheus series, readable without a registry)."""

    camera: str
    region: str
    read: int = 0
    sent: int = 0
    spooled: int = 0
    shed: int = 0
    dropped: int = 0
    reconnects: int = 0
    bytes_sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, what: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + n)
        metric = _COUNTERS.get(what)
        if metric is not None and n:
            metric.labels(self.camera, self.region).inc(n)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}


def producer_config(kafka: KafkaConfig, ingest: IngestConfig) -> dict[str, Any]:
    try:
        import crc32c  # noqa: F401 - kafka-python checksums every batch with it when present
    except ImportError:
        log.warning("the 'crc32c' package is missing: kafka-python falls back to a pure-Python "
                    "CRC (~10 ms per 90 kB frame), capping ingest near 70 frames/s")
    conf: dict[str, Any] = {
        **kafka.client_options(),  # servers, security protocol, SASL
        "acks": "all",
        "retries": ingest.kafka_retries,
        "max_in_flight_requests_per_connection": 1,
        "linger_ms": 5,
        "batch_size": 1 << 20,  # frames are ~50-200 kB: let several share a request
        "max_request_size": 16 << 20,
        "max_block_ms": int(ingest.send_timeout_s * 1000),
        "request_timeout_ms": int(min(ingest.send_timeout_s, 30) * 1000),
        "delivery_timeout_ms": int(ingest.send_timeout_s * 3000),
    }
    return conf


@dataclass
class _Pending:
    key: bytes
    value: bytes
    future: Any
    sent_at: float


class FrameSender:
    """Owns one producer and one spool; ``submit`` is called from the camera thread only."""

    def __init__(
        self,
        stats: CameraStats,
        topic: str,
        spool: Spool,
        producer_conf: dict[str, Any],
        cfg: IngestConfig,
        producer_factory: Callable[..., KafkaProducer] = KafkaProducer,
    ) -> None:
        self.stats, self.topic, self.spool, self.cfg = stats, topic, spool, cfg
        self._conf = producer_conf
        self._factory = producer_factory
        self._producer: KafkaProducer | None = None
        self._pending: deque[_Pending] = deque()
        self._lock = threading.Lock()
        self._degraded = len(spool) > 0  # leftovers of a previous run go first
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._gauge = SPOOL_DEPTH.labels(stats.camera, stats.region)
        self._gauge.set(len(spool))
        self._drainer = threading.Thread(
            target=self._drain_loop, name=f"drain-{stats.camera}", daemon=True
        )
        self._drainer.start()

    @property
    def degraded(self) -> bool:
        return self._degraded

    # ----------------------------------------------------------------------- producer
    def _get_producer(self) -> KafkaProducer:
        if self._producer is None:
            self._producer = self._factory(**self._conf)
        return self._producer

    def _abort_producer(self) -> None:
        """Stop using the current producer: what it still holds is spooled by the caller.
        It is closed in the background once its batches are delivered or expired (at most
        ``delivery_timeout_ms``); a late delivery only makes a spooled frame arrive twice,
        never after a newer one (both copies are sent in order, the spool's first)."""
        p, self._producer = self._producer, None
        if p is None:
            return
        grace = self._conf.get("delivery_timeout_ms", 120_000) / 1000 + 5

        def retire() -> None:
            try:
                p.close(timeout=grace)
            except Exception as exc:  # a retired producer must not disturb the camera
                log.debug("camera %s: retiring a producer: %r", self.stats.camera, exc)

        threading.Thread(target=retire, name=f"retire-{self.stats.camera}", daemon=True).start()

    def _send(self, key: bytes | None, value: bytes) -> Any:
        started = time.monotonic()
        future = self._get_producer().send(self.topic, key=key, value=value)
        hist = SEND_SECONDS.labels(self.stats.camera, self.stats.region)

        def acked(_md: Any, n: int = len(value)) -> None:
            hist.observe(time.monotonic() - started)
            self.stats.add("sent")
            self.stats.add("bytes_sent", n)

        future.add_callback(acked)
        return future

    # ----------------------------------------------------------------------- camera side
    def submit(self, key: bytes, value: bytes) -> None:
        """Hand one encoded frame record over; never blocks longer than ``send_timeout_s``.
        A record larger than the producer may send is dropped with an error: spooled, it
        would block every later frame of the camera behind a send that can never succeed."""
        limit = self._conf.get("max_request_size")
        if limit is not None and len(key) + len(value) > limit:
            self.stats.add("dropped")
            log.error("camera %s: frame record of %d bytes is over the %d-byte Kafka request "
                      "limit; dropped (lower the camera's resolution or jpeg_quality)",
                      self.stats.camera, len(value), limit)
            return
        with self._lock:
            if self._degraded:
                self._spool_locked([(key, value)])
                return
            try:
                future = self._send(key, value)
            except (KafkaError, OSError) as exc:
                self._degrade_locked(f"send failed: {exc!r}", extra=[(key, value)])
                return
            self._pending.append(_Pending(key, value, future, time.monotonic()))
            self._reap_locked(block=len(self._pending) >= self.cfg.max_pending)

    def _reap_locked(self, block: bool) -> None:
        while self._pending:
            head = self._pending[0]
            if head.future.is_done:
                if head.future.succeeded():
                    self._pending.popleft()
                    continue
                self._degrade_locked(f"delivery failed: {head.future.exception!r}")
                return
            left = self.cfg.send_timeout_s - (time.monotonic() - head.sent_at)
            if left <= 0:
                self._degrade_locked(f"no acknowledgement within {self.cfg.send_timeout_s}s")
                return
            if not block:
                return
            with contextlib.suppress(KafkaError):
                head.future.get(timeout=left)  # the loop re-checks how it ended

    def _degrade_locked(self, why: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        self._abort_producer()
        unacked = [
            (p.key, p.value) for p in self._pending
            if not (p.future.is_done and p.future.succeeded())
        ]
        self._pending.clear()
        self._degraded = True
        log.error(
            "camera %s: Kafka unreachable (%s); spooling %d unacknowledged frames and all "
            "new ones until it returns", self.stats.camera, why, len(unacked) + len(extra or []),
        )
        self._spool_locked(unacked + (extra or []))

    def _spool_locked(self, records: list[tuple[bytes, bytes]]) -> None:
        if not records:
            return
        shed = self.spool.append(records)
        self.stats.add("spooled", len(records))
        self.stats.add("shed", shed)
        self._gauge.set(len(self.spool))
        self._wake.set()

    # ----------------------------------------------------------------------- drainer
    def _drain_loop(self) -> None:
        backoff = self.cfg.retry_initial_s
        while not self._stop.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if not self._degraded or self._stop.is_set():
                continue
            if self._drain_once():
                backoff = self.cfg.retry_initial_s
                continue
            self._stop.wait(backoff)
            backoff = min(backoff * 2, self.cfg.retry_max_s)

    def _drain_once(self) -> bool:
        """Send the spool head in order until it is empty (True) or a send fails (False).
        The first send of each attempt is the head frame alone: a probe that costs at most
        one duplicate while the broker is still away."""
        probing = True
        while not self._stop.is_set():
            batch = self.spool.peek(1 if probing else self.cfg.max_pending)
            if not batch:
                with self._lock:
                    if len(self.spool) == 0:
                        self._degraded = False
                        log.warning("camera %s: Kafka is back and the spool is empty; "
                                    "sending directly again", self.stats.camera)
                        return True
                continue
            futures = []
            try:
                for r in batch:
                    futures.append(self._send(r.key, r.value))
                self._get_producer().flush(timeout=self.cfg.send_timeout_s)
            except (KafkaError, OSError) as exc:
                log.warning("camera %s: spool drain failed (%r); %d frames wait",
                            self.stats.camera, exc, len(self.spool))
            delivered = 0
            for f in futures:
                if not (f.is_done and f.succeeded()):
                    break
                delivered += 1
            if delivered:
                self.spool.ack(batch[delivered - 1].seq)
                self._gauge.set(len(self.spool))
            if delivered < len(batch):
                if not probing:  # records behind a failed one must not land before its copy
                    self._abort_producer()
                return False
            probing = False
        return False

    # ----------------------------------------------------------------------- shutdown
    def flush(self, timeout: float) -> bool:
        """Wait until every submitted frame is acknowledged (spool drained); True if so."""
        deadline = time.monotonic() + timeout
        with self._lock:
            if not self._degraded and self._pending:
                wait = max(0.0, min(timeout, self.cfg.send_timeout_s))
                with contextlib.suppress(KafkaError):
                    self._get_producer().flush(timeout=wait)
                self._reap_locked(block=False)
                if self._pending and not self._degraded:
                    self._degrade_locked("not acknowledged at flush")
        self._wake.set()
        while time.monotonic() < deadline:
            if not self._degraded and not self._pending:
                return True
            time.sleep(0.05)
        return not self._degraded and not self._pending

    def close(self) -> None:
        """Stop; frames not yet acknowledged stay in the spool for the next run."""
        self._stop.set()
        self._wake.set()
        self._drainer.join(timeout=self.cfg.send_timeout_s + 5)
        with self._lock:
            if self._pending:
                self._degrade_locked("agent stopping")
            if self._producer is not None:
                with contextlib.suppress(Exception):
                    self._producer.close(timeout=self.cfg.send_timeout_s)
                self._producer = None
        self.spool.close()
