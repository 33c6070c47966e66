"""Audit replay: re-run recognition over a past range of the frames topic and compare the
decisions with the ones the job made at the time.

    frames topic [start, end) -> gate -> detect/embed -> match (chosen snapshot)
                                                               -> replayed events
    event store | events topic (same frames)                   -> original events
    -> one decision per event id: same | changed_identity | newly_matched | no_longer_matched
       | original_only | replayed_only | original_frame_only | replayed_frame_only
    event store's sightings begun in the range vs the replay's sightings
    -> paired by camera and overlap in time: same | changed_identity | original_only |
       replayed_only (summary["sightings"])

The stages are the in-process ``RecognitionPipeline`` (no Flink). The snapshot defaults to
the one recorded in the original events of the range (the most used one, if the job swapped
snapshots inside the range), and the threshold to the one they recorded.

Motion gate: the gate is stateful per camera, and a replay starts with a fresh one, so the
first frame of each camera in the range always passes, and the next frames are gated
against a background that differs from the original's until the running average converges
(a few frames). Decisions are therefore compared only for frames both runs analysed (the
original analysed a frame when it has original events): a face in a frame only one side
analysed is reported as ``original_frame_only`` / ``replayed_frame_only`` and counted apart.
Events only tell which frames the original analysed *and found faces in*; a replayed face
in a frame without original events is most likely a frame the original gate dropped.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kafka import KafkaConsumer
from tqdm import tqdm

from facerec.config import Settings
from facerec.errors import BadRecord, SnapshotMismatch
from facerec.eventstore import EventStore, SightingQuery, open_event_store
from facerec.eventstore.base import MAX_LIMIT
from facerec.records import NO_SNAPSHOT, FrameRecord, RecognitionEvent, Sighting, now_ms
from index_builder.snapshot import SnapshotInfo, latest_snapshot, list_snapshots
from jobs.kafka_range import (
    PartitionRange,
    RangeError,
    in_time,
    iso,
    open_consumer,
    peek,
    plan_ranges,
    read_ranges,
)
from jobs.replay_report import (
    CLASSIFICATIONS,
    COMPARED,
    compare,
    compare_sightings,
    write_report,
)
from udfs.match import Matcher
from udfs.pipeline import RecognitionPipeline

log = logging.getLogger(__name__)
ReplayError = RangeError
"""What the CLI reports as a clear message with exit code 2."""
CAPTURE_MARGIN_MS = 60_000
"""Original events are looked up this much around the capture times seen in the range."""
EVENTS_LAG_MS = 600_000
"""From the events topic, events produced up to this long after the last frame are read."""


@dataclass(frozen=True)
class ReplayRequest:
    topic: str
    start_ms: int | None = None
    end_ms: int | None = None
    offsets: dict[int, tuple[int, int]] | None = None
    cameras: frozenset[str] = frozenset()
    regions: frozenset[str] = frozenset()
    snapshot: str | None = None
    """Snapshot id, snapshot directory or ``latest``; None = the original events' one."""
    threshold: float | None = None
    originals: Literal["store", "topic"] = "store"
    events_topic: str | None = None
    out_dir: Path | None = None
    progress: bool = True

    def wants(self, record: FrameRecord) -> bool:
        return (not self.cameras or record.camera_id in self.cameras) and (
            not self.regions or record.region in self.regions
        )


@dataclass
class ReplayReport:
    summary: dict[str, Any]
    decisions: list[dict[str, Any]] = field(default_factory=list)
    replayed: list[RecognitionEvent] = field(default_factory=list)
    originals: list[RecognitionEvent] = field(default_factory=list)
    paths: dict[str, Path] = field(default_factory=dict)


# ----------------------------------------------------------------------------- originals
def _store_events(store: EventStore, start_ms: int, end_ms: int) -> list[RecognitionEvent]:
    out: list[RecognitionEvent] = []
    cursor = None
    while True:
        page, cursor = store.search(start_ms=start_ms, end_ms=end_ms, limit=MAX_LIMIT,
                                    cursor=cursor)
        out.extend(page)
        if cursor is None:
            return out


def _store_sightings(store: EventStore, start_ms: int, end_ms: int) -> list[Sighting]:
    """Sightings begun in ``[start_ms, end_ms]``."""
    found: list[Sighting] = []
    cursor = None
    query = SightingQuery(start_ms=start_ms, end_ms=end_ms + 1)
    while True:
        page, cursor = store.search_sightings(query, limit=MAX_LIMIT, cursor=cursor)
        found += page
        if cursor is None:
            return found


def _topic_events(
    settings: Settings, topic: str, start_ms: int, end_ms: int
) -> list[RecognitionEvent]:
    # events of aborted transactions (an exactly-once sink after a failure) never happened
    consumer = open_consumer(settings.kafka, isolation_level="read_committed")
    try:
        ranges = plan_ranges(consumer, topic, start_ms=start_ms, end_ms=end_ms)
        events: dict[str, RecognitionEvent] = {}
        for record in read_ranges(consumer, topic, ranges):
            try:
                e = RecognitionEvent.from_json(record.value)
            except (ValueError, TypeError, KeyError) as exc:
                log.warning("events topic %s offset %d: not an event (%s)", topic, record.offset,
                            exc)
                continue
            events[e.event_id] = e  # at-least-once duplicates collapse
        return list(events.values())
    finally:
        consumer.close()


@dataclass(frozen=True)
class _Bounds:
    kafka_ts: tuple[int, int]
    capture_ts: tuple[int, int]


def _bounds(consumer: KafkaConsumer, topic: str, ranges: list[PartitionRange]) -> _Bounds:
    """Record and capture times of the first and last record of each partition range."""
    kts, cts = [], []
    for r in ranges:
        if not r.size:
            continue
        for offset in (r.start, r.end - 1):
            record = peek(consumer, topic, r.partition, offset)
            if record is None or record.offset >= r.end:
                continue
            kts.append(record.timestamp)
            try:
                cts.append(FrameRecord.decode(record.value).capture_ts)
            except BadRecord:
                pass
    if not kts:
        raise RangeError(f"could not read the first/last records of the range in {topic!r}")
    cts = cts or kts
    return _Bounds((min(kts), max(kts)), (min(cts), max(cts)))


def load_originals(
    settings: Settings, req: ReplayRequest, bounds: _Bounds
) -> list[RecognitionEvent]:
    """Original events around the range (filtered by camera/region; by frame later)."""
    lo, hi = bounds.capture_ts
    if req.originals == "topic":
        topic = req.events_topic or settings.kafka.events_topic
        k_lo, k_hi = bounds.kafka_ts
        events = _topic_events(settings, topic, k_lo - CAPTURE_MARGIN_MS, k_hi + EVENTS_LAG_MS)
        events = [e for e in events if lo - CAPTURE_MARGIN_MS <= e.capture_ts
                  <= hi + CAPTURE_MARGIN_MS]
    else:
        with open_event_store(settings) as store:
            events = _store_events(store, lo - CAPTURE_MARGIN_MS, hi + CAPTURE_MARGIN_MS + 1)
    return [e for e in events if (not req.cameras or e.camera_id in req.cameras)
            and (not req.regions or e.region in req.regions)]


# ----------------------------------------------------------------------------- snapshot
def resolve_snapshot(
    settings: Settings, spec: str | None, originals: list[RecognitionEvent]
) -> tuple[SnapshotInfo, str]:
    """The snapshot to replay with, and how it was chosen."""
    directory = settings.snapshots_path()
    how = "--snapshot"
    if spec is None:
        used = Counter(e.snapshot_id for e in originals if e.snapshot_id != NO_SNAPSHOT)
        if not used:
            raise ReplayError(
                "no original event in the range names a snapshot to replay with; pass "
                "--snapshot ID (a snapshot id, a snapshot directory, or 'latest')"
            )
        spec, n = used.most_common(1)[0]
        how = "original events" if len(used) == 1 else (
            f"original events (most used: {n} of {sum(used.values())}; also "
            f"{sorted(set(used) - {spec})})")
    if spec == "latest":
        info = latest_snapshot(directory)
        if info is None:
            raise ReplayError(f"no snapshot in {directory}")
        return info, "latest"
    path = Path(spec)
    if path.is_dir() and (path / "manifest.json").is_file():
        return SnapshotInfo(path, json.loads((path / "manifest.json").read_text())), how
    available = list_snapshots(directory)
    for info in available:
        if info.snapshot_id == spec:
            return info, how
    names = [s.snapshot_id for s in available[-10:]]
    raise ReplayError(
        f"unknown snapshot id {spec!r}: not in {directory} (gc'd, or another data_dir?); "
        f"available: {names or 'none'}"
    )


# ----------------------------------------------------------------------------- replay
def _frames(
    records: Iterator[Any], req: ReplayRequest, bar: tqdm, seen: dict[str, FrameRecord],
    counts: Counter[str],
) -> Iterator[bytes]:
    """Payloads of the frames wanted; ``seen`` collects their headers by frame id, ``counts``
    how many records were yielded (duplicates included) or skipped as outside the range."""
    for record in records:
        bar.update(1)
        if not in_time(record, req.start_ms, req.end_ms):
            counts["outside_time"] += 1
            continue
        try:
            frame = FrameRecord.decode(record.value)
        except BadRecord:
            if not req.cameras and not req.regions:
                counts["frames"] += 1
                yield record.value  # becomes a dead letter in the pipeline
            continue
        if req.wants(frame):
            seen[frame.frame_id] = frame
            counts["frames"] += 1
            yield record.value
        else:
            counts["filtered_out"] += 1


def run_replay(settings: Settings, req: ReplayRequest, engine: Any = None) -> ReplayReport:
    """Plan, read, re-run and compare; write ``decisions.jsonl`` and ``summary.json`` under
    ``req.out_dir`` (when given). ``engine`` is created from ``settings`` when None."""
    consumer = open_consumer(settings.kafka)
    try:
        ranges = plan_ranges(consumer, req.topic, start_ms=req.start_ms, end_ms=req.end_ms,
                             offsets=req.offsets)
        total = sum(r.size for r in ranges)
        if total == 0:
            raise ReplayError(
                f"empty range: no frame record in {req.topic!r} between "
                f"{iso(req.start_ms) or 'the beginning'} and {iso(req.end_ms) or 'now'}"
                + (f" at offsets {req.offsets}" if req.offsets else "")
            )
        bounds = _bounds(consumer, req.topic, ranges)
        originals = load_originals(settings, req, bounds)
        info, how = resolve_snapshot(settings, req.snapshot, originals)
        # per camera, the threshold its original events were decided with (cameras can set
        # their own, CameraOptions.match_threshold); --threshold decides every camera
        by_camera: dict[str, Counter[float]] = {}
        for e in originals:
            by_camera.setdefault(e.camera_id, Counter())[e.threshold] += 1
        thresholds = Counter(e.threshold for e in originals)
        threshold = req.threshold or (thresholds.most_common(1)[0][0] if thresholds
                                      else settings.match.threshold)
        camera_thresholds = {} if req.threshold else (
            settings.camera_thresholds()
            | {cam: c.most_common(1)[0][0] for cam, c in by_camera.items()}
        )
        if engine is None:
            from udfs.engine import FaceEngine

            engine = FaceEngine(settings)
        matcher = Matcher.from_config(settings.match, engine.model_id, threshold=threshold)
        try:
            matcher.load_snapshot(info.path)
        except SnapshotMismatch as exc:
            raise ReplayError(f"snapshot {info.snapshot_id} cannot be used: {exc}") from exc
        pipeline = RecognitionPipeline(settings, engine, matcher, camera_thresholds)
        seen: dict[str, FrameRecord] = {}
        tally: Counter[str] = Counter()
        started = time.perf_counter()
        with tqdm(total=total, desc="replay", unit="rec", disable=not req.progress) as bar:
            records = read_ranges(consumer, req.topic, ranges)
            result = pipeline.process(_frames(records, req, bar, seen, tally))
        elapsed = time.perf_counter() - started
        matcher.close()
    finally:
        consumer.close()

    originals = [e for e in originals if e.frame_id in seen]
    analysed = {s.frame_id for s in result.stats if s.passed}
    decisions = compare(originals, result.events, analysed)
    counts = Counter(d["classification"] for d in decisions)
    orig_frames = {e.frame_id for e in originals}
    replay_faces = {e.frame_id for e in result.events}
    frames = tally["frames"]
    summary: dict[str, Any] = {
        "topic": req.topic,
        "range": {"start_ms": req.start_ms, "end_ms": req.end_ms, "start": iso(req.start_ms),
                  "end": iso(req.end_ms), "offsets": [r.as_dict() for r in ranges]},
        "filters": {"cameras": sorted(req.cameras), "regions": sorted(req.regions)},
        "snapshot": {"id": info.snapshot_id, "path": str(info.path), "chosen_by": how},
        "threshold": threshold,
        "camera_thresholds": {k: v for k, v in camera_thresholds.items() if v != threshold},
        "original_source": ("topic:" + (req.events_topic or settings.kafka.events_topic)
                            if req.originals == "topic" else f"store:{settings.events.backend}"),
        "original_snapshots": dict(Counter(e.snapshot_id for e in originals)),
        "frames": {
            "records_in_range": total, "outside_time": tally["outside_time"],
            "filtered_out": tally["filtered_out"], "replayed": frames, "unique": len(seen),
            "analysed": len(analysed), "gated_out": sum(1 for s in result.stats if not s.passed),
            "dead_letters": len(result.dead_letters),
            "with_original_events": len(orig_frames),
            "analysed_by_both": len(orig_frames & analysed),
            "original_only": len(orig_frames - analysed),
            "replay_only_with_faces": len(replay_faces - orig_frames),
        },
        "events": {"original": len(originals), "replayed": len(result.events),
                   "compared": sum(counts[c] for c in COMPARED)},
        "decisions": {c: counts.get(c, 0) for c in CLASSIFICATIONS},
        "elapsed_s": round(elapsed, 3),
        "throughput_fps": round(frames / elapsed, 2) if elapsed > 0 else None,
        "finished_at": iso(now_ms()),
    }
    # sightings: the store's (the events topic carries none) of the cameras replayed,
    # begun inside the range, against the replay's own
    replayed_sightings = {u.sighting.sighting_id: u.sighting for u in result.sightings}
    cameras = {r.camera_id for r in seen.values()}
    with open_event_store(settings) as store:
        stored = _store_sightings(store, *bounds.capture_ts)
    summary["sightings"] = compare_sightings(
        [s for s in stored if s.camera_id in cameras], list(replayed_sightings.values())
    )
    report = ReplayReport(summary, decisions, result.events, originals)
    if req.out_dir is not None:
        report.paths = write_report(report.summary, report.decisions, req.out_dir)
    return report


# ----------------------------------------------------------------------------- events
def replay_events_to_store(
    settings: Settings, topic: str, *, start_ms: int | None = None, end_ms: int | None = None,
    progress: bool = True, batch: int = 500,
) -> dict[str, Any]:
    """Write the events of ``topic`` in the range into the event store (idempotent upsert by
    event id: running it twice, or over at-least-once duplicates, stores each event once;
    events of aborted transactions are not read)."""
    consumer = open_consumer(settings.kafka, isolation_level="read_committed")
    read = invalid = written = 0
    pending: list[RecognitionEvent] = []
    try:
        ranges = plan_ranges(consumer, topic, start_ms=start_ms, end_ms=end_ms)
        total = sum(r.size for r in ranges)
        if total == 0:
            raise ReplayError(f"empty range: no event in {topic!r} between "
                              f"{iso(start_ms) or 'the beginning'} and {iso(end_ms) or 'now'}")
        with open_event_store(settings) as store, tqdm(
            total=total, desc="events", unit="ev", disable=not progress
        ) as bar:
            for record in read_ranges(consumer, topic, ranges):
                bar.update(1)
                if not in_time(record, start_ms, end_ms):
                    continue
                read += 1
                try:
                    pending.append(RecognitionEvent.from_json(record.value))
                except (ValueError, TypeError, KeyError):
                    invalid += 1
                    continue
                if len(pending) >= batch:
                    written += store.write(pending)
                    pending = []
            if pending:
                written += store.write(pending)
    finally:
        consumer.close()
    return {"topic": topic, "offsets": [r.as_dict() for r in ranges], "read": read,
            "invalid": invalid, "written": written}
