"""Snapshot build / verify / list / gc, and publishing index messages (local + Kafka)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from facerec.errors import SnapshotMismatch
from facerec.snapshot_format import load_snapshot, verify_snapshot
from index_builder.publish import IndexPublisher, LocalIndexLog, read_kafka_messages
from index_builder.snapshot import (
    build_snapshot,
    gc_snapshots,
    latest_snapshot,
    list_snapshots,
)
from index_builder.store import EnrollmentStore, NewTemplate

MODEL = "model-a"


def unit_vectors(n: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, 512)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.fixture
def store(tmp_path):
    s = EnrollmentStore(f"sqlite:///{tmp_path / 'e.sqlite'}")
    s.create_schema()
    vecs = unit_vectors(40)
    for i in range(4):
        p = s.create_person(f"P{i}", person_id=f"p{i}")
        s.add_templates(p.id, [NewTemplate(vecs[i * 10 + j], MODEL) for j in range(10)])
    s.add_template("p0", unit_vectors(1, 9)[0], "other-model")
    yield s
    s.close()


def test_given_store_when_built_then_manifest_and_files_are_complete(store, tmp_path):
    info = build_snapshot(store, tmp_path / "snaps", MODEL, n_trees=5, seed=7)
    m = info.manifest
    assert m["count"] == 40 and m["dim"] == 512 and m["metric"] == "euclidean"
    assert m["model_id"] == MODEL and m["n_trees"] == 5 and m["seed"] == 7
    assert m["max_change_seq"] == store.max_seq()
    assert set(m["files"]) == {"index.ann", "ids.json", "vectors.npy"}
    assert json.loads((info.path / "manifest.json").read_text()) == m
    ids = json.loads((info.path / "ids.json").read_text())
    assert ids[0] == [ids[0][0], "p0"] and len(ids) == 40
    assert not [p for p in (tmp_path / "snaps").iterdir() if p.name.startswith(".tmp")]
    snap = load_snapshot(info.path, model_id=MODEL, dim=512)
    assert snap.count == 40 and snap.vectors.shape == (40, 512)
    assert snap.index.get_nns_by_vector(snap.vectors[3], 1) == [3]


def test_given_same_templates_and_seed_when_built_twice_then_index_bytes_identical(store, tmp_path):
    a = build_snapshot(store, tmp_path / "a", MODEL, n_trees=5, seed=3)
    b = build_snapshot(store, tmp_path / "b", MODEL, n_trees=5, seed=3)
    assert a.manifest["files"] == b.manifest["files"]


def test_given_corruption_or_mismatch_when_verified_then_refused(store, tmp_path):
    info = build_snapshot(store, tmp_path / "s", MODEL, n_trees=2)
    verify_snapshot(info.path, model_id=MODEL, dim=512)
    with pytest.raises(SnapshotMismatch, match="model 'model-a'.*'other'"):
        verify_snapshot(info.path, model_id="other")
    with pytest.raises(SnapshotMismatch, match="dimension 512, expected 128"):
        verify_snapshot(info.path, dim=128)
    ann = info.path / "index.ann"
    data = bytearray(ann.read_bytes())
    data[100] ^= 0xFF
    ann.write_bytes(bytes(data))
    with pytest.raises(SnapshotMismatch, match="index.ann sha256"):
        load_snapshot(info.path, model_id=MODEL)
    (info.path / "vectors.npy").unlink()
    with pytest.raises(SnapshotMismatch, match="vectors.npy is missing"):
        verify_snapshot(info.path, check_hashes=False)


def test_given_many_snapshots_when_gc_then_newest_kept(store, tmp_path):
    out = tmp_path / "s"
    built = [build_snapshot(store, out, MODEL, n_trees=1) for _ in range(4)]
    assert [s.snapshot_id for s in list_snapshots(out)] == [s.snapshot_id for s in built]
    removed = gc_snapshots(out, keep=2)
    assert len(removed) == 2
    assert [s.snapshot_id for s in list_snapshots(out)] == [s.snapshot_id for s in built[2:]]
    assert latest_snapshot(out).snapshot_id == built[-1].snapshot_id
    build_snapshot(store, out, MODEL, n_trees=1, keep=1)
    assert len(list_snapshots(out)) == 1


def test_given_empty_store_when_built_then_loadable(tmp_path):
    s = EnrollmentStore(f"sqlite:///{tmp_path / 'e.sqlite'}")
    s.create_schema()
    info = build_snapshot(s, tmp_path / "s", MODEL, n_trees=2)
    assert info.manifest["count"] == 0 and info.manifest["max_change_seq"] == 0
    assert load_snapshot(info.path).count == 0


def test_given_messages_when_published_locally_then_follower_reads_in_order(store, tmp_path):
    pub = IndexPublisher(tmp_path / "manifests")
    t = store.add_template("p1", unit_vectors(1, 5)[0], MODEL)
    pub.publish_enroll(t)
    info = build_snapshot(store, tmp_path / "s", MODEL, n_trees=2)
    pub.publish_snapshot(info)
    change = store.delete_person("p2")
    pub.publish_delete(change)
    follower = LocalIndexLog(tmp_path / "manifests")
    got = follower.poll()
    assert [m["kind"] for m in got] == ["enroll", "snapshot", "delete"]
    assert got[0]["template_id"] == t.id and len(got[0]["vector"]) == 512
    assert got[1]["manifest"] == info.manifest and got[2]["seq"] == change.seq
    assert follower.poll() == []
    pub.publish_delete(store.delete_person("p3"))
    assert [m["person_id"] for m in follower.poll()] == ["p3"]


@pytest.mark.integration
def test_given_broker_when_published_then_read_back_from_kafka(
    store, tmp_path, kafka_broker, topic_name
):
    from facerec.config import KafkaConfig

    kafka = KafkaConfig(bootstrap_servers=kafka_broker.bootstrap_servers)
    pub = IndexPublisher(tmp_path / "manifests", kafka=kafka, topic=topic_name)
    try:
        t = store.add_template("p1", unit_vectors(1, 5)[0], MODEL)
        sent = [json.loads(pub.publish_enroll(t))]
        info = build_snapshot(store, tmp_path / "s", MODEL, n_trees=2)
        sent.append(json.loads(pub.publish_snapshot(info)))
        sent.append(json.loads(pub.publish_delete(store.delete_person("p0"))))
    finally:
        pub.close()
    got = read_kafka_messages(kafka, topic_name, expected=3, timeout_s=20)
    assert got == sent
    assert [m["kind"] for m in got] == ["enroll", "snapshot", "delete"]


def test_given_cli_when_build_list_verify_gc_then_works(store, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from jobs.cli.main import app

    monkeypatch.setenv("FACEREC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FACEREC_ENROLLMENT__DATABASE_URL", store.url)
    runner = CliRunner()
    for _ in range(2):
        r = runner.invoke(app, ["index", "build", "--n-trees", "2", "--model-id", MODEL])
        assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["count"] == 40
    r = runner.invoke(app, ["index", "list"])
    assert r.exit_code == 0 and r.stdout.count("40 templates") == 2
    r = runner.invoke(app, ["index", "verify"])  # built for MODEL, not FaceNet: refused
    assert r.exit_code == 1 and "model-a" in r.stdout
    r = runner.invoke(app, ["index", "gc", "--keep", "1"])
    assert r.exit_code == 0 and r.stdout.count("removed") == 1
    assert len(list((tmp_path / "data" / "manifests").glob("*-snapshot-*.json"))) == 2
    r = runner.invoke(app, ["people", "delete", "p1"])
    assert r.exit_code == 0 and "erased p1" in r.stdout
    assert runner.invoke(app, ["people", "delete", "p1"]).exit_code == 1
