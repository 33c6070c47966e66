"""Sightings: a person's continuous appearance before a camera as one record.

The matcher names a face frame by frame; a reviewer wants one record per appearance, with
the best face to look at. Per camera, each face is linked to an open sighting (its box
overlaps the sighting's last face, or its embedding is close to the sighting's mean face),
or starts a new one. The sighting's identity is decided over its frames:

- a person is named once at least ``min_faces`` frames name them and they hold at least
  ``majority`` of the sighting's frames (a stranger the matcher names in one frame of ten
  stays unknown: per-frame false accepts do not become per-sighting ones);
- a sighting no person wins after ``unknown_after`` frames opens as unknown;
- a glimpse that ends before either (``decide_glimpse``) is named only when at least two
  frames name the person and none says otherwise.

A sighting is published when it opens, when its identity changes, when a better face
arrives (``better_face``), and when it closes, ``gap_ms`` of capture time after its last
face. Each publication is an upsert by ``sighting_id``, which is named after the sighting's
first face, so a restored job or a replay rewrites the same record.

Plain Python: the job keeps a ``SightingTracker`` per region in keyed state
(``to_state``/``from_state``), replay and tests call it directly.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from facerec.config import SightingsConfig
from facerec.evidence import sighting_key
from facerec.records import UNKNOWN, RecognitionEvent, Sighting, make_sighting_id, now_ms

MAX_LINK_DISTANCE_WITH_OVERLAP = 1.2
"""Even when boxes overlap, a face this far from the sighting's mean face is someone else
(two people crossing): FaceNet distances between different people are mostly above it."""


DUPLICATE_OVERLAP = 0.6
"""Two faces of one frame of which this much of the smaller box lies inside the other are
one face found twice (a box for the face, another for the face and hair): two people's
faces do not nest."""


@dataclass
class Observation:
    """A matched face of one frame, as the tracker needs it."""

    event: RecognitionEvent
    embedding: np.ndarray
    quality: float
    """0-1: how good this face is as evidence (``face_quality``)."""
    crop_jpeg: Callable[[], bytes | None] | None = None
    """The face cut from its frame as JPEG, called only when the face becomes evidence."""
    frame_jpeg: bytes | None = None
    """The whole frame, when whole frames are kept as evidence too (evidence.store_frames)."""


@dataclass
class SightingUpdate:
    sighting: Sighting
    evidence: bytes | None = None
    """The JPEG to store under ``sighting.evidence_key`` (None: unchanged)."""
    frame: bytes | None = None
    """The best face's whole frame, to store beside it (None: unchanged or not kept)."""


def face_quality(face_px: float, score: float, sharpness: float, min_sharpness: float) -> float:
    """0-1 for picking a sighting's best face: big enough for FaceNet's 160 px input, a
    confident detection, and not blurred."""
    size = min(face_px / 160.0, 1.0)
    sharp = min(sharpness / max(4.0 * min_sharpness, 1e-6), 1.0)
    return round(float(size * score * (0.5 + 0.5 * sharp)), 4)


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _nested(a: Sequence[float], b: Sequence[float]) -> float:
    """Share of the smaller of two boxes that lies inside the other."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller if smaller > 0 else 0.0


@dataclass
class _Open:
    """A sighting being built (the tracker's state; pickled into Flink state)."""

    sighting_id: str
    camera_id: str
    region: str
    first_seen_ms: int
    last_seen_ms: int
    last_box: tuple[float, float, float, float]
    mean: np.ndarray
    frames: int = 0
    votes: dict[str, int] = field(default_factory=dict)
    best_distance: dict[str, float] = field(default_factory=dict)
    identity: str | None = None
    """Decided identity; None until the sighting opens."""
    best_quality: float = -1.0
    best_frame_id: str = ""
    best_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    held_evidence: bytes | None = None
    """The best face's JPEG while the sighting has not opened (published when it does)."""
    held_frame: bytes | None = None
    has_evidence: bool = False
    snapshot_id: str = ""
    model_id: str = ""
    threshold: float = 0.0

    def distance_to(self, embedding: np.ndarray) -> float:
        return float(np.linalg.norm(self.mean - embedding))

    def add(self, obs: Observation) -> None:
        e = obs.event
        self.mean = self.mean * self.frames + obs.embedding
        self.frames += 1
        self.mean = self.mean / max(float(np.linalg.norm(self.mean)), 1e-9)
        self.last_seen_ms = max(self.last_seen_ms, e.capture_ts)
        self.last_box = e.box
        self.votes[e.identity] = self.votes.get(e.identity, 0) + 1
        # per decision: the distance to the person named, or to the nearest one when unknown
        best = self.best_distance
        best[e.identity] = min(best.get(e.identity, e.distance), e.distance)
        self.snapshot_id, self.model_id, self.threshold = e.snapshot_id, e.model_id, e.threshold

    def record(self, status: str) -> Sighting:
        identity = self.identity or UNKNOWN
        distances = self.best_distance
        best = distances.get(identity, min(distances.values()) if distances else 0.0)
        return Sighting(
            sighting_id=self.sighting_id,
            camera_id=self.camera_id,
            region=self.region,
            status="closed" if status == "closed" else "open",
            identity=identity,
            first_seen_ms=self.first_seen_ms,
            last_seen_ms=self.last_seen_ms,
            frames=self.frames,
            votes=dict(self.votes),
            best_distance=round(float(best), 4),
            best_quality=round(max(self.best_quality, 0.0), 4),
            best_frame_id=self.best_frame_id,
            best_box=self.best_box,
            evidence_key=sighting_key(self.sighting_id, self.first_seen_ms)
            if self.has_evidence or self.held_evidence is not None
            else None,
            snapshot_id=self.snapshot_id,
            model_id=self.model_id,
            threshold=self.threshold,
            updated_ms=now_ms(),
        )


def decide(votes: dict[str, int], frames: int, config: SightingsConfig) -> str | None:
    """The sighting's identity from its votes; None while undecided."""
    named = [(n, who) for who, n in votes.items() if who != UNKNOWN]
    if named:
        n, who = max(named)
        if n >= config.min_faces and n >= config.majority * frames:
            return who
    if frames >= config.unknown_after:
        return UNKNOWN
    return None


def decide_glimpse(votes: dict[str, int]) -> str:
    """The identity of a sighting that ends before it was decided (fewer frames than
    ``min_faces``, e.g. a person walking through the corner of the picture): a person only
    when at least two frames name them and no frame says otherwise. One frame names nobody:
    that is what a stranger's sporadic false accept looks like."""
    if len(votes) == 1:
        (who, n), = votes.items()
        if who != UNKNOWN and n >= 2:
            return who
    return UNKNOWN


class SightingTracker:
    """Open sightings by camera. Feed each analysed frame's observations in capture order per
    camera (``observe``), and every frame's capture time, analysed or not (``expire``)."""

    def __init__(self, config: SightingsConfig) -> None:
        self.config = config
        self.open: dict[str, list[_Open]] = {}

    # ------------------------------------------------------------------ state
    def to_state(self) -> bytes:
        return pickle.dumps(self.open, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_state(cls, config: SightingsConfig, state: bytes | None) -> SightingTracker:
        tracker = cls(config)
        if state:
            tracker.open = pickle.loads(state)  # noqa: S301 - our own Flink state
        return tracker

    def __len__(self) -> int:
        return sum(len(v) for v in self.open.values())

    # ------------------------------------------------------------------ frames
    def expire(self, camera_id: str, now_ts: int) -> list[SightingUpdate]:
        """Close the camera's sightings whose last face is more than ``gap_ms`` before
        ``now_ts`` (capture time)."""
        sightings = self.open.get(camera_id, [])
        done = [s for s in sightings if now_ts - s.last_seen_ms > self.config.gap_ms]
        if not done:
            return []
        self.open[camera_id] = [s for s in sightings if s not in done]
        return [self._close(s) for s in done]

    def close_all(self) -> list[SightingUpdate]:
        """End of input: close every open sighting."""
        out = [self._close(s) for sightings in self.open.values() for s in sightings]
        self.open.clear()
        return out

    def _close(self, s: _Open) -> SightingUpdate:
        if s.identity is None:
            s.identity = decide_glimpse(s.votes)
        evidence, s.held_evidence = s.held_evidence, None
        frame, s.held_frame = s.held_frame, None
        s.has_evidence = s.has_evidence or evidence is not None
        return SightingUpdate(s.record("closed"), evidence, frame)

    def observe(self, observations: Sequence[Observation]) -> list[SightingUpdate]:
        """The faces of analysed frames (any cameras, capture order within a camera)."""
        updates: list[SightingUpdate] = []
        frames: dict[str, list[Observation]] = {}
        for obs in observations:
            frames.setdefault(obs.event.frame_id, []).append(obs)
        for faces in frames.values():
            event = faces[0].event
            updates += self.expire(event.camera_id, event.capture_ts)
            updates += self._frame(event.camera_id, faces)
        return updates

    def _frame(self, camera_id: str, faces: list[Observation]) -> list[SightingUpdate]:
        sightings = self.open.setdefault(camera_id, [])
        pairs = []
        for i, obs in enumerate(faces):
            for j, s in enumerate(sightings):
                d = s.distance_to(obs.embedding)
                overlap = _iou(s.last_box, obs.event.box)
                # ties (a still face: the same box frame after frame) go to the older sighting
                if overlap >= self.config.link_iou and d <= MAX_LINK_DISTANCE_WITH_OVERLAP:
                    pairs.append((2.0 + overlap, s.frames, -j, i))
                elif d <= self.config.link_distance:
                    pairs.append((1.0 - d / 2.0, s.frames, -j, i))
        linked: dict[int, _Open] = {}
        taken: set[int] = set()
        for _, _, neg_j, i in sorted(pairs, reverse=True):
            if i not in linked and -neg_j not in taken:
                linked[i] = sightings[-neg_j]
                taken.add(-neg_j)
        updates = []
        for i, obs in enumerate(faces):
            sighting = linked.get(i)
            if sighting is None and any(
                _nested(obs.event.box, other.event.box) >= DUPLICATE_OVERLAP
                for k, other in enumerate(faces) if k != i and (k in linked or k < i)
            ):
                continue  # the detector found this face twice: the other box stands for it
            if sighting is None:
                e = obs.event
                sighting = _Open(
                    sighting_id=make_sighting_id(camera_id, e.frame_id, e.face_index),
                    camera_id=camera_id,
                    region=e.region,
                    first_seen_ms=e.capture_ts,
                    last_seen_ms=e.capture_ts,
                    last_box=e.box,
                    mean=np.zeros_like(obs.embedding, dtype=np.float32),
                )
                sightings.append(sighting)
            update = self._add(sighting, obs)
            if update is not None:
                updates.append(update)
        return updates

    def _add(self, s: _Open, obs: Observation) -> SightingUpdate | None:
        s.add(obs)
        evidence = frame = None
        if obs.quality >= s.best_quality + self.config.better_face or s.best_quality < 0:
            evidence = obs.crop_jpeg() if obs.crop_jpeg is not None else None
            frame = obs.frame_jpeg if evidence is not None else None
            s.best_quality, s.best_frame_id, s.best_box = (
                obs.quality, obs.event.frame_id, obs.event.box,
            )
        was = s.identity
        decided = decide(s.votes, s.frames, self.config)
        if was is None and decided is None:
            if evidence is not None:
                s.held_evidence, s.held_frame = evidence, frame
            return None
        if decided is not None:
            s.identity = decided
        if was is None:  # opens now, with the best face so far
            if evidence is None:
                evidence, frame = s.held_evidence, s.held_frame
            s.held_evidence = s.held_frame = None
        elif s.identity == was and evidence is None:
            return None
        if evidence is not None:
            s.has_evidence = True
        return SightingUpdate(s.record("open"), evidence, frame)


def with_review(sighting: Sighting, review: dict[str, object], identity: str) -> Sighting:
    """The sighting after a person corrected it (assigned to ``identity``, or rejected)."""
    return replace(sighting, identity=identity, review=dict(review), updated_ms=now_ms())
