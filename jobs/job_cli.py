"""``facerec job run|submit``: the recognition job, embedded or on a cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from facerec.config import load_settings

app = typer.Typer(help="Run or submit the recognition job.", no_args_is_help=True)
ROOT = Path(__file__).resolve().parents[1]
SHIPPED_PACKAGES = ("facerec", "udfs", "jobs", "index_builder")


def _settings(
    config: Path | None,
    parallelism: int | None,
    realtime: bool | None,
    from_savepoint: str | None = None,
):
    settings = load_settings(config)
    job = settings.job
    updates: dict = {}
    if from_savepoint:
        updates["savepoint_path"] = from_savepoint
    if parallelism:
        updates["parallelism"] = parallelism
    if realtime is not None:
        updates["video"] = job.video.model_copy(update={"realtime": realtime})
    if updates:
        settings = settings.model_copy(update={"job": job.model_copy(update=updates)})
    return settings


@app.command()
def run(
    source: Annotated[
        str, typer.Option(help="video:PATH[,PATH...] (files, folders, RTSP) or kafka")
    ],
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    parallelism: Annotated[int | None, typer.Option(help="Override job.parallelism.")] = None,
    realtime: Annotated[
        bool | None, typer.Option(help="Pace video files at their frame rate.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Only print the summary.")] = False,
    from_savepoint: Annotated[
        str | None,
        typer.Option(help="Resume from this savepoint or retained checkpoint (path or URI)."),
    ] = None,
) -> None:
    """Run the job on a local Flink MiniCluster, printing events as they come and a summary."""
    run_job(_settings(config, parallelism, realtime, from_savepoint), source, quiet)


def run_job(settings, source: str, quiet: bool = False) -> None:
    from jobs.recognition import build_job, tagged_outputs
    from jobs.sources import SourceError

    # the client sees results once a checkpoint covers them: checkpoint every second so
    # events print as they come
    job = settings.job
    if job.checkpoint_interval_ms > 1000:
        job = job.model_copy(update={"checkpoint_interval_ms": 1000})
        settings = settings.model_copy(update={"job": job})

    try:
        _, streams = build_job(settings, source)
    except (SourceError, ValueError, RuntimeError) as exc:
        typer.secho(f"cannot start the job: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    tagged = tagged_outputs(streams)
    identities: Counter[str] = Counter()
    cameras: dict[str, Counter[str]] = {}
    dead = 0
    latencies: list[int] = []
    with tagged.execute_and_collect("facerec-recognition") as results:
        for item in results:
            kind, body = item[0], json.loads(item[1:])
            if kind == "E":
                identities[body["identity"]] += 1
                latencies.append(body["stages"]["match"] - body["capture_ts"])
                if not quiet:
                    typer.echo(
                        f"{body['camera_id']} {body['frame_id']} face {body['face_index']}: "
                        f"{body['identity']} d={body['distance']:.3f} "
                        f"snapshot={body['snapshot_id']}"
                    )
            elif kind == "D":
                dead += 1
                typer.secho(
                    f"dead letter: {body['reason']}: {body['message']}", fg=typer.colors.YELLOW
                )
            else:
                c = cameras.setdefault(body["camera_id"], Counter())
                c["frames"] += 1
                c["analysed" if body["passed"] else "gated_out"] += 1
                c["faces"] += body.get("faces", 0)
    typer.echo("\nsummary")
    for cam, c in sorted(cameras.items()):
        frac = c["gated_out"] / max(c["frames"], 1)
        typer.echo(
            f"  camera {cam}: {c['frames']} frames, {c['gated_out']} gated out ({frac:.0%}), "
            f"{c['analysed']} analysed, {c['faces']} faces"
        )
    typer.echo(f"  events: {sum(identities.values())}  dead letters: {dead}")
    for identity, n in identities.most_common():
        typer.echo(f"    {identity}: {n}")
    if latencies:
        latencies.sort()
        p = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]  # noqa: E731
        typer.echo(f"  frame-to-event latency ms: p50 {p(0.5)}  p95 {p(0.95)}  max {latencies[-1]}")


def flink_bin() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent / "bin" / "flink"


@app.command()
def submit(
    source: Annotated[
        str, typer.Option(help="kafka, or video:PATH readable by the TaskManagers")
    ] = "kafka",
    jobmanager: Annotated[
        str, typer.Option(help="JobManager REST address host:port.")
    ] = "localhost:8081",
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    python: Annotated[
        str | None, typer.Option(help="Python on the TaskManagers (default: this one).")
    ] = None,
    detached: Annotated[bool, typer.Option("--detached/--attached")] = True,
    from_savepoint: Annotated[
        str | None,
        typer.Option(help="Resume from this savepoint or retained checkpoint (flink run -s)."),
    ] = None,
) -> None:
    """Submit the job to a standalone Flink cluster with ``flink run -py``."""
    cmd = submit_command(source, jobmanager, config, python, detached, from_savepoint)
    typer.echo(" ".join(cmd))
    raise typer.Exit(subprocess.call(cmd, cwd=ROOT))


def submit_command(
    source: str,
    jobmanager: str,
    config: Path | None,
    python: str | None,
    detached: bool,
    from_savepoint: str | None = None,
) -> list[str]:
    pyfs = ",".join(str(ROOT / p) for p in SHIPPED_PACKAGES)
    cmd = [str(flink_bin()), "run", "-m", jobmanager]
    if detached:
        cmd.append("--detached")
    if from_savepoint:
        cmd += ["--fromSavepoint", from_savepoint]
    cmd += [
        "-py",
        str(ROOT / "jobs" / "recognition.py"),
        "-pyfs",
        pyfs,
        "-pyexec",
        python or sys.executable,
        "-pyclientexec",
        sys.executable,
        "--source",
        source,
    ]
    if config:
        cmd += ["--config", str(Path(config).resolve())]
    return cmd


def flink_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault(
        "JAVA_HOME", str(Path(shutil.which("java") or "/usr/bin/java").resolve().parents[1])
    )
    return env
