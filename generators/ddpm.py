"""Class-conditional denoising diffusion model (DDPM training) with a DDIM fast sampler and classifier-free guidance."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators._common import ImageMixin
from genguard.generators._nets import DenoiserMixin, build_denoiser
from genguard.generators.base import Dataset, GeneratorError, Samples, TorchGenerator, unwrap_module
from genguard.generators.registry import register


@register
class DDPM(DenoiserMixin, ImageMixin, TorchGenerator):
    """Epsilon-prediction diffusion over ``timesteps`` steps (cosine schedule), images scaled to [-1, 1].

    The label is dropped (replaced by a null class) with probability
    ``p_uncond`` during training, so ``sample`` can apply classifier-free
    guidance of strength ``guidance``; it runs ``sampling_steps`` deterministic
    DDIM steps (``eta = 0``; set ``eta`` > 0 for stochastic DDIM).
    ``noise_multiplicity`` draws that many (t, noise) pairs per training image
    and averages their losses: under DP-SGD each image is still one clipped
    per-sample gradient (opacus sums the per-sample gradients of repeated
    calls), so this lowers gradient variance at no privacy cost (as in DPDM).
    """

    name = "ddpm"
    modality = "image"
    conditional_on = ("label",)
    default_data = "digits"
    quick_params = {"channels": 16, "n_blocks": 1, "timesteps": 100, "sampling_steps": 10, "epochs": 3,
                    "batch_size": 128}

    def __init__(self, channels: int = 32, n_blocks: int = 2, timesteps: int = 1000, sampling_steps: int = 25,
                 eta: float = 0.0, guidance: float = 1.0, p_uncond: float = 0.1, noise_multiplicity: int = 1,
                 epochs: int = 60, batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> None:
        self.channels = channels
        self.n_blocks = n_blocks
        self.timesteps = timesteps
        self.sampling_steps = sampling_steps
        self.eta = eta
        self.guidance = guidance
        self.p_uncond = p_uncond
        self.noise_multiplicity = noise_multiplicity
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def build(self, data: Dataset) -> None:
        if not (1 <= self.sampling_steps <= self.timesteps):
            raise GeneratorError(f"sampling_steps must lie in [1, timesteps={self.timesteps}], got {self.sampling_steps}")
        if self.noise_multiplicity < 1:
            raise GeneratorError(f"noise_multiplicity must be >= 1, got {self.noise_multiplicity}")
        self._fit_image_meta(data)
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        import torch

        self.model_ = build_denoiser(self.n_classes_, self.channels, self.n_blocks)
        s = 0.008
        t = torch.linspace(0, 1, self.timesteps + 1, dtype=torch.float64)
        abar = torch.cos((t + s) / (1 + s) * torch.pi / 2) ** 2
        abar = (abar / abar[0]).clamp(1e-5, 1.0)
        self._abar = abar[1:].float()  # alpha-bar after step t = 1..T, indexed 0..T-1
        self._noise = torch.Generator().manual_seed(self.seed + 1)

    def batch_loss(self, batch):
        import torch

        x, y = batch
        drop = torch.rand(len(y), generator=self._noise) < self.p_uncond
        y = torch.where(drop, torch.full_like(y, self.n_classes_), y)
        total = 0.0
        for _ in range(self.noise_multiplicity):
            t = torch.randint(0, self.timesteps, (len(x),), generator=self._noise)
            eps = torch.randn(x.shape, generator=self._noise)
            ab = self._abar[t][:, None, None, None]
            xt = ab.sqrt() * x + (1 - ab).sqrt() * eps
            total = total + ((self.model_(xt, t, y) - eps) ** 2).flatten(1).mean(1)
        return (total / self.noise_multiplicity).mean()

    def _eps(self, model, x, t, y):
        import torch

        return self._guided(model, x, torch.full((len(x),), int(t), dtype=torch.long), y)

    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        import torch

        self.check_is_fitted()
        labels = self._sample_labels(n, label, conditions)
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        model = unwrap_module(self.model_)
        model.eval()
        steps = np.linspace(self.timesteps - 1, 0, self.sampling_steps).round().astype(int)
        y = torch.from_numpy(labels)
        x = torch.randn(n, 1, *self.image_shape_, generator=g)
        with torch.no_grad():
            for i, t in enumerate(steps):
                ab = self._abar[t]
                ab_prev = self._abar[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0)
                e = self._eps(model, x, t, y)
                x0 = ((x - (1 - ab).sqrt() * e) / ab.sqrt()).clamp(-1, 1)
                e = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
                sigma = self.eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
                x = ab_prev.sqrt() * x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * e
                if self.eta > 0 and i + 1 < len(steps):
                    x = x + sigma * torch.randn(x.shape, generator=g)
        return self._image_samples(((x[:, 0] + 1) / 2).numpy(), labels, seed,
                                   sampler="ddim", sampling_steps=self.sampling_steps, guidance=self.guidance)
