"""The ingest agent: cameras -> JPEG frame records -> Kafka ``facerec.frames`` (key = region).

Each configured camera runs in its own thread: a ``CameraReader`` (jobs/cameras.py) reads
it (RTSP/HTTP URL, video file or device index; fps cap, loops, reconnect backoff) into
``FrameRecord``s whose ``frame_id`` is (camera, session start, seq), and a ``FrameSender``
(jobs/delivery.py) delivers them in order, spooling to disk while Kafka is unreachable. A
camera's thread ends when its file has played ``loop`` times, or when the agent stops.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from facerec.config import CameraConfig, Settings
from facerec.records import now_ms
from jobs.cameras import CameraReader
from jobs.delivery import CameraStats, FrameSender, producer_config
from jobs.spool import Spool

log = logging.getLogger(__name__)


def spool_path(spool_dir: Path, camera_id: str) -> Path:
    return spool_dir / f"{re.sub(r'[^A-Za-z0-9._-]', '_', camera_id)}.spool.sqlite"


class IngestAgent:
    """Several cameras in one process, each with its own thread, reader, producer and spool.

    ``reader`` makes each camera's reader (tests hand in one whose source they control)."""

    def __init__(
        self, settings: Settings, cameras: Sequence[CameraConfig] | None = None,
        *, topic: str | None = None, reader: Callable[..., CameraReader] = CameraReader,
    ) -> None:
        self.settings = settings
        self.cfg = settings.ingest
        self.cameras = list(cameras if cameras is not None else self.cfg.cameras)
        if not self.cameras:
            raise ValueError("no cameras to ingest: expected at least one in ingest.cameras "
                             "(or --url), got none")
        self.topic = topic or settings.kafka.frames_topic
        self.spool_dir = settings.spool_path()
        conf = producer_config(settings.kafka, self.cfg)
        max_bytes = int(self.cfg.spool_max_mb * 1024 * 1024)
        self.stop_event = threading.Event()
        self.senders: dict[str, FrameSender] = {}
        self.readers: dict[str, CameraReader] = {}
        session_ms = now_ms()
        for cam in self.cameras:
            stats = CameraStats(cam.camera_id, cam.region)
            spool = Spool(spool_path(self.spool_dir, cam.camera_id), max_bytes)
            sender = FrameSender(stats, self.topic, spool, {**conf, "client_id":
                                 f"facerec-ingest-{cam.camera_id}"}, self.cfg)
            self.senders[cam.camera_id] = sender
            # frame ids carry the session start: a restarted agent never reuses one
            self.readers[cam.camera_id] = reader(
                cam, epoch_ms=session_ms, media_clock=True, stop=self.stop_event, stats=stats
            )

    def run(self, max_frames: int | None = None, drain_timeout_s: float = 60.0) -> dict[str, Any]:
        """Ingest until every camera ends (files) or ``stop()``; then wait up to
        ``drain_timeout_s`` for Kafka to acknowledge everything. Returns per-camera stats."""
        threads = [
            threading.Thread(target=self._read_camera, args=(cid, max_frames),
                             name=f"camera-{cid}", daemon=True)
            for cid in self.readers
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

    def _read_camera(self, camera_id: str, max_frames: int | None) -> None:
        reader, sender = self.readers[camera_id], self.senders[camera_id]
        key = reader.cam.region.encode()
        records = reader.records()
        try:
            while max_frames is None or reader.seq < max_frames:
                record = next(records, None)
                if record is None:
                    break
                sender.submit(key, record.encode())
        finally:
            reader.close()

    def stop(self) -> None:
        self.stop_event.set()

    def close(self, drain_timeout_s: float = 0.0) -> dict[str, Any]:
        report: dict[str, Any] = {}
        for cid, sender in self.senders.items():
            drained = sender.flush(drain_timeout_s) if drain_timeout_s > 0 else False
            sender.close()
            report[cid] = {**sender.stats.as_dict(), "seq": self.readers[cid].seq,
                           "drained": drained, "spool_left": len(sender.spool)}
            if not drained and report[cid]["spool_left"]:
                log.error("camera %s: %d frames stay in %s for the next run", cid,
                          report[cid]["spool_left"], sender.spool.path)
        return report
