"""``facerec sightings``: list sightings from the event store with the filters of ``GET
/sightings``, as a table or JSON lines, and follow new and updated ones (``--follow``)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from facerec.errors import FaceRecError
from jobs.cli.common import ConfigOpt, audited, fail, settings, tell_event_store

if TYPE_CHECKING:
    from facerec.eventstore import EventStore, SightingQuery
    from facerec.records import Sighting

COLUMNS = (
    ("first seen (UTC)", 19),
    ("camera", 12),
    ("region", 10),
    ("identity", 16),
    ("status", 6),
    ("frames", 6),
    ("dist", 5),
    ("review", 6),
    ("sighting", 32),
)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def row(s: Sighting) -> str:
    """One sighting as a table row (``COLUMNS``)."""
    dist = f"{s.best_distance:.3f}" if math.isfinite(s.best_distance) else "-"
    review = str(s.review.get("action", "yes")) if s.review else ""
    cells = (
        _when(s.first_seen_ms),
        s.camera_id,
        s.region,
        s.identity,
        s.status,
        str(s.frames),
        dist,
        review,
        s.sighting_id,
    )
    return "  ".join(c.ljust(w) for c, (_, w) in zip(cells, COLUMNS, strict=True)).rstrip()


def header() -> str:
    return "  ".join(name.ljust(w) for name, w in COLUMNS).rstrip()


def _page(store: EventStore, query: SightingQuery, limit: int) -> list[Sighting]:
    """The newest ``limit`` matching sightings, newest first."""
    out: list[Sighting] = []
    cursor = None
    while len(out) < limit:
        page, cursor = store.search_sightings(
            query, limit=min(1000, limit - len(out)), cursor=cursor
        )
        out += page
        if cursor is None:
            break
    return out


def follow(
    store: EventStore,
    query: SightingQuery,
    seen: dict[str, int],
    emit: Callable[[Sighting], None],
    *,
    window: int,
    interval: float,
    max_seconds: float | None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Poll the newest ``window`` sightings every ``interval`` s and ``emit`` each one new
    or updated since it was last seen (``seen``: sighting id -> updated_ms), oldest update
    first, until ``max_seconds`` pass (None: until interrupted). How many were emitted."""
    started = time.monotonic()
    emitted = 0
    while max_seconds is None or time.monotonic() - started < max_seconds:
        sleep(interval)
        fresh = [s for s in _page(store, query, window) if seen.get(s.sighting_id) != s.updated_ms]
        for s in sorted(fresh, key=lambda s: (s.updated_ms, s.sighting_id)):
            seen[s.sighting_id] = s.updated_ms
            emit(s)
            emitted += 1
    return emitted


def sightings(
    camera: Annotated[str | None, typer.Option("--camera", help="Camera id.")] = None,
    region: Annotated[str | None, typer.Option(help="Region.")] = None,
    person: Annotated[
        str | None, typer.Option("--person", help="Person id (or 'unknown').")
    ] = None,
    unknown: Annotated[
        bool | None,
        typer.Option("--unknown/--named", help="Only unknown faces / only named ones."),
    ] = None,
    start_ms: Annotated[
        int | None, typer.Option("--start-ms", min=0, help="First seen >= (epoch ms).")
    ] = None,
    end_ms: Annotated[
        int | None, typer.Option("--end-ms", min=0, help="First seen < (epoch ms).")
    ] = None,
    since: Annotated[
        float | None,
        typer.Option(min=0, help="First seen in the last SINCE minutes (instead of --start-ms)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=0, max=10_000, help="Sightings listed.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a line.")] = False,
    follow_: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Then print new and updated sightings as they "
            "come (polls every --interval s; Ctrl-C stops).",
        ),
    ] = False,
    interval: Annotated[float, typer.Option(min=0.05, help="Seconds between polls.")] = 1.0,
    window: Annotated[
        int,
        typer.Option(
            min=1, max=10_000, help="--follow watches the newest WINDOW sightings for updates."
        ),
    ] = 200,
    max_seconds: Annotated[
        float | None, typer.Option(min=0, help="--follow stops after this many seconds.")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Sightings, newest first (one per person per appearance before a camera): the filters
    of GET /sightings. The table marks reviewed sightings (assign / reject)."""
    from facerec.eventstore import SightingQuery, open_event_store
    from facerec.records import now_ms

    if since is not None:
        if start_ms is not None:
            raise fail("--since and --start-ms exclude each other", 2)
        start_ms = now_ms() - int(since * 60_000)
    try:
        query = SightingQuery(
            camera_id=camera,
            region=region,
            identity=person,
            unknown=unknown,
            start_ms=start_ms,
            end_ms=end_ms,
        )
    except FaceRecError as exc:
        raise fail(exc.message, 2) from exc
    s = settings(config)
    tell_event_store(s)

    # --follow is recorded when it stops, with everyone it showed
    with audited(s, "sightings.search", "sightings", [person] if person else []) as involved:

        def emit(sighting: Sighting) -> None:
            involved.add(sighting.identity)
            typer.echo(sighting.to_json() if as_json else row(sighting))

        store = open_event_store(s)
        try:
            # one read for the listing and what --follow starts from: nothing written between
            # the two is missed
            watched = _page(store, query, max(limit, window) if follow_ else limit)
            listed = watched[:limit]
            if listed and not as_json:
                typer.echo(header())
            for sighting in reversed(listed) if follow_ else listed:  # following: oldest first
                emit(sighting)
            if not follow_:
                typer.echo(f"{len(listed)} sighting(s)", err=True)
                return
            if not listed and not as_json:
                typer.echo(header())
            seen = {x.sighting_id: x.updated_ms for x in watched}
            typer.echo(f"following (every {interval:g} s; Ctrl-C stops)", err=True)
            try:
                follow(
                    store,
                    query,
                    seen,
                    emit,
                    window=window,
                    interval=interval,
                    max_seconds=max_seconds,
                )
            except KeyboardInterrupt:
                pass
        finally:
            store.close()
