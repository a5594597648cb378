"""Class-conditional flow matching (rectified flow): a velocity field trained by regression, sampled by an ODE solver."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators._common import ImageMixin
from genguard.generators._nets import DenoiserMixin, build_denoiser
from genguard.generators.base import Dataset, GeneratorError, Samples, TorchGenerator, unwrap_module
from genguard.generators.registry import register

#: The time t in [0, 1] is embedded as the denoiser's "level" at this scale (its sinusoids expect
#: values of the order of diffusion steps, 0..1000).
TIME_SCALE = 1000.0
SOLVERS = ("euler", "heun")


@register
class FlowMatching(DenoiserMixin, ImageMixin, TorchGenerator):
    """Rectified flow (Liu et al. 2023; flow matching with straight paths, Lipman et al. 2023) on small grey images.

    A record ``x1`` (pixels scaled to [-1, 1]) and Gaussian noise ``x0`` are
    joined by the straight path ``x_t = (1 - t) x0 + t x1``; the network
    ``v(x_t, t, class)`` regresses the path's velocity ``x1 - x0``. Each
    record's loss is the mean squared error over its pixels and over
    ``noise_multiplicity`` draws of ``(t, x0)`` — one loss, hence one clipped
    per-sample gradient, per record under DP-SGD — and ``batch_loss`` is the
    mean over the batch. ``t`` is drawn from a logit-normal distribution
    (``t_logit_std``; 0 gives uniform t), which weights the middle of the
    path, as in Esser et al. 2024.

    ``sample`` integrates ``dx/dt = v`` from noise at t = 0 to t = 1 with
    ``sampling_steps`` Euler or Heun steps. The label is replaced by a null
    class with probability ``p_uncond`` in training, so ``guidance`` > 0
    applies classifier-free guidance. The velocity net is the residual conv
    net of the diffusion models (GroupNorm, no BatchNorm: valid for opacus).
    """

    name = "flowmatch"
    modality = "image"
    conditional_on = ("label",)
    default_data = "digits"
    quick_params = {"channels": 16, "n_blocks": 1, "sampling_steps": 8, "epochs": 3, "batch_size": 128}

    def __init__(self, channels: int = 32, n_blocks: int = 2, sampling_steps: int = 20, solver: str = "heun",
                 guidance: float = 0.0, p_uncond: float = 0.1, t_logit_std: float = 1.0, noise_multiplicity: int = 1,
                 epochs: int = 60, batch_size: int = 64, lr: float = 2e-3, seed: int = 0) -> None:
        self.channels = channels
        self.n_blocks = n_blocks
        self.sampling_steps = sampling_steps
        self.solver = solver
        self.guidance = guidance
        self.p_uncond = p_uncond
        self.t_logit_std = t_logit_std
        self.noise_multiplicity = noise_multiplicity
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def build(self, data: Dataset) -> None:
        if self.solver not in SOLVERS:
            raise GeneratorError(f"unknown solver {self.solver!r}; choose one of {', '.join(SOLVERS)}")
        if self.sampling_steps < 1 or self.noise_multiplicity < 1:
            raise GeneratorError("sampling_steps and noise_multiplicity must be >= 1")
        if not (0.0 <= self.p_uncond < 1.0) or self.t_logit_std < 0:
            raise GeneratorError("p_uncond must lie in [0, 1) and t_logit_std be >= 0")
        self._fit_image_meta(data)
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        import torch

        self.model_ = build_denoiser(self.n_classes_, self.channels, self.n_blocks)
        self._noise = torch.Generator().manual_seed(self.seed + 1)

    def _times(self, n: int):
        import torch

        if self.t_logit_std == 0:
            return torch.rand(n, generator=self._noise)
        return torch.sigmoid(torch.randn(n, generator=self._noise) * self.t_logit_std)

    def batch_loss(self, batch):
        import torch

        x1, y = batch
        drop = torch.rand(len(y), generator=self._noise) < self.p_uncond
        y = torch.where(drop, torch.full_like(y, self.n_classes_), y)
        per_record = 0.0
        for _ in range(self.noise_multiplicity):
            t = self._times(len(x1))
            x0 = torch.randn(x1.shape, generator=self._noise)
            tt = t[:, None, None, None]
            xt = (1 - tt) * x0 + tt * x1
            per_record = per_record + ((self.model_(xt, t * TIME_SCALE, y) - (x1 - x0)) ** 2).flatten(1).mean(1)
        return (per_record / self.noise_multiplicity).mean()

    def _velocity(self, model, x, t: float, y):
        import torch

        return self._guided(model, x, torch.full((len(x),), t * TIME_SCALE), y)

    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        import torch

        self.check_is_fitted()
        labels = self._sample_labels(n, label, conditions)
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        model = unwrap_module(self.model_)
        model.eval()
        y = torch.from_numpy(labels)
        x = torch.randn(n, 1, *self.image_shape_, generator=g)
        ts = np.linspace(0.0, 1.0, self.sampling_steps + 1)
        with torch.no_grad():
            for t0, t1 in zip(ts[:-1], ts[1:]):
                h = float(t1 - t0)
                v = self._velocity(model, x, float(t0), y)
                if self.solver == "heun":
                    v = 0.5 * (v + self._velocity(model, x + h * v, float(t1), y))
                x = x + h * v
        return self._image_samples(((x[:, 0].clamp(-1, 1) + 1) / 2).numpy(), labels, seed, solver=self.solver,
                                   sampling_steps=self.sampling_steps, guidance=self.guidance)
