"""Per-camera status windows from the job's frame outcomes: frames, gated out, shed, analysed.

The job feeds every ``FrameStat`` in; a camera's window closes at the first frame handled
``interval_ms`` or more after it opened, and the closed window is what the camera page shows
(``facerec.records.CameraStatus``). Windows follow the frames' handling time (``done_ms``),
so frames/s is the rate the job got through the camera's frames, which is the capture rate
whenever the job keeps up.
"""

from __future__ import annotations

from dataclasses import dataclass

from facerec.records import CameraStatus
from udfs.pipeline import FrameStat


@dataclass
class _Window:
    region: str
    start_ms: int
    end_ms: int
    frames: int = 0
    gated_out: int = 0
    shed: int = 0
    analysed: int = 0
    faces: int = 0

    def status(self, camera_id: str) -> CameraStatus:
        return CameraStatus(
            camera_id=camera_id, region=self.region, window_start_ms=self.start_ms,
            window_end_ms=self.end_ms, frames=self.frames, gated_out=self.gated_out,
            shed=self.shed, analysed=self.analysed, faces=self.faces,
        )


class CameraStatusWindows:
    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = interval_ms
        self._open: dict[str, _Window] = {}

    def add(self, stat: FrameStat) -> CameraStatus | None:
        """Count one frame; the camera's window when this frame closed it."""
        window = self._open.get(stat.camera_id)
        if window is None:
            window = self._open[stat.camera_id] = _Window(stat.region, stat.done_ms, stat.done_ms)
        window.end_ms = max(window.end_ms, stat.done_ms)
        window.frames += 1
        outcome = stat.outcome
        if outcome == "analysed":
            window.analysed += 1
            window.faces += stat.faces
        elif outcome == "shed":
            window.shed += 1
        else:
            window.gated_out += 1
        if window.end_ms - window.start_ms < self.interval_ms:
            return None
        del self._open[stat.camera_id]
        return window.status(stat.camera_id)

    def flush(self) -> list[CameraStatus]:
        """Every window still open (the input ended): partial windows are still news."""
        closed = [w.status(camera_id) for camera_id, w in sorted(self._open.items())]
        self._open.clear()
        return closed
