"""Enrollment images: exactly one acceptable face per image, else 422 naming the image."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, File, UploadFile, status

from api.deps import EnrollRole, ServicesDep
from api.errors import from_domain
from api.schemas import EnrollResult, TemplatePublic
from api.uploads import check_count, read_image, sha256
from udfs.errors import FaceRecError

log = logging.getLogger(__name__)
router = APIRouter(prefix="/people", tags=["faces"])


@router.post("/{person_id}/faces", status_code=status.HTTP_201_CREATED, response_model=EnrollResult)
def enroll_faces(
    person_id: str,
    files: Annotated[list[UploadFile], File(description="One or more images, one face each.")],
    services: ServicesDep,
    _: EnrollRole,
) -> EnrollResult:
    """All images are checked before anything is stored: one bad image rejects the request."""
    settings = services.settings
    check_count(files, settings)
    services.store.get_person(person_id)  # 404 before the expensive part
    items = []
    for i, upload in enumerate(files):
        label = f"image {i} ({upload.filename or 'upload'})"
        try:
            data = read_image(upload, settings, label)
            face = services.single_face(data)
        except FaceRecError as exc:
            raise from_domain(exc, f"{label}: ") from exc
        assert face.embedding is not None
        items.append((face.embedding, face.model_id, face.quality.as_dict(), sha256(data)))
    templates = services.store.add_templates(person_id, items)
    published = True
    for t in templates:
        try:
            services.publisher.publish_enroll(t)
        except Exception as exc:  # stored anyway: the next snapshot carries it
            published = False
            log.warning("enroll delta %s not published: %s", t.id, exc)
    return EnrollResult(
        person_id=person_id,
        templates=[TemplatePublic.of(t) for t in templates],
        published=published,
    )
