"""Motion gate against its background weight (``job.motion.background_alpha``): the share
of frames removed on the job bench's scene (people walk in for 1 s, stand still for 2 s), on
real footage with people walking throughout (vtest.avi), and how many frames of a face
sliding in slowly (about 1.3 px per frame) the gate drops. Frames are taken at 5 fps.

    python bench/motion_gate.py --out reports/bench_motion_gate.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402

from facerec.config import MotionConfig  # noqa: E402
from jobs.walkthrough import Segment, write_face_video  # noqa: E402
from testkit import shared_data  # noqa: E402
from udfs.evaluation import list_identities  # noqa: E402
from udfs.image import encode_jpeg  # noqa: E402
from udfs.motion import MotionGate  # noqa: E402

FRAME_MS = 200  # 5 fps


def jpegs(path: Path, step: int = 1, limit: int = 400) -> list[bytes]:
    cap = cv2.VideoCapture(str(path))
    out: list[bytes] = []
    i = 0
    while len(out) < limit:
        ok, frame = cap.read()
        if not ok:
            break
        if i % step == 0:
            out.append(encode_jpeg(frame))
        i += 1
    cap.release()
    return out


def decisions(frames: list[bytes], alpha: float) -> list[bool]:
    gate = MotionGate(MotionConfig(background_alpha=alpha))
    return [gate.check(f, i * FRAME_MS).passed for i, f in enumerate(frames)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--faces", type=Path, default=shared_data.faces_dir() / "celebrity5")
    ap.add_argument(
        "--video",
        type=Path,
        default=shared_data.videos_dir() / "vtest.avi",
    )
    ap.add_argument("--alphas", default="0.5,0.7,0.8,1.0")
    ap.add_argument("--out", type=Path, default=Path("reports/bench_motion_gate.json"))
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="facerec-gate-"))
    val = list_identities(args.faces / "val")
    scene = [Segment(n, val[n][0], 5, 10) for n in sorted(val)]
    scene_truth = write_face_video(root / "scene.avi", scene, fps=5)
    slow = [Segment(n, val[n][0], 160, 5) for n in sorted(val)[:2]]
    slow_truth = write_face_video(root / "slow.avi", slow, fps=5)
    scene_frames, slow_frames = jpegs(root / "scene.avi"), jpegs(root / "slow.avi")
    real = jpegs(args.video, step=2) if args.video.is_file() else []  # 10 fps file -> 5 fps

    result: dict = {"frame_ms": FRAME_MS, "alphas": {}}
    for alpha in (float(a) for a in args.alphas.split(",")):
        passed = decisions(scene_frames, alpha)
        moving = [p for p, (_, m) in zip(passed, scene_truth, strict=True) if m]
        static = [p for p, (_, m) in zip(passed, scene_truth, strict=True) if not m]
        slow_moving = [
            p for p, (_, m) in zip(decisions(slow_frames, alpha), slow_truth, strict=True) if m
        ]
        row = {
            "scene_removed": round(1 - sum(passed) / len(passed), 3),
            "scene_static_share": round(len(static) / len(passed), 3),
            "scene_static_passed": sum(static),
            "scene_moving_dropped": len(moving) - sum(moving),
            "slow_moving_dropped": len(slow_moving) - sum(slow_moving),
            "slow_moving_frames": len(slow_moving),
        }
        if real:
            kept = decisions(real, alpha)
            row["real_footage_removed"] = round(1 - sum(kept) / len(kept), 3)
        result["alphas"][str(alpha)] = row
        print(alpha, json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
