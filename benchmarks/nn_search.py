"""Benchmark: exact nearest-neighbour search of 100,000 queries against 100,000 items of dimension 64.

Prints the wall time of ``audits.nn.knn`` (blocked float32 BLAS, exact float64
re-measurement) and checks a random subset of its answers against a plain
float64 brute-force search. Not a test: run it by hand::

    PYTHONPATH=. python benchmarks/nn_search.py [--n 100000] [--m 100000] [--dim 64] [--k 1] [--threads 2]
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="queries")
    ap.add_argument("--m", type=int, default=100_000, help="base items")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--k", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--check", type=int, default=200, help="queries checked against float64 brute force")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from genguard.audits.nn import knn

    rng = np.random.default_rng(0)
    # clustered data (like image features), not uniform noise: 1,000 centres
    centres = rng.normal(size=(1000, args.dim)).astype(np.float32)
    base = centres[rng.integers(0, 1000, args.m)] + 0.3 * rng.normal(size=(args.m, args.dim)).astype(np.float32)
    queries = centres[rng.integers(0, 1000, args.n)] + 0.3 * rng.normal(size=(args.n, args.dim)).astype(np.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    d, i = knn(queries, base, k=args.k)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    sel = rng.choice(args.n, min(args.check, args.n), replace=False)
    q64, b64 = queries[sel].astype(np.float64), base.astype(np.float64)
    d2 = (q64 * q64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2 * q64 @ b64.T
    true_d = np.sqrt(np.maximum(np.sort(d2, axis=1)[:, :args.k], 0))
    err = float(np.abs(true_d - d[sel]).max())
    agree = float((np.argmin(d2, axis=1) == i[sel, 0]).mean())
    print(f"knn {args.n:,} x {args.m:,} dim {args.dim} k={args.k}: {wall:.1f} s wall on {args.threads} thread(s) "
          f"(torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs visible)")
    print(f"process CPU time {cpu:.1f} s = {cpu / args.threads:.1f} s per thread: the wall time on {args.threads} "
          f"dedicated cores; wall is longer when other processes share the cores "
          f"(load average now {os.getloadavg()[0]:.1f})")
    print(f"check on {len(sel)} queries vs float64 brute force: max |distance error| {err:.2e}, "
          f"nearest index agreement {agree:.3f}")


if __name__ == "__main__":
    main()
