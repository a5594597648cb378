"""DP-MERF over independent private releases: TSTR, recall and steps, mean and spread (not a timed test).

Every release draws fresh secret noise, so one release says little: this fits
the generator ``--releases`` times at each epsilon (through ``PrivateTrainer``,
as ``genguard run`` does) and prints each release and the mean, standard
deviation and minimum. TSTR and manifold recall are computed as in
``benchmarks/generator_quality.py`` (logistic regression on 1,000
class-conditional samples, tested on the 360 real holdout digits; recall in the
local MLP feature space, k = 5).

Usage: ``python benchmarks/dpmerf_releases.py [--eps 10 1] [--releases 6] [--param count_weight=1.0 ...]``
"""
from __future__ import annotations

import argparse
import ast
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GENGUARD_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eps", type=float, nargs="+", default=[10.0, 1.0])
    ap.add_argument("--releases", type=int, default=6)
    ap.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                    help="A DPMERF constructor parameter (Python literal), e.g. count_weight=1.0 or stop_at_noise=1.0.")
    args = ap.parse_args(argv)
    import torch

    import generator_quality as gq
    from genguard.generators import make_generator
    from genguard.generators.data import digits_split
    from genguard.guardrails.privacy import PrivateTrainer

    torch.set_num_threads(1)
    params = {}
    for p in args.param:
        name, _, value = p.partition("=")
        params[name] = ast.literal_eval(value)
    train, holdout = digits_split()
    feats = gq.LocalFeatures(train.x.reshape(len(train), -1), train.groups["label"])
    real_f = feats(holdout.x.reshape(len(holdout), -1))
    print(f"dpmerf {params or '(class defaults)'}; {args.releases} releases per epsilon; "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| epsilon | release | sigma | accountant | TSTR | recall | steps | fit s |\n|---|---|---|---|---|---|---|---|")
    summary = []
    for eps in args.eps:
        tstrs, recalls = [], []
        for i in range(args.releases):
            gen = make_generator("dpmerf", **params)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                gen.fit(train, trainer=PrivateTrainer(target_epsilon=eps), progress=False)
            secs = time.perf_counter() - t0
            s = gen.sample(1000, seed=0, label=np.repeat(np.arange(10), 100))
            _, r = gq.precision_recall(real_f, feats(s.data.reshape(len(s), -1)))
            t = gq.tstr(s, holdout)
            tstrs.append(t)
            recalls.append(r)
            rep = gen.training_report_
            print(f"| {eps:g} | {i} | {rep['noise_multiplier']:.3f} | {rep['accountant']} | {t:.3f} | {r:.3f} | "
                  f"{rep['generator_steps']} | {secs:.1f} |", flush=True)
        summary.append((eps, np.mean(tstrs), np.std(tstrs, ddof=1) if len(tstrs) > 1 else 0.0, min(tstrs),
                        np.mean(recalls), min(recalls)))
    print("\n| epsilon | TSTR mean | sd | min | recall mean | min |\n|---|---|---|---|---|---|")
    for eps, m, sd, lo, rm, rlo in summary:
        print(f"| {eps:g} | {m:.3f} | {sd:.3f} | {lo:.3f} | {rm:.3f} | {rlo:.3f} |")
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
