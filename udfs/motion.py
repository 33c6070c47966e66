"""Motion gate: drop frames in which nothing moved, before any detector runs.

Per camera, a running-average background of a small grey thumbnail; a frame passes when
enough thumbnail pixels differ from it, or when ``keepalive_s`` passed since the last
frame that passed (someone standing still is re-checked). The thumbnail is decoded from
the JPEG at 1/8 scale (libjpeg DCT scaling), which costs a fraction of a full decode.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from facerec.config import MotionConfig
from facerec.errors import InvalidImage
from udfs.image import check_header

_STATE = struct.Struct(">4sqqqII")
"""Gate state header: magic, last pass (epoch ms, -1 none), frames in, frames out, background
height and width; the background's pixels follow."""
_STATE_MAGIC = b"MG02"
_NPZ_MAGIC = b"PK"
"""The zip container of the earlier ``np.savez`` state."""
_PIXELS = np.dtype("<f4")


def thumbnail(jpeg: bytes, width: int) -> np.ndarray:
    """Grey float32 thumbnail of the given width, blurred to ignore sensor noise. The
    header's limits (size, pixels, JPEG scans) are checked first, as for any image: a frame
    from Kafka can be a decompression bomb too."""
    check_header(jpeg)
    buf = np.frombuffer(jpeg, dtype=np.uint8)
    grey = cv2.imdecode(buf, cv2.IMREAD_REDUCED_GRAYSCALE_8)
    if grey is None:
        grey = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise InvalidImage("frame is not a decodable JPEG")
    height = max(1, round(grey.shape[0] * width / grey.shape[1]))
    small = cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(small, (5, 5), 0).astype(np.float32)


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str  # first | motion | keepalive | static | rate_capped | disabled
    changed: float  # fraction of thumbnail pixels that changed


class MotionGate:
    """State of one camera. ``to_bytes``/``from_bytes`` let Flink keep it in keyed state
    (udfs/pipeline.py ``gate_stored``); checkpoints and savepoints hold that form, so a
    change to it must still read the old one."""

    def __init__(self, config: MotionConfig) -> None:
        self.config = config
        self.background: np.ndarray | None = None
        self.last_pass_ms: int | None = None
        self.frames_in = 0
        self.frames_out = 0

    def check(self, jpeg: bytes, ts_ms: int) -> GateDecision:
        self.frames_in += 1
        if not self.config.enabled:
            return self._pass(ts_ms, "disabled", 1.0)
        thumb = thumbnail(jpeg, self.config.width)
        if self.background is None or self.background.shape != thumb.shape:
            self.background = thumb
            return self._pass(ts_ms, "first", 1.0)
        changed = float(np.mean(np.abs(thumb - self.background) > self.config.pixel_delta))
        a = self.config.background_alpha
        self.background = (1 - a) * self.background + a * thumb
        if changed >= self.config.min_changed:
            cap = self.config.max_pass_fps
            if cap > 0 and self.last_pass_ms is not None and ts_ms - self.last_pass_ms < 1000 / cap:
                return GateDecision(False, "rate_capped", changed)
            return self._pass(ts_ms, "motion", changed)
        keepalive_ms = self.config.keepalive_s * 1000
        if (
            keepalive_ms > 0
            and self.last_pass_ms is not None
            and ts_ms - self.last_pass_ms >= keepalive_ms
        ):
            return self._pass(ts_ms, "keepalive", changed)
        return GateDecision(False, "static", changed)

    def _pass(self, ts_ms: int, reason: str, changed: float) -> GateDecision:
        self.frames_out += 1
        self.last_pass_ms = ts_ms
        return GateDecision(True, reason, changed)

    def to_bytes(self) -> bytes:
        """A fixed header and the background's raw float32 pixels. The job writes this to
        keyed state for every frame, so it must be cheap: ``np.savez``'s zip container cost
        more than the gate check itself."""
        last_pass = -1 if self.last_pass_ms is None else self.last_pass_ms  # -1: none yet
        bg = self.background if self.background is not None else np.zeros((0, 0), np.float32)
        height, width = bg.shape
        header = _STATE.pack(
            _STATE_MAGIC, last_pass, self.frames_in, self.frames_out, height, width
        )
        return header + np.ascontiguousarray(bg, dtype=_PIXELS).tobytes()

    @classmethod
    def from_bytes(cls, data: bytes, config: MotionConfig) -> MotionGate:
        """Reads ``to_bytes`` and the ``np.savez`` form that checkpoints and savepoints taken
        before it hold."""
        gate = cls(config)
        if data[:2] == _NPZ_MAGIC:
            with np.load(io.BytesIO(data)) as z:
                bg = z["background"]
                last, gate.frames_in, gate.frames_out = (int(v) for v in z["counters"])
        else:
            magic, last, gate.frames_in, gate.frames_out, height, width = _STATE.unpack_from(data)
            if magic != _STATE_MAGIC:
                raise ValueError(f"not a motion gate state: magic {magic!r}")
            bg = np.frombuffer(data, _PIXELS, height * width, _STATE.size).reshape(height, width)
            bg = bg.astype(np.float32)  # a writable copy in native order
        gate.background = bg if bg.size else None
        gate.last_pass_ms = None if last < 0 else last
        return gate
