"""``facerec evidence purge|info``: the face evidence store (crops and frames)."""

from __future__ import annotations

from typing import Annotated

import typer

from jobs.cli.common import ConfigOpt, flags, settings

app = typer.Typer(help="Face evidence (JPEG crops and frames).", no_args_is_help=True)


@app.command()
def purge(
    days: Annotated[
        int | None,
        typer.Option(min=0, help="Override evidence.retention_days (0 keeps everything)."),
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Retention: remove the sighting evidence of every day older than the retention period
    (template crops live as long as their template). Run it daily (cron, a systemd timer)."""
    from facerec.evidence import open_evidence_store

    s = settings(config, flags(**{"evidence.retention_days": days}))
    store = open_evidence_store(s)
    try:
        removed = store.purge_older_than(s.evidence.retention_days)
        typer.echo(
            f"removed {removed} evidence object(s) older than {s.evidence.retention_days} "
            f"day(s) from {store.describe()}"
        )
    finally:
        store.close()


@app.command()
def info(config: ConfigOpt = None) -> None:
    """Where the evidence lives, and the days of sighting evidence it holds."""
    from facerec.evidence import open_evidence_store

    s = settings(config)
    store = open_evidence_store(s)
    try:
        days = store.sighting_days()
        typer.echo(f"evidence: {store.describe()}")
        typer.echo(f"retention: {s.evidence.retention_days} day(s)")
        span = f"{days[0]} .. {days[-1]}" if days else "none"
        typer.echo(f"sighting days: {len(days)} ({span})")
    finally:
        store.close()
