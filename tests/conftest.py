"""Shared fixtures. Real models, real faces (testkit/shared_data.py: the configured folder,
else ../shared, else the sample cache `make setup` fills): tests that need them skip with the
reason when there are none. Real services (PostgreSQL, Kafka) start once per session, for the
first test that asks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testkit import shared_data

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]


def faces_root() -> Path | None:
    candidate = shared_data.faces_dir()
    return candidate if (candidate / "celebrity5").is_dir() else None


def videos_root() -> Path | None:
    candidate = shared_data.videos_dir()
    return candidate if candidate.is_dir() else None


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    root = faces_root()
    if root is None:
        pytest.skip(
            f"real face data not found in {shared_data.faces_dir()}: run `make setup` (sample "
            "cache) or set FACEREC_FACES_DIR"
        )
    return root


@pytest.fixture(scope="session")
def street() -> Path:
    """Real street footage (OpenCV's vtest.avi: people walking, no faces to speak of)."""
    root = videos_root()
    if root is None or not (root / "vtest.avi").is_file():
        pytest.skip(
            f"vtest.avi not found in {shared_data.videos_dir()}: run `make setup` (sample "
            "cache) or set FACEREC_VIDEOS_DIR"
        )
    return root / "vtest.avi"


@pytest.fixture(scope="session")
def celebrity5(faces_dir: Path) -> Path:
    return faces_dir / "celebrity5"


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    from facerec.config import Settings

    return Settings(data_dir=tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="session")
def embedder(settings):
    from udfs.embed import FaceNetEmbedder

    e = FaceNetEmbedder(batch_size=8)
    yield e
    e.close()


@pytest.fixture(scope="session")
def engine(settings, embedder):
    from udfs.engine import FaceEngine

    return FaceEngine(settings, embedder=embedder)


@pytest.fixture(scope="session")
def portraits(celebrity5: Path) -> dict[str, list[Path]]:
    """identity -> sorted train images."""
    from udfs.evaluation import list_identities

    return list_identities(celebrity5 / "train")


@pytest.fixture(scope="session")
def browser():
    """Debian's headless chromium driven by Playwright (testkit/browser.py), one per
    session; tests open a context each. Skips when chromium or Playwright is missing."""
    from testkit.browser import chromium, chromium_path

    if chromium_path() is None:
        pytest.skip("chromium not found: `make system-packages` installs it (as root)")
    pytest.importorskip("playwright.sync_api", reason="playwright not installed (make setup)")
    with chromium() as b:
        yield b


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory):
    """Apache Kafka (one KRaft node from the jars `make setup` fetched) on free loopback ports,
    its log dir and log (kafka.log) in the session's temp folder."""
    from jobs.services.kafka import KafkaBroker

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka")).start()
    yield broker
    broker.stop()


@pytest.fixture
def topic_name(request):
    """A topic name unique to the test."""
    import uuid

    return f"t-{request.node.name[:40].replace('[', '-').replace(']', '')}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster (Debian's server, `make setup` installs it as root) on a
    free loopback port; tests get its `url` and keep to their own schema."""
    from jobs.services.postgres import PostgresCluster, pg_bindir, server_installed

    if not server_installed():
        pytest.skip(f"PostgreSQL server not installed in {pg_bindir()}: run `make setup` as root")
    # in a folder of its own under TMPDIR, not pytest's: the postgres user it runs as (when
    # we are root) cannot enter pytest's 0700 base folder
    cluster = PostgresCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def flink_cluster(tmp_path_factory):
    """A standalone Flink cluster from the apache-flink wheel (start-cluster.sh with
    flink-conf/: jobs/services/flink.py, with testkit/flink_cluster.py's crash helpers), one
    TaskManager at first, shared by the cluster tests. Heartbeats every 2 s (Flink's
    default: 10 s): a killed TaskManager counts as lost after two failed heartbeats
    (heartbeat.rpc-failure-threshold)."""
    from testkit.flink_cluster import StandaloneCluster

    cluster = StandaloneCluster(
        tmp_path_factory.mktemp("flink"),
        {"heartbeat.interval": 2000, "heartbeat.timeout": 20000},
    ).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def cassandra_hosts():
    """``host[:port],...`` of a Cassandra cluster for the event-store tests: the one in
    ``FACEREC_CASSANDRA_HOSTS`` if set, else a single node started from the jars `make setup`
    fetched (jobs/services/cassandra.py), once per session."""
    configured = os.environ.get("FACEREC_CASSANDRA_HOSTS", "")
    if configured:
        yield configured
        return
    from jobs.services.cassandra import CassandraNode

    node = CassandraNode(disposable=True).start()
    yield f"127.0.0.1:{node.port}"
    node.stop()


@pytest.fixture(scope="session")
def s3proxy(tmp_path_factory):
    """S3Proxy, an S3-compatible server (the jar `make setup` fetched,
    jobs/services/s3proxy.py), on a free loopback port with its objects in the session's temp
    folder; requests are signed with its ``access_key`` / ``secret_key``."""
    from jobs.services.s3proxy import S3ProxyServer

    server = S3ProxyServer(tmp_path_factory.mktemp("s3proxy")).start()
    yield server
    server.stop()
