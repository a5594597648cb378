"""Release gates that can say no: diversity against real data's own level, and copy detection calibrated on real data."""
from __future__ import annotations

import numpy as np
import pytest

from genguard.generators.base import Samples

DIVERSITY_GATES = ("fidelity.diversity.recall_relative", "fidelity.diversity.coverage_relative",
                   "fidelity.diversity.within_class.min_ratio")


def _audit(x, labels, train, holdout, policy=None):
    from genguard.audits import ReleaseAudit

    s = Samples(data=np.asarray(x, np.float32), modality="image", conditions={"label": np.asarray(labels)},
                metadata={"generator": "test"})
    # membership inference is not what these tests are about (and is the slowest step): given as not run
    skip_mi = {"membership_inference": {"value": None, "reason": "not run in this test"}}
    return ReleaseAudit(policy=policy, seed=0).run(s, train, holdout, progress=False, privacy_evidence=skip_mi)


@pytest.fixture(scope="module")
def extractor(digits):
    from genguard.audits.features import fit_extractor

    train, holdout = digits
    return fit_extractor(train.x, train.groups["label"], holdout_x=holdout.x, holdout_y=holdout.groups["label"],
                         seed=0)


def _diversity(ext, digits, x):
    from genguard.audits.fidelity import diversity

    train, holdout = digits
    return diversity(ext.features(train.x), ext.features(x), ext.features(holdout.x),
                     real_labels=train.groups["label"], fake_labels=ext.predict(x), seed=0)


def _gates(report):
    return {g["name"]: g for g in report.gates}


def _one_per_class(data, rng, n, jitter):
    """A mode-collapsed generator: one real image per class, repeated, with optional pixel jitter."""
    y = data.groups["label"]
    protos = np.stack([data.x[rng.choice(np.where(y == c)[0])] for c in range(10)])
    labels = np.arange(n) % 10
    x = protos[labels] + rng.normal(0, jitter, (n,) + protos.shape[1:]) if jitter else protos[labels]
    return np.clip(x, 0, 1), labels


@pytest.fixture(scope="module")
def reports(digits):
    train, holdout = digits
    rng = np.random.default_rng(0)
    return {"reference": _audit(holdout.x, holdout.groups["label"], train, holdout),
            # collapsed onto holdout images (never trained on), so that only the diversity gates can catch it
            "jitter": _audit(*_one_per_class(holdout, rng, 600, 0.03), train, holdout)}


def test_the_default_policy_gates_diversity():
    from genguard.audits.policy import DEFAULT_POLICY

    assert set(DIVERSITY_GATES) <= set(DEFAULT_POLICY["gates"])


def test_real_samples_pass_the_diversity_gates(reports):
    g = _gates(reports["reference"])
    for name in DIVERSITY_GATES:
        assert g[name]["passed"] is True, g[name]
    div = reports["reference"].data["fidelity"]["diversity"]
    # the holdout compared with itself at the same size: exactly the reference level
    assert div["recall_relative"]["point"] == pytest.approx(1.0)
    assert div["coverage_relative"]["point"] == pytest.approx(1.0)
    # everything passes but the ε gate, which cannot be evaluated without a ledger and so fails
    assert [g["name"] for g in reports["reference"].failed_gates] == ["privacy.epsilon"]


def test_a_mode_collapsed_generator_fails_every_diversity_gate(reports):
    rep = reports["jitter"]
    g = _gates(rep)
    for name in DIVERSITY_GATES:
        assert g[name]["passed"] is False, g[name]
    # its images are real holdout digits, so precision alone (the old default) would have passed it
    assert g["fidelity.precision"]["passed"] is True
    assert not rep.passed
    assert rep.data["fidelity"]["diversity"]["within_class"]["min_ratio"]["value"] < 0.2
    assert "fidelity.diversity.within_class.min_ratio" in {x["name"] for x in rep.failed_gates}


def test_exact_repeats_score_zero_spread(extractor, digits):
    _, holdout = digits
    x, _ = _one_per_class(holdout, np.random.default_rng(1), 300, 0.0)
    d = _diversity(extractor, digits, x)
    assert d["within_class"]["min_ratio"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert d["recall_relative"]["value"] < 0.1 and d["coverage_relative"]["value"] < 0.2


def test_one_collapsed_class_fails_the_within_class_gate(extractor, digits):
    from genguard.audits.policy import DEFAULT_POLICY, evaluate_gates

    _, holdout = digits
    y = holdout.groups["label"]
    nines = holdout.x[y == 9]
    typical = nines[np.argmin(((nines - nines.mean(0)) ** 2).sum((1, 2)))]  # a nine the classifier calls 9
    x = np.concatenate([holdout.x[y != 9], np.repeat(typical[None], 40, axis=0)])
    d = _diversity(extractor, digits, x)
    per = d["within_class"]["per_class"]
    assert per["9"]["n_generated"] >= 40 and per["9"]["value"] < 0.2
    assert all(per[str(c)]["value"] > 0.7 for c in range(9))
    gates = {g["name"]: g for g in evaluate_gates({"fidelity": {"diversity": d}}, DEFAULT_POLICY)}
    assert gates["fidelity.diversity.within_class.min_ratio"]["passed"] is False
    # recall and coverage over all classes barely notice one collapsed class: the within-class gate does
    assert gates["fidelity.diversity.recall_relative"]["passed"] is True


def test_relative_figures_gate_the_lower_end_and_compare_equal_sizes(digits):
    from genguard.audits.fidelity import diversity

    train, holdout = digits
    rng = np.random.default_rng(3)
    r = train.x.reshape(len(train.x), -1)
    h = holdout.x.reshape(len(holdout.x), -1)
    # a real sample 4x smaller than the holdout: compared at its own size it is as diverse as real data,
    # while its raw coverage against train is far below the holdout's
    small = h[rng.choice(len(h), 90, replace=False)]
    d = diversity(r, small, h, seed=0)
    assert d["matched_size"] == 90
    for m in ("recall_relative", "coverage_relative"):
        v = d[m]
        assert v["value"] == v["ci"][0] <= v["point"] <= v["ci"][1]
        assert 0.8 < v["point"] < 1.25, (m, v)
    assert d["within_class"]["value"] is None  # no labels given: said so, not guessed


def test_without_a_holdout_the_diversity_gates_are_not_computed(digits):
    train, _ = digits
    from genguard.audits.fidelity import diversity
    from genguard.audits.policy import DEFAULT_POLICY, evaluate_gates

    d = {"fidelity": {"diversity": {"value": None, "reason": "no holdout data given"}}}
    g = {x["name"]: x for x in evaluate_gates(d, DEFAULT_POLICY)}
    for name in DIVERSITY_GATES:
        assert g[name]["value"] is None and g[name]["passed"] is False and "not evaluated" in g[name]["reason"]
    assert diversity(train.x[:50].reshape(50, -1), train.x[:3].reshape(3, -1), train.x[:3].reshape(3, -1))[
        "value"] is None


@pytest.mark.parametrize("gates", [
    {"fidelity.diversity.recall_relative": {"min": -0.1}},
    {"fidelity.diversity.coverage_relative": {"min": 11}},
    {"fidelity.diversity.within_class.min_ratio": {"min": -1}},
    {"fidelity.precision": {"min": 1.5}},
    {"memorization.near_duplicate_rate": {"max": -0.01}},
    {"privacy.epsilon": {"max": -1}},
])
def test_policy_rejects_out_of_range_thresholds(gates):
    from genguard.audits import AuditError
    from genguard.audits.policy import load_policy

    with pytest.raises(AuditError, match="must be in"):
        load_policy({"gates": gates})


@pytest.mark.parametrize("mem", [{"false_copy_rate": 0}, {"false_copy_rate": 0.9}, {"false_copy_rate": "low"},
                                 {"calibrate": "yes"}])
def test_policy_rejects_bad_calibration_settings(mem):
    from genguard.audits import AuditError
    from genguard.audits.policy import load_policy

    with pytest.raises(AuditError, match="memorization"):
        load_policy({"memorization": mem})


def test_policy_yaml_diversity_gate_threshold_is_checked(tmp_path):
    from genguard.audits import AuditError
    from genguard.audits.policy import load_policy

    p = tmp_path / "p.yaml"
    p.write_text("gates:\n  fidelity.diversity.recall_relative: {min: 0.6}\n")
    assert load_policy(p)["gates"] == {"fidelity.diversity.recall_relative": {"min": 0.6}}
    p.write_text("gates:\n  fidelity.diversity.recall_relative: {min: -3}\n")
    with pytest.raises(AuditError, match=str(p)):
        load_policy(p)


# --------------------------------------------------------------------------------------
# copy detection calibrated on real data
# --------------------------------------------------------------------------------------
def _planted_mix(digits, seed=0):
    """40 near-copies of training digits (pixel noise, one of them shifted by a pixel) among 300 real
    digits not trained on; the remaining holdout digits are the calibration holdout."""
    from genguard.audits.memorization import shift_images

    train, holdout = digits
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(holdout.x))
    unrelated, calib = holdout.x[perm[:300]], holdout.x[perm[300:]]
    picked = train.x[rng.choice(len(train.x), 40, replace=False)]
    picked = np.concatenate([shift_images(picked[:10], 0, 1), picked[10:]])
    planted = np.clip(picked + rng.normal(0, 0.03, picked.shape), 0, 1)
    samples = np.concatenate([planted, unrelated]).astype(np.float32)
    truth = np.zeros(len(samples), bool)
    truth[:40] = True
    return samples, truth, train.x, calib


def _recall_precision(sec, truth):
    flagged = sec["_ratios"] < sec["distance_ratio_threshold"]
    tp = int((flagged & truth).sum())
    return tp / truth.sum(), tp / max(int(flagged.sum()), 1)


def test_calibrated_copy_detection_finds_planted_copies_and_spares_real_digits(digits):
    from genguard.audits.memorization import memorization_section

    samples, truth, train, calib = _planted_mix(digits)
    sec = memorization_section(samples, train, calib)
    recall, precision = _recall_precision(sec, truth)
    assert recall >= 0.95 and precision >= 0.95, (recall, precision, sec["distance_ratio_threshold"])
    cal = sec["threshold_calibration"]
    assert cal["n_calibration"] == len(train) + len(calib)
    assert cal["false_copy_rate_bound"] <= 0.001
    assert sec["distance_ratio_threshold"] == cal["threshold"] <= cal["cap"]


def test_calibration_is_what_spares_real_digits_under_a_loose_cap(digits):
    """With a loose ratio cap of 0.6 the fixed rule calls many real digits copies; calibrated on real
    ratios the threshold falls below what real digits reach and precision stays high."""
    from genguard.audits.memorization import memorization_section

    samples, truth, train, calib = _planted_mix(digits, seed=1)
    fixed = memorization_section(samples, train, calib, threshold=0.6, calibrate=False)
    cal = memorization_section(samples, train, calib, threshold=0.6, calibrate=True)
    r_fixed, p_fixed = _recall_precision(fixed, truth)
    r_cal, p_cal = _recall_precision(cal, truth)
    assert p_fixed < 0.5 < 0.95 <= p_cal, (p_fixed, p_cal)
    assert r_cal >= 0.95
    assert fixed["threshold_calibration"]["value"] is None


def test_calibrated_threshold_is_the_stated_order_statistic():
    from genguard.audits.memorization import calibrate_threshold, distance_ratios

    rng = np.random.default_rng(0)
    train = rng.random((300, 16)).astype(np.float32)
    hold = rng.random((99, 16)).astype(np.float32)
    cal = calibrate_threshold(train, hold, false_copy_rate=0.05, cap=1.0, nth=5, max_shift=0)
    ratios = np.sort(np.concatenate([distance_ratios(train, train, nth=5, max_shift=0, exclude_self=True)["ratio"],
                                     distance_ratios(hold, train, nth=5, max_shift=0)["ratio"]]))
    j = int(np.floor(0.05 * 400))
    assert cal["order_statistic"] == j and cal["threshold"] == pytest.approx(ratios[j - 1])
    assert (ratios < cal["threshold"]).mean() <= 0.05
    # a fresh real split from the same distribution is flagged at about the stated rate, not more
    fresh = rng.random((2000, 16)).astype(np.float32)
    flagged = (distance_ratios(fresh, train, nth=5, max_shift=0)["ratio"] < cal["threshold"]).mean()
    assert flagged <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / 2000) + 0.02
    # the cap still bounds the threshold
    assert calibrate_threshold(train, hold, false_copy_rate=0.05, cap=0.01, nth=5, max_shift=0)["threshold"] == 0.01


def test_gates_that_cannot_be_evaluated_fail_and_say_so():
    from genguard.audits.html import gate_banner
    from genguard.audits.policy import evaluate_gates, load_policy

    pol = load_policy({"gates": {"privacy.epsilon": {"max": 10}, "fidelity.precision": {"min": 0.5},
                                 "bias.flagged_count": {"max": 0, "allow_missing": True}}})
    data = {"privacy": {"value": None, "reason": "no privacy ledger was given"}, "fidelity": {"precision": 0.9},
            "bias": {"value": None, "reason": "no labels"}}
    g = {x["name"]: x for x in evaluate_gates(data, pol)}
    assert g["privacy.epsilon"]["passed"] is False and "cannot be evaluated fails" in g["privacy.epsilon"]["reason"]
    assert g["bias.flagged_count"]["passed"] is None and "allowed by the policy" in g["bias.flagged_count"]["reason"]
    banner = gate_banner(list(g.values()))
    assert banner.startswith("Gate(s) failed: privacy.epsilon") and "1 of 3 gates evaluated" in banner
    # a model trained without DP: the ε gate fails with the ledger's own reason
    nodp = {"privacy": {"private": False, "epsilon": None, "reason": "trained without differential privacy"}}
    e = evaluate_gates(nodp, load_policy({"gates": {"privacy.epsilon": {"max": 10}}}))[0]
    assert e["passed"] is False and "without differential privacy" in e["reason"]


@pytest.mark.parametrize("name, message", [
    ("fidelity.diversity.recal_relative", "did you mean 'fidelity.diversity.recall_relative'"),
    ("fidelty.precision", "did you mean 'fidelity'"),
    ("nonsense.x", "the report has no section 'nonsense'"),
])
def test_a_misspelled_gate_is_refused_before_any_work(name, message):
    from genguard.audits import AuditError
    from genguard.audits.policy import load_policy

    with pytest.raises(AuditError, match=message):
        load_policy({"gates": {name: {"min": 0.5}}})
    with pytest.raises(AuditError, match="allow_missing"):
        load_policy({"gates": {"fidelity.precision": {"min": 0.5, "allow_missing": "yes"}}})


def test_an_edited_ledger_fails_every_privacy_gate_of_audit_model(tmp_path):
    """The attack of the review: edit the signed ledger's ε from ~10 to 1.0 and audit with ε <= 2. The
    audit re-verifies the ledger as `run` does, so the gate fails on the broken signature, not on the number."""
    import json
    import subprocess
    import sys

    env = {**__import__("os").environ, "GENGUARD_NO_PROGRESS": "1", "GENGUARD_HOME": str(tmp_path / "home")}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "genguard", *args], capture_output=True, text=True, env=env,
                              timeout=600)

    model = tmp_path / "m"
    assert cli("train", "--generator", "dpmerf", "--quick", "--out", str(model)).returncode == 0
    assert cli("sample", "--model", str(model / "model"), "-n", "200", "--out", str(tmp_path / "s")).returncode == 0
    ledger = model / "model" / "ledger.json"
    data = json.loads(ledger.read_text())
    assert data["epsilon"] > 2
    data["epsilon"] = 1.0
    pol = tmp_path / "p.yaml"
    ledger.write_text(json.dumps(data))  # a careless edit: refused outright (exit 2), nothing passes
    pol.write_text("gates:\n  privacy.epsilon: {max: 2}\n")
    assert cli("audit", "--samples", str(tmp_path / "s"), "--model", str(model), "--policy", str(pol),
               "--out", str(tmp_path / "a0")).returncode == 2
    ledger.write_text(json.dumps(data, indent=2) + "\n")  # a careful one, in the byte form genguard writes
    pol.write_text("gates:\n  privacy.epsilon: {max: 2}\n")
    proc = cli("audit", "--samples", str(tmp_path / "s"), "--model", str(model), "--policy", str(pol),
               "--out", str(tmp_path / "a"))
    assert proc.returncode == 1, proc.stderr
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    gate = rep["gates"][0]
    assert gate["value"] == 1.0 and gate["passed"] is False and "does not verify" in gate["reason"]
    assert rep["privacy"]["verification"]["consistent"] is False
