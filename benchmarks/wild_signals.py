"""Benchmark of the weight-free wild signals (not a timed test): known public watermarks and generator metadata.

Prints, side by side in one run:

* the false-positive count of the known-watermark test on clean photo crops (scikit-image's photos,
  96 px to full size, a third re-saved as JPEG 60-95), at the reporting threshold 1e-6;
* the detection rate of the SDXL payload applied by diffusers' own ``StableDiffusionXLWatermarker``
  (and the SD v1 scripts' payload applied by invisible-watermark's encoder) on scikit-image and
  scikit-learn photos, untouched and after everyday edits, next to invisible-watermark's own decoder
  (bit errors <= 4 of 48 counted as decoded there);
* the time of the known-watermark test per image at 256 x 256 and 1024 x 1024.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/wild_signals.py [--negatives 2000]``
(needs diffusers, PyWavelets and ``pip install --no-deps invisible-watermark``).
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def photos() -> list[np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    out = [data.astronaut(), data.chelsea(), data.rocket(), data.coffee(), data.hubble_deep_field(),
           data.immunohistochemistry(), np.stack([data.camera()] * 3, -1)]
    out += list(load_sample_images().images)
    return [p[: p.shape[0] // 8 * 8, : p.shape[1] // 8 * 8] for p in out]


def jpeg(x: np.ndarray, q: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(buf).convert("RGB"))


def resize(x: np.ndarray, f: float) -> np.ndarray:
    h, w = x.shape[:2]
    return np.asarray(Image.fromarray(x).resize((max(8, int(w * f)), max(8, int(h * f))), Image.BICUBIC))


EDITS = {
    "none": lambda x: x,
    "png re-save": lambda x: np.asarray(Image.open(io.BytesIO(_png(x)))),
    "jpeg 95": lambda x: jpeg(x, 95),
    "jpeg 90": lambda x: jpeg(x, 90),
    "crop 90% (top-left kept)": lambda x: x[: int(x.shape[0] * .9), : int(x.shape[1] * .9)],
    "crop 90% (centre)": lambda x: x[x.shape[0] // 20: -x.shape[0] // 20, x.shape[1] // 20: -x.shape[1] // 20],
    "resize x0.5": lambda x: resize(x, 0.5),
    "brightness +10": lambda x: np.clip(x.astype(int) + 10, 0, 255).astype(np.uint8),
}


def _png(x: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "PNG")
    return buf.getvalue()


def _ref_errors(dec, x: np.ndarray, bits) -> int:
    try:
        return int(np.sum(np.asarray(dec.decode(np.ascontiguousarray(x), "dwtDct"), int) != bits))
    except RuntimeError:  # it refuses images under 256 x 256
        return len(bits)


def main(argv=None) -> int:
    import torch
    from diffusers.pipelines.stable_diffusion_xl.watermark import WATERMARK_BITS, StableDiffusionXLWatermarker
    from imwatermark import WatermarkDecoder

    from genguard.detectors.wild import known_watermarks

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--negatives", type=int, default=2000)
    a = ap.parse_args(argv)
    ph = photos()
    wmk = StableDiffusionXLWatermarker()
    marked = []
    for p in ph:
        t = torch.from_numpy(p.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
        out = wmk.apply_watermark(t)
        marked.append(((out[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8))
    dec = WatermarkDecoder("bits", 48)
    print(f"SDXL payload applied by diffusers' StableDiffusionXLWatermarker to {len(ph)} photos "
          "(scikit-image, scikit-learn); found = genguard's test at p <= 1e-6; reference = invisible-watermark's "
          "own decoder (either channel order) within 4 bit errors")
    print("edit | genguard found | reference decodes")
    for name, edit in EDITS.items():
        ours = ref = 0
        for m in marked:
            e = edit(m)
            ours += any(f["name"] == "sdxl" for f in known_watermarks(e)["found"])
            ref += any(_ref_errors(dec, x, WATERMARK_BITS) <= 4 for x in (e, e[:, :, ::-1]))
        print(f"{name} | {ours}/{len(marked)} | {ref}/{len(marked)}")

    rng = np.random.default_rng(7)
    hits, t0 = 0, time.perf_counter()
    for i in range(a.negatives):
        p = ph[i % len(ph)]
        s = int(rng.integers(96, min(p.shape[:2]) + 1))
        y, x = rng.integers(0, p.shape[0] - s + 1), rng.integers(0, p.shape[1] - s + 1)
        c = p[y:y + s, x:x + s]
        if i % 3 == 0:
            c = jpeg(c, int(rng.integers(60, 96)))
        hits += bool(known_watermarks(c)["found"])
    print(f"false positives on {a.negatives} clean crops (96 px to full size, a third JPEG 60-95): {hits} "
          f"({time.perf_counter() - t0:.0f} s)")
    for side in (256, 1024):
        img = np.asarray(Image.fromarray(ph[0]).resize((side, side)))
        known_watermarks(img)
        t0 = time.perf_counter()
        for _ in range(10):
            known_watermarks(img)
        print(f"known-watermark test at {side}x{side}: {(time.perf_counter() - t0) / 10 * 1000:.1f} ms per image")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
