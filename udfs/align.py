"""Alignment as FaceNet expects it: the face box grown by a margin and resized to 160x160
(the MTCNN crop 20180408-102900 was trained on, or a square crop), optionally levelled on
the eyes, then the model's pixel standardisation. Also the landmark geometry the quality
gates read (head turn, face scale)."""

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
    """uint8 BGR crop of ``size`` x ``size``; pixels outside the frame are black.

    ``geometry='mtcnn'``: width and height each grow by ``margin`` x the box's mean side
    (davidsandberg/facenet adds 32 px to both) and the result is resized to the square
    without keeping the aspect ratio, as align_dataset_mtcnn did for training and testing.
    ``geometry='square'``: a square of the longer side x (1 + margin)."""
    x1, y1, x2, y2 = det.box
    cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    if config.geometry == "mtcnn":
        pad = config.margin * (w + h) / 2.0
        out_w, out_h = w + pad, h + pad
    else:
        out_w = out_h = max(w, h) * (1.0 + config.margin)
    angle = eye_roll_deg(det) if config.rotate else 0.0
    # rotate about the box centre (levelling the eyes), scale each axis, centre in the crop
    a = math.radians(angle)
    cos, sin = math.cos(a), math.sin(a)
    sx, sy = size / out_w, size / out_h
    lin = np.array([[sx * cos, sx * sin], [-sy * sin, sy * cos]], np.float64)
    shift = np.array([size / 2.0, size / 2.0]) - lin @ np.array([cx, cy])
    m = np.hstack([lin, shift[:, None]])
    return cv2.warpAffine(
        frame, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    )


def eye_roll_deg(det: Detection) -> float:
    """In-plane tilt of the eye line (degrees, positive = the person's left eye lower in the
    image); 0 without landmarks or when they are implausible (beyond 60 degrees)."""
    eyes = det.eyes
    if eyes is None:
        return 0.0
    (rx, ry), (lx, ly) = eyes
    # the person's right eye is on the image's left: the eye line runs right -> left eye
    angle = math.degrees(math.atan2(ly - ry, lx - rx))
    return 0.0 if abs(angle) > 60 else angle


def _mouth(landmarks: tuple[tuple[float, float], ...]) -> tuple[float, float] | None:
    """Mouth centre: O-Net gives both corners (5 points), BlazeFace one mouth point (6)."""
    if len(landmarks) == 5:
        (ax, ay), (bx, by) = landmarks[3], landmarks[4]
        return (ax + bx) / 2.0, (ay + by) / 2.0
    if len(landmarks) >= 4:
        return landmarks[3]
    return None


def yaw_deg(det: Detection) -> float | None:
    """Head turn estimated from the landmarks: in the eye-levelled frame, the nose tip's
    horizontal offset from the eyes' midpoint over half the eye distance is tan(yaw) for a
    nose tip as far in front of the eyes as they are apart from their midpoint (a frontal
    face: 0; the nose past an eye: beyond 45 degrees). Sign: positive = nose towards the
    image's right. None without eye and nose landmarks."""
    lm = det.landmarks
    if not lm or len(lm) < 3:
        return None
    (rx, ry), (lx, ly), (nx, ny) = lm[0], lm[1], lm[2]
    ex, ey = lx - rx, ly - ry
    half = math.hypot(ex, ey) / 2.0
    if half < 1e-6:
        return 90.0
    # the nose's offset from the eye midpoint along the eye line
    mx, my = (rx + lx) / 2.0, (ry + ly) / 2.0
    along = ((nx - mx) * ex + (ny - my) * ey) / (2.0 * half)
    return math.degrees(math.atan2(along, half))


def face_scale_px(det: Detection) -> float | None:
    """Face size from the landmarks, in frame pixels: the larger of the eye distance and
    the distance from the eyes' midpoint to the mouth (which a head turn does not shrink).
    None without landmarks."""
    lm = det.landmarks
    if not lm or len(lm) < 2:
        return None
    (rx, ry), (lx, ly) = lm[0], lm[1]
    eyes = math.hypot(lx - rx, ly - ry)
    mouth = _mouth(lm)
    if mouth is None:
        return eyes
    down = math.hypot(mouth[0] - (rx + lx) / 2.0, mouth[1] - (ry + ly) / 2.0)
    return max(eyes, down)


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
