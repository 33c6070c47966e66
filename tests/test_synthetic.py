"""The benchmark scenes built from real photos: a crowd video shows every person of its grid,
each in its own cell, drifting from frame to frame."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from testkit.videos import write_crowd_video
from udfs.evaluation import list_identities

pytestmark = pytest.mark.data


def test_given_crowd_grid_when_written_then_each_cell_holds_one_detectable_moving_face(
    tmp_path, engine, celebrity5
):
    val = list_identities(celebrity5 / "val")
    photos = [(name, paths[0]) for name, paths in sorted(val.items())][:5]
    photos.append((photos[0][0], val[photos[0][0]][1]))
    cells = write_crowd_video(tmp_path / "crowd.avi", photos, frames=4, grid=(2, 3))

    assert [identity for identity, _ in cells] == [identity for identity, _ in photos]
    cap = cv2.VideoCapture(str(tmp_path / "crowd.avi"))
    frames = [cap.read()[1] for _ in range(4)]
    cap.release()
    assert all(f is not None and f.shape == (480, 640, 3) for f in frames)
    assert np.abs(frames[0].astype(int) - frames[1].astype(int)).mean() > 1, "faces must drift"

    faces = engine.analyze(frames[:1])[0]
    centres = [((f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2) for f in faces]
    held = [
        sum(1 for cx, cy in centres if x1 <= cx < x2 and y1 <= cy < y2)
        for _, (x1, y1, x2, y2) in cells
    ]
    assert held == [1] * 6, held


def test_given_too_few_photos_when_crowd_written_then_clear_error(tmp_path, celebrity5):
    val = list_identities(celebrity5 / "val")
    name, paths = next(iter(val.items()))
    with pytest.raises(ValueError, match="2x3 crowd needs 6 photos"):
        write_crowd_video(tmp_path / "crowd.avi", [(name, paths[0])], frames=2, grid=(2, 3))
