"""The release report's human section: a console study's results join the report, gated like the rest,
checked as hostile input, and escaped in the HTML."""
from __future__ import annotations

import json

import numpy as np
import pytest

from genguard.audits import AuditError, ReleaseAudit
from genguard.audits.human import two_afc
from genguard.audits.human_section import check_study
from genguard.generators.base import Samples

SKIP_MI = {"membership_inference": {"value": None, "reason": "not run in this test"}}


def _study(fooled: int, n: int, name: str = "realism pilot") -> dict:
    trials = [(f"r{i % 4}", i < fooled) for i in range(n)]
    return {"human": {"study": name, "kind": "2afc", "raters_excluded_by_attention_checks": 1,
                      "two_afc": two_afc(trials), "gates": [], "passed": True}}


def _audit(digits, human, gates):
    train, holdout = digits
    s = Samples(data=holdout.x[:120], modality="image", conditions={"label": holdout.groups["label"][:120]})
    return ReleaseAudit(policy={"gates": gates}, seed=0).run(s, train, holdout, human=human, progress=False,
                                                              privacy_evidence=SKIP_MI)


def test_a_study_joins_the_report_and_is_gated(digits):
    gates = {"human.two_afc.ci_high": {"min": 0.3}, "human.two_afc.share_generated_judged_real": {"min": 0.2}}
    good = _audit(digits, check_study(_study(40, 100, name="<script>alert(1)</script>")), gates)
    h = good.data["human"]
    assert h["two_afc"]["trials"] == 100 and h["two_afc"]["share_generated_judged_real"] == pytest.approx(0.4)
    assert "gates" not in h and "passed" not in h  # the file's own verdict is not trusted: the policy re-gates
    assert [g["passed"] for g in good.gates] == [True, True]
    assert ("human 2AFC: generated judged real", "0.400 [0.309, 0.498]") in good.summary_rows()
    page = (lambda p: p.read_text())(good.write(__import__("tempfile").mkdtemp())[1])
    assert "Human evaluation" in page and "<script>alert(1)" not in page and "&lt;script&gt;" in page
    bad = _audit(digits, check_study(_study(5, 100)), gates)  # people spot the fakes: the gate says no
    assert [g["passed"] for g in bad.gates] == [False, False]


def test_without_a_study_the_human_gates_fail_and_say_why(digits):
    rep = _audit(digits, None, {"human.two_afc.ci_high": {"min": 0.3}})
    assert rep.data["human"]["code"] == "NOT_GIVEN"
    g = rep.gates[0]
    assert g["passed"] is False and "no human study was given" in g["reason"]


@pytest.mark.parametrize("study, message", [
    ({"anything": 1}, "not a human study"),
    ({"human": {"two_afc": {"trials": 10, "generated_judged_real": 11}}}, "0 <= k <= n"),
    ({"human": {"two_afc": {"trials": 10, "generated_judged_real": 4, "share_generated_judged_real": 0.9}}},
     "disagrees with its counts"),
    ({"human": {"two_afc": {"trials": 10, "generated_judged_real": 4, "ci_high": float("nan")}}}, "share in"),
    ({"human": {"mos": [1, 2]}}, "mos must be an object"),
])
def test_hostile_study_files_are_refused(study, message):
    with pytest.raises(AuditError, match=message):
        check_study(study, "s.json")


def test_cli_audit_takes_the_console_results(digits, tmp_path, capsys):
    from genguard.cli import main
    from genguard.generators.data import write_samples

    train, holdout = digits
    write_samples(Samples(data=holdout.x[:100], modality="image",
                          conditions={"label": holdout.groups["label"][:100]}), tmp_path / "s")
    res = tmp_path / "results.json"
    res.write_text(json.dumps(_study(45, 120)))
    pol = tmp_path / "p.yaml"
    pol.write_text("gates:\n  human.two_afc.ci_high: {min: 0.3}\n")
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--samples", str(tmp_path / "s"), "--human", str(res), "--policy", str(pol),
              "--out", str(tmp_path / "a")])
    assert exc.value.code == 0
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    assert rep["gates"][0]["value"] == pytest.approx(rep["human"]["two_afc"]["ci_high"])
    (tmp_path / "bad.json").write_text("[" * 10_000)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["audit", "--samples", str(tmp_path / "s"), "--human", str(tmp_path / "bad.json"),
              "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "bad.json" in err[0]
    assert not (tmp_path / "b").exists()
