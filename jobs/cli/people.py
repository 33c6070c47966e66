"""``facerec people list|add|import|faces|remove-face|delete``: enrolled people, through the
same ``EnrollmentService`` as the API (jobs/cli/services.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from facerec.errors import FaceRecError
from jobs.cli.common import ConfigOpt, audited, fail, settings, tell_enrollment_store

if TYPE_CHECKING:
    from index_builder.enrollment import FaceChoice, Photo

app = typer.Typer(help="Enrolled people (the store).", no_args_is_help=True)

LargestOpt = Annotated[
    bool,
    typer.Option(
        "--largest-face",
        help="Enroll the largest acceptable face of each photo instead of refusing photos "
        "with several faces (bystanders).",
    ),
]
CroppedOpt = Annotated[
    bool,
    typer.Option(
        "--face-is-cropped",
        help="Each photo is the face already (an ID photo, a crop): no detection.",
    ),
]


def _choice(largest_face: bool, face_is_cropped: bool) -> FaceChoice:
    """The API's two enrollment options as one choice (they exclude each other there too)."""
    if largest_face and face_is_cropped:
        raise fail("--largest-face and --face-is-cropped exclude each other", 2)
    return "cropped" if face_is_cropped else "largest" if largest_face else "single"


def _refusal(photo: Photo, exc: FaceRecError) -> str:
    reasons = getattr(exc, "reasons", None)
    why = f" ({', '.join(reasons)})" if reasons else ""
    return f"refused {photo.label}: {exc.reason}: {exc.message}{why}"


@app.command("list")
def people_list(config: ConfigOpt = None, limit: int = 50, offset: int = 0) -> None:
    """One JSON line per person."""
    from index_builder.store import EnrollmentStore

    s = settings(config)
    tell_enrollment_store(s)
    with audited(s, "people.read", "people list") as involved:
        store = EnrollmentStore.from_settings(s)
        try:
            people, total = store.list_people(limit=limit, offset=offset)
        finally:
            store.close()
        involved.update(p.id for p in people)
    for p in people:
        line = {
            "id": p.id,
            "display_name": p.display_name,
            "external_ref": p.external_ref,
            "templates": p.template_count,
        }
        typer.echo(json.dumps(line))
    typer.echo(f"{len(people)} of {total}", err=True)


@app.command("add")
def people_add(
    name: Annotated[str, typer.Argument(help="The person's name ('Ada Lovelace').")],
    photos: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, readable=True, help="Photos of the person."),
    ],
    person_id: Annotated[
        str | None,
        typer.Option("--id", help="Person id; default: from the name ('ada_lovelace')."),
    ] = None,
    largest_face: LargestOpt = False,
    face_is_cropped: CroppedOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Enroll PHOTO... for NAME, creating the person when missing. Every photo with one
    acceptable face becomes a template; the others are listed with the reason, and the
    command then exits 1."""
    from index_builder.enrollment import Photo
    from jobs.cli.services import enrollment_service

    choice = _choice(largest_face, face_is_cropped)
    s = settings(config)
    tell_enrollment_store(s)
    with audited(s, "enroll", "people add") as involved, enrollment_service(s) as service:
        try:
            person, created = service.ensure_person(name, person_id)
            involved.add(person.id)
            enrolled = service.enroll(
                person.id,
                [Photo(str(p), p.read_bytes()) for p in photos],
                all_or_nothing=False,
                choice=choice,
            )
        except (FaceRecError, ValueError) as exc:
            raise fail(getattr(exc, "message", str(exc))) from exc
        state = "created" if created else "existing"
        typer.echo(f"{state} person {person.id} ({person.display_name})")
        for t in enrolled.templates:
            typer.echo(f"template {t.id}  sha256 {t.image_sha256[:12]}")
        for photo, why in enrolled.refused:
            typer.secho(_refusal(photo, why), fg=typer.colors.RED, err=True)
        _notes(enrolled.published, enrolled.evidence_stored)
        typer.echo(f"{len(enrolled.templates)} enrolled, {len(enrolled.refused)} refused")
        if enrolled.refused:  # the record's outcome: the first refusal's reason
            raise typer.Exit(1) from enrolled.refused[0][1]


@app.command("import")
def people_import(
    folder: Annotated[
        Path,
        typer.Argument(
            exists=True, file_okay=False, help="A folder of <name>/*.jpg: one person a folder."
        ),
    ],
    limit: Annotated[
        int | None, typer.Option(min=1, help="Templates per person at most.")
    ] = None,
    skip_existing: Annotated[
        bool, typer.Option(help="Leave people who exist already alone.")
    ] = False,
    largest_face: LargestOpt = False,
    face_is_cropped: CroppedOpt = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    config: ConfigOpt = None,
) -> None:
    """Enroll a tree of photos, FOLDER/<name>/*.jpg, creating each person when missing
    (person id from the folder name). Every refused photo is reported with the reason; the
    command exits 1 if any photo was refused."""
    from tqdm import tqdm

    from jobs.cli.services import enrollment_service
    from udfs.evaluation import list_identities

    choice = _choice(largest_face, face_is_cropped)
    total = sum(len(paths) for paths in list_identities(folder).values())
    if total == 0:
        raise fail(f"no photos in {folder}: expected {folder}/<name>/*.jpg", 2)
    s = settings(config)
    tell_enrollment_store(s)
    with (
        audited(s, "enroll", "people import") as involved,
        enrollment_service(s) as service,
        tqdm(total=total, desc="import", unit="photo", disable=not progress) as bar,
    ):

        def step(person_id: str, photo: Photo | None) -> None:
            involved.add(person_id)
            bar.set_postfix_str(person_id, refresh=False)
            bar.update(1)

        try:
            report = service.import_tree(
                folder, limit=limit, skip_existing=skip_existing, choice=choice, progress=step
            )
        except (FaceRecError, ValueError) as exc:
            raise fail(getattr(exc, "message", str(exc))) from exc
        for pid in sorted(report.enrolled):
            new = " (new)" if pid in report.created else ""
            typer.echo(f"{pid}{new}: {report.enrolled[pid]} template(s)")
        for pid in report.skipped_people:
            typer.echo(f"{pid}: exists, skipped")
        for pid, photo, why in report.refused:
            typer.secho(f"{pid}: {_refusal(photo, why)}", fg=typer.colors.RED, err=True)
        _notes(report.published, True)
        typer.echo(
            f"{len(report.enrolled)} people ({len(report.created)} new), {report.templates} "
            f"templates, {len(report.refused)} photos refused"
        )
        if report.refused:  # the record's outcome: the first refusal's reason
            raise typer.Exit(1) from report.refused[0][2]


@app.command("faces")
def people_faces(person_id: str, config: ConfigOpt = None) -> None:
    """One JSON line per template of the person: id, when, the source photo's sha256 and
    where its face crop is kept."""
    from jobs.cli.services import enrollment_service

    s = settings(config)
    tell_enrollment_store(s)
    with (
        audited(s, "people.read", "people faces", [person_id]),
        enrollment_service(s) as service,
    ):
        try:
            service.store.get_person(person_id)
            templates = service.store.list_templates(person_id)
        except FaceRecError as exc:
            raise fail(exc.message) from exc
        for t in templates:
            key = service.crop_key(t)
            line = {
                "id": t.id,
                "created_at": t.created_at.isoformat(),
                "image_sha256": t.image_sha256,
                "model_id": t.model_id,
                "crop_key": key,
                "crop_stored": service.evidence.exists(key),
            }
            typer.echo(json.dumps(line))
        where = service.evidence.describe()
        typer.echo(f"{len(templates)} template(s); evidence: {where}", err=True)


@app.command("remove-face")
def people_remove_face(person_id: str, template_id: str, config: ConfigOpt = None) -> None:
    """Remove one template and its face crop; a snapshot without it is published."""
    from jobs.cli.services import enrollment_service

    s = settings(config)
    tell_enrollment_store(s)
    with (
        audited(s, "template.remove", "people remove-face", [person_id]),
        enrollment_service(s) as service,
    ):
        try:
            removed = service.remove_template(person_id, template_id)
        except FaceRecError as exc:
            raise fail(exc.message) from exc
    note = "" if removed.published else " (snapshot not published: the next one leaves it out)"
    typer.echo(f"removed template {template_id} of {person_id} (seq {removed.change.seq}){note}")


@app.command("delete")
def people_delete(person_id: str, config: ConfigOpt = None) -> None:
    """Erase a person (templates and face crops removed, tombstone published)."""
    from jobs.cli.services import enrollment_service

    s = settings(config)
    tell_enrollment_store(s)
    with (
        audited(s, "erase", "people delete", [person_id]) as involved,
        enrollment_service(s) as service,
    ):
        try:
            erased = service.erase(person_id)
        except FaceRecError as exc:
            raise fail(exc.message) from exc
        # the person is gone: the record names their tombstone, as the API's does
        involved.clear()
        involved.add(erased.tombstone_id)
    note = "" if erased.published else " (tombstone not published: the next snapshot erases)"
    typer.echo(
        f"erased {person_id} (seq {erased.change.seq}; {erased.evidence_removed} evidence "
        f"object(s) removed){note}"
    )


def _notes(published: bool, evidence_stored: bool) -> None:
    if not published:
        typer.secho(
            "note: not every delta was published; the next snapshot includes the templates",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if not evidence_stored:
        typer.secho(
            "note: not every face crop reached the evidence store (see the log)",
            fg=typer.colors.YELLOW,
            err=True,
        )
