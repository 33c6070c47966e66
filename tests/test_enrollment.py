"""The enrollment service the API, the command line and the demo share: real faces, a real
store, index messages in a real manifests directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from facerec.config import Settings
from facerec.errors import NoFaceFound
from index_builder.enrollment import EnrollmentService, Photo, PhotoRefused
from index_builder.publish import IndexPublisher, LocalIndexLog
from index_builder.snapshot import list_snapshots
from index_builder.store import EnrollmentStore, PersonNotFound
from udfs.image import encode_jpeg

pytestmark = pytest.mark.data


@pytest.fixture
def service(tmp_path, engine):
    settings = Settings(data_dir=tmp_path, index={"n_trees": 5})
    store = EnrollmentStore.from_settings(settings)
    publisher = IndexPublisher.from_settings(settings)
    yield EnrollmentService(settings, store, publisher, engine)
    publisher.close()
    store.close()


def photos(paths: list[Path]) -> list[Photo]:
    return [Photo(str(p), p.read_bytes()) for p in paths]


def good_photos(
    portraits: dict[str, list[Path]], engine, per_person: int = 3, people: int | None = None
) -> dict[str, list[Path]]:
    """Per person (the first ``people``), the first ``per_person`` photos with one
    acceptable face (some celebrity5 photos have none)."""
    from facerec.errors import FaceRecError

    out: dict[str, list[Path]] = {}
    for name, paths in sorted(portraits.items())[:people]:
        for p in paths:
            try:
                engine.single_face(p.read_bytes())
            except FaceRecError:
                continue
            out.setdefault(name, []).append(p)
            if len(out[name]) == per_person:
                break
    return out


@pytest.fixture(scope="module")
def good(portraits, engine) -> dict[str, list[Path]]:
    return good_photos(portraits, engine)


def blank() -> Photo:
    import numpy as np

    return Photo("blank.jpg", encode_jpeg(np.full((200, 200, 3), 90, np.uint8), 90))


def test_given_good_photos_when_enrolled_then_templates_stored_and_deltas_published(
    service, good
):
    name, paths = sorted(good.items())[0]
    service.store.create_person(name, person_id=name)
    enrolled = service.enroll(name, photos(paths[:2]))
    assert len(enrolled.templates) == 2 and enrolled.published and not enrolled.refused
    assert {t.image_sha256 for t in enrolled.templates} == {
        Photo("", p.read_bytes()).sha256 for p in paths[:2]
    }
    messages = LocalIndexLog(service.settings.manifests_path()).poll()
    assert [m["kind"] for m in messages] == ["enroll", "enroll"]
    assert {m["template_id"] for m in messages} == {t.id for t in enrolled.templates}


def test_given_a_photo_without_face_when_all_or_nothing_then_refused_and_nothing_stored(
    service, good
):
    name, paths = sorted(good.items())[1]
    service.store.create_person(name, person_id=name)
    with pytest.raises(PhotoRefused, match="blank.jpg: ") as caught:
        service.enroll(name, [*photos(paths[:1]), blank()])
    assert isinstance(caught.value.cause, NoFaceFound) and caught.value.reason == "no_face"
    assert service.store.list_templates(name) == []


def test_given_a_folder_when_enrolling_what_can_be_then_refused_reported_and_limit_kept(
    service, good
):
    name, paths = sorted(good.items())[2]
    service.store.create_person(name, person_id=name)
    enrolled = service.enroll(name, [blank(), *photos(paths)], all_or_nothing=False, limit=2)
    assert len(enrolled.templates) == 2
    assert [p.label for p, _ in enrolled.refused] == ["blank.jpg"]
    with pytest.raises(PersonNotFound):
        service.enroll("nobody", photos(paths[:1]))


def test_given_enrolled_people_when_snapshot_published_then_manifest_announced_and_erasure_too(
    service, good
):
    name, paths = sorted(good.items())[3]
    service.store.create_person(name, person_id=name)
    service.enroll(name, photos(paths[:2]))
    info = service.publish_snapshot()
    assert info.manifest["count"] == 2
    assert [s.snapshot_id for s in list_snapshots(service.settings.snapshots_path())] == [
        info.snapshot_id
    ]
    erased = service.erase(name)
    assert erased.published and erased.change.kind == "delete"
    kinds = [m["kind"] for m in LocalIndexLog(service.settings.manifests_path()).poll()]
    assert kinds[-2:] == ["snapshot", "delete"]
