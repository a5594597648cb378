"""Class-conditional PixelCNN over discrete grey levels, with exact log-probability, built from shifted plain convolutions."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from genguard.generators._common import ImageMixin
from genguard.generators.base import Dataset, Samples, TorchGenerator, class_shares, unwrap_module
from genguard.generators.registry import register


def _build(n_levels: int, n_classes: int, channels: int, n_blocks: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    # Causality comes from padding and shifting (PixelCNN++'s down- and down-right-shifted
    # convolutions) instead of masked weights: every layer is a plain nn.Conv2d, whose
    # per-sample gradients opacus computes natively; a masked-weight layer would need its
    # own registered grad sampler.
    def down_shifted(cin: int, cout: int, kh: int, kw: int) -> nn.Sequential:
        return nn.Sequential(nn.ZeroPad2d(((kw - 1) // 2, (kw - 1) // 2, kh - 1, 0)), nn.Conv2d(cin, cout, (kh, kw)))

    def down_right_shifted(cin: int, cout: int, kh: int, kw: int) -> nn.Sequential:
        return nn.Sequential(nn.ZeroPad2d((kw - 1, 0, kh - 1, 0)), nn.Conv2d(cin, cout, (kh, kw)))

    def shift_down(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :-1, :], (0, 0, 1, 0))

    def shift_right(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, :, :-1], (1, 0, 0, 0))

    class PixelCNNNet(nn.Module):
        """Vertical stack ``u`` sees the rows above; horizontal stack ``ul`` also the pixels to the left."""

        def __init__(self) -> None:
            super().__init__()
            self.u_init = down_shifted(1, channels, 2, 3)
            self.ul_init_up = down_shifted(1, channels, 1, 3)
            self.ul_init_left = down_right_shifted(1, channels, 2, 1)
            self.embed = nn.Embedding(n_classes, 2 * channels)
            self.u_convs = nn.ModuleList([down_shifted(channels, channels, 2, 3) for _ in range(n_blocks)])
            self.ul_convs = nn.ModuleList([down_right_shifted(channels, channels, 2, 2) for _ in range(n_blocks)])
            self.links = nn.ModuleList([nn.Conv2d(channels, channels, 1) for _ in range(n_blocks)])
            self.out = nn.Conv2d(channels, n_levels, 1)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            """Logits (n, levels, H, W) of each pixel given the pixels before it (raster order) and the class."""
            x = x * 2 - 1
            eu, eul = self.embed(y)[:, :, None, None].chunk(2, dim=1)
            u = shift_down(self.u_init(x)) + eu
            ul = shift_down(self.ul_init_up(x)) + shift_right(self.ul_init_left(x)) + eul
            for conv_u, conv_ul, link in zip(self.u_convs, self.ul_convs, self.links):
                u = u + conv_u(F.elu(u))
                ul = ul + conv_ul(F.elu(ul)) + link(F.elu(u))
            return self.out(F.elu(ul))

    return PixelCNNNet()


@register
class PixelCNN(ImageMixin, TorchGenerator):
    """Autoregressive model of the pixels' discrete grey levels (digits: 17), conditioned on the class.

    ``log_prob(x, label)`` is the exact log-probability (nats) of each image's
    levels; with no label, the class is marginalised with the training prior.
    Sampling draws the pixels one at a time in raster order.
    """

    name = "pixelcnn"
    modality = "image"
    conditional_on = ("label",)
    default_data = "digits"
    quick_params = {"channels": 16, "n_blocks": 2, "epochs": 2, "batch_size": 128}

    def __init__(self, channels: int = 32, n_blocks: int = 4, epochs: int = 30, batch_size: int = 64,
                 lr: float = 2e-3, seed: int = 0) -> None:
        self.channels = channels
        self.n_blocks = n_blocks
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def build(self, data: Dataset) -> None:
        labels = self._fit_image_meta(data)
        self.class_prior_ = class_shares(labels, self.n_classes_, self.private_fit_)
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        self.model_ = _build(self.levels_, self.n_classes_, self.channels, self.n_blocks)

    def _extra_state(self) -> dict[str, Any]:
        return {**self._image_state(), "class_prior_": self.class_prior_}

    def private_modules(self) -> tuple[str, ...]:
        return ("model_",)

    def _levels(self, flat: np.ndarray) -> np.ndarray:
        return np.round(flat * (self.levels_ - 1)).astype(np.int64).reshape(-1, 1, *self.image_shape_)

    def train_tensors(self, data: Dataset):
        import torch

        k = self._levels(np.asarray(data.x))
        return (torch.from_numpy(k), torch.from_numpy(np.asarray(data.groups["label"], dtype=np.int64)))

    def batch_loss(self, batch):
        from torch.nn import functional as F

        k, y = batch
        logits = self.model_(k.float() / (self.levels_ - 1), y)
        return F.cross_entropy(logits, k[:, 0], reduction="none").flatten(1).mean(1).mean()

    def log_prob(self, x: Any, label: Any = None) -> np.ndarray:
        """Exact log-probability (nats) of the images' grey levels (values rounded to the nearest level)."""
        import torch
        from torch.nn import functional as F

        k = torch.from_numpy(self._levels(self._flat_images(x)))
        model = unwrap_module(self.model_)

        def lp(y: torch.Tensor) -> torch.Tensor:
            logits = model(k.float() / (self.levels_ - 1), y)
            return -F.cross_entropy(logits, k[:, 0], reduction="none").flatten(1).sum(1).double()

        with torch.no_grad():
            if label is not None:
                return lp(torch.from_numpy(self._sample_labels(len(k), label, {}))).numpy()
            terms = [lp(torch.full((len(k),), c, dtype=torch.long)) + math.log(max(p, 1e-300))
                     for c, p in enumerate(self.class_prior_)]
            return torch.logsumexp(torch.stack(terms), 0).numpy()

    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        import torch

        self.check_is_fitted()
        labels = self._sample_labels(n, label, conditions)
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        model = unwrap_module(self.model_)
        h, w = self.image_shape_
        y = torch.from_numpy(labels)
        x = torch.zeros(n, 1, h, w)
        with torch.no_grad():
            for i in range(h):
                for j in range(w):
                    probs = torch.softmax(model(x, y)[:, :, i, j], dim=1)
                    x[:, 0, i, j] = torch.multinomial(probs, 1, generator=g)[:, 0].float() / (self.levels_ - 1)
        return self._image_samples(x[:, 0].numpy(), labels, seed)
