"""Real photo patches and ten small generator families (made here, briefly trained or untrained) for the default detector.

Every family is a small object with ``fit(x_real_train)`` and ``make(x_real, seed)`` returning uint8 64x64
grey fakes. Most families are *content-aligned* (B-Free style): ``make`` reconstructs the very real patches it
is given through a network built around one up-sampling operator, so a detector cannot separate the classes by
what is depicted, only by how the pixels were made. The rest sample from their own density.

Training families (``FAMILIES``; leave-one-family-out runs over them):

=============  ==========================================================================  =========
name           what it is                                                                  aligned
=============  ==========================================================================  =========
deconv         conv autoencoder, decoder: 2x stride-2 ConvTranspose2d (k4)                 yes
nearest        same, decoder: nearest x2 resize + 3x3 conv                                 yes
bilinear       same, decoder: bilinear x2 resize + 3x3 conv                                yes
bicubic        same, decoder: bicubic x2 resize + 3x3 conv                                 yes
pixelshuffle   same, decoder: 3x3 conv to 4C channels + PixelShuffle(2)                    yes
diffusion      small denoiser with skips (nearest up-sampling), one DDIM step, noise sd 0.35 yes
flow           untrained invertible flow (squeeze + affine couplings + 1x1 mixing),         yes
               latent perturbed at temperature 0.04, then inverted
vae            8x8-block MLP VAE (16-d latent), reconstruction from a posterior draw        yes
autoregressive causal linear-Gaussian pixel model, sampled pixel by pixel from 2 seed rows   partly
pca_gmm        Gaussian mixture in a 48-component PCA space of whole patches                no
=============  ==========================================================================  =========

Check families (``CHECK_FAMILIES``; never used in training, rebuilt after an outsider's description):
``gan_tconv`` (a DCGAN-style transposed-convolution generator trained adversarially for a few hundred steps),
``ddpm_bilinear`` (a DDPM with a bilinear-up-sampling UNet, sampled with 10 DDIM steps from noise),
``pixelshuffle_sr`` (an x2 super-resolution net with PixelShuffle, fed area-down-sampled real patches).
Their operators also occur among the training families; what is unseen is the network, its training and (for
the first two) the fact that they sample from noise rather than reconstruct.

Format alignment: every patch, real or fake, goes through :func:`format_align` with a seed tied to its *pair*
(a real patch and its reconstructions share it), so JPEG quality, resizing and grey conversion are identical
within a pair and identically distributed across classes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

PATCH = 64

# --------------------------------------------------------------------------------------
# real photographs
# --------------------------------------------------------------------------------------
#: photo -> (source, licence) as stated by the shipping package's docstrings / README.
PHOTO_LICENCES: dict[str, tuple[str, str]] = {
    "astronaut": ("scikit-image", "public domain (NASA)"),
    "camera": ("scikit-image", "CC0 (Lav Varshney)"),
    "cat": ("scikit-image", "CC0 (Stefan van der Walt)"),
    "chelsea": ("scikit-image", "CC0 (Stefan van der Walt)"),
    "coffee": ("scikit-image", "CC0 (Rachel Michetti)"),
    "rocket": ("scikit-image", "public domain (SpaceX)"),
    "coins": ("scikit-image", "no known copyright restrictions"),
    "moon": ("scikit-image", "no known copyright restrictions"),
    "page": ("scikit-image", "no known copyright restrictions"),
    "hubble_deep_field": ("scikit-image", "public domain (NASA)"),
    "immunohistochemistry": ("scikit-image", "no known copyright restrictions"),
    "brick": ("scikit-image", "CC0 (CC0Textures)"),
    "grass": ("scikit-image", "CC0 (CC0Textures)"),
    "gravel": ("scikit-image", "CC0 (CC0Textures)"),
    "retina": ("scikit-image", "CC0 (Häggström, Wikimedia)"),
    "clock": ("scikit-image", "public domain (Stefan van der Walt)"),
    "text": ("scikit-image", "public domain"),
    "cell": ("scikit-image", "CC0"),
    "microaneurysms": ("scikit-image", "CC0 (Andreas Maier)"),
    "motorcycle_left": ("scikit-image", "Middlebury stereo data set (research use)"),
    "motorcycle_right": ("scikit-image", "Middlebury stereo data set (research use)"),
    "china": ("scikit-learn", "CC BY 2.0 (Flickr, per scikit-learn's images README)"),
    "flower": ("scikit-learn", "CC BY 2.0 (Flickr, per scikit-learn's images README)"),
    "grace_hopper": ("matplotlib", "public domain (U.S. Navy photograph)"),
}
#: held out of every training set: their patches only ever appear in test splits.
TEST_PHOTOS = ("chelsea", "gravel", "flower", "motorcycle_right", "grace_hopper")


def _luma(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v)
    if v.ndim == 3:
        v = np.round(v[..., 0] * 0.299 + v[..., 1] * 0.587 + v[..., 2] * 0.114)
    if v.dtype != np.uint8 and v.max() <= 1.0:
        v = v * 255.0
    return np.clip(v, 0, 255).astype(np.uint8)


def photos() -> dict[str, np.ndarray]:
    """Every photograph the installed scikit-image, scikit-learn and matplotlib ship (no download), as uint8 luma."""
    import skimage.data as sd

    out: dict[str, np.ndarray] = {}
    for name in PHOTO_LICENCES:
        if name.startswith("motorcycle") or name in ("china", "flower", "grace_hopper"):
            continue
        out[name] = _luma(getattr(sd, name)())
    left, right, _ = sd.stereo_motorcycle()
    out["motorcycle_left"], out["motorcycle_right"] = _luma(left), _luma(right)
    from sklearn.datasets import load_sample_images

    for fname, img in zip(("china", "flower"), load_sample_images().images):
        out[fname] = _luma(img)
    try:
        import matplotlib
        from matplotlib.image import imread

        out["grace_hopper"] = _luma(imread(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg")))
    except (ImportError, OSError):
        pass
    return out


def real_patches(names: list[str], n: int, seed: int, ph: dict[str, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random 64x64 patches of the named photos at scales 1, 0.75, 0.5 (area-averaged), and the photo index."""
    import cv2

    ph = ph if ph is not None else photos()
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


def format_align(img: np.ndarray, seed: int) -> np.ndarray:
    """The same random format for a given seed: JPEG at quality 60-100 (p 0.5) and/or a resize x0.5-1.5 (p 0.3)."""
    from genguard.detectors._io import jpeg_roundtrip
    from genguard.detectors.preprocess import resize

    rng = np.random.default_rng([seed, 7919])
    out = img
    if rng.random() < 0.3:
        out = resize(out, float(rng.uniform(0.5, 1.5)))
    if rng.random() < 0.5:
        out = jpeg_roundtrip(out, int(rng.integers(60, 101)))
    return out


def to_uint8(a: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(a, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# torch helpers
# --------------------------------------------------------------------------------------
def _t(x: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x[:, None], dtype=np.float32) / 255.0)


def _run(net, x: np.ndarray, batch: int = 256) -> np.ndarray:
    import torch

    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(net(_t(x[i:i + batch])).numpy()[:, 0])
    return to_uint8(np.concatenate(out))


def _train(params, loss_fn: Callable, x: np.ndarray, steps: int, seed: int, lr: float = 2e-3, batch: int = 16,
           crop: int = 32) -> None:
    """Adam on random ``crop``-pixel crops (the nets are fully convolutional: small crops train them 4x cheaper)."""
    import torch

    opt = torch.optim.Adam(params, lr=lr)
    g = np.random.default_rng(seed)
    for _ in range(steps):
        oy, ox = (int(v) for v in g.integers(0, PATCH - crop + 1, 2))
        xb = _t(x[g.integers(0, len(x), batch), oy:oy + crop, ox:ox + crop])
        loss = loss_fn(xb)
        opt.zero_grad()
        loss.backward()
        opt.step()


def _up(kind: str, i: int, o: int) -> list:
    from torch import nn

    if kind == "deconv":
        return [nn.ConvTranspose2d(i, o, 4, 2, 1)]
    if kind == "pixelshuffle":
        return [nn.Conv2d(i, 4 * o, 3, 1, 1), nn.PixelShuffle(2)]
    mode = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic"}[kind]
    extra = {} if mode == "nearest" else {"align_corners": False}
    return [nn.Upsample(scale_factor=2, mode=mode, **extra), nn.Conv2d(i, o, 3, 1, 1)]


# --------------------------------------------------------------------------------------
# families
# --------------------------------------------------------------------------------------
class UpsamplerAE:
    """Conv autoencoder 64 -> 16x16x8 -> 64 whose decoder up-samples twice with one operator; reconstructs real patches."""

    aligned = True

    def __init__(self, upsampler: str, steps: int = 300, ch: int = 16, seed: int = 0) -> None:
        self.name, self.upsampler, self.steps, self.ch, self.seed = upsampler, upsampler, steps, ch, seed

    def fit(self, x: np.ndarray) -> "UpsamplerAE":
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        c = self.ch
        enc = nn.Sequential(nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2),
                            nn.Conv2d(2 * c, 8, 3, 1, 1))
        dec = nn.Sequential(nn.Conv2d(8, 2 * c, 3, 1, 1), nn.ReLU(), *_up(self.upsampler, 2 * c, 2 * c), nn.ReLU(),
                            *_up(self.upsampler, 2 * c, c), nn.ReLU(), nn.Conv2d(c, 1, 3, 1, 1), nn.Sigmoid())
        self.net_ = nn.Sequential(enc, dec)
        _train(self.net_.parameters(), lambda xb: nn.functional.l1_loss(self.net_(xb), xb), x, self.steps, self.seed)
        self.net_.eval()
        return self

    def make(self, x: np.ndarray, seed: int) -> np.ndarray:
        return _run(self.net_, x)


def _denoiser(ch: int, upsampler: str, skips: bool = True):
    """A two-level UNet-like denoiser (image + noise level -> predicted noise)."""
    import torch
    from torch import nn

    class Denoiser(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = ch
            self.inc = nn.Sequential(nn.Conv2d(2, c, 3, 1, 1), nn.SiLU(), nn.Conv2d(c, c, 3, 1, 1), nn.SiLU())
            self.d1 = nn.Sequential(nn.Conv2d(c, 2 * c, 4, 2, 1), nn.SiLU())
            self.d2 = nn.Sequential(nn.Conv2d(2 * c, 2 * c, 4, 2, 1), nn.SiLU(), nn.Conv2d(2 * c, 2 * c, 3, 1, 1), nn.SiLU())
            self.u2 = nn.Sequential(*_up(upsampler, 2 * c, 2 * c), nn.SiLU())
            self.u1 = nn.Sequential(*_up(upsampler, 4 * c if skips else 2 * c, c), nn.SiLU())
            self.out = nn.Conv2d(2 * c if skips else c, 1, 3, 1, 1)

        def forward(self, x, s):
            h0 = self.inc(torch.cat([x, s.view(-1, 1, 1, 1).expand_as(x)], 1))
            h1 = self.d1(h0)
            h = self.u2(self.d2(h1))
            h = self.u1(torch.cat([h, h1], 1) if skips else h)
            return self.out(torch.cat([h, h0], 1) if skips else h)

    return Denoiser()


def _train_eps(net, x: np.ndarray, steps: int, seed: int) -> None:
    """Noise-prediction (DDPM) training with a cosine schedule over alpha_bar in (0, 1)."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def loss(xb):
        t = torch.rand(len(xb), generator=g)
        ab = torch.cos(t * np.pi / 2).clamp(1e-3, 0.9999) ** 2
        eps = torch.randn(xb.shape, generator=g)
        x0 = xb * 2 - 1
        xt = ab.sqrt().view(-1, 1, 1, 1) * x0 + (1 - ab).sqrt().view(-1, 1, 1, 1) * eps
        return torch.nn.functional.mse_loss(net(xt, (1 - ab).sqrt()), eps)

    _train(net.parameters(), loss, x, steps, seed)
    net.eval()


class DiffusionStep:
    """A small denoiser trained as a DDPM; fakes are one DDIM step (x_t -> x0 estimate) from real patches noised to t."""

    name, aligned = "diffusion", True

    def __init__(self, steps: int = 400, noise: float = 0.35, seed: int = 0) -> None:
        self.steps, self.noise, self.seed = steps, noise, seed

    def fit(self, x: np.ndarray) -> "DiffusionStep":
        import torch

        torch.manual_seed(self.seed)
        self.net_ = _denoiser(16, "nearest")
        _train_eps(self.net_, x, self.steps, self.seed)
        return self

    def make(self, x: np.ndarray, seed: int) -> np.ndarray:
        import torch

        g = torch.Generator().manual_seed(seed)
        sig = self.noise
        a = float(np.sqrt(1 - sig ** 2))
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 256):
                x0 = _t(x[i:i + 256]) * 2 - 1
                xt = a * x0 + sig * torch.randn(x0.shape, generator=g)
                eps = self.net_(xt, torch.full((len(x0),), sig))
                out.append(((xt - sig * eps) / a).clamp(-1, 1).numpy()[:, 0] * 0.5 + 0.5)
        return to_uint8(np.concatenate(out))


class RandomFlow:
    """An untrained invertible flow: squeeze, random 1x1 mixing and affine couplings, twice; x -> z -> z + noise -> x."""

    name, aligned = "flow", True

    def __init__(self, temperature: float = 0.04, seed: int = 0) -> None:
        self.temperature, self.seed = temperature, seed

    def fit(self, x: np.ndarray) -> "RandomFlow":
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        self.levels_ = []
        for c in (4, 16):
            layers = []
            for _ in range(2):
                q, _ = torch.linalg.qr(torch.randn(c, c))
                net = nn.Sequential(nn.Conv2d(c // 2, 32, 3, 1, 1), nn.Tanh(), nn.Conv2d(32, c, 3, 1, 1))
                with torch.no_grad():
                    net[2].weight.mul_(0.3)
                layers.append((q, net))
            self.levels_.append(layers)
        return self

    def _forward(self, x):
        import torch
        import torch.nn.functional as F

        for layers in self.levels_:
            x = F.pixel_unshuffle(x, 2)
            for q, net in layers:
                x = torch.einsum("ij,bjhw->bihw", q, x)
                a, b = x.chunk(2, 1)
                s, t = net(a).chunk(2, 1)
                x = torch.cat([a, b * torch.exp(0.5 * torch.tanh(s)) + 0.2 * t], 1)
        return x

    def _inverse(self, z):
        import torch
        import torch.nn.functional as F

        for layers in reversed(self.levels_):
            for q, net in reversed(layers):
                a, b = z.chunk(2, 1)
                s, t = net(a).chunk(2, 1)
                z = torch.cat([a, (b - 0.2 * t) * torch.exp(-0.5 * torch.tanh(s))], 1)
                z = torch.einsum("ij,bjhw->bihw", q.T, z)
            z = F.pixel_shuffle(z, 2)
        return z

    def make(self, x: np.ndarray, seed: int) -> np.ndarray:
        import torch

        g = torch.Generator().manual_seed(seed)
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 256):
                z = self._forward(_t(x[i:i + 256]))
                out.append(self._inverse(z + self.temperature * torch.randn(z.shape, generator=g)).numpy()[:, 0])
        return to_uint8(np.concatenate(out))


class BlockVAE:
    """A VAE over 8x8 blocks (MLP 64 -> 16-d latent -> 64); fakes are reconstructions from a posterior draw."""

    name, aligned = "vae", True

    def __init__(self, steps: int = 600, seed: int = 0) -> None:
        self.steps, self.seed = steps, seed

    @staticmethod
    def _blocks(xt):
        n = xt.shape[0]
        return xt.reshape(n, PATCH // 8, 8, PATCH // 8, 8).permute(0, 1, 3, 2, 4).reshape(-1, 64)

    @staticmethod
    def _unblocks(b, n):
        return b.reshape(n, 8, 8, 8, 8).permute(0, 1, 3, 2, 4).reshape(n, 1, 64, 64)

    def fit(self, x: np.ndarray) -> "BlockVAE":
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        self.enc_ = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 32))
        self.dec_ = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 64), nn.Sigmoid())
        g = torch.Generator().manual_seed(self.seed)

        def loss(xb):
            b = self._blocks(xb)
            mu, lv = self.enc_(b).chunk(2, 1)
            z = mu + torch.exp(0.5 * lv) * torch.randn(mu.shape, generator=g)
            rec = nn.functional.mse_loss(self.dec_(z), b, reduction="sum") / len(b)
            kl = -0.5 * torch.sum(1 + lv - mu ** 2 - lv.exp()) / len(b)
            return rec + 0.002 * kl

        _train(list(self.enc_.parameters()) + list(self.dec_.parameters()), loss, x, self.steps, self.seed, crop=PATCH)
        return self

    def make(self, x: np.ndarray, seed: int) -> np.ndarray:
        import torch

        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            xt = _t(x)
            mu, lv = self.enc_(self._blocks(xt)).chunk(2, 1)
            z = mu + torch.exp(0.5 * lv) * torch.randn(mu.shape, generator=g)
            return to_uint8(self._unblocks(self.dec_(z), len(x)).numpy()[:, 0])


class LinearAR:
    """Causal linear-Gaussian pixel model (W, WW, NW, N, NE, NN neighbours); sampled pixel by pixel after two seed rows/columns."""

    name, aligned = "autoregressive", False
    OFFS = ((0, -1), (0, -2), (-1, -1), (-1, 0), (-1, 1), (-2, 0))

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, x: np.ndarray) -> "LinearAR":
        xf = x.astype(np.float64) / 255.0
        t = xf[:, 2:, 2:-1]
        cols = [xf[:, 2 + dy:xf.shape[1] + dy, 2 + dx:xf.shape[2] - 1 + dx] for dy, dx in self.OFFS]
        A = np.stack([c.ravel() for c in cols] + [np.ones(t.size)], axis=1)
        self.w_, *_ = np.linalg.lstsq(A, t.ravel(), rcond=None)
        self.sd_ = float(np.std(t.ravel() - A @ self.w_))
        return self

    def make(self, x: np.ndarray, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        out = x.astype(np.float64) / 255.0
        n, h, w = out.shape
        for i in range(2, h):
            for j in range(2, w - 1):
                p = self.w_[-1] + sum(self.w_[k] * out[:, i + dy, j + dx] for k, (dy, dx) in enumerate(self.OFFS))
                out[:, i, j] = np.clip(p + self.sd_ * rng.standard_normal(n), 0, 1)
            out[:, i, w - 1] = out[:, i, w - 2]
        return to_uint8(out)


class PCAGMM:
    """A Gaussian mixture in a 48-component PCA space of whole patches (smooth, linear-basis images)."""

    name, aligned = "pca_gmm", False

    def __init__(self, n_components: int = 48, n_mix: int = 8, seed: int = 0) -> None:
        self.n_components, self.n_mix, self.seed = n_components, n_mix, seed

    def fit(self, x: np.ndarray) -> "PCAGMM":
        from sklearn.decomposition import PCA
        from sklearn.mixture import GaussianMixture

        flat = x.reshape(len(x), -1).astype(np.float32) / 255.0
        self.pca_ = PCA(self.n_components, random_state=self.seed).fit(flat)
        self.gmm_ = GaussianMixture(self.n_mix, covariance_type="full", random_state=self.seed).fit(self.pca_.transform(flat))
        return self

    def make(self, x: np.ndarray, seed: int) -> np.ndarray:
        n = len(x)
        self.gmm_.random_state = seed
        z, _ = self.gmm_.sample(n)
        z = z[np.random.default_rng(seed).permutation(n)]
        return to_uint8(self.pca_.inverse_transform(z).reshape(n, PATCH, PATCH))


# --------------------------------------------------------------------------------------
# check families (never trained on)
# --------------------------------------------------------------------------------------
class TConvGAN:
    """DCGAN-style generator (z -> 4x4 -> ... -> 64x64 with stride-2 ConvTranspose2d, BatchNorm) trained adversarially."""

    name, aligned = "gan_tconv", False

    def __init__(self, steps: int = 300, seed: int = 0) -> None:
        self.steps, self.seed = steps, seed

    def fit(self, x: np.ndarray) -> "TConvGAN":
        import torch
        from torch import nn

        torch.manual_seed(self.seed)
        c = 16
        self.g_ = nn.Sequential(nn.ConvTranspose2d(32, 8 * c, 4, 1, 0), nn.BatchNorm2d(8 * c), nn.ReLU(),
                                nn.ConvTranspose2d(8 * c, 4 * c, 4, 2, 1), nn.BatchNorm2d(4 * c), nn.ReLU(),
                                nn.ConvTranspose2d(4 * c, 2 * c, 4, 2, 1), nn.BatchNorm2d(2 * c), nn.ReLU(),
                                nn.ConvTranspose2d(2 * c, c, 4, 2, 1), nn.BatchNorm2d(c), nn.ReLU(),
                                nn.ConvTranspose2d(c, 1, 4, 2, 1), nn.Sigmoid())
        d = nn.Sequential(nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2),
                          nn.Conv2d(2 * c, 4 * c, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4 * c, 1, 8))
        og = torch.optim.Adam(self.g_.parameters(), 2e-4 * 5, betas=(0.5, 0.999))
        od = torch.optim.Adam(d.parameters(), 2e-4 * 5, betas=(0.5, 0.999))
        bce = nn.BCEWithLogitsLoss()
        rng = np.random.default_rng(self.seed)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.steps):
            xb = _t(x[rng.integers(0, len(x), 32)])
            fake = self.g_(torch.randn(32, 32, 1, 1, generator=gen))
            ld = bce(d(xb).view(-1), torch.ones(32)) + bce(d(fake.detach()).view(-1), torch.zeros(32))
            od.zero_grad()
            ld.backward()
            od.step()
            lg = bce(d(fake).view(-1), torch.ones(32))
            og.zero_grad()
            lg.backward()
            og.step()
        self.g_.eval()
        return self

    def make(self, x: np.ndarray, seed: int) -> np.ndarray:
        import torch

        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            return to_uint8(self.g_(torch.randn(len(x), 32, 1, 1, generator=g)).numpy()[:, 0])


class BilinearDDPM:
    """DDPM with a bilinear-up-sampling UNet, sampled from pure noise with 10 deterministic DDIM steps."""

    name, aligned = "ddpm_bilinear", False

    def __init__(self, steps: int = 500, sample_steps: int = 10, seed: int = 0) -> None:
        self.steps, self.sample_steps, self.seed = steps, sample_steps, seed

    def fit(self, x: np.ndarray) -> "BilinearDDPM":
        import torch

        torch.manual_seed(self.seed + 1)
        self.net_ = _denoiser(16, "bilinear")
        _train_eps(self.net_, x, self.steps, self.seed + 1)
        return self

    def make(self, x: np.ndarray, seed: int) -> np.ndarray:
        import torch

        g = torch.Generator().manual_seed(seed)
        ts = np.linspace(0.999, 0.0, self.sample_steps + 1)
        ab = np.clip(np.cos(ts * np.pi / 2), 1e-3, 0.9999) ** 2
        out = []
        with torch.no_grad():
            for i in range(0, len(x), 256):
                n = len(x[i:i + 256])
                xt = torch.randn(n, 1, PATCH, PATCH, generator=g)
                for a, b in zip(ab[:-1], ab[1:]):
                    eps = self.net_(xt, torch.full((n,), float(np.sqrt(1 - a))))
                    x0 = ((xt - np.sqrt(1 - a) * eps) / np.sqrt(a)).clamp(-1, 1)
                    xt = np.sqrt(b) * x0 + np.sqrt(1 - b) * eps
                out.append(x0.numpy()[:, 0] * 0.5 + 0.5)
        return to_uint8(np.concatenate(out))


class PixelShuffleSR:
    """x2 super-resolution net (conv, conv, conv to 4 channels, PixelShuffle) on area-down-sampled real patches."""

    name, aligned = "pixelshuffle_sr", True

    def __init__(self, steps: int = 300, seed: int = 0) -> None:
        self.steps, self.seed = steps, seed

    def fit(self, x: np.ndarray) -> "PixelShuffleSR":
        import torch
        from torch import nn

        torch.manual_seed(self.seed + 2)
        self.net_ = nn.Sequential(nn.AvgPool2d(2), nn.Conv2d(1, 32, 5, 1, 2), nn.ReLU(), nn.Conv2d(32, 16, 3, 1, 1),
                                  nn.ReLU(), nn.Conv2d(16, 4, 3, 1, 1), nn.PixelShuffle(2), nn.Sigmoid())
        _train(self.net_.parameters(), lambda xb: nn.functional.l1_loss(self.net_(xb), xb), x, self.steps, self.seed + 2)
        self.net_.eval()
        return self

    def make(self, x: np.ndarray, seed: int) -> np.ndarray:
        return _run(self.net_, x)


@dataclass(frozen=True)
class FamilySpec:
    name: str
    build: Callable[[int, bool], object]  # (seed, quick) -> unfitted family


def _ae(kind: str) -> FamilySpec:
    return FamilySpec(kind, lambda s, q: UpsamplerAE(kind, steps=100 if q else 250, seed=s))


FAMILIES: dict[str, FamilySpec] = {f.name: f for f in (
    _ae("deconv"), _ae("nearest"), _ae("bilinear"), _ae("bicubic"), _ae("pixelshuffle"),
    FamilySpec("diffusion", lambda s, q: DiffusionStep(steps=100 if q else 300, seed=s)),
    FamilySpec("flow", lambda s, q: RandomFlow(seed=s)),
    FamilySpec("vae", lambda s, q: BlockVAE(steps=200 if q else 600, seed=s)),
    FamilySpec("autoregressive", lambda s, q: LinearAR(seed=s)),
    FamilySpec("pca_gmm", lambda s, q: PCAGMM(seed=s)),
)}
CHECK_FAMILIES: dict[str, FamilySpec] = {f.name: f for f in (
    FamilySpec("gan_tconv", lambda s, q: TConvGAN(steps=100 if q else 250, seed=s)),
    FamilySpec("ddpm_bilinear", lambda s, q: BilinearDDPM(steps=100 if q else 300, seed=s)),
    FamilySpec("pixelshuffle_sr", lambda s, q: PixelShuffleSR(steps=100 if q else 250, seed=s)),
)}


# --------------------------------------------------------------------------------------
# the data set
# --------------------------------------------------------------------------------------
def build_dataset(seed: int = 0, quick: bool = False, families: tuple[str, ...] | None = None,
                  check: bool = True, log: Callable[[str], None] = lambda s: None) -> dict[str, np.ndarray]:
    """Real and fake 64x64 uint8 patches with their family, photo split and format-alignment pair id.

    Arrays: ``x`` (N, 64, 64) uint8, ``family`` (str; ``real`` for photos), ``split`` (``train`` / ``test``:
    test patches come from TEST_PHOTOS only, and their fakes are made from those test patches), ``pair``
    (the seed of :func:`format_align`; a reconstruction shares its real patch's).
    """
    import time

    import torch

    torch.manual_seed(seed)
    n_real_tr, n_real_te, n_fake_tr, n_fake_te = (800, 200, 160, 100) if quick else (2400, 600, 400, 300)
    ph = photos()
    train_photos = [p for p in ph if p not in TEST_PHOTOS]
    test_photos = [p for p in TEST_PHOTOS if p in ph]
    xr_tr, _ = real_patches(train_photos, n_real_tr, seed, ph)
    xr_te, _ = real_patches(test_photos, n_real_te, seed + 1, ph)
    xs, fam, split, pair = [xr_tr, xr_te], ["real"] * (n_real_tr + n_real_te), \
        ["train"] * n_real_tr + ["test"] * n_real_te, list(range(n_real_tr + n_real_te))
    rng = np.random.default_rng(seed + 3)
    specs = dict(FAMILIES if families is None else {k: FAMILIES[k] for k in families})
    if check:
        specs.update(CHECK_FAMILIES)
    for k, (name, spec) in enumerate(specs.items()):
        t = time.time()
        gen = spec.build(seed + k, quick).fit(xr_tr)
        for sp, src, n, base in (("train", xr_tr, n_fake_tr, 0), ("test", xr_te, n_fake_te, n_real_tr)):
            if sp == "train" and name in CHECK_FAMILIES:
                continue
            idx = rng.choice(len(src), size=min(n, len(src)), replace=False)
            xs.append(gen.make(src[idx], seed + 100 * k + (sp == "test")))
            fam += [name] * len(idx)
            split += [sp] * len(idx)
            # aligned fakes share their source's format; unaligned ones get their own draw from the same law
            pair += [int(base + i) if gen.aligned else int(10_000_000 + 1000 * k + j) for j, i in enumerate(idx)]
        log(f"  {name}: {time.time() - t:.1f}s")
    return {"x": np.concatenate(xs), "family": np.asarray(fam), "split": np.asarray(split),
            "pair": np.asarray(pair, dtype=np.int64), "train_photos": np.asarray(train_photos),
            "test_photos": np.asarray(test_photos)}


def load_or_build(path: str | os.PathLike, seed: int = 0, quick: bool = False,
                  log: Callable[[str], None] = lambda s: None) -> dict[str, np.ndarray]:
    """The data set cached at ``path`` (npz, no pickle), built and written atomically when missing."""
    from pathlib import Path

    p = Path(path)
    if p.is_file():
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    data = build_dataset(seed=seed, quick=quick, log=log)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp.npz")
    np.savez_compressed(tmp, **data)
    os.replace(tmp, p)
    return data


def aligned_images(data: dict[str, np.ndarray], mask: np.ndarray) -> list[np.ndarray]:
    """The selected patches, each through the format of its pair."""
    return [format_align(data["x"][i], int(data["pair"][i])) for i in np.nonzero(mask)[0]]
