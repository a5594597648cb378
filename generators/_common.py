"""Helpers shared by the reference generators: image metadata, label conditions, tabular encoding, delta rule."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators.base import Dataset, GeneratorError, Samples, as_int_array

#: Default delta of a one-shot private release; the same rule as guardrails.privacy.resolve_delta
#: (generators import nothing of genguard, so the two-line rule is repeated here).
DEFAULT_DELTA = 1e-5


def resolve_delta(delta: float | None, n: int) -> float:
    """1e-5 by default and always below 1/n (an explicit delta >= 1/n is refused)."""
    if delta is None:
        return DEFAULT_DELTA if DEFAULT_DELTA < 1.0 / n else 1.0 / (10.0 * n)
    if not (0.0 < delta < 1.0 / n):
        raise GeneratorError(f"delta={delta:g} must lie in (0, 1/n) = (0, {1.0 / n:.3g}) for n={n} records")
    return float(delta)


def check_n(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n <= 0:
        raise GeneratorError(f"number of samples must be a positive integer, got {n!r}")
    return int(n)


def sample_labels(name: str, n: int, label: Any, conditions: Mapping[str, Any], n_classes: int) -> np.ndarray:
    """The class of each of ``n`` samples of a generator conditioned on ``label`` alone: as asked, or balanced."""
    if conditions:
        raise GeneratorError(f"{name} takes only the condition 'label', got {sorted(conditions)}")
    n = check_n(n)
    labels = as_int_array(label, n, n_classes)
    if labels is None:
        labels = np.arange(n, dtype=np.int64) % n_classes
    return labels


class ImageMixin:
    """Shape/label bookkeeping of the class-conditional grey-image generators (digits)."""

    name: str
    seed: int

    def _fit_image_meta(self, data: Dataset, need_labels: bool = True) -> np.ndarray:
        if not isinstance(data, Dataset):
            raise GeneratorError(f"{type(self).__name__}.fit expects a generators.Dataset, got {type(data).__name__}")
        if data.modality != "image":
            raise GeneratorError(f"{self.name} trains on image data, got {data.modality} ({data.name})")
        x = np.asarray(data.x)
        if x.ndim != 3:
            raise GeneratorError(f"{self.name} expects grey images (n, H, W), got shape {x.shape} from {data.name!r}")
        if need_labels and "label" not in data.groups:
            raise GeneratorError(f"{self.name} is class-conditional: data set {data.name!r} has no 'label' group")
        self.image_shape_ = [int(x.shape[1]), int(x.shape[2])]
        if "label" in data.groups:
            labels = np.asarray(data.groups["label"], dtype=np.int64)
            self.n_classes_ = int(max(len(data.group_names.get("label", [])), int(labels.max()) + 1))
        else:
            labels = np.zeros(len(x), dtype=np.int64)
            self.n_classes_ = 1
        self.class_names_ = list(data.group_names.get("label", [str(i) for i in range(self.n_classes_)]))
        self.pixel_scale_ = int(data.metadata.get("pixel_scale", 1))
        self.levels_ = int(data.metadata.get("levels", 256))
        return labels

    def _image_state(self) -> dict[str, Any]:
        return {"image_shape_": self.image_shape_, "n_classes_": self.n_classes_, "class_names_": self.class_names_,
                "pixel_scale_": self.pixel_scale_, "levels_": self.levels_}

    def _sample_labels(self, n: int, label: Any, conditions: Mapping[str, Any]) -> np.ndarray:
        return sample_labels(self.name, n, label, conditions, self.n_classes_)

    def _condition_codes(self, n: int, seed: int | None, label: Any, conditions: Mapping[str, Any]) -> np.ndarray:
        """Class codes to sample for a generator fitted on images (the ``label`` condition, balanced by
        default) or on a table (its group condition, else drawn from ``class_prior_`` with ``seed + 1``)."""
        if self.data_modality_ == "image":
            return self._sample_labels(n, label, conditions)
        if label is not None:
            conditions = {**conditions, "label": label}
        codes = group_condition(self, n, conditions)
        if codes is None:
            prior = np.asarray(self.class_prior_, dtype=np.float64)
            codes = np.random.default_rng(int(seed if seed is not None else self.seed) + 1).choice(
                self.n_classes_, size=n, p=prior / prior.sum())
        return codes

    def _image_samples(self, images: np.ndarray, labels: np.ndarray, seed: int | None, **meta: Any) -> Samples:
        images = np.clip(np.asarray(images, dtype=np.float32).reshape(len(labels), *self.image_shape_), 0.0, 1.0)
        return Samples(
            data=images, modality="image", conditions={"label": labels},
            metadata={"generator": self.name, "seed": seed, "pixel_scale": self.pixel_scale_,
                      "class_names": self.class_names_, **meta},
        )

    def _flat_images(self, x: Any) -> np.ndarray:
        """Validate images given to ``log_prob`` and flatten them to (n, H*W)."""
        self.check_is_fitted()  # type: ignore[attr-defined]
        arr = np.asarray(x.x if isinstance(x, Dataset) else x, dtype=np.float32)
        if arr.ndim == 2 and list(arr.shape) == self.image_shape_:
            arr = arr[None]
        if arr.ndim != 3 or list(arr.shape[1:]) != self.image_shape_:
            raise GeneratorError(f"{self.name}.log_prob expects images of shape (n, {self.image_shape_[0]}, "
                                 f"{self.image_shape_[1]}), got {arr.shape}")
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise GeneratorError(f"{self.name}.log_prob expects finite pixel values in [0, 1]")
        return arr.reshape(len(arr), -1)


class TabularCodec:
    """Mixed numeric/categorical table <-> float matrix: standardised numerics, one-hot categoricals.

    A column is categorical when it is listed in ``categorical`` or is not
    numeric; integer-valued numeric columns are rounded back on decode.
    """

    def __init__(self, columns: list[str], numeric: list[str], categories: dict[str, list[Any]],
                 mean: list[float], std: list[float], integer: list[str], lo: list[float], hi: list[float]) -> None:
        self.columns = columns
        self.numeric = numeric
        self.categories = categories
        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.integer = integer
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)

    @classmethod
    def fit(cls, frame: Any, categorical: list[str] | tuple[str, ...] = ()) -> "TabularCodec":
        import pandas as pd

        if not isinstance(frame, pd.DataFrame) or frame.empty:
            raise GeneratorError("tabular data must be a non-empty pandas DataFrame")
        if frame.isna().any().any():
            bad = [c for c in frame.columns if frame[c].isna().any()]
            raise GeneratorError(f"tabular data has missing values in columns {bad}")
        numeric, categories = [], {}
        for col in frame.columns:
            s = frame[col]
            if col in categorical or not pd.api.types.is_numeric_dtype(s):
                categories[str(col)] = sorted(s.unique().tolist(), key=lambda v: (str(type(v)), v))
            else:
                numeric.append(str(col))
        num = frame[numeric].to_numpy(dtype=np.float64) if numeric else np.zeros((len(frame), 0))
        std = num.std(axis=0) if numeric else np.zeros(0)
        integer = [c for c in numeric if np.allclose(frame[c].to_numpy(dtype=np.float64) % 1, 0)]
        return cls([str(c) for c in frame.columns], numeric, categories, num.mean(axis=0).tolist(),
                   np.where(std > 0, std, 1.0).tolist(), integer, num.min(axis=0).tolist(), num.max(axis=0).tolist())

    def state(self) -> dict[str, Any]:
        return {"columns": self.columns, "numeric": self.numeric, "categories": self.categories,
                "mean": self.mean.tolist(), "std": self.std.tolist(), "integer": self.integer,
                "lo": self.lo.tolist(), "hi": self.hi.tolist()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "TabularCodec":
        return cls(**state)

    @property
    def n_numeric(self) -> int:
        return len(self.numeric)

    @property
    def cat_sizes(self) -> list[int]:
        return [len(v) for v in self.categories.values()]

    @property
    def width(self) -> int:
        return self.n_numeric + sum(self.cat_sizes)

    def encode(self, frame: Any) -> np.ndarray:
        missing = [c for c in self.columns if c not in frame.columns]
        if missing:
            raise GeneratorError(f"table lacks the columns {missing} the generator was fitted on")
        parts = [(frame[self.numeric].to_numpy(dtype=np.float64) - self.mean) / self.std]
        for col, cats in self.categories.items():
            idx = {v: i for i, v in enumerate(cats)}
            codes = np.array([idx.get(v, -1) for v in frame[col].tolist()])
            if (codes < 0).any():
                raise GeneratorError(f"column {col!r} holds categories not seen in training")
            parts.append(np.eye(len(cats))[codes])
        return np.concatenate(parts, axis=1).astype(np.float32)

    def decode(self, z: np.ndarray) -> Any:
        """Numerics unstandardised, clipped to the training range and rounded if integer; categoricals by argmax."""
        import pandas as pd

        z = np.asarray(z, dtype=np.float64)
        num = np.clip(z[:, : self.n_numeric] * self.std + self.mean, self.lo, self.hi)
        out: dict[str, Any] = {}
        for j, col in enumerate(self.numeric):
            out[col] = np.round(num[:, j]) if col in self.integer else num[:, j]
        start = self.n_numeric
        for col, cats in self.categories.items():
            k = len(cats)
            out[col] = [cats[i] for i in z[:, start:start + k].argmax(axis=1)]
            start += k
        return pd.DataFrame({c: out[c] for c in self.columns})


def tabular_groups(data: Dataset) -> tuple[str | None, np.ndarray, list[str]]:
    """The first group attribute of a table (diabetes: ``sex``), its codes and names; (None, zeros, []) if none."""
    if not data.groups:
        return None, np.zeros(len(data), dtype=np.int64), []
    attr = next(iter(data.groups))
    codes = np.asarray(data.groups[attr], dtype=np.int64)
    names = list(data.group_names.get(attr, [str(i) for i in range(int(codes.max()) + 1)]))
    return attr, codes, names


def group_condition(gen: Any, n: int, conditions: Mapping[str, Any]) -> np.ndarray | None:
    """Validate a table generator's group condition (e.g. ``sex=1``); None when not given."""
    attr = gen.group_attr_
    unknown = set(conditions) - ({attr} if attr else set())
    if unknown:
        allowed = f"only the condition {attr!r}" if attr else "no conditions"
        raise GeneratorError(f"{gen.name} takes {allowed}, got {sorted(unknown)}")
    if attr is None or attr not in conditions:
        return None
    return as_int_array(conditions[attr], n, len(gen.group_names_), what=attr)
