"""Recognition: every face of an image, identified against the live index."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, File, Form, UploadFile

from api.deps import KeyBeforeBodyRoute, QueryRole, ServicesDep
from api.schemas import NearestTemplate, RecognizedFace, RecognizeResult, finite
from api.uploads import read_image
from facerec.records import UNKNOWN
from index_builder.store import PersonNotFound
from udfs.match import Match

router = APIRouter(tags=["recognition"], route_class=KeyBeforeBodyRoute)


@router.post("/recognize", response_model=RecognizeResult)
def recognize(
    image: Annotated[UploadFile, File(description="An image with any number of faces.")],
    services: ServicesDep,
    who: QueryRole,
    face_is_cropped: Annotated[
        bool, Form(description="The image is one face already (a crop): no detection.")
    ] = False,
) -> RecognizeResult:
    """Every face: who it is, or ``unknown``; an unknown face names nobody (an admin's key
    also gets ``nearest``, the nearest enrolled template whatever the threshold)."""
    data = read_image(image, services.settings)
    faces = [services.cropped_face(data)] if face_is_cropped else services.analyze(data)
    vectors = [f.embedding for f in faces if f.embedding is not None]
    matches = iter(services.matcher.match(np.stack(vectors)) if vectors else [])
    names: dict[str, str | None] = {}
    out = []
    for f in faces:
        m = next(matches) if f.embedding is not None else None
        identity = m.identity if m else UNKNOWN
        known = identity != UNKNOWN
        if identity != UNKNOWN and identity not in names:
            try:
                names[identity] = services.store.get_person(identity).display_name
            except PersonNotFound:  # erased after the snapshot the matcher serves
                names[identity] = None
        out.append(
            RecognizedFace(
                box=[round(v, 1) for v in f.box],
                detection_score=round(f.detection.score, 4),
                quality=f.quality.as_dict(),
                identity=identity,
                display_name=names.get(identity),
                distance=finite(m.distance) if m else None,
                score=m.score if m else 0.0,
                person_id=m.person_id if m and known else None,
                template_id=m.template_id if m and known else None,
                nearest=_nearest(m) if m and who.role == "admin" else None,
            )
        )
    return RecognizeResult(
        snapshot_id=services.matcher.matcher.snapshot_id,
        model_id=services.model_id,
        threshold=services.matcher.matcher.threshold,
        faces=out,
    )


def _nearest(m: Match) -> NearestTemplate | None:
    if m.person_id is None or m.template_id is None:
        return None
    return NearestTemplate(
        person_id=m.person_id, template_id=m.template_id, distance=finite(m.distance)
    )
