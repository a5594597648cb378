"""Generators: the Generator protocol, reference generators and the embedded data sets.

This package imports nothing else of genguard. Generators are looked up by
name through :data:`REGISTRY`; ``load(dir)`` rebuilds any saved generator from
its ``config.json`` without unpickling.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

from generators.base import Dataset, Generator, GeneratorError, PlainTrainer, Samples, TorchGenerator, read_config

#: name -> "module:Class" of every reference generator (imported lazily: torch is heavy).
REGISTRY: dict[str, str] = {
    "vae": "generators.vae:ConditionalVAE",
    "gmm": "generators.gmm:GaussianMixtureGenerator",
    "hmm": "generators.hmm:CharHMM",
    "rbm": "generators.rbm:RBM",
    "gan": "generators.gan:ConditionalGAN",
    "flow": "generators.flow:RealNVP",
    "pixelcnn": "generators.pixelcnn:PixelCNN",
    "ddpm": "generators.ddpm:DDPM",
    "score": "generators.score:ScoreModel",
    "text": "generators.text:ByteGPT",
    "tabular": "generators.tabular:TabularVAE",
    "dpmerf": "generators.dpmerf:DPMERF",
}


def available() -> list[str]:
    return sorted(REGISTRY)


def get_generator_class(name: str) -> type[Generator]:
    try:
        target = REGISTRY[name]
    except KeyError:
        raise GeneratorError(f"unknown generator {name!r}; available: {', '.join(available())}") from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def make_generator(name: str, **params: Any) -> Generator:
    cls = get_generator_class(name)
    try:
        return cls(**params)
    except TypeError as exc:
        raise GeneratorError(f"bad parameters for generator {name!r}: {exc}") from None


def load(directory: str | os.PathLike) -> Generator:
    """Load a generator saved with ``Generator.save`` (safetensors + JSON, no pickle)."""
    config = read_config(directory)
    return get_generator_class(config["generator"]).load(directory)


__all__ = [
    "Dataset", "Generator", "GeneratorError", "PlainTrainer", "Samples", "TorchGenerator",
    "REGISTRY", "available", "get_generator_class", "make_generator", "load",
]
