"""Enrollment images: exactly one acceptable face per image, else 422 naming the image."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile, status

from api.deps import EnrollRole, ServicesDep
from api.errors import ApiError, from_domain
from api.schemas import EnrollResult, TemplatePublic
from api.uploads import check_count, read_image
from index_builder.enrollment import FaceChoice, Photo, PhotoRefused
from index_builder.store import DuplicateTemplate

router = APIRouter(prefix="/people", tags=["faces"])


@router.post("/{person_id}/faces", status_code=status.HTTP_201_CREATED, response_model=EnrollResult)
def enroll_faces(
    person_id: str,
    files: Annotated[list[UploadFile], File(description="One or more images, one face each.")],
    services: ServicesDep,
    _: EnrollRole,
    face_is_cropped: Annotated[
        bool,
        Form(description="Each image is the face already (an ID photo, a crop): no detection."),
    ] = False,
    largest_face: Annotated[
        bool,
        Form(description="Enroll the largest acceptable face of each image instead of "
             "refusing images with several faces (bystanders)."),
    ] = False,
) -> EnrollResult:
    """All images are checked before anything is stored: one bad image rejects the request.
    An image the person was enrolled with already is answered 409 with that template."""
    if face_is_cropped and largest_face:
        raise ApiError(
            422, "invalid_request", "face_is_cropped and largest_face exclude each other"
        )
    choice: FaceChoice = (
        "cropped" if face_is_cropped else "largest" if largest_face else "single"
    )
    check_count(files, services.settings)
    services.store.get_person(person_id)  # 404 before reading the uploads
    photos = []
    for i, upload in enumerate(files):
        label = f"image {i} ({upload.filename or 'upload'})"
        photos.append(Photo(label, read_image(upload, services.settings, label)))
    try:
        enrolled = services.enrollment.enroll(person_id, photos, choice=choice)
    except PhotoRefused as exc:
        error = from_domain(exc.cause, f"{exc.photo.label}: ")
        if isinstance(exc.cause, DuplicateTemplate):
            error.extra["template"] = TemplatePublic.of(exc.cause.existing).model_dump(
                mode="json"
            )
        raise error from exc
    return EnrollResult(
        person_id=person_id,
        templates=[TemplatePublic.of(t) for t in enrolled.templates],
        published=enrolled.published,
    )
