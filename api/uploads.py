"""Reading uploaded images within the configured limits."""

from __future__ import annotations

import hashlib

from fastapi import UploadFile

from api.errors import ApiError
from facerec.config import Settings
from facerec.errors import ImageTooLarge, InvalidImage


def read_image(upload: UploadFile, settings: Settings, label: str = "image") -> bytes:
    """The bytes of one uploaded image; 413 above ``images.max_bytes``, 422 when empty."""
    limit = settings.images.max_bytes
    data = upload.file.read(limit + 1)
    name = upload.filename or "upload"
    if len(data) > limit:
        raise ImageTooLarge(f"{label} ({name}) is larger than the {limit}-byte limit")
    if not data:
        raise InvalidImage(f"{label} ({name}) is empty (0 bytes)")
    return data


def check_count(files: list[UploadFile], settings: Settings) -> None:
    if not files:
        raise ApiError(422, "no_image", "upload at least one image in the 'files' field")
    if len(files) > settings.api.max_files:
        raise ApiError(
            413,
            "too_many_files",
            f"{len(files)} images uploaded; at most {settings.api.max_files} per request",
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
