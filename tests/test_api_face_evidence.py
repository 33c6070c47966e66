"""Face crops of enrollment templates over HTTP: each template's crop as JPEG, removing one
template (store, crop, and a snapshot without it), erasing a person with their crops. Real
faces and the real engine; the enrollment store on SQLite with crops in the local folder,
and on PostgreSQL with crops in a bucket of a real S3Proxy server."""

from __future__ import annotations

import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_api import H, jpeg_file, make_settings
from test_enrollment import good_photos

from api.app import create_app
from facerec.evidence import open_evidence_store, template_key
from index_builder.store import EnrollmentStore

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def two_photos(portraits, engine) -> list[Path]:
    """Two photos of one person, each with one acceptable face."""
    return next(iter(good_photos(portraits, engine, per_person=2, people=1).values()))


@pytest.fixture(
    params=["sqlite+local", pytest.param("postgres+s3", marks=pytest.mark.integration)],
)
def app(request, tmp_path, engine):
    """A fresh API with empty stores per test (the matcher holds only this test's faces)."""
    data_dir = tmp_path
    store = None
    if request.param == "sqlite+local":
        settings = make_settings(data_dir)
    else:
        s3proxy = request.getfixturevalue("s3proxy")
        postgres = request.getfixturevalue("postgres")
        settings = make_settings(
            data_dir,
            evidence={
                "backend": "s3",
                "s3": {
                    "bucket": f"api-{uuid.uuid4().hex[:12]}",
                    "create_bucket": True,
                    **s3proxy.client_options(),
                },
            },
        )
        store = EnrollmentStore(postgres.url, schema=f"t_api_ev_{uuid.uuid4().hex[:12]}")
        store.create_schema()
    with TestClient(create_app(settings, engine=engine, store=store)) as client:
        yield client, settings
    if store is not None:
        store.drop_schema()
        store.close()


def enroll(client: TestClient, photos: list[Path]) -> tuple[str, list[dict]]:
    r = client.post("/people", json={"display_name": "Evidence"}, headers=H["enroll"])
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    r = client.post(
        f"/people/{pid}/faces", files=[("image", jpeg_file(p)) for p in photos], headers=H["enroll"]
    )
    assert r.status_code == 201, r.text
    return pid, r.json()["templates"]


def test_given_enrolled_photos_then_each_template_has_its_face_crop_as_jpeg(app, two_photos):
    client, settings = app
    pid, templates = enroll(client, two_photos)
    crops = []
    for t in templates:
        r = client.get(f"/people/{pid}/faces/{t['id']}/image", headers=H["enroll"])
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "image/jpeg"
        crop = cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR)
        assert crop is not None and crop.shape == (160, 160, 3)  # the crop FaceNet embedded
        crops.append(crop)
    assert not np.array_equal(crops[0], crops[1])  # two photos, two crops
    # the crop is the face: the engine finds one face in it when told it is cropped
    engine = client.app.state.services.engine()
    ok, jpeg = cv2.imencode(".jpg", crops[0])
    face = engine.cropped_face(jpeg.tobytes())
    stored = client.app.state.services.store.get_template(pid, templates[0]["id"], True)
    assert float(np.linalg.norm(face.embedding - stored.embedding)) < 0.6
    # the same key the evidence store's layout promises
    evidence = open_evidence_store(settings)
    assert evidence.exists(template_key(pid, templates[0]["id"]))
    evidence.close()


def test_given_roles_and_unknown_ids_then_image_and_delete_answer_like_neighbours(
    app, two_photos
):
    client, _ = app
    pid, templates = enroll(client, two_photos[:1])
    tid = templates[0]["id"]
    assert client.get(f"/people/{pid}/faces/{tid}/image").status_code == 401
    assert client.get(f"/people/{pid}/faces/{tid}/image", headers=H["query"]).status_code == 403
    assert client.delete(f"/people/{pid}/faces/{tid}", headers=H["query"]).status_code == 403
    r = client.get(f"/people/{pid}/faces/nope/image", headers=H["admin"])
    assert r.status_code == 404 and r.json()["error"] == "template_not_found"
    r = client.delete(f"/people/nobody/faces/{tid}", headers=H["admin"])
    assert r.status_code == 404 and r.json()["error"] == "person_not_found"
    r = client.delete(f"/people/{pid}/faces/nope", headers=H["admin"])
    assert r.status_code == 404 and r.json()["error"] == "template_not_found"
    # a template whose crop is missing (enrolled before crops were kept)
    services = client.app.state.services
    services.enrollment.evidence.delete(template_key(pid, tid))
    r = client.get(f"/people/{pid}/faces/{tid}/image", headers=H["admin"])
    assert r.status_code == 404 and r.json()["error"] == "evidence_not_found"


def test_given_template_when_deleted_then_store_crop_and_matchers_forget_it(app, two_photos):
    client, _ = app
    services = client.app.state.services
    pid, templates = enroll(client, two_photos)
    gone, kept = templates[0]["id"], templates[1]["id"]
    vector = services.store.get_template(pid, gone, True).embedding
    before = services.matcher.match(vector[None])[0]
    assert before.template_id == gone and before.distance < 1e-3  # held as an enroll delta

    r = client.delete(f"/people/{pid}/faces/{gone}", headers=H["enroll"])
    assert r.status_code == 204, r.text
    faces = client.get(f"/people/{pid}/faces", headers=H["enroll"]).json()
    assert [f["id"] for f in faces] == [kept]
    assert client.get(f"/people/{pid}/faces/{gone}/image", headers=H["enroll"]).status_code == 404
    assert client.get(f"/people/{pid}/faces/{kept}/image", headers=H["enroll"]).status_code == 200
    assert client.delete(f"/people/{pid}/faces/{gone}", headers=H["enroll"]).status_code == 404

    # a snapshot covering the removal was published and the live matcher loaded it: the
    # removed template's own vector now finds the person only through the kept template
    change = services.store.changes_since(0)[-1]
    assert (change.kind, change.template_id) == ("remove", gone)
    assert client.get("/index", headers=H["query"]).json()["max_change_seq"] == change.seq
    after = services.matcher.match(vector[None])[0]
    assert after.template_id == kept and after.person_id == pid and after.distance > 1e-3


def test_given_person_when_erased_then_their_crops_go_too(app, two_photos):
    client, settings = app
    pid, templates = enroll(client, two_photos)
    evidence = client.app.state.services.enrollment.evidence
    assert len(list(evidence.list_keys(f"templates/{pid}/"))) == 2
    assert client.delete(f"/people/{pid}", headers=H["enroll"]).status_code == 200
    assert list(evidence.list_keys(f"templates/{pid}/")) == []
    r = client.get(f"/people/{pid}/faces/{templates[0]['id']}/image", headers=H["enroll"])
    assert r.status_code == 404
