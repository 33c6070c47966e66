"""The job's Flink graph, as submitted: each of the job's operators runs exactly once.

PyFlink chains Python operators before submitting. When it cannot rewire a consumer of an
operator it chained, the original keeps running next to the chained copy: an event is then
stored twice and a dead letter written or collected twice. These tests read the graph
without running it (a JVM, no cluster), so they fail the same way on every run."""

from __future__ import annotations

import inspect
import json
from collections import Counter

import pytest

from facerec.config import Settings

pytestmark = pytest.mark.flink

OURS = (
    "read-cameras",
    "decode",
    "recognize",
    "event-store",
    "dead-letter-file-decode",
    "dead-letter-file-recognize",
    "frame-stats",
)


def _operators(plan_json: str) -> Counter:
    """How many graph nodes run each named operator (a chained node lists all of its own)."""
    nodes = json.loads(plan_json)["nodes"]
    return Counter(part.strip() for n in nodes for part in n["contents"].split(","))


def _job(tmp_path, parallelism: int):
    from jobs.recognition import build_job

    # a live camera URL: the graph is built without opening it
    settings = Settings(data_dir=tmp_path / "data", job={"parallelism": parallelism})
    return build_job(settings, "video:rtsp://camera.invalid/lobby")


@pytest.mark.parametrize("parallelism", [1, 2])
def test_given_collecting_client_when_job_is_built_then_each_operator_runs_once(
    tmp_path, parallelism
):
    from pyflink.datastream import DataStream
    from pyflink.java_gateway import get_gateway

    from jobs.recognition import tagged_outputs

    # execute_and_collect (PyFlink 2.3) prepares the graph with these two steps, then adds
    # the collect sink; if PyFlink changes that, this test must follow
    steps = ("configPythonOperator", "_apply_chaining_optimization")
    source = inspect.getsource(DataStream.execute_and_collect)
    assert all(step in source for step in steps), source
    env, streams = _job(tmp_path, parallelism)
    collected = tagged_outputs(streams)
    get_gateway().jvm.org.apache.flink.python.util.PythonConfigUtil.configPythonOperator(
        env._j_stream_execution_environment
    )
    collected._apply_chaining_optimization()
    collected._j_data_stream.collectAsync()
    runs = _operators(env._j_stream_execution_environment.getExecutionPlan())
    assert {name: runs[name] for name in OURS} == dict.fromkeys(OURS, 1), runs


def test_given_cluster_submission_when_job_is_built_then_each_operator_runs_once(tmp_path):
    from jobs import flink_sources as fs

    env, streams = _job(tmp_path, 2)
    # as jobs.recognition.main ends the streams before env.execute
    for stream in (streams.events, *streams.dead_letters, streams.frame_stats):
        fs.discard(stream)
    runs = _operators(env.get_execution_plan())
    assert {name: runs[name] for name in OURS} == dict.fromkeys(OURS, 1), runs
