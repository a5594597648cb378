"""Calibration of raw detector scores into probabilities (Platt or isotonic), stored as plain arrays."""
from __future__ import annotations

from typing import Any

import numpy as np

from genguard.detectors import DetectorError


class Calibrator:
    """Maps a raw score (a logit) to P(synthetic), fitted on held-out data.

    ``method="platt"`` fits a regularised logistic curve a*s + b (smooth, never
    exactly 0 or 1); ``"isotonic"`` fits a monotone step function (no
    parametric assumption, but needs more held-out data and saturates at 0/1
    on separable data, which is why it is not the default).
    """

    def __init__(self, method: str = "platt") -> None:
        if method not in ("platt", "isotonic"):
            raise DetectorError(f"unknown calibration {method!r}; use 'platt' or 'isotonic'")
        self.method = method

    def fit(self, scores: np.ndarray, y: np.ndarray) -> "Calibrator":
        s = np.asarray(scores, dtype=np.float64).ravel()
        y = np.asarray(y).ravel()
        if len(np.unique(y)) < 2:
            raise DetectorError("calibration needs held-out images of both classes")
        if self.method == "platt":
            from sklearn.linear_model import LogisticRegression

            mu, sd = float(s.mean()), float(s.std() + 1e-9)
            lr = LogisticRegression(C=1.0).fit(((s - mu) / sd)[:, None], y)
            self.a_ = float(lr.coef_[0, 0] / sd)
            self.b_ = float(lr.intercept_[0] - lr.coef_[0, 0] * mu / sd)
        else:
            from sklearn.isotonic import IsotonicRegression

            ir = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(s, y)
            self.x_ = np.asarray(ir.X_thresholds_, dtype=np.float64)
            self.y_ = np.asarray(ir.y_thresholds_, dtype=np.float64)
        return self

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a_ * s + self.b_)))
        return np.interp(s, self.x_, self.y_)

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        if self.method == "platt":
            return {"method": "platt", "a": self.a_, "b": self.b_}, {}
        return {"method": "isotonic"}, {"calibration.x": self.x_, "calibration.y": self.y_}

    @classmethod
    def from_state(cls, cfg: dict[str, Any], tensors: dict[str, np.ndarray]) -> "Calibrator":
        c = cls(cfg["method"])
        if c.method == "platt":
            c.a_, c.b_ = float(cfg["a"]), float(cfg["b"])
        else:
            c.x_, c.y_ = tensors["calibration.x"].astype(np.float64), tensors["calibration.y"].astype(np.float64)
        return c
