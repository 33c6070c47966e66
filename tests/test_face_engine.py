"""The face engine on real faces: detectors, alignment, quality gates, batched FaceNet."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from facerec.config import BlazeFaceDetectorConfig, Settings, SsdDetectorConfig
from facerec.errors import LowQualityFace, MoreThanOneFace, NoFaceFound
from facerec.models import FACENET_MODEL_ID
from udfs.align import crop_face, standardize
from udfs.detectors.base import available, create_detector
from udfs.engine import FaceEngine, primary_detection
from udfs.image import decode_image, encode_jpeg

pytestmark = pytest.mark.data


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


@pytest.fixture(scope="module")
def sample(portraits) -> list[np.ndarray]:
    # portraits with one clear face each: the 3rd..6th image of every identity
    return [decode_image(p.read_bytes()) for ps in portraits.values() for p in ps[3:6]]


def test_registry_lists_both_plugins():
    assert {"ssd", "blazeface"} <= set(available())


def test_unknown_detector_type_is_refused():
    class Bogus:
        type = "yolo"

    with pytest.raises(ValueError, match="unknown detector type 'yolo'"):
        create_detector(Bogus())


@pytest.mark.parametrize(
    "config", [SsdDetectorConfig(), BlazeFaceDetectorConfig()], ids=["ssd", "blazeface"]
)
def test_given_portraits_when_detected_then_each_has_a_central_face(config, sample):
    detector = create_detector(config)
    results = detector.detect(sample)
    assert len(results) == len(sample)
    found = [primary_detection(dets, img.shape) for dets, img in zip(results, sample, strict=True)]
    assert sum(d is not None for d in found) >= len(sample) - 1
    for det, img in zip(found, sample, strict=True):
        if det is None:
            continue
        h, w = img.shape[:2]
        assert 0 <= det.box[0] < det.box[2] <= w and 0 <= det.box[1] < det.box[3] <= h
        assert det.width > 20 and det.height > 20
    assert detector.detect([]) == []


def test_both_detectors_agree_on_face_location(sample):
    ssd = create_detector(SsdDetectorConfig()).detect(sample)
    blaze = create_detector(BlazeFaceDetectorConfig()).detect(sample)
    ious = []
    for a, b, img in zip(ssd, blaze, sample, strict=True):
        da, db = primary_detection(a, img.shape), primary_detection(b, img.shape)
        if da and db:
            ious.append(_iou(da.box, db.box))
    assert len(ious) >= len(sample) - 2
    assert np.median(ious) > 0.5


def test_blazeface_gives_six_landmarks_with_eyes_above_mouth(sample):
    dets = create_detector(BlazeFaceDetectorConfig()).detect(sample[:5])
    for row in dets:
        for d in row:
            assert d.landmarks is not None and len(d.landmarks) == 6
            (rx, ry), (lx, ly), _, (mx, my) = d.landmarks[:4]
            assert my > max(ry, ly)


def test_given_blank_frame_when_detected_then_no_faces():
    blank = np.full((480, 640, 3), 127, np.uint8)
    for config in (SsdDetectorConfig(), BlazeFaceDetectorConfig()):
        assert create_detector(config).detect([blank]) == [[]]


def test_batched_embeddings_equal_one_at_a_time(engine, sample):
    crops = []
    for img, dets in zip(sample, engine.detect(sample), strict=True):
        det = primary_detection(dets, img.shape)
        if det is not None:
            crops.append(standardize(crop_face(img, det, engine.settings.align), "fixed"))
    batch = np.stack(crops)
    together = engine.embedder.embed(batch)
    alone = np.concatenate([engine.embedder.embed(batch[i : i + 1]) for i in range(len(batch))])
    assert together.shape == (len(crops), 512)
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)


def test_same_person_is_closer_than_different_people(engine, portraits):
    names = ["ben_afflek", "jerry_seinfeld", "mindy_kaling"]
    vecs = {
        n: [engine.single_face(p.read_bytes()).embedding for p in portraits[n][3:5]] for n in names
    }
    genuine = [np.linalg.norm(vecs[n][0] - vecs[n][1]) for n in names]
    impostor = [np.linalg.norm(vecs[a][0] - vecs[b][0]) for a in names for b in names if a < b]
    assert max(genuine) < min(impostor)
    assert np.mean(genuine) < engine.settings.match.threshold


def test_model_id_recorded_with_every_face(engine, portraits):
    face = engine.single_face(next(iter(portraits.values()))[3].read_bytes())
    assert face.model_id == FACENET_MODEL_ID == "facenet-20180408-102900-casia/mtcnn-crop"
    assert face.embedding.shape == (512,) and face.embedding.dtype == np.float32


def test_given_blank_image_when_enrolling_then_no_face_found(engine):
    with pytest.raises(NoFaceFound):
        engine.single_face(encode_jpeg(np.full((200, 200, 3), 90, np.uint8)))


def test_given_two_people_when_enrolling_then_more_than_one_face(engine, portraits):
    a = decode_image(portraits["madonna"][3].read_bytes())
    b = decode_image(portraits["elton_john"][3].read_bytes())
    h = min(a.shape[0], b.shape[0])
    pair = np.hstack(
        [
            cv2.resize(a, (a.shape[1] * h // a.shape[0], h)),
            cv2.resize(b, (b.shape[1] * h // b.shape[0], h)),
        ]
    )
    with pytest.raises(MoreThanOneFace, match="2 faces"):
        engine.single_face(encode_jpeg(pair))


def test_given_blurred_face_when_enrolling_then_too_blurry_reason(engine, portraits):
    img = decode_image(portraits["jerry_seinfeld"][3].read_bytes())
    blurred = cv2.GaussianBlur(img, (0, 0), 3)
    with pytest.raises(LowQualityFace) as info:
        engine.single_face(encode_jpeg(blurred))
    assert any(r.startswith("too_blurry") for r in info.value.reasons)


def test_given_small_face_when_enrolling_then_too_small_reason(embedder, portraits):
    strict = FaceEngine(Settings(quality={"min_face_px": 400}), embedder=embedder)
    with pytest.raises(LowQualityFace) as info:
        strict.single_face(portraits["mindy_kaling"][3].read_bytes())
    assert any(r.startswith("too_small") for r in info.value.reasons)


def test_rejected_faces_are_reported_not_embedded(embedder, portraits):
    strict = FaceEngine(Settings(quality={"min_face_px": 400}), embedder=embedder)
    faces = strict.analyze_bytes(portraits["mindy_kaling"][3].read_bytes())
    assert faces and all(f.embedding is None and not f.quality.ok for f in faces)


def test_given_worker_threads_when_an_engine_starts_then_opencv_and_tensorflow_use_them(
    settings, sample, engine
):
    """job.worker_threads as the recognize workers apply it: OpenCV's pool (process-wide) and
    TensorFlow's intra- and inter-op pools; the engine still finds and embeds faces."""
    before = cv2.getNumThreads()
    try:
        one_thread = FaceEngine(settings, threads=1)
        assert cv2.getNumThreads() == 1
        config = one_thread.embedder.session._config
        assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == (1, 1)
        ours, default = one_thread.analyze([sample[0]])[0], engine.analyze([sample[0]])[0]
        assert len(ours) == len(default) == 1
        assert np.allclose(ours[0].embedding, default[0].embedding, atol=1e-4)
        one_thread.embedder.close()
    finally:
        cv2.setNumThreads(before)
