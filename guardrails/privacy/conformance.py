"""The DP conformance check of a torch generator: do its hooks keep DP-SGD's per-record analysis true?

:func:`check_private_training` is the privacy counterpart of scikit-learn's
``check_estimator``. The accounting of :class:`~genguard.guardrails.privacy.PrivateTrainer`
holds only if the generator's hooks keep every record's influence inside the
mechanism (clipped, then noised). Reading a generator's code cannot establish
that; the check tests it empirically, the way an adversary holding the code
would, on a small slice of the data:

* ``private_modules`` — the private modules exist, opacus accepts their
  layers, and none mixes records (BatchNorm in any form, norms with running
  statistics), parametrised or not;
* ``uncovered_parameters`` — no parameter outside the private modules receives
  a gradient from ``batch_loss`` (it would be trained on raw, unclipped data);
* ``record_mixing`` / ``buffers`` — changing one record changes no other
  record's activations in any private module, and a private forward pass
  changes no buffer;
* ``mean_loss`` — ``batch_loss`` is a mean over records (the clipper's
  per-sample gradients assume it; a sum inflates them by the batch size);
* ``sensitivity`` — with q = 1 and the noise taken out, one record blown up
  x1000 moves the clipped sum released to the optimiser by at most 2C (C for
  its own clipped gradient leaving, C for the new one), jointly across all
  private modules;
* ``build_state`` — nothing saved after ``build()`` depends on the data,
  unless the generator declares it (``declared_data_state()``; then it is
  reported as a caveat);
* ``post_processing`` (full check) — neighbouring data sets (one record
  substituted, or removed) with the released update held fixed change nothing
  that is saved: post-processing hooks see no private data, not even the
  batch's size; every module that training changes is saved;
* ``secret_randomness`` (full check) — two trainers configured alike draw
  different batches and different noise, and the noise has the claimed scale.

``fast=True`` runs the checks that need no training run (plus the one-step
sensitivity check): what ``genguard train`` runs before training a generator
that is not a reference one. Every check passes, fails with a coded reason
and a fix, or is reported as not run with the reason.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import random
import secrets
from typing import Any, Callable, Mapping

import numpy as np

from genguard.guardrails.privacy.errors import PrivacyError

#: code -> how to fix it
FIXES: dict[str, str] = {
    "BUILD_FAILED": "make build(data) work on a small slice of the data (32 records)",
    "HOOK_FAILED": "make the generator's training hooks work on a small slice of the data (see the error)",
    "REFUSED": "the private trainer or the generator refused these settings: follow its message",
    "GENERATOR_REFUSES": "choose settings the generator supports under DP-SGD (see its message)",
    "NO_PRIVATE_MODULES": "name the modules that see private data in private_modules()",
    "UNSUPPORTED_LAYER": "replace the layer (opacus.validators.ModuleValidator.fix) or register a grad sampler",
    "RECORD_MIXING_LAYER": "replace BatchNorm / running-statistics norms with GroupNorm or LayerNorm "
                           "(opacus.validators.ModuleValidator.fix), also where they have no parameters",
    "RECORD_MIXING": "compute each record's output from that record alone (no batch statistics, no attention "
                     "across the batch dimension)",
    "BUFFER_UPDATED": "do not update buffers (running statistics, counters) in a forward pass over private data",
    "UNCOVERED_PARAMETER": "put every module whose parameters get a gradient from batch_loss into "
                           "private_modules(), or detach its output inside batch_loss",
    "LOSS_NOT_MEAN": "return the mean over the batch's records from batch_loss (e.g. per_item.mean()), not a sum",
    "SENSITIVITY_EXCEEDED": "keep every record's gradient inside the private modules' parameters and the loss a "
                            "per-record mean, so that clipping bounds each record's influence",
    "BUILD_STATE_DEPENDS_ON_DATA": "compute nothing saved from the private data in build(), or release it "
                                   "through a DP mechanism, or declare it in data_dependent_state (a ledger caveat)",
    "POST_PROCESSING_READS_DATA": "make after_private_step and on_epoch_end use only the private modules' "
                                  "outputs and public inputs (not the batch's records, labels or size)",
    "UNSAVED_TRAINED_MODULE": "list every module that training changes in trained_modules() or extra_modules()",
    "SAMPLING_REPRODUCIBLE": "draw the Poisson masks from a secret source (never from the run seed)",
    "NOISE_REPRODUCIBLE": "draw the noise from a secret source, fresh per run unless reproducibility is opted into",
    "NOISE_SCALE_WRONG": "add N(0, sigma^2 C^2) to the clipped sum, once per step",
}

#: Record-mixing layer types refused in private modules whatever their parameters.
_MIXING_LAYERS = ("_BatchNorm", "SyncBatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LazyBatchNorm1d")

__all__ = ["Check", "ConformanceError", "ConformanceResult", "FIXES", "check_private_training"]


class ConformanceError(PrivacyError):
    """A generator failed :func:`check_private_training`; the message lists the codes and fixes."""


@dataclasses.dataclass(frozen=True)
class Check:
    """One property: ``passed`` True, False (``code`` says why, ``fix`` how to mend it) or None (not run)."""

    name: str
    passed: bool | None
    code: str | None = None
    message: str = ""
    fix: str | None = None
    measured: dict = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ConformanceResult:
    """Every :class:`Check` run on one generator; ``passed`` when none failed."""

    generator: str
    fast: bool
    checks: list[Check]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Check]:
        return [c for c in self.checks if c.passed is False]

    @property
    def codes(self) -> list[str]:
        return [c.code for c in self.failures if c.code]

    def check(self, name: str) -> Check:
        for c in self.checks:
            if c.name == name:
                return c
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {"generator": self.generator, "fast": self.fast, "passed": self.passed, "codes": self.codes,
                "checks": [c.to_dict() for c in self.checks]}

    def summary(self) -> str:
        lines = [f"DP conformance of {self.generator}: {'PASSED' if self.passed else 'FAILED'}"]
        for c in self.checks:
            state = {True: "ok  ", False: "FAIL", None: "skip"}[c.passed]
            lines.append(f"  [{state}] {c.name}" + (f" {c.code}" if c.code else "") + (f": {c.message}" if c.message else ""))
        return "\n".join(lines)

    def raise_for_failures(self) -> "ConformanceResult":
        if self.failures:
            reasons = "; ".join(f"{c.code}: {c.message} (fix: {c.fix})" for c in self.failures)
            raise ConformanceError(f"{self.generator} fails the DP conformance check: {reasons}")
        return self


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def _fail(name: str, code: str, message: str, **measured: Any) -> Check:
    return Check(name, False, code, message, FIXES.get(code), measured)


def _ok(name: str, message: str = "", **measured: Any) -> Check:
    return Check(name, True, None, message, None, measured)


def _skip(name: str, message: str, **measured: Any) -> Check:
    return Check(name, None, None, message, None, measured)


def _clone(gen: Any, **overrides: Any) -> Any:
    params = gen.get_params()
    params.update({k: v for k, v in overrides.items() if k in params})
    return type(gen)(**params)


#: One secret seed per process for every probe copy's initialisation: probes built on neighbouring data sets
#: then differ only by the data, and nothing about them follows from the published run seed.
_PROBE_SEED = secrets.randbits(31)


def _seed(gen: Any) -> None:
    import torch

    torch.manual_seed(_PROBE_SEED)
    np.random.seed(_PROBE_SEED)


def _built(gen: Any, data: Any) -> Any:
    """A fresh copy of ``gen`` built on ``data`` as a private fit builds it."""
    g = _clone(gen)
    _seed(g)
    g.private_fit_ = True
    g.build(data)
    return g


def _all_modules(gen: Any) -> dict[str, Any]:
    from torch import nn

    from genguard.generators.base import unwrap_module

    return {k: unwrap_module(v) for k, v in vars(gen).items() if isinstance(unwrap_module(v), nn.Module)}


def _private(gen: Any) -> dict[str, Any]:
    from genguard.generators.base import unwrap_module

    return {name: unwrap_module(getattr(gen, name)) for name in gen.private_modules()}


class _Rng:
    """Snapshot / restore of every random source a batch_loss may draw from (torch, numpy, python, the
    generator's own torch / numpy generators), so that two forward passes see the same randomness."""

    def __init__(self, gen: Any) -> None:
        import torch

        self.gen = gen
        self.torch = torch.get_rng_state()
        self.np = np.random.get_state()
        self.py = random.getstate()
        self.own: dict[str, Any] = {}
        for k, v in vars(gen).items():
            if isinstance(v, torch.Generator):
                self.own[k] = v.get_state()
            elif isinstance(v, np.random.Generator):
                self.own[k] = copy.deepcopy(v.bit_generator.state)

    def restore(self) -> None:
        import torch

        torch.set_rng_state(self.torch)
        np.random.set_state(self.np)
        random.setstate(self.py)
        for k, state in self.own.items():
            v = getattr(self.gen, k)
            if isinstance(v, torch.Generator):
                v.set_state(state)
            else:
                v.bit_generator.state = copy.deepcopy(state)


def _other_record(tensors: tuple) -> int:
    """The record most unlike record 0 (most differing entries), to substitute for it."""
    import torch

    n = len(tensors[0])
    diff = torch.zeros(n)
    for t in tensors:
        flat = t.reshape(n, -1)
        diff += (flat != flat[:1]).float().mean(1)
    diff[0] = -1.0
    return int(torch.argmax(diff))


def _substituted(tensors: tuple, j: int, blow_up: float | None = None) -> tuple:
    """Record 0 replaced by record ``j``; with ``blow_up`` its floating-point tensors are also scaled."""
    out = []
    for t in tensors:
        t = t.clone()
        t[0] = t[j]
        if blow_up is not None and t.is_floating_point():
            t[0] = t[0] * blow_up
        out.append(t)
    return tuple(out)


def _state(gen: Any) -> dict[str, Any]:
    """What :meth:`Generator.save` would write: every tensor, and the JSON state (as one string per key)."""
    from genguard.generators._io import jsonable as _jsonable

    out: dict[str, Any] = {k: np.array(v) for k, v in gen._state_tensors().items()}
    try:
        extra = gen._extra_state()
    except (AttributeError, KeyError):  # some extra state exists only after fit
        extra = {}
    for k, v in extra.items():
        out[f"state:{k}"] = json.dumps(_jsonable(v), sort_keys=True, default=str)
    return out


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return a.shape == b.shape and a.dtype == b.dtype and bool(np.array_equal(a, b, equal_nan=a.dtype.kind == "f"))
    return a == b


def _differing(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = set(a) | set(b)
    return sorted(k for k in keys if k not in a or k not in b or not _equal(a[k], b[k]))


def _declared(gen: Any, key: str) -> bool:
    """Whether ``key`` is state the generator declares as computed from the data (a ledger caveat).

    ``declared_data_state()`` (a sentence for the ledger, the trainer's protocol) declares all of its
    build state; ``data_dependent_state`` (names of saved keys) declares only those keys."""
    declare = getattr(gen, "declared_data_state", None)
    if callable(declare) and declare():
        return True
    names = tuple(getattr(gen, "data_dependent_state", ()) or ())
    bare = key[len("state:"):] if key.startswith("state:") else key
    return any(bare == n or bare.startswith(n + ".") for n in names)


def _rows(obj: Any, b: int, depth: int = 0) -> list:
    """The tensors in ``obj`` (nested tuples / lists / dicts) that carry records along their first dimension."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj.detach().clone()] if obj.dim() >= 1 and obj.shape[0] == b else []
    if depth > 2:
        return []
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _rows(o, b, depth + 1)]
    return []


def _rest_equal(xs: list, ys: list) -> bool:
    import torch

    if len(xs) != len(ys):
        return False
    for x, y in zip(xs, ys):
        if x.shape != y.shape:
            return False
        if x.is_floating_point():
            if not torch.allclose(x[1:], y[1:], rtol=1e-5, atol=1e-6, equal_nan=True):
                return False
        elif not torch.equal(x[1:], y[1:]):
            return False
    return True


# ------------------------------------------------------------------------------------------------
# mechanism probes (PrivateTrainer.mechanism_probe)
# ------------------------------------------------------------------------------------------------
class _Recorder:
    """Records each step's batch indices, clipped sum and released update; with ``freeze`` releases zero
    instead, so two runs differ only by what escapes the mechanism."""

    def __init__(self, freeze: bool, on_start: Callable[[], None] | None = None) -> None:
        self.freeze = freeze
        self.on_start = on_start
        self.idx: list[Any] = []
        self.clean: list[Any] = []
        self.noise: list[Any] = []

    def start(self, params, sample_rate, noise_multiplier, max_grad_norm, expected_batch) -> None:
        self.expected_batch, self.sigma, self.C = float(expected_batch), float(noise_multiplier), float(max_grad_norm)
        if self.on_start is not None:
            self.on_start()

    def before_noise(self, step, idx, sums) -> None:
        import torch

        self.idx.append(idx.detach().clone())
        self.clean.append(torch.cat([s.detach().reshape(-1).double() for s in sums.values()]))

    def after_noise(self, step, sums) -> None:
        import torch

        released = torch.cat([s.detach().reshape(-1).double() for s in sums.values()]) * self.expected_batch
        self.noise.append(released - self.clean[-1])
        if self.freeze:
            for s in sums.values():
                s.zero_()


def _run(gen: Any, data: Any, trainer: Any, probe: _Recorder, tensors_fn: Callable | None = None, **overrides: Any):
    """Fit a fresh copy of ``gen`` with ``probe`` in the mechanism; ``tensors_fn`` rewrites its training tensors."""
    g = _clone(gen, **overrides)
    if tensors_fn is not None:
        original = g.train_tensors
        g.train_tensors = lambda d: tensors_fn(tuple(original(d)))  # the neighbour, at the privacy unit
    g.fit(data, trainer=dataclasses.replace(trainer, mechanism_probe=probe), progress=False)
    return g


# ------------------------------------------------------------------------------------------------
# the checks
# ------------------------------------------------------------------------------------------------
def _check_private_modules(gen: Any) -> Check:
    from genguard.guardrails.privacy.trainer import validate_private_module

    name = "private_modules"
    try:
        names = tuple(gen.private_modules())
    except Exception as exc:  # a user's hook: report any failure as the finding
        return _fail(name, "NO_PRIVATE_MODULES", f"private_modules() raised {type(exc).__name__}: {exc}")
    if not names:
        return _fail(name, "NO_PRIVATE_MODULES", "private_modules() names no module")
    missing = [n for n in names if getattr(gen, n, None) is None]
    if missing:
        return _fail(name, "NO_PRIVATE_MODULES", f"private module(s) {missing} do not exist after build()")
    mixing = []
    for mname, module in _private(gen).items():
        for sub, layer in module.named_modules():
            kinds = [c.__name__ for c in type(layer).__mro__]
            running = getattr(layer, "track_running_stats", False)
            if any(k in _MIXING_LAYERS for k in kinds) or running:
                mixing.append(f"{mname}.{sub}" if sub else mname)
    if mixing:
        return _fail(name, "RECORD_MIXING_LAYER", f"layers that mix records or keep running statistics: {mixing}",
                     layers=mixing)
    for mname, module in _private(gen).items():
        try:
            validate_private_module(module, f"{gen.name}.{mname}")
        except PrivacyError as exc:
            return _fail(name, "UNSUPPORTED_LAYER", str(exc))
    return _ok(name, f"{list(names)}", modules=list(names))


def _check_uncovered(gen: Any, batch: tuple) -> Check:
    name = "uncovered_parameters"
    modules = _all_modules(gen)
    private_ids = {id(p) for m in _private(gen).values() for p in m.parameters()}
    for m in modules.values():
        m.zero_grad(set_to_none=True)
    loss = gen.batch_loss(batch)
    loss.backward()
    offenders = sorted({f"{attr}.{pname}" for attr, mod in modules.items() for pname, p in mod.named_parameters()
                        if id(p) not in private_ids and p.grad is not None and bool(p.grad.abs().sum() > 0)})
    for m in modules.values():
        m.zero_grad(set_to_none=True)
    if offenders:
        return _fail(name, "UNCOVERED_PARAMETER",
                     f"{len(offenders)} parameter(s) outside the private modules get a gradient from batch_loss "
                     f"(trained on unclipped data): {offenders[:5]}", parameters=offenders)
    return _ok(name, "no parameter outside the private modules gets a gradient from batch_loss")


def _trace(gen: Any, batch: tuple) -> list:
    b = len(batch[0])
    calls: list = []
    handles = []
    for mname, module in _private(gen).items():
        for sub, layer in module.named_modules():
            qual = f"{mname}.{sub}" if sub else mname

            def hook(m, inputs, output, qual=qual):
                calls.append((qual, _rows(inputs, b), _rows(output, b)))

            handles.append(layer.register_forward_hook(hook))
    try:
        gen.batch_loss(batch)
    finally:
        for h in handles:
            h.remove()
    return calls


def _buffers(gen: Any) -> dict[str, Any]:
    return {f"{attr}.{k}": v.detach().clone() for attr, mod in _all_modules(gen).items() for k, v in mod.named_buffers()}


def _check_mixing(gen: Any, batch: tuple, other: tuple, rng: _Rng) -> list[Check]:
    import torch

    before = _buffers(gen)
    rng.restore()
    with torch.no_grad():
        a = _trace(gen, batch)
    after = _buffers(gen)
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    out = []
    if changed:
        out.append(_fail("buffers", "BUFFER_UPDATED", f"a private forward pass changed buffer(s) {changed[:5]}",
                         buffers=changed))
    else:
        out.append(_ok("buffers", "no buffer changes in a private forward pass"))
    rng.restore()
    with torch.no_grad():
        b = _trace(gen, other)
    if [c[0] for c in a] != [c[0] for c in b]:
        out.append(_skip("record_mixing", "the private modules were called differently for the two batches"))
        return out
    for (qual, ia, oa), (_, ib, ob) in zip(a, b):
        if _rest_equal(ia, ib) and not _rest_equal(oa, ob):
            out.append(_fail("record_mixing", "RECORD_MIXING",
                             f"{qual}: changing record 0 changed other records' outputs while their inputs were "
                             "unchanged (the layer mixes records)", layer=qual))
            return out
    out.append(_ok("record_mixing", f"{len(a)} private module calls: no record's output depends on another record"))
    return out


def _check_mean_loss(gen: Any, batch: tuple, rng: _Rng) -> Check:
    import torch

    from genguard.guardrails.privacy.clipping import PerSampleClipper

    name = "mean_loss"
    try:
        clipper = PerSampleClipper(_private(gen), 1.0, "ghost")
    except PrivacyError as exc:
        return _skip(name, f"per-sample gradients unavailable: {exc}")
    norms = []
    clipper.attach()
    try:
        for b in (batch, tuple(torch.cat([t, t]) for t in batch)):
            rng.restore()
            with clipper.record():
                loss = gen.batch_loss(b)
            norms.append(float(clipper.backward_and_clip(loss, len(b[0])).double().mean()))
            clipper.take_clipped_sum()
    finally:
        clipper.detach()
        for m in _all_modules(gen).values():
            m.zero_grad(set_to_none=True)
    if not norms[0] > 0:
        return _skip(name, "the per-record gradients are zero", norms=norms)
    ratio = norms[1] / norms[0]
    if not 0.67 < ratio < 1.5:
        return _fail(name, "LOSS_NOT_MEAN",
                     f"per-record gradient norms change x{ratio:.2f} when the batch doubles: batch_loss is not a mean "
                     "over records", ratio=ratio)
    return _ok(name, f"per-record gradient norms x{ratio:.3f} when the batch doubles", ratio=ratio)


def _check_sensitivity(gen: Any, data: Any, trainer: Any, j: int, n_records: int, has_float: bool = True) -> Check:
    from genguard.generators.base import GeneratorError

    name = "sensitivity"
    one_step = {"epochs": 1, "batch_size": n_records}  # q = 1: one step over every record
    sums = []
    for fn in (None, None, "blow"):
        probe = _Recorder(freeze=True)
        blow = 1000.0
        tfn = None if fn is None else (lambda ts, blow=blow: _substituted(ts, j, blow))
        try:
            _run(gen, data, trainer, probe, tfn, **one_step)
        except GeneratorError:
            if fn is None:
                raise
            probe = _Recorder(freeze=True)  # x1000 made the loss non-finite: substitute without scaling
            blow = None
            _run(gen, data, trainer, probe, lambda ts: _substituted(ts, j, None), **one_step)
        if len(probe.clean) != 1:
            return _skip(name, f"expected one step at q = 1, the trainer took {len(probe.clean)}")
        sums.append(probe.clean[0])
    C = float(trainer.max_grad_norm)
    control = float((sums[1] - sums[0]).norm())
    moved = float((sums[2] - sums[0]).norm())
    bound = 2 * C * (1 + 1e-3) + control + 1e-5
    if not has_float:
        how = "substituted (its tensors are integer codes: nothing to scale)"
    else:
        how = "substituted and x1000" if blow else "substituted (x1000 made the loss non-finite)"
    measured = {"moved": moved, "bound": 2 * C, "control": control, "record": how}
    if moved > bound:
        return _fail(name, "SENSITIVITY_EXCEEDED", f"one record {how} moved the clipped sum by {moved:.4g} > 2C = "
                     f"{2 * C:g}", **measured)
    return _ok(name, f"one record {how} moved the clipped sum by {moved:.4g} <= 2C = {2 * C:g}", **measured)


def _check_build_state(gen: Any, data: Any) -> Check:
    name = "build_state"
    n = len(data)
    j = _other_dataset_record(data)
    states = [_state(_built(gen, d)) for d in (data, data, data.subset(np.r_[j, np.arange(1, n)]),
                                                data.subset(np.arange(1, n)))]
    noisy = set(_differing(states[0], states[1]))
    leaks = sorted((set(_differing(states[0], states[2])) | set(_differing(states[0], states[3]))) - noisy)
    declared = [k for k in leaks if _declared(gen, k)]
    leaks = [k for k in leaks if not _declared(gen, k)]
    measured = {"declared": declared, "nondeterministic": sorted(noisy)}
    if leaks:
        return _fail(name, "BUILD_STATE_DEPENDS_ON_DATA",
                     f"saved state built from neighbouring data sets differs: {leaks[:5]}", state=leaks, **measured)
    msg = "nothing saved after build() depends on the data"
    if declared:
        msg = f"declared data-dependent state (a caveat, not covered by the DP guarantee): {declared}"
    return _ok(name, msg, **measured)


def _other_dataset_record(data: Any) -> int:
    for j in range(1, len(data)):
        if any(v[j] != v[0] for v in data.groups.values()):
            return j
    return len(data) - 1


def _check_post_processing(gen: Any, data: Any, trainer: Any, j: int, n_records: int) -> list[Check]:
    import torch

    one_step = {"epochs": 1, "batch_size": n_records}  # q = 1 (the batch size is public: keep it realistic)
    snap: dict[str, Any] = {}
    runs = []
    # Substitution at the privacy unit (the trainer's records); removal at the data set (the trainer counts
    # records), with whatever build() already derived from the data left to the build_state check.
    removed = data.subset(np.arange(1, len(data)))
    variants = [(data, None), (data, None), (data, lambda ts: _substituted(ts, j)), (removed, None)]
    for k, (dk, fn) in enumerate(variants):
        holder: dict[str, Any] = {}

        def on_start(holder=holder):
            holder["params"] = {f"{a}.{p}": v.detach().clone() for a, m in _all_modules(holder["gen"]).items()
                                for p, v in m.named_parameters()}

        probe = _Recorder(freeze=True, on_start=on_start)
        g = _clone(gen, **one_step)
        holder["gen"] = g
        if fn is not None:
            original = g.train_tensors
            g.train_tensors = lambda d, fn=fn, original=original: fn(tuple(original(d)))
        g.fit(dk, trainer=dataclasses.replace(trainer, mechanism_probe=probe), progress=False)
        runs.append(_state(g))
        if k == 0:
            snap = {"gen": g, "params": holder.get("params", {})}
    noisy = set(_differing(runs[0], runs[1]))
    leaks_sub = set(_differing(runs[0], runs[2])) - noisy
    built = set(_differing(_state(_built(gen, data)), _state(_built(gen, removed))))
    leaks_rem = set(_differing(runs[0], runs[3])) - noisy - built
    out = []
    measured = {"nondeterministic": sorted(noisy)}
    if leaks_sub or leaks_rem:
        parts = []
        if leaks_sub:
            parts.append(f"substituting one record changed {sorted(leaks_sub)[:5]}")
        if leaks_rem:
            parts.append(f"removing one record changed {sorted(leaks_rem)[:5]}")
        out.append(_fail("post_processing", "POST_PROCESSING_READS_DATA",
                         "with the released update held fixed, " + "; ".join(parts), substituted=sorted(leaks_sub),
                         removed=sorted(leaks_rem), **measured))
    else:
        out.append(_ok("post_processing", "with the released update held fixed, neighbouring data sets change "
                       "nothing saved", **measured))
    g = snap["gen"]
    saved = set(g.trained_modules()) | set(g.extra_modules())
    changed = set()
    for key, before in snap["params"].items():
        attr, pname = key.split(".", 1)
        now = dict(_all_modules(g)[attr].named_parameters()).get(pname)
        if now is not None and not torch.equal(now.detach(), before):
            changed.add(attr)
    unsaved = sorted(changed - saved)
    if unsaved:
        out.append(_fail("saved_modules", "UNSAVED_TRAINED_MODULE",
                         f"training changed module(s) {unsaved} that save() does not write", modules=unsaved))
    else:
        out.append(_ok("saved_modules", f"every module training changes is saved ({sorted(changed) or 'none'})"))
    return out


def _check_secret_randomness(gen: Any, data: Any, trainer: Any) -> list[Check]:
    n = len(data)
    params = {"epochs": 1, "batch_size": max(1, n // 4)}
    probes = []
    for _ in range(2):
        probe = _Recorder(freeze=False)
        _run(gen, data, trainer, probe, None, **params)
        probes.append(probe)
    a, b = probes
    out = []
    same_batches = len(a.idx) == len(b.idx) and all(len(x) == len(y) and bool((x == y).all()) for x, y in zip(a.idx, b.idx))
    if same_batches:
        out.append(_fail("secret_sampling", "SAMPLING_REPRODUCIBLE",
                         f"two trainers configured alike drew the same batches in all {len(a.idx)} steps"))
    else:
        out.append(_ok("secret_sampling", "two trainers configured alike drew different batches"))
    na, nb = a.noise[0], b.noise[0]
    if bool((na - nb).abs().max() < 1e-9 * max(1.0, float(na.abs().max()))):
        out.append(_fail("secret_noise", "NOISE_REPRODUCIBLE", "two trainers configured alike drew the same noise"))
    else:
        out.append(_ok("secret_noise", "two trainers configured alike drew different noise"))
    expected = a.sigma * a.C
    ratio = float(na.std()) / expected
    d = len(na)
    tol = max(0.05, 6.0 / np.sqrt(2.0 * d))  # six standard errors of a sample standard deviation
    if abs(ratio - 1.0) > tol:
        out.append(_fail("noise_scale", "NOISE_SCALE_WRONG",
                         f"noise std / (sigma C) = {ratio:.4f} over {d} coordinates (expected 1 within {tol:.3f})",
                         ratio=ratio, coordinates=d))
    else:
        out.append(_ok("noise_scale", f"noise std / (sigma C) = {ratio:.4f} over {d} coordinates", ratio=ratio))
    return out


def check_private_training(generator: Any, data: Any, *, fast: bool = False, trainer: Any = None,
                           n_records: int = 32, raise_on_failure: bool = False) -> ConformanceResult:
    """Test empirically that ``generator``'s hooks keep DP-SGD's per-record analysis true (see the module).

    ``generator``: an unfitted :class:`~genguard.generators.TorchGenerator` (it is not modified: each check
    works on fresh copies from ``get_params()``). ``data``: its kind of training data; the first
    ``n_records`` records are used. ``trainer``: the :class:`PrivateTrainer` settings to check with (default:
    ``PrivateTrainer()``; its noise multiplier is fixed at 1 to skip calibration). ``fast``: only the
    checks that need at most one one-step training run. ``raise_on_failure``: raise
    :class:`ConformanceError` listing every failure instead of returning.
    """
    from genguard.generators.base import Dataset, GeneratorError, TorchGenerator
    from genguard.guardrails.privacy.trainer import PrivateTrainer

    if not isinstance(generator, TorchGenerator):
        raise PrivacyError(f"{type(generator).__name__} is not a torch generator: DP-SGD does not apply")
    if not isinstance(data, Dataset):
        raise PrivacyError(f"check_private_training expects a generators.Dataset, got {type(data).__name__}")
    n = min(len(data), int(n_records))
    if n < 4:
        raise PrivacyError(f"the conformance check needs at least 4 records, got {len(data)}")
    data = data.subset(np.arange(n))
    base = trainer if trainer is not None else PrivateTrainer()
    base = dataclasses.replace(base, target_epsilon=None, noise_multiplier=1.0)
    name = getattr(generator, "name", type(generator).__name__)
    checks: list[Check] = []
    result = ConformanceResult(name, bool(fast), checks)

    try:
        gen = _built(generator, data)
        gen.check_private_training()
    except Exception as exc:  # noqa: BLE001 - a user's build() may raise anything
        refuses = isinstance(exc, (GeneratorError, PrivacyError)) and ("cannot train" in str(exc) or "DP-SGD" in str(exc))
        checks.append(_fail("build", "GENERATOR_REFUSES" if refuses else "BUILD_FAILED", f"{type(exc).__name__}: {exc}"))
        return result.raise_for_failures() if raise_on_failure else result
    checks.append(_ok("build", f"built on {n} records"))
    checks.append(_check_private_modules(gen))
    if checks[-1].code == "NO_PRIVATE_MODULES":
        return result.raise_for_failures() if raise_on_failure else result

    def guarded(label: str, fn: Callable[[], Any]) -> None:
        # A user's hook that raises is a finding of its own, not a crash of the check.
        try:
            got = fn()
        except (GeneratorError, PrivacyError) as exc:  # the trainer or the generator refused: also a finding
            checks.append(_fail(label, "REFUSED", str(exc)))
            return
        except Exception as exc:  # noqa: BLE001 - any failure of the generator's hooks is reported
            checks.append(_fail(label, "HOOK_FAILED", f"{type(exc).__name__}: {exc}"))
            return
        checks.extend(got if isinstance(got, list) else [got])

    try:
        for mname in gen.trained_modules():
            getattr(gen, mname).train()
        tensors = tuple(gen.train_tensors(data))
        j = _other_record(tensors)
    except Exception as exc:  # noqa: BLE001
        checks.append(_fail("train_tensors", "HOOK_FAILED", f"{type(exc).__name__}: {exc}"))
        return result.raise_for_failures() if raise_on_failure else result
    rng = _Rng(gen)
    rng.restore()
    guarded("uncovered_parameters", lambda: _check_uncovered(gen, tensors))
    guarded("record_mixing", lambda: _check_mixing(gen, tensors, _substituted(tensors, j), rng))
    guarded("mean_loss", lambda: _check_mean_loss(gen, tensors, rng))
    n_rec = len(tensors[0])  # the trainer's records (text: windows), so that batch_size = n_rec gives q = 1
    guarded("sensitivity", lambda: _check_sensitivity(generator, data, base, j, n_rec,
                                                      any(t.is_floating_point() for t in tensors)))
    guarded("build_state", lambda: _check_build_state(generator, data))
    if not fast:
        guarded("post_processing", lambda: _check_post_processing(generator, data, base, j, n_rec))
        guarded("secret_randomness", lambda: _check_secret_randomness(generator, data, base))
    return result.raise_for_failures() if raise_on_failure else result
