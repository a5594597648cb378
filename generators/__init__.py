"""Generators: the Generator protocol, reference generators and the embedded data sets.

This package imports nothing else of genguard. Generators are looked up by
name in :mod:`generators.registry` (built-in families, ``@register``-ed
classes and the ``genguard.generators`` entry points); each class describes
itself (``default_data``, ``quick_params``, ``run_params``, ``dp_mechanism``,
``conditional_on``, ``watermarkable``). ``load(dir)`` rebuilds any registered
generator from its ``config.json`` without unpickling.
"""
from __future__ import annotations

import os
from typing import Any

from genguard.generators.base import Dataset, Generator, GeneratorError, PlainTrainer, Samples, TorchGenerator, read_config
from genguard.generators.checks import ProtocolError, check_generator
from genguard.generators.registry import available, describe, get_generator_class, how_to_register, register


def quick_params(name: str) -> dict[str, Any]:
    """A copy of the ``quick_params`` of the generator registered as ``name``."""
    return dict(get_generator_class(name).quick_params)


def make_generator(name: str, **params: Any) -> Generator:
    cls = get_generator_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise GeneratorError(f"bad parameters for generator {name!r}: {exc}") from None


def load(directory: str | os.PathLike) -> Generator:
    """Load a generator saved with ``Generator.save`` (safetensors + JSON, no pickle).

    The class comes from the registry by the saved name, never from the module path that
    ``config.json`` records: a model file cannot make genguard import code.
    """
    config = read_config(directory)
    name = config["generator"]
    try:
        cls = get_generator_class(name)
    except GeneratorError:
        saved = config.get("class") if isinstance(config.get("class"), str) else None
        raise GeneratorError(f"{os.fspath(directory)}: holds a {name!r} model"
                             + (f" (class {saved})" if saved else "") + ", which is not registered; "
                             + how_to_register(str(name), saved)) from None
    return cls.load(directory)


__all__ = [
    "Dataset", "Generator", "GeneratorError", "PlainTrainer", "ProtocolError", "Samples", "TorchGenerator",
    "available", "check_generator", "describe", "get_generator_class", "how_to_register", "load", "make_generator",
    "quick_params", "register",
]
