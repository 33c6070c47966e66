"""``facerec api``: serve the HTTP API with uvicorn."""

from __future__ import annotations

from typing import Annotated

import typer

from jobs.cli.common import ConfigOpt, flags, settings, tell_enrollment_store, tell_event_store


def serve(
    config: ConfigOpt = None,
    host: Annotated[str | None, typer.Option(help="Override api.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override api.port.")] = None,
) -> None:
    """Serve enrollment, recognition and event search over HTTP."""
    import uvicorn

    from api.app import create_app

    s = settings(config, flags(**{"api.host": host, "api.port": port}))
    tell_enrollment_store(s)
    tell_event_store(s)
    uvicorn.run(create_app(s), host=s.api.host, port=s.api.port, log_level="info")
