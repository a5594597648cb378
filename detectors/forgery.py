"""Forgery analysis: a per-pixel map (0 clean ... 1 manipulated) and a score for each method.

Methods: ``ela`` (error level analysis), ``jpeg_ghost`` (Farid 2009),
``block_grid`` (misaligned / missing 8x8 JPEG grid, i.e. double-JPEG
inconsistency), ``copy_move`` (SIFT keypoints + RANSAC clustering of matched
pairs, block matching for low-texture regions, and a dense nearest-neighbour
field with linear fitting, :mod:`genguard.detectors.copy_move_dense`; each
region found is redrawn at full resolution from its fitted map) and
``noise`` (local noise level inconsistency).

Memory and time are bounded whatever the image: the analyses run on a copy
with at most :data:`ANALYSIS_MAX_PIXELS` pixels (area-downscaled when larger;
4k UHD still runs at full size), and copy-move on a copy of at most
:data:`COPY_MOVE_MAX_PIXELS`. A downscaled analysis says so in each result's
``details["analysed"]``: resampling weakens the JPEG-grid cues (ELA, ghost,
block grid), so a clean result on a downscaled copy is weaker evidence.

Each method's own (raw) score is a heuristic anomaly strength in [0, 1] (how
far the most unusual region stands from the rest of the image, in robust
standard deviations, mapped to [0, 1]); copy-move's grows with the evidence
(number of consistent keypoint/block matches). Raw scores are high on many
untouched photos (and saturate at 1), so :func:`analyze` calibrates them: its
score is 1 - the false-alarm rate, the share of untouched photos (crops of
shipped photos, PNG and JPEG at several qualities;
:mod:`genguard.detectors.forgery_sets`) that rank at least as high by
:func:`calibration_statistic` (the unclipped robust z behind the map; copy-move's
own score), read from the shipped
``forgery_calibration.json``. A result is ``flagged`` at a false-alarm rate of at
most 5%, and only for a method that discriminates (AUC on planted forgeries of
its kind at least 0.6); a method that does not says so in its details and is
left out of :func:`evidence_map`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from genguard.detectors import copy_move_dense
from genguard.detectors._io import as_rgb_array, jpeg_roundtrip

METHODS = ("ela", "jpeg_ghost", "block_grid", "copy_move", "noise")
#: robust z-score mapped to 1.0 in the anomaly maps
Z_FULL = 6.0
#: Largest image (pixels) analysed at full size: 4096 x 2048 (4k UHD, 3840 x 2160, fits).
ANALYSIS_MAX_PIXELS = 8_388_608
#: Largest image copy-move matching runs on (its SIFT and block matching grow fastest): 1024 x 1024
#: (5 s on a 2 MP copy of a 4k photo, 2.5 s at 1 MP, on one core).
COPY_MOVE_MAX_PIXELS = 1_048_576


@dataclass
class ForgeryResult:
    score: float
    map: np.ndarray  # float32 (H, W) in [0, 1]
    details: dict[str, Any]


def _luma(rgb: np.ndarray) -> np.ndarray:
    return (rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114).astype(np.float32)


def _block_means(x: np.ndarray, b: int) -> np.ndarray:
    h, w = x.shape[:2]
    hb, wb = max(1, h // b), max(1, w // b)
    x = x[: hb * b, : wb * b] if h >= b and w >= b else x
    if h < b or w < b:
        return np.asarray([[float(x.mean())]], dtype=np.float32)
    return x.reshape(hb, b, wb, b, *x.shape[2:]).mean(axis=(1, 3)).astype(np.float32)


def _upsample(blockmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    h, w = shape
    bh, bw = blockmap.shape
    # blocks cover the top-left (h//b*b, w//b*b); stretch nearest over the whole image
    return cv2.resize(blockmap.astype(np.float32), (w, h), interpolation=cv2.INTER_NEAREST)


def _robust_z(values: np.ndarray, two_sided: bool = False) -> np.ndarray:
    """Robust z-score (median / MAD), unclipped."""
    v = values.astype(np.float64)
    med = np.median(v)
    mad = 1.4826 * np.median(np.abs(v - med)) + 1e-6 * (np.abs(med) + 1e-6)
    z = (v - med) / mad
    return np.abs(z) if two_sided else z


def _robust_anomaly(values: np.ndarray, two_sided: bool = False) -> np.ndarray:
    """Robust z-score (median / MAD) clipped to [0, Z_FULL] and scaled to [0, 1]."""
    return np.clip(_robust_z(values, two_sided) / Z_FULL, 0.0, 1.0).astype(np.float32)


def _z99(values: np.ndarray, two_sided: bool = False) -> float:
    """99th percentile of the unclipped robust z over the blocks: the score before it saturates.

    The map and ``score`` are clipped at :data:`Z_FULL`, where many untouched photos
    already sit; calibration ranks images by this instead.
    """
    z = _robust_z(np.asarray(values), two_sided)
    return float(np.quantile(z, 0.99)) if z.size else 0.0


def _score(m: np.ndarray) -> float:
    return float(np.quantile(m, 0.99)) if m.size else 0.0


# --------------------------------------------------------------------------------------
def ela(rgb: np.ndarray, quality: int = 90, block: int = 16) -> ForgeryResult:
    """Error level analysis: re-save at ``quality``; areas whose error level stands out were likely edited.

    The raw error is divided by the local texture energy so that edges and
    texture (which always re-compress with larger error) do not dominate.
    """
    import cv2

    diff = np.abs(rgb.astype(np.float32) - jpeg_roundtrip(rgb, quality).astype(np.float32)).max(axis=2)
    L = _luma(rgb)
    grad = np.abs(cv2.Sobel(L, cv2.CV_32F, 1, 0)) + np.abs(cv2.Sobel(L, cv2.CV_32F, 0, 1))
    e = _block_means(diff, block)
    t = _block_means(grad, block)
    ratio = np.log((e + 0.5) / (t + 8.0))
    m = _upsample(_robust_anomaly(ratio), rgb.shape[:2])
    return ForgeryResult(_score(m), m, {"quality": quality, "mean_error": float(diff.mean()), "z99": _z99(ratio)})


def jpeg_ghost(rgb: np.ndarray, qualities: tuple[int, ...] = tuple(range(50, 100, 5)), block: int = 16) -> ForgeryResult:
    """JPEG ghosts (Farid 2009): a region once saved at quality q shows a dip in re-save error at q the rest lacks."""
    L = _luma(rgb)
    grey = np.clip(np.round(L), 0, 255).astype(np.uint8)
    prof = []
    for q in qualities:
        d = (L - jpeg_roundtrip(grey, q).astype(np.float32)) ** 2
        prof.append(_block_means(d, block))
    P = np.stack(prof, axis=-1)  # (bh, bw, nq)
    P = P / (P.max(axis=-1, keepdims=True) + 1e-6)  # shape of each block's curve, not its level
    ref = np.median(P.reshape(-1, P.shape[-1]), axis=0)
    dip = (ref[None, None, :] - P).max(axis=-1)
    q_at = np.asarray(qualities)[np.argmax(ref[None, None, :] - P, axis=-1)]
    m = _upsample(_robust_anomaly(dip), rgb.shape[:2])
    return ForgeryResult(_score(m), m, {"qualities": list(qualities), "z99": _z99(dip),
                                        "ghost_quality_mode": int(np.bincount(q_at.ravel()).argmax())})


def _grid_strength(d2: np.ndarray, axis: int) -> np.ndarray:
    """Mean second difference on each of the 8 phases across ``axis`` minus the mean of all phases."""
    n = d2.shape[axis]
    prof = d2.mean(axis=1 - axis)
    k = n // 8 * 8
    if k < 8:
        return np.zeros(8)
    per = prof[:k].reshape(-1, 8).mean(axis=0)
    return per - per.mean()


def block_grid(rgb: np.ndarray, window: int = 64, stride: int = 32) -> ForgeryResult:
    """Double-JPEG / grid inconsistency: windows whose 8x8 blocking grid is shifted, or missing, vs. the image's.

    A region pasted from another JPEG (or cropped) usually carries a grid at a
    different phase; a region from an uncompressed source carries none.
    """
    L = _luma(rgb)
    h, w = L.shape
    d2x = np.abs(2 * L[:, 1:-1] - L[:, :-2] - L[:, 2:])  # boundary between column j and j+1 -> index j
    d2y = np.abs(2 * L[1:-1, :] - L[:-2, :] - L[2:, :])
    gx, gy = _grid_strength(d2x, 1), _grid_strength(d2y, 0)
    px, py = int(np.argmax(gx)), int(np.argmax(gy))
    gstrength = float(gx[px] + gy[py]) / (float(d2x.mean() + d2y.mean()) / 2 + 1e-6)
    out = np.zeros((h, w), np.float32)
    cnt = np.zeros((h, w), np.float32)
    if gstrength < 0.08 or h < window or w < window:
        return ForgeryResult(0.0, out, {"global_grid_strength": gstrength, "grid": None,
                                        "note": "no JPEG block grid found; method not applicable"})
    vals, boxes = [], []
    for y in range(0, h - window + 1, stride):
        for x in range(0, w - window + 1, stride):
            sx = _grid_strength(d2x[y:y + window, x:x + window - 2], 1)
            sy = _grid_strength(d2y[y:y + window - 2, x:x + window], 0)
            # shift the window's phases to the image frame (x offset is a multiple of 8 only if stride is)
            sx = np.roll(sx, x % 8)
            sy = np.roll(sy, y % 8)
            local_max = sx.max() + sy.max()
            at_global = sx[px] + sy[py]
            scale = float(d2x[y:y + window, x:x + window - 2].mean() + 1e-6)
            vals.append((local_max - at_global) / scale + max(0.0, gstrength - at_global / scale))
            boxes.append((y, x))
    z = _robust_anomaly(np.asarray(vals))
    z99 = _z99(np.asarray(vals))
    for (y, x), v in zip(boxes, z):
        out[y:y + window, x:x + window] += v
        cnt[y:y + window, x:x + window] += 1
    m = np.where(cnt > 0, out / np.maximum(cnt, 1), 0).astype(np.float32)
    return ForgeryResult(_score(m), m, {"global_grid_strength": gstrength, "grid": [py, px], "z99": z99})


def noise_inconsistency(rgb: np.ndarray, block: int = 32) -> ForgeryResult:
    """Local noise level per block (Immerkaer 1996 operator, edge pixels excluded); outlying blocks either way.

    The 3x3 operator [1 -2 1; -2 4 -2; 1 -2 1] cancels locally linear shading;
    pixels on strong edges (top 30% Sobel magnitude of the image) are left out
    so texture is not mistaken for noise; sigma = sqrt(pi/2)/6 * mean |response|.
    Weak on strongly textured images (texture still inflates the estimate).
    """
    import cv2

    L = _luma(rgb)
    h, w = L.shape
    if h < block or w < block:
        m = np.zeros((h, w), np.float32)
        return ForgeryResult(0.0, m, {"note": "image too small for noise analysis"})
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    resp = np.abs(cv2.filter2D(L, cv2.CV_32F, k, borderType=cv2.BORDER_REFLECT))
    edge = np.hypot(cv2.Sobel(L, cv2.CV_32F, 1, 0), cv2.Sobel(L, cv2.CV_32F, 0, 1))
    flat = (edge <= np.quantile(edge, 0.7)).astype(np.float32)
    num = _block_means(resp * flat, block)
    den = _block_means(flat, block)
    sigma = np.sqrt(np.pi / 2) / 6.0 * num / np.maximum(den, 1e-3)
    sigma = np.where(den > 0.05, sigma, np.median(sigma))  # blocks that are all edge: no estimate
    ls = np.log(sigma + 0.05)
    m = _upsample(_robust_anomaly(ls, two_sided=True), rgb.shape[:2])
    return ForgeryResult(_score(m), m, {"median_sigma": float(np.median(sigma)), "z99": _z99(ls, two_sided=True)})


# --------------------------------------------------------------------------------------
# copy-move
# --------------------------------------------------------------------------------------
def _keypoint_copy_move(L8: np.ndarray, min_shift: float, min_inliers: int, ratio: float = 0.8,
                        max_ratio: float = copy_move_dense.MAX_MATCH_RATIO, found: list | None = None
                        ) -> tuple[np.ndarray, int, list]:
    import cv2

    h, w = L8.shape
    mask = np.zeros((h, w), np.float32)
    sift = cv2.SIFT_create(nfeatures=4000, contrastThreshold=0.01, edgeThreshold=20)
    kps, des = sift.detectAndCompute(L8, None)
    if des is None or len(kps) < 2 * min_inliers:
        return mask, 0, []
    pts = np.float32([k.pt for k in kps])
    matcher = cv2.BFMatcher(cv2.NORM_L2)
    knn = matcher.knnMatch(des, des, k=min(5, len(kps)))
    pairs = set()
    for i, ms in enumerate(knn):
        ms = [m for m in ms if m.trainIdx != i]
        # g2NN (Amerini et al. 2011): accept the j-th neighbour while d_j / d_{j+1} < 0.6
        for j in range(len(ms) - 1):
            if ms[j].distance >= ratio * ms[j + 1].distance:
                break
            a, b = i, ms[j].trainIdx
            if np.hypot(*(pts[a] - pts[b])) >= min_shift:
                pairs.add((min(a, b), max(a, b)))
    if len(pairs) < min_inliers:
        return mask, 0, []
    P = np.array(sorted(pairs))
    A, B = pts[P[:, 0]], pts[P[:, 1]]
    # orient every pair the same way (lexicographic), so one transform explains a whole cluster
    swap = (A[:, 0] > B[:, 0]) | ((A[:, 0] == B[:, 0]) & (A[:, 1] > B[:, 1]))
    A[swap], B[swap] = B[swap].copy(), A[swap].copy()
    transforms = []
    remaining = np.arange(len(A))
    for _ in range(3):
        if len(remaining) < min_inliers:
            break
        T, inl = cv2.estimateAffinePartial2D(A[remaining], B[remaining], method=cv2.RANSAC,
                                             ransacReprojThreshold=3.0, maxIters=2000, confidence=0.99)
        if T is None:
            break
        inl = inl.ravel().astype(bool)
        if inl.sum() < min_inliers:
            break
        shift = np.hypot(T[0, 2], T[1, 2])
        sc = np.sqrt(abs(np.linalg.det(T[:, :2])))
        if 0.5 < sc < 2.0 and (shift >= min_shift or abs(sc - 1) > 0.05):
            transforms.append((T, A[remaining[inl]], B[remaining[inl]]))
        remaining = remaining[~inl]
    total = 0
    Lf = L8.astype(np.float32)
    tex = cv2.blur(np.abs(Lf - cv2.blur(Lf, (7, 7))), (7, 7)) + 1.0
    for T, src, dst in transforms:
        Ti = cv2.invertAffineTransform(T)
        fwd = cv2.warpAffine(Lf, T, (w, h), flags=cv2.INTER_LINEAR, borderValue=-1000)  # fwd(x) = L(T^-1 x)
        bwd = cv2.warpAffine(Lf, Ti, (w, h), flags=cv2.INTER_LINEAR, borderValue=-1000)
        used = False
        for warped, anchors in ((fwd, dst), (bwd, src)):
            valid = warped > -500
            d = cv2.blur(np.where(valid, np.abs(Lf - warped), 255).astype(np.float32), (7, 7))
            ai = np.clip(np.round(anchors).astype(int), 0, [w - 1, h - 1])
            at = d[ai[:, 1], ai[:, 0]]
            thr = max(4.0, 2.5 * float(np.median(at)))
            # a true copy matches far better than the local texture would allow by chance
            if float(np.median(at)) > 0.5 * float(np.median(tex[ai[:, 1], ai[:, 0]])) + 1.0:
                continue
            hull = np.zeros((h, w), np.uint8)
            cv2.fillConvexPoly(hull, cv2.convexHull(np.round(anchors).astype(np.int32)), 1)
            hull = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (33, 33)))
            cand = ((d < thr) & (d < 0.8 * tex + thr * 0.5) & valid & (hull > 0)).astype(np.uint8)
            cand = cv2.morphologyEx(cand, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
            n, lab = cv2.connectedComponents(cand)
            keep = np.unique(lab[ai[:, 1], ai[:, 0]])
            keep = keep[keep > 0]
            region = np.isin(lab, keep).astype(np.uint8)
            region = cv2.morphologyEx(region, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
            ys, xs = np.nonzero(region)
            if not len(ys):
                continue
            # the region's pixels x against where the transform says they came from (fwd: T^-1 x, bwd: T x)
            M = Ti if warped is fwd else T
            q = np.stack([M[1, 0] * xs + M[1, 1] * ys + M[1, 2], M[0, 0] * xs + M[0, 1] * ys + M[0, 2]], axis=1)
            _, r = copy_move_dense.match_ratio(Lf, np.stack([ys, xs], axis=1), q)
            if r > max_ratio:
                continue
            mask = np.maximum(mask, region.astype(np.float32))
            if found is not None:
                found.append((region > 0, np.asarray(M, np.float64)))
            used = True
        if used:
            total += len(src)
    return mask, total, [np.round(T, 3).tolist() for T, _, _ in transforms]


#: Block matching works on low-texture regions, where a copy's match is only a little better than a
#: 3 px displacement (on the build split's planted copies its regions read up to 0.97): it drops only
#: regions that some rival matches about as well (a periodic texture reads 1 +- 0.03).
BLOCK_MAX_MATCH_RATIO = 0.95


def _block_copy_move(L: np.ndarray, block: int, stride: int, min_shift: float, min_area: int,
                     exclude: np.ndarray, max_ratio: float = BLOCK_MAX_MATCH_RATIO, found: list | None = None
                     ) -> tuple[np.ndarray, int]:
    """Overlapping-block matching (Fridrich-style) for low-texture regions that yield no keypoints."""
    import cv2
    from scipy.spatial import cKDTree

    h, w = L.shape
    mask = np.zeros((h, w), np.float32)
    if h < 4 * block or w < 4 * block:
        return mask, 0
    s = block // 4
    # 4x4 grid of sub-block means at every pixel, via one box filter; sampled on the stride grid
    box = cv2.blur(L, (s, s), borderType=cv2.BORDER_REFLECT)
    ys = np.arange(0, h - block + 1, stride)
    xs = np.arange(0, w - block + 1, stride)
    feats = []
    for dy in range(4):
        for dx in range(4):
            cy, cx = ys + dy * s + s // 2, xs + dx * s + s // 2
            feats.append(box[np.ix_(np.minimum(cy, h - 1), np.minimum(cx, w - 1))])
    F = np.stack(feats, axis=-1).reshape(-1, 16)
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    pos = np.stack([yy.ravel(), xx.ravel()], axis=1)
    sd = F.std(axis=1)
    mean = F.mean(axis=1)
    keep = (sd > 0.6) & (mean > 8) & (mean < 247)  # saturated / perfectly flat blocks match anything
    keep &= ~exclude[pos[:, 0] + block // 2, pos[:, 1] + block // 2]
    if keep.sum() < 10:
        return mask, 0
    Fk, Pk = F[keep] - mean[keep, None] * 0.0, pos[keep]
    tree = cKDTree(Fk)
    dist, idx = tree.query(Fk, k=6, distance_upper_bound=2.5)
    # a block with many near-identical blocks (a smooth gradient, a flat sky) says nothing about copying
    unambiguous = ~np.isfinite(dist[:, 4])
    shifts = {}
    for j in range(1, idx.shape[1]):
        ok = np.isfinite(dist[:, j]) & unambiguous
        a = np.nonzero(ok)[0]
        b = idx[ok, j]
        d = Pk[b] - Pk[a]
        far = np.hypot(d[:, 0], d[:, 1]) >= min_shift
        a, b, d = a[far], b[far], d[far]
        flip = (d[:, 0] < 0) | ((d[:, 0] == 0) & (d[:, 1] < 0))
        d[flip] *= -1
        a2 = np.where(flip, b, a)
        b2 = np.where(flip, a, b)
        for (sy, sx), i, k in zip(map(tuple, d), a2, b2):
            shifts.setdefault((int(sy), int(sx)), []).append((i, k))
    if not shifts:
        return mask, 0
    min_pairs = max(12, min_area // (stride * stride) // 2)
    total = 0
    for sv, prs in shifts.items():
        if len(prs) < min_pairs:
            continue
        # a genuine copy is one compact region; a flat sky matches along many shifts with scattered blocks
        region = np.zeros((h, w), np.uint8)
        for i, k in prs:
            for p in (Pk[i], Pk[k]):
                region[p[0]:p[0] + block, p[1]:p[1] + block] = 1
        n, lab, stats, _ = cv2.connectedComponentsWithStats(region)
        big = [c for c in range(1, n) if stats[c, cv2.CC_STAT_AREA] >= min_area]
        if len(big) >= 2:
            src = np.zeros((h, w), bool)
            for i, _ in prs:
                src[Pk[i][0]:Pk[i][0] + block, Pk[i][1]:Pk[i][1] + block] = True
            ys, xs = np.nonzero(src)
            p = np.stack([ys, xs], axis=1)
            _, r = copy_move_dense.match_ratio(L, p, p + np.asarray(sv))
            if r > max_ratio:
                continue
            mask = np.maximum(mask, np.isin(lab, big).astype(np.float32))
            if found is not None:
                # the source blocks and the translation (x, y) to their partners
                found.append((src, np.array([[1.0, 0.0, sv[1]], [0.0, 1.0, sv[0]]])))
            total += len(prs)
    return mask, total


#: Largest luma the dense field runs on at full size (its PatchMatch grows faster than linearly with the
#: jump-flooding steps); larger images are matched on an area-downscaled copy and the mask stretched back.
DENSE_MAX_PIXELS = 400_000


def _dense_bounded(L: np.ndarray, min_shift: float) -> tuple[np.ndarray, dict]:
    import cv2

    h, w = L.shape
    if h * w <= DENSE_MAX_PIXELS:
        return copy_move_dense.detect(L, min_shift=min_shift)
    s = (DENSE_MAX_PIXELS / float(h * w)) ** 0.5
    sw, sh = max(1, int(w * s)), max(1, int(h * s))
    small = cv2.resize(L, (sw, sh), interpolation=cv2.INTER_AREA)
    m, info = copy_move_dense.detect(small, min_shift=max(16.0, min_shift * s), min_area=max(100, int(400 * s * s)))
    info["dense_scale"] = round(s, 4)
    # the regions and their maps back in full-size pixels: x_small = a x + b (pixel centres), M_full = S^-1 M S
    S = np.array([[sw / w, 0.0, 0.5 * sw / w - 0.5], [0.0, sh / h, 0.5 * sh / h - 0.5], [0.0, 0.0, 1.0]])
    info["pairs"] = [(cv2.resize(r.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0,
                      (np.linalg.inv(S) @ np.vstack([M, [0.0, 0.0, 1.0]]) @ S)[:2])
                     for r, M in info.get("pairs", [])]
    return cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0, info


#: refinement: how far (pixels) a region may grow beyond what its path marked; the dense field's disc
#: descriptor and the paths' morphology leave the mask a few pixels inside the true edge
REFINE_BAND = 16
#: a pixel belongs to the copy when its 3x3 mean grey difference to its transformed partner is at most
#: max(REFINE_MIN_ERROR, REFINE_ERROR_FACTOR x the region's own median difference)
REFINE_MIN_ERROR = 4.0
REFINE_ERROR_FACTOR = 2.0


def refine_copy_move(L: np.ndarray, region: np.ndarray, M: np.ndarray, band: int = REFINE_BAND,
                     min_error: float = REFINE_MIN_ERROR, factor: float = REFINE_ERROR_FACTOR) -> np.ndarray:
    """A detected region and its partner redrawn at full resolution from the fitted map ``M``.

    ``M`` (2x3, x/y order) takes each pixel of ``region`` to where its copy (or source) lies. On each side
    a pixel is kept when it matches its partner under ``M`` (3x3 mean absolute grey difference at most
    max(``min_error``, ``factor`` x the region's median difference, which carries the JPEG and resampling
    noise of this copy)) and is reached from the region through such pixels within ``band`` pixels. A pixel
    of a flat area around a copy of a flat area matches too and is marked (up to ``band``): the two cannot
    be told apart.
    """
    import cv2

    h, w = L.shape
    Lf = np.asarray(L, np.float32)
    region = np.asarray(region, bool)
    M = np.asarray(M, np.float64)
    Mi = cv2.invertAffineTransform(M)
    # the partner side: pixels whose preimage under M lies in the region
    partner = cv2.warpAffine(region.astype(np.uint8), M, (w, h), flags=cv2.INTER_NEAREST) > 0
    out = np.zeros((h, w), bool)
    k3 = np.ones((3, 3), np.uint8)
    for side, A in ((region, M), (partner, Mi)):
        if not side.any():
            continue
        # warped(x) = L(A x): each pixel's partner grey level (bilinear)
        warped = cv2.warpAffine(Lf, A, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=-1000.0)
        d = np.where(warped > -500, np.abs(Lf - warped), 255.0).astype(np.float32)
        e = cv2.blur(d, (3, 3))
        core = cv2.erode(side.astype(np.uint8), k3) > 0
        if not core.any():
            core = side
        thr = max(min_error, factor * float(np.median(e[core])))
        cand = (e <= thr).astype(np.uint8)
        grown = side.astype(np.uint8)
        for _ in range(band):
            nxt = cv2.dilate(grown, k3) & (cand | grown)
            if np.array_equal(nxt, grown):
                break
            grown = nxt
        # the 3x3 mean stops one pixel short of the edge (its window straddles it): the pixels next to the
        # grown region that match on their own join
        grown |= cv2.dilate(grown, k3) & (d <= thr).astype(np.uint8)
        grown = cv2.morphologyEx(grown, cv2.MORPH_CLOSE, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5)))
        out |= grown > 0
    return out


def copy_move(rgb: np.ndarray, min_shift: float = 16.0, min_inliers: int = 5, block: int = 16,
              min_area: int = 256) -> ForgeryResult:
    """Duplicated regions: SIFT keypoints matched within the image (g2NN), clustered by RANSAC similarity
    transforms, with the region grown from the transform; block matching adds low-texture duplicates, and
    the dense field (:func:`genguard.detectors.copy_move_dense.detect`) small or rotated copies with too
    few keypoints. The three masks are joined (on the build split each alone found fewer copies at the
    same image-level false-alarm rate). Every region any path proposes must pass the ratio test of
    :func:`genguard.detectors.copy_move_dense.match_ratio`: a copy matches its source far better than at
    any rival correspondence, a self-similar texture about as well at many. Each region that passes, with
    the map its path fitted (SIFT's similarity, the block shift, a least-squares affine fit of the dense
    field), is then redrawn pixel by pixel on both sides (:func:`refine_copy_move`); this only moves the
    edges of what was found, so whether an image is marked at all is decided before it.

    The map marks both the source and the copy (they cannot be told apart).
    """
    L = _luma(rgb)
    L8 = np.clip(np.round(L), 0, 255).astype(np.uint8)
    pairs: list = []
    kp_mask, n_kp, transforms = _keypoint_copy_move(L8, min_shift, min_inliers, found=pairs)
    stride = 2 if L.size <= 600_000 else 4
    blk_mask, n_blk = _block_copy_move(L, block, stride, min_shift, min_area, kp_mask > 0, found=pairs)
    dense_mask, dense_info = _dense_bounded(L, max(min_shift, 24.0))
    pairs += dense_info.pop("pairs", [])
    n_dense = dense_info.get("dense_pixels", 0)
    m = np.maximum(np.maximum(kp_mask, blk_mask), dense_mask).astype(np.float32)
    if m.sum() < min_area:
        m[:] = 0
        pairs = []
    # each path's masks stop a few pixels inside the copy's edge (descriptor discs, blocks, morphology):
    # redraw every region that passed its ratio test, and its partner, from its map at full resolution
    for region, M in pairs:
        m = np.maximum(m, refine_copy_move(L, region, M).astype(np.float32))
    score = 0.0
    if m.any():
        score = float(1.0 - np.exp(-(n_kp / 10.0 + n_blk / 60.0 + n_dense / 800.0)))
    return ForgeryResult(score, m, {"keypoint_matches": int(n_kp), "block_matches": int(n_blk),
                                    "dense_matched_pixels": int(n_dense),
                                    "dense_regions": dense_info.get("regions", []),
                                    "transforms": transforms, "area_fraction": float(m.mean())})


ANALYSES: dict[str, Callable[[np.ndarray], ForgeryResult]] = {
    "ela": ela,
    "jpeg_ghost": jpeg_ghost,
    "block_grid": block_grid,
    "copy_move": copy_move,
    "noise": noise_inconsistency,
}


def bounded_copy(rgb: np.ndarray, max_pixels: int = ANALYSIS_MAX_PIXELS) -> tuple[np.ndarray, dict[str, Any]]:
    """``rgb`` itself when it has at most ``max_pixels``, else an area-downscaled copy; plus what was done."""
    import cv2

    h, w = rgb.shape[:2]
    info: dict[str, Any] = {"image_size": [int(w), int(h)], "analysed_size": [int(w), int(h)], "scale": 1.0}
    if h * w <= max_pixels:
        return rgb, info
    s = (max_pixels / float(h * w)) ** 0.5
    nw, nh = max(1, int(w * s)), max(1, int(h * s))
    info.update(analysed_size=[nw, nh], scale=round(nw / w, 6),
                note=f"analysed on a copy downscaled to {nw}x{nh} to bound memory and time; "
                     "resampling weakens JPEG-grid cues, so a clean result is weaker evidence")
    return cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_AREA), info


# --------------------------------------------------------------------------------------
# calibration on untouched photos
# --------------------------------------------------------------------------------------
#: what each map shows, for a legend (one sentence each)
MAP_MEANING = {
    "ela": "bright = blocks whose JPEG re-save error, relative to their texture, stands out from the rest",
    "jpeg_ghost": "bright = blocks whose re-save error dips at a JPEG quality the rest of the image does not share",
    "block_grid": "bright = windows whose 8x8 JPEG grid is shifted from, or missing against, the image's grid",
    "copy_move": "white = a region that duplicates another region of the same image (source and copy both marked)",
    "noise": "bright = blocks whose noise level is unusually high or low for this image",
}
#: a calibrated score at or above this is flagged (at most 5% of untouched photos reach it)
FLAG_FALSE_ALARM = 0.05
CALIBRATION_FILE = "forgery_calibration.json"
_CALIBRATION: dict[str, Any] | None = None


def calibration() -> dict[str, Any]:
    """The shipped calibration (built by ``benchmarks/forgery.py --write-calibration``); never rebuilt at run time."""
    global _CALIBRATION
    if _CALIBRATION is None:
        import json
        from pathlib import Path

        _CALIBRATION = json.loads((Path(__file__).with_name(CALIBRATION_FILE)).read_text())
    return _CALIBRATION


def calibration_statistic(r: ForgeryResult) -> float:
    """What calibration ranks an image by: the unsaturated ``details["z99"]`` where a method gives one
    (-inf where it found nothing to analyse, e.g. no JPEG grid), else ``score``."""
    if "z99" in r.details:
        return float(r.details["z99"])
    if r.details.get("note", "").endswith("not applicable") or "too small" in r.details.get("note", ""):
        return float("-inf")
    return float(r.score)


def _untouched_scores(method: str) -> np.ndarray:
    """The calibration statistic of ``method`` on each untouched calibration photo (-inf, stored as null in
    JSON, where it found nothing to analyse)."""
    return np.asarray([-np.inf if x is None else x for x in calibration()["methods"][method]["untouched_raw_scores"]],
                      dtype=np.float64)


def false_alarm_rate(method: str, raw: float) -> float | None:
    """Share of untouched calibration photos whose raw ``method`` score is at least ``raw``.

    ``(1 + #{untouched >= raw}) / (n + 1)``: the conservative empirical tail
    probability (a conformal p-value), so it is never 0 and a raw score of 0
    gives 1. ``None`` when the method has no calibration.
    """
    if calibration()["methods"].get(method) is None or np.isnan(raw) or raw == np.inf:
        return None
    ref = _untouched_scores(method)
    if raw == -np.inf:
        return 1.0
    return float((1 + np.count_nonzero(ref >= raw - 1e-9)) / (ref.size + 1))


def family_threshold(target: float) -> tuple[float, float]:
    """(per-method rate, family-wise share): the false-alarm rate (as :func:`false_alarm_rate` gives it) at or
    below which a discriminating method's flag may count, chosen so that counting *any* such method's flag
    calls at most ``target`` of the untouched calibration photos flagged, and that share.

    Each calibration photo is ranked against the other photos, method by method (leave one out: its rank is
    the number of others scoring at least as high); a photo is flagged at rank K when some discriminating
    method ranks it K or better. The largest K that keeps the flagged share within ``target`` becomes the
    rate (1 + K) / (n + 1) a new photo has at that rank, never above ``target`` itself. Several methods
    each at the target's rate would flag more photos between them than any one does.
    """
    methods = [m for m, c in calibration()["methods"].items() if c.get("discriminates")]
    if not methods:
        return 0.0, 0.0
    ref = np.stack([_untouched_scores(m) for m in methods])
    n = ref.shape[1]
    if n < 2:
        return 0.0, 0.0
    rank = (ref[:, None, :] >= ref[:, :, None] - 1e-9).sum(axis=2) - 1  # others at least as high, (methods, n)
    rank = np.where(np.isfinite(ref), rank, n).min(axis=0)  # nothing analysed (-inf) is never flagged
    k = -1
    while k + 1 < n and np.mean(rank <= k + 1) <= target:
        k += 1
    if k < 0:
        return 0.0, 0.0
    return min(float(target), (1 + k) / (n + 1)), float(np.mean(rank <= k))


def calibrate(method: str, r: ForgeryResult) -> ForgeryResult:
    """``r`` with ``score`` = 1 - false-alarm rate on untouched photos, the raw score and the verdict in details.

    ``details`` gains ``raw_score``, ``false_alarm_rate``, ``flagged`` (false-alarm
    rate at most :data:`FLAG_FALSE_ALARM` and the method discriminates),
    ``discriminates`` with its ``auc`` on planted forgeries, and ``legend`` (what the
    map shows and at what false-alarm rate). A method that does not discriminate
    never flags and its ``score`` is 0 (``details["calibrated_score"]`` keeps the value).
    """
    cal = calibration()["methods"].get(method)
    fa = false_alarm_rate(method, calibration_statistic(r))
    if cal is None or fa is None:
        r.details.update(raw_score=float(r.score), false_alarm_rate=None, flagged=False, discriminates=None,
                         legend=MAP_MEANING.get(method, ""))
        return r
    disc = bool(cal["discriminates"])
    raw = float(r.score)
    r.details["calibration_statistic"] = calibration_statistic(r)
    # A method that cannot tell forgeries from untouched photos scores 0 (no evidence), so nothing that
    # weights maps by score paints it; its calibrated value stays in the details.
    r.score = float(1.0 - fa) if disc else 0.0
    r.details["calibrated_score"] = round(float(1.0 - fa), 4)
    r.details.update(raw_score=raw, false_alarm_rate=fa, flagged=bool(disc and fa <= FLAG_FALSE_ALARM),
                     discriminates=disc, auc=cal["auc"], calibrated_on=int(cal["n_untouched"]))
    meaning = MAP_MEANING.get(method, "")
    if disc:
        r.details["legend"] = (f"{meaning}. {100 * fa:.1f}% of untouched photos score at least this high "
                               f"(flagged at <= {100 * FLAG_FALSE_ALARM:.0f}%).")
    else:
        r.details["discriminates_reason"] = cal["reason"]
        r.details["legend"] = (f"{meaning}. Not evidence: {cal['reason']}; "
                               f"{100 * fa:.1f}% of untouched photos score at least this high.")
    return r


def evidence_map(results: dict[str, ForgeryResult]) -> np.ndarray:
    """Per-pixel maximum of the maps of the methods that discriminate, each weighted by its calibrated score.

    For the overlay: a method that cannot tell forgeries from untouched photos
    (``details["discriminates"]`` false) contributes nothing, and a method only
    paints once its score stands out from untouched photos (weight 0 until the
    false-alarm rate drops below 50%, 1 at 0%).
    """
    out = None
    for name, r in results.items():
        if out is None:
            out = np.zeros(r.map.shape, np.float32)
        if r.details.get("discriminates") is False:
            continue
        fa = r.details.get("false_alarm_rate")
        weight = float(r.score) if fa is None else max(0.0, 1.0 - 2.0 * float(fa))
        out = np.maximum(out, r.map * weight)
    return out if out is not None else np.zeros((0, 0), np.float32)


def analyze(image: Any, methods: tuple[str, ...] = METHODS,
            max_pixels: int = ANALYSIS_MAX_PIXELS, calibrated: bool = True) -> dict[str, ForgeryResult]:
    """Run the forgery analyses on one image (path or array).

    Maps are at the analysed size: the image's own, or that of the bounded copy
    (see :func:`bounded_copy`) recorded in each result's ``details["analysed"]``.
    With ``calibrated`` (the default) each score is 1 - its false-alarm rate on
    untouched photos (see :func:`calibrate`); ``calibrated=False`` gives the raw
    heuristic scores.
    """
    import cv2

    from genguard.detectors import DetectorError

    for name in methods:
        if name not in ANALYSES:
            raise DetectorError(f"unknown forgery method {name!r}; choose from {', '.join(METHODS)}")
    rgb, info = bounded_copy(as_rgb_array(image), max_pixels)
    out = {}
    for name in methods:
        if name == "copy_move" and rgb.shape[0] * rgb.shape[1] > COPY_MOVE_MAX_PIXELS:
            small, cm_info = bounded_copy(rgb, COPY_MOVE_MAX_PIXELS)
            r = ANALYSES[name](small)
            r.map = cv2.resize(r.map, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_NEAREST)
            r.details["analysed"] = dict(info, analysed_size=cm_info["analysed_size"],
                                         scale=round(cm_info["analysed_size"][0] / info["image_size"][0], 6),
                                         note="copy-move matched on a downscaled copy to bound memory and time; "
                                              "its map is stretched back")
        else:
            r = ANALYSES[name](rgb)
            r.details["analysed"] = dict(info)
        out[name] = calibrate(name, r) if calibrated else r
    return out


def map_to_png_array(m: np.ndarray) -> np.ndarray:
    """Greyscale uint8: 0 clean ... 255 manipulated."""
    return np.clip(np.round(np.asarray(m, dtype=np.float32) * 255.0), 0, 255).astype(np.uint8)


def overlay(rgb: np.ndarray, m: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The image with the map blended in red where it is high (for people, beside the greyscale maps)."""
    base = rgb.astype(np.float32)
    grey = _luma(rgb)[..., None].repeat(3, axis=2)
    base = 0.5 * base + 0.5 * grey
    a = (alpha * np.clip(m, 0, 1))[..., None]
    red = np.zeros_like(base)
    red[..., 0] = 255.0
    return np.clip(np.round(base * (1 - a) + red * a), 0, 255).astype(np.uint8)
