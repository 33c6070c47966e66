"""Flink sources and sinks: the job-read video cameras, the local index directory watcher,
and the official Kafka connector for frames, events, index messages and dead letters."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from pyflink.common import Types, WatermarkStrategy
from pyflink.common.serialization import ByteArraySchema, SimpleStringSchema
from pyflink.datastream import DataStream, StreamExecutionEnvironment
from pyflink.datastream.connectors.number_seq import NumberSequenceSource
from pyflink.datastream.functions import FlatMapFunction, KeyedProcessFunction, RuntimeContext

from facerec.config import Settings
from jobs.cameras import CameraPlan, CameraReader
from jobs.services.versions import jvm_set, versions
from jobs.sources import tick_count

log = logging.getLogger(__name__)
BYTES = Types.PRIMITIVE_ARRAY(Types.BYTE())


class KafkaConnectorMissing(RuntimeError):
    pass


# ------------------------------------------------------------------------------ video
class ReadCameras(KeyedProcessFunction):
    """Keyed by camera index: each tick asks the owning subtask for the camera's frame with
    the tick's sequence number. A bounded camera leaves a ``.done`` marker in ``done_dir``
    after its last frame, so the index watcher knows when the run is over."""

    def __init__(self, cameras: list[CameraPlan], done_dir: str, paced: bool = False) -> None:
        self.cameras, self.done_dir, self.paced = cameras, done_dir, paced

    def open(self, ctx: RuntimeContext) -> None:
        self.readers: dict[int, CameraReader] = {}
        self.read_counter = (
            ctx.get_metrics_group().add_group("facerec").counter("video_frames_read")
        )

    def close(self) -> None:
        for reader in self.readers.values():
            reader.close()

    def process_element(self, tick, ctx):
        index, seq = tick
        plan = self.cameras[index]
        if plan.frames is not None and seq >= plan.frames:
            return
        reader = self.readers.get(index)
        if reader is None:
            reader = self.readers[index] = CameraReader(plan.cam, paced=self.paced)
        record = reader.read(seq)
        if plan.frames is not None and (record is None or seq == plan.frames - 1):
            Path(self.done_dir).mkdir(parents=True, exist_ok=True)
            (Path(self.done_dir) / f"{plan.cam.camera_id}.done").touch()
        if record is not None:
            self.read_counter.inc()
            yield record.encode()


def video_frames(
    env: StreamExecutionEnvironment, cameras: list[CameraPlan], done_dir: Path
) -> DataStream:
    n = len(cameras)
    count = tick_count(cameras)
    bounded = all(c.bounded for c in cameras)
    paced = bounded and all(c.cam.realtime for c in cameras)
    if paced:
        ticks = paced_ticks(env, count, rate=n * max(c.fps for c in cameras))
    else:
        ticks = env.from_source(
            NumberSequenceSource(0, count - 1), WatermarkStrategy.no_watermarks(), "camera-ticks"
        ).set_parallelism(1)
    ticks = ticks.uid("camera-ticks")
    return (
        ticks.map(lambda i: (i % n, i // n), output_type=Types.TUPLE([Types.INT(), Types.LONG()]))
        .set_parallelism(1)
        .name("deal-ticks")
        .uid("deal-ticks")
        .key_by(lambda t: t[0], key_type=Types.INT())
        .process(ReadCameras(cameras, str(done_dir), paced), output_type=BYTES)
        .name("read-cameras")
        .uid("read-cameras")
    )


def paced_ticks(env: StreamExecutionEnvironment, count: int, rate: float) -> DataStream:
    """Ticks 0..count-1 at ``rate`` per second from Flink's own rate-limited generator source.

    Pacing in Java, not by sleeping in the Python reader: a Python operator that sleeps
    between records handed its output downstream in bursts (measured: frames held up to
    3 s; with this source the next Python operator saw them after 6-100 ms)."""
    from pyflink.datastream.connectors import Source
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    elements = (
        jvm.java.util.stream.IntStream.range(0, count)
        .boxed()
        .collect(jvm.java.util.stream.Collectors.toList())
    )
    type_info = Types.INT().get_java_type_info()
    generator = jvm.org.apache.flink.connector.datagen.functions.IndexLookupGeneratorFunction(
        type_info, env._j_stream_execution_environment.getConfig(), elements
    )
    limiter = jvm.org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy
    source = jvm.org.apache.flink.connector.datagen.source.DataGeneratorSource(
        generator, count, limiter.perSecond(float(rate)), type_info
    )
    return env.from_source(
        Source(source), WatermarkStrategy.no_watermarks(), "camera-ticks", type_info=Types.INT()
    ).set_parallelism(1)


# ------------------------------------------------------------------------------ index (local)
class WatchIndexDir(FlatMapFunction):
    """Every ``poll_ms``: emit index messages newly written to the manifests directory (in
    name order). Between polls each tick sleeps at most ``TICK_S``: a checkpoint waits for
    the operator's whole bundle of ticks, so one long sleep per tick would hold every
    checkpoint for bundle size x ``poll_ms``. Stops once every camera left a ``.done``
    marker, so a bounded video run ends."""

    TICK_S = 0.02

    def __init__(self, directory: str, done_dir: str, cameras: list[str], poll_ms: int) -> None:
        self.directory, self.done_dir = directory, done_dir
        self.cameras, self.poll_ms = cameras, poll_ms

    def open(self, ctx: RuntimeContext) -> None:
        self.seen: set[str] = set()
        self.finished = False
        self.next_poll = 0.0

    def flat_map(self, tick):
        if self.finished:
            return
        now = time.monotonic()
        if now < self.next_poll:
            time.sleep(min(self.TICK_S, self.next_poll - now))
            return
        self.next_poll = now + self.poll_ms / 1000
        directory = Path(self.directory)
        if directory.is_dir():
            for path in sorted(directory.glob("*.json")):
                if path.name in self.seen:
                    continue
                self.seen.add(path.name)
                try:
                    text = path.read_text(encoding="utf-8")
                    json.loads(text)
                except (OSError, ValueError) as exc:
                    log.error("skipping unreadable index message %s: %s", path, exc)
                    continue
                log.info("index message %s (tick %s)", path.name, tick)
                yield text
        done = Path(self.done_dir)
        if self.cameras and all((done / f"{c}.done").exists() for c in self.cameras):
            self.finished = True


def local_index(
    env: StreamExecutionEnvironment,
    settings: Settings,
    manifests: Path,
    done_dir: Path,
    cameras: list[CameraPlan],
) -> DataStream:
    bounded = all(c.bounded for c in cameras)
    if bounded:
        # The watcher must outlive the cameras (it ends once they are all done): twice
        # their playing time in real time plus two minutes, as a loaded machine plays slower.
        seconds = 2 * max((c.frames or 0) / c.fps for c in cameras) + 120
        ticks = int(seconds / WatchIndexDir.TICK_S)
    else:
        ticks = 2**62
    watcher = WatchIndexDir(
        str(manifests),
        str(done_dir),
        [c.cam.camera_id for c in cameras] if bounded else [],
        settings.job.index_poll_ms,
    )
    return (
        env.from_source(
            NumberSequenceSource(0, ticks - 1), WatermarkStrategy.no_watermarks(), "index-ticks"
        )
        .uid("index-ticks")
        .set_parallelism(1)
        .flat_map(watcher, output_type=Types.STRING())
        .set_parallelism(1)
        .name("watch-index-dir")
        .uid("watch-index-dir")
    )


# ------------------------------------------------------------------------------ kafka
CONNECTOR = "flink-sql-connector-kafka"


def connector_jar(settings: Settings) -> Path:
    """The configured connector jar, else the one ``make setup`` fetched (its version from
    deploy/versions.env)."""
    if settings.job.kafka_connector_jar is not None:
        return settings.job.kafka_connector_jar
    version = versions()["FLINK_KAFKA_CONNECTOR_VERSION"]
    return jvm_set("flink-kafka") / f"{CONNECTOR}-{version}.jar"


def require_kafka_connector(settings: Settings, env: StreamExecutionEnvironment) -> None:
    jar = connector_jar(settings)
    if not jar.is_file():
        configured = settings.job.kafka_connector_jar is not None
        raise KafkaConnectorMissing(
            f"the Kafka source/sink needs the Flink Kafka connector jar ({CONNECTOR} for Flink "
            f"2.x, org.apache.flink:{CONNECTOR} on Maven Central), and {jar} does not exist. "
            + (
                "Fix job.kafka_connector_jar (FACEREC_JOB__KAFKA_CONNECTOR_JAR)."
                if configured
                else "Run `make setup` (or `make jvm`) to fetch it, or set "
                "job.kafka_connector_jar (FACEREC_JOB__KAFKA_CONNECTOR_JAR) to a copy."
            )
        )
    env.add_jars(jar.resolve().as_uri())


def _offsets(start: str):
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetResetStrategy,
        KafkaOffsetsInitializer,
    )

    if start == "earliest":
        return KafkaOffsetsInitializer.earliest()
    if start == "latest":
        return KafkaOffsetsInitializer.latest()
    if start.isdigit():
        return KafkaOffsetsInitializer.timestamp(int(start))
    if start == "group":
        return KafkaOffsetsInitializer.committed_offsets(KafkaOffsetResetStrategy.EARLIEST)
    raise ValueError(f"job.kafka_start must be group|earliest|latest|<epoch ms>, got {start!r}")


def kafka_frames(env: StreamExecutionEnvironment, settings: Settings) -> DataStream:
    """Frames topic (key = region); offsets committed to the group on checkpoints."""
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    require_kafka_connector(settings, env)
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap_servers)
        .set_topics(settings.kafka.frames_topic)
        .set_group_id(settings.job.kafka_group_id)
        .set_starting_offsets(_offsets(settings.job.kafka_start))
        .set_value_only_deserializer(ByteArraySchema())
        .set_property("commit.offsets.on.checkpoint", "true")
    )
    if settings.job.kafka_bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    for key, value in settings.kafka.java_client_properties().items():
        builder = builder.set_property(key, value)
    source = builder.build()
    # the uid names its offsets in a savepoint
    return env.from_source(source, WatermarkStrategy.no_watermarks(), "kafka-frames").uid(
        "kafka-frames"
    )


def kafka_index(env: StreamExecutionEnvironment, settings: Settings) -> DataStream:
    """Index topic read from the start: the latest snapshot and every delta since."""
    from pyflink.datastream.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

    require_kafka_connector(settings, env)
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap_servers)
        .set_topics(settings.kafka.index_topic)
        .set_group_id(settings.job.kafka_group_id + "-index")
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_value_only_deserializer(SimpleStringSchema())
    )
    if settings.job.kafka_bounded:
        builder = builder.set_bounded(KafkaOffsetsInitializer.latest())
    for key, value in settings.kafka.java_client_properties().items():
        builder = builder.set_property(key, value)
    return (
        env.from_source(builder.build(), WatermarkStrategy.no_watermarks(), "kafka-index")
        .uid("kafka-index")
        .set_parallelism(1)
    )


def discard(stream: DataStream) -> None:
    """Terminate a stream whose work is done in its last operator (Flink drops operators
    that reach no sink)."""
    from pyflink.datastream.connectors.base import Sink
    from pyflink.java_gateway import get_gateway

    jvm = get_gateway().jvm
    stream.sink_to(
        Sink(jvm.org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink())
    ).name("discard")


def kafka_sink(settings: Settings, topic: str, exactly_once: bool = False):
    """A sink writing strings to ``topic``. ``exactly_once``: in Kafka transactions committed
    by each checkpoint, as ``job.events_sink`` configures them."""
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(settings.kafka.bootstrap_servers)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_property("max.request.size", str(settings.kafka.max_record_bytes))
    )
    if exactly_once:
        sink = settings.job.events_sink
        builder = (
            builder.set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .set_transactional_id_prefix(sink.transactional_id_prefix)
            .set_property("transaction.timeout.ms", str(sink.transaction_timeout_ms))
        )
    else:
        builder = builder.set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
    for key, value in settings.kafka.java_client_properties().items():
        builder = builder.set_property(key, value)
    return builder.build()
