"""What the routes share: settings, face engine, stores, publisher and a live matcher."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from facerec.config import Settings
from facerec.errors import BadRecord, SnapshotMismatch
from facerec.eventstore import EventStore, SightingQuery, open_event_store
from facerec.models import FACENET_MODEL_ID, pipeline_model_id
from facerec.records import Sighting
from index_builder.enrollment import EnrollmentService
from index_builder.publish import IndexPublisher, LocalIndexLog
from index_builder.retention import RetentionSweep
from index_builder.review import SightingReview, sighting_evidence_of
from index_builder.store import EnrollmentStore
from index_builder.unknowns import UnknownFaces
from udfs.engine import Face, FaceEngine
from udfs.match import Match, Matcher

log = logging.getLogger(__name__)


class LiveMatcher:
    """A Matcher kept current like the job's: it follows the published index messages
    (snapshots, enroll deltas, deletions) from the local manifests directory."""

    def __init__(self, settings: Settings, model_id: str) -> None:
        self.matcher = Matcher.from_config(settings.match, model_id)
        self.log = LocalIndexLog(settings.manifests_path())
        self.last_error: str | None = None
        self._lock = threading.Lock()

    def sync(self) -> None:
        with self._lock:
            for message in self.log.poll():
                try:
                    self.matcher.apply(message)
                except (SnapshotMismatch, BadRecord) as exc:
                    self.last_error = exc.message
                    log.warning("index message refused: %s", exc.message)

    def match(self, vectors: np.ndarray) -> list[Match]:
        self.sync()
        with self._lock:
            return self.matcher.match(vectors)

    def status(self) -> dict[str, Any]:
        self.sync()
        with self._lock:
            m = self.matcher
            return {
                "snapshot_id": m.snapshot_id,
                "manifest": m.manifest,
                "max_change_seq": m.max_change_seq,
                "deltas": m.delta_count,
                "tombstones": m.tombstone_count,
                "threshold": m.threshold,
                "last_error": self.last_error,
            }


@dataclass(frozen=True)
class CameraOverview:
    """A camera as the camera page shows it: its newest status window and last sighting."""

    camera_id: str
    region: str
    frames: int
    analysed: int
    gated_out: int
    shed: int
    faces: int
    frames_per_s: float
    gate_share: float
    shed_share: float
    window_start_ms: int
    window_end_ms: int
    updated_ms: int
    last_sighting: Sighting | None


class Services:
    def __init__(
        self,
        settings: Settings,
        engine: FaceEngine | None = None,
        store: EnrollmentStore | None = None,
        event_store: EventStore | None = None,
        publisher: IndexPublisher | None = None,
    ) -> None:
        self.settings = settings
        self._engine = engine
        self.store = store or EnrollmentStore.from_settings(settings)
        self._event_store = event_store
        self.publisher = publisher or IndexPublisher.from_settings(settings)
        # the id the engine will record once loaded (the crop settings are part of it)
        self.model_id = (
            engine.model_id if engine is not None
            else pipeline_model_id(FACENET_MODEL_ID, settings.align)
        )
        self.matcher = LiveMatcher(settings, self.model_id)
        self._engine_lock = threading.Lock()  # OpenCV DNN nets are not thread-safe
        self._init_lock = threading.Lock()
        self.enrollment = EnrollmentService(
            settings,
            self.store,
            self.publisher,
            self,
            sighting_evidence=sighting_evidence_of(self.event_store),
            events=self.event_store,
        )
        self.audit = self.enrollment.audit
        self.retention = RetentionSweep(
            settings, self.event_store, self.enrollment.evidence, self.audit
        )
        self.review = SightingReview(self.enrollment, self.event_store)
        self.unknowns = UnknownFaces(
            settings, self.store, self.event_store, self, self.review,
            engine.model_id if engine is not None else None,
        )
        self.review.listeners.append(self.unknowns.reviewed)

    @property
    def engine_loaded(self) -> bool:
        return self._engine is not None

    def engine(self) -> FaceEngine:
        with self._init_lock:
            if self._engine is None:
                self._engine = FaceEngine(self.settings)
            return self._engine

    def event_store(self) -> EventStore:
        with self._init_lock:
            if self._event_store is None:
                self._event_store = open_event_store(self.settings)
            return self._event_store

    def camera_status(self) -> list[CameraOverview]:
        """Every camera the job has reported on, by id, with its last sighting."""
        store = self.event_store()
        cameras = []
        for c in store.camera_statuses():
            last, _ = store.search_sightings(SightingQuery(camera_id=c.camera_id), limit=1)
            cameras.append(
                CameraOverview(
                    camera_id=c.camera_id, region=c.region, frames=c.frames,
                    analysed=c.analysed, gated_out=c.gated_out, shed=c.shed, faces=c.faces,
                    frames_per_s=c.frames_per_s, gate_share=c.gate_share,
                    shed_share=c.shed_share,
                    window_start_ms=c.window_start_ms, window_end_ms=c.window_end_ms,
                    updated_ms=c.updated_ms, last_sighting=last[0] if last else None,
                )
            )
        return cameras

    def analyze(self, data: bytes) -> list[Face]:
        engine = self.engine()
        with self._engine_lock:
            return engine.analyze_bytes(data)

    def single_face(self, data: bytes) -> Face:
        engine = self.engine()
        with self._engine_lock:
            return engine.single_face(data)

    def largest_face(self, data: bytes) -> Face:
        engine = self.engine()
        with self._engine_lock:
            return engine.largest_face(data)

    def cropped_face(self, data: bytes) -> Face:
        engine = self.engine()
        with self._engine_lock:
            return engine.cropped_face(data)

    def close(self) -> None:
        self.unknowns.stop()  # before the stores it reads close
        self.retention.stop()
        self.enrollment.evidence.close()
        self.publisher.close()
        self.store.close()
        if self._event_store is not None:
            self._event_store.close()
        self.matcher.matcher.close()


__all__ = ["CameraOverview", "LiveMatcher", "Services"]
