"""Pages of the review UI.

Pages read through the services as the JSON routes do, and each needs the roles of the
routes it reads, so a key sees in the UI what it could fetch from the API. Every change a
page makes is a call from ``ui.js`` to a JSON route (with the key's cookie), so the API's
validation, roles and logs apply to the UI unchanged. No inline script or style: the pages
are served with a Content-Security-Policy that forbids them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

import jinja2
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.deps import KEY_COOKIE, Principal, authenticate, same_origin
from api.routes.unknowns import REFRESH_BUDGET_S
from api.services import CameraOverview, Services
from facerec.config import ApiRole
from facerec.errors import FaceRecError
from facerec.eventstore import InvalidQuery, SightingQuery
from facerec.records import NO_DISTANCE, UNKNOWN, Sighting
from index_builder.store import Person, PersonNotFound
from udfs.match import is_negative

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
STATIC_DIR = HERE / "static"

PEOPLE_ROLES: tuple[ApiRole, ...] = ("admin", "enroll")
"""GET /people, /people/{id}/faces and the template images."""
SIGHTINGS_ROLES: tuple[ApiRole, ...] = ("admin", "enroll", "query")
"""GET /sightings and the sighting images (the unknowns and cameras pages show them too)."""
CHANGE_ROLES: tuple[ApiRole, ...] = ("admin", "enroll")
"""The routes the buttons call: people, faces, assign, reject, enroll a cluster."""
PAGE_SIZE = 50
POLL_MS = 3000
PEOPLE_CHOICES = 500
"""The most people offered in the assign dialog's list."""

_SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show faces and names: not for shared caches
}


def iso(ms: int | None) -> str:
    """Epoch ms as ISO 8601 UTC (``ui.js`` shows it in the browser's local time)."""
    if ms is None:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def epoch_ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


def distance(value: float | None) -> str:
    """A distance to show: none for a sighting with no candidate (an empty gallery)."""
    if value is None or not math.isfinite(value) or value >= NO_DISTANCE:
        return "\N{EM DASH}"
    return f"{value:.3f}"


def _asset_version() -> str:
    """A hash of the static files: their URLs change when they do (no stale script)."""
    h = hashlib.sha256()
    for path in sorted(STATIC_DIR.iterdir()):
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_env.filters.update(iso=iso, epoch_ms=epoch_ms, distance=distance)
templates = Jinja2Templates(env=_env)
ASSET_VERSION = _asset_version()

router = APIRouter(prefix="/ui", include_in_schema=False)
root_router = APIRouter(include_in_schema=False)


# ------------------------------------------------------------------ who is signed in
class Denied(Exception):
    """The request may not see the page; ``response`` says so (login, or a 403 page)."""

    def __init__(self, response: Response) -> None:
        super().__init__("denied")
        self.response = response


async def denied(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, Denied)
    return exc.response


def _services(request: Request) -> Services:
    return request.app.state.services


def signed_in(request: Request) -> Principal | None:
    """The key of the request, as ``api.deps.require`` reads it (header, else cookie)."""
    key = request.headers.get("x-api-key") or request.cookies.get(KEY_COOKIE)
    return authenticate(request, key) if key else None


def viewer(*roles: ApiRole, fragment: bool = False) -> Callable[[Request], Principal]:
    """A dependency: the signed-in key when its role is one of ``roles``. A page sends
    anyone else to the login page (or a 403 page); a fragment answers 401 or 403, and the
    script reloads the page."""

    def check(request: Request) -> Principal:
        who = signed_in(request)
        if who is None:
            if fragment:
                raise Denied(Response("sign in again", 401, media_type="text/plain"))
            here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise Denied(RedirectResponse(f"/ui/login?{urlencode({'next': here})}", 303))
        if who.role not in roles:
            if fragment:
                raise Denied(Response("forbidden", 403, media_type="text/plain"))
            raise Denied(page(request, who, "forbidden.html", {"needs": roles}, 403))
        return who

    return check


PeopleViewer = Annotated[Principal, Depends(viewer(*PEOPLE_ROLES))]
PeopleFragment = Annotated[Principal, Depends(viewer(*PEOPLE_ROLES, fragment=True))]
SightingsViewer = Annotated[Principal, Depends(viewer(*SIGHTINGS_ROLES))]
SightingsFragment = Annotated[Principal, Depends(viewer(*SIGHTINGS_ROLES, fragment=True))]


def _nav(who: Principal | None) -> list[tuple[str, str]]:
    if who is None:
        return []
    links = []
    if who.role in SIGHTINGS_ROLES:
        links += [("/ui/sightings", "Sightings"), ("/ui/unknowns", "Unknowns")]
    if who.role in PEOPLE_ROLES:
        links.append(("/ui/people", "People"))
    if who.role in SIGHTINGS_ROLES:
        links.append(("/ui/cameras", "Cameras"))
    return links


def _home(who: Principal) -> str:
    return "/ui/sightings" if who.role in SIGHTINGS_ROLES else "/ui/people"


def page(
    request: Request,
    who: Principal | None,
    name: str,
    context: Mapping[str, Any],
    status_code: int = 200,
) -> HTMLResponse:
    base = {
        "who": who,
        "can_change": who is not None and who.role in CHANGE_ROLES,
        "nav": _nav(who),
        "version": request.app.version,
        "asset": ASSET_VERSION,
        "path": request.url.path,
    }
    return templates.TemplateResponse(
        request, name, base | dict(context), status_code=status_code, headers=_SECURITY_HEADERS
    )


# ------------------------------------------------------------------ login
@root_router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/ui", 307)


@router.get("")
def home(request: Request) -> RedirectResponse:
    who = signed_in(request)
    return RedirectResponse(_home(who) if who else "/ui/login", 303)


def _safe_next(target: str | None) -> str | None:
    """Only a page of the UI (a path, so never another site) to go to after signing in."""
    if target and target.startswith("/ui"):
        return target
    return None


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> HTMLResponse:
    context = {"next": _safe_next(next) or "", "error": None}
    return page(request, signed_in(request), "login.html", context)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    key: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "",
) -> Response:
    """Check the key as ``X-API-Key`` is checked; keep it in an HttpOnly cookie."""
    if request.headers.get("origin") and not same_origin(request):
        return Response("login must come from this origin", 403, media_type="text/plain")
    who = authenticate(request, key) if key else None
    if who is None:
        log.warning(
            "UI login refused: unknown API key (from %s)",
            request.client.host if request.client else "?",
        )
        context = {"next": _safe_next(next) or "", "error": "Unknown API key."}
        return page(request, None, "login.html", context, 401)
    log.info("UI login: key %r (%s)", who.name, who.role)
    response = RedirectResponse(_safe_next(next) or _home(who), 303)
    response.set_cookie(
        KEY_COOKIE,
        key,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request) -> RedirectResponse:
    response = RedirectResponse("/ui/login", 303)
    response.delete_cookie(
        KEY_COOKIE, path="/", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


# ------------------------------------------------------------------ people
def _people_choices(services: Services) -> list[Person]:
    """People a face can be assigned to (not the reserved ``rejected:*`` ones)."""
    items, _ = services.store.list_people(limit=PEOPLE_CHOICES)
    return sorted(
        (p for p in items if not is_negative(p.id)), key=lambda p: p.display_name.casefold()
    )


@router.get("/people", response_class=HTMLResponse)
def people_page(request: Request, who: PeopleViewer, offset: int = 0) -> HTMLResponse:
    offset = max(0, offset)
    items, total = _services(request).store.list_people(limit=PAGE_SIZE, offset=offset)
    context = {
        "people": items,
        "total": total,
        "offset": offset,
        "prev_offset": max(0, offset - PAGE_SIZE) if offset else None,
        "next_offset": offset + PAGE_SIZE if offset + PAGE_SIZE < total else None,
    }
    return page(request, who, "people.html", context)


def _person_context(services: Services, person_id: str) -> dict[str, Any]:
    person = services.store.get_person(person_id)
    return {"person": person, "templates": services.store.list_templates(person_id)}


@router.get("/people/{person_id}", response_class=HTMLResponse)
def person_page(request: Request, person_id: str, who: PeopleViewer) -> HTMLResponse:
    try:
        context = _person_context(_services(request), person_id)
    except PersonNotFound as exc:
        return page(request, who, "not_found.html", {"message": exc.message}, 404)
    return page(request, who, "person.html", context)


@router.get("/people/{person_id}/templates", response_class=HTMLResponse)
def person_templates(request: Request, person_id: str, who: PeopleFragment) -> Response:
    """The template gallery alone: the script swaps it in after an upload."""
    try:
        context = _person_context(_services(request), person_id)
    except PersonNotFound as exc:
        return Response(exc.message, 404, media_type="text/plain")
    return page(request, who, "_templates.html", context)


# ------------------------------------------------------------------ sightings
@dataclass(frozen=True)
class Filters:
    """The sightings page's filters, as the form sends them (blank fields are unset)."""

    camera_id: str | None = None
    identity: str | None = None
    unknown: bool = False
    start_ms: int | None = None
    end_ms: int | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Filters:
        def text(name: str) -> str | None:
            return (params.get(name) or "").strip() or None

        def ms(name: str) -> int | None:
            value = text(name)
            if value is None:
                return None
            if not value.isdigit():
                raise InvalidQuery(f"{name} must be epoch milliseconds; got {value!r}")
            return int(value)

        return cls(
            camera_id=text("camera_id"),
            identity=text("identity"),
            unknown=text("unknown") in ("1", "true", "on"),
            start_ms=ms("start_ms"),
            end_ms=ms("end_ms"),
        )

    def query(self) -> SightingQuery:
        return SightingQuery(
            camera_id=self.camera_id,
            identity=self.identity,
            unknown=True if self.unknown else None,
            start_ms=self.start_ms,
            end_ms=self.end_ms,
        )

    def params(self) -> dict[str, str]:
        out = {
            "camera_id": self.camera_id,
            "identity": self.identity,
            "unknown": "1" if self.unknown else None,
            "start_ms": None if self.start_ms is None else str(self.start_ms),
            "end_ms": None if self.end_ms is None else str(self.end_ms),
        }
        return {k: v for k, v in out.items() if v is not None}


@dataclass(frozen=True)
class SightingRow:
    s: Sighting
    name: str | None
    """Display name of whom it names (None: unknown, or a person no longer enrolled)."""
    version: str
    """Changes when anything shown changes: the live update replaces the row then."""


class _Names:
    """Display names of person ids, each looked up once per page."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.cache: dict[str, str | None] = {}

    def __call__(self, s: Sighting) -> str | None:
        if s.identity == UNKNOWN:
            return None
        if s.review and s.review.get("display_name"):
            return str(s.review["display_name"])
        if s.display_name:
            return s.display_name
        if s.identity not in self.cache:
            try:
                self.cache[s.identity] = self.services.store.get_person(s.identity).display_name
            except PersonNotFound:
                self.cache[s.identity] = None
        return self.cache[s.identity]


def _row(s: Sighting, names: _Names) -> SightingRow:
    name = names(s)
    digest = hashlib.blake2b(
        json.dumps([s.to_dict(), name], sort_keys=True, default=str).encode(), digest_size=8
    )
    return SightingRow(s, name, digest.hexdigest())


def _rows(services: Services, sightings: Iterable[Sighting]) -> list[SightingRow]:
    names = _Names(services)
    return [_row(s, names) for s in sightings]


def _known_cameras(services: Services) -> set[str]:
    """Camera ids for the filter's suggestions: configured, and reporting status."""
    ids = {c.camera_id for c in services.settings.ingest.cameras}
    return ids | {c.camera_id for c in services.event_store().camera_statuses()}


@router.get("/sightings", response_class=HTMLResponse)
def sightings_page(
    request: Request, who: SightingsViewer, cursor: str | None = None
) -> HTMLResponse:
    services = _services(request)
    raw = dict(request.query_params)
    rows: list[SightingRow] = []
    next_cursor = error = None
    filters = Filters()
    try:
        filters = Filters.parse(raw)
        found, next_cursor = services.event_store().search_sightings(
            filters.query(), limit=PAGE_SIZE, cursor=cursor or None
        )
        rows = _rows(services, found)
    except FaceRecError as exc:
        error = exc.message
    params = filters.params()
    can_change = who.role in CHANGE_ROLES
    context = {
        "rows": rows,
        "form": raw,
        "error": error,
        "cameras": sorted(_known_cameras(services) | {r.s.camera_id for r in rows}),
        # live updates on the first page only: later pages are history
        "poll_url": None if cursor or error else f"/ui/sightings/rows?{urlencode(params)}",
        "poll_ms": POLL_MS,
        "next_url": (
            f"/ui/sightings?{urlencode(params | {'cursor': next_cursor})}" if next_cursor else None
        ),
        "first_url": f"/ui/sightings?{urlencode(params)}" if cursor else None,
        "people": _people_choices(services) if can_change else [],
    }
    return page(request, who, "sightings.html", context, 400 if error else 200)


@router.get("/sightings/rows", response_class=HTMLResponse)
def sighting_rows(request: Request, who: SightingsFragment) -> Response:
    """The first page's rows alone: the page polls it and merges what is new or changed."""
    services = _services(request)
    try:
        query = Filters.parse(request.query_params).query()
        found, _ = services.event_store().search_sightings(query, limit=PAGE_SIZE)
    except FaceRecError as exc:
        return Response(exc.message, 400, media_type="text/plain")
    return page(request, who, "_sighting_rows.html", {"rows": _rows(services, found)})


@router.get("/sightings/{sighting_id}/row", response_class=HTMLResponse)
def sighting_row(request: Request, sighting_id: str, who: SightingsFragment) -> Response:
    """One row, after a review changed it."""
    services = _services(request)
    try:
        sighting = services.review.get(sighting_id)
    except FaceRecError as exc:
        return Response(exc.message, 404, media_type="text/plain")
    return page(request, who, "_sighting_rows.html", {"rows": _rows(services, [sighting])})


# ------------------------------------------------------------------ unknowns
@router.get("/unknowns", response_class=HTMLResponse)
def unknowns_page(request: Request, who: SightingsViewer) -> HTMLResponse:
    """As ``GET /unknowns``: a bounded catch-up with the event store, then the clusters."""
    services = _services(request)
    refreshed = services.unknowns.refresh(wait=False, max_seconds=REFRESH_BUDGET_S)
    context = {
        "clusters": services.unknowns.clusters(limit=PAGE_SIZE),
        "catching_up": refreshed.skipped or not refreshed.complete,
        "people": _people_choices(services) if who.role in CHANGE_ROLES else [],
    }
    return page(request, who, "unknowns.html", context)


# ------------------------------------------------------------------ cameras
@dataclass(frozen=True)
class CameraRow:
    camera_id: str
    region: str
    status: CameraOverview | None
    """The job's newest status window of the camera; None for a configured camera that
    has not reported yet."""
    last: SightingRow | None


@router.get("/cameras", response_class=HTMLResponse)
def cameras_page(request: Request, who: SightingsViewer) -> HTMLResponse:
    services = _services(request)
    names = _Names(services)
    cameras = []
    for c in services.camera_status():
        last = _row(c.last_sighting, names) if c.last_sighting else None
        cameras.append(CameraRow(c.camera_id, c.region, c, last))
    reported = {c.camera_id for c in cameras}
    for cfg in services.settings.ingest.cameras:
        if cfg.camera_id not in reported:
            found, _ = services.event_store().search_sightings(
                SightingQuery(camera_id=cfg.camera_id), limit=1
            )
            last = _row(found[0], names) if found else None
            cameras.append(CameraRow(cfg.camera_id, cfg.region, None, last))
    cameras.sort(key=lambda c: c.camera_id)
    return page(request, who, "cameras.html", {"cameras": cameras})
