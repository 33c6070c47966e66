"""Clusters of unknown faces: the strangers who keep coming back, grouped so that someone
can name them, and named in one step (``enroll``).

**What is clustered.** Every unknown sighting (``identity == unknown``) whose best face crop
is in the evidence store. The crop is embedded again here with the engine's cropped-face
path (``cropped_face``, as ``SightingReview.assign`` enrolls a crop), so no embedding of a
stranger travels in Kafka; the vector is kept with the model id that made it, and a row of
another model is embedded again. Clustering is ``udfs.unknown_clusters`` (average linkage
at ``unknowns.cluster_threshold``, default ``match.threshold``); its docstring has the
measurements.

**Storage.** One row per unknown sighting in the enrollment store's database
(``unknown_faces``: embedding, cluster id, camera, first/last seen, quality, or why its crop
could not be embedded) and two counters (``unknown_meta``: ``next_cluster_id``, and
``generation``, bumped by every write). Memory holds the same state; a process that finds
the generation moved (another API process wrote) reloads it, and every write first bumps
the generation in its transaction, which serialises writers on SQLite and PostgreSQL alike.

**Catching up (``refresh``)** reads the event store, never the other way round:

* it re-reads the unknown sightings first seen within ``unknowns.lookback_s`` of the newest
  one it knows (one indexed query, newest first, paged with cursors): new ones are embedded
  and clustered oldest first (cluster ids grow with time); a known one that changed crop
  (``best_quality``, ``evidence_key``) is embedded again; one no longer there was named (by
  the job while open, or by a review) and leaves its cluster;
* sightings still open outside that window are read one by one until closed, and so are
  the ones a review of this process touched (``SightingReview.listeners``): an assign
  removes a face at the next refresh, a reject of a match adds one;
* every ``unknowns.sweep_interval_s`` (and first after a start) it reads every unknown
  sighting in retention instead: sightings named by another process, expired ones, and
  sightings published long after they began are settled then.

With nothing new, a refresh is one short query plus a read per open sighting: no
embedding, no write. Embedding happens outside every lock but the refresh's own, in small
batches each applied in one transaction, so the clusters can be read while a backlog is
embedded. One refresh (or enroll) runs at a time.

**Naming a cluster (``enroll``)** creates the person (or adds to an existing one), enrolls
the best ``unknowns.max_templates`` crops by quality through ``SightingReview.assign`` (so
through ``EnrollmentService``: templates stored, crops kept, enroll deltas published, and
the job and the API's matcher know the person at once), and assigns every other member
without a template. A member named meanwhile by someone else is left alone. The cluster is
then gone.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np
from sqlalchemy import Connection, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from facerec.config import Settings
from facerec.errors import FaceRecError
from facerec.eventstore import SightingQuery
from facerec.eventstore.base import MAX_LIMIT
from facerec.models import FACENET_MODEL_ID, pipeline_model_id
from facerec.records import UNKNOWN, Sighting
from index_builder.periodic import PeriodicTask
from index_builder.review import EventStoreFn, ReservedPersonId, SightingReview
from index_builder.schema import unknown_faces, unknown_meta
from index_builder.store import DuplicatePerson, EnrollmentStore, Person, PersonNotFound
from udfs.engine import Face
from udfs.match import is_negative
from udfs.unknown_clusters import UnknownClusters

log = logging.getLogger(__name__)
SAMPLES = 6
"""Sample sightings per cluster in a listing."""
_BATCH = 16
"""Crops embedded before their faces are applied (and readers see them)."""
_IN_CHUNK = 500
"""Ids per ``IN (...)`` list."""


class UnknownClusterNotFound(FaceRecError):
    """No cluster of unknown faces with this id (never made, merged into another, or
    enrolled)."""

    reason = "cluster_not_found"


class CropEmbedder(Protocol):
    """The engine's cropped-face path (``Services`` serialises it behind its lock)."""

    def cropped_face(self, data: bytes) -> Face: ...


@dataclass(frozen=True)
class UnknownCluster:
    cluster_id: int
    size: int
    """Sightings in the cluster."""
    first_seen_ms: int
    last_seen_ms: int
    cameras: list[str]
    """Cameras that saw it, sorted."""
    sample_sighting_ids: list[str]
    """At most ``SAMPLES`` members, best face quality first (their crops:
    ``/sightings/{id}/image``)."""


@dataclass(frozen=True)
class UnknownMember:
    sighting_id: str
    camera_id: str
    region: str
    first_seen_ms: int
    last_seen_ms: int
    quality: float
    status: str


@dataclass(frozen=True)
class UnknownClusterDetail(UnknownCluster):
    sighting_ids: list[str]
    """Every member, best face quality first."""
    members: list[UnknownMember]
    """The same order."""


@dataclass(frozen=True)
class ClusterEnrolled:
    """What ``enroll`` did."""

    cluster_id: int
    person_id: str
    display_name: str
    created: bool
    """The person was created (else the cluster was added to them)."""
    template_ids: list[str]
    assigned: list[str]
    """Sightings now assigned to the person."""
    refused: list[tuple[str, str]]
    """(sighting id, why): crops that did not become templates (expired, failing a gate)."""
    skipped: list[tuple[str, str]]
    """(sighting id, why): members left alone (named meanwhile, or expired)."""
    published: bool
    """Every template reached the index log (else the next snapshot carries it)."""


@dataclass(frozen=True)
class Refreshed:
    """What one ``refresh`` did."""

    scanned: int = 0
    """Sightings read from the event store."""
    embedded: int = 0
    """Crops embedded (engine calls)."""
    added: int = 0
    """Faces new to the clusters."""
    moved: int = 0
    """Faces embedded again (a better crop, another model)."""
    refused: int = 0
    """Crops that could not be embedded (none kept, expired, failing a quality gate)."""
    left: int = 0
    """Faces that left their cluster (named, expired)."""
    swept: bool = False
    """Every unknown sighting in retention was read (else the recent ones)."""
    complete: bool = True
    """False: stopped early (``max_seconds``, shutdown); the next refresh goes on."""
    skipped: bool = False
    """Another refresh was running and ``wait`` was False: nothing was done."""


@dataclass(frozen=True)
class _Row:
    """One unknown sighting as kept: what its face was embedded from, and where it went."""

    sighting_id: str
    cluster_id: int | None
    model_id: str | None
    camera_id: str
    region: str
    first_seen_ms: int
    last_seen_ms: int
    quality: float
    evidence_key: str | None
    status: str
    refused: str | None

    @classmethod
    def of(
        cls, s: Sighting, cluster_id: int | None, model_id: str | None, refused: str | None
    ) -> _Row:
        return cls(
            s.sighting_id,
            cluster_id,
            model_id,
            s.camera_id,
            s.region,
            s.first_seen_ms,
            s.last_seen_ms,
            float(s.best_quality),
            s.evidence_key,
            s.status,
            refused,
        )

    def member(self) -> UnknownMember:
        return UnknownMember(
            self.sighting_id,
            self.camera_id,
            self.region,
            self.first_seen_ms,
            self.last_seen_ms,
            self.quality,
            self.status,
        )


@dataclass(frozen=True)
class _Change:
    """What a refresh or an enroll asks of the state (``_apply``)."""

    kind: Literal["gone", "meta", "embed", "refuse"]
    """gone: no longer unknown (or expired); meta: times or status changed; embed: its
    face, embedded; refuse: its crop could not be embedded (``why``)."""
    sighting_id: str
    sighting: Sighting | None = None
    vector: np.ndarray | None = field(default=None, repr=False)
    model_id: str | None = None
    why: str | None = None


def _best_first(rows: Iterable[_Row]) -> list[_Row]:
    return sorted(rows, key=lambda r: (-r.quality, r.sighting_id))


def _chunks(items: Sequence[str], n: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


class UnknownFaces:
    """The clusters of unknown faces of one site: ``refresh``, ``clusters``, ``cluster``,
    ``enroll``. Thread-safe."""

    def __init__(
        self,
        settings: Settings,
        store: EnrollmentStore,
        events: EventStoreFn,
        faces: CropEmbedder,
        review: SightingReview,
        model_id: str | None = None,
    ) -> None:
        """``model_id``: what ``faces`` embeds with; default: the engine's for these
        settings (known without loading it)."""
        self.settings, self.store, self.events = settings, store, events
        self.faces, self.review = faces, review
        self.model_id = model_id or pipeline_model_id(FACENET_MODEL_ID, settings.align)
        cfg = settings.unknowns
        self.threshold = cfg.cluster_threshold or settings.match.threshold
        self._clusters = UnknownClusters(self.threshold)
        self._rows: dict[str, _Row] = {}
        self._generation = -1  # the database's generation memory reflects; -1: load
        self._last_sweep: float | None = None
        self._pending: set[str] = set()
        self._pending_lock = threading.Lock()
        self._refresh_lock = threading.Lock()  # one refresh or enroll at a time
        self._state_lock = threading.RLock()  # memory and its database rows
        self._background = PeriodicTask("unknown-faces", self.refresh)

    # ------------------------------------------------------------------ reading
    def clusters(self, limit: int = 50, *, min_size: int = 1) -> list[UnknownCluster]:
        """The clusters with at least ``min_size`` sightings, newest ``last_seen_ms`` first
        (ties: the newer id), at most ``limit``."""
        self._sync()
        with self._state_lock:
            found = [
                self._summary(cid)
                for cid in self._clusters.cluster_ids()
                if len(self._clusters.members(cid)) >= min_size
            ]
        found.sort(key=lambda c: (c.last_seen_ms, c.cluster_id), reverse=True)
        return found[:limit]

    def cluster(self, cluster_id: int) -> UnknownClusterDetail:
        """One cluster with all its members; ``UnknownClusterNotFound`` when there is none."""
        self._sync()
        with self._state_lock:
            rows = self._member_rows(cluster_id)
            summary = self._summary(cluster_id)
        return UnknownClusterDetail(
            **vars(summary),
            sighting_ids=[r.sighting_id for r in rows],
            members=[r.member() for r in rows],
        )

    def _member_rows(self, cluster_id: int) -> list[_Row]:
        ids = self._clusters.members(cluster_id)
        if not ids:
            raise UnknownClusterNotFound(
                f"no cluster of unknown faces with id {cluster_id} (merged into another, "
                "or enrolled)"
            )
        return _best_first(self._rows[sid] for sid in ids)

    def _summary(self, cluster_id: int) -> UnknownCluster:
        rows = self._member_rows(cluster_id)
        return UnknownCluster(
            cluster_id=cluster_id,
            size=len(rows),
            first_seen_ms=min(r.first_seen_ms for r in rows),
            last_seen_ms=max(r.last_seen_ms for r in rows),
            cameras=sorted({r.camera_id for r in rows}),
            sample_sighting_ids=[r.sighting_id for r in rows[:SAMPLES]],
        )

    # ------------------------------------------------------------------ catching up
    def reviewed(self, sighting: Sighting) -> None:
        """A review changed ``sighting`` (``SightingReview.listeners``): a named one leaves
        its cluster now; either way the next refresh reads it again (a refresh under way
        may have read it before the review; a rejected match becomes an unknown face)."""
        with self._pending_lock:
            self._pending.add(sighting.sighting_id)
        if sighting.identity != UNKNOWN:
            with self._state_lock:
                if sighting.sighting_id in self._rows:
                    self._apply([_Change("gone", sighting.sighting_id)])

    def refresh(self, *, wait: bool = True, max_seconds: float | None = None) -> Refreshed:
        """Catch up with the event store (module docstring). ``wait=False``: return at once
        (``skipped``) when another refresh or an enroll is running. ``max_seconds``: stop
        embedding after this long (a backlog); what is done is kept, the rest follows."""
        if not self._refresh_lock.acquire(blocking=wait):
            return Refreshed(skipped=True)
        try:
            return self._refresh(max_seconds)
        finally:
            self._refresh_lock.release()

    def _refresh(self, max_seconds: float | None) -> Refreshed:
        began = time.monotonic()
        self._sync()
        cfg = self.settings.unknowns
        with self._state_lock:
            rows = dict(self._rows)
        newest = max((r.first_seen_ms for r in rows.values()), default=None)
        sweep = (
            newest is None
            or self._last_sweep is None
            or began - self._last_sweep >= cfg.sweep_interval_s
        )
        start = None if sweep or newest is None else max(0, newest - int(cfg.lookback_s * 1000))
        with self._pending_lock:
            pending, self._pending = self._pending, set()

        seen = {s.sighting_id: s for s in self._scan(start)}
        scanned = len(seen)
        gone = {
            sid
            for sid, row in rows.items()
            if sid not in seen and (start is None or row.first_seen_ms >= start)
        }
        open_rows = {sid for sid, row in rows.items() if row.status != "closed"}
        store = self.events()
        for sid in sorted((pending | open_rows) - seen.keys() - gone):
            s = store.get_sighting(sid)
            scanned += 1
            if s is not None and s.identity == UNKNOWN:
                seen[s.sighting_id] = s
            elif sid in rows:
                gone.add(sid)

        to_embed: list[Sighting] = []
        items = [_Change("gone", sid) for sid in sorted(gone)]
        for s in sorted(seen.values(), key=lambda s: (s.first_seen_ms, s.sighting_id)):
            row = rows.get(s.sighting_id)
            if row is None or self._stale(row, s):
                to_embed.append(s)
            elif (row.last_seen_ms, row.status, row.camera_id, row.region) != (
                s.last_seen_ms,
                s.status,
                s.camera_id,
                s.region,
            ):
                items.append(_Change("meta", s.sighting_id, s))
        counts = self._apply(items) if items else {}

        embedded, complete = 0, True
        for i in range(0, len(to_embed), _BATCH):
            late = max_seconds is not None and time.monotonic() - began > max_seconds
            if late or self._background.stopping.is_set():
                complete = False
                break
            batch: list[_Change] = []
            for s in to_embed[i : i + _BATCH]:
                item, called = self._embed(s)
                batch.append(item)
                embedded += called
            for kind, n in self._apply(batch).items():
                counts[kind] = counts.get(kind, 0) + n
        if sweep and complete:
            self._last_sweep = began
        done = Refreshed(
            scanned=scanned,
            embedded=embedded,
            added=counts.get("added", 0),
            moved=counts.get("moved", 0),
            refused=counts.get("refused", 0),
            left=counts.get("left", 0),
            swept=sweep,
            complete=complete,
        )
        if items or to_embed:
            log.info("unknown faces: %s", done)
        return done

    def _scan(self, start_ms: int | None) -> Iterator[Sighting]:
        """Every unknown sighting first seen at or after ``start_ms`` (None: all)."""
        store, cursor = self.events(), None
        query = SightingQuery(unknown=True, start_ms=start_ms)
        while True:
            page, cursor = store.search_sightings(query, limit=MAX_LIMIT, cursor=cursor)
            yield from page
            if cursor is None:
                return

    def _stale(self, row: _Row, s: Sighting) -> bool:
        """The row's face is not the sighting's current crop as this model embeds it."""
        return (
            row.model_id != self.model_id
            or row.evidence_key != s.evidence_key
            or row.quality != float(s.best_quality)
        )

    def _embed(self, s: Sighting) -> tuple[_Change, bool]:
        """The sighting's face as clustered, and whether the engine was called."""
        called = False
        try:
            crop = self.review.crop(s)
            called = True
            face = self.faces.cropped_face(crop)
        except FaceRecError as exc:
            log.info("unknown sighting %s not clustered: %s", s.sighting_id, exc.message)
            why = f"{exc.reason}: {exc.message}"[:500]
            return _Change("refuse", s.sighting_id, s, model_id=self.model_id, why=why), called
        assert face.embedding is not None  # cropped_face answers embedded faces only
        if face.model_id != self.model_id:
            log.warning(
                "the engine embeds with model %s, not %s: unknown faces follow the engine",
                face.model_id,
                self.model_id,
            )
            self.model_id = face.model_id
        return _Change("embed", s.sighting_id, s, face.embedding, face.model_id), called

    # ------------------------------------------------------------------ naming
    def enroll(
        self,
        cluster_id: int,
        display_name: str,
        person_id: str | None = None,
        *,
        by: str,
    ) -> ClusterEnrolled:
        """Name the cluster: the person ``person_id`` (created with ``display_name`` when
        missing; None: a new person with a new id) gets the best ``unknowns.max_templates``
        crops as templates, and every member is assigned to them. The cluster is gone."""
        if person_id is not None and is_negative(person_id):
            raise ReservedPersonId(f"person id {person_id!r} is reserved for rejected faces")
        with self._refresh_lock:
            self._sync()
            with self._state_lock:
                members = self._member_rows(cluster_id)
            person, created = self._person(display_name, person_id)
            limit = self.settings.unknowns.max_templates
            templates: list[str] = []
            assigned: list[str] = []
            refused: list[tuple[str, str]] = []
            skipped: list[tuple[str, str]] = []
            published = True
            store = self.events()
            try:
                for row in members:
                    sid = row.sighting_id
                    s = store.get_sighting(sid)
                    if s is None:
                        skipped.append((sid, "sighting_not_found: expired"))
                        continue
                    if s.identity != UNKNOWN:
                        skipped.append((sid, f"named: {s.identity}"))
                        continue
                    make = len(templates) < limit
                    done = self.review.assign(sid, person.id, by=by, template=make)
                    assigned.append(sid)
                    published &= done.published
                    if done.template_id is not None:
                        templates.append(done.template_id)
                    elif make:
                        why = (done.sighting.review or {}).get("template_refused", "")
                        refused.append((sid, str(why)))
            finally:
                # the members dealt with leave; any left (a failure) stay for another try
                handled = assigned + [sid for sid, _ in skipped]
                if handled:
                    self._apply([_Change("gone", sid) for sid in handled])
                with self._pending_lock:
                    self._pending.difference_update(handled)
        log.info(
            "cluster %d enrolled as %s by %s: %d templates, %d sightings assigned",
            cluster_id,
            person.id,
            by,
            len(templates),
            len(assigned),
        )
        return ClusterEnrolled(
            cluster_id=cluster_id,
            person_id=person.id,
            display_name=person.display_name,
            created=created,
            template_ids=templates,
            assigned=assigned,
            refused=refused,
            skipped=skipped,
            published=published,
        )

    def _person(self, display_name: str, person_id: str | None) -> tuple[Person, bool]:
        people = self.review.enrollment.store
        if person_id is None:
            return people.create_person(display_name), True
        try:
            return people.get_person(person_id), False
        except PersonNotFound:
            pass
        try:
            return people.create_person(display_name, person_id=person_id), True
        except DuplicatePerson:  # created meanwhile
            return people.get_person(person_id), False

    # ------------------------------------------------------------------ background
    def start(self, interval_s: float) -> None:
        """Refresh every ``interval_s`` in a daemon thread until ``stop`` (0: never)."""
        self._background.start(interval_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the background refresh (a refresh under way stops after its batch)."""
        self._background.stop(timeout_s)

    # ------------------------------------------------------------------ state
    def _sync(self) -> None:
        """Load the state when the database's generation is not the one memory reflects
        (first use, another process wrote, a write of ours failed)."""
        with self._state_lock:
            with self.store.engine.connect() as conn:
                generation = self._meta(conn).get("generation")
                if generation is None:
                    self._create_meta()
                    generation = 0
                if generation != self._generation:
                    self._load(conn)
                    self._generation = generation

    def _meta(self, conn: Connection) -> dict[str, int]:
        return {n: int(v) for n, v in conn.execute(select(unknown_meta)).all()}

    def _create_meta(self) -> None:
        try:
            with self.store.engine.begin() as conn:
                conn.execute(
                    insert(unknown_meta),
                    [{"name": "generation", "value": 0}, {"name": "next_cluster_id", "value": 1}],
                )
        except IntegrityError:  # another process made them
            pass

    def _load(self, conn: Connection) -> None:
        """Memory from the database: rows of another model stay out of the clusters until
        embedded again."""
        next_id = self._meta(conn).get("next_cluster_id", 1)
        rows: dict[str, _Row] = {}
        clustered: list[tuple[str, int, np.ndarray]] = []
        query = select(unknown_faces).order_by(
            unknown_faces.c.cluster_id, unknown_faces.c.sighting_id
        )
        for r in conn.execute(query):
            cid = r.cluster_id
            if cid is not None and (r.model_id != self.model_id or r.embedding is None):
                cid = None
            rows[r.sighting_id] = _Row(
                r.sighting_id,
                cid,
                r.model_id,
                r.camera_id,
                r.region,
                int(r.first_seen_ms),
                int(r.last_seen_ms),
                float(r.quality),
                r.evidence_key,
                r.status,
                r.refused,
            )
            if cid is not None:
                clustered.append(
                    (r.sighting_id, int(cid), np.frombuffer(r.embedding, dtype=np.float32))
                )
        self._clusters = UnknownClusters.restore(self.threshold, clustered, next_id=next_id)
        self._rows = rows

    def _apply(self, items: Sequence[_Change]) -> dict[str, int]:
        """Apply ``items`` to memory and the database in one transaction; counts by kind."""
        with self._state_lock:
            try:
                with self.store.engine.begin() as conn:
                    generation = self._bump(conn)
                    if generation != self._generation + 1:  # another process wrote
                        self._load(conn)
                    counts, written, removed = self._mutate(items, conn)
                    self._write(conn, written, removed)
                    conn.execute(
                        update(unknown_meta)
                        .where(unknown_meta.c.name == "next_cluster_id")
                        .values(value=self._clusters.next_id)
                    )
                self._generation = generation
            except BaseException:
                self._generation = -1  # memory may be ahead of the database: reload
                raise
        return counts

    def _bump(self, conn: Connection) -> int:
        """The generation after this write; the row lock it takes serialises writers."""
        row = conn.execute(
            update(unknown_meta)
            .where(unknown_meta.c.name == "generation")
            .values(value=unknown_meta.c.value + 1)
            .returning(unknown_meta.c.value)
        ).first()
        if row is None:
            raise RuntimeError("unknown_meta has no generation row: _sync creates it first")
        return int(row[0])

    def _mutate(
        self, changes: Sequence[_Change], conn: Connection
    ) -> tuple[dict[str, int], set[str], set[str]]:
        """Memory after ``changes`` (merges written at once); the rows to write and to
        delete."""
        counts = {"added": 0, "moved": 0, "refused": 0, "left": 0}
        written: set[str] = set()
        removed: set[str] = set()
        for c in changes:
            sid, s = c.sighting_id, c.sighting
            row = self._rows.get(sid)
            if c.kind == "gone" or s is None:
                if row is None:
                    continue
                if row.cluster_id is not None:
                    self._clusters.remove(sid)
                    counts["left"] += 1
                del self._rows[sid]
                removed.add(sid)
                written.discard(sid)
            elif c.kind == "meta":
                if row is not None:  # (gone meanwhile: another process removed it)
                    self._rows[sid] = replace(
                        _Row.of(s, row.cluster_id, row.model_id, row.refused),
                        quality=row.quality,
                        evidence_key=row.evidence_key,
                    )
                    written.add(sid)
            elif c.kind == "refuse" or c.vector is None:
                if row is not None and row.cluster_id is not None:
                    self._clusters.remove(sid)
                    counts["left"] += 1
                self._rows[sid] = _Row.of(s, None, c.model_id, c.why)
                counts["refused"] += 1
                written.add(sid)
            else:
                if row is not None and sid in self._clusters:
                    placed = self._clusters.update(sid, c.vector)
                    counts["moved"] += 1
                else:
                    placed = self._clusters.add(sid, c.vector)
                    counts["added"] += 1
                self._rows[sid] = _Row.of(s, placed.cluster_id, c.model_id, None)
                written.add(sid)
                if placed.merged:
                    self._merged(conn, placed.cluster_id, placed.merged)
        return counts, written, removed

    def _merged(self, conn: Connection, cluster_id: int, absorbed: tuple[int, ...]) -> None:
        conn.execute(
            update(unknown_faces)
            .where(unknown_faces.c.cluster_id.in_(absorbed))
            .values(cluster_id=cluster_id)
        )
        for sid in self._clusters.members(cluster_id):
            r = self._rows[sid]
            if r.cluster_id != cluster_id:
                self._rows[sid] = replace(r, cluster_id=cluster_id)

    def _write(self, conn: Connection, written: set[str], removed: set[str]) -> None:
        for ids in _chunks(sorted(written | removed), _IN_CHUNK):
            conn.execute(delete(unknown_faces).where(unknown_faces.c.sighting_id.in_(ids)))
        values: list[dict[str, Any]] = []
        for sid in sorted(written):
            r = self._rows[sid]
            vector = self._clusters.vector(sid) if r.cluster_id is not None else None
            values.append(
                {
                    "sighting_id": sid,
                    "cluster_id": r.cluster_id,
                    "embedding": vector.tobytes() if vector is not None else None,
                    "model_id": r.model_id,
                    "camera_id": r.camera_id,
                    "region": r.region,
                    "first_seen_ms": r.first_seen_ms,
                    "last_seen_ms": r.last_seen_ms,
                    "quality": r.quality,
                    "evidence_key": r.evidence_key,
                    "status": r.status,
                    "refused": r.refused,
                }
            )
        if values:
            conn.execute(insert(unknown_faces), values)


__all__ = [
    "ClusterEnrolled",
    "CropEmbedder",
    "Refreshed",
    "UnknownCluster",
    "UnknownClusterDetail",
    "UnknownClusterNotFound",
    "UnknownFaces",
    "UnknownMember",
]
