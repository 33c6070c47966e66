"""Which face model the platform speaks, in one place: its id (recorded with every template,
snapshot and event, so a mismatch is refused instead of matched), its embedding size and
its input size."""

from __future__ import annotations

FACENET_MODEL_ID = "facenet-20180408-102900-casia/mtcnn-crop"
"""Inception-ResNet-v1 trained on CASIA-WebFace, fed the MTCNN crop it was trained with
(O-Net box + 30% margin, facerec.config.AlignConfig defaults); recorded with every embedding.
Embeddings of the earlier square crop carry LEGACY_MODEL_ID and are refused with it."""
EMBEDDING_DIM = 512
"""Length of a FaceNet embedding (L2-normalised, float32)."""
FACENET_INPUT_PX = 160
"""Side of the square RGB crop FaceNet takes."""

DEFAULT_CROP = {"landmarks": "onet", "geometry": "mtcnn", "margin": 0.3, "rotate": False}
"""The AlignConfig fields that decide the crop, at their defaults (FACENET_MODEL_ID)."""
LEGACY_CROP = {"landmarks": "none", "geometry": "square", "margin": 0.1, "rotate": False}
"""The crop of releases before the MTCNN geometry; its embeddings carry LEGACY_MODEL_ID."""
LEGACY_MODEL_ID = "facenet-20180408-102900-casia"


def pipeline_model_id(model_id: str, align: object) -> str:
    """The id recorded with an embedding: the model id, plus the crop when it is not the
    default one. A crop changes every embedding (a face cut another way lands ~0.3-0.5 away
    in L2), so templates enrolled with one crop are refused by a matcher using another
    instead of being matched at a threshold calibrated for neither."""
    fields = {k: getattr(align, k) for k in LEGACY_CROP}
    if model_id == FACENET_MODEL_ID:
        if fields == DEFAULT_CROP:
            return FACENET_MODEL_ID
        if fields == LEGACY_CROP:
            return LEGACY_MODEL_ID
    return model_id + "+" + ",".join(f"{k}={v}" for k, v in fields.items())
