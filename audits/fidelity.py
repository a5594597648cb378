"""Fidelity metrics in a local feature space: fid_local, kid_local, PRDC, alpha-precision/beta-recall/authenticity, PSNR/SSIM.

All distributional metrics take feature arrays (real, generated); the release
audit feeds them the hidden layer of the audit's own classifier (see
``audits.features``), hence the ``_local`` names: the figures are comparable
between audits with the same reference data and seed, never to published
Inception-based FID/KID. Each result is a dict with ``value`` (``None`` plus
``reason`` when it cannot be computed) and ``warnings`` when the sample is too
small for the metric to be trusted.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from genguard.audits.nn import knn
from genguard.audits.sections import Reason, missing


def _as2d(x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a.reshape(len(a), -1)


def _null(reason: str, code: Reason = Reason.TOO_FEW_SAMPLES, **extra: Any) -> dict[str, Any]:
    return missing(code, reason, **extra)


# --------------------------------------------------------------------------------------
# Frechet distance
# --------------------------------------------------------------------------------------
def frechet_distance(real: Any, fake: Any) -> dict[str, Any]:
    """Frechet distance between Gaussians fitted to two feature sets (the FID formula)."""
    from scipy import linalg

    r, f = _as2d(real), _as2d(fake)
    d = r.shape[1]
    if len(r) < 2 or len(f) < 2:
        return _null(f"needs at least 2 items in each set (real {len(r)}, generated {len(f)})")
    warnings = []
    for what, n in (("generated", len(f)), ("real", len(r))):
        if n <= d:
            warnings.append(f"{what} set has {n} items for {d} feature dimensions: the covariance is singular "
                            "and the Frechet distance is unreliable (strongly biased upwards)")
    mu1, mu2 = r.mean(0), f.mean(0)
    s1, s2 = np.cov(r, rowvar=False), np.cov(f, rowvar=False)
    # tr sqrt(S1 S2) = sum of sqrt eigenvalues of the symmetric PSD matrix S1^1/2 S2 S1^1/2: stable even
    # when a covariance is singular (dead ReLU units), where scipy.linalg.sqrtm(S1 @ S2) warns and may fail
    w, v = linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    tr_covmean = float(np.sqrt(np.clip(linalg.eigvalsh(root1 @ s2 @ root1), 0.0, None)).sum())
    value = float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    return {"value": max(value, 0.0), "n_real": len(r), "n_generated": len(f), "feature_dim": d,
            "warnings": warnings}


# --------------------------------------------------------------------------------------
# Kernel inception distance (local)
# --------------------------------------------------------------------------------------
def kernel_distance(real: Any, fake: Any, *, subsets: int = 50, subset_size: int = 500, seed: int = 0,
                    alpha: float = 0.05) -> dict[str, Any]:
    """Unbiased MMD^2 with the cubic polynomial kernel (the KID estimator), averaged over random subsets.

    The interval is the spread (``alpha/2`` and ``1 - alpha/2`` quantiles) of
    the subset estimates: it shows estimator variability, not a formal CI of
    the population KID.
    """
    r, f = _as2d(real), _as2d(fake)
    m = min(subset_size, len(r), len(f))
    if m < 2:
        return _null(f"needs at least 2 items in each set (real {len(r)}, generated {len(f)})")
    d = r.shape[1]
    rng = np.random.default_rng(seed)
    est = np.empty(subsets)
    for s in range(subsets):
        x = r[rng.choice(len(r), m, replace=False)]
        y = f[rng.choice(len(f), m, replace=False)]
        kxx = (x @ x.T / d + 1.0) ** 3
        kyy = (y @ y.T / d + 1.0) ** 3
        kxy = (x @ y.T / d + 1.0) ** 3
        est[s] = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
                  - 2.0 * kxy.mean())
    warnings = [] if m >= 100 else [f"subsets of {m} items: KID estimates are very noisy below ~100"]
    return {"value": float(est.mean()), "std": float(est.std(ddof=1)) if subsets > 1 else None,
            "ci": [float(np.quantile(est, alpha / 2)), float(np.quantile(est, 1 - alpha / 2))],
            "ci_kind": "spread of subset estimates", "subsets": subsets, "subset_size": m, "warnings": warnings}


# --------------------------------------------------------------------------------------
# Precision / recall / density / coverage (Naeem et al. 2020)
# --------------------------------------------------------------------------------------
def prdc(real: Any, fake: Any, k: int = 5, real_radii: np.ndarray | None = None) -> dict[str, Any]:
    """Precision, recall, density and coverage with k-NN balls (Kynkaanniemi 2019; Naeem et al. 2020).

    ``real_radii`` (the k-th nearest-neighbour distances within ``real``) saves recomputing them when the
    same real set is compared with several generated sets."""
    r, f = _as2d(real), _as2d(fake)
    if len(r) <= k or len(f) <= k:
        return _null(f"needs more than k={k} items in each set (real {len(r)}, generated {len(f)})")
    r_rad = knn(r, r, k=k, exclude_self=True)[0][:, -1] if real_radii is None else np.asarray(real_radii)
    f_rad = knn(f, f, k=k, exclude_self=True)[0][:, -1]
    precision_hits = np.zeros(len(f), dtype=bool)
    density_counts = np.zeros(len(f))
    for s in range(0, len(f), 2048):
        d = _cdist(f[s:s + 2048], r)  # (nf, nr)
        inside = d <= r_rad[None, :]
        precision_hits[s:s + 2048] = inside.any(1)
        density_counts[s:s + 2048] = inside.sum(1)
    recall_hits = np.zeros(len(r), dtype=bool)
    nearest_fake = np.full(len(r), np.inf)
    for s in range(0, len(r), 2048):
        d = _cdist(r[s:s + 2048], f)
        recall_hits[s:s + 2048] = (d <= f_rad[None, :]).any(1)
        nearest_fake[s:s + 2048] = d.min(1)
    warnings = []
    if min(len(r), len(f)) < 500:
        warnings.append(f"fewer than 500 items (real {len(r)}, generated {len(f)}): k-NN manifold estimates "
                        "are coarse; compare PRDC only at equal sample sizes")
    from genguard.audits.stats import wilson_interval

    def _prop(hits: np.ndarray) -> dict[str, Any]:
        lo, hi = wilson_interval(int(hits.sum()), len(hits))
        return {"value": float(hits.mean()), "ci": [float(lo), float(hi)], "n": int(len(hits))}

    return {
        "precision": _prop(precision_hits),
        "recall": _prop(recall_hits),
        "density": {"value": float(density_counts.sum() / (k * len(f))), "n": int(len(f))},
        "coverage": _prop(nearest_fake <= r_rad),
        "k": k,
        "warnings": warnings,
        "_precision_hits": precision_hits,
        "_coverage_hits": nearest_fake <= r_rad,
        "_recall_hits": recall_hits,
    }


def _cdist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(d2, 0.0))


# --------------------------------------------------------------------------------------
# alpha-precision, beta-recall, authenticity (Alaa et al. 2022)
# --------------------------------------------------------------------------------------
def alpha_beta_authenticity(real: Any, fake: Any, n_alphas: int = 30) -> dict[str, Any]:
    """Integrated alpha-precision, beta-recall and authenticity (Alaa et al., ICML 2022).

    Follows the reference implementation's estimator (as in synthcity) but
    with a Euclidean ball around the real mean in the local feature space
    instead of a learned one-class (Deep SVDD) embedding; named accordingly.
    """
    r, f = _as2d(real), _as2d(fake)
    if len(r) < 3 or len(f) < 2:
        return _null(f"needs at least 3 real and 2 generated items (real {len(r)}, generated {len(f)})")
    alphas = np.linspace(0, 1, n_alphas)
    centre = r.mean(0)
    r_to_c = np.linalg.norm(r - centre, axis=1)
    radii = np.quantile(r_to_c, alphas)
    f_centre = f.mean(0)
    f_to_c = np.linalg.norm(f - centre, axis=1)
    r_to_r = knn(r, r, k=1, exclude_self=True)[0][:, 0]
    r_to_f, r_to_f_idx = knn(r, f, k=1)
    r_to_f = r_to_f[:, 0]
    closest_f = f[r_to_f_idx[:, 0]]
    closest_f_to_fc = np.linalg.norm(closest_f - f_centre, axis=1)
    f_radii = np.quantile(closest_f_to_fc, alphas)
    a_prec = np.array([(f_to_c <= radii[i]).mean() for i in range(n_alphas)])
    b_cov = np.array([((r_to_f <= r_to_r) & (closest_f_to_fc <= f_radii[i])).mean() for i in range(n_alphas)])
    step = alphas[1] - alphas[0]
    delta_p = 1.0 - 2.0 * np.abs(alphas - a_prec).sum() * step
    delta_c = 1.0 - 2.0 * np.abs(alphas - b_cov).sum() * step
    f_to_r, f_to_r_idx = knn(f, r, k=1)
    authentic = r_to_r[f_to_r_idx[:, 0]] < f_to_r[:, 0]
    return {
        "alpha_precision": {"value": float(delta_p), "curve": a_prec.round(4).tolist()},
        "beta_recall": {"value": float(delta_c), "curve": b_cov.round(4).tolist()},
        "authenticity": {"value": float(authentic.mean()), "n": int(len(f))},
        "alphas": alphas.round(4).tolist(),
        "embedding": "Euclidean ball in the local feature space (not a learned one-class embedding)",
    }


# --------------------------------------------------------------------------------------
# Reconstructions
# --------------------------------------------------------------------------------------
def reconstruction_quality(originals: Any, reconstructions: Any, data_range: float = 1.0) -> dict[str, Any]:
    """Mean PSNR (dB) and SSIM of reconstructions against originals (scikit-image), with bootstrap-free SE."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a = np.asarray(originals, dtype=np.float64)
    b = np.asarray(reconstructions, dtype=np.float64)
    if a.shape != b.shape or len(a) == 0:
        return _null(f"originals {a.shape} and reconstructions {b.shape} must have the same non-empty shape",
                     Reason.NOT_GIVEN)
    psnr, ssim = [], []
    for x, y in zip(a, b):
        mse = float(np.mean((x - y) ** 2))
        psnr.append(float("inf") if mse == 0 else peak_signal_noise_ratio(x, y, data_range=data_range))
        win = min(7, min(x.shape[:2]) // 2 * 2 - 1)
        ssim.append(structural_similarity(x, y, data_range=data_range, win_size=max(win, 3),
                                          channel_axis=-1 if x.ndim == 3 else None))
    psnr_a, ssim_a = np.asarray(psnr), np.asarray(ssim)
    finite = np.isfinite(psnr_a)

    def _mean_se(v: np.ndarray) -> dict[str, Any]:
        se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else None
        m = float(v.mean()) if len(v) else None
        return {"value": m, "ci": [m - 1.96 * se, m + 1.96 * se] if se is not None else None, "n": int(len(v))}

    out = {"psnr_db": _mean_se(psnr_a[finite]), "ssim": _mean_se(ssim_a)}
    if not finite.all():
        out["psnr_db"]["perfect_reconstructions"] = int((~finite).sum())
    return out


# --------------------------------------------------------------------------------------
# Diversity against the real reference level
# --------------------------------------------------------------------------------------
def _mean_pairwise(a: np.ndarray) -> float:
    """Mean Euclidean distance over the distinct pairs of ``a`` (a U-statistic: no bias from the set's size)."""
    d = _cdist(a, a)
    n = len(a)
    return float(d.sum() / (n * (n - 1)))


def diversity(real: Any, fake: Any, reference: Any, *, real_labels: Any = None, fake_labels: Any = None,
              class_names: list[str] | None = None, k: int = 5, seed: int = 0, alpha: float = 0.05,
              repeats: int = 5, min_class_items: int = 5) -> dict[str, Any]:
    """Recall and coverage of the generated set relative to real data's own level, and within-class spread.

    ``real`` is the training split's features, ``reference`` a real split the
    generator never saw (the holdout). Recall and coverage grow with the size
    of the generated set, so the generator and the reference are compared at
    the same size: the larger of the two is subsampled (``repeats`` random
    subsets, averaged) to the smaller's size. ``recall_relative`` is the
    generator's recall divided by the holdout's recall against the same
    training split; its ``value`` is the LOWER end of a conservative
    interval (Wilson bounds of both proportions combined as lower/upper), so
    a sample too small to show diversity does not pass on a lucky estimate.

    ``within_class`` compares, for each class, the mean pairwise distance of
    the generated items labelled with that class to the mean pairwise distance
    of the real training items of that class: a generator that draws one image
    per class with small jitter scores near 0, real data near 1. Its gated
    figure ``min_ratio`` is the smallest ratio over the classes with at least
    ``min_class_items`` generated items.
    """
    from genguard.audits.stats import wilson_interval

    r, f, h = _as2d(real), _as2d(fake), _as2d(reference)
    m = min(len(f), len(h))
    if len(r) <= k or m <= k:
        return _null(f"needs more than k={k} items in each set (train {len(r)}, generated {len(f)}, holdout {len(h)})")
    rng = np.random.default_rng(seed)
    r_rad = knn(r, r, k=k, exclude_self=True)[0][:, -1]

    def _matched(x: np.ndarray) -> dict[str, float]:
        reps = 1 if len(x) == m else repeats
        rec = cov = 0.0
        for _ in range(reps):
            sub = x if len(x) == m else x[rng.choice(len(x), m, replace=False)]
            p = prdc(r, sub, k=k, real_radii=r_rad)
            rec += p["recall"]["value"] / reps
            cov += p["coverage"]["value"] / reps
        return {"recall": rec, "coverage": cov}

    gen, ref = _matched(f), _matched(h)
    n = len(r)  # recall and coverage are shares of the training items
    out: dict[str, Any] = {"matched_size": m, "n_train": n, "n_generated": len(f), "n_reference": len(h), "k": k,
                           "subsets": 1 if len(f) == m and len(h) == m else repeats}
    for metric in ("recall", "coverage"):
        g, b = gen[metric], ref[metric]
        g_lo, g_hi = wilson_interval(int(round(g * n)), n, alpha)
        b_lo, b_hi = wilson_interval(int(round(b * n)), n, alpha)
        if b <= 0:
            out[f"{metric}_relative"] = _null(f"the holdout's {metric} against train is 0", Reason.DEGENERATE_REFERENCE)
            continue
        out[f"{metric}_relative"] = {
            "value": float(g_lo / b_hi) if b_hi > 0 else None,
            "point": float(g / b),
            "ci": [float(g_lo / b_hi), float(g_hi / max(b_lo, 1e-12))],
            "generated": float(g), "reference": float(b),
            "gated_on": "lower end of the interval",
        }
    out["reference_note"] = ("reference: the real holdout against the training split at the same set size, the level "
                             "a generator drawing fresh real data would reach")
    if real_labels is None or fake_labels is None:
        out["within_class"] = _null("no class labels for the real and generated items", Reason.NO_LABELS)
        return out
    rl, fl = np.asarray(real_labels), np.asarray(fake_labels)
    classes = sorted(set(rl.tolist()))
    per_class, ratios = {}, []
    for c in classes:
        name = class_names[c] if class_names is not None and 0 <= c < len(class_names) else str(c)
        fc, rc = f[fl == c], r[rl == c]
        if len(fc) < min_class_items or len(rc) < 2:
            per_class[name] = {"value": None, "n_generated": int(len(fc)),
                               "reason": f"{len(fc)} generated items (< {min_class_items})"}
            continue
        if len(fc) > 500:  # the mean pairwise distance is unbiased at any size; bound the memory
            fc = fc[rng.choice(len(fc), 500, replace=False)]
        if len(rc) > 500:
            rc = rc[rng.choice(len(rc), 500, replace=False)]
        real_spread = _mean_pairwise(rc)
        ratio = _mean_pairwise(fc) / real_spread if real_spread > 0 else None
        per_class[name] = {"value": ratio, "n_generated": int((fl == c).sum()), "n_real": int((rl == c).sum())}
        if ratio is not None:
            ratios.append(ratio)
    out["within_class"] = {
        "min_ratio": {"value": float(min(ratios))} if ratios else
        missing(Reason.TOO_FEW_SAMPLES, f"no class has {min_class_items} or more generated items"),
        "mean_ratio": float(np.mean(ratios)) if ratios else None,
        "per_class": per_class,
        "measure": "mean pairwise distance of generated items of a class / that of the real training items of the "
                   "class, in the audit's local feature space (1: as varied as real data; near 0: one image repeated)",
    }
    return out
