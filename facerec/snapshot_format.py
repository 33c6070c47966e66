"""Reading an index snapshot: verify it against its manifest and memory-map it.

A snapshot is an immutable directory ``<snapshots_dir>/<snapshot_id>/``::

    index.ann      Annoy index (metric euclidean on unit vectors)
    ids.json       [[template_id, person_id], ...] in Annoy item order
    vectors.npy    float32 [count, dim], the same order (exact re-rank)
    manifest.json  snapshot_id, created_at, model_id, dim, metric, n_trees, seed, count,
                   max_change_seq, files {name: sha256}

Plain Python + numpy + annoy: the Flink job and the API load snapshots with this module;
``index_builder.snapshot`` writes them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from annoy import AnnoyIndex

from facerec.errors import SnapshotMismatch

FORMAT_VERSION = 1
METRIC: Literal["euclidean"] = "euclidean"
INDEX_FILE, IDS_FILE, VECTORS_FILE, MANIFEST_FILE = (
    "index.ann",
    "ids.json",
    "vectors.npy",
    "manifest.json",
)
DATA_FILES = (INDEX_FILE, IDS_FILE, VECTORS_FILE)
_REQUIRED = ("snapshot_id", "model_id", "dim", "metric", "count", "max_change_seq", "files")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_manifest(path: str | Path) -> dict[str, Any]:
    p = Path(path) / MANIFEST_FILE
    try:
        manifest = json.loads(p.read_text())
    except FileNotFoundError as exc:
        raise SnapshotMismatch(f"snapshot {Path(path)}: no {MANIFEST_FILE}") from exc
    except ValueError as exc:
        raise SnapshotMismatch(
            f"snapshot {Path(path)}: {MANIFEST_FILE} is not JSON: {exc}"
        ) from exc
    if not isinstance(manifest, dict):
        raise SnapshotMismatch(f"snapshot {Path(path)}: manifest is not a JSON object")
    missing = [k for k in _REQUIRED if k not in manifest]
    if missing:
        raise SnapshotMismatch(f"snapshot {Path(path)}: manifest lacks {missing}")
    return manifest


def verify_snapshot(
    path: str | Path,
    model_id: str | None = None,
    dim: int | None = None,
    check_hashes: bool = True,
) -> dict[str, Any]:
    """The manifest, after checking model id, dimension, metric and every file's sha256.

    Raises ``SnapshotMismatch`` naming what was expected and what was found.
    """
    path = Path(path)
    manifest = read_manifest(path)
    where = f"snapshot {manifest['snapshot_id']} ({path})"
    if model_id is not None and manifest["model_id"] != model_id:
        raise SnapshotMismatch(
            f"{where}: built for model {manifest['model_id']!r}, this matcher uses {model_id!r}"
        )
    if dim is not None and int(manifest["dim"]) != dim:
        raise SnapshotMismatch(f"{where}: dimension {manifest['dim']}, expected {dim}")
    if manifest["metric"] != METRIC:
        raise SnapshotMismatch(f"{where}: metric {manifest['metric']!r}, expected {METRIC!r}")
    files = manifest["files"]
    for name in DATA_FILES:
        if name not in files:
            raise SnapshotMismatch(f"{where}: manifest has no sha256 for {name}")
        f = path / name
        if not f.is_file():
            raise SnapshotMismatch(f"{where}: {name} is missing")
        if check_hashes:
            actual = sha256_file(f)
            if actual != files[name]:
                raise SnapshotMismatch(
                    f"{where}: {name} sha256 is {actual[:16]}..., manifest says "
                    f"{files[name][:16]}... (corrupt or modified file)"
                )
    return manifest


@dataclass
class LoadedSnapshot:
    """A verified, memory-mapped snapshot."""

    path: Path
    manifest: dict[str, Any]
    index: AnnoyIndex
    vectors: np.ndarray
    template_ids: list[str]
    person_ids: list[str]

    @property
    def snapshot_id(self) -> str:
        return str(self.manifest["snapshot_id"])

    @property
    def max_change_seq(self) -> int:
        return int(self.manifest["max_change_seq"])

    @property
    def count(self) -> int:
        return len(self.template_ids)

    def close(self) -> None:
        self.index.unload()


def load_snapshot(
    path: str | Path, model_id: str | None = None, dim: int | None = None
) -> LoadedSnapshot:
    """Verify then memory-map a snapshot (Annoy ``load`` and ``np.load(mmap_mode='r')``)."""
    path = Path(path).resolve()
    manifest = verify_snapshot(path, model_id=model_id, dim=dim)
    where = f"snapshot {manifest['snapshot_id']} ({path})"
    d, count = int(manifest["dim"]), int(manifest["count"])
    try:
        ids = json.loads((path / IDS_FILE).read_text())
        vectors = np.load(path / VECTORS_FILE, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        raise SnapshotMismatch(f"{where}: unreadable ids/vectors: {exc}") from exc
    if len(ids) != count or vectors.shape != (count, d) or vectors.dtype != np.float32:
        raise SnapshotMismatch(
            f"{where}: manifest says {count} x {d} float32; found {len(ids)} ids and "
            f"vectors {vectors.shape} {vectors.dtype}"
        )
    index = AnnoyIndex(d, METRIC)
    if count:
        try:
            index.load(str(path / INDEX_FILE))
        except OSError as exc:
            raise SnapshotMismatch(f"{where}: Annoy cannot load {INDEX_FILE}: {exc}") from exc
        if index.get_n_items() != count or index.f != d:
            n = index.get_n_items()
            index.unload()
            raise SnapshotMismatch(
                f"{where}: index holds {n} items of dim {index.f}, expected {count} x {d}"
            )
    return LoadedSnapshot(
        path=path,
        manifest=manifest,
        index=index,
        vectors=vectors,
        template_ids=[str(t) for t, _ in ids],
        person_ids=[str(p) for _, p in ids],
    )
