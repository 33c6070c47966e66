"""What the routes share: settings, face engine, stores, publisher and a live matcher."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np

from facerec.config import Settings
from facerec.errors import BadRecord, SnapshotMismatch
from facerec.eventstore import EventStore, open_event_store
from facerec.models import FACENET_MODEL_ID
from index_builder.enrollment import EnrollmentService
from index_builder.publish import IndexPublisher, LocalIndexLog
from index_builder.review import SightingReview, sighting_evidence_of
from index_builder.store import EnrollmentStore
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
        self.model_id = engine.model_id if engine is not None else FACENET_MODEL_ID
        self.matcher = LiveMatcher(settings, self.model_id)
        self._engine_lock = threading.Lock()  # OpenCV DNN nets are not thread-safe
        self._init_lock = threading.Lock()
        self.enrollment = EnrollmentService(
            settings,
            self.store,
            self.publisher,
            self,
            sighting_evidence=sighting_evidence_of(self.event_store),
        )
        self.review = SightingReview(self.enrollment, self.event_store)

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
        self.enrollment.evidence.close()
        self.publisher.close()
        self.store.close()
        if self._event_store is not None:
            self._event_store.close()
        self.matcher.matcher.close()


__all__ = ["LiveMatcher", "Services"]
