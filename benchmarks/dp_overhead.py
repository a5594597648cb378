"""Benchmark: DP-SGD step time and peak memory against non-private training, per gradient-trained generator.

For every torch generator registered in ``genguard.generators`` (``available()``) (new ones are picked up
automatically) on its own embedded data set (``default_data``), each configuration is
trained through the real trainers (``PlainTrainer`` and ``PrivateTrainer``) in
a fresh subprocess, alternating configurations over ``--repeats`` rounds:

* step time: steady state, from the end of the first epoch to the end of the
  last, divided by the steps in between (setup, noise calibration and the
  first epoch's warm-up excluded); the median over rounds is printed, as wall
  time and as process CPU time (steadier on a shared machine);
* peak memory: the growth of the process' peak RSS over its RSS just before
  training (CPU), or ``torch.cuda.max_memory_allocated`` on a GPU.

Usage: ``python benchmarks/dp_overhead.py [--epochs 4] [--repeats 3] [--modes plain,auto,hooks,opacus]``
Set OMP_NUM_THREADS / --threads to compare like with like.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(name: str, mode: str, epochs: int, batch_size: int | None, threads: int) -> dict:
    """Train ``name`` once in this process under ``mode``; return timing and memory."""
    import resource
    import time

    import torch

    torch.set_num_threads(threads)
    from genguard import generators
    from genguard.generators.base import PlainTrainer, TorchGenerator
    from genguard.generators.data import load_embedded, train_holdout
    from genguard.guardrails.privacy import PrivateTrainer

    cls = generators.get_generator_class(name)
    if not issubclass(cls, TorchGenerator) or cls.dp_mechanism != "dp-sgd":
        return {"skip": "not trained by DP-SGD"}
    if cls.default_data is None:
        return {"skip": "names no embedded data set (default_data)"}
    data = train_holdout(load_embedded(cls.default_data))[0]
    params = {"epochs": epochs, "seed": 0}
    if batch_size:
        params["batch_size"] = batch_size
    gen = generators.make_generator(name, **params)
    stamps: list[float] = []
    cpu: list[float] = []
    orig = gen.on_epoch_end

    def on_epoch_end(epoch: int) -> None:
        orig(epoch)
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())

    gen.on_epoch_end = on_epoch_end
    trainer = PlainTrainer() if mode == "plain" else PrivateTrainer(target_epsilon=10.0, grad_sample_mode=mode)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gen.fit(data, trainer=trainer, progress=False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rep = gen.training_report_
    steps_per_epoch = rep["steps"] / epochs  # the report does not publish epochs (they and q tell n)
    if len(stamps) < 2:
        return {"skip": "need at least 2 epochs"}
    step_s = (stamps[-1] - stamps[0]) / (steps_per_epoch * (len(stamps) - 1))
    cpu_s = (cpu[-1] - cpu[0]) / (steps_per_epoch * (len(cpu) - 1))
    out = {"step_ms": step_s * 1000, "cpu_ms": cpu_s * 1000, "peak_mb": (peak - base) / 1024.0, "steps": rep["steps"],
           "batch_size": gen.batch_size, "n": len(data)}
    if cuda:
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    if mode != "plain":
        out["epsilon"] = rep["epsilon"]
        out["grad_sample_mode"] = rep["grad_sample_mode"]
    return out


def _run_child(name: str, mode: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), GENGUARD_NO_PROGRESS="1",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, __file__, "--child", name, mode, "--epochs", str(args.epochs), "--threads", str(args.threads)]
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"skip": f"failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--modes", default="plain,auto,hooks,opacus",
                    help="comma-separated: plain, auto (default DP), ghost, hooks, functorch, opacus")
    ap.add_argument("--generators", default=None, help="comma-separated subset of the registry")
    ap.add_argument("--json", default=None, help="write all measurements here")
    ap.add_argument("--child", nargs=2, metavar=("GENERATOR", "MODE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], args.child[1], args.epochs, args.batch_size, args.threads)))
        return
    sys.path.insert(0, str(ROOT))
    from genguard import generators
    names = args.generators.split(",") if args.generators else generators.available()
    modes = args.modes.split(",")
    if "plain" not in modes:
        modes = ["plain"] + modes
    results: dict[str, dict[str, list[dict]]] = {}
    for name in names:
        results[name] = {m: [] for m in modes}
        for _ in range(args.repeats):
            for mode in modes:  # alternate configurations so drifting machine load hits all alike
                results[name][mode].append(_run_child(name, mode, args))
    print(f"DP-SGD overhead, {args.threads} thread(s), {args.epochs} epochs, median of {args.repeats} runs "
          "(step time excludes setup and the first epoch; memory = peak RSS growth during fit)")
    header = (f"{'generator':<10} {'mode':<10} {'batch':>5} {'ms/step':>9} {'x plain':>8} {'cpu ms':>8} {'x plain':>8} "
              f"{'peak MB':>8} {'x plain':>8}")
    print(header)
    print("-" * len(header))
    for name in names:
        runs = results[name]
        ok = {m: [r for r in rs if "skip" not in r] for m, rs in runs.items()}
        if not ok["plain"]:
            reason = runs["plain"][0].get("skip")
            print(f"{name:<10} skipped: {reason}")
            continue
        base_t = statistics.median(r["step_ms"] for r in ok["plain"])
        base_m = statistics.median(r["peak_mb"] for r in ok["plain"])
        base_c = statistics.median(r["cpu_ms"] for r in ok["plain"])
        for mode in modes:
            if not ok[mode]:
                print(f"{name:<10} {mode:<10} skipped: {runs[mode][0].get('skip')}")
                continue
            t = statistics.median(r["step_ms"] for r in ok[mode])
            mem = statistics.median(r["peak_mb"] for r in ok[mode])
            c = statistics.median(r["cpu_ms"] for r in ok[mode])
            bs = ok[mode][0]["batch_size"]
            print(f"{name:<10} {mode:<10} {bs:>5} {t:>9.2f} {t / base_t:>8.2f} {c:>8.2f} {c / base_c:>8.2f} {mem:>8.1f} "
                  f"{(mem / base_m if base_m > 0 else float('nan')):>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
