"""The enrollment workflows, written once for the API, the command line and the demo:

* enroll photos for a person: one acceptable face per photo becomes a template, stored in
  one transaction, then published as deltas so running matchers know it at once;
* erase a person: templates gone from the store, a tombstone published;
* build a snapshot of every template and publish its manifest.

Publishing after a store write may fail (Kafka down): the store is the truth, so the write
stands and the result says it was not published; the next snapshot carries the change.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from facerec.config import Settings
from facerec.errors import FaceRecError
from facerec.models import FACENET_MODEL_ID
from index_builder.publish import IndexPublisher
from index_builder.snapshot import SnapshotInfo, build_snapshot
from index_builder.store import Change, EnrollmentStore, NewTemplate, Template
from udfs.engine import Face

log = logging.getLogger(__name__)
FaceOf = Callable[[bytes], Face]
"""Exactly one acceptable face of an image, else a ``FaceRecError`` saying why not."""


@dataclass(frozen=True)
class Photo:
    label: str
    """How messages name the photo: a path, or ``image 0 (upload.jpg)``."""
    data: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class PhotoRefused(FaceRecError):
    """A photo of an all-or-nothing enrollment has no single acceptable face."""

    def __init__(self, photo: Photo, cause: FaceRecError) -> None:
        super().__init__(f"{photo.label}: {cause.message}")
        self.photo, self.cause = photo, cause
        self.reason = cause.reason


@dataclass(frozen=True)
class Enrolled:
    person_id: str
    templates: list[Template]
    refused: list[tuple[Photo, FaceRecError]]
    """Photos passed over (only when enrolling what can be enrolled)."""
    published: bool
    """Every new template reached the index log (and Kafka when configured)."""


@dataclass(frozen=True)
class Erased:
    change: Change
    published: bool


class EnrollmentService:
    def __init__(
        self,
        settings: Settings,
        store: EnrollmentStore,
        publisher: IndexPublisher,
        face_of: FaceOf,
    ) -> None:
        self.settings, self.store, self.publisher = settings, store, publisher
        self.face_of = face_of
        self._build_lock = threading.Lock()

    def enroll(
        self,
        person_id: str,
        photos: Sequence[Photo],
        *,
        all_or_nothing: bool = True,
        limit: int | None = None,
    ) -> Enrolled:
        """Embed each photo's face and store the templates in one transaction.

        ``all_or_nothing``: the first refused photo raises ``PhotoRefused`` and nothing is
        stored (an upload is one request). Otherwise refused photos are reported and the
        rest enrolled, at most ``limit`` of them (a folder of photos)."""
        self.store.get_person(person_id)  # PersonNotFound before the expensive part
        new: list[NewTemplate] = []
        refused: list[tuple[Photo, FaceRecError]] = []
        for photo in photos:
            if limit is not None and len(new) == limit:
                break
            try:
                face = self.face_of(photo.data)
            except FaceRecError as exc:
                if all_or_nothing:
                    raise PhotoRefused(photo, exc) from exc
                log.info("not enrolling %s: %s", photo.label, exc)
                refused.append((photo, exc))
                continue
            assert face.embedding is not None  # face_of returns embedded faces only
            new.append(
                NewTemplate(face.embedding, face.model_id, face.quality.as_dict(), photo.sha256)
            )
        templates = self.store.add_templates(person_id, new) if new else []
        published = True
        for template in templates:
            try:
                self.publisher.publish_enroll(template)
            except Exception as exc:  # stored anyway: the next snapshot carries it
                published = False
                log.warning("enroll delta %s not published: %s", template.id, exc)
        return Enrolled(person_id, templates, refused, published)

    def erase(self, person_id: str) -> Erased:
        """The person and every template leave the store; a tombstone reaches the matchers."""
        change = self.store.delete_person(person_id)
        try:
            self.publisher.publish_delete(change)
        except Exception as exc:  # erased in the store; the next snapshot forgets the person
            log.warning("tombstone for %s not published: %s", person_id, exc)
            return Erased(change, published=False)
        return Erased(change, published=True)

    def publish_snapshot(
        self, model_id: str = FACENET_MODEL_ID, n_trees: int | None = None
    ) -> SnapshotInfo:
        """Snapshot every template of ``model_id`` now, publish its manifest, and keep the
        newest ``index.keep`` snapshots. One build at a time per process."""
        cfg = self.settings.index
        with self._build_lock:
            info = build_snapshot(
                self.store,
                self.settings.snapshots_path(),
                model_id,
                n_trees=n_trees or cfg.n_trees,
                seed=cfg.seed,
                keep=cfg.keep,
            )
            self.publisher.publish_snapshot(info)
        return info
