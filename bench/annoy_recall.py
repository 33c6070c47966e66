"""Annoy recall@1 versus exact search, and query latency, on random unit 512-d vectors.

For each gallery size and ``n_trees``: build once (seeded), then for each ``search_k``
measure over the same queries

* ``recall_at_1_raw``: Annoy's first result is the exact nearest neighbour;
* ``recall_at_1_rerank``: the exact nearest neighbour is among Annoy's ``top_k`` (what
  ``udfs.match.Matcher`` does: top_k candidates re-ranked exactly on stored vectors);
* ``p50_ms`` / ``p99_ms``: latency of one ``get_nns_by_vector`` call (+ exact re-rank).

Two query sets: ``random`` (independent random unit vectors: every gallery item is at about
sqrt(2), the hardest case for any tree index) and ``near`` (a gallery item plus noise, at an
L2 distance of about ``--near-distance`` from it, like a genuine face probe).

Random unit vectors are the worst case; ``bench/matching_scale.py`` measures the matcher
itself (exact search, Annoy and hnsw, PCA-reduced) on vectors modelled on real embeddings.

    python bench/annoy_recall.py --sizes 10000 100000 --trees 10 50 100
    python bench/annoy_recall.py --sizes 1000000 --trees 10 --append
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from annoy import AnnoyIndex
from tqdm import tqdm

DIM = 512


def unit_rows(rng: np.random.Generator, n: int, dim: int = DIM, chunk: int = 100_000) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - s), dim), dtype=np.float32)
        out[s : s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def near_queries(
    rng: np.random.Generator, gallery: np.ndarray, n: int, distance: float
) -> np.ndarray:
    """Queries at about ``distance`` from a random gallery item (a genuine probe)."""
    base = gallery[rng.integers(0, len(gallery), n)]
    noise = unit_rows(rng, n)
    noise -= (noise * base).sum(1, keepdims=True) * base  # orthogonal to the base
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    # a unit vector at angle t from base is at chord distance 2 sin(t/2)
    t = 2 * np.arcsin(distance / 2)
    q = np.cos(t) * base + np.sin(t) * noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_nn(gallery: np.ndarray, queries: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    """Index of the nearest gallery row per query (max dot product == min L2 on unit rows)."""
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    arg = np.zeros(len(queries), dtype=np.int64)
    for s in range(0, len(gallery), chunk):
        sims = queries @ gallery[s : s + chunk].T
        j = sims.argmax(1)
        v = sims[np.arange(len(queries)), j]
        better = v > best
        best[better], arg[better] = v[better], j[better] + s
    return arg


def measure(
    index: AnnoyIndex,
    gallery: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    top_k: int,
    search_k: int,
) -> dict[str, float]:
    raw = rerank = 0
    times = np.empty(len(queries))
    for i, q in enumerate(queries):
        t0 = time.perf_counter()
        items = index.get_nns_by_vector(q, top_k, search_k=search_k)
        cand = gallery[np.sort(items)]
        best = int(np.sort(items)[int(np.argmin(np.linalg.norm(cand - q, axis=1)))])
        times[i] = time.perf_counter() - t0
        raw += bool(items) and items[0] == truth[i]
        rerank += best == truth[i]
    n = len(queries)
    return {
        "recall_at_1_raw": round(raw / n, 4),
        "recall_at_1_rerank": round(rerank / n, 4),
        "p50_ms": round(float(np.percentile(times, 50)) * 1e3, 3),
        "p99_ms": round(float(np.percentile(times, 99)) * 1e3, 3),
    }


def run_size(args: argparse.Namespace, size: int) -> list[dict]:
    rng = np.random.default_rng(args.seed + size)
    gallery = unit_rows(rng, size)
    qsets = {
        "random": unit_rows(rng, args.queries),
        "near": near_queries(rng, gallery, args.queries, args.near_distance),
    }
    t0 = time.perf_counter()
    truths = {k: exact_nn(gallery, q) for k, q in qsets.items()}
    exact_ms = (time.perf_counter() - t0) / (2 * args.queries) * 1e3
    rows = []
    for n_trees in args.trees:
        index = AnnoyIndex(DIM, "euclidean")
        index.set_seed(args.seed)
        t0 = time.perf_counter()
        for i in tqdm(
            range(size), desc=f"add {size}", unit="item", leave=False, disable=size < 50_000
        ):
            index.add_item(i, gallery[i])
        add_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        index.build(n_trees, n_jobs=args.jobs)
        build_s = time.perf_counter() - t0
        print(f"size {size} n_trees {n_trees}: add {add_s:.1f}s build {build_s:.1f}s", flush=True)
        for mult in args.search_k_mult:
            search_k = -1 if mult <= 0 else int(mult * n_trees * args.top_k)
            row = {
                "size": size,
                "n_trees": n_trees,
                "top_k": args.top_k,
                "search_k": search_k,
                "search_k_effective": search_k if search_k > 0 else n_trees * args.top_k,
                "add_s": round(add_s, 2),
                "build_s": round(build_s, 2),
                "exact_brute_force_ms_per_query": round(exact_ms, 3),
            }
            for name, q in qsets.items():
                row[name] = measure(index, gallery, q, truths[name], args.top_k, search_k)
            print(json.dumps(row), flush=True)
            rows.append(row)
        index.unload()
        del index
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--trees", type=int, nargs="+", default=[10, 50, 100])
    ap.add_argument(
        "--search-k-mult",
        type=float,
        nargs="+",
        default=[0, 10, 50],
        help="search_k = mult * n_trees * top_k; 0 means Annoy's default (-1)",
    )
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument(
        "--near-distance",
        type=float,
        default=0.9,
        help="L2 distance of 'near' queries from their gallery item",
    )
    ap.add_argument("--jobs", type=int, default=1, help="Annoy build threads (machine is shared)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--out", type=Path, default=Path("reports/bench_annoy_recall.json"))
    ap.add_argument("--append", action="store_true", help="Add rows to an existing report")
    args = ap.parse_args()

    rows = []
    if args.append and args.out.is_file():
        rows = json.loads(args.out.read_text())["results"]
    for size in args.sizes:
        rows = [r for r in rows if not (r["size"] == size and r["n_trees"] in args.trees)]
        rows += run_size(args, size)
    report = {
        "benchmark": "annoy recall@1 vs exact search, random unit vectors",
        "dim": DIM,
        "metric": "euclidean",
        "queries_per_set": args.queries,
        "near_distance": args.near_distance,
        "seed": args.seed,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "annoy_build_jobs": args.jobs,
        },
        "results": sorted(rows, key=lambda r: (r["size"], r["n_trees"], r["search_k_effective"])),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
