"""Liveness, readiness and Prometheus metrics (no API key: for probes and scrapers)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(services: ServicesDep) -> JSONResponse:
    checks = {"model_loaded": services.engine_loaded, "store_reachable": services.store.ping()}
    ready = all(checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    return request.app.state.metrics.render()
