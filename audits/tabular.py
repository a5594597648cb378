"""Tabular fairness: per-subgroup marginal fidelity of synthetic tables, and fairness of a model trained on them (fairlearn MetricFrame).

For the embedded diabetes data (group ``sex``) the outcome is the disease
progression score, binarised at the real training median ("high
progression"), so that the classification fairness metrics of fairlearn apply:
demographic-parity difference and equalized-odds difference of a logistic
regression trained on the synthetic table, against the same model trained on
the real table, both evaluated on the real holdout. Intervals are bootstrap
percentiles over the holdout rows (which are few: 89 for diabetes), so they
are wide; read them before the point estimates.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from genguard.audits import AuditError
from genguard.audits.sections import Reason, missing


def _check_frame(df: Any, name: str, columns: list[str]) -> None:
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise AuditError(f"{name}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise AuditError(f"{name}: missing columns {missing}")
    if len(df) == 0:
        raise AuditError(f"{name}: no rows")
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    # pandas extension dtypes (strings, categories) are not numpy dtypes: ask pandas, not np.issubdtype
    text = [c for c in columns if not is_numeric_dtype(df[c].dtype) or is_bool_dtype(df[c].dtype)]
    if text:
        raise AuditError(f"{name}: non-numeric (e.g. text) values in column(s) {text}; the tabular audit needs numbers")
    bad = [c for c in columns if not np.isfinite(df[c].to_numpy(float, na_value=np.nan)).all()]
    if bad:
        raise AuditError(f"{name}: missing or non-finite values in column(s) {bad}")


def _group_rates(weights: np.ndarray, y: np.ndarray, pred: np.ndarray, sens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Demographic-parity and equalized-odds differences for each row of bootstrap ``weights`` (B, n).

    Same definitions as fairlearn's ``demographic_parity_difference`` and
    ``equalized_odds_difference`` (max minus min over groups; equalized odds
    is the larger of the TPR and FPR gaps), vectorised over bootstrap draws
    because calling fairlearn per draw took minutes (checked equal in tests).
    """
    sel, tpr, fpr = [], [], []
    for g in np.unique(sens):
        m = (sens == g).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            sel.append(weights @ (m * pred) / (weights @ m))
            tpr.append(weights @ (m * pred * y) / (weights @ (m * y)))
            fpr.append(weights @ (m * pred * (1 - y)) / (weights @ (m * (1 - y))))
    sel, tpr, fpr = np.array(sel), np.array(tpr), np.array(fpr)
    dp = np.nanmax(sel, 0) - np.nanmin(sel, 0)
    eo = np.maximum(np.nanmax(tpr, 0) - np.nanmin(tpr, 0), np.nanmax(fpr, 0) - np.nanmin(fpr, 0))
    return dp, eo


def subgroup_marginals(synthetic: Any, real: Any, group: str) -> dict[str, Any]:
    """Per group value: its share (synthetic vs real) and per column the two-sample KS statistic and p-value."""
    from scipy import stats

    out: dict[str, Any] = {}
    cols = [c for c in real.columns if c != group]
    for gv in sorted(real[group].unique()):
        r = real[real[group] == gv]
        s = synthetic[synthetic[group] == gv]
        entry: dict[str, Any] = {"share_real": float(len(r) / len(real)), "share_synthetic": float(len(s) / len(synthetic)),
                                 "n_real": int(len(r)), "n_synthetic": int(len(s))}
        if len(s) < 2:
            entry["columns"] = missing(Reason.TOO_FEW_SAMPLES, f"only {len(s)} synthetic rows in this group")
        else:
            ks = {}
            for c in cols:
                res = stats.ks_2samp(s[c].to_numpy(float), r[c].to_numpy(float))
                ks[c] = {"ks": float(res.statistic), "p_value": float(res.pvalue)}
            entry["columns"] = ks
            entry["mean_ks"] = float(np.mean([v["ks"] for v in ks.values()]))
        out[f"{group}={gv:g}"] = entry
    return out


def _fit_eval(train: Any, test: Any, features: list[str], target: str, threshold: float, group: str, seed: int,
              bootstrap: int, alpha: float) -> dict[str, Any]:
    from fairlearn.metrics import (MetricFrame, demographic_parity_difference, equalized_odds_difference,
                                   false_positive_rate, selection_rate, true_positive_rate)
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y_tr = (train[target].to_numpy(float) > threshold).astype(int)
    if len(np.unique(y_tr)) < 2:
        return missing(Reason.DEGENERATE_REFERENCE, "the training table has only one outcome class after binarising")
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed))
    model.fit(train[features].to_numpy(float), y_tr)
    y = (test[target].to_numpy(float) > threshold).astype(int)
    pred = model.predict(test[features].to_numpy(float))
    sens = test[group].to_numpy()
    mf = MetricFrame(metrics={"accuracy": accuracy_score, "selection_rate": selection_rate,
                              "tpr": true_positive_rate, "fpr": false_positive_rate},
                     y_true=y, y_pred=pred, sensitive_features=sens)
    dp = float(demographic_parity_difference(y, pred, sensitive_features=sens))
    eo = float(equalized_odds_difference(y, pred, sensitive_features=sens))
    rng = np.random.default_rng(seed)
    w = rng.multinomial(len(y), np.full(len(y), 1.0 / len(y)), size=bootstrap).astype(float)
    b_dp, b_eo = _group_rates(w, y, pred.astype(float), sens)
    b_acc = (w @ (y == pred).astype(float)) / len(y)

    def ci(v: np.ndarray) -> list[float]:
        return [float(np.nanquantile(v, alpha / 2)), float(np.nanquantile(v, 1 - alpha / 2))]

    by_group = {f"{group}={k:g}": {m: float(v) for m, v in row.items()} for k, row in mf.by_group.iterrows()}
    return {
        "accuracy": {"value": float(mf.overall["accuracy"]), "ci": ci(b_acc)},
        "demographic_parity_difference": {"value": dp, "ci": ci(b_dp)},
        "equalized_odds_difference": {"value": eo, "ci": ci(b_eo)},
        "by_group": by_group,
        "_pred": pred,
    }


def tabular_fairness(synthetic: Any, real_train: Any, real_test: Any, *, group: str = "sex", target: str = "target",
                     seed: int = 0, bootstrap: int = 500, alpha: float = 0.05) -> dict[str, Any]:
    """Subgroup marginal fidelity and synthetic-trained vs real-trained model fairness (fairlearn MetricFrame)."""
    cols = list(real_train.columns)
    if group not in cols or target not in cols:
        raise AuditError(f"real data must have the group column {group!r} and target {target!r}")
    _check_frame(real_train, "real train table", cols)
    _check_frame(real_test, "real holdout table", cols)
    _check_frame(synthetic, "synthetic table", cols)
    threshold = float(np.median(real_train[target]))
    features = [c for c in cols if c != target]
    syn = _fit_eval(synthetic, real_test, features, target, threshold, group, seed, bootstrap, alpha)
    real = _fit_eval(real_train, real_test, features, target, threshold, group, seed, bootstrap, alpha)
    out: dict[str, Any] = {
        "group": group,
        "outcome": f"{target} > {threshold:g} (median of the real training table)",
        "subgroup_marginals": subgroup_marginals(synthetic, real_train, group),
        "synthetic_trained": {k: v for k, v in syn.items() if not k.startswith("_")},
        "real_trained": {k: v for k, v in real.items() if not k.startswith("_")},
        "evaluated_on": f"real holdout ({len(real_test)} rows)",
        "model": "standardised logistic regression (scikit-learn)",
    }
    if syn.get("value", 0) is not None and real.get("value", 0) is not None:
        # paired bootstrap of the change in each fairness gap (same resampled test rows for both models)
        y = (real_test[target].to_numpy(float) > threshold).astype(int)
        sens = real_test[group].to_numpy()
        rng = np.random.default_rng(seed + 1)
        w = rng.multinomial(len(y), np.full(len(y), 1.0 / len(y)), size=bootstrap).astype(float)
        s_dp, s_eo = _group_rates(w, y, syn["_pred"].astype(float), sens)
        r_dp, r_eo = _group_rates(w, y, real["_pred"].astype(float), sens)
        d_dp, d_eo = s_dp - r_dp, s_eo - r_eo
        out["change_vs_real"] = {
            "demographic_parity_difference": {
                "value": syn["demographic_parity_difference"]["value"] - real["demographic_parity_difference"]["value"],
                "ci": [float(np.nanquantile(d_dp, alpha / 2)), float(np.nanquantile(d_dp, 1 - alpha / 2))]},
            "equalized_odds_difference": {
                "value": syn["equalized_odds_difference"]["value"] - real["equalized_odds_difference"]["value"],
                "ci": [float(np.nanquantile(d_eo, alpha / 2)), float(np.nanquantile(d_eo, 1 - alpha / 2))]},
            "note": "positive = the synthetic-trained model is less fair than the real-trained one; "
                    "paired bootstrap over holdout rows",
        }
    if len(real_test) < 200:
        out["warnings"] = [f"the real holdout has {len(real_test)} rows: fairness differences have wide intervals"]
    return out


# --------------------------------------------------------------------------------------
# column and pairwise fidelity against real data's own level
# --------------------------------------------------------------------------------------
#: A column with at most this many distinct values in the real training table is compared as categorical
#: (total variation of the category shares); any other column with the two-sample KS statistic.
CATEGORICAL_MAX_LEVELS = 10


def _column_distance(a: np.ndarray, b: np.ndarray, categorical: bool) -> float:
    """KS statistic (numeric) or total variation of the shares (categorical) between two samples; in [0, 1]."""
    if categorical:
        levels = np.union1d(a, b)
        pa = np.array([(a == v).mean() for v in levels])
        pb = np.array([(b == v).mean() for v in levels])
        return float(0.5 * np.abs(pa - pb).sum())
    from scipy import stats

    return float(stats.ks_2samp(a, b).statistic)


def _pair_distances(x: np.ndarray, r: np.ndarray, categorical: list[bool]) -> np.ndarray:
    """Per column pair (i < j): half the absolute difference of Pearson correlations, or for two categorical
    columns the total variation of their contingency tables (SDMetrics' CorrelationSimilarity and
    ContingencySimilarity, as distances); each in [0, 1]."""

    def corr(a: np.ndarray) -> np.ndarray:
        sd = a.std(0)
        z = (a - a.mean(0)) / np.where(sd > 0, sd, 1.0)
        c = z.T @ z / len(a)
        # a constant column has no correlation with anything: 0, so a collapsed column is penalised by the
        # real correlations it lost rather than producing NaN
        c[sd == 0, :] = 0.0
        c[:, sd == 0] = 0.0
        return c

    cx, cr = corr(x), corr(r)
    d = x.shape[1]
    out = []
    for i in range(d):
        for j in range(i + 1, d):
            if categorical[i] and categorical[j]:
                cells = {}
                for a, b in zip(x[:, i], x[:, j]):
                    cells[(a, b)] = cells.get((a, b), 0.0) + 1.0 / len(x)
                real: dict = {}
                for a, b in zip(r[:, i], r[:, j]):
                    real[(a, b)] = real.get((a, b), 0.0) + 1.0 / len(r)
                keys = set(cells) | set(real)
                out.append(0.5 * sum(abs(cells.get(k, 0.0) - real.get(k, 0.0)) for k in keys))
            else:
                out.append(abs(cx[i, j] - cr[i, j]) / 2.0)
    return np.asarray(out, dtype=np.float64)


def table_fidelity(synthetic: Any, train: Any, holdout: Any, *, seed: int = 0, repeats: int = 20,
                   alpha: float = 0.05) -> dict[str, Any]:
    """Per-column and pairwise fidelity of a synthetic table, each as an excess over real data's own level.

    The distances are measured against the real training table: per column the
    KS statistic (categorical columns, at most ``CATEGORICAL_MAX_LEVELS``
    levels: total variation of the shares), per column pair the correlation
    or contingency distance of :func:`_pair_distances`. Both grow with sampling
    noise as the compared set shrinks, so the synthetic table is compared at
    the holdout's size (``repeats`` random subsets, averaged) and the real
    holdout against the same training table gives the reference level, the
    distance a generator drawing fresh real rows would show. The gated figures
    are excesses over that level (0 = as close to the training table as
    unseen real rows are): the worst column's, the mean over columns and the
    mean over pairs. The two means carry the ``alpha`` percentile interval over
    the repeats (each a bootstrap resample, of the holdout's size, of both the
    synthetic table and the holdout) and are gated on its upper end; the worst
    column is gated on its point estimate.
    """
    cols = list(train.columns)
    _check_frame(train, "real train table", cols)
    _check_frame(holdout, "real holdout table", cols)
    _check_frame(synthetic, "synthetic table", cols)
    r = train[cols].to_numpy(float)
    h = holdout[cols].to_numpy(float)
    s = synthetic[cols].to_numpy(float)
    m = min(len(s), len(h))
    if m < 5 or len(cols) < 1:
        return missing(Reason.TOO_FEW_SAMPLES, f"needs at least 5 synthetic and 5 holdout rows (have {len(s)}, {len(h)})")
    categorical = [len(np.unique(r[:, i])) <= CATEGORICAL_MAX_LEVELS for i in range(len(cols))]
    rng = np.random.default_rng(seed)

    def col_d(x: np.ndarray) -> np.ndarray:
        return np.array([_column_distance(x[:, i], r[:, i], categorical[i]) for i in range(len(cols))])

    def draws(x: np.ndarray, replace: bool) -> np.ndarray:
        return x[rng.choice(len(x), m, replace=replace)] if (replace or len(x) > m) else x

    href = h if len(h) == m else draws(h, False)
    ref_col, ref_pair = col_d(href), _pair_distances(href, r, categorical)
    syn_col = np.zeros(len(cols))
    syn_pair = np.zeros_like(ref_pair)
    reps = repeats if len(s) > m else 1
    for _ in range(reps):
        sub = draws(s, False)
        syn_col += col_d(sub) / reps
        syn_pair += _pair_distances(sub, r, categorical) / reps
    ex_mean, ex_pair = [], []
    for _ in range(repeats):
        # both are bootstrap resamples of m rows (the synthetic one of a fresh m-row subset), so that the
        # duplicates a bootstrap adds inflate both distances alike
        sub, hb = draws(draws(s, False), True), draws(h, True)
        ex_mean.append(float((col_d(sub) - col_d(hb)).mean()))
        ex_pair.append(float(_pair_distances(sub, r, categorical).mean() - _pair_distances(hb, r, categorical).mean()))
    lo, hi = alpha / 2, 1 - alpha / 2

    def fig(point: float, boot: list[float]) -> dict[str, Any]:
        ci = [float(np.quantile(boot, lo)), float(np.quantile(boot, hi))]
        # gated on the upper end: a table too small to show its fidelity does not pass on a lucky draw
        return {"value": max(ci[1], float(point)), "point": float(point), "ci": ci,
                "gated_on": "upper end of the interval"}

    excess = syn_col - ref_col
    worst = int(np.argmax(excess))
    per_column = {c: {"distance": float(syn_col[i]), "reference": float(ref_col[i]), "excess": float(excess[i]),
                      "measure": "total variation" if categorical[i] else "KS"} for i, c in enumerate(cols)}
    pairs = [(cols[i], cols[j]) for i in range(len(cols)) for j in range(i + 1, len(cols))]
    pair_excess = syn_pair - ref_pair
    top = np.argsort(-pair_excess)[:5]
    columns = {"max_excess": {"value": float(excess[worst]), "column": cols[worst],
                              "gated_on": "point estimate (the worst column; no interval)"},
               "mean_excess": fig(excess.mean(), ex_mean), "per_column": per_column,
               "measure": "KS statistic per numeric column, total variation of the shares per categorical column "
                          f"(at most {CATEGORICAL_MAX_LEVELS} levels), against the real training table"}
    out: dict[str, Any] = {"columns": columns, "matched_size": m, "n_synthetic": int(len(s)), "n_reference": int(len(h)),
                           "subsets": reps,
                           "reference_note": "reference: the real holdout against the training table at the same "
                                             "size, the level a generator drawing fresh real rows would reach; "
                                             "excess = synthetic distance - reference distance (0 = as good as real)"}
    if pairs:
        out["pairs"] = {"mean_excess": fig(pair_excess.mean(), ex_pair),
                        "mean_distance": float(syn_pair.mean()), "reference": float(ref_pair.mean()),
                        "worst": [{"pair": list(pairs[k]), "excess": float(pair_excess[k])} for k in top],
                        "measure": "half the absolute difference of Pearson correlations per column pair (total "
                                   "variation of the contingency table for two categorical columns), against "
                                   "the real training table"}
    else:
        out["pairs"] = missing(Reason.TOO_FEW_SAMPLES, "the table has one column: no pairs")
    if m < 100:
        out["warnings"] = [f"compared at {m} rows (the holdout's size): column distances carry noise of about "
                           f"{1.36 / np.sqrt(m):.2f} (KS at 95%), read the intervals"]
    return out
