"""The ingest agent: cameras -> JPEG frame records -> Kafka ``facerec.frames`` (key = region).

Each configured camera runs in its own thread: OpenCV reads the stream (RTSP/HTTP URL,
video file, or device index), a frame-rate cap drops surplus frames, the kept ones are
JPEG-encoded into ``FrameRecord``s whose ``frame_id`` is (camera, session start, seq), and a
``FrameSender`` (jobs/delivery.py) delivers them in order, spooling to disk while Kafka is
unreachable. A camera that fails to open or stops delivering is reopened with exponential
backoff; a video file ends the camera's thread at its end unless ``loop`` is set.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from facerec.config import CameraConfig, Settings
from facerec.records import FrameRecord, make_frame_id, now_ms
from jobs.delivery import CameraStats, FrameSender, producer_config
from jobs.spool import Spool
from udfs.errors import InvalidImage
from udfs.image import encode_jpeg

log = logging.getLogger(__name__)
_DEFAULT_SOURCE_FPS = 25.0


class FrameSource:
    """An OpenCV capture that knows whether it is a finite file or a live stream."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_device = url.isdigit()
        self.is_file = not self.is_device and "://" not in url and Path(url).is_file()
        self._cap: cv2.VideoCapture | None = None
        self.fps = _DEFAULT_SOURCE_FPS

    def open(self) -> bool:
        self.release()
        cap = cv2.VideoCapture(int(self.url) if self.is_device else self.url)
        if not cap.isOpened():
            cap.release()
            return False
        if not self.is_file:
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # live: the newest frame, not a backlog
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if 0.0 < fps <= 1000.0 else _DEFAULT_SOURCE_FPS
        self._cap = cap
        return True

    def read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, img = self._cap.read()
        return img if ok and img is not None and img.size else None

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    @property
    def opened(self) -> bool:
        return self._cap is not None


class FpsCap:
    """Keep frames at most every ``1/fps`` seconds of capture time (25% jitter tolerance)."""

    def __init__(self, fps: float) -> None:
        self.interval = 1000.0 / fps
        self.next_due: float | None = None

    def keep(self, ts_ms: int) -> bool:
        if self.next_due is not None and ts_ms < self.next_due - 0.25 * self.interval:
            return False
        behind = self.next_due is None or ts_ms - self.next_due >= self.interval
        self.next_due = (ts_ms if behind else self.next_due) + self.interval
        return True


class CameraIngest:
    """Read one camera and submit its frames to a ``FrameSender`` until stopped."""

    def __init__(
        self, cam: CameraConfig, sender: FrameSender, *, retry_initial_s: float = 0.5,
        retry_max_s: float = 30.0, source: FrameSource | None = None,
    ) -> None:
        self.cam, self.sender, self.stats = cam, sender, sender.stats
        self.source = source or FrameSource(cam.url)
        self.retry_initial_s, self.retry_max_s = retry_initial_s, retry_max_s
        self.session_ms = now_ms()
        self.seq = 0
        self._key = cam.region.encode()

    def run(self, stop: threading.Event, max_frames: int | None = None) -> None:
        cam, src = self.cam, self.source
        cap = FpsCap(cam.fps)
        backoff = self.retry_initial_s
        file_index = 0  # frames read from the file, across loops: its timeline
        started = time.monotonic()
        log.info("camera %s (%s, region %s): reading, fps cap %.1f", cam.camera_id, cam.url,
                 cam.region, cam.fps)
        while not stop.is_set() and (max_frames is None or self.seq < max_frames):
            if not src.opened:
                if src.open():
                    continue
                self.stats.add("reconnects")
                log.warning("camera %s: cannot open %s; retrying in %.1fs", cam.camera_id,
                            cam.url, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            img = src.read()
            if img is None:
                src.release()
                if src.is_file and not cam.loop:
                    log.info("camera %s: end of %s after %d frames", cam.camera_id, cam.url,
                             file_index)
                    break
                if not src.is_file:
                    self.stats.add("reconnects")
                    log.warning("camera %s: stream stopped; reconnecting in %.1fs",
                                cam.camera_id, backoff)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, self.retry_max_s)
                continue
            backoff = self.retry_initial_s
            self.stats.add("read")
            if src.is_file:
                offset_ms = round(file_index * 1000.0 / src.fps)
                file_index += 1
                if cam.realtime:
                    stop.wait(max(0.0, started + offset_ms / 1000.0 - time.monotonic()))
                ts = self.session_ms + offset_ms
            else:
                ts = now_ms()
            if not cap.keep(ts):
                self.stats.add("dropped")
                continue
            self._emit(img, ts)
        src.release()

    def _emit(self, img: np.ndarray, ts: int) -> None:
        try:
            jpeg = encode_jpeg(img, self.cam.jpeg_quality)
        except InvalidImage as exc:
            self.stats.add("dropped")
            log.warning("camera %s: frame %d not encodable: %s", self.cam.camera_id, self.seq, exc)
            return
        record = FrameRecord(
            camera_id=self.cam.camera_id, region=self.cam.region,
            frame_id=make_frame_id(self.cam.camera_id, self.session_ms, self.seq),
            seq=self.seq, capture_ts=ts, width=int(img.shape[1]), height=int(img.shape[0]),
            jpeg=jpeg, ingest_ts=now_ms(),
        )
        self.sender.submit(self._key, record.encode())
        self.seq += 1


def spool_path(spool_dir: Path, camera_id: str) -> Path:
    return spool_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', camera_id)}.spool.sqlite"


class IngestAgent:
    """Several cameras in one process, each with its own thread, producer and spool."""

    def __init__(
        self, settings: Settings, cameras: Sequence[CameraConfig] | None = None,
        *, topic: str | None = None,
    ) -> None:
        self.settings = settings
        self.cfg = settings.ingest
        self.cameras = list(cameras if cameras is not None else self.cfg.cameras)
        if not self.cameras:
            raise ValueError("no cameras to ingest: expected at least one in ingest.cameras "
                             "(or --url), got none")
        self.topic = topic or settings.kafka.frames_topic
        self.spool_dir = self.cfg.spool_dir or settings.data_dir / "spool"
        conf = producer_config(settings.kafka, self.cfg)
        max_bytes = int(self.cfg.spool_max_mb * 1024 * 1024)
        self.senders: dict[str, FrameSender] = {}
        self.workers: dict[str, CameraIngest] = {}
        for cam in self.cameras:
            stats = CameraStats(cam.camera_id, cam.region)
            spool = Spool(spool_path(self.spool_dir, cam.camera_id), max_bytes)
            sender = FrameSender(stats, self.topic, spool, {**conf, "client_id":
                                 f"facerec-ingest-{cam.camera_id}"}, self.cfg)
            self.senders[cam.camera_id] = sender
            self.workers[cam.camera_id] = CameraIngest(
                cam, sender, retry_initial_s=self.cfg.retry_initial_s,
                retry_max_s=self.cfg.retry_max_s,
            )
        self.stop_event = threading.Event()

    def run(self, max_frames: int | None = None, drain_timeout_s: float = 60.0) -> dict[str, Any]:
        """Ingest until every camera ends (files) or ``stop()``; then wait up to
        ``drain_timeout_s`` for Kafka to acknowledge everything. Returns per-camera stats."""
        threads = [
            threading.Thread(target=w.run, args=(self.stop_event, max_frames),
                             name=f"camera-{cid}", daemon=True)
            for cid, w in self.workers.items()
        ]
        for t in threads:
            t.start()
        try:
            while any(t.is_alive() for t in threads):
                for t in threads:
                    t.join(timeout=0.2)
        except KeyboardInterrupt:
            log.warning("interrupted: stopping cameras")
            self.stop_event.set()
            for t in threads:
                t.join(timeout=10)
        return self.close(drain_timeout_s)

    def stop(self) -> None:
        self.stop_event.set()

    def close(self, drain_timeout_s: float = 0.0) -> dict[str, Any]:
        report: dict[str, Any] = {}
        for cid, sender in self.senders.items():
            drained = sender.flush(drain_timeout_s) if drain_timeout_s > 0 else False
            sender.close()
            report[cid] = {**sender.stats.as_dict(), "seq": self.workers[cid].seq,
                           "drained": drained, "spool_left": len(sender.spool)}
            if not drained and report[cid]["spool_left"]:
                log.error("camera %s: %d frames stay in %s for the next run", cid,
                          report[cid]["spool_left"], sender.spool.path)
        return report
