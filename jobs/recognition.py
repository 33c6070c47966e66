"""The recognition job (PyFlink DataStream).

    frames --decode--> key_by(region) --connect(broadcast index)-->
        gate + micro-batch + detect + embed + match --> events -> event store (idempotent)
                                                               -> Kafka events topic
    dead letters (side outputs) -> JSON lines / Kafka dead-letter topic

Run it embedded (``facerec job run --source video:PATH``) or submit this file to a
cluster (``facerec job submit`` = ``flink run -py jobs/recognition.py ...``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from pyflink.common import Configuration, Types
from pyflink.datastream import CheckpointingMode, DataStream, StreamExecutionEnvironment
from pyflink.datastream.data_stream import CloseableIterator

from facerec.config import Settings, load_settings
from facerec.records import dead_letter_within
from jobs import flink_sources as fs
from jobs.cameras import CameraPlan
from jobs.sources import parse_video_source
from udfs.flink_functions import (
    DEAD_LETTERS,
    FRAME_STATS,
    INDEX_STATE,
    SIGHTINGS,
    AppendJsonLines,
    DecodeFrames,
    RecognizeFrames,
    StoreCameraStatus,
    StoreEvents,
    StoreSightings,
)

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
RECOGNIZE_SLOTS = "recognize"
COLLECTED_MAX_BYTES = 1 << 20
"""Largest dead letter a collecting client gets whole (collect-sink.batch-size.max: 2 MiB)."""
SLOT_GROUPS = 2  # default (sources, decode, sinks), recognize


@dataclass
class JobStreams:
    events: DataStream  # RecognitionEvent JSON
    dead_letters: list[DataStream]  # DeadLetter JSON, one stream per producing operator
    frame_stats: DataStream  # FrameStat JSON (per frame: gated out / analysed)
    sightings: DataStream  # Sighting JSON, each publication (open, better, closed)

    def outputs(self) -> list[DataStream]:
        """Every stream: a job run without a collecting client ends each with a sink
        (``flink_sources.discard``), or Flink leaves out the operators that feed it."""
        return [self.events, *self.dead_letters, self.frame_stats, self.sightings]


def python_worker_executable() -> str:
    """The job's Python workers: the ``facerec-flink-worker`` entry point installed beside
    this interpreter (udfs.flink_functions.python_worker_main), else the interpreter."""
    worker = Path(sys.executable).with_name("facerec-flink-worker")
    return str(worker) if os.access(worker, os.X_OK) else sys.executable


def create_env(
    settings: Settings, parallelism: int | None = None, live: bool = True
) -> StreamExecutionEnvironment:
    """``live``: someone waits on the input's latency (cameras, paced files, an unbounded
    Kafka read); otherwise the job works through a backlog, in longer bundles."""
    job = settings.job
    # On a local MiniCluster PyFlink otherwise runs every Python operator inside this client
    # process ("loopback"): one GIL for all of them, and TensorFlow next to py4j. Separate
    # worker processes, as on a cluster, use every core.
    os.environ.setdefault("_python_worker_execution_mode", "process")
    config = Configuration()
    config.set_string("python.execution-mode", "process")  # TensorFlow hangs in thread mode
    size, time_ms = (
        (job.bundle_size, job.bundle_time_ms)
        if live
        else (job.backlog_bundle_size, job.backlog_bundle_time_ms)
    )
    config.set_string("python.fn-execution.bundle.size", str(size))
    config.set_string("python.fn-execution.bundle.time", str(time_ms))
    config.set_string("python.executable", job.python_executable or python_worker_executable())
    config.set_string("python.client.executable", sys.executable)
    config.set_string("python.operator-chaining.enabled", "true")
    # a local MiniCluster needs a slot per parallel instance of each slot-sharing group
    config.set_string(
        "taskmanager.numberOfTaskSlots", str(SLOT_GROUPS * (parallelism or job.parallelism))
    )
    # Barriers overtake buffered data: the video sources' tick streams queue ahead of a
    # paced reader, and an aligned barrier would wait behind them for minutes.
    config.set_string("execution.checkpointing.unaligned.enabled", "true")
    if job.savepoint_path:
        config.set_string("execution.savepoint.path", job.savepoint_path)
    for key, value in job.flink_options.items():
        config.set_string(key, value)
    env = StreamExecutionEnvironment.get_execution_environment(config)
    env.set_parallelism(parallelism or job.parallelism)
    env.set_buffer_timeout(job.buffer_timeout_ms)
    env.enable_checkpointing(job.checkpoint_interval_ms, CheckpointingMode.EXACTLY_ONCE)
    return env


def build_pipeline(
    settings: Settings,
    frames: DataStream,
    index: DataStream,
    camera_thresholds: dict[str, float] | None = None,
    shed_late_frames: bool = True,
) -> JobStreams:
    """The job proper; it does not know where ``frames`` and ``index`` come from.
    ``camera_thresholds``: camera id -> its own match threshold (default: the cameras of
    ``ingest.cameras`` that set one, ``Settings.camera_thresholds``). ``shed_late_frames``:
    live frames beyond ``job.latency_budget_ms`` are shed (off for bounded reads, which are
    audits and backlogs)."""
    records = (
        frames.process(DecodeFrames(), output_type=Types.PICKLED_BYTE_ARRAY())
        .name("decode")
        .uid("decode")
    )
    # One operator from gate to match: every hop between Python operators costs a bundle
    # flush and a queue, which a frame would wait in between TensorFlow and the matcher.
    # PyFlink runs the Python operators of a slot in one process: the TensorFlow stage gets
    # slots (so processes, so a GIL) of its own, apart from sources, decoding and sinks.
    recognized = (
        records.key_by(lambda r: r.region, key_type=Types.STRING())
        .connect(index.broadcast(INDEX_STATE))
        .process(
            RecognizeFrames(settings, camera_thresholds, shed_late_frames),
            output_type=Types.STRING(),
        )
        .name("recognize")
        .uid("recognize")  # savepoints map its keyed and broadcast state by this id
        .slot_sharing_group(RECOGNIZE_SLOTS)
    )
    dead = [records.get_side_output(DEAD_LETTERS), recognized.get_side_output(DEAD_LETTERS)]
    return JobStreams(
        recognized,
        dead,
        recognized.get_side_output(FRAME_STATS),
        recognized.get_side_output(SIGHTINGS),
    )


def attach_sinks(settings: Settings, streams: JobStreams, kafka: bool) -> JobStreams:
    """Events and sightings -> event store (idempotent upserts); dead letters -> JSON lines;
    all also to their Kafka topics when ``kafka``. Returns the streams after persistence
    (what a client collects is what was stored). Each side output is consumed exactly once, here."""
    events = streams.events.map(StoreEvents(settings), output_type=Types.STRING()).name(
        "event-store"
    )
    sightings = streams.sightings.map(
        StoreSightings(settings), output_type=Types.STRING()
    ).name("sighting-store")
    # One writer per producing operator, so each stage's dead letters land in their own
    # files; they are united only in front of the Kafka sink. With Kafka the writers pass on
    # what fits a Kafka record: a Python operator between them and the sink would be one
    # more consumer for PyFlink's chaining to rewire (see tagged_outputs).
    directory = str(settings.dead_letters_path().resolve())
    limit = settings.kafka.max_record_bytes if kafka else None
    written = [
        side.map(
            AppendJsonLines(directory, f"deadletters-{stage}", limit), output_type=Types.STRING()
        ).name(f"dead-letter-file-{stage}")
        for stage, side in zip(("decode", "recognize"), streams.dead_letters, strict=True)
    ]
    stats = streams.frame_stats.map(
        StoreCameraStatus(settings), output_type=Types.STRING()
    ).name("camera-status")
    if settings.job.frame_stats_dir is not None:
        audit = AppendJsonLines(str(settings.job.frame_stats_dir.resolve()), "framestats")
        stats = stats.map(audit, output_type=Types.STRING()).name("frame-stats")
    if kafka:
        exactly_once = settings.job.events_sink.delivery == "exactly-once"
        events.sink_to(
            fs.kafka_sink(settings, settings.kafka.events_topic, exactly_once)
        ).name("kafka-events")
        written[0].union(*written[1:]).sink_to(
            fs.kafka_sink(settings, settings.kafka.dead_letter_topic)
        ).name("kafka-dead-letters")
        # upserts by sighting id: a sighting published twice after a restore is harmless
        sightings.sink_to(fs.kafka_sink(settings, settings.kafka.sightings_topic)).name(
            "kafka-sightings"
        )
    return JobStreams(events, written, stats, sightings)


def video_job(
    env: StreamExecutionEnvironment, settings: Settings, cameras: list[CameraPlan]
) -> JobStreams:
    run_dir = settings.data_dir.resolve() / "runs" / uuid.uuid4().hex[:12]
    frames = fs.video_frames(env, cameras, run_dir)
    index = fs.local_index(env, settings, settings.manifests_path().resolve(), run_dir, cameras)
    # the cameras the job reads itself carry job.video's match_threshold, when set
    thresholds = settings.camera_thresholds(p.cam for p in cameras)
    return build_pipeline(settings, frames, index, thresholds)


def kafka_job(env: StreamExecutionEnvironment, settings: Settings) -> JobStreams:
    return build_pipeline(
        settings,
        fs.kafka_frames(env, settings),
        fs.kafka_index(env, settings),
        shed_late_frames=not settings.job.kafka_bounded,
    )


def build_job(
    settings: Settings, source: str, parallelism: int | None = None
) -> tuple[StreamExecutionEnvironment, JobStreams]:
    if source.startswith("video:"):
        cameras = parse_video_source(source[len("video:") :], settings)
        env = create_env(settings, parallelism, live=any(c.live for c in cameras))
        streams, kafka = video_job(env, settings, cameras), False
    elif source == "kafka":
        env = create_env(settings, parallelism, live=not settings.job.kafka_bounded)
        streams, kafka = kafka_job(env, settings), True
    else:
        raise ValueError(f"--source must be video:PATH[,PATH...] or kafka, got {source!r}")
    return env, attach_sinks(settings, streams, kafka)


def tagged_outputs(streams: JobStreams) -> DataStream:
    """One stream for a client to collect: ``E``/``D``/``S``/``G`` + JSON (event, dead
    letter, frame stat, sighting).

    The union gets a Python map of its own as consumer. PyFlink's chaining rewires only the
    consumers it can see in the environment; a bare union is not one, so each operator
    chained in front of it would run twice: once as the chained copy and once as the
    original the union still reads, writing every event and dead letter twice.
    tests/test_job_graph.py checks that each operator appears once. Collect it with
    ``collect`` (not ``execute_and_collect``, which would drop the Kafka sinks).

    Collected dead letters leave a large payload behind (the dead-letter file and topic
    keep it): Flink's collect sink fails the job on a record above 2 MiB."""
    union = streams.events.map(lambda s: "E" + s, output_type=Types.STRING()).union(
        *(
            d.map(lambda s: "D" + dead_letter_within(s, COLLECTED_MAX_BYTES), Types.STRING())
            for d in streams.dead_letters
        ),
        streams.frame_stats.map(lambda s: "S" + s, output_type=Types.STRING()),
        streams.sightings.map(lambda s: "G" + s, output_type=Types.STRING()),
    )
    return union.map(lambda s: s, output_type=Types.STRING()).name("collect")


def chain_for_collect(env: StreamExecutionEnvironment, collected: DataStream) -> None:
    """Configure and chain the job's Python operators as ``env.execute`` does, across the
    whole environment, before ``collected`` (from ``tagged_outputs``) is collected.

    PyFlink's own ``execute_and_collect`` chains starting from the collected stream and
    keeps only what that stream reads: every sink beside it, the Kafka events and
    dead-letter sinks, would silently not run. The ``collect`` map reads a union, which is
    no Python operator, so chaining never replaces it and ``collected`` stays valid."""
    from pyflink.java_gateway import get_gateway

    gateway = get_gateway()
    j_env = env._j_stream_execution_environment
    gateway.jvm.org.apache.flink.python.util.PythonConfigUtil.configPythonOperator(j_env)
    gateway.jvm.org.apache.flink.python.chain.PythonOperatorChainingOptimizer.apply(j_env)
    if not j_env.getTransformations().contains(collected._j_data_stream.getTransformation()):
        raise RuntimeError("chaining replaced the collected stream: collect tagged_outputs()")


def collect(env: StreamExecutionEnvironment, streams: JobStreams, name: str) -> CloseableIterator:
    """Run the job and iterate over its ``tagged_outputs`` as they come; every sink of the
    job runs too. Close the iterator (``with``) to end an unbounded job."""
    collected = tagged_outputs(streams)
    chain_for_collect(env, collected)
    j_iterator = collected._j_data_stream.executeAndCollect(name)
    return CloseableIterator(j_iterator, collected.get_type())


def main(argv: list[str] | None = None) -> None:
    """Entry point for ``flink run -py jobs/recognition.py -- --source ... [--config ...]``."""
    ap = argparse.ArgumentParser(description="facerec recognition job")
    ap.add_argument("--source", default="kafka", help="video:PATH[,PATH...] | kafka")
    ap.add_argument("--config", default=None, help="YAML configuration file")
    ap.add_argument("--parallelism", type=int, default=None)
    ap.add_argument("--name", default="facerec-recognition")
    ap.add_argument(
        "--delivery",
        choices=("at-least-once", "exactly-once"),
        default=None,
        help="events sink delivery guarantee (job.events_sink.delivery)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    overrides = {"job": {"events_sink": {"delivery": args.delivery}}} if args.delivery else {}
    settings = load_settings(args.config, overrides)
    env, streams = build_job(settings, args.source, args.parallelism)
    # events and dead letters are persisted by their map operators; end the streams quietly
    for stream in streams.outputs():
        fs.discard(stream)
    env.execute(args.name)


if __name__ == "__main__":
    main()
