"""Synthetic-image detectors with one API: fit(real, fake), predict_proba, predict, save/load (safetensors, no pickle).

A detector scores fixed-size grey tiles (luma, so colour vs. grey is never a
cue), averages the tile logits of an image, and maps that score to a
calibrated P(synthetic) with a calibrator fitted on held-out images. Verdicts
use an ``inconclusive`` band between ``band[0]`` and ``band[1]``.

Kinds: ``spectral`` (Durall et al. 2020), ``dct`` (Frank et al. 2020),
``noise`` (residual statistics), ``npr`` (Tan et al. 2024 residual + a small
CNN trained from scratch on CPU) and ``ensemble`` (all four, stacked).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import numpy as np

from genguard.detectors import DetectorError
from genguard.detectors._io import as_rgb_array, atomic_write_bytes, progress_bar, to_grey
from genguard.detectors.calibration import Calibrator
from genguard.detectors.features import FEATURES, fit_surprise_model, npr_residual, surprise_features
from genguard.detectors.preprocess import augment as augment_image, grid_tiles, random_tiles

FORMAT = "genguard-detector/1"
VERDICTS = ("authentic", "inconclusive", "synthetic")
#: How an ensemble fits its stacking weights: ``holdout`` on held-out images of the training generators,
#: ``family`` on member logits cross-fitted by generator family (each fold's families unseen by its members).
STACK_CV = ("holdout", "family")


# --------------------------------------------------------------------------------------
# tile models: tiles -> logits
# --------------------------------------------------------------------------------------
class LinearTileModel:
    """Standardised hand-crafted features + L2-regularised logistic regression."""

    def __init__(self, feature: str, C: float = 1.0, seed: int = 0) -> None:
        self.feature, self.C, self.seed = feature, C, seed

    def features(self, tiles: np.ndarray) -> np.ndarray:
        fn = FEATURES[self.feature]
        return np.concatenate([fn(tiles[i:i + 1024]) for i in range(0, len(tiles), 1024)])

    def fit(self, tiles: np.ndarray, y: np.ndarray, progress: bool = False) -> "LinearTileModel":
        from sklearn.linear_model import LogisticRegression

        X = self.features(tiles)
        self.mean_ = X.mean(axis=0)
        self.scale_ = X.std(axis=0) + 1e-6
        lr = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed)
        lr.fit((X - self.mean_) / self.scale_, y)
        self.coef_ = lr.coef_[0].astype(np.float32)
        self.intercept_ = np.float32(lr.intercept_[0])
        return self

    def logits(self, tiles: np.ndarray) -> np.ndarray:
        X = self.features(tiles)
        return ((X - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"type": "linear", "feature": self.feature, "C": self.C, "seed": self.seed},
                {"mean": self.mean_, "scale": self.scale_, "coef": self.coef_,
                 "intercept": np.asarray([self.intercept_], dtype=np.float32)})

    @classmethod
    def from_state(cls, cfg: dict[str, Any], t: dict[str, np.ndarray]) -> "LinearTileModel":
        m = cls(cfg["feature"], cfg.get("C", 1.0), cfg.get("seed", 0))
        m.mean_, m.scale_, m.coef_ = t["mean"], t["scale"], t["coef"]
        m.intercept_ = np.float32(t["intercept"][0])
        return m


class SurpriseTileModel:
    """ZED-style: a causal Laplace density model fitted on the REAL tiles only; its per-tile coding surprise
    (cost minus its expected value, overall and by local activity) + a logistic regression over both classes."""

    def __init__(self, C: float = 1.0, seed: int = 0) -> None:
        self.C, self.seed = C, seed

    def features(self, tiles: np.ndarray) -> np.ndarray:
        # chunks of 64 tiles keep the (n, 62, 61, 6) neighbour stack in cache
        return np.concatenate([surprise_features(tiles[i:i + 64], self.w_, self.edges_, self.scales_)
                               for i in range(0, len(tiles), 64)])

    def fit(self, tiles: np.ndarray, y: np.ndarray, progress: bool = False) -> "SurpriseTileModel":
        from sklearn.linear_model import LogisticRegression

        real = tiles[np.asarray(y) == 0]
        if len(real) == 0:
            raise DetectorError("the surprise model needs real tiles to fit its density")
        self.w_, self.edges_, self.scales_ = fit_surprise_model(real[:4000])
        X = self.features(tiles)
        self.mean_, self.scale_ = X.mean(axis=0), X.std(axis=0) + 1e-6
        lr = LogisticRegression(C=self.C, max_iter=2000, random_state=self.seed).fit((X - self.mean_) / self.scale_, y)
        self.coef_, self.intercept_ = lr.coef_[0].astype(np.float32), np.float32(lr.intercept_[0])
        return self

    def logits(self, tiles: np.ndarray) -> np.ndarray:
        return ((self.features(tiles) - self.mean_) / self.scale_) @ self.coef_ + self.intercept_

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"type": "surprise", "C": self.C, "seed": self.seed},
                {"w": self.w_, "edges": self.edges_, "scales": self.scales_, "mean": self.mean_, "scale": self.scale_,
                 "coef": self.coef_, "intercept": np.asarray([self.intercept_], dtype=np.float32)})

    @classmethod
    def from_state(cls, cfg: dict[str, Any], t: dict[str, np.ndarray]) -> "SurpriseTileModel":
        m = cls(cfg.get("C", 1.0), cfg.get("seed", 0))
        try:
            m.w_, m.edges_, m.scales_ = t["w"], t["edges"], t["scales"]
            m.mean_, m.scale_, m.coef_ = t["mean"], t["scale"], t["coef"]
            m.intercept_ = np.float32(t["intercept"][0])
        except KeyError as exc:
            raise DetectorError(f"surprise model weights are incomplete (no {exc})") from None
        if m.w_.shape != (7,) or m.scales_.shape != (m.edges_.shape[0] + 1,) or m.coef_.shape != (8,):
            raise DetectorError("surprise model weights have the wrong shapes")
        return m


def _npr_net(width: int):
    from torch import nn

    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(),
        nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
        nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(),
        nn.Conv2d(4 * w, 8 * w, 3, stride=2, padding=1), nn.BatchNorm2d(8 * w), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8 * w, 1),
    )


class NPRTileModel:
    """NPR residual (x - up(down(x))) scaled to unit variance, then a 4-layer CNN trained from scratch."""

    def __init__(self, width: int = 8, epochs: int = 8, batch_size: int = 64, lr: float = 3e-3, seed: int = 0) -> None:
        self.width, self.epochs, self.batch_size, self.lr, self.seed = width, epochs, batch_size, lr, seed

    def _inputs(self, tiles: np.ndarray):
        import torch

        r = npr_residual(tiles) * 20.0  # residuals are ~0.01-0.05 of the range: bring them near unit scale
        return torch.from_numpy(np.ascontiguousarray(r[:, None], dtype=np.float32))

    def fit(self, tiles: np.ndarray, y: np.ndarray, progress: bool = False) -> "NPRTileModel":
        import torch

        torch.manual_seed(self.seed)
        self.net_ = _npr_net(self.width)
        x = self._inputs(tiles)
        yt = torch.from_numpy(np.asarray(y, dtype=np.float32))
        opt = torch.optim.AdamW(self.net_.parameters(), lr=self.lr, weight_decay=1e-4)
        steps = self.epochs * int(np.ceil(len(x) / self.batch_size))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=max(steps, 1))
        g = torch.Generator().manual_seed(self.seed)
        lossf = torch.nn.BCEWithLogitsLoss()
        self.net_.train()
        with progress_bar("training NPR CNN", total=self.epochs, enabled=progress) as advance:
            for _ in range(self.epochs):
                perm = torch.randperm(len(x), generator=g)
                tot, nb = 0.0, 0
                for i in range(0, len(x), self.batch_size):
                    idx = perm[i:i + self.batch_size]
                    if len(idx) < 2:
                        continue
                    xb = x[idx]
                    if torch.rand(1, generator=g).item() < 0.5:  # flips keep the 2x2 lattice phase-free
                        xb = torch.flip(xb, dims=[3])
                    opt.zero_grad(set_to_none=True)
                    loss = lossf(self.net_(xb).squeeze(1), yt[idx])
                    loss.backward()
                    opt.step()
                    sched.step()
                    tot += float(loss.detach())
                    nb += 1
                advance(1, f"loss {tot / max(nb, 1):.4f}")
        self.net_.eval()
        return self

    def _inference_net(self):
        """The network for scoring: each batch norm folded into its convolution (eval statistics, so the same
        function to float rounding) and channels-last memory, built once per fitted network."""
        import torch
        from torch import nn
        from torch.nn.utils.fusion import fuse_conv_bn_eval

        cached = getattr(self, "_scoring", None)
        if cached is not None and cached[0] is self.net_:
            return cached[1]
        self.net_.eval()
        layers, out = list(self.net_), []
        while layers:
            layer = layers.pop(0)
            if isinstance(layer, nn.Conv2d) and layers and isinstance(layers[0], nn.BatchNorm2d):
                layer = fuse_conv_bn_eval(layer, layers.pop(0))
            out.append(layer)
        net = nn.Sequential(*out).eval().to(memory_format=torch.channels_last)
        self._scoring = (self.net_, net)
        return net

    #: Tiles per forward pass when scoring: a 64-tile batch keeps the small convolutions' activations in cache
    #: (about 5x faster per tile on one core than batches of 512; benchmarks/detector_generalisation.py).
    SCORING_BATCH = 64

    def logits(self, tiles: np.ndarray) -> np.ndarray:
        import torch

        net, b, out = self._inference_net(), self.SCORING_BATCH, []
        with torch.no_grad():
            for i in range(0, len(tiles), b):
                x = self._inputs(tiles[i:i + b]).contiguous(memory_format=torch.channels_last)
                out.append(net(x).squeeze(1).numpy())
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        cfg = {"type": "npr", "width": self.width, "epochs": self.epochs, "batch_size": self.batch_size,
               "lr": self.lr, "seed": self.seed}
        return cfg, {k: v.detach().cpu().numpy() for k, v in self.net_.state_dict().items()}

    @classmethod
    def from_state(cls, cfg: dict[str, Any], t: dict[str, np.ndarray]) -> "NPRTileModel":
        import torch

        m = cls(cfg["width"], cfg["epochs"], cfg["batch_size"], cfg["lr"], cfg["seed"])
        m.net_ = _npr_net(m.width)
        try:
            m.net_.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in t.items()})
        except RuntimeError as exc:
            raise DetectorError(f"NPR weights do not fit the network ({str(exc).splitlines()[0]})") from None
        m.net_.eval()
        return m


# --------------------------------------------------------------------------------------
# the registry of tile models: a new one is one register_tile_model call
# --------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TileModelSpec:
    """A registered tile model: its class (``fit(tiles, y, progress=False)``, ``logits(tiles)``, ``state()``,
    classmethod ``from_state(cfg, tensors)``), how a detector builds an unfitted one, and one line for help."""

    name: str
    cls: type
    build: Callable[["Detector"], Any]
    description: str
    in_ensemble: bool = False


#: Tile models by name; each is a detector kind of its own, and those ``in_ensemble`` make up ``ensemble``.
TILE_MODELS: dict[str, TileModelSpec] = {}


def register_tile_model(name: str, cls: type, build: Callable[["Detector"], Any], description: str,
                        in_ensemble: bool = False) -> TileModelSpec:
    """Add a tile model under ``name`` (``genguard detector train --kind NAME`` then offers it).

    A model registered later stays out of ``ensemble`` unless ``in_ensemble``, so that what a
    default ensemble is, and the shipped detector file, do not change when a plug-in is installed.
    """
    if not name or name == "ensemble" or name in TILE_MODELS:
        raise DetectorError(f"tile model name {name!r} is taken or reserved")
    for attr in ("fit", "logits", "state", "from_state"):
        if not callable(getattr(cls, attr, None)):
            raise DetectorError(f"tile model {name!r}: {cls.__name__} has no {attr}(); a tile model needs "
                                "fit(tiles, y, progress=False), logits(tiles), state() and from_state(cfg, tensors)")
    spec = TileModelSpec(name, cls, build, description, in_ensemble)
    TILE_MODELS[name] = spec
    return spec


#: Entry points of this group are loaded once, on import: each names a callable that registers tile models.
ENTRY_POINT_GROUP = "genguard.detector_models"
#: Entry points that failed to load, by name, with the reason (never raised: one bad plug-in must not stop detect).
TILE_MODEL_PROBLEMS: dict[str, str] = {}


def _load_entry_points() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            hook = ep.load()
            if callable(hook):
                hook()
        except Exception as exc:  # a broken plug-in is reported by name, never imported half-way silently
            TILE_MODEL_PROBLEMS[ep.name] = f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def kinds() -> tuple[str, ...]:
    """Every detector kind: each registered tile model, then ``ensemble``."""
    return (*TILE_MODELS, "ensemble")


def ensemble_members() -> tuple[str, ...]:
    return tuple(n for n, s in TILE_MODELS.items() if s.in_ensemble)


def kind_descriptions() -> dict[str, str]:
    return {**{n: s.description for n, s in TILE_MODELS.items()},
            "ensemble": "all of " + ", ".join(ensemble_members()) + ", stacked by a logistic regression"}


def __getattr__(name: str) -> Any:  # KINDS, read when asked, so a registered model is in it
    if name == "KINDS":
        return kinds()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


register_tile_model("spectral", LinearTileModel, lambda d: LinearTileModel("spectral", C=d.C, seed=d.seed),
                    "azimuthally averaged log power spectrum (Durall et al. 2020) + logistic regression", in_ensemble=True)
register_tile_model("dct", LinearTileModel, lambda d: LinearTileModel("dct", C=d.C, seed=d.seed),
                    "log-magnitude of the tile's 2-D DCT (Frank et al. 2020) + logistic regression", in_ensemble=True)
register_tile_model("noise", LinearTileModel, lambda d: LinearTileModel("noise", C=d.C, seed=d.seed),
                    "noise-residual statistics + logistic regression", in_ensemble=True)
register_tile_model("npr", NPRTileModel,
                    lambda d: NPRTileModel(width=d.npr_width, epochs=d.npr_epochs, seed=d.seed),
                    "neighbouring-pixel residuals (Tan et al. 2024) + a small CNN", in_ensemble=True)
register_tile_model("surprise", SurpriseTileModel, lambda d: SurpriseTileModel(C=d.C, seed=d.seed),
                    "coding surprise under a density model of real tiles only (ZED-style) + logistic regression",
                    in_ensemble=True)
_load_entry_points()


# --------------------------------------------------------------------------------------
# the detector
# --------------------------------------------------------------------------------------
def nonnegative_logistic(X: np.ndarray, y: np.ndarray, C: float = 1.0) -> tuple[np.ndarray, float]:
    """(coef >= 0, intercept) of an L2 logistic regression (sklearn's objective: C * log-loss + |coef|^2 / 2).

    Stacking weights are kept non-negative (Breiman 1996, "Stacked regressions"): a member whose
    out-of-family logits run against the label is switched off rather than read backwards, since on the
    operators it did learn its evidence still points the right way. sklearn's LogisticRegression has no
    sign constraint, so this minimises the same objective with scipy's bounded L-BFGS-B.
    """
    from scipy.optimize import minimize
    from scipy.special import expit

    X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
    d = X.shape[1]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = X @ theta[:d] + theta[d]
        g = C * (expit(z) - y)
        return (float(C * np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * theta[:d] @ theta[:d]),
                np.r_[X.T @ g + theta[:d], g.sum()])

    res = minimize(loss, np.zeros(d + 1), jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * d + [(None, None)])
    return res.x[:d].copy(), float(res.x[d])


def band_verdict(p: float, band: tuple[float, float]) -> str:
    """``synthetic`` at or above the band, ``authentic`` at or below it, ``inconclusive`` inside (or for NaN)."""
    lo, hi = band
    if not math.isfinite(p):
        return "inconclusive"
    if p >= hi:
        return "synthetic"
    if p <= lo:
        return "authentic"
    return "inconclusive"


class Detector:
    """Synthetic-image detector: ``fit(real, fake)`` -> ``predict_proba(images)`` -> P(synthetic).

    ``real``/``fake``/``images`` are sequences of paths or arrays (grey, RGB or
    RGBA; uint8 or float in [0, 1]; any size). Parameters are fixed in
    ``__init__``; learned state ends in ``_``.

    fit(): images are split (stratified) into a training part and a held-out
    part of ``holdout``; every training image is used as is and in
    ``augment_copies`` randomly JPEG-compressed / resized / blurred copies
    (both classes alike); the tile models are fitted on ``train_tiles``
    random tiles per training image; the held-out part (also augmented) fits
    the stacking weights (ensemble: one half) and the calibrator (the other).

    ``stack_cv="family"`` (ensemble only; ``fit`` then needs ``fake_groups``,
    the generator family of each fake) fits the stacking weights instead on
    out-of-family member logits: the fake families are dealt into
    ``stack_folds`` folds (real images alongside, at random), each member is
    refitted without a fold's images and scores that fold, and a logistic
    regression with non-negative weights is fitted on those cross-fitted
    logits of every training image (Wolpert 1992's stacked generalisation,
    grouped like sklearn's StackingClassifier with a GroupKFold). A member
    that only memorised its training operators then earns little weight. The
    final members are fitted on all training images as before, and the
    calibrator on the whole held-out part.
    """

    kind: ClassVar[str] = "ensemble"

    def __init__(self, kind: str | None = None, patch: int = 64, max_tiles: int = 16, train_tiles: int = 4,
                 augment: bool = True, augment_copies: int = 1, holdout: float = 0.25, calibration: str = "platt",
                 band: tuple[float, float] = (0.2, 0.8), C: float = 0.5, npr_epochs: int = 8, npr_width: int = 8,
                 stack_cv: str = "holdout", stack_folds: int = 5, seed: int = 0, progress: bool = False) -> None:
        self.kind = kind or type(self).kind
        if self.kind not in kinds():
            raise DetectorError(f"unknown detector kind {self.kind!r}; choose one of {', '.join(kinds())}")
        if not (0.0 <= band[0] <= band[1] <= 1.0):
            raise DetectorError(f"inconclusive band must satisfy 0 <= low <= high <= 1, got {band}")
        if stack_cv not in STACK_CV:
            raise DetectorError(f"unknown stack_cv {stack_cv!r}; choose one of {', '.join(STACK_CV)}")
        if isinstance(stack_folds, bool) or not isinstance(stack_folds, (int, np.integer)) or stack_folds < 2:
            raise DetectorError(f"stack_folds must be an integer >= 2, got {stack_folds!r}")
        self.stack_cv, self.stack_folds = stack_cv, int(stack_folds)
        self.patch, self.max_tiles, self.train_tiles = patch, max_tiles, train_tiles
        self.augment, self.augment_copies, self.holdout = augment, augment_copies, holdout
        self.calibration, self.band, self.C = calibration, tuple(band), C
        self.npr_epochs, self.npr_width, self.seed, self.progress = npr_epochs, npr_width, seed, progress
        Calibrator(calibration)  # validate early

    # -- parameters -----------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("kind", "patch", "max_tiles", "train_tiles", "augment", "augment_copies",
                                              "holdout", "calibration", "band", "C", "npr_epochs", "npr_width", "stack_cv",
                                              "stack_folds", "seed")}

    def clone(self) -> "Detector":
        """An unfitted detector with the same parameters (for leave-one-generator-out refits)."""
        return make_detector(**self.get_params(), progress=self.progress)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_params().items())})"

    def member_names(self) -> tuple[str, ...]:
        if self.kind != "ensemble":
            return (self.kind,)
        return tuple(getattr(self, "ensemble_members_", None) or ensemble_members())

    def _new_member(self, name: str):
        return TILE_MODELS[name].build(self)

    # -- images -> tiles --------------------------------------------------------------
    def _grey(self, images: Sequence[Any]) -> list[np.ndarray]:
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim == 2):
            images = [images]
        return [to_grey(as_rgb_array(im)) for im in images]

    def _image_tiles(self, greys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        tiles, owner = [], []
        for i, g in enumerate(greys):
            t = grid_tiles(g, self.patch, self.max_tiles)
            tiles.append(t)
            owner.append(np.full(len(t), i))
        return np.concatenate(tiles), np.concatenate(owner)

    def _member_image_logits(self, greys: list[np.ndarray], members: dict[str, Any] | None = None) -> np.ndarray:
        """(n_images, n_members) mean tile logit of each member (of ``members``, default the fitted ones)."""
        members = self.members_ if members is None else members
        tiles, owner = self._image_tiles(greys)
        cols = []
        for name in self.member_names():
            lt = members[name].logits(tiles)
            cols.append(np.bincount(owner, weights=lt, minlength=len(greys)) / np.bincount(owner, minlength=len(greys)))
        return np.stack(cols, axis=1)

    def _combine(self, member_logits: np.ndarray) -> np.ndarray:
        if self.kind == "ensemble":
            return member_logits @ self.stack_coef_ + self.stack_intercept_
        return member_logits[:, 0]

    # -- fitting --------------------------------------------------------------------
    def fit(self, real: Sequence[Any], fake: Sequence[Any], fake_groups: Sequence[str] | None = None) -> "Detector":
        """Fit on ``real`` and ``fake`` images; ``fake_groups`` names each fake's generator family
        (needed by ``stack_cv="family"``, ignored otherwise)."""
        from sklearn.model_selection import train_test_split

        rng = np.random.default_rng(self.seed)
        real_rgb = [as_rgb_array(im) for im in real]
        fake_rgb = [as_rgb_array(im) for im in fake]
        if len(real_rgb) < 4 or len(fake_rgb) < 4:
            raise DetectorError(f"need at least 4 real and 4 fake images to fit, got {len(real_rgb)} and {len(fake_rgb)}")
        family_cv = self.kind == "ensemble" and self.stack_cv == "family"
        if family_cv:
            if fake_groups is None:
                raise DetectorError("stack_cv='family' needs fake_groups: the generator family of each fake image")
            fake_groups = np.asarray([str(g) for g in fake_groups])
            if len(fake_groups) != len(fake_rgb):
                raise DetectorError(f"fake_groups has {len(fake_groups)} entries for {len(fake_rgb)} fake images")
            if len(set(fake_groups.tolist())) < 2:
                raise DetectorError("stack_cv='family' needs fakes of at least two generator families")
        rgb = real_rgb + fake_rgb
        y = np.r_[np.zeros(len(real_rgb), int), np.ones(len(fake_rgb), int)]
        tr, ho = train_test_split(np.arange(len(y)), test_size=self.holdout, stratify=y, random_state=self.seed)

        def expand(idx: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
            ims, lab, src = [], [], []
            for i in idx:
                ims.append(rgb[i])
                lab.append(y[i])
                src.append(i)
                for _ in range(self.augment_copies if self.augment else 0):
                    ims.append(augment_image(rgb[i], rng))
                    lab.append(y[i])
                    src.append(i)
            return [to_grey(im) for im in ims], np.asarray(lab), np.asarray(src)

        tr_grey, tr_y, tr_src = expand(tr)
        tiles, ty, towner = [], [], []
        for j, (g, lab) in enumerate(zip(tr_grey, tr_y)):
            t = random_tiles(g, self.train_tiles, rng, self.patch)
            tiles.append(t)
            ty.append(np.full(len(t), lab))
            towner.append(np.full(len(t), j))
        tiles_arr, ty_arr, towner_arr = np.concatenate(tiles), np.concatenate(ty), np.concatenate(towner)

        self.members_ = {}
        self.ensemble_members_ = self.member_names()  # fixed at fit: the stacking weights follow this order
        with progress_bar(f"fitting {self.kind} detector", total=len(self.member_names()), enabled=self.progress) as adv:
            for name in self.member_names():
                m = self._new_member(name)
                m.fit(tiles_arr, ty_arr, progress=self.progress)
                self.members_[name] = m
                adv(1, name)

        ho_grey, ho_y, _ = expand(ho)
        ml = self._member_image_logits(ho_grey)
        self.stack_info_ = {"cv": self.stack_cv if self.kind == "ensemble" else None}
        if family_cv:
            groups = np.r_[np.full(len(real_rgb), ""), fake_groups]
            fold, folds = self._family_folds(groups, y, tr_src)
            oof = self._cross_fitted_logits(tr_grey, tiles_arr, ty_arr, towner_arr, fold, len(folds))
            self.stack_coef_, self.stack_intercept_ = nonnegative_logistic(oof, tr_y, C=1.0)
            self.stack_info_.update({"folds": folds, "n_images": int(len(tr_y))})
            cal_idx = np.arange(len(ho_y))
        elif self.kind == "ensemble":
            from sklearn.linear_model import LogisticRegression

            idx = np.arange(len(ho_y))
            try:
                a, b = train_test_split(idx, test_size=0.5, stratify=ho_y, random_state=self.seed)
            except ValueError:
                a = b = idx
            if len(np.unique(ho_y[a])) < 2 or len(np.unique(ho_y[b])) < 2:
                a = b = idx
            lr = LogisticRegression(C=1.0).fit(ml[a], ho_y[a])
            self.stack_coef_ = lr.coef_[0].astype(np.float64)
            self.stack_intercept_ = float(lr.intercept_[0])
            cal_idx = b
        else:
            cal_idx = np.arange(len(ho_y))
        self.calibrator_ = Calibrator(self.calibration).fit(self._combine(ml[cal_idx]), ho_y[cal_idx])
        self.n_train_ = {"real": int(len(real_rgb)), "fake": int(len(fake_rgb)), "train_tiles": int(len(tiles_arr)),
                         "holdout_images": int(len(ho_y))}
        self.fitted_ = True
        return self

    def _family_folds(self, groups: np.ndarray, y: np.ndarray, src: np.ndarray) -> tuple[np.ndarray, list[list[str]]]:
        """(fold of each training image, families of each fold): families dealt at random into
        min(stack_folds, n_families) folds, real images spread evenly over the same folds at random."""
        rng = np.random.default_rng([self.seed, 1])  # its own stream: the augmentation and tiles stay as without it
        names = sorted(set(groups[src][y[src] == 1].tolist()))
        if len(names) < 2:
            raise DetectorError("stack_cv='family' needs training fakes of at least two generator families")
        k = min(self.stack_folds, len(names))
        of_family = {n: i % k for i, n in enumerate(rng.permutation(names).tolist())}
        real_ids = np.unique(src[y[src] == 0])
        of_real = dict(zip(real_ids.tolist(), (rng.permutation(len(real_ids)) % k).tolist()))
        fold = np.array([of_real[i] if y[i] == 0 else of_family[groups[i]] for i in src.tolist()])
        return fold, [sorted(n for n, f in of_family.items() if f == j) for j in range(k)]

    def _cross_fitted_logits(self, greys: list[np.ndarray], tiles: np.ndarray, ty: np.ndarray, towner: np.ndarray,
                             fold: np.ndarray, k: int) -> np.ndarray:
        """(n_images, n_members) logits of each training image by members fitted without its fold."""
        out = np.zeros((len(greys), len(self.member_names())))
        with progress_bar("cross-fitting members by family", total=k, enabled=self.progress) as adv:
            for j in range(k):
                keep = fold[towner] != j
                if len(np.unique(ty[keep])) < 2:
                    raise DetectorError(f"stack fold {j} leaves a single class to fit on; use fewer stack_folds")
                members = {}
                for name in self.member_names():
                    members[name] = self._new_member(name).fit(tiles[keep], ty[keep], progress=False)
                held = np.nonzero(fold == j)[0]
                out[held] = self._member_image_logits([greys[i] for i in held], members)
                adv(1, f"fold {j + 1}")
        return out

    def check_is_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise DetectorError(f"{type(self).__name__} is not fitted; call fit() or load() first")

    # -- prediction -----------------------------------------------------------------
    def decision_function(self, images: Sequence[Any]) -> np.ndarray:
        """Raw (uncalibrated) score per image; higher means more likely synthetic."""
        self.check_is_fitted()
        greys = self._grey(images)
        if not greys:
            return np.zeros(0)
        return self._combine(self._member_image_logits(greys))

    def predict_proba(self, images: Sequence[Any]) -> np.ndarray:
        """Calibrated P(synthetic) per image."""
        s = self.decision_function(images)
        return self.calibrator_(s) if len(s) else s

    def member_probabilities(self, images: Sequence[Any]) -> dict[str, np.ndarray]:
        """Each member's mean tile logit passed through a logistic (uncalibrated; for explanation only)."""
        self.check_is_fitted()
        ml = self._member_image_logits(self._grey(images))
        return {n: 1.0 / (1.0 + np.exp(-ml[:, i])) for i, n in enumerate(self.member_names())}

    def verdict(self, p: float) -> str:
        return band_verdict(p, self.band)

    def predict(self, images: Sequence[Any]) -> list[str]:
        """``synthetic`` / ``authentic`` / ``inconclusive`` per image."""
        return [self.verdict(float(p)) for p in self.predict_proba(images)]

    # -- persistence ----------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """One safetensors file: arrays as tensors, config and calibration as JSON metadata (no pickle)."""
        from safetensors.numpy import save as st_save

        self.check_is_fitted()
        tensors: dict[str, np.ndarray] = {}
        members = {}
        for name, m in self.members_.items():
            cfg, t = m.state()
            members[name] = cfg
            for k, v in t.items():
                tensors[f"{name}.{k}"] = np.ascontiguousarray(np.asarray(v, dtype=np.float32))
        cal_cfg, cal_t = self.calibrator_.state()
        tensors.update({k: np.asarray(v, dtype=np.float64) for k, v in cal_t.items()})
        params = self.get_params()
        params["band"] = list(params["band"])
        config = {"format": FORMAT, "params": params, "members": members, "calibration": cal_cfg,
                  "n_train": self.n_train_, "info": getattr(self, "info_", {})}
        if self.kind == "ensemble":
            config["stack"] = {"coef": [float(c) for c in self.stack_coef_], "intercept": self.stack_intercept_,
                               **{k: v for k, v in getattr(self, "stack_info_", {}).items() if k != "cv"},
                               "cv": self.stack_cv}
        data = st_save(tensors, metadata={"genguard": json.dumps(config)})
        return atomic_write_bytes(path, data)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Detector":
        return load_detector(path)


class SpectralDetector(Detector):
    kind = "spectral"


class DCTDetector(Detector):
    kind = "dct"


class NoiseDetector(Detector):
    kind = "noise"


class NPRDetector(Detector):
    kind = "npr"


class EnsembleDetector(Detector):
    kind = "ensemble"


_CLASSES = {c.kind: c for c in (SpectralDetector, DCTDetector, NoiseDetector, NPRDetector, EnsembleDetector)}


def make_detector(kind: str = "ensemble", **params: Any) -> Detector:
    if kind not in kinds():
        raise DetectorError(f"unknown detector kind {kind!r}; choose one of {', '.join(kinds())}")
    params["band"] = tuple(params.get("band", (0.2, 0.8)))
    cls = _CLASSES.get(kind)
    return cls(**params) if cls is not None else Detector(kind=kind, **params)


def load_detector(path: str | os.PathLike) -> Detector:
    """Read a detector written by :meth:`Detector.save`; raises DetectorError naming the file if unusable."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise DetectorError(f"{path}: no such detector file")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
        config = json.loads(meta["genguard"])
    except Exception as exc:  # safetensors/json raise several types for a bad file
        raise DetectorError(f"{path}: not a genguard detector file ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise DetectorError(f"{path}: not a {FORMAT} file")
    try:
        det = make_detector(**config["params"])
        det.members_ = {}
        for name, cfg in config["members"].items():
            if name not in TILE_MODELS:
                raise DetectorError(f"tile model {name!r} is not registered here "
                                    f"(known: {', '.join(TILE_MODELS)})")
            t = {k[len(name) + 1:]: v for k, v in tensors.items() if k.startswith(name + ".")}
            det.members_[name] = TILE_MODELS[name].cls.from_state(cfg, t)
        det.ensemble_members_ = tuple(det.members_)
        if det.kind == "ensemble":
            det.stack_coef_ = np.asarray(config["stack"]["coef"], dtype=np.float64)
            det.stack_intercept_ = float(config["stack"]["intercept"])
            det.stack_info_ = {k: v for k, v in config["stack"].items() if k not in ("coef", "intercept")}
        det.calibrator_ = Calibrator.from_state(config["calibration"], tensors)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DetectorError):
            raise DetectorError(f"{path}: {exc}") from None
        raise DetectorError(f"{path}: incomplete detector file ({exc.__class__.__name__}: {exc})") from None
    det.n_train_ = config.get("n_train", {})
    det.info_ = config.get("info", {})
    det.fitted_ = True
    return det


DEFAULT_DETECTOR = Path(__file__).with_name("default_detector.safetensors")


def load_default() -> Detector:
    """The shipped default detector (a five-member ensemble: spectral, dct, noise, npr, surprise).

    Trained by benchmarks/train_default_detector.py on 64x64 luma patches of
    the photos scikit-image, scikit-learn and matplotlib ship (real) against
    ten small generator families made there (conv decoders with transposed
    convolution, nearest/bilinear/bicubic resize-convolution and pixel
    shuffle, a one-step diffusion denoiser, an untrained invertible flow, a
    block VAE, a linear autoregressive sampler, PCA+GMM), most of them
    reconstructing the real patches so content is no cue, every fake in its
    real twin's random format. Its inconclusive band is set on patches kept
    out of fitting. It has never seen a large modern generator: a low score
    is no evidence of authenticity, and ``genguard detector train`` on your
    generators' outputs beats it on those generators.
    """
    if not DEFAULT_DETECTOR.is_file():
        raise DetectorError(f"{DEFAULT_DETECTOR}: the default detector is missing; run benchmarks/train_default_detector.py "
                            "or pass --detector FILE")
    return load_detector(DEFAULT_DETECTOR)
