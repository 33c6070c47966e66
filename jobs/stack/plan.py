"""What a stack is on disk: its folder, its plan (ports, options and secrets chosen at its
first ``up`` and kept after), the settings it generates for its own processes, and the state
file that records what runs.

    <stack>/stack.json     the plan (0600: it holds the API key and database password)
    <stack>/facerec.yaml   the settings the API, the ingest agent and the job all read (0600)
    <stack>/state.json     per component: PIDs with their start times, address, start time
    <stack>/<component>/   each component's data, configuration and log
    <stack>/data/          facerec's data_dir: snapshots, manifests, SQLite events, evidence
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pwd
import secrets
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml

from facerec.config import api_key_hash, read_cameras_file, read_config_file
from jobs.services.process import LOOPBACK, free_ports

DEFAULT_PORTS = {
    "kafka": 9092,
    "kafka_controller": 9093,
    "postgres": 5432,
    "cassandra": 9042,
    "cassandra_storage": 7000,
    "flink_rest": 8081,
    "flink_rpc": 6123,
    "flink_reporter": 9249,  # a range: one port per Flink JVM, as flink-conf
    "prometheus": 9090,
    "api": 8000,
    "ingest_metrics": 9100,
}
DEFAULT_REPORTER_PORTS = 12
"""flink-conf's reporter range (9249-9260)."""
FREE_REPORTER_PORTS = 6
"""A stack on free ports holds its range to a few ports: a JobManager and TaskManagers."""
PLAN_VERSION = 1


class StackError(RuntimeError):
    """A stack command cannot do what it was asked; the message says why and what to do."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by this user only, replacing ``path`` at once."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def pick_free_ports(reporter_span: int = FREE_REPORTER_PORTS) -> dict[str, int]:
    """A free loopback port per name, none inside the reporter's range (its JVMs take the
    ports above its first one when they start)."""
    names = list(DEFAULT_PORTS)
    for _ in range(20):
        picked = dict(zip(names, free_ports(len(names)), strict=True))
        base = picked["flink_reporter"]
        span = range(base, base + reporter_span)
        if not any(p in span for n, p in picked.items() if n != "flink_reporter"):
            return picked
    raise StackError("could not find free loopback ports apart from each other")


@dataclass
class Plan:
    """What the stack is: chosen at its first ``up``, kept by every later one."""

    ports: dict[str, int]
    reporter_ports: int
    cassandra: bool
    cameras: str | None
    config: str | None
    api_key: str
    postgres_password: str
    free_ports: bool
    created: str = field(default_factory=_now)

    @classmethod
    def new(
        cls, *, free: bool, cassandra: bool, cameras: Path | None, config: Path | None
    ) -> Plan:
        return cls(
            ports=pick_free_ports() if free else dict(DEFAULT_PORTS),
            reporter_ports=FREE_REPORTER_PORTS if free else DEFAULT_REPORTER_PORTS,
            cassandra=cassandra,
            cameras=str(cameras.resolve()) if cameras else None,
            config=str(config.resolve()) if config else None,
            api_key=secrets.token_urlsafe(24),
            postgres_password=secrets.token_urlsafe(24),
            free_ports=free,
        )

    def to_json(self) -> str:
        return json.dumps({"version": PLAN_VERSION, **self.__dict__}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data = json.loads(text)
        data.pop("version", None)
        return cls(**data)


class StackDir:
    """The folder of one stack and the files in it."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().absolute()
        self.plan_file = self.root / "stack.json"
        self.settings_file = self.root / "facerec.yaml"
        self.state_file = self.root / "state.json"
        self.data_dir = self.root / "data"

    def exists(self) -> bool:
        return self.plan_file.is_file()

    def component_dir(self, name: str) -> Path:
        return self.root / name

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir.mkdir(exist_ok=True)

    # ------------------------------------------------------------------ plan
    def read_plan(self) -> Plan | None:
        if not self.plan_file.is_file():
            return None
        return Plan.from_json(self.plan_file.read_text())

    def write_plan(self, plan: Plan) -> None:
        _write_private(self.plan_file, plan.to_json())

    # ------------------------------------------------------------------ lock
    @contextmanager
    def lock(self) -> Iterator[None]:
        """One ``up`` or ``down`` at a time per stack."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.root / ".lock"
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "?"
                raise StackError(
                    f"another `facerec stack up/down` (pid {holder}) is working on {self.root}"
                ) from None
            f.seek(0)
            f.truncate()
            f.write(str(os.getpid()))
            f.flush()
            try:
                yield
            finally:
                f.truncate(0)
                fcntl.flock(f, fcntl.LOCK_UN)

    # ------------------------------------------------------------------ state
    def read_state(self) -> dict[str, dict[str, Any]]:
        if not self.state_file.is_file():
            return {}
        return dict(json.loads(self.state_file.read_text()).get("components", {}))

    def write_state(self, components: Mapping[str, dict[str, Any]]) -> None:
        text = json.dumps({"updated": _now(), "components": dict(components)}, indent=2)
        _write_private(self.state_file, text + "\n")


# ---------------------------------------------------------------------- settings
def _merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def cameras_for_settings(path: Path) -> list[dict[str, Any]]:
    """The cameras of a cameras YAML file, validated, as ``ingest.cameras`` entries; a
    ``url`` naming a file beside the cameras file becomes an absolute path (the agent runs
    in the stack's folder)."""
    out = []
    for camera in read_cameras_file(path):
        entry = camera.model_dump(mode="json", exclude_unset=True)
        local = path.parent / camera.url
        if "://" not in camera.url and not camera.url.isdigit() and local.exists():
            entry["url"] = str(local.resolve())
        out.append(entry)
    return out


def postgres_url(password: str, port: int) -> str:
    return f"postgresql+psycopg://postgres:{quote(password, safe='')}@{LOOPBACK}:{port}/facerec"


def settings_tree(stack: StackDir, plan: Plan, postgres_password: str) -> dict[str, Any]:
    """The stack's settings: the ``--config`` file given at ``up`` as the base, with the
    stack's addresses, stores and data dir on top (the components must find each other)."""
    base = read_config_file(plan.config) if plan.config else {}
    ports = plan.ports
    events: dict[str, Any] = {"backend": "sqlite"}
    if plan.cassandra:
        events = {
            "backend": "cassandra",
            "cassandra_hosts": [LOOPBACK],
            "cassandra_port": ports["cassandra"],
            "cassandra_replication_factor": 1,
            # one node: a quorum of one replica is that replica
            "cassandra_consistency": "LOCAL_ONE",
        }
    api: dict[str, Any] = {"host": LOOPBACK, "port": ports["api"]}
    if not (base.get("api") or {}).get("keys"):
        # a real key, so the API can run as in production (placeholder keys refused)
        api |= {
            "environment": "production",
            "keys": [
                {"name": "stack-admin", "key_hash": api_key_hash(plan.api_key), "role": "admin"}
            ],
        }
    ingest: dict[str, Any] = {"metrics_port": ports["ingest_metrics"]}
    if plan.cameras:
        ingest["cameras"] = cameras_for_settings(Path(plan.cameras))
    stack_values = {
        "data_dir": str(stack.data_dir),
        "kafka": {"bootstrap_servers": f"{LOOPBACK}:{ports['kafka']}"},
        "enrollment": {"database_url": postgres_url(postgres_password, ports["postgres"])},
        "events": events,
        "index": {"publish_kafka": True},
        "api": api,
        "ingest": ingest,
    }
    return _merge(base, stack_values)


def write_settings(stack: StackDir, tree: Mapping[str, Any]) -> bool:
    """Write the settings file when its content changes; True if it did."""
    text = (
        "# Generated by `facerec stack up` from the stack's plan (stack.json) and the --config\n"
        "# file given then; rewritten at each `up`. The API, the ingest agent and the job read\n"
        "# it. Change settings in that --config file, not here.\n"
        + yaml.safe_dump(dict(tree), sort_keys=False)
    )
    if stack.settings_file.is_file() and stack.settings_file.read_text() == text:
        return False
    _write_private(stack.settings_file, text)
    return True


# ---------------------------------------------------------------------- PostgreSQL folder
def postgres_workdir(stack: StackDir) -> tuple[Path, str | None]:
    """Where the stack's PostgreSQL lives, and a note when that is not the stack's folder.

    As root the server runs as the ``postgres`` user, which must be able to reach its data
    directory. When it cannot enter the stack's folder (under root's 0700 home, say), the
    cluster goes under that user's home and ``<stack>/postgres`` links to it."""
    link = stack.component_dir("postgres")
    if link.is_symlink():
        return link.resolve(), f"PostgreSQL's folder is {link.resolve()} (linked from {link})"
    if link.is_dir() or os.geteuid() != 0:
        link.mkdir(parents=True, exist_ok=True)
        return link, None
    reachable = subprocess.run(
        ["runuser", "-u", "postgres", "--", "test", "-x", str(stack.root)],
        capture_output=True, check=False, timeout=30,
    ).returncode == 0  # fmt: skip
    if reachable:
        link.mkdir(parents=True, exist_ok=True)
        return link, None
    digest = hashlib.sha256(str(stack.root).encode()).hexdigest()[:12]
    target = Path(pwd.getpwnam("postgres").pw_dir) / "facerec-stacks" / digest
    target.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)
    return target, (
        f"the postgres user cannot enter {stack.root}: PostgreSQL's folder is {target} "
        f"(linked from {link})"
    )
