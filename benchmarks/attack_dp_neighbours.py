"""Attack on the DP claim: diff the published privacy ledgers of neighbouring data sets (add/remove one record).

    python benchmarks/attack_dp_neighbours.py [--batch-size 16] [--sizes 31 32 33 34] [--public-size 48]

Trains the WaveNet with DP-SGD (tiny settings, one epoch, target epsilon 8) on the first n tone clips for each n
and builds the ledger a run publishes. Every field is compared with the ledger of the next n (its add-one neighbour)
except those that differ between any two runs (creation time, weights hash). A field that differs between
neighbours is a function of the private n outside the mechanism: whoever sees the two candidate ledgers' values
knows which data set was used, with certainty, whatever epsilon says. With ``--public-size`` every comparison is
repeated with ``PrivateTrainer(public_size=...)``, which computes the published figures from that public count.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SKIP = {"created", "weights_sha256", "package_versions", "run_id"}


def clips(n: int):
    from genguard.generators.base import Dataset

    rng = np.random.default_rng(0)
    t = np.arange(1000) / 2000
    x = np.stack([0.3 * np.sin(2 * np.pi * (200 + 40 * (i % 5)) * t) + 0.05 * rng.standard_normal(1000)
                  for i in range(n)]).astype(np.float32)
    return Dataset(x=x, modality="audio", name="tones", groups={"label": np.arange(n) % 2},
                   group_names={"label": ["a", "b"]}, metadata={"sample_rate": 2000})


def main() -> None:
    from genguard.generators.wavenet import WaveNet
    from genguard.guardrails.privacy import PrivateTrainer, build_ledger

    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--sizes", type=int, nargs="+", default=[31, 32, 33, 34])
    ap.add_argument("--public-size", type=int, default=None)
    args = ap.parse_args()
    tiny = dict(sample_rate=2000, clip_seconds=0.5, channels=8, hidden=16, n_layers=4, dilation_cycle=4, crop=64,
                epochs=1, batch_size=args.batch_size, lr=3e-3)
    for public in [None] + ([args.public_size] if args.public_size else []):
        extra = {} if public is None else {"public_size": public}
        ledgers = {}
        for n in args.sizes:
            gen = WaveNet(**tiny, seed=0).fit(clips(n), trainer=PrivateTrainer(target_epsilon=8.0, **extra),
                                              progress=False)
            ledgers[n] = build_ledger(gen.training_report_, generator=gen.name, run_id="r", seed=0, weights_path=None)
        for a, b in zip(args.sizes, args.sizes[1:]):
            la, lb = ledgers[a], ledgers[b]
            diff = {k: (la.get(k), lb.get(k)) for k in sorted(set(la) | set(lb) - SKIP)
                    if k not in SKIP and la.get(k) != lb.get(k)}
            shown = {k: v for k, v in diff.items() if k != "guarantee"}
            print(f"{'public_size=' + str(public) if public else 'q from n'}: n={a} vs n={b} (batch size "
                  f"{args.batch_size}): {len(diff)} published field(s) differ" + (f": {shown}" if shown else "")
                  + (" (and the guarantee sentence)" if "guarantee" in diff else ""))


if __name__ == "__main__":
    main()
