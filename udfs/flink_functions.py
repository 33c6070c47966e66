"""Thin Flink wrappers around the plain-Python stages (the only udfs module importing Flink).

Each function is pickled with the ``Settings`` it was built with (secrets intact) and
shipped to the Python workers; it builds its models and clients in ``open()`` and frees them
in ``close()``. Bad records leave through side outputs, never exceptions.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from pyflink.common import Types
from pyflink.datastream import OutputTag, TimeDomain
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
from pyflink.metrics import Counter

from facerec.config import Settings
from facerec.errors import FaceRecError
from facerec.evidence import frame_key_of, open_evidence_store
from facerec.models import EMBEDDING_DIM, FACENET_MODEL_ID
from facerec.records import (
    DeadLetter,
    FrameRecord,
    RecognitionEvent,
    Sighting,
    dead_letter_within,
    now_ms,
)
from udfs.batching import AnalyseNow, BatchPolicy, Rearm
from udfs.camera_status import CameraStatusWindows
from udfs.match import Matcher
from udfs.pipeline import (
    BatchItem,
    FrameStat,
    analyze_batch,
    decode_record,
    gate_stored,
    observations,
    to_events,
)
from udfs.shedding import AnalysedFrame, LoadShedder
from udfs.sightings import SightingTracker, SightingUpdate
from udfs.track import FaceTracks

log = logging.getLogger(__name__)

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
FRAME_STATS = OutputTag("frame-stats", Types.STRING())
SIGHTINGS = OutputTag("sightings", Types.STRING())
INDEX_STATE = MapStateDescriptor("index", Types.STRING(), Types.STRING())
MATCHER_KEY = "matcher"
"""The one entry of ``INDEX_STATE``: the matcher's state as JSON."""
LATENCY_BUCKETS_MS = (10, 25, 50, 100, 150, 200, 300, 500, 1000, 2000, 5000, 10000)
STAGES = (("gate", "ingest"), ("detect", "gate"), ("embed", "detect"), ("match", "embed"))

Output = str | tuple[OutputTag, str]
"""What the functions yield: a record for the main output, or (side output, record)."""
Label = tuple[str, str] | None
"""A metric's extra label (name, value) beside ``stage`` and ``camera``."""


def _stat_json(stat: FrameStat) -> str:
    return json.dumps(stat.__dict__, separators=(",", ":"))


class _Metrics:
    """Flink user metrics under group ``facerec``, with per-camera sub-groups created lazily
    (exported by the Prometheus reporter as labels)."""

    def __init__(self, ctx: RuntimeContext, operator: str) -> None:
        self.group = ctx.get_metrics_group().add_group("facerec").add_group("stage", operator)
        self._counters: dict[tuple[str, str, Label], Counter] = {}
        self._deferred: list[tuple[str, str, int, Label]] = []
        self._deferring = False

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """Updates made inside wait for ``flush_deferred``: PyFlink drops metric updates
        made in timer callbacks, so ``on_timer`` records them and the next
        ``process_element`` applies them."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False

    def flush_deferred(self) -> None:
        deferred, self._deferred = self._deferred, []
        for name, camera, n, label in deferred:
            self._count(name, camera, n, label)

    def _count(self, name: str, camera: str, n: int, label: Label = None) -> None:
        if self._deferring:
            self._deferred.append((name, camera, n, label))
            return
        key = (name, camera, label)
        if key not in self._counters:
            group = self.group.add_group("camera", camera) if camera else self.group
            if label is not None:
                group = group.add_group(*label)
            self._counters[key] = group.counter(name)
        self._counters[key].inc(n)

    def inc(self, name: str, camera: str = "", n: int = 1) -> None:
        self._count(name, camera, n)

    def inc_reason(self, name: str, camera: str, reason: str) -> None:
        """Count one with a ``reason`` label (why a frame was shed)."""
        self._count(name, camera, 1, ("reason", reason))

    def histogram(self, name: str, value_ms: float, camera: str = "") -> None:
        """Prometheus-style cumulative buckets as counters with an ``le`` label, so
        ``histogram_quantile(0.95, sum by (le) (rate(<name>[5m])))`` works on the Flink
        reporter's output (Python user metrics have no histogram type)."""
        for bound in LATENCY_BUCKETS_MS:
            if value_ms <= bound:
                self._count(name, camera, 1, ("le", str(bound)))
        self._count(name, camera, 1, ("le", "+Inf"))


class DecodeFrames(ProcessFunction):
    """Bytes -> FrameRecord; undecodable or unknown-version records -> dead letters."""

    def open(self, ctx: RuntimeContext) -> None:
        self.metrics = _Metrics(ctx, "decode")

    def process_element(
        self, value: bytes, ctx: ProcessFunction.Context
    ) -> Iterator[FrameRecord | tuple[OutputTag, str]]:
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

    The decisions are plain Python: the motion gate (``gate_stored``, udfs/pipeline.py) and
    when to analyse (``BatchPolicy``, udfs/batching.py: at once while the job keeps up,
    micro-batched once a queue forms, held until the first index message). This class maps
    them onto Flink state, timers and metrics:

    - map state ``gates``: each camera's serialised motion gate;
    - list state ``batch`` and value state ``pending`` (its length): the region's buffered
      frames, so they survive a checkpoint;
    - a processing-time timer per batch (``max_wait_ms``, or ``index_retry_ms`` while waiting
      for the index) and the end-of-input timer: an event-time timer, which fires only on
      the final watermark a bounded source emits when it ends (the sources emit no
      watermarks), so buffered frames are flushed then, not dropped (processing-time timers
      do not fire after the end of input). It is set at the operator's start: what a timer
      emits carries its timestamp, and Kafka refuses records stamped further ahead than
      ``log.message.timestamp.after.max.ms`` (1 h by default);
    - broadcast state ``index``: the matcher (current snapshot, deltas, tombstones), so a
      restarted job resumes with its snapshot;
    - value state ``sightings``: the region's open sightings (udfs/sightings.py), so a
      restored job goes on with the same sightings. Their best faces go to the evidence
      store as they improve; the sightings leave through the ``sightings`` side output.

    Live frames that can no longer be analysed within ``job.latency_budget_ms`` are shed
    after the gate (``LoadShedder``, udfs/shedding.py), unless ``shed_late_frames`` is off
    (bounded inputs: audits and backlogs are analysed whole).

    State names and the operator's uid (``recognize``, jobs/recognition.py) are what a
    savepoint maps by: keep them."""

    def __init__(
        self,
        settings: Settings,
        camera_thresholds: Mapping[str, float] | None = None,
        shed_late_frames: bool = True,
    ) -> None:
        self.settings = settings  # pickled with the function: secrets stay intact
        self.shed_late_frames = shed_late_frames
        # camera id -> its own match threshold (CameraOptions.match_threshold); the others
        # are matched with match.threshold
        self.camera_thresholds = dict(
            settings.camera_thresholds() if camera_thresholds is None else camera_thresholds
        )

    def open(self, ctx: RuntimeContext) -> None:
        from udfs.engine import FaceEngine

        self.engine = FaceEngine(self.settings, threads=self.settings.job.worker_threads)
        self.engine.warmup()
        self.tracks = FaceTracks(self.settings.job.track)
        opened = now_ms()
        self.policy = BatchPolicy(self.settings.job.batch, opened_ms=opened)
        job = self.settings.job
        budget = job.latency_budget_ms if self.shed_late_frames else 0
        self.shedder = LoadShedder(budget, job.min_analysed_fps, track=job.track)
        self.opened_ms = opened
        self.end_of_input_timer = opened  # one timer per key, however many batches
        self.end_of_input_keys: set[str] = set()
        self.gates = ctx.get_map_state(
            MapStateDescriptor("gates", Types.STRING(), Types.PICKLED_BYTE_ARRAY())
        )
        self.buffer = ctx.get_list_state(ListStateDescriptor("batch", Types.PICKLED_BYTE_ARRAY()))
        self.pending = ctx.get_state(ValueStateDescriptor("pending", Types.LONG()))
        self.sighting_state = ctx.get_state(
            ValueStateDescriptor("sightings", Types.PICKLED_BYTE_ARRAY())
        )
        self.evidence = open_evidence_store(self.settings)
        self.matcher: Matcher | None = None
        self.index_ready = False
        self.metrics = _Metrics(ctx, "recognize")
        self.metrics.group.gauge("snapshot_age_seconds", self._snapshot_age)

    def close(self) -> None:
        self.engine.embedder.close()
        self.evidence.close()

    # ---------------------------------------------------------------- sightings
    def _sightings(self) -> SightingTracker:
        """The current key's (region's) open sightings, from keyed state."""
        return SightingTracker.from_state(self.settings.job.sightings, self.sighting_state.value())

    def _publish(self, tracker: SightingTracker, updates: list[SightingUpdate]) -> Iterator[Output]:
        """Keep the tracker in state, the best faces in the evidence store, and send the
        sightings on. A face that cannot be stored leaves its sighting without it (logged,
        counted): the sighting itself is never held back."""
        if len(tracker):
            self.sighting_state.update(tracker.to_state())
        else:
            self.sighting_state.clear()
        for u in updates:
            s = u.sighting
            if u.evidence is not None and s.evidence_key is not None:
                try:
                    self.evidence.put(s.evidence_key, u.evidence)
                    if u.frame is not None:
                        self.evidence.put(frame_key_of(s.evidence_key), u.frame)
                except (OSError, FaceRecError) as exc:
                    self.metrics.inc("evidence_errors", s.camera_id)
                    log.error("sighting %s: face not stored: %s", s.sighting_id, exc)
            self.metrics.inc(f"sightings_{s.status}", s.camera_id)
            yield SIGHTINGS, s.to_json()

    # ---------------------------------------------------------------- index (broadcast side)
    def _snapshot_age(self) -> int:
        """Seconds since the current snapshot was built (-1 before the first one)."""
        manifest = self.matcher.manifest if self.matcher is not None else None
        if not manifest or "created_at" not in manifest:
            return -1
        created = datetime.fromisoformat(manifest["created_at"])
        return int(time.time() - created.timestamp())

    def _new_matcher(self, state: str | None) -> Matcher:
        m = self.settings.match
        if state:
            return Matcher.from_state(
                json.loads(state),
                model_id=FACENET_MODEL_ID,
                dim=EMBEDDING_DIM,
                **Matcher.configured(m),
            )
        return Matcher.from_config(m)

    def _ensure_matcher(self, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext) -> Matcher:
        """The matcher, built at the first element from the broadcast state (a restored job's
        snapshot): ``open()`` has no access to broadcast state.

        A matcher in that state means the job was restored (a checkpoint after a failure, or
        a savepoint). The frames captured before this instance opened are then a backlog,
        analysed whole rather than shed: they include the frames handled between the
        checkpoint and the failure, whose events the event store already holds, and the
        replay must produce them again (exactly-once sinks aborted them), and the frames
        of the outage itself."""
        if self.matcher is None:
            state = ctx.get_broadcast_state(INDEX_STATE).get(MATCHER_KEY)
            self.matcher = self._new_matcher(state)
            self.index_ready = state is not None
            if state is not None:
                self.shedder.backlog_until_ms = self.opened_ms
        return self.matcher

    def process_broadcast_element(
        self, value: str, ctx: KeyedBroadcastProcessFunction.Context
    ) -> None:
        matcher = self._ensure_matcher(ctx)
        try:
            message = json.loads(value)
            description = matcher.apply(message)
        except (FaceRecError, ValueError, KeyError, OSError) as exc:
            self.metrics.inc("index_errors")
            log.error("index message refused, keeping the current snapshot: %s", exc)
            return
        self.index_ready = True
        log.info("index: %s", description)
        self.metrics.inc(f"index_{message.get('kind', 'unknown')}")
        ctx.get_broadcast_state(INDEX_STATE).put(MATCHER_KEY, json.dumps(matcher.state()))

    # ---------------------------------------------------------------- frames (keyed side)
    def process_element(
        self, record: FrameRecord, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext
    ) -> Iterator[Output]:
        self.metrics.flush_deferred()
        matcher = self._ensure_matcher(ctx)
        if ctx.get_current_key() not in self.end_of_input_keys:
            # open sightings close at the end of a bounded input, too
            ctx.timer_service().register_event_time_timer(self.end_of_input_timer)
            self.end_of_input_keys.add(ctx.get_current_key())
        if not self.pending.value():  # buffered frames come first: they may extend a sighting
            tracker = self._sightings()
            if len(tracker):
                closed = tracker.expire(record.camera_id, record.capture_ts)
                if closed:
                    yield from self._publish(tracker, closed)
        decision = gate_stored(self.gates, record, self.settings.job.motion)
        if isinstance(decision, DeadLetter):
            self.metrics.inc("dead_letters", record.camera_id)
            yield DEAD_LETTERS, decision.to_json()
            return
        if not decision.passed:
            self.metrics.inc("frames_gated_out", record.camera_id)
            yield FRAME_STATS, _stat_json(FrameStat.gated_out(record, decision))
            return
        self.metrics.inc("frames_passed", record.camera_id)
        gated_at = now_ms()
        buffered = self.pending.value() or 0
        if record.live:
            shed = self.shedder.shed_reason(
                camera_id=record.camera_id,
                capture_ts=record.capture_ts,
                gate_reason=decision.reason,
                buffered=buffered,
                now=gated_at,
            )
            if shed is not None:
                self.metrics.inc_reason("frames_shed", record.camera_id, shed)
                yield FRAME_STATS, _stat_json(FrameStat.shed_frame(record, shed))
                return
        item = (record, {"ingest": record.ingest_ts, "gate": gated_at})
        action = self.policy.on_frame(
            ingest_ts=record.ingest_ts,
            buffered=buffered,
            index_ready=self.index_ready,
            now=gated_at,
            live=record.live,
        )
        if isinstance(action, AnalyseNow):
            batch = [*self._take_buffer(), item] if buffered else [item]
            yield from self._analyze(batch, matcher)
            return
        self.buffer.add(item)
        self.pending.update(buffered + 1)
        if action.timer_at is not None:
            timers = ctx.timer_service()
            timers.register_processing_time_timer(action.timer_at)
            timers.register_event_time_timer(self.end_of_input_timer)

    def on_timer(
        self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext
    ) -> Iterator[Output]:
        matcher = self._ensure_matcher(ctx)
        action = self.policy.on_timer(
            buffered=self.pending.value() or 0,
            index_ready=self.index_ready,
            end_of_input=ctx.time_domain() == TimeDomain.EVENT_TIME,
            now=now_ms(),
        )
        if action is None:
            yield from self._close_at_end_of_input(ctx)
            return
        if isinstance(action, Rearm):
            ctx.timer_service().register_processing_time_timer(action.at)
            return
        batch = self._take_buffer()
        with self.metrics.deferred():
            yield from self._analyze(batch, matcher)
        yield from self._close_at_end_of_input(ctx)

    def _close_at_end_of_input(
        self, ctx: KeyedBroadcastProcessFunction.OnTimerContext
    ) -> Iterator[Output]:
        if ctx.time_domain() != TimeDomain.EVENT_TIME:
            return
        tracker = self._sightings()
        if len(tracker):
            yield from self._publish(tracker, tracker.close_all())

    def _take_buffer(self) -> list[BatchItem]:
        batch = list(self.buffer.get() or [])
        self.buffer.clear()
        self.pending.clear()
        return batch

    def _analyze(self, batch: list[BatchItem], matcher: Matcher) -> Iterator[Output]:
        started = time.perf_counter()
        candidates, dead, stats, embed_ms = analyze_batch(self.engine, batch, self.tracks)
        events = to_events(candidates, matcher, self.camera_thresholds)
        elapsed_ms = (time.perf_counter() - started) * 1000
        captured = {record.frame_id: record.capture_ts for record, _ in batch}
        self.shedder.observe(
            len(batch),
            elapsed_ms,
            embed_ms=embed_ms,
            analysed=[AnalysedFrame(s.camera_id, captured[s.frame_id], s.embedded) for s in stats],
        )
        # counters, not distributions: the Prometheus reporter exports no distribution value
        self.metrics.inc("batches")
        self.metrics.inc("batch_frames", n=len(batch))
        self.metrics.inc("batch_ms", n=round(elapsed_ms))
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
        tracker = self._sightings()
        updates = tracker.observe(observations(candidates, events))
        yield from self._publish(tracker, updates)
        for event in events:
            self.metrics.inc("matches" if event.matched else "unknowns", event.camera_id)
            stages = event.stages
            self.metrics.histogram(
                "latency_ms_bucket", stages["match"] - event.capture_ts, event.camera_id
            )
            for stage, previous in STAGES:
                if stages.get(previous) and stages.get(stage):
                    self.metrics.histogram(f"{stage}_ms_bucket", stages[stage] - stages[previous])
            if self.settings.job.frame_events:
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


class StoreSightings(MapFunction):
    """Upsert of each sighting into the event store (never back; reviews kept)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open(self, ctx: RuntimeContext) -> None:
        from facerec.eventstore import open_event_store

        self.store = open_event_store(self.settings)

    def close(self) -> None:
        self.store.close()

    def map(self, value: str) -> str:
        self.store.write_sightings([Sighting.from_json(value)])
        return value


class StoreCameraStatus(MapFunction):
    """Each camera's status windows (frames/s, gate share) from the frame outcomes passing
    through, written to the event store as each window closes and at the end of input.
    After a failure the open windows restart empty: a status, not an account."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def open(self, ctx: RuntimeContext) -> None:
        from facerec.eventstore import open_event_store

        self.store = open_event_store(self.settings)
        self.windows = CameraStatusWindows(self.settings.job.camera_status_interval_ms)

    def close(self) -> None:
        try:
            self.store.write_camera_status(self.windows.flush())
        finally:
            self.store.close()

    def map(self, value: str) -> str:
        closed = self.windows.add(FrameStat(**json.loads(value)))
        if closed is not None:
            self.store.write_camera_status([closed])
        return value


class AppendJsonLines(MapFunction):
    """Append each dead letter to ``<directory>/<prefix>-<subtask>.jsonl`` and pass it on
    (with Kafka, to its topic). ``max_record_bytes``: what is passed on fits a Kafka record
    of that size (without its payload if need be); the file keeps the whole dead letter."""

    def __init__(self, directory: str, prefix: str, max_record_bytes: int | None = None) -> None:
        self.directory, self.prefix = directory, prefix
        self.max_record_bytes = max_record_bytes

    def open(self, ctx: RuntimeContext) -> None:
        path = Path(self.directory)
        path.mkdir(parents=True, exist_ok=True)
        index = ctx.get_index_of_this_subtask()
        self.file = open(path / f"{self.prefix}-{index}.jsonl", "a", encoding="utf-8")

    def close(self) -> None:
        self.file.close()

    def map(self, value: str) -> str:
        self.file.write(value + "\n")
        self.file.flush()
        if self.max_record_bytes is None:
            return value
        return dead_letter_within(value, self.max_record_bytes)


# ------------------------------------------------------------------------------ workers
STATE_SAMPLER_PERIOD_MS = 10
"""Period of Beam's state sampler in the job's Python workers (Beam's default: 200 ms)."""


def python_worker_main() -> None:
    """Entry point of the job's Python workers (``python.executable``, the
    ``facerec-flink-worker`` script; jobs/recognition.py). PyFlink starts its worker as
    ``<python.executable> -m pyflink.fn_execution.beam.beam_boot ...``; this runs that module
    the same way, with Beam's state sampler on a short period. Any other command line is
    handed to the interpreter unchanged.

    Why: at every bundle's end the Beam SDK harness joins its state-sampling thread, which
    sleeps between samples for up to 200 ms (the period grows with the bundle's length), so
    each bundle ended waiting for it: 10% of the recognize worker's time in a py-spy
    profile. Through this entry point the job analysed 10-20% more frames/s (README, "Where
    the job's overhead goes"). The sampler is created with each bundle processor, before any
    of our functions is loaded: hence an entry point, not a setting in ``open()``."""
    args = sys.argv[1:]
    if len(args) < 2 or args[0] != "-m":
        os.execv(sys.executable, [sys.executable, *args])  # noqa: S606 (the interpreter itself)
    from apache_beam.runners.worker import statesampler

    class ShortPeriodStateSampler(statesampler.StateSampler):
        def __init__(
            self,
            prefix: str,
            counter_factory: object,
            sampling_period_ms: int = STATE_SAMPLER_PERIOD_MS,
        ) -> None:
            super().__init__(prefix, counter_factory, sampling_period_ms)

    statesampler.StateSampler = ShortPeriodStateSampler  # type: ignore[misc]
    sys.argv = [args[1], *args[2:]]
    runpy.run_module(args[1], run_name="__main__", alter_sys=True)
