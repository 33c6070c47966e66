"""Typed domain errors. The API maps these to HTTP statuses in one place (api/errors.py);
the job turns them into dead letters with the same ``reason`` codes."""

from __future__ import annotations


class FaceRecError(Exception):
    """Base of every expected failure; ``reason`` is a stable machine-readable code."""

    reason = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidImage(FaceRecError):
    """The bytes are not a decodable image (empty, truncated, unknown format)."""

    reason = "invalid_image"


class ImageTooLarge(InvalidImage):
    """Encoded size or pixel count above the configured limit (decompression bombs)."""

    reason = "image_too_large"


class ImageTooSmall(InvalidImage):
    """Width or height below the configured minimum (e.g. a 1x1 image)."""

    reason = "image_too_small"


class NoFaceFound(FaceRecError):
    reason = "no_face"


class MoreThanOneFace(FaceRecError):
    reason = "several_faces"


class LowQualityFace(FaceRecError):
    """A face was found but failed a quality gate; ``reasons`` lists every failed gate."""

    reason = "low_quality"

    def __init__(self, message: str, reasons: list[str]) -> None:
        super().__init__(message)
        self.reasons = reasons


class ModelNotFound(FaceRecError):
    """A model file that should ship inside a Python package is missing."""

    reason = "model_not_found"


class SnapshotMismatch(FaceRecError):
    """An index snapshot does not match its manifest, the model or the dimension."""

    reason = "snapshot_mismatch"


class BadRecord(FaceRecError):
    """A stream record that cannot be decoded (wrong schema version, truncated)."""

    reason = "bad_record"
