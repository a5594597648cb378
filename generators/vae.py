"""Class-conditional variational autoencoder (MLP) for small grey images such as the embedded digits."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators.base import Dataset, GeneratorError, Samples, TorchGenerator, as_int_array
from genguard.generators.registry import register


def _build_modules(n_pixels: int, n_classes: int, latent_dim: int, hidden: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class CVAE(nn.Module):
        """Encoder q(z|x,y) and decoder p(x|z,y); only Linear layers, so opacus supports it as is."""

        def __init__(self) -> None:
            super().__init__()
            self.n_classes = n_classes
            self.enc = nn.Sequential(nn.Linear(n_pixels + n_classes, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
            self.mu = nn.Linear(hidden, latent_dim)
            self.logvar = nn.Linear(hidden, latent_dim)
            self.dec = nn.Sequential(
                nn.Linear(latent_dim + n_classes, hidden), nn.SiLU(),
                nn.Linear(hidden, hidden), nn.SiLU(),
                nn.Linear(hidden, n_pixels),
            )

        def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.dec(torch.cat([z, F.one_hot(y, self.n_classes).float()], dim=1))

        def forward(self, x: torch.Tensor, y: torch.Tensor):
            yh = F.one_hot(y, self.n_classes).float()
            h = self.enc(torch.cat([x, yh], dim=1))
            mu, logvar = self.mu(h), self.logvar(h).clamp(-10, 10)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            return self.decode(z, y), mu, logvar

    return CVAE()


@register
class ConditionalVAE(TorchGenerator):
    """Class-conditional VAE with a Bernoulli decoder over pixel intensities.

    The whole network sees real data (encoder input and reconstruction
    target), so under DP-SGD the whole network is the private module.
    ``sample(n, label=k)`` decodes prior draws for class ``k`` (or a balanced
    cycle over the classes when no label is given).
    """

    name = "vae"
    modality = "image"
    conditional_on = ("label",)
    default_data = "digits"
    quick_params = {"epochs": 3, "hidden": 64, "latent_dim": 8, "batch_size": 128}
    run_params = {  # chosen by sweeps on the digits (README): DP-SGD on 1,437 records wants a smaller
        # network, larger batches and a higher learning rate than non-private training, and a KL weight
        # below 1, without which the noisy decoder ignores its latent code and draws one digit per class
        "dp": {"hidden": 128, "latent_dim": 8, "batch_size": 512, "lr": 1e-2, "epochs": 100, "beta": 0.2},
        "dp_quick": {"hidden": 64, "latent_dim": 8, "batch_size": 512, "lr": 1e-2, "epochs": 60, "beta": 0.2},
        "plain": {"hidden": 256, "latent_dim": 16, "batch_size": 128, "lr": 2e-3, "epochs": 60},
        "plain_quick": {"hidden": 128, "latent_dim": 8, "batch_size": 128, "lr": 3e-3, "epochs": 15},
    }

    def __init__(self, latent_dim: int = 16, hidden: int = 256, epochs: int = 60, batch_size: int = 128,
                 lr: float = 2e-3, beta: float = 1.0, seed: int = 0) -> None:
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.beta = beta
        self.seed = seed

    # -- hooks for the trainers ------------------------------------------------------
    def build(self, data: Dataset) -> None:
        x = np.asarray(data.x)
        if x.ndim != 3:
            raise GeneratorError(f"vae expects grey images (n, H, W), got shape {x.shape} from {data.name!r}")
        if "label" not in data.groups:
            raise GeneratorError(f"vae is class-conditional: data set {data.name!r} has no 'label' group")
        self.image_shape_ = [int(x.shape[1]), int(x.shape[2])]
        self.n_classes_ = int(max(len(data.group_names.get("label", [])), int(data.groups["label"].max()) + 1))
        self.class_names_ = list(data.group_names.get("label", [str(i) for i in range(self.n_classes_)]))
        self.pixel_scale_ = int(data.metadata.get("pixel_scale", 1))
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        n_pixels = int(np.prod(self.image_shape_))
        self.model_ = _build_modules(n_pixels, self.n_classes_, self.latent_dim, self.hidden)

    def _extra_state(self) -> dict[str, Any]:
        return {"image_shape_": self.image_shape_, "n_classes_": self.n_classes_,
                "class_names_": self.class_names_, "pixel_scale_": self.pixel_scale_}

    def private_modules(self) -> tuple[str, ...]:
        return ("model_",)

    def train_tensors(self, data: Dataset):
        import torch

        x = torch.from_numpy(np.asarray(data.x, dtype=np.float32).reshape(len(data), -1))
        y = torch.from_numpy(np.asarray(data.groups["label"], dtype=np.int64))
        return (x, y)

    def batch_loss(self, batch):
        import torch
        from torch.nn import functional as F

        x, y = batch
        logits, mu, logvar = self.model_(x, y)
        rec = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=1)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
        return (rec + self.beta * kl).mean()

    # -- sampling ---------------------------------------------------------------------
    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        import torch

        self.check_is_fitted()
        if conditions:
            raise GeneratorError(f"vae takes only the condition 'label', got {sorted(conditions)}")
        if n <= 0:
            raise GeneratorError(f"number of samples must be positive, got {n}")
        labels = as_int_array(label, n, self.n_classes_)
        if labels is None:
            labels = np.arange(n, dtype=np.int64) % self.n_classes_
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        model = self.model_
        model.eval()
        out = []
        with torch.no_grad():
            for start in range(0, n, 1024):
                y = torch.from_numpy(labels[start:start + 1024])
                z = torch.randn(len(y), self.latent_dim, generator=g)
                out.append(torch.sigmoid(model.decode(z, y)).numpy())
        images = np.concatenate(out).reshape(n, *self.image_shape_).astype(np.float32)
        return Samples(
            data=images,
            modality="image",
            conditions={"label": labels},
            metadata={"generator": self.name, "seed": seed, "pixel_scale": self.pixel_scale_,
                      "class_names": self.class_names_},
        )
