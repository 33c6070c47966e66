"""Request and response bodies: separate Create / Update / Public models per resource."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from index_builder.store import Person, Template

PERSON_ID_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
STORE_INT_MAX = 2**63 - 1
"""The largest integer every store takes (SQLite INTEGER, PostgreSQL and Cassandra bigint):
the upper bound of numeric query and path parameters."""
CURSOR = "The next_cursor of the previous page (400 invalid_cursor for any other)."
UPLOAD_FIELD = "image"
"""The multipart field of every upload route, repeated for several images."""


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ people
class PersonCreate(_In):
    id: str | None = Field(None, pattern=PERSON_ID_PATTERN, description="Default: a new uuid.")
    display_name: str = Field(..., min_length=1, max_length=256)
    external_ref: str | None = Field(None, min_length=1, max_length=256)
    metadata: dict[str, Any] = Field(default_factory=dict)


class PersonUpdate(_In):
    display_name: str | None = Field(None, min_length=1, max_length=256)
    external_ref: str | None = Field(None, min_length=1, max_length=256)
    metadata: dict[str, Any] | None = None


class PersonPublic(BaseModel):
    id: str
    display_name: str
    external_ref: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    template_count: int

    @classmethod
    def of(cls, p: Person) -> PersonPublic:
        return cls(**{f: getattr(p, f) for f in cls.model_fields})


class PeoplePage(BaseModel):
    items: list[PersonPublic]
    total: int
    limit: int
    offset: int


# ------------------------------------------------------------------ faces
class TemplatePublic(BaseModel):
    id: str
    person_id: str
    model_id: str
    quality: dict[str, Any]
    image_sha256: str
    seq: int
    created_at: datetime

    @classmethod
    def of(cls, t: Template) -> TemplatePublic:
        return cls(**{f: getattr(t, f) for f in cls.model_fields})


class EnrollResult(BaseModel):
    person_id: str
    templates: list[TemplatePublic]
    published: bool = Field(
        description="False when a delta could not be published; the "
        "templates are stored and the next snapshot includes them."
    )


# ------------------------------------------------------------------ recognition
class NearestTemplate(BaseModel):
    person_id: str
    template_id: str
    distance: float | None = Field(description="L2 distance; null if none.")


class RecognizedFace(BaseModel):
    box: list[float] = Field(description="x1, y1, x2, y2 in pixels.")
    detection_score: float
    quality: dict[str, Any]
    identity: str = Field(description="person id, or 'unknown'.")
    display_name: str | None = None
    distance: float | None = Field(description="L2 distance to the best template; null if none.")
    score: float = Field(description="Similarity in [0, 1] (1 - distance^2 / 4).")
    person_id: str | None = Field(description="The person recognised; null when unknown.")
    template_id: str | None = Field(description="The template matched; null when unknown.")
    nearest: NearestTemplate | None = Field(
        None,
        description="Admin keys only (null for others): the nearest enrolled template, even "
        "for an unknown face, to debug the threshold.",
    )


class RecognizeResult(BaseModel):
    snapshot_id: str | None
    model_id: str
    threshold: float
    faces: list[RecognizedFace]


class VerifyResult(BaseModel):
    same: bool
    distance: float
    score: float
    threshold: float
    person_id: str | None = None
    template_id: str | None = None


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------ events and index
class Readiness(BaseModel):
    ready: bool
    model_loaded: bool = Field(description="The face engine is loaded.")
    store_reachable: bool = Field(description="The enrollment store answers.")


class EventPublic(BaseModel):
    event_id: str
    frame_id: str
    camera_id: str
    region: str
    capture_ts: int
    face_index: int
    box: list[float]
    identity: str
    distance: float | None
    score: float
    threshold: float
    snapshot_id: str
    model_id: str
    stages: dict[str, int]
    display_name: str | None = None


class EventsPage(BaseModel):
    items: list[EventPublic]
    next_cursor: str | None


class IndexStatus(BaseModel):
    snapshot_id: str | None
    manifest: dict[str, Any] | None
    max_change_seq: int
    deltas: int
    tombstones: int
    threshold: float
    last_error: str | None
    store_change_seq: int
    snapshots_on_disk: list[str]


# ------------------------------------------------------------------ sightings
class SightingPublic(BaseModel):
    sighting_id: str
    camera_id: str
    region: str
    status: str = Field(description="open (still in view) or closed.")
    identity: str = Field(description="person id, or 'unknown' (a reviewer's when reviewed).")
    display_name: str | None = None
    first_seen_ms: int
    last_seen_ms: int
    frames: int
    votes: dict[str, int] = Field(description="Frames per identity the matcher named.")
    best_distance: float | None = Field(description="L2 distance of the best face; null if none.")
    best_quality: float
    best_frame_id: str
    best_box: list[float]
    has_image: bool = Field(description="A face crop is kept: GET /sightings/{id}/image.")
    snapshot_id: str
    model_id: str
    threshold: float
    updated_ms: int
    review: dict[str, Any] | None = Field(
        None, description="A reviewer's correction: action assign or reject, by, at, was."
    )


class SightingsPage(BaseModel):
    items: list[SightingPublic]
    next_cursor: str | None


class CameraPublic(BaseModel):
    camera_id: str
    region: str
    frames_per_s: float = Field(description="Frames handled per second in the newest window.")
    gate_share: float = Field(description="Share of the window's frames the motion gate removed.")
    shed_share: float = Field(
        description="Share of the window's frames shed to keep the job's latency budget."
    )
    frames: int
    analysed: int = Field(description="Frames whose faces were detected and embedded.")
    gated_out: int
    shed: int = Field(description="Frames that passed the gate but were shed (late).")
    faces: int
    window_start_ms: int
    window_end_ms: int
    updated_ms: int
    last_sighting: SightingPublic | None


class CamerasPage(BaseModel):
    items: list[CameraPublic]


class SightingAssign(_In):
    person_id: str = Field(..., pattern=PERSON_ID_PATTERN)
    display_name: str | None = Field(
        None,
        min_length=1,
        max_length=256,
        description="Create the person with this name when the id is not enrolled yet; "
        "without it an unknown person_id is 404 (a typo creates nobody).",
    )


class SightingReject(_In):
    person_id: str | None = Field(
        None,
        pattern=PERSON_ID_PATTERN,
        description="Who the face is not; default: whom the sighting names.",
    )


# ------------------------------------------------------------------ unknown faces
class UnknownClusterPublic(BaseModel):
    cluster_id: int
    size: int = Field(description="Sightings in the cluster.")
    first_seen_ms: int
    last_seen_ms: int
    cameras: list[str] = Field(description="Cameras that saw it, sorted.")
    sample_sighting_ids: list[str] = Field(
        description="At most 6 members, best face first (GET /sightings/{id}/image)."
    )


class UnknownClustersPage(BaseModel):
    items: list[UnknownClusterPublic]


class UnknownMemberPublic(BaseModel):
    sighting_id: str
    camera_id: str
    region: str
    first_seen_ms: int
    last_seen_ms: int
    quality: float = Field(description="Quality of the sighting's best face, 0-1.")
    status: str


class UnknownClusterDetailPublic(UnknownClusterPublic):
    sighting_ids: list[str] = Field(description="Every member, best face first.")
    members: list[UnknownMemberPublic]


class UnknownEnroll(_In):
    display_name: str = Field(..., min_length=1, max_length=256)
    person_id: str | None = Field(
        None,
        pattern=PERSON_ID_PATTERN,
        description="Add the cluster to this person (created with display_name when not "
        "enrolled yet); null: a new person with a new id.",
    )


class SightingReason(BaseModel):
    sighting_id: str
    reason: str


class UnknownEnrolled(BaseModel):
    cluster_id: int
    person_id: str
    display_name: str
    created: bool = Field(description="The person was created (else the cluster was added).")
    template_ids: list[str] = Field(description="The best crops, enrolled as templates.")
    assigned: list[str] = Field(description="Sightings now assigned to the person.")
    refused: list[SightingReason] = Field(description="Crops that did not become templates.")
    skipped: list[SightingReason] = Field(
        description="Members left alone: named meanwhile, or expired."
    )
    published: bool = Field(
        description="False when a template could not be published; the next snapshot has it."
    )
