"""DP-SGD training of any torch generator through opacus, applied only to the modules that see private data."""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

from generators.base import Dataset, GeneratorError, TorchGenerator, progress_bar, unwrap_module

#: Default delta; it must also stay below 1/n (see :func:`resolve_delta`).
DEFAULT_DELTA = 1e-5
ACCOUNTANTS = ("rdp", "prv")


class PrivacyError(ValueError):
    """A request that would break the DP analysis or cannot be met (bad epsilon, delta >= 1/n, BatchNorm...)."""


def resolve_delta(delta: float | None, n: int) -> float:
    """The delta to use for ``n`` private records: default 1e-5, and never >= 1/n.

    With no delta given and ``n >= 100,000``, 1e-5 would not be below 1/n, so
    ``1/(10 n)`` is used instead. An explicit delta >= 1/n is refused: it
    would allow releasing a whole record outright.
    """
    if n <= 0:
        raise PrivacyError("the private data set is empty")
    if delta is None:
        return DEFAULT_DELTA if DEFAULT_DELTA < 1.0 / n else 1.0 / (10.0 * n)
    if not (0.0 < delta < 1.0):
        raise PrivacyError(f"delta must lie in (0, 1), got {delta}")
    if delta >= 1.0 / n:
        raise PrivacyError(f"delta={delta:g} is not below 1/n = {1.0 / n:.3g} for n={n} records; choose delta < 1/n")
    return float(delta)


def validate_private_module(module: Any, where: str) -> None:
    """Refuse modules opacus cannot privatise (BatchNorm & co), saying how to fix them."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(module, strict=False)
    if errors:
        reasons = "; ".join(sorted({str(e) for e in errors}))
        raise PrivacyError(
            f"{where} cannot be trained with DP-SGD: {reasons}. Replace BatchNorm with GroupNorm/LayerNorm "
            "(opacus.validators.ModuleValidator.fix(model) does this) and register grad samplers for custom layers."
        )


@dataclasses.dataclass
class PrivateTrainer:
    """Train a :class:`generators.TorchGenerator` with DP-SGD (opacus ``PrivacyEngine``).

    The noise multiplier is calibrated so that ``epochs`` epochs of Poisson
    sampling with expected batch size ``generator.batch_size`` meet
    ``target_epsilon`` at ``delta`` under ``accountant``; the epsilon actually
    spent is re-read from the accountant after training (it can only be lower).
    Give ``noise_multiplier`` instead of ``target_epsilon`` to fix sigma.

    Only the modules returned by ``generator.private_modules()`` are wrapped;
    updates made in ``after_private_step`` see real data only through those
    modules' outputs and are post-processing.
    """

    target_epsilon: float | None = 10.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    noise_multiplier: float | None = None
    poisson_sampling: bool = True
    grad_sample_mode: str = "hooks"
    secure_mode: bool = False

    private = True

    def __post_init__(self) -> None:
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise PrivacyError("give target_epsilon or noise_multiplier")
        if self.target_epsilon is not None and not (self.target_epsilon > 0 and math.isfinite(self.target_epsilon)):
            raise PrivacyError(f"epsilon must be a positive finite number, got {self.target_epsilon}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise PrivacyError(f"noise multiplier must be positive, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            raise PrivacyError(f"clipping norm must be positive, got {self.max_grad_norm}")
        if self.accountant not in ACCOUNTANTS:
            raise PrivacyError(f"unknown accountant {self.accountant!r}; training supports {', '.join(ACCOUNTANTS)}")

    def train(self, gen: TorchGenerator, data: Dataset, progress: bool = True) -> dict[str, Any]:
        import opacus
        import torch
        from opacus import PrivacyEngine
        from torch.utils.data import DataLoader, TensorDataset

        n = len(data)
        delta = resolve_delta(self.delta, n)
        private = tuple(gen.private_modules())
        if len(private) != 1:
            raise PrivacyError(f"{gen.name}: PrivateTrainer supports exactly one private module, got {private}")
        (pname,) = private
        module = getattr(gen, pname)
        validate_private_module(module, f"{gen.name}.{pname}")

        tensors = gen.train_tensors(data)
        optimizers = gen.make_optimizers()
        loader = DataLoader(TensorDataset(*tensors), batch_size=gen.batch_size, shuffle=False,
                            generator=torch.Generator().manual_seed(gen.seed))
        engine = PrivacyEngine(accountant=self.accountant, secure_mode=self.secure_mode)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]ecure.*RNG.*")
            warnings.filterwarnings("ignore", message=".*Full backward hook.*")
            if self.noise_multiplier is None:
                wrapped, dp_opt, dp_loader = engine.make_private_with_epsilon(
                    module=module, optimizer=optimizers[pname], data_loader=loader,
                    target_epsilon=self.target_epsilon, target_delta=delta, epochs=gen.epochs,
                    max_grad_norm=self.max_grad_norm, poisson_sampling=self.poisson_sampling,
                    grad_sample_mode=self.grad_sample_mode,
                )
            else:
                wrapped, dp_opt, dp_loader = engine.make_private(
                    module=module, optimizer=optimizers[pname], data_loader=loader,
                    noise_multiplier=self.noise_multiplier, max_grad_norm=self.max_grad_norm,
                    poisson_sampling=self.poisson_sampling, grad_sample_mode=self.grad_sample_mode,
                )
        setattr(gen, pname, wrapped)
        optimizers = dict(optimizers)
        optimizers[pname] = dp_opt
        sample_rate = float(1.0 / len(dp_loader)) if self.poisson_sampling else float(gen.batch_size / n)
        steps, losses = 0, []
        try:
            with progress_bar(f"DP-SGD {gen.name}", total=gen.epochs, enabled=progress) as advance:
                for epoch in range(gen.epochs):
                    for name in gen.trained_modules():
                        getattr(gen, name).train()
                    total, nb = 0.0, 0
                    for batch in dp_loader:
                        dp_opt.zero_grad(set_to_none=True)
                        empty = len(batch[0]) == 0
                        # An empty Poisson batch has a NaN mean loss; opacus still releases
                        # its all-noise update, as the accounting assumes.
                        loss = gen.batch_loss(tuple(batch))
                        if not empty and not torch.isfinite(loss):
                            raise GeneratorError(f"{gen.name}: loss became {float(loss)} at step {steps}; lower the learning rate")
                        loss.backward()
                        dp_opt.step()
                        steps += 1
                        if empty:
                            continue
                        gen.after_private_step(tuple(batch), optimizers)
                        total += float(loss.detach())
                        nb += 1
                    gen.on_epoch_end(epoch)
                    eps_now = engine.get_epsilon(delta)
                    advance(1, f"loss {total / max(nb, 1):.4f}  ε={eps_now:.2f}")
                    losses.append(total / max(nb, 1))
        finally:
            setattr(gen, pname, unwrap_module(wrapped))
        epsilon = float(engine.get_epsilon(delta))
        return {
            "private": True,
            "mechanism": "DP-SGD (opacus)",
            "dataset_size": n,
            "sampling": "poisson" if self.poisson_sampling else "shuffle",
            "sample_rate": sample_rate,
            "expected_batch_size": float(dp_opt.expected_batch_size),
            "noise_multiplier": float(dp_opt.noise_multiplier),
            "max_grad_norm": float(self.max_grad_norm),
            "epochs": gen.epochs,
            "steps": steps,
            "delta": delta,
            "accountant": self.accountant,
            "target_epsilon": self.target_epsilon,
            "epsilon": epsilon,
            "private_modules": list(private),
            "grad_sample_mode": self.grad_sample_mode,
            "secure_mode": self.secure_mode,
            "final_loss": losses[-1] if losses else None,
            "opacus_version": opacus.__version__,
        }

