"""FastAPI dependencies: services and API-key authentication with roles."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from api.errors import ApiError
from api.services import Services
from facerec.config import ApiRole, Settings

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="An API key.")


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


def require(*roles: ApiRole) -> Callable[..., Principal]:
    """A dependency accepting a key whose role is one of ``roles`` (401 none, 403 other)."""

    def check(
        services: ServicesDep, key: Annotated[str | None, Security(_api_key)] = None
    ) -> Principal:
        if not key:
            raise ApiError(
                401,
                "unauthorized",
                "missing X-API-Key header",
                headers={"WWW-Authenticate": "APIKey"},
            )
        found = None
        for k in services.settings.api.keys:
            if hmac.compare_digest(k.key.get_secret_value().encode(), key.encode()):
                found = k
        if found is None:
            raise ApiError(
                401, "unauthorized", "unknown API key", headers={"WWW-Authenticate": "APIKey"}
            )
        if found.role not in roles:
            raise ApiError(
                403,
                "forbidden",
                f"key {found.name!r} has role {found.role!r}; this needs {list(roles)}",
            )
        return Principal(found.name, found.role)

    return check


AnyRole = Annotated[Principal, Depends(require("admin", "enroll", "query"))]
EnrollRole = Annotated[Principal, Depends(require("admin", "enroll"))]
QueryRole = Annotated[Principal, Depends(require("admin", "query"))]
AdminRole = Annotated[Principal, Depends(require("admin"))]
