"""Image decoding that never crashes: every bad input becomes a typed error.

Images are returned as contiguous uint8 BGR arrays (OpenCV's convention) whatever the
source: grayscale is expanded, alpha is composited on black, 16-bit is scaled down.
The pixel limit is checked from the header *before* decoding, so a decompression bomb
costs a few bytes of parsing, not gigabytes of memory.
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from facerec.errors import ImageTooLarge, ImageTooSmall, InvalidImage

DEFAULT_MAX_BYTES = 20_000_000
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIDE = 32


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) read from the header only."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                return int(im.width), int(im.height)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLarge(f"image header declares too many pixels: {exc}") from exc
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InvalidImage(f"not a recognised image format ({len(data)} bytes)") from exc


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, WebP, ...) into a uint8 BGR array."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidImage(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InvalidImage("empty image (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"encoded image is {len(data)} bytes; the limit is {max_bytes}")
    width, height = image_size(bytes(data))
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if min(width, height) < min_side:
        raise ImageTooSmall(f"image is {width}x{height}; both sides must be >= {min_side} px")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise InvalidImage(f"image data is corrupt or truncated ({width}x{height} declared)")
    if img.shape[0] != height or img.shape[1] != width:
        raise InvalidImage(
            f"decoded {img.shape[1]}x{img.shape[0]} but header says {width}x{height}"
        )
    if _is_truncated_jpeg(data):
        raise InvalidImage("JPEG data is truncated (no end-of-image marker)")
    return to_bgr(img)


def to_bgr(img: np.ndarray) -> np.ndarray:
    """Normalise depth and channels to uint8 BGR."""
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        lo, hi = float(img.min()), float(img.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        img = ((img.astype(np.float64) - lo) * scale).astype(np.uint8)
    if img.ndim == 2:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    channels = img.shape[2]
    if channels == 1:
        return cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    if channels == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        return np.ascontiguousarray((img[:, :, :3].astype(np.float32) * alpha).astype(np.uint8))
    if channels == 3:
        return np.ascontiguousarray(img)
    raise InvalidImage(f"unsupported channel count {channels}")


def _is_truncated_jpeg(data: bytes) -> bool:
    """libjpeg pads a truncated stream with grey and only warns; catch it ourselves."""
    if data[:2] != b"\xff\xd8":
        return False
    tail = bytes(data[-64:]).rstrip(b"\x00\r\n ")
    return not tail.endswith(b"\xff\xd9")


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InvalidImage("could not encode JPEG")
    return buf.tobytes()
