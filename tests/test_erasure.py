"""Erasure (DELETE /people/{id}) on real stores: templates, template crops, the person's
events and sightings with their evidence go; audit records stay but name a tombstone id;
the answer counts what went, and the tombstone reaches the live index at once."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient
from test_api import H, make_settings

from api.app import create_app
from facerec.eventstore import SightingQuery
from facerec.evidence import template_key
from facerec.evidence.base import frame_key_of, sighting_key
from facerec.models import EMBEDDING_DIM
from facerec.records import (
    RecognitionEvent,
    Sighting,
    make_event_id,
    make_frame_id,
    make_sighting_id,
    now_ms,
)
from index_builder.store import NewTemplate


def event(identity: str, seq: int, ts: int) -> RecognitionEvent:
    frame = make_frame_id("gate", ts, seq)
    return RecognitionEvent(
        event_id=make_event_id(frame, 0),
        frame_id=frame,
        camera_id="gate",
        region="eu",
        capture_ts=ts,
        face_index=0,
        box=(1.0, 2.0, 3.0, 4.0),
        identity=identity,
        distance=0.4,
        score=0.9,
        threshold=0.9,
        snapshot_id="s",
        model_id="m",
        stages={"match": ts},
    )


def sighting(identity: str, n: int, ts: int) -> Sighting:
    frame = make_frame_id("gate", ts, n)
    sid = make_sighting_id("gate", frame, 0)
    return Sighting(
        sighting_id=sid,
        camera_id="gate",
        region="eu",
        status="closed",
        identity=identity,
        first_seen_ms=ts,
        last_seen_ms=ts + 1000,
        frames=5,
        votes={identity: 5},
        best_distance=0.5,
        best_quality=0.8,
        best_frame_id=frame,
        best_box=(1.0, 2.0, 3.0, 4.0),
        evidence_key=sighting_key(sid, ts),
        snapshot_id="s",
        model_id="m",
        threshold=0.9,
    )


def test_given_a_person_with_everything_when_erased_then_all_of_it_goes_and_is_counted(
    tmp_path,
) -> None:
    with TestClient(create_app(make_settings(tmp_path), load_model=False)) as client:
        services = client.app.state.services
        r = client.post("/people", json={"display_name": "Ada", "id": "ada"}, headers=H["enroll"])
        assert r.status_code == 201, r.text
        client.post("/people", json={"display_name": "Bob", "id": "bob"}, headers=H["enroll"])
        rng = np.random.default_rng(7)
        for pid in ("ada", "bob"):
            vectors = rng.normal(size=(2, EMBEDDING_DIM)).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            added = services.store.add_templates(
                pid,
                [
                    NewTemplate(v, services.model_id, {}, f"{pid}-{i}")
                    for i, v in enumerate(vectors)
                ],
            )
            for t in added:
                services.enrollment.evidence.put(template_key(pid, t.id), b"jpeg")
        events = services.event_store()
        t = now_ms() - 60_000
        events.write([event("ada", i, t + i) for i in range(3)] + [event("bob", 9, t)])
        sightings = [sighting("ada", 1, t), sighting("ada", 2, t + 5), sighting("bob", 3, t)]
        events.write_sightings(sightings)
        evidence = services.enrollment.evidence
        for s in sightings:
            assert s.evidence_key is not None
            evidence.put(s.evidence_key, b"crop")
        evidence.put(frame_key_of(str(sightings[0].evidence_key)), b"frame")
        assert client.get("/people/ada", headers=H["enroll"]).status_code == 200

        r = client.delete("/people/ada", headers=H["enroll"])
        assert r.status_code == 200, r.text
        report = r.json()
        tombstone = report.pop("tombstone_id")
        assert tombstone.startswith("erased:") and "ada" not in tombstone
        assert report.pop("seq") > 0
        assert report == {
            "person_id": "ada",
            "templates": 2,
            "template_crops": 2,
            "events": 3,
            "sightings": 2,
            "sighting_evidence": 3,
            "audit_records": 2,
            "published": True,
        }

        assert client.get("/people/ada", headers=H["enroll"]).status_code == 404
        assert list(evidence.list_keys("templates/ada/")) == []
        assert len(list(evidence.list_keys("templates/bob/"))) == 2
        assert [evidence.exists(str(s.evidence_key)) for s in sightings] == [False, False, True]
        assert events.search(identity="ada")[0] == []
        assert [e.identity for e in events.search()[0]] == ["bob"]
        left, _ = events.search_sightings(SightingQuery(), limit=10)
        assert [s.identity for s in left] == ["bob"]
        status = client.get("/index", headers=H["query"]).json()
        assert status["tombstones"] >= 1

        audit = client.get("/audit", params={"person_id": "ada"}, headers=H["admin"]).json()
        # only the lookup made after the erasure still names the id it asked for
        assert [(r["action"], r["status"]) for r in audit["items"]] == [("people.read", 404)]
        kept = client.get("/audit", params={"person_id": tombstone}, headers=H["admin"]).json()
        actions = [(r["action"], r["status"]) for r in kept["items"]]
        assert actions == [("erase", 200), ("people.read", 200), ("people.create", 201)]

        r = client.delete("/people/ada", headers=H["enroll"])
        assert r.status_code == 404 and r.json()["error"] == "person_not_found"
