"""``facerec demo``: enroll the celebrity5 train photos, build and publish a snapshot, then
run the recognition job on its embedded default: two cameras read by the job itself, a
walk-through video built from the (never enrolled) val photos and real street footage."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from facerec.config import Settings, load_settings

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]


def _shared(env: str, leaf: str) -> Path:
    return Path(os.environ.get(env) or ROOT.parent / "shared" / leaf)


def enroll_folder(settings: Settings, folder: Path, per_person: int = 8) -> tuple[int, int]:
    """Enroll ``folder/<identity>/*.jpg`` (person id = folder name); returns (people,
    templates). Photos without exactly one good face are skipped with the reason."""
    from index_builder.store import DuplicatePerson, EnrollmentStore
    from udfs.engine import FaceEngine
    from udfs.errors import FaceRecError

    engine = FaceEngine(settings)
    store = EnrollmentStore.from_settings(settings)
    people = templates = 0
    try:
        for person_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            name = person_dir.name
            try:
                store.create_person(name.replace("_", " ").title(), person_id=name)
                people += 1
            except DuplicatePerson:
                continue  # enrolled by an earlier demo run
            items = []
            for photo in sorted(person_dir.glob("*.jpg")):
                if len(items) == per_person:
                    break
                data = photo.read_bytes()
                try:
                    face = engine.single_face(data)
                except FaceRecError as exc:
                    log.info("not enrolling %s: %s", photo.name, exc)
                    continue
                items.append(
                    (
                        face.embedding,
                        face.model_id,
                        face.quality.as_dict(),
                        hashlib.sha256(data).hexdigest(),
                    )
                )
            store.add_templates(name, items)
            templates += len(items)
    finally:
        store.close()
        engine.embedder.close()
    return people, templates


def demo(
    config: Annotated[Path | None, typer.Option("--config", "-c")] = None,
    faces: Annotated[
        Path | None, typer.Option(help="Shared faces folder (celebrity5 inside).")
    ] = None,
    videos: Annotated[Path | None, typer.Option(help="Shared videos folder.")] = None,
) -> None:
    """Enroll sample people, publish a snapshot, and run the job on two cameras."""
    from facerec.evaluation import list_identities
    from facerec.synthetic import Segment, write_face_video
    from index_builder.publish import IndexPublisher
    from index_builder.snapshot import build_snapshot, snapshots_dir
    from index_builder.store import EnrollmentStore
    from jobs.job_cli import run_job
    from udfs.models import FACENET_MODEL_ID

    faces = faces or _shared("FACEREC_FACES_DIR", "faces")
    videos = videos or _shared("FACEREC_VIDEOS_DIR", "videos")
    celebrity5 = faces / "celebrity5"
    if not celebrity5.is_dir():
        typer.secho(
            f"sample faces not found at {celebrity5}: pass --faces or set FACEREC_FACES_DIR",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    settings = load_settings(config)
    if "FACEREC_DATA_DIR" not in os.environ and config is None:
        settings = settings.model_copy(update={"data_dir": Path("data/demo")})
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    people, templates = enroll_folder(settings, celebrity5 / "train")
    typer.echo(f"enrolled {people} new people, {templates} templates")
    store = EnrollmentStore.from_settings(settings)
    try:
        info = build_snapshot(
            store,
            snapshots_dir(settings),
            FACENET_MODEL_ID,
            n_trees=settings.index.n_trees,
            seed=settings.index.seed,
            keep=settings.index.keep,
        )
    finally:
        store.close()
    IndexPublisher.from_settings(settings).publish_snapshot(info)
    typer.echo(f"snapshot {info.snapshot_id}: {info.manifest['count']} templates published")

    val = list_identities(celebrity5 / "val")
    walk = settings.data_dir / "walkthrough.avi"
    write_face_video(walk, [Segment(n, val[n][0], 10, 20) for n in sorted(val)], fps=10)
    sources = [str(walk)]
    street = videos / "facenet_pytorch_video.mp4"
    if street.is_file():
        sources.append(str(street))
    typer.echo(f"cameras: {', '.join(sources)}\n")
    run_job(settings, "video:" + ",".join(sources))
