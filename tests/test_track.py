"""Embedding reuse across frames (udfs/track.py) on real faces: the same face a few pixels
further reuses its embedding, a different person in the same spot never does, and reuse
stops after ``reuse_ms``."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerec.config import Settings, TrackConfig
from facerec.records import FrameRecord
from udfs.pipeline import analyze_batch
from udfs.track import FaceTracks, iou

SIZE = (480, 640)


def scene(photo, x: int) -> np.ndarray:
    frame = np.full((*SIZE, 3), 60, np.uint8)
    img = cv2.imread(str(photo))
    scale = 240 / img.shape[0]
    img = cv2.resize(img, (int(img.shape[1] * scale), 240))[:, :400]
    frame[120:360, x : x + img.shape[1]] = img
    return frame


def record(frame: np.ndarray, seq: int, ts: int) -> FrameRecord:
    ok, jpeg = cv2.imencode(".jpg", frame)
    assert ok
    return FrameRecord(
        camera_id="cam",
        region="r",
        frame_id=f"cam-{seq}",
        seq=seq,
        capture_ts=ts,
        width=SIZE[1],
        height=SIZE[0],
        jpeg=jpeg.tobytes(),
        ingest_ts=ts,
    )


def run(engine, tracks, frames):
    out = []
    for seq, (frame, ts) in enumerate(frames):
        candidates, dead, stats, _ = analyze_batch(
            engine, [(record(frame, seq, ts), {"ingest": ts, "gate": ts})], tracks
        )
        assert not dead and len(stats) == 1
        out.append((stats[0], candidates))
    return out


def test_iou():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)


def test_same_face_reuses_and_new_person_does_not(engine, portraits):
    tracks = FaceTracks(TrackConfig())
    a, b = portraits["ben_afflek"][0], portraits["madonna"][0]
    frames = [(scene(a, 120), 0), (scene(a, 126), 200), (scene(b, 120), 400), (scene(b, 120), 600)]
    (s0, c0), (s1, c1), (s2, c2), (s3, c3) = run(engine, tracks, frames)
    assert (s0.faces, s0.reused) == (1, 0) and "reused" not in c0[0].stages
    # the same face moved by 6 px takes the earlier embedding
    assert s1.reused == 1 and np.array_equal(c1[0].embedding, c0[0].embedding)
    assert c1[0].stages["reused"] <= c1[0].stages["embed"]
    # another person in the same spot must be embedded afresh
    assert s2.reused == 0
    assert not np.array_equal(c2[0].embedding, c0[0].embedding)
    assert float(c2[0].embedding @ c0[0].embedding) < 0.8
    assert s3.reused == 1 and np.array_equal(c3[0].embedding, c2[0].embedding)


def test_reuse_expires_and_can_be_disabled(engine, portraits):
    a = portraits["mindy_kaling"][0]
    still = scene(a, 150)
    tracks = FaceTracks(TrackConfig(reuse_ms=300, max_gap_ms=1000))
    stats = [s for s, _ in run(engine, tracks, [(still, 0), (still, 200), (still, 400)])]
    # 200 ms after the embedding: reused; 400 ms: older than reuse_ms, embedded again
    assert [s.reused for s in stats] == [0, 1, 0]
    off = FaceTracks(TrackConfig(reuse_ms=0))
    assert [s.reused for s, _ in run(engine, off, [(still, 0), (still, 200)])] == [0, 0]
    assert Settings().job.track.reuse_ms > 0  # on by default


def test_reuse_within_one_batch(engine, portraits):
    """A queue of frames analysed as one batch embeds the face once (the case that matters
    when the job falls behind)."""
    a, b = portraits["ben_afflek"][0], portraits["jerry_seinfeld"][0]
    frames = [scene(a, 120), scene(a, 126), scene(a, 132), scene(b, 132)]
    batch = [(record(f, i, i * 200), {"ingest": 0, "gate": 0}) for i, f in enumerate(frames)]
    candidates, dead, stats, _ = analyze_batch(engine, batch, FaceTracks(TrackConfig()))
    assert not dead
    assert [s.reused for s in stats] == [0, 1, 1, 0]
    assert np.array_equal(candidates[2].embedding, candidates[0].embedding)
    assert candidates[2].stages["reused"] == candidates[0].stages["embed"]
    assert float(candidates[3].embedding @ candidates[0].embedding) < 0.8


def test_an_earlier_face_is_taken_by_one_face_only():
    """Two faces of one frame both near the same earlier face: the first takes its
    embedding, the other is embedded on its own."""
    from udfs.engine import Face

    tracks = FaceTracks(TrackConfig())
    look = np.ones(24 * 24, np.float32) / 24
    earlier = Face(None, None, np.ones(512, np.float32), "m")  # type: ignore[arg-type]
    assert tracks.link("cam", (0, 0, 100, 100), look, earlier, 0) is None
    a = Face(None, None, None, "m")  # type: ignore[arg-type]
    b = Face(None, None, None, "m")  # type: ignore[arg-type]
    first = tracks.link("cam", (5, 0, 105, 100), look, a, 200)
    assert first is not None and first.face is earlier
    assert tracks.link("cam", (10, 0, 110, 100), look, b, 200) is None
