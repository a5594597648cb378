"""Representation bias over generated outputs: group shares vs expected shares, with simultaneous intervals and tests.

The decision rule, the same in the report and in the simulation tests: a
group is *flagged* when all three hold —

1. the Monte-Carlo goodness-of-fit test of the whole distribution rejects at
   level ``alpha`` (valid for small counts),
2. the group's expected share lies outside its Goodman simultaneous
   ``1 - alpha`` interval, and
3. the observed share differs from the expected by at least ``min_effect``
   (absolute share points, set by the policy).

(1) and (2) each keep the family-wise false-flag rate at or below ``alpha``
when the samples follow the expected shares; (3) keeps statistically
detectable but negligible differences from being flagged.

Expected shares are treated as fixed: the reference data's shares (the
distribution the generator was trained to reproduce) or a target the user
states. Labels of generated items come from the generator's conditions, the
user, or the audit's attribute classifier, whose held-out accuracy is
reported alongside.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from genguard.audits import AuditError
from genguard.audits.sections import Reason, missing
from genguard.audits.stats import (
    DEFAULT_MC_DRAWS,
    binomial_two_sided_p,
    goodman_intervals,
    goodness_of_fit,
    holm_adjust,
    js_divergence,
    kl_divergence,
    mc_null_statistics,
    mc_p_value,
    pearson_statistic,
    total_variation,
)

DEFAULT_ALPHA = 0.05
DEFAULT_MIN_EFFECT = 0.02


def resolve_expected(target: Any, names: Sequence[str], reference_codes: np.ndarray | None) -> tuple[np.ndarray, str]:
    """Expected shares from ``target``: ``"reference"``, ``"uniform"``, or a mapping group -> share."""
    k = len(names)
    if target is None or target == "reference":
        if reference_codes is None or len(reference_codes) == 0:
            raise AuditError("expected shares: no labelled reference data; state a target (e.g. 'uniform')")
        counts = np.bincount(np.asarray(reference_codes, dtype=np.int64), minlength=k)[:k]
        return counts / counts.sum(), "reference"
    if target == "uniform":
        return np.full(k, 1.0 / k), "uniform"
    if isinstance(target, Mapping):
        shares = np.zeros(k)
        for key, v in target.items():
            key_s = str(key)
            if key_s not in names:
                raise AuditError(f"target distribution names unknown group {key_s!r}; groups are {list(names)}")
            shares[list(names).index(key_s)] = float(v)
        if (shares < 0).any() or shares.sum() <= 0:
            raise AuditError("target distribution must have non-negative shares with a positive sum")
        if abs(shares.sum() - 1.0) > 1e-6:
            raise AuditError(f"target distribution shares sum to {shares.sum():.6g}, not 1")
        return shares, "target"
    raise AuditError(f"unknown target {target!r}: use 'reference', 'uniform' or a mapping of group to share")


def flag_counts(counts: np.ndarray, expected: np.ndarray, null_statistics: np.ndarray, alpha: float = DEFAULT_ALPHA,
                min_effect: float = DEFAULT_MIN_EFFECT) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised decision rule: ``(flags (..., k), p_values (...))`` for counts of shape ``(..., k)``."""
    c = np.asarray(counts, dtype=np.float64)
    n = c.sum(axis=-1, keepdims=True)
    obs = c / n
    lo, hi = goodman_intervals(c, alpha)
    p = mc_p_value(pearson_statistic(c, expected), null_statistics)
    outside = (expected < lo) | (expected > hi)
    big = np.abs(obs - expected) >= min_effect
    flags = outside & big & (p < alpha)[..., None]
    return flags, p


def representation(codes: Any, names: Sequence[str], expected: np.ndarray, *, alpha: float = DEFAULT_ALPHA,
                   min_effect: float = DEFAULT_MIN_EFFECT, draws: int = DEFAULT_MC_DRAWS, seed: int = 0,
                   expected_source: str = "reference", attribute: str = "label") -> dict[str, Any]:
    """The bias section for one attribute: per-group shares with intervals, overall test and divergences."""
    codes = np.asarray(codes, dtype=np.int64)
    k = len(names)
    if len(codes) == 0:
        raise AuditError(f"bias audit of {attribute!r}: no samples")
    if codes.min() < 0 or codes.max() >= k:
        raise AuditError(f"bias audit of {attribute!r}: group codes outside [0, {k - 1}]")
    counts = np.bincount(codes, minlength=k)
    n = int(counts.sum())
    obs = counts / n
    expected = np.asarray(expected, dtype=np.float64)
    lo, hi = goodman_intervals(counts, alpha)
    gof = goodness_of_fit(counts, expected, draws=draws, seed=seed)
    null = mc_null_statistics(n, expected, draws=draws, seed=seed)
    flags, _ = flag_counts(counts, expected, null, alpha, min_effect)
    groups: dict[str, Any] = {}
    for i, name in enumerate(names):
        groups[str(name)] = {
            "observed": float(obs[i]),
            "expected": float(expected[i]),
            "ci": [float(lo[i]), float(hi[i])],
            "flagged": bool(flags[i]),
            "count": int(counts[i]),
            "expected_count": float(n * expected[i]),
            "difference": float(obs[i] - expected[i]),
        }
    # parametric bootstrap interval for TV (TV of a finite sample is biased upwards), and its null level
    rng = np.random.default_rng(seed + 1)
    boot = rng.multinomial(n, obs, size=1000) / n
    tv = float(total_variation(obs, expected))
    tv_boot = total_variation(boot, expected)
    tv_null = total_variation(rng.multinomial(n, expected / expected.sum(), size=1000) / n, expected)
    ratio = obs / np.where(expected > 0, expected, np.nan)
    pos = expected > 0
    warnings = []
    if gof["min_expected_count"] < 5:
        warnings.append(f"smallest expected count {gof['min_expected_count']:.2f} < 5: only the Monte-Carlo p-value "
                        "is valid; the asymptotic chi-square p-value is shown for comparison only")
    if n < 10 * k:
        warnings.append(f"{n} samples for {k} groups: intervals are wide and only large differences can be detected")
    out: dict[str, Any] = {
        "attribute": attribute,
        "n": n,
        "expected_source": expected_source,
        "groups": groups,
        "flagged": [str(names[i]) for i in range(k) if flags[i]],
        "p_value": gof["p_value"],
        "total_variation": tv,
        "total_variation_ci": [float(np.quantile(tv_boot, 0.025)), float(np.quantile(tv_boot, 0.975))],
        "total_variation_null_95": float(np.quantile(tv_null, 0.95)),
        "kl_divergence": _finite_or_null(kl_divergence(obs, expected), "a group with expected share 0 was generated"),
        "js_divergence_bits": js_divergence(obs, expected),
        "max_min_ratio": _finite_or_null(
            float(np.nanmax(ratio[pos]) / np.nanmin(ratio[pos])) if (obs[pos] > 0).all() else float("inf"),
            "a group with positive expected share was never generated"),
        "test": gof,
        "alpha": alpha,
        "min_effect": min_effect,
        "interval": f"Goodman simultaneous {1 - alpha:.0%} intervals",
        "decision_rule": "flagged = goodness-of-fit p < alpha AND expected share outside the group's simultaneous "
                         "interval AND |observed - expected| >= min_effect",
        "warnings": warnings,
    }
    return out


def _finite_or_null(v: float, reason: str) -> Any:
    if np.isfinite(v):
        return float(v)
    return missing(Reason.DEGENERATE_REFERENCE, reason)


def intersections(codes_a: Any, codes_b: Any, names_a: Sequence[str], names_b: Sequence[str], expected: np.ndarray,
                  *, alpha: float = DEFAULT_ALPHA, min_effect: float = DEFAULT_MIN_EFFECT,
                  attributes: tuple[str, str] = ("a", "b")) -> dict[str, Any]:
    """Cells of two attributes: exact two-sided binomial test per cell, Holm-adjusted across cells.

    ``expected`` is a ``(len(names_a), len(names_b))`` array of joint shares.
    """
    a = np.asarray(codes_a, dtype=np.int64)
    b = np.asarray(codes_b, dtype=np.int64)
    if a.shape != b.shape:
        raise AuditError("intersectional audit: the two attributes have different numbers of samples")
    ka, kb = len(names_a), len(names_b)
    exp = np.asarray(expected, dtype=np.float64)
    if exp.shape != (ka, kb):
        raise AuditError(f"intersectional audit: expected shares must be {ka}x{kb}, got {exp.shape}")
    n = len(a)
    counts = np.zeros((ka, kb), dtype=np.int64)
    np.add.at(counts, (a, b), 1)
    flat_c = counts.ravel()
    flat_e = exp.ravel()
    raw = binomial_two_sided_p(flat_c, n, flat_e)
    adj = holm_adjust(raw)
    cells = []
    for idx in range(ka * kb):
        i, j = divmod(idx, kb)
        obs = flat_c[idx] / n
        flagged = bool(adj[idx] < alpha and abs(obs - flat_e[idx]) >= min_effect)
        cells.append({attributes[0]: str(names_a[i]), attributes[1]: str(names_b[j]), "observed": float(obs),
                      "expected": float(flat_e[idx]), "count": int(flat_c[idx]), "p_value": float(raw[idx]),
                      "p_value_holm": float(adj[idx]), "flagged": flagged})
    return {"attributes": list(attributes), "n": n, "cells": cells,
            "flagged": [f"{c[attributes[0]]}&{c[attributes[1]]}" for c in cells if c["flagged"]],
            "correction": "Holm", "test": "exact two-sided binomial per cell (doubled smaller tail)", "alpha": alpha,
            "min_effect": min_effect}


def condition_adherence(requested: Any, produced: Any, names: Sequence[str], alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """How often asking for group k yields group k (per group and overall), with Wilson intervals."""
    from genguard.audits.stats import wilson_interval

    req = np.asarray(requested, dtype=np.int64)
    got = np.asarray(produced, dtype=np.int64)
    hit = req == got
    lo, hi = wilson_interval(int(hit.sum()), len(hit), alpha)
    by_group = {}
    for i, name in enumerate(names):
        m = req == i
        if m.sum() == 0:
            by_group[str(name)] = missing(Reason.NOT_GIVEN, "never requested", n=0)
            continue
        glo, ghi = wilson_interval(int(hit[m].sum()), int(m.sum()), alpha)
        produced_as = np.bincount(got[m], minlength=len(names))
        top_other = [int(j) for j in np.argsort(-produced_as) if j != i and produced_as[j] > 0][:1]
        by_group[str(name)] = {"value": float(hit[m].mean()), "ci": [float(glo), float(ghi)], "n": int(m.sum()),
                               "most_common_confusion": str(names[top_other[0]]) if top_other else None}
    return {"value": float(hit.mean()), "ci": [float(lo), float(hi)], "n": int(len(hit)), "by_group": by_group,
            "note": "produced group as judged by the audit's attribute classifier; its own errors count as misses"}


def per_group_quality(real_features: np.ndarray, real_codes: np.ndarray, fake_features: np.ndarray,
                      fake_codes: np.ndarray, names: Sequence[str], k: int = 5) -> dict[str, Any]:
    """Precision, recall and coverage of each group's samples against that group's reference items."""
    from genguard.audits.fidelity import prdc

    out = {}
    for i, name in enumerate(names):
        rm, fm = real_codes == i, fake_codes == i
        if rm.sum() <= k or fm.sum() <= k:
            out[str(name)] = {**missing(Reason.TOO_FEW_SAMPLES), "reason": f"{Reason.TOO_FEW_SAMPLES.sentence}: needs more than k={k} items (reference {int(rm.sum())}, "
                                                        f"generated {int(fm.sum())})"}
            continue
        res = prdc(real_features[rm], fake_features[fm], k=k)
        out[str(name)] = {m: res[m] for m in ("precision", "recall", "coverage")}
        out[str(name)]["n_reference"] = int(rm.sum())
        out[str(name)]["n_generated"] = int(fm.sum())
    return out
