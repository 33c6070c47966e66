"""Fuzz the image decoder (``udfs.image.decode_image``, what every uploaded image and every
analysed frame goes through) with atheris, coverage-guided by libFuzzer over PIL's header
parsers and our checks; OpenCV's native decoders run on every input.

An input passes when it decodes to a uint8 BGR array or raises a ``FaceRecError`` (the typed
errors the API maps to 4xx and the job to dead letters). A crash is anything else: another
Python exception, a native crash, an input taking longer than ``--timeout`` seconds (the
per-image limit) or more than ``--rss-mb`` of memory. libFuzzer stops at the first one and
saves it under ``artifacts/`` in the work folder.

The fuzzer runs in a child process (atheris hands the process to libFuzzer, which exits it);
this script starts it, reads libFuzzer's final statistics and prints them as JSON:

    python bench/fuzz_image.py --seconds 600 --out reports/bench_fuzz_image.json
    python bench/fuzz_image.py --runs 2000 --seconds 60      # what tests/test_fuzz_image.py runs
"""

from __future__ import annotations

import argparse
import io
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ARTIFACT_KINDS = ("crash", "timeout", "oom", "leak", "slow-unit")


def seed_images() -> dict[str, bytes]:
    """Small images of every accepted format and layout, generated here (no data files)."""
    import cv2
    from PIL import Image

    yy, xx = np.mgrid[0:40, 0:48]
    bgr = np.dstack([xx * 5, yy * 6, (xx + yy) * 3]).astype(np.uint8)
    bgra = np.dstack([bgr, (xx * 5).astype(np.uint8)])
    grey16 = (xx * yy * 30).astype(np.uint16)

    def cv(ext: str, img: np.ndarray, *params: int) -> bytes:
        ok, buf = cv2.imencode(ext, img, list(params))
        assert ok, ext
        return buf.tobytes()

    def pil(fmt: str, **opts: object) -> bytes:
        out = io.BytesIO()
        Image.fromarray(bgr[:, :, ::-1]).save(out, fmt, **opts)
        return out.getvalue()

    return {
        "baseline.jpg": cv(".jpg", bgr, cv2.IMWRITE_JPEG_QUALITY, 80),
        "progressive.jpg": pil("JPEG", progressive=True, quality=80),
        "grey.jpg": cv(".jpg", bgr[:, :, 0]),
        "rgb.png": cv(".png", bgr),
        "rgba.png": cv(".png", bgra),
        "grey16.png": cv(".png", grey16),
        "rgb.bmp": cv(".bmp", bgr),
        "rgb.webp": cv(".webp", bgr, cv2.IMWRITE_WEBP_QUALITY, 80),
    }


def fuzz_child(libfuzzer_args: list[str]) -> None:
    """The fuzzing process: never returns (libFuzzer exits it)."""
    import atheris

    with atheris.instrument_imports(include=["PIL", "udfs", "facerec"]):
        from facerec.config import ImageLimits
        from facerec.errors import FaceRecError
        from udfs.image import decode_image

    limits = ImageLimits()

    def one_input(data: bytes) -> None:
        try:
            img = decode_image(
                data,
                max_bytes=limits.max_bytes,
                max_pixels=limits.max_pixels,
                min_side=limits.min_side,
            )
        except FaceRecError:
            return
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise AssertionError(f"decoded to {img.dtype} {img.shape}, not uint8 BGR")
        if not img.flags.c_contiguous:
            raise AssertionError("decoded array is not contiguous")

    atheris.Setup([sys.argv[0], *libfuzzer_args], one_input)
    atheris.Fuzz()


def _stat(log: str, name: str) -> int | None:
    match = re.search(rf"stat::{name}:\s+(\d+)", log)
    return int(match.group(1)) if match else None


def run(
    work: Path,
    seconds: int,
    runs: int | None = None,
    timeout_s: int = 10,
    rss_mb: int = 2048,
    seed: int = 1,
) -> dict[str, object]:
    """Fuzz in a child process for at most ``seconds`` (or ``runs`` inputs); the result."""
    seeds, corpus, artifacts = work / "seeds", work / "corpus", work / "artifacts"
    for folder in (seeds, corpus, artifacts):
        folder.mkdir(parents=True, exist_ok=True)
    for name, data in seed_images().items():
        (seeds / name).write_bytes(data)
    args = [
        f"-max_total_time={seconds}",
        f"-timeout={timeout_s}",
        f"-rss_limit_mb={rss_mb}",
        f"-seed={seed}",
        f"-artifact_prefix={artifacts}/",
        "-print_final_stats=1",
        str(corpus),
        str(seeds),
    ]
    if runs is not None:
        args.insert(0, f"-runs={runs}")
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=seconds + timeout_s + 120,
        check=False,
    )
    elapsed = time.monotonic() - start
    log = proc.stdout + proc.stderr
    found = sorted(p.name for p in artifacts.iterdir() if p.name.startswith(ARTIFACT_KINDS))
    execs = _stat(log, "number_of_executed_units")
    return {
        "target": "udfs.image.decode_image",
        "execs": execs,
        "seconds": round(elapsed, 1),
        "execs_per_s": round(execs / elapsed, 1) if execs else None,
        "crashes": len(found),
        "artifacts": [str(artifacts / name) for name in found],
        "exit_code": proc.returncode,
        "peak_rss_mb": _stat(log, "peak_rss_mb"),
        "slowest_input_s": _stat(log, "slowest_unit_time_sec"),
        "corpus_files": sum(1 for _ in corpus.iterdir()),
        "per_image_timeout_s": timeout_s,
        "rss_limit_mb": rss_mb,
        "seed": seed,
        "log_tail": log[-4000:],
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        fuzz_child(sys.argv[2:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=int, default=600, help="Stop after this long.")
    ap.add_argument("--runs", type=int, default=None, help="Stop after this many inputs.")
    ap.add_argument("--timeout", type=int, default=10, help="Per-image limit (s).")
    ap.add_argument("--rss-mb", type=int, default=2048, help="Memory limit of the fuzzer.")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--work", type=Path, default=None, help="Keep corpus and artifacts here.")
    ap.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    opts = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="fuzz-image-") as tmp:
        work = opts.work or Path(tmp)
        result = run(work, opts.seconds, opts.runs, opts.timeout, opts.rss_mb, opts.seed)
        if result["crashes"] and opts.work is None:
            result["artifacts_bytes_hex"] = {
                Path(p).name: Path(p).read_bytes()[:4096].hex() for p in result["artifacts"]
            }
    text = json.dumps(result, indent=2)
    print(text)
    if opts.out:
        opts.out.write_text(text + "\n")
    sys.exit(1 if result["crashes"] or result["exit_code"] else 0)


if __name__ == "__main__":
    main()
