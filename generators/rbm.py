"""Restricted Boltzmann machine on binarised digits with the class as clamped one-hot visible units, trained by CD-k."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators._common import ImageMixin
from genguard.generators.base import Dataset, Samples, TorchGenerator, unwrap_module
from genguard.generators.registry import register


def _build(n_visible: int, n_hidden: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class RBMEnergy(nn.Module):
        """Free energy F(v) = -b.v - sum softplus(W v + c); Linear layers only, so opacus' hooks apply.

        ``forward`` takes pairs (B, 2, V) of a data vector and its CD-k negative
        and returns F(data) - F(negative) per item: the gradient of its mean is
        the contrastive-divergence update, and each pair's gradient depends on
        one training record only (what DP-SGD's per-sample clipping needs).
        """

        def __init__(self) -> None:
            super().__init__()
            self.hidden = nn.Linear(n_visible, n_hidden)
            self.visible_bias = nn.Linear(n_visible, 1, bias=False)
            nn.init.normal_(self.hidden.weight, std=0.01)
            nn.init.zeros_(self.hidden.bias)
            nn.init.zeros_(self.visible_bias.weight)

        def free_energy(self, v: torch.Tensor) -> torch.Tensor:
            return -self.visible_bias(v).squeeze(-1) - F.softplus(self.hidden(v)).sum(-1)

        def forward(self, pairs: torch.Tensor) -> torch.Tensor:
            fe = self.free_energy(pairs)
            return fe[:, 0] - fe[:, 1]

    return RBMEnergy()


@register
class RBM(ImageMixin, TorchGenerator):
    """Bernoulli RBM over binarised pixels plus a one-hot class block (a joint model of image and label).

    Training is contrastive divergence (CD-``cd_k``) written as the loss
    ``F(v_data) - F(v_negative)``, so the same hooks train it plainly or with
    DP-SGD (the whole RBM is the private module; its negatives start from the
    record itself). ``sample(n, label=k)`` runs ``gibbs_steps`` of block Gibbs
    sampling with the class units clamped to ``k`` and returns the final
    pixel probabilities as grey images. There is no tractable ``log_prob``
    (the partition function is unknown); :meth:`free_energy` is exposed.
    """

    name = "rbm"
    modality = "image"
    conditional_on = ("label",)
    default_data = "digits"
    quick_params = {"n_hidden": 64, "epochs": 3, "gibbs_steps": 50, "batch_size": 128}

    def __init__(self, n_hidden: int = 256, cd_k: int = 1, gibbs_steps: int = 500, threshold: float = 0.5,
                 epochs: int = 60, batch_size: int = 64, lr: float = 3e-3, seed: int = 0) -> None:
        self.n_hidden = n_hidden
        self.cd_k = cd_k
        self.gibbs_steps = gibbs_steps
        self.threshold = threshold
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def build(self, data: Dataset) -> None:
        self._fit_image_meta(data)
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        self.n_pixels_ = int(np.prod(self.image_shape_))
        self.model_ = _build(self.n_pixels_ + self.n_classes_, self.n_hidden)
        import torch

        self._train_gen = torch.Generator().manual_seed(self.seed + 1)  # CD-k chains; reset on every fit

    def _extra_state(self) -> dict[str, Any]:
        return self._image_state()

    def private_modules(self) -> tuple[str, ...]:
        return ("model_",)

    def train_tensors(self, data: Dataset):
        import torch

        x = (np.asarray(data.x).reshape(len(data), -1) > self.threshold).astype(np.float32)
        return (torch.from_numpy(x), torch.from_numpy(np.asarray(data.groups["label"], dtype=np.int64)))

    # -- Gibbs sampling with the raw parameters (no opacus hooks fire) ------------------------
    def _params(self):
        m = unwrap_module(self.model_)
        return m.hidden.weight, m.hidden.bias, m.visible_bias.weight[0]

    def _gibbs(self, v, steps: int, gen, clamp_labels=None):
        import torch

        w, c, b = self._params()
        p = self.n_pixels_
        for _ in range(steps):
            h = torch.bernoulli(torch.sigmoid(v @ w.T + c), generator=gen)
            act = h @ w + b
            pix = torch.sigmoid(act[:, :p])
            if clamp_labels is None:
                lab = torch.nn.functional.one_hot(
                    torch.multinomial(torch.softmax(act[:, p:], 1), 1, generator=gen).squeeze(1), self.n_classes_).float()
            else:
                lab = clamp_labels
            v = torch.cat([torch.bernoulli(pix, generator=gen), lab], dim=1)
        return v, pix

    def batch_loss(self, batch):
        import torch
        from torch.nn import functional as F

        x, y = batch
        v = torch.cat([x, F.one_hot(y, self.n_classes_).float()], dim=1)
        with torch.no_grad():
            neg, _ = self._gibbs(v, self.cd_k, self._train_gen)
        return self.model_(torch.stack([v, neg], dim=1)).mean()

    def free_energy(self, images: Any, label: Any) -> np.ndarray:
        """Free energy of (image, label) pairs after binarisation; lower means more probable."""
        import torch
        from torch.nn import functional as F

        flat = self._flat_images(images)
        labels = self._sample_labels(len(flat), label, {})
        v = torch.cat([torch.from_numpy((flat > self.threshold).astype(np.float32)),
                       F.one_hot(torch.from_numpy(labels), self.n_classes_).float()], dim=1)
        with torch.no_grad():
            return unwrap_module(self.model_).free_energy(v).numpy()

    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        import torch
        from torch.nn import functional as F

        self.check_is_fitted()
        labels = self._sample_labels(n, label, conditions)
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        with torch.no_grad():
            clamp = F.one_hot(torch.from_numpy(labels), self.n_classes_).float()
            v = torch.cat([torch.bernoulli(torch.full((n, self.n_pixels_), 0.5), generator=g), clamp], dim=1)
            _, pix = self._gibbs(v, self.gibbs_steps, g, clamp_labels=clamp)
        return self._image_samples(pix.numpy(), labels, seed, gibbs_steps=self.gibbs_steps)
