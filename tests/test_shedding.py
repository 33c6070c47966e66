"""Load shedding under a latency budget (udfs/shedding.py): which frames are analysed when
the input exceeds what the job can analyse."""

from __future__ import annotations

from itertools import pairwise

import pytest

from facerec.config import TrackConfig
from udfs.camera_status import CameraStatusWindows
from udfs.pipeline import FrameStat
from udfs.shedding import OVER_BUDGET, AnalysedFrame, LoadShedder, Reservation

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
    assert shedder.frame_cost.mean == pytest.approx(100 + 0.2 * (50 - 100))
    variance = 0.8 * 0.2 * 50**2
    assert shedder.frame_cost.var == pytest.approx(variance)
    # admission plans with the mean plus two standard deviations
    assert shedder.planning_cost_ms() == pytest.approx(90 + 2 * variance**0.5)
    assert decide(shedder, round(200 - shedder.planning_cost_ms()) - 1) is None
    assert decide(shedder, round(200 - 90) - 1) == OVER_BUDGET  # the mean alone would admit it
    shedder.observe(frames=0, elapsed_ms=30)  # an empty batch teaches nothing
    assert shedder.frame_cost.mean == pytest.approx(90)


def test_given_frames_with_and_without_facenet_passes_then_each_kind_is_planned_with_its_own():
    """A batch's FaceNet time is split over its passes, the rest over its frames. A frame
    whose faces can reuse its camera's embeddings (previous frame within max_gap_ms, last
    embedding within reuse_ms) is planned with the passes such frames took, another with the
    passes the others took."""
    shedder = LoadShedder(budget_ms=200, track=TrackConfig(max_gap_ms=1000, reuse_ms=1000))
    # cam1 at T0 (its face embedded), cam1 200 ms on (the face reused), cam2 (embedded)
    frames = [
        AnalysedFrame("cam1", T0, embedded=1),
        AnalysedFrame("cam1", T0 + 200, embedded=0),
        AnalysedFrame("cam2", T0 + 100, embedded=1),
    ]
    shedder.observe(frames=3, elapsed_ms=3 * 30 + 2 * 60, embed_ms=2 * 60, analysed=frames)
    assert (shedder.frame_cost.mean, shedder.pass_cost.mean) == (30, 60)
    assert (shedder.passes[False].mean, shedder.passes[True].mean) == (1, 0)
    assert shedder.planning_cost_ms(reusing=False) == pytest.approx(90)
    assert shedder.planning_cost_ms(reusing=True) == pytest.approx(30)
    # 150 ms old on arrival: a frame to embed (150 + 90) is shed, a reusing one (150 + 30)
    # analysed. cam1 has had no frame admitted (analysed ones were not asked about here).
    now = T0 + 1_100
    assert decide(shedder, 150, camera="cam1", now=now) == OVER_BUDGET
    assert decide(shedder, 50, camera="cam1", now=now) is None  # 50 + 90: admitted
    shedder.observe(1, 90, embed_ms=60, analysed=[AnalysedFrame("cam1", now - 50, embedded=1)])
    assert decide(shedder, 150, camera="cam1", now=now + 200) is None  # reuses, 150 + 30
    # more than max_gap_ms after the previous admitted frame: embedded again, planned so
    assert decide(shedder, 150, camera="cam1", now=now + 1_300) == OVER_BUDGET


def overloaded_job(
    track: TrackConfig | None, seconds: int = 20, reach: int = 80, warmup_s: int = 0
) -> dict[str, float]:
    """A simulated recognize operator under about twice the load it can analyse, started cold.

    Six cameras at 5 fps, one face each; frames reach the operator ``reach`` ms after capture
    and are handled one at a time, as the operator does (a shed frame costs 1 ms). Analysing
    a frame costs 40 ms, plus 100 ms when its face is embedded: it reuses the embedding when
    the camera's previous analysed frame is at most 800 ms older and that embedding at most
    800 ms old (udfs/track.py's rule). With the default reach a frame to embed (80 + 140 ms)
    cannot end within the budget; a reusing one can. The first batch was slow (the cold
    job): 400 ms, and its estimate takes seconds to settle, the dear frames it learns from
    being few. Latencies and gaps count frames captured after ``warmup_s``."""
    budget, gap = 200, 800
    shedder = LoadShedder(budget, min_analysed_fps=1.0, track=track)
    shedder.observe(1, 400, embed_ms=300, analysed=[AnalysedFrame("warm-up", 0, 1)])
    arrivals = sorted(
        (T0 + camera * 33 + k * 200 + reach, f"cam{camera}", k)
        for camera in range(6)
        for k in range(seconds * 5)
    )
    seen: dict[str, tuple[int, int]] = {}  # camera -> (last analysed, last embedded) capture
    free_at, analysed, reusing_latencies, latencies = 0, 0, [], []
    analysed_by_camera: dict[str, list[int]] = {}
    for arrival, camera, k in arrivals:
        now = max(arrival, free_at)
        captured = arrival - reach
        reason = "motion" if k else "first"
        if decide(shedder, now - captured, camera=camera, reason=reason, now=now) is not None:
            free_at = now + 1
            continue
        last, embedded_at = seen.get(camera, (None, None))
        reuse = last is not None and captured - last <= gap and captured - embedded_at <= gap
        passes = 0 if reuse else 1
        free_at = now + 40 + 100 * passes
        seen[camera] = (captured, embedded_at if reuse else captured)
        shedder.observe(
            1,
            40 + 100 * passes,
            embed_ms=100 * passes,
            analysed=[AnalysedFrame(camera, captured, passes)],
        )
        analysed += 1
        if not passes:
            reusing_latencies.append(free_at - captured)
        if captured >= T0 + warmup_s * 1000:
            latencies.append(free_at - captured)
            analysed_by_camera.setdefault(camera, []).append(captured)
    latencies.sort()
    return {
        "analysed_fps": analysed / seconds,
        "reusing_frames": len(reusing_latencies),
        "reusing_max_ms": max(reusing_latencies, default=0),
        "p95_ms": latencies[int(0.95 * (len(latencies) - 1))],
        "longest_gap_ms": max(
            b - a for frames in analysed_by_camera.values() for a, b in pairwise(frames)
        ),
    }


def test_given_a_cold_job_under_overload_then_the_cheap_frames_after_a_floor_frame_are_analysed():
    """The frames that reuse a floor frame's embeddings fit the budget and are admitted, so
    the job analyses well above its floor. Planned with one cost for every frame (what the
    job did before), the floor's dear frames keep the estimate high and only they are
    analysed (6 cameras x 1 fps)."""
    reusing = overloaded_job(TrackConfig(max_gap_ms=800, reuse_ms=800))
    one_kind = overloaded_job(None)
    assert one_kind["analysed_fps"] <= 6 * 1.1, one_kind
    # the floor frames, each followed by the frames that reuse it while they fit
    assert reusing["analysed_fps"] >= 2 * one_kind["analysed_fps"], reusing
    assert reusing["reusing_frames"] >= 10 * 20, reusing
    assert reusing["reusing_max_ms"] <= 200, reusing  # they end within the budget


def test_given_overload_when_a_floor_frame_can_fit_then_analysed_frames_end_within_budget():
    """Frames reach the operator 30 ms after capture, so a frame to embed (30 + 140 ms) fits
    the budget when nothing queues before it, and does not behind another frame. Left to the
    floor, a camera whose embedding went stale gets its frame in when the floor forces it,
    behind whatever is being analysed: past the budget. Reserving room for the waiting
    camera's next frame drains the queue in front of it, so it fits."""
    job = overloaded_job(TrackConfig(max_gap_ms=800, reuse_ms=800), reach=30, warmup_s=8)
    assert job["p95_ms"] <= 200, job
    assert job["longest_gap_ms"] <= 1000, job  # the floor still holds for every camera
    assert job["analysed_fps"] >= 12, job  # twice the floor


def test_given_a_camera_waiting_for_room_then_other_frames_leave_its_next_frame_in_budget():
    shedder = LoadShedder(budget_ms=200, min_analysed_fps=1.0)
    shedder.observe(1, 100)  # a frame costs 100 ms
    assert decide(shedder, 20, camera="cam1", now=T0 - 980) is None  # captured T0 - 1000
    assert decide(shedder, 20, camera="cam2", now=T0 - 480) is None
    for captured in range(T0 - 900, T0 - 500, 100):  # a queue: 120 + 100 ms > 200
        assert decide(shedder, 120, camera="cam1", now=captured + 120) == OVER_BUDGET
    assert not shedder.reservations  # before half the floor's gap, no room is kept
    assert decide(shedder, 120, camera="cam1", now=T0 - 380) == OVER_BUDGET
    assert shedder.reservations == {"cam1": Reservation(T0 - 380, T0 - 400, 100)}
    # cam2's frame would fit its own budget, but ending at T0 - 270 it would start cam1's
    # next frame (captured at T0 - 400) then, to end 230 ms after its capture
    assert decide(shedder, 50, camera="cam2", now=T0 - 370) == OVER_BUDGET
    # cam1's next frame reaches the operator 30 ms after capture: 30 + 100 fits
    assert decide(shedder, 30, camera="cam1", now=T0 - 370) is None
    assert not shedder.reservations
    assert decide(shedder, 50, camera="cam2", now=T0 - 360) is None


def test_given_a_waiting_camera_goes_still_then_its_room_lapses():
    """Its next frame never passes the gate: once that frame would have been past the
    budget, the room is released and the other cameras' frames are analysed again."""
    shedder = LoadShedder(budget_ms=200, min_analysed_fps=1.0)
    shedder.observe(1, 100)
    assert decide(shedder, 20, camera="cam1", now=T0 - 980) is None  # captured T0 - 1000
    assert decide(shedder, 20, camera="cam2", now=T0 - 480) is None
    assert decide(shedder, 120, camera="cam1", now=T0 - 500) == OVER_BUDGET  # T0 - 620
    assert decide(shedder, 120, camera="cam1", now=T0 - 380) == OVER_BUDGET  # T0 - 500
    assert "cam1" in shedder.reservations  # for a frame captured at T0 - 380
    assert decide(shedder, 50, camera="cam2", now=T0 - 300) == OVER_BUDGET
    assert decide(shedder, 50, camera="cam2", now=T0 - 179) is None  # T0 - 380 + 201
    assert not shedder.reservations


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
