"""The recognition job on a local MiniCluster: frame-to-event latency and sustained frame
rate with N cameras at a fixed rate, faces/s through the job against the same stages in
one process and against the raw embedder, and the motion gate's share.

Cameras play videos built from real face photos (celebrity5 val) with moving and static
stretches; the gallery is celebrity5 train. A second throughput run (``--crowd ROWSxCOLS``)
shows several people per frame with embedding reuse off, so every face goes through
FaceNet: the run that compares the job with the raw embedder.

Overload runs (``--overload 2,4``) feed the cameras, motion gate off, at 2x and 4x the frame
rate the throughput run measured the job can analyse, and report per camera the p95 latency
of the analysed frames (to be within ``job.latency_budget_ms``), the shed share and the
analysed frames/s (to stay near capacity, not collapse).

    python bench/job.py --cameras 4 --fps 5 --loops 4 --warmup 20 --out reports/bench_job.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from facerec.config import JobConfig, Settings, with_overrides  # noqa: E402
from jobs.walkthrough import Segment, write_face_video  # noqa: E402
from testkit import shared_data  # noqa: E402
from testkit.videos import gallery_from_photos, write_crowd_video  # noqa: E402
from udfs.evaluation import list_identities  # noqa: E402


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    a = np.array(values, dtype=float)
    return {f"p{q}": round(float(np.percentile(a, q)), 1) for q in (50, 95, 99)} | {
        "max": round(float(a.max()), 1),
        "n": len(values),
    }


def build_world(
    faces: Path, root: Path, cameras: int, fps: float, stagger: bool = True, detector: str = "ssd"
) -> tuple[Path, list[Path], dict[str, list[str]]]:
    """Gallery from celebrity5 train, one video per camera from celebrity5 val. With
    ``stagger`` camera i starts i/cameras of a 3 s cycle late (a still photo until then),
    as independent cameras would; without it every camera sees motion at the same moment
    (the worst case for the recognize operator). The gallery is enrolled with the job's
    detector, as a deployment would (boxes, so crops, differ between detectors). Returns
    the data dir, the videos and, per camera, who is on screen in each frame."""
    from index_builder.publish import IndexPublisher
    from index_builder.snapshot import write_snapshot
    from udfs.engine import FaceEngine

    engine = FaceEngine(Settings(detector={"type": detector}))
    val = list_identities(faces / "val")
    tids, pids, vecs = gallery_from_photos(engine, faces / "train", per_person=8)
    data = root / "data"
    info = write_snapshot(
        data / "snapshots", tids, pids, vecs, model_id=engine.model_id, max_change_seq=0
    )
    IndexPublisher(data / "manifests").publish_snapshot(info)
    names = sorted(val)
    videos, truth = [], {}
    for cam in range(cameras):
        order = names[cam % len(names) :] + names[: cam % len(names)]
        # per identity: 1 s walking in, 2 s standing still
        segs = [Segment(n, val[n][cam % len(val[n])], int(fps), int(2 * fps)) for n in order]
        lead = round(cam * 3 * fps / cameras) if stagger else 0
        if lead:  # the last person of the cycle standing still: no motion until the cycle
            last = segs[-1]
            segs.insert(0, Segment(last.identity, last.image, 0, lead))
        path = root / f"cam{cam + 1}.avi"
        truth[path.stem] = [who for who, _ in write_face_video(path, segs, fps=fps)]
        videos.append(path)
    return data, videos, truth


def build_crowds(
    faces: Path, root: Path, cameras: int, grid: tuple[int, int], frames: int = 40
) -> tuple[list[Path], dict[str, list]]:
    """One crowd video per camera (celebrity5 val photos, a different arrangement each);
    returns the videos and, per camera, each grid cell's person and box."""
    val = list_identities(faces / "val")
    names = sorted(val)
    videos, cells = [], {}
    for cam in range(cameras):
        photos = []
        for k in range(grid[0] * grid[1]):
            name = names[(k + cam) % len(names)]
            photos.append((name, val[name][(k // len(names) + cam) % len(val[name])]))
        path = root / f"crowd{cam + 1}.avi"
        cells[path.stem] = write_crowd_video(path, photos, frames, grid)
        videos.append(path)
    return videos, cells


def crowd_judge(cells: dict[str, list]):
    """An event is right when it names the person whose grid cell holds its box's centre."""

    def right(event: dict) -> bool:
        x1, y1, x2, y2 = event["box"]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        for identity, (a, b, c, d) in cells[event["camera_id"]]:
            if a <= cx < c and b <= cy < d:
                return event["identity"] == identity
        return False

    return right


def run_job(settings: Settings, videos: list[Path], name: str) -> dict:
    """Run the job as on a cluster: sinks only (event store, dead-letter and frame-stat JSON
    lines), no collect client. Pulling results through ``execute_and_collect`` polls the
    MiniCluster from this process and cost ~0.7 s of p50 latency (1.5 s against 0.8 s,
    parallelism 1)."""
    from pyflink.common import Types

    from facerec.eventstore import SightingQuery, open_event_store
    from facerec.eventstore.base import MAX_LIMIT
    from jobs import flink_sources as fs
    from jobs.recognition import build_job
    from udfs.flink_functions import AppendJsonLines

    out = Path(settings.data_dir) / f"bench-{name}"  # this run's event store and stats
    settings = with_overrides(settings, {"events": {"sqlite_path": out / "events.sqlite"}})
    env, streams = build_job(settings, "video:" + ",".join(map(str, videos)))
    stats_file = AppendJsonLines(str(out), "stats")
    fs.discard(streams.frame_stats.map(stats_file, output_type=Types.STRING()))
    for stream in streams.outputs():
        if stream is not streams.frame_stats:
            fs.discard(stream)
    dead_dir = settings.dead_letters_path()
    dead_before = sum(1 for f in dead_dir.glob("*.jsonl") for _ in f.open())
    started = time.time()
    env.execute("bench")
    wall = time.time() - started
    events, cursor = [], None
    with open_event_store(settings) as store:
        while True:
            page, cursor = store.search(limit=MAX_LIMIT, cursor=cursor)
            events += [e.to_dict() for e in page]
            if cursor is None:
                break
        sightings, cursor = [], None
        while True:
            found, cursor = store.search_sightings(SightingQuery(), limit=MAX_LIMIT, cursor=cursor)
            sightings += [s.to_dict() for s in found]
            if cursor is None:
                break
    stats = [json.loads(line) for f in out.glob("stats-*.jsonl") for line in f.open()]
    dead = sum(1 for f in dead_dir.glob("*.jsonl") for _ in f.open()) - dead_before
    return {"events": events, "stats": stats, "dead": dead, "wall_s": wall, "sightings": sightings}


def in_process(settings: Settings, data: Path, videos: list[Path]) -> dict:
    """The job's stages in one process (udfs/pipeline.RecognitionPipeline) over the same
    frames: what the job would do without Flink, so job/in-process is its overhead."""
    from jobs.cameras import CameraReader
    from jobs.sources import parse_video_source
    from udfs.engine import FaceEngine
    from udfs.match import Matcher

    payloads = []
    reading = time.perf_counter()  # what the job's camera source does before the stages
    for plan in parse_video_source(",".join(map(str, videos)), settings):
        reader = CameraReader(plan.cam)
        records = map(reader.read, range(plan.frames or 0))
        payloads += [r.encode() for r in records if r is not None]
        reader.close()
    read_s = time.perf_counter() - reading
    engine = FaceEngine(settings)
    engine.warmup()
    matcher = Matcher(engine.model_id, threshold=settings.match.threshold)
    matcher.load_snapshot(next((data / "snapshots").iterdir()))
    from udfs.pipeline import RecognitionPipeline

    started = time.perf_counter()
    out = RecognitionPipeline(settings, engine, matcher).process(payloads)
    wall = time.perf_counter() - started
    matcher.close()
    return {
        "frames": len(payloads),
        "events": len(out.events),
        "frames_per_s": round(len(payloads) / wall, 2),
        "faces_per_s": round(len(out.events) / wall, 2),
        # the job also reads and JPEG-encodes the videos (its camera source), on the same cores
        "read_encode_ms_per_frame": round(1000 * read_s / len(payloads), 2),
        "faces_per_s_with_reading": round(len(out.events) / (wall + read_s), 2),
    }


def scene_judge(truth: dict[str, list[str]]):
    """An event is right when it names the person on screen in its frame (frame ids end in
    the sequence number; looped files repeat the truth)."""

    def right(event: dict) -> bool:
        frames = truth[event["camera_id"]]
        seq = int(event["frame_id"].rsplit(":", 1)[1])
        return event["identity"] == frames[seq % len(frames)]

    return right


def accuracy(events: list[dict], judge) -> dict:
    right = unknown = 0
    for e in events:
        right += judge(e)
        unknown += e["identity"] == "unknown"
    n = len(events) or 1
    return {"right": round(right / n, 4), "unknown": round(unknown / n, 4)}


def latency_ms(event: dict) -> int:
    """Capture to match of one event."""
    return event["stages"]["match"] - event["capture_ts"]


def stage_percentiles(events: list[dict]) -> dict:
    """Per stage, the time from the previous stage's end (capture for the gate)."""
    per_stage = {}
    for stage, prev in (
        ("gate", "capture_ts"),
        ("detect", "gate"),
        ("embed", "detect"),
        ("match", "embed"),
    ):
        per_stage[stage] = percentiles(
            [
                e["stages"][stage]
                - (e["capture_ts"] if prev == "capture_ts" else e["stages"][prev])
                for e in events
            ]
        )
    return per_stage


def summarize(run: dict, warmup_s: float, judge) -> dict:
    events, stats = run["events"], run["stats"]
    t0 = min((e["capture_ts"] for e in events), default=0)
    steady = [e for e in events if e["capture_ts"] - t0 >= warmup_s * 1000]
    lat = lambda es: [latency_ms(e) for e in es]  # noqa: E731
    per_stage = stage_percentiles(steady)
    frames = len(stats)
    gated = sum(1 for s in stats if not s["passed"])
    # sustained rate: from the first frame the job finished to the last, so the seconds the
    # job spends starting (TensorFlow loading while the readers already run) do not count
    done = [s["done_ms"] for s in stats]
    span_s = (max(done) - min(done)) / 1000 if len(done) > 1 else 0
    # the later half of that span: the JVM compiles Flink's and Beam's hot paths (C1/C2
    # threads on the same cores) during the first minutes; a 24/7 job runs past that
    half_at = (max(done) + min(done)) / 2 if len(done) > 1 else 0
    late_frames = [s for s in stats if s["done_ms"] >= half_at]
    late_events = [e for e in events if e["stages"]["match"] >= half_at]
    return {
        "frames": frames,
        "frames_gated_out": gated,
        "gate_fraction_removed": round(gated / frames, 3) if frames else None,
        "frames_shed": sum(1 for s in stats if s.get("shed")),
        "events": len(events),
        # one record per person per appearance, against one per face per frame
        "sightings": len(run.get("sightings", [])),
        "sightings_by_identity": dict(
            Counter(s["identity"] for s in run.get("sightings", [])).most_common()
        ),
        "faces_reused": sum(s.get("reused", 0) for s in stats),
        "dead_letters": run["dead"],
        "latency_ms_all": percentiles(lat(events)),
        f"latency_ms_after_{warmup_s:.0f}s": percentiles(lat(steady)),
        # how long start-up lasts: the capture time (s after the first) of the last event
        # that took over 200 ms
        "last_over_200ms_at_s": max(
            (
                (e["capture_ts"] - t0) / 1000
                for e in events
                if latency_ms(e) > 200
            ),
            default=None,
        ),
        "stage_ms_steady": per_stage,
        "frames_per_s": round(frames / span_s, 2) if span_s else None,
        "faces_per_s": round(len(events) / span_s, 2) if span_s else None,
        "frames_per_s_later_half": round(len(late_frames) / (span_s / 2), 2) if span_s else None,
        "faces_per_s_later_half": round(len(late_events) / (span_s / 2), 2) if span_s else None,
        "wall_s": round(run["wall_s"], 1),
        "identities": sorted({e["identity"] for e in events}),
        "accuracy": accuracy(events, judge),
    }


def overload_run(
    args: argparse.Namespace, base: dict, job: dict, capacity_fps: float, factor: float
) -> dict:
    """The cameras at ``factor`` x ``capacity_fps`` together (motion gate off: every frame
    needs analysing), paced like live cameras; per camera what was analysed, shed, and how
    late. The first ``args.warmup`` seconds (TensorFlow loading, the cost estimate forming)
    are left out of the steady figures."""
    fps = round(factor * capacity_fps / args.cameras, 1)
    root = Path(tempfile.mkdtemp(prefix=f"facerec-overload-{factor:g}x-"))
    data, videos, _ = build_world(args.faces, root, args.cameras, fps, True, args.detector)
    live = Settings(
        **(base | {"data_dir": str(data)}),
        job=job
        | {
            "motion": {"enabled": False},
            "video": {"realtime": True, "loop": args.overload_loops, "region": args.region},
        },
    )
    run = run_job(live, videos, f"overload-{factor:g}x")
    stats, events = run["stats"], run["events"]
    t0 = min(s["done_ms"] for s in stats)
    steady_from = t0 + args.warmup * 1000
    cameras = {}
    for camera in sorted({s["camera_id"] for s in stats}):
        mine = [s for s in stats if s["camera_id"] == camera and s["done_ms"] >= steady_from]
        analysed = [s for s in mine if s["passed"] and not s.get("shed")]
        shed = [s for s in mine if s.get("shed")]
        done = [s["done_ms"] for s in mine]
        span_s = (max(done) - min(done)) / 1000 if len(done) > 1 else 0
        lat = [
            latency_ms(e)
            for e in events
            if e["camera_id"] == camera and e["capture_ts"] >= steady_from
        ]
        cameras[camera] = {
            "frames": len(mine),
            "shed_share": round(len(shed) / len(mine), 3) if mine else None,
            "analysed_frames_per_s": round(len(analysed) / span_s, 2) if span_s else None,
            "latency_ms_analysed": percentiles(lat),
        }
    every = [s for s in stats if s["done_ms"] >= steady_from]
    analysed_all = sum(1 for s in every if s["passed"] and not s.get("shed"))
    span = (max(s["done_ms"] for s in every) - steady_from) / 1000 if every else 0
    steady = [e for e in events if e["capture_ts"] >= steady_from]
    all_lat = [latency_ms(e) for e in steady]
    # the faces that took their track's embedding against those FaceNet embedded: the load
    # shedder plans the two kinds of frame apart (udfs/shedding.py)
    by_embedding = {
        kind: percentiles(
            [latency_ms(e) for e in steady if ("reused" in e["stages"]) == (kind == "reused")]
        )
        for kind in ("reused", "embedded")
    }
    return {
        "factor": factor,
        "fps_per_camera": fps,
        "input_frames_per_s": round(fps * args.cameras, 1),
        "frames": len(stats),
        "frames_shed": sum(1 for s in stats if s.get("shed")),
        "frames_analysed": sum(1 for s in stats if s["passed"] and not s.get("shed")),
        "analysed_frames_per_s": round(analysed_all / span, 2) if span else None,
        "analysed_vs_capacity": round(analysed_all / span / capacity_fps, 2) if span else None,
        "latency_ms_analysed": percentiles(all_lat),
        "latency_ms_analysed_by_embedding": by_embedding,
        "stages_ms_analysed": stage_percentiles(steady),
        "per_camera": cameras,
        "wall_s": round(run["wall_s"], 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--faces",
        type=Path,
        default=shared_data.faces_dir() / "celebrity5",
    )
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--loops", type=int, default=3)
    ap.add_argument(
        "--parallelism",
        type=int,
        default=1,
        help="1: each frame analysed on all cores (the lowest latency on 2 cores); for "
        "throughput, the cores with --worker-threads 1.",
    )
    ap.add_argument(
        "--worker-threads",
        type=int,
        default=0,
        help="job.worker_threads: OpenCV and TensorFlow threads per recognize worker (0: all "
        "cores). The in-process run keeps the libraries' defaults.",
    )
    ap.add_argument("--detector", default="ssd")
    ap.add_argument(
        "--warmup", type=float, default=10.0, help="Seconds excluded from steady-state latency."
    )
    ap.add_argument(
        "--region",
        default=None,
        help="job.video.region: one region per camera by default (the job's unit of "
        "parallelism), named so that each recognize subtask gets as many cameras "
        "(balanced_template); a fixed name puts every camera on one key, so on one subtask.",
    )
    ap.add_argument("--checkpoint-ms", type=int, default=10_000, help="Checkpoint interval.")
    defaults = JobConfig.model_fields
    ap.add_argument(
        "--bundle-size", type=int, default=defaults["bundle_size"].default, help="job.bundle_size"
    )
    ap.add_argument(
        "--bundle-time-ms",
        type=int,
        default=defaults["bundle_time_ms"].default,
        help="job.bundle_time_ms",
    )
    ap.add_argument(
        "--backlog-bundle-size",
        type=int,
        default=defaults["backlog_bundle_size"].default,
        help="job.backlog_bundle_size: the unpaced runs (throughput, crowd)",
    )
    ap.add_argument(
        "--backlog-bundle-time-ms",
        type=int,
        default=defaults["backlog_bundle_time_ms"].default,
        help="job.backlog_bundle_time_ms",
    )
    ap.add_argument(
        "--no-stagger",
        action="store_true",
        help="Start every camera's motion at the same moment (worst case) instead of out of "
        "phase like independent cameras.",
    )
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument(
        "--crowd",
        default="2x3",
        help="ROWSxCOLS people per frame in the embedder-bound throughput run ('' skips it).",
    )
    ap.add_argument("--skip-realtime", action="store_true")
    ap.add_argument(
        "--overload",
        default="",
        help="Comma-separated factors (e.g. 2,4): runs at that many times the analysable "
        "frame rate (the throughput run's, or --capacity-fps).",
    )
    ap.add_argument(
        "--capacity-fps",
        type=float,
        default=None,
        help="Frames/s the job analyses, for --overload without the throughput run.",
    )
    ap.add_argument("--overload-loops", type=int, default=2, help="Plays of each overload video.")
    ap.add_argument(
        "--latency-budget-ms", type=int, default=None, help="Override job.latency_budget_ms."
    )
    ap.add_argument("--max-frames", type=int, default=None, help="Override job.batch.max_frames.")
    ap.add_argument(
        "--realtime-lag-ms", type=int, default=None, help="Override job.batch.realtime_lag_ms."
    )
    ap.add_argument("--out", type=Path, default=Path("reports/bench_job.json"))
    args = ap.parse_args()

    if args.region is None:
        from bench.cluster_probe import balanced_template

        cameras = [f"cam{c + 1}" for c in range(args.cameras)]
        args.region = balanced_template(cameras, args.parallelism)
    root = Path(tempfile.mkdtemp(prefix="facerec-bench-"))
    data, videos, truth = build_world(
        args.faces, root, args.cameras, args.fps, not args.no_stagger, args.detector
    )
    base = {"data_dir": str(data), "detector": {"type": args.detector}}
    batch = {"max_frames": args.max_frames} if args.max_frames else {}
    if args.realtime_lag_ms is not None:
        batch["realtime_lag_ms"] = args.realtime_lag_ms
    budget = {} if args.latency_budget_ms is None else {"latency_budget_ms": args.latency_budget_ms}
    result: dict = {
        "cameras": args.cameras,
        "fps_per_camera": args.fps,
        "parallelism": args.parallelism,
        "worker_threads": args.worker_threads,
        "detector": args.detector,
        "region": args.region,
        "checkpoint_interval_ms": args.checkpoint_ms,
        "bundle_size": args.bundle_size,
        "bundle_time_ms": args.bundle_time_ms,
        "backlog_bundle_size": args.backlog_bundle_size,
        "backlog_bundle_time_ms": args.backlog_bundle_time_ms,
        "cpus": os.cpu_count(),
    }

    job = {
        "parallelism": args.parallelism,
        "worker_threads": args.worker_threads,
        "checkpoint_interval_ms": args.checkpoint_ms,
        "bundle_size": args.bundle_size,
        "bundle_time_ms": args.bundle_time_ms,
        "backlog_bundle_size": args.backlog_bundle_size,
        "backlog_bundle_time_ms": args.backlog_bundle_time_ms,
        "batch": batch,
    } | budget
    result["latency_budget_ms"] = Settings(job=job).job.latency_budget_ms
    judge = scene_judge(truth)
    if not args.skip_realtime:
        live = Settings(
            **base,
            job=job | {"video": {"realtime": True, "loop": args.loops, "region": args.region}},
        )
        result["realtime"] = summarize(run_job(live, videos, "realtime"), args.warmup, judge)
        print(json.dumps(result["realtime"], indent=1), flush=True)

    if not args.skip_throughput:
        unpaced = {"realtime": False, "loop": args.loops, "region": args.region}
        fast = Settings(**base, job=job | {"motion": {"enabled": False}, "video": unpaced})
        tp = summarize(run_job(fast, videos, "throughput"), 0, judge)
        tp["in_process"] = in_process(fast, data, videos)
        tp["job_vs_in_process"] = round(tp["faces_per_s"] / tp["in_process"]["faces_per_s"], 2)
        tp["job_vs_in_process_with_reading"] = round(
            tp["faces_per_s"] / tp["in_process"]["faces_per_s_with_reading"], 2
        )
        tp["job_later_half_vs_in_process"] = round(
            tp["faces_per_s_later_half"] / tp["in_process"]["faces_per_s"], 2
        )
        result["throughput_no_gate"] = tp
        print(json.dumps(tp, indent=1), flush=True)

        raw = Path("reports/bench_face_engine.json")
        emb = None
        if raw.is_file():
            emb = json.loads(raw.read_text())["embedder"]["batch_8"]["faces_per_s"]
            result["raw_embedder_faces_per_s_batch8"] = emb
            result["job_vs_raw_embedder"] = round(tp["faces_per_s"] / emb, 2)
        if args.crowd:
            grid = tuple(int(v) for v in args.crowd.split("x"))
            crowd_videos, cells = build_crowds(args.faces, root, args.cameras, grid)
            # every face through FaceNet: the embedder's own rate is the yardstick
            crowd = Settings(
                **base,
                job=job
                | {"motion": {"enabled": False}, "video": unpaced, "track": {"reuse_ms": 0}},
            )
            cr = summarize(run_job(crowd, crowd_videos, "crowd"), 0, crowd_judge(cells))
            cr["grid"] = args.crowd
            cr["in_process"] = in_process(crowd, data, crowd_videos)
            cr["job_vs_in_process"] = round(cr["faces_per_s"] / cr["in_process"]["faces_per_s"], 2)
            if emb:
                cr["job_vs_raw_embedder"] = round(cr["faces_per_s"] / emb, 2)
                cr["in_process_vs_raw_embedder"] = round(cr["in_process"]["faces_per_s"] / emb, 2)
            result["throughput_crowd"] = cr
            print(json.dumps(cr, indent=1), flush=True)
        ratios = {
            "single_face_job_vs_in_process": tp["job_vs_in_process"],
            "single_face_job_later_half_vs_in_process": tp["job_later_half_vs_in_process"],
        }
        ratios |= {k: v for k, v in result.get("throughput_crowd", {}).items() if "_vs_" in k}
        print(json.dumps(ratios))
    if args.overload:
        capacity = args.capacity_fps or result.get("throughput_no_gate", {}).get("frames_per_s")
        if not capacity:
            ap.error("--overload needs the throughput run or --capacity-fps")
        result["overload_capacity_frames_per_s"] = capacity
        result["overload"] = []
        for factor in (float(f) for f in args.overload.split(",")):
            over = overload_run(args, base, job, capacity, factor)
            result["overload"].append(over)
            print(json.dumps(over, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
