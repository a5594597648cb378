"""Scale-out figures: detect/verify/audit-reading throughput in process vs Ray at 1, 2, ... workers, DP-SGD steps/s at 1 vs 2 processes.

The same files go through each engine (the per-batch function is the same
:class:`genguard.engines.BatchTask`); Ray's start-up is timed apart from the
runs, and each Ray run includes its actors' start (the detector loaded once per
worker), as a user of ``--engine ray`` pays it. Each figure is the median of
``--repeats`` runs with the min-max range. DP-SGD: the same VAE, data and
sigma in one process and in ``W`` gloo processes (``torch.multiprocessing``),
steps/s of the slowest rank::

    OMP_NUM_THREADS=1 python benchmarks/scale.py [--images 48] [--workers 1 2] [--dp-epochs 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _photos(d: Path, n: int, size: int) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base = rng.normal(size=(size // 16, size // 16, 3))
        img = np.kron(base, np.ones((16, 16, 1))) + 0.1 * rng.normal(size=(size, size, 3))
        img = (255 * (img - img.min()) / (np.ptp(img) + 1e-9)).astype(np.uint8)
        p = d / f"{i:04d}.png"
        Image.fromarray(img).save(p)
        out.append(str(p))
    return out


def _timed(fn, repeats: int) -> tuple[float, float, float]:
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), min(ts), max(ts)


def _rate(n: int, t: tuple[float, float, float]) -> str:
    med, lo, hi = t
    return f"{n / med:7.2f} ({n / hi:.2f}-{n / lo:.2f})"


def _batch_rows(args, files: list[str], tagged: list[str]) -> list[tuple[str, str, str]]:
    from genguard.commands.audit import SampleReadTask
    from genguard.commands.detect import DetectTask
    from genguard.commands.provenance import VerifyTask
    from genguard.engines import ray_session, run_batches

    jobs = [("detect", DetectTask, {"detector_file": None, "no_forgery": args.no_forgery}, files),
            ("verify", VerifyTask, {"trust_anchor": None}, tagged),
            ("audit: read samples (8x8)", SampleReadTask, {"size": (8, 8)}, files)]
    rows = []
    for name, cls, opts, paths in jobs:
        items = list(enumerate(paths))
        task = cls(**opts)
        t = _timed(lambda: run_batches(cls, opts, items, lambda *a: None, local_task=task), args.repeats)
        rows.append((name, "in process", _rate(len(items), t)))
    t0 = time.perf_counter()
    with ray_session(max(args.workers)):
        startup = time.perf_counter() - t0
        for name, cls, opts, paths in jobs:
            items = list(enumerate(paths))
            for w in args.workers:
                t = _timed(lambda: run_batches(cls, opts, items, lambda *a: None, engine="ray", workers=w),
                           args.repeats)
                rows.append((name, f"ray, {w} worker(s)", _rate(len(items), t)))
    rows.append(("(ray start-up)", f"{startup:.1f} s, once", ""))
    return rows


def _dp_rank(rank: int, world: int, rdv: str, out: str, epochs: int) -> None:
    import torch
    import torch.distributed as dist

    from genguard.generators import make_generator
    from genguard.generators.data import digits_split
    from genguard.guardrails.privacy import PrivateTrainer

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    train, _ = digits_split()
    gen = make_generator("vae", epochs=epochs, batch_size=64, hidden=64, latent_dim=8, seed=0)
    t0 = time.perf_counter()
    gen.fit(train, trainer=PrivateTrainer(noise_multiplier=1.0), progress=False)
    secs = time.perf_counter() - t0
    steps = gen.training_report_["steps"]
    if world > 1:
        dist.destroy_process_group()
    Path(out, f"dp{world}_{rank}.txt").write_text(f"{steps} {secs} {gen.training_report_['epsilon']}")


def _dp_rows(args) -> list[tuple[str, str, str]]:
    import torch.multiprocessing as mp

    rows = []
    for world in (1, 2):
        rates, eps = [], None
        for rep in range(args.repeats):
            with tempfile.TemporaryDirectory() as d:
                if world == 1:
                    _dp_rank(0, 1, "", d, args.dp_epochs)
                else:
                    mp.spawn(_dp_rank, args=(world, os.path.join(d, "rdv"), d, args.dp_epochs), nprocs=world)
                res = [Path(d, f"dp{world}_{r}.txt").read_text().split() for r in range(world)]
            steps = int(res[0][0])
            eps = float(res[0][2])
            rates.append(steps / max(float(r[1]) for r in res))
        rates.sort()
        rows.append(("DP-SGD VAE", f"{world} process(es), gloo" if world > 1 else "1 process",
                     f"{statistics.median(rates):7.2f} ({rates[0]:.2f}-{rates[-1]:.2f}) steps/s, eps {eps:.3g}"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=48)
    ap.add_argument("--size", type=int, default=256, help="Image side in pixels.")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-forgery", action="store_true", help="Detect without forgery analysis.")
    ap.add_argument("--dp-epochs", type=int, default=2)
    ap.add_argument("--skip-dp", action="store_true")
    ap.add_argument("--skip-batch", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("GENGUARD_NO_PROGRESS", "1")
    from genguard.guardrails.provenance import KeyStore, tag_file

    print(f"cpus: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}; "
          f"{args.images} PNG images {args.size}x{args.size}; median of {args.repeats} (min-max)")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        if not args.skip_batch:
            files = _photos(Path(d), args.images, args.size)
            keys = KeyStore.load_or_create()
            tagged_dir = Path(d, "tagged")
            tagged_dir.mkdir()
            claim = {"generator": "bench", "run_id": "bench", "private": False, "epsilon": None, "delta": None,
                     "ledger_sha256": None}
            tagged = [str(tag_file(Path(f), tagged_dir / Path(f).name, claim=claim, keys=keys)) for f in files]
            rows += _batch_rows(args, files, tagged)
    if not args.skip_dp:
        rows += _dp_rows(args)
    print("\n| work | engine | files/s or steps/s, median (min-max) |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2].strip()} |")
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
