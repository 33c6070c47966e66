"""Sightings: one record per person per appearance before a camera, with the best face
crop; search like /events, and reviewing them (assign to a person, reject a match)."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response

from api.deps import EnrollRole, ReviewRole, ServicesDep
from api.errors import answers
from api.schemas import (
    CURSOR,
    STORE_INT_MAX,
    SightingAssign,
    SightingPublic,
    SightingReject,
    SightingsPage,
    finite,
)
from facerec.eventstore import SightingQuery
from facerec.records import Sighting

log = logging.getLogger(__name__)
router = APIRouter(prefix="/sightings", tags=["sightings"])


def public_sighting(s: Sighting) -> SightingPublic:
    d = s.to_dict()
    d["best_distance"] = finite(s.best_distance)
    d["has_image"] = bool(d.pop("evidence_key"))
    if s.review and s.review.get("display_name"):
        d["display_name"] = s.review["display_name"]
    elif s.review and s.review.get("action") == "reject" and s.identity == "unknown":
        d["display_name"] = None
    return SightingPublic(**d)


@router.get("", response_model=SightingsPage, responses=answers(400))
def search_sightings(
    services: ServicesDep,
    _: ReviewRole,
    camera_id: str | None = None,
    region: str | None = None,
    identity: Annotated[str | None, Query(description="person id or 'unknown'")] = None,
    unknown: Annotated[
        bool | None, Query(description="true: only unknown faces; false: only named ones")
    ] = None,
    start_ms: Annotated[
        int | None, Query(ge=0, le=STORE_INT_MAX, description="first seen >= (epoch ms)")
    ] = None,
    end_ms: Annotated[
        int | None,
        Query(ge=0, le=STORE_INT_MAX, description="first seen < (epoch ms), > start_ms"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description=CURSOR)] = None,
) -> SightingsPage:
    """Newest first (by first seen); ``next_cursor`` fetches the next page. An empty time
    range is refused by ``SightingQuery`` (400 ``invalid_query``)."""
    query = SightingQuery(
        camera_id=camera_id,
        region=region,
        identity=identity,
        unknown=unknown,
        start_ms=start_ms,
        end_ms=end_ms,
    )
    items, next_cursor = services.event_store().search_sightings(query, limit=limit, cursor=cursor)
    return SightingsPage(items=[public_sighting(s) for s in items], next_cursor=next_cursor)


@router.get("/{sighting_id}", response_model=SightingPublic)
def get_sighting(sighting_id: str, services: ServicesDep, _: ReviewRole) -> SightingPublic:
    return public_sighting(services.review.get(sighting_id))


@router.get(
    "/{sighting_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The best face (JPEG)."}},
)
def sighting_image(sighting_id: str, services: ServicesDep, _: ReviewRole) -> Response:
    """The sighting's best face, cut as the engine embedded it (404 ``evidence_not_found``
    when none was kept or it expired)."""
    data = services.review.crop(services.review.get(sighting_id))
    return Response(
        content=data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"}
    )


@router.post("/{sighting_id}/assign", response_model=SightingPublic)
def assign_sighting(
    sighting_id: str, body: SightingAssign, services: ServicesDep, who: EnrollRole
) -> SightingPublic:
    """The sighting is ``person_id``: an enrolled person, or a new one when
    ``display_name`` is given. Its face crop becomes a template of the person (the review
    says ``template_refused`` when it could not: no crop kept, or one failing the quality
    gates)."""
    done = services.review.assign(
        sighting_id, body.person_id, display_name=body.display_name, by=who.name
    )
    log.info(
        "sighting %s assigned to %s by %s (template %s)",
        sighting_id,
        body.person_id,
        who.name,
        done.template_id,
    )
    return public_sighting(done.sighting)


@router.post("/{sighting_id}/reject", response_model=SightingPublic, responses=answers(409))
def reject_sighting(
    sighting_id: str,
    services: ServicesDep,
    who: EnrollRole,
    body: Annotated[SightingReject | None, Body()] = None,
) -> SightingPublic:
    """ "This is not X" (X: ``person_id``, default whom the sighting names): the sighting
    becomes unknown, and its face crop a negative template of X (person ``rejected:X``),
    so that a face nearest to it is no longer named X (409 ``sighting_not_matched`` for a
    sighting that names nobody and no ``person_id``)."""
    done = services.review.reject(
        sighting_id, by=who.name, person_id=body.person_id if body else None
    )
    log.info(
        "sighting %s rejected by %s (negative template %s)",
        sighting_id,
        who.name,
        done.template_id,
    )
    return public_sighting(done.sighting)
