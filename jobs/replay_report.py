"""Audit replay output: the classification of each face decision (original vs replayed),
the ``decisions.jsonl`` + ``summary.json`` report and its text table. See jobs/replay.py."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from facerec.records import RecognitionEvent, Sighting

COMPARED = ("same", "changed_identity", "newly_matched", "no_longer_matched")
UNPAIRED = ("original_only", "replayed_only", "original_frame_only", "replayed_frame_only")
CLASSIFICATIONS = COMPARED + UNPAIRED


def classify(original: RecognitionEvent, replayed: RecognitionEvent) -> str:
    if original.identity == replayed.identity:
        return "same"
    if original.matched and replayed.matched:
        return "changed_identity"
    return "newly_matched" if replayed.matched else "no_longer_matched"


def _side(e: RecognitionEvent | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"identity": e.identity, "distance": e.distance, "threshold": e.threshold,
            "snapshot_id": e.snapshot_id, "box": list(e.box)}


def compare(
    originals: list[RecognitionEvent], replayed: list[RecognitionEvent], analysed: set[str]
) -> list[dict[str, Any]]:
    """One decision per event id. ``originals`` must already be limited to the replayed
    frames; ``analysed`` are the frame ids the replay's gate passed and the engine analysed."""
    orig = {e.event_id: e for e in originals}
    new = {e.event_id: e for e in replayed}
    orig_frames = {e.frame_id for e in originals}
    out = []
    for event_id in sorted(orig.keys() | new.keys()):
        o, r = orig.get(event_id), new.get(event_id)
        if o is not None and r is not None:
            kind = classify(o, r)
        elif o is not None:
            kind = "original_only" if o.frame_id in analysed else "original_frame_only"
        else:
            assert r is not None
            kind = "replayed_only" if r.frame_id in orig_frames else "replayed_frame_only"
        e = o or r
        assert e is not None
        out.append({
            "event_id": event_id, "classification": kind, "frame_id": e.frame_id,
            "camera_id": e.camera_id, "region": e.region, "capture_ts": e.capture_ts,
            "face_index": e.face_index, "original": _side(o), "replayed": _side(r),
        })
    out.sort(key=lambda d: (d["capture_ts"], d["frame_id"], d["face_index"]))
    return out


def write_report(
    summary: dict[str, Any], decisions: list[dict[str, Any]], out_dir: Path
) -> dict[str, Path]:
    """``decisions.jsonl`` (one line per face decision) and ``summary.json`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = out_dir / "decisions.jsonl"
    with lines.open("w") as f:
        for d in decisions:
            f.write(json.dumps(d, separators=(",", ":")) + "\n")
    table = out_dir / "summary.json"
    table.write_text(json.dumps(summary, indent=2))
    return {"decisions": lines, "summary": table}


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as a small text table."""
    f, ev = summary["frames"], summary["events"]
    rows = [
        ("snapshot", f"{summary['snapshot']['id']} ({summary['snapshot']['chosen_by']})"),
        ("threshold", summary["threshold"]),
        ("records in range", f["records_in_range"]),
        ("frames replayed", f["replayed"]),
        ("  analysed / gated out / dead", f"{f['analysed']} / {f['gated_out']} / "
                                          f"{f['dead_letters']}"),
        ("frames analysed by both", f["analysed_by_both"]),
        ("  original only / replay only", f"{f['original_only']} / "
                                          f"{f['replay_only_with_faces']}"),
        ("events original / replayed", f"{ev['original']} / {ev['replayed']}"),
        ("decisions compared", ev["compared"]),
    ]
    rows += [(f"  {k}", v) for k, v in summary["decisions"].items()]
    if "sightings" in summary:
        si = summary["sightings"]
        rows.append(("sightings original / replayed", f"{si['original']} / {si['replayed']}"))
        rows += [(f"  {k}", si[k]) for k in ("same", "changed_identity", "original_only",
                                             "replayed_only")]
    rows.append(("throughput", f"{summary['throughput_fps']} frames/s "
                               f"({summary['elapsed_s']} s)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def compare_sightings(original: list[Sighting], replayed: list[Sighting]) -> dict[str, Any]:
    """Pair each original sighting with the replayed sighting of its camera that overlaps it
    most in time (ids can differ: the replay's fresh motion gate may start a sighting on
    another frame), and count: same identity, changed identity, original or replayed only."""
    pool: dict[str, list[Sighting]] = {}
    for s in replayed:
        pool.setdefault(s.camera_id, []).append(s)
    counts: Counter[str] = Counter()
    changed = []
    for o in sorted(original, key=lambda s: s.first_seen_ms):

        def overlap(r: Sighting, o: Sighting = o) -> int:
            return min(o.last_seen_ms, r.last_seen_ms) - max(o.first_seen_ms, r.first_seen_ms)

        candidates = [r for r in pool.get(o.camera_id, []) if overlap(r) >= 0]
        if not candidates:
            counts["original_only"] += 1
            continue
        r = max(candidates, key=overlap)
        pool[o.camera_id].remove(r)
        if r.identity == o.identity:
            counts["same"] += 1
        else:
            counts["changed_identity"] += 1
            changed.append({"original": o.sighting_id, "replayed": r.sighting_id,
                            "camera_id": o.camera_id, "first_seen_ms": o.first_seen_ms,
                            "was": o.identity, "now": r.identity})
    counts["replayed_only"] = sum(len(v) for v in pool.values())
    return {
        "original": len(original), "replayed": len(replayed),
        **{k: counts.get(k, 0) for k in ("same", "changed_identity", "original_only",
                                          "replayed_only")},
        "changed": changed[:100],
    }
