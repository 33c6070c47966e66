"""The audit log: who recognised, verified, searched, enrolled, erased or exported whom
(``api.audit`` records the calls; admins read them here)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from api.deps import AdminRole, ServicesDep
from api.errors import answers
from api.schemas import STORE_INT_MAX
from index_builder.audit import AuditQuery

router = APIRouter(prefix="/audit", tags=["audit"])


class AuditRecordPublic(BaseModel):
    id: int
    at_ms: int = Field(description="When the call was answered (epoch ms).")
    key_name: str = Field(
        description="The caller's key; '' when no valid key was given; cli:<login name> for "
        "a command."
    )
    role: str = Field(description="The key's role; cli for a command.")
    action: str = Field(description="recognize, verify, people.read, events.search, export, ...")
    method: str = Field(description="The HTTP method; CLI for a command.")
    route: str = Field(
        description="The route template, e.g. /people/{person_id}; for a command, the "
        "command (facerec people delete)."
    )
    status: int = Field(description="The HTTP status of the answer; a command's exit status.")
    outcome: str = Field(description="ok, or the error's reason code.")
    subjects: list[str] = Field(
        description="Person ids the call asked for or was answered with (erased people: "
        "their tombstone id, erased:...)."
    )


class AuditPage(BaseModel):
    items: list[AuditRecordPublic]
    next_cursor: str | None


@router.get("", response_model=AuditPage, responses=answers(400))
def search_audit(
    services: ServicesDep,
    _: AdminRole,
    key_name: Annotated[str | None, Query(description="Only calls made with this key")] = None,
    person_id: Annotated[
        str | None, Query(description="Only calls involving this person (or tombstone id)")
    ] = None,
    action: Annotated[str | None, Query(description="Only this action")] = None,
    start_ms: Annotated[
        int | None, Query(ge=0, le=STORE_INT_MAX, description="answered at >= (epoch ms)")
    ] = None,
    end_ms: Annotated[
        int | None, Query(ge=0, le=STORE_INT_MAX, description="answered at < (epoch ms)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: str | None = None,
) -> AuditPage:
    """Newest first; ``next_cursor`` fetches the next page. An empty time range or a cursor
    this route did not hand out is 400 (``invalid_query``, ``invalid_cursor``)."""
    query = AuditQuery(
        key_name=key_name, person_id=person_id, action=action, start_ms=start_ms, end_ms=end_ms
    )
    items, next_cursor = services.audit.search(query, limit=limit, cursor=cursor)
    return AuditPage(
        items=[AuditRecordPublic(**{**r.__dict__, "subjects": list(r.subjects)}) for r in items],
        next_cursor=next_cursor,
    )
