"""``facerec api``: serve the HTTP API with uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="The HTTP API.")


@app.command("api")
def serve(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="YAML configuration.")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Override api.host.")] = None,
    port: Annotated[int | None, typer.Option(help="Override api.port.")] = None,
) -> None:
    """Serve enrollment, recognition and event search over HTTP."""
    import uvicorn

    from api.app import create_app
    from jobs.cli import _settings

    settings = _settings(config)
    uvicorn.run(
        create_app(settings),
        host=host or settings.api.host,
        port=port or settings.api.port,
        log_level="info",
    )
