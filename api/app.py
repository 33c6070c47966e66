"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from api import audit, deps, errors, metrics, ui
from api.routes import audit as audit_routes
from api.routes import (
    cameras,
    events,
    faces,
    health,
    index,
    people,
    recognize,
    sightings,
    unknowns,
    verify,
)
from api.schemas import UPLOAD_FIELD
from api.services import Services
from facerec.config import Settings
from facerec.eventstore import EventStore
from index_builder.publish import IndexPublisher
from index_builder.store import EnrollmentStore
from udfs.engine import FaceEngine

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    engine: FaceEngine | None = None,
    store: EnrollmentStore | None = None,
    event_store: EventStore | None = None,
    publisher: IndexPublisher | None = None,
    load_model: bool = True,
) -> FastAPI:
    """Build the app. Components not given are created from ``settings``; the face engine
    (TensorFlow) loads at startup unless ``load_model`` is False (then on first use)."""
    services = Services(settings, engine, store, event_store, publisher)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if load_model and not services.engine_loaded:
            log.info("loading the face engine")
            services.engine()
        services.matcher.sync()
        services.unknowns.start(settings.unknowns.refresh_interval_s)
        services.retention.start(settings.retention.sweep_interval_s)
        yield
        services.close()

    app = FastAPI(
        title="facerec API",
        version="0.1.0",
        description="Enroll people, recognise faces, search recognition events.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.auth = deps.Authenticator(services)  # keys (configured, stored), rate limits
    app.state.metrics = metrics.ApiMetrics()
    errors.install(app)
    metrics.install(app, app.state.metrics, settings.api.max_upload_bytes)
    for router in (
        people.router,
        faces.router,
        recognize.router,
        verify.router,
        events.router,
        sightings.router,
        unknowns.router,
        cameras.router,
        index.router,
        health.router,
        audit_routes.router,
    ):
        app.include_router(router)
    ui.install(app)  # the review UI: /ui, its static files, / redirecting to it
    audit.install(app)  # every call on biometric data or results is recorded

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:  # built once, on the first request for it
            app.openapi_schema = openapi_document(app, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def openapi_document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """FastAPI's document with the errors as they are (``errors.document_errors``) and as
    many images in an upload field as ``api.max_files`` allows."""
    doc = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    errors.document_errors(doc)
    most = settings.api.max_files
    for schema in doc["components"]["schemas"].values():
        upload = schema.get("properties", {}).get(UPLOAD_FIELD, {})
        if upload.get("type") == "array":
            upload["maxItems"] = min(upload.get("maxItems", most), most)
    return doc
