"""Empirical privacy: the one-run audit's arithmetic and behaviour, and sample-only membership inference."""
import math

import numpy as np
import pytest

from genguard.audits.privacy import (
    audit_from_scores, canary_audit, membership_inference, one_run_epsilon_lower_bound, one_run_p_value,
    privacy_section,
)
from genguard.guardrails.privacy import PrivacyError, PrivateTrainer


def test_paper_arithmetic():
    # Steinke, Nasr & Jagielski (2023): m = 1000 canaries, 100 guesses all correct, delta 1e-5 -> about 3.5
    lb = one_run_epsilon_lower_bound(1000, 100, 100, delta=1e-5, confidence=0.95)
    assert lb == pytest.approx(3.47, abs=0.02)
    # at the bound the p-value is the test level, just above it the test no longer rejects
    assert one_run_p_value(1000, 100, 100, lb, 1e-5) < 0.05 <= one_run_p_value(1000, 100, 100, lb + 0.01, 1e-5)
    # with delta = 0 it is the plain binomial tail: 100/100 correct gives e^eps/(1+e^eps) >= 0.05^(1/100)
    q = 0.05 ** (1 / 100)
    assert one_run_epsilon_lower_bound(1000, 100, 100, delta=0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-3)


def test_bound_behaves():
    assert one_run_epsilon_lower_bound(1000, 100, 50) == 0.0  # chance level: nothing refuted
    assert one_run_epsilon_lower_bound(1000, 0, 0) == 0.0
    more = [one_run_epsilon_lower_bound(1000, 100, v) for v in (70, 80, 90, 100)]
    assert more == sorted(more) and more[0] > 0
    assert one_run_epsilon_lower_bound(1000, 100, 100, confidence=0.99) < one_run_epsilon_lower_bound(1000, 100, 100)
    assert one_run_epsilon_lower_bound(10_000, 100, 100, delta=1e-3) < one_run_epsilon_lower_bound(10_000, 100, 100, delta=1e-6)


@pytest.mark.parametrize("args", [(10, 20, 5), (10, 5, 6), (0, 0, 0), (10, 5, -1), (10.5, 5, 5)])
def test_bad_counts_are_refused(args):
    with pytest.raises(PrivacyError):
        one_run_epsilon_lower_bound(*args)


def test_bound_is_valid_for_an_eps_dp_mechanism():
    """Randomised response at eps = 1 per canary is 1-DP: the 95% bound must exceed 1 in at most ~5% of runs."""
    rng = np.random.default_rng(0)
    eps, m, exceed = 1.0, 1000, 0
    for _ in range(40):
        included = rng.random(m) < 0.5
        truthful = rng.random(m) < math.exp(eps) / (1 + math.exp(eps))
        signal = np.where(truthful, included, ~included).astype(float) + rng.random(m) * 0.1
        res = audit_from_scores({"rr": signal}, included, delta=1e-5)
        exceed += res["epsilon_lower_bound"] > eps
        assert res["epsilon_lower_bound"] > 0.3  # and the audit does see the leakage
    assert exceed <= 5


def test_canary_audit_non_private_positive_dp_never_above_claim(digits):
    train, _ = digits
    params = dict(epochs=40, hidden=256)
    plain = canary_audit("vae", trainer=None, data=train, num_canaries=500, seed=0, generator_params=params,
                         white_box=False)
    assert plain["epsilon_lower_bound"] > 1.0 and not plain["private"]
    dp = canary_audit("vae", trainer=PrivateTrainer(target_epsilon=4.0), data=train, num_canaries=500, seed=0,
                      generator_params=params, white_box=True)
    assert dp["private"] and dp["claimed_epsilon"] <= 4.0
    assert dp["epsilon_lower_bound"] <= dp["claimed_epsilon"] and not dp["bound_exceeds_claim"]
    assert {c["score"] for c in dp["configurations"]} == {"loss", "gradient_alignment"}
    assert "Bonferroni" in dp["correction"]
    section = privacy_section({"private": True, "epsilon": dp["claimed_epsilon"], "delta": 1e-5}, canary_audit=dp)
    assert section["empirical_epsilon_lower_bound"] == dp["epsilon_lower_bound"]
    assert section["empirical_bound_exceeds_claim"] is False


def _gauss(rng, n, d=6):
    return rng.normal(size=(n, d))


def test_membership_inference_detects_a_copying_generator_and_not_a_fresh_one():
    rng = np.random.default_rng(1)
    members, non_members, reference = _gauss(rng, 200), _gauss(rng, 200), _gauss(rng, 600)
    copier = members[rng.integers(0, 200, 600)] + rng.normal(scale=0.05, size=(600, 6))
    leak = membership_inference(copier, members, non_members, reference, seed=0)
    for attack in ("gan_leaks", "monte_carlo", "domias"):
        assert leak[attack]["auc"] > 0.85, attack
        lo, hi = leak[attack]["auc_ci95"]
        assert lo <= leak[attack]["auc"] <= hi
    assert leak["gan_leaks"]["tpr_at_1pct_fpr"] > 0.5
    fresh = membership_inference(_gauss(rng, 600), members, non_members, reference, seed=0)
    for attack in ("gan_leaks", "monte_carlo", "domias"):
        assert 0.38 < fresh[attack]["auc"] < 0.62, attack
    no_ref = membership_inference(copier, members, non_members, None)
    assert no_ref["domias"]["value"] is None and "reference" in no_ref["domias"]["reason"]


def test_membership_inference_bad_input():
    with pytest.raises(PrivacyError, match="differ in size"):
        membership_inference(np.zeros((5, 3)), np.zeros((5, 4)), np.zeros((5, 4)))


def test_privacy_section_keeps_its_contract():
    assert privacy_section(None)["value"] is None
    s = privacy_section({"private": False, "run_id": "r"}, membership_inference={"max_auc": 0.6})
    assert s["reason"].startswith("trained without") and s["membership_inference"] == {"max_auc": 0.6}


def test_tabular_canaries_are_records_no_real_row_resembles():
    from genguard.audits.privacy import make_canaries
    from genguard.generators.data import load_diabetes

    data = load_diabetes()
    can = make_canaries(data, 50, seed=0)
    assert list(can.x.columns) == list(data.x.columns) and len(can) == 50
    assert set(can.x["sex"]) <= set(data.x["sex"])
    uniq = np.sort(data.x["sex"].unique())
    assert (uniq[can.groups["sex"]] == can.x["sex"].to_numpy()).all()  # group codes follow the column
    numeric = [c for c in data.x.columns if c != "sex"]
    at_corner = can.x[numeric].isin(pd_extremes(data.x[numeric])).all(axis=None)
    assert at_corner


def pd_extremes(frame):
    return {c: [frame[c].min(), frame[c].max()] for c in frame.columns}


def test_canary_audit_of_a_family_that_reads_private_fit_in_build(digits):
    """flow decides in build() whether it may use the data's class shares; the audit must build it as fit does."""
    train, _ = digits
    res = canary_audit("flow", trainer=PrivateTrainer(target_epsilon=10.0), data=train, num_canaries=10, seed=0,
                       generator_params=dict(n_layers=2, hidden=16, epochs=1, batch_size=128), white_box=True)
    assert res["private"] and res["num_canaries"] == 10
    with pytest.raises(PrivacyError, match="integer number of canaries"):
        canary_audit("vae", num_canaries=2.5)
