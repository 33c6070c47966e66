"""Accuracy of the face engine on a labelled folder, the way face recognition is reported.

* 1:1 verification: every genuine pair and as many seeded impostor pairs, 10-fold accuracy
  with the threshold chosen on the other nine folds, TAR at FAR 1e-3, ROC curve (PNG).
* 1:N identification: gallery = ``train/`` when the folder has ``train/`` and ``val/``
  (probes = ``val/``), else the first image of each identity (probes = the rest); rank-1.
* Open set: every identity in turn is removed from the gallery and its probes become
  non-mated searches; FNIR at the threshold where FPIR = 1%.
* LFW: when ``pairs.txt`` is present, the standard View-2 10-fold protocol.
* Open set at realistic gallery sizes (udfs/open_set.py) on the LFW folder: N in
  {10, 100, 1000} people enrolled with 1-3 photos, FNIR at FPIR 1% and 0.1% and FPIR / FNIR at
  the configured threshold over seeded draws; curve as a PNG.

Embeddings are cached under ``cache_dir`` (udfs/open_set.py ``embed_cached``): a rerun with
the same model, detector, alignment, pipeline source and images embeds nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from facerec.config import MatchConfig
from facerec.errors import InvalidImage
from udfs.detectors.base import Detection
from udfs.engine import FaceEngine, primary_detection

log = logging.getLogger(__name__)
THRESHOLDS = np.arange(0.0, 2.0001, 0.005)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass
class Embedded:
    paths: list[Path]
    vectors: np.ndarray  # [N, 512]; rows of images that could not be read are NaN
    no_face: list[Path] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)

    def index(self) -> dict[Path, int]:
        return {p: i for i, p in enumerate(self.paths)}


def embed_images(engine: FaceEngine, paths: Sequence[Path], batch: int = 16) -> Embedded:
    """Embed the primary face of each image. With no face found, a centred square of half
    the image side stands in (LFW faces are centred by construction); counted in ``no_face``."""
    vectors = np.full((len(paths), engine.embedder.dim), np.nan, dtype=np.float32)
    result = Embedded(list(paths), vectors)
    for start in tqdm(range(0, len(paths), batch), desc="embedding", unit="batch", leave=False):
        chunk = list(paths[start : start + batch])
        frames, slots = [], []
        for j, p in enumerate(chunk):
            try:
                frames.append(engine.decode(p.read_bytes()))
                slots.append(start + j)
            except InvalidImage as exc:
                log.warning("skipping %s: %s", p, exc)
                result.unreadable.append(p)
        detections = engine.detect(frames)
        chosen: list[list[Detection]] = []
        for frame, dets, slot in zip(frames, detections, slots, strict=True):
            best = primary_detection(dets, frame.shape)
            if best is None:
                result.no_face.append(paths[slot])
                h, w = frame.shape[:2]
                s = min(h, w) / 4
                chosen.append([Detection((w / 2 - s, h / 2 - s, w / 2 + s, h / 2 + s), 0.0)])
            else:
                chosen.append([best])
        faces = engine.embed_detections(frames, chosen, embed_rejected=True)
        for slot, row in zip(slots, faces, strict=True):
            vectors[slot] = row[0].embedding
    return result


# --------------------------------------------------------------------------- metrics
def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.linalg.norm(a - b, axis=1)


def best_threshold(dist: np.ndarray, same: np.ndarray) -> float:
    accs = [np.mean((dist <= t) == same) for t in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmax(accs))])


def kfold_accuracy(
    dist: np.ndarray, same: np.ndarray, folds: np.ndarray
) -> tuple[float, float, float]:
    """Mean and std of accuracy over folds, each fold judged with the threshold that is best
    on the other folds; also the mean chosen threshold."""
    accs, thresholds = [], []
    for k in np.unique(folds):
        test = folds == k
        t = best_threshold(dist[~test], same[~test])
        thresholds.append(t)
        accs.append(float(np.mean((dist[test] <= t) == same[test])))
    return float(np.mean(accs)), float(np.std(accs)), float(np.mean(thresholds))


def roc(dist: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(FAR, TAR, threshold) for every distinct distance as threshold."""
    order = np.argsort(dist, kind="stable")
    d, s = dist[order], same[order]
    tar = np.cumsum(s) / max(int(s.sum()), 1)
    far = np.cumsum(~s) / max(int((~s).sum()), 1)
    return far, tar, d


def tar_at_far(dist: np.ndarray, same: np.ndarray, target: float) -> tuple[float, float]:
    far, tar, thr = roc(dist, same)
    ok = far <= target
    if not np.any(ok):
        return 0.0, float("nan")
    i = int(np.nonzero(ok)[0][-1])
    return float(tar[i]), float(thr[i])


def save_roc(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4), dpi=110)
    for name, (far, tar) in curves.items():
        ax.plot(np.maximum(far, 1e-5), tar, label=name)
    ax.set_xscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(0.5, 1.001)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("facerec verification ROC")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --------------------------------------------------------------------------- protocols
def list_identities(root: Path) -> dict[str, list[Path]]:
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if files:
            out[d.name] = files
    return out


def verification_pairs(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All genuine pairs plus the same number of distinct seeded impostor pairs."""
    n = len(labels)
    i, j = np.triu_indices(n, k=1)
    genuine = labels[i] == labels[j]
    gi, gj = i[genuine], j[genuine]
    rng = np.random.default_rng(seed)
    imp = np.nonzero(~genuine)[0]
    pick = rng.choice(imp, size=min(len(gi), len(imp)), replace=False)
    a = np.concatenate([gi, i[pick]])
    b = np.concatenate([gj, j[pick]])
    same = np.concatenate([np.ones(len(gi), bool), np.zeros(len(pick), bool)])
    return a, b, same


def identification(
    gallery: np.ndarray, gallery_ids: np.ndarray, probes: np.ndarray, probe_ids: np.ndarray
) -> dict[str, float]:
    d = np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)
    ids = np.unique(gallery_ids)
    # distance to each identity = its closest template
    per_id = np.stack([d[:, gallery_ids == k].min(axis=1) for k in ids], axis=1)
    rank1 = float(np.mean(ids[np.argmin(per_id, axis=1)] == probe_ids))
    # open set: mated = the true identity is rank 1 within threshold; non-mated = each
    # probe searched against the gallery without its own identity
    mated_ok_dist = np.where(
        ids[np.argmin(per_id, axis=1)] == probe_ids, per_id.min(axis=1), np.inf
    )
    nonmated = np.array([per_id[p, ids != probe_ids[p]].min() for p in range(len(probe_ids))])
    t = float(np.quantile(nonmated, 0.01))  # FPIR = 1%
    fnir = float(np.mean(mated_ok_dist > t))
    return {
        "rank1": rank1,
        "probes": int(len(probe_ids)),
        "gallery_templates": int(len(gallery_ids)),
        "identities": int(len(ids)),
        "fnir_at_fpir_1pct": fnir,
        "threshold_at_fpir_1pct": t,
    }


@dataclass(frozen=True)
class OpenSetPlan:
    """What ``evaluate_folder`` runs of the open-set protocol (udfs/open_set.py)."""

    root: Path
    """identity/*.jpg folder (LFW)."""
    sizes: tuple[int, ...] = (10, 100, 1000)
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    gallery_per_person: tuple[int, int] = (1, 3)
    threshold: float = MatchConfig().threshold
    """The configured match threshold: FPIR / FNIR reported at it."""
    candidate_thresholds: tuple[float, ...] = (0.75, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05)
    """Also reported at these (choosing a threshold, a camera's own)."""


def _embed(
    engine: FaceEngine, root: Path, paths: Sequence[Path], cache_dir: Path | None
) -> tuple[np.ndarray, int, int, dict]:
    from udfs.open_set import embed_cached

    vectors, meta = embed_cached(engine, root, paths, cache_dir)
    return vectors, len(meta["no_face"]), len(meta["unreadable"]), meta


def open_set_report(
    engine: FaceEngine, plan: OpenSetPlan, out_dir: Path, cache_dir: Path | None
) -> tuple[dict, dict]:
    """Embed ``plan.root`` (cached), run the sweep, draw ``open_set.png``; returns the JSON
    summary and the raw draws by size."""
    from udfs.open_set import group_by_identity, jsonable, save_curves, summarize, sweep

    full = list_identities(plan.root)
    paths = sorted(p for v in full.values() for p in v)
    if not paths:
        raise ValueError(f"{plan.root}: expected identity/*.jpg")
    vectors, no_face, unreadable, meta = _embed(engine, plan.root, paths, cache_dir)
    by_id = group_by_identity(paths, vectors)
    results = sweep(by_id, plan.sizes, plan.seeds, plan.gallery_per_person)
    summary = summarize(results, plan.threshold, candidate_thresholds=plan.candidate_thresholds)
    png = out_dir / "open_set.png"
    if results:
        save_curves(results, plan.threshold, png)
    summary |= {
        "dataset": str(plan.root),
        "images": len(paths),
        "identities": len(by_id),
        "pool_identities": sum(1 for v in by_id.values() if len(v) >= 2),
        "no_face": no_face,
        "unreadable": unreadable,
        "gallery_per_person": list(plan.gallery_per_person),
        "seeds": list(plan.seeds),
        "embeddings_cache": meta.get("cache"),
        "curve_png": str(png) if results else None,
    }
    return jsonable(summary), results


def evaluate_folder(
    engine: FaceEngine,
    root: Path,
    out_dir: Path,
    seed: int = 0,
    lfw_pairs: Path | None = None,
    open_set: OpenSetPlan | None = None,
    cache_dir: Path | None = None,
) -> dict:
    root = Path(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    split = (root / "train").is_dir() and (root / "val").is_dir()
    if split:
        gallery_map, probe_map = list_identities(root / "train"), list_identities(root / "val")
    else:
        full = list_identities(root)
        gallery_map = {k: v[:1] for k, v in full.items() if len(v) > 1}
        probe_map = {k: v[1:] for k, v in full.items() if len(v) > 1}
    paths = [p for m in (gallery_map, probe_map) for v in m.values() for p in v]
    labels = np.array([k for m in (gallery_map, probe_map) for k, v in m.items() for _ in v])
    is_gallery = np.array(
        [True] * sum(map(len, gallery_map.values())) + [False] * sum(map(len, probe_map.values()))
    )
    if not paths:
        raise ValueError(f"{root}: expected identity/*.jpg (or train/ and val/ of those)")
    vectors, no_face, unreadable, _ = _embed(engine, root, paths, cache_dir)
    ok = ~np.isnan(vectors).any(axis=1)
    vec, labels, is_gallery = vectors[ok], labels[ok], is_gallery[ok]

    a, b, same = verification_pairs(labels, seed)
    dist = distances(vec[a], vec[b])
    folds = np.random.default_rng(seed).integers(0, 10, size=len(dist))
    acc, acc_std, thr = kfold_accuracy(dist, same, folds)
    tar, tar_thr = tar_at_far(dist, same, 1e-3)
    far, tarc, _ = roc(dist, same)
    curves = {f"{root.name} (acc {acc:.3f})": (far, tarc)}
    report: dict = {
        "dataset": str(root),
        "model_id": engine.model_id,
        "detector": engine.detector.name,
        "images": len(paths),
        "no_face": no_face,
        "unreadable": unreadable,
        "verification": {
            "genuine_pairs": int(same.sum()),
            "impostor_pairs": int((~same).sum()),
            "accuracy_10fold": acc,
            "accuracy_std": acc_std,
            "threshold": thr,
            "tar_at_far_1e-3": tar,
            "threshold_at_far_1e-3": tar_thr,
        },
        "identification": identification(
            vec[is_gallery], labels[is_gallery], vec[~is_gallery], labels[~is_gallery]
        ),
    }
    pairs_file = lfw_pairs or root / "pairs.txt"
    if pairs_file.is_file():
        report["lfw"], lfw_curve = lfw_protocol(engine, pairs_file, cache_dir)
        curves[f"LFW View-2 (acc {report['lfw']['accuracy_10fold']:.4f})"] = lfw_curve
    report["roc_png"] = str(out_dir / "roc.png")
    save_roc(curves, out_dir / "roc.png")
    if open_set is not None:
        report["open_set"], _ = open_set_report(engine, open_set, out_dir, cache_dir)
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2))
    return report


def parse_lfw_pairs(pairs_file: Path) -> list[tuple[Path, Path, bool, int]]:
    lines = pairs_file.read_text().split("\n")
    n_folds, per = (int(x) for x in lines[0].split())
    root = pairs_file.parent
    out = []
    for k, line in enumerate(x for x in lines[1:] if x.strip()):
        parts = line.split()
        if len(parts) == 3:
            n, i, j = parts
            p = (root / n / f"{n}_{int(i):04d}.jpg", root / n / f"{n}_{int(j):04d}.jpg", True)
        else:
            n1, i, n2, j = parts
            p = (root / n1 / f"{n1}_{int(i):04d}.jpg", root / n2 / f"{n2}_{int(j):04d}.jpg", False)
        out.append((*p, k // (2 * per)))
    if len(out) != n_folds * 2 * per:
        raise ValueError(f"{pairs_file}: expected {n_folds * 2 * per} pairs, read {len(out)}")
    return out


def lfw_protocol(
    engine: FaceEngine, pairs_file: Path, cache_dir: Path | None = None
) -> tuple[dict, tuple[np.ndarray, np.ndarray]]:
    pairs = parse_lfw_pairs(pairs_file)
    paths = sorted({p for a, b, _, _ in pairs for p in (a, b)})
    vectors, no_face, _, _ = _embed(engine, pairs_file.parent, paths, cache_dir)
    idx = {p: i for i, p in enumerate(paths)}
    a = vectors[[idx[p[0]] for p in pairs]]
    b = vectors[[idx[p[1]] for p in pairs]]
    same = np.array([p[2] for p in pairs])
    folds = np.array([p[3] for p in pairs])
    dist = distances(a, b)
    dist = np.where(np.isnan(dist), 4.0, dist)  # unreadable: never a match
    acc, acc_std, thr = kfold_accuracy(dist, same, folds)
    tar, tar_thr = tar_at_far(dist, same, 1e-3)
    tar2, tar2_thr = tar_at_far(dist, same, 1e-2)
    far, tarc, _ = roc(dist, same)
    return (
        {
            "pairs": len(pairs),
            "images": len(paths),
            "no_face": no_face,
            "accuracy_10fold": acc,
            "accuracy_std": acc_std,
            "threshold": thr,
            "tar_at_far_1e-3": tar,
            "threshold_at_far_1e-3": tar_thr,
            "tar_at_far_1e-2": tar2,
            "threshold_at_far_1e-2": tar2_thr,
        },
        (far, tarc),
    )


def format_table(report: dict) -> str:
    v, i = report["verification"], report["identification"]
    rows = [
        ("dataset", report["dataset"]),
        ("detector / model", f"{report['detector']} / {report['model_id']}"),
        (
            "images (no face, unreadable)",
            f"{report['images']} ({report['no_face']}, {report['unreadable']})",
        ),
        ("verification pairs (genuine/impostor)", f"{v['genuine_pairs']}/{v['impostor_pairs']}"),
        (
            "verification accuracy, 10-fold",
            f"{v['accuracy_10fold']:.4f} ± {v['accuracy_std']:.4f} (thr {v['threshold']:.3f})",
        ),
        ("TAR @ FAR 1e-3", f"{v['tar_at_far_1e-3']:.4f}"),
        (
            "identification rank-1",
            f"{i['rank1']:.4f} ({i['probes']} probes, {i['identities']} ids)",
        ),
        (
            "open-set FNIR @ FPIR 1%",
            f"{i['fnir_at_fpir_1pct']:.4f} (thr {i['threshold_at_fpir_1pct']:.3f})",
        ),
    ]
    if "lfw" in report:
        lfw = report["lfw"]
        rows += [
            (
                "LFW View-2 accuracy, 10-fold",
                f"{lfw['accuracy_10fold']:.4f} ± {lfw['accuracy_std']:.4f} "
                f"(thr {lfw['threshold']:.3f})",
            ),
            ("LFW TAR @ FAR 1e-3", f"{lfw['tar_at_far_1e-3']:.4f}"),
            ("LFW images (no face)", f"{lfw['images']} ({lfw['no_face']})"),
        ]
    width = max(len(r[0]) for r in rows)
    table = "\n".join(f"{k.ljust(width)}  {val}" for k, val in rows)
    o = report.get("open_set") or {}
    if o and not o.get("sizes"):
        table += (
            f"\n\nopen set on {o['dataset']}: no gallery size fits its "
            f"{o['pool_identities']} identities with 2+ images (--sizes)"
        )
    elif o:
        from udfs.open_set import format_open_set

        table += (
            f"\n\nopen set on {o['dataset']} ({o['pool_identities']} identities with 2+ images, "
            f"{o['identities']} in all; {len(o['seeds'])} seeds; mean ± std (min-max)):\n"
            + format_open_set(o)
        )
    return table
