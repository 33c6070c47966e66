"""Alignment on real faces: O-Net's MTCNN box and landmarks on the detector's box, the crop
geometry FaceNet was trained with, eye levelling, and the pipeline id recorded with it."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from facerec.config import AlignConfig, Settings
from facerec.models import FACENET_MODEL_ID, LEGACY_MODEL_ID, pipeline_model_id
from udfs.align import crop_face, eye_roll_deg, yaw_deg
from udfs.detectors.base import Detection
from udfs.detectors.onet import OnetRefiner
from udfs.engine import FaceEngine, primary_detection
from udfs.image import decode_image

pytestmark = pytest.mark.data

FRONTAL = ("val", "ben_afflek", "httpabsolumentgratuitfreefrimagesbenaffleckjpg.jpg")


@pytest.fixture(scope="module")
def frontal(celebrity5) -> np.ndarray:
    split, who, name = FRONTAL
    return decode_image((celebrity5 / split / who / name).read_bytes())


@pytest.fixture(scope="module")
def refiner() -> OnetRefiner:
    return OnetRefiner()


def rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """The image rotated about its centre on a canvas large enough to keep all of it."""
    h, w = image.shape[:2]
    side = int(math.hypot(h, w)) + 2
    canvas = cv2.copyMakeBorder(
        image, (side - h) // 2, side - h - (side - h) // 2, (side - w) // 2,
        side - w - (side - w) // 2, cv2.BORDER_REPLICATE,
    )
    m = cv2.getRotationMatrix2D((side / 2, side / 2), degrees, 1.0)
    return cv2.warpAffine(canvas, m, (side, side), borderMode=cv2.BORDER_REPLICATE)


def aligned_face(engine: FaceEngine, image: np.ndarray) -> Detection:
    det = primary_detection(engine.detect([image])[0], image.shape)
    assert det is not None
    return engine.align_detections(image, [det])[0]


def test_given_frontal_face_when_refined_then_mtcnn_box_and_five_landmarks_inside(
    engine, frontal
):
    aligned = aligned_face(engine, frontal)
    assert aligned.landmarks is not None and len(aligned.landmarks) == 5
    x1, y1, x2, y2 = aligned.box
    (rx, ry), (lx, ly), (nx, ny), (mrx, mry), (mlx, mly) = aligned.landmarks
    for x, y in aligned.landmarks:
        assert x1 <= x <= x2 and y1 <= y <= y2
    assert rx < nx < lx  # the person's right eye on the image's left
    assert max(ry, ly) < ny < min(mry, mly)  # eyes above the nose above the mouth
    assert mrx < mlx
    assert aligned.score > 0.9
    assert abs(eye_roll_deg(aligned)) < 8 and abs(yaw_deg(aligned) or 99) < 15


@pytest.mark.parametrize("degrees", [20, -20])
def test_given_face_rotated_20_degrees_when_aligned_with_rotate_then_eyes_level(
    engine, frontal, refiner, degrees
):
    tilted = rotate(frontal, degrees)
    aligned = aligned_face(engine, tilted)
    upright = eye_roll_deg(aligned_face(engine, frontal))  # the photo's own tilt (~-5)
    # cv2's positive angle turns the image counter-clockwise: the person's left eye
    # (image right) rises, so the eye line's slope goes down by the angle
    assert eye_roll_deg(aligned) - upright == pytest.approx(-degrees, abs=3)
    crop = crop_face(tilted, aligned, AlignConfig(rotate=True))
    s = crop.shape[0]
    again = refiner.refine(crop, [(s * 0.12, s * 0.12, s * 0.88, s * 0.88)])[0]
    assert abs(eye_roll_deg(Detection(again.box, again.score, again.landmarks))) < 5
    # without levelling the crop keeps the tilt
    unlevelled = crop_face(tilted, aligned, AlignConfig(rotate=False))
    still = refiner.refine(unlevelled, [(s * 0.12, s * 0.12, s * 0.88, s * 0.88)])[0]
    assert abs(eye_roll_deg(Detection(still.box, still.score, still.landmarks))) > 12


def test_mtcnn_geometry_puts_the_eyes_where_facenet_saw_them(engine, frontal, refiner):
    """The default crop (O-Net box + 30% margin, stretched to 160x160) has the eyes at about
    a third of the height and the mouth at about two thirds, as the MTCNN training crops."""
    crop = crop_face(frontal, aligned_face(engine, frontal), engine.settings.align)
    assert crop.shape == (160, 160, 3)
    r = refiner.refine(crop, [(12.0, 12.0, 148.0, 148.0)])[0]
    (rx, ry), (lx, ly), _, (mrx, mry), (mlx, mly) = r.landmarks
    assert 45 < (ry + ly) / 2 < 75 and 95 < (mry + mly) / 2 < 125
    assert 35 < lx - rx < 65  # eye distance in the crop


def test_crop_geometry_is_used_identically_by_analyze_and_single_face(engine, celebrity5):
    path = celebrity5.joinpath(*FRONTAL)
    via_single = engine.single_face(path.read_bytes())
    via_analyze = engine.analyze_bytes(path.read_bytes())[0]
    np.testing.assert_allclose(via_single.embedding, via_analyze.embedding, atol=1e-5)
    assert via_single.aligned is not None and via_single.aligned.landmarks is not None


def test_pipeline_id_names_the_crop():
    assert pipeline_model_id(FACENET_MODEL_ID, AlignConfig()) == FACENET_MODEL_ID
    legacy = AlignConfig(landmarks="none", geometry="square", margin=0.1, rotate=False)
    assert pipeline_model_id(FACENET_MODEL_ID, legacy) == LEGACY_MODEL_ID
    other = pipeline_model_id(FACENET_MODEL_ID, AlignConfig(rotate=True))
    assert other not in (FACENET_MODEL_ID, LEGACY_MODEL_ID) and "rotate=True" in other


def test_engine_records_the_pipeline_id(embedder):
    legacy = Settings(align={"landmarks": "none", "geometry": "square", "margin": 0.1})
    assert FaceEngine(legacy, embedder=embedder).model_id == LEGACY_MODEL_ID
    assert FaceEngine(Settings(), embedder=embedder).model_id == FACENET_MODEL_ID
