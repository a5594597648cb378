"""Class-conditional RealNVP normalizing flow with exact log-density, trained on dequantised images."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from genguard.generators._common import ImageMixin
from genguard.generators.base import Dataset, Samples, TorchGenerator, class_shares, unwrap_module
from genguard.generators.registry import register

#: The logit transform maps [0, 1] to R through [ALPHA, 1 - ALPHA] (as in the RealNVP paper).
ALPHA = 0.05


def _masks(h: int, w: int, n_layers: int) -> np.ndarray:
    """Alternating checkerboard / complement, then top-half / bottom-half, repeated."""
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    base = [((ii + jj) % 2 == 0), ((ii + jj) % 2 == 1), ii < h // 2, ii >= h // 2, jj < w // 2, jj >= w // 2]
    return np.stack([base[k % len(base)].reshape(-1) for k in range(n_layers)]).astype(np.float32)


def _build(h: int, w: int, n_classes: int, n_layers: int, hidden: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    d = h * w

    class Coupling(nn.Module):
        """Affine coupling: the unmasked half is scaled and shifted by an MLP of the masked half and the class."""

        def __init__(self, mask: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("mask", torch.from_numpy(mask))
            self.net = nn.Sequential(nn.Linear(d + n_classes, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                     nn.Linear(hidden, 2 * d))
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)

        def params(self, x, yh):
            s, t = self.net(torch.cat([x * self.mask, yh], 1)).chunk(2, dim=1)
            s = 2.0 * torch.tanh(s / 2.0) * (1 - self.mask)  # bounded log-scale keeps training stable
            return s, t * (1 - self.mask)

        def forward(self, x, yh):
            s, t = self.params(x, yh)
            return x * torch.exp(s) + t, s.sum(1)

        def inverse(self, y, yh):
            s, t = self.params(y, yh)
            return (y - t) * torch.exp(-s)

    class Flow(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList([Coupling(m) for m in _masks(h, w, n_layers)])

        def forward(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            """Exact log-density of points ``u`` in the unit cube (n, d), given classes ``y``."""
            yh = F.one_hot(y, n_classes).float()
            p = ALPHA + (1 - 2 * ALPHA) * u
            z = torch.log(p) - torch.log1p(-p)
            logdet = (math.log(1 - 2 * ALPHA) - torch.log(p) - torch.log1p(-p)).sum(1)
            for layer in self.layers:
                z, ld = layer(z, yh)
                logdet = logdet + ld
            return -0.5 * (z ** 2).sum(1) - 0.5 * d * math.log(2 * math.pi) + logdet

        def inverse(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            yh = F.one_hot(y, n_classes).float()
            for layer in reversed(self.layers):
                z = layer.inverse(z, yh)
            return ((torch.sigmoid(z) - ALPHA) / (1 - 2 * ALPHA)).clamp(0, 1)

    return Flow()


@register
class RealNVP(ImageMixin, TorchGenerator):
    """RealNVP (affine couplings over checkerboard and half-image masks), conditioned on the class.

    Pixels with ``L`` grey levels (digits: 17) are dequantised as
    ``(k + u) / L`` with ``u ~ U(0, 1)`` and passed through a logit; the loss
    is the exact negative log-density in nats per pixel. ``log_prob(x, label)``
    is the exact log-density of the flow at the centre of each pixel's
    dequantisation cell, ``(x (L-1) + 0.5) / L`` (marginal over classes when
    no label is given). Linear layers only, so opacus applies as is.
    """

    name = "flow"
    modality = "image"
    conditional_on = ("label",)
    default_data = "digits"
    quick_params = {"n_layers": 4, "hidden": 64, "epochs": 3, "batch_size": 128}

    def __init__(self, n_layers: int = 8, hidden: int = 256, temperature: float = 0.8, epochs: int = 60,
                 batch_size: int = 64, lr: float = 1e-3, seed: int = 0) -> None:
        self.n_layers = n_layers
        self.hidden = hidden
        self.temperature = temperature
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def build(self, data: Dataset) -> None:
        labels = self._fit_image_meta(data)
        self.class_prior_ = class_shares(labels, self.n_classes_, self.private_fit_)
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        import torch

        self.model_ = _build(*self.image_shape_, self.n_classes_, self.n_layers, self.hidden)
        self._noise = torch.Generator().manual_seed(self.seed + 1)

    def _extra_state(self) -> dict[str, Any]:
        return {**self._image_state(), "class_prior_": self.class_prior_}

    def private_modules(self) -> tuple[str, ...]:
        return ("model_",)

    def train_tensors(self, data: Dataset):
        import torch

        levels = np.round(np.asarray(data.x).reshape(len(data), -1) * (self.levels_ - 1)).astype(np.float32)
        return (torch.from_numpy(levels), torch.from_numpy(np.asarray(data.groups["label"], dtype=np.int64)))

    def batch_loss(self, batch):
        import torch

        k, y = batch
        u = (k + torch.rand(k.shape, generator=self._noise)) / self.levels_
        return -self.model_(u, y).mean() / k.shape[1]

    def log_prob(self, x: Any, label: Any = None) -> np.ndarray:
        import torch

        flat = self._flat_images(x)
        u = torch.from_numpy(((flat * (self.levels_ - 1) + 0.5) / self.levels_).astype(np.float32))
        model = unwrap_module(self.model_)
        with torch.no_grad():
            if label is not None:
                labels = self._sample_labels(len(flat), label, {})
                return model(u, torch.from_numpy(labels)).double().numpy()
            terms = [model(u, torch.full((len(u),), c, dtype=torch.long)).double() + math.log(max(p, 1e-300))
                     for c, p in enumerate(self.class_prior_)]
            return torch.logsumexp(torch.stack(terms), 0).numpy()

    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        import torch

        self.check_is_fitted()
        labels = self._sample_labels(n, label, conditions)
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        model = unwrap_module(self.model_)
        with torch.no_grad():
            z = torch.randn(n, int(np.prod(self.image_shape_)), generator=g) * self.temperature
            x = model.inverse(z, torch.from_numpy(labels))
        return self._image_samples(x.numpy(), labels, seed, temperature=self.temperature)
