"""Every call that touches biometric data or results leaves an audit record
(``index_builder.audit``): recognize, verify, reading people and their faces, searching
events and sightings, enrollment and review, erasure, and exports (face crops as JPEG).

``AUDITED`` names those routes, in one table. A middleware records each call to one of them
once the route has answered, whatever the answer (401, 403, 404, 422 and 500 included):
who (the key's name and role, from the same lookup the routes use), what (action, method,
route template), the answer's status and outcome (``ok`` or the error's reason code), and
the people involved: the ``person_id`` of the path, the ``identity`` / ``person_id`` asked
for in the query, and every person id the JSON answer names (``identity``, ``person_id``,
sightings' ``votes``, people's ``id``); a sighting crop names the sighting's identity.

No record, no answer: the answer is held until its record is written, and a call whose
record cannot be written is answered 503 ``audit_unavailable`` instead (a change it made
stands, but no result leaves unrecorded).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import KEY_COOKIE, authenticate
from api.errors import body
from facerec.records import UNKNOWN

log = logging.getLogger(__name__)

AUDITED: dict[tuple[str, str], str] = {
    ("POST", "/recognize"): "recognize",
    ("POST", "/verify"): "verify",
    ("POST", "/people"): "people.create",
    ("GET", "/people"): "people.read",
    ("GET", "/people/{person_id}"): "people.read",
    ("PATCH", "/people/{person_id}"): "people.update",
    ("DELETE", "/people/{person_id}"): "erase",
    ("GET", "/people/{person_id}/faces"): "people.read",
    ("POST", "/people/{person_id}/faces"): "enroll",
    ("DELETE", "/people/{person_id}/faces/{template_id}"): "template.remove",
    ("GET", "/people/{person_id}/faces/{template_id}/image"): "export",
    ("GET", "/events"): "events.search",
    ("GET", "/events/{event_id}"): "events.read",
    ("GET", "/sightings"): "sightings.search",
    ("GET", "/sightings/{sighting_id}"): "sightings.read",
    ("GET", "/sightings/{sighting_id}/image"): "export",
    ("POST", "/sightings/{sighting_id}/assign"): "review",
    ("POST", "/sightings/{sighting_id}/reject"): "review",
    ("GET", "/unknowns"): "unknowns.read",
    ("GET", "/unknowns/{cluster_id}"): "unknowns.read",
    ("POST", "/unknowns/{cluster_id}/enroll"): "enroll",
    ("GET", "/cameras"): "cameras.read",
    ("GET", "/audit"): "audit.read",
    # the review UI's pages and fragments (HTML: the people come from the path and query)
    ("GET", "/ui/people"): "people.read",
    ("GET", "/ui/people/{person_id}"): "people.read",
    ("GET", "/ui/people/{person_id}/templates"): "people.read",
    ("GET", "/ui/sightings"): "sightings.search",
    ("GET", "/ui/sightings/rows"): "sightings.search",
    ("GET", "/ui/sightings/{sighting_id}/row"): "sightings.read",
    ("GET", "/ui/unknowns"): "unknowns.read",
    ("GET", "/ui/cameras"): "cameras.read",
}
"""(method, route template) -> action, for every call recorded."""

_PERSON_FIELDS = ("identity", "person_id")
_MAX_BODY_READ = 16 << 20
"""JSON answers longer than this are passed on unread (their subjects: path and query)."""


def person_ids(document: Any, *, people: bool = False) -> Iterator[str]:
    """Every person id a JSON answer names. ``people``: an answer about people, whose
    ``id`` (top level, or of each of its ``items``) is a person id."""
    if people and isinstance(document, dict):
        for item in [document, *(document.get("items") or [])]:
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                yield item["id"]
    stack = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key in _PERSON_FIELDS and isinstance(value, str):
                    yield value
                elif key == "votes" and isinstance(value, dict):
                    yield from (k for k in value if isinstance(k, str))
                else:
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


class AuditMiddleware:
    """Records the calls of ``AUDITED`` (pure ASGI: it sees the final status of every
    answer, the error handlers' included, and the route the router matched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []
        audited: list[bool] = []  # decided at the answer's start, once the route is known

        async def hold(message: Message) -> None:
            if not audited:
                audited.append(self._action(scope) is not None)
            if not audited[0]:
                await send(message)
                return
            held.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                await self._record_and_send(scope, held, send)

        try:
            await self.app(scope, receive, hold)
        except Exception:
            if self._action(scope) is not None and not held:
                await self._write(scope, 500, "internal_error", None)
            raise

    @staticmethod
    def _action(scope: Scope) -> str | None:
        route = scope.get("route")
        path = getattr(route, "path", None)
        return AUDITED.get((scope["method"], path)) if path else None

    async def _record_and_send(self, scope: Scope, held: list[Message], send: Send) -> None:
        start = held[0]
        status = int(start["status"])
        headers = {k.decode().lower(): v.decode() for k, v in start.get("headers", [])}
        document = None
        if headers.get("content-type", "").startswith("application/json"):
            raw = b"".join(m.get("body", b"") for m in held[1:])
            if len(raw) <= _MAX_BODY_READ:
                try:
                    document = json.loads(raw)
                except ValueError:
                    document = None
        outcome = "ok" if status < 400 else _reason(document, status)
        if await self._write(scope, status, outcome, document):
            for message in held:
                await send(message)
            return
        error = json.dumps(
            body("audit_unavailable", "the call could not be recorded in the audit log")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 503,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(error)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": error})

    async def _write(self, scope: Scope, status: int, outcome: str, document: Any) -> bool:
        request = Request(scope)
        action = self._action(scope)
        assert action is not None
        try:
            await run_in_threadpool(self._record, request, action, status, outcome, document)
        except Exception:
            log.exception("audit record of %s %s not written", request.method, request.url.path)
            return False
        return True

    @staticmethod
    def _record(request: Request, action: str, status: int, outcome: str, document: Any) -> None:
        services = request.app.state.services
        key = request.headers.get("x-api-key") or request.cookies.get(KEY_COOKIE)
        who = authenticate(request, key) if key else None
        erased = document.get("tombstone_id") if isinstance(document, dict) else None
        if action == "erase" and status < 400 and isinstance(erased, str):
            subjects = {erased}  # the person is gone: the record names their tombstone
        else:
            subjects = set(_asked_for(request))
            subjects.update(person_ids(document, people=request.url.path.startswith("/people")))
        if action == "export" and "sighting_id" in request.path_params:
            found = services.event_store().get_sighting(request.path_params["sighting_id"])
            if found is not None:
                subjects.add(found.identity)
        subjects.discard(UNKNOWN)
        route = getattr(request.scope.get("route"), "path", request.url.path)
        services.audit.record(
            key_name=who.name if who else "",
            role=who.role if who else "",
            action=action,
            method=request.method,
            route=route,
            status=status,
            outcome=outcome,
            subjects=subjects,
        )


def _asked_for(request: Request) -> Iterator[str]:
    """The people a call names in its path and query."""
    if "person_id" in request.path_params:
        yield str(request.path_params["person_id"])
    for name in _PERSON_FIELDS:
        value = request.query_params.get(name)
        if value:
            yield value


def _reason(document: Any, status: int) -> str:
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return document["error"]
    return f"http_{status}"


def install(app: FastAPI) -> None:
    app.add_middleware(AuditMiddleware)
