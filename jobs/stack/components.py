"""The components of a stack, in start order, each with its start and readiness check (the
service classes of jobs/services), its health check for ``status``, its log files, and its
stop: by the PIDs recorded at its start, with their start times.

A record (one entry of state.json) is ``{"pids": {"<pid>": "<start time>"}, "address": ...,
"started": ..., "startup_s": ...}``; the job's record names its Flink job id instead.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from jobs.services.flink import FlinkCluster
from jobs.services.pids import Procs, alive, end_processes, identify, started_at, with_descendants
from jobs.services.process import LOOPBACK, ServiceError, ServiceProcess, port_open

if TYPE_CHECKING:
    from jobs.stack.stack import Stack

JOB_NAME = "facerec-recognition"
LIVE_JOB_STATES = ("CREATED", "INITIALIZING", "RUNNING", "RESTARTING", "RECONCILING")


def component_env() -> dict[str, str]:
    """The environment of the stack's processes: this one without ``FACEREC_*``, so the
    stack's settings file is all they read (a variable would win over it)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("FACEREC_")}


def recorded_procs(record: dict[str, Any]) -> Procs:
    return {int(pid): since for pid, since in (record.get("pids") or {}).items()}


def live_procs(record: dict[str, Any]) -> Procs:
    return {p: t for p, t in recorded_procs(record).items() if alive(p, t)}


def reused_pids(record: dict[str, Any]) -> list[int]:
    """Recorded PIDs that now name another process (same number, other start time)."""
    return [
        p for p, t in recorded_procs(record).items()
        if (now := started_at(p)) is not None and now != t
    ]  # fmt: skip


def _http_ok(url: str, timeout: float = 3.0) -> bool:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return bool(r.status == 200)


class Component:
    """One part of the stack. ``needs``: components that must run before it starts."""

    name: ClassVar[str] = ""
    needs: ClassVar[tuple[str, ...]] = ()
    first_signal: ClassVar[int] = signal.SIGTERM
    stop_grace_s: ClassVar[float] = 30.0

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.dir = stack.dir.component_dir(self.name)

    @property
    def ports(self) -> dict[str, int]:
        return self.stack.plan.ports

    def disabled(self) -> str | None:
        """Why this stack does not run the component, or None."""
        return None

    def own_ports(self) -> list[int]:
        """Fixed ports the component binds: each must be free before it starts."""
        return []

    def address(self) -> str:
        return ""

    def logs(self) -> list[Path]:
        return [self.dir / f"{self.name}.log"]

    def start(self) -> dict[str, Any]:
        """Start and wait until ready; returns the record."""
        raise NotImplementedError

    def running(self, record: dict[str, Any]) -> bool:
        """Every recorded process still runs."""
        procs = recorded_procs(record)
        return bool(procs) and all(alive(p, t) for p, t in procs.items())

    def healthy(self) -> bool:
        """A real client request succeeds."""
        raise NotImplementedError

    def stop(self, record: dict[str, Any]) -> str:
        """Stop the recorded processes, then whatever they leave running below them; says
        what it did. Only the recorded processes get the component's stop signal (a
        PostgreSQL backend takes SIGINT as "cancel the query")."""
        main = live_procs(record)
        below = {p: t for p, t in with_descendants(main).items() if p not in main}
        note = ""
        if reused := reused_pids(record):
            note = f"; PID {', '.join(map(str, reused))} now names another process: left alone"
        if not main:
            return f"was not running{note}"
        started = time.monotonic()
        killed = end_processes(main, self.stop_grace_s, self.first_signal)
        end_processes(below, 10.0)
        how = f", killed after {self.stop_grace_s:.0f} s" if killed else ""
        took = time.monotonic() - started
        return f"stopped (pid {', '.join(map(str, main))}) in {took:.1f} s{how}{note}"


class ServiceComponent(Component):
    """A component run by one ``ServiceProcess`` of jobs/services."""

    def service(self) -> ServiceProcess:
        raise NotImplementedError

    def start(self) -> dict[str, Any]:
        service = self.service()
        service.bind_retries = 0  # fixed ports: a clash would clash again
        service.start()
        assert service.pid is not None
        return {"pids": {str(k): v for k, v in identify([service.pid]).items()},
                "startup_s": round(service.startup_seconds or 0.0, 1)}

    def healthy(self) -> bool:
        try:
            return bool(self.service().probe())
        except Exception:  # a refused or failing request: not healthy
            return False


# ---------------------------------------------------------------------- infrastructure
class Kafka(ServiceComponent):
    name = "kafka"

    def own_ports(self) -> list[int]:
        return [self.ports["kafka"], self.ports["kafka_controller"]]

    def address(self) -> str:
        return f"{LOOPBACK}:{self.ports['kafka']}"

    def service(self) -> ServiceProcess:
        from jobs.services.kafka import KafkaBroker

        return KafkaBroker(self.dir, port=self.ports["kafka"],
                           controller_port=self.ports["kafka_controller"])

    def start(self) -> dict[str, Any]:
        record = super().start()
        started = time.monotonic()
        created = ensure_topics(self.stack.settings())
        record["startup_s"] = round(record["startup_s"] + time.monotonic() - started, 1)
        if created:
            record["topics_created"] = created
        return record


def ensure_topics(settings: Any) -> list[str]:
    """Create the job's topics that are missing, before the job starts: its Kafka source
    finds the frames topic's partitions at its start and then only every 5 minutes. The
    index topic keeps its messages (the job rebuilds its index from them at a start)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    kafka = settings.kafka
    partitions = max(1, settings.job.parallelism)
    wanted = {
        kafka.frames_topic: (partitions, {}),
        kafka.events_topic: (partitions, {}),
        kafka.sightings_topic: (1, {}),
        kafka.dead_letter_topic: (1, {}),
        kafka.index_topic: (1, {"retention.ms": "-1"}),
    }
    admin = KafkaAdminClient(**kafka.client_options(), request_timeout_ms=15_000)
    try:
        missing = sorted(set(wanted) - set(admin.list_topics()))
        if missing:
            admin.create_topics([
                NewTopic(t, wanted[t][0], 1, topic_configs=wanted[t][1]) for t in missing
            ])
    finally:
        admin.close()
    return missing


class Postgres(ServiceComponent):
    name = "postgres"
    first_signal = signal.SIGINT  # fast shutdown: open transactions roll back, clients go

    def own_ports(self) -> list[int]:
        return [self.ports["postgres"]]

    def address(self) -> str:
        return f"{LOOPBACK}:{self.ports['postgres']}/facerec"

    def workdir(self) -> Path:
        return self.stack.postgres_dir()

    def service(self) -> ServiceProcess:
        from jobs.services.postgres import PostgresCluster

        return PostgresCluster(self.workdir(), durable=True, port=self.ports["postgres"],
                               password=self.stack.plan.postgres_password)

    def logs(self) -> list[Path]:
        return [self.workdir() / "postgres.log"]


class Cassandra(ServiceComponent):
    name = "cassandra"

    def disabled(self) -> str | None:
        return None if self.stack.plan.cassandra else "events in SQLite (--cassandra runs it)"

    def own_ports(self) -> list[int]:
        return [self.ports["cassandra"], self.ports["cassandra_storage"]]

    def address(self) -> str:
        return f"{LOOPBACK}:{self.ports['cassandra']}"

    def service(self) -> ServiceProcess:
        from jobs.services.cassandra import CassandraNode

        return CassandraNode(self.dir, port=self.ports["cassandra"],
                             storage_port=self.ports["cassandra_storage"])


class Flink(Component):
    name = "flink"

    def cluster(self) -> FlinkCluster:
        return FlinkCluster(
            self.dir,
            rest_port=self.ports["flink_rest"],
            rpc_port=self.ports["flink_rpc"],
            reporter_port=self.ports["flink_reporter"],
            reporter_ports=self.stack.plan.reporter_ports,
            loopback=True,
            environ=component_env(),
        )

    def own_ports(self) -> list[int]:
        return [self.ports["flink_rest"], self.ports["flink_rpc"]]

    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['flink_rest']}"

    def logs(self) -> list[Path]:
        return list(self.cluster().logs())

    def start(self) -> dict[str, Any]:
        cluster = self.cluster().start()
        procs = cluster.processes()
        reporters = cluster.reporter_ports()
        self.stack.write_targets("flink", reporters)
        return {
            "pids": {str(p): t for role in procs.values() for p, t in role.items()},
            "roles": {role: sorted(map(str, pids)) for role, pids in procs.items()},
            "reporter_ports": reporters,
            "startup_s": round(cluster.startup_seconds or 0.0, 1),
        }

    def healthy(self) -> bool:
        try:
            return len(self.cluster().taskmanagers()) >= 1
        except OSError:
            return False

    def stop(self, record: dict[str, Any]) -> str:
        cluster = self.cluster()
        cluster.adopt(recorded_procs(record))
        cluster.stop_timeout_s = self.stop_grace_s
        note = ""
        if reused := reused_pids(record):
            note = f"; PID {', '.join(map(str, reused))} now names another process: left alone"
        jvms = sorted(set(live_procs(record)).union(*cluster.processes().values()))
        started = time.monotonic()
        ended = cluster.stop()
        if not ended:
            return f"was not running{note}"
        took = time.monotonic() - started
        workers = len(set(ended) - set(jvms))
        also = f" and {workers} Python worker processes" if workers else ""
        return f"stopped (pid {', '.join(map(str, jvms))}{also}) in {took:.1f} s{note}"


class Prometheus(ServiceComponent):
    name = "prometheus"

    def own_ports(self) -> list[int]:
        return [self.ports["prometheus"]]

    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['prometheus']}"

    def service(self) -> ServiceProcess:
        from jobs.services.prometheus import PrometheusServer, scrape_config

        config = scrape_config(
            flink=self.stack.targets_file("flink"),
            api=[f"{LOOPBACK}:{self.ports['api']}"],
            ingest=self.stack.targets_file("ingest"),
            scrape_interval="5s",
            evaluation_interval="5s",
        )
        return PrometheusServer(self.dir, config=config, port=self.ports["prometheus"],
                                self_scrape=True)

    def start(self) -> dict[str, Any]:
        for job in ("flink", "ingest"):
            if not self.stack.targets_file(job).is_file():
                self.stack.write_targets(job, [])
        return super().start()


# ---------------------------------------------------------------------- facerec processes
class FacerecProcess(ServiceProcess):
    """A ``facerec`` command run as a server of the stack, ready when ``ready_url``
    answers 200."""

    def __init__(self, name: str, workdir: Path, args: list[str], ready_url: str,
                 startup_timeout_s: float) -> None:
        self.name = name
        super().__init__(workdir, startup_timeout_s)
        self.args = args
        self.ready_url = ready_url

    def launch(self) -> None:
        facerec = str(Path(sys.executable).parent / "facerec")
        self.popen([facerec, *self.args], env=component_env())

    def probe(self) -> bool:
        return _http_ok(self.ready_url)


class Api(ServiceComponent):
    name = "api"
    needs = ("kafka", "postgres", "cassandra")

    def own_ports(self) -> list[int]:
        return [self.ports["api"]]

    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['api']}"

    def service(self) -> ServiceProcess:
        # ready once the face engine is loaded and the enrollment store answers
        return FacerecProcess(self.name, self.dir,
                              ["api", "--config", str(self.stack.dir.settings_file)],
                              f"{self.address()}/readyz", startup_timeout_s=240)


class Ingest(ServiceComponent):
    name = "ingest"
    needs = ("kafka",)
    stop_grace_s = 90.0  # SIGTERM: the agent stops its cameras and hands its spool to Kafka

    def disabled(self) -> str | None:
        if self.stack.plan.cameras or self.stack.has_cameras():
            return None
        return "no cameras (--cameras FILE runs it)"

    def own_ports(self) -> list[int]:
        return [self.ports["ingest_metrics"]]

    def address(self) -> str:
        return f"http://{LOOPBACK}:{self.ports['ingest_metrics']}/metrics"

    def service(self) -> ServiceProcess:
        return FacerecProcess(self.name, self.dir,
                              ["ingest", "--config", str(self.stack.dir.settings_file)],
                              self.address(), startup_timeout_s=120)

    def start(self) -> dict[str, Any]:
        record = super().start()
        self.stack.write_targets("ingest", [self.ports["ingest_metrics"]])
        return record


class Job(Component):
    """The recognition job on the stack's Flink cluster; its record holds the job id."""

    name = "job"
    needs = ("flink", "kafka", "cassandra")

    def logs(self) -> list[Path]:
        return [self.dir / "submit.log"]

    def running(self, record: dict[str, Any]) -> bool:
        state = self.state(record)
        return state in LIVE_JOB_STATES

    def state(self, record: dict[str, Any]) -> str | None:
        """The job's state on the cluster; None when the cluster does not answer."""
        job_id = record.get("job_id")
        if not job_id:
            return None
        try:
            return str(self.stack.flink().job(job_id)["state"])
        except OSError:
            return None

    def healthy(self) -> bool:
        record = self.stack.record(self.name)
        if not record:
            return False
        try:
            return bool(self.stack.flink().tasks_running(record["job_id"]))
        except (OSError, ServiceError):
            return False

    def live_unrecorded(self) -> str | None:
        """A running facerec job on the stack's cluster that the state file lost."""
        for job in self.stack.flink().jobs():
            if job["name"] == JOB_NAME and job["state"] in LIVE_JOB_STATES:
                return str(job["jid"])
        return None

    def start(self) -> dict[str, Any]:
        cluster = self.stack.flink()
        started = time.monotonic()
        adopted = self.live_unrecorded()
        if adopted:
            job_id = adopted
        else:
            ensure_topics(self.stack.settings())
            self.dir.mkdir(parents=True, exist_ok=True)
            options = []
            if self.stack.from_savepoint:
                options = ["--from-savepoint", self.stack.from_savepoint]
            job_id = cluster.submit(self.stack.dir.settings_file, *options,
                                    log=self.dir / "submit.log")
        # recorded before the wait: an interrupted `up` leaves a job that `down` cancels
        self.stack.save_record(self.name, {"job_id": job_id})
        cluster.wait_running(job_id, timeout_s=300)
        record: dict[str, Any] = {"job_id": job_id,
                                  "startup_s": round(time.monotonic() - started, 1)}
        if adopted:
            record["adopted"] = True
        return record

    def stop(self, record: dict[str, Any]) -> str:
        job_id = str(record["job_id"])
        cluster = self.stack.flink()
        try:
            state = cluster.job(job_id)["state"]
        except OSError:
            return "Flink does not answer: the job stopped with it"
        if state not in LIVE_JOB_STATES:
            return f"was {state}"
        started = time.monotonic()
        cluster.cancel(job_id)
        took = time.monotonic() - started
        kept = self.stack.retained_checkpoint(job_id)
        where = f"; its last checkpoint stays at {kept} (--from-savepoint resumes it)"
        return f"job {job_id} cancelled in {took:.1f} s{where if kept else ''}"


ORDER: tuple[type[Component], ...] = (
    Kafka, Postgres, Cassandra, Flink, Prometheus, Api, Ingest, Job,
)
NAMES = tuple(c.name for c in ORDER)


def check_ports_free(component: Component) -> None:
    taken = [p for p in component.own_ports() if port_open(LOOPBACK, p)]
    if taken:
        raise ServiceError(
            f"{component.name}: port {', '.join(map(str, taken))} on {LOOPBACK} is taken by "
            "another process; stop it, or create the stack with --free-ports"
        )
