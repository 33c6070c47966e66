"""Recognition events: search by camera, region, person and time range, with a cursor."""

from __future__ import annotations

import math
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import QueryRole, ServicesDep
from api.errors import ApiError, answers
from api.schemas import CURSOR, STORE_INT_MAX, EventPublic, EventsPage
from facerec.records import RecognitionEvent

router = APIRouter(prefix="/events", tags=["events"])


def _public(e: RecognitionEvent) -> EventPublic:
    d = e.to_dict()
    d["distance"] = d["distance"] if math.isfinite(d["distance"]) else None
    return EventPublic(**d)


@router.get("", response_model=EventsPage, responses=answers(400))
def search_events(
    services: ServicesDep,
    _: QueryRole,
    camera_id: str | None = None,
    region: str | None = None,
    identity: Annotated[str | None, Query(description="person id or 'unknown'")] = None,
    start_ms: Annotated[
        int | None, Query(ge=0, le=STORE_INT_MAX, description="capture time >= (epoch ms)")
    ] = None,
    end_ms: Annotated[
        int | None,
        Query(ge=0, le=STORE_INT_MAX, description="capture time < (epoch ms), > start_ms"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description=CURSOR)] = None,
) -> EventsPage:
    if start_ms is not None and end_ms is not None and end_ms <= start_ms:
        raise ApiError(400, "invalid_query", f"end_ms {end_ms} must be after start_ms {start_ms}")
    items, next_cursor = services.event_store().search(
        camera_id=camera_id,
        region=region,
        identity=identity,
        start_ms=start_ms,
        end_ms=end_ms,
        limit=limit,
        cursor=cursor,
    )
    return EventsPage(items=[_public(e) for e in items], next_cursor=next_cursor)


@router.get("/{event_id}", response_model=EventPublic)
def get_event(event_id: str, services: ServicesDep, _: QueryRole) -> EventPublic:
    event = services.event_store().get(event_id)
    if event is None:
        raise ApiError(404, "event_not_found", f"no event with id {event_id!r}")
    return _public(event)
