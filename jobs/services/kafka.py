"""Apache Kafka on one machine: a single KRaft node (broker and controller in one JVM) from
the jars ``make setup`` put in ``.jvm/kafka``, on loopback ports, with its log dir in its
work folder. The tests run against it, and ``facerec stack`` runs it.

    with KafkaBroker() as kafka:
        producer = KafkaProducer(bootstrap_servers=kafka.bootstrap_servers)

Settings a single node needs and facerec relies on (each overridable):

* internal topics (consumer offsets, transaction state, share groups) with one replica and
  one partition: one node cannot hold more replicas, and 50 partitions (Kafka's default)
  cost seconds when a group or transaction first touches them;
* ``group.initial.rebalance.delay.ms=0``: a group's first consumer starts at once instead
  of waiting 3 s for others;
* ``message.max.bytes`` 16 MiB: frame records are JPEGs (as docker-compose.yml);
* ``transaction.max.timeout.ms`` 1 h: an exactly-once Flink sink asks for its
  ``transaction.timeout.ms`` when it starts, and the broker refuses a timeout above this
  ("The transaction timeout is larger than the maximum value allowed by the broker");
* topics are created on first use (Kafka's default), with one partition.
"""

from __future__ import annotations

import base64
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Self

from jobs.services.process import (
    LOOPBACK,
    ServiceError,
    ServiceProcess,
    classpath,
    free_ports,
    java17,
    log_tail,
    port_open,
)
from jobs.services.versions import jvm_set, versions

MESSAGE_MAX_BYTES = 16 << 20
TRANSACTION_MAX_TIMEOUT_MS = 3_600_000
NODE_ID = 1

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (what ``kafka-storage
    random-uuid`` prints, without starting a JVM to print it)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class KafkaBroker(ServiceProcess):
    """One KRaft node. ``port`` / ``controller_port`` default to free loopback ports, picked
    at the first start and kept by every later start (``restart``), as the log dir is.
    ``quick_start`` trades peak speed for start time (what tests and a one-machine stack
    want); a broker that carries heavy load for long should run with it off."""

    name = "kafka"
    startup_timeout_s = 90.0
    stop_timeout_s = 30.0

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        heap_mb: int = 512,
        quick_start: bool = True,
        overrides: Mapping[str, str | int] | None = None,
        startup_timeout_s: float | None = None,
    ) -> None:
        super().__init__(workdir, startup_timeout_s)
        if (port is None) != (controller_port is None):
            raise ValueError("give both port and controller_port, or neither")
        self.port = port
        self.controller_port = controller_port
        self._ports_fixed = port is not None
        self.heap_mb = heap_mb
        self.quick_start = quick_start
        self.overrides = {k: str(v) for k, v in (overrides or {}).items()}
        self.jars = jvm_set("kafka")

    # ------------------------------------------------------------------ what clients see
    @property
    def bootstrap_servers(self) -> str:
        if self.port is None:
            raise ServiceError("the broker has no port yet: start() it first")
        return f"{LOOPBACK}:{self.port}"

    @property
    def data_dir(self) -> Path:
        """The log dir: topic partitions and the KRaft metadata log."""
        return self.workdir / "data"

    @property
    def transaction_max_timeout_ms(self) -> int:
        return int(self.properties()["transaction.max.timeout.ms"])

    def properties(self) -> dict[str, str]:
        """``server.properties`` of this node (overrides last)."""
        props = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@{LOOPBACK}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{LOOPBACK}:{self.port},"
            f"CONTROLLER://{LOOPBACK}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "true",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "share.coordinator.state.topic.num.partitions": "1",
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": str(MESSAGE_MAX_BYTES),
            "replica.fetch.max.bytes": str(MESSAGE_MAX_BYTES),
            "transaction.max.timeout.ms": str(TRANSACTION_MAX_TIMEOUT_MS),
            # two cores: Kafka's thread pools are sized for servers
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
        }
        props.update(self.overrides)
        return props

    # ------------------------------------------------------------------ ServiceProcess
    def configure(self) -> None:
        kafka_jar = self.jars / f"kafka_2.13-{versions()['KAFKA_VERSION']}.jar"
        if not kafka_jar.is_file():
            raise ServiceError(
                f"{kafka_jar.name} not found in {self.jars}: run `make setup` (or `make jvm`)"
            )
        if not self._ports_fixed:
            # new ports on every try of the first start (another process may have taken one)
            self.port, self.controller_port = free_ports(2)
        text = "".join(f"{k}={v}\n" for k, v in self.properties().items())
        (self.workdir / "server.properties").write_text(text)
        (self.workdir / "log4j2.properties").write_text(LOG4J2)
        if not (self.data_dir / "meta.properties").is_file():
            self._format()

    def _java(self, *, quick: bool) -> list[str]:
        argv = [
            java17(),
            f"-Xmx{self.heap_mb}m",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "-Djava.net.preferIPv4Stack=true",
            f"-Dlog4j2.configurationFile=file:{self.workdir / 'log4j2.properties'}",
        ]
        if quick:
            # the client compiler only, and the serial collector: on two busy cores a start
            # took 8-15 s instead of 18-40 s (a restart: 8-12 s against 18-20 s)
            argv += ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"]
        return argv + ["-cp", classpath(self.jars)]

    def _format(self) -> None:
        """Write the node's identity and the initial metadata into the log dir, once."""
        argv = self._java(quick=True) + [
            "kafka.tools.StorageTool",
            "format",
            # one argument: an id may start with "-", which argparse would take for an option
            f"--cluster-id={cluster_id()}",
            "--config",
            str(self.workdir / "server.properties"),
        ]
        done = subprocess.run(
            argv, cwd=self.workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120
        )
        with open(self.log_path, "ab") as log:
            log.write(done.stdout)
        if done.returncode != 0:
            raise ServiceError(
                f"formatting the Kafka log dir failed (rc={done.returncode}); log "
                f"{self.log_path}:\n{log_tail(self.log_path)}"
            )

    def launch(self) -> None:
        argv = self._java(quick=self.quick_start)
        self.popen(argv + ["kafka.Kafka", str(self.workdir / "server.properties")])

    def probe(self) -> bool:
        """Ready when an admin client sees this node in the cluster and can list topics."""
        if self.port is None or not port_open(LOOPBACK, self.port):
            return False
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap_servers,
            request_timeout_ms=5000,
            api_version_auto_timeout_ms=5000,
        )
        try:
            brokers = admin.describe_cluster().get("brokers") or []
            admin.list_topics()
            return len(brokers) > 0
        finally:
            admin.close()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Self:
        super().start()
        self._ports_fixed = True  # clients know them now: every later start keeps them
        return self

    def restart(self, *, crash: bool = False) -> Self:
        """Stop and start again on the same ports with the same log dir: the topics, group
        offsets and transactions survive. ``crash``: SIGKILL instead of a controlled
        shutdown (the node then recovers its log at start)."""
        if crash:
            self.kill()
        else:
            self.terminate()
        return self.start()
