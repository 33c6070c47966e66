"""1:1 verification: two images, or an image and an enrolled person."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile

from api.deps import KeyBeforeBodyRoute, QueryRole, ServicesDep
from api.errors import ApiError, answers, from_domain
from api.schemas import VerifyResult
from api.services import Services
from api.uploads import read_image
from facerec.errors import FaceRecError
from udfs.match import similarity

router = APIRouter(tags=["recognition"], route_class=KeyBeforeBodyRoute)


@router.post("/verify", response_model=VerifyResult, responses=answers(404, 409))
def verify(
    services: ServicesDep,
    _: QueryRole,
    image: Annotated[
        list[UploadFile],
        File(
            min_length=1,
            max_length=2,
            description="Two images to compare, or one image and person_id.",
        ),
    ],
    person_id: Annotated[
        str | None, Form(description="With one image: compare it to this enrolled person.")
    ] = None,
    face_is_cropped: Annotated[
        bool, Form(description="The images are faces already (crops): no detection.")
    ] = False,
) -> VerifyResult:
    """Same person or not: two images (their largest faces), or one image against every
    template of ``person_id`` (409 ``no_templates`` when it has none of this model)."""
    if (len(image) == 2) == (person_id is not None):
        raise ApiError(422, "invalid_request", "give two images, or one image and person_id")
    threshold = services.settings.match.threshold
    template_id = None
    if person_id is None:
        a, b = (_embed(services, u, f"image {i}", face_is_cropped) for i, u in enumerate(image))
        distance = float(np.linalg.norm(a - b))
    else:
        services.store.get_person(person_id)  # 404 before the engine runs
        a = _embed(services, image[0], "image 0", face_is_cropped)
        templates = [
            t
            for t in services.store.list_templates(person_id, with_embeddings=True)
            if t.model_id == services.model_id
        ]
        if not templates:
            raise ApiError(
                409,
                "no_templates",
                f"person {person_id!r} has no templates of model {services.model_id}",
            )
        vectors = [t.embedding for t in templates if t.embedding is not None]
        dists = np.linalg.norm(np.stack(vectors) - a, axis=1)
        best = int(np.argmin(dists))
        distance, template_id = float(dists[best]), templates[best].id
    return VerifyResult(
        same=distance <= threshold,
        distance=distance,
        score=similarity(distance),
        threshold=threshold,
        person_id=person_id,
        template_id=template_id,
    )


def _embed(services: Services, upload: UploadFile, label: str, cropped: bool) -> np.ndarray:
    """The face to verify: the whole image when it is a crop, else its largest face."""
    data = read_image(upload, services.settings, label)
    try:
        face = services.cropped_face(data) if cropped else services.largest_face(data)
    except FaceRecError as exc:
        raise from_domain(exc, f"{label}: ") from exc
    assert face.embedding is not None
    return face.embedding
