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
too little texture never start a detection. Self-similar texture (grass,
gravel, brick, a periodic pattern) yields coherent fields too, at offsets where
it matches about as well as at the neighbouring ones; :func:`match_ratio`
compares a region's match with its best rival correspondence, and only a
region whose match is clearly the best (:data:`MAX_MATCH_RATIO`) is kept. The
keypoint and block paths of :func:`genguard.detectors.forgery.copy_move` use
the same test.
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


#: the ratio test's rivals: every correspondence displaced by 3 to this many pixels (a texture that matches
#: by chance at one offset matches about as well at its neighbours; a periodic one at the next period)
RIVAL_RADIUS = 16
#: rivals nearer than this are the same match (the blur of JPEG and of resampling a rotated copy)
RIVAL_EXCLUDE = 3.0
#: at most this many of a region's pixels (evenly spaced) are compared at every rival
RIVAL_SAMPLE = 400
#: grey levels added to both sides of the ratio so that a flat region (every error near 0) reads 1
RATIO_FLOOR = 1.0
#: a region is a copy only when its match is this much better than every rival (Lowe's 0.8). On the build
#: split's untouched photos every chance region read >= 0.89, and 99% of the regions on planted copies < 0.8
MAX_MATCH_RATIO = 0.8


def _bilinear(L: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """L at float (y, x) points, NaN outside (cv2.remap would do it, but its maps hold at most 32767 a row)."""
    h, w = L.shape
    y, x = pts[..., 0], pts[..., 1]
    y0, x0 = np.floor(y), np.floor(x)
    fy, fx = (y - y0).astype(np.float32), (x - x0).astype(np.float32)
    inside = (y0 >= 0) & (x0 >= 0) & (y0 <= h - 1) & (x0 <= w - 1)
    y0 = np.clip(y0, 0, h - 1).astype(np.intp)
    x0 = np.clip(x0, 0, w - 1).astype(np.intp)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    v = (L[y0, x0] * (1 - fx) + L[y0, x1] * fx) * (1 - fy) + (L[y1, x0] * (1 - fx) + L[y1, x1] * fx) * fy
    return np.where(inside, v, np.nan)


def match_ratio(L: np.ndarray, p: np.ndarray, q: np.ndarray) -> tuple[float, float]:
    """How uniquely the pixels ``p`` ((N, 2) y, x) match their targets ``q`` (float): (error, ratio).

    ``error`` is the mean absolute grey difference between L at ``p`` and L at
    ``q`` (bilinear). A region copied and saved at JPEG 90 matches its source
    up to compression noise at exactly one correspondence; a texture (grass,
    gravel, brick, a gradient) that matches by chance matches about as well at
    many. ``ratio``, a test in the spirit of Lowe's nearest / second-nearest
    neighbour ratio, divides ``error`` by the best error over rival
    correspondences: ``q`` displaced by every integer shift of
    :data:`RIVAL_EXCLUDE` to :data:`RIVAL_RADIUS` pixels, and, for a periodic
    texture whose period is longer, ``p`` against ``p + f (q - p)`` for
    f = -1, 2, 1/2, 1/3, 2/3, 1/4, 3/4. Both get :data:`RATIO_FLOOR` added. A copy reads well below 1, a
    texture near 1 (a rival lying mostly outside the image is not counted).
    """
    L = np.asarray(L, dtype=np.float32)
    p = np.asarray(p, np.float64).reshape(-1, 2)
    q = np.asarray(q, np.float64).reshape(-1, 2)
    if not len(p):
        return float("inf"), float("inf")
    if len(p) > RIVAL_SAMPLE:
        take = np.linspace(0, len(p) - 1, RIVAL_SAMPLE).round().astype(int)
        p, q = p[take], q[take]
    lp = _bilinear(L, p)
    d0 = np.abs(lp - _bilinear(L, q))
    if np.count_nonzero(np.isfinite(d0)) < 0.5 * len(d0):
        return float("inf"), float("inf")
    e0 = float(np.nanmean(d0))
    # rivals at integer shifts share the target's bilinear weights: cut one window around each target from a
    # NaN-padded image and interpolate all shifts at once
    R = RIVAL_RADIUS
    h, w = L.shape
    pad = np.pad(L, R + 1, constant_values=np.nan)
    y0, x0 = np.floor(q[:, 0]), np.floor(q[:, 1])
    fy, fx = (q[:, 0] - y0).astype(np.float32)[:, None, None], (q[:, 1] - x0).astype(np.float32)[:, None, None]
    iy = np.clip(y0, -1, h).astype(np.intp) + 1  # window top-left in the padded image: y0 - R + (R + 1)
    ix = np.clip(x0, -1, w).astype(np.intp) + 1
    win = np.lib.stride_tricks.sliding_window_view(pad, (2 * R + 2, 2 * R + 2))[iy, ix]
    v = ((win[:, :-1, :-1] * (1 - fx) + win[:, :-1, 1:] * fx) * (1 - fy)
         + (win[:, 1:, :-1] * (1 - fx) + win[:, 1:, 1:] * fx) * fy)
    r = np.arange(-R, R + 1)
    far = (np.hypot(*np.meshgrid(r, r, indexing="ij")) >= RIVAL_EXCLUDE).ravel()
    d = np.abs(lp[:, None] - v.reshape(len(lp), -1)[:, far]).T
    # a periodic texture longer than the window: its matches at whole periods (o / 2, o / 3, ..., 2 o, -o)
    o = q - p
    far_rivals = np.stack([p + f * o for f in (-1.0, 2.0, 1 / 2, 1 / 3, 2 / 3, 1 / 4, 3 / 4)])
    d = np.concatenate([d, np.abs(lp[None] - _bilinear(L, far_rivals))])
    ok = np.isfinite(d)
    counted = ok.sum(axis=1) >= 0.5 * len(lp)
    if not counted.any():
        return e0, 0.0
    best = float((np.where(ok, d, 0).sum(axis=1)[counted] / ok.sum(axis=1)[counted]).min())
    return e0, float((e0 + RATIO_FLOOR) / (best + RATIO_FLOOR))


def detect(L: np.ndarray, min_shift: float = 24.0, min_area: int = 400, fit_window: int = 9,
           max_fit_error: float = 4.0, min_texture: float = 2.0, max_ratio: float = MAX_MATCH_RATIO, iterations: int = 6,
           rng: np.random.Generator | None = None) -> tuple[np.ndarray, dict]:
    """Boolean mask of duplicated regions (source and copy) in luma ``L`` and what was found.

    ``info["pairs"]`` lists each kept region (one side, before mirroring) with the 2x3 affine map (x, y
    order) its offset field fits, for redrawing the region's edge at full resolution.
    """
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
    regions = []
    for c in np.nonzero(stats[:, cv2.CC_STAT_AREA] >= min_area)[0]:
        if c == 0:
            continue
        ys, xs = np.nonzero(lab == c)
        p = np.stack([ys, xs], axis=1).astype(np.float32)
        q = p + np.stack([oy[ys, xs], ox[ys, xs]], axis=1)
        err, ratio = match_ratio(L, p, q)
        keep[c] = ratio <= max_ratio
        regions.append({"area": int(len(ys)), "offset": [int(np.median(oy[ys, xs])), int(np.median(ox[ys, xs]))],
                        "error": round(err, 3), "ratio": round(ratio, 3), "kept": bool(keep[c])})
    src = keep[lab]
    if not src.any():
        return empty, {"dense_pixels": 0, "regions": regions}
    # each kept region with the affine map its field fits (least squares, x/y order as cv2 takes it), so the
    # caller can redraw the region's edge pixel by pixel (forgery.refine_copy_move)
    pairs = []
    for c in np.nonzero(keep)[0]:
        ys, xs = np.nonzero(lab == c)
        M = fit_affine(np.stack([xs, ys], axis=1), np.stack([xs + ox[ys, xs], ys + oy[ys, xs]], axis=1))
        if M is not None:
            pairs.append((lab == c, M))
    # mirror through the field: the matches of the detected pixels are the other half of the pair
    ys, xs = np.nonzero(src)
    mask = src.copy()
    mask[np.clip(ys + oy[ys, xs], 0, h - 1), np.clip(xs + ox[ys, xs], 0, w - 1)] = True
    # the descriptor disc blurs the region edge by its radius; dilate back and fill holes left by the mirror
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE,
                            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RADIUS - 1,) * 2))
    return mask.astype(bool), {"dense_pixels": int(src.sum()), "dense_regions": int(keep.sum()), "regions": regions,
                               "pairs": pairs}


def fit_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray | None:
    """Least-squares 2x3 affine map (x, y) -> (x', y') taking ``src`` ((N, 2) x, y) to ``dst``; None if degenerate."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if len(src) < 3:
        return None
    A = np.concatenate([src, np.ones((len(src), 1))], axis=1)
    sol, _, rank, _ = np.linalg.lstsq(A, dst, rcond=None)
    return sol.T.astype(np.float64) if rank == 3 else None
