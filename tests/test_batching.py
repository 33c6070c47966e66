"""The recognize operator's decisions without Flink: when a gated frame is analysed
(udfs/batching.py) and how each camera's motion gate lives in serialised state
(udfs/pipeline.py ``gate_stored``). No JVM, no models."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from facerec.config import BatchConfig, MotionConfig, Settings
from facerec.records import DeadLetter, FrameRecord
from udfs.batching import (
    ANALYSE_NOW,
    FLUSH,
    AnalyseNow,
    BatchPolicy,
    Buffer,
    Rearm,
)
from udfs.motion import GateDecision, MotionGate
from udfs.pipeline import FrameStat, gate_frame, gate_stored

OPENED = 1_700_000_000_000
CONFIG = BatchConfig(max_frames=4, max_wait_ms=50, realtime_lag_ms=3000)


def policy(config: BatchConfig = CONFIG) -> BatchPolicy:
    return BatchPolicy(config, opened_ms=OPENED)


# ------------------------------------------------------------------------- frames
def test_given_job_keeping_up_when_frame_arrives_then_analysed_at_once_with_the_buffer():
    now = OPENED + 10_000
    for buffered in (0, 2):
        action = policy().on_frame(
            ingest_ts=now - 200, buffered=buffered, index_ready=True, now=now
        )
        assert action == ANALYSE_NOW


def test_given_old_frame_and_empty_buffer_when_it_arrives_then_it_starts_a_batch_with_a_timer():
    now = OPENED + 10_000
    action = policy().on_frame(ingest_ts=now - 3001, buffered=0, index_ready=True, now=now)
    assert action == Buffer(timer_at=now + CONFIG.max_wait_ms)


def test_given_old_frame_and_a_started_batch_when_it_arrives_then_buffered_without_new_timer():
    now = OPENED + 10_000
    action = policy().on_frame(ingest_ts=now - 5000, buffered=1, index_ready=True, now=now)
    assert action == Buffer(timer_at=None)


def test_given_old_frame_completing_a_batch_when_it_arrives_then_the_batch_is_analysed():
    now = OPENED + 10_000
    action = policy().on_frame(
        ingest_ts=now - 5000, buffered=CONFIG.max_frames - 1, index_ready=True, now=now
    )
    assert action == ANALYSE_NOW


def test_given_a_frame_that_is_not_live_when_it_arrives_fresh_then_it_is_batched():
    """A recording read as fast as it decodes: nobody waits on it, so it is batched even
    while the job keeps up."""
    now = OPENED + 10_000
    action = policy().on_frame(ingest_ts=now, buffered=0, index_ready=True, now=now, live=False)
    assert action == Buffer(timer_at=now + CONFIG.max_wait_ms)
    full = policy().on_frame(
        ingest_ts=now, buffered=CONFIG.max_frames - 1, index_ready=True, now=now, live=False
    )
    assert full == ANALYSE_NOW


def test_given_lag_limit_zero_when_fresh_frame_arrives_then_it_is_batched():
    now = OPENED + 10_000
    always_batch = policy(CONFIG.model_copy(update={"realtime_lag_ms": 0}))
    action = always_batch.on_frame(ingest_ts=now, buffered=0, index_ready=True, now=now)
    assert action == Buffer(timer_at=now + CONFIG.max_wait_ms)


def test_given_no_index_yet_when_frames_arrive_then_buffered_and_rechecked_at_retry_interval():
    now = OPENED + CONFIG.index_wait_ms - 1
    p = policy()
    # keeping up, and even a full batch, waits for the index
    assert p.on_frame(ingest_ts=now, buffered=0, index_ready=False, now=now) == Buffer(
        timer_at=now + CONFIG.index_retry_ms
    )
    full = p.on_frame(ingest_ts=now, buffered=CONFIG.max_frames, index_ready=False, now=now)
    assert full == Buffer(timer_at=None)


def test_given_index_wait_timed_out_when_frame_arrives_then_it_is_matched_as_if_ready():
    now = OPENED + CONFIG.index_wait_ms
    p = policy()
    assert p.may_match(index_ready=False, now=now)
    assert p.on_frame(ingest_ts=now, buffered=0, index_ready=False, now=now) == ANALYSE_NOW


# ------------------------------------------------------------------------- timers
def test_given_empty_buffer_when_timer_fires_then_nothing_happens():
    action = policy().on_timer(buffered=0, index_ready=True, end_of_input=False, now=OPENED)
    assert action is None


def test_given_buffer_and_index_when_timer_fires_then_flushed():
    action = policy().on_timer(buffered=3, index_ready=True, end_of_input=False, now=OPENED)
    assert action == FLUSH


def test_given_buffer_waiting_for_index_when_timer_fires_then_rearmed_until_wait_times_out():
    p = policy()
    now = OPENED + 100
    assert p.on_timer(buffered=3, index_ready=False, end_of_input=False, now=now) == Rearm(
        at=now + CONFIG.index_retry_ms
    )
    late = OPENED + CONFIG.index_wait_ms
    assert p.on_timer(buffered=3, index_ready=False, end_of_input=False, now=late) == FLUSH


def test_given_end_of_input_when_timer_fires_then_flushed_without_an_index():
    action = policy().on_timer(buffered=2, index_ready=False, end_of_input=True, now=OPENED)
    assert action == FLUSH


def test_given_a_backlog_when_driven_like_the_operator_then_batches_of_max_frames_then_timer():
    """10 old frames with the index there: two full batches, the rest when the timer fires."""
    p, buffer, batches, timers = policy(), [], [], []
    now = OPENED + 60_000
    for i in range(10):
        action = p.on_frame(ingest_ts=now - 10_000, buffered=len(buffer), index_ready=True, now=now)
        if isinstance(action, AnalyseNow):
            batches.append([*buffer, i])
            buffer = []
        else:
            buffer.append(i)
            if action.timer_at is not None:
                timers.append(action.timer_at)
    assert p.on_timer(buffered=len(buffer), index_ready=True, end_of_input=False, now=now) == FLUSH
    batches.append(buffer)
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert timers == [now + CONFIG.max_wait_ms] * 3


def test_given_backlog_policy_when_fresh_frames_arrive_then_batched_by_count_only():
    p = BatchPolicy.for_backlog(CONFIG)
    now = OPENED
    actions = [
        p.on_frame(ingest_ts=now, buffered=n, index_ready=True, now=now)
        for n in range(CONFIG.max_frames)
    ]
    assert [isinstance(a, AnalyseNow) for a in actions] == [False, False, False, True]


# ------------------------------------------------------------------------- config
def test_given_defaults_then_index_wait_and_retry_are_config_fields():
    batch = Settings().job.batch
    assert (batch.index_wait_ms, batch.index_retry_ms) == (3000, 100)
    assert BatchConfig.model_fields["index_wait_ms"].description
    assert BatchConfig.model_fields["index_retry_ms"].description


@pytest.mark.parametrize(
    "bad", [{"index_retry_ms": 0}, {"index_wait_ms": -1}, {"index_retry_ms": 10_001}]
)
def test_given_out_of_range_wait_when_config_loads_then_refused(bad):
    with pytest.raises(ValidationError):
        BatchConfig(**bad)


# ------------------------------------------------------------------------- gate state
class DictStore(dict):
    """Flink's MapState interface (get / put) over a dict."""

    def put(self, key: str, value: bytes) -> None:
        self[key] = value


def frame(camera: str, seq: int, x: int) -> FrameRecord:
    """A 320x240 grey scene with a bright square at ``x``."""
    img = np.full((240, 320, 3), 90, np.uint8)
    cv2.rectangle(img, (x, 80), (x + 60, 160), (240, 240, 240), -1)
    ok, jpeg = cv2.imencode(".jpg", img)
    assert ok
    ts = OPENED + seq * 100
    return FrameRecord(camera, "r", f"{camera}:{seq}", seq, ts, 320, 240, jpeg.tobytes(), ts)


def test_given_two_cameras_when_gated_through_the_store_then_each_keeps_its_own_gate():
    store, config = DictStore(), MotionConfig()
    first = [gate_stored(store, frame(cam, 0, 20), config) for cam in ("a", "b")]
    assert [d.reason for d in first if isinstance(d, GateDecision)] == ["first", "first"]
    static = gate_stored(store, frame("a", 1, 20), config)
    assert isinstance(static, GateDecision) and (static.passed, static.reason) == (
        False,
        "static",
    )
    gates = {cam: MotionGate.from_bytes(store[cam], config) for cam in ("a", "b")}
    assert (gates["a"].frames_in, gates["b"].frames_in) == (2, 1)


def test_given_a_sequence_when_gated_through_the_store_then_decisions_equal_a_live_gate():
    config = MotionConfig(keepalive_s=0.5)
    store, live = DictStore(), MotionGate(config)
    xs = [20] * 3 + [120] * 12 + [220]  # still, moved, still long enough for a keepalive
    stored, direct = [], []
    for seq, x in enumerate(xs):
        record = frame("cam", seq, x)
        stored.append(gate_stored(store, record, config))
        direct.append(gate_frame(live, record))
    assert stored == direct
    reasons = [d.reason for d in stored if isinstance(d, GateDecision)]
    assert reasons[:4] == ["first", "static", "static", "motion"]
    assert "keepalive" in reasons and reasons[-1] == "motion"


def test_given_undecodable_frame_when_gated_then_dead_letter_and_the_gate_counts_it():
    store, config = DictStore(), MotionConfig()
    good = frame("cam", 0, 20)
    gate_stored(store, good, config)
    broken = FrameRecord("cam", "r", "cam:1", 1, good.capture_ts + 100, 320, 240, b"not a jpeg")
    decision = gate_stored(store, broken, config)
    assert isinstance(decision, DeadLetter)
    assert (decision.stage, decision.camera_id, decision.frame_id) == ("gate", "cam", "cam:1")
    assert MotionGate.from_bytes(store["cam"], config).frames_in == 2


def test_given_gate_that_passed_at_time_zero_when_stored_then_the_pass_time_survives():
    gate = MotionGate(MotionConfig())
    gate.last_pass_ms = 0
    assert MotionGate.from_bytes(gate.to_bytes(), MotionConfig()).last_pass_ms == 0


def test_given_gate_state_from_an_earlier_checkpoint_when_read_then_same_gate():
    """Checkpoints and savepoints taken before the raw state format hold ``np.savez``."""
    config = MotionConfig()
    gate = MotionGate(config)
    for i in range(3):
        gate.check(frame("cam", i, 20 + 15 * i).jpeg, 1000 * i)
    legacy = io.BytesIO()
    np.savez(
        legacy,
        background=gate.background,
        counters=np.array([gate.last_pass_ms, gate.frames_in, gate.frames_out], np.int64),
    )
    for state in (legacy.getvalue(), gate.to_bytes()):
        restored = MotionGate.from_bytes(state, config)
        assert (restored.last_pass_ms, restored.frames_in, restored.frames_out) == (
            gate.last_pass_ms,
            gate.frames_in,
            gate.frames_out,
        )
        assert restored.background.dtype == np.float32
        np.testing.assert_array_equal(restored.background, gate.background)
    assert len(gate.to_bytes()) < len(legacy.getvalue())
    with pytest.raises(ValueError, match="not a motion gate state"):
        MotionGate.from_bytes(b"XXXX" + gate.to_bytes()[4:], config)


def test_given_gated_out_frame_then_its_stat_names_the_reason():
    record = frame("cam", 3, 20)
    stat = FrameStat.gated_out(record, GateDecision(False, "static", 0.0))
    assert (stat.camera_id, stat.region, stat.frame_id, stat.passed, stat.reason) == (
        "cam",
        "r",
        "cam:3",
        False,
        "static",
    )
