"""Dense-field copy-move detection (after Cozzolino, Poggi & Verdoliva 2015, IEEE TIFS).

Every pixel gets a rotation-invariant descriptor of the disc around it
(magnitudes of circular-harmonic responses on Gaussian rings, a cheap relative
of Zernike moments and the polar cosine transform). A vectorised PatchMatch
finds, for each pixel, a far-away pixel (at least ``min_shift`` away) with the
nearest descriptor. In a copied region this nearest-neighbour field is smooth
(a translation, or a small rotation / scaling, is locally affine); elsewhere
it is noise. Dense linear fitting of the offset field (a least-squares plane
over a window around each pixel, by box filters) keeps pixels whose field is
locally affine; regions smaller than ``min_area`` are dropped, and the mask is
mirrored through the field so both the source and the copy are marked.

Flat and smooth regions match everywhere and can yield a coherent field by
accident (a sky gradient matches along its iso-lines), so pixels whose disc has
too little texture never start a detection.
"""
from __future__ import annotations

import numpy as np

#: radius of the descriptor disc (pixels)
RADIUS = 8
_RINGS = (0.0, 2.5, 5.0, 7.5)
_ORDERS = (0, 1, 2, 3)


def features(L: np.ndarray, radius: int = RADIUS) -> np.ndarray:
    """(H, W, C) float32 rotation-invariant descriptors of the disc of ``radius`` around every pixel."""
    import cv2

    r = np.arange(-radius, radius + 1, dtype=np.float32)
    yy, xx = np.meshgrid(r, r, indexing="ij")
    rho, th = np.hypot(yy, xx), np.arctan2(yy, xx)
    inside = (rho <= radius + 0.5).astype(np.float32)
    out = []
    scale = radius / _RINGS[-1]
    for rc in _RINGS:
        prof = np.exp(-0.5 * ((rho - rc * scale) / (1.25 * scale)) ** 2) * inside
        prof /= prof.sum()
        for n in _ORDERS:
            if n == 0:
                out.append(cv2.filter2D(L, cv2.CV_32F, prof.astype(np.float32), borderType=cv2.BORDER_REFLECT))
            elif rc > 0:
                a = cv2.filter2D(L, cv2.CV_32F, (prof * np.cos(n * th)).astype(np.float32),
                                 borderType=cv2.BORDER_REFLECT)
                b = cv2.filter2D(L, cv2.CV_32F, (prof * np.sin(n * th)).astype(np.float32),
                                 borderType=cv2.BORDER_REFLECT)
                # |response| is invariant to rotation about the centre; x2 puts it on the n=0 scale
                out.append(2.0 * np.sqrt(a * a + b * b))
    return np.stack(out, axis=-1)


def _cost(F: np.ndarray, oy: np.ndarray, ox: np.ndarray, min_shift2: float) -> np.ndarray:
    h, w = F.shape[:2]
    ty = np.arange(h)[:, None] + oy
    tx = np.arange(w)[None, :] + ox
    inside = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
    d = F - F[np.clip(ty, 0, h - 1), np.clip(tx, 0, w - 1)]
    c = np.einsum("ijk,ijk->ij", d, d)
    c[~inside | (oy * oy + ox * ox < min_shift2)] = np.inf
    return c


def patchmatch(F: np.ndarray, min_shift: float, iterations: int = 6, rng: np.random.Generator | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-neighbour field: per pixel the offset (oy, ox), |offset| >= ``min_shift``, to its best match.

    Vectorised PatchMatch: random initialisation, then per iteration propagation
    from neighbours at distances 1, 2, 4, ... (all pixels at once, jump-flooding
    style, since a sequential raster scan does not vectorise) and a random search
    around the current offset at halving radii.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    h, w = F.shape[:2]
    ms2 = float(min_shift) ** 2
    ty = rng.integers(0, h, (h, w))
    tx = rng.integers(0, w, (h, w))
    oy = (ty - np.arange(h)[:, None]).astype(np.int32)
    ox = (tx - np.arange(w)[None, :]).astype(np.int32)
    best = _cost(F, oy, ox, ms2)

    def consider(cy, cx):
        nonlocal oy, ox, best
        c = _cost(F, cy, cx, ms2)
        better = c < best
        oy = np.where(better, cy, oy)
        ox = np.where(better, cx, ox)
        best = np.where(better, c, best)

    jumps = []
    j = 1
    while j < max(h, w) // 4:
        jumps.append(j)
        j *= 2
    for it in range(iterations):
        for j in (jumps[::-1] if it % 2 == 0 else jumps):
            for ay, ax in ((j, 0), (-j, 0), (0, j), (0, -j)):
                # the offset of the neighbour at (y - ay, x - ax), as a candidate for (y, x)
                consider(np.roll(oy, (ay, ax), axis=(0, 1)), np.roll(ox, (ay, ax), axis=(0, 1)))
        rad = max(h, w) / 2.0
        while rad >= 1.0:
            r = int(rad)
            consider(oy + rng.integers(-r, r + 1, (h, w)).astype(np.int32),
                     ox + rng.integers(-r, r + 1, (h, w)).astype(np.int32))
            rad /= 2.0
    return oy, ox, best


def linear_fit_error(oy: np.ndarray, ox: np.ndarray, window: int) -> np.ndarray:
    """Mean squared residual of a least-squares plane fitted to the offset field over ``window`` x ``window``.

    For a centred window the plane's slope terms separate: residual = var(o)
    - cov(o, dx)^2 / var(dx) - cov(o, dy)^2 / var(dy), each from box filters.
    """
    import cv2

    h, w = oy.shape
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    k = (window, window)
    var_d = (window * window - 1) / 12.0
    box = lambda a: cv2.blur(a, k, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    err = np.zeros((h, w), np.float64)
    for o in (oy.astype(np.float64), ox.astype(np.float64)):
        mo = box(o)
        var_o = box(o * o) - mo * mo
        # cov(o, x - x_centre) over the window: box(o * x) - box(o) * x (x is the window's centre)
        cx = box(o * xx) - mo * xx
        cy = box(o * yy) - mo * yy
        err += var_o - cx * cx / var_d - cy * cy / var_d
    return np.maximum(err, 0.0).astype(np.float32)


def detect(L: np.ndarray, min_shift: float = 24.0, min_area: int = 400, fit_window: int = 9,
           max_fit_error: float = 4.0, min_texture: float = 2.0, iterations: int = 6,
           rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict]:
    """Boolean mask of duplicated regions (source and copy) in luma ``L`` and what was found."""
    import cv2

    h, w = L.shape
    empty = np.zeros((h, w), bool)
    if h < 4 * RADIUS + 2 or w < 4 * RADIUS + 2 or h * w < 2 * min_area:
        return empty, {"dense_pixels": 0, "note": "too small for dense matching"}
    L = L.astype(np.float32)
    F = features(L)
    oy, ox, cost = patchmatch(F, min_shift, iterations=iterations, rng=rng)
    err = linear_fit_error(oy, ox, fit_window)
    mean = cv2.blur(L, (2 * RADIUS + 1, 2 * RADIUS + 1), borderType=cv2.BORDER_REFLECT)
    sd = np.sqrt(np.maximum(cv2.blur(L * L, (2 * RADIUS + 1, 2 * RADIUS + 1), borderType=cv2.BORDER_REFLECT)
                            - mean * mean, 0))
    cand = (err <= max_fit_error) & (sd >= min_texture) & np.isfinite(cost)
    cand = cv2.morphologyEx(cand.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    n, lab, stats, _ = cv2.connectedComponentsWithStats(cand, connectivity=8)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    src = keep[lab]
    if not src.any():
        return empty, {"dense_pixels": 0}
    # mirror through the field: the matches of the detected pixels are the other half of the pair
    ys, xs = np.nonzero(src)
    mask = src.copy()
    mask[np.clip(ys + oy[ys, xs], 0, h - 1), np.clip(xs + ox[ys, xs], 0, w - 1)] = True
    # the descriptor disc blurs the region edge by its radius; dilate back and fill holes left by the mirror
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE,
                            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RADIUS - 1,) * 2))
    return mask.astype(bool), {"dense_pixels": int(src.sum()), "dense_regions": int(keep.sum())}
