"""Memorization: near-duplicates of training items (Carlini et al. 2023 distance ratio) and distance to closest record.

A sample is a suspected copy of its nearest training item when

    distance_ratio = d(sample, 1st nearest train item) / d(sample, n-th nearest train item) < threshold

(Carlini et al., "Extracting Training Data from Diffusion Models", 2023,
compare the nearest distance with the distances to the n nearest; we use the
n-th, as the issue states). The ratio adapts to local density: a sample in a
crowded region needs to be much closer to one item than to its neighbours.

For images the distance is translation-tolerant: the minimum over shifts of
up to ``max_shift`` pixels of the Euclidean distance on the overlapping part
of the two images (rescaled to the full area), so a copy moved by one pixel,
whose edge row is lost, is still found. Exact: the k nearest under the minimum
over shifts are among the union of the k nearest under each shift.

A fixed threshold (0.3 in the paper's spirit) calls real records written by
other people copies where the data are simple (a "1" is near many "1"s). So
by default the threshold is calibrated on the real data itself: the same
ratio computed for real records the model was not trained on (holdout, and
training records left out one at a time) gives the distribution real novelty
reaches, and the threshold is set at a stated false-copy rate of it
(:func:`calibrate_threshold`); ``distance_ratio`` is then only an upper cap.
The same rule applied to the holdout items gives
``holdout_false_positive_rate``.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from genguard.audits import AuditError
from genguard.audits.nn import knn
from genguard.audits.stats import wilson_interval
from genguard.audits.sections import Reason, missing

DEFAULT_RATIO_THRESHOLD = 0.3
#: Share of real records not trained on that the calibrated threshold may call copies.
DEFAULT_FALSE_COPY_RATE = 0.001
DEFAULT_NTH = 20
DEFAULT_MAX_SHIFT = 1


def shifts(max_shift: int) -> list[tuple[int, int]]:
    r = range(-max_shift, max_shift + 1)
    return [(dy, dx) for dy in r for dx in r]


def shift_images(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Translate ``(n, H, W[, C])`` images by (dy, dx) pixels with zero padding."""
    out = np.zeros_like(images)
    h, w = images.shape[1], images.shape[2]
    ys = slice(max(dy, 0), h + min(dy, 0))
    yd = slice(max(-dy, 0), h + min(-dy, 0))
    xs = slice(max(dx, 0), w + min(dx, 0))
    xd = slice(max(-dx, 0), w + min(-dx, 0))
    out[:, ys, xs] = images[:, yd, xd]
    return out


def knn_shift_tolerant(queries: np.ndarray, base: np.ndarray, k: int, max_shift: int = DEFAULT_MAX_SHIFT,
                       exclude_self: bool = False, progress: Callable[[int], None] | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """k nearest base images under min-over-shifts Euclidean distance; ``queries``/``base`` are (n, H, W[, C])."""
    q = np.asarray(queries, dtype=np.float32)
    b = np.asarray(base, dtype=np.float32)
    bflat = b.reshape(len(b), -1)
    if q.ndim < 3 or max_shift == 0:
        return knn(q.reshape(len(q), -1), bflat, k=k, exclude_self=exclude_self)
    ds, is_ = [], []
    h, w = q.shape[1], q.shape[2]
    for dy, dx in shifts(max_shift):
        # compare only the overlap of the query moved by (dy, dx) with the base item, rescaled to the full area
        qc = q[:, max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
        bc = b[:, max(dy, 0):h - max(-dy, 0), max(dx, 0):w - max(-dx, 0)]
        scale = np.sqrt((h * w) / (qc.shape[1] * qc.shape[2]))
        d, i = knn(qc.reshape(len(q), -1), bc.reshape(len(b), -1), k=k, exclude_self=exclude_self)
        ds.append(d * scale)
        is_.append(i)
        if progress is not None:
            progress(1)
    d = np.concatenate(ds, axis=1)
    i = np.concatenate(is_, axis=1)
    # per row: keep each base index once with its smallest distance, then the k smallest
    out_d = np.empty((len(q), k))
    out_i = np.empty((len(q), k), dtype=np.int64)
    for r in range(len(q)):
        o = np.lexsort((d[r], i[r]))
        ir, dr = i[r][o], d[r][o]
        first = np.ones(len(ir), dtype=bool)
        first[1:] = ir[1:] != ir[:-1]
        ir, dr = ir[first], dr[first]
        top = np.argsort(dr, kind="stable")[:k]
        out_d[r], out_i[r] = dr[top], ir[top]
    return out_d, out_i


def distance_ratios(queries: np.ndarray, train: np.ndarray, nth: int = DEFAULT_NTH, max_shift: int = DEFAULT_MAX_SHIFT,
                    exclude_self: bool = False) -> dict[str, np.ndarray]:
    """Nearest distance, n-th nearest distance, their ratio and the nearest item for each query."""
    if len(train) < nth:
        raise AuditError(f"memorization: {len(train)} training items, fewer than n={nth} neighbours")
    d, i = knn_shift_tolerant(queries, train, k=nth, max_shift=max_shift, exclude_self=exclude_self)
    d1, dn = d[:, 0], d[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(dn > 0, d1 / dn, 0.0)
    return {"d1": d1, "dn": dn, "ratio": ratio, "nearest": i[:, 0]}


def calibrate_threshold(train: np.ndarray, holdout: np.ndarray | None, *, false_copy_rate: float = DEFAULT_FALSE_COPY_RATE,
                        cap: float = DEFAULT_RATIO_THRESHOLD, nth: int = DEFAULT_NTH,
                        max_shift: int = DEFAULT_MAX_SHIFT) -> dict[str, Any]:
    """The ratio threshold below which real records not trained on fall at most ``false_copy_rate`` of the time.

    Calibration records: the holdout against the training set, plus every
    training record against the other training records (leave-one-out), so
    that the threshold rests on as many real-vs-real ratios as the data have.
    For a new real record exchangeable with them, the chance that its ratio
    falls strictly below the j-th smallest of n calibration ratios is at most
    j / (n + 1) (order statistics; a conformal bound). The threshold is the
    j-th smallest with j = floor(false_copy_rate * (n + 1)), at least 1; when
    n is too small for the rate asked for (j would be 0) the bound achieved,
    1 / (n + 1), is reported instead. The threshold never exceeds ``cap``.
    """
    t = np.asarray(train, dtype=np.float32)
    parts = [distance_ratios(t, t, nth=nth, max_shift=max_shift, exclude_self=True)["ratio"]]
    sources = [f"{len(t)} training records against the other training records (leave-one-out)"]
    if holdout is not None and len(holdout) > 0:
        parts.append(distance_ratios(np.asarray(holdout, np.float32), t, nth=nth, max_shift=max_shift)["ratio"])
        sources.append(f"{len(holdout)} holdout records against the training set")
    ratios = np.sort(np.concatenate(parts))
    n = len(ratios)
    j = max(1, int(np.floor(false_copy_rate * (n + 1))))
    calibrated = float(ratios[j - 1])
    threshold = min(calibrated, cap)
    return {
        "threshold": threshold,
        "calibrated_quantile": calibrated,
        "capped": calibrated > cap,
        "cap": cap,
        "false_copy_rate_asked": false_copy_rate,
        "false_copy_rate_bound": j / (n + 1),
        "order_statistic": j,
        "n_calibration": int(n),
        "calibration_records": sources,
        "real_ratio_quantiles": {q: float(np.quantile(ratios, float(q))) for q in ("0", "0.001", "0.01", "0.05", "0.5")},
        "rule": (f"a sample is a suspected copy when its ratio is below "
                 f"{'the smallest' if j == 1 else f'the {j}th smallest'} of {n} real-vs-real ratios "
                 f"(a real record not trained on falls below it with probability <= {j}/{n + 1})"
                 + (f", capped at {cap:g}" if calibrated > cap else "")),
    }


def memorization_section(samples: np.ndarray, train: np.ndarray, holdout: np.ndarray | None, *,
                         threshold: float = DEFAULT_RATIO_THRESHOLD, nth: int = DEFAULT_NTH,
                         max_shift: int = DEFAULT_MAX_SHIFT, alpha: float = 0.05, seed: int = 0,
                         calibrate: bool = True, false_copy_rate: float = DEFAULT_FALSE_COPY_RATE,
                         sample_names: list[str] | None = None, max_listed: int = 50) -> dict[str, Any]:
    """The report's memorization section: suspected copies, distances and the threshold's calibration.

    With ``calibrate`` (the default) the ratio threshold is set on real data by
    :func:`calibrate_threshold` and ``threshold`` is only its upper cap;
    without it ``threshold`` is used as given (a fixed Carlini-style ratio).
    """
    s = np.asarray(samples, dtype=np.float32)
    t = np.asarray(train, dtype=np.float32)
    if len(s) == 0:
        raise AuditError("memorization: no samples")
    if s.shape[1:] != t.shape[1:]:
        raise AuditError(f"memorization: samples have shape {s.shape[1:]}, training items {t.shape[1:]}")
    res = distance_ratios(s, t, nth=nth, max_shift=max_shift)
    calibration: dict[str, Any] = missing(Reason.NOT_RUN, "calibration switched off: fixed ratio threshold")
    if calibrate:
        calibration = calibrate_threshold(t, holdout, false_copy_rate=false_copy_rate, cap=threshold, nth=nth,
                                          max_shift=max_shift)
        threshold = calibration["threshold"]
    is_dup = res["ratio"] < threshold
    exact = res["d1"] <= 1e-6
    order = np.argsort(res["ratio"], kind="stable")
    dups = []
    for idx in order:
        if not is_dup[idx]:
            break
        entry = {"sample": int(idx), "train_item": int(res["nearest"][idx]),
                 "distance_ratio": float(res["ratio"][idx]), "distance": float(res["d1"][idx])}
        if sample_names is not None:
            entry["sample_file"] = sample_names[idx]
        dups.append(entry)
    n = len(s)
    lo, hi = wilson_interval(int(is_dup.sum()), n, alpha)
    out: dict[str, Any] = {
        "near_duplicates": dups[:max_listed],
        "near_duplicates_listed": min(len(dups), max_listed),
        "near_duplicate_count": int(is_dup.sum()),
        "near_duplicate_rate": float(is_dup.mean()),
        "near_duplicate_rate_ci": [float(lo), float(hi)],
        "exact_duplicate_count": int(exact.sum()),
        "distance_ratio_threshold": threshold,
        "threshold_calibration": calibration,
        "nth_neighbour": nth,
        "max_shift_pixels": max_shift if s.ndim >= 3 else 0,
        "distance": "Euclidean pixel distance on the overlap, minimum over translations" if s.ndim >= 3 and max_shift
                    else "Euclidean distance",
        "distance_ratio_quantiles": {q: float(np.quantile(res["ratio"], float(q))) for q in ("0.01", "0.05", "0.5")},
        "method": "Carlini et al. 2023: nearest training distance / n-th nearest training distance < threshold"
                  + ("; threshold calibrated on real records not trained on" if calibrate else "; fixed threshold"),
        "_ratios": res["ratio"],
        "_d1": res["d1"],
        "_nearest": res["nearest"],
    }
    if holdout is not None and len(holdout) > 0:
        h = np.asarray(holdout, dtype=np.float32)
        hres = distance_ratios(h, t, nth=nth, max_shift=max_shift)
        hfp = hres["ratio"] < threshold
        hlo, hhi = wilson_interval(int(hfp.sum()), len(h), alpha)
        out["holdout_false_positive_rate"] = float(hfp.mean())
        out["holdout_false_positive_rate_ci"] = [float(hlo), float(hhi)]
        if calibrate:
            out["holdout_false_positive_rate_note"] = (
                "in-sample: the holdout is part of the calibration set; the out-of-sample bound is "
                "threshold_calibration.false_copy_rate_bound")
        out["dcr"] = dcr_train_vs_holdout(s, t, h, max_shift=max_shift, alpha=alpha, seed=seed)
    else:
        out["holdout_false_positive_rate"] = missing(Reason.NO_HOLDOUT)
        out["dcr"] = missing(Reason.NO_HOLDOUT)
    return out


def dcr_train_vs_holdout(samples: np.ndarray, train: np.ndarray, holdout: np.ndarray, *, max_shift: int = 0,
                         alpha: float = 0.05, seed: int = 0, permutations: int = 2000) -> dict[str, Any]:
    """Distance to closest record: is a sample's nearest real item a training item more often than chance?

    Train and holdout are a random split of the same real data. If the
    generator's output does not depend on *which* items were trained on, the
    nearest real item of a sample (in train + holdout) is a training item with
    probability n_train / (n_train + n_holdout), by exchangeability. The
    p-value re-randomises the train/holdout labels of the real items
    (a permutation test), so it stays exact even though many samples share a
    nearest item. A large share means the generator sits on its training items.
    """
    rng = np.random.default_rng(seed)
    real = np.concatenate([np.asarray(train, np.float32), np.asarray(holdout, np.float32)])
    is_train = np.zeros(len(real), dtype=bool)
    is_train[: len(train)] = True
    d, idx = knn_shift_tolerant(samples, real, k=1, max_shift=max_shift)
    nearest = idx[:, 0]
    share = float(is_train[nearest].mean())
    expected = len(train) / len(real)
    perm_shares = np.empty(permutations)
    for b in range(permutations):
        perm_shares[b] = rng.permutation(is_train)[nearest].mean()
    p = float((1 + np.sum(perm_shares >= share - 1e-12)) / (permutations + 1))
    in_train = is_train[nearest]
    return {
        "share_nearest_in_train": share,
        "expected_share_if_no_copying": expected,
        "null_95th_percentile": float(np.quantile(perm_shares, 1 - alpha)),
        "p_value": p,
        "test": f"permutation test over {permutations} re-randomised train/holdout labels (one-sided)",
        "median_dcr_when_nearest_is_train": float(np.median(d[in_train, 0])) if in_train.any() else None,
        "median_dcr_when_nearest_is_holdout": float(np.median(d[~in_train, 0])) if (~in_train).any() else None,
        "distinct_nearest_items": int(len(np.unique(nearest))),
    }
