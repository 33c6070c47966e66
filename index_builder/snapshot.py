"""Build, list, verify and garbage-collect index snapshots (``facerec.snapshot_format``).

A build reads every template of one model id up to the change log's current ``seq``
(recorded as ``max_change_seq``), writes the files into a temporary directory beside the
target, then renames it into place: readers never see a half-written snapshot. Builds are
seeded and single-threaded by default, so the same templates give the same index bytes.

The index is Annoy (``index_kind="annoy"``) or an hnswlib graph (``"hnsw"``), optionally
over the gallery's first ``pca_dim`` principal components (fitted on the gallery at build
time): the full vectors are kept beside it for exact search and exact re-rank, so a
projection only decides which candidates are looked at, never a distance.
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

from facerec.config import IndexConfig
from facerec.errors import SnapshotMismatch
from facerec.models import EMBEDDING_DIM
from facerec.snapshot_format import (
    FORMAT_VERSION,
    HNSW_FILE,
    IDS_FILE,
    INDEX_FILE,
    INDEX_FILES,
    MANIFEST_FILE,
    METRIC,
    PROJECTION_FILE,
    VECTORS_FILE,
    Projection,
    data_files,
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


def fit_pca(vectors: np.ndarray, k: int, chunk: int = 100_000) -> tuple[Projection, float]:
    """The gallery's first ``k`` principal components and the share of variance they keep.
    Deterministic: each component's sign is fixed by its largest coordinate."""
    n, dim = vectors.shape
    mean = np.zeros(dim, dtype=np.float64)
    for s in range(0, n, chunk):
        mean += vectors[s : s + chunk].sum(axis=0, dtype=np.float64)
    mean /= max(n, 1)
    cov = np.zeros((dim, dim), dtype=np.float64)
    for s in range(0, n, chunk):
        block = vectors[s : s + chunk].astype(np.float64) - mean
        cov += block.T @ block
    values, vecs = np.linalg.eigh(cov / max(n - 1, 1))
    order = np.argsort(values)[::-1][:k]
    comps = vecs[:, order].T
    signs = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps *= np.where(signs == 0, 1.0, signs)[:, None]
    kept = float(values[order].sum() / max(values.sum(), 1e-30))
    return Projection(mean.astype(np.float32), comps.astype(np.float32)), kept


def _build_annoy(
    path: Path, data: np.ndarray, n_trees: int, seed: int, n_jobs: int, show: bool
) -> dict[str, Any]:
    index = AnnoyIndex(int(data.shape[1]), METRIC)
    index.set_seed(seed)
    for i in tqdm(range(len(data)), desc="annoy add", unit="item", disable=not show, leave=False):
        index.add_item(i, data[i])
    index.build(n_trees, n_jobs=n_jobs)  # n_jobs=1: multi-threaded builds are not deterministic
    index.save(str(path))
    index.unload()
    return {"n_trees": n_trees}


def _build_hnsw(
    path: Path,
    data: np.ndarray,
    m: int,
    ef_construction: int,
    seed: int,
    n_jobs: int,
    show: bool,
    chunk: int = 50_000,
) -> dict[str, Any]:
    import hnswlib

    index = hnswlib.Index(space="l2", dim=int(data.shape[1]))
    index.init_index(
        max_elements=max(len(data), 1), ef_construction=ef_construction, M=m, random_seed=seed
    )
    for s in tqdm(range(0, len(data), chunk), desc="hnsw add", disable=not show, leave=False):
        block = data[s : s + chunk]
        index.add_items(block, np.arange(s, s + len(block)), num_threads=n_jobs)
    index.save_index(str(path))
    return {"hnsw_m": m, "hnsw_ef_construction": ef_construction}


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
    index_kind: str = "annoy",
    pca_dim: int | None = None,
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 200,
    n_jobs: int = 1,
) -> SnapshotInfo:
    """Write one snapshot of the given vectors under ``out_dir`` (atomic rename).

    ``pca_dim``: build the index on that many principal components of the gallery (none
    when the gallery has no more templates than that: too few to fit them). ``n_jobs`` > 1
    builds faster, and not byte-for-byte reproducibly."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    count = len(template_ids)
    if vectors.ndim != 2 or vectors.shape[0] != count or len(person_ids) != count:
        raise ValueError(
            f"expected {count} ids and a [{count}, dim] matrix, got {len(person_ids)} person ids "
            f"and vectors {vectors.shape}"
        )
    if index_kind not in INDEX_FILES:
        raise ValueError(f"index_kind {index_kind!r}; expected one of {sorted(INDEX_FILES)}")
    dim = int(vectors.shape[1])
    if pca_dim is not None and not 0 < pca_dim <= dim:
        raise ValueError(f"pca_dim must be in [1, {dim}], got {pca_dim}")
    now = datetime.now(UTC)
    snapshot_id = snapshot_id or _new_snapshot_id(now, max_change_seq)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / snapshot_id
    if final.exists():
        raise FileExistsError(f"snapshot {final} already exists (snapshots are immutable)")
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{snapshot_id}-", dir=out_dir))
    try:
        show = progress if progress is not None else count >= PROGRESS_MIN_ITEMS
        projection_meta: dict[str, Any] | None = None
        data = vectors
        if pca_dim is not None and pca_dim < dim and count > pca_dim:
            projection, kept = fit_pca(vectors, pca_dim)
            np.save(tmp / PROJECTION_FILE, projection.to_array(), allow_pickle=False)
            data = projection(vectors)
            projection_meta = {"kind": "pca", "dim": pca_dim, "variance_kept": round(kept, 6)}
        if index_kind == "hnsw":
            params = _build_hnsw(
                tmp / HNSW_FILE, data, hnsw_m, hnsw_ef_construction, seed, n_jobs, show
            )
        else:
            params = _build_annoy(tmp / INDEX_FILE, data, n_trees, seed, n_jobs, show)
        (tmp / IDS_FILE).write_text(
            json.dumps([[t, p] for t, p in zip(template_ids, person_ids, strict=True)])
        )
        np.save(tmp / VECTORS_FILE, vectors, allow_pickle=False)
        manifest: dict[str, Any] = {
            "format": FORMAT_VERSION,
            "snapshot_id": snapshot_id,
            "created_at": now.isoformat(),
            "model_id": model_id,
            "dim": dim,
            "metric": METRIC,
            "index_kind": index_kind,
            **params,
            "seed": seed,
            "count": count,
            "persons": len(set(person_ids)),
            "max_change_seq": int(max_change_seq),
        }
        if projection_meta is not None:
            manifest["projection"] = projection_meta
        manifest["files"] = {name: sha256_file(tmp / name) for name in data_files(manifest)}
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
        for f in tmp.iterdir():
            _fsync(f)
        tmp.chmod(0o755)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "snapshot %s: %d templates of %s, max_change_seq %d, %s index%s",
        snapshot_id,
        count,
        model_id,
        max_change_seq,
        index_kind,
        f" on {pca_dim} principal components" if projection_meta else "",
    )
    return SnapshotInfo(final, manifest)


def index_options(config: IndexConfig) -> dict[str, Any]:
    """The configured index as ``build_snapshot`` / ``write_snapshot`` keyword arguments."""
    return {
        "n_trees": config.n_trees,
        "seed": config.seed,
        "index_kind": config.kind,
        "pca_dim": config.pca_dim,
        "hnsw_m": config.hnsw_m,
        "hnsw_ef_construction": config.hnsw_ef_construction,
    }


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
    index_kind: str = "annoy",
    pca_dim: int | None = None,
    hnsw_m: int = 16,
    hnsw_ef_construction: int = 200,
) -> SnapshotInfo:
    """Snapshot every template of ``model_id`` in the store; gc down to ``keep`` afterwards.
    The index options are ``write_snapshot``'s (``IndexConfig`` holds the configured ones)."""
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
        index_kind=index_kind,
        pca_dim=pca_dim,
        hnsw_m=hnsw_m,
        hnsw_ef_construction=hnsw_ef_construction,
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
