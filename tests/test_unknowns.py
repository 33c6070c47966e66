"""Clusters of unknown faces: the algorithm on synthetic unit vectors (cheap), then the
service and the API with real faces, the real engine, SQLite stores in temporary folders
(and PostgreSQL once): unknown sightings written as the job writes them (their best face
cut by ``udfs.evidence.face_jpeg`` into the evidence store, see test_api_sightings.py),
clustered per person, caught up incrementally, and named in one step."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from test_api import H, make_settings

from api.app import create_app
from api.services import Services
from facerec.errors import FaceRecError
from facerec.evidence import sighting_key
from facerec.records import UNKNOWN, Sighting, now_ms
from index_builder.store import EnrollmentStore
from index_builder.unknowns import UnknownClusterNotFound
from udfs.evidence import face_jpeg
from udfs.unknown_clusters import UnknownClusters

T0 = (now_ms() // 1000 - 5 * 86_400) * 1000
"""Five days ago: within event retention."""
DIM = 512


# ------------------------------------------------------------------ the algorithm
def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def on_arc(angle_deg: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """A unit vector at ``angle_deg`` in the plane of the first two axes: two of them
    ``a`` degrees apart are ``2 sin(a / 2)`` apart."""
    v = np.zeros(DIM)
    v[0], v[1] = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return v


def faces_of(centre: np.ndarray, n: int, spread: float, rng: np.random.Generator) -> list:
    return [unit(centre + spread * rng.standard_normal(DIM) / np.sqrt(DIM)) for _ in range(n)]


def test_given_faces_of_three_people_when_added_one_by_one_then_one_stable_cluster_each():
    rng = np.random.default_rng(3)
    centres = [unit(rng.standard_normal(DIM)) for _ in range(3)]  # ~1.41 apart
    faces = [(p, f) for i in range(8) for p in range(3) for f in faces_of(centres[p], 1, 0.5, rng)]
    clusters = UnknownClusters(0.9)
    seen: dict[str, int] = {}
    for k, (person, face) in enumerate(faces):
        placed = clusters.add(f"{person}-{k}", face)
        assert not placed.merged
        seen[f"{person}-{k}"] = placed.cluster_id
        # every face placed earlier is still where it was put
        assert all(clusters.cluster_of(key) == cid for key, cid in seen.items())
    assert clusters.cluster_ids() == [1, 2, 3]
    for cid in clusters.cluster_ids():
        assert len({key.split("-")[0] for key in clusters.members(cid)}) == 1
        assert len(clusters.members(cid)) == 8
    # deterministic: the same order gives the same clusters
    again = UnknownClusters(0.9)
    for k, (person, face) in enumerate(faces):
        again.add(f"{person}-{k}", face)
    assert {k: again.cluster_of(k) for k in seen} == seen


def test_given_a_chain_of_strangers_then_average_linkage_does_not_join_its_ends():
    # A - B - C on an arc, 0.85 apart in turn (each within 0.90 of the next), A to C 1.54:
    # single linkage would put all three in one cluster
    a, b, c = on_arc(0), on_arc(50.3), on_arc(100.6)
    assert np.linalg.norm(a - b) < 0.9 and np.linalg.norm(b - c) < 0.9
    clusters = UnknownClusters(0.9)
    assert clusters.add("a", a).created
    assert clusters.add("b", b).cluster_id == 1  # within 0.90 of A: RMS = 0.85
    third = clusters.add("c", c)  # RMS to {A, B} = sqrt((1.54^2 + 0.85^2) / 2) = 1.24
    assert third.created and third.cluster_id == 2
    assert clusters.distance(c, 1) == pytest.approx(np.sqrt((1.543**2 + 0.85**2) / 2), abs=0.01)


def test_given_a_face_bridging_two_clusters_then_they_merge_only_when_close_and_older_id_wins():
    # two clusters 0.95 apart (beyond 0.90: apart at first); a face between them bridges:
    # the clusters are within 0.90 of each other by average linkage once it joins
    clusters = UnknownClusters(0.9)
    clusters.add("a", on_arc(0))
    clusters.add("a2", on_arc(1))
    clusters.add("c", on_arc(57))  # 0.95 from "a"
    assert clusters.cluster_ids() == [1, 2]
    bridge = clusters.add("b", on_arc(29))
    assert bridge.cluster_id == 1 and bridge.merged == (2,)
    assert clusters.cluster_ids() == [1] and clusters.cluster_of("c") == 1

    # two clusters 1.30 apart: a face halfway fits both, but they do not fit each other
    far = UnknownClusters(0.9)
    far.add("a", on_arc(0))
    far.add("c", on_arc(81))
    middle = far.add("b", on_arc(40.5))
    assert not middle.merged and far.cluster_ids() == [1, 2]


def test_given_members_leaving_and_changing_then_ids_stay_and_are_never_reused():
    rng = np.random.default_rng(5)
    p, q = unit(rng.standard_normal(DIM)), unit(rng.standard_normal(DIM))
    clusters = UnknownClusters(0.9)
    for i, f in enumerate(faces_of(p, 3, 0.5, rng)):
        clusters.add(f"p{i}", f)
    clusters.add("q0", faces_of(q, 1, 0.5, rng)[0])
    assert clusters.remove("p0") == 1 and clusters.members(1) == ["p1", "p2"]
    assert clusters.remove("nobody") is None
    # a better crop of the same person: stays; a face of someone else: moves out
    stays = clusters.update("p1", faces_of(p, 1, 0.5, rng)[0])
    assert stays.cluster_id == 1 and stays.left is None
    moves = clusters.update("p2", faces_of(q, 1, 0.5, rng)[0])
    assert moves.cluster_id == 2 and moves.left == 1
    # alone in its cluster, a changed face keeps the cluster unless it fits another
    alone = clusters.update("p1", faces_of(p, 1, 0.5, rng)[0])
    assert alone.cluster_id == 1 and not alone.created
    assert clusters.remove_cluster(1) == ["p1"] and 1 not in clusters.cluster_ids()
    assert clusters.add("p3", faces_of(p, 1, 0.5, rng)[0]).cluster_id == 3  # 1 is not reused

    restored = UnknownClusters.restore(
        0.9,
        [(k, clusters.cluster_of(k), clusters.vector(k)) for k in ("q0", "p2", "p3")],
        next_id=clusters.next_id,
    )
    assert restored.cluster_ids() == clusters.cluster_ids() == [2, 3]
    assert restored.next_id == 4
    probe = faces_of(q, 1, 0.5, rng)[0]
    assert restored.distance(probe, 2) == pytest.approx(clusters.distance(probe, 2), abs=1e-6)
    with pytest.raises(KeyError):
        restored.add("q0", probe)
    with pytest.raises(ValueError):
        restored.add("zero", np.zeros(DIM))


# ------------------------------------------------------------------ real faces
PER_PERSON = 6
"""Sightings per person in the site scenario (celebrity5 train photos, in file order)."""
WAVE = 4
"""The first WAVE of them arrive before the rest."""
ENROLLED = "jerry_seinfeld"
"""Whose cluster is named (all of his sightings make one cluster)."""


class Crop:
    """A sighting's best face as the job keeps it: the JPEG ``face_jpeg`` cuts from the
    photo, and the face's quality."""

    def __init__(self, person: str, photo: Path, jpeg: bytes, quality: float) -> None:
        self.person, self.photo, self.jpeg, self.quality = person, photo, jpeg, quality


@pytest.fixture(scope="module")
def crops(portraits, engine, settings) -> dict[str, list[Crop]]:
    """person -> the crops of their first acceptable train photos (PER_PERSON; two more
    of ENROLLED, to recognise later), each photo detected and cut once."""
    out: dict[str, list[Crop]] = {}
    for person, paths in portraits.items():
        out[person] = []
        wanted = PER_PERSON + (2 if person == ENROLLED else 0)
        for path in paths:
            data = path.read_bytes()
            try:
                face = engine.single_face(data)
            except FaceRecError:
                continue
            jpeg = face_jpeg(engine.decode(data), face, settings)
            out[person].append(Crop(person, path, jpeg, float(face.quality.score)))
            if len(out[person]) == wanted:
                break
    return out


def write_unknown(
    services: Services,
    crop: Crop | None,
    *,
    first_seen_ms: int,
    camera_id: str = "cam-1",
    status: str = "closed",
    identity: str = UNKNOWN,
    frames: int = 5,
    sighting_id: str | None = None,
    quality: float | None = None,
) -> Sighting:
    """A sighting as the job writes it: the record, and its best face in the evidence
    store (none for ``crop=None``: the job kept no face)."""
    sid = sighting_id or uuid.uuid4().hex
    key = None
    if crop is not None:
        key = sighting_key(sid, first_seen_ms)
        services.enrollment.evidence.put(key, crop.jpeg)
    s = Sighting(
        sighting_id=sid,
        camera_id=camera_id,
        region="lobby",
        status=status,  # type: ignore[arg-type]
        identity=identity,
        first_seen_ms=first_seen_ms,
        last_seen_ms=first_seen_ms + 2_000,
        frames=frames,
        votes={identity: frames},
        best_distance=1.2,
        best_quality=quality if quality is not None else crop.quality if crop else 0.0,
        best_frame_id=f"{camera_id}-{first_seen_ms}",
        best_box=(0.0, 0.0, 1.0, 1.0),
        evidence_key=key,
        snapshot_id="snap-test",
        model_id=services.model_id,
        threshold=services.settings.match.threshold,
    )
    assert services.event_store().write_sightings([s]) == 1
    return s


def count_embeddings(services: Services, monkeypatch) -> list[int]:
    """Counts the engine's cropped-face calls (the real engine still runs)."""
    calls: list[int] = []
    real = services.cropped_face

    def counted(data: bytes):
        calls.append(1)
        return real(data)

    monkeypatch.setattr(services, "cropped_face", counted)
    return calls


class Site:
    """The site scenario: 5 people never enrolled, each seen PER_PERSON times (WAVE of them
    first), every sighting unknown."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.services: Services = client.app.state.services  # type: ignore[attr-defined]
        self.person_of: dict[str, str] = {}
        self.crop_of: dict[str, Crop] = {}
        self.wave1: dict[str, int] = {}
        self.wave2: dict[str, int] = {}
        self.reports: list = []
        self.seconds: list[float] = []

    def arrive(self, crops: dict[str, list[Crop]], photos: range) -> None:
        people = sorted(crops)
        for i in photos:
            for p, person in enumerate(people):  # the people take turns, a minute apart
                crop = crops[person][i]
                s = write_unknown(
                    self.services,
                    crop,
                    first_seen_ms=T0 + (i * len(people) + p) * 60_000,
                    camera_id=f"cam-{(i + p) % 2 + 1}",
                )
                self.person_of[s.sighting_id] = person
                self.crop_of[s.sighting_id] = crop
        began = time.perf_counter()
        self.reports.append(self.services.unknowns.refresh())
        self.seconds.append(time.perf_counter() - began)

    def placements(self) -> dict[str, int]:
        unknowns = self.services.unknowns
        return {
            sid: c.cluster_id
            for c in unknowns.clusters(limit=1000)
            for sid in unknowns.cluster(c.cluster_id).sighting_ids
        }


@pytest.fixture(scope="module")
def site(tmp_path_factory, engine, crops):
    settings = make_settings(
        tmp_path_factory.mktemp("unknowns"),
        unknowns={"refresh_interval_s": 0, "max_templates": 4},
    )
    with TestClient(create_app(settings, engine=engine)) as client:
        scene = Site(client)
        scene.arrive(crops, range(WAVE))
        scene.wave1 = scene.placements()
        scene.arrive(crops, range(WAVE, PER_PERSON))
        scene.wave2 = scene.placements()
        yield scene


@pytest.mark.data
def test_given_unknown_sightings_of_five_people_then_clusters_are_pure_and_few(site, capsys):
    placed = site.wave2
    assert set(placed) == set(site.person_of)  # every sighting is in a cluster
    by_cluster: dict[int, Counter] = {}
    for sid, cid in placed.items():
        by_cluster.setdefault(cid, Counter())[site.person_of[sid]] += 1
    per_person = {
        person: sorted((n[person] for n in by_cluster.values() if person in n), reverse=True)
        for person in sorted(set(site.person_of.values()))
    }
    mixed = [cid for cid, people in by_cluster.items() if len(people) > 1]
    first, second = site.reports
    with capsys.disabled():
        print(
            f"\nunknown clusters (threshold {site.services.unknowns.threshold}): "
            f"{len(placed)} sightings of 5 people -> {len(by_cluster)} clusters, "
            f"{len(mixed)} mixing people; sightings per cluster, per person: {per_person}; "
            f"refresh of {first.added} new: {site.seconds[0]:.1f} s, of {second.added} new: "
            f"{site.seconds[1]:.1f} s"
        )
    assert not mixed, f"clusters mixing people: {mixed}"
    # celebrity5's photos of one person span decades (half its same-person pairs are
    # beyond 0.90): measured 11 clusters for 30 sightings, 2 people whole, none in more
    # than 3; doing nothing would leave 30, and chaining would mix people
    assert len(by_cluster) <= 13
    assert all(len(sizes) <= 3 for sizes in per_person.values()), per_person
    assert sum(len(sizes) == 1 for sizes in per_person.values()) >= 2, per_person
    assert first.added == WAVE * 5 and first.embedded == WAVE * 5 and first.swept
    assert second.added == (PER_PERSON - WAVE) * 5 and not second.swept
    assert first.refused == second.refused == 0 and first.left == second.left == 0


@pytest.mark.data
def test_given_more_sightings_then_earlier_cluster_ids_stay(site):
    for sid, before in site.wave1.items():
        after = site.wave2[sid]
        # the same cluster, or the older cluster it merged into (whose id is the older one)
        assert after == before or (after < before and before not in site.wave2.values())
    kept = sum(site.wave2[sid] == cid for sid, cid in site.wave1.items())
    assert kept >= len(site.wave1) - 2  # merges are the exception, not the rule


@pytest.mark.data
def test_given_nothing_new_then_refresh_embeds_nothing_and_is_cheap(site, monkeypatch):
    calls = count_embeddings(site.services, monkeypatch)
    before = site.placements()
    began = time.perf_counter()
    done = site.services.unknowns.refresh()
    took = time.perf_counter() - began
    assert calls == [] and done.embedded == 0 and done.added == done.moved == done.left == 0
    assert not done.swept and done.complete
    assert site.placements() == before
    assert took < 0.5, f"a refresh with nothing new took {took:.2f} s"


@pytest.mark.data
def test_given_the_api_then_roles_shape_and_errors(site):
    client, services = site.client, site.services
    assert client.get("/unknowns").status_code == 401
    assert client.get("/unknowns", headers=H["enroll"]).status_code == 200  # reviewers read
    r = client.post("/unknowns/1/enroll", json={"display_name": "X"}, headers=H["query"])
    assert r.status_code == 403
    r = client.get("/unknowns", headers=H["query"])
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert items and set(items[0]) == {
        "cluster_id",
        "size",
        "first_seen_ms",
        "last_seen_ms",
        "cameras",
        "sample_sighting_ids",
    }
    assert [c["last_seen_ms"] for c in items] == sorted(
        (c["last_seen_ms"] for c in items), reverse=True
    )
    for c in items:
        detail = client.get(f"/unknowns/{c['cluster_id']}", headers=H["query"]).json()
        assert detail["size"] == c["size"] == len(detail["sighting_ids"]) == len(detail["members"])
        qualities = [site.crop_of[sid].quality for sid in detail["sighting_ids"]]
        assert qualities == sorted(qualities, reverse=True)  # best face first
        assert c["sample_sighting_ids"] == detail["sighting_ids"][:6]
        assert c["cameras"] == sorted({m["camera_id"] for m in detail["members"]})
        assert c["first_seen_ms"] == min(m["first_seen_ms"] for m in detail["members"])
        assert c["last_seen_ms"] == max(m["last_seen_ms"] for m in detail["members"])
    big = client.get("/unknowns", params={"min_size": 3, "limit": 2}, headers=H["admin"]).json()
    assert len(big["items"]) <= 2 and all(c["size"] >= 3 for c in big["items"])

    for r in (
        client.get("/unknowns/987654", headers=H["query"]),
        client.post("/unknowns/987654/enroll", json={"display_name": "X"}, headers=H["enroll"]),
    ):
        assert r.status_code == 404
        assert r.json()["error"] == "cluster_not_found" and r.json()["reasons"] == [
            "cluster_not_found"
        ]
    cid = items[0]["cluster_id"]
    url = f"/unknowns/{cid}/enroll"
    assert client.post(url, json={"display_name": "X"}, headers=H["query"]).status_code == 403
    r = client.post(url, json={"display_name": ""}, headers=H["enroll"])
    assert r.status_code == 422 and r.json()["error"] == "invalid_request"
    r = client.post(url, json={"display_name": "X", "person_id": "rejected:x"}, headers=H["enroll"])
    assert r.status_code == 422 and r.json()["error"] == "reserved_person_id"
    assert services.unknowns.cluster(cid).size == items[0]["size"]  # refused: nothing done
    with pytest.raises(UnknownClusterNotFound):
        services.unknowns.cluster(987654)


@pytest.mark.data
def test_given_a_member_named_by_a_review_then_it_leaves_its_cluster(site):
    client, unknowns = site.client, site.services.unknowns
    clusters = [c for c in unknowns.clusters(limit=1000) if c.size >= 2]
    target = next(c for c in clusters if site.person_of[c.sample_sighting_ids[0]] == "mindy_kaling")
    sid = unknowns.cluster(target.cluster_id).sighting_ids[-1]
    r = client.post(
        f"/sightings/{sid}/assign",
        json={"person_id": "someone", "display_name": "Someone"},
        headers=H["enroll"],
    )
    assert r.status_code == 200, r.text
    r = client.get(f"/unknowns/{target.cluster_id}", headers=H["query"])
    assert r.status_code == 200 and r.json()["size"] == target.size - 1
    assert sid not in r.json()["sighting_ids"]


@pytest.mark.data
def test_given_a_cluster_when_enrolled_then_person_is_recognised_at_once(site, crops):
    client, services = site.client, site.services
    person = ENROLLED
    cid = Counter(site.wave2[s] for s, p in site.person_of.items() if p == person).most_common(1)[
        0
    ][0]
    members = services.unknowns.cluster(cid).sighting_ids
    others = [c.photo for c in crops[person][PER_PERSON:]]  # photos never seen as sightings

    def recognised() -> list[str]:
        out = []
        for photo in others:
            files = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}
            r = client.post("/recognize", files=files, headers=H["query"])
            assert r.status_code == 200, r.text
            out.append(r.json()["faces"][0]["identity"])
        return out

    assert recognised() == [UNKNOWN] * len(others)
    r = client.post(
        f"/unknowns/{cid}/enroll", json={"display_name": "Jerry Seinfeld"}, headers=H["enroll"]
    )
    assert r.status_code == 200, r.text
    done = r.json()
    pid = done["person_id"]
    limit = services.settings.unknowns.max_templates
    assert done["created"] and done["display_name"] == "Jerry Seinfeld" and done["published"]
    assert sorted(done["assigned"]) == sorted(members) and done["skipped"] == []
    assert len(done["template_ids"]) == min(limit, len(members)) and done["refused"] == []
    # the templates are the best crops: the members with the highest quality
    reviews = {sid: client.get(f"/sightings/{sid}", headers=H["query"]).json() for sid in members}
    assert all(s["identity"] == pid and s["review"]["action"] == "assign" for s in reviews.values())
    with_template = {sid for sid, s in reviews.items() if s["review"]["template_id"]}
    assert with_template == set(members[:limit])  # members are best quality first
    assert client.get(f"/people/{pid}", headers=H["enroll"]).json()["template_count"] == len(
        done["template_ids"]
    )
    # the running app names the person from photos it never saw, with no restart
    named = recognised()
    assert named.count(pid) >= 1 and set(named) <= {pid, UNKNOWN}, named
    r = client.get(f"/unknowns/{cid}", headers=H["query"])
    assert r.status_code == 404 and r.json()["error"] == "cluster_not_found"
    listed = client.get("/unknowns", headers=H["query"]).json()["items"]
    assert cid not in [c["cluster_id"] for c in listed]


@pytest.mark.data
def test_given_open_sightings_then_followed_until_closed_and_named_ones_leave(
    tmp_path, engine, crops, monkeypatch
):
    settings = make_settings(tmp_path, unknowns={"refresh_interval_s": 0})
    with TestClient(create_app(settings, engine=engine)) as client:
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        unknowns = services.unknowns
        calls = count_embeddings(services, monkeypatch)
        mindy, elton = crops["mindy_kaling"], crops["elton_john"]

        s = write_unknown(services, mindy[1], first_seen_ms=T0, status="open", frames=3)
        done = unknowns.refresh()
        assert done.added == 1 and done.embedded == 1 and len(calls) == 1
        (cluster,) = unknowns.clusters()
        # a better face while it is open (the job overwrites the crop): embedded again,
        # the cluster stays
        write_unknown(
            services,
            mindy[0],
            first_seen_ms=T0,
            status="open",
            frames=6,
            sighting_id=s.sighting_id,
            quality=mindy[1].quality + 0.01,
        )
        done = unknowns.refresh()
        assert done.moved == 1 and done.added == 0 and len(calls) == 2
        assert [c.cluster_id for c in unknowns.clusters()] == [cluster.cluster_id]
        # closed, same face: no embedding, the member says closed
        write_unknown(
            services,
            mindy[0],
            first_seen_ms=T0,
            frames=7,
            sighting_id=s.sighting_id,
            quality=mindy[1].quality + 0.01,
        )
        assert unknowns.refresh().embedded == 0 and len(calls) == 2
        assert unknowns.cluster(cluster.cluster_id).members[0].status == "closed"

        # another open one, which the job names while it is open: it leaves, its cluster
        # is gone
        e = write_unknown(services, elton[0], first_seen_ms=T0 + 60_000, status="open")
        assert unknowns.refresh().added == 1
        elton_cluster = next(c.cluster_id for c in unknowns.clusters() if c.cluster_id != 1)
        write_unknown(
            services,
            elton[0],
            first_seen_ms=T0 + 60_000,
            status="open",
            frames=9,
            identity="elton",
            sighting_id=e.sighting_id,
        )
        done = unknowns.refresh()
        assert done.left == 1 and done.embedded == 0
        r = client.get(f"/unknowns/{elton_cluster}", headers=H["query"])
        assert r.status_code == 404 and r.json()["error"] == "cluster_not_found"

        # no face kept: not clustered, and not tried again until one is
        write_unknown(services, None, first_seen_ms=T0 + 120_000)
        done = unknowns.refresh()
        assert done.refused == 1 and done.embedded == 0 and len(calls) == 3
        assert unknowns.refresh().refused == 0

        # a match rejected long ago (outside the re-read window) becomes an unknown face
        old = write_unknown(services, elton[1], first_seen_ms=T0 - 86_400_000, identity="elton")
        r = client.post(f"/sightings/{old.sighting_id}/reject", headers=H["enroll"])
        assert r.status_code == 200, r.text
        done = unknowns.refresh()
        assert done.added == 1 and not done.swept
        assert any(
            old.sighting_id in unknowns.cluster(c.cluster_id).sighting_ids
            for c in unknowns.clusters()
        )


@pytest.mark.data
def test_given_the_app_running_then_background_refresh_catches_up_and_survives_errors(
    tmp_path, engine, crops, caplog
):
    settings = make_settings(tmp_path, unknowns={"refresh_interval_s": 0.2})
    with TestClient(create_app(settings, engine=engine)) as client:
        services: Services = client.app.state.services  # type: ignore[attr-defined]
        unknowns = services.unknowns
        background = unknowns._background
        assert background.running
        # the database fails under it: the refresh fails, is logged, and the thread goes on
        with services.store.engine.begin() as conn:
            conn.execute(text("DROP TABLE unknown_meta"))
        deadline = time.monotonic() + 20
        while "unknown-faces failed" not in caplog.text:
            assert time.monotonic() < deadline, "no failed refresh logged"
            time.sleep(0.1)
        services.store.create_schema()
        s = write_unknown(services, crops["madonna"][0], first_seen_ms=T0)
        while not unknowns.clusters():  # never refreshed here: the thread does it
            assert time.monotonic() < deadline + 20, "the background refresh did not catch up"
            time.sleep(0.1)
        assert unknowns.cluster(unknowns.clusters()[0].cluster_id).sighting_ids == [s.sighting_id]
        assert background.running
    assert not background.running  # stopped with the app


@pytest.mark.data
@pytest.mark.parametrize(
    "backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.integration)]
)
def test_given_two_api_processes_on_one_database_then_they_share_the_clusters(
    backend, request, tmp_path, engine, crops
):
    settings = make_settings(tmp_path, unknowns={"refresh_interval_s": 0})
    url, schema = settings.enrollment_url(), None
    if backend == "postgresql":
        url, schema = request.getfixturevalue("postgres").url, f"t_unk_{uuid.uuid4().hex[:12]}"
    stores = [EnrollmentStore(url, schema=schema) for _ in range(2)]
    stores[0].create_schema()
    one, two = (Services(settings, engine=engine, store=store) for store in stores)
    try:
        mindy, ben = crops["mindy_kaling"], crops["ben_afflek"]
        made = [
            write_unknown(one, mindy[0], first_seen_ms=T0),
            write_unknown(one, mindy[1], first_seen_ms=T0 + 60_000),
            write_unknown(one, ben[0], first_seen_ms=T0 + 120_000),
        ]
        assert one.unknowns.refresh().added == 3

        def listing(services: Services) -> list[tuple[int, list[str]]]:
            u = services.unknowns
            return [(c.cluster_id, u.cluster(c.cluster_id).sighting_ids) for c in u.clusters()]

        assert listing(two) == listing(one)  # read from the database, nothing embedded
        cid = next(c for c, ids in listing(one) if made[0].sighting_id in ids)
        done = two.unknowns.enroll(cid, "Mindy Kaling", "mindy", by="test")
        assert sorted(done.assigned) == sorted(s.sighting_id for s in made[:2])
        assert done.created and len(done.template_ids) == 2
        assert cid not in [c for c, _ in listing(one)]  # the other process sees it gone
        # a face the first process clusters gets an id the second never handed out
        write_unknown(one, ben[1], first_seen_ms=T0 + 180_000)
        assert one.unknowns.refresh().added == 1
        assert listing(two) == listing(one)
        assert all(c != cid for c, _ in listing(one))
    finally:
        if schema is not None:
            stores[0].drop_schema()
        one.close()
        two.close()
