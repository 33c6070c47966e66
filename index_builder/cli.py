"""``facerec index build|list|verify|gc`` and ``facerec people list|delete``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from udfs.errors import FaceRecError

app = typer.Typer(help="Annoy index snapshots: build, list, verify, gc.", no_args_is_help=True)
people_app = typer.Typer(help="Enrolled people (the store).", no_args_is_help=True)
ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration file (else $FACEREC_CONFIG)."),
]


def _settings(config: Path | None):  # noqa: ANN202
    from jobs.cli import _settings as load

    return load(config)


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(1)


@app.command()
def build(
    config: ConfigOpt = None,
    n_trees: Annotated[int | None, typer.Option(help="Override index.n_trees.")] = None,
    model_id: Annotated[str | None, typer.Option(help="Default: the FaceNet model id.")] = None,
    publish: Annotated[bool, typer.Option(help="Publish the manifest.")] = True,
) -> None:
    """Snapshot every template of the model now; publish the manifest; gc old snapshots."""
    from index_builder.publish import IndexPublisher
    from index_builder.snapshot import build_snapshot, snapshots_dir
    from index_builder.store import EnrollmentStore
    from udfs.models import FACENET_MODEL_ID

    settings = _settings(config)
    store = EnrollmentStore.from_settings(settings)
    try:
        info = build_snapshot(
            store,
            snapshots_dir(settings),
            model_id or FACENET_MODEL_ID,
            n_trees=n_trees or settings.index.n_trees,
            seed=settings.index.seed,
            keep=settings.index.keep,
        )
    finally:
        store.close()
    if publish:
        publisher = IndexPublisher.from_settings(settings)
        try:
            publisher.publish_snapshot(info)
        finally:
            publisher.close()
    typer.echo(json.dumps({"path": str(info.path), **info.manifest}, indent=2))


@app.command("list")
def list_(config: ConfigOpt = None) -> None:
    """Snapshots on disk, oldest first."""
    from index_builder.snapshot import list_snapshots, snapshots_dir

    for s in list_snapshots(snapshots_dir(_settings(config))):
        m = s.manifest
        typer.echo(
            f"{s.snapshot_id}  {m['count']:>9} templates  seq<={m['max_change_seq']:<8} "
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
    from index_builder.snapshot import list_snapshots, snapshots_dir, verify_snapshot
    from udfs.models import FACENET_MODEL_ID

    root = snapshots_dir(_settings(config))
    if snapshot is None:
        paths = [s.path for s in list_snapshots(root)]
    else:
        paths = [Path(snapshot) if Path(snapshot).is_dir() else root / snapshot]
    if not paths:
        raise _fail(f"no snapshot in {root}")
    bad = 0
    for p in paths:
        try:
            verify_snapshot(p, model_id=FACENET_MODEL_ID, dim=512)
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
    from index_builder.snapshot import gc_snapshots, snapshots_dir

    settings = _settings(config)
    for p in gc_snapshots(snapshots_dir(settings), keep or settings.index.keep):
        typer.echo(f"removed {p}")


@people_app.command("list")
def people_list(config: ConfigOpt = None, limit: int = 50, offset: int = 0) -> None:
    """One JSON line per person."""
    from index_builder.store import EnrollmentStore

    store = EnrollmentStore.from_settings(_settings(config))
    people, total = store.list_people(limit=limit, offset=offset)
    for p in people:
        typer.echo(
            json.dumps(
                {
                    "id": p.id,
                    "display_name": p.display_name,
                    "external_ref": p.external_ref,
                    "templates": p.template_count,
                }
            )
        )
    typer.echo(f"{len(people)} of {total}", err=True)


@people_app.command("delete")
def people_delete(person_id: str, config: ConfigOpt = None) -> None:
    """Erase a person (templates removed, tombstone published)."""
    from index_builder.publish import IndexPublisher
    from index_builder.store import EnrollmentStore

    settings = _settings(config)
    store = EnrollmentStore.from_settings(settings)
    try:
        change = store.delete_person(person_id)
    except FaceRecError as exc:
        raise _fail(exc.message) from exc
    publisher = IndexPublisher.from_settings(settings)
    try:
        publisher.publish_delete(change)
    finally:
        publisher.close()
    typer.echo(f"erased {person_id} (seq {change.seq})")
