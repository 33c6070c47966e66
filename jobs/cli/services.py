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


@contextmanager
def enrollment_service(settings: Settings) -> Iterator[EnrollmentService]:
    store = EnrollmentStore.from_settings(settings)
    publisher = IndexPublisher.from_settings(settings)
    faces = LazyFaces(settings)
    try:
        yield EnrollmentService(settings, store, publisher, faces)
    finally:
        publisher.close()
        store.close()
        faces.close()
