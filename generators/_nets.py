"""The small conditional convolutional denoiser, and the hooks around it, shared by the diffusion and score-based generators."""
from __future__ import annotations

import math


def build_denoiser(n_classes: int, channels: int, n_blocks: int, emb_dim: int = 128):
    """A residual conv net eps(x, level, class) at full resolution (the embedded images are 8x8).

    GroupNorm, Conv2d, Linear and Embedding only: opacus-valid, with native
    per-sample gradients. The class embedding has one extra row, index
    ``n_classes``, for the unconditional model of classifier-free guidance.
    """
    import torch
    from torch import nn

    def gn(c: int) -> nn.GroupNorm:
        return nn.GroupNorm(min(8, c), c)

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm1, self.conv1 = gn(channels), nn.Conv2d(channels, channels, 3, padding=1)
            self.cond = nn.Linear(emb_dim, channels)
            self.norm2, self.conv2 = gn(channels), nn.Conv2d(channels, channels, 3, padding=1)

        def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
            r = self.conv1(nn.functional.silu(self.norm1(h))) + self.cond(e)[:, :, None, None]
            return h + self.conv2(nn.functional.silu(self.norm2(r)))

    class Denoiser(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.level = nn.Sequential(nn.Linear(emb_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
            self.label = nn.Embedding(n_classes + 1, emb_dim)
            self.inp = nn.Conv2d(1, channels, 3, padding=1)
            self.blocks = nn.ModuleList([Block() for _ in range(n_blocks)])
            self.norm = gn(channels)
            self.out = nn.Conv2d(channels, 1, 3, padding=1)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def forward(self, x: torch.Tensor, level: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            """``level``: a float per item (diffusion step t, or log sigma) embedded sinusoidally."""
            half = emb_dim // 2
            freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
            ang = level.float()[:, None] * freqs[None]
            e = self.level(torch.cat([torch.sin(ang), torch.cos(ang)], 1)) + self.label(y)
            e = nn.functional.silu(e)
            h = self.inp(x)
            for block in self.blocks:
                h = block(h, e)
            return self.out(nn.functional.silu(self.norm(h)))

    return Denoiser()


class DenoiserMixin:
    """What the diffusion (ddpm), score and flow-matching generators share around :func:`build_denoiser`: the whole
    denoiser is the private module, images train in [-1, 1] with their labels, image shape is the state."""

    def _extra_state(self):
        return self._image_state()

    def private_modules(self) -> tuple[str, ...]:
        return ("model_",)

    def train_tensors(self, data):
        import numpy as np
        import torch

        x = torch.from_numpy(np.asarray(data.x, dtype=np.float32)[:, None] * 2 - 1)
        return (x, torch.from_numpy(np.asarray(data.groups["label"], dtype=np.int64)))

    def _guided(self, model, x, tt, y):
        """The net's output with classifier-free guidance: (1 + w) f(x, t, y) - w f(x, t, null class)."""
        import torch

        out = model(x, tt, y)
        w = getattr(self, "guidance", 0.0)
        if w:
            out = (1 + w) * out - w * model(x, tt, torch.full_like(y, self.n_classes_))
        return out
