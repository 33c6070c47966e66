"""Enrollment as users supply photos: ID-style crops (``face_is_cropped``), photos with
bystanders (``largest_face``), and the same photo sent twice (409 with the template it
made, never stored twice). Real faces, real stores, over HTTP."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_api import H, make_settings

from api.app import create_app
from facerec.errors import FaceRecError
from udfs.image import encode_jpeg

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def client(tmp_path_factory, engine):
    settings = make_settings(tmp_path_factory.mktemp("api-options"))
    with TestClient(create_app(settings, engine=engine)) as c:
        yield c


@pytest.fixture(scope="module")
def faces(engine, portraits) -> dict[str, tuple[bytes, tuple[float, ...]]]:
    """Per person, one train photo with one acceptable face: (JPEG bytes, face box)."""
    out = {}
    for name, paths in sorted(portraits.items()):
        for path in paths:
            data = path.read_bytes()
            try:
                face = engine.single_face(data)
            except FaceRecError:
                continue
            out[name] = (data, face.box)
            break
    return out


def person(client: TestClient, name: str) -> str:
    r = client.post("/people", json={"display_name": name}, headers=H["enroll"])
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def crop_of(data: bytes, box: tuple[float, ...], pad: float = 0.0) -> bytes:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    x1, y1, x2, y2 = box
    dx, dy = pad * (x2 - x1), pad * (y2 - y1)
    h, w = image.shape[:2]
    top, bottom = max(0, int(y1 - dy)), min(h, int(y2 + dy))
    cut = image[top:bottom, max(0, int(x1 - dx)) : min(w, int(x2 + dx))]
    return encode_jpeg(cut, 95)


def side_by_side(big: bytes, small: bytes, scale: float = 0.5) -> bytes:
    """Two real photos in one image, the second shrunk: a portrait with a bystander."""
    a = cv2.imdecode(np.frombuffer(big, np.uint8), cv2.IMREAD_COLOR)
    b = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR)
    b = cv2.resize(b, (int(b.shape[1] * scale * a.shape[0] / b.shape[0]), int(a.shape[0] * scale)))
    canvas = np.full((a.shape[0], a.shape[1] + b.shape[1], 3), 90, np.uint8)
    canvas[:, : a.shape[1]] = a
    canvas[: b.shape[0], a.shape[1] :] = b
    return encode_jpeg(canvas, 95)


def test_given_a_face_crop_when_enrolled_as_cropped_then_it_is_matched_as_cropped(
    client, faces
):
    name = sorted(faces)[0]
    data, box = faces[name]
    pid = person(client, name)
    crop = crop_of(data, box)
    r = client.post(
        f"/people/{pid}/faces",
        files=[("image", ("id.jpg", crop, "image/jpeg"))],
        data={"face_is_cropped": "true"},
        headers=H["enroll"],
    )
    assert r.status_code == 201, r.text
    [template] = r.json()["templates"]
    assert template["quality"]["ok"] and template["quality"]["face_px"] >= 40
    r = client.post(
        "/verify",
        files=[("image", ("a.jpg", crop, "image/jpeg"))],
        data={"person_id": pid, "face_is_cropped": "true"},
        headers=H["query"],
    )
    assert r.status_code == 200 and r.json()["same"] and r.json()["distance"] < 1e-3, r.text
    r = client.post(
        "/recognize",
        files=[("image", ("c.jpg", crop_of(data, box, pad=0.02), "image/jpeg"))],
        data={"face_is_cropped": "true"},
        headers=H["query"],
    )
    assert r.status_code == 200, r.text
    [face] = r.json()["faces"]
    assert face["box"][:2] == [0.0, 0.0] and face["distance"] < 0.5


def test_given_a_photo_with_a_bystander_when_enrolled_then_refused_or_largest_taken(
    client, faces
):
    main, bystander = sorted(faces)[1], sorted(faces)[2]
    pid = person(client, main)
    group = side_by_side(faces[main][0], faces[bystander][0])
    upload = [("image", ("group.jpg", group, "image/jpeg"))]
    r = client.post(f"/people/{pid}/faces", files=upload, headers=H["enroll"])
    assert r.status_code == 422 and r.json()["error"] == "several_faces", r.text
    r = client.post(
        f"/people/{pid}/faces", files=upload, data={"largest_face": "true"}, headers=H["enroll"]
    )
    assert r.status_code == 201, r.text
    for who, same in ((main, True), (bystander, False)):
        r = client.post(
            "/verify",
            files=[("image", ("a.jpg", faces[who][0], "image/jpeg"))],
            data={"person_id": pid},
            headers=H["query"],
        )
        assert r.status_code == 200 and r.json()["same"] is same, (who, r.text)
    both = {"face_is_cropped": "true", "largest_face": "true"}
    r = client.post(f"/people/{pid}/faces", files=upload, data=both, headers=H["enroll"])
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"


def test_given_the_same_photo_twice_when_enrolled_then_409_with_the_first_template(
    client, faces
):
    name = sorted(faces)[3]
    pid = person(client, name)
    photo = [("image", ("p.jpg", faces[name][0], "image/jpeg"))]
    first = client.post(f"/people/{pid}/faces", files=photo, headers=H["enroll"])
    assert first.status_code == 201, first.text
    again = client.post(f"/people/{pid}/faces", files=photo, headers=H["enroll"])
    assert again.status_code == 409 and again.json()["error"] == "duplicate_photo", again.text
    assert again.json()["template"]["id"] == first.json()["templates"][0]["id"]
    twice = client.post(f"/people/{pid}/faces", files=photo + photo, headers=H["enroll"])
    assert twice.status_code in (409, 422)  # the stored one is met first
    assert len(client.get(f"/people/{pid}/faces", headers=H["enroll"]).json()) == 1
    other = person(client, f"{name} again")  # another person may hold the same photo
    r = client.post(f"/people/{other}/faces", files=photo, headers=H["enroll"])
    assert r.status_code == 201, r.text


def test_given_two_copies_in_one_request_when_enrolled_then_422_and_nothing_stored(
    client, faces
):
    name = sorted(faces)[4]
    pid = person(client, name)
    photo = [("image", ("p.jpg", faces[name][0], "image/jpeg"))]
    r = client.post(f"/people/{pid}/faces", files=photo + photo, headers=H["enroll"])
    assert r.status_code == 422 and r.json()["error"] == "repeated_photo", r.text
    assert r.json()["detail"].startswith("image 1 (p.jpg): ")
    assert client.get(f"/people/{pid}/faces", headers=H["enroll"]).json() == []


def test_given_the_store_when_a_repeat_slips_past_the_check_then_refused_in_the_transaction(
    tmp_path: Path,
):
    """The store itself refuses a second template from the same photo (two concurrent
    requests both pass the service's early check)."""
    from index_builder.store import DuplicateTemplate, EnrollmentStore, NewTemplate

    store = EnrollmentStore(f"sqlite:///{tmp_path / 'e.sqlite'}")
    store.create_schema()
    p = store.create_person("A")
    vec = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    vec /= np.linalg.norm(vec)
    [kept] = store.add_templates(p.id, [NewTemplate(vec, "m", {}, "ab" * 32)])
    with pytest.raises(DuplicateTemplate) as caught:
        store.add_templates(
            p.id, [NewTemplate(vec, "m", {}, "cd" * 32), NewTemplate(vec, "m", {}, "ab" * 32)]
        )
    assert caught.value.existing.id == kept.id
    assert [t.id for t in store.list_templates(p.id)] == [kept.id]
    store.close()
