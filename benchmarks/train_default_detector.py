"""Build the shipped default detector (detectors/default_detector.safetensors) and its evaluation data.

What it is trained on, plainly:

* **real**: 64x64 grey (luma) patches cropped at scales 1, 0.75 and 0.5 from
  the photographs that ship with scikit-image (astronaut, camera, coffee,
  rocket, coins, moon, page, hubble_deep_field, immunohistochemistry, brick,
  grass, retina, clock, text, cell, stereo motorcycle left) and scikit-learn
  (china). Held out entirely for the test split: chelsea, gravel, flower
  (scikit-learn) and the right stereo motorcycle view.
* **fake**: 64x64 grey patches sampled from reference generators trained here,
  on the training photos' patches, in a few minutes on one CPU core:
  ``vae`` (the registry's class-conditional MLP VAE; any other
  registered generator can be named with --generators), ``pca_gmm`` (a
  Gaussian mixture in a 48-component PCA space), ``deconv`` (a convolutional
  decoder with stride-2 transposed convolutions, the checkerboard-leaving
  upsampler of DCGAN-style generators) and ``resizeconv`` (a decoder with
  nearest-neighbour upsampling + convolutions, as in StyleGAN-style/"resize-
  convolution" generators).

Where it will NOT generalise: real diffusion models, modern GANs or any
generator trained on large natural-image data sets; colour-specific traces
(the detector sees luma only); images whose content is far from the ~20
photographs above (documents, screenshots, medical scans, art). Its numbers
describe these reference families only. Train your own with
``genguard detector train`` on your generators' outputs.

Usage: python benchmarks/train_default_detector.py [--generators vae,pca_gmm,deconv,resizeconv]
       [--data-out genguard-out/detector-data] [--out detectors/default_detector.safetensors] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PATCH = 64
TEST_PHOTOS = ("chelsea", "gravel", "flower", "motorcycle_right")
BUILTIN_FAMILIES = ("pca_gmm", "deconv", "resizeconv")
DEFAULT_GENERATORS = ("vae",) + BUILTIN_FAMILIES


# --------------------------------------------------------------------------------------
# real photos and patches
# --------------------------------------------------------------------------------------
def photos() -> dict[str, np.ndarray]:
    """Every shipped photograph as uint8 grey (luma)."""
    import skimage.data as sd
    from sklearn.datasets import load_sample_images

    out: dict[str, np.ndarray] = {}
    for name in ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "hubble_deep_field",
                 "immunohistochemistry", "brick", "grass", "gravel", "retina", "clock", "text", "cell"):
        out[name] = getattr(sd, name)()
    left, right, _ = sd.stereo_motorcycle()
    out["motorcycle_left"], out["motorcycle_right"] = left, right
    for fname, img in zip(("china", "flower"), load_sample_images().images):
        out[fname] = img
    grey = {}
    for k, v in out.items():
        v = np.asarray(v)
        if v.ndim == 3:
            v = np.round(v[..., 0] * 0.299 + v[..., 1] * 0.587 + v[..., 2] * 0.114)
        grey[k] = np.clip(v, 0, 255).astype(np.uint8)
    return grey


def real_patches(names: list[str], n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 64x64 patches from the named photos at scales 1/0.75/0.5 (area-averaged); with photo index."""
    import cv2

    ph = photos()
    rng = np.random.default_rng(seed)
    pyramids = []
    for name in names:
        img = ph[name]
        levels = [img]
        for s in (0.75, 0.5):
            h, w = img.shape
            if min(h, w) * s >= PATCH * 1.5:
                levels.append(cv2.resize(img, (int(w * s), int(h * s)), interpolation=cv2.INTER_AREA))
        pyramids.append(levels)
    xs, labels = [], []
    for i in range(n):
        k = i % len(names)
        lv = pyramids[k][rng.integers(len(pyramids[k]))]
        h, w = lv.shape
        y, x = rng.integers(0, h - PATCH + 1), rng.integers(0, w - PATCH + 1)
        xs.append(lv[y:y + PATCH, x:x + PATCH])
        labels.append(k)
    return np.stack(xs), np.asarray(labels)


# --------------------------------------------------------------------------------------
# quick reference generator families
# --------------------------------------------------------------------------------------
class PCAGMM:
    """A Gaussian mixture in PCA space: smooth, linear-basis images."""

    name = "pca_gmm"

    def __init__(self, n_components: int = 48, n_mix: int = 8, seed: int = 0) -> None:
        self.n_components, self.n_mix, self.seed = n_components, n_mix, seed

    def fit(self, x: np.ndarray) -> "PCAGMM":
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        flat = x.reshape(len(x), -1)
        self.pca_ = PCA(self.n_components, random_state=self.seed).fit(flat)
        self.gmm_ = GaussianMixture(self.n_mix, covariance_type="full", random_state=self.seed).fit(self.pca_.transform(flat))
        self.shape_ = x.shape[1:]
        return self

    def sample(self, n: int, seed: int) -> np.ndarray:
        self.gmm_.random_state = seed
        z, _ = self.gmm_.sample(n)
        rng = np.random.default_rng(seed)
        z = z[rng.permutation(n)]
        return np.clip(self.pca_.inverse_transform(z).reshape(n, *self.shape_), 0, 1)


class ConvDecoderGen:
    """Conv autoencoder whose decoder upsamples 8x8 -> 64x64; samples decode Gaussian latents.

    ``upsampler="deconv"``: stride-2 ConvTranspose2d (kernel 4), the checkerboard source of DCGAN-style
    generators; ``"resizeconv"``: nearest-neighbour x2 then a 3x3 conv.
    """

    def __init__(self, upsampler: str = "deconv", epochs: int = 8, seed: int = 0, ch: int = 16, max_train: int = 1200) -> None:
        self.upsampler, self.epochs, self.seed, self.ch, self.max_train = upsampler, epochs, seed, ch, max_train
        self.name = upsampler

    def _build(self):
        from torch import nn

        c = self.ch
        enc = nn.Sequential(nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2),
                            nn.Conv2d(2 * c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(2 * c, 8, 1))

        def up(i: int, o: int):
            if self.upsampler == "deconv":
                return [nn.ConvTranspose2d(i, o, 4, 2, 1)]
            return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(i, o, 3, 1, 1)]

        dec = nn.Sequential(nn.Conv2d(8, 2 * c, 1), nn.ReLU(), *up(2 * c, 2 * c), nn.ReLU(), *up(2 * c, c), nn.ReLU(),
                            *up(c, c), nn.ReLU(), nn.Conv2d(c, 1, 3, 1, 1), nn.Sigmoid())
        return enc, dec

    def fit(self, x: np.ndarray) -> "ConvDecoderGen":
        import torch

        torch.manual_seed(self.seed)
        self.enc_, self.dec_ = self._build()
        x = x[np.random.default_rng(self.seed).permutation(len(x))[: self.max_train]]
        xt = torch.from_numpy(x[:, None].astype(np.float32))
        opt = torch.optim.Adam(list(self.enc_.parameters()) + list(self.dec_.parameters()), lr=2e-3)
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            perm = torch.randperm(len(xt), generator=g)
            for i in range(0, len(xt), 64):
                xb = xt[perm[i:i + 64]]
                z = self.enc_(xb)
                z = z + 0.1 * torch.randn_like(z)
                loss = torch.nn.functional.l1_loss(self.dec_(z), xb)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            z = self.enc_(xt).reshape(len(xt), -1).numpy()
        self.z_mean_, self.z_cov_ = z.mean(axis=0), np.cov(z, rowvar=False) + 1e-4 * np.eye(z.shape[1])
        self.z_shape_ = tuple(self.enc_(xt[:1]).shape[1:])
        return self

    def sample(self, n: int, seed: int) -> np.ndarray:
        import torch

        rng = np.random.default_rng(seed)
        z = rng.multivariate_normal(self.z_mean_, self.z_cov_, size=n).astype(np.float32)
        with torch.no_grad():
            out = self.dec_(torch.from_numpy(z.reshape(n, *self.z_shape_))).numpy()[:, 0]
        return out


def registry_generator(name: str, x: np.ndarray, labels: np.ndarray, seed: int, quick: bool):
    """Train a registered generator (genguard.generators.available()) on the patches; returns a sampler(n, seed) -> (n, H, W[, C])."""
    from genguard import generators
    from genguard.generators.base import Dataset

    params = {"seed": seed}
    if name == "vae":
        params.update(epochs=10 if quick else 30, hidden=256, latent_dim=24)
    gen = generators.make_generator(name, **params)
    ds = Dataset(x=x.astype(np.float32), modality="image", name="photo-patches",
                 groups={"label": labels.astype(np.int64)},
                 group_names={"label": [str(i) for i in range(int(labels.max()) + 1)]})
    gen.fit(ds, progress=False)

    def sampler(n: int, s: int) -> np.ndarray:
        return np.asarray(gen.sample(n, seed=s).data, dtype=np.float32)

    return sampler


def build_generators(names: list[str], x: np.ndarray, labels: np.ndarray, seed: int, quick: bool) -> dict:
    samplers = {}
    for name in names:
        t = time.time()
        try:
            if name == "pca_gmm":
                g = PCAGMM(seed=seed).fit(x)
                samplers[name] = g.sample
            elif name in ("deconv", "resizeconv"):
                g = ConvDecoderGen(name, epochs=3 if quick else 8, seed=seed).fit(x)
                samplers[name] = g.sample
            else:
                samplers[name] = registry_generator(name, x, labels, seed, quick)
        except Exception as exc:  # a generator that cannot train on grey 64x64 patches is skipped, loudly
            print(f"  skipping generator {name!r}: {exc.__class__.__name__}: {exc}", file=sys.stderr)
            continue
        print(f"  trained {name} in {time.time() - t:.1f}s", file=sys.stderr)
    return samplers


def to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(a, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def build_dataset(names: list[str], seed: int = 0, quick: bool = False, n_real_train: int = 2400,
                  n_fake_train: int = 800, n_real_test: int = 600, n_fake_test: int = 300) -> dict:
    """Real and generated patches (uint8 grey), train and test, the fakes keyed by generator."""
    if quick:
        n_real_train, n_fake_train, n_real_test, n_fake_test = 600, 200, 200, 100
    train_photos = [p for p in photos() if p not in TEST_PHOTOS]
    xr, lab = real_patches(train_photos, n_real_train, seed)
    xr_test, _ = real_patches(list(TEST_PHOTOS), n_real_test // 2, seed + 1)
    xr_test2, _ = real_patches(train_photos, n_real_test - n_real_test // 2, seed + 2)  # unseen crops, seen photos
    samplers = build_generators(names, xr.astype(np.float32) / 255.0, lab, seed, quick)
    fake_train = {g: to_uint8(s(n_fake_train, seed + 10)) for g, s in samplers.items()}
    fake_test = {g: to_uint8(s(n_fake_test, seed + 20)) for g, s in samplers.items()}
    return {"real_train": xr, "real_test": np.concatenate([xr_test, xr_test2]), "fake_train": fake_train,
            "fake_test": fake_test, "train_photos": train_photos, "test_photos": list(TEST_PHOTOS)}


def write_folder(data: dict, out: Path) -> None:
    """real/ and fake/<generator>/ PNG folders for each split, for `genguard detector train/eval`."""
    from genguard.detectors._io import write_png

    for split in ("train", "test"):
        for i, im in enumerate(data[f"real_{split}"]):
            write_png(out / split / "real" / f"real_{i:05d}.png", im)
        for g, ims in data[f"fake_{split}"].items():
            for i, im in enumerate(ims):
                write_png(out / split / "fake" / g / f"{g}_{i:05d}.png", im)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generators", default=",".join(DEFAULT_GENERATORS),
                    help="comma-separated: names of registered generators (genguard train --list) and/or " + ", ".join(BUILTIN_FAMILIES))
    ap.add_argument("--out", default=str(ROOT / "detectors" / "default_detector.safetensors"))
    ap.add_argument("--data-out", default=str(ROOT / "genguard-out" / "detector-data"),
                    help="where to write the real/fake PNG patches (train/ and test/); '' to skip")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--npr-epochs", type=int, default=6)
    ap.add_argument("--quick", action="store_true", help="small data and short training (a smoke run)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    from genguard.detectors.models import make_detector

    names = [n.strip() for n in args.generators.split(",") if n.strip()]
    t0 = time.time()
    print(f"building data and training generators: {', '.join(names)}", file=sys.stderr)
    data = build_dataset(names, seed=args.seed, quick=args.quick)
    if not data["fake_train"]:
        print("no generator could be trained", file=sys.stderr)
        return 1
    if args.data_out:
        write_folder(data, Path(args.data_out))
        print(f"wrote patches to {args.data_out}", file=sys.stderr)
    fake = [im for ims in data["fake_train"].values() for im in ims]
    det = make_detector("ensemble", npr_epochs=args.npr_epochs, train_tiles=1, seed=args.seed, progress=True)
    t1 = time.time()
    det.fit(list(data["real_train"]), fake)
    det.info_ = {
        "trained_by": "benchmarks/train_default_detector.py",
        "real": "64x64 luma patches of scikit-image/scikit-learn sample photos: " + ", ".join(data["train_photos"]),
        "fake": {g: len(v) for g, v in data["fake_train"].items()},
        "not_generalising_to": "diffusion models, modern GANs, generators trained on large natural-image sets, "
                               "colour-only traces, content unlike these ~20 photos",
        "seed": args.seed, "quick": bool(args.quick),
        "versions": {"torch": torch.__version__, "numpy": np.__version__},
    }
    det.save(args.out)
    size = Path(args.out).stat().st_size
    print(json.dumps({"out": args.out, "bytes": size, "generators": list(data["fake_train"]),
                      "n_real_train": len(data["real_train"]), "n_fake_train": len(fake),
                      "data_seconds": round(t1 - t0, 1), "fit_seconds": round(time.time() - t1, 1)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
