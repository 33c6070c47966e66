"""The event store contract every backend honours (see tests/test_eventstore_contract.py).

* ``write`` is an idempotent upsert keyed by ``event_id``: at-least-once duplicates and
  replays of the same face collapse onto one stored event.
* ``search`` returns events newest first, ordered by ``(capture_ts, event_id)`` descending,
  one page at a time; the returned cursor is opaque and ``None`` when nothing follows.
* Time ranges are half-open: ``start_ms <= capture_ts < end_ms``.
* Retention counts from the capture time: an event older than ``ttl_days`` is expired
  (not returned, and not written when it arrives late); ``ttl_days = 0`` keeps everything.
  ``purge_expired(now)`` deletes what is past retention as of ``now`` (the retention
  sweep), whatever the rows were written with; ``erase_identity`` deletes every event and
  sighting naming a person (erasure).

Sightings (one per person per appearance) follow the same rules, keyed by ``sighting_id``
and ordered by ``(first_seen_ms, sighting_id)``, with a retention of their own
(``sightings_ttl_days``, default the events'), and two more rules:

* an upsert never goes back: a sighting with fewer frames than the stored one (a job
  restored from a checkpoint publishing it again) leaves the stored one as it is;
* a reviewed sighting keeps its review and the identity the reviewer gave it, whatever the
  job publishes later (``review_sighting``).
"""

from __future__ import annotations

import base64
import binascii
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace

from facerec.errors import FaceRecError
from facerec.records import UNKNOWN, CameraStatus, RecognitionEvent, Sighting

MAX_LIMIT = 1000
DAY_MS = 86_400_000


class InvalidCursor(FaceRecError):
    """A search cursor that this store did not hand out (or that was damaged on the way)."""

    reason = "invalid_cursor"


class InvalidQuery(FaceRecError):
    """Search arguments out of range (limit, empty time range)."""

    reason = "invalid_query"


@dataclass(frozen=True)
class Position:
    """Where a page ended: the last returned ``(capture_ts, event_id)``."""

    capture_ts: int
    event_id: str

    def encode(self) -> str:
        raw = json.dumps([self.capture_ts, self.event_id], separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, cursor: str) -> Position:
        try:
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
            ts, event_id = json.loads(raw)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise InvalidCursor(
                f"cursor {cursor[:40]!r} is not one this store returned: expected the "
                "'next_cursor' of a previous page"
            ) from exc
        if not isinstance(ts, int) or not isinstance(event_id, str):
            raise InvalidCursor(
                f"cursor {cursor[:40]!r} decodes to [{type(ts).__name__}, "
                f"{type(event_id).__name__}]; expected [int, str]"
            )
        if not -(2**63) <= ts < 2**63:  # what every store's 64-bit timestamp column takes
            raise InvalidCursor(f"cursor {cursor[:40]!r} holds a time outside 64 bits")
        return cls(ts, event_id)


@dataclass(frozen=True)
class EventQuery:
    """Validated search filters; ``matches`` is the reference semantics."""

    camera_id: str | None = None
    region: str | None = None
    identity: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        if (
            self.start_ms is not None
            and self.end_ms is not None
            and self.end_ms <= self.start_ms
        ):
            raise InvalidQuery(
                f"empty time range: end_ms {self.end_ms} must be greater than "
                f"start_ms {self.start_ms}"
            )

    def matches(self, e: RecognitionEvent) -> bool:
        return (
            (self.camera_id is None or e.camera_id == self.camera_id)
            and (self.region is None or e.region == self.region)
            and (self.identity is None or e.identity == self.identity)
            and (self.start_ms is None or e.capture_ts >= self.start_ms)
            and (self.end_ms is None or e.capture_ts < self.end_ms)
        )


@dataclass(frozen=True)
class SightingQuery:
    """Validated sighting filters; ``matches`` is the reference semantics. ``unknown``: only
    unknown sightings (True) or only named ones (False). The time range applies to
    ``first_seen_ms``."""

    camera_id: str | None = None
    region: str | None = None
    identity: str | None = None
    unknown: bool | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    def __post_init__(self) -> None:
        EventQuery(start_ms=self.start_ms, end_ms=self.end_ms)  # same range check

    def matches(self, s: Sighting) -> bool:
        return (
            (self.camera_id is None or s.camera_id == self.camera_id)
            and (self.region is None or s.region == self.region)
            and (self.identity is None or s.identity == self.identity)
            and (self.unknown is None or (s.identity == UNKNOWN) == self.unknown)
            and (self.start_ms is None or s.first_seen_ms >= self.start_ms)
            and (self.end_ms is None or s.first_seen_ms < self.end_ms)
        )


def merge_sighting(stored: Sighting | None, new: Sighting) -> Sighting | None:
    """What an upsert of ``new`` over ``stored`` keeps; None: leave the stored one."""
    if stored is None:
        return new
    if new.frames < stored.frames or (
        new.frames == stored.frames and stored.status == "closed" and new.status == "open"
    ):
        return None
    if stored.review is not None:
        return replace(new, identity=stored.identity, review=stored.review)
    return new


def check_limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise InvalidQuery(f"limit must be an integer in [1, {MAX_LIMIT}]; got {limit!r}")
    return limit


@dataclass(frozen=True)
class DeletedRecords:
    """What a deletion took out of the store."""

    events: int = 0
    sightings: int = 0


def retention_ms(ttl_days: int) -> int | None:
    """Retention window in ms, or None when events are kept forever."""
    return ttl_days * DAY_MS if ttl_days > 0 else None


class EventStore(ABC):
    """Where recognition events live for search and audit."""

    @abstractmethod
    def write(self, events: Sequence[RecognitionEvent]) -> int:
        """Upsert ``events`` by event id; returns how many were stored (duplicates inside the
        batch count once; events already past retention are skipped and not counted)."""

    @abstractmethod
    def get(self, event_id: str) -> RecognitionEvent | None:
        """The event with this id, or None (unknown or expired)."""

    @abstractmethod
    def search(
        self,
        *,
        camera_id: str | None = None,
        region: str | None = None,
        identity: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
        limit: int = 100,
        cursor: str | None = None,
    ) -> tuple[list[RecognitionEvent], str | None]:
        """One page of matching events, newest first, and the cursor of the next page."""

    def count(
        self,
        *,
        camera_id: str | None = None,
        region: str | None = None,
        identity: str | None = None,
        start_ms: int | None = None,
        end_ms: int | None = None,
    ) -> int:
        """How many events match. This default pages through ``search``: backends that can
        count cheaply override it."""
        total, cursor = 0, None
        while True:
            page, cursor = self.search(
                camera_id=camera_id, region=region, identity=identity,
                start_ms=start_ms, end_ms=end_ms, limit=MAX_LIMIT, cursor=cursor,
            )
            total += len(page)
            if cursor is None:
                return total

    # ------------------------------------------------------------------ sightings
    @abstractmethod
    def write_sightings(self, sightings: Sequence[Sighting]) -> int:
        """Upsert by sighting id (``merge_sighting``); returns how many were stored."""

    @abstractmethod
    def get_sighting(self, sighting_id: str) -> Sighting | None:
        """The sighting with this id, or None (unknown or expired)."""

    @abstractmethod
    def search_sightings(
        self, query: SightingQuery, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[Sighting], str | None]:
        """One page of matching sightings, newest first, and the cursor of the next page."""

    @abstractmethod
    def review_sighting(
        self, sighting_id: str, identity: str, review: dict[str, object]
    ) -> Sighting | None:
        """Set a reviewer's identity and review on a sighting; the updated sighting, or None
        when there is no such sighting."""

    # ------------------------------------------------------------------ deletion
    @abstractmethod
    def purge_expired(self, now: int | None = None) -> DeletedRecords:
        """Delete the events and sightings past retention as of ``now`` (epoch ms; default:
        the store's clock), including rows written under a longer retention."""

    @abstractmethod
    def erase_identity(self, person_id: str) -> DeletedRecords:
        """Delete every event and sighting whose identity is ``person_id`` (erasure)."""

    # ------------------------------------------------------------------ cameras
    @abstractmethod
    def write_camera_status(self, statuses: Sequence[CameraStatus]) -> int:
        """Keep each camera's newest status (by ``window_end_ms``; an older one arriving
        late is ignored); returns how many were stored."""

    @abstractmethod
    def camera_statuses(self) -> list[CameraStatus]:
        """The newest status of every camera, by camera id."""

    @abstractmethod
    def ping(self) -> bool:
        """True when the store answers a trivial query (health checks)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""

    def __enter__(self) -> EventStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
