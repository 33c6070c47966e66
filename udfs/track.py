"""Embedding reuse across frames: a face that is the same face as in a camera's previous
analysed frame (same place, same look) takes that face's embedding instead of a new FaceNet
pass, for at most ``job.track.reuse_ms``.

FaceNet is the dearest stage (~40 ms a face at batch 1 on 2 cores, against ~30 ms for SSD
detection of a whole frame), and a camera at 5 fps sees a person in many consecutive
frames. Every frame still gets its detection and an event per face, matched against the
current snapshot (so a snapshot swap applies at once); only the embedding can be up to
``reuse_ms`` old. The same-face test is strict on purpose, since a wrong reuse would name
the previous person: the box must overlap the earlier box (IoU >= ``min_iou``) and a
24x24 grey thumbnail of the aligned crop must correlate with the earlier one
(``min_similarity``; measured on celebrity5 train photos: different people 0.20 median,
0.82 at most over 1000 pairs; the same face a few pixels on, 0.78-0.99). A new person
stepping into the same spot fails the second test; a small, jittery face is embedded
again rather than risk it.

The tracks are a cache in the operator's memory, not Flink state: after a restart or
rescale the first frames are simply embedded again.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facerec.config import TrackConfig
from udfs.engine import Face

THUMB = 24


def thumbnail(crop: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm 24x24 grey thumbnail of an aligned (standardised) face crop."""
    grey = cv2.resize(crop.mean(axis=2), (THUMB, THUMB), interpolation=cv2.INTER_AREA)
    flat = grey.ravel().astype(np.float32)
    flat -= flat.mean()
    return flat / max(float(np.linalg.norm(flat)), 1e-6)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def in_reuse_time(config: TrackConfig, *, seen_ms: int, embedded_ms: int, ts: int) -> bool:
    """The timing half of the reuse rule: a face of a frame captured at ``ts`` may take the
    embedding of a face last seen in the frame captured at ``seen_ms`` and embedded in the one
    captured at ``embedded_ms``. The load shedder plans with it before any face is found."""
    return (
        config.reuse_ms > 0
        and 0 <= ts - seen_ms <= config.max_gap_ms
        and ts - embedded_ms <= config.reuse_ms
    )


@dataclass
class Track:
    box: tuple[float, float, float, float]
    thumb: np.ndarray
    face: Face
    """The face whose embedding this track carries (embedded in this or an earlier batch:
    read ``face.embedding`` once the batch is embedded)."""
    embedded_ms: int
    """Capture time of the frame that face was embedded in."""
    seen_ms: int
    embedded_at: int | None = None
    """Wall-clock ms of that embedding (None until its batch is embedded: ``stamp``)."""


class FaceTracks:
    """Per camera: the faces of its last analysed frame, each with the face whose embedding
    it carries. Frames must come in capture order per camera."""

    def __init__(self, config: TrackConfig) -> None:
        self.config = config
        self._previous: dict[str, list[Track]] = {}
        self._current: dict[str, tuple[int, list[Track]]] = {}

    def _advance(self, camera: str, ts: int) -> list[Track]:
        """Tracks of the current frame ``ts``; an earlier current frame becomes previous."""
        current = self._current.get(camera)
        if current is None or current[0] != ts:
            if current is not None:
                self._previous[camera] = current[1]
            current = (ts, [])
            self._current[camera] = current
        return current[1]

    def link(
        self,
        camera: str,
        box: tuple[float, float, float, float],
        thumb: np.ndarray,
        face: Face,
        ts: int,
    ) -> Track | None:
        """Record ``face`` (captured at ``ts``) and return the earlier face's track whose
        embedding it may take, or None if it needs its own."""
        tracks = self._advance(camera, ts)
        earlier = self._find(camera, box, thumb, ts, claimed={id(t.face) for t in tracks})
        if earlier is None:
            tracks.append(Track(box, thumb, face, ts, ts))
        else:
            tracks.append(
                Track(box, thumb, earlier.face, earlier.embedded_ms, ts, earlier.embedded_at)
            )
        return earlier

    def stamp(self, embedded_at: int) -> None:
        """The batch just embedded: its tracks' embeddings were made at ``embedded_at``."""
        for tracks in (*self._previous.values(), *(t for _, t in self._current.values())):
            for track in tracks:
                if track.embedded_at is None:
                    track.embedded_at = embedded_at

    def _find(
        self,
        camera: str,
        box: tuple[float, float, float, float],
        thumb: np.ndarray,
        ts: int,
        claimed: set[int],
    ) -> Track | None:
        """The best-overlapping earlier face that looks the same and that no other face of
        this frame took already (``claimed``: ids of faces whose embeddings are taken)."""
        cfg = self.config
        if cfg.reuse_ms <= 0:
            return None
        best, best_iou = None, cfg.min_iou
        for track in self._previous.get(camera, ()):
            if id(track.face) in claimed:
                continue
            if not in_reuse_time(cfg, seen_ms=track.seen_ms, embedded_ms=track.embedded_ms, ts=ts):
                continue
            overlap = iou(box, track.box)
            if overlap >= best_iou and float(thumb @ track.thumb) >= cfg.min_similarity:
                best, best_iou = track, overlap
        return best
