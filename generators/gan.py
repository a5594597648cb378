"""Class-conditional DCGAN-style GAN (GroupNorm, projection discriminator) with non-saturating, hinge or WGAN-GP loss."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators._common import ImageMixin
from genguard.generators.base import Dataset, GeneratorError, Samples, TorchGenerator
from genguard.generators.registry import register

LOSSES = ("ns", "hinge", "wgan-gp")


def _build(h: int, w: int, n_classes: int, latent_dim: int, width: int):
    import torch
    from torch import nn

    if h % 4 or w % 4:
        raise GeneratorError(f"gan needs image sides divisible by 4, got {h}x{w}")
    h4, w4 = h // 4, w // 4

    def gn(c: int) -> nn.GroupNorm:
        return nn.GroupNorm(min(8, c), c)

    class Gen(nn.Module):
        """z, class -> image in [0, 1]: linear to a (2 width, H/4, W/4) map, two transposed convs (DCGAN)."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(n_classes, latent_dim)
            self.fc = nn.Linear(2 * latent_dim, 2 * width * h4 * w4)
            self.net = nn.Sequential(
                gn(2 * width), nn.ReLU(),
                nn.ConvTranspose2d(2 * width, width, 4, 2, 1), gn(width), nn.ReLU(),
                nn.ConvTranspose2d(width, width // 2, 4, 2, 1), gn(width // 2), nn.ReLU(),
                nn.Conv2d(width // 2, 1, 3, 1, 1),
            )

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            x = self.fc(torch.cat([z, self.embed(y)], 1)).view(-1, 2 * width, h4, w4)
            return torch.sigmoid(self.net(x))

    class Disc(nn.Module):
        """Image, class -> score. Conv + GroupNorm (opacus-valid) and a projection term <embed(y), features>."""

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(
                nn.Conv2d(1, width // 2, 3, 1, 1), nn.LeakyReLU(0.2),
                nn.Conv2d(width // 2, width, 4, 2, 1), gn(width), nn.LeakyReLU(0.2),
                nn.Conv2d(width, 2 * width, 4, 2, 1), gn(2 * width), nn.LeakyReLU(0.2),
                nn.Flatten(),
            )
            feat = 2 * width * h4 * w4
            self.out = nn.Linear(feat, 1)
            self.embed = nn.Embedding(n_classes, feat)
            nn.init.normal_(self.embed.weight, std=0.02)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            f = self.net(x * 2 - 1)
            return self.out(f).squeeze(1) + (self.embed(y) * f).sum(1)

    return Gen(), Disc()


@register
class ConditionalGAN(ImageMixin, TorchGenerator):
    """Class-conditional DCGAN for small grey images; only the discriminator sees real data.

    ``loss``: ``"ns"`` (non-saturating), ``"hinge"`` or ``"wgan-gp"`` (with
    gradient penalty ``gp_weight``). In ``batch_loss`` the discriminator
    scores the real batch and an equally large fake batch (drawn from the
    generator without gradients); the loss of item *i* is real term *i* plus
    fake term *i*, and opacus sums the per-sample gradients of the two calls
    of each layer, so one backward pass, clipped per pair, is the only
    privacy charge. The generator is then updated in ``after_private_step``
    through the discriminator alone (post-processing). Under DP-SGD that step
    sees nothing of the private batch: its conditions are drawn uniformly
    over the classes (a public distribution) and its latents from a stream of
    its own, ``batch_size`` of each; only the non-private loop conditions the
    generator step on the real batch's labels.

    Without ``diversity`` the conditional generator learns to ignore its
    latent code and draws near-copies of one digit per class (measured on
    the digits: within-class spread 0.43 of the real one, manifold recall
    0.03). ``diversity`` adds the mode-seeking term of Mao et al. (2019),
    ``diversity / (mean |G(z1, y) - G(z2, y)| / mean |z1 - z2|)``, to the
    generator loss; it involves the generator alone, so under DP-SGD it is
    post-processing like the rest of the generator step. ``ema`` samples
    from an exponential moving average of the generator's weights (also
    post-processing). ``instance_noise`` adds Gaussian noise of that
    standard deviation to real and fake images before the discriminator.

    WGAN-GP cannot train with the current DP-SGD hooks: its penalty needs the
    gradient of an input-gradient norm (double backward), which opacus'
    per-sample hooks do not compute.
    """

    name = "gan"
    modality = "image"
    conditional_on = ("label",)
    default_data = "digits"
    quick_params = {"width": 16, "latent_dim": 16, "epochs": 6, "batch_size": 128, "lr": 1e-3}
    # DP-SGD: few large batches (the per-step noise is shared by the whole batch) at a higher learning
    # rate; the benchmark's epsilon-10 setting. It stays far below the non-private GAN (README).
    run_params = {"dp": {"width": 32, "batch_size": 256, "epochs": 5, "lr": 1e-3}}

    def __init__(self, latent_dim: int = 32, width: int = 32, loss: str = "ns", gp_weight: float = 10.0,
                 n_critic: int = 1, epochs: int = 20, batch_size: int = 32, lr: float = 2e-4,
                 lr_generator: float | None = None, betas: tuple[float, float] | None = None,
                 ema: float | None = 0.99, instance_noise: float = 0.0, diversity: float = 0.1,
                 seed: int = 0) -> None:
        self.latent_dim = latent_dim
        self.width = width
        self.loss = loss
        self.gp_weight = gp_weight
        self.n_critic = n_critic
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.lr_generator = lr_generator
        self.betas = betas
        self.ema = ema
        self.instance_noise = instance_noise
        self.diversity = diversity
        self.seed = seed

    def build(self, data: Dataset) -> None:
        if self.loss not in LOSSES:
            raise GeneratorError(f"unknown gan loss {self.loss!r}; choose one of {', '.join(LOSSES)}")
        if self.n_critic < 1:
            raise GeneratorError(f"n_critic must be >= 1, got {self.n_critic}")
        if self.ema is not None and not 0.0 <= self.ema < 1.0:
            raise GeneratorError(f"ema must be in [0, 1) or None, got {self.ema}")
        if not self.diversity >= 0.0:
            raise GeneratorError(f"diversity must be >= 0, got {self.diversity}")
        if not self.instance_noise >= 0.0:
            raise GeneratorError(f"instance_noise must be >= 0, got {self.instance_noise}")
        if self.betas is not None and (len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas)):
            raise GeneratorError(f"betas must be two numbers in [0, 1), got {self.betas}")
        self._fit_image_meta(data)
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        import torch

        self.gen_, self.disc_ = _build(*self.image_shape_, self.n_classes_, self.latent_dim, self.width)
        self._noise = torch.Generator().manual_seed(self.seed + 1)
        # Post-processing draws from its own stream, so its inputs do not depend on how many fakes the
        # private step drew (the realised batch size).
        self._post_noise = torch.Generator().manual_seed(self.seed + 2)
        self._steps = 0
        if self.ema is not None:
            import copy

            # An exponential moving average of the generator's weights, used for sampling: a function of the
            # generator's trajectory only, so post-processing under DP.
            self.gen_ema_ = copy.deepcopy(self.gen_).requires_grad_(False)

    def _load_state_tensors(self, tensors: Mapping[str, Any], extra: Mapping[str, Any]) -> None:
        if self.ema is not None and not any(k.startswith("gen_ema_.") for k in tensors):
            self.ema = None  # saved before EMA sampling existed: it sampled from gen_, and still does
        super()._load_state_tensors(tensors, extra)

    def _sampler(self):
        return self.gen_ema_ if self.ema is not None else self.gen_

    def _extra_state(self) -> dict[str, Any]:
        return self._image_state()

    def private_modules(self) -> tuple[str, ...]:
        return ("disc_",)

    def trained_modules(self) -> tuple[str, ...]:
        # the EMA copy changes during training (post-processing of gen_): the ledger must name it
        return ("disc_", "gen_", "gen_ema_") if self.ema is not None else ("disc_", "gen_")

    def make_optimizers(self) -> dict[str, Any]:
        import torch

        lr_g = self.lr if self.lr_generator is None else self.lr_generator
        betas = tuple(self.betas) if self.betas is not None else (0.0, 0.9) if self.loss == "wgan-gp" else (0.5, 0.999)
        return {"disc_": torch.optim.Adam(self.disc_.parameters(), lr=self.lr, betas=betas),
                "gen_": torch.optim.Adam(self.gen_.parameters(), lr=lr_g, betas=betas)}

    def train_tensors(self, data: Dataset):
        import torch

        x = torch.from_numpy(np.asarray(data.x, dtype=np.float32)[:, None])
        return (x, torch.from_numpy(np.asarray(data.groups["label"], dtype=np.int64)))

    def _fake(self, y):
        import torch

        z = torch.randn(len(y), self.latent_dim, generator=self._noise)
        return self.gen_(z, y)

    def batch_loss(self, batch):
        import torch
        from torch.nn import functional as F

        x, y = batch
        with torch.no_grad():
            fake = self._fake(y)
        if self.instance_noise > 0:
            # Instance noise blurs real and fake alike, so D cannot win on pixel detail alone and its
            # gradient stays informative for G; each record's noise depends on that record only.
            x = x + self.instance_noise * torch.randn(x.shape, generator=self._noise)
            fake = fake + self.instance_noise * torch.randn(fake.shape, generator=self._noise)
        d_real = self.disc_(x, y)
        d_fake = self.disc_(fake, y)
        if self.loss == "ns":
            per_item = F.softplus(-d_real) + F.softplus(d_fake)
        elif self.loss == "hinge":
            per_item = F.relu(1 - d_real) + F.relu(1 + d_fake)
        else:
            alpha = torch.rand(len(x), 1, 1, 1, generator=self._noise)
            mix = (alpha * x + (1 - alpha) * fake).requires_grad_(True)
            grad = torch.autograd.grad(self.disc_(mix, y).sum(), mix, create_graph=True)[0]
            gp = (grad.flatten(1).norm(dim=1) - 1).pow(2)
            per_item = d_fake - d_real + self.gp_weight * gp
        return per_item.mean()

    def check_private_training(self) -> None:
        if self.loss == "wgan-gp":
            raise GeneratorError("gan loss 'wgan-gp' cannot train with DP-SGD (its gradient penalty needs a double "
                                 "backward through the private critic, which per-sample clipping lacks); "
                                 "use loss='ns' or 'hinge'")

    def after_private_step(self, batch, optimizers) -> None:
        """Generator step through the discriminator only (post-processing of the private module)."""
        from torch.nn import functional as F

        self._steps += 1
        if self._steps % self.n_critic:
            return
        import torch

        if batch is None:  # private training: public conditions (uniform over classes), public batch size
            y = torch.randint(0, self.n_classes_, (self.batch_size,), generator=self._post_noise)
            z = torch.randn(self.batch_size, self.latent_dim, generator=self._post_noise)
        else:
            _, y = batch
            z = torch.randn(len(y), self.latent_dim, generator=self._noise)
        disc = self.disc_
        hooks = hasattr(disc, "disable_hooks")
        if hooks:  # opacus' GradSampleModule: no per-sample gradients for this pass
            disc.disable_hooks()
        try:
            opt = optimizers["gen_"]
            opt.zero_grad(set_to_none=True)
            if self.diversity > 0:
                # Mode seeking (Mao et al. 2019): a second latent per condition, and a penalty when two
                # latents give near-identical images. A term of the generator alone: no privacy cost.
                z2 = torch.randn(z.shape, generator=self._post_noise if batch is None else self._noise)
                z, y2 = torch.cat([z, z2]), torch.cat([y, y])
            else:
                y2 = y
            fake = self.gen_(z, y2)
            score = disc(fake, y2)
            g_loss = (-score).mean() if self.loss in ("hinge", "wgan-gp") else F.softplus(-score).mean()
            if self.diversity > 0:
                n = len(y)
                ratio = (fake[:n] - fake[n:]).abs().flatten(1).mean(1) / (z[:n] - z[n:]).abs().mean(1)
                g_loss = g_loss + self.diversity / (ratio.mean() + 1e-5)
            g_loss.backward(inputs=list(self.gen_.parameters()))
            opt.step()
            if self.ema is not None:
                # warm-up (decay (1 + t) / (10 + t) until it reaches ``ema``): a short run, such as a DP
                # one of a few dozen steps, must not sample from weights that are mostly the initial ones
                t = self._steps // self.n_critic
                decay = min(self.ema, (1.0 + t) / (10.0 + t))
                with torch.no_grad():
                    for pe, p in zip(self.gen_ema_.parameters(), self.gen_.parameters()):
                        pe.lerp_(p, 1.0 - decay)
                    for be, b in zip(self.gen_ema_.buffers(), self.gen_.buffers()):
                        be.copy_(b)
        finally:
            if hooks:
                disc.enable_hooks()

    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        import torch

        self.check_is_fitted()
        labels = self._sample_labels(n, label, conditions)
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        gen = self._sampler()
        gen.eval()
        with torch.no_grad():
            y = torch.from_numpy(labels)
            z = torch.randn(n, self.latent_dim, generator=g)
            x = torch.cat([gen(z[i:i + 1024], y[i:i + 1024]) for i in range(0, n, 1024)])
        return self._image_samples(x[:, 0].numpy(), labels, seed)
