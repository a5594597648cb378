"""Benchmark: the white-box Dirac-canary audit on the correct DP-SGD trainer and on deliberately broken ones.

Every row trains the DP VAE once, as ``genguard run`` configures it
(``genguard.pipeline.generator_params("vae", private=True, ...)``: hidden 128,
batch 512 of the 1437 digits, 100 epochs, so q = 1/3 and 300 steps), on the
embedded digits, with ``m`` Dirac canaries in the mechanism
(:mod:`genguard.audits.whitebox`). Rows:

* ``correct``: the trainer as shipped; the auditor does not know the batches;
* ``public sampling``: the same trainer, but the auditor knows every step's
  Poisson sampling of every canary (as when batches can be rebuilt from the
  ledger's seed) and scores each canary only on the steps that held it;
* ``noise x0.1``: a mechanism whose noise is a tenth of what the ledger claims.

Printed per row: the lower bound on epsilon (95% confidence, Bonferroni over
the scores and guess counts tried), the correct guesses, the claim at the
training delta and recomputed (same accountant) at the audit delta, which is
what the bound is compared with, and the one-run ceiling (the bound if every
guess were right): a single run with m canaries cannot show more.

Usage: ``python benchmarks/privacy_audit.py [--canaries 50000] [--epsilons 10,2] [--json FILE]``
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--canaries", type=int, default=50_000)
    ap.add_argument("--epsilons", default="10,2", help="claimed (target) epsilons, comma-separated")
    ap.add_argument("--rows", default="correct,public,noise", help="which trainers: correct, public, noise")
    ap.add_argument("--epochs", type=int, default=None, help="override the default run's epochs (smoke tests)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from genguard.audits.whitebox import ScaledNoiseBug, white_box_audit
    from genguard.generators.data import digits_split
    from genguard.guardrails.privacy import PrivateTrainer
    from genguard.pipeline import generator_params

    params = generator_params("vae", True, False, 0)
    if args.epochs:
        params["epochs"] = args.epochs
    data = digits_split()[0]
    kinds = {"correct": dict(), "public": dict(known_sampling=True), "noise": dict(mechanism_bug=ScaledNoiseBug(0.1))}
    labels = {"correct": "correct", "public": "public sampling", "noise": "noise x0.1"}
    rows = []
    print(f"white-box Dirac-canary audit, DP VAE {params}, {len(data)} digits, m = {args.canaries}")
    header = (f"{'trainer':16} {'claim':>6} {'steps':>5} {'q':>6} {'sigma':>6} {'eps LB (95%)':>12} {'correct':>11} "
              f"{'score':>18} {'audit delta':>11} {'claim@audit d':>13} {'ceiling':>7} {'refuted':>7} {'s':>5}")
    print(header)
    for eps in [float(e) for e in args.epsilons.split(",")]:
        for kind in args.rows.split(","):
            t0 = time.time()
            r = white_box_audit("vae", trainer=PrivateTrainer(target_epsilon=eps), data=data,
                                num_canaries=args.canaries, generator_params=params, **kinds[kind])
            best = r["best"]
            row = {"trainer": labels[kind], "target_epsilon": eps, "seconds": time.time() - t0, **r}
            rows.append(row)
            print(f"{labels[kind]:16} {r['claimed_epsilon']:6.2f} {r['steps']:5d} {r['sample_rate']:6.3f} "
                  f"{r['noise_multiplier']:6.3f} {r['epsilon_lower_bound']:12.3f} "
                  f"{best['num_correct']:>5}/{best['num_guesses']:<5} {best['score']:>18} {r['delta']:11.2g} "
                  f"{r['claimed_epsilon_at_audit_delta']:13.2f} {r['ceiling']:7.2f} "
                  f"{'YES' if r['bound_exceeds_claim'] else 'no':>7} {row['seconds']:5.0f}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
