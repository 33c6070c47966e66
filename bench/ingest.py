"""Ingest throughput into a local Apache Kafka broker (one KRaft node): frames/s and MB/s.

Two figures: the whole agent (OpenCV decode + JPEG encode + produce, one camera thread per
camera) and the delivery path alone (pre-encoded records through ``FrameSender``, acks=all,
one request in flight). Writes reports/bench_ingest.json.

    .venv/bin/python bench/ingest.py [--frames 400] [--cameras 2] [--video PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facerec.config import CameraConfig, Settings  # noqa: E402
from facerec.records import FrameRecord, make_frame_id, now_ms  # noqa: E402
from jobs.cameras import CameraReader  # noqa: E402
from jobs.delivery import CameraStats, FrameSender, producer_config  # noqa: E402
from jobs.ingest import IngestAgent  # noqa: E402
from jobs.services.kafka import KafkaBroker  # noqa: E402
from jobs.services.versions import versions  # noqa: E402
from jobs.spool import Spool  # noqa: E402


def bench_agent(broker: KafkaBroker, video: Path, frames: int, cameras: int, tmp: Path) -> dict:
    kafka = {"bootstrap_servers": broker.bootstrap_servers}
    settings = Settings(data_dir=tmp / "agent", kafka=kafka)
    cams = [CameraConfig(camera_id=f"bench{i}", url=str(video), region=f"r{i % 2}", fps=120,
                         jpeg_quality=85, loop=True) for i in range(cameras)]
    agent = IngestAgent(settings, cams, topic=f"bench-agent-{time.time_ns()}")
    t0 = time.perf_counter()
    report = agent.run(max_frames=frames, drain_timeout_s=120)
    elapsed = time.perf_counter() - t0
    sent = sum(r["sent"] for r in report.values())
    nbytes = sum(r["bytes_sent"] for r in report.values())
    return {"cameras": cameras, "frames": sent, "seconds": round(elapsed, 3),
            "frames_per_s": round(sent / elapsed, 1), "mb_per_s": round(nbytes / elapsed / 1e6, 2),
            "mean_frame_kb": round(nbytes / max(sent, 1) / 1e3, 1),
            "spooled": sum(r["spooled"] for r in report.values())}


def bench_delivery(broker: KafkaBroker, video: Path, frames: int, tmp: Path) -> dict:
    reader = CameraReader(CameraConfig(camera_id="bench-send", url=str(video), region="r0",
                                       fps=0, jpeg_quality=85))
    jpegs = [(r.jpeg, (r.height, r.width)) for r in itertools.islice(reader.records(), 50)]
    reader.close()
    assert len(jpegs) == 50, f"{video} has fewer than 50 frames"
    settings = Settings(data_dir=tmp, kafka={"bootstrap_servers": broker.bootstrap_servers})
    stats = CameraStats("bench-send", "r0")
    sender = FrameSender(stats, f"bench-send-{time.time_ns()}",
                         Spool(tmp / "send.spool.sqlite", 1 << 30),
                         producer_config(settings.kafka, settings.ingest), settings.ingest)
    session = now_ms()
    records = []
    for seq in range(frames):
        jpeg, shape = jpegs[seq % len(jpegs)]
        records.append(FrameRecord("bench-send", "r0", make_frame_id("bench-send", session, seq),
                                   seq, session + seq * 40, shape[1], shape[0], jpeg).encode())
    sender.submit(b"r0", records[0])  # topic creation and metadata outside the timing
    sender.flush(30)
    t0 = time.perf_counter()
    for value in records[1:]:
        sender.submit(b"r0", value)
    ok = sender.flush(120)
    elapsed = time.perf_counter() - t0
    sender.close()
    n, nbytes = len(records) - 1, sum(len(v) for v in records[1:])
    return {"frames": n, "all_acked": ok, "seconds": round(elapsed, 3),
            "frames_per_s": round(n / elapsed, 1), "mb_per_s": round(nbytes / elapsed / 1e6, 2),
            "mean_record_kb": round(nbytes / n / 1e3, 1), "spooled": stats.spooled}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=400, help="Frames per camera.")
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--video", type=Path, default=ROOT.parent / "shared/videos/vtest.avi")
    ap.add_argument("--out", type=Path, default=ROOT / "reports/bench_ingest.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, KafkaBroker() as broker:
        result = {
            "broker": f"Apache Kafka {versions()['KAFKA_VERSION']}, one KRaft node, loopback",
            "video": args.video.name,
            "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
            "agent": bench_agent(broker, args.video, args.frames, args.cameras, Path(tmp)),
            "delivery_only": bench_delivery(broker, args.video, args.frames * 2, Path(tmp)),
        }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
