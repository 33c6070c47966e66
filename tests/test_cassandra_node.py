"""The single Cassandra node facerec runs from the jars `make setup` fetched: it starts on
loopback ports, answers CQL, and stops without leaving its process or folder behind."""

from __future__ import annotations

import time

import pytest

from jobs.services.cassandra import CassandraNode
from jobs.services.versions import versions

pytestmark = pytest.mark.integration


def test_given_the_fetched_jars_when_a_node_starts_then_cql_works_and_stop_cleans_up():
    started = time.monotonic()
    node = CassandraNode().start()
    try:
        assert node.release_version == versions()["CASSANDRA_VERSION"]
        from cassandra.cluster import Cluster

        cluster = Cluster(["127.0.0.1"], port=node.port)
        try:
            session = cluster.connect()
            session.execute(
                "CREATE KEYSPACE k WITH replication = {'class': 'SimpleStrategy', "
                "'replication_factor': 1}"
            )
            session.execute("CREATE TABLE k.t (id int PRIMARY KEY, v text)")
            session.execute("INSERT INTO k.t (id, v) VALUES (1, 'one')")
            assert session.execute("SELECT v FROM k.t WHERE id = 1").one()[0] == "one"
        finally:
            cluster.shutdown()
        print(f"cassandra ready in {node.startup_seconds:.1f} s")
    finally:
        pid, workdir = node.pid, node.workdir
        node.stop()
    assert not workdir.exists()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(pid, 0)
    assert time.monotonic() - started < 240
