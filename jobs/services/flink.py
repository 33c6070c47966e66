"""A standalone Flink cluster from the apache-flink wheel's distribution (``pyflink/bin``):
the project's ``flink-conf/`` copied into a work folder with this cluster's ports and the
folder's own checkpoint, savepoint, log and PID dirs, started by ``jobmanager.sh`` and
``taskmanager.sh``, ready once the REST API lists a TaskManager. The tests run one, and
``facerec stack`` runs it.

    cluster = FlinkCluster(workdir).start()        # free loopback ports
    job_id = cluster.submit(config_yaml)            # facerec job submit --source kafka
    cluster.stop()

The PID dir is the work folder's, never Flink's default ``/tmp`` that every cluster on the
machine shares. ``stop()`` ends the processes this cluster started by PID and start time:
the JobManager and TaskManager JVMs (those the PID files name whose command line carries
this cluster's log dir) and the Python workers below them. The metrics reporter of each
JVM takes the first free port of its range; ``reporter_ports()`` says which ones they took.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Self

import yaml

from jobs.services.pids import (
    Procs,
    alive,
    cmdline,
    end_processes,
    identify,
    listening_ports,
    with_descendants,
)
from jobs.services.process import LOOPBACK, ServiceError, free_ports, log_tail

ROOT = Path(__file__).resolve().parents[2]
DAEMONS = ("standalonesession", "taskexecutor")
"""flink-daemon.sh's names of the JobManager and TaskManager processes (their PID files)."""
TERMINAL_STATES = ("FINISHED", "CANCELED", "FAILED")


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *path, leaf = dotted.split(".")
    for key in path:
        tree = tree.setdefault(key, {})
    tree[leaf] = value


class FlinkCluster:
    """One JobManager and (at first) one TaskManager on this machine. Ports left None are
    picked free at the first start and kept by later ones. ``reporter_ports``: the size of
    the metrics reporter's port range (one port per JVM). ``loopback``: every endpoint on
    127.0.0.1 only (flink-conf binds all interfaces, as containers need). ``overrides``:
    more Flink options, dotted keys (``{"heartbeat.interval": 2000}``). ``environ``: the
    environment of the cluster's processes and of submissions (default: this one's)."""

    startup_timeout_s = 120.0
    stop_timeout_s = 30.0

    def __init__(
        self,
        workdir: Path,
        overrides: Mapping[str, Any] | None = None,
        *,
        rest_port: int | None = None,
        rpc_port: int | None = None,
        reporter_port: int | None = None,
        reporter_ports: int = 6,
        loopback: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.conf_dir = self.workdir / "conf"
        self.log_dir = self.workdir / "log"
        self.pid_dir = self.workdir / "pids"
        self.overrides = dict(overrides or {})
        self.rest_port = rest_port or 0
        self.rpc_port = rpc_port or 0
        self.prom_port = reporter_port or 0
        self.reporter_range = reporter_ports
        self.loopback = loopback
        self.bin = flink_home() / "bin"
        self.env = {
            **(os.environ if environ is None else environ),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(self.pid_dir),
        }
        self._started: Procs = {}
        """The processes this cluster started, PID -> start time (JVMs and, once seen, their
        Python workers)."""
        self.startup_seconds: float | None = None

    # ------------------------------------------------------------------ addresses
    @property
    def rest(self) -> str:
        return f"localhost:{self.rest_port}"

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.rest_port}"

    @property
    def reporter_range_ports(self) -> range:
        return range(self.prom_port, self.prom_port + self.reporter_range)

    # ------------------------------------------------------------------ lifecycle
    def configure(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for d in (self.log_dir, self.pid_dir):
            d.mkdir(parents=True, exist_ok=True)
        for f in (ROOT / "flink-conf").iterdir():
            shutil.copy(f, self.conf_dir / f.name)
        config = yaml.safe_load((self.conf_dir / "config.yaml").read_text())
        if not (self.rest_port and self.rpc_port and self.prom_port):
            picked = iter(free_ports(3))
            self.rest_port = self.rest_port or next(picked)
            self.rpc_port = self.rpc_port or next(picked)
            self.prom_port = self.prom_port or next(picked)
        last = self.prom_port + self.reporter_range - 1
        options: dict[str, Any] = {
            "rest.port": self.rest_port,
            "jobmanager.rpc.port": self.rpc_port,
            "execution.checkpointing.dir": (self.workdir / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (self.workdir / "savepoints").as_uri(),
            # one port per process of a small cluster: JobManager, TaskManagers
            "metrics.reporter.prom.port": f"{self.prom_port}-{last}",
        }
        if self.loopback:
            options |= {
                "rest.address": LOOPBACK,
                "rest.bind-address": LOOPBACK,
                "jobmanager.rpc.address": LOOPBACK,
                "jobmanager.bind-host": LOOPBACK,
                "taskmanager.bind-host": LOOPBACK,
                "taskmanager.host": LOOPBACK,
            }
        for key, value in {**options, **self.overrides}.items():
            _set(config, key, value)
        (self.conf_dir / "config.yaml").write_text(yaml.safe_dump(config))
        host = LOOPBACK if self.loopback else "localhost"
        (self.conf_dir / "masters").write_text(f"{host}:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text(f"{host}\n")

    def start(self) -> Self:
        started = time.monotonic()
        self.configure()
        try:
            # what start-cluster.sh does for one local worker, but both at once: each script
            # first runs a JVM of its own to size the daemon's memory, which on two busy
            # cores took 20 s apiece; the TaskManager retries until the JobManager is up.
            # Their own session: a Ctrl-C meant for the caller does not reach the daemons.
            scripts = {
                name: subprocess.Popen([str(self.bin / name), "start"], env=self.env,
                                       stdout=subprocess.DEVNULL, start_new_session=True)
                for name in ("jobmanager.sh", "taskmanager.sh")
            }
            for name, script in scripts.items():
                if script.wait(timeout=120) != 0:
                    raise ServiceError(f"{name} start failed (rc {script.returncode})")
            self._remember_pids()
            self._wait(lambda: len(self.taskmanagers()) >= 1, self.startup_timeout_s,
                       "the cluster's REST API to list a TaskManager")
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> Procs:
        """End every process of this cluster (SIGTERM, then SIGKILL after
        ``stop_timeout_s``); returns those that were signalled."""
        self._remember_pids()
        ending = with_descendants(self._started)
        end_processes(ending, self.stop_timeout_s)
        for f in self.pid_dir.glob("*.pid"):
            f.unlink(missing_ok=True)
        self._started = {}
        return ending

    def adopt(self, procs: Mapping[int, str]) -> None:
        """Count ``procs`` (PID -> start time, e.g. recorded when another process started
        this cluster) as this cluster's: ``stop`` ends them."""
        self._started.update({p: t for p, t in procs.items() if alive(p, t)})

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ processes
    def _pid_file_pids(self, daemon: str) -> list[int]:
        """Live processes the PID files name that are this cluster's JVMs (their command
        line holds this cluster's log dir): a stale PID file never names a stranger."""
        pids = []
        for f in self.pid_dir.glob(f"*-{daemon}.pid"):
            pids += [int(line) for line in f.read_text().split() if line.isdigit()]
        mark = f"-Dlog.file={self.log_dir}/"
        return [p for p in pids if alive(p) and any(a.startswith(mark) for a in cmdline(p))]

    def _remember_pids(self) -> None:
        for daemon in DAEMONS:
            self._started.update(identify(self._pid_file_pids(daemon)))

    def processes(self) -> dict[str, Procs]:
        """The live JVMs by role (``jobmanager``, ``taskmanager``), PID -> start time."""
        return {
            "jobmanager": identify(self._pid_file_pids("standalonesession")),
            "taskmanager": identify(self._pid_file_pids("taskexecutor")),
        }

    def taskmanager_pids(self) -> list[int]:
        """Live TaskManager JVMs, oldest first."""
        return self._pid_file_pids("taskexecutor")

    def reporter_ports(self) -> list[int]:
        """The metrics reporter ports the cluster's JVMs listen on (one each)."""
        span = self.reporter_range_ports
        found: set[int] = set()
        for pid in self._pid_file_pids("standalonesession") + self.taskmanager_pids():
            found |= {p for p in listening_ports(pid) if p in span}
        return sorted(found)

    def start_taskmanager(self) -> int:
        """One more TaskManager (``taskmanager.sh start``); returns its PID once the
        JobManager lists it."""
        before = {tm["id"] for tm in self.taskmanagers()}
        known = set(self._pid_file_pids("taskexecutor"))
        subprocess.run([str(self.bin / "taskmanager.sh"), "start"], env=self.env, check=True,
                       timeout=60, stdout=subprocess.DEVNULL, start_new_session=True)
        self._remember_pids()
        self._wait(lambda: {tm["id"] for tm in self.taskmanagers()} - before, 120,
                   "a new TaskManager to register")
        return next(p for p in self._pid_file_pids("taskexecutor") if p not in known)

    def logs(self) -> list[Path]:
        """The current log files of the cluster's JVMs (JobManager first)."""
        return sorted(self.log_dir.glob("flink-*-standalonesession-*.log")) + sorted(
            self.log_dir.glob("flink-*-taskexecutor-*.log")
        )

    def _wait(self, done: Callable[[], Any], timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if done():
                    return
            except OSError:  # REST not up yet
                pass
            if time.monotonic() > deadline:
                tail = "\n".join(f"--- {p.name}\n{log_tail(p, 20)}" for p in self.logs())
                raise ServiceError(f"timed out after {timeout_s:.0f} s waiting for {what}; "
                                   f"logs in {self.log_dir}:\n{tail}")
            time.sleep(0.5)

    # ------------------------------------------------------------------ REST
    def get(self, path: str, timeout: float = 10) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as r:  # noqa: S310
            return json.load(r)

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(  # noqa: S310 - our own cluster on loopback
            f"{self.url}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310
            text = r.read()
        return json.loads(text) if text else None

    def taskmanagers(self) -> list[dict[str, Any]]:
        return list(self.get("/taskmanagers")["taskmanagers"])

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the cluster knows (``/jobs/overview``): jid, name, state, tasks..."""
        return list(self.get("/jobs/overview")["jobs"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.get(f"/jobs/{job_id}"))

    def tasks_running(self, job_id: str) -> bool:
        """Every task of the job RUNNING (the job's own state says RUNNING while it waits
        for slots after a failure)."""
        job = self.job(job_id)
        if job["state"] in TERMINAL_STATES:
            raise ServiceError(f"job {job_id} is {job['state']}")
        return job["state"] == "RUNNING" and all(
            v["status"] == "RUNNING" for v in job["vertices"]
        )

    def wait_running(self, job_id: str, timeout_s: float = 240) -> float:
        """Wait until every task runs; returns the wall time (time.time()) it was seen."""
        self._wait(lambda: self.tasks_running(job_id), timeout_s, f"job {job_id} to run")
        return time.time()

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        return dict(self.get(f"/jobs/{job_id}/checkpoints"))

    def cancel(self, job_id: str, timeout_s: float = 120) -> None:
        if self.job(job_id)["state"] in TERMINAL_STATES:
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
            return bool(status["status"]["id"] == "COMPLETED")

        self._wait(done, timeout_s, f"the savepoint of job {job_id}")
        operation = status["operation"]
        if "location" not in operation:
            raise ServiceError(f"stop-with-savepoint of job {job_id} failed: {operation}")
        return str(operation["location"])

    # ------------------------------------------------------------------ jobs
    def submit(
        self, config: Path, *options: str, source: str = "kafka", log: Path | None = None
    ) -> str:
        """``facerec job submit --source SOURCE --detached`` with ``config``; returns the
        job id. ``options``: more flags (``--from-savepoint``, ``--delivery``). ``log``:
        where the submission's output goes too."""
        facerec = Path(sys.executable).parent / "facerec"
        cmd = [str(facerec), "job", "submit", "--source", source, "--jobmanager", self.rest,
               "--config", str(config), "--detached", *options]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=600,
                              cwd=ROOT)
        if log is not None:
            with open(log, "a") as out:
                out.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
        found = re.search(r"JobID ([0-9a-f]{32})", done.stdout)
        if done.returncode != 0 or not found:
            raise ServiceError(f"facerec job submit failed (rc={done.returncode}):\n"
                               f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return found.group(1)
