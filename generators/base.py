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

from genguard.generators._io import atomic_write_bytes, atomic_write_json

MODALITIES = ("image", "text", "tabular", "sequence")
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "weights.safetensors"


class GeneratorError(ValueError):
    """Raised for bad input to a generator (wrong shapes, NaN, unknown condition, bad files)."""


@dataclasses.dataclass
class Dataset:
    """Training data handed to ``Generator.fit``.

    ``x`` holds the items: images as float32 ``(n, H, W)`` or ``(n, H, W, C)`` in
    [0, 1]; tables as a ``pandas.DataFrame``; text as a list of strings;
    sequences as a list of integer arrays. ``groups`` maps an attribute name to
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

    def __len__(self) -> int:
        return len(self.x)

    def subset(self, idx: np.ndarray, name: str | None = None) -> "Dataset":
        idx = np.asarray(idx)
        if self.modality in ("image",):
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

    def __len__(self) -> int:
        return len(self.data)


class Generator:
    """Base class of every generator. Subclasses set ``name`` and ``modality``.

    Only :meth:`sample` is required to audit and tag a user's model; the rest
    of the protocol is needed to train, save and load it through genguard.
    """

    name: ClassVar[str] = "generator"
    modality: ClassVar[str] = "image"
    conditional_on: ClassVar[tuple[str, ...]] = ()

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
        raise NotImplementedError

    def sample(self, n: int, seed: int | None = None, **conditions: Any) -> Samples:
        raise NotImplementedError

    def log_prob(self, x: Any) -> np.ndarray:  # optional
        raise NotImplementedError(f"{type(self).__name__} has no explicit density")

    def _state_tensors(self) -> dict[str, np.ndarray]:
        """Learned state as named arrays; torch generators override via their modules."""
        raise NotImplementedError

    def _load_state_tensors(self, tensors: Mapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        raise NotImplementedError

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
            "params": _jsonable(self.get_params()),
            "state": _jsonable(self._extra_state()),
        }
        atomic_write_json(d / CONFIG_FILE, config)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Generator":
        """Rebuild a generator saved by :meth:`save`; never unpickles."""
        from safetensors.numpy import load_file

        d = Path(directory)
        config = read_config(d)
        if config["generator"] != cls.name:
            raise GeneratorError(f"{d / CONFIG_FILE}: holds a {config['generator']!r} model, not {cls.name!r}")
        obj = cls(**config.get("params", {}))
        weights = d / WEIGHTS_FILE
        if not weights.is_file():
            raise GeneratorError(f"{weights}: missing weights file")
        try:
            tensors = load_file(str(weights))
        except Exception as exc:  # safetensors raises its own error types
            raise GeneratorError(f"{weights}: unreadable safetensors file ({exc})") from exc
        obj._load_state_tensors(tensors, config.get("state", {}))
        obj.fitted_ = True
        return obj


def read_config(directory: Path) -> dict[str, Any]:
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise GeneratorError(f"{path}: no saved generator here (config.json missing)")
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GeneratorError(f"{path}: unreadable config ({exc})") from exc
    if not isinstance(config, dict) or "generator" not in config:
        raise GeneratorError(f"{path}: not a genguard generator config")
    return config


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj


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

    # Training defaults that every torch generator takes in __init__.
    epochs: int
    batch_size: int
    lr: float
    seed: int

    def build(self, data: Dataset) -> None:
        raise NotImplementedError

    def private_modules(self) -> tuple[str, ...]:
        raise NotImplementedError

    def make_optimizers(self) -> dict[str, Any]:
        import torch

        return {name: torch.optim.Adam(getattr(self, name).parameters(), lr=self.lr) for name in self.trained_modules()}

    def trained_modules(self) -> tuple[str, ...]:
        return self.private_modules()

    def train_tensors(self, data: Dataset) -> tuple[Any, ...]:
        raise NotImplementedError

    def batch_loss(self, batch: tuple[Any, ...]) -> Any:
        raise NotImplementedError

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
        raise NotImplementedError


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
