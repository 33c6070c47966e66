"""The job's Flink graph, as submitted: each of the job's operators runs exactly once.

PyFlink chains Python operators before submitting. When it cannot rewire a consumer of an
operator it chained, the original keeps running next to the chained copy: an event is then
stored twice and a dead letter written or collected twice. These tests read the graph
without running it (a JVM, no cluster), so they fail the same way on every run."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from facerec.config import Settings

pytestmark = pytest.mark.flink

OURS = (
    "decode",
    "recognize",
    "event-store",
    "dead-letter-file-decode",
    "dead-letter-file-recognize",
    "camera-status",
    "sighting-store",
)


def _operators(plan_json: str) -> Counter:
    """How many graph nodes run each named operator (a chained node lists all of its own)."""
    nodes = json.loads(plan_json)["nodes"]
    return Counter(part.strip() for n in nodes for part in n["contents"].split(","))


VIDEO = "video:rtsp://camera.invalid/lobby"
"""A live camera URL: the graph is built without opening it."""
SOURCE_SPECIFIC = {
    VIDEO: ("read-cameras",),
    "kafka": ("kafka-events: Writer", "kafka-dead-letters: Writer", "kafka-sightings: Writer"),
}
"""Operators of one source only: the cameras the job reads itself, or the Kafka sinks (which
PyFlink's own execute_and_collect would leave out)."""


def _job(tmp_path, parallelism: int, source: str = VIDEO):
    from jobs.recognition import build_job

    settings = Settings(data_dir=tmp_path / "data", job={"parallelism": parallelism})
    return build_job(settings, source)


@pytest.mark.parametrize(
    ("parallelism", "source"), [(1, VIDEO), (2, VIDEO), (2, "kafka")], ids=["p1", "p2", "kafka"]
)
def test_given_collecting_client_when_job_is_built_then_each_operator_runs_once(
    tmp_path, parallelism, source
):
    from jobs.recognition import chain_for_collect, tagged_outputs

    # as jobs.recognition.collect prepares the graph, before it adds the collect sink
    env, streams = _job(tmp_path, parallelism, source)
    collected = tagged_outputs(streams)
    chain_for_collect(env, collected)
    collected._j_data_stream.collectAsync()
    runs = _operators(env._j_stream_execution_environment.getExecutionPlan())
    ours = (*SOURCE_SPECIFIC[source], *OURS)
    assert {name: runs[name] for name in ours} == dict.fromkeys(ours, 1), runs


@pytest.mark.parametrize("source", [VIDEO, "kafka"], ids=["video", "kafka"])
def test_given_cluster_submission_when_job_is_built_then_each_operator_runs_once(
    tmp_path, source
):
    from jobs import flink_sources as fs

    env, streams = _job(tmp_path, 2, source)
    # as jobs.recognition.main ends the streams before env.execute
    for stream in streams.outputs():
        fs.discard(stream)
    runs = _operators(env.get_execution_plan())
    ours = (*SOURCE_SPECIFIC[source], *OURS)
    assert {name: runs[name] for name in ours} == dict.fromkeys(ours, 1), runs


def _bundle(env) -> tuple[str, str]:
    config = env._j_stream_execution_environment.getConfiguration()
    return (
        config.getString("python.fn-execution.bundle.size", None),
        config.getString("python.fn-execution.bundle.time", None),
    )


@pytest.mark.parametrize(
    ("source", "job", "bundle"),
    [
        (VIDEO, {}, ("16", "15")),  # a camera
        ("file", {"video": {"realtime": True}}, ("16", "15")),  # a file paced to its rate
        ("file", {"video": {"realtime": False}}, ("64", "50")),  # read as fast as it decodes
        ("kafka", {}, ("16", "15")),
        ("kafka", {"kafka_bounded": True}, ("64", "50")),  # an audit, a backlog
    ],
    ids=["camera", "paced-file", "unpaced-file", "kafka", "kafka-bounded"],
)
def test_given_an_input_nobody_waits_on_then_the_job_runs_in_backlog_bundles(
    tmp_path, street, source, job, bundle
):
    """Live input keeps the latency bundles (job.bundle_size / bundle_time_ms); a backlog
    takes job.backlog_bundle_size / backlog_bundle_time_ms."""
    from jobs.recognition import build_job

    settings = Settings(data_dir=tmp_path / "data", job=job)
    env, _ = build_job(settings, f"video:{street}" if source == "file" else source)
    assert _bundle(env) == bundle
