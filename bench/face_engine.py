"""Face engine speed on this machine: detector ms/frame at three resolutions and FaceNet
faces/s at batch 1, 8 and 32. Frames come from the shared real footage when present.

    python bench/face_engine.py --out reports/bench_face_engine.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from facerec.config import BlazeFaceDetectorConfig, SsdDetectorConfig  # noqa: E402
from testkit import shared_data  # noqa: E402
from udfs.detectors.base import create_detector  # noqa: E402
from udfs.embed import FaceNetEmbedder  # noqa: E402

RESOLUTIONS = [(640, 480), (1280, 720), (1920, 1080)]


def frames_from(video: Path | None, n: int) -> list[np.ndarray]:
    if video and video.is_file():
        cap = cv2.VideoCapture(str(video))
        out = []
        while len(out) < n:
            ok, frame = cap.read()
            if not ok:
                break
            out.append(frame)
        cap.release()
        if out:
            return out
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8) for _ in range(n)]


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--video",
        type=Path,
        default=shared_data.videos_dir() / "facenet_pytorch_video.mp4",
    )
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("reports/bench_face_engine.json"))
    args = ap.parse_args()

    source = frames_from(args.video, 8)
    result: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "source": str(args.video) if args.video.is_file() else "random noise",
        "detectors": {},
        "embedder": {},
    }
    for config in (SsdDetectorConfig(), BlazeFaceDetectorConfig()):
        det = create_detector(config)
        per_res = {}
        for w, h in RESOLUTIONS:
            frames = [cv2.resize(f, (w, h)) for f in source]
            ms = timed(lambda det=det, frames=frames: det.detect(frames), max(2, args.repeats // 4))
            per_frame = [m / len(frames) for m in ms]
            per_res[f"{w}x{h}"] = {
                "ms_per_frame_median": round(statistics.median(per_frame), 2),
                "ms_per_frame_p95": round(float(np.percentile(per_frame, 95)), 2),
                "batch": len(frames),
            }
        result["detectors"][config.type] = per_res
        print(config.type, json.dumps(per_res), flush=True)

    embedder = FaceNetEmbedder(batch_size=64)
    rng = np.random.default_rng(1)
    for batch in (1, 8, 32):
        crops = rng.standard_normal((batch, 160, 160, 3)).astype(np.float32)
        ms = timed(
            lambda crops=crops: embedder.embed(crops), max(3, args.repeats // (1 + batch // 8))
        )
        med = statistics.median(ms)
        result["embedder"][f"batch_{batch}"] = {
            "ms_per_batch_median": round(med, 1),
            "ms_per_face": round(med / batch, 2),
            "faces_per_s": round(1000 * batch / med, 1),
        }
        print("embed", batch, result["embedder"][f"batch_{batch}"], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
