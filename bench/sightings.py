"""Sightings against per-frame events: how many records a reviewer gets, and how often a
never-enrolled person is named, per frame and per sighting.

A 10 fps video of people walking in and standing still (``jobs.walkthrough``): the val
photos of ``--enrolled`` celebrity5 people (enrolled from their train photos) and, as
strangers, the other celebrity5 people and ``--lfw-strangers`` LFW identities. The job's
stages run in one process (``RecognitionPipeline``: motion gate, detector, FaceNet,
matcher, sighting tracker), once per threshold. Frames are stamped with the video's own
clock (10 fps), so the sighting gap means what it means on a live camera.

    python bench/sightings.py --thresholds 0.90,1.05,1.15 --out reports/bench_sightings.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402

from facerec.config import Settings  # noqa: E402
from facerec.records import UNKNOWN, FrameRecord, make_frame_id  # noqa: E402
from testkit import shared_data  # noqa: E402

FPS = 10


def video_records(video: Path, camera: str, start_ms: int) -> list[bytes]:
    """The video's frames as frame records stamped with the video's clock."""
    cap = cv2.VideoCapture(str(video))
    out, seq = [], 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
        ts = start_ms + seq * 1000 // FPS
        out.append(FrameRecord(
            camera_id=camera, region=camera, frame_id=make_frame_id(camera, start_ms, seq),
            seq=seq, capture_ts=ts, width=frame.shape[1], height=frame.shape[0],
            jpeg=jpeg.tobytes(), ingest_ts=ts,
        ).encode())
        seq += 1
    cap.release()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--faces", type=Path, default=shared_data.faces_dir())
    ap.add_argument("--enrolled", type=int, default=3)
    ap.add_argument("--lfw-strangers", type=int, default=40)
    ap.add_argument("--thresholds", default="0.90,1.05,1.15")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=ROOT / "reports" / "bench_sightings.json")
    args = ap.parse_args()

    from index_builder.snapshot import write_snapshot
    from jobs.walkthrough import Segment, write_face_video
    from testkit.videos import gallery_from_photos
    from udfs.engine import FaceEngine
    from udfs.evaluation import list_identities
    from udfs.match import Matcher
    from udfs.pipeline import RecognitionPipeline

    celebrity5 = args.faces / "celebrity5"
    names = sorted(list_identities(celebrity5 / "val"))
    enrolled = names[: args.enrolled]
    val = list_identities(celebrity5 / "val")
    shown = [(n, p) for n in names for p in val[n]]
    lfw = args.faces / "lfw"
    rng = random.Random(args.seed)
    if args.lfw_strangers and lfw.is_dir():
        people = sorted(d for d in lfw.iterdir() if d.is_dir())
        for d in rng.sample(people, args.lfw_strangers):
            shown.append((f"lfw:{d.name}", sorted(d.glob("*.jpg"))[0]))
    rng.shuffle(shown)

    engine = FaceEngine(Settings())
    engine.warmup()
    tmp = Path(tempfile.mkdtemp(prefix="bench-sightings-"))
    tids, pids, vecs = gallery_from_photos(engine, celebrity5 / "train", 6, enrolled)
    write_snapshot(
        tmp / "snapshots", tids, pids, vecs, model_id=engine.model_id, max_change_seq=0
    )
    video = tmp / "people.avi"
    # each person walks in for 1 s and stands still for 2 s
    truth = [who for who, _ in write_face_video(
        video, [Segment(who, photo, FPS, 2 * FPS) for who, photo in shown], fps=FPS
    )]
    payloads = video_records(video, "door", 1_700_000_000_000)

    runs: dict[str, Any] = {}
    for threshold in (float(t) for t in args.thresholds.split(",")):
        settings = Settings(match={"threshold": threshold})
        matcher = Matcher(engine.model_id, threshold=threshold)
        matcher.load_snapshot(next((tmp / "snapshots").iterdir()))
        started = time.perf_counter()
        out = RecognitionPipeline(settings, engine, matcher).process(payloads)
        wall = time.perf_counter() - started
        matcher.close()
        final = {u.sighting.sighting_id: u.sighting for u in out.sightings}

        def who(frame_id: str) -> str:
            return truth[int(frame_id.rsplit(":", 1)[1])]

        def rates(items: list[tuple[str, str]]) -> dict[str, Any]:
            """(who was there, what was decided) -> FPIR on strangers, TPIR on enrolled."""
            strangers = [(w, d) for w, d in items if w not in enrolled]
            known = [(w, d) for w, d in items if w in enrolled]
            false_accepts = sum(d != UNKNOWN for _, d in strangers)
            return {
                "records": len(items),
                "stranger_records": len(strangers),
                "stranger_named": false_accepts,
                "fpir": round(false_accepts / len(strangers), 4) if strangers else None,
                "enrolled_records": len(known),
                "tpir": round(sum(w == d for w, d in known) / len(known), 4) if known else None,
            }

        runs[f"{threshold:.2f}"] = {
            "per_frame_events": rates([(who(e.frame_id), e.identity) for e in out.events]),
            "per_sighting": rates([(who(s.best_frame_id), s.identity) for s in final.values()]),
            "sighting_publications": len(out.sightings),
            "frames": len(payloads),
            "frames_gated_out": sum(1 for s in out.stats if not s.passed),
            "wall_s": round(wall, 1),
        }
        print(threshold, json.dumps(runs[f"{threshold:.2f}"]), flush=True)
    report = {
        "people_shown": len(shown),
        "enrolled": enrolled,
        "strangers": len(shown) - sum(w in enrolled for w, _ in shown),
        "seed": args.seed,
        "sightings_config": Settings().job.sightings.model_dump(),
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
