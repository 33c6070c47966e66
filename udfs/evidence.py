"""Face evidence as people review it: the face cut from its image as the engine saw it,
as JPEG. Enrollment templates and sightings both keep their faces this way."""

from __future__ import annotations

import numpy as np

from facerec.config import Settings
from udfs.align import crop_face
from udfs.engine import Face
from udfs.image import encode_jpeg


def face_jpeg(image: np.ndarray, face: Face, settings: Settings) -> bytes:
    """JPEG of ``face`` cut from ``image`` (BGR) with the crop the embedding used: its
    aligned box when the engine aligned it, else the detection box."""
    box = getattr(face, "aligned", None) or face.detection
    return encode_jpeg(crop_face(image, box, settings.align), settings.evidence.jpeg_quality)
