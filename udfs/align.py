"""Alignment as FaceNet expects it: a square crop around the face with a margin, levelled
on the eyes when landmarks exist, resized to 160x160, then per-image standardisation."""

from __future__ import annotations

import math

import cv2
import numpy as np

from facerec.config import AlignConfig
from facerec.models import FACENET_INPUT_PX
from udfs.detectors.base import Detection


def crop_face(
    frame: np.ndarray, det: Detection, config: AlignConfig, size: int = FACENET_INPUT_PX
) -> np.ndarray:
    """uint8 BGR square crop of side ``size``; pixels outside the frame are black."""
    x1, y1, x2, y2 = det.box
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    side = max(x2 - x1, y2 - y1) * (1.0 + config.margin)
    angle = 0.0
    eyes = det.eyes if config.rotate else None
    if eyes is not None:
        (rx, ry), (lx, ly) = eyes
        # the person's right eye is on the image's left: the eye line runs right -> left eye
        angle = math.degrees(math.atan2(ly - ry, lx - rx))
        if abs(angle) > 60:  # landmarks this far off are noise, not a head tilt
            angle = 0.0
    scale = size / max(side, 1.0)
    m = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    m[0, 2] += size / 2.0 - cx
    m[1, 2] += size / 2.0 - cy
    return cv2.warpAffine(
        frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def standardize(crop_bgr: np.ndarray, mode: str) -> np.ndarray:
    if mode == "fixed":
        return fixed_standardize(crop_bgr)
    return prewhiten(crop_bgr)


def fixed_standardize(crop_bgr: np.ndarray) -> np.ndarray:
    """(x - 127.5) / 128 on the RGB crop, as in FaceNet's --use_fixed_image_standardization."""
    rgb = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    return (rgb - 127.5) / 128.0


def prewhiten(crop_bgr: np.ndarray) -> np.ndarray:
    """FaceNet's per-image standardisation on the RGB crop: (x - mean) / max(std, 1/sqrt(n))."""
    rgb = cv2.cvtColor(crop_bgr, cv2.COLOR_BGR2RGB).astype(np.float32)
    mean = rgb.mean()
    std = max(float(rgb.std()), 1.0 / math.sqrt(rgb.size))
    return (rgb - mean) / std


SHARPNESS_SIDE = 96


def sharpness(frame: np.ndarray, det: Detection) -> float:
    """Variance of the Laplacian over the face box only (no margin, no black border that
    would pass for detail), at a fixed 96x96 scale so big and small faces compare: low
    means blurred."""
    h, w = frame.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in det.box)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return 0.0
    grey = cv2.cvtColor(frame[y1:y2, x1:x2], cv2.COLOR_BGR2GRAY)
    grey = cv2.resize(grey, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())
