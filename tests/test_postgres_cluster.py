"""The throwaway PostgreSQL cluster (jobs/services/postgres.py) the tests and `facerec stack`
start: the product reaches it through its settings, TCP needs the cluster's password, a stop
leaves nothing running, and a start that fails says why."""

from __future__ import annotations

import os

import psycopg
import pytest

from facerec.config import Settings
from index_builder.store import EnrollmentStore
from jobs.services.postgres import PostgresCluster, server_installed
from jobs.services.process import ServiceError, port_open
from jobs.services.versions import versions

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not server_installed(), reason="PostgreSQL server not installed"),
]


def test_given_the_cluster_when_the_settings_name_its_url_then_the_enrollment_store_works(
    postgres, tmp_path
):
    settings = Settings(data_dir=tmp_path, enrollment={"database_url": postgres.url})
    store = EnrollmentStore.from_settings(settings)
    try:
        person = store.create_person("Ada", person_id="ada-cluster-test")
        assert store.ping() and store.get_person(person.id).display_name == "Ada"
        assert store.dialect == "postgresql"
    finally:
        store.drop_schema()
        store.close()
    with psycopg.connect(postgres.dsn()) as conn:
        row = conn.execute("SELECT current_database(), current_setting('fsync')").fetchone()
    assert row == ("facerec", "off")
    assert postgres.server_version // 10000 == int(versions()["POSTGRES_MAJOR"])


def test_given_the_cluster_when_connecting_without_its_password_then_refused(postgres):
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(
            f"host={postgres.host} port={postgres.port} user={postgres.user} dbname=facerec",
            connect_timeout=3,
        )


def test_given_a_cluster_when_stopped_then_its_server_and_folder_are_gone():
    cluster = PostgresCluster(database="other").start()
    pid, port, workdir = cluster.pid, cluster.port, cluster.workdir
    assert pid is not None and port is not None
    assert cluster.startup_seconds is not None and cluster.startup_seconds < 30
    if os.geteuid() == 0:  # the server runs as postgres, in a folder postgres owns
        assert (cluster.datadir / "PG_VERSION").stat().st_uid != 0
    cluster.stop()
    assert not cluster.alive() and not port_open("127.0.0.1", port)
    assert not workdir.exists()


def test_given_a_bad_server_setting_when_starting_then_the_error_carries_the_server_log():
    cluster = PostgresCluster(settings={"shared_buffers": "plenty"})
    with pytest.raises(ServiceError, match="pg_ctl start failed") as raised:
        cluster.start()
    assert "shared_buffers" in str(raised.value)
    assert not cluster.workdir.exists()
