"""``facerec people add|import|faces|remove-face|delete`` and ``facerec evidence purge``
as a user runs them: real face photos, the real engine, the real enrollment store (SQLite)
and evidence folder, through the same EnrollmentService as the API."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from test_enrollment import good_photos
from typer.testing import CliRunner

from facerec.config import Settings
from facerec.evidence import open_evidence_store, sighting_key, template_key
from index_builder.publish import LocalIndexLog
from index_builder.store import EnrollmentStore
from jobs.cli.main import app
from udfs.image import encode_jpeg

pytestmark = pytest.mark.data


@pytest.fixture
def cli(tmp_path, engine, monkeypatch):
    """Run ``facerec ...`` in-process on a data dir of the test's own; the session's face
    engine stands in for the one each command would load (same settings, no reload)."""
    from jobs.cli.services import LazyFaces

    monkeypatch.setattr(LazyFaces, "_engine", lambda self: engine)
    env = {"FACEREC_DATA_DIR": str(tmp_path), "FACEREC_CONFIG": ""}

    def run(*args: str):
        return CliRunner().invoke(app, list(args), env=env)

    run.settings = Settings(data_dir=tmp_path)  # type: ignore[attr-defined]
    return run


def blank(path: Path) -> Path:
    path.write_bytes(encode_jpeg(np.full((200, 200, 3), 90, np.uint8), 90))
    return path


@pytest.fixture(scope="module")
def good(portraits, engine) -> dict[str, list[Path]]:
    """Two people, two photos each with one acceptable face: little to embed."""
    return good_photos(portraits, engine, per_person=2, people=2)


def faces_of(cli, person_id: str) -> list[dict]:
    r = cli("people", "faces", person_id)
    assert r.exit_code == 0, r.output
    return [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]


def test_given_photos_when_people_add_then_person_created_templates_and_crops_stored(
    cli, good, tmp_path
):
    name = next(iter(good))
    photos = [str(p) for p in good[name]]
    empty = blank(tmp_path / "wall.jpg")

    r = cli("people", "add", "Ben Afflek", *photos, str(empty))
    assert r.exit_code == 1, r.output  # one photo refused
    assert "created person ben_afflek (Ben Afflek)" in r.stdout
    assert "2 enrolled, 1 refused" in r.stdout
    assert f"refused {empty}: no_face" in r.stderr

    faces = faces_of(cli, "ben_afflek")
    assert len(faces) == 2
    evidence = open_evidence_store(cli.settings)
    for f in faces:
        assert f["crop_key"] == template_key("ben_afflek", f["id"]) and f["crop_stored"]
        assert evidence.get(f["crop_key"])[:2] == b"\xff\xd8"  # a JPEG
        assert f["created_at"] and len(f["image_sha256"]) == 64

    # the same photo again: the person exists, the photo is refused as a duplicate
    r = cli("people", "add", "Ben Afflek", photos[0])
    assert r.exit_code == 1
    assert "existing person ben_afflek" in r.stdout and "duplicate_photo" in r.stderr
    # options as in the API: exclusive
    r = cli("people", "add", "X", photos[0], "--largest-face", "--face-is-cropped")
    assert r.exit_code == 2 and "exclude each other" in r.output
    r = cli("people", "add", "Ben", photos[0], "--largest-face", "--id", "ben_2")
    assert r.exit_code == 0, r.output and "created person ben_2 (Ben)" in r.stdout


def test_given_a_tree_when_imported_then_every_refusal_is_reported_and_exit_1(
    cli, good, tmp_path
):
    tree = tmp_path / "tree"
    for name, paths in good.items():
        (tree / name).mkdir(parents=True)
        for p in paths:
            shutil.copy(p, tree / name / p.name)
    first = next(iter(good))
    blank(tree / first / "wall.jpg")
    (tree / first / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")

    r = cli("people", "import", str(tree))
    assert r.exit_code == 1, r.output
    assert f"{first}: refused {tree / first / 'broken.jpg'}: invalid_image" in r.stderr
    assert f"{first}: refused {tree / first / 'wall.jpg'}: no_face" in r.stderr
    assert "2 people (2 new), 4 templates, 2 photos refused" in r.stdout
    assert "import: 100%" in r.stderr  # the progress bar ran to the end (6 photos)
    for name in good:
        assert len(faces_of(cli, name)) == 2

    # the good photos alone, again: every one is a duplicate now
    for bad in ("wall.jpg", "broken.jpg"):
        (tree / first / bad).unlink()
    r = cli("people", "import", str(tree), "--no-progress")
    assert r.exit_code == 1 and r.stderr.count("duplicate_photo") == 4
    r = cli("people", "import", str(tree), "--skip-existing", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "0 templates, 0 photos refused" in r.stdout

    r = cli("people", "import", str(tmp_path / "empty-dir-that-is-missing"))
    assert r.exit_code == 2


def test_given_template_when_remove_face_then_crop_gone_and_snapshot_published(cli, good):
    name = next(iter(good))
    assert cli("people", "add", name, *map(str, good[name])).exit_code == 0
    gone, kept = (f["id"] for f in faces_of(cli, name))

    r = cli("people", "remove-face", name, gone)
    assert r.exit_code == 0, r.output
    assert f"removed template {gone} of {name}" in r.stdout
    faces = faces_of(cli, name)
    assert [f["id"] for f in faces] == [kept]
    evidence = open_evidence_store(cli.settings)
    assert not evidence.exists(template_key(name, gone))
    messages = LocalIndexLog(cli.settings.manifests_path()).poll()
    snapshots = [m for m in messages if m["kind"] == "snapshot"]
    assert [m["manifest"]["count"] for m in snapshots] == [1]  # without the removed one

    r = cli("people", "remove-face", name, gone)
    assert r.exit_code == 1 and "has no template" in r.output

    r = cli("people", "delete", name)
    assert r.exit_code == 0 and "1 evidence object(s) removed" in r.stdout
    assert list(evidence.list_keys()) == []
    store = EnrollmentStore.from_settings(cli.settings)
    assert store.list_people()[1] == 0
    store.close()


def test_given_sighting_evidence_of_many_days_when_purged_then_old_days_go(cli):
    evidence = open_evidence_store(cli.settings)
    now = datetime.now(UTC)
    old = sighting_key("old", int((now - timedelta(days=40)).timestamp() * 1000))
    new = sighting_key("new", int((now - timedelta(days=1)).timestamp() * 1000))
    for key in (old, new, template_key("p", "t")):
        evidence.put(key, b"x")

    r = cli("evidence", "info")
    assert r.exit_code == 0 and "sighting days: 2" in r.stdout
    r = cli("evidence", "purge")  # evidence.retention_days: 30 by default
    assert r.exit_code == 0, r.output
    assert "removed 1 evidence object(s) older than 30 day(s)" in r.stdout
    assert sorted(evidence.list_keys()) == sorted([new, template_key("p", "t")])
    r = cli("evidence", "purge", "--days", "0")
    assert r.exit_code == 0 and "removed 0" in r.stdout


def test_given_commands_on_people_when_run_then_each_is_in_the_audit_log(cli, good, tmp_path):
    """The commands read, enroll and erase people as the API's routes do, so they leave the
    same audit records (GET /audit shows them): who ran them (cli:<login>), the action,
    the command, its exit status and outcome, the people involved."""
    from index_builder.audit import AuditLog, AuditQuery
    from jobs.cli.common import cli_caller

    name = next(iter(good))
    wall = str(blank(tmp_path / "wall.jpg"))
    assert cli("people", "add", "Ben Afflek", *map(str, good[name]), wall).exit_code == 1
    assert cli("people", "list").exit_code == 0
    template = faces_of(cli, "ben_afflek")[0]["id"]
    assert cli("people", "remove-face", "ben_afflek", template).exit_code == 0
    missing = cli("people", "faces", "nobody")
    assert missing.exit_code == 1, missing.output
    assert cli("sightings", "--person", "ben_afflek").exit_code == 0
    assert cli("people", "delete", "ben_afflek").exit_code == 0

    store = EnrollmentStore.from_settings(cli.settings)
    try:
        records, _ = AuditLog(store).search(AuditQuery(key_name=cli_caller()), limit=100)
    finally:
        store.close()
    got = sorted(
        (r.id, r.route, r.action, r.role, r.method, r.status, r.outcome, r.subjects)
        for r in records
    )
    tombstone = got[-1][-1][0]
    assert tombstone.startswith("erased:")
    assert [g[1:] for g in got] == [
        # the photos were enrolled but one was refused: exit 1, the refusal's reason
        ("facerec people add", "enroll", "cli", "CLI", 1, "no_face", (tombstone,)),
        ("facerec people list", "people.read", "cli", "CLI", 0, "ok", (tombstone,)),
        ("facerec people faces", "people.read", "cli", "CLI", 0, "ok", (tombstone,)),
        ("facerec people remove-face", "template.remove", "cli", "CLI", 0, "ok", (tombstone,)),
        ("facerec people faces", "people.read", "cli", "CLI", 1, "person_not_found", ("nobody",)),
        ("facerec sightings", "sightings.search", "cli", "CLI", 0, "ok", (tombstone,)),
        ("facerec people delete", "erase", "cli", "CLI", 0, "ok", (tombstone,)),
    ]
