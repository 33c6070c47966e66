"""Open-set identification at realistic gallery sizes (1:N search with an "unknown" answer).

The protocol, per seeded draw:

* the **pool** is every identity with at least two images; it is shuffled by the seed, and
  the first ``n_enrolled`` identities are enrolled with ``gallery_per_person`` of their
  images (a number, or a ``(low, high)`` range drawn per person, never all of a person's
  images);
* **mated probes** are the enrolled people's other images: one is a false negative when the
  nearest gallery template is farther than the threshold *or* belongs to someone else;
* **non-mated probes** are the images of identities never enrolled: identities with a single
  image, and pool identities beyond position ``reserve_from`` of the shuffled pool (default:
  every pool identity not enrolled). Passing the largest N of a sweep as ``reserve_from``
  keeps the non-mated probes the same for every N of one seed, and the galleries nested, so
  the curves differ only by the gallery. One is a false positive when its nearest template is
  within the threshold.

FNIR (false negative identification rate) and FPIR (false positive identification rate) are
then functions of the threshold; ``OpenSetScores`` holds what they are computed from, so any
threshold, any target FPIR and a curve come from one search.

An optional per-image ``accept`` mask (a quality gate) is applied the way a deployment sees
it: enrollment photos are drawn from accepted images first; a rejected mated probe is a
false negative (never matched), a rejected non-mated probe is no false positive.

Nothing here needs the face engine except ``embed_cached``, which embeds a folder once and
caches the vectors (keyed by model, detector, alignment, pipeline source and image list).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from udfs.engine import FaceEngine

log = logging.getLogger(__name__)
FPIR_TARGETS = (0.01, 0.001)
CACHE_FORMAT = 1
_PIPELINE_SOURCES = ("engine.py", "align.py", "quality.py", "embed.py", "image.py", "detectors")


# --------------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class OpenSetScores:
    """One draw of the protocol: per probe, the nearest gallery template's distance and, for
    mated probes, whether it is the probe's own identity. Rejected probes have distance inf."""

    n_enrolled: int
    seed: int
    gallery_templates: int
    mated_distance: np.ndarray
    """[M] distance to the nearest template of the whole gallery (inf: probe rejected)."""
    mated_correct: np.ndarray
    """[M] bool: that nearest template is the probe's own identity (rank 1 is right)."""
    nonmated_distance: np.ndarray
    """[K] distance of each non-mated probe to its nearest template (inf: probe rejected)."""
    enrolled: tuple[str, ...] = ()
    """The identities enrolled, in draw order."""

    @property
    def mated(self) -> int:
        return int(self.mated_distance.size)

    @property
    def nonmated(self) -> int:
        return int(self.nonmated_distance.size)

    def fpir(self, threshold: float) -> float:
        """Share of non-mated probes whose nearest template is within ``threshold``."""
        return float(np.mean(self.nonmated_distance <= threshold)) if self.nonmated else 0.0

    def fnir(self, threshold: float) -> float:
        """Share of mated probes not named rightly: nearest template farther than
        ``threshold`` or of the wrong person."""
        if not self.mated:
            return 0.0
        hit = self.mated_correct & (self.mated_distance <= threshold)
        return float(1.0 - np.mean(hit))

    def threshold_at_fpir(self, target: float) -> float:
        """The largest threshold whose FPIR is at most ``target``: just below the distance of
        the (floor(target * K) + 1)-th closest non-mated probe (ties excluded). inf when the
        target allows every non-mated probe through."""
        d = np.sort(self.nonmated_distance)
        k = int(np.floor(target * d.size + 1e-9))
        if k >= d.size or not np.isfinite(d[k]):
            return float("inf")
        return float(np.nextafter(d[k], -np.inf))

    def fnir_at_fpir(self, target: float) -> float:
        return self.fnir(self.threshold_at_fpir(target))

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(FPIR, FNIR, threshold) at every distinct finite probe distance as threshold
        (ascending threshold: FPIR rises, FNIR falls)."""
        finite = np.concatenate([self.mated_distance, self.nonmated_distance])
        thr = np.unique(finite[np.isfinite(finite)])
        nm = np.sort(self.nonmated_distance)
        fpir = np.searchsorted(nm, thr, side="right") / max(nm.size, 1)
        ok = np.sort(self.mated_distance[self.mated_correct])
        fnir = 1.0 - np.searchsorted(ok, thr, side="right") / max(self.mated, 1)
        return fpir, fnir, thr

    def summary(self, threshold: float, targets: Sequence[float] = FPIR_TARGETS) -> dict:
        out: dict[str, Any] = {
            "n_enrolled": self.n_enrolled,
            "seed": self.seed,
            "gallery_templates": self.gallery_templates,
            "mated_probes": self.mated,
            "nonmated_probes": self.nonmated,
            "rank1": float(np.mean(self.mated_correct)) if self.mated else 0.0,
            "fpir_at_threshold": self.fpir(threshold),
            "fnir_at_threshold": self.fnir(threshold),
        }
        for t in targets:
            key = _pct(t)
            out[f"fnir_at_fpir_{key}"] = self.fnir_at_fpir(t)
            out[f"threshold_at_fpir_{key}"] = self.threshold_at_fpir(t)
        return out


def _pct(target: float) -> str:
    """0.01 -> '1pct', 0.001 -> '0.1pct'."""
    return f"{target * 100:g}pct"


def _as_unit(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def nearest(
    probes: np.ndarray, gallery: np.ndarray, chunk: int = 4096
) -> tuple[np.ndarray, np.ndarray]:
    """For each probe row, (L2 distance to, index of) the nearest gallery row. Rows are unit
    vectors (FaceNet embeddings), so d^2 = 2 - 2 cos; exact, in chunks."""
    dist = np.full(len(probes), np.inf, dtype=np.float64)
    idx = np.full(len(probes), -1, dtype=np.int64)
    if len(gallery) == 0 or len(probes) == 0:
        return dist, idx
    g = gallery.astype(np.float32)
    for start in range(0, len(probes), chunk):
        sims = probes[start : start + chunk].astype(np.float32) @ g.T
        j = np.argmax(sims, axis=1)
        best = sims[np.arange(len(j)), j].astype(np.float64)
        dist[start : start + chunk] = np.sqrt(np.maximum(0.0, 2.0 - 2.0 * best))
        idx[start : start + chunk] = j
    return dist, idx


def open_set_protocol(
    embeddings_by_identity: Mapping[str, np.ndarray],
    n_enrolled: int,
    gallery_per_person: int | tuple[int, int] = (1, 3),
    seed: int = 0,
    *,
    accept: Mapping[str, np.ndarray] | None = None,
    reserve_from: int | None = None,
) -> OpenSetScores:
    """One seeded draw of the open-set protocol (module docstring).

    ``embeddings_by_identity``: identity -> [n_images, dim] embeddings (rows of NaN, e.g.
    unreadable images, are dropped). ``accept``: identity -> [n_images] bool, False where a
    quality gate refuses the image. ``reserve_from``: pool identities from this position of
    the shuffled pool on are the non-mated ones (default ``n_enrolled``: every pool identity
    not enrolled); it must be at least ``n_enrolled``.
    """
    low, high = (
        (gallery_per_person, gallery_per_person)
        if isinstance(gallery_per_person, int)
        else gallery_per_person
    )
    if not 1 <= low <= high:
        raise ValueError(f"gallery_per_person must be >= 1 (low <= high), got {gallery_per_person}")
    vecs: dict[str, np.ndarray] = {}
    oks: dict[str, np.ndarray] = {}
    for name in sorted(embeddings_by_identity):
        v = np.asarray(embeddings_by_identity[name], dtype=np.float32)
        ok = (
            np.ones(len(v), bool)
            if accept is None or name not in accept
            else np.asarray(accept[name], bool)
        )
        if ok.shape != (len(v),):
            raise ValueError(f"accept[{name!r}] has shape {ok.shape}, expected ({len(v)},)")
        keep = ~np.isnan(v).any(axis=1)
        if keep.any():
            vecs[name], oks[name] = _as_unit(v[keep]), ok[keep]
    pool = [n for n in vecs if len(vecs[n]) >= 2]
    reserve = n_enrolled if reserve_from is None else reserve_from
    if not 1 <= n_enrolled <= reserve <= len(pool):
        raise ValueError(
            f"n_enrolled={n_enrolled}, reserve_from={reserve}: need 1 <= n_enrolled <= "
            f"reserve_from <= {len(pool)} (identities with at least 2 usable images)"
        )
    rng = np.random.default_rng(seed)
    order = [pool[i] for i in rng.permutation(len(pool))]
    # Every pool identity gets its image order and gallery size from the rng, enrolled or
    # not, so that the draw of a person does not depend on N or on the accept mask.
    plans = {}
    for name in order:
        n = len(vecs[name])
        perm = rng.permutation(n)
        k = int(rng.integers(low, min(high, n - 1) + 1)) if low <= n - 1 else n - 1
        plans[name] = (perm, k)
    enrolled = order[:n_enrolled]
    enrolled_set = set(enrolled)
    nonmated_ids = [n for n in vecs if len(vecs[n]) < 2] + order[reserve:]

    g_vecs, g_ids, m_vecs, m_ids, m_ok = [], [], [], [], []
    for gid, name in enumerate(enrolled):
        perm, k = plans[name]
        ok = oks[name][perm]
        # enrollment refuses a gated photo: the person is enrolled with accepted ones first
        ranked = np.concatenate([perm[ok], perm[~ok]])
        n_ok = int(ok.sum())
        gallery = ranked[: min(k, n_ok)]
        probes = perm[~np.isin(perm, gallery)]
        g_vecs.append(vecs[name][gallery])
        g_ids += [gid] * len(gallery)
        m_vecs.append(vecs[name][probes])
        m_ids += [gid] * len(probes)
        m_ok.append(oks[name][probes])
    dim = next(iter(vecs.values())).shape[1]
    strangers = [n for n in nonmated_ids if n not in enrolled_set]

    def stack(parts: list[np.ndarray], like: np.ndarray) -> np.ndarray:
        return np.concatenate(parts) if parts else like

    no_vectors, no_flags = np.zeros((0, dim), np.float32), np.zeros(0, bool)
    gallery_m = stack(g_vecs, no_vectors)
    gallery_ids = np.asarray(g_ids, dtype=np.int64)
    mated_v = stack(m_vecs, no_vectors)
    mated_ids = np.asarray(m_ids, dtype=np.int64)
    mated_accepted = stack(m_ok, no_flags)
    nonmated_v = stack([vecs[n] for n in strangers], no_vectors)
    nonmated_accepted = stack([oks[n] for n in strangers], no_flags)

    md, mi = nearest(mated_v, gallery_m)
    correct = (
        (mi >= 0) & (gallery_ids[np.maximum(mi, 0)] == mated_ids)
        if len(gallery_ids)
        else np.zeros(len(md), bool)
    )
    md = np.where(mated_accepted, md, np.inf)
    correct &= mated_accepted
    nd, _ = nearest(nonmated_v, gallery_m)
    nd = np.where(nonmated_accepted, nd, np.inf)
    return OpenSetScores(
        n_enrolled=n_enrolled,
        seed=seed,
        gallery_templates=int(len(gallery_ids)),
        mated_distance=md,
        mated_correct=np.asarray(correct, bool),
        nonmated_distance=nd,
        enrolled=tuple(enrolled),
    )


def sweep(
    embeddings_by_identity: Mapping[str, np.ndarray],
    sizes: Sequence[int] = (10, 100, 1000),
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    gallery_per_person: int | tuple[int, int] = (1, 3),
    accept: Mapping[str, np.ndarray] | None = None,
) -> dict[int, list[OpenSetScores]]:
    """The protocol for every gallery size and seed. Per seed the galleries are nested and
    the non-mated probes are the same for every size (``reserve_from`` = the largest size)."""
    pool = sum(1 for v in embeddings_by_identity.values() if len(v) >= 2)
    usable = [n for n in sizes if n <= pool]
    if len(usable) < len(sizes):
        log.warning("open set: %s enrolled exceed the pool of %d identities", sizes, pool)
    reserve = max(usable) if usable else 0
    return {
        n: [
            open_set_protocol(
                embeddings_by_identity, n, gallery_per_person, s, accept=accept,
                reserve_from=reserve,
            )
            for s in seeds
        ]
        for n in usable
    }


def _spread(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    finite = a[np.isfinite(a)]
    if finite.size == 0:
        return {"mean": float("inf"), "std": 0.0, "min": float("inf"), "max": float("inf")}
    return {
        "mean": float(np.mean(finite)),
        "std": float(np.std(finite)),
        "min": float(np.min(a)),
        "max": float(np.max(a)),
    }


def summarize(
    results: Mapping[int, Sequence[OpenSetScores]],
    threshold: float,
    targets: Sequence[float] = FPIR_TARGETS,
    candidate_thresholds: Sequence[float] = (),
) -> dict[str, Any]:
    """Per gallery size: every draw's figures and their mean / std / min / max over seeds;
    FPIR and FNIR at ``threshold`` and at each of ``candidate_thresholds``."""
    sizes: dict[str, Any] = {}
    for n, draws in sorted(results.items()):
        per = [d.summary(threshold, targets) for d in draws]
        keys = [k for k in per[0] if k not in ("n_enrolled", "seed")]
        sizes[str(n)] = {
            "draws": per,
            **{k: _spread([p[k] for p in per]) for k in keys},
            "at_thresholds": {
                f"{t:.3f}": {
                    "fpir": _spread([d.fpir(t) for d in draws]),
                    "fnir": _spread([d.fnir(t) for d in draws]),
                }
                for t in candidate_thresholds
            },
        }
    return {"threshold": threshold, "fpir_targets": list(targets), "sizes": sizes}


def save_curves(
    results: Mapping[int, Sequence[OpenSetScores]], threshold: float, path: Path
) -> None:
    """FNIR against FPIR (log x) per gallery size, every seed drawn thin and the first one
    thick, with the operating point of ``threshold`` marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=110)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (n, draws) in enumerate(sorted(results.items())):
        c = colours[i % len(colours)]
        for j, d in enumerate(draws):
            fpir, fnir, _ = d.curve()
            ax.plot(
                np.maximum(fpir, 1e-5),
                fnir,
                color=c,
                lw=1.6 if j == 0 else 0.6,
                alpha=1.0 if j == 0 else 0.45,
                label=f"N = {n} ({len(draws)} seeds)" if j == 0 else None,
            )
        ax.plot(
            [max(float(np.mean([d.fpir(threshold) for d in draws])), 1e-5)],
            [float(np.mean([d.fnir(threshold) for d in draws]))],
            marker="o",
            color=c,
            ms=5,
        )
    for t in FPIR_TARGETS:
        ax.axvline(t, color="grey", lw=0.7, ls="--")
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("FPIR (non-enrolled probes accepted)")
    ax.set_ylabel("FNIR (enrolled probes missed or misnamed)")
    ax.set_title(f"facerec open-set identification (dots: threshold {threshold:.3f})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def jsonable(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON)."""
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def format_open_set(summary: Mapping[str, Any]) -> str:
    """A Markdown table: mean ± std (min-max) over seeds per gallery size."""

    def num(v: float | None, digits: int) -> str:
        return "inf" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"

    def cell(s: Mapping[str, float | None], digits: int = 4) -> str:
        return (
            f"{num(s['mean'], digits)} ± {num(s['std'], digits)} "
            f"({num(s['min'], digits)}-{num(s['max'], digits)})"
        )

    thr = summary["threshold"]
    head = (
        "| N enrolled | gallery templates | mated / non-mated probes | FNIR @ FPIR 1% "
        "| FNIR @ FPIR 0.1% | threshold @ FPIR 1% | threshold @ FPIR 0.1% "
        f"| FPIR @ {thr:.3f} | FNIR @ {thr:.3f} |"
    )
    rows = [head, "|" + "---|" * 9]
    for n, s in summary["sizes"].items():
        rows.append(
            f"| {n} | {s['gallery_templates']['mean']:.0f} "
            f"| {s['mated_probes']['mean']:.0f} / {s['nonmated_probes']['mean']:.0f} "
            f"| {cell(s['fnir_at_fpir_1pct'])} | {cell(s['fnir_at_fpir_0.1pct'])} "
            f"| {cell(s['threshold_at_fpir_1pct'], 3)} | {cell(s['threshold_at_fpir_0.1pct'], 3)} "
            f"| {cell(s['fpir_at_threshold'])} | {cell(s['fnir_at_threshold'])} |"
        )
    return "\n".join(rows)


# --------------------------------------------------------------------------- embeddings
def group_by_identity(
    paths: Sequence[Path], vectors: np.ndarray
) -> dict[str, np.ndarray]:
    """identity (the image's folder name) -> its rows of ``vectors``, in ``paths`` order."""
    rows: dict[str, list[int]] = {}
    for i, p in enumerate(paths):
        rows.setdefault(p.parent.name, []).append(i)
    return {name: vectors[idx] for name, idx in rows.items()}


def pipeline_fingerprint(engine: FaceEngine) -> dict[str, Any]:
    """What decides an image's embedding: model, detector and alignment configuration, and
    the source of the pipeline modules (a change in alignment code invalidates a cache)."""
    s = engine.settings
    udfs_dir = Path(__file__).resolve().parent
    code = hashlib.sha256()
    for name in _PIPELINE_SOURCES:
        p = udfs_dir / name
        for f in sorted(p.glob("*.py")) if p.is_dir() else [p]:
            if f.is_file():
                code.update(f.name.encode() + b"\0" + f.read_bytes())
    return {
        "format": CACHE_FORMAT,
        "model_id": engine.model_id,
        "detector": engine.detector.name,
        "detector_config": s.detector.model_dump(mode="json"),
        "align": s.align.model_dump(mode="json"),
        "embedder": {
            "flip_average": s.embedder.model_dump(mode="json").get("flip_average"),
            "model_path": str(s.embedder.model_path) if s.embedder.model_path else None,
        },
        "images": s.images.model_dump(mode="json"),
        "pipeline_source_sha256": code.hexdigest(),
    }


def _images_digest(root: Path, paths: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        st = p.stat()
        h.update(f"{p.relative_to(root)}\0{st.st_size}\n".encode())
    return h.hexdigest()


def embed_cached(
    engine: FaceEngine,
    root: Path,
    paths: Sequence[Path],
    cache_dir: Path | None,
    embed: Callable[[FaceEngine, Sequence[Path]], Any] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings of ``paths`` (images under ``root``), [n, dim] in ``paths`` order, NaN rows
    for unreadable images, and what was recorded with them (``no_face``, ``unreadable``:
    paths relative to root; ``cache``: the file). Read from ``cache_dir`` when it holds an
    entry with the same key (pipeline fingerprint + the set of images, order aside); else
    computed with ``embed`` (default ``udfs.evaluation.embed_images``) and stored."""
    root = Path(root)
    ordered = sorted(set(paths))
    rel = [str(p.relative_to(root)) for p in ordered]
    fingerprint = pipeline_fingerprint(engine)
    images = _images_digest(root, ordered)
    key = hashlib.sha256(
        json.dumps({"pipeline": fingerprint, "images": images}, sort_keys=True).encode()
    ).hexdigest()
    file = cache_dir / f"{root.name}-{key[:20]}.npz" if cache_dir is not None else None
    vectors: np.ndarray | None = None
    if file is not None and file.is_file():
        with np.load(file, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("key") == key and meta.get("paths") == rel:
                vectors = z["vectors"]
                meta |= {"cache": str(file), "cached": True}
                log.info("embeddings of %d images read from %s", len(ordered), file)
    if vectors is None:
        if embed is None:
            from udfs.evaluation import embed_images

            embed = embed_images
        result = embed(engine, ordered)
        vectors = np.asarray(result.vectors, dtype=np.float32)
        meta = {
            "key": key,
            "root": str(root),
            "paths": rel,
            "no_face": [str(p.relative_to(root)) for p in result.no_face],
            "unreadable": [str(p.relative_to(root)) for p in result.unreadable],
            "fingerprint": fingerprint,
        }
        if file is not None:
            file.parent.mkdir(parents=True, exist_ok=True)
            tmp = file.with_name(file.stem + ".tmp.npz")
            np.savez_compressed(tmp, vectors=vectors, meta=np.array(json.dumps(meta)))
            tmp.replace(file)
            log.info("embeddings of %d images cached in %s", len(ordered), file)
        meta |= {"cache": str(file) if file else None, "cached": False}
    row = {p: i for i, p in enumerate(ordered)}
    return vectors[[row[p] for p in paths]], meta


def load_cached(file: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A cache file written by ``embed_cached`` as identity -> embeddings (for reuse with
    another protocol or accept mask) and its metadata (``paths`` relative to the root)."""
    with np.load(file, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        vectors = z["vectors"]
    paths = [Path(p) for p in meta["paths"]]
    return group_by_identity(paths, vectors), meta
