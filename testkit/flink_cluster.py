"""A standalone Flink cluster from the apache-flink wheel's distribution (``pyflink/bin``), as
the tests run one: the project's ``flink-conf/`` copied into a work folder with free ports
and the folder's own checkpoint, savepoint, log and PID dirs, started by
``start-cluster.sh``, ready once the REST API lists a TaskManager.

    cluster = StandaloneCluster(tmp).start()
    job_id = cluster.submit(config_yaml)          # facerec job submit --source kafka
    cluster.kill_taskmanager(cluster.taskmanager_pids()[0])
    cluster.start_taskmanager()                   # taskmanager.sh start
    cluster.stop()

The PID dir is the work folder's, never Flink's default ``/tmp`` that every cluster on the
machine shares: ``stop-cluster.sh`` stops the PIDs it finds there, and ``stop()`` then ends
whatever is left of the processes this cluster started (the Python workers of a killed
TaskManager included), by PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import yaml

from jobs.services.process import ServiceError, free_ports, log_tail

ROOT = Path(__file__).resolve().parents[1]


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (which may hold spaces and
    parentheses): state, ppid, ... ; None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def started_at(pid: int) -> str | None:
    """The process's start time (clock ticks since boot): with the PID, it names one
    process, not whichever process the PID is given to later."""
    fields = _stat(pid)
    return fields[19] if fields else None


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children...), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat(int(stat.parent.name))
        if fields:
            parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid: int, since: str | None = None) -> bool:
    """Running (not a zombie) and, with ``since``, still the process started then."""
    fields = _stat(pid)
    if fields is None or fields[0] == "Z":
        return False
    return since is None or fields[19] == since


def identify(pids: list[int]) -> dict[int, str]:
    """PID -> start time of those of ``pids`` that run now."""
    return {p: t for p in pids if (t := started_at(p)) is not None}


def end_processes(procs: dict[int, str], grace_s: float = 20.0) -> None:
    """SIGTERM each process (PID -> start time, so a reused PID is left alone) that still
    runs, wait up to ``grace_s``, then SIGKILL what is left."""
    live = {p: t for p, t in procs.items() if alive(p, t)}
    for pid in live:
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while any(alive(p, t) for p, t in live.items()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, since in live.items():
        if alive(pid, since):
            os.kill(pid, signal.SIGKILL)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *path, leaf = dotted.split(".")
    for key in path:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


class StandaloneCluster:
    """One JobManager and (at first) one TaskManager on this machine. ``overrides``: more
    Flink options, dotted keys (``{"heartbeat.interval": 2000}``)."""

    startup_timeout_s = 120.0

    def __init__(self, workdir: Path, overrides: Mapping[str, Any] | None = None) -> None:
        self.workdir = Path(workdir)
        self.conf_dir = self.workdir / "conf"
        self.log_dir = self.workdir / "log"
        self.pid_dir = self.workdir / "pids"
        self.overrides = dict(overrides or {})
        self.rest_port = 0
        self.prom_port = 0
        self.bin = flink_home() / "bin"
        self.env = {
            **os.environ,
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(self.pid_dir),
        }
        self._started: dict[int, str] = {}
        """The processes this cluster started, PID -> start time (JVMs and, once seen, their
        Python workers)."""

    # ------------------------------------------------------------------ addresses
    @property
    def rest(self) -> str:
        return f"localhost:{self.rest_port}"

    @property
    def url(self) -> str:
        return f"http://{self.rest}"

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.log_dir, self.pid_dir):
            d.mkdir(parents=True, exist_ok=True)
        for f in (ROOT / "flink-conf").iterdir():
            shutil.copy(f, self.conf_dir / f.name)
        config = yaml.safe_load((self.conf_dir / "config.yaml").read_text())
        self.rest_port, rpc_port, self.prom_port = free_ports(3)
        options = {
            "rest.port": self.rest_port,
            "jobmanager.rpc.port": rpc_port,
            "execution.checkpointing.dir": (self.workdir / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (self.workdir / "savepoints").as_uri(),
            # one port per process of a small cluster: JobManager, TaskManagers
            "metrics.reporter.prom.port": f"{self.prom_port}-{self.prom_port + 5}",
            **self.overrides,
        }
        for key, value in options.items():
            _set(config, key, value)
        (self.conf_dir / "config.yaml").write_text(yaml.safe_dump(config))
        (self.conf_dir / "masters").write_text(f"localhost:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text("localhost\n")

    def start(self) -> Self:
        self.configure()
        try:
            subprocess.run(
                [str(self.bin / "start-cluster.sh")], env=self.env, check=True, timeout=120,
                stdout=subprocess.DEVNULL,
            )
            self._remember_pids()
            self._wait(lambda: len(self.taskmanagers()) >= 1, self.startup_timeout_s,
                       "the cluster's REST API to list a TaskManager")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        self._remember_pids()
        subprocess.run([str(self.bin / "stop-cluster.sh")], env=self.env, timeout=180,
                       check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        end_processes(self._started)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ processes
    def _pid_file_pids(self, daemon: str) -> list[int]:
        pids = []
        for f in self.pid_dir.glob(f"*-{daemon}.pid"):
            pids += [int(line) for line in f.read_text().split() if line.isdigit()]
        return pids

    def _remember_pids(self) -> None:
        for pid in self._pid_file_pids("standalonesession") + self._pid_file_pids(
            "taskexecutor"
        ):
            if alive(pid):
                self._started.update(identify([pid, *descendants(pid)]))

    def taskmanager_pids(self) -> list[int]:
        """Live TaskManager JVMs, oldest first."""
        return [p for p in self._pid_file_pids("taskexecutor") if alive(p)]

    def kill_taskmanager(self, pid: int) -> dict[int, str]:
        """SIGKILL one TaskManager JVM, as a crash would. Returns its Python workers, PID ->
        start time (they lose their JVM; ``stop`` ends any that linger)."""
        if pid not in self.taskmanager_pids():
            raise ValueError(f"{pid} is not a live TaskManager of this cluster")
        workers = identify(descendants(pid))
        self._started.update(workers)
        os.kill(pid, signal.SIGKILL)
        self._wait(lambda: not alive(pid), 30, f"TaskManager {pid} to exit")
        return workers

    def start_taskmanager(self) -> int:
        """One more TaskManager (``taskmanager.sh start``); returns its PID once the
        JobManager lists it."""
        before = {tm["id"] for tm in self.taskmanagers()}
        known = set(self._pid_file_pids("taskexecutor"))
        subprocess.run([str(self.bin / "taskmanager.sh"), "start"], env=self.env, check=True,
                       timeout=60, stdout=subprocess.DEVNULL)
        self._remember_pids()
        self._wait(lambda: {tm["id"] for tm in self.taskmanagers()} - before, 120,
                   "a new TaskManager to register")
        return next(p for p in self._pid_file_pids("taskexecutor") if p not in known)

    def _wait(self, done: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if done():
                    return
            except OSError:  # REST not up yet
                pass
            if time.monotonic() > deadline:
                logs = sorted(self.log_dir.glob("*.log"))
                tail = "\n".join(f"--- {p.name}\n{log_tail(p, 20)}" for p in logs)
                raise ServiceError(f"timed out after {timeout_s:.0f} s waiting for {what}; "
                                   f"logs in {self.log_dir}:\n{tail}")
            time.sleep(0.5)

    # ------------------------------------------------------------------ REST
    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=10) as r:  # noqa: S310
            return json.load(r)

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - our own cluster on localhost
            f"{self.url}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            text = r.read()
        return json.loads(text) if text else None

    def taskmanagers(self) -> list[dict[str, Any]]:
        return list(self.get("/taskmanagers")["taskmanagers"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.get(f"/jobs/{job_id}"))

    def tasks_running(self, job_id: str) -> bool:
        """Every task of the job RUNNING (the job's own state says RUNNING while it waits
        for slots after a failure)."""
        job = self.job(job_id)
        return job["state"] == "RUNNING" and all(
            v["status"] == "RUNNING" for v in job["vertices"]
        )

    def wait_running(self, job_id: str, timeout_s: float = 240) -> float:
        """Wait until every task runs; returns the wall time (time.time()) it was seen."""
        self._wait(lambda: self.tasks_running(job_id), timeout_s, f"job {job_id} to run")
        return time.time()

    def failures(self, job_id: str) -> int:
        """How many times the job failed (and restarted) so far."""
        history = self.get(f"/jobs/{job_id}/exceptions")["exceptionHistory"]
        return len(history["entries"])

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        return dict(self.get(f"/jobs/{job_id}/checkpoints"))

    def completed_checkpoints(self, job_id: str) -> int:
        return int(self.checkpoints(job_id)["counts"]["completed"])

    def cancel(self, job_id: str, timeout_s: float = 120) -> None:
        if self.job(job_id)["state"] in ("FINISHED", "CANCELED", "FAILED"):
            return
        self._send("PATCH", f"/jobs/{job_id}?mode=cancel")
        self._wait(lambda: self.job(job_id)["state"] == "CANCELED", timeout_s,
                   f"job {job_id} to cancel")

    def stop_with_savepoint(self, job_id: str, directory: Path, timeout_s: float = 180) -> str:
        """``flink stop`` through the REST API: a savepoint, then the job finishes (its
        Kafka offsets commit with the savepoint). Returns the savepoint's path."""
        trigger = self._send("POST", f"/jobs/{job_id}/stop",
                             {"targetDirectory": directory.as_uri(), "drain": False})
        status: dict[str, Any] = {}

        def done() -> bool:
            status.update(self.get(f"/jobs/{job_id}/savepoints/{trigger['request-id']}"))
            return status["status"]["id"] == "COMPLETED"

        self._wait(done, timeout_s, f"the savepoint of job {job_id}")
        operation = status["operation"]
        if "location" not in operation:
            raise ServiceError(f"stop-with-savepoint of job {job_id} failed: {operation}")
        return str(operation["location"])

    # ------------------------------------------------------------------ jobs
    def submit(self, config: Path, *options: str, source: str = "kafka") -> str:
        """``facerec job submit --source kafka --detached`` with ``config``; returns the
        job id. ``options``: more flags (``--from-savepoint``, ``--delivery``)."""
        facerec = Path(sys.executable).parent / "facerec"
        cmd = [str(facerec), "job", "submit", "--source", source, "--jobmanager", self.rest,
               "--config", str(config), "--detached", *options]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=300,
                              cwd=ROOT)
        found = re.search(r"JobID ([0-9a-f]{32})", done.stdout)
        if done.returncode != 0 or not found:
            raise ServiceError(f"facerec job submit failed (rc={done.returncode}):\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return found.group(1)
