"""Sightings from per-frame matches (udfs/sightings.py): linking faces across frames, the
identity decided over several frames, when a sighting is published, and its state."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from facerec.config import SightingsConfig
from facerec.records import UNKNOWN, RecognitionEvent, Sighting, make_event_id
from udfs.sightings import Observation, SightingTracker, decide, face_quality

FPS_MS = 200  # 5 fps


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=512).astype(np.float32)
    return v / np.linalg.norm(v)


def jitter(v: np.ndarray, seed: int, amount: float = 0.15) -> np.ndarray:
    """The same face in another frame: a little off (distance about ``amount``)."""
    noise = np.random.default_rng(seed).normal(size=v.shape).astype(np.float32)
    w = v + amount * noise / np.linalg.norm(noise)
    return w / np.linalg.norm(w)


def obs(
    camera: str, seq: int, identity: str, embedding: np.ndarray, *,
    face: int = 0, x: float = 100.0, quality: float = 0.5, distance: float = 0.7,
) -> Observation:
    frame_id = f"{camera}:1000:{seq:09d}"
    event = RecognitionEvent(
        event_id=make_event_id(frame_id, face), frame_id=frame_id, camera_id=camera,
        region="r1", capture_ts=1_700_000_000_000 + seq * FPS_MS, face_index=face,
        box=(x, 100.0, x + 80.0, 180.0), identity=identity,
        distance=distance if identity != UNKNOWN else 1.3, score=0.99, threshold=1.05,
        snapshot_id="snap", model_id="m", stages={},
    )
    return Observation(event, embedding, quality, lambda: f"jpeg-{frame_id}".encode())


def run(tracker: SightingTracker, frames: list[list[Observation]]) -> dict[str, Sighting]:
    """Feed frames one by one; the last record of each sighting, by id."""
    latest: dict[str, Sighting] = {}
    for faces in frames:
        for u in tracker.observe(faces):
            latest[u.sighting.sighting_id] = u.sighting
    for u in tracker.close_all():
        latest[u.sighting.sighting_id] = u.sighting
    return latest


def test_given_a_person_in_ten_frames_when_tracked_then_one_sighting_names_them():
    tracker = SightingTracker(SightingsConfig())
    face = unit(1)
    names = ["ada"] * 4 + [UNKNOWN] + ["ada"] * 3 + [UNKNOWN, "ada"]
    frames = [[obs("cam1", i, who, jitter(face, i), x=100 + 3 * i)] for i, who in enumerate(names)]
    (sighting,) = run(tracker, frames).values()
    assert sighting.identity == "ada"
    assert sighting.status == "closed"
    assert sighting.frames == 10
    assert sighting.votes == {"ada": 8, UNKNOWN: 2}
    assert sighting.last_seen_ms - sighting.first_seen_ms == 9 * FPS_MS
    assert sighting.evidence_key and sighting.evidence_key.endswith(f"{sighting.sighting_id}.jpg")


def test_given_a_stranger_named_in_one_frame_of_ten_then_the_sighting_stays_unknown():
    """A per-frame false accept does not become a per-sighting one."""
    tracker = SightingTracker(SightingsConfig())
    face = unit(2)
    names = [UNKNOWN] * 4 + ["ada"] + [UNKNOWN] * 5
    frames = [[obs("cam1", i, who, jitter(face, i))] for i, who in enumerate(names)]
    (sighting,) = run(tracker, frames).values()
    assert sighting.identity == UNKNOWN
    assert sighting.votes == {UNKNOWN: 9, "ada": 1}


def test_given_an_identity_when_it_reaches_min_faces_then_the_sighting_opens_once():
    tracker = SightingTracker(SightingsConfig(min_faces=3))
    face = unit(3)
    published = []
    for i in range(6):
        published += tracker.observe([obs("cam1", i, "ada", jitter(face, i), quality=0.5)])
    # opens at the third frame; the same quality later publishes nothing new
    assert [u.sighting.frames for u in published] == [3]
    assert published[0].sighting.status == "open"
    assert published[0].evidence == b"jpeg-cam1:1000:000000000", "the best face so far"
    better = tracker.observe([obs("cam1", 6, "ada", jitter(face, 6), quality=0.9)])
    assert [u.evidence for u in better] == [b"jpeg-cam1:1000:000000006"]


def test_given_two_people_in_the_same_frames_then_two_sightings():
    tracker = SightingTracker(SightingsConfig())
    ada, bob = unit(4), unit(5)
    frames = [
        [obs("cam1", i, "ada", jitter(ada, i), x=50), obs("cam1", i, "bob", jitter(bob, 100 + i),
                                                          face=1, x=400)]
        for i in range(6)
    ]
    sightings = run(tracker, frames)
    assert sorted(s.identity for s in sightings.values()) == ["ada", "bob"]
    assert all(s.frames == 6 for s in sightings.values())


def test_given_a_face_found_twice_in_a_frame_then_still_one_sighting():
    """The detector's duplicate box in one frame neither starts a sighting nor splits the
    person's frames between two sightings afterwards (a still face: identical boxes)."""
    tracker = SightingTracker(SightingsConfig())
    face = unit(13)
    frames = [[obs("cam1", i, "ada", jitter(face, i))] for i in range(3)]
    twice = obs("cam1", 3, "ada", jitter(face, 3))
    again = obs("cam1", 3, "ada", jitter(face, 33), face=1)
    # a second, smaller box inside the first (face without hair): IoU 0.4, nested wholly
    again.event = replace(again.event, box=(110.0, 110.0, 160.0, 170.0))
    frames += [[twice, again]]
    frames += [[obs("cam1", 4 + i, "ada", jitter(face, 4 + i))] for i in range(6)]
    (sighting,) = run(tracker, frames).values()
    assert sighting.frames == 10


def test_given_a_gap_longer_than_gap_ms_then_a_new_sighting_starts():
    config = SightingsConfig(gap_ms=2000)
    tracker = SightingTracker(config)
    face = unit(6)
    first = [[obs("cam1", i, "ada", jitter(face, i))] for i in range(4)]
    later = [[obs("cam1", 40 + i, "ada", jitter(face, 40 + i))] for i in range(4)]  # 7.2 s on
    sightings = run(tracker, first + later)
    assert len(sightings) == 2
    assert {s.frames for s in sightings.values()} == {4}


def test_given_a_face_that_moves_away_then_it_links_by_embedding():
    """Frames gated out while the person crossed the scene: no box overlap, same face."""
    tracker = SightingTracker(SightingsConfig())
    face = unit(7)
    frames = [[obs("cam1", i, "ada", jitter(face, i), x=20 + 200 * (i % 3))] for i in range(6)]
    assert len(run(tracker, frames)) == 1


def test_given_another_person_in_the_same_spot_then_not_linked():
    tracker = SightingTracker(SightingsConfig())
    frames = [[obs("cam1", i, "ada", jitter(unit(8), i))] for i in range(4)]
    frames += [[obs("cam1", 4 + i, "bob", jitter(unit(9), i))] for i in range(4)]
    assert sorted(s.identity for s in run(tracker, frames).values()) == ["ada", "bob"]


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["ada", "ada"], "ada"),  # walked through the corner: named in both frames
        (["ada"], UNKNOWN),  # one frame names nobody (a sporadic false accept)
        (["ada", UNKNOWN], UNKNOWN),
        (["ada", "bob"], UNKNOWN),
    ],
)
def test_given_a_short_glimpse_when_it_closes_then_named_only_if_unanimous(names, expected):
    tracker = SightingTracker(SightingsConfig(min_faces=3))
    face = unit(10)
    frames = [[obs("cam1", i, who, jitter(face, i))] for i, who in enumerate(names)]
    (sighting,) = run(tracker, frames).values()
    assert sighting.identity == expected
    assert sum(sighting.votes.values()) == len(names)
    assert sighting.evidence_key is not None, "a glimpse keeps its face"


def test_given_state_saved_midway_when_restored_then_the_same_sightings():
    """What the job keeps in Flink keyed state: a restore continues the same sightings."""
    config = SightingsConfig()
    face = unit(11)
    frames = [[obs("cam1", i, "ada", jitter(face, i))] for i in range(8)]
    whole = run(SightingTracker(config), frames)
    tracker = SightingTracker(config)
    for f in frames[:4]:
        tracker.observe(f)
    restored = SightingTracker.from_state(config, tracker.to_state())
    resumed = run(restored, frames[4:])
    assert set(resumed) == set(whole)
    (a,), (b,) = whole.values(), resumed.values()
    assert (a.frames, a.votes, a.identity) == (b.frames, b.votes, b.identity)


@pytest.mark.parametrize(
    ("votes", "frames", "expected"),
    [
        ({"ada": 3}, 3, "ada"),
        ({"ada": 2}, 2, None),
        ({"ada": 3, UNKNOWN: 4}, 7, None),
        ({"ada": 3, UNKNOWN: 4, "bob": 1}, 8, UNKNOWN),
        ({"ada": 4, "bob": 3}, 7, "ada"),
    ],
)
def test_decide(votes, frames, expected):
    assert decide(votes, frames, SightingsConfig(min_faces=3, unknown_after=8)) == expected


def test_face_quality_prefers_big_confident_sharp_faces():
    small = face_quality(40, 0.99, 300, 20)
    big = face_quality(160, 0.99, 300, 20)
    blurred = face_quality(160, 0.99, 10, 20)
    assert small < blurred < big <= 1.0


def test_sighting_json_round_trip():
    tracker = SightingTracker(SightingsConfig())
    (s,) = run(tracker, [[obs("cam1", i, "ada", jitter(unit(12), i))] for i in range(3)]).values()
    assert Sighting.from_json(s.to_json()) == s


def test_given_whole_frames_kept_then_the_best_face_comes_with_its_frame():
    tracker = SightingTracker(SightingsConfig(min_faces=3))
    face = unit(14)
    published = []
    for i in range(4):
        o = obs("cam1", i, "ada", jitter(face, i), quality=0.5 + 0.1 * (i == 3))
        o.frame_jpeg = f"frame-{i}".encode()
        published += tracker.observe([o])
    # opens at the third frame with the first (best so far) face and its frame; the fourth
    # face is better: its crop and frame replace them
    assert [(u.evidence, u.frame) for u in published] == [
        (b"jpeg-cam1:1000:000000000", b"frame-0"),
        (b"jpeg-cam1:1000:000000003", b"frame-3"),
    ]
