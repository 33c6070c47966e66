"""The audit log: every call on biometric data or results is recorded (who, what, whom,
outcome), in an append-only table of the enrollment store (SQLite and PostgreSQL), and
admins read it at GET /audit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_api import H, jpeg_file, make_settings

from api.app import create_app
from api.audit import AUDITED
from facerec.eventstore import InvalidCursor, InvalidQuery
from facerec.records import RecognitionEvent, make_event_id, make_frame_id, now_ms
from index_builder.audit import AuditLog, AuditQuery
from index_builder.store import EnrollmentStore


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)])
def audit_store(request, tmp_path: Path) -> Iterator[EnrollmentStore]:
    if request.param == "sqlite":
        store = EnrollmentStore(f"sqlite:///{tmp_path / 'enrollment.sqlite'}")
    else:
        postgres = request.getfixturevalue("postgres")
        store = EnrollmentStore(postgres.url, schema=f"t_audit_{uuid.uuid4().hex[:12]}")
    store.create_schema()
    yield store
    store.drop_schema()
    store.close()


def test_given_records_when_searched_then_filters_pages_and_tombstones(audit_store) -> None:
    clock = [1_000]
    log = AuditLog(audit_store, clock=lambda: clock[0])
    for i in range(7):
        clock[0] = 1_000 + i
        log.record(
            key_name=("ops", "desk")[i % 2],
            role="query",
            action="recognize",
            method="POST",
            route="/recognize",
            status=200,
            outcome="ok",
            subjects=["ada", "bob"] if i % 3 == 0 else ["bob"],
        )
    everything, cursor = log.search(AuditQuery(), limit=3)
    assert [r.at_ms for r in everything] == [1006, 1005, 1004] and cursor is not None
    pages = everything
    while cursor is not None:
        page, cursor = log.search(AuditQuery(), limit=3, cursor=cursor)
        pages += page
    assert [r.at_ms for r in pages] == list(range(1006, 999, -1))
    ada = log.search(AuditQuery(person_id="ada"), limit=100)[0]
    assert [r.at_ms for r in ada] == [1006, 1003, 1000]
    assert ada[0].subjects == ("ada", "bob")
    desk = log.search(AuditQuery(key_name="desk", start_ms=1002, end_ms=1006), limit=100)[0]
    assert [r.at_ms for r in desk] == [1005, 1003]

    assert log.replace_subject("ada", "erased:x") == 3
    assert log.search(AuditQuery(person_id="ada"), limit=100) == ([], None)
    tomb = log.search(AuditQuery(person_id="erased:x"), limit=100)[0]
    assert [r.subjects for r in tomb] == [("bob", "erased:x")] * 3

    assert log.purge_before(1003) == 3
    assert [r.at_ms for r in log.search(AuditQuery(), limit=100)[0]] == [1006, 1005, 1004, 1003]
    assert log.search(AuditQuery(person_id="erased:x"), limit=100)[0][-1].at_ms == 1003
    with pytest.raises(InvalidQuery):
        AuditQuery(start_ms=5, end_ms=5)
    with pytest.raises(InvalidCursor):
        log.search(AuditQuery(), cursor="abc")


# --------------------------------------------------------------------------- the API
@pytest.fixture(scope="module")
def client(tmp_path_factory, engine) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("audit"))
    with TestClient(create_app(settings, engine=engine)) as c:
        yield c


def audit(client: TestClient, **params) -> list[dict]:
    r = client.get("/audit", params={"limit": 1000, **params}, headers=H["admin"])
    assert r.status_code == 200, r.text
    return r.json()["items"]


def test_every_audited_route_exists_and_records_a_call_without_a_key(client) -> None:
    start = now_ms()
    for method, route in AUDITED:
        path = route.format(
            person_id="p1", template_id="t1", event_id="e1", sighting_id="s1", cluster_id="1"
        )
        r = client.request(method, path, follow_redirects=False)
        assert r.status_code in (401, 303), (method, route, r.status_code)
    records = audit(client, start_ms=start)
    assert {(r["method"], r["route"]) for r in records} == set(AUDITED)
    assert all(r["key_name"] == "" and r["status"] in (401, 303) for r in records)


def test_given_calls_on_people_when_made_then_each_recorded_with_whom_and_outcome(
    client, portraits
) -> None:
    ada = client.post("/people", json={"display_name": "Ada"}, headers=H["enroll"]).json()["id"]
    photo = probe = portraits["madonna"][0]
    r = client.post(
        f"/people/{ada}/faces", files=[("image", jpeg_file(photo))], headers=H["enroll"]
    )
    assert r.status_code == 201, r.text
    template = r.json()["templates"][0]["id"]
    assert client.get(f"/people/{ada}", headers=H["enroll"]).status_code == 200
    assert (
        client.get(f"/people/{ada}/faces/{template}/image", headers=H["enroll"]).status_code == 200
    )
    r = client.post("/recognize", files={"image": jpeg_file(probe)}, headers=H["query"])
    assert r.status_code == 200 and r.json()["faces"][0]["identity"] == ada
    r = client.post(
        "/verify", files={"image": jpeg_file(probe)}, data={"person_id": ada}, headers=H["query"]
    )
    assert r.status_code == 200 and r.json()["same"]
    assert client.get("/people/nobody", headers=H["enroll"]).status_code == 404
    assert client.get(f"/people/{ada}", headers=H["query"]).status_code == 403
    assert client.get(f"/people/{ada}", headers={"X-API-Key": "wrong"}).status_code == 401

    mine = audit(client, person_id=ada)
    got = [(r["action"], r["key_name"], r["role"], r["status"], r["outcome"]) for r in mine]
    assert got == [
        ("people.read", "", "", 401, "unauthorized"),
        ("people.read", "query-test", "query", 403, "forbidden"),
        ("verify", "query-test", "query", 200, "ok"),
        ("recognize", "query-test", "query", 200, "ok"),
        ("export", "enroll-test", "enroll", 200, "ok"),
        ("people.read", "enroll-test", "enroll", 200, "ok"),
        ("enroll", "enroll-test", "enroll", 201, "ok"),
        ("people.create", "enroll-test", "enroll", 201, "ok"),
    ]
    assert mine[3]["route"] == "/recognize" and mine[3]["method"] == "POST"
    assert mine[4]["route"] == "/people/{person_id}/faces/{template_id}/image"
    assert all(ada in r["subjects"] for r in mine)
    missing = audit(client, person_id="nobody")
    assert [(r["status"], r["outcome"]) for r in missing] == [(404, "person_not_found")]
    by_key = audit(client, key_name="query-test")
    assert {r["action"] for r in by_key} >= {"recognize", "verify", "people.read"}


def test_given_searches_when_made_then_the_people_returned_are_recorded(client) -> None:
    store = client.app.state.services.event_store()
    frame = make_frame_id("gate", now_ms(), 0)
    ts = now_ms() - 1000
    store.write(
        [
            RecognitionEvent(
                event_id=make_event_id(frame, 0),
                frame_id=frame,
                camera_id="gate",
                region="eu",
                capture_ts=ts,
                face_index=0,
                box=(1.0, 2.0, 3.0, 4.0),
                identity="grace",
                distance=0.4,
                score=0.9,
                threshold=0.9,
                snapshot_id="s",
                model_id="m",
                stages={"match": ts},
            )
        ]
    )
    start = now_ms()
    assert client.get("/events", params={"camera_id": "gate"}, headers=H["query"]).json()["items"]
    records = audit(client, person_id="grace", start_ms=start)
    assert [(r["action"], r["subjects"]) for r in records] == [("events.search", ["grace"])]
    asked = client.get("/events", params={"identity": "hopper"}, headers=H["query"])
    assert asked.status_code == 200 and asked.json()["items"] == []
    assert [r["action"] for r in audit(client, person_id="hopper")] == ["events.search"]


def test_given_the_audit_route_then_admin_only_bad_queries_refused_and_reads_recorded(
    client,
) -> None:
    assert client.get("/audit", headers=H["enroll"]).status_code == 403
    assert client.get("/audit", headers=H["query"]).status_code == 403
    r = client.get("/audit", params={"start_ms": 10, "end_ms": 10}, headers=H["admin"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_query"
    r = client.get("/audit", params={"cursor": "nope"}, headers=H["admin"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_cursor"
    r = client.get("/audit", params={"limit": 2}, headers=H["admin"])
    first = r.json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = client.get(
        "/audit", params={"limit": 2, "cursor": first["next_cursor"]}, headers=H["admin"]
    ).json()
    assert second["items"][0]["id"] < first["items"][-1]["id"]
    reads = audit(client, action="audit.read")
    assert {(r["status"], r["key_name"]) for r in reads} >= {
        (403, "enroll-test"),
        (400, "admin-test"),
        (200, "admin-test"),
    }
