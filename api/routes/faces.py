"""Enrollment images: exactly one acceptable face per image, else 422 naming the image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status

from api.deps import EnrollRole, ServicesDep
from api.errors import from_domain
from api.schemas import EnrollResult, TemplatePublic
from api.uploads import check_count, read_image
from index_builder.enrollment import Photo, PhotoRefused

router = APIRouter(prefix="/people", tags=["faces"])


@router.post("/{person_id}/faces", status_code=status.HTTP_201_CREATED, response_model=EnrollResult)
def enroll_faces(
    person_id: str,
    files: Annotated[list[UploadFile], File(description="One or more images, one face each.")],
    services: ServicesDep,
    _: EnrollRole,
) -> EnrollResult:
    """All images are checked before anything is stored: one bad image rejects the request."""
    check_count(files, services.settings)
    services.store.get_person(person_id)  # 404 before reading the uploads
    photos = []
    for i, upload in enumerate(files):
        label = f"image {i} ({upload.filename or 'upload'})"
        photos.append(Photo(label, read_image(upload, services.settings, label)))
    try:
        enrolled = services.enrollment.enroll(person_id, photos)
    except PhotoRefused as exc:
        raise from_domain(exc.cause, f"{exc.photo.label}: ") from exc
    return EnrollResult(
        person_id=person_id,
        templates=[TemplatePublic.of(t) for t in enrolled.templates],
        published=enrolled.published,
    )
