"""The Generator protocol, the `Samples` and `Dataset` types, and the torch training hooks.

Every generator — reference or user-supplied — is used through this small
protocol, in the spirit of scikit-learn's estimators:

* parameters are set in ``__init__`` and never changed by ``fit``;
* learned state carries a trailing underscore (``model_``, ``n_features_``);
* ``fit(data, trainer=None)`` returns ``self``;
* ``sample(n, seed=None, **conditions)`` returns :class:`Samples`;
* ``save(dir)`` writes ``config.json`` + ``weights.safetensors`` and
  ``load(dir)`` reads them back without unpickling anything.

Torch generators additionally implement the hooks of :class:`TorchGenerator`,
so that ``guardrails.privacy.PrivateTrainer`` can apply DP-SGD to exactly the
modules that see private data (for a GAN, the discriminator) and treat every
other update as post-processing.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable, Iterator, Mapping

import numpy as np

from genguard.generators._io import (
    atomic_write_bytes, atomic_write_json, check_regular_file, jsonable, read_json_checked,
)

MODALITIES = ("image", "text", "tabular", "sequence", "audio")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


class GeneratorError(ValueError):
    """Raised for bad input to a generator (wrong shapes, NaN, unknown condition, bad files)."""


class GeneratorWarning(UserWarning):
    """A result that may be silently wrong: non-finite weights or samples."""


#: Largest value a width-like parameter (layer sizes, latent and vocabulary sizes) may have in a saved
#: config: a square layer of this width is 64M parameters (256 MB), so no config can ask for more.
MAX_WIDTH = 8192
#: Largest value any other integer parameter (epochs, steps, lengths) may have in a saved config.
MAX_COUNT = 100_000_000
WIDTH_PARAMS = frozenset({"hidden", "n_hidden", "latent_dim", "channels", "n_embd", "width", "n_features", "block_size",
                          "max_vocab", "n_states", "n_components", "n_layers", "n_layer", "n_head", "n_blocks",
                          "n_sigmas", "max_seq_len"})
#: Largest weights file loaded (bytes).
MAX_WEIGHTS_BYTES = 4 * 1024 ** 3


@dataclasses.dataclass
class Dataset:
    """Training data handed to ``Generator.fit``.

    ``x`` holds the items: images as float32 ``(n, H, W)`` or ``(n, H, W, C)`` in
    [0, 1]; tables as a ``pandas.DataFrame``; text as a list of strings;
    sequences as a list of integer arrays; audio as float32 ``(n, samples)`` in
    [-1, 1], mono, at ``metadata["sample_rate"]`` Hz. ``groups`` maps an attribute name to
    one integer code per item (for the digits: ``{"label": digit}``) and
    ``group_names`` maps the same attribute to the names of its codes.
    """

    x: Any
    modality: str
    name: str = "custom"
    groups: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    group_names: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise GeneratorError(f"unknown modality {self.modality!r}; expected one of {MODALITIES}")
        n = len(self.x)
        if n == 0:
            raise GeneratorError(f"data set {self.name!r} is empty")
        for attr, codes in self.groups.items():
            if len(codes) != n:
                raise GeneratorError(
                    f"group attribute {attr!r} has {len(codes)} values for {n} items in {self.name!r}"
                )
        if self.modality == "image":
            x = np.asarray(self.x)
            if x.ndim not in (3, 4):
                raise GeneratorError(f"images in {self.name!r} must be (n, H, W[, C]), got shape {x.shape}")
            if not np.isfinite(x).all():
                raise GeneratorError(f"images in {self.name!r} contain NaN or infinite values")
            if x.min() < 0 or x.max() > 1:
                raise GeneratorError(f"images in {self.name!r} must lie in [0, 1], got [{x.min():.3g}, {x.max():.3g}]")
            self.x = x.astype(np.float32, copy=False)
        elif self.modality == "audio":
            x = np.asarray(self.x)
            if x.ndim != 2:
                raise GeneratorError(f"audio in {self.name!r} must be (n, samples) mono clips, got shape {x.shape}")
            if not np.isfinite(x).all():
                raise GeneratorError(f"audio in {self.name!r} contains NaN or infinite values")
            if np.abs(x).max() > 1:
                raise GeneratorError(f"audio in {self.name!r} must lie in [-1, 1], got peak {np.abs(x).max():.3g}")
            rate = self.metadata.get("sample_rate")
            if not isinstance(rate, int) or isinstance(rate, bool) or not 1_000 <= rate <= 384_000:
                raise GeneratorError(f"audio in {self.name!r} needs metadata['sample_rate'] in Hz (1000..384000), "
                                     f"got {rate!r}")
            self.x = x.astype(np.float32, copy=False)

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx: np.ndarray, name: str | None = None) -> "Dataset":
        idx = np.asarray(idx)
        if self.modality in ("image", "audio"):
            x = self.x[idx]
        elif self.modality == "tabular":
            x = self.x.iloc[idx].reset_index(drop=True)
        else:
            x = [self.x[i] for i in idx]
        return Dataset(
            x=x,
            modality=self.modality,
            name=name or self.name,
            groups={k: v[idx] for k, v in self.groups.items()},
            group_names=dict(self.group_names),
            metadata=dict(self.metadata),
        )


@dataclasses.dataclass
class Samples:
    """A batch of generated outputs with their modality and metadata.

    ``conditions`` maps a condition (e.g. ``"label"``) to the value requested
    for each item, when the generator is conditional; ``metadata`` carries the
    generator name, seed and anything a downstream tagger or audit needs.
    """

    data: Any
    modality: str
    conditions: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise GeneratorError(f"unknown modality {self.modality!r}; expected one of {MODALITIES}")
        if isinstance(self.data, np.ndarray) and self.data.dtype.kind == "f" and not np.isfinite(self.data).all():
            import warnings

            bad = int(self.data.size - np.isfinite(self.data).sum())
            warnings.warn(f"{bad:,} of {self.data.size:,} sample values are NaN or infinite; the samples are "
                          "not meaningful (are the model's weights finite?)", GeneratorWarning, stacklevel=2)

    def __len__(self) -> int:
        return len(self.data)



# ----------------------------------------------------------------------------------------------
# Protocol checks at the edge: what is missing, and what to add
# ----------------------------------------------------------------------------------------------
#: What each protocol method must do, quoted by the error raised when a generator lacks it.
PROTOCOL_METHODS: dict[str, str] = {
    "fit": "fit(self, data, trainer=None) -> self: train on a generators.Dataset and set fitted_ = True",
    "sample": "sample(self, n, seed=None, **conditions) -> generators.Samples: n outputs, the same for the same seed",
    "_state_tensors": "_state_tensors(self) -> {name: numpy array}: the learned state that save() writes "
                      "(a TorchGenerator gets it from its modules)",
    "_load_state_tensors": "_load_state_tensors(self, tensors, extra): restore what _state_tensors returned "
                           "(a TorchGenerator gets it from its modules)",
    "build": "build(self, data): create the torch modules (attributes ending in '_') for this data",
    "private_modules": "private_modules(self) -> tuple of the names of the module attributes that see real data",
    "train_tensors": "train_tensors(self, data) -> tuple of tensors with one row per training record",
    "batch_loss": "batch_loss(self, batch) -> the mean loss over the batch's records, one 0-dim tensor",
    "build_from_state": "build_from_state(self, extra): recreate the modules from the saved shapes (load() calls it)",
}
#: Attributes a TorchGenerator's trainers read, set in ``__init__`` from parameters of the same name.
TORCH_ATTRIBUTES: dict[str, tuple[type, ...]] = {"epochs": (int,), "batch_size": (int,), "lr": (int, float),
                                                 "seed": (int,)}


def _missing(gen: Any, method: str) -> NotImplementedError:
    """The error of a protocol method a generator does not define, saying what to add."""
    what = PROTOCOL_METHODS.get(method, method)
    return NotImplementedError(f"{type(gen).__name__} does not define {method}(); add {what}")


def _checked_batch_loss(method: Any) -> Any:
    import functools

    @functools.wraps(method)
    def batch_loss(self: Any, batch: tuple[Any, ...]) -> Any:
        return check_loss(self, method(self, batch))

    batch_loss._checks_loss = True  # type: ignore[attr-defined]
    return batch_loss


def check_loss(gen: Any, loss: Any) -> Any:
    """``loss`` if it is one number as a torch tensor; else a :class:`GeneratorError` naming the fix."""
    import torch

    cls = type(gen).__name__
    if not isinstance(loss, torch.Tensor):
        raise GeneratorError(f"{cls}.batch_loss returned {type(loss).__name__}; it must return a torch tensor "
                             "computed from the batch through the modules (so that it can be backpropagated)")
    if loss.numel() != 1:
        raise GeneratorError(f"{cls}.batch_loss returned a tensor of shape {tuple(loss.shape)}; it must return one "
                             "number, the mean loss over the batch's records (e.g. end with `.mean()`)")
    return loss


def check_torch_protocol(gen: Any) -> None:
    """Raise :class:`GeneratorError` listing the hooks and attributes a TorchGenerator still lacks."""
    problems = []
    # the hooks training calls; build_from_state is needed only by load(), and registration checks it
    for method in ("build", "private_modules", "train_tensors", "batch_loss"):
        if getattr(getattr(type(gen), method, None), "__qualname__", "").startswith("TorchGenerator."):
            problems.append(f"define {PROTOCOL_METHODS[method]}")
    for attr, types in TORCH_ATTRIBUTES.items():
        value = getattr(gen, attr, None)
        if not isinstance(value, types) or isinstance(value, bool):
            problems.append(f"set self.{attr} in __init__ (a parameter {attr}=... stored under the same name; "
                            f"the trainers read it), got {value!r}")
    if problems:
        raise GeneratorError(f"{type(gen).__name__} is not a complete TorchGenerator: " + "; ".join(problems))


class Generator:
    """Base class of every generator. Subclasses set ``name`` and ``modality``.

    Only :meth:`sample` is required to audit and tag a user's model; the rest
    of the protocol is needed to train, save and load it through genguard.
    """

    # -- what the generator says about itself (read by the pipeline and the CLI) -------------
    #: Registry name (``genguard train --generator NAME``); saved in ``config.json``.
    name: ClassVar[str] = "generator"
    #: What ``sample`` returns: one of :data:`MODALITIES`.
    modality: ClassVar[str] = "image"
    #: Every modality ``fit`` accepts, when more than ``modality`` (gmm and dpmerf: image and tabular).
    modalities: ClassVar[tuple[str, ...]] = ()
    #: Keyword conditions ``sample`` takes (``("label",)``; a text model: ``("prompt",)``).
    conditional_on: ClassVar[tuple[str, ...]] = ()
    #: The embedded data set (``generators.data.EMBEDDED``) it trains on when none is given; None: the user must.
    default_data: ClassVar[str | None] = None
    #: Constructor parameters for ``--quick``: trains in seconds on one core (shows the loop works, not quality).
    quick_params: ClassVar[Mapping[str, Any]] = {}
    #: Tuned constructor parameters by setting: keys among :data:`RUN_SETTINGS` ("dp", "dp_quick", "plain",
    #: "plain_quick"); a setting left out falls back to ``quick_params`` (quick) or the constructor defaults.
    run_params: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    #: How it trains privately: "dp-sgd" (``guardrails.privacy.PrivateTrainer`` drives the torch hooks),
    #: "own" (``fit(data, trainer)`` reads the trainer's ``target_epsilon``, ``delta`` and ``accountant`` and
    #: runs its own mechanism, reporting the same keys), or "none" (refused unless trained with ``--no-dp``).
    dp_mechanism: ClassVar[str] = "none"
    #: True when ``sample(..., watermarking_config=...)`` embeds a keyed watermark while it samples.
    watermarkable: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # A batch loss that is not one number fails far from its cause ("Boolean value of Tensor ... is
        # ambiguous" inside a trainer); checking what it returns names the method and the fix instead.
        # (scikit-learn's _SetOutputMixin wraps transform the same way.)
        if "batch_loss" in cls.__dict__ and not getattr(cls.__dict__["batch_loss"], "_checks_loss", False):
            cls.batch_loss = _checked_batch_loss(cls.__dict__["batch_loss"])

    # -- scikit-learn style parameter handling -------------------------------------
    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, read back from attributes of the same name."""
        import inspect

        sig = inspect.signature(type(self).__init__)
        return {
            p: getattr(self, p)
            for p in sig.parameters
            if p != "self" and sig.parameters[p].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"

    # -- protocol -------------------------------------------------------------------
    def fit(self, data: Dataset, trainer: Any = None) -> "Generator":
        raise _missing(self, "fit")

    def sample(self, n: int, seed: int | None = None, **conditions: Any) -> Samples:
        raise _missing(self, "sample")

    def log_prob(self, x: Any) -> np.ndarray:  # optional
        raise NotImplementedError(f"{type(self).__name__} has no explicit density")

    def _state_tensors(self) -> dict[str, np.ndarray]:
        """Learned state as named arrays; torch generators override via their modules."""
        raise _missing(self, "_state_tensors")

    def _load_state_tensors(self, tensors: Mapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        raise _missing(self, "_load_state_tensors")

    def _extra_state(self) -> dict[str, Any]:
        """JSON-serialisable learned state that is not an array (shapes, vocabularies)."""
        return {}

    def check_is_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise GeneratorError(f"{type(self).__name__} is not fitted; call fit() or load() first")

    # -- persistence ----------------------------------------------------------------
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``weights.safetensors`` into ``directory`` atomically."""
        from safetensors.numpy import save as st_save

        self.check_is_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {k: np.ascontiguousarray(v) for k, v in self._state_tensors().items()}
        atomic_write_bytes(d / WEIGHTS_FILE, st_save(tensors))
        config = {
            "format": "genguard-generator/1",
            "generator": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "modality": self.modality,
            "params": jsonable(self.get_params()),
            "state": jsonable(self._extra_state()),
        }
        atomic_write_json(d / CONFIG_FILE, config)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Generator":
        """Rebuild a generator saved by :meth:`save`; never unpickles.

        The config is validated before anything is built: the generator name and
        class must be this class's, ``params`` a mapping of this class's
        parameters with the types of their defaults and sizes within
        :data:`MAX_WIDTH` / :data:`MAX_COUNT`, ``state`` a mapping. Non-finite
        weights raise a :class:`GeneratorWarning`.
        """
        from safetensors.numpy import load_file

        d = Path(directory)
        config = read_config(d)
        name = d / CONFIG_FILE
        if config["generator"] != cls.name:
            raise GeneratorError(f"{name}: holds a {config['generator']!r} model, not {cls.name!r}")
        saved_class = config.get("class")
        if saved_class is not None:
            if not isinstance(saved_class, str) or saved_class.rsplit(".", 1)[-1] != cls.__qualname__.rsplit(".", 1)[-1]:
                raise GeneratorError(f"{name}: names class {saved_class!r}, but {cls.name!r} is {cls.__qualname__}")
        params = check_params(cls, config.get("params", {}), str(name))
        state = config.get("state", {})
        if not isinstance(state, dict):
            raise GeneratorError(f"{name}: 'state' must be a mapping, got {type(state).__name__}")
        try:
            obj = cls(**params)
        except (TypeError, ValueError) as exc:
            raise GeneratorError(f"{name}: bad parameters for {cls.name!r}: {exc}") from None
        weights = d / WEIGHTS_FILE
        if not weights.is_file():
            raise GeneratorError(f"{weights}: missing weights file")
        check_regular_file(weights, MAX_WEIGHTS_BYTES, GeneratorError, "weights file")
        try:
            tensors = load_file(str(weights))
        except Exception as exc:  # safetensors raises its own error types
            raise GeneratorError(f"{weights}: unreadable safetensors file ({exc})") from None
        bad = [k for k, v in tensors.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:
            import warnings

            warnings.warn(f"{weights}: tensor(s) {', '.join(sorted(bad)[:5])} hold NaN or infinite values; "
                          "samples from this model are not meaningful", GeneratorWarning, stacklevel=2)
        try:
            obj._load_state_tensors(tensors, state)
        except GeneratorError as exc:
            raise GeneratorError(f"{name}: {exc}") from None
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as exc:
            raise GeneratorError(f"{name}: saved state does not fit {cls.name!r} "
                                 f"({exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        check_saved_state(obj, str(name))
        obj.fitted_ = True
        return obj


#: Learned sizes that sampling and writing allocate from, with their bounds: (low, high).
#: A hostile config.json must not make ``sample`` allocate or loop beyond them.
STATE_BOUNDS = {"pixel_scale_": (1, 64), "levels_": (2, 65_536), "n_classes_": (1, MAX_COUNT)}
#: Largest image a saved generator may declare (pixels a side; area).
MAX_IMAGE_SIDE = 4096
MAX_IMAGE_AREA = 1 << 22


def check_saved_state(obj: Any, source: str) -> None:
    """Range- and type-check the learned sizes restored from ``source`` (``config.json``) before any use."""
    def bad(key: str, value: Any, what: str) -> GeneratorError:
        return GeneratorError(f"{source}: state {key!r} = {value!r:.60} must be {what}")

    for key, (lo, hi) in STATE_BOUNDS.items():
        if key in vars(obj):
            v = getattr(obj, key)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise bad(key, v, f"an integer in [{lo:,}, {hi:,}]")
    if "image_shape_" in vars(obj):
        v = obj.image_shape_
        ok = (isinstance(v, (list, tuple)) and len(v) == 2
              and all(isinstance(a, int) and not isinstance(a, bool) and 1 <= a <= MAX_IMAGE_SIDE for a in v)
              and v[0] * v[1] <= MAX_IMAGE_AREA)
        if not ok:
            raise bad("image_shape_", v, f"[height, width] with sides in [1, {MAX_IMAGE_SIDE}] and at most "
                                         f"{MAX_IMAGE_AREA:,} pixels")


def check_params(cls: type, params: Any, source: str) -> dict[str, Any]:
    """Saved constructor parameters checked against ``cls.__init__``: known names, the defaults' types, bounded sizes."""
    import inspect
    import math

    if not isinstance(params, dict):
        raise GeneratorError(f"{source}: 'params' must be a mapping of parameter names to values, "
                             f"got {type(params).__name__}")
    sig = inspect.signature(cls.__init__)
    known = {k: p for k, p in sig.parameters.items() if k != "self" and p.kind is p.POSITIONAL_OR_KEYWORD}
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise GeneratorError(f"{source}: unknown parameter(s) {unknown} for {getattr(cls, 'name', cls.__name__)!r}; "
                             f"known: {sorted(known)}")
    for k, v in params.items():
        default = known[k].default
        if isinstance(default, bool):
            ok = isinstance(v, bool)
        elif isinstance(default, int):
            ok = isinstance(v, int) and not isinstance(v, bool)
            if ok:
                hi = MAX_WIDTH if k in WIDTH_PARAMS else (2 ** 63 - 1 if k == "seed" else MAX_COUNT)
                if not (0 <= v <= hi):
                    raise GeneratorError(f"{source}: parameter {k!r} = {v:,} is outside [0, {hi:,}]")
        elif isinstance(default, float):
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        elif isinstance(default, str):
            ok = isinstance(v, str)
        else:  # None or anything else: JSON scalars only, numbers finite
            ok = v is None or isinstance(v, (str, bool)) or (isinstance(v, (int, float)) and math.isfinite(v))
        if not ok:
            raise GeneratorError(f"{source}: parameter {k!r} has the wrong type or value {v!r} "
                                 f"(default {default!r})")
    return params


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, read with size, special-file and depth limits; names the file on error."""
    path = Path(directory) / CONFIG_FILE
    if not path.exists():
        raise GeneratorError(f"{path}: no saved generator here (config.json missing)")
    config = read_json_checked(path, GeneratorError, "config")
    if not isinstance(config, dict) or "generator" not in config:
        raise GeneratorError(f"{path}: not a genguard generator config")
    if not isinstance(config["generator"], str):
        raise GeneratorError(f"{path}: 'generator' must be a generator name, got {type(config['generator']).__name__}")
    return config


class TorchGenerator(Generator):
    """A generator built from torch modules, trainable with or without DP-SGD.

    Subclasses implement the hooks below; :meth:`fit` then runs either the
    plain loop here or hands the same hooks to a trainer (e.g.
    ``guardrails.privacy.PrivateTrainer``), which wraps the modules named by
    :meth:`private_modules` for DP-SGD and leaves the rest alone.

    Hooks
    -----
    ``build(data)``
        Create the modules (as attributes ending in ``_``) for this data.
    ``private_modules()``
        Attribute names of the modules whose gradients depend on private
        data. Everything else must only ever see their outputs.
    ``make_optimizers()``
        ``{attribute name: optimizer}`` for each trained module.
    ``train_tensors(data)``
        The tensors of one training item each (e.g. ``(x, label)``).
    ``batch_loss(batch)``
        Mean loss of the private module(s) on one batch of real data. Real
        and synthetic terms of a GAN discriminator go through this single
        call so one backward pass (one privacy charge) covers both.
    ``after_private_step(batch, optimizers)``
        Optional: updates that touch no private data (a GAN generator step).
        Under a private trainer it runs once per step with ``batch=None``:
        post-processing sees nothing derived from the private batch (not its
        records, labels or realised size); draw what it needs (conditions,
        a batch size) from public distributions and hyperparameters.
        ``PlainTrainer`` passes the batch.
    ``declared_data_state()``
        Optional: a sentence naming state that ``build`` computes from the
        data without noise (e.g. column scalings); a private trainer refuses
        such state unless declared, and records the sentence as a caveat.

    Every module whose weights a trainer changes must be listed by
    ``trained_modules()`` (or ``extra_modules()``), since those are what
    ``save`` writes; ``fit`` refuses a model that would lose trained weights.
    """

    dp_mechanism: ClassVar[str] = "dp-sgd"

    # Training defaults that every torch generator takes in __init__.
    epochs: int
    batch_size: int
    lr: float
    seed: int

    def build(self, data: Dataset) -> None:
        raise _missing(self, "build")

    def private_modules(self) -> tuple[str, ...]:
        raise _missing(self, "private_modules")

    def make_optimizers(self) -> dict[str, Any]:
        import torch

        return {name: torch.optim.Adam(getattr(self, name).parameters(), lr=self.lr) for name in self.trained_modules()}

    def trained_modules(self) -> tuple[str, ...]:
        return self.private_modules()

    def train_tensors(self, data: Dataset) -> tuple[Any, ...]:
        raise _missing(self, "train_tensors")

    def batch_loss(self, batch: tuple[Any, ...]) -> Any:
        raise _missing(self, "batch_loss")

    def after_private_step(self, batch: tuple[Any, ...], optimizers: Mapping[str, Any]) -> None:
        return None

    def declared_data_state(self) -> str | None:
        """What ``build`` computes from the training data without noise, as a caveat for the ledger (or None)."""
        return None

    def check_private_training(self) -> None:
        """Raise :class:`GeneratorError` if these settings cannot be trained with DP-SGD.

        A private trainer calls this before it starts (e.g. a GAN's gradient penalty needs a
        double backward through the private module, which per-sample clipping does not support).
        """
        return None

    def on_epoch_end(self, epoch: int) -> None:
        return None

    # -- fitting --------------------------------------------------------------------
    def fit(self, data: Dataset, trainer: Any = None, progress: bool = True) -> "TorchGenerator":
        """Train on ``data``; with a ``trainer``, the trainer owns the optimisation loop."""
        import torch

        check_torch_protocol(self)
        self._check_data(data)
        torch.manual_seed(self.seed)
        np.random.seed(self.seed)
        # build() may read statistics of the data; under DP it must not read them unnoised
        self.private_fit_ = bool(getattr(trainer, "private", False))
        self.build(data)
        if trainer is None:
            trainer = PlainTrainer()
        unsaved = self._unsaved_modules()
        self.training_report_ = trainer.train(self, data, progress=progress)
        self._check_nothing_trained_unsaved(unsaved)
        self.fitted_ = True
        for name in self.trained_modules():
            getattr(self, name).eval()
        return self

    def _check_data(self, data: Dataset) -> None:
        if not isinstance(data, Dataset):
            raise GeneratorError(f"{type(self).__name__}.fit expects a generators.Dataset, got {type(data).__name__}")
        if data.modality != self.modality:
            raise GeneratorError(f"{self.name} trains on {self.modality} data, got {data.modality} ({data.name})")

    # -- persistence via the modules' state dicts ------------------------------------
    def _state_tensors(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name in self.trained_modules() + self.extra_modules():
            module = unwrap_module(getattr(self, name))
            for key, value in module.state_dict().items():
                out[f"{name}.{key}"] = value.detach().cpu().numpy()
        return out

    def extra_modules(self) -> tuple[str, ...]:
        """Modules that are saved but not trained by the optimiser loop (e.g. EMA copies)."""
        return ()

    def _unsaved_modules(self) -> dict[str, list[Any]]:
        """Copies of the parameters and buffers of every module attribute that ``save`` would not write."""
        from torch import nn

        saved = set(self.trained_modules()) | set(self.extra_modules())
        return {name: [t.detach().clone() for t in list(m.parameters()) + list(m.buffers())]
                for name, m in vars(self).items() if isinstance(m, nn.Module) and name not in saved}

    def _check_nothing_trained_unsaved(self, before: Mapping[str, list[Any]]) -> None:
        import torch

        changed = []
        for name, old in before.items():
            module = unwrap_module(getattr(self, name, None))
            now = [t.detach() for t in list(module.parameters()) + list(module.buffers())] if module is not None else []
            if len(now) != len(old) or any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(old, now)):
                changed.append(name)
        if changed:
            raise GeneratorError(
                f"{self.name}: training changed module(s) {changed}, which trained_modules() does not list "
                f"(now {list(self.trained_modules())}), so their weights would be missing from {WEIGHTS_FILE}; "
                "add them to trained_modules() (or extra_modules())")

    def _load_state_tensors(self, tensors: Mapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        import torch

        self._restore_extra_state(extra)
        # build once on the meta device (no memory) and check the sizes against the weights before
        # allocating: a config or state claiming huge layers is refused here, not by the allocator
        try:
            with torch.device("meta"):
                self.build_from_state(extra)
            expected = {f"{name}.{k}": tuple(v.shape) for name in self.trained_modules() + self.extra_modules()
                        for k, v in unwrap_module(getattr(self, name)).state_dict().items()}
        except GeneratorError:
            raise
        except Exception:  # a build that cannot run on meta: the strict state-dict load below still checks
            expected = None
        if expected is not None:
            got = {k: tuple(np.shape(v)) for k, v in tensors.items()}
            wrong = sorted(k for k in expected if got.get(k) != expected[k])
            if wrong:
                k = wrong[0]
                raise GeneratorError(f"weights do not match the {self.name} architecture the config describes "
                                     f"({k}: config needs {expected[k]}, weights have {got.get(k)})")
        self.build_from_state(extra)
        for name in self.trained_modules() + self.extra_modules():
            module = getattr(self, name)
            prefix = f"{name}."
            sd = {k[len(prefix):]: torch.from_numpy(np.array(v)) for k, v in tensors.items() if k.startswith(prefix)}
            try:
                module.load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                raise GeneratorError(f"weights do not match the {self.name} architecture: {exc}") from exc
            module.eval()

    def _restore_extra_state(self, extra: Mapping[str, Any]) -> None:
        for key, value in extra.items():
            setattr(self, key, value)

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        """Create the modules from saved shape information (no data available)."""
        raise _missing(self, "build_from_state")


def class_shares(codes: np.ndarray, n_classes: int, private: bool) -> list[float]:
    """Shares of each class among the training items; uniform under DP, where unnoised counts would leak."""
    counts = np.ones(n_classes) if private else np.bincount(codes, minlength=n_classes).astype(float)
    return (counts / counts.sum()).tolist()


def unwrap_module(module: Any) -> Any:
    """Strip opacus' GradSampleModule (or any ``_module`` wrapper) from a module."""
    while hasattr(module, "_module"):
        module = module._module
    return module


def iterate_minibatches(tensors: tuple[Any, ...], batch_size: int, generator: Any) -> Iterator[tuple[Any, ...]]:
    import torch

    n = len(tensors[0])
    perm = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        idx = perm[start : start + batch_size]
        yield tuple(t[idx] for t in tensors)


class PlainTrainer:
    """Non-private training loop over a :class:`TorchGenerator`'s hooks (shuffled mini-batches)."""

    private = False

    def train(self, gen: TorchGenerator, data: Dataset, progress: bool = True) -> dict[str, Any]:
        import torch

        tensors = gen.train_tensors(data)
        optimizers = gen.make_optimizers()
        private = gen.private_modules()
        g = torch.Generator().manual_seed(gen.seed)
        steps = 0
        losses: list[float] = []
        with progress_bar(f"training {gen.name}", total=gen.epochs, enabled=progress) as advance:
            for epoch in range(gen.epochs):
                for name in gen.trained_modules():
                    getattr(gen, name).train()
                epoch_loss, nb = 0.0, 0
                for batch in iterate_minibatches(tensors, gen.batch_size, g):
                    for name in private:
                        optimizers[name].zero_grad(set_to_none=True)
                    loss = gen.batch_loss(batch)
                    loss.backward()
                    for name in private:
                        optimizers[name].step()
                    gen.after_private_step(batch, optimizers)
                    epoch_loss += float(loss.detach())
                    nb += 1
                    steps += 1
                losses.append(epoch_loss / max(nb, 1))
                gen.on_epoch_end(epoch)
                advance(1, f"loss {losses[-1]:.4f}")
        return {"private": False, "steps": steps, "epochs": gen.epochs, "final_loss": losses[-1] if losses else None}


class _NullBar:
    def __call__(self, n: int = 1, status: str = "") -> None:
        return None


class progress_bar:
    """Context manager yielding ``advance(n, status)``; a rich progress bar on a terminal.

    Kept here (the lowest package) so every genguard package shows the same bar.
    Disabled when ``enabled`` is false or ``GENGUARD_NO_PROGRESS`` is set.
    """

    def __init__(self, description: str, total: int | None, enabled: bool = True) -> None:
        self.description = description
        self.total = total
        self.enabled = enabled and not os.environ.get("GENGUARD_NO_PROGRESS")
        self._progress = None

    def __enter__(self):
        if not self.enabled:
            return _NullBar()
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.console import Console

        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        task = self._progress.add_task(self.description, total=self.total, status="")

        def advance(n: int = 1, status: str = "") -> None:
            self._progress.update(task, advance=n, status=status)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()


def as_int_array(values: Iterable[Any] | int | None, n: int, n_classes: int, what: str = "label") -> np.ndarray | None:
    """Validate a condition given as one value or one per sample."""
    if values is None:
        return None
    arr = np.asarray(values)
    if arr.ndim == 0:
        arr = np.full(n, int(arr))
    if arr.shape != (n,):
        raise GeneratorError(f"condition {what!r} must be a single value or {n} values, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise GeneratorError(f"condition {what!r} must be integer class codes, got {arr.dtype}")
    if arr.min() < 0 or arr.max() >= n_classes:
        raise GeneratorError(f"condition {what!r} must lie in [0, {n_classes - 1}], got [{arr.min()}, {arr.max()}]")
    return arr.astype(np.int64)


