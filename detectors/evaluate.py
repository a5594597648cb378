"""Evaluation harness: AUC/AP/accuracy/TPR@1%FPR with bootstrap intervals, robustness suite, leave-one-generator-out."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from genguard.detectors import DetectorError
from genguard.detectors._io import list_images, progress_bar, read_image
from genguard.detectors.preprocess import normalise_format, robustness_transforms

METRICS = ("auc", "ap", "accuracy", "tpr_at_1pct_fpr")


def tpr_at_fpr(y: np.ndarray, s: np.ndarray, fpr_max: float = 0.01) -> float:
    """Highest true-positive rate whose false-positive rate is at most ``fpr_max``."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(y, s)
    ok = fpr <= fpr_max + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def _point(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    return {
        "auc": float(roc_auc_score(y, p)),
        "ap": float(average_precision_score(y, p)),
        "accuracy": float(np.mean((p >= threshold) == (y == 1))),
        "tpr_at_1pct_fpr": tpr_at_fpr(y, p, 0.01),
    }


def binary_metrics(y: Sequence[int], p: Sequence[float], threshold: float = 0.5, n_boot: int = 1000,
                   seed: int = 0) -> dict[str, Any]:
    """Each metric with a 95% percentile-bootstrap interval (resampling real and fake separately).

    ``accuracy`` is at the calibrated threshold (P(synthetic) >= 0.5 means synthetic).
    """
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=np.float64)
    if len(np.unique(y)) < 2:
        raise DetectorError("evaluation needs both real and fake images")
    point = _point(y, p, threshold)
    rng = np.random.default_rng(seed)
    i0, i1 = np.nonzero(y == 0)[0], np.nonzero(y == 1)[0]
    boots = {k: [] for k in METRICS}
    for _ in range(n_boot):
        idx = np.r_[rng.choice(i0, len(i0)), rng.choice(i1, len(i1))]
        for k, v in _point(y[idx], p[idx], threshold).items():
            boots[k].append(v)
    out: dict[str, Any] = {}
    for k in METRICS:
        lo, hi = (np.quantile(boots[k], [0.025, 0.975]) if n_boot else (np.nan, np.nan))
        out[k] = {"value": point[k], "ci95": [float(lo), float(hi)]}
    out["n_real"], out["n_fake"] = int(len(i0)), int(len(i1))
    return out


# --------------------------------------------------------------------------------------
# folders
# --------------------------------------------------------------------------------------
def load_folder(folder: str | os.PathLike, fmt: str = "jpeg95", errors: list[str] | None = None,
                limit: int | None = None, progress: bool = False) -> tuple[list[np.ndarray], list[str]]:
    """All images under ``folder`` (recursively) re-encoded to ``fmt``, with their sub-folder (generator) names.

    Unreadable files are appended to ``errors`` (one line each) and skipped.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DetectorError(f"{folder}: not a folder")
    files = list_images([folder])
    if limit is not None:
        files = files[:limit]
    images, groups = [], []
    with progress_bar(f"reading {folder.name}", total=len(files), enabled=progress) as adv:
        for f in files:
            try:
                images.append(normalise_format(read_image(f), fmt))
                rel = f.parent.relative_to(folder)
                groups.append(rel.parts[0] if rel.parts else "")
            except DetectorError as exc:
                if errors is None:
                    raise
                errors.append(str(exc))
            adv(1)
    if not images:
        raise DetectorError(f"{folder}: no readable images found")
    return images, groups


def evaluate(detector, real: Sequence[np.ndarray], fake: Sequence[np.ndarray], robustness: bool = False,
             n_boot: int = 1000, seed: int = 0, progress: bool = False) -> dict[str, Any]:
    """Metrics of a fitted detector on real and fake images; with ``robustness`` also under each transform."""
    y = np.r_[np.zeros(len(real), int), np.ones(len(fake), int)]
    images = list(real) + list(fake)
    transforms = robustness_transforms(seed) if robustness else {"clean": lambda x: x}
    out: dict[str, Any] = {}
    with progress_bar("evaluating", total=len(transforms), enabled=progress) as adv:
        for name, fn in transforms.items():
            p = detector.predict_proba([fn(im) for im in images])
            m = binary_metrics(y, p, n_boot=n_boot, seed=seed)
            verdicts = [detector.verdict(float(v)) for v in p]
            m["inconclusive_rate"] = float(np.mean([v == "inconclusive" for v in verdicts]))
            out[name] = m
            adv(1, name)
    return out


def leave_one_generator_out(make: Callable[[], Any], real: Sequence[np.ndarray], fake: Sequence[np.ndarray],
                            groups: Sequence[str], n_boot: int = 200, seed: int = 0,
                            progress: bool = False) -> dict[str, Any]:
    """For each generator g: fit ``make()`` on half the real images + fakes of the other generators,
    test on the other half of the real images + fakes of g. Returns per-generator metrics and the mean AUC."""
    groups = np.asarray(groups)
    names = sorted(set(groups.tolist()))
    if len(names) < 2:
        raise DetectorError("leave-one-generator-out needs the fake folder to hold one sub-folder per generator (>= 2)")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(real))
    half = len(real) // 2
    r_tr, r_te = [real[i] for i in perm[:half]], [real[i] for i in perm[half:]]
    per: dict[str, Any] = {}
    with progress_bar("leave-one-generator-out", total=len(names), enabled=progress) as adv:
        for g in names:
            f_tr = [f for f, gg in zip(fake, groups) if gg != g]
            f_te = [f for f, gg in zip(fake, groups) if gg == g]
            det = make()
            if getattr(det, "stack_cv", "holdout") == "family" and len(names) < 3:
                # one generator left to train on: nothing to cross-fit by family, so weigh members on held-out images
                det.stack_cv = "holdout"
            det.fit(r_tr, f_tr, fake_groups=groups[groups != g])
            p = det.predict_proba(list(r_te) + list(f_te))
            y = np.r_[np.zeros(len(r_te), int), np.ones(len(f_te), int)]
            per[g] = binary_metrics(y, p, n_boot=n_boot, seed=seed)
            adv(1, g)
    aucs = [per[g]["auc"]["value"] for g in names]
    return {"per_generator": per, "mean_auc": float(np.mean(aucs)), "min_auc": float(np.min(aucs)),
            "stack_cv": getattr(det, "stack_cv", None)}


def leave_one_family_out_splits(family: Sequence[str], split: Sequence[str], real: str = "real",
                                exclude: Sequence[str] = ()):
    """Yield ``(held_out, train_idx, test_idx)`` for each fake family, leaving it out of training entirely.

    ``family`` names each image's family (``real`` for photographs), ``split`` says ``train`` or ``test``
    (test images must come from photos kept out of training, fakes included, since content-aligned fakes
    are reconstructions of photos). Training: train-split real images and train-split fakes of every
    other family; test: test-split real images and test-split fakes of the held-out family only.
    Families in ``exclude`` (check sets) are never trained on nor held out here.
    """
    family, split = np.asarray(family), np.asarray(split)
    if family.shape != split.shape:
        raise DetectorError(f"family and split differ in length ({family.shape} vs {split.shape})")
    bad = sorted(set(split.tolist()) - {"train", "test"})
    if bad:
        raise DetectorError(f"split must be 'train' or 'test', got {bad[:3]}")
    names = sorted(set(family.tolist()) - {real} - set(exclude))
    if len(names) < 2:
        raise DetectorError("leave-one-family-out needs at least two fake families")
    usable = ~np.isin(family, list(exclude))
    for held in names:
        train = np.nonzero(usable & (split == "train") & (family != held))[0]
        test = np.nonzero((split == "test") & ((family == real) | (family == held)))[0]
        yield held, train, test


def format_table(results: dict[str, Any], title: str = "") -> str:
    """A plain-text table: one row per condition, each metric as value [lo, hi]."""
    lines = [title] if title else []
    lines.append(f"{'condition':<14}" + "".join(f"{k:>26}" for k in METRICS))
    for name, m in results.items():
        cells = "".join(f"{m[k]['value']:>10.3f} [{m[k]['ci95'][0]:.3f}, {m[k]['ci95'][1]:.3f}]" for k in METRICS)
        lines.append(f"{name:<14}{cells}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# forgery evaluation
# --------------------------------------------------------------------------------------
def make_copy_move(rgb: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = (56, 96),
                   max_angle: float = 10.0, scale_range: tuple[float, float] = (0.9, 1.1),
                   jpeg_quality: int | None = 90) -> tuple[np.ndarray, np.ndarray]:
    """A copy-move forgery of a real photo and its ground truth (source and copy both marked).

    A disc of diameter ~0.96 r (r drawn from ``size``) is copied, with
    probability 1/2 rotated by up to ``max_angle`` degrees and with probability
    1/2 scaled within ``scale_range``, pasted at a non-overlapping place, and
    the result JPEG-compressed at ``jpeg_quality``.
    """
    import cv2

    from genguard.detectors._io import jpeg_roundtrip

    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    r = int(rng.integers(size[0], size[1]))
    if h < 2 * r + 2 or w < 2 * r + 2:
        raise DetectorError(f"image of {w}x{h} too small for a {r}-pixel copy-move region")
    sy, sx = int(rng.integers(0, h - r)), int(rng.integers(0, w - r))
    for _ in range(1000):
        ty, tx = int(rng.integers(0, h - r)), int(rng.integers(0, w - r))
        if abs(ty - sy) > r or abs(tx - sx) > r:
            break
    patch = img[sy:sy + r, sx:sx + r].copy()
    ang = float(rng.uniform(-max_angle, max_angle)) if rng.random() < 0.5 else 0.0
    sc = float(rng.uniform(*scale_range)) if rng.random() < 0.5 else 1.0
    M = cv2.getRotationMatrix2D((r / 2, r / 2), ang, sc)
    warped = cv2.warpAffine(patch, M, (r, r), borderMode=cv2.BORDER_REFLECT)
    disc = np.zeros((r, r), np.uint8)
    cv2.circle(disc, (r // 2, r // 2), int(r * 0.48), 1, -1)
    region = img[ty:ty + r, tx:tx + r]
    region[disc > 0] = warped[disc > 0]
    gt = np.zeros((h, w), bool)
    gt[ty:ty + r, tx:tx + r] |= disc > 0
    src = cv2.warpAffine(disc, cv2.invertAffineTransform(M), (r, r), flags=cv2.INTER_NEAREST)
    gt[sy:sy + r, sx:sx + r] |= src > 0
    if jpeg_quality is not None:
        img = jpeg_roundtrip(img, jpeg_quality)
    return img, gt


def pixel_f1(pred: np.ndarray, gt: np.ndarray) -> float:
    """Pixel-level F1 of a binary map (an empty prediction of a non-empty truth scores 0)."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    tp = float((pred & gt).sum())
    denom = float(pred.sum() + gt.sum())
    return 2 * tp / denom if denom else 1.0
