"""Generators: the Generator protocol, reference generators and the embedded data sets.

This package imports nothing else of genguard. Generators are looked up by
name through :data:`REGISTRY`; ``load(dir)`` rebuilds any saved generator from
its ``config.json`` without unpickling.
"""
from __future__ import annotations

import importlib
import os
from typing import Any

from genguard.generators.base import Dataset, Generator, GeneratorError, PlainTrainer, Samples, TorchGenerator, read_config

#: name -> "module:Class" of every reference generator (imported lazily: torch is heavy).
REGISTRY: dict[str, str] = {
    "vae": "genguard.generators.vae:ConditionalVAE",
    "gmm": "genguard.generators.gmm:GaussianMixtureGenerator",
    "hmm": "genguard.generators.hmm:CharHMM",
    "rbm": "genguard.generators.rbm:RBM",
    "gan": "genguard.generators.gan:ConditionalGAN",
    "flow": "genguard.generators.flow:RealNVP",
    "pixelcnn": "genguard.generators.pixelcnn:PixelCNN",
    "ddpm": "genguard.generators.ddpm:DDPM",
    "score": "genguard.generators.score:ScoreModel",
    "text": "genguard.generators.text:ByteGPT",
    "tabular": "genguard.generators.tabular:TabularVAE",
    "dpmerf": "genguard.generators.dpmerf:DPMERF",
}

#: Small settings per generator, for tests and the CLI's ``--quick``: each trains in seconds on one core.
#: They show that the loop works; they are not meant to give good samples.
QUICK_PARAMS: dict[str, dict[str, Any]] = {
    "vae": {"epochs": 3, "hidden": 64, "latent_dim": 8, "batch_size": 128},
    "gmm": {"n_components": 2, "max_iter": 20},
    "hmm": {"n_states": 8, "n_iter": 3, "max_chars": 5000, "sample_length": 60},
    "rbm": {"n_hidden": 64, "epochs": 3, "gibbs_steps": 50, "batch_size": 128},
    "gan": {"width": 16, "latent_dim": 16, "epochs": 6, "batch_size": 128, "lr": 1e-3},
    "flow": {"n_layers": 4, "hidden": 64, "epochs": 3, "batch_size": 128},
    "pixelcnn": {"channels": 16, "n_blocks": 2, "epochs": 2, "batch_size": 128},
    "ddpm": {"channels": 16, "n_blocks": 1, "timesteps": 100, "sampling_steps": 10, "epochs": 3, "batch_size": 128},
    "score": {"channels": 16, "n_blocks": 1, "n_sigmas": 5, "langevin_steps": 5, "epochs": 3, "batch_size": 128},
    "text": {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 32, "max_windows": 300, "sample_length": 40,
             "epochs": 2, "batch_size": 32, "lr": 1e-2},
    "tabular": {"hidden": 32, "epochs": 10},
    "dpmerf": {"n_features": 300, "steps": 150, "batch_size": 200},
}

#: The embedded data set each generator trains on by default (gmm and dpmerf also take "diabetes").
DEFAULT_DATA: dict[str, str] = {
    "vae": "digits", "gmm": "digits", "hmm": "pydoc", "rbm": "digits", "gan": "digits", "flow": "digits",
    "pixelcnn": "digits", "ddpm": "digits", "score": "digits", "text": "pydoc", "tabular": "diabetes",
    "dpmerf": "digits",
}


def quick_params(name: str) -> dict[str, Any]:
    """A copy of :data:`QUICK_PARAMS` for ``name`` (``{}`` for a user-registered generator without one)."""
    get_generator_class(name)  # unknown names fail here with the list of choices
    return dict(QUICK_PARAMS.get(name, {}))


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
    "REGISTRY", "QUICK_PARAMS", "DEFAULT_DATA", "quick_params", "available", "get_generator_class", "make_generator", "load",
]
