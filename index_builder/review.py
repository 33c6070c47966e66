"""Reviewing sightings, written once for the API (and any later command line):

* ``assign``: the sighting is someone (an existing person, or a new one when a display
  name is given); its best face crop becomes a template of that person, enrolled through
  ``EnrollmentService`` with ``choice="cropped"`` so it is embedded as the engine embeds any
  crop;
* ``reject``: "this is not X". The match is withdrawn (identity ``unknown``) and the crop is
  enrolled as a *negative template* of X: a template of the reserved person ``rejected:X``
  (``udfs.match.negative_person_id``), published in deltas and snapshots like any template.
  A face whose nearest template is a negative one comes out unknown (``udfs.match``), so the
  same stranger is not named X again.

Both record a review on the sighting (``EventStore.review_sighting``: the job's later
upserts keep it). When the crop cannot become a template (no evidence kept, or expired; a
crop failing the quality gates) the review is recorded all the same and says why.

``sighting_evidence_of`` lists the evidence keys of a person's sightings, which erasing the
person removes (``EnrollmentService(sighting_evidence=...)``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from facerec.errors import FaceRecError
from facerec.eventstore import EventStore, SightingQuery
from facerec.eventstore.base import MAX_LIMIT
from facerec.records import UNKNOWN, Sighting, now_ms
from index_builder.enrollment import EnrollmentService, Photo, PhotoRefused
from index_builder.store import DuplicatePerson, DuplicateTemplate, PersonNotFound
from udfs.match import is_negative, negative_person_id

log = logging.getLogger(__name__)
EventStoreFn = Callable[[], EventStore]
"""The event store, opened when first needed (the API opens it lazily)."""


class SightingNotFound(FaceRecError):
    """No sighting with this id (never written, or expired)."""

    reason = "sighting_not_found"


class SightingNotMatched(FaceRecError):
    """A reject of a sighting that names nobody: there is no match to withdraw."""

    reason = "sighting_not_matched"


class ReservedPersonId(FaceRecError):
    """A person id of the reserved ``rejected:`` namespace (negative templates)."""

    reason = "reserved_person_id"


def sighting_evidence_of(events: EventStoreFn) -> Callable[[str], Iterator[str]]:
    """``person_id -> evidence keys of the person's sightings``, paging through the event
    store (for ``EnrollmentService(sighting_evidence=...)``)."""

    def keys(person_id: str) -> Iterator[str]:
        store, cursor = events(), None
        query = SightingQuery(identity=person_id)
        while True:
            page, cursor = store.search_sightings(query, limit=MAX_LIMIT, cursor=cursor)
            for s in page:
                if s.evidence_key:
                    yield s.evidence_key
            if cursor is None:
                return

    return keys


@dataclass(frozen=True)
class Reviewed:
    sighting: Sighting
    template_id: str | None
    """The template made of the crop (negative for a reject), None when none could be."""
    published: bool


class SightingReview:
    def __init__(self, enrollment: EnrollmentService, events: EventStoreFn) -> None:
        self.enrollment, self.events = enrollment, events
        self.listeners: list[Callable[[Sighting], None]] = []
        """Called with every sighting a review changed (the unknown faces' clusters learn
        at once that a sighting was named); a failing listener is logged, never raised."""

    def get(self, sighting_id: str) -> Sighting:
        sighting = self.events().get_sighting(sighting_id)
        if sighting is None:
            raise SightingNotFound(f"no sighting with id {sighting_id!r}")
        return sighting

    def crop(self, sighting: Sighting) -> bytes:
        """The sighting's best face JPEG; ``EvidenceNotFound`` when none is kept."""
        from facerec.evidence import EvidenceNotFound

        if not sighting.evidence_key:
            raise EvidenceNotFound(f"sighting {sighting.sighting_id} has no face evidence")
        return self.enrollment.evidence.get(sighting.evidence_key)

    def assign(
        self,
        sighting_id: str,
        person_id: str,
        *,
        display_name: str | None = None,
        by: str,
        template: bool = True,
    ) -> Reviewed:
        """The sighting is ``person_id``: an existing person, or a new one created with
        ``display_name`` when given (without it an unknown id is ``PersonNotFound``: a typo
        must not create a person). The crop becomes a template of the person, unless
        ``template`` is False (a cluster of unknown faces enrolls its best crops only)."""
        if is_negative(person_id):
            raise ReservedPersonId(
                f"person id {person_id!r} is reserved for rejected faces; use reject"
            )
        sighting = self.get(sighting_id)
        try:
            person = self.enrollment.store.get_person(person_id)
        except PersonNotFound:
            if display_name is None:
                raise
            try:
                person = self.enrollment.store.create_person(display_name, person_id=person_id)
            except DuplicatePerson:  # created meanwhile
                person = self.enrollment.store.get_person(person_id)
        template_id, published, why = (
            self._enroll_crop(sighting, person.id) if template else (None, True, "")
        )
        review: dict[str, Any] = {
            "action": "assign",
            "by": by,
            "at": now_ms(),
            "was": sighting.identity,
            "display_name": person.display_name,
            "template_id": template_id,
        }
        if why:
            review["template_refused"] = why
        return Reviewed(self._review(sighting_id, person.id, review), template_id, published)

    def reject(self, sighting_id: str, *, by: str, person_id: str | None = None) -> Reviewed:
        """ "This is not ``person_id``" (default: whom the sighting names): the sighting
        becomes unknown and its crop a negative template of that person."""
        sighting = self.get(sighting_id)
        target = person_id or sighting.identity
        if target == UNKNOWN:
            raise SightingNotMatched(
                f"sighting {sighting_id} names nobody: nothing to reject (give person_id to "
                "keep this face from matching someone)"
            )
        if is_negative(target):
            raise ReservedPersonId(f"person id {target!r} is reserved for rejected faces")
        negative, _ = self.enrollment.ensure_person(
            f"not {target}", person_id=negative_person_id(target)
        )
        template_id, published, why = self._enroll_crop(sighting, negative.id)
        review: dict[str, Any] = {
            "action": "reject",
            "by": by,
            "at": now_ms(),
            "was": sighting.identity,
            "not": target,
            "negative_template_id": template_id,
        }
        if why:
            review["template_refused"] = why
        # the sighting names nobody now, unless it named someone else than the rejected one
        identity = UNKNOWN if sighting.identity == target else sighting.identity
        return Reviewed(self._review(sighting_id, identity, review), template_id, published)

    def _enroll_crop(self, sighting: Sighting, person_id: str) -> tuple[str | None, bool, str]:
        """Enroll the sighting's crop for ``person_id``: (template id, published, why not).
        The same crop enrolled before (a repeated review) answers its existing template."""
        try:
            photo = Photo(f"sighting {sighting.sighting_id}", self.crop(sighting))
            enrolled = self.enrollment.enroll(person_id, [photo], choice="cropped")
        except PhotoRefused as exc:
            if isinstance(exc.cause, DuplicateTemplate):
                return exc.cause.existing.id, True, ""
            log.warning("crop of sighting %s not enrolled: %s", sighting.sighting_id, exc)
            return None, True, f"{exc.reason}: {exc.cause.message}"
        except FaceRecError as exc:  # no evidence: the review stands without a template
            if isinstance(exc, PersonNotFound):
                raise
            log.warning("crop of sighting %s not enrolled: %s", sighting.sighting_id, exc)
            return None, True, f"{exc.reason}: {exc.message}"
        return enrolled.templates[0].id, enrolled.published, ""

    def _review(self, sighting_id: str, identity: str, review: dict[str, Any]) -> Sighting:
        updated = self.events().review_sighting(sighting_id, identity, review)
        if updated is None:  # expired between the read and the write
            raise SightingNotFound(f"no sighting with id {sighting_id!r}")
        for listener in self.listeners:
            try:
                listener(updated)
            except Exception:  # the review is stored: a listener's failure must not undo it
                log.exception("review listener failed for sighting %s", sighting_id)
        return updated


__all__ = [
    "ReservedPersonId",
    "Reviewed",
    "SightingNotFound",
    "SightingNotMatched",
    "SightingReview",
    "sighting_evidence_of",
]
