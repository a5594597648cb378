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

Randomness: the Poisson masks and the Gaussian noise of every mode are drawn
from generators seeded by ``secrets`` afresh for each run; nothing in the
ledger, the report or the run seed determines them (amplification by
subsampling assumes the adversary does not know which steps hold a record, and
the Gaussian mechanism assumes the noise is unknown). ``reproducible=True`` is
the explicit opt-in to keyed randomness: HMAC-SHA256 of the run seed under a
secret key kept 0600 in the key directory, so the key holder can rerun a
release, and two releases with the same key and seed share their batches and
noise (never publish both).

Before training the trainer refuses what breaks per-record sensitivity, each
refusal saying how to fix it (:meth:`PrivateTrainer.preflight`): modules that
mix records in a forward pass (any BatchNorm, norms with running statistics,
buffers that change in a private forward), parameters outside the private
modules that receive a gradient from ``batch_loss``, a loss that is a sum
rather than a mean over records, state computed from the data in ``build()``
that the generator does not declare, and trained modules that would not be
saved.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import secrets
import warnings
from typing import Any

import numpy as np

from genguard.generators.base import Dataset, GeneratorError, TorchGenerator, progress_bar, unwrap_module
from genguard.guardrails.privacy.errors import PrivacyError

#: Default delta; it must also stay below 1/n (see :func:`resolve_delta`).
DEFAULT_DELTA = 1e-5
ACCOUNTANTS = ("rdp", "prv", "pld")
GRAD_SAMPLE_MODES = ("auto", "ghost", "hooks", "functorch", "opacus")

#: Below this fraction of clipped per-sample gradients, with a mean norm under LOW_NORM_RATIO * C, the
#: noise (std sigma * C) swamps the signal; the report warns.
LOW_CLIPPED_FRACTION = 0.01
LOW_NORM_RATIO = 0.1
#: Records in the one-off probe that checks the loss is a mean over records (a sum scales with the batch).
PROBE_BATCH = 16
PROBE_SINGLES = 5

__all__ = ["DEFAULT_DELTA", "PrivacyError", "PrivateTrainer", "resolve_delta", "validate_private_module"]


def resolve_delta(delta: float | None, n: int) -> float:
    """The delta to use for ``n`` private records: default 1e-5, and never >= 1/n.

    With no delta given and ``n >= 100,000``, 1e-5 would not be below 1/n, so
    the largest power of ten not above ``1/(10 n)`` is used instead (the delta is
    published, and 1/(10 n) would publish n). An explicit delta >= 1/n is refused: it
    would allow releasing a whole record outright.
    """
    if n <= 0:
        raise PrivacyError("the private data set is empty")
    if delta is None:
        if DEFAULT_DELTA < 1.0 / n:
            return DEFAULT_DELTA
        # 1/(10 n) itself would publish n; the power of ten at or below it is a smaller (stronger) delta
        # that only tells n's order of magnitude. sigma and epsilon are computed for this delta.
        return 10.0 ** math.floor(math.log10(1.0 / (10.0 * n)))
    if not (0.0 < delta < 1.0):
        raise PrivacyError(f"delta must lie in (0, 1), got {delta}")
    if delta >= 1.0 / n:
        raise PrivacyError(f"delta={delta:g} is not below 1/n = {1.0 / n:.3g} for n={n} records; choose delta < 1/n")
    return float(delta)


def validate_private_module(module: Any, where: str) -> None:
    """Refuse modules that break the per-sample analysis, saying how to fix them.

    Opacus' validator only looks at layers with trainable parameters; a BatchNorm with
    ``affine=False`` or frozen weights, or an InstanceNorm with running statistics, mixes
    records (or saves their statistics) just the same, so those are refused here too.
    """
    from opacus.validators import ModuleValidator
    from torch import nn
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.instancenorm import _InstanceNorm

    mixing = []
    for sub, layer in module.named_modules():
        label = f"{where}.{sub}" if sub else where
        if isinstance(layer, (_BatchNorm, nn.SyncBatchNorm)):
            mixing.append(f"{label} ({type(layer).__name__}) normalises over the batch, so one record moves every "
                          "other record's output")
        elif isinstance(layer, _InstanceNorm) and layer.track_running_stats:
            mixing.append(f"{label} ({type(layer).__name__}, track_running_stats=True) saves running statistics "
                          "of the private data")
    if mixing:
        raise PrivacyError(
            f"{where} cannot be trained with DP-SGD: {'; '.join(mixing)}. Replace it with GroupNorm/LayerNorm "
            "(opacus.validators.ModuleValidator.fix(model) does this), or InstanceNorm with track_running_stats=False")
    errors = ModuleValidator.validate(module, strict=False)
    if errors:
        reasons = "; ".join(sorted({str(e) for e in errors}))
        raise PrivacyError(
            f"{where} cannot be trained with DP-SGD: {reasons}. Replace BatchNorm with GroupNorm/LayerNorm "
            "(opacus.validators.ModuleValidator.fix(model) does this) and register grad samplers for custom layers."
        )


def _generator_modules(gen: TorchGenerator) -> dict[str, Any]:
    """Every torch module held as an attribute of ``gen`` (name -> module, unwrapped, each once)."""
    from torch import nn

    out, seen = {}, set()
    for name, value in vars(gen).items():
        if isinstance(value, nn.Module):
            value = unwrap_module(value)
            if id(value) not in seen:
                seen.add(id(value))
                out[name] = value
    return out


def _snapshot_build(gen: TorchGenerator) -> tuple[dict[str, Any], Any]:
    """Digests of what ``save`` would write (saved tensors, extra state): small, so two builds can be compared
    without holding two copies of the weights."""
    import hashlib
    import json

    from genguard.generators._io import jsonable as _jsonable

    tensors = {k: (v.shape, str(v.dtype), hashlib.sha256(np.ascontiguousarray(v).tobytes()).digest())
               for k, v in gen._state_tensors().items()}
    extra = json.dumps(_jsonable(gen._extra_state()), sort_keys=True, default=str)
    return tensors, extra


def _layer_types(modules: dict[str, Any]) -> list[str]:
    from genguard.guardrails.privacy.clipping import parametrised_layers

    return sorted({type(layer).__name__ for _, layer in parametrised_layers(modules)})


#: The accountant of a full-batch, one-shot Gaussian release (exact there; refuses subsampled DP-SGD).
RELEASE_ACCOUNTANT = "analytic"


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

    ``reproducible``: by default batches and noise come from a fresh secret seed
    (``secrets``) per run, so two runs differ even with the same seed. With
    ``reproducible=True`` both are keyed by HMAC-SHA256(secret key, run seed)
    (key 0600 in the key directory): the same seed and key give the same
    release, and the ledger says so, with the caveat that two releases sharing
    key and seed (e.g. on neighbouring data) must not both be published.

    Post-processing (``after_private_step``) is called once per step, empty
    batches included, with ``batch=None``: it sees nothing of the private batch,
    not its records, labels or realised size.

    The report (ledger, ``report.json``) holds only the mechanism's parameters. Figures computed
    from the private data without noise (the training loss, the clipped fraction, the mean
    per-sample norm, and the clipping warning they trigger) would each tell neighbouring data sets
    apart; they stay with the operator in ``diagnostics_`` and a ``RuntimeWarning``, never published.
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
    reproducible: bool = False
    #: A public stand-in for the number of records (a round figure or bound published with the data set, never
    #: computed from it). Without it the batches per epoch, hence the sample rate q = 1 / ceil(n / batch_size), the
    #: step count and the noise multiplier are functions of the private n, and the ledger publishes ceil(n / B): two
    #: neighbouring data sets either side of a multiple of B give different ledgers. With it, q, the steps, the
    #: default delta and the E[B] that divides the noised sum all come from ``public_size`` (Poisson sampling at a
    #: fixed q is DP whatever the real n). Genguard engine with Poisson sampling only.
    public_size: int | None = None
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
        if self.public_size is not None:
            if isinstance(self.public_size, bool) or not isinstance(self.public_size, int) or self.public_size < 1:
                raise PrivacyError(f"public_size must be a positive whole number of records, got {self.public_size!r}")
            if not self.poisson_sampling or self.secure_mode or self.grad_sample_mode == "opacus":
                raise PrivacyError("public_size needs Poisson sampling on the genguard engine (fixed-size shuffled "
                                   "batches, and opacus' loader, size their batches from the real data)")
        if self.secure_mode and self.reproducible:
            raise PrivacyError("secure_mode draws batches and noise from opacus' torchcsprng, which cannot be keyed; "
                               "choose secure_mode or reproducible, not both")
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

    def _randomness(self, gen: TorchGenerator, rank: int = 0, world_size: int = 1) -> tuple[Any, Any, dict[str, str]]:
        """``(sampling generator, noise generator, {"sampling": S, "noise": N})`` for one run (on one rank).

        ``secret``: a fresh 64-bit seed from the OS CSPRNG (``secrets``), recorded nowhere. ``keyed``: the
        seed is HMAC-SHA256 of the run seed under the secret key (0600); reproducible by the key holder,
        not from the ledger, and shared by every run with the same key and seed. Under torch.distributed
        each rank samples its shard from a stream of its own (one shared stream would put the records at
        the same place of every shard in the same batches); only rank 0's noise stream is ever drawn.
        """
        import torch

        if self.reproducible:
            from genguard.guardrails.privacy.signing import noise_seed as keyed_seed

            sampling = "sampling" if world_size == 1 else f"sampling/rank {rank} of {world_size}"
            seeds = keyed_seed(int(gen.seed), purpose=sampling), keyed_seed(int(gen.seed), purpose="noise")
            kind = "keyed"
        else:
            seeds = secrets.randbits(64), secrets.randbits(64)
            kind = "secret"
        g_sample, g_noise = (torch.Generator().manual_seed(s) for s in seeds)
        return g_sample, g_noise, {"sampling": kind, "noise": kind}

    @staticmethod
    def data_caveat(data: Dataset) -> str | None:
        """What the data set's own schema reveals outside the mechanism (None when it is public).

        A label vocabulary read from the data (an image folder's sub-folder names) is saved with the
        model: one record alone in its class is named there whatever the noise.
        """
        source = (getattr(data, "metadata", None) or {}).get("label_names_from_data")
        if not source:
            return None
        return (f"the label names ({source}) were read from the training data and are saved with the model: "
                "the guarantee holds given them (a class with a single record is revealed by its name)")

    def calibrate_release(self, target_epsilon: float, delta: float) -> tuple[float, float, str]:
        """``(noise multiplier, epsilon, accountant)`` of one full-batch Gaussian release meeting ``target_epsilon``.

        For a generator that releases its own Gaussian mechanism once on the whole data set (DP-MERF). There
        is no subsampling to account for, so the release is calibrated with :data:`RELEASE_ACCOUNTANT`, the
        mechanism's exact privacy curve, whichever accountant was chosen for DP-SGD (for which that curve
        does not hold); ``privacy verify`` recomputes the claim with PRV and PLD as well.
        """
        from genguard.guardrails.privacy.accounting import compute_epsilon, noise_multiplier_for_epsilon

        sigma = noise_multiplier_for_epsilon(target_epsilon, 1.0, 1, delta, RELEASE_ACCOUNTANT)
        return sigma, compute_epsilon(1.0, sigma, 1, delta, RELEASE_ACCOUNTANT), RELEASE_ACCOUNTANT

    def noise_generator(self, gen: Any) -> tuple[Any, str]:
        """``(torch.Generator, "secret" | "keyed")`` for a generator that releases its own Gaussian
        mechanism (DP-MERF): the same secret-by-default, keyed-on-request rule as DP-SGD's noise."""
        _, g_noise, randomness = self._randomness(gen)
        return g_noise, randomness["noise"]

    def _private(self, gen: TorchGenerator, optimizers: dict[str, Any] | None = None) -> dict[str, Any]:
        if hasattr(gen, "check_private_training"):
            gen.check_private_training()  # the generator's own refusal (e.g. a GAN's gradient penalty)
        names = tuple(gen.private_modules())
        if not names:
            raise PrivacyError(f"{gen.name}: private_modules() names no module; nothing to train privately")
        trained = tuple(gen.trained_modules())
        missing = [m for m in names if m not in trained]
        if missing:
            raise PrivacyError(f"{gen.name}: private module(s) {missing} are not in trained_modules(), so their "
                               "weights would not be saved; list them in trained_modules()")
        if optimizers is not None:
            saved = set(trained) | set(gen.extra_modules())
            unsaved = sorted(set(optimizers) - saved)
            if unsaved:
                raise PrivacyError(
                    f"{gen.name}: make_optimizers() trains {unsaved}, which trained_modules() does not list, so "
                    f"they would be trained but missing from the saved weights; add them to trained_modules() "
                    f"(now {list(trained)})")
        modules = {}
        for name in names:
            module = getattr(gen, name, None)
            if module is None:
                raise PrivacyError(f"{gen.name}: private module {name!r} does not exist after build()")
            validate_private_module(module, f"{gen.name}.{name}")
            modules[name] = module
        return modules

    def _module_roles(self, gen: TorchGenerator, modules: dict[str, Any]) -> dict[str, list[str]]:
        trained = list(gen.trained_modules())
        return {"trained_modules": trained, "private_modules": list(modules),
                "post_processing_modules": [m for m in trained if m not in modules]}

    def check_build_state(self, gen: TorchGenerator, data: Dataset) -> str | None:
        """Refuse state that ``build()`` computes from the private data unless the generator declares it.

        Two fresh copies are built under the same seeds, on the data and on its second half; any saved
        tensor or extra state that differs was computed from the records outside DP-SGD. A generator
        declares such state with ``declared_data_state()`` (a sentence, then a caveat in the ledger).
        Returns the caveat, or None.
        """
        import torch

        declared = gen.declared_data_state() if hasattr(gen, "declared_data_state") else None
        if declared or len(data) < 2:
            return declared or None
        torch_state, np_state = torch.get_rng_state(), np.random.get_state()
        snaps = []
        # One fresh secret seed for both probe builds: only the data differ between them, and nothing
        # about the probes follows from the published run seed.
        probe_seed = secrets.randbits(31)
        try:
            for part in (data, data.subset(np.arange(len(data) // 2, len(data)))):
                # A deep copy without the built modules (build() makes its own): one extra model at a time.
                memo = {id(m): None for m in vars(gen).values() if isinstance(m, torch.nn.Module)}
                probe = copy.deepcopy(gen, memo)
                torch.manual_seed(probe_seed)
                np.random.seed(probe_seed)
                probe.build(part)
                snaps.append(_snapshot_build(probe))
                del probe
        finally:
            torch.set_rng_state(torch_state)
            np.random.set_state(np_state)
        (ta, ea), (tb, eb) = snaps
        changed = sorted(k for k in set(ta) | set(tb) if ta.get(k) != tb.get(k))
        if ea != eb:
            changed.append("extra state (_extra_state())")
        if changed:
            raise PrivacyError(
                f"{gen.name}.build() computes saved state from the private data outside DP-SGD ({', '.join(changed[:5])}"
                f"{', ...' if len(changed) > 5 else ''}): compute it from public information (the data's schema, "
                "fixed constants) or from a DP release, or declare it by returning a sentence from "
                "declared_data_state(); the guarantee then carries it as a caveat in the ledger")
        return None

    def preflight(self, gen: TorchGenerator, clipper: Any, tensors: tuple[Any, ...], modules: dict[str, Any]) -> None:
        """One probe forward/backward on the first records, before any step, that refuses:

        * a buffer anywhere in the generator that changes during ``batch_loss`` (running statistics,
          counters, caches of the private data);
        * a parameter outside the private modules that gets a gradient from ``batch_loss`` (it would be
          updated from raw, unclipped, unnoised gradients);
        * a loss that is not a mean over records: the per-sample gradient of a record repeated
          ``PROBE_BATCH`` times must not be ``PROBE_BATCH`` times its gradient alone.

        Nothing of the probe is released: its clipped sum is discarded and the torch/numpy RNGs restored.
        """
        import torch

        everything = _generator_modules(gen)
        private_params = {id(p) for m in modules.values() for p in unwrap_module(m).parameters()}
        outside = [(f"{name}.{pn}", p) for name, m in everything.items() for pn, p in m.named_parameters()
                   if id(p) not in private_params and p.requires_grad]
        outside += [(name, p) for name, p in vars(gen).items()
                    if isinstance(p, torch.nn.Parameter) and id(p) not in private_params and p.requires_grad]
        for _, p in outside:
            p.grad = None
        before = {f"{name}.{bn}": b.detach().clone() for name, m in everything.items() for bn, b in m.named_buffers()}
        torch_state, np_state = torch.get_rng_state(), np.random.get_state()
        try:
            dup = tuple(t[[0] * PROBE_BATCH] for t in tensors)
            with clipper.record():
                loss = gen.batch_loss(dup)
            changed = [k for k, b in before.items() if not _same_buffer(b, _buffer(everything, k))]
            if changed:
                raise PrivacyError(
                    f"{gen.name}: buffer(s) {changed[:5]} change during batch_loss on private data (running "
                    "statistics or state that mixes records and is saved outside DP-SGD): use GroupNorm/LayerNorm "
                    "instead of BatchNorm, track_running_stats=False, or keep such state out of the modules")
            norms_dup = clipper.backward_and_clip(loss, PROBE_BATCH)
            leaked = [name for name, p in outside if p.grad is not None and bool(p.grad.abs().sum() > 0)]
            for _, p in outside:
                p.grad = None
            if leaked:
                raise PrivacyError(
                    f"{gen.name}: parameter(s) {leaked[:5]} outside the private modules {list(modules)} receive a "
                    "gradient from batch_loss, so they would learn from raw private gradients: add their module to "
                    "private_modules(), or detach what they compute (torch.no_grad() / .detach()) in batch_loss")
            singles = []
            for _ in range(PROBE_SINGLES):  # a median over calls: losses that draw noise per call vary
                with clipper.record():
                    loss1 = gen.batch_loss(tuple(t[:1] for t in tensors))
                singles.append(float(clipper.backward_and_clip(loss1, 1)[0]))
            norm1 = float(np.median(singles))
            clipper.take_clipped_sum()  # discarded: the probe releases nothing
            ratio = float(norms_dup.median()) / norm1 if norm1 > 1e-12 else 1.0
            if ratio > math.sqrt(PROBE_BATCH):
                raise PrivacyError(
                    f"{gen.name}: batch_loss is not a mean over records (a record's gradient grew x{ratio:.1f} in a "
                    f"batch of {PROBE_BATCH}; a sum grows x{PROBE_BATCH}): per-sample clipping assumes a mean, so "
                    "return loss.mean() over the records, not loss.sum()")
        finally:
            torch.set_rng_state(torch_state)
            np.random.set_state(np_state)
            for lay in clipper.layers:
                lay.acts.clear()
                lay.grads.clear()

    def train(self, gen: TorchGenerator, data: Dataset, progress: bool = True) -> dict[str, Any]:
        mode = self.grad_sample_mode
        if mode == "auto":
            mode = "opacus" if self.secure_mode else "ghost"
        from genguard.guardrails.privacy import distributed

        distributed.init_from_env()
        if distributed.world()[1] > 1:
            distributed.check_supported(self.poisson_sampling, mode)
        caveat = _join_caveats(self.check_build_state(gen, data), self.data_caveat(data))
        if mode == "opacus":
            if self.mechanism_probe is not None:  # mechanism probe: the fast path only
                raise PrivacyError("a mechanism probe (white-box audit, conformance check) needs the genguard engine, "
                                   "not grad_sample_mode='opacus'")
            report = self._train_opacus(gen, data, progress)
        else:
            report = self._train_fast(gen, data, progress, mode)
        if self.reproducible:
            keyed = ("batches and noise are keyed by HMAC-SHA256(secret key, run seed) for reproducibility: "
                     "two releases trained with the same key and seed share them, and must not both be published")
            caveat = f"{caveat}; {keyed}" if caveat else keyed
        if caveat:
            report["caveat"] = caveat
        return report

    def _noisy_step(self, summed: dict[Any, Any], noise: Any, noise_std: float, expected_batch: float) -> None:
        """The released update of one logical batch: ``p.grad = (sum_i clip(g_i) + N(0, sigma^2 C^2)) / E[B]``.

        ``summed`` maps each private parameter to its clipped sum (modified in place); ``noise`` is one
        standard-normal draw for all parameters together (fewer dispatches). The only place where the
        private data meet the noise.
        """
        import torch

        with torch.no_grad():
            offset = 0
            for p, s in summed.items():
                k = p.numel()
                s.add_(noise[offset:offset + k].view_as(s), alpha=noise_std).div_(expected_batch)
                offset += k
                p.grad = s

    # -- the genguard engine ---------------------------------------------------------------------
    def _train_fast(self, gen: TorchGenerator, data: Dataset, progress: bool, mode: str) -> dict[str, Any]:
        import opacus
        import torch

        from genguard.guardrails.privacy import distributed
        from genguard.guardrails.privacy.accounting import compute_epsilon
        from genguard.guardrails.privacy.clipping import PerSampleClipper

        rank, world_size, backend = distributed.world()
        n = len(data)
        # the size every published figure is computed from: the public stand-in when given, else the private n
        size = int(self.public_size) if self.public_size is not None else n
        delta = resolve_delta(self.delta, size)
        if delta >= 1.0 / n:  # the operator's own check (raised here, never published)
            raise PrivacyError(f"delta {delta:.3g} is not below 1/n for the {n:,} private records: give a smaller "
                               "delta or a public_size nearer the real count")
        optimizers = gen.make_optimizers()
        modules = self._private(gen, optimizers)
        tensors = tuple(gen.train_tensors(data))
        if any(len(t) != n for t in tensors):
            raise PrivacyError(f"{gen.name}: train_tensors() returned tensors of unequal length for {n} records")
        batch_size = int(gen.batch_size)
        # opacus' convention (DPDataLoader): q = 1 / (batches per epoch), expected batch q * n.
        steps_per_epoch = max(1, math.ceil(size / batch_size))
        q = 1.0 / steps_per_epoch
        planned = steps_per_epoch * int(gen.epochs)
        sigma = self._calibrate(q, planned, delta)
        expected_batch = q * size
        physical = int(self.max_physical_batch_size or max(batch_size, 1) * 4)
        clipper = PerSampleClipper(modules, self.max_grad_norm, mode)
        if world_size > 1 and self.reproducible and rank != 0:
            torch.distributed.barrier()  # rank 0 creates the secret key first: one key, not one per rank
        g_sample, g_noise, randomness = self._randomness(gen, rank, world_size)
        if world_size > 1 and self.reproducible and rank == 0:
            torch.distributed.barrier()
        mine = distributed.shard(n, rank, world_size) if world_size > 1 else None
        trained = [getattr(gen, name) for name in gen.trained_modules()]
        if world_size > 1:
            distributed.broadcast_state(trained)  # every replica starts from rank 0's weights
        noise_std = sigma * self.max_grad_norm
        n_params = sum(p.numel() for p in clipper.params)
        noise_buf = torch.empty(n_params, dtype=clipper.params[0].dtype)  # reused: no allocation per step
        steps, losses = 0, []
        clipped_frac: list[float] = []
        norm_sum, norm_count = 0.0, 0
        probe = self.mechanism_probe  # mechanism probe
        if probe is not None:
            probe.start(list(clipper.params), q, sigma, self.max_grad_norm, expected_batch)
        clipper.attach()
        try:
            for name in gen.trained_modules():
                getattr(gen, name).train()
            self.preflight(gen, clipper, tensors, modules)
            with progress_bar(f"DP-SGD {gen.name}", total=gen.epochs, enabled=progress) as advance:
                for epoch in range(gen.epochs):
                    for name in gen.trained_modules():
                        getattr(gen, name).train()
                    total, nb = 0.0, 0
                    if not self.poisson_sampling:
                        perm = torch.randperm(n, generator=g_sample)
                    for b in range(steps_per_epoch):
                        if mine is not None:  # this rank's part of the Poisson batch: its shard, at the global q
                            idx = mine[torch.rand(len(mine), generator=g_sample) < q]
                        elif self.poisson_sampling:
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
                            norm_sum += float(norms.sum())
                            norm_count += len(norms)
                            loss_sum += float(loss.detach()) * len(chunk[0])
                        summed = clipper.take_clipped_sum()
                        if world_size > 1:
                            self._distributed_step(summed, noise_buf, g_noise, noise_std, expected_batch, rank,
                                                   probe, steps, idx, optimizers, modules)
                        else:
                            if probe is not None:  # mechanism probe: sees (and may add to) the clipped sum
                                probe.before_noise(steps, idx, summed)
                            for opt_name in modules:
                                optimizers[opt_name].zero_grad(set_to_none=True)
                            self._noisy_step(summed, noise_buf.normal_(generator=g_noise), noise_std, expected_batch)
                            if probe is not None:  # mechanism probe: sees the released noisy update
                                probe.after_noise(steps, summed)
                        for opt_name in modules:
                            optimizers[opt_name].step()
                        for p in summed:
                            p.grad = None
                        steps += 1
                        # Post-processing runs every step (an empty batch still releases a noisy update) and
                        # sees nothing of the batch: not its records, labels or realised size.
                        gen.after_private_step(None, optimizers)
                        if world_size > 1:
                            # post-processing may draw randomness a rank's batch has desynchronised: rank 0's
                            # replica is the model; the others follow it
                            distributed.broadcast_state(trained)
                        if size:
                            total += loss_sum / size
                            nb += 1
                    gen.on_epoch_end(epoch)
                    losses.append(total / max(nb, 1))
                    advance(1, f"loss {losses[-1]:.4f}  σ={sigma:.3g}")
        finally:
            clipper.detach()
        epsilon = compute_epsilon(q, sigma, steps, delta, self.accountant)
        clipped = float(np.mean(clipped_frac)) if clipped_frac else None
        mean_norm = norm_sum / norm_count if norm_count else None
        report = self._report(gen, n, q, expected_batch, sigma, steps, delta, epsilon, modules, mode, losses,
                              # the configured cap, never the largest realised batch (a statistic of the secret masks)
                              opacus.__version__, physical=physical, randomness=randomness,
                              clipped_fraction=clipped, mean_norm=mean_norm)
        report["distributed"] = {"world_size": world_size, "backend": backend, "noise_draws_per_step": 1}
        return report

    def _distributed_step(self, summed, noise_buf, g_noise, noise_std, expected_batch, rank, probe, step, idx,
                          optimizers, modules) -> None:
        """One logical step over all ranks: rank 0 adds the one noise draw to its clipped sum, ``all_reduce``
        adds every rank's sum to it, and each rank sets the same released update ``(sum + noise) / E[B]``."""
        import torch

        from genguard.guardrails.privacy import distributed

        if probe is not None:
            # mechanism probe (audits only; set on every rank or on none): rank 0 sees the clean global sum and
            # whatever it adds to it enters the release once, through rank 0's share
            clean = {p: s.clone() for p, s in summed.items()}
            distributed.sum_across_ranks(clean.values())
            if rank == 0:
                before = {p: s.clone() for p, s in clean.items()}
                probe.before_noise(step, idx, clean)
                for p, s in summed.items():
                    s.add_(clean[p] - before[p])
        for opt_name in modules:
            optimizers[opt_name].zero_grad(set_to_none=True)
        with torch.no_grad():
            if rank == 0:
                noise_buf.normal_(generator=g_noise)
                offset = 0
                for s in summed.values():
                    k = s.numel()
                    s.add_(noise_buf[offset:offset + k].view_as(s), alpha=noise_std)
                    offset += k
            distributed.sum_across_ranks(summed.values())
            for p, s in summed.items():
                s.div_(expected_batch)
                p.grad = s
        if probe is not None and rank == 0:
            probe.after_noise(step, summed)

    def _report(self, gen, n, q, expected_batch, sigma, steps, delta, epsilon, modules, mode, losses, opacus_version,
                physical=None, clipped_fraction=None, randomness=None, mean_norm=None) -> dict[str, Any]:
        if mode == "opacus" and self.secure_mode:
            noise_source = "opacus secure RNG (torchcsprng) for batches and noise"
        elif self.reproducible:
            noise_source = ("torch MT19937 seeded by HMAC-SHA256(secret key, run seed), one seed for batches and one "
                            "for noise: reproducible by the key holder, not regenerable from the ledger")
        else:
            noise_source = ("torch MT19937 seeded from the OS CSPRNG (secrets), fresh per run and recorded nowhere, "
                            "one seed for batches and one for noise")
        # Unnoised functions of the private data: for the operator only (see the class docstring).
        private_warns = []
        if (clipped_fraction is not None and mean_norm is not None and clipped_fraction < LOW_CLIPPED_FRACTION
                and mean_norm < LOW_NORM_RATIO * self.max_grad_norm):
            msg = (f"per-sample gradient norms (mean {mean_norm:.3g}) lie far below the clipping norm "
                   f"C={self.max_grad_norm:g} and {100 * clipped_fraction:.1f}% were clipped: the noise "
                   f"(std sigma*C = {sigma * self.max_grad_norm:.3g}) swamps the signal; lower max_grad_norm "
                   "towards the typical norm")
            private_warns.append({"code": "CLIPPING_NORM_TOO_LARGE", "message": msg})
            warnings.warn(f"{gen.name}: {msg}", RuntimeWarning, stacklevel=3)
        # n, E[B] = q n and the epoch count tell n, and epsilon is for add/remove-one neighbours, so n alone
        # would say whether a record was in: they stay here, with the operator, and are never published.
        self.diagnostics_ = {"dataset_size": n, "expected_batch_size": float(expected_batch), "epochs": gen.epochs,
                             "clipped_fraction": clipped_fraction, "mean_per_sample_norm": mean_norm,
                             "losses": list(losses), "warnings": private_warns,
                             "note": "computed from the private data without noise: not for publication"}
        warns: list[dict[str, str]] = []  # published warnings may depend only on public settings
        return {
            "private": True,
            "mechanism": "DP-SGD (Poisson-subsampled Gaussian)" if self.poisson_sampling
            else "DP-SGD (shuffled fixed-size batches, Gaussian; Poisson accounting does not apply)",
            "sampling": "poisson" if self.poisson_sampling else "shuffle",
            "sample_rate": float(q),
            "noise_multiplier": float(sigma),
            "max_grad_norm": float(self.max_grad_norm),
            "steps": steps,
            "delta": delta,
            "accountant": self.accountant,
            "target_epsilon": self.target_epsilon,
            "epsilon": float(epsilon),
            **self._module_roles(gen, modules),
            "private_layers": _layer_types(modules),
            "randomness": dict(randomness or {}),
            "reproducible": bool(self.reproducible),
            "grad_sample_mode": mode,
            "max_physical_batch_size": physical,
            "gradient_accumulation_steps": 1,
            "secure_mode": self.secure_mode,
            "noise_source": noise_source,
            "warnings": warns,
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
        optimizers = gen.make_optimizers()
        modules = self._private(gen, optimizers)
        if len(modules) != 1:
            raise PrivacyError(f"{gen.name}: grad_sample_mode='opacus' supports one private module, got {list(modules)}; "
                               "use grad_sample_mode='auto'")
        (pname, module), = modules.items()
        tensors = tuple(gen.train_tensors(data))
        self._preflight_opacus(gen, tensors, modules)
        # The loader's generator draws opacus' Poisson masks (DPDataLoader keeps it) or the shuffle; the noise
        # generator draws the noise. Both secret (or keyed) as in the fast path; secure_mode replaces both
        # with opacus' torchcsprng generator.
        g_sample, g_noise, randomness = self._randomness(gen)
        if self.secure_mode:
            randomness = {"sampling": "secret", "noise": "secret"}
        loader = DataLoader(TensorDataset(*tensors), batch_size=gen.batch_size, shuffle=not self.poisson_sampling,
                            generator=g_sample)
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
                noise_generator=None if self.secure_mode else g_noise,
            )
        # opacus divides by int(q n); the mechanism is the same for any constant, and q n keeps E[B] = q n
        # exactly as the ledger records it (and as the fast path divides).
        expected_batch = q * n
        dp_opt.expected_batch_size = expected_batch
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
                            gen.after_private_step(None, optimizers)  # post-processing: nothing of the batch
                            if not empty:
                                total += float(loss.detach())
                                nb += 1
                    gen.on_epoch_end(epoch)
                    losses.append(total / max(nb, 1))
                    advance(1, f"loss {losses[-1]:.4f}  σ={sigma:.3g}")
        finally:
            setattr(gen, pname, unwrap_module(wrapped))
        epsilon = compute_epsilon(q, sigma, steps, delta, self.accountant)
        return self._report(gen, n, q, expected_batch, sigma, steps, delta, epsilon, modules, "opacus",
                            losses, opacus.__version__, physical=physical, randomness=randomness)

    def _preflight_opacus(self, gen: TorchGenerator, tensors: tuple[Any, ...], modules: dict[str, Any]) -> None:
        """:meth:`preflight` with a temporary clipper (opacus mode clips inside its own optimizer)."""
        from genguard.guardrails.privacy.clipping import PerSampleClipper

        for name in gen.trained_modules():
            getattr(gen, name).train()
        clipper = PerSampleClipper(modules, self.max_grad_norm, "hooks").attach()
        try:
            self.preflight(gen, clipper, tensors, modules)
        finally:
            clipper.detach()
            for m in modules.values():
                for p in m.parameters():
                    p.grad = None


def _join_caveats(*parts: str | None) -> str | None:
    return "; ".join(p for p in parts if p) or None


def _buffer(modules: dict[str, Any], key: str) -> Any:
    name, _, rest = key.partition(".")
    return dict(modules[name].named_buffers())[rest]


def _same_buffer(before: Any, after: Any) -> bool:
    import torch

    return before.shape == after.shape and bool(torch.equal(before, after.detach()))
