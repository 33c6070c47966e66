"""Every error the API returns, mapped in one place: domain errors (``facerec.errors`` and the
stores' typed errors) -> HTTP status, always as JSON ``{"error", "detail", "reasons"}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from facerec.errors import (
    BadRecord,
    FaceRecError,
    ImageTooLarge,
    InvalidImage,
    LowQualityFace,
    MoreThanOneFace,
    NoFaceFound,
    SnapshotMismatch,
)
from facerec.eventstore import InvalidCursor, InvalidQuery
from facerec.evidence import EvidenceNotFound, InvalidEvidenceKey
from index_builder.enrollment import RepeatedPhoto
from index_builder.review import ReservedPersonId, SightingNotFound, SightingNotMatched
from index_builder.store import (
    DuplicatePerson,
    DuplicateTemplate,
    PersonNotFound,
    TemplateNotFound,
)
from index_builder.unknowns import UnknownClusterNotFound

log = logging.getLogger(__name__)

# first match wins: subclasses before their bases
_STATUS: tuple[tuple[type[FaceRecError], int], ...] = (
    (ImageTooLarge, 413),
    (InvalidImage, 422),
    (NoFaceFound, 422),
    (MoreThanOneFace, 422),
    (LowQualityFace, 422),
    (PersonNotFound, 404),
    (TemplateNotFound, 404),
    (EvidenceNotFound, 404),
    (SightingNotFound, 404),
    (UnknownClusterNotFound, 404),
    (SightingNotMatched, 409),
    (ReservedPersonId, 422),
    (InvalidEvidenceKey, 400),
    (DuplicatePerson, 409),
    (DuplicateTemplate, 409),
    (RepeatedPhoto, 422),
    (InvalidCursor, 400),
    (InvalidQuery, 400),
    (BadRecord, 400),
    (SnapshotMismatch, 409),
)


class ApiError(Exception):
    """An HTTP error raised by a route with a stable ``reason`` code."""

    def __init__(
        self,
        status: int,
        reason: str,
        detail: str,
        reasons: list[str] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail
        self.reasons = reasons or []
        self.headers = headers
        self.extra = extra or {}
        """More fields of the error body (e.g. the existing template of a duplicate)."""


def status_for(exc: FaceRecError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def reasons_of(exc: Exception) -> list[str]:
    return list(getattr(exc, "reasons", None) or [getattr(exc, "reason", "error")])


def from_domain(exc: FaceRecError, prefix: str = "") -> ApiError:
    """The ApiError of a domain error, its message prefixed (e.g. which image failed)."""
    return ApiError(status_for(exc), exc.reason, prefix + exc.message, reasons_of(exc))


def body(reason: str, detail: str, reasons: list[str] | None = None) -> dict[str, Any]:
    return {"error": reason, "detail": detail, "reasons": reasons or [reason]}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            body(exc.reason, exc.detail, exc.reasons) | exc.extra, exc.status, exc.headers
        )

    @app.exception_handler(FaceRecError)
    async def _domain(_: Request, exc: FaceRecError) -> JSONResponse:
        return JSONResponse(body(exc.reason, exc.message, reasons_of(exc)), status_for(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return JSONResponse(
            body("invalid_request", "; ".join(problems) or "invalid request", problems), 422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        reason = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(body(reason, str(exc.detail)), exc.status_code, exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(body("internal_error", f"{type(exc).__name__}: see server log"), 500)
