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
    """Detect, quality-check and embed the faces in images; one JSON line per image. Exits 1
    when any image could not be read or decoded (after analysing the others)."""
    from facerec.errors import FaceRecError
    from udfs.engine import FaceEngine

    engine = FaceEngine(settings(config))
    failed = 0
    for path in images:
        try:
            faces = engine.analyze_bytes(path.read_bytes())
        except (FaceRecError, OSError) as exc:
            reason = exc.reason if isinstance(exc, FaceRecError) else "io"
            typer.echo(json.dumps({"image": str(path), "error": reason, "message": str(exc)}))
            failed += 1
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
    if failed:
        raise fail(f"{failed} of {len(images)} images could not be analysed")


def _ints(text: str, name: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise fail(f"--{name}: expected comma-separated integers, got {text!r}", 2) from None
    if not values or min(values) < 1:
        raise fail(f"--{name}: expected positive integers, got {text!r}", 2)
    return values


def evaluate(
    dataset: Annotated[
        Path, typer.Argument(help="identity/*.jpg folder, or one with train/ and val/")
    ],
    out: Annotated[
        Path, typer.Option(help="Where eval.json, roc.png and open_set.png go.")
    ] = Path("reports/eval"),
    detector: Annotated[
        str | None, typer.Option(help="Override the configured detector type.")
    ] = None,
    lfw: Annotated[
        Path | None,
        typer.Option(
            help="LFW folder: View-2 protocol (pairs.txt) and the open-set protocol at "
            "realistic gallery sizes."
        ),
    ] = None,
    open_set: Annotated[
        Path | None,
        typer.Option(
            "--open-set",
            help="identity/*.jpg folder for the open-set protocol (default: the --lfw folder).",
        ),
    ] = None,
    sizes: Annotated[
        str, typer.Option(help="Open set: people enrolled, comma-separated.")
    ] = "10,100,1000",
    seeds: Annotated[int, typer.Option(min=1, help="Open set: seeded draws per size.")] = 5,
    gallery: Annotated[
        str, typer.Option(help="Open set: photos enrolled per person, N or LOW-HIGH.")
    ] = "1-3",
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Embedding cache (default <data_dir>/cache/embeddings); reruns embed nothing."
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Embed everything again.")] = False,
    config: ConfigOpt = None,
) -> None:
    """Verification, identification and open-set accuracy on a labelled folder; with
    --lfw also LFW View-2 and open-set identification at gallery sizes 10, 100, 1000."""
    from udfs.engine import FaceEngine
    from udfs.evaluation import OpenSetPlan, evaluate_folder, format_table

    low, _, high = gallery.partition("-")
    per_person = _ints(low, "gallery")[0], _ints(high or low, "gallery")[0]
    if per_person[0] > per_person[1]:
        raise fail(f"--gallery: expected N or LOW-HIGH with LOW <= HIGH, got {gallery!r}", 2)
    enrolled = _ints(sizes, "sizes")
    s = settings(config, flags(**{"detector.type": detector}))
    open_root = open_set or lfw
    for path in (dataset, lfw, open_root):
        if path is not None and not path.is_dir():
            raise fail(f"{path} is not a directory", 2)
    pairs = lfw / "pairs.txt" if lfw else None
    if pairs is not None and not pairs.is_file():
        raise fail(f"{pairs} not found", 2)
    plan = (
        OpenSetPlan(
            open_root,
            sizes=enrolled,
            seeds=tuple(range(seeds)),
            gallery_per_person=per_person,
            threshold=s.match.threshold,
        )
        if open_root is not None
        else None
    )
    cache = None if no_cache else (cache_dir or s.data_dir / "cache" / "embeddings")
    report = evaluate_folder(
        FaceEngine(s), dataset, out, lfw_pairs=pairs, open_set=plan, cache_dir=cache
    )
    typer.echo(format_table(report))
    written = [out / "eval.json", out / "roc.png"]
    if report.get("open_set", {}).get("curve_png"):
        written.append(Path(report["open_set"]["curve_png"]))
    typer.echo(f"\nwritten: {', '.join(map(str, written))}")
