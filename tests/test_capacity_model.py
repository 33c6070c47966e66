"""The scaling bench's arithmetic (bench/capacity.py, bench/cluster_probe.py): the capacity
model the README's cameras-per-core figures come from, and which recognize subtask Flink
sends a region to (checked against Flink's own classes in a JVM)."""

from __future__ import annotations

from collections import Counter

import pytest

from bench.capacity import cameras_per_core, check, frame_cost_ms
from bench.cluster_probe import MAX_PARALLELISM, balanced_template, subtask_of

COSTS = {"base_ms": 2.0, "pass_share": 0.5, "faces_embedded": 1.5, "detector_ms": 40.0}


def test_given_stage_costs_then_frame_cost_and_cameras_per_core_follow_the_model():
    # k * (g + p * (D + n * E)) = 1.5 * (2 + 0.5 * (40 + 1.5 * 20)) = 55.5 ms
    assert frame_cost_ms(**COSTS, embedder_ms=20.0, overhead=1.5) == pytest.approx(55.5)
    assert cameras_per_core(5.0, **COSTS, embedder_ms=20.0, overhead=1.5) == pytest.approx(
        1000 / (5 * 55.5)
    )


def _run(taskmanagers: int, cpu_ms_per_frame: float, cores: float, fps: float) -> dict:
    return {
        "taskmanagers": taskmanagers,
        "sustained": {
            "frames_per_s": fps,
            "cpu": {
                "cpu_ms_per_frame": {"taskmanagers_total": cpu_ms_per_frame},
                "cores_busy": {"taskmanagers_total": cores},
            },
        },
    }


def test_given_two_cluster_runs_then_the_first_runs_k_predicts_the_second():
    """Stages cost 37 ms at k = 1 (2 + 0.5 * (40 + 1.5 * 20)); the first run spends twice
    that per frame (k 2), so a second run given twice the cores is predicted at twice the
    frames/s, and its measured cost per frame is compared with that k."""
    result = {
        "stage_costs": {
            "decode_gate_ms_per_frame": 2.0,
            "detector_ms_per_frame": 40.0,
            "embedder_batch1": {"ms_per_face": 20.0},
            "in_process": {
                "pass_share": 0.5,
                "embedded_per_analysed_frame": 1.5,
                "ms_per_frame": 37.0 * 1.25,
            },
        },
        "runs": {"tm1": _run(1, 74.0, 0.74, 10.0), "tm2": _run(2, 74.0 * 1.1, 1.48, 18.0)},
    }
    out = check(result, fps=5.0)
    assert out["stages_ms_per_frame_k1"] == pytest.approx(37.0)
    assert out["k_in_process"] == pytest.approx(1.25)
    assert out["tm1"]["k_cluster"] == pytest.approx(2.0)
    assert out["tm2"]["k_cluster"] == pytest.approx(2.2)
    assert out["tm1"]["frames_per_s_predicted_for_those_cores"] == pytest.approx(10.0)
    assert out["tm2"]["frames_per_s_predicted_for_those_cores"] == pytest.approx(20.0)
    assert out["tm2"]["cameras_per_core_predicted_from_first_run"] == pytest.approx(
        1000 / (5 * 74.0), abs=0.01
    )
    assert out["frames_per_s_tm2_over_tm1"] == pytest.approx(1.8)
    assert out["cores_busy_tm2_over_tm1"] == pytest.approx(2.0)


@pytest.mark.parametrize(("cameras", "parallelism"), [(4, 2), (8, 2), (6, 3), (16, 4)])
def test_given_cameras_then_the_balanced_region_template_gives_each_subtask_as_many(
    cameras, parallelism
):
    names = [f"cam{i + 1}" for i in range(cameras)]
    template = balanced_template(names, parallelism)
    load = Counter(subtask_of(template.format(camera=c), parallelism) for c in names)
    assert load == dict.fromkeys(range(parallelism), cameras // parallelism), template


@pytest.mark.flink
def test_given_region_keys_then_subtask_of_agrees_with_flinks_key_group_assignment():
    """PyFlink keys ``key_by`` by ``Row.of(key)``; Flink assigns the operator index from
    that Row's hashCode through KeyGroupRangeAssignment."""
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    jvm = gateway.jvm
    assign = jvm.org.apache.flink.runtime.state.KeyGroupRangeAssignment
    keys = [f"region-{i}" for i in range(40)] + ["cam1", "lobby", "gate-ü", ""]
    for parallelism in (2, 3, 7):
        for key in keys:
            fields = gateway.new_array(jvm.java.lang.Object, 1)
            fields[0] = key
            row = jvm.org.apache.flink.types.Row.of(fields)
            expected = assign.assignKeyToParallelOperator(row, MAX_PARALLELISM, parallelism)
            assert subtask_of(key, parallelism) == expected, (key, parallelism)
