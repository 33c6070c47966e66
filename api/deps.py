"""FastAPI dependencies: services, and API-key authentication with roles and rate limits.

A key is one of ``api.keys`` (plain ``key`` in development, ``key_hash`` anywhere) or a key
stored by ``facerec keys create`` (``index_builder.keys``); every comparison takes constant
time. Every authenticated request then pays its key's rate limit for its route class
(``api.ratelimit``), so routes need nothing but their role dependency."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Depends, Request, Response, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import APIKeyCookie, APIKeyHeader

from api.errors import ApiError
from api.ratelimit import RateLimiter, route_class
from api.services import Services
from facerec.config import ApiKeyConfig, ApiRole, Settings, api_key_hash
from index_builder.keys import KeyStore

KEY_COOKIE = "facerec_key"
"""The cookie the review UI keeps the API key in after login (HttpOnly, SameSite=Strict)."""
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")
_api_cookie = APIKeyCookie(
    name=KEY_COOKIE, auto_error=False, description="An API key, as the review UI keeps it."
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_services(request: Request) -> Services:
    return request.app.state.services


def get_settings(request: Request) -> Settings:
    return request.app.state.services.settings


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


@dataclass(frozen=True)
class Principal:
    name: str
    role: ApiRole


def find_key(settings: Settings, key: str) -> ApiKeyConfig | None:
    """The configured key ``key`` is (every key compared, in constant time each)."""
    found = None
    for k in settings.api.keys:
        if k.matches(key):
            found = k
    return found


class Authenticator:
    """Who a key is, among the configured and the stored keys, and its rate limits."""

    def __init__(self, services: Services) -> None:
        self.settings = services.settings
        self.stored = KeyStore(services.store)
        self.limiter = RateLimiter(services.settings.api.rate_limits)

    def identify(self, key: str) -> Principal | None:
        configured = find_key(self.settings, key)
        if configured is not None:
            return Principal(configured.name, configured.role)
        stored = self.stored.lookup(key)
        return Principal(stored.name, stored.role) if stored is not None else None


def authenticate(request: Request, key: str) -> Principal | None:
    """Who ``key`` is (a configured or a stored key), else None; as the routes check it."""
    auth: Authenticator = request.app.state.auth
    return auth.identify(key)


def same_origin(request: Request) -> bool:
    """The request says it comes from a page of this server (``Origin``, else ``Referer``).
    Browsers send ``Origin`` with every request that is not GET or HEAD."""
    source = request.headers.get("origin") or request.headers.get("referer")
    return bool(source) and urlsplit(source).netloc == request.headers.get("host")


def identify_caller(
    request: Request, key: str | None, cookie: str | None, **headers: str
) -> tuple[str, Principal]:
    """The key a request carries (the ``X-API-Key`` header, else the review UI's cookie) and
    who it is: 401 without a known key, 403 for a cookie sent from another origin.
    ``headers`` are added to the refusals."""
    if not key and cookie:
        # a browser attaches the cookie to whatever a page asks: SameSite=Strict keeps
        # other sites out, this keeps out other origins of the same site (another port)
        if request.method not in _SAFE_METHODS and not same_origin(request):
            raise ApiError(
                403,
                "cross_origin",
                "a cookie-authenticated change must come from this origin",
                headers=headers or None,
            )
        key = cookie
    refused = {"WWW-Authenticate": "APIKey", **headers}
    if not key:
        raise ApiError(401, "unauthorized", "missing X-API-Key header", headers=refused)
    auth: Authenticator = request.app.state.auth
    found = auth.identify(key)
    if found is None:
        raise ApiError(401, "unauthorized", "unknown API key", headers=refused)
    return key, found


class KeyBeforeBodyRoute(APIRoute):
    """For routes that take uploads. FastAPI reads a request's body (spooling a multipart
    upload to disk) before it runs the route's dependencies, so the role dependency alone
    would refuse a caller without a key only after reading what they uploaded. This checks
    the key first and refuses with the connection closed, the body unread; the route's
    dependency then checks the role and pays the rate limit as on any route."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def key_first(request: Request) -> Response:
            # the role dependency takes it from here rather than looking the key up again
            request.state.caller = await run_in_threadpool(
                identify_caller,
                request,
                request.headers.get("x-api-key"),
                request.cookies.get(KEY_COOKIE),
                Connection="close",
            )
            return await handler(request)

        return key_first


def require(*roles: ApiRole) -> Callable[..., Principal]:
    """A dependency accepting a key whose role is one of ``roles`` (401 none, 403 other).
    The key comes from the ``X-API-Key`` header, else from the review UI's cookie."""

    def check(
        request: Request,
        key: Annotated[str | None, Security(_api_key)] = None,
        cookie: Annotated[str | None, Security(_api_cookie)] = None,
    ) -> Principal:
        caller = getattr(request.state, "caller", None)  # KeyBeforeBodyRoute's
        key, found = caller if caller is not None else identify_caller(request, key, cookie)
        auth: Authenticator = request.app.state.auth
        if found.role not in roles:
            raise ApiError(
                403,
                "forbidden",
                f"key {found.name!r} has role {found.role!r}; this needs {list(roles)}",
            )
        route = getattr(request.scope.get("route"), "path", request.url.path)
        # buckets by the key's hash: keys of the same name (a rotation) count apart
        auth.limiter.check(
            api_key_hash(key), found.name, found.role, route_class(request.method, route)
        )
        return found

    return check


AnyRole = Annotated[Principal, Depends(require("admin", "enroll", "query"))]
EnrollRole = Annotated[Principal, Depends(require("admin", "enroll"))]
QueryRole = Annotated[Principal, Depends(require("admin", "query"))]
ReviewRole = AnyRole
"""Reading sightings, unknown faces and cameras: every role, the enroll keys included,
because they review (assign and reject need what they correct in view)."""
AdminRole = Annotated[Principal, Depends(require("admin"))]
