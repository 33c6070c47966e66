"""The job on Kafka through failures, on the standalone cluster the session shares
(`flink_cluster`) and the session's Apache Kafka broker: a TaskManager killed mid-stream, the
broker restarted mid-stream, and exactly-once events across a TaskManager kill.

Cameras stream through the real `facerec ingest` while things break. Every frame the frames
topic holds must come out of the job gated out, analysed or dead-lettered, as its frame
stats (job.frame_stats_dir) and dead letters say. Each test prints its figures as one JSON
line (`pytest -s`): duplicates, restart times."""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from facerec.config import Settings
from testkit.flink_cluster import StandaloneCluster, alive, end_processes
from testkit.kafka_jobs import (
    create_topics,
    finish_ingest,
    frame_stats,
    handled_frames,
    job_config,
    publish_gallery,
    start_ingest,
    stored_event_ids,
    topic_events,
    wait_accounted,
    wait_for,
)

pytestmark = [pytest.mark.flink, pytest.mark.integration, pytest.mark.data]
ENROLLED = ["ben_afflek", "madonna", "mindy_kaling"]
LOOPS = 5
"""Plays of the 3 s walkthrough per streaming camera: 15 s at 10 fps, so a camera still
streams when the broker is back or a TaskManager has been replaced."""


def walkthrough(tmp: Path, celebrity5: Path) -> Path:
    """3 s at 10 fps: each enrolled person walks in, then stands still."""
    from jobs.walkthrough import Segment, write_face_video
    from udfs.evaluation import list_identities

    val = list_identities(celebrity5 / "val")
    video = tmp / "walkthrough.avi"
    write_face_video(video, [Segment(n, val[n][0], 6, 4) for n in ENROLLED], fps=10)
    return video


@dataclass(frozen=True)
class RunningJob:
    settings: Settings
    config: Path
    job_id: str
    video: Path


def start_job(
    cluster: StandaloneCluster, bootstrap: str, tmp: Path, engine, celebrity5: Path,
    *options: str, job: dict[str, Any] | None = None,
) -> RunningJob:
    """Submit the job (unbounded) with a gallery on its index topic; return once it has
    analysed a first camera's frames, so the tests' streams meet a warm job."""
    prefix = f"fail-{uuid.uuid4().hex[:8]}"
    # the ingest agent spools after 2 s without an acknowledgement
    settings, config = job_config(tmp, bootstrap, prefix, job, ingest={"send_timeout_s": 2})
    create_topics(settings)
    publish_gallery(settings, engine, celebrity5 / "train", ENROLLED)
    video = walkthrough(tmp, celebrity5)
    job_id = cluster.submit(config, *options)
    try:
        finish_ingest(start_ingest(config, video, "warm-up", realtime=False))
        wait_accounted(settings, "warm-up")
    except BaseException:
        cluster.cancel(job_id)
        raise
    return RunningJob(settings, config, job_id, video)


def wait_handled(settings: Settings, camera: str, n: int) -> None:
    wait_for(lambda: len(set(handled_frames(settings, camera))) >= n, 120,
             f"{n} frames of {camera} handled")


def kill_taskmanager_mid_stream(
    cluster: StandaloneCluster, job: RunningJob, camera: str
) -> tuple[dict[str, Any], dict[int, str]]:
    """While ``camera`` streams: wait for a checkpoint that covers some of its frames, SIGKILL
    the TaskManager, start another and wait until the job runs again. Returns the figures
    and the killed TaskManager's Python worker processes (PID -> start time)."""
    wait_handled(job.settings, camera, 20)
    done = cluster.completed_checkpoints(job.job_id)
    wait_for(lambda: cluster.completed_checkpoints(job.job_id) > done, 60, "a checkpoint")
    (pid,) = cluster.taskmanager_pids()
    killed_at = time.time()
    workers = cluster.kill_taskmanager(pid)
    cluster.start_taskmanager()
    registered_at = time.time()
    running_at = cluster.wait_running(job.job_id)
    restored = cluster.checkpoints(job.job_id)["latest"]["restored"]
    assert restored and not restored["is_savepoint"], "the job restarts from a checkpoint"
    return {
        "restored_checkpoint": restored["id"],
        "taskmanager_registered_s": round(registered_at - killed_at, 1),
        "tasks_running_again_s": round(running_at - killed_at, 1),
        "killed_at_ms": int(killed_at * 1000),
    }, workers


def end_orphans(workers: dict[int, str], figures: dict[str, Any]) -> None:
    """Count the killed TaskManager's Python workers that still run, then end them: with
    their JVM gone nothing else will."""
    orphans = {w: t for w, t in workers.items() if alive(w, t)}
    figures["orphan_worker_processes"] = f"{len(orphans)} of {len(workers)}"
    end_processes(orphans)


def first_handled_after(settings: Settings, camera: str, at_ms: int) -> float:
    """Seconds from ``at_ms`` to the first frame of ``camera`` the job finished after it."""
    done = [s["done_ms"] for s in frame_stats(settings) if s["camera_id"] == camera]
    return round((min(d for d in done if d > at_ms) - at_ms) / 1000, 1)


# ---------------------------------------------------------------------------- exactly-once
def test_given_exactly_once_sink_when_taskmanager_killed_then_read_committed_sees_each_event_once(
    flink_cluster, kafka_broker, tmp_path, engine, celebrity5
):
    """Events in Kafka transactions committed by checkpoints: the transactions open when the
    TaskManager dies are aborted, the restored job writes those events again, and a
    read_committed consumer sees every event once and none lost (the event store, upserted
    at least once, holds the same set)."""
    job = start_job(flink_cluster, kafka_broker.bootstrap_servers, tmp_path, engine,
                    celebrity5, "--delivery", "exactly-once")
    sink = job.settings.job.events_sink
    # the broker refuses a transaction timeout above its own maximum, and aborts a
    # transaction older than the timeout: it must outlast a checkpoint plus the restart
    assert sink.transaction_timeout_ms <= kafka_broker.transaction_max_timeout_ms
    camera = "eo-1"
    try:
        ingest = start_ingest(job.config, job.video, camera, loop=LOOPS)
        figures, workers = kill_taskmanager_mid_stream(flink_cluster, job, camera)
        finish_ingest(ingest)
        wait_accounted(job.settings, camera)
        # the last events are committed by the next checkpoint
        done = flink_cluster.completed_checkpoints(job.job_id)
        wait_for(lambda: flink_cluster.completed_checkpoints(job.job_id) > done + 1, 60,
                 "two more checkpoints")
    finally:
        flink_cluster.cancel(job.job_id)
    committed = [e["event_id"] for e in topic_events(job.settings, camera)]
    everything = [e["event_id"] for e in topic_events(job.settings, camera, committed=False)]
    stored = stored_event_ids(job.settings, camera)
    assert committed and len(committed) == len(set(committed)), Counter(committed).most_common(3)
    assert set(committed) == set(stored)
    figures |= {"events": len(committed), "aborted_copies": len(everything) - len(committed)}
    end_orphans(workers, figures)
    print(json.dumps({"exactly_once_taskmanager_kill": figures}))


# ---------------------------------------------------------------------------- at least once
@pytest.fixture(scope="module")
def live_job(flink_cluster, kafka_broker, tmp_path_factory, engine, celebrity5) -> Iterator[
    RunningJob
]:
    """One at-least-once job on its own topics, running until the module's tests are done;
    each test streams a camera of its own into it."""
    job = start_job(flink_cluster, kafka_broker.bootstrap_servers,
                    tmp_path_factory.mktemp("live"), engine, celebrity5)
    yield job
    flink_cluster.cancel(job.job_id)


def test_given_live_job_when_broker_restarts_mid_stream_then_no_frame_is_lost(
    live_job, kafka_broker, flink_cluster
):
    """The broker stops and starts again on its ports with its log dir while a camera
    streams: the ingest agent spools what the broker cannot take and re-sends it in order,
    the job's consumer and producers reconnect, and every frame comes out of the job."""
    camera = "broker-1"
    ingest = start_ingest(live_job.config, live_job.video, camera, loop=LOOPS)
    wait_handled(live_job.settings, camera, 10)
    failures = flink_cluster.failures(live_job.job_id)
    down_at = time.time()
    kafka_broker.restart()
    outage_s = time.time() - down_at
    report = finish_ingest(ingest)
    assert report["spooled"] > 0, "the agent spooled while the broker was away"
    assert report["spool_left"] == 0 and report["sent"] >= report["seq"]
    accounted = wait_accounted(live_job.settings, camera)
    assert len(accounted.produced) == report["seq"], "every frame the camera gave is there"
    assert flink_cluster.job(live_job.job_id)["state"] == "RUNNING"
    stored = stored_event_ids(live_job.settings, camera)
    assert stored and len(stored) == len(set(stored))
    in_topic = [e["event_id"] for e in topic_events(live_job.settings, camera)]
    assert set(in_topic) == set(stored)
    print(json.dumps({"broker_restart": {
        "outage_s": round(outage_s, 1), "frames": report["seq"], "spooled": report["spooled"],
        "sent_twice": report["sent"] - report["seq"], "handled_twice": accounted.handled_twice,
        "events_topic_duplicates": len(in_topic) - len(set(in_topic)),
        "job_failures": flink_cluster.failures(live_job.job_id) - failures,
    }}))


def test_given_live_job_when_taskmanager_killed_then_every_frame_is_accounted_for(
    live_job, kafka_broker, flink_cluster
):
    """SIGKILL the TaskManager mid-stream, start another: the job restarts from its last
    checkpoint and replays the frames read since. Every frame is gated out, analysed or
    dead-lettered; the event store holds each event once; the events topic, written at
    least once, holds the replayed events twice, and the test counts them."""
    camera = "tm-1"
    ingest = start_ingest(live_job.config, live_job.video, camera, loop=LOOPS)
    figures, workers = kill_taskmanager_mid_stream(flink_cluster, live_job, camera)
    report = finish_ingest(ingest)
    accounted = wait_accounted(live_job.settings, camera)
    assert len(accounted.produced) == report["seq"]
    stored = stored_event_ids(live_job.settings, camera)
    assert stored and len(stored) == len(set(stored)), "the event store holds each event once"
    in_topic = [e["event_id"] for e in topic_events(live_job.settings, camera)]
    assert set(in_topic) == set(stored), "no event lost on its way to the topic"
    figures |= {
        "frames": report["seq"],
        "frames_handled_twice": accounted.handled_twice,
        "events": len(stored),
        "events_topic_duplicates": len(in_topic) - len(set(in_topic)),
        "first_frame_after_kill_s": first_handled_after(
            live_job.settings, camera, figures["killed_at_ms"]),
    }
    end_orphans(workers, figures)
    print(json.dumps({"at_least_once_taskmanager_kill": figures}))
