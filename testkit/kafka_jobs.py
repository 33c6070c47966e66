"""The recognition job on Kafka as the cluster tests drive it: a configuration with topics and
a consumer group of its own, a gallery published to the index topic, cameras through the
real ``facerec ingest``, and the accounting of frames: which frames reached the frames
topic, and which the job's frame stats and dead letters name."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from facerec.config import Settings, load_settings
from facerec.records import FrameRecord
from index_builder.snapshot import SnapshotInfo
from testkit.kafka import read_topic
from testkit.videos import CELEBRITY5_THRESHOLD

ROOT = Path(__file__).resolve().parents[1]


def topic_names(prefix: str) -> dict[str, str]:
    """The job's Kafka topics (``kafka.*_topic``) named after ``prefix``: one test's own."""
    kinds = ("frames", "events", "index", "dead_letter", "sightings")
    return {f"{t}_topic": f"{prefix}-{t}" for t in kinds}


def job_config(
    tmp: Path, bootstrap: str, prefix: str, job: dict[str, Any] | None = None, **sections: Any
) -> tuple[Settings, Path]:
    """A YAML configuration for ``facerec ingest`` and ``facerec job submit``: topics and
    groups named after ``prefix``, frame stats in ``<data>/framestats``, the job unbounded
    with a checkpoint every 2 s. Returns the settings and the file."""
    data = tmp / "data"
    topics = topic_names(prefix)
    tree = {
        "data_dir": str(data),
        "kafka": {"bootstrap_servers": bootstrap, **topics},
        "index": {"publish_kafka": True},
        "match": {"threshold": CELEBRITY5_THRESHOLD},
        "job": {
            "kafka_group_id": f"{prefix}-job",
            "checkpoint_interval_ms": 2000,
            "frame_stats_dir": str(data / "framestats"),
            "events_sink": {"transactional_id_prefix": prefix},
            **(job or {}),
        },
        **sections,
    }
    path = tmp / f"{prefix}.yaml"
    path.write_text(yaml.safe_dump(tree))
    return load_settings(path), path


def create_topics(settings: Settings, events_config: dict[str, str] | None = None) -> None:
    """The job's topics, one partition each, before the job starts: its Kafka source looks
    for the frames topic's partitions at its start and then only every
    partition.discovery.interval.ms (5 min by default), so a topic the first camera creates
    later would sit unread that long."""
    from kafka.admin import KafkaAdminClient, NewTopic

    kafka = settings.kafka
    admin = KafkaAdminClient(**kafka.client_options())
    try:
        admin.create_topics([
            NewTopic(kafka.frames_topic, 1, 1),
            NewTopic(kafka.events_topic, 1, 1, topic_configs=events_config or {}),
            NewTopic(kafka.dead_letter_topic, 1, 1),
            NewTopic(kafka.sightings_topic, 1, 1),
            NewTopic(kafka.index_topic, 1, 1),
        ])
    finally:
        admin.close()


def publish_gallery(
    settings: Settings, engine: Any, train: Path, names: list[str], per_person: int = 4
) -> SnapshotInfo:
    """A snapshot of ``names`` (their first usable photos in ``train``), published to the
    manifests dir and the index topic, as ``facerec index build`` does."""
    from index_builder.publish import IndexPublisher
    from index_builder.snapshot import write_snapshot
    from testkit.videos import gallery_from_photos

    tids, pids, vecs = gallery_from_photos(engine, train, per_person, names)
    info = write_snapshot(
        settings.snapshots_path(), tids, pids, vecs, model_id=engine.model_id, max_change_seq=0
    )
    publisher = IndexPublisher.from_settings(settings)
    try:
        publisher.publish_snapshot(info)
    finally:
        publisher.close()
    return info


# ------------------------------------------------------------------------------ ingest
def start_ingest(
    config: Path, video: Path, camera_id: str, *, loop: int = 1, realtime: bool = True
) -> subprocess.Popen[str]:
    """``facerec ingest`` of one camera (region = camera id) in a process of its own, so a
    test can break things while it streams."""
    facerec = Path(sys.executable).parent / "facerec"
    cmd = [str(facerec), "ingest", "--config", str(config), "--url", str(video),
           "--camera-id", camera_id, "--region", camera_id, "--fps", "0",
           "--loop", str(loop), "--realtime" if realtime else "--no-realtime",
           "--drain-timeout", "120"]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish_ingest(proc: subprocess.Popen[str], timeout_s: float = 300) -> dict[str, Any]:
    """Wait for the agent; its JSON report for its one camera."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired as exc:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"facerec ingest did not finish in {timeout_s} s:\n{err[-3000:]}"
        ) from exc
    assert proc.returncode == 0, f"facerec ingest failed (rc={proc.returncode}):\n{err[-3000:]}"
    (report,) = json.loads(out[out.index("{"):]).values()
    return dict(report)


# ------------------------------------------------------------------------------ accounting
def frame_ids_in_topic(bootstrap: str, topic: str) -> list[str]:
    """The frame id of every record of the frames topic, in offset order (duplicates kept)."""
    return [FrameRecord.decode(v).frame_id for v in read_topic(bootstrap, topic).values()]


def _json_lines(directory: Path, pattern: str) -> list[dict[str, Any]]:
    rows = []
    for path in sorted(directory.glob(pattern)):
        rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return rows


def frame_stats(settings: Settings) -> list[dict[str, Any]]:
    """Every line the job's frame-stats audit wrote (a replayed frame once per replay)."""
    assert settings.job.frame_stats_dir is not None
    return _json_lines(settings.job.frame_stats_dir, "framestats-*.jsonl")


def dead_letters(settings: Settings) -> list[dict[str, Any]]:
    return _json_lines(settings.dead_letters_path(), "*.jsonl")


@dataclass(frozen=True)
class Accounting:
    """What the job did with the frames of one camera."""

    produced: set[str]
    handled: list[str]
    """Frame ids in the frame stats and dead letters, once per time the job handled one."""

    @property
    def missing(self) -> set[str]:
        return self.produced - set(self.handled)

    @property
    def handled_twice(self) -> int:
        return len(self.handled) - len(set(self.handled))


def produced_frames(settings: Settings, camera_id: str) -> set[str]:
    """The frames of ``camera_id`` the frames topic holds."""
    kafka = settings.kafka
    return {f for f in frame_ids_in_topic(kafka.bootstrap_servers, kafka.frames_topic)
            if f.startswith(f"{camera_id}:")}


def handled_frames(settings: Settings, camera_id: str) -> list[str]:
    """Frame ids of ``camera_id`` in the frame stats (gated out or analysed) and the dead
    letters (refused), once per time the job handled the frame."""
    prefix = f"{camera_id}:"
    handled = [s["frame_id"] for s in frame_stats(settings) if s["frame_id"].startswith(prefix)]
    return handled + [d["frame_id"] for d in dead_letters(settings)
                      if (d.get("frame_id") or "").startswith(prefix)]


def wait_for(done: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(1)


def wait_accounted(settings: Settings, camera_id: str, timeout_s: float = 240) -> Accounting:
    """Once the camera's ingest has ended: wait until the job handled every frame of it
    that the frames topic holds."""
    produced = produced_frames(settings, camera_id)
    assert produced, f"no frame of {camera_id} in {settings.kafka.frames_topic}"
    handled: list[str] = []

    def done() -> bool:
        handled[:] = handled_frames(settings, camera_id)
        return produced <= set(handled)

    try:
        wait_for(done, timeout_s, f"the job to handle every frame of {camera_id}")
    except AssertionError as exc:
        missing = sorted(produced - set(handled))
        raise AssertionError(f"{exc}: {len(missing)} not handled, first {missing[:5]}") from exc
    return Accounting(produced, list(handled))


# ------------------------------------------------------------------------------ events
def topic_events(
    settings: Settings, camera_id: str, *, committed: bool = True
) -> list[dict[str, Any]]:
    """Events of ``camera_id`` in the events topic, every copy (``committed``: as a
    read_committed consumer sees them; else aborted transactions' records too)."""
    records = read_topic(settings.kafka.bootstrap_servers, settings.kafka.events_topic,
                         committed=committed).values()
    return [e for e in map(json.loads, records) if e["camera_id"] == camera_id]


def stored_event_ids(settings: Settings, camera_id: str) -> list[str]:
    """Event ids of ``camera_id`` in the event store (one per row)."""
    from facerec.eventstore import open_event_store
    from facerec.eventstore.base import MAX_LIMIT

    ids: list[str] = []
    cursor = None
    with open_event_store(settings) as store:
        while True:
            page, cursor = store.search(camera_id=camera_id, limit=MAX_LIMIT, cursor=cursor)
            ids += [e.event_id for e in page]
            if cursor is None:
                return ids
