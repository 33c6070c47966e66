"""``facerec analyze`` as a user runs it: every input analysed, and the exit status says
whether any of them failed."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from jobs.cli.main import app
from udfs.image import encode_jpeg


def test_given_an_input_that_is_not_an_image_when_analysing_then_others_done_and_exit_1(
    tmp_path, engine, monkeypatch
):
    import udfs.engine

    # the session's engine stands in for the one the command would load (same settings)
    monkeypatch.setattr(udfs.engine, "FaceEngine", lambda _settings: engine)
    photo = tmp_path / "grey.jpg"
    photo.write_bytes(encode_jpeg(np.full((120, 160, 3), 90, np.uint8), 90))
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    env = {"FACEREC_DATA_DIR": str(tmp_path), "FACEREC_CONFIG": ""}

    ok = CliRunner().invoke(app, ["analyze", str(photo)], env=env)
    assert ok.exit_code == 0, ok.output
    r = CliRunner().invoke(
        app, ["analyze", str(text), str(photo), str(tmp_path / "gone.jpg")], env=env
    )

    assert r.exit_code == 1, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [(d["image"], d.get("error")) for d in lines] == [
        (str(text), "invalid_image"),
        (str(photo), None),
        (str(tmp_path / "gone.jpg"), "io"),
    ]
    assert lines[1]["faces"] == []
    assert "2 of 3 images could not be analysed" in r.stderr
