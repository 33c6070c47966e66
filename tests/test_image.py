"""Given bad image bytes, when decoded, then a typed error says what is wrong; nothing crashes."""

from __future__ import annotations

import io
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from facerec.errors import ImageTooLarge, ImageTooSmall, InvalidImage
from udfs.image import decode_image, encode_jpeg


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok
    return buf.tobytes()


@pytest.fixture
def photo() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(120, 160, 3), dtype=np.uint8)


def test_given_jpeg_when_decoded_then_bgr_uint8_of_same_size(photo):
    img = decode_image(encode_jpeg(photo))
    assert img.shape == (120, 160, 3) and img.dtype == np.uint8


@pytest.mark.parametrize(
    "data,error",
    [
        (b"", InvalidImage),
        (b"this is not an image at all, just text", InvalidImage),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, InvalidImage),
    ],
    ids=["empty", "text", "broken-png-header"],
)
def test_given_non_image_bytes_when_decoded_then_invalid_image(data, error):
    with pytest.raises(error):
        decode_image(data)


def test_given_truncated_jpeg_when_decoded_then_invalid_image(photo):
    data = encode_jpeg(photo)
    with pytest.raises(InvalidImage, match="truncated|corrupt"):
        decode_image(data[: len(data) // 2])


def test_given_1x1_image_when_decoded_then_too_small():
    with pytest.raises(ImageTooSmall, match="1x1"):
        decode_image(_png(np.zeros((1, 1, 3), np.uint8)))


def test_given_grayscale_when_decoded_then_three_channels():
    grey = np.full((64, 80), 128, np.uint8)
    img = decode_image(_png(grey))
    assert img.shape == (64, 80, 3)
    assert (img == 128).all()


def test_given_rgba_png_when_decoded_then_alpha_composited_on_black():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[:32, :, 3] = 255  # top half opaque, bottom half transparent
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    img = decode_image(buf.getvalue())
    assert img.shape == (64, 64, 3)
    assert (img[:32] == 200).all() and (img[32:] == 0).all()


def test_given_image_above_pixel_limit_when_decoded_then_too_large_before_decoding():
    big = np.zeros((2000, 3000, 3), np.uint8)  # compresses to a few KB
    with pytest.raises(ImageTooLarge, match="6000000 pixels"):
        decode_image(_png(big), max_pixels=1_000_000)


def test_given_png_header_declaring_a_bomb_when_decoded_then_too_large():
    """A 1x1 PNG whose IHDR claims 100000x100000 pixels: refused from the header alone."""
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    )
    with pytest.raises(ImageTooLarge):
        decode_image(data)


def test_given_bytes_above_size_limit_when_decoded_then_too_large(photo):
    with pytest.raises(ImageTooLarge, match="bytes"):
        decode_image(encode_jpeg(photo), max_bytes=1024)


def test_given_not_bytes_when_decoded_then_invalid_image():
    with pytest.raises(InvalidImage, match="expected image bytes"):
        decode_image("a string")  # type: ignore[arg-type]
