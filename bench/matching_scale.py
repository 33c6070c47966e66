"""Matching at 100k and 1M templates: exact search against Annoy and hnsw, full and
PCA-reduced, on vectors sampled from a model fitted to real FaceNet embeddings of LFW.

The vectors. ``FaceModel`` is fitted to the cached embeddings of LFW's pairs images (the
default pipeline, ``udfs.open_set.embed_cached``): a template is ``normalise(c + s * w)``
with ``c`` an identity centre drawn from a Gaussian mixture fitted to LFW's identity means
(k-means components, each with its own between-identity covariance, less the share the
within-identity spread adds to a mean of few images), ``w`` drawn from LFW's pooled
within-identity covariance and ``s`` a per-image and per-identity log-normal scale (LFW's
within-identity spread varies more than one Gaussian's). The report compares the model's
distance distributions with LFW's on a sample of LFW's own shape (``model_fit``).

The gallery: persons with 1-5 templates each (mean 3). Probes: ``genuine`` (an enrolled
person's identity, another sample) and ``stranger`` (a new identity centre).

What is timed is ``udfs.match.Matcher.match`` on snapshots written by
``index_builder.snapshot.write_snapshot``: the code the job runs, with its candidate
re-rank on true distances. Per query = batch time / batch size, for batches of 1 and of
``--batch`` probes (a micro-batch). recall@1 is against a separate brute-force search:
the matcher's best template is the exact nearest one (or at the same distance).

Timings are wall clock (``p50_ms``/``p99_ms``) and process CPU time (``cpu_*``: what a
query costs when the shared cores preempt it). numpy's BLAS runs ``--blas-threads``
threads (default 1, a Flink slot's share of the cores; set before numpy loads): on cores
busy with other work, OpenBLAS threads waiting for each other made a batch of 16 through
the matcher 5-8x slower than one thread (measured on 2026-11-30).

    python bench/matching_scale.py                                # 100k and 1M, ~40 min
    python bench/matching_scale.py --sizes 100000 --skip-crossover  # quicker
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def _blas_threads_from_argv() -> str:
    argv = sys.argv
    for i, a in enumerate(argv):
        if a == "--blas-threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--blas-threads="):
            return a.split("=", 1)[1]
    return "1"


if __name__ == "__main__":  # before numpy loads OpenBLAS
    os.environ["OPENBLAS_NUM_THREADS"] = _blas_threads_from_argv()

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from facerec.config import default_data_dir  # noqa: E402
from facerec.models import FACENET_MODEL_ID  # noqa: E402
from index_builder.snapshot import fit_pca, write_snapshot  # noqa: E402
from udfs.evaluation import kfold_accuracy, parse_lfw_pairs  # noqa: E402
from udfs.match import Matcher  # noqa: E402

DIM = 512
QUANTILES = (1, 5, 25, 50, 75, 95, 99)
DEFAULT_CACHE = default_data_dir() / "cache" / "embeddings"
"""Where `facerec eval` caches embeddings (jobs/cli/tools.py: <data_dir>/cache/embeddings)."""


# --------------------------------------------------------------------------- real data
def find_lfw_cache(cache_dir: Path, model_id: str = FACENET_MODEL_ID) -> Path:
    """The cached LFW embeddings of ``model_id`` (``embed_cached`` files: lfw-<key>.npz)."""
    for f in sorted(cache_dir.glob("lfw-*.npz")):
        with np.load(f, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
        if meta.get("fingerprint", {}).get("model_id") == model_id:
            return f
    raise FileNotFoundError(
        f"no LFW embeddings of {model_id} in {cache_dir}: run `facerec eval --lfw` once"
    )


def load_lfw(file: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Unit embeddings (rows without a face dropped), identity labels, relative paths."""
    with np.load(file, allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        vectors = z["vectors"].astype(np.float64)
    ok = ~np.isnan(vectors).any(axis=1)
    paths = [p for p, k in zip(meta["paths"], ok, strict=True) if k]
    _, labels = np.unique([p.split("/")[0] for p in paths], return_inverse=True)
    return vectors[ok], labels, paths


# --------------------------------------------------------------------------- the model
def _kmeans(z: np.ndarray, k: int, rng: np.random.Generator, iters: int = 30) -> np.ndarray:
    centres = z[rng.choice(len(z), k, replace=False)]
    assign = np.zeros(len(z), dtype=np.int64)
    for _ in range(iters):
        assign = ((centres**2).sum(1) - 2 * z @ centres.T).argmin(1)
        centres = np.stack(
            [z[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(k)]
        )
    return assign


def _psd_factor(cov: np.ndarray) -> np.ndarray:
    values, vecs = np.linalg.eigh((cov + cov.T) / 2)
    return vecs * np.sqrt(np.clip(values, 0.0, None))  # x = L z, L L^T = cov (clipped PSD)


@dataclass
class FaceModel:
    means: np.ndarray  # [k, dim] mixture component means of identity centres
    factors: np.ndarray  # [k, dim, dim] their between-identity covariance factors
    weights: np.ndarray  # [k]
    within: np.ndarray  # [dim, dim] within-identity covariance factor
    sigma_image: float
    sigma_identity: float

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        labels: np.ndarray,
        components: int = 32,
        sigma_image: float = 0.45,
        sigma_identity: float = 0.2,
        seed: int = 1,
    ) -> FaceModel:
        n_id = int(labels.max()) + 1
        count = np.bincount(labels, minlength=n_id)
        means = np.zeros((n_id, x.shape[1]))
        np.add.at(means, labels, x)
        means /= count[:, None]
        multi = count[labels] >= 2
        dev = x[multi] - means[labels[multi]]
        within = dev.T @ dev / (count[count >= 2] - 1).sum()
        assign = _kmeans(means, components, np.random.default_rng(seed))
        mix_means, factors, weights = [], [], []
        for j in range(components):
            sel = assign == j
            m = means[sel]
            centred = m - m.mean(0)
            cov = centred.T @ centred / max(len(m) - 1, 1)
            cov -= within * np.mean(1.0 / count[sel])  # a mean of n images carries within/n
            mix_means.append(m.mean(0))
            factors.append(_psd_factor(cov))
            weights.append(sel.sum())
        w = np.asarray(weights, dtype=np.float64)
        return cls(
            np.stack(mix_means),
            np.stack(factors),
            w / w.sum(),
            _psd_factor(within),
            sigma_image,
            sigma_identity,
        )

    def centres(self, n: int, rng: np.random.Generator) -> np.ndarray:
        comp = rng.choice(len(self.weights), n, p=self.weights)
        out = np.empty((n, self.means.shape[1]), dtype=np.float32)
        for j in range(len(self.weights)):
            sel = np.nonzero(comp == j)[0]
            z = rng.standard_normal((len(sel), self.means.shape[1]))
            out[sel] = self.means[j] + z @ self.factors[j].T
        return out

    def identity_scales(self, n: int, rng: np.random.Generator) -> np.ndarray:
        s = self.sigma_identity
        return np.exp(s * rng.standard_normal(n) - s * s).astype(np.float32)

    def samples(
        self,
        centres: np.ndarray,
        scales: np.ndarray,
        of: np.ndarray,
        rng: np.random.Generator,
        chunk: int = 100_000,
    ) -> np.ndarray:
        """Unit embeddings, one per entry of ``of`` (identity numbers)."""
        out = np.empty((len(of), centres.shape[1]), dtype=np.float32)
        s = self.sigma_image
        for a in range(0, len(of), chunk):
            ids = of[a : a + chunk]
            scale = np.sqrt(scales[ids] * np.exp(s * rng.standard_normal(len(ids)) - s * s))
            z = rng.standard_normal((len(ids), centres.shape[1]), dtype=np.float32)
            v = centres[ids] + scale[:, None] * (z @ self.within.T.astype(np.float32))
            out[a : a + len(ids)] = v / np.linalg.norm(v, axis=1, keepdims=True)
        return out


@dataclass
class Sample:
    gallery: np.ndarray
    persons: np.ndarray  # identity number per template
    genuine: np.ndarray
    strangers: np.ndarray


def sample_gallery(
    model: FaceModel, size: int, n_genuine: int, n_strangers: int, seed: int
) -> Sample:
    rng = np.random.default_rng(seed)
    per = rng.integers(1, 6, size // 2 + 1)  # 1-5 templates per person
    n_persons = int(np.searchsorted(np.cumsum(per), size)) + 1
    persons = np.repeat(np.arange(n_persons), per[:n_persons])[:size]
    centres = model.centres(n_persons + n_strangers, rng)
    scales = model.identity_scales(n_persons + n_strangers, rng)
    gallery = model.samples(centres, scales, persons, rng)
    genuine = model.samples(centres, scales, rng.choice(persons, n_genuine), rng)
    strangers = model.samples(centres, scales, n_persons + np.arange(n_strangers), rng)
    return Sample(gallery, persons, genuine, strangers)


# --------------------------------------------------------------------------- model fit
def distance_stats(x: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Distance distributions of a set of unit embeddings (quantiles), LFW's shape."""
    d = np.sqrt(np.clip(2 - 2 * (x @ x.T), 0, None))
    np.fill_diagonal(d, np.inf)
    same = labels[:, None] == labels[None, :]
    iu = np.triu_indices(len(x), 1)
    multi = np.bincount(labels)[labels] >= 2
    nearest = d.argmin(1)
    dists = {
        "nearest_neighbour": d.min(1),
        "nearest_same_identity": np.where(same, d, np.inf).min(1)[multi],
        "nearest_other_identity": np.where(~same, d, np.inf).min(1),
        "genuine_pairs": d[iu][same[iu]],
        "impostor_pairs": d[iu][~same[iu]],
    }
    same_nn = float(np.mean(labels[nearest] == labels))
    out: dict[str, Any] = {"nn_is_same_identity": round(same_nn, 4)}
    out["quantiles"] = {
        k: np.round(np.percentile(v, QUANTILES), 3).tolist() for k, v in dists.items()
    }
    out["_raw"] = dists
    return out


def ks_statistic(a: np.ndarray, b: np.ndarray) -> float:
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / len(a)
    fb = np.searchsorted(np.sort(b), grid, side="right") / len(b)
    return round(float(np.abs(fa - fb).max()), 4)


def model_fit_report(model: FaceModel, x: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    """LFW against a sample of the model with LFW's identities and images per identity."""
    rng = np.random.default_rng(seed)
    n_id = int(labels.max()) + 1
    centres = model.centres(n_id, rng)
    fake = model.samples(centres, model.identity_scales(n_id, rng), labels, rng)
    real_s, fake_s = distance_stats(x.astype(np.float32), labels), distance_stats(fake, labels)
    report: dict[str, Any] = {
        "images": len(x),
        "identities": n_id,
        "quantiles_at": list(QUANTILES),
        "real": {k: v for k, v in real_s.items() if k != "_raw"},
        "model": {k: v for k, v in fake_s.items() if k != "_raw"},
        "ks_statistic": {
            k: ks_statistic(real_s["_raw"][k], fake_s["_raw"][k]) for k in real_s["_raw"]
        },
    }
    return report


# --------------------------------------------------------------------------- PCA on LFW
def lfw_pca_accuracy(
    x: np.ndarray, paths: list[str], pairs_file: Path, dims: list[int]
) -> dict[str, Any]:
    """LFW 10-fold verification accuracy on the full vectors and on PCA-reduced ones, the
    PCA of each fold fitted on the images of the other nine folds only."""
    pairs = parse_lfw_pairs(pairs_file)
    root = pairs_file.parent
    row = {p: i for i, p in enumerate(paths)}
    a = np.array([row.get(str(p.relative_to(root)), -1) for p, _, _, _ in pairs])
    b = np.array([row.get(str(q.relative_to(root)), -1) for _, q, _, _ in pairs])
    same = np.array([s for _, _, s, _ in pairs])
    folds = np.array([f for _, _, _, f in pairs])
    keep = (a >= 0) & (b >= 0)

    def accuracy(dist: np.ndarray) -> float:
        full = np.full(len(pairs), 4.0)  # no face: never a match
        full[keep] = dist
        return round(kfold_accuracy(full, same, folds)[0], 4)

    xf = x.astype(np.float32)
    out: dict[str, Any] = {
        "pairs": len(pairs),
        "pairs_without_face": int((~keep).sum()),
        "full_512": accuracy(np.linalg.norm(xf[a[keep]] - xf[b[keep]], axis=1)),
    }
    for k in dims:
        dist = np.zeros(int(keep.sum()))
        kept = []
        for f in np.unique(folds):
            test = folds[keep] == f
            train_rows = np.unique(np.concatenate([a[keep][~test], b[keep][~test]]))
            proj, share = fit_pca(xf[train_rows], k)
            kept.append(share)
            pa, pb = proj(xf[a[keep][test]]), proj(xf[b[keep][test]])
            dist[test] = np.linalg.norm(pa - pb, axis=1)
        out[f"pca_{k}"] = accuracy(dist)
        out[f"pca_{k}_variance_kept"] = round(float(np.mean(kept)), 6)
    return out


# --------------------------------------------------------------------------- measuring
def exact_nearest(gallery: np.ndarray, queries: np.ndarray, chunk: int = 100_000) -> np.ndarray:
    """Distance to the nearest gallery row per query (brute force, float64 re-check)."""
    best = np.full(len(queries), np.inf)
    arg = np.zeros(len(queries), dtype=np.int64)
    for s in range(0, len(gallery), chunk):
        g = gallery[s : s + chunk]
        d2 = (g * g).sum(1)[None, :] - 2 * queries @ g.T
        j = d2.argmin(1)
        cand = np.linalg.norm(g[j].astype(np.float64) - queries, axis=1)
        better = cand < best
        best[better], arg[better] = cand[better], j[better] + s
    return best


@dataclass
class Lever:
    name: str
    index_kind: str
    pca_dim: int | None
    n_trees: int = 50
    hnsw_m: int = 16
    hnsw_ef_construction: int = 100
    search: tuple[int, ...] = ()  # search_k (annoy) or ef (hnsw) values
    top_k: tuple[int, ...] = ()  # candidates re-ranked exactly (default: --top-k)
    threads: tuple[int, ...] = ()  # hnswlib threads per batch (default: match.hnsw_threads)


def parse_lever(spec: str) -> Lever:
    """``annoy:pca=128:trees=50:search=2000,5000`` or ``hnsw:pca=96:m=16:efc=100:search=32,64``;
    ``topk=10,32`` times each search value with each number of re-ranked candidates, and
    ``threads=1,2`` with each number of hnswlib threads a batch is spread over."""
    kind, *opts = spec.split(":")
    lever = Lever(spec, kind, None)
    for opt in opts:
        key, value = opt.split("=")
        if key == "pca":
            lever.pca_dim = int(value) or None
        elif key == "trees":
            lever.n_trees = int(value)
        elif key == "m":
            lever.hnsw_m = int(value)
        elif key == "efc":
            lever.hnsw_ef_construction = int(value)
        elif key == "search":
            lever.search = tuple(int(v) for v in value.split(","))
        elif key == "topk":
            lever.top_k = tuple(int(v) for v in value.split(","))
        elif key == "threads":
            lever.threads = tuple(int(v) for v in value.split(","))
        else:
            raise ValueError(f"lever option {key!r} in {spec!r}")
    return lever


def time_matcher(
    matcher: Matcher, queries: np.ndarray, batch: int
) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Matches, and per-query wall and CPU seconds (batch time / batch size) per batch."""
    results: list[Any] = []
    wall, cpu = [], []
    for s in range(0, len(queries), batch):
        q = queries[s : s + batch]
        c0, t0 = time.process_time(), time.perf_counter()
        results += matcher.match(q)
        wall.append((time.perf_counter() - t0) / len(q))
        cpu.append((time.process_time() - c0) / len(q))
    return results, np.asarray(wall), np.asarray(cpu)


def timing(
    matcher: Matcher, queries: np.ndarray, truth: np.ndarray, batch: int, raw: bool
) -> dict[str, Any]:
    res, w1, c1 = time_matcher(matcher, queries, 1)
    _, wb, cb = time_matcher(matcher, queries, batch)
    out: dict[str, Any] = {
        "queries": len(queries),
        "recall_at_1": recall(res, truth),
        "p50_ms": ms(w1, 50),
        "p99_ms": ms(w1, 99),
        "cpu_p50_ms": ms(c1, 50),
        "cpu_p99_ms": ms(c1, 99),
        f"batch{batch}_p50_ms": ms(wb, 50),
        f"batch{batch}_p99_ms": ms(wb, 99),
        f"batch{batch}_cpu_p50_ms": ms(cb, 50),
        f"batch{batch}_cpu_p99_ms": ms(cb, 99),
    }
    if raw:
        out["raw_wall_ms_batch1"] = np.round(w1 * 1e3, 4).tolist()
        out[f"raw_wall_ms_per_query_batch{batch}"] = np.round(wb * 1e3, 4).tolist()
    return out


def recall(results: list[Any], truth: np.ndarray, tol: float = 1e-5) -> float:
    hits = [r.distance <= t + tol for r, t in zip(results, truth, strict=False)]
    return round(float(np.mean(hits)), 4)


def ms(values: np.ndarray, q: float) -> float:
    return round(float(np.percentile(values, q)) * 1e3, 4)


def snapshot_bytes(path: Path, count: int) -> dict[str, float]:
    files = {f.name: f.stat().st_size for f in path.iterdir() if f.name != "manifest.json"}
    per = {k: round(v / max(count, 1), 1) for k, v in sorted(files.items())}
    index = sum(v for k, v in files.items() if k.startswith("index."))
    per["index_per_template"] = round(index / max(count, 1), 1)
    per["total_on_disk_per_template"] = round(sum(files.values()) / max(count, 1), 1)
    return per


def python_ids_bytes(matcher: Matcher) -> float:
    """Bytes per template of the id lists a loaded snapshot holds in Python."""
    snap = matcher._snap
    if snap is None or not snap.count:
        return 0.0
    n = min(snap.count, 10_000)
    strings = (
        sum(
            sys.getsizeof(snap.template_ids[i]) + sys.getsizeof(snap.person_ids[i])
            for i in range(n)
        )
        / n
    )
    return round(strings + 2 * 8, 1)  # + one list slot each


def run_lever(
    lever: Lever, sample: Sample, truth: dict[str, np.ndarray], work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    size = len(sample.gallery)
    tids = [f"t{i}" for i in range(size)]
    pids = [f"p{p}" for p in sample.persons]
    t0 = time.perf_counter()
    info = write_snapshot(
        work,
        tids,
        pids,
        sample.gallery,
        model_id=FACENET_MODEL_ID,
        max_change_seq=1,
        n_trees=lever.n_trees,
        seed=args.seed,
        snapshot_id=f"s{size}-{abs(hash(lever.name))}",
        index_kind=lever.index_kind,
        pca_dim=lever.pca_dim,
        hnsw_m=lever.hnsw_m,
        hnsw_ef_construction=lever.hnsw_ef_construction,
        n_jobs=args.jobs,
        progress=False,
    )
    build_s = time.perf_counter() - t0
    row: dict[str, Any] = {
        "size": size,
        "lever": lever.name,
        "index_kind": lever.index_kind,
        "pca_dim": lever.pca_dim,
        "variance_kept": (info.manifest.get("projection") or {}).get("variance_kept"),
        "build_s": round(build_s, 1),
        "bytes": snapshot_bytes(info.path, size),
        "runs": [],
    }
    m = Matcher(FACENET_MODEL_ID, threshold=0.9, top_k=args.top_k, exact_max_templates=0)
    t0 = time.perf_counter()
    m.load_snapshot(info.path)  # what each worker does when a snapshot is broadcast
    row["load_s"] = round(time.perf_counter() - t0, 2)
    row["bytes"]["python_ids_per_template"] = python_ids_bytes(m)
    print(f"  {lever.name}: built in {build_s:.1f}s", flush=True)
    for value, top_k, threads in itertools.product(
        lever.search, lever.top_k or (args.top_k,), lever.threads or (m.hnsw_threads,)
    ):
        m.search_k, m.hnsw_ef, m.top_k, m.hnsw_threads = value, value, top_k, threads
        run: dict[str, Any] = {"search_k" if lever.index_kind == "annoy" else "ef": value}
        run["top_k"] = top_k
        run["hnsw_threads"] = threads
        for name, queries in (("genuine", sample.genuine), ("stranger", sample.strangers)):
            run[name] = timing(m, queries, truth[name], args.batch, not args.no_raw)
        row["runs"].append(run)
        g, s = run["genuine"], run["stranger"]
        print(
            f"    {value} top_k {top_k} threads {threads}: genuine r@1 {g['recall_at_1']} "
            f"p50/p99 {g['p50_ms']}/{g['p99_ms']} ms cpu {g['cpu_p50_ms']}/{g['cpu_p99_ms']} "
            f"(b{args.batch} {g[f'batch{args.batch}_p50_ms']}/{g[f'batch{args.batch}_p99_ms']}); "
            f"stranger r@1 {s['recall_at_1']} p50/p99 {s['p50_ms']}/{s['p99_ms']} ms "
            f"(b{args.batch} {s[f'batch{args.batch}_p50_ms']}/{s[f'batch{args.batch}_p99_ms']})",
            flush=True,
        )
    m.close()
    shutil.rmtree(info.path, ignore_errors=True)
    return row


def run_exact(
    sample: Sample, truth: dict[str, np.ndarray], work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """The matcher's exact path (batched matrix product) on a snapshot of the gallery."""
    size = len(sample.gallery)
    info = write_snapshot(
        work,
        [f"t{i}" for i in range(size)],
        [f"p{p}" for p in sample.persons],
        sample.gallery,
        model_id=FACENET_MODEL_ID,
        max_change_seq=1,
        n_trees=1,
        snapshot_id=f"exact{size}",
        n_jobs=args.jobs,
        progress=False,
    )
    m = Matcher(FACENET_MODEL_ID, threshold=0.9, top_k=args.top_k, exact_max_templates=size)
    m.load_snapshot(info.path)
    m.match(sample.genuine[:2])  # |v|^2 once per snapshot, not in the timings
    n = args.exact_queries
    row: dict[str, Any] = {"size": size, "lever": "exact", "runs": []}
    run: dict[str, Any] = {}
    for name, queries in (("genuine", sample.genuine[:n]), ("stranger", sample.strangers[:n])):
        run[name] = timing(m, queries, truth[name][:n], args.batch, not args.no_raw)
    row["runs"].append(run)
    row["bytes"] = {"vectors_per_template": 4 * DIM}
    brief = {k: {f: v for f, v in r.items() if not f.startswith("raw")} for k, r in run.items()}
    print(f"  exact: {json.dumps(brief)}", flush=True)
    m.close()
    shutil.rmtree(info.path, ignore_errors=True)
    return row


def crossover(
    sample: Sample, lever: Lever, value: int, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Per-query time of exact search and of ``lever``'s index at growing gallery sizes
    (prefixes of the gallery), batches of 1 and of ``--batch``; the crossover is the first
    size where the index is faster."""
    queries = np.vstack([sample.genuine[:200], sample.strangers[:200]])
    rows = []
    for size in [n for n in args.crossover_sizes if n <= len(sample.gallery)]:
        sub = sample.gallery[:size]
        info = write_snapshot(
            work,
            [f"t{i}" for i in range(size)],
            [f"p{p}" for p in sample.persons[:size]],
            sub,
            model_id=FACENET_MODEL_ID,
            max_change_seq=1,
            n_trees=lever.n_trees,
            seed=args.seed,
            snapshot_id=f"x{size}",
            index_kind=lever.index_kind,
            pca_dim=lever.pca_dim,
            hnsw_m=lever.hnsw_m,
            hnsw_ef_construction=lever.hnsw_ef_construction,
            n_jobs=args.jobs,
            progress=False,
        )
        m = Matcher(FACENET_MODEL_ID, top_k=args.top_k, search_k=value, hnsw_ef=value)
        m.load_snapshot(info.path)
        row: dict[str, Any] = {"size": size}
        for batch in (1, args.batch):
            # alternate the two paths batch by batch: both see the same machine load
            times: dict[str, list[tuple[float, float]]] = {"exact": [], "index": []}
            for s in range(0, len(queries), batch):
                q = queries[s : s + batch]
                for limit, path in ((size, "exact"), (0, "index")):
                    m.exact_max_templates = limit
                    c0, t0 = time.process_time(), time.perf_counter()
                    m.match(q)
                    times[path].append(
                        ((time.perf_counter() - t0) / len(q), (time.process_time() - c0) / len(q))
                    )
            e, i = np.asarray(times["exact"][1:]), np.asarray(times["index"][1:])  # 1st: warm-up
            row[f"batch{batch}"] = {
                "exact_p50_ms": ms(e[:, 0], 50),
                "exact_p99_ms": ms(e[:, 0], 99),
                "index_p50_ms": ms(i[:, 0], 50),
                "index_p99_ms": ms(i[:, 0], 99),
                "exact_cpu_p50_ms": ms(e[:, 1], 50),
                "index_cpu_p50_ms": ms(i[:, 1], 50),
                "index_over_exact_p50": round(float(np.median(i[:, 0]) / np.median(e[:, 0])), 3),
                "index_over_exact_cpu_p50": round(
                    float(np.median(i[:, 1]) / max(np.median(e[:, 1]), 1e-9)), 3
                ),
            }
        print(f"  crossover {size}: {json.dumps(row)}", flush=True)
        rows.append(row)
        m.close()
        shutil.rmtree(info.path, ignore_errors=True)
    result: dict[str, Any] = {"lever": lever.name, "search": value, "rows": rows}
    for batch in (1, args.batch):
        faster = [r["size"] for r in rows if r[f"batch{batch}"]["index_over_exact_p50"] < 1.0]
        result[f"batch{batch}_first_size_index_faster"] = faster[0] if faster else None
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument(
        "--levers",
        nargs="+",
        default=[
            "annoy:pca=0:trees=50:search=10000,25000",
            "annoy:pca=96:trees=50:search=3000,10000",
            "hnsw:pca=0:m=16:efc=100:search=64",
            "hnsw:pca=64:m=16:efc=100:search=64",
            "hnsw:pca=96:m=16:efc=100:search=16,32,64,128,256",
            "hnsw:pca=96:m=32:efc=100:search=32,64,128",
            "hnsw:pca=64:m=32:efc=200:search=64,96,128",
        ],
        help="kind:pca=K:trees=N|m=M:efc=E:search=v1,v2 (search_k for annoy, ef for hnsw)",
    )
    ap.add_argument(
        "--levers-1m",
        nargs="+",
        default=[
            "annoy:pca=96:trees=50:search=10000,30000",
            "hnsw:pca=64:m=32:efc=200:search=64,96,192",
        ],
        help="the levers at sizes above 200k (a full-dimension Annoy build there takes long)",
    )
    ap.add_argument("--genuine", type=int, default=1000)
    ap.add_argument("--strangers", type=int, default=1000)
    ap.add_argument("--exact-queries", type=int, default=100, help="probes per set, exact path")
    ap.add_argument("--batch", type=int, default=16, help="micro-batch size timed besides 1")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--jobs", type=int, default=2, help="index build threads")
    ap.add_argument("--pca-dims", type=int, nargs="+", default=[64, 96, 128])
    ap.add_argument("--crossover-lever", default="hnsw:pca=64:m=32:efc=200:search=96")
    ap.add_argument(
        "--crossover-sizes",
        type=int,
        nargs="+",
        default=[500, 1000, 2000, 5000, 10_000, 20_000],
    )
    ap.add_argument("--skip-crossover", action="store_true")
    ap.add_argument("--no-raw", action="store_true", help="leave out every query's timing")
    ap.add_argument("--blas-threads", default="1", help="OPENBLAS_NUM_THREADS (read at start)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--lfw", type=Path, default=ROOT.parent / "shared/faces/lfw")
    ap.add_argument("--work", type=Path, default=None, help="snapshot scratch dir")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=ROOT / "reports/bench_matching_scale.json")
    args = ap.parse_args()

    started = time.time()
    cache = find_lfw_cache(args.cache_dir)
    x, labels, paths = load_lfw(cache)
    t0 = time.perf_counter()
    model = FaceModel.fit(x, labels)
    print(f"model fitted to {len(x)} LFW embeddings in {time.perf_counter() - t0:.1f}s", flush=True)
    report: dict[str, Any] = {
        "benchmark": "matching at scale: exact vs Annoy vs hnsw, full and PCA-reduced",
        "command": " ".join(sys.argv),
        "lfw_embeddings": str(cache),
        "model": {
            "mixture_components": len(model.weights),
            "sigma_image": model.sigma_image,
            "sigma_identity": model.sigma_identity,
            "templates_per_person": "uniform 1-5",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_at_start": list(os.getloadavg()),
            "python": platform.python_version(),
            "build_jobs": args.jobs,
            "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        },
        "batch": args.batch,
        "top_k": args.top_k,
        "levers": args.levers,
        "levers_above_200k": args.levers_1m,
    }
    report["model_fit"] = model_fit_report(model, x, labels, args.seed)
    print("model fit (KS):", report["model_fit"]["ks_statistic"], flush=True)
    pairs = args.lfw / "pairs.txt"
    if pairs.is_file():
        report["lfw_pca_accuracy"] = lfw_pca_accuracy(x, paths, pairs, args.pca_dims)
        print("LFW accuracy:", report["lfw_pca_accuracy"], flush=True)
    work = Path(tempfile.mkdtemp(prefix="matching-scale-", dir=args.work))
    report["results"] = []
    try:
        for size in args.sizes:
            t0 = time.perf_counter()
            sample = sample_gallery(model, size, args.genuine, args.strangers, args.seed + size)
            truth = {
                "genuine": exact_nearest(sample.gallery, sample.genuine),
                "stranger": exact_nearest(sample.gallery, sample.strangers),
            }
            print(
                f"size {size}: sampled + brute-force truth in {time.perf_counter() - t0:.1f}s; "
                f"nearest-template distance p50 genuine {np.median(truth['genuine']):.3f}, "
                f"stranger {np.median(truth['stranger']):.3f}",
                flush=True,
            )
            report["results"].append(
                {
                    "size": size,
                    "lever": "truth",
                    "nearest_distance_quantiles": {
                        k: np.round(np.percentile(v, QUANTILES), 3).tolist()
                        for k, v in truth.items()
                    },
                }
            )
            report["results"].append(run_exact(sample, truth, work, args))
            for spec in args.levers if size <= 200_000 else args.levers_1m:
                report["results"].append(run_lever(parse_lever(spec), sample, truth, work, args))
                _write(args.out, report)
            if not args.skip_crossover and size == min(args.sizes):
                lever = parse_lever(args.crossover_lever)
                report["crossover"] = crossover(sample, lever, lever.search[0], work, args)
            _write(args.out, report)
            del sample, truth
            gc.collect()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["wall_s"] = round(time.time() - started, 1)
    _write(args.out, report)
    print(f"written: {args.out}")


def _write(out: Path, report: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
