"""``facerec index build|list|verify|gc`` (``facerec people``: jobs/cli/people.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from facerec.errors import FaceRecError
from jobs.cli.common import ConfigOpt, fail, flags, settings, tell_enrollment_store

app = typer.Typer(help="Annoy index snapshots: build, list, verify, gc.", no_args_is_help=True)


@app.command()
def build(
    config: ConfigOpt = None,
    n_trees: Annotated[int | None, typer.Option(help="Override index.n_trees.")] = None,
    model_id: Annotated[str | None, typer.Option(help="Default: the FaceNet model id.")] = None,
    publish: Annotated[bool, typer.Option(help="Publish the manifest.")] = True,
) -> None:
    """Snapshot every template of the model now; publish the manifest; gc old snapshots."""
    from facerec.models import FACENET_MODEL_ID
    from index_builder.snapshot import build_snapshot, index_options
    from jobs.cli.services import enrollment_service

    s = settings(config, flags(**{"index.n_trees": n_trees}))
    tell_enrollment_store(s)
    with enrollment_service(s) as service:
        if publish:
            info = service.publish_snapshot(model_id or FACENET_MODEL_ID)
        else:
            cfg = s.index
            info = build_snapshot(
                service.store,
                s.snapshots_path(),
                model_id or FACENET_MODEL_ID,
                keep=cfg.keep,
                **index_options(cfg),
            )
    typer.echo(json.dumps({"path": str(info.path), **info.manifest}, indent=2))


@app.command("list")
def list_(config: ConfigOpt = None) -> None:
    """Snapshots on disk, oldest first."""
    from index_builder.snapshot import list_snapshots

    for snap in list_snapshots(settings(config).snapshots_path()):
        m = snap.manifest
        typer.echo(
            f"{snap.snapshot_id}  {m['count']:>9} templates  seq<={m['max_change_seq']:<8} "
            f"{m['model_id']}  n_trees={m.get('n_trees')}"
        )


@app.command()
def verify(
    snapshot: Annotated[
        str | None, typer.Argument(help="Snapshot id or path; default all.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Check every file's sha256, the dimension and the model id."""
    from facerec.models import EMBEDDING_DIM, FACENET_MODEL_ID
    from facerec.snapshot_format import verify_snapshot
    from index_builder.snapshot import list_snapshots

    root = settings(config).snapshots_path()
    if snapshot is None:
        paths = [s.path for s in list_snapshots(root)]
    else:
        paths = [Path(snapshot) if Path(snapshot).is_dir() else root / snapshot]
    if not paths:
        raise fail(f"no snapshot in {root}")
    bad = 0
    for p in paths:
        try:
            verify_snapshot(p, model_id=FACENET_MODEL_ID, dim=EMBEDDING_DIM)
            typer.echo(f"ok   {p}")
        except FaceRecError as exc:
            bad += 1
            typer.secho(f"BAD  {exc.message}", fg=typer.colors.RED)
    if bad:
        raise typer.Exit(1)


@app.command()
def gc(
    config: ConfigOpt = None,
    keep: Annotated[int | None, typer.Option(help="Override index.keep.")] = None,
) -> None:
    """Remove all but the newest snapshots."""
    from index_builder.snapshot import gc_snapshots

    s = settings(config, flags(**{"index.keep": keep}))
    for p in gc_snapshots(s.snapshots_path(), s.index.keep):
        typer.echo(f"removed {p}")
