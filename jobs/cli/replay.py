"""``facerec replay frames|events``: audit replays of the Kafka topics (see jobs/replay.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Literal

import typer

from facerec.config import Settings
from jobs.cli.common import ConfigOpt, flags, settings

app = typer.Typer(help="Audit replays: re-run recognition over a past range of frames, or "
                       "rebuild the event store from the events topic.", no_args_is_help=True)
FromOpt = Annotated[str | None, typer.Option(
    "--from", help="Range start: epoch ms, 'now' or ISO 8601 (no zone = UTC). Default: the "
    "beginning of the topic.")]
ToOpt = Annotated[str | None, typer.Option(
    "--to", help="Range end (exclusive), same formats. Default: the topic's end now; the "
    "replay never waits for newer records.")]
BootstrapOpt = Annotated[str | None, typer.Option(help="Override kafka.bootstrap_servers.")]


def _fail(message: str) -> typer.Exit:
    typer.secho(f"replay: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(2)


def _settings(config: Path | None, bootstrap: str | None) -> Settings:
    logging.getLogger("kafka").setLevel(logging.WARNING)  # connection chatter at INFO
    return settings(config, flags(**{"kafka.bootstrap_servers": bootstrap}))


@app.command("frames")
def frames(
    topic: Annotated[str | None, typer.Option(help="Frames topic (default kafka.frames_topic).")]
    = None,
    start: FromOpt = None,
    end: ToOpt = None,
    offsets: Annotated[list[str] | None, typer.Option(
        help="Explicit range PARTITION:START-END (end exclusive), repeatable; replaces "
        "--from/--to.")] = None,
    camera: Annotated[list[str] | None, typer.Option(help="Only this camera (repeatable).")]
    = None,
    region: Annotated[list[str] | None, typer.Option(help="Only this region (repeatable).")]
    = None,
    snapshot: Annotated[str | None, typer.Option(
        help="Snapshot id, snapshot directory or 'latest'. Default: the snapshot recorded in "
        "the original events of the range.")] = None,
    threshold: Annotated[float | None, typer.Option(
        help="Match threshold. Default: the one recorded in the original events.")] = None,
    originals: Annotated[str, typer.Option(
        help="Where the original events come from: store or topic.")] = "store",
    events_topic: Annotated[str | None, typer.Option(
        help="With --originals topic: the events topic (default kafka.events_topic).")] = None,
    out: Annotated[Path | None, typer.Option(
        help="Report directory (default <data_dir>/reports/replay-<time>).")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    bootstrap: BootstrapOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Re-run gate/detect/embed/match over a range of the frames topic and compare each
    face decision with the original one. Writes decisions.jsonl and summary.json."""
    from facerec.records import now_ms
    from jobs.kafka_range import RangeError, parse_offsets, parse_time
    from jobs.replay import ReplayRequest, run_replay
    from jobs.replay_report import format_summary

    s = _settings(config, bootstrap)
    if originals not in ("store", "topic"):
        raise _fail(f"--originals {originals!r}: expected 'store' or 'topic'")
    source: Literal["store", "topic"] = "store" if originals == "store" else "topic"
    try:
        req = ReplayRequest(
            topic=topic or s.kafka.frames_topic,
            start_ms=parse_time(start) if start else None,
            end_ms=parse_time(end) if end else None,
            offsets=parse_offsets(offsets) if offsets else None,
            cameras=frozenset(camera or ()), regions=frozenset(region or ()),
            snapshot=snapshot, threshold=threshold,
            originals=source,
            events_topic=events_topic,
            out_dir=out or s.reports_path() / f"replay-{now_ms()}",
            progress=progress,
        )
        report = run_replay(s, req)
    except RangeError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(format_summary(report.summary))
    for name, path in report.paths.items():
        typer.echo(f"{name}: {path}")


@app.command("events")
def events(
    topic: Annotated[str | None, typer.Option(help="Events topic (default kafka.events_topic).")]
    = None,
    start: FromOpt = None,
    end: ToOpt = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    bootstrap: BootstrapOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Replay the events topic into the event store (rebuild a store from Kafka). Idempotent:
    events are upserted by event id."""
    from jobs.kafka_range import RangeError, parse_time
    from jobs.replay import replay_events_to_store

    s = _settings(config, bootstrap)
    try:
        result = replay_events_to_store(
            s, topic or s.kafka.events_topic,
            start_ms=parse_time(start) if start else None,
            end_ms=parse_time(end) if end else None, progress=progress,
        )
    except RangeError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(json.dumps(result, indent=2))
