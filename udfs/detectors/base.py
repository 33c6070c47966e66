"""The detector plugin interface and its registry.

A detector turns a batch of BGR uint8 frames into, per frame, a list of ``Detection``
(pixel boxes, a score, and landmarks where the model gives them). Plugins register
themselves under the ``type`` of their config model; ``create_detector`` picks one.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]
    """x1, y1, x2, y2 in pixels of the input frame."""
    score: float
    landmarks: tuple[tuple[float, float], ...] | None = field(default=None)
    """Pixel keypoints; for BlazeFace: right eye, left eye, nose, mouth, right ear, left ear
    (right/left of the person)."""

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def eyes(self) -> tuple[tuple[float, float], tuple[float, float]] | None:
        """(right eye, left eye) of the person, when the detector gives landmarks."""
        if not self.landmarks or len(self.landmarks) < 2:
            return None
        return self.landmarks[0], self.landmarks[1]


class Detector(ABC):
    """Finds faces. Implementations must be safe to call with an empty batch."""

    name: str = "?"

    @abstractmethod
    def detect(self, frames: Sequence[np.ndarray]) -> list[list[Detection]]:
        """One list of detections per frame, best score first."""


_REGISTRY: dict[str, Callable[[Any], Detector]] = {}
PLUGINS = ("ssd", "blazeface")
"""Modules of udfs/detectors/ that register a detector."""


def register(kind: str) -> Callable[[type[Detector]], type[Detector]]:
    def wrap(cls: type[Detector]) -> type[Detector]:
        _REGISTRY[kind] = cls
        cls.name = kind
        return cls

    return wrap


def create_detector(config: Any) -> Detector:
    """Build the detector selected by ``config.type`` (importing the plugins on first use)."""
    _load_plugins()
    try:
        factory = _REGISTRY[config.type]
    except KeyError:
        raise ValueError(
            f"unknown detector type {config.type!r}; known: {sorted(_REGISTRY)}"
        ) from None
    return factory(config)


def available() -> list[str]:
    _load_plugins()
    return sorted(_REGISTRY)


def _load_plugins() -> None:
    """Each plugin module registers its detector when imported; importing them only on
    first use keeps OpenCV's DNN and TFLite out of processes that never detect."""
    for name in PLUGINS:
        importlib.import_module(f"udfs.detectors.{name}")


def clip_box(box: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) for v in box)
    return (
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
        min(max(x2, 0.0), width),
        min(max(y2, 0.0), height),
    )
