"""Where frames and index messages come from. The pipeline sees two streams and nothing
else: encoded frame records (bytes) and index messages (JSON strings).

* ``video:PATH[,PATH...]``: files, folders of videos, or RTSP/HTTP URLs read by the job
  itself, one camera each. A bounded tick source drives a keyed reader (one subtask owns
  each camera), so frames stream out one at a time, paced like a live camera.
* ``kafka``: the official Flink Kafka connector (jar from configuration).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2

from facerec.config import Settings
from facerec.records import FrameRecord, make_frame_id, now_ms
from udfs.image import encode_jpeg

VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpeg", ".mjpg"}
LIVE_TICKS = 2**62  # "unbounded" for live cameras


class SourceError(ValueError):
    """The --source argument or what it names is unusable."""


@dataclass(frozen=True)
class CameraSpec:
    camera_id: str
    url: str
    region: str
    live: bool
    fps: float
    frames: int  # frames that will be emitted (files); 0 for live streams

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, s: str) -> CameraSpec:
        return cls(**json.loads(s))


def _probe(url: str) -> tuple[float, int]:
    cap = cv2.VideoCapture(url)
    try:
        if not cap.isOpened():
            raise SourceError(f"cannot open video {url!r} (missing file, bad codec or URL)")
        fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        ok, _ = cap.read()
        if not ok:
            raise SourceError(f"video {url!r} opened but yields no frame")
        return (fps if 0 < fps <= 240 else 25.0), count
    finally:
        cap.release()


def parse_video_source(spec: str, settings: Settings) -> list[CameraSpec]:
    """``PATH[,PATH...]`` -> one camera per file (folders expand to their videos) or URL."""
    cfg = settings.job.video
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
    cameras = []
    for url in urls:
        live = "://" in url and not url.startswith("file://")
        fps, count = (0.0, 0) if live else _probe(url)
        out_fps = min(fps, cfg.fps) if cfg.fps and fps else (cfg.fps or fps or 25.0)
        step = max(1, round(fps / out_fps)) if fps else 1
        name = Path(url.split("?")[0]).stem if not live else url.rstrip("/").split("/")[-1]
        camera_id = _unique(name, [c.camera_id for c in cameras])
        cameras.append(
            CameraSpec(
                camera_id=camera_id,
                url=url,
                region=cfg.region.replace("{camera}", camera_id),
                live=live,
                fps=out_fps,
                frames=0 if live else math.ceil(count / step) * cfg.loop,
            )
        )
    return cameras


def _unique(name: str, taken: list[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    return candidate


def tick_count(cameras: list[CameraSpec]) -> int:
    """Ticks are dealt round-robin: tick i -> camera i % n, sequence i // n."""
    if any(c.live for c in cameras):
        return LIVE_TICKS
    return len(cameras) * max(c.frames for c in cameras)


class CameraReader:
    """Reads one camera sequentially; ``read(seq)`` returns the encoded frame record for
    sequence ``seq`` or None past the end. Paces to the camera's rate when ``realtime``."""

    def __init__(self, spec: CameraSpec, settings: Settings, paced: bool = False) -> None:
        """``paced``: ticks already arrive at the camera's rate (a rate-limited source), so
        the reader must not sleep."""
        self.spec = spec
        self.cfg = settings.job.video
        self.paced = paced
        self.cap: cv2.VideoCapture | None = None
        self.next_seq = 0
        self.loops_done = 0
        self.epoch_ms = now_ms() if spec.live else 0
        self.started: float | None = None
        self.failures = 0

    def _open(self) -> None:
        if self.cap is not None:
            self.cap.release()
        self.cap = cv2.VideoCapture(self.spec.url)
        file_fps = self.cap.get(cv2.CAP_PROP_FPS) or self.spec.fps
        self.step = max(1, round(file_fps / self.spec.fps)) if self.spec.fps else 1

    def _grab(self):
        """The next frame at the output rate, reopening at the end of a looped file."""
        if self.cap is None:
            self._open()
        assert self.cap is not None
        for _ in range(self.step - 1):
            self.cap.grab()
        ok, frame = self.cap.read()
        if not ok and not self.spec.live and self.loops_done + 1 < self.cfg.loop:
            self.loops_done += 1
            self._open()
            ok, frame = self.cap.read()
        if not ok and self.spec.live:
            self.failures += 1  # reconnect with backoff, up to 30 s between tries
            time.sleep(min(30.0, 0.5 * 2 ** min(self.failures, 6)))
            self._open()
            ok, frame = self.cap.read()
        if ok:
            self.failures = 0
        return frame if ok else None

    def read(self, seq: int) -> bytes | None:
        if seq < self.next_seq:  # replayed ticks after a restore: start the file again
            self.cap, self.next_seq, self.loops_done = None, 0, 0
        frame = None
        while self.next_seq <= seq:
            frame = self._grab()
            if frame is None:
                return None
            self.next_seq += 1
        if self.cfg.realtime and not self.paced:
            if self.started is None:
                self.started = time.monotonic() - seq / self.spec.fps
            delay = self.started + seq / self.spec.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        ts = now_ms()
        h, w = frame.shape[:2]
        return FrameRecord(
            camera_id=self.spec.camera_id,
            region=self.spec.region,
            frame_id=make_frame_id(self.spec.camera_id, self.epoch_ms, seq),
            seq=seq,
            capture_ts=ts,
            width=w,
            height=h,
            jpeg=encode_jpeg(frame, self.cfg.jpeg_quality),
            ingest_ts=ts,
        ).encode()

    def close(self) -> None:
        if self.cap is not None:
            self.cap.release()
