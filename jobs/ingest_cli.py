"""``facerec ingest``: run the ingest agent for the configured cameras (or one given inline)."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import ValidationError

log = logging.getLogger(__name__)


def load_cameras(path: Path) -> list[Any]:
    """A YAML list of cameras, or a mapping with a ``cameras:`` list (ingest section)."""
    from facerec.config import CameraConfig

    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict):
        data = data.get("cameras", data.get("ingest", {}).get("cameras"))
    if not isinstance(data, list) or not data:
        raise ValueError(f"{path}: expected a non-empty list of cameras (camera_id, url, "
                         f"region, fps, jpeg_quality), got {type(data).__name__}")
    return [CameraConfig(**c) for c in data]


def ingest(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML configuration.")]
    = None,
    cameras: Annotated[Path | None, typer.Option(help="YAML list of cameras (else "
                                                 "ingest.cameras of the configuration).")] = None,
    url: Annotated[str | None, typer.Option(help="One camera: RTSP/HTTP URL, file or device "
                                            "index.")] = None,
    camera_id: Annotated[str, typer.Option(help="With --url: the camera id.")] = "cam0",
    region: Annotated[str, typer.Option(help="With --url: the region (Kafka key).")] = "default",
    fps: Annotated[float, typer.Option(help="With --url: frame-rate cap.")] = 10.0,
    jpeg_quality: Annotated[int, typer.Option(help="With --url: JPEG quality.")] = 85,
    topic: Annotated[str | None, typer.Option(help="Override kafka.frames_topic.")] = None,
    max_frames: Annotated[int | None, typer.Option(help="Stop each camera after N frames.")]
    = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics here.")]
    = None,
    drain_timeout: Annotated[float, typer.Option(help="At the end, wait this long for Kafka "
                                                 "to take the spooled frames.")] = 60.0,
) -> None:
    """Read cameras, encode JPEG frames and produce them to Kafka (key = region); frames
    that Kafka cannot take wait in an on-disk spool. Prints a JSON report per camera."""
    from facerec.config import CameraConfig, load_settings
    from jobs.ingest import IngestAgent

    try:
        settings = load_settings(config)
        if url is not None:
            cams = [CameraConfig(camera_id=camera_id, url=url, region=region, fps=fps,
                                 jpeg_quality=jpeg_quality)]
        elif cameras is not None:
            cams = load_cameras(cameras)
        else:
            cams = list(settings.ingest.cameras)
        agent = IngestAgent(settings, cams, topic=topic)
    except (ValidationError, ValueError, OSError) as exc:
        typer.secho(f"ingest: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc

    port = metrics_port if metrics_port is not None else settings.ingest.metrics_port
    if port is not None:
        from prometheus_client import start_http_server

        start_http_server(port)
        log.info("Prometheus metrics on :%d/metrics", port)
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    report = agent.run(max_frames=max_frames, drain_timeout_s=drain_timeout)
    typer.echo(json.dumps(report, indent=2))
    if any(r["spool_left"] for r in report.values()):
        raise typer.Exit(1)
