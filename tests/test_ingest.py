"""Ingest agent against a real Apache Kafka broker and a real video file."""

from __future__ import annotations

import threading
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest
from kafka import KafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from facerec.config import CameraConfig, Settings
from facerec.records import FrameRecord
from jobs.cameras import CameraReader, FpsCap
from jobs.ingest import IngestAgent, spool_path
from jobs.services.kafka import KafkaBroker
from jobs.services.process import free_port
from jobs.spool import Spool

pytestmark = pytest.mark.integration


def settings_for(tmp_path: Path, bootstrap: str, **ingest) -> Settings:
    ingest = {"send_timeout_s": 1.0, "retry_initial_s": 0.1, "retry_max_s": 0.5, **ingest}
    return Settings(data_dir=tmp_path, kafka={"bootstrap_servers": bootstrap}, ingest=ingest)


class Collector(threading.Thread):
    """Consume every partition of ``topic`` from the beginning, continuously, no group."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.records: list[tuple[bytes, FrameRecord]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False,
            auto_offset_reset="earliest", request_timeout_ms=3000, reconnect_backoff_max_ms=500,
            receive_message_max_bytes=64 << 20,  # fetch responses carry whole frame batches
        )
        try:
            while not self.halt.is_set() and not consumer.assignment():
                parts = consumer.partitions_for_topic(self.topic)
                if parts:
                    consumer.assign([TopicPartition(self.topic, p) for p in parts])
                    consumer.seek_to_beginning()
                else:
                    time.sleep(0.1)
            while not self.halt.is_set():
                for batch in consumer.poll(timeout_ms=200).values():
                    self.records += [(m.key, FrameRecord.decode(m.value)) for m in batch]
        finally:
            consumer.close(autocommit=False)

    def frame_ids(self) -> set[str]:
        return {r.frame_id for _, r in self.records}

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(self.frame_ids()) < n and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self) -> None:
        self.halt.set()
        self.join(timeout=10)


def assert_first_copies_in_order(records: list[tuple[bytes, FrameRecord]]) -> None:
    seen: dict[str, list[int]] = {}
    ids: set[str] = set()
    for _, r in records:
        if r.frame_id not in ids:
            ids.add(r.frame_id)
            seen.setdefault(r.camera_id, []).append(r.seq)
    for camera, seqs in seen.items():
        assert seqs == sorted(seqs), f"{camera}: first copies out of order: {seqs}"


def test_given_two_cameras_when_ingesting_video_then_every_frame_arrives_in_order(
    kafka_broker, topic_name: str, tmp_path: Path, street: Path
) -> None:
    cams = [
        CameraConfig(camera_id="door", url=str(street), region="eu", fps=120, jpeg_quality=80),
        CameraConfig(camera_id="hall", url=str(street), region="us", fps=5, jpeg_quality=60),
    ]
    settings = settings_for(tmp_path, kafka_broker.bootstrap_servers, send_timeout_s=10.0)
    agent = IngestAgent(settings, cams, topic=topic_name)
    report = agent.run(max_frames=40, drain_timeout_s=30)
    collector = Collector(kafka_broker.bootstrap_servers, topic_name)
    collector.start()
    collector.wait_for(80, timeout=30)
    collector.stop()

    assert report["door"]["sent"] == 40 and report["door"]["dropped"] == 0
    assert report["hall"]["sent"] == 40 and report["hall"]["dropped"] == 39  # 10 fps -> 5
    assert report["hall"]["read"] == 79 and report["door"]["spooled"] == 0
    by_camera: dict[str, list[FrameRecord]] = {"door": [], "hall": []}
    for key, rec in collector.records:
        assert key == {"door": b"eu", "hall": b"us"}[rec.camera_id]
        by_camera[rec.camera_id].append(rec)
    for camera, recs in by_camera.items():
        assert [r.seq for r in recs] == list(range(40)), camera
        assert len({r.frame_id for r in recs}) == 40
    hall = by_camera["hall"]
    assert [r.capture_ts - hall[0].capture_ts for r in hall[:3]] == [0, 200, 400]
    img = cv2.imdecode(np.frombuffer(by_camera["door"][7].jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (576, 768, 3) and by_camera["door"][7].width == 768
    sent = REGISTRY.get_sample_value(
        "facerec_ingest_frames_sent_total", {"camera": "door", "region": "eu"})
    assert sent is not None and sent >= 40


class GatedReader(CameraReader):
    """The real street, but reading blocks at frame ``gate_at`` until ``gate`` is set, then
    goes on at ``pace_s`` per frame: the test decides when the outage starts."""

    def __init__(self, cam: CameraConfig, *, gate_at: int, pace_s: float, **kwargs) -> None:
        super().__init__(cam, **kwargs)
        self.gate, self.gate_at, self.pace_s, self.n = threading.Event(), gate_at, pace_s, 0

    def _grab(self) -> bool:
        if self.n == self.gate_at:
            self.gate.wait(60)
        if self.n >= self.gate_at:
            time.sleep(self.pace_s)
        self.n += 1
        return super()._grab()


def test_given_broker_restart_mid_stream_when_ingesting_then_no_frame_is_missing(
    tmp_path: Path, street: Path
) -> None:
    total, before = 100, 40
    broker = KafkaBroker(tmp_path / "kafka").start()
    topic = f"t-restart-{time.time_ns()}"
    cam = CameraConfig(camera_id="gate", url=str(street), region="eu", fps=120)
    agent = IngestAgent(settings_for(tmp_path, broker.bootstrap_servers), [cam], topic=topic,
                        reader=partial(GatedReader, gate_at=before, pace_s=0.02))
    worker, sender = agent.readers["gate"], agent.senders["gate"]
    assert isinstance(worker, GatedReader)
    source = worker
    runner = threading.Thread(target=agent.run, kwargs={"max_frames": total,
                                                        "drain_timeout_s": 60})
    first = Collector(broker.bootstrap_servers, topic)
    try:
        runner.start()
        first.start()
        first.wait_for(before, timeout=30)
        # every frame read before the outage has been consumed: nothing hides in the broker
        # (a busy machine may have made the agent spool and re-send a few: duplicates only)
        assert len(first.frame_ids()) == before <= sender.stats.sent
        first.stop()
        broker.terminate()  # the outage: ports and log dir stay for the start below
        source.gate.set()  # frames 40.. now meet a dead broker
        deadline = time.monotonic() + 30
        while worker.seq < total and time.monotonic() < deadline:
            time.sleep(0.05)
        assert worker.seq == total, "the camera must keep reading while Kafka is down"
        while not sender.degraded and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sender.degraded and len(sender.spool) > 0
        spooled_during_outage = len(sender.spool)
        broker.start()  # same ports and log dir: the frames sent before the outage are kept
        second = Collector(broker.bootstrap_servers, topic)
        second.start()
        second.wait_for(total, timeout=60)
        second.stop()
        runner.join(timeout=60)
    finally:
        source.gate.set()
        agent.stop()
        broker.stop()

    # the topic after the restart holds every frame: those from before the outage too
    want = {f"gate:{worker.epoch_ms}:{s:09d}" for s in range(total)}
    missing = sorted(want - second.frame_ids())
    assert not missing, f"{len(missing)} frames lost: {missing[:5]}"
    print(f"\nbroker restart: {total} frames, {before} consumed before the stop, "
          f"{sender.stats.spooled} spooled, {len(second.records) - total} duplicates, "
          f"{len(missing)} lost")
    assert_first_copies_in_order(first.records)
    assert_first_copies_in_order(second.records)
    assert spooled_during_outage >= 1 and sender.stats.shed == 0
    assert sender.stats.spooled >= total - before - sender.cfg.max_pending
    assert len(sender.spool) == 0


def test_given_no_broker_when_spool_fills_then_oldest_shed_and_counted(
    tmp_path: Path, street: Path
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    cam = CameraConfig(camera_id="lonely", url=str(street), region="eu", fps=120,
                       jpeg_quality=70)
    settings = settings_for(tmp_path, dead, spool_max_mb=0.5)
    agent = IngestAgent(settings, [cam], topic="never")
    report = agent.run(max_frames=30, drain_timeout_s=0)["lonely"]

    assert report["sent"] == 0 and report["spooled"] == 30
    assert report["shed"] > 0 and report["shed"] + report["spool_left"] == 30
    shed_metric = REGISTRY.get_sample_value(
        "facerec_ingest_frames_shed_total", {"camera": "lonely", "region": "eu"})
    assert shed_metric == report["shed"]
    spool = Spool(spool_path(tmp_path / "spool", "lonely"), int(0.5 * 1024 * 1024))
    try:  # it survived the agent: the newest frames, in order, wait for the next run
        kept = [FrameRecord.decode(r.value).seq for r in spool.peek(100)]
        assert kept == list(range(30 - len(kept), 30)) and len(kept) == report["spool_left"]
        assert spool.nbytes <= spool.max_bytes
    finally:
        spool.close()


def test_given_spool_when_appended_acked_and_reopened_then_order_and_bounds_hold(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.sqlite"
    spool = Spool(path, max_bytes=1000)
    assert spool.append([(b"k", bytes([i]) * 100) for i in range(8)]) == 0
    assert spool.append([(b"k", bytes([i]) * 100) for i in range(8, 12)]) == 2
    assert spool.shed_total == 2 and len(spool) == 10 and spool.nbytes == 1000
    head = spool.peek(3)
    assert [r.value[0] for r in head] == [2, 3, 4]
    assert spool.ack(head[-1].seq) == 3
    spool.close()
    spool = Spool(path, max_bytes=1000)
    assert len(spool) == 7 and [r.value[0] for r in spool.peek(10)] == list(range(5, 12))
    spool.close()


@pytest.mark.parametrize(("source_fps", "cap_fps", "kept"), [(30, 10, 10), (10, 10, 10),
                                                            (30, 15, 15), (29.97, 29.97, 30)])
def test_given_fps_cap_when_frames_arrive_then_rate_is_capped(
    source_fps: float, cap_fps: float, kept: int
) -> None:
    cap = FpsCap(cap_fps)
    stamps = [round(i * 1000 / source_fps) for i in range(round(source_fps))]
    assert sum(cap.keep(ts) for ts in stamps) == pytest.approx(kept, abs=1)


def test_given_cameras_yaml_when_cli_ingest_then_report_and_metrics(
    kafka_broker, topic_name: str, tmp_path: Path, street: Path
) -> None:
    import json
    import urllib.request

    from typer.testing import CliRunner

    from jobs.cli.main import app

    cams = tmp_path / "cams.yaml"
    cams.write_text(
        f"- {{camera_id: cli-a, url: '{street}', region: eu, fps: 30, jpeg_quality: 70}}\n"
        f"- {{camera_id: cli-b, url: '{street}', region: us, fps: 5}}\n"
    )
    port = free_port()
    env = {"FACEREC_DATA_DIR": str(tmp_path), "FACEREC_KAFKA__BOOTSTRAP_SERVERS":
           kafka_broker.bootstrap_servers, "FACEREC_CONFIG": ""}
    result = CliRunner().invoke(app, [
        "ingest", "--cameras", str(cams), "--topic", topic_name, "--max-frames", "5",
        "--metrics-port", str(port), "--drain-timeout", "30"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert {k: (v["sent"], v["spool_left"]) for k, v in report.items()} == {
        "cli-a": (5, 0), "cli-b": (5, 0)}
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'facerec_ingest_frames_sent_total{camera="cli-b",region="us"} 5.0' in body
    assert "facerec_ingest_send_seconds_bucket" in body and "facerec_ingest_spool_depth" in body

    bad = CliRunner().invoke(app, ["ingest", "--cameras", str(street)], env=env)
    assert bad.exit_code == 2


def test_given_a_record_over_the_kafka_limit_when_sent_then_dropped_and_later_frames_flow(
    kafka_broker, topic_name: str, tmp_path: Path
) -> None:
    """One oversized frame must not park the camera: spooled, it would block every later
    frame behind a send that can never succeed."""
    from jobs.delivery import CameraStats, FrameSender, producer_config

    settings = settings_for(tmp_path, kafka_broker.bootstrap_servers)
    conf = producer_config(settings.kafka, settings.ingest) | {"max_request_size": 4096}
    stats = CameraStats("big", "eu")
    spool = Spool(tmp_path / "big.spool.sqlite", 1 << 20)
    sender = FrameSender(stats, topic_name, spool, conf, settings.ingest)
    try:
        sender.submit(b"eu", b"x" * 10_000)
        for i in range(3):
            sender.submit(b"eu", f"small-{i}".encode())
        assert sender.flush(30)
    finally:
        sender.close()
        spool.close()
    assert stats.dropped == 1 and stats.spooled == 0 and stats.sent == 3
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_broker.bootstrap_servers, auto_offset_reset="earliest",
        consumer_timeout_ms=10_000,
    )
    consumer.assign([TopicPartition(topic_name, 0)])
    values = [r.value for r in consumer]
    consumer.close()
    assert values == [b"small-0", b"small-1", b"small-2"]
