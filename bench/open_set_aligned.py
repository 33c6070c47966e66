"""The open-set protocol (udfs/open_set.py) on the LFW embeddings ``bench/alignment.py``
cached for one pipeline variant: the default pipeline's figures before every LFW image is
embedded by ``facerec eval --lfw`` (which caches its own).

    python bench/alignment.py embed --lfw ../shared/faces/lfw --folds 0,1,2,3 --variants production
    python bench/open_set_aligned.py --variant production --sizes 10,100,300 --threshold 0.90
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from alignment import CACHE  # noqa: E402

from udfs.open_set import format_open_set, group_by_identity, summarize, sweep  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=CACHE, help="bench/alignment.py's cache")
    ap.add_argument("--variant", default="production")
    ap.add_argument("--sizes", default="10,100,300")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=0.90)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    vectors = np.load(args.cache / f"emb_{args.variant}.npz")["vec"]
    detections = np.load(args.cache / "detections.npz")
    rel = [Path(*Path(p).parts[-2:]) for p in detections["paths"]]
    have = ~np.isnan(vectors).any(1)
    by_identity = group_by_identity([r for r, h in zip(rel, have, strict=True) if h],
                                    vectors[have])
    print("images", int(have.sum()), "identities", len(by_identity),
          "pool", sum(1 for v in by_identity.values() if len(v) >= 2))
    sizes = tuple(int(n) for n in args.sizes.split(","))
    result = sweep(by_identity, sizes, range(args.seeds), (1, 3))
    summary = summarize(result, args.threshold, candidate_thresholds=(
        0.84, 0.86, 0.88, 0.9, 0.92, 0.95, 1.0, 1.05))
    print(format_open_set(summary))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=1, default=float))


if __name__ == "__main__":
    main()
