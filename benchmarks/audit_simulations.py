"""Simulation figures of the audit's statistical honesty: bias false-flag rate and power, near-duplicate precision/recall.

Prints the figures quoted in the release notes; the tests in
tests/test_audit_stats.py assert the same properties with fewer trials::

    PYTHONPATH=. python benchmarks/audit_simulations.py [--trials 2000]
"""
from __future__ import annotations

import argparse
import io

import numpy as np


def _jpeg(img: np.ndarray, quality: int = 75, scale: int = 4) -> np.ndarray:
    from PIL import Image

    a = (np.clip(img, 0, 1) * 255).round().astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO()
    Image.fromarray(a, "L").save(buf, format="JPEG", quality=quality)
    im = Image.open(io.BytesIO(buf.getvalue())).convert("L").resize(img.shape[::-1], Image.Resampling.BOX)
    return np.asarray(im, np.float32) / 255.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=2000)
    args = ap.parse_args()
    from genguard.audits.bias import flag_counts
    from genguard.audits.features import fit_extractor
    from genguard.audits.memorization import memorization_section, shift_images
    from genguard.audits.stats import mc_null_statistics
    from genguard.generators.data import digits_split

    train, holdout = digits_split()
    p = np.bincount(train.groups["label"], minlength=10) / len(train)
    rng = np.random.default_rng(0)
    T = args.trials
    print(f"== bias: {T} simulated audits per line, level 0.05, min_effect 0.02, digits reference shares ==")
    for n in (30, 100, 1000, 5000):
        null = mc_null_statistics(n, p, draws=4000, seed=1)
        f, pv = flag_counts(rng.multinomial(n, p, size=T), p, null, 0.05, 0.02)
        print(f"null, n={n:5d}: some group flagged in {f.any(1).mean():.3f} of audits; GOF rejects {(pv < 0.05).mean():.3f}")
    e = np.full(10, 0.1)
    for under in (0.05, 0.07):
        q = np.full(10, (1 - under) / 9)
        q[0] = under
        null = mc_null_statistics(1000, e, draws=4000, seed=2)
        f, _ = flag_counts(rng.multinomial(1000, q, size=T), e, null, 0.05, 0.02)
        print(f"power, n=1000, group at {under:.0%} instead of 10%: flagged in {f[:, 0].mean():.3f}; "
              f"another group flagged in {f[:, 1:].any(1).mean():.3f}")
    ext = fit_extractor(train.x, train.groups["label"], holdout_x=holdout.x, holdout_y=holdout.groups["label"])
    pred, y = ext.predict(holdout.x), holdout.groups["label"]
    by = [np.flatnonzero(y == k) for k in range(10)]
    counts = np.zeros((min(T, 1000), 10), dtype=np.int64)
    for t in range(len(counts)):
        per = rng.multinomial(1000, p)
        idx = np.concatenate([rng.choice(by[k], per[k]) for k in range(10)])
        counts[t] = np.bincount(pred[idx], minlength=10)
    null = mc_null_statistics(1000, p, draws=4000, seed=0)
    f, pv = flag_counts(counts, p, null, 0.05, 0.02)
    print(f"null through the SVC attribute classifier (holdout accuracy {ext.holdout_accuracy:.3f}), n=1000, "
          f"{len(counts)} audits: flagged {f.any(1).mean():.3f}; GOF rejects {(pv < 0.05).mean():.3f}")

    print("== memorization: planted copies of 300 training digits among the 360 holdout digits ==")
    idx = rng.choice(len(train), 300, replace=False)
    moves = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    kinds = {
        "noise sd 0.03": np.clip(train.x[idx] + rng.normal(0, 0.03, (300, 8, 8)), 0, 1),
        "noise sd 0.05": np.clip(train.x[idx] + rng.normal(0, 0.05, (300, 8, 8)), 0, 1),
        "one-pixel shift": np.stack([shift_images(train.x[i:i + 1], *moves[j % 4])[0] for j, i in enumerate(idx)]),
        "JPEG q75 (32x32)": np.stack([_jpeg(train.x[i]) for i in idx]),
    }
    for name, planted in kinds.items():
        samples = np.concatenate([planted, holdout.x]).astype(np.float32)
        sec = memorization_section(samples, train.x, None, max_listed=100_000)
        rep = {e["sample"]: e["train_item"] for e in sec["near_duplicates"]}
        hits = np.array([i in rep for i in range(len(samples))])
        tp = hits[:300].sum()
        right = np.mean([rep[i] == idx[i] for i in range(300) if i in rep]) if tp else float("nan")
        print(f"{name:18s}: recall {tp / 300:.3f}, precision {tp / max(hits.sum(), 1):.3f}, "
              f"right source item {right:.3f}, holdout items reported {hits[300:].mean():.3f}")


if __name__ == "__main__":
    main()
