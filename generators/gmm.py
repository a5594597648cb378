"""Gaussian mixture generator (scikit-learn's GaussianMixture), one mixture per class or group, for images or tables."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators._common import ImageMixin, TabularCodec, check_n, tabular_groups
from genguard.generators.base import Dataset, Generator, GeneratorError, Samples, progress_bar
from genguard.generators.registry import register


@register
class GaussianMixtureGenerator(ImageMixin, Generator):
    """A scikit-learn ``GaussianMixture`` fitted per class (digits: per ``label``; tables: per group, e.g. ``sex``).

    Images are modelled as flat pixel vectors; tables through
    :class:`generators._common.TabularCodec` (standardised numerics, one-hot
    categoricals, decoded by argmax). The fitted mixtures are stored as plain
    arrays (weights, means, full covariances) and sampled with numpy, so the
    same seed gives the same samples before and after ``save``/``load``.
    ``log_prob`` is the exact mixture density (over the continuous encoding).
    Training is not differentially private (EM sees the data directly).
    """

    name = "gmm"
    modality = "image"  # replaced per instance by the modality of the fitted data
    conditional_on = ("label",)
    default_data = "digits"
    quick_params = {"n_components": 2, "max_iter": 20}
    modalities = ("image", "tabular")
    dp_mechanism = "none"  # EM sees the data directly

    def __init__(self, n_components: int = 8, covariance_type: str = "full", reg_covar: float = 1e-2,
                 max_iter: int = 100, n_init: int = 1, seed: int = 0) -> None:
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.seed = seed

    # -- fitting ------------------------------------------------------------------------
    def fit(self, data: Dataset, trainer: Any = None, progress: bool = True) -> "GaussianMixtureGenerator":
        from sklearn.mixture import GaussianMixture

        if trainer is not None and getattr(trainer, "private", False):
            raise GeneratorError("gmm is fitted by EM, not by gradient steps: it cannot train with DP-SGD; "
                                 "use dpmerf, or a gradient-trained generator, for private training")
        if self.covariance_type not in ("full", "diag", "tied", "spherical"):
            raise GeneratorError(f"unknown covariance_type {self.covariance_type!r}")
        if not isinstance(data, Dataset):
            raise GeneratorError(f"gmm.fit expects a generators.Dataset, got {type(data).__name__}")
        if data.modality == "image":
            codes = self._fit_image_meta(data, need_labels=False)
            x = np.asarray(data.x, dtype=np.float64).reshape(len(data), -1)
            self.group_attr_ = "label" if "label" in data.groups else None
            self.group_names_ = self.class_names_
        elif data.modality == "tabular":
            self.codec_ = TabularCodec.fit(data.x, data.metadata.get("categorical", ()))
            x = self.codec_.encode(data.x).astype(np.float64)
            self.group_attr_, codes, self.group_names_ = tabular_groups(data)
            self.n_classes_ = max(1, len(self.group_names_))
        else:
            raise GeneratorError(f"gmm models image or tabular data, got {data.modality} ({data.name})")
        self.data_modality_ = data.modality
        k, d = self.n_components, x.shape[1]
        weights = np.zeros((self.n_classes_, k))
        means = np.zeros((self.n_classes_, k, d))
        covs = np.zeros((self.n_classes_, k, d, d))
        with progress_bar("fitting gmm", total=self.n_classes_, enabled=progress) as advance:
            for c in range(self.n_classes_):
                xc = x[codes == c]
                if len(xc) < k:
                    raise GeneratorError(f"class {c} has {len(xc)} items, fewer than n_components={k}")
                gm = GaussianMixture(k, covariance_type=self.covariance_type, reg_covar=self.reg_covar,
                                     max_iter=self.max_iter, n_init=self.n_init, random_state=self.seed).fit(xc)
                weights[c], means[c], covs[c] = gm.weights_, gm.means_, _full_covariances(gm, k, d)
                advance(1, f"class {c}")
        self.class_prior_ = np.bincount(codes, minlength=self.n_classes_) / len(codes)
        self.weights_, self.means_, self.covariances_ = weights, means, covs
        self._factorise()
        self.training_report_ = {"private": False, "mechanism": "EM (scikit-learn)", "classes": self.n_classes_}
        self.fitted_ = True
        return self

    def _factorise(self) -> None:
        self.chol_ = np.linalg.cholesky(self.covariances_)

    @property
    def modality(self) -> str:  # type: ignore[override]
        return getattr(self, "data_modality_", "image")

    # -- persistence --------------------------------------------------------------------
    def _state_tensors(self) -> dict[str, np.ndarray]:
        return {"weights": self.weights_, "means": self.means_, "covariances": self.covariances_,
                "class_prior": self.class_prior_}

    def _extra_state(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data_modality_": self.data_modality_, "group_attr_": self.group_attr_,
                               "group_names_": self.group_names_, "n_classes_": self.n_classes_}
        if self.data_modality_ == "image":
            out.update(self._image_state())
        else:
            out["codec_"] = self.codec_.state()
        return out

    def _load_state_tensors(self, tensors: Mapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        for key, value in extra.items():
            setattr(self, key, TabularCodec.from_state(value) if key == "codec_" else value)
        try:
            self.weights_, self.means_ = np.asarray(tensors["weights"]), np.asarray(tensors["means"])
            self.covariances_, self.class_prior_ = np.asarray(tensors["covariances"]), np.asarray(tensors["class_prior"])
            self._factorise()
        except (KeyError, np.linalg.LinAlgError) as exc:
            raise GeneratorError(f"gmm weights are incomplete or not positive definite ({exc})") from None

    # -- sampling and density -----------------------------------------------------------------
    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        self.check_is_fitted()
        n = check_n(n)
        codes = self._condition_codes(n, seed, label, conditions)
        rng = np.random.default_rng(int(seed if seed is not None else self.seed))
        d = self.means_.shape[-1]
        out = np.zeros((n, d))
        for c in np.unique(codes):
            idx = np.flatnonzero(codes == c)
            comp = rng.choice(self.n_components, size=len(idx), p=self.weights_[c] / self.weights_[c].sum())
            eps = rng.standard_normal((len(idx), d))
            out[idx] = self.means_[c, comp] + np.einsum("nij,nj->ni", self.chol_[c, comp], eps)
        if self.data_modality_ == "image":
            return self._image_samples(out, codes, seed)
        frame = self.codec_.decode(out)
        conds = {self.group_attr_: codes} if self.group_attr_ else {}
        return Samples(data=frame, modality="tabular", conditions=conds,
                       metadata={"generator": self.name, "seed": seed, "group_names": self.group_names_})

    def log_prob(self, x: Any) -> np.ndarray:
        """Exact log-density of the mixture (marginal over classes) at each item (flat image or encoded row)."""
        if self.data_modality_ == "image":
            flat = self._flat_images(x).astype(np.float64)
        else:
            self.check_is_fitted()
            flat = self.codec_.encode(x.x if isinstance(x, Dataset) else x).astype(np.float64)
        d = flat.shape[1]
        logdet = 2 * np.log(np.diagonal(self.chol_, axis1=-2, axis2=-1)).sum(-1)  # (C, K)
        terms = []
        for c in range(self.n_classes_):
            for j in range(self.n_components):
                diff = flat - self.means_[c, j]
                sol = np.linalg.solve(self.chol_[c, j], diff.T)
                maha = (sol ** 2).sum(0)
                lw = np.log(self.class_prior_[c] + 1e-300) + np.log(self.weights_[c, j] + 1e-300)
                terms.append(lw - 0.5 * (d * np.log(2 * np.pi) + logdet[c, j] + maha))
        t = np.stack(terms)
        m = t.max(0)
        return m + np.log(np.exp(t - m).sum(0))


def _full_covariances(gm: Any, k: int, d: int) -> np.ndarray:
    cov = np.asarray(gm.covariances_)
    if gm.covariance_type == "full":
        return cov
    if gm.covariance_type == "diag":
        return np.stack([np.diag(c) for c in cov])
    if gm.covariance_type == "tied":
        return np.repeat(cov[None], k, axis=0)
    return np.stack([np.eye(d) * c for c in cov])  # spherical
