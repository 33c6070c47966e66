"""People: create, read, list, update, erase."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from api.deps import EnrollRole, ServicesDep
from api.schemas import PeoplePage, PersonCreate, PersonPublic, PersonUpdate, TemplatePublic

log = logging.getLogger(__name__)
router = APIRouter(prefix="/people", tags=["people"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=PersonPublic)
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
    offset: Annotated[int, Query(ge=0)] = 0,
) -> PeoplePage:
    items, total = services.store.list_people(limit=limit, offset=offset)
    return PeoplePage(
        items=[PersonPublic.of(p) for p in items], total=total, limit=limit, offset=offset
    )


@router.get("/{person_id}", response_model=PersonPublic)
def get_person(person_id: str, services: ServicesDep, _: EnrollRole) -> PersonPublic:
    return PersonPublic.of(services.store.get_person(person_id))


@router.patch("/{person_id}", response_model=PersonPublic)
def update_person(
    person_id: str, body: PersonUpdate, services: ServicesDep, _: EnrollRole
) -> PersonPublic:
    fields = body.model_dump(exclude_unset=True)
    if not fields:
        return PersonPublic.of(services.store.get_person(person_id))
    return PersonPublic.of(services.store.update_person(person_id, **fields))


@router.delete("/{person_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_person(person_id: str, services: ServicesDep, who: EnrollRole) -> Response:
    """Erasure: the person and every template go; a tombstone reaches the matchers."""
    erased = services.enrollment.erase(person_id)
    log.info("person %s erased by %s (seq %d)", person_id, who.name, erased.change.seq)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{person_id}/faces", response_model=list[TemplatePublic])
def list_faces(person_id: str, services: ServicesDep, _: EnrollRole) -> list[TemplatePublic]:
    services.store.get_person(person_id)  # 404 for an unknown person
    return [TemplatePublic.of(t) for t in services.store.list_templates(person_id)]
