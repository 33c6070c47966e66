"""Prometheus metrics of the API (one registry per app, so tests can build many apps)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate

from api.errors import body


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "facerec_api_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.seconds = Histogram(
            "facerec_api_request_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30),
        )

    def render(self) -> Response:
        return Response(_generate(self.registry), media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI, metrics: ApiMetrics, max_body_bytes: int) -> None:
    """Time every request and refuse bodies above ``max_body_bytes`` (413) before reading."""

    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            length = request.headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
                status = 413
                return JSONResponse(
                    body(
                        "request_too_large",
                        f"request body is {length} bytes; the limit is {max_body_bytes}",
                    ),
                    413,
                )
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            metrics.requests.labels(route, request.method, str(status)).inc()
            metrics.seconds.labels(route, request.method).observe(time.perf_counter() - start)
