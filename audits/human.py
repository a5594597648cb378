"""Human-evaluation statistics: 2AFC real-vs-generated share with Wilson intervals, MOS with intervals, Krippendorff's α.

The console (``genguard console``) collects the judgements; this module turns
them into the ``human`` section a release report can include:

- **2AFC** (HYPE-style, Zhou et al. 2019): each trial shows one real and one
  generated image; the statistic is the share of trials in which the rater
  judged the *generated* image to be the real one (0.5 = indistinguishable,
  0 = always caught), with a Wilson score interval. Trials are pooled over
  raters; the interval treats trials as independent, which understates the
  uncertainty when a few raters give most of the trials (the per-rater rates
  are reported so that can be seen).
- **MOS**: 1–5 ratings; the mean per source (real / generated) with a
  t-interval over the per-stimulus means (stimuli are the sampling unit), and
  the difference generated − real.
- **Krippendorff's α** (Krippendorff 2011, "Computing Krippendorff's
  Alpha-Reliability"): agreement among raters over units, missing ratings
  allowed, for nominal, ordinal, interval and ratio data.

Raters who fail attention checks are excluded before any statistic; how many
were excluded is reported.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Iterable, Sequence

import numpy as np
from scipy import stats


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``k / n`` (``(0, 1)`` when ``n == 0``)."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= k <= n:
        raise ValueError(f"k={k} outside 0..n={n}")
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _distance(level: str, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The δ² metric between every pair of values (Krippendorff 2011, section 'difference functions')."""
    v = values[:, None], values[None, :]
    if level == "nominal":
        return (v[0] != v[1]).astype(float)
    if level == "interval":
        return (v[0] - v[1]) ** 2
    if level == "ratio":
        s = v[0] + v[1]
        with np.errstate(invalid="ignore", divide="ignore"):
            d = np.where(s == 0, 0.0, ((v[0] - v[1]) / s) ** 2)
        return d
    if level == "ordinal":
        # δ²(c,k) = (sum of n_g for g from c to k, minus (n_c + n_k)/2)², values in rank order
        cum = np.cumsum(counts)
        i, j = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
        lo, hi = np.minimum(i, j), np.maximum(i, j)
        between = cum[hi] - np.where(lo > 0, cum[lo - 1], 0)
        return (between - (counts[lo] + counts[hi]) / 2.0) ** 2
    raise ValueError(f"level {level!r}: use nominal, ordinal, interval or ratio")


def krippendorff_alpha(data: Sequence[Sequence[float | None]], level: str = "interval") -> float:
    """Krippendorff's α for a raters × units table (``None`` or NaN = missing); ``nan`` when undefined.

    Units rated by fewer than two raters carry no pairable value and are dropped, as the method says.
    """
    if level not in ("nominal", "ordinal", "interval", "ratio"):
        raise ValueError(f"level {level!r}: use nominal, ordinal, interval or ratio")
    arr = np.array([[np.nan if x is None else float(x) for x in row] for row in data], dtype=float)
    if arr.ndim != 2:
        raise ValueError("data must be a raters x units table")
    values = np.unique(arr[~np.isnan(arr)])
    if values.size == 0:
        return float("nan")
    index = {v: i for i, v in enumerate(values)}
    o = np.zeros((values.size, values.size))  # coincidence matrix
    for unit in arr.T:
        vals = unit[~np.isnan(unit)]
        m = vals.size
        if m < 2:
            continue
        c = np.zeros(values.size)
        for x in vals:
            c[index[x]] += 1
        o += (np.outer(c, c) - np.diag(c)) / (m - 1)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return float("nan")
    d = _distance(level, values, n_c)
    d_o = (o * d).sum()
    d_e = (np.outer(n_c, n_c) * d).sum() / (n - 1)
    if d_e == 0:
        return float("nan")  # no variation at all: agreement is undefined, not perfect
    return float(1.0 - d_o / d_e)


def _t_interval(x: Sequence[float], confidence: float = 0.95) -> tuple[float | None, float | None]:
    x = np.asarray(x, dtype=float)
    if x.size < 2:
        return (None, None)
    se = x.std(ddof=1) / math.sqrt(x.size)
    t = float(stats.t.ppf(0.5 + confidence / 2, x.size - 1))
    return (float(x.mean() - t * se), float(x.mean() + t * se))


def excluded_raters(attention: Iterable[tuple[Any, bool]], max_failures: int = 0) -> set[Any]:
    """Raters with more than ``max_failures`` failed attention checks, from ``(rater, passed)`` pairs."""
    fails: dict[Any, int] = defaultdict(int)
    for rater, passed in attention:
        fails[rater] += 0 if passed else 1
    return {r for r, f in fails.items() if f > max_failures}


def two_afc(trials: Iterable[tuple[Any, bool]], confidence: float = 0.95) -> dict[str, Any]:
    """From ``(rater, generated_judged_real)`` pairs: the pooled share with a Wilson interval, and per rater."""
    per: dict[Any, list[int]] = defaultdict(lambda: [0, 0])
    for rater, fooled in trials:
        per[rater][0] += int(bool(fooled))
        per[rater][1] += 1
    k = sum(v[0] for v in per.values())
    n = sum(v[1] for v in per.values())
    lo, hi = wilson_interval(k, n, confidence)
    return {"method": "2AFC real vs generated (HYPE-style share of generated judged real), Wilson interval",
            "trials": n, "raters": len(per), "generated_judged_real": k,
            "share_generated_judged_real": (k / n) if n else None,
            "ci": [lo, hi] if n else None, "ci_low": lo if n else None, "ci_high": hi if n else None,
            "confidence": confidence,
            "per_rater": {str(r): {"trials": v[1], "share": v[0] / v[1]} for r, v in sorted(per.items(), key=str)}}


def mos(ratings: Iterable[tuple[Any, Any, str, float]], confidence: float = 0.95) -> dict[str, Any]:
    """From ``(rater, stimulus, source, score)`` tuples: mean opinion score per source with t-intervals over
    stimuli, the generated − real difference (Welch interval), and Krippendorff's α (ordinal and interval)."""
    rows = list(ratings)
    by_stim: dict[Any, list[float]] = defaultdict(list)
    source_of: dict[Any, str] = {}
    raters = sorted({r for r, *_ in rows}, key=str)
    for rater, stim, source, score in rows:
        by_stim[stim].append(float(score))
        source_of[stim] = source
    out: dict[str, Any] = {"method": "MOS 1-5: mean per source, t-interval over per-stimulus means; "
                                     "Krippendorff's alpha over raters x stimuli",
                           "ratings": len(rows), "raters": len(raters), "confidence": confidence, "by_source": {}}
    means: dict[str, list[float]] = defaultdict(list)
    for stim, scores in by_stim.items():
        means[source_of[stim]].append(float(np.mean(scores)))
    for source, m in sorted(means.items()):
        lo, hi = _t_interval(m, confidence)
        out["by_source"][source] = {"stimuli": len(m), "mos": float(np.mean(m)), "ci": None if lo is None else [lo, hi]}
    g, r = means.get("generated", []), means.get("real", [])
    if len(g) >= 2 and len(r) >= 2:
        diff = float(np.mean(g) - np.mean(r))
        vg, vr = np.var(g, ddof=1) / len(g), np.var(r, ddof=1) / len(r)
        se = math.sqrt(vg + vr)
        dof = (vg + vr) ** 2 / ((vg ** 2) / (len(g) - 1) + (vr ** 2) / (len(r) - 1)) if se > 0 else 1.0
        t = float(stats.t.ppf(0.5 + confidence / 2, dof))
        out["generated_minus_real"] = {"difference": diff, "ci": [diff - t * se, diff + t * se],
                                       "ci_low": diff - t * se, "ci_high": diff + t * se}
    else:
        out["generated_minus_real"] = {"difference": None, "reason": "needs at least 2 rated stimuli of each source"}
    stims = sorted(by_stim, key=str)
    col = {s: j for j, s in enumerate(stims)}
    table = [[None] * len(stims) for _ in raters]
    ri = {r: i for i, r in enumerate(raters)}
    for rater, stim, _source, score in rows:
        table[ri[rater]][col[stim]] = float(score)
    for level in ("ordinal", "interval"):
        a = krippendorff_alpha(table, level) if rows else float("nan")
        out[f"krippendorff_alpha_{level}"] = None if math.isnan(a) else a
        if math.isnan(a):
            out[f"krippendorff_alpha_{level}_reason"] = "undefined: fewer than two raters per stimulus or no variation"
    return out


def human_gates(section: dict[str, Any], gates: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Gates on a ``{"human": ...}`` section, in the release policy's form (``{"human.two_afc.ci_high": {"min":
    0.3}}``), evaluated by the same code as the release gates, so the names hold once the section is in a report.
    A metric that could not be computed fails (a study without answers proves nothing)."""
    from genguard.audits.policy import evaluate_gates

    if not gates:
        return []
    for name, spec in gates.items():
        if not (isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in ("min", "max")
                and isinstance(next(iter(spec.values())), (int, float))):
            raise ValueError(f"gate {name!r}: give {{min: x}} or {{max: x}}")
    return evaluate_gates(section, {"gates": gates, "on_missing": "fail"})
