"""Where copy-move pixel F1 is lost: per forgery, F1, precision, recall and the recall of each side.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/copy_move_losses.py [--set build|third] [--seed N]

``--set build`` (default) with seed 0 takes the 24 copy-move forgeries that benchmarks/forgery.py scores on
the build split; another seed draws 24 fresh build-split copy-move forgeries (4 per photo, blocks and
discs). ``--set third`` takes forgery_sets.copy_move_third (photos in neither split: look at it only to
report, never to set anything). The summary splits the F1 lost into copies missed entirely and copies
found with a poor mask.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))


def main() -> int:
    import cv2

    from genguard.detectors import forgery_sets as fs
    from genguard.detectors.evaluate import pixel_f1
    from genguard.detectors.forgery import copy_move

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--set", choices=("build", "third"), default="build")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.set == "third":
        items = [(img, gt, d) for img, gt, d in fs.copy_move_third()[0]]
    elif args.seed == 0:
        items = [(i, g, d) for i, g, d in fs.forgeries("build", per_photo=10) if d["kind"].startswith("copy_move")]
    else:
        items = list(fs.forgeries("build", per_photo=4, seed=args.seed, kinds=("copy_move_block", "copy_move_disc")))
    f1s, precs, recs = [], [], []
    for img, gt, d in items:
        m = copy_move(img).map > 0.5
        tp = float((m & gt).sum())
        n, lab = cv2.connectedComponents(gt.astype(np.uint8))
        sides = [round(float((m & (lab == c)).sum() / (lab == c).sum()), 2) for c in range(1, n)]
        f1 = pixel_f1(m, gt)
        f1s.append(f1)
        if m.any():
            precs.append(tp / m.sum())
            recs.append(tp / gt.sum())
        print(f"{d} F1 {f1:.2f} P {tp / max(1.0, m.sum()):.2f} R {tp / gt.sum():.2f} per side {sides} "
              f"truth s.d. {float(img.mean(axis=2)[gt].std()):.1f}", flush=True)
    f1s = np.asarray(f1s)
    missed = f1s == 0
    print(f"\n{len(f1s)} forgeries, mean F1 {f1s.mean():.3f}; F1 lost {np.sum(1 - f1s):.2f}: "
          f"{int(missed.sum())} missed entirely ({missed.sum():.2f}), {int((~missed).sum())} found with "
          f"a poor mask ({np.sum(1 - f1s[~missed]):.2f}; median precision "
          f"{np.median(precs) if precs else float('nan'):.3f}, median recall {np.median(recs) if recs else float('nan'):.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
