"""People: create, read, list, update, erase."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, status
from pydantic import BaseModel, Field

from api.deps import EnrollRole, ServicesDep
from api.errors import answers
from api.schemas import (
    STORE_INT_MAX,
    PeoplePage,
    PersonCreate,
    PersonPublic,
    PersonUpdate,
    TemplatePublic,
)

log = logging.getLogger(__name__)
router = APIRouter(prefix="/people", tags=["people"])


@router.post(
    "", status_code=status.HTTP_201_CREATED, response_model=PersonPublic, responses=answers(409)
)
def create_person(body: PersonCreate, services: ServicesDep, _: EnrollRole) -> PersonPublic:
    p = services.store.create_person(
        body.display_name,
        external_ref=body.external_ref,
        metadata=body.metadata,
        person_id=body.id,
    )
    return PersonPublic.of(p)


@router.get("", response_model=PeoplePage)
def list_people(
    services: ServicesDep,
    _: EnrollRole,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=STORE_INT_MAX)] = 0,
) -> PeoplePage:
    items, total = services.store.list_people(limit=limit, offset=offset)
    return PeoplePage(
        items=[PersonPublic.of(p) for p in items], total=total, limit=limit, offset=offset
    )


@router.get("/{person_id}", response_model=PersonPublic)
def get_person(person_id: str, services: ServicesDep, _: EnrollRole) -> PersonPublic:
    return PersonPublic.of(services.store.get_person(person_id))


@router.patch("/{person_id}", response_model=PersonPublic, responses=answers(409))
def update_person(
    person_id: str, body: PersonUpdate, services: ServicesDep, _: EnrollRole
) -> PersonPublic:
    fields = body.model_dump(exclude_unset=True)
    if not fields:
        return PersonPublic.of(services.store.get_person(person_id))
    return PersonPublic.of(services.store.update_person(person_id, **fields))


class ErasureReport(BaseModel):
    """What erasing a person removed, counted."""

    person_id: str
    tombstone_id: str = Field(description="Stands for the person in the audit log from now on.")
    templates: int
    template_crops: int
    events: int = Field(description="Per-frame events that named the person.")
    sightings: int = Field(description="Sightings that named the person.")
    sighting_evidence: int = Field(description="Crops and whole frames of those sightings.")
    audit_records: int = Field(description="Audit records now naming the tombstone id.")
    published: bool = Field(description="The tombstone reached the matchers' index log.")
    seq: int = Field(description="The change-log sequence number of the erasure.")


@router.delete("/{person_id}", response_model=ErasureReport)
def delete_person(person_id: str, services: ServicesDep, who: EnrollRole) -> ErasureReport:
    """Erasure: the person, their templates and face crops, their events and sightings
    with those sightings' evidence go; audit records keep the calls but name a tombstone
    id; a tombstone reaches the matchers at once."""
    erased = services.enrollment.erase(person_id)
    log.info("person %s erased by %s (seq %d)", person_id, who.name, erased.change.seq)
    return ErasureReport(
        person_id=person_id, tombstone_id=erased.tombstone_id, templates=erased.templates,
        template_crops=erased.template_crops, events=erased.events,
        sightings=erased.sightings, sighting_evidence=erased.sighting_evidence,
        audit_records=erased.audit_records, published=erased.published,
        seq=erased.change.seq,
    )


@router.get("/{person_id}/faces", response_model=list[TemplatePublic])
def list_faces(person_id: str, services: ServicesDep, _: EnrollRole) -> list[TemplatePublic]:
    services.store.get_person(person_id)  # 404 for an unknown person
    return [TemplatePublic.of(t) for t in services.store.list_templates(person_id)]
