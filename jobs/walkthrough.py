"""The demo's walk-through scene: real face photos sliding in and standing still, written as a
video with its ground truth (who is on screen, and whether anything moves). Tests and
benchmarks build their scenes with it too, so the demo shows what they measure."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Segment:
    identity: str
    image: Path
    moving_frames: int
    static_frames: int


def place(canvas: np.ndarray, face: np.ndarray, x: int, y: int) -> None:
    h, w = face.shape[:2]
    canvas[y : y + h, x : x + w] = face


def write_face_video(
    path: Path,
    segments: list[Segment],
    fps: float = 10.0,
    size: tuple[int, int] = (640, 480),
    face_height: int = 240,
) -> list[tuple[str, bool]]:
    """Write an MJPG .avi; returns per frame (identity on screen, moving?). Each segment
    slides the photo in from the left (moving), then holds it still (static)."""
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path} with the MJPG codec")
    background = np.full((height, width, 3), 60, np.uint8)
    cv2.putText(
        background,
        "facerec test scene",
        (10, height - 12),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (200, 200, 200),
        1,
    )
    truth: list[tuple[str, bool]] = []
    for seg in segments:
        photo = cv2.imread(str(seg.image))
        if photo is None:
            raise FileNotFoundError(seg.image)
        scale = face_height / photo.shape[0]
        photo = cv2.resize(photo, (max(1, int(photo.shape[1] * scale)), face_height))
        photo = photo[:, : min(photo.shape[1], width - 20)]
        y = (height - face_height) // 2
        end_x = (width - photo.shape[1]) // 2
        for i in range(seg.moving_frames):
            frame = background.copy()
            x = int(end_x * (i + 1) / max(seg.moving_frames, 1))
            place(frame, photo, x, y)
            writer.write(frame)
            truth.append((seg.identity, True))
        still = background.copy()
        place(still, photo, end_x, y)
        for _ in range(seg.static_frames):
            writer.write(still)
            truth.append((seg.identity, False))
    writer.release()
    return truth
