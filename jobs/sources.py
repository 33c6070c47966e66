"""What ``--source video:PATH[,PATH...]`` names: one camera per video file, per video in a
folder, or per stream URL, configured from ``job.video`` and planned (jobs/cameras.py) so
that the job can size and pace the tick source driving its camera readers."""

from __future__ import annotations

import re
from pathlib import Path

from facerec.config import Settings
from jobs.cameras import CameraPlan, CameraUnavailable, plan_camera, source_kind

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpeg", ".mjpg"}
LIVE_TICKS = 2**62  # "unbounded" for live cameras
_ID_LENGTH = 60  # camera ids are at most 64 characters; room for a "-N" to tell twins apart


class SourceError(ValueError):
    """The --source argument or what it names is unusable."""


def parse_video_source(spec: str, settings: Settings) -> list[CameraPlan]:
    """``PATH[,PATH...]`` -> one camera per file (folders expand to their videos) or URL,
    named after the file or the URL's last part. Files are opened to plan their reading."""
    urls: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        if "://" in part:
            urls.append(part)
            continue
        path = Path(part)
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
            if not found:
                raise SourceError(f"folder {path} holds no video ({sorted(VIDEO_SUFFIXES)})")
            urls.extend(found)
        elif path.is_file():
            urls.append(str(path))
        else:
            raise SourceError(f"video source {part!r}: no such file, folder or URL")
    if not urls:
        raise SourceError("video source names nothing: use video:PATH[,PATH...]")
    plans: list[CameraPlan] = []
    for url in urls:
        camera_id = _unique(_camera_name(url), [p.cam.camera_id for p in plans])
        try:
            plans.append(plan_camera(settings.job.video.camera(camera_id, url)))
        except CameraUnavailable as exc:
            raise SourceError(str(exc)) from exc
    return plans


def _camera_name(url: str) -> str:
    if source_kind(url) == "file":
        name = Path(url.split("?")[0]).stem
    else:
        name = url.rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:_ID_LENGTH] or "camera"


def _unique(name: str, taken: list[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def tick_count(cameras: list[CameraPlan]) -> int:
    """Ticks are dealt round-robin: tick i -> camera i % n, sequence i // n."""
    if not all(c.bounded for c in cameras):
        return LIVE_TICKS
    return len(cameras) * max(c.frames or 0 for c in cameras)
