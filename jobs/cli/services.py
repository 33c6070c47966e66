"""The enrollment service as the command line opens it: store and publisher from the
settings, the face engine loaded only when a command enrolls photos."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from facerec.config import Settings
from facerec.eventstore import EventStore, open_event_store
from index_builder.enrollment import EnrollmentService
from index_builder.publish import IndexPublisher
from index_builder.review import sighting_evidence_of
from index_builder.store import EnrollmentStore
from udfs.engine import Face, FaceEngine


class LazyFaces:
    """The face engine, built at the first photo: TensorFlow takes seconds to load, and
    erasing a person or building a snapshot never needs it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine: FaceEngine | None = None

    def _engine(self) -> FaceEngine:
        if self.engine is None:
            self.engine = FaceEngine(self.settings)
        return self.engine

    def single_face(self, data: bytes) -> Face:
        return self._engine().single_face(data)

    def largest_face(self, data: bytes) -> Face:
        return self._engine().largest_face(data)

    def cropped_face(self, data: bytes) -> Face:
        return self._engine().cropped_face(data)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.embedder.close()


class LazyEventStore:
    """The event store, opened at the first call: only erasing a person reads it (the
    evidence keys of their sightings)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: EventStore | None = None

    def __call__(self) -> EventStore:
        if self.store is None:
            self.store = open_event_store(self.settings)
        return self.store

    def close(self) -> None:
        if self.store is not None:
            self.store.close()


@contextmanager
def enrollment_service(settings: Settings) -> Iterator[EnrollmentService]:
    store = EnrollmentStore.from_settings(settings)
    publisher = IndexPublisher.from_settings(settings)
    faces = LazyFaces(settings)
    events = LazyEventStore(settings)
    try:
        service = EnrollmentService(
            settings, store, publisher, faces, sighting_evidence=sighting_evidence_of(events),
            events=events,
        )
        try:
            yield service
        finally:
            service.evidence.close()
    finally:
        events.close()
        publisher.close()
        store.close()
        faces.close()
