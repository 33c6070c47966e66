"""``facerec stack up|down|status|logs``: the production shape on one machine, without
containers (jobs/stack)."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Annotated

import typer

from jobs.cli.common import ConfigOpt, fail, settings
from jobs.stack import NAMES, Stack, StackError, tail_lines

app = typer.Typer(
    help="Run the whole system on this machine: Kafka, PostgreSQL, Cassandra (optional), "
    "Flink, Prometheus, the API, the ingest agent and the job.",
    no_args_is_help=True,
)

StackDirOpt = Annotated[
    Path | None,
    typer.Option("--stack-dir", help="The stack's folder (default: <data_dir>/stack)."),
]
OnlyOpt = Annotated[
    str | None,
    typer.Option("--only", help=f"Comma-separated components among {','.join(NAMES)}."),
]


def _stack(stack_dir: Path | None) -> Stack:
    # the Kafka and Cassandra clients log every connection: the stack's own lines would drown
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("cassandra").setLevel(logging.ERROR)
    return Stack(stack_dir or settings(None).data_dir / "stack")


def _only(only: str | None) -> list[str] | None:
    return [n.strip() for n in only.split(",") if n.strip()] if only else None


@app.command()
def up(
    stack_dir: StackDirOpt = None,
    only: OnlyOpt = None,
    cassandra: Annotated[
        bool | None,
        typer.Option("--cassandra/--no-cassandra",
                     help="Events in Cassandra (a node of the stack) instead of SQLite. Kept "
                     "from the stack's first up unless given."),
    ] = None,
    cameras: Annotated[
        Path | None,
        typer.Option(help="Cameras YAML for the ingest agent (a list, or `cameras:`); "
                     "without any, no ingest agent runs. Kept from an earlier up unless given."),
    ] = None,
    config: ConfigOpt = None,
    free_ports: Annotated[
        bool,
        typer.Option("--free-ports",
                     help="Free loopback ports instead of the defaults (Kafka 9092, Flink "
                     "8081, API 8000, Prometheus 9090, ...); chosen at the stack's first up."),
    ] = False,
    from_savepoint: Annotated[
        str | None,
        typer.Option(help="Submit the job from this savepoint or retained checkpoint."),
    ] = None,
) -> None:
    """Start the stack's components that are not running, in order, each ready before the
    next (a second up on a running stack starts nothing). --config is the base of the
    settings the API, the ingest agent and the job share (<stack>/facerec.yaml)."""
    if cameras is not None and not cameras.is_file():
        raise fail(f"cameras file {cameras} does not exist", 2)
    if config is not None and not config.is_file():
        raise fail(f"configuration file {config} does not exist", 2)
    stack = _stack(stack_dir)
    try:
        stack.up(typer.echo, _only(only), free_ports=free_ports, cassandra=cassandra,
                 cameras=cameras, config=config, from_savepoint=from_savepoint)
    except (StackError, RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
        raise fail(f"stack up: {exc}\n(what started keeps running: `facerec stack status`, "
                   "`facerec stack down`)") from exc
    api_key = stack.plan.api_key
    if stack.is_running("api"):
        typer.echo(f"API {stack.component('api').address()}  admin key: {api_key} "
                   f"(in {stack.dir.settings_file})")


@app.command()
def down(stack_dir: StackDirOpt = None, only: OnlyOpt = None) -> None:
    """Stop what `up` started (by the PIDs it recorded, in reverse order), and nothing
    else. The job is cancelled; its last checkpoint is kept. Data stays in the stack's
    folder."""
    stack = _stack(stack_dir)
    if not stack.exists():
        raise fail(f"no stack in {stack.dir.root}", 1)
    try:
        stack.down(typer.echo, _only(only))
    except StackError as exc:
        raise fail(f"stack down: {exc}") from exc


@app.command()
def status(
    stack_dir: StackDirOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Each component's state (running / unhealthy / stopped), PIDs and address, then the
    job's state on Flink and its lag on the frames topic. Exit code 3 when an enabled
    component or the job is not running."""
    stack = _stack(stack_dir)
    if not stack.exists():
        raise fail(f"no stack in {stack.dir.root} (`facerec stack up` creates one)", 1)
    rows, job = stack.status()
    all_up = all(r.state in ("running", "disabled") for r in rows) and job.state == "RUNNING"
    if as_json:
        typer.echo(json.dumps({"stack": str(stack.dir.root),
                               "components": [r.to_dict() for r in rows],
                               "job": job.to_dict()}, indent=2))
    else:
        typer.echo(f"stack {stack.dir.root}")
        typer.echo(f"{'COMPONENT':<11} {'STATE':<10} {'PID':<14} {'ADDRESS':<36} DETAIL")
        for r in rows:
            pids = ",".join(map(str, r.pids)) or "-"
            typer.echo(f"{r.name:<11} {r.state:<10} {pids:<14} {r.address or '-':<36} "
                       f"{r.detail}".rstrip())
        typer.echo(f"job {job.job_id or '-'}: {job.state}"
                   + (f", {job.tasks}" if job.tasks else "")
                   + (f"; checkpoints: {job.checkpoint}" if job.checkpoint else ""))
        if job.lag is not None:
            typer.echo(job.lag.describe())
        else:
            typer.echo("lag: unknown (Kafka is not running)")
    if not all_up:
        raise typer.Exit(3)


@app.command()
def logs(
    component: Annotated[
        str | None, typer.Argument(help=f"One of {', '.join(NAMES)} (default: all).")
    ] = None,
    stack_dir: StackDirOpt = None,
    lines: Annotated[int, typer.Option("-n", "--lines", help="Lines per log file.")] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C ends).")
    ] = False,
) -> None:
    """The last lines of each component's log (Flink: its JobManager and TaskManager logs;
    job: the submission's output), then with --follow what is appended."""
    stack = _stack(stack_dir)
    if not stack.exists():
        raise fail(f"no stack in {stack.dir.root}", 1)
    try:
        files = stack.log_files(component)
    except StackError as exc:
        raise fail(str(exc), 2) from exc
    for name, paths in files.items():
        for path in paths:
            typer.secho(f"==> {name}: {path} <==", bold=True)
            for line in tail_lines(path, lines):
                typer.echo(line)
    if follow:
        try:
            for name, line in stack.follow(component):
                typer.echo(f"{name:<10} | {line}")
        except KeyboardInterrupt:
            pass
