"""The face engine: detect -> align -> quality -> embed, batched across frames.

Plain Python (no Flink): the job, the API and ``facerec eval`` all call this.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from facerec.config import Settings
from facerec.errors import LowQualityFace, MoreThanOneFace, NoFaceFound
from facerec.models import FACENET_INPUT_PX, pipeline_model_id
from udfs import image as imageio
from udfs.align import crop_face, sharpness, standardize
from udfs.detectors.base import Detection, Detector, create_detector
from udfs.detectors.onet import OnetRefiner
from udfs.embed import FaceNetEmbedder
from udfs.quality import Quality, assess

log = logging.getLogger(__name__)


@dataclass
class Face:
    detection: Detection
    quality: Quality
    embedding: np.ndarray | None
    model_id: str
    aligned: Detection | None = None
    """The box and landmarks the crop was cut from (O-Net's MTCNN box and five points
    with ``align.landmarks: onet``); None when the face was not aligned."""

    @property
    def box(self) -> tuple[float, float, float, float]:
        return self.detection.box


class FaceEngine:
    def __init__(
        self,
        settings: Settings,
        detector: Detector | None = None,
        embedder: FaceNetEmbedder | None = None,
        threads: int = 0,
    ) -> None:
        """``threads``: OpenCV's (process-wide) and TensorFlow's threads, in place of
        ``embedder.intra_op_threads``; 0 leaves both as configured."""
        self.settings = settings
        if threads:
            import cv2

            cv2.setNumThreads(threads)
        self.detector = detector or create_detector(settings.detector)
        self.embedder = embedder or FaceNetEmbedder(
            settings.embedder.model_path,
            batch_size=settings.embedder.batch_size,
            threads=threads or settings.embedder.intra_op_threads,
        )
        self.refiner = (
            OnetRefiner(settings.align.onet_passes) if settings.align.landmarks == "onet" else None
        )

    def warmup(self) -> None:
        """Run each model once so the first real frame does not pay for graph set-up."""
        frame = np.full((480, 640, 3), 127, np.uint8)
        self.detect([frame])
        self.align_detections(frame, [Detection((200.0, 150.0, 300.0, 270.0), 1.0)])
        crop = np.zeros((1, FACENET_INPUT_PX, FACENET_INPUT_PX, 3), np.float32)
        self.embedder.embed(crop)

    @property
    def model_id(self) -> str:
        """The embedding's id: the model and, when it is not the default, the alignment
        (facerec.models.pipeline_model_id): templates cut another way are not comparable."""
        return pipeline_model_id(self.embedder.model_id, self.settings.align)

    def align_detections(self, frame: np.ndarray, dets: Sequence[Detection]) -> list[Detection]:
        """The box and landmarks each face is cropped from (``align.landmarks``): O-Net's
        MTCNN box and five landmarks, the detector's own, or the detector's box alone."""
        mode = self.settings.align.landmarks
        if not dets:
            return []
        if mode == "detector":
            return list(dets)
        if mode == "none" or self.refiner is None:
            return [Detection(d.box, d.score) for d in dets]
        refined = self.refiner.refine(frame, [d.box for d in dets])
        return [Detection(r.box, r.score, r.landmarks) for r in refined]

    def decode(self, data: bytes) -> np.ndarray:
        limits = self.settings.images
        return imageio.decode_image(
            data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels, min_side=limits.min_side
        )

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        return self.detector.detect(frames)

    def embed_detections(
        self,
        frames: Sequence[np.ndarray],
        detections: Sequence[Sequence[Detection]],
        embed_rejected: bool = False,
        reuse: Callable[[int, Face, np.ndarray], Face | None] | None = None,
    ) -> list[list[Face]]:
        """Align and quality-check every detection, then embed all accepted ones in one call.

        ``reuse(frame_index, face, standardised_crop)`` may name an earlier face, from an
        earlier call or earlier in this one, that is the same face (udfs/track.py): this
        face then takes its embedding instead of a FaceNet pass of its own."""
        faces: list[list[Face]] = []
        crops: list[np.ndarray] = []
        slots: list[tuple[int, int]] = []
        shared: list[tuple[Face, Face]] = []  # (face, the earlier face it takes after)
        for i, (frame, dets) in enumerate(zip(frames, detections, strict=True)):
            row = []
            for det, aligned in zip(dets, self.align_detections(frame, dets), strict=True):
                face = Face(
                    det,
                    assess(det, sharpness(frame, det), self.settings.quality, aligned),
                    None,
                    self.model_id,
                    aligned,
                )
                row.append(face)
                if not (face.quality.ok or embed_rejected):
                    log.debug("face rejected in frame %d: %s", i, "; ".join(face.quality.reasons))
                    continue
                crop = standardize(
                    crop_face(frame, aligned, self.settings.align),
                    self.settings.align.standardization,
                )
                earlier = reuse(i, face, crop) if reuse is not None else None
                if earlier is not None:
                    shared.append((face, earlier))
                else:
                    crops.append(crop)
                    slots.append((i, len(row) - 1))
            faces.append(row)
        if crops:
            vectors = self.embed_crops(np.stack(crops))
            for (i, j), vec in zip(slots, vectors, strict=True):
                faces[i][j].embedding = vec
        for face, earlier in shared:  # in order: an earlier face is resolved first
            face.embedding = earlier.embedding
        return faces

    def embed_crops(self, crops: np.ndarray) -> np.ndarray:
        """Standardised crops -> unit embeddings, averaged with the mirror image if configured."""
        if not self.settings.embedder.flip_average:
            return self.embedder.embed(crops)
        both = self.embedder.embed(np.concatenate([crops, crops[:, :, ::-1]]))
        summed = both[: len(crops)] + both[len(crops) :]
        return summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)

    def analyze(
        self, frames: Sequence[np.ndarray], embed_rejected: bool = False
    ) -> list[list[Face]]:
        return self.embed_detections(frames, self.detect(frames), embed_rejected)

    def analyze_bytes(self, data: bytes, embed_rejected: bool = False) -> list[Face]:
        return self.analyze([self.decode(data)], embed_rejected)[0]

    def single_face(self, data: bytes) -> Face:
        """Exactly one acceptable face (enrollment): else NoFaceFound / MoreThanOneFace /
        LowQualityFace with the reasons."""
        faces = self.analyze_bytes(data, embed_rejected=False)
        if not faces:
            raise NoFaceFound("no face found in the image")
        if len(faces) > 1:
            raise MoreThanOneFace(f"{len(faces)} faces found; exactly one is required")
        return _acceptable(faces[0])

    def largest_face(self, data: bytes) -> Face:
        """The largest acceptable face: a photo with bystanders, or verification of an
        ordinary photo. NoFaceFound / LowQualityFace (every face's reasons) otherwise."""
        faces = self.analyze_bytes(data, embed_rejected=False)
        ok = [f for f in faces if f.embedding is not None]
        if ok:
            return max(ok, key=lambda f: f.detection.width * f.detection.height)
        if not faces:
            raise NoFaceFound("no face found in the image")
        reasons = sorted({r for f in faces for r in f.quality.reasons})
        raise LowQualityFace(f"{len(faces)} face(s) found, none passes quality checks", reasons)

    def cropped_face(self, data: bytes) -> Face:
        """The whole image as the face, without detection (``face_is_cropped``: the caller
        cropped it already). The size and sharpness gates still apply."""
        image = self.decode(data)
        h, w = image.shape[:2]
        whole = Detection(box=(0.0, 0.0, float(w), float(h)), score=1.0)
        return _acceptable(self.embed_detections([image], [[whole]])[0][0])


def _acceptable(face: Face) -> Face:
    if not face.quality.ok:
        raise LowQualityFace(
            "the face fails quality checks: " + "; ".join(face.quality.reasons),
            list(face.quality.reasons),
        )
    return face


def primary_detection(dets: Sequence[Detection], shape: tuple[int, ...]) -> Detection | None:
    """The face a portrait is about: the largest box containing the image centre, else the
    largest box."""
    if not dets:
        return None
    h, w = shape[:2]
    central = [d for d in dets if d.box[0] <= w / 2 <= d.box[2] and d.box[1] <= h / 2 <= d.box[3]]
    return max(central or list(dets), key=lambda d: d.width * d.height)
