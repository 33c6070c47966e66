"""Liveness, readiness and Prometheus metrics (no API key: for probes and scrapers)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from api.deps import ServicesDep
from api.errors import answers, body
from api.schemas import Readiness

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses=answers(503))
def readyz(services: ServicesDep) -> Readiness | JSONResponse:
    """200 when the face engine is loaded and the enrollment store answers; else 503, an
    error whose ``reasons`` name the checks that failed, beside the checks themselves."""
    checks = {"model_loaded": services.engine_loaded, "store_reachable": services.store.ping()}
    failed = [name for name, ok in checks.items() if not ok]
    if not failed:
        return Readiness(ready=True, **checks)
    error = body("not_ready", f"not ready: {', '.join(failed)}", failed)
    return JSONResponse(error | {"ready": False, **checks}, status_code=503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text exposition format."}},
)
def metrics(request: Request) -> Response:
    return request.app.state.metrics.render()
