"""Privacy evidence for the report: the ledger's claim, an empirical canary audit, and membership inference.

* :func:`privacy_section` — the report's ``privacy`` section: what a run's
  ledger claims, stated honestly, plus any evidence passed in.
* :func:`one_run_epsilon_lower_bound` — the hypothesis test of Steinke, Nasr
  and Jagielski, "Privacy Auditing with One (1) Training Run" (NeurIPS 2023),
  Appendix D / Theorem 3.3: turn ``num_correct`` correct guesses out of
  ``num_guesses`` about ``num_canaries`` randomly included canaries into a
  lower bound on epsilon that holds with the given confidence.
* :func:`canary_audit` — the whole one-run audit of a generator + trainer:
  insert m canaries each with probability 1/2, train once, score each canary
  (black-box loss improvement; white-box alignment of its gradient with the
  parameter updates between training checkpoints), guess on the most confident, bound epsilon.
* :func:`membership_inference` — attacks that see only generated samples:
  GAN-Leaks distance (Chen et al. 2020), Monte-Carlo ball counting (Hilprecht
  et al. 2019) and a DOMIAS-style density ratio (van Breugel et al. 2023),
  each with AUC (bootstrap 95% interval) and TPR at 1% FPR.

An empirical epsilon is a *lower* bound: it can refute a DP claim, never
confirm one.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from genguard.audits.sections import Reason, missing
from genguard.guardrails.privacy.errors import PrivacyError


def privacy_section(ledger: dict[str, Any] | None, **evidence: Any) -> dict[str, Any]:
    """Summarise a privacy ledger for the release report.

    ``evidence`` may carry further results (an independent recomputation, an
    empirical canary audit, membership-inference figures) under their own
    keys; they are included as given. With no ledger the section says so.
    When a canary audit is given, ``empirical_epsilon_lower_bound`` states it
    next to the claim, and ``empirical_bound_exceeds_claim`` flags a refuted claim.
    """
    if ledger is None:
        section: dict[str, Any] = missing(Reason.NO_LEDGER, "the model was not trained by genguard, or its ledger is missing")
        section.update(evidence)
        return section if evidence else {"value": None, "reason": section["reason"], "code": section["code"]}
    section = {
        "private": bool(ledger.get("private")),
        "epsilon": ledger.get("epsilon"),
        "delta": ledger.get("delta"),
        "accountant": ledger.get("accountant"),
        "guarantee": ledger.get("guarantee"),
        "run_id": ledger.get("run_id"),
    }
    if ledger.get("private"):
        for key in ("target_epsilon", "noise_multiplier", "sample_rate", "steps", "max_grad_norm",
                    "sampling", "private_modules"):
            section[key] = ledger.get(key)
    else:
        section["reason"] = "trained without differential privacy: no (epsilon, delta) guarantee"
    section.update(evidence)
    audit = evidence.get("canary_audit")
    if isinstance(audit, dict) and audit.get("epsilon_lower_bound") is not None:
        lb = float(audit["epsilon_lower_bound"])
        section["empirical_epsilon_lower_bound"] = lb
        eps = ledger.get("epsilon")
        section["empirical_bound_exceeds_claim"] = bool(eps is not None and lb > float(eps))
    return section


# ---------------------------------------------------------------------------------------------
# Steinke, Nasr & Jagielski (2023): one-run audit arithmetic
# ---------------------------------------------------------------------------------------------
def _check_counts(m: int, r: int, v: int, delta: float, confidence: float) -> None:
    for name, x in (("num_canaries", m), ("num_guesses", r), ("num_correct", v)):
        if isinstance(x, bool) or int(x) != x:
            raise PrivacyError(f"{name} must be an integer, got {x!r}")
    if not 0 <= v <= r <= m or m < 1:
        raise PrivacyError(f"need 0 <= num_correct ({v}) <= num_guesses ({r}) <= num_canaries ({m}), num_canaries >= 1")
    if not 0.0 <= delta < 1.0:
        raise PrivacyError(f"delta must lie in [0, 1), got {delta}")
    if not 0.0 < confidence < 1.0:
        raise PrivacyError(f"confidence must lie in (0, 1), got {confidence}")


def one_run_p_value(num_canaries: int, num_guesses: int, num_correct: int, epsilon: float, delta: float) -> float:
    """P[>= num_correct correct guesses] under the null hypothesis that training is (epsilon, delta)-DP.

    Steinke et al. 2023, Theorem 3.3 / Appendix D: the correct guesses of an
    (eps, delta)-DP mechanism are dominated by Binomial(r, e^eps / (1 + e^eps)),
    up to an additive delta term ``2 m delta * max_i P[v > Bin >= v - i] / i``.
    """
    from scipy import stats

    m, r, v = int(num_canaries), int(num_guesses), int(num_correct)
    q = 1.0 / (1.0 + math.exp(-epsilon))
    beta = float(stats.binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(beta, 1.0)
    pmf = stats.binom.pmf(v - np.arange(1, v + 1), r, q)  # P[Bin = v - i], i = 1..v
    alpha = float(np.max(np.cumsum(pmf) / np.arange(1, v + 1)))
    return min(beta + alpha * delta * 2 * m, 1.0)


def one_run_epsilon_lower_bound(num_canaries: int, num_guesses: int, num_correct: int, delta: float = 1e-5,
                                confidence: float = 0.95) -> float:
    """Largest epsilon rejected at ``confidence``: training is not (epsilon, delta)-DP (Steinke et al. 2023).

    >>> round(one_run_epsilon_lower_bound(1000, 100, 100, 1e-5, 0.95), 1)
    3.5
    """
    _check_counts(num_canaries, num_guesses, num_correct, delta, confidence)
    p = 1.0 - confidence
    if num_guesses == 0 or one_run_p_value(num_canaries, num_guesses, num_correct, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(num_canaries, num_guesses, num_correct, hi, delta) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e3:
            return float(lo)
    for _ in range(40):  # bisection: p-value(lo) < p <= p-value(hi)
        mid = (lo + hi) / 2.0
        if one_run_p_value(num_canaries, num_guesses, num_correct, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return float(lo)


def guesses_from_scores(scores: np.ndarray, included: np.ndarray, num_guesses: int) -> tuple[int, int]:
    """Guess "in" on the ``r/2`` highest and "out" on the ``r/2`` lowest scores; return ``(r, correct)``."""
    scores = np.asarray(scores, dtype=float)
    included = np.asarray(included, dtype=bool)
    k = int(num_guesses) // 2
    if k == 0:
        return 0, 0
    order = np.argsort(scores, kind="stable")
    correct = int(included[order[-k:]].sum() + (~included[order[:k]]).sum())
    return 2 * k, correct


def audit_from_scores(scores: dict[str, np.ndarray], included: np.ndarray, delta: float = 1e-5,
                      confidence: float = 0.95, guess_fractions: Sequence[float] = (0.05, 0.1, 0.2)) -> dict[str, Any]:
    """Lower bound on epsilon from canary scores; Bonferroni-corrected over every (score, guess count) tried.

    Trying several configurations and keeping the best would inflate the bound;
    each is therefore tested at level ``(1 - confidence) / configurations``, so
    the reported maximum is itself a lower bound at ``confidence``.
    """
    included = np.asarray(included, dtype=bool)
    m = len(included)
    configs = [(name, max(2, int(round(f * m)) // 2 * 2)) for name in scores for f in guess_fractions]
    per_level = 1.0 - (1.0 - confidence) / len(configs)
    rows = []
    for name, r in configs:
        rr, v = guesses_from_scores(scores[name], included, r)
        lb = one_run_epsilon_lower_bound(m, rr, v, delta, per_level)
        rows.append({"score": name, "num_guesses": rr, "num_correct": v, "epsilon_lower_bound": lb})
    best = max(rows, key=lambda row: row["epsilon_lower_bound"])
    return {"epsilon_lower_bound": best["epsilon_lower_bound"], "confidence": confidence, "delta": delta,
            "num_canaries": m, "num_included": int(included.sum()), "best": best, "configurations": rows,
            "correction": f"Bonferroni over {len(configs)} configurations"}


# ---------------------------------------------------------------------------------------------
# The canary audit: insert, train once, score, guess
# ---------------------------------------------------------------------------------------------
#: Parameter checkpoints the white-box score looks at (evenly spaced over the epochs).
WHITE_BOX_CHECKPOINTS = 4


def make_canaries(data: Any, num_canaries: int, seed: int) -> Any:
    """``num_canaries`` out-of-distribution records shaped like ``data``.

    Images: binary-noise images with random labels. Tables: every numeric column at its minimum or
    maximum at random (a corner of the data's box, which no real record occupies), every categorical
    column a random one of its values. Text is refused: its privacy unit is a window cut from the
    concatenated passages, so a canary string is not one record.
    """
    from genguard.generators.base import Dataset

    rng = np.random.default_rng(seed)
    if data.modality == "image":
        x = (rng.random((num_canaries,) + tuple(np.asarray(data.x).shape[1:])) < 0.5).astype(np.float32)
        groups = {k: rng.integers(0, int(v.max()) + 1, size=num_canaries).astype(np.int64) for k, v in data.groups.items()}
        return Dataset(x=x, modality="image", name=f"{data.name}-canaries", groups=groups,
                       group_names=dict(data.group_names), metadata=dict(data.metadata))
    if data.modality == "tabular":
        import pandas as pd

        frame = data.x
        categorical = set(data.metadata.get("categorical") or [])
        cols = {}
        for col in frame.columns:
            values = frame[col]
            if col in categorical or not pd.api.types.is_numeric_dtype(values):
                uniq = pd.unique(values)
                cols[col] = uniq[rng.integers(0, len(uniq), size=num_canaries)]
            else:
                lo, hi = values.min(), values.max()
                cols[col] = np.where(rng.random(num_canaries) < 0.5, lo, hi).astype(values.dtype)
        canary = pd.DataFrame(cols, columns=frame.columns)
        groups = {}
        for attr, codes in data.groups.items():
            if attr in frame.columns:  # the group is a column: its codes follow the canary's value
                uniq = np.sort(pd.unique(frame[attr]))
                groups[attr] = np.searchsorted(uniq, canary[attr].to_numpy()).astype(np.int64)
            else:
                groups[attr] = rng.integers(0, int(codes.max()) + 1, size=num_canaries).astype(np.int64)
        return Dataset(x=canary, modality="tabular", name=f"{data.name}-canaries", groups=groups,
                       group_names=dict(data.group_names), metadata=dict(data.metadata))
    raise PrivacyError(f"the canary audit supports image and tabular data; {data.name!r} is {data.modality} "
                       "(for text, whose privacy unit is a window of the concatenated passages, use the "
                       "sample-only membership inference)")


def _concat(a: Any, b: Any) -> Any:
    from genguard.generators.base import Dataset

    if a.modality == "tabular":
        import pandas as pd

        x = pd.concat([a.x, b.x], ignore_index=True)
    else:
        x = np.concatenate([a.x, b.x])
    return Dataset(x=x, modality=a.modality, name=f"{a.name}+canaries",
                   groups={k: np.concatenate([a.groups[k], b.groups[k]]) for k in a.groups},
                   group_names=dict(a.group_names), metadata=dict(a.metadata))


def _per_item_losses(gen: Any, tensors: tuple, repeats: int, seed: int) -> np.ndarray:
    import torch

    for name in gen.trained_modules():
        getattr(gen, name).eval()
    torch.manual_seed(seed)
    out = np.zeros(len(tensors[0]))
    with torch.no_grad():
        for i in range(len(tensors[0])):
            # ``repeats`` copies of the item in one batch: the mean loss averages that many draws of any
            # randomness inside the loss (a VAE's latent sample) in a single call.
            item = tuple(t[i:i + 1].expand(repeats, *t.shape[1:]) for t in tensors)
            out[i] = float(gen.batch_loss(item))
    return out


def _params(gen: Any) -> list:
    from genguard.generators.base import unwrap_module

    return [p for name in gen.private_modules() for p in unwrap_module(getattr(gen, name)).parameters()]


def _per_item_gradients_dot(gen: Any, tensors: tuple, direction: list | None, seed: int, repeats: int = 8) -> np.ndarray:
    """``<grad loss_i, direction> / ||grad loss_i||`` for each item, or ``-||grad loss_i||`` without a direction."""
    import torch

    params = _params(gen)
    torch.manual_seed(seed)
    out = np.zeros(len(tensors[0]))
    for i in range(len(tensors[0])):
        item = tuple(t[i:i + 1].expand(repeats, *t.shape[1:]) for t in tensors)  # averages the loss's own noise
        grads = torch.autograd.grad(gen.batch_loss(item), params, allow_unused=True)
        dot, norm = 0.0, 0.0
        for j, g in enumerate(grads):
            if g is not None:
                if direction is not None:
                    dot += float((g * direction[j]).sum())
                norm += float(g.pow(2).sum())
        out[i] = dot / math.sqrt(norm + 1e-12) if direction is not None else -math.sqrt(norm)
    return out


def canary_audit(generator: str = "vae", *, trainer: Any = None, data: Any = None, num_canaries: int = 1000,
                 seed: int = 0, generator_params: dict[str, Any] | None = None, white_box: bool = True,
                 delta: float = 1e-5, confidence: float = 0.95, loss_repeats: int = 32,
                 progress: bool = False) -> dict[str, Any]:
    """One-run audit (Steinke et al. 2023) of training ``generator`` with ``trainer`` (None: non-private).

    Each of ``num_canaries`` canaries joins ``data`` (default: the embedded
    digits training split) independently with probability 1/2; the generator
    is trained once; canaries are scored by how much training lowered their
    loss (black box) and, with ``white_box``, by the alignment of their
    gradient with the parameter update over each of a few training segments
    (``sum_k <grad l_i(theta_k), theta_k - theta_k+1> / ||grad l_i(theta_k)||``). The result
    audits the training *procedure* (generator, data size, trainer settings),
    not a particular released set of weights.
    """
    import torch

    from genguard.generators import get_generator_class
    from genguard.generators.base import TorchGenerator

    if isinstance(num_canaries, bool) or int(num_canaries) != num_canaries or int(num_canaries) < 2:
        raise PrivacyError(f"the canary audit needs an integer number of canaries >= 2, got {num_canaries!r}")
    cls = get_generator_class(generator)
    if not issubclass(cls, TorchGenerator):
        raise PrivacyError(f"{generator}: the canary audit needs a torch generator with per-batch losses")
    if data is None:  # the generator's own embedded training split (digits for the image families)
        from genguard.generators.data import load_embedded, train_holdout

        data = train_holdout(load_embedded(cls.default_data or "digits"))[0]
    params = dict(generator_params or {})
    params.setdefault("seed", seed)
    canaries = make_canaries(data, int(num_canaries), seed + 7919)
    rng = np.random.default_rng(seed + 104729)
    included = rng.random(int(num_canaries)) < 0.5
    train = _concat(data, canaries.subset(np.flatnonzero(included))) if included.any() else data

    # theta_0: the initialisation fit() will start from (fit seeds torch and numpy, then builds).
    private = bool(getattr(trainer, "private", False))
    gen = _built(cls, params, train, private)
    canary_tensors = gen.train_tensors(canaries)
    before = _per_item_losses(gen, canary_tensors, loss_repeats, seed + 1)
    theta0 = [p.detach().clone() for p in _params(gen)]

    gen = cls(**params)
    checkpoints: list[list] = [theta0]
    if white_box:  # white box: the auditor also sees the parameters along the way (a few checkpoints)
        marks = {int(round(k * gen.epochs / WHITE_BOX_CHECKPOINTS)) - 1 for k in range(1, WHITE_BOX_CHECKPOINTS + 1)}
        orig_epoch_end = gen.on_epoch_end

        def on_epoch_end(epoch: int) -> None:
            orig_epoch_end(epoch)
            if epoch in marks:
                checkpoints.append([p.detach().clone() for p in _params(gen)])

        gen.on_epoch_end = on_epoch_end
    gen.fit(train, trainer=trainer, progress=progress)
    if white_box:
        del gen.on_epoch_end
    after = _per_item_losses(gen, canary_tensors, loss_repeats, seed + 1)
    scores = {"loss": before - after}
    if white_box:
        # sum over training segments of <grad loss_i(theta_k), theta_k - theta_{k+1}> / ||grad loss_i(theta_k)||:
        # how far each segment's update moved along the canary's own descent direction.
        align = np.zeros(len(included))
        for start, end in zip(checkpoints[:-1], checkpoints[1:]):
            direction = [a - b for a, b in zip(start, end)]
            align += _per_item_gradients_dot(_rebuild(cls, params, train, start, private), canary_tensors, direction,
                                             seed + 2)
        scores["gradient_alignment"] = align
    result = audit_from_scores(scores, included, delta=delta, confidence=confidence)
    report = gen.training_report_
    result.update({
        "method": "one-run canary audit (Steinke, Nasr & Jagielski 2023)",
        "generator": generator,
        "private": bool(report.get("private")),
        "claimed_epsilon": report.get("epsilon"),
        "training_delta": report.get("delta"),
        "scores": sorted(scores),
        "canaries": ("binary-noise images with random labels" if data.modality == "image" else
                     "table rows at random corners of the data's numeric box, random categories")
        + ", each included with probability 1/2",
        "note": "an empirical lower bound: it can refute a DP claim, never certify one",
    })
    claimed = report.get("epsilon")
    result["bound_exceeds_claim"] = bool(claimed is not None and result["epsilon_lower_bound"] > claimed)
    return result


def _built(cls: Any, params: dict[str, Any], train: Any, private: bool) -> Any:
    """A fresh generator built as ``fit`` builds it: same seeds, and told whether the fit is private
    (``build`` of flow, pixelcnn and tabular reads ``private_fit_`` to decide which data statistics it may use)."""
    import torch

    gen = cls(**params)
    torch.manual_seed(gen.seed)
    np.random.seed(gen.seed)
    gen.private_fit_ = private
    gen.build(train)
    return gen


def _rebuild(cls: Any, params: dict[str, Any], train: Any, theta: list, private: bool) -> Any:
    """A fresh generator at parameters ``theta`` (the audit's white-box reference point)."""
    import torch

    gen = _built(cls, params, train, private)
    with torch.no_grad():
        for p, t in zip(_params(gen), theta):
            p.copy_(t)
    for name in gen.trained_modules():
        getattr(gen, name).eval()
    return gen


# ---------------------------------------------------------------------------------------------
# Membership inference from generated samples alone
# ---------------------------------------------------------------------------------------------
def _flat(x: Any) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    return arr.reshape(len(arr), -1)


def _nn_dist(a: np.ndarray, b: np.ndarray, chunk: int = 512) -> np.ndarray:
    """Squared distances ``(len(a), len(b))`` in chunks (memory-bounded)."""
    b2 = (b * b).sum(1)
    out = np.empty((len(a), len(b)))
    for s in range(0, len(a), chunk):
        aa = a[s:s + chunk]
        out[s:s + chunk] = np.maximum((aa * aa).sum(1)[:, None] + b2[None, :] - 2 * aa @ b.T, 0.0)
    return out


def roc_metrics(scores: np.ndarray, is_member: np.ndarray, seed: int = 0, n_boot: int = 200) -> dict[str, Any]:
    """AUC with a bootstrap 95% interval, and TPR at 1% FPR (members positive, higher score = member)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    y = np.asarray(is_member, dtype=int)
    s = np.asarray(scores, dtype=float)
    auc = float(roc_auc_score(y, s))
    fpr, tpr, _ = roc_curve(y, s)
    tpr1 = float(np.max(tpr[fpr <= 0.01])) if np.any(fpr <= 0.01) else 0.0
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    boots = []
    for _ in range(n_boot):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        boots.append(roc_auc_score(y[idx], s[idx]))
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"auc": auc, "auc_ci95": [float(lo), float(hi)], "tpr_at_1pct_fpr": tpr1,
            "n_members": int(len(pos)), "n_non_members": int(len(neg)),
            "fpr_resolution": 1.0 / max(len(neg), 1)}


def membership_inference(samples: Any, members: Any, non_members: Any, reference: Any = None, *,
                         seed: int = 0, pca_dims: int = 10) -> dict[str, Any]:
    """Three sample-only attacks on a generator: does a record's neighbourhood in the samples betray training?

    ``samples``: generated items; ``members`` / ``non_members``: records known to
    be in / out of the training set (equal numbers give the cleanest AUC);
    ``reference``: population records for the DOMIAS density ratio (omitted:
    that attack is reported ``null`` with a reason). Items are compared as flat
    vectors (pixels). AUC 0.5 = no leakage; TPR at 1% FPR is the figure that
    matters for the worst-off records (Carlini et al. 2022).
    """
    S, M, H = _flat(samples), _flat(members), _flat(non_members)
    if len(S) < 2 or len(M) < 2 or len(H) < 2:
        raise PrivacyError("membership inference needs at least 2 samples, members and non-members")
    if not (S.shape[1] == M.shape[1] == H.shape[1]):
        raise PrivacyError(f"samples, members and non-members differ in size: {S.shape[1]}, {M.shape[1]}, {H.shape[1]}")
    X = np.concatenate([M, H])
    y = np.concatenate([np.ones(len(M)), np.zeros(len(H))])
    d2 = _nn_dist(X, S)
    nn = np.sqrt(d2.min(1))
    out: dict[str, Any] = {"n_samples": int(len(S))}
    out["gan_leaks"] = {**roc_metrics(-nn, y, seed), "score": "minus distance to the nearest generated sample (Chen et al. 2020)"}
    radius = float(np.median(nn))
    counts = (d2 <= radius * radius).mean(1)
    out["monte_carlo"] = {**roc_metrics(counts - 1e-9 * nn, y, seed),
                          "score": f"share of generated samples within radius {radius:.3g} (median NN distance; Hilprecht et al. 2019)"}
    if reference is None:
        out["domias"] = missing(Reason.NO_REFERENCE, "no reference (population) data given for the density ratio")
    else:
        from scipy.stats import gaussian_kde
        from sklearn.decomposition import PCA

        R = _flat(reference)
        k = int(min(pca_dims, R.shape[1], len(R) - 1, len(S) - 1))
        pca = PCA(n_components=k, random_state=seed).fit(R)
        try:
            kg = gaussian_kde(pca.transform(S).T)
            kr = gaussian_kde(pca.transform(R).T)
            Z = pca.transform(X).T
            ratio = kg.logpdf(Z) - kr.logpdf(Z)
            out["domias"] = {**roc_metrics(ratio, y, seed),
                             "score": f"log p_generated / p_reference, Gaussian KDE in {k} PCA dimensions (DOMIAS, van Breugel et al. 2023)"}
        except np.linalg.LinAlgError as exc:
            out["domias"] = missing(Reason.FAILED, f"density estimate failed ({exc})")
    aucs = [v["auc"] for v in out.values() if isinstance(v, dict) and v.get("auc") is not None]
    out["max_auc"] = float(max(aucs))
    out["max_tpr_at_1pct_fpr"] = float(max(v["tpr_at_1pct_fpr"] for v in out.values()
                                           if isinstance(v, dict) and v.get("auc") is not None))
    return out


def model_membership_inference(gen: Any, train: Any, holdout: Any, *, n_targets: int | None = None,
                               n_samples: int | None = None, seed: int = 0) -> dict[str, Any]:
    """:func:`membership_inference` for a fitted generator: members drawn from ``train``, non-members ``holdout``,
    the remaining training records as DOMIAS reference, and as many samples as the training set."""
    rng = np.random.default_rng(seed)
    n_t = int(min(n_targets or len(holdout), len(holdout), len(train) // 2))
    perm = rng.permutation(len(train))
    mem_idx, ref_idx = perm[:n_t], perm[n_t:]
    hold_idx = rng.permutation(len(holdout))[:n_t]
    samples = gen.sample(int(n_samples or len(train)), seed=seed)
    result = membership_inference(samples.data, np.asarray(train.x)[mem_idx], np.asarray(holdout.x)[hold_idx],
                                  np.asarray(train.x)[ref_idx], seed=seed)
    result["reference"] = "training records not used as member targets (population samples)"
    return result
