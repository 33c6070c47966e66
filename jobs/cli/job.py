"""``facerec job run|submit``: the recognition job, embedded or on a cluster."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from typing import Annotated

import typer

from facerec.config import Settings, with_overrides
from jobs.cli.common import ConfigOpt, fail, flags, settings
from jobs.submit import ROOT, submit_command

app = typer.Typer(help="Run or submit the recognition job.", no_args_is_help=True)
CLIENT_CHECKPOINT_MS = 1000
"""A collecting client sees results once a checkpoint covers them: checkpoint at least this
often so that events print as they come."""
DeliveryOpt = Annotated[
    str | None,
    typer.Option(
        help="Delivery guarantee of the Kafka events sink (job.events_sink.delivery): "
        "at-least-once, or exactly-once (Kafka transactions committed by each checkpoint)."
    ),
]


@app.command()
def run(
    source: Annotated[
        str, typer.Option(help="video:PATH[,PATH...] (files, folders, RTSP) or kafka")
    ],
    config: ConfigOpt = None,
    parallelism: Annotated[int | None, typer.Option(help="Override job.parallelism.")] = None,
    realtime: Annotated[
        bool | None, typer.Option(help="Pace video files at their frame rate.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="Only print the summary.")] = False,
    from_savepoint: Annotated[
        str | None,
        typer.Option(help="Resume from this savepoint or retained checkpoint (path or URI)."),
    ] = None,
    delivery: DeliveryOpt = None,
) -> None:
    """Run the job on a local Flink MiniCluster, printing events as they come and a summary."""
    overrides = flags(
        **{
            "job.parallelism": parallelism,
            "job.video.realtime": realtime,
            "job.savepoint_path": from_savepoint,
            "job.events_sink.delivery": delivery,
        }
    )
    run_job(settings(config, overrides), source, quiet)


def run_job(job_settings: Settings, source: str, quiet: bool = False) -> None:
    from jobs.recognition import build_job, collect
    from jobs.sources import SourceError

    if job_settings.job.checkpoint_interval_ms > CLIENT_CHECKPOINT_MS:
        job_settings = with_overrides(
            job_settings, {"job": {"checkpoint_interval_ms": CLIENT_CHECKPOINT_MS}}
        )
    try:
        env, streams = build_job(job_settings, source)
    except (SourceError, ValueError, RuntimeError) as exc:
        raise fail(f"cannot start the job: {exc}", 2) from exc
    identities: Counter[str] = Counter()
    cameras: dict[str, Counter[str]] = {}
    dead = 0
    latencies: list[int] = []
    sightings: dict[str, dict] = {}
    with collect(env, streams, "facerec-recognition") as results:
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
            elif kind == "G":
                sightings[body["sighting_id"]] = body
                if body["status"] == "closed" and not quiet:
                    typer.secho(
                        f"sighting {body['camera_id']} {body['identity']}: {body['frames']} "
                        f"frames over {(body['last_seen_ms'] - body['first_seen_ms']) / 1000:.1f}"
                        f" s, votes {body['votes']}, best face {body['evidence_key']}",
                        fg=typer.colors.GREEN,
                    )
            elif kind == "D":
                dead += 1
                typer.secho(
                    f"dead letter: {body['reason']}: {body['message']}", fg=typer.colors.YELLOW
                )
            else:
                c = cameras.setdefault(body["camera_id"], Counter())
                c["frames"] += 1
                if not body["passed"]:
                    c["gated_out"] += 1
                else:
                    c["shed" if body.get("shed") else "analysed"] += 1
                c["faces"] += body.get("faces", 0)
    typer.echo("\nsummary")
    for cam, c in sorted(cameras.items()):
        frac = c["gated_out"] / max(c["frames"], 1)
        typer.echo(
            f"  camera {cam}: {c['frames']} frames, {c['gated_out']} gated out ({frac:.0%}), "
            f"{c['shed']} shed over the latency budget, {c['analysed']} analysed, "
            f"{c['faces']} faces"
        )
    typer.echo(f"  events: {sum(identities.values())}  dead letters: {dead}")
    for identity, n in identities.most_common():
        typer.echo(f"    {identity}: {n}")
    per_person = Counter(s["identity"] for s in sightings.values())
    typer.echo(f"  sightings (one per person per appearance): {len(sightings)}")
    for identity, n in per_person.most_common():
        typer.echo(f"    {identity}: {n}")
    if latencies:
        latencies.sort()

        def pct(q: float) -> int:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

        typer.echo(
            f"  frame-to-event latency ms: p50 {pct(0.5)}  p95 {pct(0.95)}  max {latencies[-1]}"
        )


@app.command()
def submit(
    source: Annotated[
        str, typer.Option(help="kafka, or video:PATH readable by the TaskManagers")
    ] = "kafka",
    jobmanager: Annotated[
        str, typer.Option(help="JobManager REST address host:port.")
    ] = "localhost:8081",
    config: ConfigOpt = None,
    python: Annotated[
        str | None, typer.Option(help="Python on the TaskManagers (default: this one).")
    ] = None,
    detached: Annotated[bool, typer.Option("--detached/--attached")] = True,
    from_savepoint: Annotated[
        str | None,
        typer.Option(help="Resume from this savepoint or retained checkpoint (flink run -s)."),
    ] = None,
    delivery: DeliveryOpt = None,
) -> None:
    """Submit the job to a standalone Flink cluster with ``flink run -py``."""
    settings(config, flags(**{"job.events_sink.delivery": delivery}))  # refuse a bad one here
    cmd = submit_command(source, jobmanager, config, python, detached, from_savepoint, delivery)
    typer.echo(" ".join(cmd))
    raise typer.Exit(subprocess.call(cmd, cwd=ROOT))
