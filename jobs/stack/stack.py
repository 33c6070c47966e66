"""One stack: ``up`` starts its components in order, each ready before the next starts;
``down`` stops what ``up`` recorded, in reverse order; ``status`` reads the state file and
asks each component; ``logs`` reads their log files."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from facerec.config import Settings, load_settings
from jobs.services.flink import FlinkCluster
from jobs.services.process import LOOPBACK
from jobs.stack.components import (
    NAMES,
    ORDER,
    Component,
    Flink,
    check_ports_free,
    live_procs,
    recorded_procs,
)
from jobs.stack.lag import Lag, frames_lag
from jobs.stack.plan import (
    Plan,
    StackDir,
    StackError,
    postgres_workdir,
    settings_tree,
    write_settings,
)

Echo = Callable[..., Any]
"""``typer.echo``-like: echo(text, nl=True)."""


@dataclass
class ComponentStatus:
    name: str
    state: str
    """running | unhealthy | stopped | disabled"""
    pids: list[int] = field(default_factory=list)
    address: str = ""
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


@dataclass
class JobStatus:
    job_id: str | None
    state: str
    tasks: str = ""
    checkpoint: str = ""
    lag: Lag | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "lag"}
        out["lag"] = self.lag.to_dict() if self.lag else None
        return out


def _age(iso: str | None) -> str:
    if not iso:
        return ""
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"up {seconds / size:.0f} {unit}"
    return f"up {seconds:.0f} s"


class Stack:
    def __init__(self, root: Path) -> None:
        self.dir = StackDir(root)
        self._plan = self.dir.read_plan()
        self._state = self.dir.read_state()
        self._settings: Settings | None = None
        self._postgres_dir: Path | None = None
        self.from_savepoint: str | None = None
        self.notes: list[str] = []

    # ------------------------------------------------------------------ plan and files
    @property
    def plan(self) -> Plan:
        if self._plan is None:
            raise StackError(f"no stack in {self.dir.root}: `facerec stack up` creates one")
        return self._plan

    def exists(self) -> bool:
        return self._plan is not None

    def components(self) -> list[Component]:
        return [cls(self) for cls in ORDER]

    def component(self, name: str) -> Component:
        for c in self.components():
            if c.name == name:
                return c
        raise StackError(f"no component {name!r}; the stack's are {', '.join(NAMES)}")

    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.dir.settings_file)
        return self._settings

    def has_cameras(self) -> bool:
        """Cameras in the settings (from --cameras, or the --config file's own)."""
        return self.dir.settings_file.is_file() and bool(self.settings().ingest.cameras)

    def postgres_dir(self) -> Path:
        if self._postgres_dir is None:
            self._postgres_dir, note = postgres_workdir(self.dir)
            if note:
                self.notes.append(note)
        return self._postgres_dir

    def postgres_password(self) -> str:
        existing = self.postgres_dir() / "superuser.password"
        if existing.is_file():
            return existing.read_text().strip()
        return self.plan.postgres_password

    def flink(self) -> FlinkCluster:
        return Flink(self).cluster()

    def targets_file(self, job: str) -> Path:
        """Prometheus's targets of ``job`` (flink, ingest): it re-reads the file when it
        changes, so a component started after it, or restarted on other ports (a Flink
        reporter takes the first free port of its range), is scraped without a restart."""
        return self.dir.component_dir("prometheus") / f"{job}_targets.json"

    def write_targets(self, job: str, ports: list[int]) -> None:
        from jobs.services.prometheus import write_targets

        self.targets_file(job).parent.mkdir(parents=True, exist_ok=True)
        write_targets(self.targets_file(job), [f"{LOOPBACK}:{p}" for p in ports])

    def retained_checkpoint(self, job_id: str) -> str | None:
        try:
            latest = self.flink().checkpoints(job_id)["latest"]["completed"]
        except (OSError, KeyError, TypeError):
            return None
        return str(latest["external_path"]) if latest else None

    # ------------------------------------------------------------------ state
    def record(self, name: str) -> dict[str, Any] | None:
        return self._state.get(name)

    def save_record(self, name: str, record: dict[str, Any] | None) -> None:
        if record is None:
            self._state.pop(name, None)
        else:
            self._state[name] = record
        self.dir.write_state(self._state)

    def is_running(self, name: str) -> bool:
        record = self.record(name)
        return bool(record) and self.component(name).running(record or {})

    # ------------------------------------------------------------------ up
    def _resolve_plan(
        self, *, free_ports: bool, cassandra: bool | None, cameras: Path | None,
        config: Path | None,
    ) -> list[str]:
        """The plan, created at the first ``up``; options given later must match it, or
        the components that use them must be stopped. Returns notes for the user."""
        notes: list[str] = []
        if self._plan is None:
            self._plan = Plan.new(free=free_ports, cassandra=bool(cassandra), cameras=cameras,
                                  config=config)
            self.dir.create()
            self.dir.write_plan(self._plan)
            return notes
        plan = self._plan
        if free_ports and not plan.free_ports:
            notes.append("--free-ports ignored: the stack keeps the ports of its first up "
                         "(stack.json)")
        changes: dict[str, tuple[str, tuple[str, ...]]] = {}
        if cassandra is not None and cassandra != plan.cassandra:
            changes["cassandra"] = ("--cassandra" if cassandra else "--no-cassandra",
                                    ("cassandra", "api", "job"))
        if cameras is not None and str(cameras.resolve()) != plan.cameras:
            changes["cameras"] = (f"--cameras {cameras}", ("ingest", "job"))
        if config is not None and str(config.resolve()) != plan.config:
            changes["config"] = (f"--config {config}", ("api", "ingest", "job"))
        for key, (flag, users) in changes.items():
            busy = [n for n in users if self.is_running(n)]
            if busy:
                raise StackError(
                    f"{flag} changes the stack, and {', '.join(busy)} run with the old "
                    f"setting: `facerec stack down --only {','.join(busy)}` first"
                )
            if key == "cassandra":
                plan.cassandra = bool(cassandra)
            elif key == "cameras":
                plan.cameras = str(cameras.resolve()) if cameras else None
            else:
                plan.config = str(config.resolve()) if config else None
        if changes:
            self.dir.write_plan(plan)
        return notes

    def up(
        self,
        echo: Echo,
        only: list[str] | None = None,
        *,
        free_ports: bool = False,
        cassandra: bool | None = None,
        cameras: Path | None = None,
        config: Path | None = None,
        from_savepoint: str | None = None,
    ) -> dict[str, float]:
        """Start what is not running, in order; returns the start time per component
        started (empty: the stack was already up)."""
        wanted = self._select(only)
        self.from_savepoint = from_savepoint
        with self.dir.lock():
            self._state = self.dir.read_state()
            for note in self._resolve_plan(free_ports=free_ports, cassandra=cassandra,
                                           cameras=cameras, config=config):
                echo(f"note: {note}")
            tree = settings_tree(self.dir, self.plan, self.postgres_password())
            if write_settings(self.dir, tree):
                echo(f"settings: {self.dir.settings_file}")
            self._settings = None
            self.settings()  # a bad --config fails here, before anything starts
            for note in self.notes:
                echo(f"note: {note}")
            echo(f"stack {self.dir.root} (events: "
                 f"{'Cassandra' if self.plan.cassandra else 'SQLite'}, enrollment: PostgreSQL)")
            timings: dict[str, float] = {}
            begun = time.monotonic()
            for component in self.components():
                if component.name not in wanted:
                    continue
                self._up_one(component, echo, timings)
            if not timings:
                echo("nothing started" if only else "the stack is already up: nothing started")
            else:
                echo(f"up in {time.monotonic() - begun:.1f} s")
            return timings

    def _up_one(self, component: Component, echo: Echo, timings: dict[str, float]) -> None:
        name = component.name
        label = f"{name:<11}"
        reason = component.disabled()
        if reason:
            echo(f"{label} not run: {reason}")
            return
        record = self.record(name)
        if record and component.running(record):
            pids = ",".join(map(str, recorded_procs(record))) or record.get("job_id", "")
            healthy = component.healthy()
            echo(f"{label} already running ({'pid ' if record.get('pids') else 'job '}{pids})"
                 + ("" if healthy else ": UNHEALTHY, see `facerec stack logs " + name + "`"))
            return
        if record:
            left = live_procs(record)
            if left:
                # part of it died (a TaskManager, say): end the rest before starting anew,
                # or the new start would clash with it and the state lose it
                echo(f"{label} partly running: {component.stop(record)}")
            self.save_record(name, None)
        missing = [n for n in component.needs
                   if not self.component(n).disabled() and not self.is_running(n)]
        if missing:
            raise StackError(
                f"{name} needs {', '.join(missing)} running: `facerec stack up --only "
                f"{','.join(missing)}` (or `facerec stack up` for everything)"
            )
        check_ports_free(component)
        echo(f"{label} starting ... ", nl=False)
        started = time.monotonic()
        try:
            record = component.start()
        except BaseException:
            echo("failed")
            raise
        seconds = time.monotonic() - started
        record["started"] = datetime.now(UTC).isoformat(timespec="seconds")
        record["startup_s"] = round(seconds, 1)
        record["address"] = component.address()
        self.save_record(name, record)
        timings[name] = round(seconds, 1)
        what = (f"pid {','.join(map(str, recorded_procs(record)))}" if record.get("pids")
                else f"job {record.get('job_id')}")
        address = f"  {record['address']}" if record["address"] else ""
        echo(f"ready in {seconds:.1f} s  ({what}){address}")

    def _select(self, only: list[str] | None) -> list[str]:
        if not only:
            return list(NAMES)
        unknown = [n for n in only if n not in NAMES]
        if unknown:
            raise StackError(f"unknown component {', '.join(unknown)}; the stack's are "
                             f"{', '.join(NAMES)}")
        return list(only)

    # ------------------------------------------------------------------ down
    def down(self, echo: Echo, only: list[str] | None = None) -> list[str]:
        """Stop what ``up`` recorded, in reverse order; returns the components stopped."""
        wanted = self._select(only)
        stopped = []
        with self.dir.lock():
            self._state = self.dir.read_state()
            for component in reversed(self.components()):
                name = component.name
                if name not in wanted:
                    continue
                record = self.record(name)
                if not record:
                    if only:
                        echo(f"{name:<11} not running")
                    continue
                echo(f"{name:<11} stopping ... ", nl=False)
                echo(component.stop(record))
                self.save_record(name, None)
                stopped.append(name)
            if only:
                still = [c.name for c in self.components()
                         if c.name not in wanted and self.record(c.name)]
                dependents = [c.name for c in self.components() if c.name in still
                              and set(c.needs) & set(stopped)]
                if dependents:
                    echo(f"note: still up and depending on what stopped: {', '.join(dependents)}"
                         " (`facerec stack up` starts what is stopped)")
            elif not stopped:
                echo("nothing was running")
        return stopped

    # ------------------------------------------------------------------ status
    def status(self) -> tuple[list[ComponentStatus], JobStatus]:
        rows = []
        for component in self.components():
            if component.name == "job":
                continue
            rows.append(self._component_status(component))
        return rows, self.job_status()

    def _component_status(self, component: Component) -> ComponentStatus:
        name = component.name
        reason = component.disabled()
        if reason:
            return ComponentStatus(name, "disabled", detail=reason)
        record = self.record(name) or {}
        live = live_procs(record)
        recorded = recorded_procs(record)
        address = component.address()
        if not live:
            detail = "exited; see `facerec stack logs " + name + "`" if record else ""
            return ComponentStatus(name, "stopped", [], address, detail)
        if len(live) < len(recorded):
            gone = sorted(set(recorded) - set(live))
            return ComponentStatus(name, "unhealthy", sorted(live), address,
                                   f"pid {','.join(map(str, gone))} gone")
        healthy = component.healthy()
        return ComponentStatus(name, "running" if healthy else "unhealthy", sorted(live),
                               address, _age(record.get("started")) if healthy
                               else "its processes run but it does not answer")

    def job_status(self) -> JobStatus:
        record = self.record("job") or {}
        job_id = record.get("job_id")
        lag_of = None
        status = JobStatus(job_id, "not submitted")
        flink = self.flink()
        try:
            flink.get("/overview", timeout=3)
            flink_up = True
        except OSError:
            flink_up = False
        if job_id and flink_up:
            try:
                job = flink.job(job_id)
                status.state = job["state"]
                vertices = job.get("vertices", [])
                running = sum(v["status"] == "RUNNING" for v in vertices)
                status.tasks = f"{running}/{len(vertices)} vertices running"
                counts = flink.checkpoints(job_id)
                latest = (counts.get("latest") or {}).get("completed")
                done = counts["counts"]["completed"]
                if latest:
                    ago = time.time() - latest["latest_ack_timestamp"] / 1000
                    status.checkpoint = f"{done} completed, the last {ago:.0f} s ago"
                else:
                    status.checkpoint = "none completed yet"
                lag_of = job_id
            except OSError as exc:
                status.state = f"unknown ({exc})"
        elif job_id:
            status.state = "unknown (Flink does not answer)"
        if self.is_running("kafka"):
            status.lag = frames_lag(self.settings(), flink.get if flink_up else None, lag_of)
        return status

    # ------------------------------------------------------------------ logs
    def log_files(self, name: str | None = None) -> dict[str, list[Path]]:
        chosen = [self.component(name)] if name else self.components()
        return {c.name: [p for p in c.logs() if p.is_file()] for c in chosen
                if not c.disabled() or name}

    def follow(self, name: str | None, interval_s: float = 0.5) -> Iterator[tuple[str, str]]:
        """(component, line) as lines are appended to the logs, until interrupted; files
        that appear later (a restarted component's) are picked up."""
        offsets: dict[Path, int] = {}
        for files in self.log_files(name).values():
            for path in files:
                offsets[path] = path.stat().st_size
        while True:
            for component, files in self.log_files(name).items():
                for path in files:
                    start = offsets.get(path, 0)
                    size = path.stat().st_size
                    if size < start:
                        start = 0  # rotated or truncated
                    if size == start:
                        continue
                    with open(path, "rb") as f:
                        f.seek(start)
                        data = f.read(size - start)
                    cut = data.rfind(b"\n") + 1
                    offsets[path] = start + cut
                    for line in data[:cut].decode("utf-8", "replace").splitlines():
                        yield component, line
            time.sleep(interval_s)


def tail_lines(path: Path, n: int) -> list[str]:
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        block = min(size, max(64 * 1024, n * 400))
        f.seek(size - block)
        data = f.read().decode("utf-8", "replace")
    return data.splitlines()[-n:] if n > 0 else []

