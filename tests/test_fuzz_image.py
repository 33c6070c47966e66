"""The image decoder under hostile bytes: a bounded atheris run (bench/fuzz_image.py, in a
subprocess so a native crash fails the test with its output), the worst case of the per-image
time limit, and what the fuzzer found."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from facerec.errors import ImageTooLarge, InvalidImage
from udfs.image import DEFAULT_MAX_PIXELS, JPEG_PASSES, MAX_JPEG_SCANS, decode_image

ROOT = Path(__file__).resolve().parents[1]
PER_IMAGE_LIMIT_S = 10  # bench/fuzz_image.py --timeout: longer than this is a hang


def test_given_seeded_fuzzing_when_decoding_then_no_crash_and_no_hang(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "fuzz_image.py"), "--runs", "3000",
         "--seconds", "60", "--timeout", str(PER_IMAGE_LIMIT_S), "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.stdout.startswith("{"), f"the fuzzer did not report:\n{proc.stderr[-4000:]}"
    result = json.loads(proc.stdout)
    assert result["crashes"] == 0 and proc.returncode == 0, (
        f"{result['artifacts']}\n{result['log_tail']}"
    )
    assert result["execs"] >= 3000 and result["corpus_files"] > 0, result


def _jpeg_segments(data: bytes) -> list[bytes]:
    """The segments of a JPEG after SOI: markers with their payload, each scan with its
    entropy-coded data, EOI."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append(data[i : i + 2])
            break
        end = i + 2 + int.from_bytes(data[i + 2 : i + 4], "big")
        if marker == 0xDA:  # a scan runs to the next marker that is not a stuffed byte or RST
            while not (data[end] == 0xFF and data[end + 1] not in (0, *range(0xD0, 0xD8))):
                end += 1
        out.append(data[i:end])
        i = end
    return out


def _progressive_with_scans(side: int, scans: int) -> bytes:
    """A grey side x side progressive JPEG whose last (refinement) scan is repeated until it
    has ``scans`` scans: each repeat is a full pass over the image in a few dozen bytes."""
    out = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).save(out, "JPEG", progressive=True)
    segments = _jpeg_segments(out.getvalue())
    found = [s for s in segments if s[1] == 0xDA]
    extra = [found[-1]] * (scans - len(found))
    return b"\xff\xd8" + b"".join(segments[:-1] + extra + segments[-1:])


WORST = {  # side -> scans: JPEG_PASSES passes over images.max_pixels, at two sizes
    int(DEFAULT_MAX_PIXELS**0.5): JPEG_PASSES,
    int((DEFAULT_MAX_PIXELS * JPEG_PASSES / MAX_JPEG_SCANS) ** 0.5): MAX_JPEG_SCANS,
}


@pytest.mark.parametrize("side", sorted(WORST), ids=lambda side: f"{side}px")
def test_given_the_worst_jpeg_allowed_when_decoded_then_within_the_per_image_limit(side):
    scans = WORST[side]
    worst = _progressive_with_scans(side, scans)
    assert worst.count(b"\xff\xda") == scans
    start = time.monotonic()
    img = decode_image(worst)
    took = time.monotonic() - start
    print(f"{side}x{side}, {scans} scans ({len(worst)} bytes): decoded in {took:.2f} s")
    assert img.shape[:2] == (side, side)
    assert took < PER_IMAGE_LIMIT_S
    # one scan more is refused from the header
    bomb = _progressive_with_scans(side, scans + 1)
    start = time.monotonic()
    with pytest.raises(ImageTooLarge, match=f"{scans + 1} scans"):
        decode_image(bomb)
    assert time.monotonic() - start < 0.5


def test_given_a_png_chunk_declaring_2gb_when_decoded_then_refused_before_decoding():
    """Found by bench/fuzz_image.py: OpenCV allocated the 2 GB this 55-byte PNG's second
    chunk declares (15 s, 2 GB resident) before failing."""
    data = bytes.fromhex(
        "89504e470d0a1a0a0000000d494844520000003000000028080200000037e5ee26"
        "800006344944415458c6888801000000000000108882"
    )
    start = time.monotonic()
    with pytest.raises(InvalidImage, match="truncated"):
        decode_image(data)
    assert time.monotonic() - start < 0.5
