"""Load time, file size and CPU throughput of the published detectors (CNNDetection, NPR) at their full published size.

genguard has no published weights (none are downloaded), so random weights of
the full architecture are saved to a temporary file in both formats and read
back through the same path a user's checkpoint takes; throughput does not
depend on the weights' values::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/pretrained_detectors.py [--images 8] [--size 256]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=8, help="images per timed batch")
    ap.add_argument("--size", type=int, default=256, help="side of the square test images")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import torch
    from safetensors.torch import save_file

    from genguard.detectors.pretrained import build_network, load_pretrained

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    ims = [rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8) for _ in range(args.images)]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); {args.images} images of {args.size}^2")
    with tempfile.TemporaryDirectory() as tmp:
        for arch, opts in (("cnndetection", {}), ("cnndetection", {"crop": 224}), ("npr", {})):
            net = build_network(arch)
            sd = net.state_dict()
            for fmt in ("pth", "safetensors"):
                path = Path(tmp) / f"{arch}.{fmt}"
                if not path.exists():
                    if fmt == "pth":
                        torch.save({"model": sd} if arch == "cnndetection" else sd, path)
                    else:
                        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
                t0 = time.perf_counter()
                det = load_pretrained(path, arch, batch_size=args.images, **opts)
                t_load = time.perf_counter() - t0
                det.predict_proba(ims[:1])  # warm-up
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    det.predict_proba(ims)
                    times.append(time.perf_counter() - t0)
                rate = args.images / np.array(times)
                print(f"{arch:<13} {str(opts or ''):<12} {fmt:<12} {path.stat().st_size / 2**20:7.1f} MiB  "
                      f"load {t_load:5.2f} s  {rate.mean():6.2f} images/s (min {rate.min():.2f}, max {rate.max():.2f}, "
                      f"{args.repeats} runs)")


if __name__ == "__main__":
    main()
