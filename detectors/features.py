"""Hand-crafted per-tile features: azimuthal power spectrum, log-DCT, noise-residual statistics, NPR residual."""
from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=8)
def _radial_average_matrix(p: int) -> np.ndarray:
    """(p*p, n_bins) matrix averaging a centred spectrum over rings of integer radius (one matmul per batch)."""
    yy, xx = np.mgrid[:p, :p]
    c = p // 2
    ri = np.floor(np.sqrt((yy - c) ** 2 + (xx - c) ** 2)).astype(np.int64).ravel()
    nb = int(ri.max()) + 1
    m = np.zeros((p * p, nb), np.float32)
    m[np.arange(p * p), ri] = 1.0
    return m / m.sum(axis=0, keepdims=True)


@lru_cache(maxsize=8)
def _hann(p: int) -> np.ndarray:
    w = np.hanning(p).astype(np.float32)
    return np.outer(w, w)


def spectral_features(tiles: np.ndarray) -> np.ndarray:
    """Durall et al. (2020): azimuthally averaged log power spectrum of each tile, mean-removed.

    The tile's mean is removed and a Hann window applied so the DC term and the
    tile border do not dominate; subtracting each curve's mean makes the
    feature invariant to overall contrast.
    """
    t = tiles.astype(np.float32)
    n, p, _ = t.shape
    t = (t - t.mean(axis=(1, 2), keepdims=True)) * _hann(p)
    from scipy.fft import fft2

    f = np.fft.fftshift(fft2(t), axes=(1, 2))  # scipy keeps float32 -> complex64 (numpy would go to complex128)
    power = np.log(f.real.astype(np.float32) ** 2 + f.imag.astype(np.float32) ** 2 + 1e-8).reshape(n, -1)
    prof = (power @ _radial_average_matrix(p))[:, 1:]  # drop DC
    return (prof - prof.mean(axis=1, keepdims=True)).astype(np.float32)


def dct_features(tiles: np.ndarray, pool: int = 2) -> np.ndarray:
    """Frank et al. (2020): log-scaled magnitude of the tile's 2-D DCT, average-pooled by ``pool``.

    Pooling 64x64 coefficients by 2 keeps the grid-aligned peaks that upsampling
    leaves (they fall at even fractions of the band) while quartering the
    number of weights of the linear classifier.
    """
    from scipy.fft import dctn

    t = tiles.astype(np.float32)
    n, p, _ = t.shape
    c = dctn(t - t.mean(axis=(1, 2), keepdims=True), axes=(1, 2), norm="ortho")
    lc = np.log(np.abs(c) + 1e-4)
    if pool > 1:
        q = p // pool
        lc = lc[:, :q * pool, :q * pool].reshape(n, q, pool, q, pool).mean(axis=(2, 4))
    return lc.reshape(n, -1).astype(np.float32)


def npr_residual(tiles: np.ndarray) -> np.ndarray:
    """Tan et al. (2024): x - nearest-upsample(x[::2, ::2]); the relationship of neighbouring pixels in each 2x2 cell."""
    t = tiles.astype(np.float32)
    down = t[:, ::2, ::2]
    up = np.repeat(np.repeat(down, 2, axis=1), 2, axis=2)[:, : t.shape[1], : t.shape[2]]
    return t - up


def _median3x3(t: np.ndarray) -> np.ndarray:
    """Exact median of each interior pixel's 3x3 neighbourhood, (n, h-2, w-2), by a min/max selection network."""
    h, w = t.shape[1:]
    v = [t[:, dy:h - 2 + dy, dx:w - 2 + dx] for dy in range(3) for dx in range(3)]

    def s(a: int, b: int) -> None:
        v[a], v[b] = np.minimum(v[a], v[b]), np.maximum(v[a], v[b])

    # Paeth's 19-exchange median-of-9 network (median ends in v[4])
    for a, b in ((1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3), (5, 8), (4, 7),
                 (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2)):
        s(a, b)
    return v[4]


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, 1e-8))


def noise_features(tiles: np.ndarray) -> np.ndarray:
    """Statistics of the denoiser residual, local variance and 2x2 (CFA / upsampling) periodicity, per tile.

    * residual r = x - median3x3(x): log std, skewness, kurtosis, log |r| quantiles;
    * local variance over 4x4 blocks: log quantiles (how flat the flattest areas are);
    * periodicity: energy of r at the Nyquist frequencies (period 2, what a
      Bayer CFA or x2 upsampling leaves) and at period 4 and 8, relative to
      the whole spectrum; ratio of the interpolation error on the two
      diagonal sub-lattices of a Bayer pattern; NPR energy;
    * lag-1 and lag-2 autocorrelation of r.
    """
    if len(tiles) > 64:  # per-tile features: chunks small enough to stay in cache are ~1.5x faster
        return np.concatenate([noise_features(tiles[i:i + 64]) for i in range(0, len(tiles), 64)])
    t = tiles.astype(np.float32)
    n, p, _ = t.shape
    r = t[:, 2:-2, 2:-2] - _median3x3(t)[:, 1:-1, 1:-1]
    rf = r.reshape(n, -1)
    sd = rf.std(axis=1) + 1e-6
    z = (rf - rf.mean(axis=1, keepdims=True)) / sd[:, None]
    z2 = z * z  # integer powers by multiplication: numpy's float power is several times slower
    skew = (z2 * z).mean(axis=1)
    kurt = (z2 * z2).mean(axis=1)
    ar = np.abs(rf)
    q = np.quantile(ar, [0.5, 0.9, 0.99], axis=1).T
    with np.errstate(divide="ignore"):  # a constant tile has kurtosis 0 -> -inf -> 0 below (as when trained)
        lk = np.log(kurt)
    feats = [_log(sd)[:, None], skew[:, None], lk[:, None], _log(q + 1e-5)]

    b = 4
    blocks = t[:, : p // b * b, : p // b * b].reshape(n, p // b, b, p // b, b).var(axis=(2, 4)).reshape(n, -1)
    feats.append(_log(np.quantile(blocks, [0.05, 0.25, 0.5, 0.9], axis=1).T + 1e-7))

    m = r.shape[1]
    rc = r - r.mean(axis=(1, 2), keepdims=True)
    rcf = rc.reshape(n, -1)
    energy = np.einsum("ij,ij->i", rcf, rcf, dtype=np.float64)
    # Parseval: the whole power spectrum sums to m*m times the energy, so only 8 DFT bins are computed
    tot = energy * m * m + 1e-12
    h = m // 2
    per = []
    k = np.arange(m)
    for (fy, fx) in ((h, 0), (0, h), (h, h), (m // 4, 0), (0, m // 4), (m // 4, m // 4), (m // 8, 0), (0, m // 8)):
        ey, ex = np.exp(-2j * np.pi * fy * k / m), np.exp(-2j * np.pi * fx * k / m)
        per.append(np.abs(np.einsum("nyx,y,x->n", rc, ey, ex, optimize=True)) ** 2 / tot * m * m)
    feats.append(_log(np.stack(per, axis=1) + 1e-6))

    # Bayer-style lattice interpolation error: predict each pixel from its 4 neighbours
    pred = 0.25 * (t[:, :-2, 1:-1] + t[:, 2:, 1:-1] + t[:, 1:-1, :-2] + t[:, 1:-1, 2:])
    e = np.abs(t[:, 1:-1, 1:-1] - pred)
    e00 = e[:, 0::2, 0::2].mean(axis=(1, 2)) + e[:, 1::2, 1::2].mean(axis=(1, 2))
    e01 = e[:, 0::2, 1::2].mean(axis=(1, 2)) + e[:, 1::2, 0::2].mean(axis=(1, 2))
    feats.append((_log(e00 + 1e-6) - _log(e01 + 1e-6))[:, None])
    feats.append(_log(e.mean(axis=(1, 2)) + 1e-6)[:, None])
    npr = npr_residual(t)
    feats.append(_log(np.abs(npr).mean(axis=(1, 2)) + 1e-6)[:, None] - _log(e.mean(axis=(1, 2)) + 1e-6)[:, None])

    var = energy / (m * m) + 1e-10
    ac = []
    for dy, dx in ((0, 1), (1, 0), (0, 2), (2, 0), (1, 1)):
        a = rc[:, dy:, dx:]
        bb = rc[:, : rc.shape[1] - dy, : rc.shape[2] - dx]
        ac.append(np.einsum("nij,nij->n", a, bb) / a[0].size / var)
    feats.append(np.stack(ac, axis=1))
    out = np.concatenate(feats, axis=1).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


FEATURES = {"spectral": spectral_features, "dct": dct_features, "noise": noise_features}


# --------------------------------------------------------------------------------------
# real-only density model (ZED-style coding surprise)
# --------------------------------------------------------------------------------------
#: causal neighbours of a pixel (raster order): W, N, NW, NE, WW, NN
CAUSAL_OFFSETS = ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0))


def causal_context(tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels, neighbours, activity) of every interior pixel of [0, 1] tiles, in 0-255 grey levels;
    activity = |W-NW|+|N-NW|+|N-NE|."""
    t = tiles.astype(np.float32) * 255.0
    n, h, w = t.shape
    target = t[:, 2:, 2:w - 1]
    nb = np.stack([t[:, 2 + dy:h + dy, 2 + dx:w - 1 + dx] for dy, dx in CAUSAL_OFFSETS], axis=-1)
    act = np.abs(nb[..., 0] - nb[..., 2]) + np.abs(nb[..., 1] - nb[..., 2]) + np.abs(nb[..., 1] - nb[..., 3])
    return target, nb, act


def surprise_features(tiles: np.ndarray, weights: np.ndarray, edges: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Per-tile coding surprise under a causal Laplace model fitted on real tiles only (ZED, Cozzolino et al. 2024).

    Each pixel's prediction residual e costs log(2b) + |e|/b nats under a
    Laplace law whose scale b depends on the local activity bin; its expected
    cost is 1 + log(2b), so the surprise |e|/b - 1 has mean ~0 on real photos.
    Features: mean and spread of the surprise, the mean surprise in four
    activity groups (flat to busy), the mean coding cost and the share of
    exact predictions (smooth generators make many).
    """
    target, nb, act = causal_context(tiles)
    pred = nb @ weights[:-1] + weights[-1]
    e = np.abs(target - pred)
    k = np.clip(np.searchsorted(edges, act), 0, len(scales) - 1)
    b = scales[k]
    s = (e / b - 1.0).reshape(len(tiles), -1)
    cost = (np.log(2 * b) + e / b).reshape(len(tiles), -1)
    kk = k.reshape(len(tiles), -1) * 4 // len(scales)
    groups = []
    for g in range(4):
        m = kk == g
        groups.append(np.where(m.any(axis=1), (s * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1), 0.0))
    feats = [s.mean(axis=1), s.std(axis=1), *groups, cost.mean(axis=1), (e.reshape(len(tiles), -1) < 0.5).mean(axis=1)]
    return np.nan_to_num(np.stack(feats, axis=1).astype(np.float32))


def fit_surprise_model(real_tiles: np.ndarray, n_bins: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least-squares causal predictor, activity-bin edges and per-bin Laplace scales, from real tiles only."""
    target, nb, act = causal_context(real_tiles)
    A = np.concatenate([nb.reshape(-1, nb.shape[-1]), np.ones((target.size, 1), np.float32)], axis=1).astype(np.float64)
    w, *_ = np.linalg.lstsq(A, target.reshape(-1).astype(np.float64), rcond=None)
    e = np.abs(target.reshape(-1) - A @ w)
    edges = np.quantile(act.reshape(-1), np.linspace(0, 1, n_bins + 1)[1:-1])
    k = np.clip(np.searchsorted(edges, act.reshape(-1)), 0, n_bins - 1)
    scales = np.array([max(float(e[k == i].mean()) if (k == i).any() else 1.0, 0.5) for i in range(n_bins)])
    return w.astype(np.float32), edges.astype(np.float32), scales.astype(np.float32)
