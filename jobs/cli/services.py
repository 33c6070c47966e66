"""The enrollment service as the command line opens it: store and publisher from the
settings, the face engine loaded only when a command enrolls photos."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from facerec.config import Settings
from index_builder.enrollment import EnrollmentService
from index_builder.publish import IndexPublisher
from index_builder.store import EnrollmentStore
from udfs.engine import Face, FaceEngine


@contextmanager
def enrollment_service(settings: Settings) -> Iterator[EnrollmentService]:
    store = EnrollmentStore.from_settings(settings)
    publisher = IndexPublisher.from_settings(settings)
    engine: FaceEngine | None = None

    def face_of(data: bytes) -> Face:
        nonlocal engine
        if engine is None:
            engine = FaceEngine(settings)
        return engine.single_face(data)

    try:
        yield EnrollmentService(settings, store, publisher, face_of)
    finally:
        publisher.close()
        store.close()
        if engine is not None:
            engine.embedder.close()
