"""``facerec ingest``: run the ingest agent for the configured cameras (or one given inline)."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from jobs.cli.common import ConfigOpt, fail, flags, settings

log = logging.getLogger(__name__)


def ingest(
    config: ConfigOpt = None,
    cameras: Annotated[
        Path | None,
        typer.Option(help="YAML list of cameras (else ingest.cameras of the configuration)."),
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="One camera: RTSP/HTTP URL, file or device index.")
    ] = None,
    camera_id: Annotated[str, typer.Option(help="With --url: the camera id.")] = "cam0",
    region: Annotated[str, typer.Option(help="With --url: the region (Kafka key).")] = "default",
    fps: Annotated[
        float | None,
        typer.Option(help="With --url: frame-rate cap; 0 = the source's own rate."),
    ] = None,
    jpeg_quality: Annotated[int | None, typer.Option(help="With --url: JPEG quality.")] = None,
    loop: Annotated[
        int | None, typer.Option(help="With --url: play a file this many times; 0 = forever.")
    ] = None,
    realtime: Annotated[
        bool | None, typer.Option(help="With --url: pace a file at its own frame rate.")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Override kafka.frames_topic.")] = None,
    max_frames: Annotated[
        int | None, typer.Option(help="Stop each camera after N frames.")
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus /metrics here (ingest.metrics_port).")
    ] = None,
    drain_timeout: Annotated[
        float, typer.Option(help="At the end, wait this long for Kafka to take the spooled frames.")
    ] = 60.0,
) -> None:
    """Read cameras, encode JPEG frames and produce them to Kafka (key = region); frames
    that Kafka cannot take wait in an on-disk spool. Prints a JSON report per camera."""
    from facerec.config import CameraConfig, read_cameras_file
    from jobs.ingest import IngestAgent

    s = settings(
        config,
        flags(**{"kafka.frames_topic": topic, "ingest.metrics_port": metrics_port}),
    )
    options: dict[str, Any] = {"fps": fps, "jpeg_quality": jpeg_quality, "loop": loop,
                               "realtime": realtime}
    try:
        if url is not None:
            given = {k: v for k, v in options.items() if v is not None}
            cams = [CameraConfig(camera_id=camera_id, url=url, region=region, **given)]
        elif cameras is not None:
            cams = read_cameras_file(cameras)
        else:
            cams = list(s.ingest.cameras)
        agent = IngestAgent(s, cams)
    except (ValidationError, ValueError, OSError) as exc:
        raise fail(f"ingest: {exc}", 2) from exc

    if s.ingest.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(s.ingest.metrics_port)
        log.info("Prometheus metrics on :%d/metrics", s.ingest.metrics_port)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    report = agent.run(max_frames=max_frames, drain_timeout_s=drain_timeout)
    typer.echo(json.dumps(report, indent=2))
    if any(r["spool_left"] for r in report.values()):
        raise typer.Exit(1)
