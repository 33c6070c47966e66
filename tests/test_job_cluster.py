"""The job on a real standalone Flink cluster started from the apache-flink wheel's
distribution (start-cluster.sh with flink-conf/; the session's `flink_cluster`): submitted
with `facerec job submit` from a video, and from Kafka, stopped with a savepoint and resumed.
The failure tests (tests/test_job_failures.py) share the cluster. (That a video job's
camera positions survive a savepoint is tested on the MiniCluster,
tests/test_job_minicluster.py.)"""

from __future__ import annotations

import subprocess
import uuid
from collections import Counter
from pathlib import Path

import pytest
import yaml

from jobs.stack.lag import frames_offsets
from testkit.kafka_jobs import (
    create_topics,
    finish_ingest,
    handled_frames,
    job_config,
    publish_gallery,
    start_ingest,
    stored_event_ids,
    topic_events,
    wait_accounted,
    wait_for,
)
from testkit.videos import CELEBRITY5_THRESHOLD

pytestmark = [pytest.mark.flink, pytest.mark.integration, pytest.mark.data]
ROOT = Path(__file__).resolve().parents[1]


def _world(tmp_path: Path, engine, celebrity5: Path, names: list[str]):
    """A published snapshot of ``names`` (celebrity5 train) in ``tmp_path/data`` and a
    10 fps video of them walking in (val photos). Returns (data dir, video, snapshot)."""
    from index_builder.publish import IndexPublisher
    from index_builder.snapshot import write_snapshot
    from jobs.walkthrough import Segment, write_face_video
    from testkit.videos import gallery_from_photos
    from udfs.evaluation import list_identities

    data = tmp_path / "data"
    val = list_identities(celebrity5 / "val")
    tids, pids, vecs = gallery_from_photos(engine, celebrity5 / "train", 4, names, skip=3)
    info = write_snapshot(
        data / "snapshots", tids, pids, vecs, model_id=engine.model_id, max_change_seq=0
    )
    IndexPublisher(data / "manifests").publish_snapshot(info)
    video = tmp_path / "people.avi"
    write_face_video(video, [Segment(n, val[n][0], 6, 4) for n in names], fps=10)
    return data, video, info


def test_given_standalone_cluster_when_job_submitted_then_events_stored(
    flink_cluster, tmp_path, engine, celebrity5
):
    from facerec.config import Settings
    from facerec.eventstore import open_event_store
    from jobs.submit import submit_command

    names = ["ben_afflek", "madonna"]
    data, video, _ = _world(tmp_path, engine, celebrity5, names)
    config = tmp_path / "facerec.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data_dir": str(data),
                "match": {"threshold": CELEBRITY5_THRESHOLD},
                "job": {"parallelism": 2, "video": {"realtime": False, "region": "gate-1"}},
            }
        )
    )

    cmd = submit_command(f"video:{video}", flink_cluster.rest, config, None, detached=False)
    result = subprocess.run(
        cmd, env=flink_cluster.env, capture_output=True, text=True, timeout=600, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    jobs = flink_cluster.get("/jobs/overview")["jobs"]
    assert [j["state"] for j in jobs if j["jid"] in result.stdout] == ["FINISHED"]
    with open_event_store(Settings(data_dir=data)) as store:
        events, _ = store.search(limit=500)
    assert events, "the cluster job stored no event"
    assert {e.identity for e in events} == set(names)
    assert {e.region for e in events} == {"gate-1"}


# ------------------------------------------------------------------------ on Kafka
ENROLLED = ("ben_afflek", "madonna")
STRANGER = "jerry_seinfeld"
"""Shown to the camera, never enrolled: must come out as unknown."""


def walkthrough(tmp_path: Path, celebrity5: Path, shown: list[str]) -> tuple[Path, list]:
    """A 10 fps video of ``shown`` walking in (celebrity5 val photos) and, per frame, who is
    on screen."""
    from jobs.walkthrough import Segment, write_face_video
    from udfs.evaluation import list_identities

    val = list_identities(celebrity5 / "val")
    video = tmp_path / "walkthrough.avi"
    truth = write_face_video(video, [Segment(n, val[n][0], 6, 4) for n in shown], fps=10)
    return video, truth


def _seq(event: dict) -> int:
    return int(event["frame_id"].rsplit(":", 1)[1])


def test_given_kafka_frames_when_submitted_stopped_and_resumed_then_each_frame_handled_once(
    flink_cluster, kafka_broker, tmp_path, engine, celebrity5
):
    """`facerec ingest` -> Kafka -> `facerec job submit --source kafka` on the cluster (the
    connector jar travels with the job) -> the events topic and the event store. Then stop
    with a savepoint, ingest more while the job is down, and resume with --from-savepoint:
    the job goes on from the offsets it committed, so no frame is handled twice and none is
    skipped, and it matches with the snapshot in its state (the index topic's one message
    lies before the offset it resumes from)."""
    camera = "door-1"
    prefix = f"cluster-{uuid.uuid4().hex[:8]}"
    settings, config = job_config(tmp_path, kafka_broker.bootstrap_servers, prefix)
    create_topics(settings)
    snapshot = publish_gallery(settings, engine, celebrity5 / "train", list(ENROLLED))
    video, truth = walkthrough(tmp_path, celebrity5, [ENROLLED[0], STRANGER, ENROLLED[1]])

    before = finish_ingest(start_ingest(config, video, camera, realtime=False))
    assert before["sent"] == len(truth) and before["spool_left"] == 0
    job_id = flink_cluster.submit(config)
    try:
        wait_accounted(settings, camera)
        # Checkpoints commit the offsets read to the group; on an idle topic the source's
        # consumer sends the commit only when its poll returns (up to 10 s later)
        wait_for(lambda: frames_offsets(settings)[0] == {0: len(truth)}, 60,
                 "the group's committed offsets to reach the end of the topic")
    finally:
        savepoint = flink_cluster.stop_with_savepoint(job_id, tmp_path / "savepoints")

    events = topic_events(settings, camera)
    seen = Counter((truth[_seq(e)][0], e["identity"]) for e in events)
    for person in ENROLLED:
        on_screen = sum(n for (who, _), n in seen.items() if who == person)
        assert on_screen and seen[(person, person)] / on_screen >= 0.9, seen
    assert {identity for (who, identity) in seen if who == STRANGER} == {"unknown"}, seen
    assert sorted(stored_event_ids(settings, camera)) == sorted(e["event_id"] for e in events)

    # the camera goes on while the job is down (a new ingest session: new frame ids)
    after = finish_ingest(start_ingest(config, video, camera, realtime=False))
    assert after["sent"] == len(truth)
    job_id = flink_cluster.submit(config, "--from-savepoint", savepoint)
    try:
        # a job that read the topic from its start again would handle the first frames
        # again before the new ones: once these are handled, so would those be
        accounted = wait_accounted(settings, camera)
    finally:
        flink_cluster.cancel(job_id)
    handled = handled_frames(settings, camera)
    assert len(accounted.produced) == 2 * len(truth)
    assert sorted(handled) == sorted(accounted.produced), "each frame handled exactly once"
    resumed = topic_events(settings, camera)[len(events):]
    ids = [e["event_id"] for e in events + resumed]
    assert resumed and len(ids) == len(set(ids))
    assert set(ids) == set(stored_event_ids(settings, camera))
    assert {e["snapshot_id"] for e in resumed} == {snapshot.manifest["snapshot_id"]}
    assert {e["identity"] for e in resumed} == {*ENROLLED, "unknown"}
