"""The recognition pipeline as plain Python stages.

Stages:

    decode record -> motion gate (per camera) -> batch -> decode JPEG, detect, align,
    quality, embed -> match (snapshot + deltas) -> RecognitionEvent

The Flink job (udfs/flink_functions.py) decodes records in one operator and runs the rest,
gate to match, in one operator keyed by region (``RecognizeFrames``), which calls these
functions and the batching policy (udfs/batching.py). Replay, benchmarks and tests run the
same stages in one process through ``RecognitionPipeline``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import NamedTuple, Protocol

import numpy as np

from facerec.config import MotionConfig, Settings
from facerec.errors import FaceRecError
from facerec.records import (
    NO_DISTANCE,
    NO_SNAPSHOT,
    UNKNOWN,
    DeadLetter,
    FrameRecord,
    RecognitionEvent,
    make_event_id,
    now_ms,
)
from udfs.batching import AnalyseNow, BatchPolicy
from udfs.engine import Face, FaceEngine
from udfs.evidence import face_jpeg
from udfs.match import Matcher
from udfs.motion import GateDecision, MotionGate
from udfs.sightings import Observation, SightingTracker, SightingUpdate, face_quality
from udfs.track import FaceTracks, Track, thumbnail

log = logging.getLogger(__name__)


@dataclass
class FaceCandidate:
    """A face found and embedded in a frame, on its way to the matcher."""

    frame_id: str
    camera_id: str
    region: str
    capture_ts: int
    face_index: int
    box: tuple[float, float, float, float]
    score: float
    embedding: np.ndarray
    model_id: str
    stages: dict[str, int]
    quality: float = 0.0
    """0-1, for picking a sighting's best face (``udfs.sightings.face_quality``)."""
    evidence: Callable[[], bytes | None] | None = field(default=None, repr=False)
    """The face as JPEG, cut from its frame when called (only for a sighting's best face)."""
    frame_jpeg: bytes | None = field(default=None, repr=False)
    """The whole frame as it arrived, when whole frames are evidence (evidence.store_frames)."""


@dataclass(frozen=True)
class FrameStat:
    """What happened to one frame (for summaries and the gate benchmark)."""

    camera_id: str
    region: str
    frame_id: str
    passed: bool
    reason: str
    faces: int = 0
    rejected: int = 0
    reused: int = 0
    """Faces that took the embedding of the same face in an earlier frame."""
    done_ms: int = field(default_factory=now_ms)
    """When the gate dropped the frame or its faces were embedded (epoch ms): the time
    base of sustained-throughput figures."""
    shed: bool = False
    """It passed the gate but was not analysed: ``reason`` says why (udfs/shedding.py)."""

    @property
    def embedded(self) -> int:
        """FaceNet passes its faces took: the accepted ones that reused no embedding."""
        return self.faces - self.rejected - self.reused

    @property
    def outcome(self) -> str:
        """Every frame is exactly one of ``gated_out``, ``shed`` or ``analysed``."""
        if not self.passed:
            return "gated_out"
        return "shed" if self.shed else "analysed"

    @classmethod
    def gated_out(cls, record: FrameRecord, decision: GateDecision) -> FrameStat:
        return cls(record.camera_id, record.region, record.frame_id, False, decision.reason)

    @classmethod
    def shed_frame(cls, record: FrameRecord, reason: str) -> FrameStat:
        return cls(record.camera_id, record.region, record.frame_id, True, reason, shed=True)


BatchItem = tuple[FrameRecord, dict[str, int]]
"""A gated frame and its stage timestamps so far (``ingest``, ``gate``; epoch ms)."""


@dataclass
class PipelineResult:
    events: list[RecognitionEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    stats: list[FrameStat] = field(default_factory=list)
    sightings: list[SightingUpdate] = field(default_factory=list)
    """Every publication of every sighting, in order (the last one of an id is its final
    state)."""


def decode_record(payload: bytes) -> FrameRecord | DeadLetter:
    try:
        return FrameRecord.decode(payload)
    except FaceRecError as exc:
        return DeadLetter(reason=exc.reason, message=str(exc), stage="decode", payload=payload)


def gate_frame(gate: MotionGate, record: FrameRecord) -> GateDecision | DeadLetter:
    try:
        return gate.check(record.jpeg, record.capture_ts)
    except FaceRecError as exc:
        return DeadLetter(
            reason=exc.reason,
            message=str(exc),
            stage="gate",
            payload=record.encode(),
            camera_id=record.camera_id,
            frame_id=record.frame_id,
        )


class GateStore(Protocol):
    """Serialised motion gates by camera id: the job's keyed map state, or a dict in tests."""

    def get(self, camera_id: str) -> bytes | None: ...

    def put(self, camera_id: str, gate: bytes) -> None: ...


def gate_stored(
    store: GateStore, record: FrameRecord, config: MotionConfig
) -> GateDecision | DeadLetter:
    """Gate ``record`` with its camera's gate from ``store`` (a new gate for a camera not seen
    before), then store the gate back: also after an undecodable frame, whose arrival the
    gate's counters include."""
    raw = store.get(record.camera_id)
    gate = MotionGate.from_bytes(raw, config) if raw is not None else MotionGate(config)
    decision = gate_frame(gate, record)
    store.put(record.camera_id, gate.to_bytes())
    return decision


class AnalysedBatch(NamedTuple):
    candidates: list[FaceCandidate]
    dead: list[DeadLetter]
    stats: list[FrameStat]
    """One per frame that decoded, in the batch's order."""
    embed_ms: int
    """Wall time of aligning and embedding the batch's faces (the rest is decoding and
    detection): the load shedder learns the two costs apart (udfs/shedding.py)."""


def analyze_batch(
    engine: FaceEngine,
    batch: Sequence[BatchItem],
    tracks: FaceTracks | None = None,
) -> AnalysedBatch:
    """Decode, detect and embed a batch of gated frames with one detector and one FaceNet
    call. Frames whose JPEG does not decode become dead letters; the rest go on. With
    ``tracks``, a face continuing one of its camera's previous frame reuses that
    embedding (udfs/track.py) and its stages carry ``reused``: when that was computed."""
    frames, kept, dead = [], [], []
    for record, stages in batch:
        try:
            frames.append(engine.decode(record.jpeg))
            kept.append((record, stages))
        except FaceRecError as exc:
            dead.append(
                DeadLetter(
                    reason=exc.reason,
                    message=str(exc),
                    stage="detect",
                    payload=record.encode(),
                    camera_id=record.camera_id,
                    frame_id=record.frame_id,
                )
            )
    detections = engine.detect(frames)
    detected_at = now_ms()
    reused: dict[int, Track] = {}  # id(face) -> the earlier face's track

    def reuse(i: int, face: Face, crop: np.ndarray) -> Face | None:
        assert tracks is not None
        record = kept[i][0]
        earlier = tracks.link(record.camera_id, face.box, thumbnail(crop), face, record.capture_ts)
        if earlier is None:
            return None
        reused[id(face)] = earlier
        return earlier.face

    faces = engine.embed_detections(frames, detections, reuse=reuse if tracks else None)
    embedded_at = now_ms()
    if tracks is not None:
        tracks.stamp(embedded_at)
    candidates, stats = [], []
    min_sharpness = engine.settings.quality.min_sharpness
    store_frames = engine.settings.evidence.store_frames
    for (record, stages), frame, row in zip(kept, frames, faces, strict=True):
        accepted = [(i, f) for i, f in enumerate(row) if f.embedding is not None]
        stats.append(
            FrameStat(
                record.camera_id,
                record.region,
                record.frame_id,
                True,
                "analyzed",
                faces=len(row),
                rejected=len(row) - len(accepted),
                reused=sum(1 for _, f in accepted if id(f) in reused),
            )
        )
        for i, face in accepted:
            assert face.embedding is not None
            q = face.quality
            candidates.append(
                FaceCandidate(
                    frame_id=record.frame_id,
                    camera_id=record.camera_id,
                    region=record.region,
                    capture_ts=record.capture_ts,
                    face_index=i,
                    box=face.box,
                    score=face.detection.score,
                    embedding=face.embedding,
                    model_id=face.model_id,
                    quality=face_quality(q.face_px, q.score, q.sharpness, min_sharpness),
                    evidence=partial(face_jpeg, frame, face, engine.settings),
                    frame_jpeg=record.jpeg if store_frames else None,
                    stages={**stages, "detect": detected_at, "embed": embedded_at}
                    | (
                        {"reused": reused[id(face)].embedded_at or embedded_at}
                        if id(face) in reused
                        else {}
                    ),
                )
            )
    return AnalysedBatch(candidates, dead, stats, embedded_at - detected_at)


def _round_box(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = box
    return round(x1, 1), round(y1, 1), round(x2, 1), round(y2, 1)


def to_events(
    candidates: Sequence[FaceCandidate],
    matcher: Matcher,
    camera_thresholds: Mapping[str, float] | None = None,
) -> list[RecognitionEvent]:
    """Match candidates against the matcher's current snapshot and deltas, each with its
    camera's own threshold when ``camera_thresholds`` has one (``Settings.camera_thresholds``),
    else the matcher's; the event records the threshold it was decided with."""
    if not candidates:
        return []
    own = camera_thresholds or {}
    thresholds = [own.get(c.camera_id, matcher.threshold) for c in candidates]
    matches = matcher.match(np.stack([c.embedding for c in candidates]), thresholds)
    matched_at = now_ms()
    snapshot_id = matcher.snapshot_id or NO_SNAPSHOT
    events = []
    for c, m, threshold in zip(candidates, matches, thresholds, strict=True):
        events.append(
            RecognitionEvent(
                event_id=make_event_id(c.frame_id, c.face_index),
                frame_id=c.frame_id,
                camera_id=c.camera_id,
                region=c.region,
                capture_ts=c.capture_ts,
                face_index=c.face_index,
                box=_round_box(c.box),
                identity=m.identity if m.identity else UNKNOWN,
                distance=round(float(m.distance), 4) if np.isfinite(m.distance) else NO_DISTANCE,
                score=round(float(c.score), 4),
                threshold=threshold,
                snapshot_id=snapshot_id,
                model_id=c.model_id,
                stages={**c.stages, "match": matched_at},
            )
        )
    return events


def observations(
    candidates: Sequence[FaceCandidate], events: Sequence[RecognitionEvent]
) -> list[Observation]:
    """What the sighting tracker needs of each matched face (``to_events`` keeps the
    candidates' order)."""
    return [
        Observation(e, c.embedding, c.quality, c.evidence, c.frame_jpeg)
        for c, e in zip(candidates, events, strict=True)
    ]


class RecognitionPipeline:
    """All stages in one process, in order: replay, benchmarks and tests without Flink.

    Batches as the job does when it is behind (``BatchPolicy.for_backlog``): ``max_frames``
    at a time, the rest at the end of the input. There is no clock to wait on and the
    matcher is at hand, so there are no timers and no wait for an index.

    ``camera_thresholds``: camera id -> its own match threshold; default
    ``settings.camera_thresholds()`` (the cameras of ``ingest.cameras`` that set one)."""

    def __init__(
        self,
        settings: Settings,
        engine: FaceEngine,
        matcher: Matcher,
        camera_thresholds: Mapping[str, float] | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.matcher = matcher
        self.camera_thresholds = dict(
            settings.camera_thresholds() if camera_thresholds is None else camera_thresholds
        )
        self.gates: dict[str, MotionGate] = {}
        self.tracks = FaceTracks(settings.job.track)
        self.sightings = SightingTracker(settings.job.sightings)
        self.policy = BatchPolicy.for_backlog(settings.job.batch)

    def process(self, payloads: Iterable[bytes]) -> PipelineResult:
        out = PipelineResult()
        batch: list[BatchItem] = []
        for payload in payloads:
            record = decode_record(payload)
            if isinstance(record, DeadLetter):
                out.dead_letters.append(record)
                continue
            if not batch:  # buffered frames come before this one: they may extend a sighting
                out.sightings += self.sightings.expire(record.camera_id, record.capture_ts)
            gate = self.gates.setdefault(record.camera_id, MotionGate(self.settings.job.motion))
            decision = gate_frame(gate, record)
            if isinstance(decision, DeadLetter):
                out.dead_letters.append(decision)
                continue
            if not decision.passed:
                out.stats.append(FrameStat.gated_out(record, decision))
                continue
            gated_at = now_ms()
            item = (record, {"ingest": record.ingest_ts, "gate": gated_at})
            action = self.policy.on_frame(
                ingest_ts=record.ingest_ts, buffered=len(batch), index_ready=True, now=gated_at
            )
            if isinstance(action, AnalyseNow):
                self._analyze([*batch, item], out)
                batch = []
            else:
                batch.append(item)
        self._analyze(batch, out)
        out.sightings += self.sightings.close_all()
        return out

    def _analyze(self, batch: list[BatchItem], out: PipelineResult) -> None:
        if not batch:
            return
        candidates, dead, stats, _ = analyze_batch(self.engine, batch, self.tracks)
        out.dead_letters.extend(dead)
        out.stats.extend(stats)
        events = to_events(candidates, self.matcher, self.camera_thresholds)
        out.events.extend(events)
        out.sightings += self.sightings.observe(observations(candidates, events))
