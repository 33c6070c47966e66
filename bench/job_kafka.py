"""Frame-to-event latency through Kafka, beside the job's own video source in the same run.

The scene is bench/job.py's (N cameras at F fps playing videos of celebrity5 val photos, the
gallery from celebrity5 train, cameras out of phase). Two runs of the job on a local
MiniCluster, one after the other:

* video source: the job reads the files itself; latency is capture to match;
* Kafka: `facerec ingest` (a process of its own) reads the same files in real time and
  produces frame records to a real Apache Kafka broker (jobs/services/kafka.py); the job
  reads them with `--source kafka` and writes events to the events topic. Latency is the
  time from a frame's capture stamp in `facerec ingest` to its event's arrival in the
  events topic, taken from the topic's own record timestamps (the topic is created with
  message.timestamp.type=LogAppendTime: the broker stamps each record as it appends it).
  Capture to match is reported too, for comparison with the video source. A primer camera
  warms the job up before the measured cameras start (see ``kafka_run``).

    python bench/job_kafka.py --cameras 4 --fps 5 --loops 4 --warmup 20 \
        --out reports/bench_job_kafka.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from job import build_world, percentiles, run_job, scene_judge, summarize  # noqa: E402

from facerec.config import Settings  # noqa: E402
from testkit import shared_data  # noqa: E402

LOG_APPEND_TIME = 1
"""kafka-python's ``timestamp_type`` of a record the broker stamped on arrival."""
PRIMER = "primer"
"""The camera that warms the job up before the measured ones start (not measured)."""


def kafka_run(
    settings: Settings, config: Path, videos: list[Path], fps: float, loops: int
) -> dict[str, Any]:
    """The job on Kafka while `facerec ingest` streams the cameras in real time; returns
    the events (with the time each reached the events topic), frame stats and the agent's
    report."""
    from kafka import KafkaProducer

    from jobs import flink_sources as fs
    from jobs.recognition import build_job
    from testkit.kafka import read_topic
    from testkit.kafka_jobs import create_topics, dead_letters, frame_stats

    kafka = settings.kafka
    create_topics(settings, {"message.timestamp.type": "LogAppendTime"})
    producer = KafkaProducer(**kafka.client_options())
    for message in sorted(settings.manifests_path().glob("*.json")):  # the gallery's snapshot
        producer.send(kafka.index_topic, message.read_bytes())
    producer.flush()
    producer.close()

    cameras = config.parent / "cameras.yaml"
    cameras.write_text(yaml.safe_dump([
        {"camera_id": v.stem, "url": str(v), "region": v.stem, "fps": fps, "realtime": True,
         "loop": loops} for v in videos]))
    env, streams = build_job(settings, "kafka")
    for stream in streams.outputs():
        fs.discard(stream)
    facerec = str(Path(sys.executable).parent / "facerec")

    def ingest(*args: str) -> dict[str, Any]:
        done = subprocess.run([facerec, "ingest", "--config", str(config), *args],
                              capture_output=True, text=True, cwd=ROOT, check=True)
        return dict(json.loads(done.stdout[done.stdout.index("{"):]))

    def wait_handled(n: int) -> None:
        deadline = time.monotonic() + 300
        while len(frame_stats(settings)) + len(dead_letters(settings)) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the job handled fewer than {n} frames in 300 s")
            time.sleep(0.5)

    started = time.time()
    client = env.execute_async("bench-kafka")
    try:
        # Prime the job (Python workers, TensorFlow, the index) with a camera of its own
        # before the measured ones start: a camera does not wait for the job, so frames
        # captured while it starts would queue in the topic, and on a machine where the job
        # only just keeps up with the cameras that start-up queue would never drain.
        primed = ingest("--url", str(videos[0]), "--camera-id", PRIMER, "--region", PRIMER,
                        "--fps", "0", "--max-frames", "20")
        wait_handled(primed[PRIMER]["seq"])
        started = time.time()
        report = ingest("--cameras", str(cameras))
        wait_handled(primed[PRIMER]["seq"] + sum(r["seq"] for r in report.values()))
        time.sleep(3)  # the last events' way to the topic
    finally:
        client.cancel().result()
    wall = time.time() - started
    records = read_topic(kafka.bootstrap_servers, kafka.events_topic).records
    assert all(r.timestamp_type == LOG_APPEND_TIME for r in records)
    events = []
    for r in records:
        event = json.loads(r.value)
        event["in_topic_ms"] = r.timestamp
        if event["camera_id"] != PRIMER:
            events.append(event)
    stats = [s for s in frame_stats(settings) if s["camera_id"] != PRIMER]
    return {"events": events, "stats": stats, "dead": len(dead_letters(settings)),
            "wall_s": wall, "ingest": report}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--faces", type=Path, default=shared_data.faces_dir() / "celebrity5")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--loops", type=int, default=4)
    ap.add_argument("--warmup", type=float, default=20.0,
                    help="Seconds excluded from steady-state latency (both runs).")
    ap.add_argument("--skip-video", action="store_true", help="Only the Kafka run.")
    ap.add_argument("--out", type=Path, default=Path("reports/bench_job_kafka.json"))
    args = ap.parse_args()

    from jobs.services.kafka import KafkaBroker

    root = Path(tempfile.mkdtemp(prefix="facerec-bench-kafka-"))
    data, videos, truth = build_world(args.faces, root, args.cameras, args.fps)
    judge = scene_judge(truth)
    job = {"parallelism": 1, "checkpoint_interval_ms": 10_000}
    result: dict[str, Any] = {"cameras": args.cameras, "fps_per_camera": args.fps,
                              "loops": args.loops, "warmup_s": args.warmup,
                              "cpus": os.cpu_count()}
    if not args.skip_video:
        video = Settings(data_dir=data, job=job | {"video": {
            "realtime": True, "loop": args.loops, "region": "{camera}"}})
        result["video_source"] = summarize(run_job(video, videos, "video"), args.warmup, judge)
        print(json.dumps({"video_source": result["video_source"]}, indent=1), flush=True)

    with KafkaBroker(root / "kafka") as broker:
        run_dir = root / "kafka-run"
        run_dir.mkdir()
        config = run_dir / "facerec.yaml"
        config.write_text(yaml.safe_dump({
            "data_dir": str(run_dir),
            "index": {"manifests_dir": str(data / "manifests"),
                      "snapshots_dir": str(data / "snapshots")},
            "kafka": {"bootstrap_servers": broker.bootstrap_servers},
            "job": job | {"frame_stats_dir": str(run_dir / "framestats")},
        }))
        from facerec.config import load_settings

        settings = load_settings(config)
        run = kafka_run(settings, config, videos, args.fps, args.loops)
    summary = summarize(run, args.warmup, judge)
    events = run["events"]
    t0 = min((e["capture_ts"] for e in events), default=0)
    steady = [e for e in events if e["capture_ts"] - t0 >= args.warmup * 1000]
    to_topic = lambda es: [e["in_topic_ms"] - e["capture_ts"] for e in es]  # noqa: E731
    summary["latency_ms_capture_to_events_topic_all"] = percentiles(to_topic(events))
    summary[f"latency_ms_capture_to_events_topic_after_{args.warmup:.0f}s"] = percentiles(
        to_topic(steady))
    summary["capture_to_ingest_ms"] = percentiles(
        [e["stages"]["ingest"] - e["capture_ts"] for e in steady])
    summary["match_to_events_topic_ms"] = percentiles(
        [e["in_topic_ms"] - e["stages"]["match"] for e in steady])
    summary["ingest"] = {cam: {k: r[k] for k in ("seq", "sent", "spooled", "spool_left")}
                         for cam, r in run["ingest"].items()}
    result["kafka"] = summary
    print(json.dumps({"kafka": summary}, indent=1), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
