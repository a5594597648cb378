"""DP-MERF: a generator fitted to a random-Fourier-feature mean embedding of the data, made private in one shot."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from genguard.generators._common import ImageMixin, TabularCodec, check_n, resolve_delta, tabular_groups
from genguard.generators.base import Dataset, Generator, GeneratorError, Samples, progress_bar
from genguard.generators.registry import register

ACCOUNTANTS = ("rdp", "prv")


def gaussian_epsilon(noise_multiplier: float, delta: float, accountant: str = "rdp") -> float:
    """Epsilon of one release of the Gaussian mechanism (sampling rate 1, one step), by opacus' accountant."""
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = [(float(noise_multiplier), 1.0, 1)]
    return float(acc.get_epsilon(delta=delta))


def calibrate_noise(epsilon: float, delta: float, accountant: str = "rdp") -> float:
    """Smallest noise multiplier whose single full-batch release is (epsilon, delta)-DP under ``accountant``."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=1.0, steps=1,
                                      accountant=accountant, epsilon_tolerance=0.005))


def _build_generator(latent_dim: int, n_classes: int, hidden: int, out_dim: int, n_numeric: int | None,
                     cat_sizes: list[int]):
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Gen(nn.Module):
        """(z, class) -> a data point: sigmoid pixels for images; numerics and softmax blocks for tables."""

        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(latent_dim + n_classes, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                     nn.SiLU(), nn.Linear(hidden, out_dim))

        def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = self.net(torch.cat([z, F.one_hot(y, n_classes).float()], 1))
            if n_numeric is None:
                return torch.sigmoid(out)
            parts, start = [out[:, :n_numeric]], n_numeric
            for k in cat_sizes:
                parts.append(torch.softmax(out[:, start:start + k], 1))
                start += k
            return torch.cat(parts, 1)

    return Gen()


@register
class DPMERF(ImageMixin, Generator):
    """DP-MERF (Harder et al. 2021) for class-conditional images or group-conditional tables.

    Each record ``x`` with class ``c`` maps to ``u = [phi(x) (x) e_c, a e_c]``,
    where ``phi`` are ``n_features`` random Fourier features (cos and sin) of
    a Gaussian kernel of width ``bandwidth``, scaled so that ``||phi|| = 1``,
    and ``a = count_weight``; hence ``||u|| = sqrt(1 + a^2)`` and adding or
    removing one record moves the sum of the ``u`` by at most that. The sum is
    released once with Gaussian noise of standard deviation ``noise_multiplier
    * sqrt(1 + a^2)``, the noise multiplier calibrated for one full-batch
    release to ``(epsilon, delta)`` (by the private trainer's exact analytic
    Gaussian accountant, or opacus' without one). A generator is then fitted to
    the released per-class mean embeddings only (post-processing, no further
    privacy cost).

    ``count_weight`` splits one record's unit of sensitivity between the
    embedding (thousands of coordinates, which the generator can only match on
    its own manifold) and the class counts (one number per class, used to turn
    sums into means and for the class shares). The original ``a = 1`` spends
    half the noise variance on the counts; ``a = 0.3`` cuts the embedding's
    noise variance to 0.55 of that (as if epsilon were about 1.4 times larger
    at epsilon = 1) at the price of 3.3 times the noise on the counts (about 9%
    of a digit class's 144 records at epsilon = 1, 1% at epsilon = 10).

    ``epsilon=None`` (and no private trainer) releases the exact embedding.
    ``fit(data, trainer=PrivateTrainer(...))`` takes the trainer's
    ``target_epsilon``, ``delta`` and ``accountant`` instead; the training
    report has the keys of ``PrivateTrainer``'s, so it goes into the ledger.
    """

    name = "dpmerf"
    modality = "image"
    conditional_on = ("label",)
    default_data = "digits"
    quick_params = {"n_features": 300, "steps": 150, "batch_size": 200}
    modalities = ("image", "tabular")
    dp_mechanism = "own"  # one Gaussian release of the mean embedding

    def __init__(self, n_features: int = 2000, bandwidth: float | None = None, epsilon: float | None = None,
                 delta: float | None = None, accountant: str = "rdp", latent_dim: int = 16, hidden: int = 256,
                 steps: int = 2000, batch_size: int = 500, lr: float = 1e-3, stop_at_noise: float | None = None,
                 count_weight: float = 0.3, seed: int = 0) -> None:
        self.n_features = n_features
        self.bandwidth = bandwidth
        self.epsilon = epsilon
        self.delta = delta
        self.accountant = accountant
        self.latent_dim = latent_dim
        self.hidden = hidden
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.stop_at_noise = stop_at_noise
        self.count_weight = count_weight
        self.seed = seed

    @property
    def modality(self) -> str:  # type: ignore[override]
        return getattr(self, "data_modality_", "image")

    # -- features -------------------------------------------------------------------------
    def _omega(self, dim: int):
        """The random frequencies: a function of the seed and the (public) bandwidth only, never of the data."""
        import torch

        g = torch.Generator().manual_seed(self.seed + 7)
        return torch.randn(dim, self.n_features, generator=g) / self.bandwidth_

    def _phi(self, x, omega):
        import torch

        proj = x @ omega
        return torch.cat([torch.cos(proj), torch.sin(proj)], 1) / math.sqrt(self.n_features)

    # -- fitting --------------------------------------------------------------------------
    def fit(self, data: Dataset, trainer: Any = None, progress: bool = True) -> "DPMERF":
        import torch

        epsilon, delta, accountant = self.epsilon, self.delta, self.accountant
        # A private trainer calibrates the release itself (its accountant registry has the exact curve of
        # the un-subsampled Gaussian mechanism); without one, opacus' accountants calibrate it here.
        calibrate = None
        if trainer is not None and getattr(trainer, "private", False):
            epsilon = getattr(trainer, "target_epsilon", None)
            delta = getattr(trainer, "delta", None)
            calibrate = getattr(trainer, "calibrate_release", None)
            if not callable(calibrate):
                calibrate = None
                accountant = getattr(trainer, "accountant", accountant)
            if epsilon is None:
                raise GeneratorError("dpmerf calibrates its own noise: give the trainer a target_epsilon")
        if calibrate is None and accountant not in ACCOUNTANTS:
            raise GeneratorError(f"unknown accountant {accountant!r}; choose one of {', '.join(ACCOUNTANTS)}")
        if epsilon is not None and not (epsilon > 0 and math.isfinite(epsilon)):
            raise GeneratorError(f"epsilon must be a positive finite number, got {epsilon}")
        if not (isinstance(self.count_weight, (int, float)) and 0 < self.count_weight <= 10
                and math.isfinite(self.count_weight)):
            raise GeneratorError(f"count_weight must be a number in (0, 10], got {self.count_weight!r}")
        if self.n_features < 1 or self.steps < 1:
            raise GeneratorError("n_features and steps must be positive")
        if self.stop_at_noise is not None and not (self.stop_at_noise > 0 and math.isfinite(self.stop_at_noise)):
            raise GeneratorError(f"stop_at_noise must be a positive number or None, got {self.stop_at_noise}")
        if not isinstance(data, Dataset):
            raise GeneratorError(f"dpmerf.fit expects a generators.Dataset, got {type(data).__name__}")
        if data.modality == "image":
            codes = self._fit_image_meta(data, need_labels=False)
            x = np.asarray(data.x, dtype=np.float32).reshape(len(data), -1)
            self.group_attr_ = "label" if "label" in data.groups else None
            self.group_names_ = self.class_names_
            self.codec_ = None
        elif data.modality == "tabular":
            self.codec_ = TabularCodec.fit(data.x, data.metadata.get("categorical", ()))
            x = self.codec_.encode(data.x)
            self.group_attr_, codes, self.group_names_ = tabular_groups(data)
            self.n_classes_ = max(1, len(self.group_names_))
        else:
            raise GeneratorError(f"dpmerf models image or tabular data, got {data.modality} ({data.name})")
        self.data_modality_ = data.modality
        self.dim_ = int(x.shape[1])
        # Default width: a fixed multiple of sqrt(dim), chosen without looking at the data (a data-driven
        # median heuristic would itself leak information about the private records).
        self.bandwidth_ = float(self.bandwidth if self.bandwidth is not None else
                                (0.25 if data.modality == "image" else 1.0) * math.sqrt(self.dim_))
        torch.manual_seed(self.seed)
        n = len(x)
        omega = self._omega(self.dim_)
        with torch.no_grad():
            phi = self._phi(torch.from_numpy(x), omega)  # (n, 2D), unit norm rows
            onehot = torch.nn.functional.one_hot(torch.from_numpy(codes), self.n_classes_).float()
            emb_sum = onehot.T @ phi  # (C, 2D)
            counts = onehot.sum(0)
        a = float(self.count_weight)
        sensitivity = math.sqrt(1.0 + a * a)
        noise_std = 0.0
        report: dict[str, Any]
        if epsilon is not None:
            delta = resolve_delta(delta, n)
            if calibrate is not None:
                sigma, spent, accountant = calibrate(float(epsilon), delta)
            else:
                sigma = calibrate_noise(float(epsilon), delta, accountant)
                spent = gaussian_epsilon(sigma, delta, accountant)
            # The Gaussian mechanism assumes its noise is unknown: never seed it from the (published) run
            # seed. A private trainer supplies a secret generator (or, opted in, one keyed by its secret key).
            make = getattr(trainer, "noise_generator", None) if getattr(trainer, "private", False) else None
            if callable(make):
                g, kind = make(self)
            else:
                import secrets

                g, kind = torch.Generator().manual_seed(secrets.randbits(64)), "secret"
            emb_sum = emb_sum + torch.randn(emb_sum.shape, generator=g) * sigma * sensitivity
            counts = counts + torch.randn(counts.shape, generator=g) * (sigma * sensitivity / a)
            noise_std = sigma * sensitivity
            report = {
                "private": True, "mechanism": "Gaussian mechanism on the RFF mean embedding (DP-MERF, one shot)",
                # no dataset_size: epsilon is for add/remove-one neighbours and n would give membership away
                "sampling": "none (full data, one release)", "sample_rate": 1.0,
                "noise_multiplier": sigma, "max_grad_norm": sensitivity, "steps": 1, "delta": delta,
                "accountant": accountant, "target_epsilon": float(epsilon),
                "epsilon": spent, "private_modules": [], "grad_sample_mode": None, "secure_mode": False,
                "sensitivity": sensitivity, "count_weight": a, "n_features": self.n_features, "randomness": {"sampling": "none", "noise": kind},
                "noise_source": "torch MT19937 seeded from the OS CSPRNG (secrets), fresh per release"
                if kind == "secret" else "torch MT19937 seeded by HMAC-SHA256(secret key, run seed)",
            }
            if data.modality == "tabular":
                report["caveat"] = ("column scaling, clip ranges and category lists were computed from the training "
                                    "table without noise; the DP guarantee covers the released embedding given them")
            schema = getattr(trainer, "data_caveat", None)
            schema = schema(data) if callable(schema) else None
            if schema:
                report["caveat"] = f"{report['caveat']}; {schema}" if "caveat" in report else schema
            if kind == "keyed":
                keyed = ("the noise is keyed by HMAC-SHA256(secret key, run seed) for reproducibility: two releases "
                         "with the same key and seed share it, and must not both be published")
                report["caveat"] = f"{report['caveat']}; {keyed}" if "caveat" in report else keyed
        else:
            report = {"private": False, "mechanism": "exact RFF mean embedding (no noise)", "steps": 1}
        counts = counts.clamp(min=1.0)
        self.class_prior_ = (counts / counts.sum()).numpy().astype(np.float64)
        target = emb_sum / counts[:, None]  # per-class mean embeddings (released)
        cat_sizes = self.codec_.cat_sizes if self.codec_ is not None else []
        n_numeric = self.codec_.n_numeric if self.codec_ is not None else None
        self.generator_ = _build_generator(self.latent_dim, self.n_classes_, self.hidden, self.dim_, n_numeric, cat_sizes)
        opt = torch.optim.Adam(self.generator_.parameters(), lr=self.lr)
        g = torch.Generator().manual_seed(self.seed + 13)
        weights = torch.from_numpy(self.class_prior_).float()
        # Expected energy of the noise in the loss, E sum_c w_c ||noise_c / count_c||^2, from released
        # quantities only (sigma, the noisy counts and priors). Once the loss falls below it the generator
        # is fitting the noise rather than the data (Morozov's discrepancy principle), so fitting stops.
        noise_floor = float((weights * 2 * self.n_features * noise_std ** 2 / counts ** 2).sum())
        per_class = max(1, self.batch_size // self.n_classes_)
        y = torch.arange(self.n_classes_).repeat_interleave(per_class)
        loss_v, smooth, steps_run = float("nan"), None, 0
        with progress_bar("fitting dpmerf generator", total=self.steps, enabled=progress) as advance:
            for step in range(self.steps):
                z = torch.randn(len(y), self.latent_dim, generator=g)
                ph = self._phi(self.generator_(z, y), omega).view(self.n_classes_, per_class, -1).mean(1)
                loss = (weights * ((ph - target) ** 2).sum(1)).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_v = float(loss.detach())
                steps_run = step + 1
                if step % 50 == 49 or step == self.steps - 1:
                    advance(min(50, step % 50 + 1), f"mmd {loss_v:.5f}")
                # smoothed over ~20 steps, so one lucky minibatch of generator samples does not stop it
                smooth = loss_v if smooth is None else 0.95 * smooth + 0.05 * loss_v
                if (self.stop_at_noise is not None and noise_floor > 0 and step >= 50
                        and smooth < self.stop_at_noise * noise_floor):
                    break
        self.generator_.eval()
        report["final_loss"] = loss_v
        report["generator_steps"] = steps_run
        report["noise_floor"] = noise_floor
        self.training_report_ = report
        self.fitted_ = True
        return self

    # -- persistence ----------------------------------------------------------------------------
    def _state_tensors(self) -> dict[str, np.ndarray]:
        out = {f"generator_.{k}": v.detach().cpu().numpy() for k, v in self.generator_.state_dict().items()}
        out["class_prior"] = self.class_prior_
        return out

    def _extra_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data_modality_": self.data_modality_, "group_attr_": self.group_attr_,
                               "group_names_": self.group_names_, "n_classes_": self.n_classes_, "dim_": self.dim_,
                               "bandwidth_": self.bandwidth_, "codec_": self.codec_.state() if self.codec_ else None}
        if self.data_modality_ == "image":
            out.update(self._image_state())
        return out

    def _load_state_tensors(self, tensors: Mapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        import torch

        for key, value in extra.items():
            setattr(self, key, TabularCodec.from_state(value) if key == "codec_" and value else value)
        cat_sizes = self.codec_.cat_sizes if self.codec_ is not None else []
        n_numeric = self.codec_.n_numeric if self.codec_ is not None else None
        self.generator_ = _build_generator(self.latent_dim, self.n_classes_, self.hidden, self.dim_, n_numeric, cat_sizes)
        sd = {k[len("generator_."):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith("generator_.")}
        try:
            self.generator_.load_state_dict(sd, strict=True)
            self.class_prior_ = np.asarray(tensors["class_prior"], dtype=np.float64)
        except (RuntimeError, KeyError) as exc:
            raise GeneratorError(f"weights do not match the dpmerf architecture: {exc}") from None
        self.generator_.eval()

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        import torch

        self.check_is_fitted()
        n = check_n(n)
        codes = self._condition_codes(n, seed, label, conditions)
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        with torch.no_grad():
            z = torch.randn(n, self.latent_dim, generator=g)
            out = self.generator_(z, torch.from_numpy(codes.astype(np.int64))).numpy()
        if self.data_modality_ == "image":
            return self._image_samples(out, codes, seed)
        frame = self.codec_.decode(out)
        if self.group_attr_ in self.codec_.categories and len(self.codec_.categories[self.group_attr_]) == self.n_classes_:
            cats = self.codec_.categories[self.group_attr_]
            frame[self.group_attr_] = [cats[c] for c in codes]
        conds = {self.group_attr_: codes} if self.group_attr_ else {}
        return Samples(data=frame, modality="tabular", conditions=conds,
                       metadata={"generator": self.name, "seed": seed, "group_names": self.group_names_})
