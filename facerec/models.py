"""Which face model the platform speaks, in one place: its id (recorded with every template,
snapshot and event, so a mismatch is refused instead of matched), its embedding size and
its input size."""

from __future__ import annotations

FACENET_MODEL_ID = "facenet-20180408-102900-casia"
"""Inception-ResNet-v1 trained on CASIA-WebFace; recorded with every embedding."""
EMBEDDING_DIM = 512
"""Length of a FaceNet embedding (L2-normalised, float32)."""
FACENET_INPUT_PX = 160
"""Side of the square RGB crop FaceNet takes."""
