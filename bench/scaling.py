"""Scaling, measured: the recognition job on a standalone Flink cluster with one and with two
TaskManagers, on the same 4-camera Kafka input, and a capacity model checked against both.

bench/job.py's scene (N cameras at F fps, celebrity5 val faces walking in and standing
still; gallery from celebrity5 train). `facerec ingest` plays it once, in real time, into a
backlog topic (so the gate and the track reuse see real capture times). Per cluster size:

* sustained: the job reads the backlog with ``job.kafka_bounded`` (never shed) at
  parallelism = TaskManagers; frames/s from the frame stats, CPU from /proc;
* paced: a fresh job on a topic of its own, primed, while `facerec ingest` plays the
  cameras in real time: latency capture -> events topic, frames shed to keep the budget.

Every TaskManager has one slot per slot-sharing group of the job (I/O and recognize: one
parallel instance of the job each), and its Python workers run TensorFlow, OpenCV and
OpenBLAS/OMP on one thread each (``THREAD_ENV`` in the TaskManagers' environment, which
their Python workers inherit, and ``embedder.intra_op_threads: 1``). Verified while the
sustained run works, per recognize worker (cluster_probe.thread_limits): its environment
(/proc/<pid>/environ), its thread count (/proc/<pid>/status) and how many of its threads
were runnable at once, sampled every 10 ms (/proc/<pid>/task/*/stat).

On a 2-core machine the TaskManagers share the cores with Kafka, the JobManager, `facerec
ingest` and whatever else runs: the load average at the start and end of each run is in
the JSON. Stage costs (detector, embedder, decode + gate) are measured in this process on
one thread in the same run, so the model and the cluster figures share a machine state.

    python bench/scaling.py --out reports/bench_scaling.json     # ~10 min
"""

from __future__ import annotations

import os

THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENCV_FOR_THREADS_NUM": "1",  # cv::getNumThreads() default (pthreads backend)
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}
os.environ.update(THREAD_ENV)  # before numpy, OpenCV and TensorFlow load in this process

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from capacity import check, frame_mix, stage_costs  # noqa: E402
from cluster_probe import (  # noqa: E402
    balanced_template,
    cpu_sample,
    cpu_window,
    placement,
    processes,
    thread_limits,
)
from job import accuracy, build_world, latency_ms, percentiles, scene_judge  # noqa: E402

from facerec.config import Settings, load_settings  # noqa: E402
from testkit import shared_data  # noqa: E402
from testkit.kafka_jobs import topic_names  # noqa: E402

FACEREC = str(Path(sys.executable).parent / "facerec")
PRIMER_FRAMES = 10


# ----------------------------------------------------------------------------- set-up
@dataclass
class Bench:
    """What the runs share: the work dir, the scene and its regions, Kafka, the cluster."""

    root: Path
    data: Path
    videos: list[Path]
    regions: dict[str, str]
    fps: float
    partitions: int
    broker: Any
    cluster: Any = None

    def configure(self, name: str, n: int, frames_topic: str | None = None) -> Settings:
        """A run's configuration (``<root>/<name>/facerec.yaml``) and topics of its own; the
        frames topic too unless ``frames_topic`` names one to read with kafka_bounded."""
        run = self.root / name
        run.mkdir()
        topics = topic_names(name) | ({"frames_topic": frames_topic} if frames_topic else {})
        tree = {
            "data_dir": str(run / "data"),
            "index": {"manifests_dir": str(self.data / "manifests"),
                      "snapshots_dir": str(self.data / "snapshots")},
            "kafka": {"bootstrap_servers": self.broker.bootstrap_servers, **topics},
            "embedder": {"intra_op_threads": 1},
            "job": {"parallelism": n, "checkpoint_interval_ms": 10_000, "kafka_group_id": name,
                    "kafka_start": "earliest", "kafka_bounded": frames_topic is not None,
                    "frame_stats_dir": str(run / "framestats"),
                    "events_sink": {"transactional_id_prefix": name}},
        }  # fmt: skip
        (run / "facerec.yaml").write_text(yaml.safe_dump(tree))
        settings = load_settings(run / "facerec.yaml")
        self._create_topics(settings, frames=frames_topic is None)
        return settings

    def _create_topics(self, settings: Settings, frames: bool) -> None:
        """One partition each, the frames topic one per source subtask; events stamped by
        the broker on append (latency to the topic); the gallery in the index topic."""
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient, NewTopic

        k = settings.kafka
        topics = [
            NewTopic(t, 1, 1) for t in (k.dead_letter_topic, k.sightings_topic, k.index_topic)
        ]
        append_time = {"message.timestamp.type": "LogAppendTime"}
        topics.append(NewTopic(k.events_topic, 1, 1, topic_configs=append_time))
        if frames:
            topics.append(NewTopic(k.frames_topic, self.partitions, 1))
        admin = KafkaAdminClient(**k.client_options())
        try:
            admin.create_topics(topics)
        finally:
            admin.close()
        producer = KafkaProducer(**k.client_options())
        for manifest in sorted(settings.manifests_path().glob("*.json")):
            producer.send(k.index_topic, manifest.read_bytes())
        producer.flush()
        producer.close()

    def play(self, settings: Settings, loops: int) -> dict[str, Any]:
        """`facerec ingest` of the scene's cameras in real time into the run's frames topic."""
        cameras = [
            {"camera_id": v.stem, "url": str(v), "region": self.regions[v.stem], "fps": self.fps,
             "realtime": True, "loop": loops}
            for v in self.videos
        ]  # fmt: skip
        return ingest(settings, cameras)


def config_file(settings: Settings) -> Path:
    return Path(settings.data_dir).parent / "facerec.yaml"


def ingest(settings: Settings, cameras: list[dict[str, Any]], *args: str) -> dict[str, Any]:
    path = config_file(settings).with_name(f"cameras-{time.monotonic_ns()}.yaml")
    path.write_text(yaml.safe_dump(cameras))
    cmd = [FACEREC, "ingest", "--config", str(config_file(settings)), "--cameras", str(path)]
    done = subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=ROOT, check=True)
    return dict(json.loads(done.stdout[done.stdout.index("{") :]))


def stats_of(settings: Settings) -> list[dict[str, Any]]:
    from testkit.kafka_jobs import frame_stats

    return frame_stats(settings) if stats_dir(settings).exists() else []


def stats_dir(settings: Settings) -> Path:
    assert settings.job.frame_stats_dir is not None  # every run's configuration sets it
    return settings.job.frame_stats_dir


# ----------------------------------------------------------------------------- runs
def loadavg() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def wait_handled(settings: Settings, n: int, timeout_s: float = 600) -> float:
    """Wait until the frame stats name ``n`` frames; returns when (time.time())."""
    deadline = time.monotonic() + timeout_s
    while len(stats_of(settings)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the job handled {len(stats_of(settings))} of {n} frames")
        time.sleep(0.5)
    return time.time()


def sustained_rate(stats: list[dict[str, Any]], skip: float) -> dict[str, Any]:
    """Frames (analysed frames) per second from the frame done at ``skip`` of the run to
    the last: the workers' start (TensorFlow loading) does not count."""
    stats = sorted(stats, key=lambda s: s["done_ms"])
    first = int(len(stats) * skip)
    window = stats[first:]
    span_s = (window[-1]["done_ms"] - window[0]["done_ms"]) / 1000
    analysed = sum(1 for s in window[1:] if s["passed"] and not s.get("shed"))
    return {
        "frames_per_s": round((len(window) - 1) / span_s, 2),
        "analysed_frames_per_s": round(analysed / span_s, 2),
        "window_s": round(span_s, 1),
    }


def sustained_run(bench: Bench, n: int, backlog: str, expected: int) -> dict[str, Any]:
    """The job on the backlog with ``job.kafka_bounded`` until it finishes. CPU is sampled
    every 0.5 s while its processes run (the JobManager asked for the job's state every
    2 s only: its REST calls cost CPU too)."""
    from jobs.services.flink import TERMINAL_STATES

    cluster = bench.cluster
    settings = bench.configure(f"sustained-{n}tm", n, frames_topic=backlog)
    job_id = cluster.submit(config_file(settings))
    roles: dict[str, list[int]] = {}
    samples: list[tuple[int, dict[str, Any]]] = []
    where: dict[str, str] = {}
    limits: dict[int, Any] = {}
    deadline = time.monotonic() + 900
    asked = 0.0
    while time.monotonic() < deadline:
        if time.monotonic() - asked >= 2:
            if cluster.job(job_id)["state"] in TERMINAL_STATES:
                break
            asked = time.monotonic()
        if len(roles.get("recognize_worker", [])) < n:
            roles = processes(cluster, bench.broker)
        elif not where:
            where = placement(cluster, job_id)
        sample = cpu_sample(roles)
        if any(pid not in sample["cpu"] for pids in roles.values() for pid in pids):
            break  # a worker ended: the job is finishing
        handled = len(stats_of(settings))
        samples.append((handled, sample))
        if handled >= 0.4 * expected and not limits:
            for pid in roles["recognize_worker"]:
                with contextlib.suppress(OSError):
                    limits[pid] = thread_limits(pid, list(THREAD_ENV))
        time.sleep(0.5)
    while cluster.job(job_id)["state"] not in TERMINAL_STATES:
        if time.monotonic() > deadline:
            cluster.cancel(job_id)
            raise TimeoutError(f"the bounded job handled {len(stats_of(settings))} of {expected}")
        time.sleep(1)
    stats = stats_of(settings)
    by_subtask = {
        f.stem.rsplit("-", 1)[1]: sorted({json.loads(line)["camera_id"] for line in f.open()})
        for f in stats_dir(settings).glob("framestats-*.jsonl")
    }
    return {
        "job_state": cluster.job(job_id)["state"],
        "frames_handled": len(stats),
        "frames_in_backlog": expected,
        **sustained_rate(stats, 0.15),
        **frame_mix(stats),
        "cpu": cpu_window(samples, int(0.15 * expected)),
        "recognize_workers": limits,
        "recognize_subtask_taskmanager": where,
        "cameras_by_subtask": by_subtask,
    }


def paced_run(bench: Bench, n: int, loops: int, judge: Any) -> dict[str, Any]:
    """A fresh job, primed, while the cameras play in real time (job defaults: frames that
    cannot make the latency budget are shed)."""
    from testkit.kafka import read_topic

    cluster = bench.cluster
    settings = bench.configure(f"paced-{n}tm", n)
    job_id = cluster.submit(config_file(settings))
    try:
        cluster.wait_running(job_id)
        # warm every recognize subtask (TensorFlow's first calls) before the cameras start:
        # cameras do not wait for the job, and a cold start would count in the latency
        primers = [
            {"camera_id": f"primer-{r}", "url": str(bench.videos[0]), "region": r, "fps": 0}
            for r in sorted(set(bench.regions.values()))
        ]
        primed = ingest(settings, primers, "--max-frames", str(PRIMER_FRAMES))
        primed_n = sum(r["seq"] for r in primed.values())
        wait_handled(settings, primed_n)
        started = time.time()
        report = bench.play(settings, loops)
        ended = time.time()
        done = wait_handled(settings, primed_n + sum(r["seq"] for r in report.values()))
        time.sleep(3)  # the last events' way to the topic
    finally:
        cluster.cancel(job_id)
    events = []
    for r in read_topic(bench.broker.bootstrap_servers, settings.kafka.events_topic).records:
        event = json.loads(r.value)
        if not event["camera_id"].startswith("primer-"):
            events.append(event | {"in_topic_ms": r.timestamp})
    stats = [s for s in stats_of(settings) if not s["camera_id"].startswith("primer-")]
    mix = frame_mix(stats)
    to_topic = [e["in_topic_ms"] - e["capture_ts"] for e in sorted(events, key=capture)]
    return {
        "job": settings.job.model_dump(
            include={"latency_budget_ms", "min_analysed_fps", "bundle_size", "bundle_time_ms"}
        ),
        "frames": len(stats),
        "offered_frames_per_s": round(len(stats) / (ended - started), 2),
        "analysed_frames_per_s": round(mix["analysed"] / (done - started), 2),
        **mix,
        "shed_share": round(mix["shed"] / (len(stats) or 1), 3),
        "caught_up_s_after_cameras_ended": round(done - ended, 1),
        "latency_ms_capture_to_events_topic": percentiles(to_topic),
        # steady or growing: the events of the run's last third on their own
        "latency_ms_capture_to_events_topic_last_third": percentiles(
            to_topic[2 * len(to_topic) // 3 :]
        ),
        "latency_ms_capture_to_match": percentiles([latency_ms(e) for e in events]),
        "events": len(events),
        "accuracy": accuracy(events, judge),
    }


def capture(event: dict[str, Any]) -> int:
    return int(event["capture_ts"])


def machine() -> dict[str, Any]:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "")
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpu": model or platform.processor(), "cpus": os.cpu_count(),
            "memory_gb": mem_kb >> 20, "platform": platform.platform(),
            "python": platform.python_version()}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--faces", type=Path, default=shared_data.faces_dir() / "celebrity5")
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=5.0)
    ap.add_argument("--backlog-loops", type=int, default=2, help="Scene plays (~16 s each).")
    ap.add_argument("--live-loops", type=int, default=2, help="... and in each paced run.")
    ap.add_argument("--taskmanagers", default="1,2", help="Cluster sizes, in order.")
    ap.add_argument("--out", type=Path, default=Path("reports/bench_scaling.json"))
    args = ap.parse_args()

    from jobs.recognition import SLOT_GROUPS
    from jobs.services.flink import FlinkCluster
    from jobs.services.kafka import KafkaBroker
    from testkit.kafka import read_topic

    sizes = [int(v) for v in args.taskmanagers.split(",")]
    root = Path(tempfile.mkdtemp(prefix="facerec-bench-scaling-"))
    log(f"work dir {root}; building the scene")
    data, videos, truth = build_world(args.faces, root, args.cameras, args.fps)
    judge = scene_judge(truth)
    cameras = [v.stem for v in videos]
    template = balanced_template(cameras, max(sizes))
    regions = {camera: template.format(camera=camera) for camera in cameras}
    result: dict[str, Any] = {
        "machine": machine(),
        "cameras": args.cameras,
        "fps_per_camera": args.fps,
        "regions": regions,
        "thread_env": THREAD_ENV,
        "embedder_intra_op_threads": 1,
        "shared_cores": f"{os.cpu_count()} cores shared by Kafka, the JobManager, every "
        "TaskManager with its Python workers, `facerec ingest` (paced runs) and other work on "
        "the machine (load averages per run)",
        "runs": {},
    }
    with KafkaBroker(root / "kafka") as broker:
        bench = Bench(root, data, videos, regions, args.fps, max(sizes), broker)
        settings = bench.configure("backlog", 1)
        log("playing the cameras in real time into the backlog topic")
        backlog = bench.play(settings, args.backlog_loops)
        payloads = read_topic(broker.bootstrap_servers, settings.kafka.frames_topic).values()
        result["backlog_frames"] = len(payloads)
        log(f"{len(payloads)} frames; stage costs on one thread in this process")
        result["load_before_stage_costs"] = loadavg()
        result["stage_costs"] = stage_costs(settings, payloads)
        log(json.dumps(result["stage_costs"]))
        bench.cluster = FlinkCluster(
            root / "flink",
            {
                "taskmanager.numberOfTaskSlots": SLOT_GROUPS,  # one instance of the job per TM
                # one recognize subtask per TaskManager: spreading slots (SLOTS) put both
                # recognize slots on one TaskManager and both I/O slots on the other
                "taskmanager.load-balance.mode": "TASKS",
            },
            loopback=True,
            environ={**os.environ, **THREAD_ENV},
        ).start()
        try:
            for n in sizes:
                while len(bench.cluster.taskmanager_pids()) < n:
                    bench.cluster.start_taskmanager()
                run: dict[str, Any] = {"taskmanagers": n, "parallelism": n, "load_start": loadavg()}
                log(f"{n} TaskManager(s): sustained run on the backlog")
                run["sustained"] = sustained_run(
                    bench, n, settings.kafka.frames_topic, len(payloads)
                )
                log(json.dumps(run["sustained"]))
                log(f"{n} TaskManager(s): paced run")
                run["paced"] = paced_run(bench, n, args.live_loops, judge)
                log(json.dumps(run["paced"]))
                run["load_end"] = loadavg()
                result["runs"][f"{n}tm"] = run
        finally:
            bench.cluster.stop()
    result["backlog_ingest"] = {c: r["seq"] for c, r in backlog.items()}
    result["capacity_model"] = check(result, args.fps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result["capacity_model"], indent=1))
    print(f"written {args.out}")
    shutil.rmtree(root, ignore_errors=True)  # kept when a run fails: its logs are there


if __name__ == "__main__":
    main()
