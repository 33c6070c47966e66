"""Load shedding under a latency budget (udfs/shedding.py): which frames are analysed when
the input exceeds what the job can analyse."""

from __future__ import annotations

import pytest

from udfs.camera_status import CameraStatusWindows
from udfs.pipeline import FrameStat
from udfs.shedding import OVER_BUDGET, LoadShedder

T0 = 1_800_000_000_000


def decide(
    shedder: LoadShedder,
    age_ms: int,
    *,
    camera: str = "cam1",
    reason: str = "motion",
    buffered: int = 0,
    now: int = T0,
) -> str | None:
    return shedder.shed_reason(
        camera_id=camera, capture_ts=now - age_ms, gate_reason=reason, buffered=buffered, now=now
    )


def test_given_no_budget_when_frames_are_late_then_every_frame_is_analysed():
    shedder = LoadShedder(budget_ms=0, min_analysed_fps=0)
    shedder.observe(frames=1, elapsed_ms=500)
    assert [decide(shedder, age, now=T0 + i) for i, age in enumerate((10, 5_000, 60_000))] == [
        None,
        None,
        None,
    ]


def test_given_a_measured_cost_when_age_plus_cost_passes_the_budget_then_the_frame_is_shed():
    shedder = LoadShedder(budget_ms=200, min_analysed_fps=0)
    assert decide(shedder, 150) is None  # no cost measured yet: only the age counts
    shedder.observe(frames=2, elapsed_ms=160)  # 80 ms a frame
    assert decide(shedder, 120) is None  # 120 + 80 = 200: just within
    assert decide(shedder, 121) == OVER_BUDGET
    # frames buffered before it are analysed with it: two of them push it over
    assert decide(shedder, 20, buffered=2) == OVER_BUDGET
    assert decide(shedder, 20, buffered=1) is None


def test_given_cost_changes_then_the_estimate_follows_it_smoothly():
    shedder = LoadShedder(budget_ms=200)
    shedder.observe(frames=1, elapsed_ms=100)
    shedder.observe(frames=4, elapsed_ms=200)  # 50 ms a frame
    assert shedder.frame_cost_ms == pytest.approx(100 + 0.2 * (50 - 100))
    variance = 0.8 * 0.2 * 50**2
    assert shedder.frame_cost_var == pytest.approx(variance)
    # admission plans with the mean plus two standard deviations
    assert shedder.planning_cost_ms == pytest.approx(90 + 2 * variance**0.5)
    assert decide(shedder, round(200 - shedder.planning_cost_ms) - 1) is None
    assert decide(shedder, round(200 - 90) - 1) == OVER_BUDGET  # the mean alone would admit it
    shedder.observe(frames=0, elapsed_ms=30)  # an empty batch teaches nothing
    assert shedder.frame_cost_ms == pytest.approx(90)


@pytest.mark.parametrize("reason", ["keepalive", "first"])
def test_given_keepalive_or_first_frame_when_late_then_analysed_anyway(reason):
    shedder = LoadShedder(budget_ms=200, min_analysed_fps=0)
    assert decide(shedder, 10_000, reason=reason) is None
    assert decide(shedder, 10_000, reason="motion") == OVER_BUDGET


def test_given_overload_then_each_camera_still_gets_its_minimum_rate():
    """Two cameras at 10 fps; each frame arrives 150 ms after capture and takes 100 ms to
    analyse, so none can finish within 200 ms. Each camera still gets one frame a second
    (the floor), the rest is shed, and neither starves the other."""
    shedder = LoadShedder(budget_ms=200, min_analysed_fps=1.0)
    shedder.observe(frames=1, elapsed_ms=100)
    analysed = {"busy": 0, "quiet": 0}
    shed = {"busy": 0, "quiet": 0}
    for tick in range(100):  # 10 s
        now = T0 + tick * 100
        for camera in ("busy", "quiet"):
            if decide(shedder, 150, camera=camera, now=now) is None:
                analysed[camera] += 1
            else:
                shed[camera] += 1
    assert analysed == {"busy": 10, "quiet": 10}
    assert shed == {"busy": 90, "quiet": 90}


def test_given_a_frame_already_over_budget_then_shed_even_when_its_floor_is_due():
    """A floor that admitted late frames would rebuild the queue whenever cameras x floor
    exceeds what the machine analyses: once late, only shedding drains it."""
    shedder = LoadShedder(budget_ms=200, min_analysed_fps=1.0)
    assert decide(shedder, 201, camera="new") == OVER_BUDGET  # floor due: never analysed
    assert decide(shedder, 200, camera="new") is None


def test_given_a_restored_job_then_frames_captured_before_it_started_are_never_shed():
    """A restored job replays the frames after its checkpoint: those it handled before the
    failure must be analysed again, not shed as late, and the outage's frames are not lost."""
    shedder = LoadShedder(budget_ms=200, min_analysed_fps=1.0, backlog_until_ms=T0)
    shedder.observe(frames=1, elapsed_ms=500)  # nothing could finish within the budget
    assert [decide(shedder, age, now=T0 + 60_000) for age in (60_001, 61_000, 3_600_000)] == [
        None,
        None,
        None,
    ]
    assert decide(shedder, 59_999, now=T0 + 60_000) == OVER_BUDGET  # captured after the start


def test_given_a_frame_within_budget_then_it_resets_the_floor_clock():
    """The floor counts capture time from the last admitted frame, whatever admitted it."""
    shedder = LoadShedder(budget_ms=200, min_analysed_fps=1.0)
    assert decide(shedder, 50, now=T0) is None  # in budget, captured at T0 - 50
    shedder.observe(frames=1, elapsed_ms=190)  # from now on nothing finishes in budget
    assert decide(shedder, 100, now=T0 + 550) == OVER_BUDGET  # captured 0.5 s later
    assert decide(shedder, 100, now=T0 + 1060) is None  # captured 1.01 s later: floor due


def test_given_a_burst_of_frames_then_the_floor_follows_capture_time_not_arrival():
    """A second of capture arriving within 30 ms is still one second: one floor frame."""
    shedder = LoadShedder(budget_ms=5_000, min_analysed_fps=1.0)
    shedder.observe(frames=1, elapsed_ms=10_000)  # nothing finishes in budget
    captured = [T0 + i * 100 for i in range(30)]  # 3 s at 10 fps, all arriving at T0 + 3 s
    admitted = [
        c
        for i, c in enumerate(captured)
        if shedder.shed_reason(
            camera_id="cam1", capture_ts=c, gate_reason="motion", buffered=0, now=T0 + 3_000 + i
        )
        is None
    ]
    assert admitted == [T0, T0 + 1000, T0 + 2000]


def test_given_shed_frames_then_camera_status_counts_them_apart_and_the_counts_add_up():
    windows = CameraStatusWindows(interval_ms=1000)
    stats = [
        FrameStat("cam1", "r", "f1", False, "static", done_ms=T0),
        FrameStat("cam1", "r", "f2", True, OVER_BUDGET, shed=True, done_ms=T0 + 100),
        FrameStat("cam1", "r", "f3", True, "analyzed", faces=2, done_ms=T0 + 200),
        FrameStat("cam1", "r", "f4", True, OVER_BUDGET, shed=True, done_ms=T0 + 1000),
    ]
    closed = [w for s in stats if (w := windows.add(s)) is not None]
    assert [s.outcome for s in stats] == ["gated_out", "shed", "analysed", "shed"]
    (window,) = closed
    assert (window.frames, window.gated_out, window.shed, window.analysed, window.faces) == (
        4,
        1,
        2,
        1,
        2,
    )
    assert window.frames == window.gated_out + window.shed + window.analysed
    assert window.shed_share == 0.5
