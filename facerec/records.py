"""Records shared by the ingest agent, the recognition job, the index builder and replay.

Frame record (Kafka topic ``facerec.frames``, key = region), schema version 1::

    offset  size  field
    0       2     magic  b"FR"
    2       1     schema version (1)
    3       4     header length H, unsigned big-endian
    7       H     header: UTF-8 JSON object (see FrameRecord fields; bytes excluded)
    7+H     ...   the frame as JPEG

A JSON header plus raw JPEG can be read from any language without a schema registry,
and the version byte lets a reader refuse what it does not know (dead letter, not crash).

Recognition events (``facerec.events``) and index messages (``facerec.index``) are JSON.
"""

from __future__ import annotations

import json
import struct
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from facerec.errors import BadRecord

MAGIC = b"FR"
SCHEMA_VERSION = 1
_PREFIX = struct.Struct(">2sBI")
UNKNOWN = "unknown"
"""The identity of a face whose best distance is above the threshold."""
NO_SNAPSHOT = "none"
"""The snapshot id of an event matched before any snapshot had loaded."""
NO_DISTANCE = 9.0
"""The distance of an event with no candidate at all (an empty gallery). Larger than any
distance between unit vectors (at most 2), and finite so that it survives JSON."""
_EVENT_NAMESPACE = uuid.UUID("6f1c9a52-2b7e-4b1e-9d7c-5a3f0c1e8b21")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def make_frame_id(camera_id: str, epoch_ms: int, seq: int) -> str:
    """Unique and deterministic per camera, capture session (its start time) and sequence."""
    return f"{camera_id}:{epoch_ms}:{seq:09d}"


def make_event_id(frame_id: str, face_index: int) -> str:
    """Replays and at-least-once duplicates of the same face collapse onto one id."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{frame_id}#{face_index}"))


@dataclass(frozen=True)
class FrameRecord:
    camera_id: str
    region: str
    frame_id: str
    seq: int
    capture_ts: int
    """Capture time, epoch milliseconds."""
    width: int
    height: int
    jpeg: bytes = field(repr=False)
    ingest_ts: int = 0
    """When the ingest agent (or the job's own video source) produced it, epoch ms."""
    live: bool = True
    """Captured as it happened (a camera, or a file paced to its own rate): the job may shed
    it when it can no longer be analysed within its latency budget. A recording read as
    fast as it decodes is not live and is always analysed."""

    def encode(self) -> bytes:
        header = {k: v for k, v in asdict(self).items() if k != "jpeg"}
        raw = json.dumps(header, separators=(",", ":")).encode()
        return _PREFIX.pack(MAGIC, SCHEMA_VERSION, len(raw)) + raw + self.jpeg

    @classmethod
    def decode(cls, data: bytes) -> FrameRecord:
        if len(data) < _PREFIX.size:
            raise BadRecord(f"frame record too short ({len(data)} bytes)")
        magic, version, hlen = _PREFIX.unpack_from(data)
        if magic != MAGIC:
            raise BadRecord(f"not a frame record: magic {magic!r}, expected {MAGIC!r}")
        if version != SCHEMA_VERSION:
            raise BadRecord(f"frame schema version {version}; this reader knows {SCHEMA_VERSION}")
        end = _PREFIX.size + hlen
        if end > len(data):
            raise BadRecord(f"frame header claims {hlen} bytes; record has {len(data)}")
        try:
            header = json.loads(data[_PREFIX.size : end])
            return cls(jpeg=bytes(data[end:]), **header)
        except (ValueError, TypeError) as exc:
            raise BadRecord(f"frame header is not valid: {exc}") from exc


@dataclass(frozen=True)
class RecognitionEvent:
    event_id: str
    frame_id: str
    camera_id: str
    region: str
    capture_ts: int
    face_index: int
    box: tuple[float, float, float, float]
    identity: str
    """Person id, or ``unknown`` when the best distance is above the threshold."""
    distance: float
    score: float
    """Detection score of the face."""
    threshold: float
    snapshot_id: str
    model_id: str
    stages: dict[str, int]
    """Epoch ms when each stage finished: ingest, gate, detect, embed, match."""
    display_name: str | None = None

    @property
    def matched(self) -> bool:
        return self.identity != UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["box"] = list(self.box)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecognitionEvent:
        d = dict(d)
        d["box"] = tuple(d["box"])
        return cls(**d)

    @classmethod
    def from_json(cls, s: str | bytes) -> RecognitionEvent:
        return cls.from_dict(json.loads(s))


SightingStatus = Literal["open", "closed"]


def make_sighting_id(camera_id: str, first_frame_id: str, face_index: int) -> str:
    """Named after the face that started it: a job restored from a checkpoint, or a replay,
    writes the same sighting again instead of a second one."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"sighting#{camera_id}#{first_frame_id}#{face_index}"))


@dataclass(frozen=True)
class Sighting:
    """One person's continuous appearance before one camera: the faces linked across its
    frames, the identity decided over them, and the best face as evidence. Upserted by
    ``sighting_id`` as it opens, improves and closes (``facerec.sightings``)."""

    sighting_id: str
    camera_id: str
    region: str
    status: SightingStatus
    identity: str
    """Person id decided over the sighting's frames, or ``unknown``."""
    first_seen_ms: int
    last_seen_ms: int
    frames: int
    """Frames in which a face of this sighting was matched."""
    votes: dict[str, int]
    """Frames per identity the matcher named (``unknown`` included)."""
    best_distance: float
    """Smallest distance to the decided identity (to the nearest person when unknown)."""
    best_quality: float
    """Quality of the face kept as evidence, 0-1 (size, detection score, sharpness)."""
    best_frame_id: str
    best_box: tuple[float, float, float, float]
    evidence_key: str | None
    """Key of the best face's JPEG in the evidence store (None when it was not stored)."""
    snapshot_id: str
    model_id: str
    threshold: float
    updated_ms: int = field(default_factory=now_ms)
    display_name: str | None = None
    review: dict[str, Any] | None = None
    """A person's correction (assigned to / rejected), set by the review API."""

    @property
    def matched(self) -> bool:
        return self.identity != UNKNOWN

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["best_box"] = list(self.best_box)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sighting:
        d = dict(d)
        d["best_box"] = tuple(d["best_box"])
        return cls(**d)

    @classmethod
    def from_json(cls, s: str | bytes) -> Sighting:
        return cls.from_dict(json.loads(s))


@dataclass(frozen=True)
class CameraStatus:
    """What one camera's frames went through in the job's latest status window: how many
    arrived, how many the motion gate removed, how many were shed to keep the latency budget
    and how many were analysed (faces detected and embedded). The job upserts one per camera
    and window (``job.camera_status_interval_ms``); the API's camera page reads the newest."""

    camera_id: str
    region: str
    window_start_ms: int
    window_end_ms: int
    frames: int
    gated_out: int
    analysed: int
    faces: int
    updated_ms: int = field(default_factory=now_ms)
    shed: int = 0
    """Frames that passed the gate but were shed to keep the latency budget."""

    @property
    def frames_per_s(self) -> float:
        """Frames handled per second over the window (0 for a window of one instant)."""
        span_ms = self.window_end_ms - self.window_start_ms
        return 1000.0 * self.frames / span_ms if span_ms > 0 else 0.0

    @property
    def gate_share(self) -> float:
        """Share of the window's frames the motion gate removed before detection."""
        return self.gated_out / self.frames if self.frames else 0.0

    @property
    def shed_share(self) -> float:
        """Share of the window's frames shed to keep the latency budget."""
        return self.shed / self.frames if self.frames else 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, s: str | bytes) -> CameraStatus:
        return cls(**json.loads(s))


@dataclass(frozen=True)
class DeadLetter:
    reason: str
    message: str
    stage: str
    payload: bytes = field(repr=False)
    camera_id: str | None = None
    frame_id: str | None = None
    ts: int = field(default_factory=now_ms)

    def to_json(self) -> str:
        import base64

        d = asdict(self)
        d["payload"] = base64.b64encode(self.payload).decode()
        return json.dumps(d, separators=(",", ":"))


RECORD_OVERHEAD_BYTES = 4096
"""What a Kafka record takes beyond its value (batch and record headers), with room."""


def dead_letter_within(dead_letter_json: str, max_record_bytes: int) -> str:
    """A dead letter (JSON) that fits a Kafka record of ``max_record_bytes``: one whose frame
    makes it too large goes without its payload, and ``payload_bytes`` says how large the
    payload was (the dead-letter file keeps it). Sent whole, such a record would fail the
    Kafka sink, and the job would fail on the same frame after every restart."""
    if len(dead_letter_json.encode()) + RECORD_OVERHEAD_BYTES <= max_record_bytes:
        return dead_letter_json
    body = json.loads(dead_letter_json)
    encoded = body.get("payload") or ""
    body["payload_bytes"] = len(encoded) * 3 // 4 - encoded[-2:].count("=")
    body["payload"] = ""
    return json.dumps(body, separators=(",", ":"))


# ----------------------------------------------------------------------------- index
IndexKind = Literal["snapshot", "enroll", "delete"]


def index_message(kind: IndexKind, **body: Any) -> str:
    """A message of the ``facerec.index`` topic the job broadcasts:

    * ``snapshot``: ``manifest`` (dict) and ``path`` (snapshot directory)
    * ``enroll``: ``person_id``, ``template_id``, ``vector`` (list of floats), ``model_id``
    * ``delete``: ``person_id`` (erasure: forget before the next snapshot)

    Each carries ``seq`` (publisher's monotonic counter) and ``ts`` (epoch ms).
    """
    return json.dumps({"kind": kind, "ts": now_ms(), **body}, separators=(",", ":"))
