"""The enrollment workflows, written once for the API, the command line and the demo:

* enroll photos for a person: one acceptable face per photo becomes a template, stored in
  one transaction, then published as deltas so running matchers know it at once;
* erase a person: templates, their face crops, their events and sightings with their
  evidence gone, their id in the audit log replaced by a tombstone id, a tombstone
  published;
* remove one template: gone from the store with its crop, a new snapshot published;
* import a ``name/*.jpg`` tree (the command line and the demo);
* build a snapshot of every template and publish its manifest.

Each template's face crop (the box the engine embedded, cut as the engine cut it) is kept
as JPEG in the evidence store under ``templates/<person_id>/<template_id>.jpg``.

Publishing after a store write may fail (Kafka down): the store is the truth, so the write
stands and the result says it was not published; the next snapshot carries the change.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from facerec.config import Settings
from facerec.errors import FaceRecError
from facerec.eventstore import DeletedRecords, EventStore
from facerec.evidence import JPEG, EvidenceStore, open_evidence_store, template_key
from facerec.evidence.base import person_prefix
from facerec.models import FACENET_MODEL_ID, pipeline_model_id
from index_builder.audit import AuditLog, new_tombstone_id
from index_builder.publish import IndexPublisher
from index_builder.snapshot import SnapshotInfo, build_snapshot, index_options
from index_builder.store import (
    Change,
    DuplicatePerson,
    DuplicateTemplate,
    EnrollmentStore,
    NewTemplate,
    Person,
    PersonNotFound,
    Template,
)
from udfs.engine import Face
from udfs.evaluation import list_identities
from udfs.evidence import face_jpeg
from udfs.image import decode_image

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
    evidence_stored: bool = True
    """Every new template's face crop reached the evidence store."""


@dataclass(frozen=True)
class Erased:
    """What erasing a person removed, counted."""

    change: Change
    published: bool
    tombstone_id: str
    """The id that stands for the person in the audit log from now on."""
    templates: int = 0
    template_crops: int = 0
    sighting_evidence: int = 0
    """Crops and whole frames of the person's sightings."""
    events: int = 0
    sightings: int = 0
    audit_records: int = 0
    """Audit records whose mention of the person became the tombstone id."""

    @property
    def evidence_removed(self) -> int:
        """Objects removed from the evidence store (template crops, sighting crops, frames)."""
        return self.template_crops + self.sighting_evidence


@dataclass(frozen=True)
class Removed:
    template: Template
    change: Change
    published: bool
    """A snapshot without the template was built and published (else the next one is)."""


@dataclass
class ImportReport:
    """What ``import_tree`` did: people created, templates enrolled per person, and every
    photo refused with its reason."""

    created: list[str] = field(default_factory=list)
    enrolled: dict[str, int] = field(default_factory=dict)
    refused: list[tuple[str, Photo, FaceRecError]] = field(default_factory=list)
    skipped_people: list[str] = field(default_factory=list)
    published: bool = True

    @property
    def templates(self) -> int:
        return sum(self.enrolled.values())


def person_id_for(name: str) -> str:
    """The person id a name enrolls under: lower case, runs of other characters as '_'
    ('Ben Affleck' and 'ben_affleck' -> 'ben_affleck')."""
    pid = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")[:64]
    if not pid:
        raise ValueError(f"name {name!r} has no letter or digit to make a person id of")
    return pid


def display_name_for(name: str) -> str:
    """How a folder or command-line name reads ('ben_affleck' -> 'Ben Affleck')."""
    shown = name.replace("_", " ").strip()
    return shown.title() if shown.islower() else shown


ProgressFn = Callable[[str, Photo | None], None]
"""Called once per photo of an import (person id, photo) as it is done."""


class EnrollmentService:
    def __init__(
        self,
        settings: Settings,
        store: EnrollmentStore,
        publisher: IndexPublisher,
        faces: FaceSource,
        evidence: EvidenceStore | None = None,
        sighting_evidence: Callable[[str], Iterable[str]] | None = None,
        events: Callable[[], EventStore] | None = None,
        audit: AuditLog | None = None,
    ) -> None:
        """``evidence``: where template crops go (default: ``open_evidence_store``).
        ``sighting_evidence(person_id)``: the evidence keys of the person's sightings, which
        erasing the person removes too (the sightings' store knows them). ``events``: the
        event store, opened when first needed, whose events and sightings of a person
        erasing removes. ``audit``: the audit log (default: the one in ``store``)."""
        self.settings, self.store, self.publisher = settings, store, publisher
        self.faces = faces
        self.evidence = evidence if evidence is not None else open_evidence_store(settings)
        self.sighting_evidence = sighting_evidence
        self.events = events
        self.audit = audit if audit is not None else AuditLog(store)
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
        used: list[tuple[Photo, Face]] = []
        refused: list[tuple[Photo, FaceRecError]] = []
        for photo in photos:
            if limit is not None and len(new) == limit:
                break
            try:
                face = face_of(self.faces, choice, photo.data)
                self._refuse_repeat(person_id, photo, face.model_id, new)
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
            used.append((photo, face))
        try:
            templates = self.store.add_templates(person_id, new) if new else []
        except DuplicateTemplate as exc:  # the same photo stored by a concurrent request
            photo = next(p for p in photos if p.sha256 == exc.existing.image_sha256)
            raise PhotoRefused(photo, exc) from exc
        crops = [self._store_crop(t, p, f) for t, (p, f) in zip(templates, used, strict=True)]
        stored = all(crops)
        published = True
        for template in templates:
            try:
                self.publisher.publish_enroll(template)
            except Exception as exc:  # stored anyway: the next snapshot carries it
                published = False
                log.warning("enroll delta %s not published: %s", template.id, exc)
        return Enrolled(person_id, templates, refused, published, stored)

    def face_crop(self, photo: Photo, face: Face) -> bytes:
        """JPEG of the face as the engine cut it for embedding (``udfs.evidence``, as the
        job keeps its sightings' faces)."""
        limits = self.settings.images
        image = decode_image(
            photo.data,
            max_bytes=limits.max_bytes,
            max_pixels=limits.max_pixels,
            min_side=limits.min_side,
        )
        return face_jpeg(image, face, self.settings)

    def _store_crop(self, template: Template, photo: Photo, face: Face) -> bool:
        """Keep the template's face crop; a failure leaves the template enrolled (the crop
        is evidence, not the template) and is logged."""
        try:
            self.evidence.put(
                template_key(template.person_id, template.id), self.face_crop(photo, face), JPEG
            )
        except Exception as exc:
            log.warning("face crop of template %s not stored: %s", template.id, exc)
            return False
        return True

    def crop_key(self, template: Template) -> str:
        """The evidence key of a template's face crop."""
        return template_key(template.person_id, template.id)

    def template_crop(self, person_id: str, template_id: str) -> bytes:
        """The JPEG face crop of a template: ``PersonNotFound`` / ``TemplateNotFound`` for
        no such template, ``EvidenceNotFound`` when it has no stored crop."""
        template = self.store.get_template(person_id, template_id)
        return self.evidence.get(self.crop_key(template))

    def ensure_person(self, name: str, person_id: str | None = None) -> tuple[Person, bool]:
        """The person ``person_id`` (default: ``person_id_for(name)``), created with display
        name ``display_name_for(name)`` when missing; and whether it was created."""
        pid = person_id or person_id_for(name)
        try:
            return self.store.get_person(pid), False
        except PersonNotFound:
            pass
        try:
            return self.store.create_person(display_name_for(name), person_id=pid), True
        except DuplicatePerson:  # created meanwhile by another writer
            return self.store.get_person(pid), False

    def import_tree(
        self,
        folder: Path,
        *,
        limit: int | None = None,
        skip_existing: bool = False,
        choice: FaceChoice = "single",
        progress: ProgressFn | None = None,
    ) -> ImportReport:
        """Enroll ``folder/<name>/*.jpg`` (and other image types): one person per
        sub-folder (``ensure_person(name)``), every photo with an acceptable face becomes a
        template, every other one is reported with its reason. ``limit``: templates per
        person at most; ``skip_existing``: leave alone the people who have templates of the
        crop in use (the demo's second run). ``progress(person_id, photo)`` is called after
        each photo."""
        report = ImportReport()
        for name, paths in list_identities(Path(folder)).items():
            person, created = self.ensure_person(name)
            if created:
                report.created.append(person.id)
            elif skip_existing and self._has_current_templates(person.id):
                report.skipped_people.append(person.id)
                if progress is not None:
                    for _ in paths:
                        progress(person.id, None)
                continue
            photos = [Photo(str(p), p.read_bytes()) for p in paths]
            for photo in photos:
                enrolled = self.enroll(person.id, [photo], all_or_nothing=False)
                for refused_photo, exc in enrolled.refused:
                    report.refused.append((person.id, refused_photo, exc))
                n = len(enrolled.templates)
                report.enrolled[person.id] = report.enrolled.get(person.id, 0) + n
                report.published &= enrolled.published
                if progress is not None:
                    progress(person.id, photo)
                if limit is not None and report.enrolled[person.id] >= limit:
                    break
        return report

    def _has_current_templates(self, person_id: str) -> bool:
        """Whether the person has templates of the crop and model in use: after either
        changes, an import enrolls people who exist already again."""
        current = pipeline_model_id(FACENET_MODEL_ID, self.settings.align)
        return any(t.model_id == current for t in self.store.list_templates(person_id))

    def _refuse_repeat(
        self, person_id: str, photo: Photo, model_id: str, new: Sequence[NewTemplate]
    ) -> None:
        existing = self.store.find_template(person_id, photo.sha256, model_id)
        if existing is not None:
            raise DuplicateTemplate(
                f"person {person_id!r} already has template {existing.id} from this photo",
                existing,
            )
        if any(t.image_sha256 == photo.sha256 for t in new):
            raise RepeatedPhoto(f"the same photo is given twice (sha256 {photo.sha256[:12]}...)")

    def erase(self, person_id: str) -> Erased:
        """The person and every template leave the store, with their face crops, their
        events and sightings and those sightings' evidence; the audit log names a tombstone
        id instead of the person; a tombstone reaches the matchers."""
        person = self.store.get_person(person_id)  # PersonNotFound before anything goes
        keys = list(self.sighting_evidence(person_id)) if self.sighting_evidence else []
        # the person's row last: if a store fails on the way, the person is still there and
        # a retry finishes the job, instead of a person gone with photos or events left behind
        crops = self.evidence.delete_prefix(person_prefix(person_id))
        sighting_evidence = self.evidence.erase_sightings(keys)
        records = self.events().erase_identity(person_id) if self.events else DeletedRecords()
        tombstone = new_tombstone_id()
        rewritten = self.audit.replace_subject(person_id, tombstone)
        change = self.store.delete_person(person_id)
        published = True
        try:
            self.publisher.publish_delete(change)
        except Exception as exc:  # erased in the store; the next snapshot forgets the person
            log.warning("tombstone for %s not published: %s", person_id, exc)
            published = False
        return Erased(
            change, published, tombstone, templates=person.template_count,
            template_crops=crops, sighting_evidence=sighting_evidence, events=records.events,
            sightings=records.sightings, audit_records=rewritten,
        )

    def remove_template(self, person_id: str, template_id: str) -> Removed:
        """One template leaves the store with its face crop; a snapshot without it is built
        and published (the index messages have no per-template removal, and a snapshot
        covering the removal also drops it from matchers that hold it as a delta)."""
        # the crop first (as for erase): a failing evidence store leaves nothing half-done
        self.evidence.delete(self.crop_key(self.store.get_template(person_id, template_id)))
        template, change = self.store.delete_template(person_id, template_id)
        try:
            self.publish_snapshot(template.model_id)
        except Exception as exc:  # removed in the store; the next snapshot leaves it out
            log.warning("snapshot after removing template %s not published: %s", template_id, exc)
            return Removed(template, change, published=False)
        return Removed(template, change, published=True)

    def publish_snapshot(
        self, model_id: str = FACENET_MODEL_ID, n_trees: int | None = None
    ) -> SnapshotInfo:
        """Snapshot every template of ``model_id`` now, publish its manifest, and keep the
        newest ``index.keep`` snapshots. One build at a time per process."""
        cfg = self.settings.index
        with self._build_lock:
            options = index_options(cfg) | {"n_trees": n_trees or cfg.n_trees}
            info = build_snapshot(
                self.store, self.settings.snapshots_path(), model_id, keep=cfg.keep, **options
            )
            self.publisher.publish_snapshot(info)
        return info
