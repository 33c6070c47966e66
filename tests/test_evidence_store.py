"""The evidence store contract, run against every backend: the local folder and an
S3-compatible bucket on a real S3Proxy server (jobs/services/s3proxy.py). Dates are set by
the tests through the keys (``sighting_key`` files a sighting under its UTC day) and a fixed
``now``."""

from __future__ import annotations

import os
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from facerec.config import Settings
from facerec.evidence import (
    EvidenceNotFound,
    EvidenceStore,
    InvalidEvidenceKey,
    open_evidence_store,
    sighting_key,
    template_key,
)
from facerec.evidence.local import LocalEvidenceStore
from facerec.evidence.s3 import S3EvidenceStore

NOW = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)


def ms(day: datetime) -> int:
    return int(day.timestamp() * 1000)


def s3_settings(tmp_path, s3proxy, bucket: str, **more) -> Settings:
    return Settings(
        data_dir=tmp_path,
        evidence={
            "backend": "s3",
            "s3": {
                "endpoint_url": s3proxy.endpoint_url,
                "bucket": bucket,
                "access_key": s3proxy.access_key,
                "secret_key": s3proxy.secret_key,
                "create_bucket": True,
                **more,
            },
        },
    )


@pytest.fixture(
    params=["local", pytest.param("s3", marks=pytest.mark.integration)],
)
def store(request, tmp_path):
    """A fresh store of each backend: a temp folder, or a new bucket on S3Proxy."""
    if request.param == "local":
        s: EvidenceStore = open_evidence_store(Settings(data_dir=tmp_path))
    else:
        s3proxy = request.getfixturevalue("s3proxy")
        s = open_evidence_store(s3_settings(tmp_path, s3proxy, f"ev-{uuid.uuid4().hex[:16]}"))
    yield s
    s.close()


def test_given_bytes_when_put_then_get_returns_them_exactly_and_put_replaces(store):
    key = template_key("p1", "t1")
    blob = os.urandom(1 << 20)  # binary, 1 MiB
    store.put(key, blob, "image/jpeg")
    assert store.get(key) == blob and store.exists(key)
    store.put(key, b"second")
    assert store.get(key) == b"second"
    assert list(store.list_keys()) == [key]


def test_given_missing_key_then_get_raises_not_found_and_delete_is_quiet(store):
    key = template_key("nobody", "t0")
    assert not store.exists(key)
    with pytest.raises(EvidenceNotFound, match="nobody/t0.jpg"):
        store.get(key)
    store.delete(key)
    store.put(key, b"x")
    store.delete(key)
    store.delete(key)
    assert not store.exists(key)
    with pytest.raises(EvidenceNotFound):
        store.get(key)
    assert list(store.list_keys()) == []


@pytest.mark.parametrize(
    "bad", ["", "/etc/passwd", "../x.jpg", "a/../../x.jpg", "a//b.jpg", "a/./b.jpg", "a b.jpg"]
)
def test_given_bad_key_then_refused_before_the_backend(store, bad):
    with pytest.raises(InvalidEvidenceKey):
        store.put(bad, b"x")
    with pytest.raises(InvalidEvidenceKey):
        store.get(bad)
    with pytest.raises(InvalidEvidenceKey):
        store.delete_prefix(bad.rstrip("/") + "/" if bad else "")


def test_given_prefixes_then_list_and_delete_prefix_keep_to_whole_segments(store):
    for key in ("templates/p1/a.jpg", "templates/p1/b.jpg", "templates/p10/a.jpg", "x.jpg"):
        store.put(key, key.encode())
    assert sorted(store.list_keys("templates/p1/")) == ["templates/p1/a.jpg", "templates/p1/b.jpg"]
    assert store.delete_prefix("templates/p1/") == 2
    assert sorted(store.list_keys()) == ["templates/p10/a.jpg", "x.jpg"]
    assert store.delete_prefix("templates/p1/") == 0
    with pytest.raises(InvalidEvidenceKey):
        store.delete_prefix("templates/p1")  # not a whole segment


def test_given_sightings_of_many_days_when_purged_then_only_days_past_retention_go(store):
    ages = {40: "s40", 31: "s31", 30: "s30", 29: "s29", 0: "s0"}
    keys = {}
    for age, sid in ages.items():
        keys[age] = sighting_key(sid, ms(NOW - timedelta(days=age)))
        store.put(keys[age], b"crop")
        store.put(sighting_key(sid, ms(NOW - timedelta(days=age)), frame=True), b"frame")
    assert keys[40] == "sightings/2026-02-19/s40.jpg"
    store.put(template_key("p1", "old"), b"template crop")  # templates have no retention

    assert store.purge_older_than(0, now=NOW) == 0  # 0 keeps everything
    # 30 days before 2026-03-31 12:00 is 2026-03-01 12:00: days before 2026-03-01 go
    assert store.purge_older_than(30, now=NOW) == 4  # 40 and 31 days old, crop + frame
    left = set(store.list_keys())
    assert keys[40] not in left and keys[31] not in left
    assert {keys[30], keys[29], keys[0], template_key("p1", "old")} <= left
    assert [d.isoformat() for d in store.sighting_days()] == [
        "2026-03-01",
        "2026-03-02",
        "2026-03-31",
    ]
    assert store.purge_older_than(30, now=NOW) == 0  # idempotent
    with pytest.raises(ValueError):
        store.purge_older_than(-1)


def test_given_person_with_crops_and_sightings_when_erased_then_all_theirs_go(store):
    mine = [template_key("ada", "t1"), template_key("ada", "t2")]
    theirs = template_key("bob", "t1")
    sighted = sighting_key("s1", ms(NOW))
    other_sighting = sighting_key("s2", ms(NOW))
    for key in [*mine, theirs, sighted, other_sighting]:
        store.put(key, b"x")
    store.put(sighting_key("s1", ms(NOW), frame=True), b"frame")

    removed = store.erase_person("ada", [sighted, sighting_key("gone", ms(NOW))])
    assert removed == 4  # two template crops, the sighting crop and its frame
    assert sorted(store.list_keys()) == sorted([theirs, other_sighting])


def test_given_concurrent_writers_then_readers_see_whole_objects_only(store):
    key = sighting_key("busy", ms(NOW))
    versions = [bytes([i]) * 200_000 for i in range(4)]
    store.put(key, versions[0])
    errors: list[str] = []

    def write(v: bytes) -> None:
        for _ in range(5):
            store.put(key, v)

    def read() -> None:
        for _ in range(10):
            data = store.get(key)
            if data not in versions:
                errors.append(f"partial object of {len(data)} bytes")

    threads = [threading.Thread(target=write, args=(v,)) for v in versions]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors
    assert store.get(key) in versions


# ------------------------------------------------------------------ backend specifics
def test_given_default_settings_then_local_folder_under_data_dir(tmp_path):
    s = Settings(data_dir=tmp_path)
    assert s.evidence.backend == "local" and s.evidence_path() == tmp_path / "evidence"
    assert not s.evidence.store_frames and s.evidence.retention_days == 30
    store = open_evidence_store(s)
    assert isinstance(store, LocalEvidenceStore) and store.root == tmp_path / "evidence"
    custom = Settings(data_dir=tmp_path, evidence={"dir": str(tmp_path / "elsewhere")})
    assert custom.evidence_path() == tmp_path / "elsewhere"


def test_given_local_write_that_fails_midway_then_old_object_stays_and_no_temp_left(
    tmp_path, monkeypatch
):
    store = LocalEvidenceStore(tmp_path / "ev")
    key = template_key("p1", "t1")
    store.put(key, b"old")

    def boom(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        store.put(key, b"new")
    monkeypatch.undo()
    assert store.get(key) == b"old"
    assert [p.name for p in (tmp_path / "ev" / "templates" / "p1").iterdir()] == ["t1.jpg"]
    # a temp file a crashed writer left behind is never listed as a key
    (tmp_path / "ev" / "templates" / "p1" / ".t2.jpg.abc.tmp").write_bytes(b"half")
    assert list(store.list_keys()) == [key]


def test_given_local_store_when_last_key_of_a_folder_goes_then_empty_folders_go(tmp_path):
    store = LocalEvidenceStore(tmp_path / "ev")
    store.put(template_key("p1", "t1"), b"x")
    store.put(sighting_key("s1", ms(NOW)), b"x")
    store.delete(template_key("p1", "t1"))
    store.delete_prefix("sightings/")
    assert list((tmp_path / "ev").iterdir()) == []


@pytest.mark.integration
def test_given_s3_store_then_objects_are_in_the_bucket_with_type_and_prefix(tmp_path, s3proxy):
    import boto3

    bucket = f"ev-{uuid.uuid4().hex[:16]}"
    a = open_evidence_store(s3_settings(tmp_path, s3proxy, bucket, prefix="site-a/"))
    b = open_evidence_store(s3_settings(tmp_path, s3proxy, bucket, prefix="site-b/"))
    assert isinstance(a, S3EvidenceStore)
    key = template_key("p1", "t1")
    a.put(key, b"\xff\xd8jpeg\xff\xd9", "image/jpeg")
    b.put(key, b"other")
    assert a.get(key) != b.get(key)
    assert a.delete_prefix("templates/") == 1 and b.exists(key)

    raw = boto3.client(
        "s3",
        endpoint_url=s3proxy.endpoint_url,
        aws_access_key_id=s3proxy.access_key,
        aws_secret_access_key=s3proxy.secret_key,
        region_name="us-east-1",
    )
    head = raw.head_object(Bucket=bucket, Key=f"site-b/{key}")
    assert head["ContentType"] == "image/jpeg"
    assert head["ContentLength"] == len(b"other")
    a.close()
    b.close()


@pytest.mark.integration
def test_given_wrong_secret_then_s3_refuses(tmp_path, s3proxy):
    from botocore.exceptions import ClientError

    store = S3EvidenceStore(
        bucket="ev-refused",
        endpoint_url=s3proxy.endpoint_url,
        access_key=s3proxy.access_key,
        secret_key="not-the-secret",
    )
    with pytest.raises(ClientError, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKey"):
        store.put(template_key("p", "t"), b"x")
