"""Prometheus metrics of the API (one registry per app, so tests can build many apps), and
the request-body limit (``BodyLimit``) the same middleware stack applies."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as _generate
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class BodyLimit:
    """Refuses a request body above ``max_bytes`` with 413: at once when its Content-Length
    says so, else (a chunked body, which declares no length) as soon as the bytes received
    pass the limit, so a body that never ends is cut off there. The refusal closes the
    connection, so the server does not go on reading what the client still sends."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_bytes):
            await self._refuse(send, f"request body is {length} bytes")
            return
        received = 0
        over = False
        started = False

        async def counting_receive() -> Message:
            nonlocal received, over
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    over = True  # the app sees a client gone; its answer is replaced by ours
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if over and not started:
                return
            started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await self._refuse(send, f"request body passed {self.max_bytes} bytes")

    async def _refuse(self, send: Send, what: str) -> None:
        response = JSONResponse(
            body("request_too_large", f"{what}; the limit is {self.max_bytes}"),
            413,
            headers={"Connection": "close"},
        )
        await response({"type": "http"}, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


def install(app: FastAPI, metrics: ApiMetrics, max_body_bytes: int) -> None:
    """Time every request and refuse bodies above ``max_body_bytes`` (413) before reading
    them (``BodyLimit``)."""
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)  # inside the timing: 413s counted

    @app.middleware("http")
    async def _observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        start = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = getattr(request.scope.get("route"), "path", "unmatched")
            metrics.requests.labels(route, request.method, str(status)).inc()
            metrics.seconds.labels(route, request.method).observe(time.perf_counter() - start)
