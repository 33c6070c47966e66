"""Reading an index snapshot: verify it against its manifest and memory-map it.

A snapshot is an immutable directory ``<snapshots_dir>/<snapshot_id>/``::

    index.ann      Annoy index (metric euclidean), or index.hnsw: an hnswlib graph (l2);
                   which one is the manifest's ``index_kind`` ("annoy" when absent)
    projection.npy only with a manifest ``projection``: float32 [1 + k, dim], the mean then
                   k PCA components; the index then holds ``(v - mean) @ components.T``
    ids.json       [[template_id, person_id], ...] in index item order
    vectors.npy    float32 [count, dim], the same order (exact search and exact re-rank)
    manifest.json  snapshot_id, created_at, model_id, dim, metric, index_kind, n_trees or
                   hnsw_m / hnsw_ef_construction, projection, seed, count, max_change_seq,
                   files {name: sha256}

A reader refuses an index kind or a projection it does not know (``SnapshotMismatch``)
rather than guess. Plain Python + numpy + annoy (+ hnswlib for hnsw snapshots): the Flink
job and the API load snapshots with this module; ``index_builder.snapshot`` writes them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

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
HNSW_FILE, PROJECTION_FILE = "index.hnsw", "projection.npy"
DATA_FILES = (INDEX_FILE, IDS_FILE, VECTORS_FILE)
"""The files of an Annoy snapshot without projection (``data_files`` for any manifest)."""
INDEX_FILES = {"annoy": INDEX_FILE, "hnsw": HNSW_FILE}
"""Index kinds this reader knows, and the file each is stored in."""
DEFAULT_INDEX_KIND = "annoy"
"""The kind of a manifest without ``index_kind`` (snapshots written before the field)."""
PROJECTIONS = ("pca",)
_REQUIRED = ("snapshot_id", "model_id", "dim", "metric", "count", "max_change_seq", "files")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def index_kind(manifest: dict[str, Any]) -> str:
    return str(manifest.get("index_kind", DEFAULT_INDEX_KIND))


def data_files(manifest: dict[str, Any]) -> tuple[str, ...]:
    """The files a snapshot with this manifest holds besides the manifest (known kinds)."""
    files = (INDEX_FILES[index_kind(manifest)], IDS_FILE, VECTORS_FILE)
    return (*files, PROJECTION_FILE) if manifest.get("projection") else files


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
    """The manifest, after checking model id, dimension, metric, index kind, projection and
    every file's sha256.

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
    kind = index_kind(manifest)
    if kind not in INDEX_FILES:
        raise SnapshotMismatch(
            f"{where}: index kind {kind!r} unknown to this reader (knows {sorted(INDEX_FILES)})"
        )
    projection = manifest.get("projection")
    if projection is not None and (
        not isinstance(projection, dict) or projection.get("kind") not in PROJECTIONS
    ):
        raise SnapshotMismatch(f"{where}: projection {projection!r} unknown to this reader")
    files = manifest["files"]
    for name in data_files(manifest):
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


# --------------------------------------------------------------------------- searching
@dataclass(frozen=True)
class Projection:
    """PCA fitted on the gallery at build time: the index lives in its ``k`` dimensions."""

    mean: np.ndarray
    components: np.ndarray  # [k, dim]

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def __call__(self, vectors: np.ndarray) -> np.ndarray:
        out = (np.asarray(vectors, dtype=np.float32) - self.mean) @ self.components.T
        return np.ascontiguousarray(out, dtype=np.float32)

    def to_array(self) -> np.ndarray:
        return np.vstack([self.mean[None, :], self.components]).astype(np.float32)

    @classmethod
    def from_array(cls, a: np.ndarray) -> Projection:
        a = np.asarray(a, dtype=np.float32)
        return cls(mean=a[0].copy(), components=np.ascontiguousarray(a[1:]))


class Searcher(Protocol):
    """An approximate k-NN index over a snapshot's items (full-dimension queries)."""

    kind: str

    def search(
        self, queries: np.ndarray, k: int, *, search_k: int = -1, ef: int = 0, threads: int = 1
    ) -> list[np.ndarray]:
        """Up to ``k`` item numbers per query, nearest first. ``search_k`` (Annoy: nodes
        inspected), ``ef`` (hnsw: candidate list size) and ``threads`` (hnsw: threads the
        queries are spread over) are each read by their kind."""
        ...

    def close(self) -> None: ...


@dataclass
class AnnoySearcher:
    index: AnnoyIndex
    projection: Projection | None = None
    kind: str = "annoy"

    def search(
        self, queries: np.ndarray, k: int, *, search_k: int = -1, ef: int = 0, threads: int = 1
    ) -> list[np.ndarray]:
        q = self.projection(queries) if self.projection is not None else queries
        get = self.index.get_nns_by_vector
        return [np.asarray(get(v, k, search_k=search_k), dtype=np.int64) for v in q]

    def close(self) -> None:
        self.index.unload()


@dataclass
class HnswSearcher:
    index: Any  # hnswlib.Index
    projection: Projection | None = None
    kind: str = "hnsw"
    _ef: int = field(default=-1, repr=False)

    def search(
        self, queries: np.ndarray, k: int, *, search_k: int = -1, ef: int = 0, threads: int = 1
    ) -> list[np.ndarray]:
        q = self.projection(queries) if self.projection is not None else queries
        k = min(k, self.index.get_current_count())
        if k < 1 or len(q) == 0:
            return [np.empty(0, dtype=np.int64) for _ in range(len(q))]
        want = max(ef, k)  # hnswlib cannot return more than ef results
        if want != self._ef:
            self.index.set_ef(want)
            self._ef = want
        labels, _ = self.index.knn_query(q, k=k, num_threads=threads)
        return [row.astype(np.int64) for row in labels]

    def close(self) -> None:
        self.index = None


@dataclass
class LoadedSnapshot:
    """A verified, memory-mapped snapshot."""

    path: Path
    manifest: dict[str, Any]
    index: Any
    """The index as its library holds it (``AnnoyIndex``, ``hnswlib.Index``)."""
    vectors: np.ndarray
    template_ids: list[str]
    person_ids: list[str]
    searcher: Searcher | None = None
    """Kind-independent search over ``index`` (None for an empty snapshot)."""

    @property
    def snapshot_id(self) -> str:
        return str(self.manifest["snapshot_id"])

    @property
    def max_change_seq(self) -> int:
        return int(self.manifest["max_change_seq"])

    @property
    def count(self) -> int:
        return len(self.template_ids)

    @property
    def index_kind(self) -> str:
        return index_kind(self.manifest)

    def close(self) -> None:
        if self.searcher is not None:
            self.searcher.close()
        elif isinstance(self.index, AnnoyIndex):
            self.index.unload()


def load_snapshot(
    path: str | Path, model_id: str | None = None, dim: int | None = None
) -> LoadedSnapshot:
    """Verify then load a snapshot: vectors memory-mapped (``np.load(mmap_mode='r')``), an
    Annoy index memory-mapped too, an hnsw graph read into memory."""
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
    projection = _load_projection(path, manifest, d, where)
    index_dim = projection.dim if projection is not None else d
    kind = index_kind(manifest)
    if kind == "hnsw":
        index, searcher = _load_hnsw(path, count, index_dim, projection, where)
    else:
        index, searcher = _load_annoy(path, count, index_dim, projection, where)
    return LoadedSnapshot(
        path=path,
        manifest=manifest,
        index=index,
        vectors=vectors,
        template_ids=[str(t) for t, _ in ids],
        person_ids=[str(p) for _, p in ids],
        searcher=searcher,
    )


def _load_projection(
    path: Path, manifest: dict[str, Any], dim: int, where: str
) -> Projection | None:
    spec = manifest.get("projection")
    if not spec:
        return None
    try:
        a = np.load(path / PROJECTION_FILE, allow_pickle=False)
    except ValueError as exc:
        raise SnapshotMismatch(f"{where}: unreadable {PROJECTION_FILE}: {exc}") from exc
    k = int(spec.get("dim", -1))
    if a.shape != (k + 1, dim) or a.dtype != np.float32:
        raise SnapshotMismatch(
            f"{where}: {PROJECTION_FILE} is {a.shape} {a.dtype}, expected ({k + 1}, {dim}) float32"
        )
    return Projection.from_array(a)


def _load_annoy(
    path: Path, count: int, dim: int, projection: Projection | None, where: str
) -> tuple[AnnoyIndex, Searcher | None]:
    index = AnnoyIndex(dim, METRIC)
    if not count:
        return index, None
    try:
        index.load(str(path / INDEX_FILE))
    except OSError as exc:
        raise SnapshotMismatch(f"{where}: Annoy cannot load {INDEX_FILE}: {exc}") from exc
    if index.get_n_items() != count or index.f != dim:
        n = index.get_n_items()
        index.unload()
        raise SnapshotMismatch(
            f"{where}: index holds {n} items of dim {index.f}, expected {count} x {dim}"
        )
    return index, AnnoySearcher(index, projection)


def _load_hnsw(
    path: Path, count: int, dim: int, projection: Projection | None, where: str
) -> tuple[Any, Searcher | None]:
    try:
        import hnswlib
    except ImportError as exc:
        raise SnapshotMismatch(f"{where}: an hnsw index needs hnswlib, not installed") from exc
    index = hnswlib.Index(space="l2", dim=dim)
    if not count:
        return index, None
    try:
        index.load_index(str(path / HNSW_FILE), max_elements=count)
    except (RuntimeError, ValueError) as exc:
        raise SnapshotMismatch(f"{where}: hnswlib cannot load {HNSW_FILE}: {exc}") from exc
    n = index.get_current_count()
    if n != count:
        raise SnapshotMismatch(f"{where}: index holds {n} items, expected {count}")
    return index, HnswSearcher(index, projection)
