"""The review UI in a real browser: Debian's chromium driven by Playwright
(testkit/browser.py), the app served by uvicorn on a loopback port (one per module), the
real engine and real faces, the SQLite stores in a temp folder. Each test acts as a person
would (labels, roles, drag and drop) and then checks what the stores hold, not only what the
page says."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest
from playwright.sync_api import Page, expect
from test_api import KEYS, make_settings
from test_api_sightings import acceptable, write_sighting

from api.app import create_app
from api.services import Services
from facerec.records import UNKNOWN, CameraStatus, now_ms
from testkit.browser import AppServer, image_loaded, signed_in
from udfs.match import negative_person_id

pytestmark = [pytest.mark.browser, pytest.mark.data]
expect.set_options(timeout=10_000)


@dataclass(frozen=True)
class UI:
    url: str
    services: Services

    def row(self, page: Page, sighting_id: str):
        return page.locator(f'tr[data-sighting-id="{sighting_id}"]')


@pytest.fixture(scope="module")
def ui(tmp_path_factory, engine):
    app = create_app(make_settings(tmp_path_factory.mktemp("ui")), engine=engine)
    with AppServer(app) as server:
        yield UI(server.url, app.state.services)


def photos_of(portraits, engine, who: str, n: int):
    found = acceptable(portraits[who][: n + 4], engine)[:n]
    assert len(found) == n, f"fewer than {n} acceptable photos of {who}"
    return found


def test_given_keys_when_signing_in_then_bad_key_refused_and_query_key_only_looks(
    browser, ui, portraits, engine
):
    [photo] = photos_of(portraits, engine, "madonna", 1)
    named = write_sighting(ui.services, photo, identity="madonna", first_seen_ms=now_ms())
    context = browser.new_context(base_url=ui.url)
    page = context.new_page()

    page.goto("/ui/sightings")
    expect(page).to_have_url(f"{ui.url}/ui/login?next=%2Fui%2Fsightings")
    page.get_by_label("API key").fill("not-a-key-at-all")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Unknown API key.")
    assert context.cookies() == []

    page.get_by_label("API key").fill(KEYS["query"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{ui.url}/ui/sightings")  # back where it was sent from
    [cookie] = context.cookies()
    assert cookie["name"] == "facerec_key" and cookie["value"] == KEYS["query"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]
    assert page.evaluate("document.cookie") == ""  # no script reads the key
    expect(page.get_by_test_id("signed-in")).to_contain_text("query-test (query)")

    # a query key sees sightings and their crops, and no button that changes anything
    row = ui.row(page, named.sighting_id)
    expect(row.get_by_test_id("who")).to_contain_text("madonna")
    assert image_loaded(row.get_by_role("img"))
    expect(page.get_by_role("button", name=re.compile("Reject|Assign"))).to_have_count(0)
    expect(page.get_by_role("link", name="People")).to_have_count(0)
    # the server refuses anyway, though the cookie comes along
    status = page.evaluate(
        "async id => (await fetch(`/sightings/${id}/reject`, {method: 'POST'})).status",
        named.sighting_id,
    )
    assert status == 403
    assert ui.services.event_store().get_sighting(named.sighting_id).review is None
    response = page.goto("/ui/people")
    assert response is not None and response.status == 403
    expect(page.get_by_role("alert")).to_contain_text("needs admin or enroll")

    page.goto("/ui/sightings")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{ui.url}/ui/login")
    assert context.cookies() == []
    page.goto("/ui/sightings")
    expect(page).to_have_url(re.compile(r"/ui/login\?next="))
    context.close()


def dropped_files(page: Page, files: list[tuple[str, bytes]]):
    """A DataTransfer holding ``files``, as a drag from the desktop carries them."""
    payload = [{"name": n, "b64": base64.b64encode(b).decode()} for n, b in files]
    return page.evaluate_handle(
        """files => {
            const dt = new DataTransfer();
            for (const f of files) {
                const bytes = Uint8Array.from(atob(f.b64), c => c.charCodeAt(0));
                dt.items.add(new File([bytes], f.name, {type: "image/jpeg"}));
            }
            return dt;
        }""",
        payload,
    )


def test_given_enroll_key_when_photos_dropped_then_templates_shown_and_one_removed(
    browser, ui, portraits, engine
):
    store = ui.services.store
    photos = photos_of(portraits, engine, "elton_john", 2)
    page = signed_in(browser, ui.url, KEYS["enroll"])
    expect(page).to_have_url(f"{ui.url}/ui/sightings")  # an enroll key reviews, so starts there
    page.get_by_role("link", name="People").click()
    expect(page).to_have_url(f"{ui.url}/ui/people")

    page.get_by_label("Name").fill("Elton (UI)")
    page.get_by_role("button", name="Add person").click()
    page.wait_for_url(re.compile(r"/ui/people/[^/]+$"))
    pid = page.get_by_test_id("person-id").inner_text()
    assert store.get_person(pid).display_name == "Elton (UI)"
    expect(page.get_by_test_id("no-templates")).to_be_visible()

    results = page.get_by_test_id("upload-results").locator("li")
    page.get_by_label("Choose photos").set_input_files(str(photos[0]))
    expect(results).to_have_text([f"{photos[0].name}: enrolled"])

    # dropped: a second photo, the first again (refused: duplicate) and one with no face
    ok, blank = cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))
    assert ok
    drop = dropped_files(
        page,
        [
            (photos[1].name, photos[1].read_bytes()),
            ("again.jpg", photos[0].read_bytes()),
            ("wall.jpg", blank.tobytes()),
        ],
    )
    zone = page.get_by_test_id("dropzone")
    zone.dispatch_event("dragover", {"dataTransfer": drop})
    zone.dispatch_event("drop", {"dataTransfer": drop})
    expect(results).to_have_count(4)
    expect(results.nth(1)).to_have_text(f"{photos[1].name}: enrolled")
    expect(results.nth(2)).to_contain_text("again.jpg: refused (duplicate_photo")
    expect(results.nth(3)).to_contain_text("wall.jpg: refused (no_face")

    thumbs = page.get_by_test_id("template")
    expect(thumbs).to_have_count(2)
    stored = {t.id for t in store.list_templates(pid)}
    shown = {thumbs.nth(i).get_attribute("data-template-id") for i in range(2)}
    assert len(stored) == 2 and shown == stored
    assert all(image_loaded(thumbs.nth(i).get_by_role("img")) for i in range(2))

    removed = thumbs.nth(0).get_attribute("data-template-id")
    page.once("dialog", lambda d: d.accept())
    page.get_by_role("button", name="Remove template 1").click()
    expect(thumbs).to_have_count(1)
    assert {t.id for t in store.list_templates(pid)} == stored - {removed}
    expect(thumbs.first).not_to_have_attribute("data-template-id", removed or "")

    # a change from another origin is refused, though the browser holds the key's cookie
    r = page.request.post(
        f"{ui.url}/people",
        data={"display_name": "From elsewhere"},
        headers={"origin": "http://127.0.0.1:1"},
    )
    assert r.status == 403 and r.json()["error"] == "cross_origin"
    assert "From elsewhere" not in {p.display_name for p in store.list_people(limit=500)[0]}
    page.context.close()


def test_given_sightings_when_one_arrives_and_rows_reviewed_then_page_and_store_follow(
    browser, ui, portraits, engine
):
    services, events = ui.services, ui.services.event_store()
    pid = services.store.create_person("Mindy (UI)", person_id="mindy-ui").id
    photos = photos_of(portraits, engine, "mindy_kaling", 2)
    t = now_ms()
    named = write_sighting(services, photos[0], identity=pid, first_seen_ms=t - 60_000)
    page = signed_in(browser, ui.url, KEYS["admin"])
    expect(page).to_have_url(f"{ui.url}/ui/sightings")
    row = ui.row(page, named.sighting_id)
    expect(row.get_by_test_id("who")).to_contain_text("Mindy (UI)")
    assert image_loaded(row.get_by_role("img"))

    # a sighting the job writes now shows at the top without a reload
    page.evaluate("window.sameDocument = true")
    fresh = write_sighting(services, photos[1], first_seen_ms=t)
    top = page.get_by_test_id("sighting-row").first
    expect(top).to_have_attribute("data-sighting-id", fresh.sighting_id)
    assert page.evaluate("window.sameDocument === true")
    assert image_loaded(top.get_by_role("img"))
    expect(top.get_by_test_id("who")).to_have_text("unknown")
    # no more polling from here (as in a background tab): the review calls alone update rows
    page.evaluate("Object.defineProperty(document, 'visibilityState', {value: 'hidden'})")

    # reject: "not Mindy"; the row says so in place, the store holds a negative template
    row.get_by_role("button", name="Reject (not Mindy (UI))").click()
    expect(row.get_by_test_id("review")).to_have_text("not mindy-ui: rejected by admin-test")
    expect(row.get_by_test_id("who")).to_contain_text("unknown")
    stored = events.get_sighting(named.sighting_id)
    assert stored is not None and stored.identity == UNKNOWN
    negatives = services.store.list_templates(negative_person_id(pid))
    assert [n.id for n in negatives] == [stored.review["negative_template_id"]]

    # assign the new sighting to an existing person
    fresh_row = ui.row(page, fresh.sighting_id)
    fresh_row.get_by_role("button", name="Assign…").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="Assign").click()  # nobody chosen: said so, nothing sent
    expect(dialog.get_by_role("alert")).to_contain_text("Choose a person")
    dialog.get_by_label("Existing person").select_option(pid)
    dialog.get_by_role("button", name="Assign").click()
    expect(dialog).to_be_hidden()
    expect(fresh_row.get_by_test_id("who")).to_contain_text("Mindy (UI)")
    expect(fresh_row.get_by_test_id("review")).to_have_text("assigned by admin-test")
    stored = events.get_sighting(fresh.sighting_id)
    assert stored is not None and stored.identity == pid
    assert stored.review["template_id"] in {x.id for x in services.store.list_templates(pid)}

    # assign the rejected one to a new person, by typing a name
    row.get_by_role("button", name="Assign…").click()
    dialog.get_by_label("Or a new person's name").fill("Jane Roe")
    dialog.get_by_role("button", name="Assign").click()
    expect(row.get_by_test_id("who")).to_contain_text("Jane Roe")
    stored = events.get_sighting(named.sighting_id)
    assert stored is not None and stored.identity.startswith("jane-roe-")
    jane = services.store.get_person(stored.identity)
    assert jane.display_name == "Jane Roe" and jane.template_count == 1
    page.context.close()


def test_given_filters_in_local_time_then_only_matching_sightings_listed(browser, ui):
    services = ui.services
    t = now_ms()
    old = write_sighting(services, None, camera_id="cam-ui-f", first_seen_ms=t - 2 * 86_400_000)
    new = write_sighting(services, None, camera_id="cam-ui-f", first_seen_ms=t - 60_000)
    write_sighting(services, None, camera_id="cam-ui-f", identity="madonna", first_seen_ms=t)
    tokyo = ZoneInfo("Asia/Tokyo")
    since = datetime.fromtimestamp(t / 1000, tokyo).replace(second=0, microsecond=0)
    since -= timedelta(days=1)
    page = signed_in(browser, ui.url, KEYS["query"], timezone_id="Asia/Tokyo")
    page.get_by_label("Camera").fill("cam-ui-f")
    page.get_by_label("Unknown only").check()
    page.get_by_label("From").fill(since.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="Filter").click()
    # the browser's local time (Tokyo) became epoch ms in the query
    expected_ms = int(since.timestamp() * 1000)
    expect(page).to_have_url(re.compile(rf"start_ms={expected_ms}(&|$)"))
    rows = page.get_by_test_id("sighting-row")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-sighting-id", new.sighting_id)
    assert old.sighting_id != new.sighting_id
    page.context.close()


def test_given_camera_status_then_cameras_page_shows_rate_gate_share_and_last_sighting(
    browser, ui
):
    t = now_ms()
    events = ui.services.event_store()
    events.write_camera_status(
        [
            CameraStatus(
                camera_id="cam-ui-9",
                region="hall",
                window_start_ms=t - 10_000,
                window_end_ms=t,
                frames=50,
                gated_out=40,
                analysed=10,
                faces=3,
            )
        ]
    )
    write_sighting(ui.services, None, camera_id="cam-ui-9", first_seen_ms=t - 5_000)
    page = signed_in(browser, ui.url, KEYS["query"])
    page.get_by_role("link", name="Cameras").click()
    row = page.locator('tr[data-camera-id="cam-ui-9"]')
    expect(row.locator("td")).to_have_text(
        ["hall", "5.0", "80%", "0%", "50 (10)", re.compile(r"\d"), re.compile(r"unknown\s*$")]
    )
    page.context.close()


def test_given_unknown_faces_when_a_group_is_named_then_the_person_is_enrolled(
    browser, ui, portraits, engine
):
    services, events = ui.services, ui.services.event_store()
    t = now_ms()
    stranger = [
        write_sighting(services, p, camera_id="cam-ui-u", first_seen_ms=t - 10_000 * i)
        for i, p in enumerate(photos_of(portraits, engine, "jerry_seinfeld", 3), start=1)
    ]
    services.unknowns.refresh()
    ours = {s.sighting_id for s in stranger}
    cluster = max(
        services.unknowns.clusters(limit=100),
        key=lambda c: len(ours & set(services.unknowns.cluster(c.cluster_id).sighting_ids)),
    )
    members = services.unknowns.cluster(cluster.cluster_id).sighting_ids
    assert ours & set(members)

    page = signed_in(browser, ui.url, KEYS["admin"])
    page.get_by_role("link", name="Unknowns").click()
    group = page.locator(f'article[data-cluster-id="{cluster.cluster_id}"]')
    samples = group.get_by_role("img")
    expect(samples).to_have_count(len(cluster.sample_sighting_ids))
    assert all(image_loaded(samples.nth(i)) for i in range(len(cluster.sample_sighting_ids)))
    group.get_by_role("button", name=re.compile("^Enroll")).click()  # no name yet: refused
    expect(group.get_by_role("alert")).to_contain_text("Type a new person's name")
    group.get_by_label("New person's name").fill("Jerry (UI)")
    group.get_by_role("button", name=re.compile("^Enroll")).click()
    expect(group.get_by_role("status")).to_contain_text(
        f"Enrolled as Jerry (UI): {len(members)} templates, {len(members)} sightings assigned."
    )

    people, _ = services.store.list_people(limit=500)
    [jerry] = [p for p in people if p.display_name == "Jerry (UI)"]
    assert jerry.template_count == len(members)
    for sid in members:
        stored = events.get_sighting(sid)
        assert stored is not None and stored.identity == jerry.id
    assert cluster.cluster_id not in {c.cluster_id for c in services.unknowns.clusters(limit=100)}
    group.get_by_role("link", name="Jerry (UI)").click()
    expect(page.get_by_test_id("person-id")).to_have_text(jerry.id)
    expect(page.get_by_test_id("template")).to_have_count(len(members))
    page.context.close()
