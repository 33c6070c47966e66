"""The one camera reader, for the ingest agent and for the cameras the job reads itself.

A camera is a device index (``0``), a stream URL (``rtsp://``, ``http(s)://``) or a video
file (any other path, or ``file://``). ``CameraReader`` opens it, reopens a source that
fails with the camera's exponential backoff, plays a file ``loop`` times, caps the frame
rate, paces a file to its own rate when ``realtime``, stamps capture times and frame ids and
encodes JPEG ``FrameRecord``s. ``plan_camera`` tells before reading how many frames a bounded
file will give and at what mean rate: the job sizes and paces its tick source with it.

The fps cap keeps a frame when it comes at least ``1/fps`` after the last kept one, less 25%
jitter. It runs on the file's own timeline, restarted with each play, so every play of a
file keeps the same frames and the planned count is exact; live sources run on the clock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

import cv2
import numpy as np

from facerec.config import CameraConfig
from facerec.errors import InvalidImage
from facerec.records import FrameRecord, make_frame_id, now_ms
from udfs.image import encode_jpeg

log = logging.getLogger(__name__)

MAX_SOURCE_FPS = 240.0
"""The highest frame rate believed when a source reports one: real cameras and files stay at
or below it (240 for slow motion); above it OpenCV reports a time base, not a rate (1000 for
millisecond timestamps)."""
FALLBACK_SOURCE_FPS = 25.0
"""The rate assumed for a source that reports none, or none believable."""

SourceKind = Literal["device", "stream", "file"]


def source_kind(url: str) -> SourceKind:
    """What ``url`` names, from its form alone: a file that does not exist yet is still a
    file (retried like a camera that is off, then played to its end)."""
    if url.isdigit():
        return "device"
    if "://" in url and not url.startswith("file://"):
        return "stream"
    return "file"


def delivers_live(cam: CameraConfig) -> bool:
    """Whether the camera's frames are live (someone waits on their latency): a camera or a
    stream, or a file paced to its own rate. A file read as fast as it decodes is a backlog."""
    return source_kind(cam.url) != "file" or cam.realtime


class FpsCap:
    """Keep frames at most every ``1/fps`` seconds of their timestamps, allowing 25% jitter
    (a camera's frames do not come on the dot); ``fps`` 0 keeps every frame."""

    def __init__(self, fps: float) -> None:
        self.interval = 1000.0 / fps if fps > 0 else 0.0
        self.next_due: float | None = None

    def keep(self, ts_ms: float) -> bool:
        if not self.interval:
            return True
        due = self.next_due
        if due is None or ts_ms - due >= self.interval:  # first frame, or a gap: start afresh
            self.next_due = ts_ms + self.interval
            return True
        if ts_ms < due - 0.25 * self.interval:
            return False
        self.next_due = due + self.interval
        return True


def media_ms(index: int, fps: float) -> int:
    """Where frame ``index`` of a file at ``fps`` sits on its timeline (ms)."""
    return round(index * 1000.0 / fps)


def kept_per_play(frames: int, source_fps: float, cap_fps: float) -> int:
    """How many of a file's ``frames`` the fps cap keeps in one play."""
    cap = FpsCap(cap_fps)
    return sum(cap.keep(media_ms(i, source_fps)) for i in range(frames))


def _source_fps(capture: cv2.VideoCapture) -> float:
    fps = float(capture.get(cv2.CAP_PROP_FPS) or 0.0)
    return fps if 0.0 < fps <= MAX_SOURCE_FPS else FALLBACK_SOURCE_FPS


def _frame_count(capture: cv2.VideoCapture) -> int | None:
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    return count if count > 0 else None


class CameraUnavailable(ValueError):
    """A video file that cannot be opened or gives no frame."""


@dataclass(frozen=True)
class CameraPlan:
    """A camera and what reading it gives: ``frames`` in all (None: unbounded, a live source
    or a file played forever), at ``fps`` on average."""

    cam: CameraConfig
    frames: int | None
    fps: float

    @property
    def bounded(self) -> bool:
        return self.frames is not None

    @property
    def live(self) -> bool:
        return delivers_live(self.cam)


def plan_camera(cam: CameraConfig) -> CameraPlan:
    """Open a video file to plan its reading; live sources are not opened (a camera may be
    off when the job starts) and run at their cap, else at the fallback rate.

    A file whose container states its frame count is taken at its word (counting would
    decode it whole); the reader reads no more than that per play, so it never gives more
    frames than planned, and fewer only from a file shorter than it says."""
    if source_kind(cam.url) != "file":
        return CameraPlan(cam, None, cam.fps or FALLBACK_SOURCE_FPS)
    capture = cv2.VideoCapture(cam.url)
    try:
        if not capture.isOpened():
            raise CameraUnavailable(
                f"camera {cam.camera_id}: cannot open video {cam.url!r} (missing file, bad "
                "codec or URL)"
            )
        fps, count = _source_fps(capture), _frame_count(capture)
        if not capture.read()[0]:
            raise CameraUnavailable(f"camera {cam.camera_id}: video {cam.url!r} gives no frame")
        if count is None:  # the container does not say: count by decoding, as the reader will
            count = 1
            while capture.grab():
                count += 1
    finally:
        capture.release()
    kept = kept_per_play(count, fps, cam.fps)
    return CameraPlan(cam, kept * cam.loop if cam.loop else None, kept * fps / count)


class Counters(Protocol):
    def add(self, what: str, n: int = 1) -> None: ...


class _Uncounted:
    def add(self, what: str, n: int = 1) -> None:
        pass


class CameraReader:
    """Reads one camera into frame records: in order (``records``, ``next_record``) or by
    sequence number (``read``, for the job's ticks).

    ``epoch_ms`` is the frame-id epoch. By default it is 0 for files, so that a restored job
    reads a file again under the same frame ids, and the reader's start for live sources.
    ``media_clock`` stamps a file's frames on its own timeline from the reader's start (the
    ingest agent: the frames keep their spacing when read fast) rather than when they are
    read (the job measures latency from it). ``paced``: something else already paces the
    reads (the job's rate-limited tick source), so ``realtime`` must not sleep. ``stop``
    ends the reading and cuts backoff waits short. ``stats`` counts frames read, frames
    dropped (fps cap, encoding) and reconnects."""

    def __init__(
        self,
        cam: CameraConfig,
        *,
        epoch_ms: int | None = None,
        media_clock: bool = False,
        paced: bool = False,
        stop: threading.Event | None = None,
        stats: Counters | None = None,
    ) -> None:
        self.cam = cam
        self.kind = source_kind(cam.url)
        self.is_camera = self.kind != "file"
        self.epoch_ms = epoch_ms if epoch_ms is not None else (now_ms() if self.is_camera else 0)
        self.media_clock = media_clock and not self.is_camera
        self.pace = cam.realtime and not paced and not self.is_camera
        self.stop = stop if stop is not None else threading.Event()
        self.stats: Counters = stats if stats is not None else _Uncounted()
        self.seq = 0  # sequence number of the next record
        self.source_fps = FALLBACK_SOURCE_FPS
        self._clock_start_ms = now_ms()
        self._capture: cv2.VideoCapture | None = None
        self._backoff = cam.reconnect_initial_s
        self._rewind()

    def _rewind(self) -> None:
        self._release()
        self._plays = 0  # plays of the file finished
        self._in_play = 0  # frames read in the current play
        self._play_frames: int | None = None  # frames in a play, when the file says
        self._timeline_index = 0  # frames read over all plays: the file's timeline
        self._fps_cap = FpsCap(self.cam.fps)
        self._pace_start: float | None = None
        self._done = False

    @property
    def finished(self) -> bool:
        """A file played ``loop`` times, or ``stop`` set."""
        return self._done or self.stop.is_set()

    # ------------------------------------------------------------------ records
    def records(self) -> Iterator[FrameRecord]:
        """Records until the camera is finished, reconnecting as often as it takes."""
        while not self.finished:
            record = self.next_record()
            if record is not None:
                yield record

    def next_record(self) -> FrameRecord | None:
        """The next frame past the fps cap as record number ``seq``. None when finished, or
        after a failed (re)connection whose backoff has been waited: call again to retry."""
        while (frame := self._next_frame(pace=self.pace)) is not None:
            image, capture_ts = frame
            try:
                jpeg = encode_jpeg(image, self.cam.jpeg_quality)
            except InvalidImage as exc:
                self.stats.add("dropped")
                log.warning("camera %s: frame %d not encodable: %s", self.cam.camera_id,
                            self.seq, exc)
                continue
            record = FrameRecord(
                camera_id=self.cam.camera_id,
                region=self.cam.region,
                frame_id=make_frame_id(self.cam.camera_id, self.epoch_ms, self.seq),
                seq=self.seq,
                capture_ts=capture_ts,
                width=int(image.shape[1]),
                height=int(image.shape[0]),
                jpeg=jpeg,
                ingest_ts=now_ms(),
                live=delivers_live(self.cam),
            )
            self.seq += 1
            return record
        return None

    def read(self, seq: int) -> FrameRecord | None:
        """Record number ``seq`` (the job's tick). A file skips ahead to it without encoding
        (a restored job resumes mid-file) or starts over for an earlier one; a live source
        reads its next frame under that number (a failed reconnect leaves a gap)."""
        if self.is_camera:
            self.seq = seq
            return self.next_record()
        if seq < self.seq:
            self._rewind()
            self.seq = 0
        while self.seq < seq:
            if self._next_frame(pace=False) is None:
                return None
            self.seq += 1
        return self.next_record()

    def close(self) -> None:
        self._release()

    # ------------------------------------------------------------------ frames
    def _next_frame(self, pace: bool) -> tuple[np.ndarray, int] | None:
        """The next frame past the fps cap and its capture time (ms); None when finished or
        after a failed (re)connection, its backoff waited."""
        while not self.finished:
            if self._capture is None and not self._open():
                self._retry_later(f"cannot open {self.cam.url}")
                return None
            complete = self._play_frames is not None and self._in_play >= self._play_frames
            if complete or not self._grab():
                if self.is_camera:
                    self._release()
                    self._retry_later("the stream stopped")
                    return None
                self._end_play()
                continue
            self._backoff = self.cam.reconnect_initial_s
            self.stats.add("read")
            if self.is_camera:
                capture_ts = now_ms()
                keep = self._fps_cap.keep(capture_ts)
            else:
                play_ms = media_ms(self._in_play, self.source_fps)
                timeline_ms = media_ms(self._timeline_index, self.source_fps)
                self._in_play += 1
                self._timeline_index += 1
                keep = self._fps_cap.keep(play_ms)
            # A frame the cap drops is grabbed but never decoded: decoding is most of the
            # reader's cost, and a cap of half the source rate would double it.
            image = self._retrieve() if keep else None
            if image is None:
                self.stats.add("dropped")
                continue
            if self.is_camera:
                return image, capture_ts
            if pace:
                self._wait_until(timeline_ms)
            return image, self._clock_start_ms + timeline_ms if self.media_clock else now_ms()
        return None

    def _grab(self) -> bool:
        """Advance to the next frame without decoding it."""
        return self._capture is not None and bool(self._capture.grab())

    def _retrieve(self) -> np.ndarray | None:
        """Decode the frame grabbed last."""
        if self._capture is None:
            return None
        ok, image = self._capture.retrieve()
        return image if ok and image is not None and image.size else None

    def _open(self) -> bool:
        source: int | str = int(self.cam.url) if self.kind == "device" else self.cam.url
        capture = cv2.VideoCapture(source)
        if not capture.isOpened():
            capture.release()
            return False
        if self.is_camera:
            capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest frame, not a backlog
        else:
            self._play_frames = _frame_count(capture)
        self.source_fps = _source_fps(capture)
        self._capture = capture
        self._in_play = 0
        self._fps_cap = FpsCap(self.cam.fps)  # each play or connection: a timeline of its own
        log.log(logging.DEBUG if self._plays else logging.INFO,
                "camera %s: reading %s (%s, %.1f fps, cap %s, region %s)", self.cam.camera_id,
                self.cam.url, self.kind, self.source_fps, self.cam.fps or "none", self.cam.region)
        return True

    def _end_play(self) -> None:
        played = self._in_play
        self._release()
        self._plays += 1
        if self.cam.loop and self._plays >= self.cam.loop:
            self._done = True
            log.info("camera %s: end of %s after %d play(s)", self.cam.camera_id, self.cam.url,
                     self._plays)
        elif not played:  # a file that opens but decodes nothing: not reopened in a spin
            self._retry_later(f"{self.cam.url} gave no frame")

    def _retry_later(self, why: str) -> None:
        self.stats.add("reconnects")
        log.warning("camera %s: %s; retrying in %.1fs", self.cam.camera_id, why, self._backoff)
        self.stop.wait(self._backoff)
        self._backoff = min(self._backoff * 2, self.cam.reconnect_max_s)

    def _wait_until(self, timeline_ms: int) -> None:
        """Sleep until the frame's time on the file's timeline, counted from the first frame
        paced (a resumed reader does not sleep to catch up from the start)."""
        if self._pace_start is None:
            self._pace_start = time.monotonic() - timeline_ms / 1000.0
        self.stop.wait(max(0.0, self._pace_start + timeline_ms / 1000.0 - time.monotonic()))

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
