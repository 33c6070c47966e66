"""``facerec``: the single entry point for users."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from facerec.config import Settings, load_settings

app = typer.Typer(help="facerec: real-time face recognition on Apache Flink.", no_args_is_help=True)
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration file (else $FACEREC_CONFIG)."),
]


def _settings(config: Path | None, **overrides) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v is not None})
    except Exception as exc:  # a bad config is the user's to fix: say what, not a traceback
        typer.secho(f"configuration error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command("config")
def show_config(config: ConfigOpt = None) -> None:
    """Print the effective configuration (file + environment) as JSON."""
    typer.echo(_settings(config).model_dump_json(indent=2))


@app.command()
def analyze(
    images: Annotated[list[Path], typer.Argument(help="Image files to analyse.")],
    config: ConfigOpt = None,
) -> None:
    """Detect, quality-check and embed the faces in images; one JSON line per image."""
    from udfs.engine import FaceEngine
    from udfs.errors import FaceRecError

    engine = FaceEngine(_settings(config))
    for path in images:
        try:
            faces = engine.analyze_bytes(path.read_bytes())
        except (FaceRecError, OSError) as exc:
            typer.echo(
                json.dumps(
                    {"image": str(path), "error": getattr(exc, "reason", "io"), "message": str(exc)}
                )
            )
            continue
        typer.echo(
            json.dumps(
                {
                    "image": str(path),
                    "faces": [
                        {
                            "box": [round(v, 1) for v in f.box],
                            "score": round(f.detection.score, 4),
                            "quality": f.quality.as_dict(),
                            "embedded": f.embedding is not None,
                        }
                        for f in faces
                    ],
                }
            )
        )


@app.command("eval")
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
    from facerec.evaluation import evaluate_folder, format_table
    from udfs.engine import FaceEngine

    settings = _settings(config, detector={"type": detector} if detector else None)
    for path in (dataset, lfw):
        if path is not None and not path.is_dir():
            typer.secho(f"{path} is not a directory", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
    pairs = lfw / "pairs.txt" if lfw else None
    if pairs is not None and not pairs.is_file():
        typer.secho(f"{pairs} not found", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    report = evaluate_folder(FaceEngine(settings), dataset, out, lfw_pairs=pairs)
    typer.echo(format_table(report))
    typer.echo(f"\nwritten: {out / 'eval.json'}, {out / 'roc.png'}")


def _register_subcommands() -> None:
    from jobs.demo import demo
    from jobs.job_cli import app as job_app

    app.command("demo")(demo)
    app.add_typer(job_app, name="job")
    from api.cli import serve as api_serve
    from index_builder.cli import app as index_app
    from index_builder.cli import people_app

    app.add_typer(index_app, name="index")
    app.add_typer(people_app, name="people")
    app.command("api")(api_serve)
    from jobs.ingest_cli import ingest

    app.command("ingest")(ingest)
    from jobs.replay_cli import app as replay_app

    app.add_typer(replay_app, name="replay")


_register_subcommands()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
