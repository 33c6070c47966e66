"""What runs where on a standalone Flink cluster, and what it costs, read from /proc: the
bench's processes by role, their CPU time, how many threads of a Python worker run at once,
and which recognize subtask a region's frames go to.

CPU time, not wall time, is the cost measure: on a machine other work keeps busy, a
process waits for a core without spending CPU time, so CPU ms per frame stays what the
work costs while frames/s drops with the load.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

MAX_PARALLELISM = 128
"""Flink's default max parallelism (key groups) for a job of parallelism <= 128."""
TASKMANAGER_ROLES = ("taskmanager_jvm", "recognize_worker", "io_worker")


def subtask_of(key: str, parallelism: int) -> int:
    """The subtask Flink sends a region to. PyFlink's ``key_by`` keys by ``Row.of(key)``;
    then Flink's KeyGroupRangeAssignment: murmur hash of hashCode, key group, operator
    index. Checked against Flink's own classes (Row.of(k).hashCode(),
    assignKeyToParallelOperator), and in each run against the frame stats' subtask files."""
    m = 0xFFFFFFFF
    h = 0
    for ch in key:
        h = (31 * h + ord(ch)) & m
    h = (h + 62) & m  # PyFlink keys by Row.of(key): Row's hashCode is the String's + 62

    def rotl(x: int, r: int) -> int:
        return ((x << r) | (x >> (32 - r))) & m

    h = rotl((h * 0xCC9E2D51) & m, 15)
    h = rotl((h * 0x1B873593) & m, 13)
    h = ((h * 5 + 0xE6546B64) & m) ^ 4
    for shift, factor in ((16, 0x85EBCA6B), (13, 0xC2B2AE35)):
        h ^= h >> shift
        h = (h * factor) & m
    h ^= h >> 16
    signed = h - (1 << 32) if h >= 1 << 31 else h
    murmur = abs(signed) if signed != -(1 << 31) else 0
    return (murmur % MAX_PARALLELISM) * parallelism // MAX_PARALLELISM


def balanced_template(cameras: list[str], parallelism: int) -> str:
    """A ``job.video.region`` template, one region per camera, whose regions Flink spreads
    evenly over the recognize subtasks (``{camera}`` itself puts cam1-cam3 on one of two)."""
    quota = -(-len(cameras) // parallelism)
    for k in range(1000):
        template = "{camera}" if k == 0 else f"r{k}-{{camera}}"
        load = Counter(subtask_of(template.format(camera=c), parallelism) for c in cameras)
        if max(load.values()) <= quota:
            return template
    raise ValueError(f"no balanced region names for {len(cameras)} cameras at {parallelism}")


def cpu_s(path: str) -> float:
    """utime + stime of /proc/<path>/stat (a process, or a thread: <pid>/task/<tid>)."""
    fields = Path(f"/proc/{path}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def processes(cluster: Any, broker: Any) -> dict[str, list[int]]:
    """The bench's processes by role. A TaskManager's Python worker that mapped TensorFlow
    is the recognize worker (the job's recognize slot-sharing group)."""
    from jobs.services.pids import cmdline, descendants

    tms = cluster.taskmanager_pids()
    roles: dict[str, list[int]] = {r: [] for r in TASKMANAGER_ROLES}
    roles |= {
        "taskmanager_jvm": tms,
        "kafka": [broker.pid],
        "jobmanager": list(cluster.processes()["jobmanager"]),
    }
    for pid in (p for tm in tms for p in descendants(tm)):
        if "python" not in (cmdline(pid) or [""])[0]:
            continue
        try:
            tf = "tensorflow" in Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        roles["recognize_worker" if tf else "io_worker"].append(pid)
    return roles


def cpu_sample(roles: dict[str, list[int]]) -> dict[str, Any]:
    """Now (time.time()) and the CPU seconds of every process, PID -> (role, seconds)."""
    out: dict[str, Any] = {"at": time.time(), "cpu": {}}
    for role, pids in roles.items():
        for pid in pids:
            try:
                out["cpu"][pid] = (role, cpu_s(str(pid)))
            except OSError:
                pass
    return out


def thread_limits(pid: int, env_keys: list[str], seconds: float = 3.0) -> dict[str, Any]:
    """A Python worker's thread settings as it runs: its environment, its thread count
    (/proc/<pid>/status) and, sampled every 10 ms, how many of its threads were runnable
    at once (state R in /proc/<pid>/task/*/stat). One compute thread (TensorFlow's pool of
    one, OpenCV's, the Python thread holding the GIL taking turns) shows at most one or two
    at a time; TensorFlow on both cores would show two or three most of the time."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace").split("\0")
    env = dict(kv.split("=", 1) for kv in environ if "=" in kv)
    status = Path(f"/proc/{pid}/status").read_text()
    runnable: Counter[int] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n = 0
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                n += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
            except OSError:  # the thread ended
                pass
        runnable[n] += 1
        time.sleep(0.01)
    total = sum(runnable.values())
    return {
        "env": {k: env.get(k) for k in env_keys},
        "threads": int(status.split("Threads:")[1].split()[0]),
        "runnable_threads_share": {
            str(k): round(v / total, 3) for k, v in sorted(runnable.items())
        },
    }


def cpu_window(samples: list[tuple[int, dict[str, Any]]], start: int) -> dict[str, Any]:
    """CPU per role between the first sample with ``start`` frames handled and the last
    one (taken while the job's processes still ran): per handled frame and as cores busy."""
    a = next(s for s in samples if s[0] >= start)
    b = samples[-1]
    frames, wall = b[0] - a[0], b[1]["at"] - a[1]["at"]
    spent: dict[str, float] = {}
    for pid, (role, cpu) in b[1]["cpu"].items():
        if pid in a[1]["cpu"]:
            spent[role] = spent.get(role, 0.0) + cpu - a[1]["cpu"][pid][1]
    spent["taskmanagers_total"] = sum(spent.get(r, 0.0) for r in TASKMANAGER_ROLES)
    return {
        "frames": frames,
        "wall_s": round(wall, 1),
        "cpu_ms_per_frame": {r: round(s * 1000 / frames, 2) for r, s in spent.items()},
        "cores_busy": {r: round(s / wall, 2) for r, s in spent.items()},
    }


def placement(cluster: Any, job_id: str) -> dict[str, str]:
    """Recognize subtask -> the TaskManager it runs on (the REST API's vertex details)."""
    vertex = next(v for v in cluster.job(job_id)["vertices"] if "recognize" in v["name"])
    found = cluster.get(f"/jobs/{job_id}/vertices/{vertex['id']}")
    return {
        str(s["subtask"]): s.get("taskmanager-id", s.get("endpoint")) for s in found["subtasks"]
    }
