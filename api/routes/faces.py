"""Enrollment images: exactly one acceptable face per image, else 422 naming the image;
each template's face crop; removing one template."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile, status

from api.deps import EnrollRole, KeyBeforeBodyRoute, ServicesDep
from api.errors import ApiError, answers, from_domain
from api.schemas import EnrollResult, TemplatePublic
from api.uploads import check_count, read_image
from index_builder.enrollment import FaceChoice, Photo, PhotoRefused
from index_builder.store import DuplicateTemplate

log = logging.getLogger(__name__)
router = APIRouter(prefix="/people", tags=["faces"], route_class=KeyBeforeBodyRoute)


@router.post(
    "/{person_id}/faces",
    status_code=status.HTTP_201_CREATED,
    response_model=EnrollResult,
    responses=answers(409),
)
def enroll_faces(
    person_id: str,
    image: Annotated[
        list[UploadFile],
        File(min_length=1, description="One or more images, one face each (repeat the field)."),
    ],
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
    check_count(image, services.settings)
    services.store.get_person(person_id)  # 404 before reading the uploads
    photos = []
    for i, upload in enumerate(image):
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


@router.get(
    "/{person_id}/faces/{template_id}/image",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "The face crop (JPEG)."}},
)
def face_image(person_id: str, template_id: str, services: ServicesDep, _: EnrollRole) -> Response:
    """The face crop the template was embedded from, as the engine cut it (404
    ``evidence_not_found`` for a template enrolled before crops were kept)."""
    data = services.enrollment.template_crop(person_id, template_id)
    return Response(
        content=data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"}
    )


@router.delete("/{person_id}/faces/{template_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_face(
    person_id: str, template_id: str, services: ServicesDep, who: EnrollRole
) -> Response:
    """One template goes, with its face crop; a snapshot without it is published."""
    removed = services.enrollment.remove_template(person_id, template_id)
    log.info(
        "template %s of %s removed by %s (seq %d%s)",
        template_id,
        person_id,
        who.name,
        removed.change.seq,
        "" if removed.published else ", snapshot not published",
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
