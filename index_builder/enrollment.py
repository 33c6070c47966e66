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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from facerec.config import Settings
from facerec.errors import FaceRecError
from facerec.models import FACENET_MODEL_ID
from index_builder.publish import IndexPublisher
from index_builder.snapshot import SnapshotInfo, build_snapshot
from index_builder.store import (
    Change,
    DuplicateTemplate,
    EnrollmentStore,
    NewTemplate,
    Template,
)
from udfs.engine import Face

log = logging.getLogger(__name__)
FaceChoice = Literal["single", "largest", "cropped"]
"""Which face of a photo to enroll: ``single`` requires exactly one acceptable face;
``largest`` takes the largest acceptable one (bystanders in the photo); ``cropped`` takes
the whole image as the face, without detection (ID photos cropped by the caller)."""


class FaceSource(Protocol):
    """The face engine's enrollment entry points (the API serialises them behind a lock)."""

    def single_face(self, data: bytes) -> Face: ...

    def largest_face(self, data: bytes) -> Face: ...

    def cropped_face(self, data: bytes) -> Face: ...


def face_of(source: FaceSource, choice: FaceChoice, data: bytes) -> Face:
    if choice == "largest":
        return source.largest_face(data)
    if choice == "cropped":
        return source.cropped_face(data)
    return source.single_face(data)


@dataclass(frozen=True)
class Photo:
    label: str
    """How messages name the photo: a path, or ``image 0 (upload.jpg)``."""
    data: bytes = field(repr=False)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class PhotoRefused(FaceRecError):
    """A photo of an all-or-nothing enrollment has no acceptable face, or the person has a
    template from it already (``cause`` is then ``DuplicateTemplate``)."""

    def __init__(self, photo: Photo, cause: FaceRecError) -> None:
        super().__init__(f"{photo.label}: {cause.message}")
        self.photo, self.cause = photo, cause
        self.reason = cause.reason


class RepeatedPhoto(FaceRecError):
    """One enrollment names the same photo twice."""

    reason = "repeated_photo"


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
        faces: FaceSource,
    ) -> None:
        self.settings, self.store, self.publisher = settings, store, publisher
        self.faces = faces
        self._build_lock = threading.Lock()

    def enroll(
        self,
        person_id: str,
        photos: Sequence[Photo],
        *,
        all_or_nothing: bool = True,
        limit: int | None = None,
        choice: FaceChoice = "single",
    ) -> Enrolled:
        """Embed each photo's face and store the templates in one transaction.

        ``all_or_nothing``: the first refused photo raises ``PhotoRefused`` and nothing is
        stored (an upload is one request). Otherwise refused photos are reported and the
        rest enrolled, at most ``limit`` of them (a folder of photos). A photo the person
        has a template from already is refused (``DuplicateTemplate``, naming it), never
        stored twice."""
        self.store.get_person(person_id)  # PersonNotFound before the expensive part
        new: list[NewTemplate] = []
        refused: list[tuple[Photo, FaceRecError]] = []
        for photo in photos:
            if limit is not None and len(new) == limit:
                break
            try:
                self._refuse_repeat(person_id, photo, new)
                face = face_of(self.faces, choice, photo.data)
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
        try:
            templates = self.store.add_templates(person_id, new) if new else []
        except DuplicateTemplate as exc:  # the same photo stored by a concurrent request
            photo = next(p for p in photos if p.sha256 == exc.existing.image_sha256)
            raise PhotoRefused(photo, exc) from exc
        published = True
        for template in templates:
            try:
                self.publisher.publish_enroll(template)
            except Exception as exc:  # stored anyway: the next snapshot carries it
                published = False
                log.warning("enroll delta %s not published: %s", template.id, exc)
        return Enrolled(person_id, templates, refused, published)

    def _refuse_repeat(self, person_id: str, photo: Photo, new: Sequence[NewTemplate]) -> None:
        existing = self.store.find_template(person_id, photo.sha256)
        if existing is not None:
            raise DuplicateTemplate(
                f"person {person_id!r} already has template {existing.id} from this photo",
                existing,
            )
        if any(t.image_sha256 == photo.sha256 for t in new):
            raise RepeatedPhoto(f"the same photo is given twice (sha256 {photo.sha256[:12]}...)")

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
