"""``facerec demo``: enroll the celebrity5 train photos, build and publish a snapshot, then
run the recognition job on its embedded default: two cameras read by the job itself, a
walk-through video built from the (never enrolled) val photos and real street footage.

The demo keeps its own stores under ``<data_dir>/demo``, apart from the people a user
enrolled, and a second run reuses what the first enrolled."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer

from facerec.config import Settings, api_key_hash
from jobs import sample_data
from jobs.cli.common import ConfigOpt, fail, flags, settings
from jobs.cli.job import run_job

PHOTOS_PER_PERSON = 8


def enroll_folder(demo_settings: Settings, folder: Path) -> tuple[int, int]:
    """Enroll ``folder/<identity>/*.jpg`` (person id = folder name), leaving people an
    earlier demo run enrolled alone; returns (new people, templates). Photos without exactly
    one good face are passed over with the reason."""
    from jobs.cli.services import enrollment_service

    with enrollment_service(demo_settings) as service:
        report = service.import_tree(folder, limit=PHOTOS_PER_PERSON, skip_existing=True)
        service.publish_snapshot()
    return len(report.created), report.templates


def first_seconds(video: Path, seconds: float, folder: Path) -> Path:
    """``video`` cut to its first ``seconds`` (MJPG in ``folder``), or ``video`` itself when
    it is no longer: the job plays every camera to the end of the longest, and the street
    footage (80 s of vtest.avi) would otherwise keep the demo running long after the
    walk-through."""
    import cv2

    capture = cv2.VideoCapture(str(video))
    try:
        rate = capture.get(cv2.CAP_PROP_FPS) or 10.0
        keep = int(seconds * rate)
        if not capture.isOpened() or capture.get(cv2.CAP_PROP_FRAME_COUNT) <= keep:
            return video
        clip = folder / f"{video.stem}.avi"
        ok, frame = capture.read()
        if not ok:
            return video
        size = (frame.shape[1], frame.shape[0])
        writer = cv2.VideoWriter(str(clip), cv2.VideoWriter.fourcc(*"MJPG"), rate, size)
        for _ in range(keep):
            writer.write(frame)
            ok, frame = capture.read()
            if not ok:
                break
        writer.release()
        return clip
    finally:
        capture.release()


def demo(
    config: ConfigOpt = None,
    faces: Annotated[
        Path | None, typer.Option(help="Faces folder with celebrity5/ (else faces_dir).")
    ] = None,
    videos: Annotated[
        Path | None, typer.Option(help="Videos folder (else videos_dir).")
    ] = None,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="After the run, keep the API and the review UI up on the demo's stores "
            "(api.host:api.port) until Ctrl-C.",
        ),
    ] = False,
) -> None:
    """Enroll sample people, publish a snapshot, and run the job on two cameras."""
    from jobs.walkthrough import Segment, write_face_video
    from udfs.evaluation import list_identities

    s = settings(config, flags(faces_dir=faces, videos_dir=videos))
    celebrity5 = sample_data.faces_dir(s.faces_dir) / "celebrity5"
    if not celebrity5.is_dir():
        raise fail(
            f"sample faces not found at {celebrity5}: run `make setup` (fetches them into "
            f"{sample_data.cache_dir()}), pass --faces or set faces_dir (FACEREC_FACES_DIR)",
            2,
        )
    demo_dir = s.data_dir / "demo"
    demo_key = None
    configured = [k for k in s.api.keys if not k.is_placeholder]
    if serve and not configured:
        # a key for this session only, so that the UI opens without configuring one (and
        # without the development placeholder, which nobody should have to know)
        demo_key = secrets.token_urlsafe(18)
    keys = None
    if demo_key:  # its hash only: the settings then hold no key, as production wants
        keys = [{"name": "demo", "key_hash": api_key_hash(demo_key), "role": "admin"}]
    # Every frame analysed: the demo's cameras start playing while TensorFlow loads, and a
    # live job would shed the frames that queue meanwhile (job.latency_budget_ms), which on
    # a short recording is most of the people walking through.
    demo_settings = settings(
        config, flags(data_dir=demo_dir, **{"api.keys": keys, "job.latency_budget_ms": 0})
    )
    demo_dir.mkdir(parents=True, exist_ok=True)
    typer.echo(f"demo data: {demo_dir}")

    people, templates = enroll_folder(demo_settings, celebrity5 / "train")
    typer.echo(f"enrolled {people} new people, {templates} templates; snapshot published")

    val = list_identities(celebrity5 / "val")
    walk = demo_dir / "walkthrough.avi"
    fps = 10.0
    frames = write_face_video(walk, [Segment(n, val[n][0], 10, 20) for n in sorted(val)], fps)
    sources = [str(walk)]
    street = sample_data.street_video(s.videos_dir)
    if street is not None:
        sources.append(str(first_seconds(street, len(frames) / fps, demo_dir)))
    typer.echo(f"cameras: {', '.join(sources)} (every frame analysed: no latency budget)\n")
    run_job(demo_settings, "video:" + ",".join(sources))
    if serve:
        serve_review(demo_settings, demo_key)
    else:
        typer.echo(
            "\nTo see the sightings with their faces in the review UI: facerec demo --serve "
            "(make demo DEMO_FLAGS=--serve)"
        )


def serve_review(demo_settings: Settings, demo_key: str | None) -> None:
    """The API and its review UI on the demo's stores, until interrupted."""
    from api.app import create_app
    from jobs.cli.api import run_guarded

    host, port = demo_settings.api.host, demo_settings.api.port
    typer.echo(f"\nreview UI: http://{host}:{port}/ui  (API docs: http://{host}:{port}/docs)")
    if demo_key:
        typer.echo(f"sign in with the demo's admin key (valid while this runs): {demo_key}")
    else:
        typer.echo("sign in with one of the configured api.keys")
    typer.echo("Ctrl-C stops it.")
    run_guarded(create_app(demo_settings), demo_settings.api, log_level="warning")
