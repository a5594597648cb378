"""Class-conditional noise-conditional score network: denoising score matching and annealed Langevin sampling."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators._common import ImageMixin
from genguard.generators._nets import DenoiserMixin, build_denoiser
from genguard.generators.base import Dataset, GeneratorError, Samples, TorchGenerator, unwrap_module
from genguard.generators.registry import register


@register
class ScoreModel(DenoiserMixin, ImageMixin, TorchGenerator):
    """NCSN-style score model s(x, sigma, class) = -net(x, log sigma, class) / sigma.

    Trained by denoising score matching over ``n_sigmas`` geometric noise
    levels from ``sigma_max`` to ``sigma_min`` (loss weighted by sigma^2, as in
    Song & Ermon 2019). ``sample`` runs annealed Langevin dynamics,
    ``langevin_steps`` per level with step ``step_lr * sigma^2 / sigma_min^2``,
    then one denoising step (Tweedie). Images are scaled to [-1, 1].
    """

    name = "score"
    modality = "image"
    conditional_on = ("label",)
    default_data = "digits"
    quick_params = {"channels": 16, "n_blocks": 1, "n_sigmas": 5, "langevin_steps": 5, "epochs": 3,
                    "batch_size": 128}

    def __init__(self, channels: int = 32, n_blocks: int = 2, n_sigmas: int = 10, sigma_max: float = 3.0,
                 sigma_min: float = 0.02, langevin_steps: int = 10, step_lr: float = 4e-4,
                 epochs: int = 60, batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> None:
        self.channels = channels
        self.n_blocks = n_blocks
        self.n_sigmas = n_sigmas
        self.sigma_max = sigma_max
        self.sigma_min = sigma_min
        self.langevin_steps = langevin_steps
        self.step_lr = step_lr
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def build(self, data: Dataset) -> None:
        if not (0 < self.sigma_min < self.sigma_max) or self.n_sigmas < 2:
            raise GeneratorError("score needs 0 < sigma_min < sigma_max and n_sigmas >= 2")
        self._fit_image_meta(data)
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        import torch

        # n_classes_ + 1 embedding rows; the last one is unused here (shared net with ddpm)
        self.model_ = build_denoiser(self.n_classes_, self.channels, self.n_blocks)
        self._sigmas = torch.from_numpy(np.geomspace(self.sigma_max, self.sigma_min, self.n_sigmas).astype(np.float32))
        self._noise = torch.Generator().manual_seed(self.seed + 1)

    def _score(self, model, x, sigma, y):
        """Score estimate: the net predicts the unit noise, so s = -net / sigma."""
        return -model(x, 100.0 * sigma.log(), y) / sigma[:, None, None, None]

    def batch_loss(self, batch):
        import torch

        x, y = batch
        idx = torch.randint(0, self.n_sigmas, (len(x),), generator=self._noise)
        sigma = self._sigmas[idx]
        z = torch.randn(x.shape, generator=self._noise)
        pred = self.model_(x + sigma[:, None, None, None] * z, 100.0 * sigma.log(), y)
        # sigma^2 * || s + z / sigma ||^2 = || -net + z ||^2
        return ((pred - z) ** 2).flatten(1).mean(1).mean()

    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        import torch

        self.check_is_fitted()
        labels = self._sample_labels(n, label, conditions)
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        model = unwrap_module(self.model_)
        model.eval()
        y = torch.from_numpy(labels)
        x = torch.rand(n, 1, *self.image_shape_, generator=g) * 2 - 1
        s_min = float(self._sigmas[-1])
        with torch.no_grad():
            for sigma in self._sigmas:
                sig = torch.full((n,), float(sigma))
                step = self.step_lr * (float(sigma) / s_min) ** 2
                for _ in range(self.langevin_steps):
                    x = x + 0.5 * step * self._score(model, x, sig, y) + step ** 0.5 * torch.randn(x.shape, generator=g)
            sig = torch.full((n,), s_min)
            x = x + s_min ** 2 * self._score(model, x, sig, y)  # Tweedie denoising of the last level
        return self._image_samples(((x[:, 0] + 1) / 2).numpy(), labels, seed, sampler="annealed-langevin",
                                   langevin_steps=self.langevin_steps)
