"""Every error the API returns, mapped in one place: domain errors (``facerec.errors`` and the
stores' typed errors) -> HTTP status, always as JSON ``{"error", "detail", "reasons"}``; and
what the OpenAPI document says about them (``document_errors``)."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

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


class ErrorBody(BaseModel):
    """The body of every 4xx and 5xx answer (``body``); some errors add fields, e.g. the
    stored ``template`` of a 409 ``duplicate_photo``."""

    model_config = ConfigDict(extra="allow", title="Error")
    error: str = Field(description="A stable reason code, e.g. person_not_found.")
    detail: str = Field(description="What went wrong, for a person to read.")
    reasons: list[str] = Field(
        description="Every reason code: the error's, or the checks that failed "
        "(e.g. low_quality: too_small, too_blurry; a field that failed validation)."
    )


ERROR_STATUSES: dict[int, str] = {
    400: "A request the API cannot read or run: a body that does not parse, a cursor it "
    "did not hand out (invalid_cursor), an empty time range (invalid_query).",
    401: "No API key, or an unknown one (unauthorized).",
    403: "The key's role may not call this route (forbidden), or a change authenticated by "
    "the UI's cookie came from another origin (cross_origin).",
    404: "Nothing with the id in the path (person_not_found, template_not_found, ...).",
    408: "The request's headers (api.header_timeout_s) or its body (api.body_timeout_s) did "
    "not arrive in time (request_timeout); `facerec api` answers it and closes the connection.",
    409: "Conflicts with what is stored (the reason code says which).",
    413: "Too large: the body (request_too_large, api.max_upload_bytes) or an image "
    "(image_too_large, images.max_bytes).",
    422: "Does not match the schema (invalid_request, every field in reasons; "
    "too_many_files), or an image is refused (invalid_image, no_face, several_faces, "
    "low_quality, ...).",
    429: "The key's rate limit for this kind of route (rate_limited); see Retry-After.",
    431: "The request's headers are larger than api.max_header_bytes (headers_too_large); "
    "`facerec api` answers it and closes the connection.",
    500: "An unexpected error (internal_error); the server log has the trace.",
    503: "Not ready.",
}
"""What each error status means, as the OpenAPI document says it."""


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses`` for the error statuses it answers beyond those its
    parameters and key imply (``operation_errors``), e.g. ``answers(409)``."""
    return {status: {} for status in statuses}


_NOTES = {"title", "description", "default"}


def _free_text(schema: dict[str, Any]) -> bool:
    """Any string passes ``schema`` (or null): a string without format or bounds."""
    options = schema.get("anyOf", [schema])
    plain = all(
        o.get("type") in ("string", "null") and set(o) - _NOTES == {"type"} for o in options
    )
    return plain and not set(schema) - _NOTES - {"anyOf", "type"}


def operation_errors(operation: dict[str, Any]) -> set[int]:
    """The error statuses an operation can answer, from what it takes (an API key: 401,
    403 and 429; a body: 400, 413 and 422; a parameter that can fail validation: 422; a
    path id: 404) and those its route declares in ``responses`` (``answers``). Any request
    can be too slow or its headers too large for the server (408, 431: jobs/cli/api.py)."""
    found = {408, 431, 500}
    found |= {int(c) for c in operation["responses"] if c.isdigit() and int(c) >= 400}
    if operation.get("security"):
        found |= {401, 403, 429}
    if "requestBody" in operation:
        found |= {400, 413, 422}
    for param in operation.get("parameters", []):
        path = param["in"] == "path"
        found |= {404} if path else set()
        if not _free_text(param.get("schema", {})) or (param.get("required") and not path):
            found.add(422)
    return found


def document_errors(doc: dict[str, Any]) -> None:
    """Tell the truth about errors in FastAPI's OpenAPI document ``doc``: every 4xx and 5xx
    is ``Error``, and each operation lists the statuses it can answer
    (``operation_errors``), in place of FastAPI's ``HTTPValidationError`` on every 422."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Error"] = ErrorBody.model_json_schema()
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for operations in doc["paths"].values():
        for operation in operations.values():
            responses = operation["responses"]
            if responses.get("422", {}).get("description") == "Validation Error":
                del responses["422"]  # FastAPI's, on every operation with a parameter
            for status in sorted(operation_errors(operation)):
                declared = responses.setdefault(str(status), {})
                if declared.get("description") in (None, HTTPStatus(status).phrase):
                    declared["description"] = ERROR_STATUSES[status]
                declared["content"] = error


def _allowed_methods(request: Request) -> str:
    """Every method some route of the request's path takes (Starlette's 405 names only
    the first route that matched the path)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            methods |= getattr(route, "methods", None) or set()
    return ", ".join(sorted(methods))


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
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        reasons = {400: "bad_request", 404: "not_found", 405: "method_not_allowed"}
        reason = reasons.get(exc.status_code, "http_error")
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return JSONResponse(body(reason, str(exc.detail)), exc.status_code, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(body("internal_error", f"{type(exc).__name__}: see server log"), 500)
