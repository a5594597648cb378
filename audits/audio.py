"""Audio measures: log-mel features, a locally trained clip classifier (fad_local's feature space, TSTR), MSE and STOI.

Nothing here is a published audio model: the classifier is a small CNN on
log-mel spectrograms trained on the audit's own real train split, so
``fad_local`` (the Fréchet distance in its penultimate layer) is comparable
between runs on the same data and settings only, never with VGGish-based FAD.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from genguard.audits import AuditError

N_MELS = 40
#: STOI's own internal rate (pystoi resamples to it); clips are compared there.
STOI_RATE = 10_000


def _mel_filterbank(rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular mel filters (HTK mel scale), (n_mels, n_fft // 2 + 1)."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    edges = hz(np.linspace(mel(0.0), mel(rate / 2.0), n_mels + 2))
    bins = np.linspace(0.0, rate / 2.0, n_fft // 2 + 1)
    fb = np.zeros((n_mels, len(bins)))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        fb[m] = np.clip(np.minimum((bins - lo) / (mid - lo + 1e-9), (hi - bins) / (hi - mid + 1e-9)), 0.0, None)
    return fb.astype(np.float32)


def log_mel(clips: Any, rate: int, n_mels: int = N_MELS) -> np.ndarray:
    """Log-mel spectrograms (n, n_mels, frames) with 32 ms windows and 16 ms hops."""
    import torch

    x = np.asarray(clips, dtype=np.float32)
    if x.ndim != 2:
        raise AuditError(f"audio clips must be (n, samples), got shape {x.shape}")
    n_fft = int(2 ** np.ceil(np.log2(0.032 * rate)))
    hop = n_fft // 2
    if x.shape[1] < n_fft:
        raise AuditError(f"clips of {x.shape[1]} samples are shorter than one {n_fft}-sample analysis window")
    fb = torch.from_numpy(_mel_filterbank(rate, n_fft, n_mels))
    out = []
    for s in range(0, len(x), 256):
        spec = torch.stft(torch.from_numpy(x[s:s + 256]), n_fft, hop, window=torch.hann_window(n_fft),
                          return_complex=True, center=True).abs() ** 2
        out.append(torch.log(fb @ spec + 1e-6).numpy())
    return np.concatenate(out).astype(np.float32)


class ClipClassifier:
    """A small CNN on standardised log-mel spectrograms: class predictions and a 64-d clip embedding."""

    def __init__(self, n_classes: int, rate: int, epochs: int = 30, lr: float = 2e-3, seed: int = 0) -> None:
        self.n_classes = n_classes
        self.rate = rate
        self.epochs = epochs
        self.lr = lr
        self.seed = seed

    def _net(self) -> Any:
        from torch import nn

        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)), nn.Flatten(),
            nn.Linear(128, 64), nn.ReLU(),
        ), nn.Linear(64, self.n_classes)

    def _inputs(self, clips: Any) -> Any:
        import torch

        m = log_mel(clips, self.rate)
        return torch.from_numpy((m - self.mean_) / self.std_)[:, None]

    def fit(self, clips: Any, labels: Any) -> "ClipClassifier":
        import torch
        from torch.nn import functional as F

        y = np.asarray(labels, dtype=np.int64)
        m = log_mel(clips, self.rate)
        self.mean_, self.std_ = float(m.mean()), float(m.std() + 1e-6)
        x = torch.from_numpy((m - self.mean_) / self.std_)[:, None]
        yt = torch.from_numpy(y)
        torch.manual_seed(self.seed)
        self.body_, self.head_ = self._net()
        params = list(self.body_.parameters()) + list(self.head_.parameters())
        opt = torch.optim.Adam(params, lr=self.lr)
        g = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            perm = torch.randperm(len(x), generator=g)
            for s in range(0, len(x), 32):
                idx = perm[s:s + 32]
                loss = F.cross_entropy(self.head_(self.body_(x[idx])), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.body_.eval()
        self.head_.eval()
        return self

    def features(self, clips: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.body_(self._inputs(clips)).numpy().astype(np.float64)

    def predict(self, clips: Any) -> np.ndarray:
        import torch

        with torch.no_grad():
            return self.head_(self.body_(self._inputs(clips))).argmax(1).numpy().astype(np.int64)

    def accuracy(self, clips: Any, labels: Any, alpha: float = 0.05) -> dict[str, Any]:
        """Accuracy on ``clips`` with its Wilson interval, and per class."""
        from genguard.audits.stats import wilson_interval

        y = np.asarray(labels, dtype=np.int64)
        pred = self.predict(clips)
        hit = pred == y
        lo, hi = wilson_interval(int(hit.sum()), len(y), alpha)
        per = {int(c): float(hit[y == c].mean()) for c in np.unique(y)}
        return {"value": float(hit.mean()), "ci": [float(lo), float(hi)], "n": int(len(y)), "per_class": per}


def stoi_scores(reference: Any, degraded: Any, rate: int) -> np.ndarray:
    """STOI (pystoi, Taal et al. 2011) of each degraded clip against its reference clip, at ``rate`` Hz; NaN where
    the reference has too little speech for STOI's 384 ms analysis segments."""
    try:
        from pystoi import stoi
    except ImportError as exc:
        raise AuditError("STOI needs the pystoi package (pip install pystoi)") from exc
    ref = np.asarray(reference, dtype=np.float64)
    deg = np.asarray(degraded, dtype=np.float64)
    if ref.shape != deg.shape or ref.ndim != 2:
        raise AuditError(f"STOI: reference {ref.shape} and degraded {deg.shape} clips must both be (n, samples)")
    import warnings

    out = np.empty(len(ref))
    for i, (r, d) in enumerate(zip(ref, deg)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out[i] = stoi(r, d, rate, extended=False)
        # pystoi warns and returns 1e-5 when too few frames are left after removing silence: undefined, not 0
        if any("STFT frames" in str(w.message) for w in caught):
            out[i] = np.nan
    return out


def bootstrap_mean(values: np.ndarray, alpha: float = 0.05, draws: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``."""
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(draws, len(v)))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def reconstruction_scores(originals: Any, reconstructions: Any, rate: int, alpha: float = 0.05,
                          seed: int = 0) -> dict[str, Any]:
    """MSE and STOI of reconstructions against their originals (means with bootstrap intervals).

    STOI is undefined where the original is silent or holds too little speech (pystoi then warns and returns
    1e-5): such clips are left out of STOI and counted.
    """
    o = np.asarray(originals, dtype=np.float64)
    r = np.asarray(reconstructions, dtype=np.float64)
    if o.shape != r.shape or o.ndim != 2 or len(o) == 0:
        raise AuditError(f"reconstructions {r.shape} must match their originals {o.shape} as (n, samples)")
    if not (np.isfinite(o).all() and np.isfinite(r).all()):
        raise AuditError("reconstructions or originals contain NaN or infinite values")
    mse = ((o - r) ** 2).mean(axis=1)
    audible = np.abs(o).max(axis=1) > 1e-3
    out: dict[str, Any] = {"mse": {"value": float(mse.mean()), "ci": list(bootstrap_mean(mse, alpha, seed=seed)),
                                   "n": int(len(o))}}
    s = stoi_scores(o[audible], r[audible], rate) if audible.any() else np.zeros(0)
    ok = np.isfinite(s)
    if ok.sum() >= 2:
        s = s[ok]
        out["stoi"] = {"value": float(s.mean()), "ci": list(bootstrap_mean(s, alpha, seed=seed)), "n": int(len(s)),
                       "silent_left_out": int((~audible).sum()), "too_little_speech_left_out": int((~ok).sum())}
    else:
        from genguard.audits.sections import Reason, missing

        out["stoi"] = missing(Reason.TOO_FEW_SAMPLES, "fewer than two originals with enough speech for STOI")
    return out
