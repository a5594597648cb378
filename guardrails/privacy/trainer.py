"""DP-SGD training of any torch generator, applied only to the modules that see private data.

One :class:`PrivateTrainer` drives every :class:`generators.TorchGenerator`
through its hooks: Poisson sampling of logical batches, physical batching
(opacus ``BatchMemoryManager``-style: a logical batch is split into chunks of
at most ``max_physical_batch_size`` and the *clipped* per-sample gradients are
summed across chunks before noise is added once), per-sample clipping
(:mod:`guardrails.privacy.clipping`), Gaussian noise, and accounting
(:mod:`guardrails.privacy.accounting`). ``grad_sample_mode="opacus"`` runs the
stock opacus ``PrivacyEngine`` instead (one private module; required for
``secure_mode``), kept as the reference the fast path is tested against.
"""
from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import numpy as np

from genguard.generators.base import Dataset, GeneratorError, TorchGenerator, progress_bar, unwrap_module
from genguard.guardrails.privacy.errors import PrivacyError

#: Default delta; it must also stay below 1/n (see :func:`resolve_delta`).
DEFAULT_DELTA = 1e-5
ACCOUNTANTS = ("rdp", "prv", "pld")
GRAD_SAMPLE_MODES = ("auto", "ghost", "hooks", "functorch", "opacus")

__all__ = ["DEFAULT_DELTA", "PrivacyError", "PrivateTrainer", "resolve_delta", "validate_private_module"]


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
    """Refuse modules that break the per-sample analysis (BatchNorm & co), saying how to fix them."""
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(module, strict=False)
    if errors:
        reasons = "; ".join(sorted({str(e) for e in errors}))
        raise PrivacyError(
            f"{where} cannot be trained with DP-SGD: {reasons}. Replace BatchNorm with GroupNorm/LayerNorm "
            "(opacus.validators.ModuleValidator.fix(model) does this) and register grad samplers for custom layers."
        )


def _layer_types(modules: dict[str, Any]) -> list[str]:
    from genguard.guardrails.privacy.clipping import parametrised_layers

    return sorted({type(layer).__name__ for _, layer in parametrised_layers(modules)})


@dataclasses.dataclass
class PrivateTrainer:
    """Train a :class:`generators.TorchGenerator` with DP-SGD.

    The noise multiplier is calibrated so that ``epochs`` epochs of Poisson
    sampling with expected batch size ``generator.batch_size`` meet
    ``target_epsilon`` at ``delta`` under ``accountant``; the epsilon actually
    spent is recomputed from the steps taken after training (it can only be
    lower). Give ``noise_multiplier`` instead of ``target_epsilon`` to fix sigma.

    Every module named by ``generator.private_modules()`` is privatised, with
    one joint clipping norm over all of their parameters; updates made in
    ``after_private_step`` see real data only through those modules' outputs
    and are post-processing.

    ``grad_sample_mode``: ``auto`` (= ``ghost``, the fastest, valid for every
    layer opacus supports), ``ghost``, ``hooks``, ``functorch`` (see
    :mod:`guardrails.privacy.clipping`) or ``opacus`` (stock ``PrivacyEngine``,
    one private module). ``max_physical_batch_size`` bounds memory; logical
    (Poisson) batches are unchanged by it, so the accounting is too.
    """

    target_epsilon: float | None = 10.0
    delta: float | None = None
    max_grad_norm: float = 1.0
    accountant: str = "rdp"
    noise_multiplier: float | None = None
    poisson_sampling: bool = True
    grad_sample_mode: str = "auto"
    secure_mode: bool = False
    max_physical_batch_size: int | None = None
    gradient_accumulation_steps: int = 1
    reproducible_noise: bool = True
    # -- mechanism probe (audits only) -------------------------------------------------------------
    #: An auditor's view into the mechanism (white-box canaries, the conformance check); None in
    #: training. ``start(params, sample_rate, noise_multiplier, max_grad_norm, expected_batch)`` once,
    #: then per step ``before_noise(step, idx, sums)`` (may add to the clipped sums in place) and
    #: ``after_noise(step, sums)`` (the released update, ``(sum + noise) / E[B]``, as set on ``.grad``).
    mechanism_probe: Any = dataclasses.field(default=None, repr=False, compare=False)
    # -- end mechanism probe -----------------------------------------------------------------------

    private = True

    def __post_init__(self) -> None:
        if self.target_epsilon is None and self.noise_multiplier is None:
            raise PrivacyError("give target_epsilon or noise_multiplier")
        if self.target_epsilon is not None and not (isinstance(self.target_epsilon, (int, float))
                                                    and self.target_epsilon > 0 and math.isfinite(self.target_epsilon)):
            raise PrivacyError(f"epsilon must be a positive finite number, got {self.target_epsilon}")
        if self.noise_multiplier is not None and not self.noise_multiplier > 0:
            raise PrivacyError(f"noise multiplier must be positive, got {self.noise_multiplier}")
        if not self.max_grad_norm > 0:
            raise PrivacyError(f"clipping norm must be positive, got {self.max_grad_norm}")
        if self.accountant == "gdp":
            raise PrivacyError("GDP is an approximation, not a guarantee; train with accountant rdp, prv or pld")
        if self.accountant not in ACCOUNTANTS:
            raise PrivacyError(f"unknown accountant {self.accountant!r}; training supports {', '.join(ACCOUNTANTS)}")
        if self.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise PrivacyError(f"unknown grad_sample_mode {self.grad_sample_mode!r}; choose one of {', '.join(GRAD_SAMPLE_MODES)}")
        if self.max_physical_batch_size is not None and self.max_physical_batch_size < 1:
            raise PrivacyError(f"max_physical_batch_size must be >= 1, got {self.max_physical_batch_size}")
        if self.gradient_accumulation_steps != 1:
            raise PrivacyError(
                "gradient accumulation across Poisson batches breaks the DP analysis (the accountant charges every "
                "sampled batch as one noisy step); to fit a large batch in memory set max_physical_batch_size instead, "
                "which splits each logical batch and adds noise once")
        if self.secure_mode and self.grad_sample_mode not in ("auto", "opacus"):
            raise PrivacyError("secure_mode needs opacus' cryptographically secure noise: use grad_sample_mode='opacus'")
        if self.secure_mode:
            try:
                import torchcsprng  # noqa: F401  (what opacus' secure_mode draws its noise from)
            except ImportError:
                raise PrivacyError("secure_mode needs the torchcsprng package (opacus' cryptographically secure "
                                   "noise); install it, or train with secure_mode=False") from None

    # -- helpers ---------------------------------------------------------------------------------
    def _calibrate(self, q: float, steps: int, delta: float) -> float:
        from genguard.guardrails.privacy.accounting import noise_multiplier_for_epsilon

        if self.noise_multiplier is not None:
            return float(self.noise_multiplier)
        return noise_multiplier_for_epsilon(self.target_epsilon, q, steps, delta, self.accountant)

    def _private(self, gen: TorchGenerator) -> dict[str, Any]:
        if hasattr(gen, "check_private_training"):
            gen.check_private_training()  # the generator's own refusal (e.g. a GAN's gradient penalty)
        names = tuple(gen.private_modules())
        if not names:
            raise PrivacyError(f"{gen.name}: private_modules() names no module; nothing to train privately")
        modules = {}
        for name in names:
            module = getattr(gen, name, None)
            if module is None:
                raise PrivacyError(f"{gen.name}: private module {name!r} does not exist after build()")
            validate_private_module(module, f"{gen.name}.{name}")
            modules[name] = module
        return modules

    def train(self, gen: TorchGenerator, data: Dataset, progress: bool = True) -> dict[str, Any]:
        mode = self.grad_sample_mode
        if mode == "auto":
            mode = "opacus" if self.secure_mode else "ghost"
        if mode == "opacus":
            if self.mechanism_probe is not None:  # mechanism probe: the fast path only
                raise PrivacyError("a mechanism probe (white-box audit, conformance check) needs the genguard engine, "
                                   "not grad_sample_mode='opacus'")
            return self._train_opacus(gen, data, progress)
        return self._train_fast(gen, data, progress, mode)

    # -- the genguard engine ---------------------------------------------------------------------
    def _train_fast(self, gen: TorchGenerator, data: Dataset, progress: bool, mode: str) -> dict[str, Any]:
        import opacus
        import torch

        from genguard.guardrails.privacy.accounting import compute_epsilon
        from genguard.guardrails.privacy.clipping import PerSampleClipper

        n = len(data)
        delta = resolve_delta(self.delta, n)
        modules = self._private(gen)
        tensors = tuple(gen.train_tensors(data))
        if any(len(t) != n for t in tensors):
            raise PrivacyError(f"{gen.name}: train_tensors() returned tensors of unequal length for {n} records")
        optimizers = gen.make_optimizers()
        batch_size = int(gen.batch_size)
        # opacus' convention (DPDataLoader): q = 1 / (batches per epoch), expected batch q * n.
        steps_per_epoch = max(1, math.ceil(n / batch_size))
        q = 1.0 / steps_per_epoch
        planned = steps_per_epoch * int(gen.epochs)
        sigma = self._calibrate(q, planned, delta)
        expected_batch = q * n
        physical = int(self.max_physical_batch_size or max(batch_size, 1) * 4)
        clipper = PerSampleClipper(modules, self.max_grad_norm, mode)
        g_sample = torch.Generator().manual_seed(int(gen.seed) * 2 + 1)
        if self.reproducible_noise:
            # Same seed, same run (the architecture's reproducibility rule), without making the noise
            # regenerable from the ledger: the noise seed is a keyed hash of the run seed under a secret
            # key kept (0600) in the key directory. reproducible_noise=False draws a fresh secret seed.
            from genguard.guardrails.privacy.signing import noise_seed as _keyed_noise_seed

            noise_seed = _keyed_noise_seed(int(gen.seed))
        else:
            import secrets

            noise_seed = secrets.randbits(63)
        g_noise = torch.Generator().manual_seed(noise_seed)
        noise_std = sigma * self.max_grad_norm
        n_params = sum(p.numel() for p in clipper.params)
        noise_buf = torch.empty(n_params, dtype=clipper.params[0].dtype)  # reused: no allocation per step
        steps, losses, max_chunk = 0, [], 0
        clipped_frac: list[float] = []
        probe = self.mechanism_probe  # mechanism probe
        if probe is not None:
            probe.start(list(clipper.params), q, sigma, self.max_grad_norm, expected_batch)
        clipper.attach()
        try:
            with progress_bar(f"DP-SGD {gen.name}", total=gen.epochs, enabled=progress) as advance:
                for epoch in range(gen.epochs):
                    for name in gen.trained_modules():
                        getattr(gen, name).train()
                    total, nb = 0.0, 0
                    if not self.poisson_sampling:
                        perm = torch.randperm(n, generator=g_sample)
                    for b in range(steps_per_epoch):
                        if self.poisson_sampling:
                            idx = torch.nonzero(torch.rand(n, generator=g_sample) < q).squeeze(1)
                        else:
                            idx = perm[b * batch_size:(b + 1) * batch_size]
                        batch = tuple(t[idx] for t in tensors)
                        size = len(idx)
                        loss_sum = 0.0
                        for start in range(0, size, physical):
                            chunk = tuple(t[start:start + physical] for t in batch)
                            with clipper.record():
                                loss = gen.batch_loss(chunk)
                            if not torch.isfinite(loss):
                                raise GeneratorError(f"{gen.name}: loss became {float(loss)} at step {steps}; lower the learning rate")
                            norms = clipper.backward_and_clip(loss, len(chunk[0]))
                            clipped_frac.append(float((norms > self.max_grad_norm).float().mean()))
                            loss_sum += float(loss.detach()) * len(chunk[0])
                            max_chunk = max(max_chunk, len(chunk[0]))
                        summed = clipper.take_clipped_sum()
                        if probe is not None:  # mechanism probe: sees (and may add to) the clipped sum
                            probe.before_noise(steps, idx, summed)
                        for opt_name in modules:
                            optimizers[opt_name].zero_grad(set_to_none=True)
                        with torch.no_grad():
                            # One draw for all parameters (fewer dispatches), added in place to the clipped
                            # sums the clipper hands over: grad = (sum_i clip(g_i) + N(0, sigma^2 C^2)) / E[B].
                            noise = noise_buf.normal_(generator=g_noise)
                            offset = 0
                            for p, s in summed.items():
                                k = p.numel()
                                s.add_(noise[offset:offset + k].view_as(s), alpha=noise_std).div_(expected_batch)
                                offset += k
                                p.grad = s
                        if probe is not None:  # mechanism probe: sees the released noisy update
                            probe.after_noise(steps, summed)
                        for opt_name in modules:
                            optimizers[opt_name].step()
                        for p in summed:
                            p.grad = None
                        steps += 1
                        if size == 0:
                            continue  # all-noise update released, as the accounting assumes
                        gen.after_private_step(batch, optimizers)
                        total += loss_sum / size
                        nb += 1
                    gen.on_epoch_end(epoch)
                    losses.append(total / max(nb, 1))
                    advance(1, f"loss {losses[-1]:.4f}  σ={sigma:.3g}")
        finally:
            clipper.detach()
        epsilon = compute_epsilon(q, sigma, steps, delta, self.accountant)
        return self._report(gen, n, q, expected_batch, sigma, steps, delta, epsilon, modules, mode, losses,
                            opacus.__version__, physical=min(physical, max(max_chunk, 1)),
                            clipped_fraction=float(np.mean(clipped_frac)) if clipped_frac else None)

    def _report(self, gen, n, q, expected_batch, sigma, steps, delta, epsilon, modules, mode, losses, opacus_version,
                physical=None, clipped_fraction=None) -> dict[str, Any]:
        if mode == "opacus":
            noise_source = "opacus secure RNG (torchcsprng)" if self.secure_mode else "torch global RNG seeded from the run seed"
        elif self.reproducible_noise:
            noise_source = ("torch MT19937 seeded by HMAC-SHA256(secret key, run seed): reproducible by the key holder, "
                            "not regenerable from the ledger")
        else:
            noise_source = "torch MT19937 with a secret random seed (not recorded)"
        return {
            "private": True,
            "mechanism": "DP-SGD (Poisson-subsampled Gaussian)" if self.poisson_sampling
            else "DP-SGD (shuffled fixed-size batches, Gaussian; Poisson accounting does not apply)",
            "dataset_size": n,
            "sampling": "poisson" if self.poisson_sampling else "shuffle",
            "sample_rate": float(q),
            "expected_batch_size": float(expected_batch),
            "noise_multiplier": float(sigma),
            "max_grad_norm": float(self.max_grad_norm),
            "epochs": gen.epochs,
            "steps": steps,
            "delta": delta,
            "accountant": self.accountant,
            "target_epsilon": self.target_epsilon,
            "epsilon": float(epsilon),
            "private_modules": list(modules),
            "private_layers": _layer_types(modules),
            "grad_sample_mode": mode,
            "max_physical_batch_size": physical,
            "gradient_accumulation_steps": 1,
            "secure_mode": self.secure_mode,
            "noise_source": noise_source,
            "clipped_fraction": clipped_fraction,
            "final_loss": losses[-1] if losses else None,
            "opacus_version": opacus_version,
        }

    # -- stock opacus (reference; secure_mode) ----------------------------------------------------
    def _train_opacus(self, gen: TorchGenerator, data: Dataset, progress: bool) -> dict[str, Any]:
        import opacus
        import torch
        from opacus import PrivacyEngine
        from opacus.utils.batch_memory_manager import BatchMemoryManager
        from torch.utils.data import DataLoader, TensorDataset

        from genguard.guardrails.privacy.accounting import compute_epsilon

        n = len(data)
        delta = resolve_delta(self.delta, n)
        modules = self._private(gen)
        if len(modules) != 1:
            raise PrivacyError(f"{gen.name}: grad_sample_mode='opacus' supports one private module, got {list(modules)}; "
                               "use grad_sample_mode='auto'")
        (pname, module), = modules.items()
        tensors = gen.train_tensors(data)
        optimizers = gen.make_optimizers()
        loader = DataLoader(TensorDataset(*tensors), batch_size=gen.batch_size, shuffle=not self.poisson_sampling,
                            generator=torch.Generator().manual_seed(gen.seed))
        steps_per_epoch = len(loader)
        q = 1.0 / steps_per_epoch if self.poisson_sampling else gen.batch_size / n
        sigma = self._calibrate(q, steps_per_epoch * gen.epochs, delta)
        acc = "rdp" if self.accountant == "pld" else self.accountant  # opacus has no PLD; epsilon recomputed below
        engine = PrivacyEngine(accountant=acc, secure_mode=self.secure_mode)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ss]ecure.*RNG.*")
            warnings.filterwarnings("ignore", message=".*Full backward hook.*")
            wrapped, dp_opt, dp_loader = engine.make_private(
                module=module, optimizer=optimizers[pname], data_loader=loader, noise_multiplier=sigma,
                max_grad_norm=self.max_grad_norm, poisson_sampling=self.poisson_sampling, grad_sample_mode="hooks",
            )
        setattr(gen, pname, wrapped)
        optimizers = dict(optimizers)
        optimizers[pname] = dp_opt
        physical = int(self.max_physical_batch_size or gen.batch_size * 4)
        steps, losses = 0, []
        try:
            with progress_bar(f"DP-SGD {gen.name} (opacus)", total=gen.epochs, enabled=progress) as advance:
                for epoch in range(gen.epochs):
                    for name in gen.trained_modules():
                        getattr(gen, name).train()
                    total, nb = 0.0, 0
                    with BatchMemoryManager(data_loader=dp_loader, max_physical_batch_size=physical,
                                            optimizer=dp_opt) as mem_loader:
                        for batch in mem_loader:
                            dp_opt.zero_grad(set_to_none=True)
                            empty = len(batch[0]) == 0
                            loss = gen.batch_loss(tuple(batch))
                            if not empty and not torch.isfinite(loss):
                                raise GeneratorError(f"{gen.name}: loss became {float(loss)} at step {steps}; lower the learning rate")
                            loss.backward()
                            dp_opt.step()
                            if dp_opt._is_last_step_skipped:
                                continue  # a physical chunk of a larger logical batch: no noise, no step yet
                            steps += 1
                            if empty:
                                continue
                            gen.after_private_step(tuple(batch), optimizers)
                            total += float(loss.detach())
                            nb += 1
                    gen.on_epoch_end(epoch)
                    losses.append(total / max(nb, 1))
                    advance(1, f"loss {losses[-1]:.4f}  σ={sigma:.3g}")
        finally:
            setattr(gen, pname, unwrap_module(wrapped))
        epsilon = compute_epsilon(q, sigma, steps, delta, self.accountant)
        return self._report(gen, n, q, dp_opt.expected_batch_size, sigma, steps, delta, epsilon, modules, "opacus",
                            losses, opacus.__version__, physical=physical)
