"""The evidence store contract every backend honours (see tests/test_evidence_store.py).

Evidence is the pictures behind the records: the face crop of each enrollment template and
the best face crop (optionally the whole frame) of each sighting, stored as JPEG bytes under
keys laid out so that erasing a person and retention are prefix operations:

    templates/<person_id>/<template_id>.jpg
    sightings/<yyyy-mm-dd>/<sighting_id>.jpg          (the day, UTC, the sighting began)
    sightings/<yyyy-mm-dd>/<sighting_id>-frame.jpg    (the whole frame, if evidence.store_frames)

* ``put`` replaces whatever the key held; a reader never sees a partly written object.
* ``get`` of a missing key raises ``EvidenceNotFound`` (a ``FaceRecError``: 404 in the API).
* ``delete`` of a missing key is not an error; ``delete_prefix`` and ``purge_older_than``
  return how many objects they removed.
* Keys are relative, '/'-separated, each segment ``[A-Za-z0-9._:-]`` and not '.' or '..';
  anything else raises ``InvalidEvidenceKey`` before a backend sees it.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, timedelta

from facerec.errors import FaceRecError

TEMPLATES_PREFIX = "templates/"
SIGHTINGS_PREFIX = "sightings/"
JPEG = "image/jpeg"

_SEGMENT = re.compile(r"^[A-Za-z0-9._:-]{1,200}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class EvidenceNotFound(FaceRecError):
    """No evidence is stored under the key (never stored, erased, or expired)."""

    reason = "evidence_not_found"


class InvalidEvidenceKey(FaceRecError):
    """A key that is not relative '/'-separated segments of ``[A-Za-z0-9._:-]``."""

    reason = "invalid_evidence_key"


def check_key(key: str, *, prefix: bool = False) -> str:
    """``key`` if it is a valid key (``prefix``: a valid prefix, which may end with '/')."""
    body = key[:-1] if prefix and key.endswith("/") else key
    parts = body.split("/")
    if not body or any(not _SEGMENT.match(p) or p in {".", ".."} for p in parts):
        raise InvalidEvidenceKey(
            f"evidence key {key[:80]!r}: expected '/'-separated segments of [A-Za-z0-9._:-] "
            "(no leading '/', no '.' or '..')"
        )
    return key


def check_prefix(prefix: str, *, empty: bool = False) -> str:
    """``prefix`` if it is whole segments ending with '/' (``empty``: or '', everything)."""
    if empty and prefix == "":
        return prefix
    if not prefix.endswith("/"):
        raise InvalidEvidenceKey(f"evidence prefix {prefix!r} must end with '/'")
    return check_key(prefix, prefix=True)


def template_key(person_id: str, template_id: str) -> str:
    """Where the face crop of enrollment template ``template_id`` of ``person_id`` lives."""
    return check_key(f"{TEMPLATES_PREFIX}{person_id}/{template_id}.jpg")


def person_prefix(person_id: str) -> str:
    """The prefix holding every template crop of ``person_id``."""
    return check_key(f"{TEMPLATES_PREFIX}{person_id}/", prefix=True)


def sighting_key(sighting_id: str, first_seen_ms: int, *, frame: bool = False) -> str:
    """Where a sighting's best face crop (``frame``: its whole frame) lives, filed under the
    UTC day of ``first_seen_ms`` (epoch milliseconds) so that retention drops whole days."""
    day = datetime.fromtimestamp(first_seen_ms / 1000, tz=UTC).date().isoformat()
    suffix = "-frame" if frame else ""
    return check_key(f"{SIGHTINGS_PREFIX}{day}/{sighting_id}{suffix}.jpg")


def frame_key_of(crop_key: str) -> str:
    """The whole-frame key beside a sighting crop key (``.../<id>.jpg`` -> ``<id>-frame.jpg``)."""
    stem = crop_key[: -len(".jpg")] if crop_key.endswith(".jpg") else crop_key
    return check_key(f"{stem}-frame.jpg")


class EvidenceStore(ABC):
    """JPEG evidence by key. Backends: a local folder (default) and an S3-compatible bucket."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = JPEG) -> None:
        """Store ``data`` under ``key``, atomically replacing what it held."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The bytes under ``key``; ``EvidenceNotFound`` when there are none."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""

    @abstractmethod
    def list_keys(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix`` (whole segments ending in '/', or '' for
        every key: ``check_prefix(prefix, empty=True)``), in no promised order."""

    @abstractmethod
    def describe(self) -> str:
        """Where the evidence lives, for logs and ``facerec evidence`` output."""

    def delete_prefix(self, prefix: str) -> int:
        """Remove every key under ``prefix`` (whole segments ending with '/'; never '');
        how many were removed."""
        keys = list(self.list_keys(check_prefix(prefix)))
        self._delete_many(keys)
        return len(keys)

    def _delete_many(self, keys: list[str]) -> None:
        for key in keys:
            self.delete(key)

    def erase_person(self, person_id: str, sighting_keys: Iterable[str] = ()) -> int:
        """Remove every template crop of ``person_id`` and the evidence of their sightings
        (``sighting_keys``: the crop keys recorded with their sightings; the whole frame
        beside each goes too). How many objects were removed."""
        return self.delete_prefix(person_prefix(person_id)) + self.erase_sightings(sighting_keys)

    def erase_sightings(self, sighting_keys: Iterable[str]) -> int:
        """Remove the crops ``sighting_keys`` and the whole frame beside each; how many
        objects were removed."""
        found: list[str] = []
        for key in sighting_keys:
            for k in (check_key(key), frame_key_of(key)):
                if self.exists(k):
                    found.append(k)
        self._delete_many(found)
        return len(found)

    def sighting_days(self) -> list[date]:
        """The UTC days that hold sighting evidence, oldest first."""
        days: set[date] = set()
        for key in self.list_keys(SIGHTINGS_PREFIX):
            day = key[len(SIGHTINGS_PREFIX) :].split("/", 1)[0]
            if _DAY.match(day):
                days.add(date.fromisoformat(day))
        return sorted(days)

    def purge_older_than(self, days: int, *, now: datetime | None = None) -> int:
        """Retention: remove the sighting evidence of every UTC day before ``now - days``
        (a day is kept while any part of it is younger than ``days``); ``days = 0`` keeps
        everything. Template crops live as long as their template. How many were removed."""
        if days < 0:
            raise ValueError(f"retention days must be >= 0, got {days}")
        if days == 0:
            return 0
        cutoff = ((now or datetime.now(UTC)).astimezone(UTC) - timedelta(days=days)).date()
        return sum(
            self.delete_prefix(f"{SIGHTINGS_PREFIX}{d.isoformat()}/")
            for d in self.sighting_days()
            if d < cutoff
        )

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (the S3 client); the local folder has none."""
