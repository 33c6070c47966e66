"""What every command shares: the ``--config`` option, loading the settings with the
command's flags on top, and telling the user which stores a command reads."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from facerec.config import Settings, load_settings

ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration file (else $FACEREC_CONFIG)."),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def flags(**dotted: Any) -> dict[str, Any]:
    """Command-line flags as nested overrides: ``flags(**{"job.parallelism": 2})`` ->
    ``{"job": {"parallelism": 2}}``. Flags left unset (None) override nothing."""
    out: dict[str, Any] = {}
    for key, value in dotted.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def settings(config: Path | None, overrides: Mapping[str, Any] | None = None) -> Settings:
    """The one way a command gets its settings: defaults < file < environment < flags. A
    bad configuration is the user's to fix: say what is wrong, not a traceback (exit 2)."""
    try:
        return load_settings(config, overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise fail(f"configuration error: {problems}", 2) from exc
    except (OSError, ValueError) as exc:
        raise fail(f"configuration error: {exc}", 2) from exc


def tell_enrollment_store(settings: Settings) -> None:
    """Commands that read the enrollment store say which one: an unexpected empty list is
    then visibly the wrong store, not a silent surprise."""
    typer.secho(f"enrollment store: {_hide_password(settings.enrollment_url())}", err=True)


def tell_event_store(settings: Settings) -> None:
    cfg = settings.events
    where = (
        str(settings.events_sqlite_path())
        if cfg.backend == "sqlite"
        else f"cassandra {','.join(cfg.cassandra_hosts)}:{cfg.cassandra_port}/"
        f"{cfg.cassandra_keyspace}"
    )
    typer.secho(f"event store: {where}", err=True)


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
