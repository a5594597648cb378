"""Conformance of a generator to the Generator protocol, with messages that say what to add.

:func:`check_generator` is the public check (like scikit-learn's
``check_estimator``): the class attributes the pipeline reads, the methods it
calls, and — given data, or for a fitted generator — that sampling is
reproducible and survives ``save``/``load``. The differential-privacy part of
conformance (per-record losses, modules opacus accepts, post-processing hooks)
needs ``guardrails`` and lives there:
``genguard.guardrails.privacy.conformance.check_private_training(gen, data)``.
"""
from __future__ import annotations

import inspect
import re
import tempfile
from collections.abc import Mapping
from typing import Any

from genguard.generators.base import (
    MODALITIES, PROTOCOL_METHODS, Dataset, Generator, GeneratorError, Samples, TorchGenerator, check_torch_protocol,
)

DP_MECHANISMS = ("dp-sgd", "own", "none")
#: The settings ``run_params`` may hold: private or not, full or ``--quick``.
RUN_SETTINGS = ("dp", "dp_quick", "plain", "plain_quick")
#: Where the DP part of the check lives (``generators`` imports nothing above it).
PRIVATE_CHECK = "genguard.guardrails.privacy.conformance.check_private_training(gen, data)"
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")


class ProtocolError(GeneratorError):
    """A generator that does not follow the protocol; ``problems`` lists each fix."""

    def __init__(self, what: str, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__(f"{what} does not follow the Generator protocol: " + "; ".join(
            f"({i}) {p}" for i, p in enumerate(self.problems, 1)))


def _init_parameters(cls: type) -> tuple[dict[str, inspect.Parameter], list[str]]:
    problems = []
    try:
        sig = inspect.signature(cls.__init__)
    except (TypeError, ValueError):
        return {}, [f"{cls.__name__}.__init__ has no readable signature"]
    params = {}
    for p in list(sig.parameters.values())[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            problems.append(f"__init__ takes *{p.name}: list every parameter by name (get_params() and save() "
                            "read them back), as scikit-learn estimators do")
        elif p.default is p.empty:
            problems.append(f"__init__ parameter {p.name!r} has no default: give it one, so that "
                            f"make_generator({getattr(cls, 'name', '?')!r}) and --quick can build the class")
        else:
            params[p.name] = p
    return params, problems


#: The protocol's placeholders, which only raise "does not define ...": a class must replace them.
_STUBS = frozenset({Generator.fit, Generator.sample, Generator._state_tensors, Generator._load_state_tensors,
                    TorchGenerator.build, TorchGenerator.private_modules, TorchGenerator.train_tensors,
                    TorchGenerator.batch_loss, TorchGenerator.build_from_state})


def _defines(cls: type, method: str) -> bool:
    """Whether ``cls`` has ``method`` of its own rather than the protocol's placeholder."""
    attr = getattr(cls, method, None)
    return callable(attr) and attr not in _STUBS


def class_problems(cls: Any) -> list[str]:
    """Every way ``cls`` falls short of the protocol's class side, each phrased as what to add."""
    if not isinstance(cls, type):
        return [f"expected a generator class, got {type(cls).__name__}"]
    out: list[str] = []
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or name == Generator.name or not _NAME.match(name):
        out.append(f"set the class attribute name = '...' (lower case letters, digits, '-' or '_'; it is the "
                   f"registry name and is saved in config.json), got {name!r}")
    modality = cls.__dict__.get("modality", getattr(cls, "modality", None))
    modalities = getattr(cls, "modalities", ()) or ()
    if isinstance(modality, str):
        if modality not in MODALITIES:
            out.append(f"set modality to one of {', '.join(MODALITIES)}, got {modality!r}")
    elif not modalities:
        out.append("modality is computed per instance: also set the class attribute modalities = (...) "
                   "with every modality fit accepts")
    if not isinstance(modalities, tuple) or any(m not in MODALITIES for m in modalities):
        out.append(f"modalities must be a tuple of {', '.join(MODALITIES)}, got {modalities!r}")
    cond = getattr(cls, "conditional_on", ())
    if not isinstance(cond, tuple) or not all(isinstance(c, str) for c in cond):
        out.append(f"conditional_on must be a tuple of condition names (e.g. ('label',)), got {cond!r}")
    data = getattr(cls, "default_data", None)
    if data is not None and not isinstance(data, str):
        out.append(f"default_data must be the name of an embedded data set or None, got {data!r}")
    mech = getattr(cls, "dp_mechanism", None)
    if mech not in DP_MECHANISMS:
        out.append(f"set dp_mechanism to one of {', '.join(map(repr, DP_MECHANISMS))}, got {mech!r}")
    if not isinstance(getattr(cls, "watermarkable", False), bool):
        out.append("watermarkable must be True or False")
    for method in ("fit", "sample"):
        if not _defines(cls, method):
            out.append(f"define {PROTOCOL_METHODS[method]}")
    for method in ("save", "load"):
        if not callable(getattr(cls, method, None)):
            out.append(f"define {method}() (or subclass genguard.generators.Generator, which writes safetensors + JSON)")
    if callable(getattr(cls, "sample", None)):
        try:
            sp = inspect.signature(cls.sample).parameters
        except (TypeError, ValueError):
            sp = {}
        if sp and not {"n", "seed"} <= set(sp):
            out.append("sample must take (self, n, seed=None, **conditions)")
    params, init_problems = _init_parameters(cls)
    out += init_problems
    for setting, values in [("quick_params", getattr(cls, "quick_params", {}))] + [
            (f"run_params[{k!r}]", v) for k, v in (getattr(cls, "run_params", {}) or {}).items()]:
        if not isinstance(values, Mapping):
            out.append(f"{setting} must be a dict of constructor parameters, got {type(values).__name__}")
            continue
        unknown = sorted(set(values) - set(params))
        if unknown and params is not None and not init_problems:
            out.append(f"{setting} names {', '.join(unknown)}, which __init__ does not take")
    run = getattr(cls, "run_params", {}) or {}
    if isinstance(run, Mapping) and set(run) - set(RUN_SETTINGS):
        out.append(f"run_params keys must be among {', '.join(RUN_SETTINGS)}, got {sorted(set(run) - set(RUN_SETTINGS))}")
    if mech == "dp-sgd":
        if not issubclass(cls, TorchGenerator):
            out.append("dp_mechanism 'dp-sgd' needs a genguard.generators.TorchGenerator subclass (the private "
                       "trainer drives its hooks); or say 'own' (fit reads the trainer's target_epsilon) or 'none'")
        else:
            for hook in ("build", "private_modules", "train_tensors", "batch_loss", "build_from_state"):
                if not _defines(cls, hook):
                    out.append(f"define {PROTOCOL_METHODS[hook]}")
    if mech == "own" and callable(getattr(cls, "fit", None)):
        try:
            if "trainer" not in inspect.signature(cls.fit).parameters:
                out.append("dp_mechanism 'own' means fit(data, trainer) reads trainer.target_epsilon, .delta and "
                           ".accountant: add the trainer parameter to fit")
        except (TypeError, ValueError):
            pass
    return out


def instance_problems(gen: Any) -> list[str]:
    """Problems of a constructed generator: parameters not stored, torch attributes missing."""
    out = class_problems(type(gen))
    params, _ = _init_parameters(type(gen))
    missing = [p for p in params if not hasattr(gen, p)]
    if missing:
        out.append(f"store each __init__ parameter under its own name ({', '.join(f'self.{p} = {p}' for p in missing)}): "
                   "get_params() and save() read them back")
    if isinstance(gen, TorchGenerator) and not out:
        try:
            check_torch_protocol(gen)
        except GeneratorError as exc:
            out.append(str(exc))
    return out


def _same(a: Any, b: Any) -> bool:
    import numpy as np

    if hasattr(a, "equals"):
        return bool(a.equals(b))
    if isinstance(a, list):
        return a == b
    return bool(np.array_equal(np.asarray(a), np.asarray(b)))


def check_generator(gen: Any, data: Dataset | None = None, *, n: int = 4) -> list[str]:
    """Check that ``gen`` (a class or an instance) follows the Generator protocol; return the checks passed.

    Without ``data`` the class attributes and methods are checked, and a fitted
    generator is also sampled and saved/loaded. With ``data`` (keep it small) a
    fresh copy built from ``gen``'s parameters (a class: its ``quick_params``) is fitted on it first; a torch
    generator's ``batch_loss`` must return one number per batch. Raises
    :class:`ProtocolError` listing every fix. The DP-SGD part is a separate
    check: :data:`PRIVATE_CHECK`.
    """
    instance = gen if not isinstance(gen, type) else None
    cls = type(gen) if instance is not None else gen
    what = cls.__name__ if isinstance(cls, type) else repr(gen)
    problems = instance_problems(instance) if instance is not None else class_problems(cls)
    if problems:
        raise ProtocolError(what, problems)
    passed = ["class attributes", "protocol methods", "constructor parameters"]
    if data is not None:
        if not isinstance(data, Dataset):
            raise GeneratorError(f"check_generator: data must be a generators.Dataset, got {type(data).__name__}")
        params = instance.get_params() if instance is not None else dict(getattr(cls, "quick_params", {}) or {})
        fresh = cls(**params)
        if isinstance(fresh, TorchGenerator):
            _check_batch_loss(fresh, data)
            passed.append("batch_loss is one number")
        kwargs = {"progress": False} if "progress" in inspect.signature(fresh.fit).parameters else {}
        fitted = fresh.fit(data, **kwargs)
        if fitted is not fresh:
            raise ProtocolError(what, ["fit must return self"])
        instance = fresh
        passed.append("fit returns self")
    if instance is not None and getattr(instance, "fitted_", False):
        problems = _sample_problems(instance, n)
        if problems:
            raise ProtocolError(what, problems)
        passed += ["sample returns Samples", "same seed, same samples", "save/load round trip"]
    return passed


def _check_batch_loss(gen: TorchGenerator, data: Dataset) -> None:
    """Build the modules and compute one batch's loss, before any training."""
    import torch

    gen.private_fit_ = False
    gen.build(data)
    tensors = tuple(gen.train_tensors(data))
    if not tensors or any(len(t) != len(tensors[0]) for t in tensors):
        raise ProtocolError(type(gen).__name__, ["train_tensors must return a tuple of tensors with one row per record"])
    try:
        loss = gen.batch_loss(tuple(t[:3] for t in tensors))  # the wrapper raises when it is not one number
    except GeneratorError as exc:
        raise ProtocolError(type(gen).__name__, [str(exc)]) from None
    if not loss.requires_grad:
        names = ", ".join(gen.private_modules())
        raise ProtocolError(type(gen).__name__, [f"batch_loss is not differentiable in the private modules ({names}): "
                                                 "compute it through them, without torch.no_grad()"])
    del loss
    torch.manual_seed(0)


def _sample_problems(gen: Any, n: int) -> list[str]:
    out = []
    a = gen.sample(n, seed=0)
    if not isinstance(a, Samples):
        return [f"sample must return genguard.generators.Samples, got {type(a).__name__}"]
    if len(a) != n:
        out.append(f"sample({n}) returned {len(a)} items")
    if a.modality != gen.modality:
        out.append(f"sample returned modality {a.modality!r}, but the generator's modality is {gen.modality!r}")
    if not _same(a.data, gen.sample(n, seed=0).data):
        out.append("sample(n, seed=s) must return the same outputs for the same seed (seed every random draw)")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            gen.save(tmp)
            back = type(gen).load(tmp)
        except NotImplementedError as exc:
            return out + [str(exc)]
        if type(back) is not type(gen):
            out.append(f"load returned {type(back).__name__}, not {type(gen).__name__}")
        elif not _same(back.sample(n, seed=0).data, a.data):
            out.append("after save() and load() the same seed gives other samples: save every learned state")
    return out


__all__ = ["DP_MECHANISMS", "PRIVATE_CHECK", "RUN_SETTINGS", "ProtocolError", "check_generator", "class_problems",
           "instance_problems"]
