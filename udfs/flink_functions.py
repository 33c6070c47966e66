"""Thin Flink wrappers around the plain-Python stages (the only udfs module importing Flink).

Each function receives the settings as JSON, builds its models and clients in ``open()``
and frees them in ``close()``. Bad records leave through side outputs, never exceptions.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import OutputTag
from pyflink.datastream.functions import (
    KeyedBroadcastProcessFunction,
    MapFunction,
    ProcessFunction,
    RuntimeContext,
)
from pyflink.datastream.state import (
    ListStateDescriptor,
    MapStateDescriptor,
    ValueStateDescriptor,
)

from facerec.config import Settings
from facerec.records import DeadLetter, FrameRecord, RecognitionEvent, now_ms
from udfs.errors import FaceRecError
from udfs.pipeline import (
    FrameStat,
    analyze_batch,
    decode_record,
    gate_frame,
    to_events,
)
from udfs.track import FaceTracks

log = logging.getLogger(__name__)

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
FRAME_STATS = OutputTag("frame-stats", Types.STRING())
INDEX_STATE = MapStateDescriptor("index", Types.STRING(), Types.STRING())
LATENCY_BUCKETS_MS = (10, 25, 50, 100, 150, 200, 300, 500, 1000, 2000, 5000, 10000)
STAGES = (("gate", "ingest"), ("detect", "gate"), ("embed", "detect"), ("match", "embed"))
END_OF_INPUT = 2**62
"""An event-time timer this far out fires only on the final watermark a bounded source
emits when it ends: buffered frames are flushed then, not dropped (processing-time timers
do not fire after the end of input)."""


def _stat_json(stat: FrameStat) -> str:
    return json.dumps(stat.__dict__, separators=(",", ":"))


class _Metrics:
    """Flink user metrics under group ``facerec``, with per-camera sub-groups created lazily
    (exported by the Prometheus reporter as labels)."""

    def __init__(self, ctx: RuntimeContext, operator: str) -> None:
        self.group = ctx.get_metrics_group().add_group("facerec").add_group("stage", operator)
        self._counters: dict[tuple[str, str], object] = {}
        self._deferred: list[tuple[str, str, int, object]] = []
        self.deferring = False
        """While True (inside ``on_timer``), updates wait for ``flush_deferred`` in the next
        ``process_element``: PyFlink drops metric updates made in timer callbacks (seen:
        counts stopped growing once batches were flushed by timers)."""

    def flush_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for name, camera, n, le in deferred:
            self._count(name, camera, n, le)

    def _count(self, name: str, camera: str, n: int, le: object = None) -> None:
        if self.deferring:
            self._deferred.append((name, camera, n, le))
            return
        key = (name if le is None else f"{name}@{le}", camera)
        if key not in self._counters:
            group = self.group.add_group("camera", camera) if camera else self.group
            if le is not None:
                group = group.add_group("le", str(le))
            self._counters[key] = group.counter(name)
        self._counters[key].inc(n)  # type: ignore[attr-defined]

    def inc(self, name: str, camera: str = "", n: int = 1) -> None:
        self._count(name, camera, n)

    def histogram(self, name: str, value_ms: float, camera: str = "") -> None:
        """Prometheus-style cumulative buckets as counters with an ``le`` label, so
        ``histogram_quantile(0.95, sum by (le) (rate(<name>[5m])))`` works on the Flink
        reporter's output (Python user metrics have no histogram type)."""
        for bound in LATENCY_BUCKETS_MS:
            if value_ms <= bound:
                self.inc_labelled(name, camera, bound)
        self.inc_labelled(name, camera, "+Inf")

    def inc_labelled(self, name: str, camera: str, le: object) -> None:
        self._count(name, camera, 1, le)


class DecodeFrames(ProcessFunction):
    """Bytes -> FrameRecord; undecodable or unknown-version records -> dead letters."""

    def open(self, ctx: RuntimeContext) -> None:
        self.metrics = _Metrics(ctx, "decode")

    def process_element(self, value, ctx):
        record = decode_record(bytes(value))
        if isinstance(record, DeadLetter):
            self.metrics.inc("dead_letters")
            yield DEAD_LETTERS, record.to_json()
            return
        self.metrics.inc("frames_in", record.camera_id)
        yield record


class RecognizeFrames(KeyedBroadcastProcessFunction):
    """Frames keyed by region x broadcast index messages: motion gate, micro-batch, detect +
    embed and match in one operator, so a frame crosses the Java/Python boundary once and
    waits in no queue between TensorFlow and the matcher.

    Per camera (map state): the motion gate. Batching adapts to load: a frame younger than
    ``batch.realtime_lag_ms`` (the job keeps up) is analysed at once together with whatever
    its region has buffered, since waiting would only add latency. Older frames mean a queue
    has formed: they collect in keyed list state and are analysed ``max_frames`` at a time,
    or after ``max_wait_ms`` (a processing-time timer), so TensorFlow runs batched while the
    job catches up.

    The matcher (current snapshot, deltas, tombstones) lives in broadcast state, so a
    restarted job resumes with its snapshot. Until the first index message arrives (or
    ``index_wait_ms`` passes) frames stay buffered rather than being matched against an
    empty gallery."""

    def __init__(self, settings: Settings, index_wait_ms: int = 3000) -> None:
        self.settings = settings  # pickled with the function: secrets stay intact
        self.index_wait_ms = index_wait_ms

    def open(self, ctx: RuntimeContext) -> None:
        from udfs.engine import FaceEngine

        self.batch_cfg = self.settings.job.batch
        self.engine = FaceEngine(self.settings)
        self.engine.warmup()
        self.tracks = FaceTracks(self.settings.job.track)
        self.gates = ctx.get_map_state(
            MapStateDescriptor("gates", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        self.buffer = ctx.get_list_state(ListStateDescriptor("batch", Types.PICKLED_BYTE_ARRAY()))
        self.pending = ctx.get_state(ValueStateDescriptor("pending", Types.LONG()))
        self.matcher = None
        self.ready = False
        self.opened_ms = now_ms()
        self.metrics = _Metrics(ctx, "recognize")
        self.metrics.group.gauge("snapshot_age_seconds", self._snapshot_age)

    def close(self) -> None:
        self.engine.embedder.close()

    # ---------------------------------------------------------------- index (broadcast side)
    def _snapshot_age(self) -> int:
        """Seconds since the current snapshot was built (-1 before the first one)."""
        from datetime import datetime

        manifest = self.matcher.manifest if self.matcher is not None else None
        if not manifest or "created_at" not in manifest:
            return -1
        created = datetime.fromisoformat(manifest["created_at"])
        return int(time.time() - created.timestamp())

    def _new_matcher(self, state: str | None):
        from udfs.embed import EMBEDDING_DIM
        from udfs.match import Matcher
        from udfs.models import FACENET_MODEL_ID

        m = self.settings.match
        kwargs = dict(
            model_id=FACENET_MODEL_ID,
            dim=EMBEDDING_DIM,
            threshold=m.threshold,
            top_k=m.top_k,
            search_k=m.search_k,
        )
        if state:
            return Matcher.from_state(json.loads(state), **kwargs)
        return Matcher(**kwargs)

    def _ensure(self, ctx) -> None:
        if self.matcher is None:
            state = ctx.get_broadcast_state(INDEX_STATE).get("matcher")
            self.matcher = self._new_matcher(state)
            self.ready = state is not None

    def process_broadcast_element(self, value: str, ctx):
        self._ensure(ctx)
        try:
            message = json.loads(value)
            description = self.matcher.apply(message)
        except (FaceRecError, ValueError, KeyError, OSError) as exc:
            self.metrics.inc("index_errors")
            log.error("index message refused, keeping the current snapshot: %s", exc)
            return
        self.ready = True
        log.info("index: %s", description)
        self.metrics.inc(f"index_{message.get('kind', 'unknown')}")
        ctx.get_broadcast_state(INDEX_STATE).put("matcher", json.dumps(self.matcher.state()))

    # ---------------------------------------------------------------- frames (keyed side)
    def process_element(self, record: FrameRecord, ctx):
        from udfs.motion import MotionGate

        self.metrics.flush_deferred()
        self._ensure(ctx)
        raw = self.gates.get(record.camera_id)
        motion = self.settings.job.motion
        gate = MotionGate.from_bytes(raw, motion) if raw is not None else MotionGate(motion)
        decision = gate_frame(gate, record)
        self.gates.put(record.camera_id, gate.to_bytes())
        if isinstance(decision, DeadLetter):
            self.metrics.inc("dead_letters", record.camera_id)
            yield DEAD_LETTERS, decision.to_json()
            return
        if not decision.passed:
            self.metrics.inc("frames_gated_out", record.camera_id)
            stat = FrameStat(
                record.camera_id, record.region, record.frame_id, False, decision.reason
            )
            yield FRAME_STATS, _stat_json(stat)
            return
        self.metrics.inc("frames_passed", record.camera_id)
        gated_at = now_ms()
        item = (record, {"ingest": record.ingest_ts, "gate": gated_at})
        n = (self.pending.value() or 0) + 1
        lag_limit = self.batch_cfg.realtime_lag_ms
        keeping_up = lag_limit > 0 and gated_at - record.ingest_ts <= lag_limit
        if self._may_match() and (keeping_up or n >= self.batch_cfg.max_frames):
            buffered = list(self.buffer.get() or []) if n > 1 else []
            if n > 1:
                self.buffer.clear()
                self.pending.clear()
            yield from self._analyze([*buffered, item])
            return
        self.buffer.add(item)
        self.pending.update(n)
        if n == 1:
            timers = ctx.timer_service()
            wait = self.batch_cfg.max_wait_ms if self._may_match() else 100
            timers.register_processing_time_timer(timers.current_processing_time() + wait)
            timers.register_event_time_timer(END_OF_INPUT)

    def on_timer(self, timestamp: int, ctx):
        self._ensure(ctx)
        if not self.pending.value():
            return
        if not (self._may_match() or timestamp >= END_OF_INPUT):
            ctx.timer_service().register_processing_time_timer(now_ms() + 100)  # wait for index
            return
        batch = list(self.buffer.get() or [])
        self.buffer.clear()
        self.pending.clear()
        self.metrics.deferring = True
        try:
            yield from self._analyze(batch)
        finally:
            self.metrics.deferring = False

    def _may_match(self) -> bool:
        """An index has arrived, or waiting for one has timed out (match as unknown)."""
        return self.ready or now_ms() - self.opened_ms >= self.index_wait_ms

    def _analyze(self, batch):
        started = time.perf_counter()
        candidates, dead, stats = analyze_batch(self.engine, batch, self.tracks)
        # counters, not distributions: the Prometheus reporter exports no distribution value
        self.metrics.inc("batches")
        self.metrics.inc("batch_frames", n=len(batch))
        self.metrics.inc("batch_ms", n=round((time.perf_counter() - started) * 1000))
        for d in dead:
            self.metrics.inc("dead_letters", d.camera_id or "")
            yield DEAD_LETTERS, d.to_json()
        for s in stats:
            if s.reused:
                self.metrics.inc("faces_reused", s.camera_id, s.reused)
            yield FRAME_STATS, _stat_json(s)
        for c in candidates:  # FaceNet passes; reused embeddings are counted above
            if "reused" not in c.stages:
                self.metrics.inc("faces_embedded", c.camera_id)
        for event in to_events(candidates, self.matcher):
            self.metrics.inc("matches" if event.matched else "unknowns", event.camera_id)
            stages = event.stages
            self.metrics.histogram(
                "latency_ms_bucket", stages["match"] - event.capture_ts, event.camera_id
            )
            for stage, previous in STAGES:
                if stages.get(previous) and stages.get(stage):
                    self.metrics.histogram(f"{stage}_ms_bucket", stages[stage] - stages[previous])
            yield event.to_json()


class StoreEvents(MapFunction):
    """Idempotent upsert of each event into the event store (SQLite by default)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings  # pickled with the function: secrets stay intact

    def open(self, ctx: RuntimeContext) -> None:
        from facerec.eventstore import open_event_store

        self.store = open_event_store(self.settings)

    def close(self) -> None:
        self.store.close()

    def map(self, value: str) -> str:
        self.store.write([RecognitionEvent.from_json(value)])
        return value


class AppendJsonLines(MapFunction):
    """Append each record to ``<directory>/<prefix>-<subtask>.jsonl`` (dead letters in the
    embedded default; with Kafka they also go to their topic)."""

    def __init__(self, directory: str, prefix: str) -> None:
        self.directory, self.prefix = directory, prefix

    def open(self, ctx: RuntimeContext) -> None:
        path = Path(self.directory)
        path.mkdir(parents=True, exist_ok=True)
        index = ctx.get_index_of_this_subtask()
        self.file = open(path / f"{self.prefix}-{index}.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def close(self) -> None:
        self.file.close()

    def map(self, value: str) -> str:
        self.file.write(value + "\n")
        self.file.flush()
        return value
