"""``facerec config``, ``facerec analyze`` and ``facerec eval``: look at the configuration
and at what the face engine makes of images."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from jobs.cli.common import ConfigOpt, fail, flags, settings


def show_config(config: ConfigOpt = None) -> None:
    """Print the effective configuration (defaults, file, environment) as JSON."""
    typer.echo(settings(config).model_dump_json(indent=2))


def analyze(
    images: Annotated[list[Path], typer.Argument(help="Image files to analyse.")],
    config: ConfigOpt = None,
) -> None:
    """Detect, quality-check and embed the faces in images; one JSON line per image."""
    from facerec.errors import FaceRecError
    from udfs.engine import FaceEngine

    engine = FaceEngine(settings(config))
    for path in images:
        try:
            faces = engine.analyze_bytes(path.read_bytes())
        except (FaceRecError, OSError) as exc:
            reason = exc.reason if isinstance(exc, FaceRecError) else "io"
            typer.echo(json.dumps({"image": str(path), "error": reason, "message": str(exc)}))
            continue
        found = [
            {
                "box": [round(v, 1) for v in f.box],
                "score": round(f.detection.score, 4),
                "quality": f.quality.as_dict(),
                "embedded": f.embedding is not None,
            }
            for f in faces
        ]
        typer.echo(json.dumps({"image": str(path), "faces": found}))


def evaluate(
    dataset: Annotated[
        Path, typer.Argument(help="identity/*.jpg folder, or one with train/ and val/")
    ],
    out: Annotated[Path, typer.Option(help="Where eval.json and roc.png go.")] = Path(
        "reports/eval"
    ),
    detector: Annotated[
        str | None, typer.Option(help="Override the configured detector type.")
    ] = None,
    lfw: Annotated[
        Path | None, typer.Option(help="LFW folder with pairs.txt for the View-2 protocol.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Verification, identification and open-set accuracy on a labelled folder."""
    from udfs.engine import FaceEngine
    from udfs.evaluation import evaluate_folder, format_table

    s = settings(config, flags(**{"detector.type": detector}))
    for path in (dataset, lfw):
        if path is not None and not path.is_dir():
            raise fail(f"{path} is not a directory", 2)
    pairs = lfw / "pairs.txt" if lfw else None
    if pairs is not None and not pairs.is_file():
        raise fail(f"{pairs} not found", 2)
    report = evaluate_folder(FaceEngine(s), dataset, out, lfw_pairs=pairs)
    typer.echo(format_table(report))
    typer.echo(f"\nwritten: {out / 'eval.json'}, {out / 'roc.png'}")
