"""Release audit: the ReleaseAudit interface, report.json contract, gates, determinism and the `genguard audit` CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from genguard.generators.base import Samples

REPORT_KEYS = {"generator", "privacy", "fidelity", "bias", "memorization", "provenance", "detection", "marking", "human",
               "gates"}


def _fake_samples(train, holdout, n=400, seed=1, copies=0, noise=0.05):
    """Stand-in generator output: noisy holdout digits (never trained on) plus exact training copies."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(holdout), n, replace=True)
    x = np.clip(holdout.x[idx] + rng.normal(0, noise, holdout.x[idx].shape), 0, 1).astype(np.float32)
    labels = holdout.groups["label"][idx].copy()
    if copies:
        x[:copies] = train.x[:copies]
        labels[:copies] = train.groups["label"][:copies]
    return Samples(data=x, modality="image", conditions={"label": labels}, metadata={"generator": "fake"})


@pytest.fixture(scope="module")
def audited(digits):
    from genguard.audits import ReleaseAudit

    train, holdout = digits
    samples = _fake_samples(train, holdout, copies=8)
    ledger = {"private": True, "epsilon": 3.2, "delta": 1e-5, "accountant": "prv", "run_id": "r1",
              "guarantee": "(3.2, 1e-5)-DP", "target_epsilon": 4.0}
    report = ReleaseAudit(seed=0).run(samples, train, holdout, ledger=ledger, generator_info={"name": "fake"},
                                      progress=False)
    return samples, report


def test_report_has_contract_keys_and_json_shapes(audited):
    _, report = audited
    d = report.data
    assert REPORT_KEYS <= set(d)
    assert set(d) - REPORT_KEYS <= {"meta"}
    # bias shape of issue 7 item 7
    assert set(d["bias"]["groups"]) == {str(i) for i in range(10)}
    for g in d["bias"]["groups"].values():
        assert {"observed", "expected", "ci", "flagged"} <= set(g)
        lo, hi = g["ci"]
        assert 0 <= lo <= g["observed"] <= hi <= 1
    assert isinstance(d["bias"]["flagged"], list)
    assert 0 < d["bias"]["p_value"] <= 1
    assert 0 <= d["bias"]["total_variation"] <= 1
    assert abs(sum(g["expected"] for g in d["bias"]["groups"].values()) - 1) < 1e-9
    # memorization shape
    assert isinstance(d["memorization"]["near_duplicates"], list)
    for e in d["memorization"]["near_duplicates"]:
        assert {"sample", "train_item", "distance_ratio"} <= set(e)
    assert d["memorization"]["near_duplicate_rate"] == d["memorization"]["near_duplicate_count"] / 400
    # not computed -> null value with a reason
    assert d["provenance"]["value"] is None and d["provenance"]["reason"]
    assert d["fidelity"]["reconstruction"]["value"] is None
    assert "not comparable" in d["fidelity"]["feature_extractor"]["note"] or "never" in d["fidelity"]["feature_extractor"]["note"]
    assert d["privacy"]["epsilon"] == 3.2
    json.dumps(d, allow_nan=False)


def test_planted_training_copies_are_found(audited):
    _, report = audited
    mem = report.data["memorization"]
    found = {e["sample"]: e["train_item"] for e in mem["near_duplicates"]}
    for i in range(8):
        assert found.get(i) == i, f"planted copy {i} of train item {i} not reported"
    assert mem["exact_duplicate_count"] >= 8
    assert mem["holdout_false_positive_rate"] <= 0.01
    # samples derived from holdout items: their nearest real item is rarely a training item
    assert mem["dcr"]["share_nearest_in_train"] < mem["dcr"]["expected_share_if_no_copying"]


def test_gates_and_pass_verdict(audited):
    _, report = audited
    gates = {g["name"]: g for g in report.data["gates"]}
    for g in gates.values():
        assert {"name", "value", "threshold", "passed"} <= set(g)
    assert gates["memorization.exact_duplicate_count"]["passed"] is False
    assert gates["privacy.epsilon"]["passed"] is True
    assert report.passed is False


def test_fidelity_is_sane(audited, digits):
    _, report = audited
    f = report.data["fidelity"]
    assert f["feature_extractor"]["holdout_accuracy"] > 0.9
    assert f["fid_local"]["value"] >= 0
    for m in ("precision", "recall", "coverage"):
        assert 0 <= f[m]["ci"][0] <= f[m]["value"] <= f[m]["ci"][1] <= 1
    assert f["precision"]["value"] > 0.8  # noisy real digits are realistic


def test_same_seed_same_report(digits):
    from genguard.audits import ReleaseAudit

    train, holdout = digits
    s = _fake_samples(train, holdout, n=150, seed=3)
    a = ReleaseAudit(seed=7).run(s, train, holdout, progress=False).data
    b = ReleaseAudit(seed=7).run(s, train, holdout, progress=False).data
    a.pop("meta"), b.pop("meta")
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_worse_generator_scores_worse(digits):
    """fid_local and precision respond to quality: blurred noise is far from real digits."""
    from genguard.audits import ReleaseAudit

    train, holdout = digits
    good = _fake_samples(train, holdout, n=300, seed=4, noise=0.02)
    rng = np.random.default_rng(0)
    bad = Samples(data=rng.uniform(0, 1, (300, 8, 8)).astype(np.float32), modality="image")
    rg = ReleaseAudit(seed=0).run(good, train, holdout, progress=False).data["fidelity"]
    rb = ReleaseAudit(seed=0).run(bad, train, holdout, progress=False).data
    assert rb["fidelity"]["fid_local"]["value"] > 5 * rg["fid_local"]["value"]
    assert rb["fidelity"]["precision"]["value"] < rg["precision"]["value"]
    assert rb["bias"]["condition_adherence"]["value"] is None  # no requested condition


def test_write_is_self_contained(audited, tmp_path):
    _, report = audited
    jp, hp = report.write(tmp_path / "out")
    assert json.loads(jp.read_text())["bias"]["groups"]
    html = hp.read_text()
    assert html.count("data:image/png;base64,") >= 4
    assert "http://" not in html and "https://" not in html
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_policy_dict_and_yaml(digits, tmp_path):
    from genguard.audits import AuditError, ReleaseAudit

    train, holdout = digits
    s = _fake_samples(train, holdout, n=150, seed=5)
    pol = {"gates": {"fidelity.precision": {"min": 0.99999}, "bias.total_variation": {"max": 1.0}}}
    r = ReleaseAudit(policy=pol).run(s, train, holdout, progress=False)
    names = [g["name"] for g in r.data["gates"]]
    assert names == ["fidelity.precision", "bias.total_variation"]
    assert r.data["gates"][1]["passed"] is True
    p = tmp_path / "p.yaml"
    p.write_text("gates:\n  privacy.epsilon: {max: 1}\non_missing: fail\n")
    r = ReleaseAudit(policy=str(p)).run(s, train, holdout, progress=False)
    assert r.data["gates"][0]["passed"] is False and "not evaluated" in r.data["gates"][0]["reason"]
    assert not r.passed
    bad = tmp_path / "bad.yaml"
    bad.write_text("gates: {x: {between: 3}}\n")
    with pytest.raises(AuditError, match="bad.yaml"):
        ReleaseAudit(policy=str(bad)).run(s, train, holdout, progress=False)
    with pytest.raises(AuditError, match="missing.yaml"):
        ReleaseAudit(policy=str(tmp_path / "missing.yaml")).run(s, train, holdout, progress=False)


def test_bad_input_raises_audit_error(digits):
    from genguard.audits import AuditError, ReleaseAudit

    train, holdout = digits
    with pytest.raises(AuditError):
        ReleaseAudit().run(Samples(data=np.zeros((5, 4, 4), np.float32), modality="image"), train, holdout,
                           progress=False)
    with pytest.raises(AuditError):
        ReleaseAudit().run(np.zeros((5, 8, 8)), train, holdout, progress=False)


def _cli(argv):
    from genguard.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_cli_audit_exit_codes(digits, tmp_path, capsys):
    from genguard.generators.data import write_samples

    train, holdout = digits
    s = _fake_samples(train, holdout, n=120, seed=6)
    s.metadata["pixel_scale"] = 4
    write_samples(s, tmp_path / "samples")
    # no --model: the ε gate cannot be evaluated, so it fails (and says why) unless the policy allows it
    assert _cli(["audit", "--samples", str(tmp_path / "samples"), "--reference", "digits",
                 "--out", str(tmp_path / "out0")]) == 1
    gates = {g["name"]: g for g in json.loads((tmp_path / "out0" / "report.json").read_text())["gates"]}
    assert [n for n, g in gates.items() if g["passed"] is False] == ["privacy.epsilon"]
    assert "cannot be evaluated fails" in gates["privacy.epsilon"]["reason"]
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("gates:\n" + "".join(f"  {n}: {{{g['op'].replace('<=', 'max').replace('>=', 'min')}: "
                                             f"{g['threshold']}}}\n" for n, g in gates.items() if n != "privacy.epsilon")
                       + "  privacy.epsilon: {max: 10, allow_missing: true}\n")
    assert _cli(["audit", "--samples", str(tmp_path / "samples"), "--reference", "digits", "--policy", str(lenient),
                 "--out", str(tmp_path / "out")]) == 0
    rep = json.loads((tmp_path / "out" / "report.json").read_text())
    eps = {g["name"]: g for g in rep["gates"]}["privacy.epsilon"]
    assert eps["passed"] is None and "allowed by the policy" in eps["reason"]
    assert "allowed by the policy" in capsys.readouterr().out
    assert rep["bias"]["requested"]["n"] == 120  # labels recovered from the file names
    assert rep["bias"]["condition_adherence"]["value"] > 0.8
    # a planted copy and a strict policy -> exit 1
    write_samples(Samples(data=train.x[:3], modality="image", metadata={"pixel_scale": 4}), tmp_path / "samples",
                  prefix="copy")
    pol = tmp_path / "policy.yaml"
    pol.write_text("gates:\n  memorization.near_duplicate_count: {max: 0}\n")
    assert _cli(["audit", "--samples", str(tmp_path / "samples"), "--policy", str(pol),
                 "--out", str(tmp_path / "out2")]) == 1
    # bad input -> exit 2, one line naming the file
    capsys.readouterr()
    assert _cli(["audit", "--samples", str(tmp_path / "nope"), "--out", str(tmp_path / "o3")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"not a png")
    assert _cli(["audit", "--samples", str(tmp_path / "junk"), "--out", str(tmp_path / "o4")]) == 2
    assert "a.png" in capsys.readouterr().err


def test_intersections_of_two_attributes_in_the_report(digits):
    """Reference and samples with two attributes: Holm-corrected cells; a missing cell is flagged."""
    from genguard.audits import ReleaseAudit
    from genguard.generators.base import Dataset

    train, holdout = digits
    two = lambda d: Dataset(x=d.x, modality="image", name=d.name,  # noqa: E731
                            groups={"label": d.groups["label"], "parity": d.groups["label"] % 2},
                            group_names={"label": [str(i) for i in range(10)], "parity": ["even", "odd"]})
    tr2, ho2 = two(train), two(holdout)
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 10, 600)
    lab[lab == 3] = 5  # "3 & odd" never generated
    s = Samples(data=train.x[rng.integers(0, len(train), 600)], modality="image",
                conditions={"label": lab, "parity": lab % 2})
    sec = ReleaseAudit(seed=0).run(s, tr2, ho2, progress=False).data["bias"]["intersections"]
    assert sec["correction"] == "Holm" and "3&odd" in sec["flagged"]
    s1 = Samples(data=s.data, modality="image", conditions={"label": lab})
    one = ReleaseAudit(seed=0).run(s1, tr2, ho2, progress=False).data["bias"]["intersections"]
    assert one["value"] is None and "two attributes" in one["reason"]
