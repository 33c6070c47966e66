"""Test and benchmark scenes beyond the demo's walk-through: crowds of people on screen at
once, and galleries embedded straight from photo folders (no enrollment store)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from jobs.walkthrough import place


def write_crowd_video(
    path: Path,
    photos: list[tuple[str, Path]],
    frames: int,
    grid: tuple[int, int],
    fps: float = 10.0,
    size: tuple[int, int] = (640, 480),
) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Write an MJPG .avi of ``rows x cols`` people at once (``photos`` fills the grid row by
    row), each drifting a few pixels from frame to frame. Returns, per grid cell, who stands
    there and the cell's box (x1, y1, x2, y2): the truth for every frame."""
    rows, cols = grid
    if len(photos) < rows * cols:
        raise ValueError(f"a {rows}x{cols} crowd needs {rows * cols} photos, got {len(photos)}")
    width, height = size
    cell_w, cell_h = width // cols, height // rows
    drift = max(2, min(cell_w, cell_h) // 20)
    cells, tiles = [], []
    for k, (identity, image) in enumerate(photos[: rows * cols]):
        photo = cv2.imread(str(image))
        if photo is None:
            raise FileNotFoundError(image)
        scale = min((cell_w - 2 * drift) / photo.shape[1], (cell_h - 2 * drift) / photo.shape[0])
        tiles.append(cv2.resize(photo, (int(photo.shape[1] * scale), int(photo.shape[0] * scale))))
        x, y = (k % cols) * cell_w, (k // cols) * cell_h
        cells.append((identity, (x, y, x + cell_w, y + cell_h)))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {path} with the MJPG codec")
    for i in range(frames):
        frame = np.full((height, width, 3), 60, np.uint8)
        for k, ((_, (x, y, _, _)), tile) in enumerate(zip(cells, tiles, strict=True)):
            dx = round(drift * np.sin(0.5 * i + k))
            dy = round(drift * np.cos(0.5 * i + k))
            ox = x + (cell_w - tile.shape[1]) // 2 + dx
            oy = y + (cell_h - tile.shape[0]) // 2 + dy
            place(frame, tile, ox, oy)
        writer.write(frame)
    writer.release()
    return cells


CELEBRITY5_THRESHOLD = 1.05
"""The match threshold of the tests that show celebrity5 val photos to a gallery of its train
photos and check the job's plumbing (sources, state, sinks, failures), not the threshold:
at the default 0.90 (chosen for galleries of 100 people on LFW, README "Open-set
identification") one of these five people's first val photo is missed (madonna, stage
make-up), which is the threshold working, not the plumbing failing."""


def gallery_from_photos(
    engine, train_dir: Path, per_person: int, names: list[str] | None = None, skip: int = 0
) -> tuple[list[str], list[str], np.ndarray]:
    """(template ids, person ids, vectors) of the first ``per_person`` usable photos of each
    ``train_dir/<identity>/`` (after ``skip``); photos without one good face are passed over."""
    from facerec.errors import FaceRecError
    from udfs.evaluation import list_identities

    tids: list[str] = []
    pids: list[str] = []
    vecs: list[np.ndarray] = []
    for name, paths in list_identities(train_dir).items():
        if names is not None and name not in names:
            continue
        kept = 0
        for p in paths[skip:]:
            if kept == per_person:
                break
            try:
                face = engine.single_face(p.read_bytes())
            except FaceRecError:
                continue
            tids.append(f"{name}-{p.stem[:16]}")
            pids.append(name)
            vecs.append(face.embedding)
            kept += 1
    return tids, pids, np.stack(vecs)
