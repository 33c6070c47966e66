"""Image decoding that never crashes: every bad input becomes a typed error.

Images are returned as contiguous uint8 BGR arrays (OpenCV's convention) whatever the
source: grayscale is expanded, alpha is composited on black, 16-bit is scaled down.

Every limit is checked from the header *before* decoding (``check_header``), so hostile
bytes cost a few bytes of parsing, not gigabytes of memory or minutes of CPU:
- the encoded size (``max_bytes``) and the declared pixel count (``max_pixels``): a
  decompression bomb is refused from its header;
- the format: only JPEG, PNG, BMP and WebP, recognised by PIL *and* starting with that
  format's signature, so OpenCV (which picks its decoder by the signature) decodes the same
  format PIL measured, and no other OpenCV decoder sees hostile bytes;
- the number of JPEG scans (``MAX_JPEG_SCANS``, ``JPEG_PASSES``): a progressive JPEG can
  repeat scans, each a full pass over the image in a few bytes; 1,000 of them make a 125 KB
  file take 17 s;
- PNG chunks that run past the end of the data (OpenCV allocates what a chunk declares).
These bound the time one image can take (tests/test_fuzz_image.py decodes the worst cases
allowed within 10 s on a loaded 2-core machine).
"""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image

from facerec.errors import ImageTooLarge, ImageTooSmall, InvalidImage

DEFAULT_MAX_BYTES = 20_000_000
DEFAULT_MAX_PIXELS = 40_000_000
DEFAULT_MIN_SIDE = 32
MAX_JPEG_SCANS = 256
JPEG_PASSES = 16
"""A JPEG's scans times its pixels may not pass JPEG_PASSES times ``max_pixels``: 16 full
passes over the largest image allowed, so 16 scans at 40 megapixels, 256 at 2.5. Real
progressive JPEGs have 6 (grey) to 18 (CMYK) scans: libjpeg's scripts, mozjpeg's searched
ones fewer."""

MAX_PNG_CHUNKS = 100_000
"""libpng writes 8 KB chunks: 2,500 of them in a 20 MB file; more is no real PNG."""

_SIGNATURES: dict[str, tuple[bytes, ...]] = {
    "JPEG": (b"\xff\xd8\xff",),
    "MPO": (b"\xff\xd8\xff",),  # a JPEG with a multi-picture extension (phone cameras)
    "PNG": (b"\x89PNG\r\n\x1a\n",),
    "BMP": (b"BM",),
    "WEBP": (b"RIFF",),
}
_PIL_FORMATS = ("JPEG", "PNG", "BMP", "WEBP")  # PIL opens MPO files with its JPEG plugin
_SOS = b"\xff\xda"  # start of scan; entropy-coded data stuffs every 0xFF, so it never holds one


def _header(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) read from the header only."""
    try:
        with warnings.catch_warnings():
            # our own max_pixels decides (check_header), with a message naming it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_PIL_FORMATS) as im:
                fmt, width, height = str(im.format), int(im.width), int(im.height)
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"image header declares too many pixels ({exc})") from exc
    except Exception as exc:  # noqa: BLE001 - PIL's parsers raise assorted types on bad headers
        raise InvalidImage(
            f"not a JPEG, PNG, BMP or WebP image ({len(data)} bytes): {type(exc).__name__}"
        ) from exc
    if not data.startswith(_SIGNATURES.get(fmt, ())) or (fmt == "WEBP" and data[8:12] != b"WEBP"):
        raise InvalidImage(f"{fmt} header without the {fmt} signature at the start")
    return fmt, width, height


def check_header(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> tuple[int, int]:
    """Every limit checked without decoding; returns the declared (width, height)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidImage(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise InvalidImage("empty image (0 bytes)")
    if len(data) > max_bytes:
        raise ImageTooLarge(f"encoded image is {len(data)} bytes; the limit is {max_bytes}")
    data = bytes(data)
    fmt, width, height = _header(data)
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} = {width * height} pixels; the limit is {max_pixels}"
        )
    if min(width, height) < min_side:
        raise ImageTooSmall(f"image is {width}x{height}; both sides must be >= {min_side} px")
    if fmt in ("JPEG", "MPO"):
        scans = data.count(_SOS)
        allowed = min(MAX_JPEG_SCANS, JPEG_PASSES * max_pixels // (width * height))
        if scans > allowed:
            raise ImageTooLarge(
                f"JPEG has {scans} scans; at {width}x{height} the limit is {allowed}"
            )
        if _is_truncated_jpeg(data):
            raise InvalidImage("JPEG data is truncated (no end-of-image marker)")
    if fmt == "PNG":
        _check_png_chunks(data)
    return width, height


def decode_image(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int = DEFAULT_MIN_SIDE,
) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, BMP, WebP) into a uint8 BGR array."""
    width, height = check_header(
        data, max_bytes=max_bytes, max_pixels=max_pixels, min_side=min_side
    )
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise InvalidImage(f"image data is corrupt ({width}x{height} declared)") from exc
    if img is None:
        raise InvalidImage(f"image data is corrupt or truncated ({width}x{height} declared)")
    if img.shape[0] != height or img.shape[1] != width:
        raise InvalidImage(
            f"decoded {img.shape[1]}x{img.shape[0]} but header says {width}x{height}"
        )
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
        # in uint8 with OpenCV (not float32 arrays): 3 bytes a pixel more, not 28
        alpha = cv2.cvtColor(np.ascontiguousarray(img[:, :, 3]), cv2.COLOR_GRAY2BGR)
        return cv2.multiply(cv2.cvtColor(img, cv2.COLOR_BGRA2BGR), alpha, scale=1 / 255)
    if channels == 3:
        return np.ascontiguousarray(img)
    raise InvalidImage(f"unsupported channel count {channels}")


def _is_truncated_jpeg(data: bytes) -> bool:
    """libjpeg pads a truncated stream with grey and only warns; catch it ourselves."""
    tail = data[-64:].rstrip(b"\x00\r\n ")
    return not tail.endswith(b"\xff\xd9")


def _check_png_chunks(data: bytes) -> None:
    """Every chunk within the data, up to IEND. OpenCV's PNG reader allocates the length a
    chunk declares before reading it: a 55-byte file declaring a 2 GB chunk took 2 GB and
    15 s (found by bench/fuzz_image.py)."""
    pos, chunks = 8, 0
    while pos + 12 <= len(data) and chunks < MAX_PNG_CHUNKS:
        end = pos + 12 + int.from_bytes(data[pos : pos + 4], "big")
        if end > len(data):
            break
        if data[pos + 4 : pos + 8] == b"IEND":
            return
        pos, chunks = end, chunks + 1
    if chunks >= MAX_PNG_CHUNKS:
        raise InvalidImage(f"PNG has more than {MAX_PNG_CHUNKS} chunks")
    raise InvalidImage(f"PNG data is truncated (a chunk runs past the end, {len(data)} bytes)")


def encode_jpeg(img: np.ndarray, quality: int = 90) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise InvalidImage("could not encode JPEG")
    return buf.tobytes()
