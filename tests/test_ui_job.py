"""The review workflow end to end, as a person does it: enroll someone in the browser, run
the recognition job (`facerec job run`, a MiniCluster in its own process) on a short video
of them, see their sighting arrive in the UI with its face, reject it, and assign it to
another person. Real chromium, real job, real faces; every step is checked in the stores."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from playwright.sync_api import expect
from test_api import KEYS, make_settings
from test_api_sightings import acceptable

from api.app import create_app
from facerec.records import UNKNOWN
from jobs.walkthrough import Segment, write_face_video
from testkit.browser import AppServer, image_loaded, signed_in
from testkit.videos import CELEBRITY5_THRESHOLD
from udfs.match import negative_person_id

pytestmark = [pytest.mark.browser, pytest.mark.data, pytest.mark.flink]
ROOT = Path(__file__).resolve().parents[1]
expect.set_options(timeout=20_000)


def photos(celebrity5: Path, who: str, n: int, engine) -> list[Path]:
    """``n`` train photos of ``who`` that enrollment accepts (one good face each)."""
    found = acceptable(sorted((celebrity5 / "train" / who).glob("*.jpg"))[: n + 4], engine)
    assert len(found) >= n
    return found[:n]


def enroll_in_browser(page, name: str, photos: list[Path]) -> str:
    page.goto("/ui/people")
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Add person").click()
    page.wait_for_url(lambda url: "/ui/people/" in url)
    person_id = page.get_by_test_id("person-id").inner_text()
    page.get_by_label("Choose photos").set_input_files([str(p) for p in photos])
    expect(page.get_by_test_id("template")).to_have_count(len(photos))
    return person_id


def test_given_a_person_enrolled_in_the_ui_when_the_job_sees_them_then_reviewed_in_the_ui(
    browser, tmp_path, engine, celebrity5
):
    data = tmp_path / "data"
    settings = make_settings(data, match={"threshold": CELEBRITY5_THRESHOLD})
    app = create_app(settings, engine=engine)
    services = app.state.services
    with AppServer(app) as server:
        page = signed_in(browser, server.url, KEYS["admin"])
        ben = enroll_in_browser(page, "Ben (UI)", photos(celebrity5, "ben_afflek", 3, engine))
        elton = enroll_in_browser(page, "Elton (UI)", photos(celebrity5, "elton_john", 2, engine))
        assert len(services.store.list_templates(ben)) == 3

        # the job, as a user runs it, on the stores the API serves (enroll deltas included)
        video = tmp_path / "walk.avi"
        val = sorted((celebrity5 / "val" / "ben_afflek").glob("*.jpg"))[0]
        write_face_video(video, [Segment("ben_afflek", val, 12, 8)], fps=10.0)
        config = tmp_path / "facerec.yaml"
        config.write_text(yaml.safe_dump({
            "data_dir": str(data),
            "match": {"threshold": CELEBRITY5_THRESHOLD},
            # frames wait for the index (snapshot and enroll deltas) however long the
            # job's start takes on a busy machine: matched before it, Ben would be unknown
            "job": {"video": {"realtime": False, "region": "lobby"},
                    "batch": {"index_wait_ms": 120_000},
                    "flink_options": {"restart-strategy.type": "none"}},
        }))
        run = subprocess.run(
            [sys.executable, "-m", "jobs.cli.main", "job", "run", "--config", str(config),
             "--source", f"video:{video}"],
            cwd=ROOT, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2"},
            capture_output=True, text=True, timeout=600,
        )
        assert run.returncode == 0, run.stderr[-3000:]

        # the sighting shows up on the open page (its poll), named, with the face
        page.goto("/ui/sightings")
        # Ben's row, whichever place it has: a file read faster than real time is stamped as
        # it is read, so a stall of the job's reader can end one walk-through's sighting and
        # open another, one frame long and unnamed, listed first
        named = page.get_by_test_id("sighting-row").filter(has_text="Ben (UI)").first
        expect(named.get_by_test_id("who")).to_contain_text("Ben (UI)")
        sighting_id = named.get_attribute("data-sighting-id")
        row = page.locator(f'[data-testid="sighting-row"][data-sighting-id="{sighting_id}"]')
        stored = services.event_store().get_sighting(sighting_id)
        assert stored is not None and stored.identity == ben and stored.frames >= 3
        assert image_loaded(row.get_by_role("img"))

        # "not Ben": unknown, and the face becomes a negative template of Ben
        row.get_by_role("button", name="Reject (not Ben (UI))").click()
        expect(row.get_by_test_id("who")).to_contain_text("unknown")
        stored = services.event_store().get_sighting(sighting_id)
        assert stored is not None and stored.identity == UNKNOWN
        assert len(services.store.list_templates(negative_person_id(ben))) == 1

        # it was Elton: assigned, and the face becomes one of Elton's templates
        row.get_by_role("button", name="Assign…").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Existing person").select_option(elton)
        dialog.get_by_role("button", name="Assign").click()
        expect(row.get_by_test_id("who")).to_contain_text("Elton (UI)")
        stored = services.event_store().get_sighting(sighting_id)
        assert stored is not None and stored.identity == elton
        assert stored.review is not None and stored.review["action"] == "assign"
        assert len(services.store.list_templates(elton)) == 3
        page.context.close()
