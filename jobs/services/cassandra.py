"""Apache Cassandra on one machine: a single node from the jars ``make setup`` put in
``.jvm/cassandra`` (``org.apache.cassandra.service.CassandraDaemon``; Cassandra's binary
tarball is not on Maven Central), on loopback ports, data and logs in its work folder.

What a single node needs to start in seconds instead of a minute:

* Cassandra's Java 17 JVM options (conf/jvm17-server.options): the module exports/opens its
  internals need. Java 17 only: 5.0 fails on newer JDKs ("Setting a system-wide Policy
  object is not supported").
* No gossip or ring waits (there are no peers), and ``memtable.row_overhead_size`` given
  instead of measured by jamm at boot (about 15 s).
* As root, ``mlockall`` would pin the whole committed heap (about 1 GB resident with a
  512 MB heap): the JVM runs without CAP_IPC_LOCK, so the lock fails softly.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from jobs.services.process import (
    LOOPBACK,
    ServiceProcess,
    classpath,
    free_ports,
    java17,
    port_open,
)
from jobs.services.versions import jvm_set

CASSANDRA_JVM17_OPTS = [
    "-Djdk.attach.allowAttachSelf=true",
    "--add-exports", "java.base/jdk.internal.misc=ALL-UNNAMED",
    "--add-exports", "java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.registry=ALL-UNNAMED",
    "--add-exports", "java.rmi/sun.rmi.server=ALL-UNNAMED",
    "--add-exports", "java.sql/java.sql=ALL-UNNAMED",
    "--add-exports", "java.base/java.lang.ref=ALL-UNNAMED",
    "--add-exports", "jdk.unsupported/sun.misc=ALL-UNNAMED",
    "--add-exports", "jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED",
    "--add-exports", "jdk.attach/sun.tools.attach=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.loader=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.ref=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.reflect=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.math=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.module=ALL-UNNAMED",
    "--add-opens", "java.base/jdk.internal.util.jar=ALL-UNNAMED",
    "--add-opens", "jdk.management/com.sun.management.internal=ALL-UNNAMED",
    "--add-opens", "java.base/sun.nio.ch=ALL-UNNAMED",
    "--add-opens", "java.base/java.io=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang.reflect=ALL-UNNAMED",
    "--add-opens", "jdk.compiler/com.sun.tools.javac=ALL-UNNAMED",
    "--add-opens", "java.base/java.lang=ALL-UNNAMED",
    "--add-opens", "java.base/java.util=ALL-UNNAMED",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Dio.netty.allocator.useCacheForAllThreads=true",
    "-Dio.netty.allocator.maxOrder=11",
]

# a single node has no peers: no gossip or ring waits
CASSANDRA_FAST_START_OPTS = [
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    "-Dcassandra.gossip_settle_min_wait_ms=0",
    "-Dcassandra.ring_delay_ms=0",
    "-Dcassandra.load_ring_state=false",
    "-Dcassandra.initial_token=0",
    "-Dcassandra.superuser_setup_delay_ms=0",
    "-Dcassandra.migration_delay_ms=0",
    # the value jamm measures at boot (about 15 s) on x86-64 with JDK 17
    "-Dcassandra.memtable.row_overhead_size=180",
]


class CassandraNode(ServiceProcess):
    """One Cassandra 5.0 node; ``port`` is its CQL (native transport) port."""

    name = "cassandra"
    startup_timeout_s = 180.0

    def __init__(
        self,
        workdir: Path | None = None,
        heap: str = "512m",
        jars: Path | None = None,
        startup_timeout_s: float | None = None,
        disposable: bool = False,
        port: int | None = None,
        storage_port: int | None = None,
    ) -> None:
        """``disposable``: data nobody keeps (tests): no snapshot before a keyspace is
        dropped or truncated, schema tables written without fsync, which makes each CREATE
        or DROP several times faster, and the commit log synced every 10 s instead of before
        each acknowledgement. ``port`` (CQL) and ``storage_port``: fixed (default: free
        loopback ports at each start)."""
        super().__init__(workdir, startup_timeout_s)
        self.disposable = disposable
        self.jars = jars or jvm_set("cassandra")
        self.heap = heap
        self.port = port or 0
        self.storage_port = storage_port or 0
        self._ports_fixed = port is not None and storage_port is not None
        self.release_version: str | None = None

    def configure(self) -> None:
        if not self._ports_fixed:
            self.storage_port, self.port = free_ports(2)
        d = self.workdir
        conf = {
            "cluster_name": "facerec",
            "num_tokens": 1,
            "initial_token": 0,
            "partitioner": "org.apache.cassandra.dht.Murmur3Partitioner",
            "endpoint_snitch": "SimpleSnitch",
            "listen_address": LOOPBACK,
            "rpc_address": LOOPBACK,
            "storage_port": self.storage_port,
            "native_transport_port": self.port,
            "start_native_transport": "true",
            "data_file_directories": f"[{d / 'data'}]",
            "commitlog_directory": d / "commitlog",
            "saved_caches_directory": d / "saved_caches",
            "hints_directory": d / "hints",
            "cdc_raw_directory": d / "cdc_raw",
            "authenticator": "AllowAllAuthenticator",
            "authorizer": "AllowAllAuthorizer",
            # a small footprint: one machine shares its cores and memory with the job
            "concurrent_reads": 4,
            "concurrent_writes": 4,
            "concurrent_counter_writes": 4,
            "concurrent_compactors": 1,
            "memtable_heap_space": "64MiB",
            "memtable_offheap_space": "64MiB",
            "key_cache_size": "8MiB",
            "file_cache_size": "32MiB",
            "networking_cache_size": "16MiB",
            "commitlog_segment_size": "8MiB",
            "native_transport_max_threads": 16,
        }
        if self.disposable:
            conf["auto_snapshot"] = "false"
            conf["commitlog_sync"] = "periodic"
            conf["commitlog_sync_period"] = "10000ms"
        else:
            # a write is acknowledged once its commit log entry is on disk: a single node has
            # no replica to recover it from after a crash (periodic sync would lose up to
            # the period's acknowledged writes); writes arriving together share one fsync
            conf["commitlog_sync"] = "group"
            conf["commitlog_sync_group_window"] = "15ms"
        text = "".join(f"{k}: {v}\n" for k, v in conf.items())
        text += (
            "seed_provider:\n"
            "  - class_name: org.apache.cassandra.locator.SimpleSeedProvider\n"
            "    parameters:\n"
            f'      - seeds: "{LOOPBACK}:{self.storage_port}"\n'
        )
        (d / "cassandra.yaml").write_text(text)
        (d / "logback.xml").write_text(
            "<configuration>\n"
            '  <appender name="STDOUT" class="ch.qos.logback.core.ConsoleAppender">\n'
            "    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern>"
            "</encoder>\n"
            "  </appender>\n"
            '  <root level="INFO"><appender-ref ref="STDOUT"/></root>\n'
            "</configuration>\n"
        )

    def launch(self) -> None:
        argv: list[str] = []
        if os.geteuid() == 0 and shutil.which("setpriv"):
            argv += ["setpriv", "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock"]
        argv += [
            java17(),
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-Xss256k",
            "-XX:+UseG1GC",
            "-XX:+PerfDisableSharedMem",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.net.preferIPv4Stack=true",
        ]
        jamm = sorted(self.jars.glob("jamm-*.jar"))
        if jamm:
            argv.append(f"-javaagent:{jamm[-1]}")
        d = self.workdir
        argv += CASSANDRA_JVM17_OPTS + CASSANDRA_FAST_START_OPTS
        if self.disposable:
            argv.append("-Dcassandra.unsafesystem=true")
        argv += [
            "-Dcassandra-foreground=yes",
            f"-Dcassandra.config=file://{d / 'cassandra.yaml'}",
            f"-Dcassandra.storagedir={d}",
            f"-Dcassandra.logdir={d / 'logs'}",
            f"-Dlogback.configurationFile=file://{d / 'logback.xml'}",
            "-cp",
            classpath(self.jars),
            "org.apache.cassandra.service.CassandraDaemon",
        ]
        self.popen(argv)

    def probe(self) -> bool:
        if not port_open(LOOPBACK, self.port):
            return False
        from cassandra.cluster import Cluster

        cluster = Cluster([LOOPBACK], port=self.port, connect_timeout=5)
        try:
            row = cluster.connect().execute("SELECT release_version FROM system.local").one()
            self.release_version = str(row[0])
            return True
        finally:
            cluster.shutdown()
