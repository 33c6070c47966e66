"""Per-camera status: the windows the job closes from its frame outcomes, and the camera
list the API serves from them (frames/s, gate share, last sighting)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_api import H, make_settings

from api.app import create_app
from facerec.records import Sighting, now_ms
from udfs.camera_status import CameraStatusWindows
from udfs.pipeline import FrameStat


def stat(camera: str, done_ms: int, passed: bool, faces: int = 0) -> FrameStat:
    return FrameStat(camera, "lobby", f"{camera}:{done_ms}", passed,
                     "analysed" if passed else "still", faces=faces, done_ms=done_ms)


def test_given_frames_when_a_window_passes_then_one_status_per_camera_and_window() -> None:
    windows = CameraStatusWindows(interval_ms=1000)
    closed = [
        w for s in (
            stat("a", 0, False), stat("b", 100, True, faces=2), stat("a", 400, True, faces=1),
            stat("a", 999, False), stat("a", 1000, False),  # closes a's window: 4 frames
            stat("a", 1500, True, faces=3),
        )
        if (w := windows.add(s)) is not None
    ]
    assert len(closed) == 1
    a = closed[0]
    assert (a.camera_id, a.frames, a.gated_out, a.analysed, a.faces) == ("a", 4, 3, 1, 1)
    assert (a.window_start_ms, a.window_end_ms) == (0, 1000)
    assert a.frames_per_s == pytest.approx(4.0) and a.gate_share == pytest.approx(0.75)
    # the end of input closes what is open: b's window and a's second one
    rest = windows.flush()
    assert [(w.camera_id, w.frames, w.faces) for w in rest] == [("a", 1, 3), ("b", 1, 2)]
    assert rest[0].frames_per_s == 0.0, "one instant is no rate"
    assert windows.flush() == []


def test_given_job_status_when_cameras_listed_then_rates_and_last_sighting(tmp_path) -> None:
    settings = make_settings(tmp_path / "data")
    app = create_app(settings, load_model=False)
    with TestClient(app) as client:
        assert client.get("/cameras").status_code == 401
        assert client.get("/cameras", headers=H["query"]).json() == {"items": []}
        events = app.state.services.event_store()
        windows = CameraStatusWindows(interval_ms=10_000)
        t = now_ms()
        for i in range(20):
            windows.add(stat("door", t + i * 500, passed=i % 4 == 0))
        events.write_camera_status(windows.flush())
        s = Sighting(
            sighting_id="s-1", camera_id="door", region="lobby", status="closed",
            identity="ada", first_seen_ms=t, last_seen_ms=t + 900, frames=3,
            votes={"ada": 3}, best_distance=0.5, best_quality=0.8, best_frame_id="door:1",
            best_box=(0.0, 0.0, 10.0, 10.0), evidence_key=None, snapshot_id="snap",
            model_id="m", threshold=0.9,
        )
        events.write_sightings([s])
        (door,) = client.get("/cameras", headers=H["query"]).json()["items"]
    assert door["camera_id"] == "door" and door["frames"] == 20 and door["gated_out"] == 15
    assert door["gate_share"] == pytest.approx(0.75)
    assert door["frames_per_s"] == pytest.approx(20 / 9.5)
    assert door["last_sighting"]["sighting_id"] == "s-1"
    assert door["last_sighting"]["identity"] == "ada"
