"""TVAE-style variational autoencoder for tables with mixed numeric and categorical columns, conditioned on a group."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators._common import TabularCodec, check_n, group_condition, tabular_groups
from genguard.generators.base import Dataset, GeneratorError, Samples, TorchGenerator, class_shares, unwrap_module


def _build(width: int, n_numeric: int, cat_sizes: list[int], n_groups: int, latent_dim: int, hidden: int):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class TVAE(nn.Module):
        """Encoder q(z | row, group), decoder p(row | z, group): Gaussian numerics (mean, log-variance), softmax categoricals."""

        def __init__(self) -> None:
            super().__init__()
            self.enc = nn.Sequential(nn.Linear(width + n_groups, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
            self.mu = nn.Linear(hidden, latent_dim)
            self.logvar = nn.Linear(hidden, latent_dim)
            self.dec = nn.Sequential(nn.Linear(latent_dim + n_groups, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                     nn.SiLU(), nn.Linear(hidden, 2 * n_numeric + sum(cat_sizes)))

        def decode(self, z: torch.Tensor, g: torch.Tensor):
            out = self.dec(torch.cat([z, F.one_hot(g, n_groups).float()], 1))
            mean, logvar = out[:, :n_numeric], out[:, n_numeric:2 * n_numeric].clamp(-8, 4)
            return mean, logvar, out[:, 2 * n_numeric:]

        def forward(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
            """Per-row negative ELBO."""
            h = self.enc(torch.cat([x, F.one_hot(g, n_groups).float()], 1))
            mu, lv = self.mu(h), self.logvar(h).clamp(-10, 10)
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * lv)
            mean, logvar, logits = self.decode(z, g)
            xn = x[:, :n_numeric]
            rec = (0.5 * (xn - mean) ** 2 / logvar.exp() + 0.5 * logvar).sum(1)
            start = n_numeric
            for k in cat_sizes:
                target = x[:, start:start + k].argmax(1)
                rec = rec + F.cross_entropy(logits[:, start - n_numeric:start - n_numeric + k], target, reduction="none")
                start += k
            kl = -0.5 * (1 + lv - mu.pow(2) - lv.exp()).sum(1)
            return rec + kl

    return TVAE()


class TabularVAE(TorchGenerator):
    """TVAE-style VAE over a DataFrame: standardised numerics, one-hot categoricals, the first group as condition.

    For the diabetes data the group is ``sex``: ``sample(n, sex=1)`` draws
    rows of the second sex code (and sets the ``sex`` column accordingly);
    without a condition, groups follow their training shares. Returns a
    ``pandas.DataFrame`` with the training columns, numerics clipped to their
    training range and integer columns rounded. All layers are Linear, so
    DP-SGD applies to the whole model.
    """

    name = "tabular"
    modality = "tabular"

    def __init__(self, latent_dim: int = 8, hidden: int = 128, epochs: int = 200, batch_size: int = 64,
                 lr: float = 2e-3, seed: int = 0) -> None:
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def fit(self, data: Dataset, trainer: Any = None, progress: bool = True):
        # Under DP the group shares must not come from the private rows unnoised: sample groups uniformly.
        super().fit(data, trainer=trainer, progress=progress)
        if self.private_fit_:
            self.training_report_["caveat"] = (
                "column scaling, clip ranges and category lists were computed from the training table without "
                "noise; the DP guarantee covers the model weights given that preprocessing")
        return self

    def build(self, data: Dataset) -> None:
        self.codec_ = TabularCodec.fit(data.x, data.metadata.get("categorical", ()))
        self.group_attr_, codes, self.group_names_ = tabular_groups(data)
        self.n_groups_ = max(1, len(self.group_names_))
        self.group_prior_ = class_shares(codes, self.n_groups_, self.private_fit_)
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        if isinstance(self.codec_, dict):
            self.codec_ = TabularCodec.from_state(self.codec_)
        c = self.codec_
        self.model_ = _build(c.width, c.n_numeric, c.cat_sizes, self.n_groups_, self.latent_dim, self.hidden)

    def _extra_state(self) -> dict[str, Any]:
        return {"codec_": self.codec_.state(), "group_attr_": self.group_attr_, "group_names_": self.group_names_,
                "n_groups_": self.n_groups_, "group_prior_": self.group_prior_}

    def private_modules(self) -> tuple[str, ...]:
        return ("model_",)

    def train_tensors(self, data: Dataset):
        import torch

        _, codes, _ = tabular_groups(data)
        return (torch.from_numpy(self.codec_.encode(data.x)), torch.from_numpy(codes))

    def batch_loss(self, batch):
        x, g = batch
        return self.model_(x, g).mean()

    def sample(self, n: int, seed: int | None = None, **conditions: Any) -> Samples:
        import torch

        self.check_is_fitted()
        n = check_n(n)
        codes = group_condition(self, n, conditions)
        rng = np.random.default_rng(int(seed if seed is not None else self.seed))
        if codes is None:
            codes = rng.choice(self.n_groups_, size=n, p=np.asarray(self.group_prior_) / sum(self.group_prior_))
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        model = unwrap_module(self.model_)
        model.eval()
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=g)
            mean, logvar, logits = model.decode(z, torch.from_numpy(codes.astype(np.int64)))
            num = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=g)
            parts, start = [num], 0
            for k in self.codec_.cat_sizes:
                idx = torch.multinomial(torch.softmax(logits[:, start:start + k], 1), 1, generator=g)[:, 0]
                parts.append(torch.nn.functional.one_hot(idx, k).float())
                start += k
        frame = self.codec_.decode(torch.cat(parts, 1).numpy())
        if self.group_attr_ in self.codec_.categories and len(self.codec_.categories[self.group_attr_]) == self.n_groups_:
            cats = self.codec_.categories[self.group_attr_]
            frame[self.group_attr_] = [cats[c] for c in codes]
        conds = {self.group_attr_: codes} if self.group_attr_ else {}
        return Samples(data=frame, modality="tabular", conditions=conds,
                       metadata={"generator": self.name, "seed": seed, "group_names": self.group_names_})


def column_fidelity(real: Any, synthetic: Any) -> dict[str, dict[str, float]]:
    """Per-column fidelity: KS statistic and mean/std for numerics, total-variation distance for categoricals."""
    import pandas as pd
    from scipy.stats import ks_2samp

    if not isinstance(real, pd.DataFrame) or not isinstance(synthetic, pd.DataFrame):
        raise GeneratorError("column_fidelity compares two DataFrames")
    out: dict[str, dict[str, float]] = {}
    for col in real.columns:
        if col not in synthetic.columns:
            raise GeneratorError(f"synthetic table lacks column {col!r}")
        r, s = real[col], synthetic[col]
        if pd.api.types.is_numeric_dtype(r) and r.nunique() > 5:
            out[col] = {"ks": float(ks_2samp(r, s).statistic), "mean_real": float(r.mean()), "mean_syn": float(s.mean()),
                        "std_real": float(r.std()), "std_syn": float(s.std())}
        else:
            pr, ps = r.value_counts(normalize=True), s.value_counts(normalize=True)
            keys = set(pr.index) | set(ps.index)
            out[col] = {"tv": float(0.5 * sum(abs(pr.get(k, 0.0) - ps.get(k, 0.0)) for k in keys))}
    return out
