"""Reading uploaded images within the configured limits."""

from __future__ import annotations

import hashlib

from fastapi import UploadFile

from api.errors import ApiError
from api.schemas import UPLOAD_FIELD
from facerec.config import Settings
from facerec.errors import ImageTooLarge, InvalidImage
from udfs.image import check_header


def read_image(upload: UploadFile, settings: Settings, label: str = "image") -> bytes:
    """The bytes of one uploaded image, its header checked against ``images`` (size, pixel
    count, format: udfs.image.check_header) before any model sees it: 413 above a limit
    (decompression bombs included), 422 when empty or not an image."""
    limits = settings.images
    name = upload.filename or "upload"
    # the parser spooled the part to disk and knows its size: refuse without reading it
    if upload.size is not None and upload.size > limits.max_bytes:
        raise ImageTooLarge(
            f"{label} ({name}) is {upload.size} bytes; the limit is {limits.max_bytes}"
        )
    data = upload.file.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise ImageTooLarge(f"{label} ({name}) is larger than the {limits.max_bytes}-byte limit")
    if not data:
        raise InvalidImage(f"{label} ({name}) is empty (0 bytes)")
    try:
        check_header(
            data,
            max_bytes=limits.max_bytes,
            max_pixels=limits.max_pixels,
            min_side=limits.min_side,
        )
    except InvalidImage as exc:
        raise type(exc)(f"{label} ({name}): {exc.message}") from exc
    return data


def check_count(files: list[UploadFile], settings: Settings) -> None:
    if not files:
        raise ApiError(422, "no_image", f"upload at least one image in the {UPLOAD_FIELD!r} field")
    if len(files) > settings.api.max_files:
        raise ApiError(  # the document's maxItems (api.app.openapi_document): a 422 as any
            422,
            "too_many_files",
            f"{len(files)} images uploaded; at most {settings.api.max_files} per request",
        )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
