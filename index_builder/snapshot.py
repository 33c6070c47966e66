"""Build, list, verify and garbage-collect Annoy index snapshots.

A build reads every template of one model id up to the change log's current ``seq``
(recorded as ``max_change_seq``), writes the files into a temporary directory beside the
target, then renames it into place: readers never see a half-written snapshot. Builds are
seeded, so the same templates give the same ``index.ann`` bytes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from annoy import AnnoyIndex
from tqdm import tqdm

from facerec.errors import SnapshotMismatch
from facerec.models import EMBEDDING_DIM
from facerec.snapshot_format import (
    DATA_FILES,
    FORMAT_VERSION,
    IDS_FILE,
    INDEX_FILE,
    MANIFEST_FILE,
    METRIC,
    VECTORS_FILE,
    read_manifest,
    sha256_file,
)
from index_builder.metrics import timed_build
from index_builder.store import EnrollmentStore

log = logging.getLogger(__name__)
PROGRESS_MIN_ITEMS = 50_000
"""Show a tqdm bar when adding at least this many items."""


@dataclass(frozen=True)
class SnapshotInfo:
    path: Path
    manifest: dict[str, Any]

    @property
    def snapshot_id(self) -> str:
        return str(self.manifest["snapshot_id"])


def _new_snapshot_id(now: datetime, max_seq: int) -> str:
    # sortable by time; the seq makes what it covers readable at a glance
    return f"{now:%Y%m%dT%H%M%S%f}Z-s{max_seq}"


def write_snapshot(
    out_dir: Path,
    template_ids: list[str],
    person_ids: list[str],
    vectors: np.ndarray,
    *,
    model_id: str,
    max_change_seq: int,
    n_trees: int = 50,
    seed: int = 42,
    snapshot_id: str | None = None,
    progress: bool | None = None,
) -> SnapshotInfo:
    """Write one snapshot of the given vectors under ``out_dir`` (atomic rename)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count = len(template_ids)
    if vectors.ndim != 2 or vectors.shape[0] != count or len(person_ids) != count:
        raise ValueError(
            f"expected {count} ids and a [{count}, dim] matrix, got {len(person_ids)} person ids "
            f"and vectors {vectors.shape}"
        )
    dim = int(vectors.shape[1])
    now = datetime.now(UTC)
    snapshot_id = snapshot_id or _new_snapshot_id(now, max_change_seq)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / snapshot_id
    if final.exists():
        raise FileExistsError(f"snapshot {final} already exists (snapshots are immutable)")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{snapshot_id}-", dir=out_dir))
    try:
        index = AnnoyIndex(dim, METRIC)
        index.set_seed(seed)
        show = progress if progress is not None else count >= PROGRESS_MIN_ITEMS
        for i in tqdm(range(count), desc="annoy add", unit="item", disable=not show, leave=False):
            index.add_item(i, vectors[i])
        index.build(n_trees, n_jobs=1)  # n_jobs=1: multi-threaded builds are not deterministic
        index.save(str(tmp / INDEX_FILE))
        index.unload()
        (tmp / IDS_FILE).write_text(
            json.dumps([[t, p] for t, p in zip(template_ids, person_ids, strict=True)])
        )
        np.save(tmp / VECTORS_FILE, vectors, allow_pickle=False)
        manifest = {
            "format": FORMAT_VERSION,
            "snapshot_id": snapshot_id,
            "created_at": now.isoformat(),
            "model_id": model_id,
            "dim": dim,
            "metric": METRIC,
            "n_trees": n_trees,
            "seed": seed,
            "count": count,
            "persons": len(set(person_ids)),
            "max_change_seq": int(max_change_seq),
            "files": {name: sha256_file(tmp / name) for name in DATA_FILES},
        }
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        for f in tmp.iterdir():
            _fsync(f)
        tmp.chmod(0o755)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "snapshot %s: %d templates of %s, max_change_seq %d",
        snapshot_id,
        count,
        model_id,
        max_change_seq,
    )
    return SnapshotInfo(final, manifest)


@timed_build
def build_snapshot(
    store: EnrollmentStore,
    out_dir: Path,
    model_id: str,
    *,
    n_trees: int = 50,
    seed: int = 42,
    keep: int | None = None,
    progress: bool | None = None,
) -> SnapshotInfo:
    """Snapshot every template of ``model_id`` in the store; gc down to ``keep`` afterwards."""
    max_seq = store.max_seq()
    total = store.count_templates(model_id, max_seq)
    vectors = np.empty((total, EMBEDDING_DIM), dtype=np.float32)
    tids: list[str] = []
    pids: list[str] = []
    rows = store.iter_vectors(model_id, max_seq=max_seq)
    show = progress if progress is not None else total >= PROGRESS_MIN_ITEMS
    for tid, pid, vec in tqdm(rows, total=total, desc="reading templates", disable=not show):
        if len(tids) == total:  # a template committed between count and read: next snapshot
            break
        vectors[len(tids)] = vec
        tids.append(tid)
        pids.append(pid)
    info = write_snapshot(
        out_dir,
        tids,
        pids,
        vectors[: len(tids)],
        model_id=model_id,
        max_change_seq=max_seq,
        n_trees=n_trees,
        seed=seed,
        progress=progress,
    )
    if keep is not None:
        gc_snapshots(out_dir, keep)
    return info


def list_snapshots(out_dir: Path) -> list[SnapshotInfo]:
    """Complete snapshots, oldest first (temporary build directories are skipped)."""
    if not out_dir.is_dir():
        return []
    found = []
    for d in sorted(out_dir.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        try:
            found.append(SnapshotInfo(d, read_manifest(d)))
        except SnapshotMismatch as exc:
            log.warning("skipping %s: %s", d, exc)
    return sorted(found, key=lambda s: (s.manifest.get("created_at", ""), s.snapshot_id))


def latest_snapshot(out_dir: Path, model_id: str | None = None) -> SnapshotInfo | None:
    candidates = [
        s for s in list_snapshots(out_dir) if model_id is None or s.manifest["model_id"] == model_id
    ]
    return candidates[-1] if candidates else None


def gc_snapshots(out_dir: Path, keep: int) -> list[Path]:
    """Remove all but the newest ``keep`` snapshots (and stale temporary directories)."""
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    removed = []
    for info in list_snapshots(out_dir)[:-keep]:
        shutil.rmtree(info.path)
        removed.append(info.path)
    if out_dir.is_dir():
        cutoff = datetime.now(UTC).timestamp() - 24 * 3600
        for d in out_dir.glob(".tmp-*"):
            if d.stat().st_mtime < cutoff:  # an interrupted build from a day ago
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
    for p in removed:
        log.info("gc removed %s", p)
    return removed


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

