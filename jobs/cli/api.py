"""``facerec api``: serve the HTTP API with uvicorn, guarded against hostile clients.

uvicorn bounds idle keep-alive connections (``api.keep_alive_s``) and the connections served
at once (``api.max_connections``), but not a request still arriving: a client that sends its
headers a byte at a time, or a body that never ends, holds its connection for ever, and
httptools keeps every header line it is given. ``GuardedHttpProtocol`` adds those bounds:
``api.header_timeout_s`` for the request line and headers, ``api.max_header_bytes`` for
their size (431), ``api.body_timeout_s`` for the whole body (408). The body's size is the
app's (api.metrics.BodyLimit, 413).
"""

from __future__ import annotations

import asyncio
import json
import resource
from typing import Annotated, Any

import typer
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from facerec.config import ApiConfig
from jobs.cli.common import ConfigOpt, flags, settings, tell_enrollment_store, tell_event_store

_STATUS_LINES = {408: b"408 Request Timeout", 431: b"431 Request Header Fields Too Large"}


def _refusal(status: int, reason: str, detail: str) -> bytes:
    """A complete response closing the connection, in the API's error body."""
    payload = json.dumps({"error": reason, "detail": detail, "reasons": [reason]}).encode()
    return b"".join(
        [
            b"HTTP/1.1 " + _STATUS_LINES[status] + b"\r\n",
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(payload)).encode() + b"\r\n",
            b"connection: close\r\n\r\n",
            payload,
        ]
    )


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines on a request's head and body and a cap on
    the head's size. The limits are class attributes: ``guarded_protocol`` sets them."""

    header_timeout_s = 10.0
    body_timeout_s = 120.0
    max_header_bytes = 65_536

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._head_too_large = False
        self._arm(self.header_timeout_s, self._head_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        if self._deadline is None:  # a keep-alive connection's next request
            self._arm(self.header_timeout_s, self._head_too_slow)

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        self._arm(self.body_timeout_s, self._body_too_slow)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            super().send_400_response(msg)
            return
        self.transport.write(
            _refusal(
                431,
                "headers_too_large",
                f"request line and headers passed {self.max_header_bytes} bytes",
            )
        )
        self.transport.close()

    def _count_head(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > self.max_header_bytes:
            self._head_too_large = True
            # stops the parser; uvicorn then answers through send_400_response and closes
            raise ValueError("request head too large")

    def _arm(self, seconds: float, handler: Any) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, handler)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _head_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            detail = f"request line and headers not received within {self.header_timeout_s} s"
            self.transport.write(_refusal(408, "request_timeout", detail))
            self.transport.close()

    def _body_too_slow(self) -> None:
        self._deadline = None
        cycle = self.cycle
        if self.transport.is_closing():
            return
        if cycle is not None and not cycle.response_started:
            detail = f"request body not received within {self.body_timeout_s} s"
            self.transport.write(_refusal(408, "request_timeout", detail))
            cycle.disconnected = True  # the app reads a disconnect and its answer is dropped
            cycle.message_event.set()
        self.transport.close()


def guarded_protocol(api: ApiConfig) -> type[GuardedHttpProtocol]:
    """``GuardedHttpProtocol`` with the limits of ``api``."""
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {
            "header_timeout_s": api.header_timeout_s,
            "body_timeout_s": api.body_timeout_s,
            "max_header_bytes": api.max_header_bytes,
        },
    )


def _open_files_for(connections: int) -> None:
    """Raise the soft open-files limit (often 1024) towards the hard one so every connection
    allowed gets a descriptor: past it accept() fails and *every* new client waits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 512  # the stores, the model files, the logs
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def run_guarded(app: Any, api: ApiConfig, log_level: str = "info") -> None:
    """Serve ``app`` on ``api.host``:``api.port`` with every bound of ``api`` (the guarded
    protocol, keep-alive, connections at once), until interrupted."""
    import uvicorn

    _open_files_for(api.max_connections)
    uvicorn.run(
        app,
        host=api.host,
        port=api.port,
        log_level=log_level,
        http=guarded_protocol(api),
        timeout_keep_alive=api.keep_alive_s,
        limit_concurrency=api.max_connections,
    )


def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Override api.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override api.port.")] = None,
) -> None:
    """Serve enrollment, recognition and event search over HTTP."""
    from api.app import create_app

    s = settings(config, flags(**{"api.host": host, "api.port": port}))
    tell_enrollment_store(s)
    tell_event_store(s)
    run_guarded(create_app(s), s.api)
