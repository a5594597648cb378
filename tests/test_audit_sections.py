"""Audit sections: one result type with coded reasons, a registry by modality, gates and summary derived from it."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from genguard.generators.base import Samples

SKIP_MI = {"membership_inference": {"value": None, "reason": "not run in this test"}}


def test_result_type_and_closed_reason_codes():
    from genguard.audits import AuditError
    from genguard.audits.sections import Reason, Result, missing

    r = Result(value=0.7, interval=(0.6, 0.8), extra={"n": 3}).to_dict()
    assert r == {"n": 3, "value": 0.7, "ci": [0.6, 0.8]}
    m = missing(Reason.NO_HOLDOUT, "known non-members")
    assert m["value"] is None and m["code"] == "NO_HOLDOUT"
    assert m["reason"] == Reason.NO_HOLDOUT.sentence + ": known non-members"
    with pytest.raises(AuditError, match="Reason"):
        Result()  # no value and no reason
    with pytest.raises(AuditError, match="Reason"):
        Result(value=None, reason="free text")  # only the closed set of codes
    assert all(c.sentence and c.sentence[0].islower() for c in Reason)


def test_register_section_checks_the_class():
    from genguard.audits import AuditError
    from genguard.audits.sections import AuditSection, register_section, registered_sections

    with pytest.raises(AuditError, match="name and key"):
        register_section(type("NoName", (AuditSection,), {}))
    with pytest.raises(AuditError, match="modalities"):
        register_section(type("Odd", (AuditSection,), {"name": "odd", "key": "odd", "modalities": ("video",)}))
    with pytest.raises(AuditError, match="already registered"):
        register_section(type("Dup", (AuditSection,), {"name": "privacy", "key": "privacy"}))
    with pytest.raises(AuditError, match="AuditSection"):
        register_section(object)
    names = set(registered_sections())
    assert {"generator", "privacy", "image_fidelity", "text_diversity", "table_fidelity", "marking"} <= names


@pytest.fixture(scope="module")
def diabetes():
    from genguard.generators.data import load_diabetes, train_holdout

    return train_holdout(load_diabetes())


def test_a_new_section_is_one_class(diabetes):
    """A section registered from outside: its figure lands in report.json, its gate is a default gate of its
    modality only, its line is in the one terminal summary, and a missing input reads as a coded reason."""
    from genguard.audits import ReleaseAudit
    from genguard.audits.policy import load_policy
    from genguard.audits.sections import (AuditSection, Gate, Reason, Result, register_section, sections_for,
                                          unregister_section)

    @register_section
    class RowCount(AuditSection):
        name = "row_count_test"
        key = "fidelity.row_ratio"
        modalities = ("tabular",)
        gates = (Gate("fidelity.row_ratio", "min", 0.5, (0.0, 100.0)),)

        def compute(self, ctx):
            if ctx.inputs.get("ledger") is None and len(ctx.items) < 10:
                return Result.missing(Reason.TOO_FEW_SAMPLES, f"{len(ctx.items)} rows")
            return Result(value=len(ctx.items) / len(ctx.train), extra={"rows": len(ctx.items)})

        def summary_rows(self, data):
            return [("rows vs train", str(data["fidelity"]["row_ratio"]["rows"]))]

    try:
        assert "fidelity.row_ratio" in load_policy(None, modality="tabular")["gates"]
        assert "fidelity.row_ratio" not in load_policy(None, modality="image")["gates"]
        assert [s.name for s in sections_for("tabular")][-1] == "row_count_test"
        train, holdout = diabetes
        samples = Samples(data=holdout.x.iloc[:40].reset_index(drop=True), modality="tabular")
        rep = ReleaseAudit(seed=0).run(samples, train, holdout, progress=False, privacy_evidence=SKIP_MI)
        assert rep.data["fidelity"]["row_ratio"] == {"rows": 40, "value": pytest.approx(40 / len(train.x))}
        assert "columns" in rep.data["fidelity"]  # merged beside the built-in table fidelity, not over it
        gate = {g["name"]: g for g in rep.gates}["fidelity.row_ratio"]
        assert gate["passed"] is False  # 40 / 353 < 0.5
        assert ("rows vs train", "40") in rep.summary_rows()
        few = Samples(data=holdout.x.iloc[:6].reset_index(drop=True), modality="tabular")
        rep = ReleaseAudit(seed=0).run(few, train, holdout, progress=False, privacy_evidence=SKIP_MI)
        assert rep.data["fidelity"]["row_ratio"]["code"] == "TOO_FEW_SAMPLES"
        few_gate = {g["name"]: g for g in rep.gates}["fidelity.row_ratio"]
        assert few_gate["passed"] is False and "not evaluated" in few_gate["reason"]
    finally:
        unregister_section("row_count_test")
    assert "fidelity.row_ratio" not in load_policy(None, modality="tabular")["gates"]


def test_run_dispatches_by_modality_and_checks_the_reference(diabetes):
    from genguard.audits import AuditError, ReleaseAudit
    from genguard.generators.data import load_pydoc_text, train_holdout

    tr, ho = train_holdout(load_pydoc_text())
    texts = Samples(data=list(ho.x), modality="text")
    rep = ReleaseAudit(seed=0).run(texts, tr, ho, progress=False)
    assert rep.data["generator"]["modality"] == "text"
    assert rep.data["privacy"]["membership_inference"]["code"] == "NOT_APPLICABLE_MODALITY"
    assert rep.data["bias"]["code"] == "NO_GENERATOR"
    assert rep.data["provenance"]["code"] == "NOT_RUN"
    assert {g["name"] for g in rep.gates} >= {"fidelity.diversity.self_bleu_relative"}
    train, holdout = diabetes
    with pytest.raises(AuditError, match="text but the reference data tabular"):
        ReleaseAudit().run(texts, train, holdout, progress=False)
    with pytest.raises(AuditError, match="holdout"):
        ReleaseAudit().run(Samples(data=holdout.x, modality="tabular"), train, None, progress=False)


def test_real_image_features_are_computed_once_per_audit(digits, monkeypatch):
    from genguard.audits import ReleaseAudit, features

    train, holdout = digits
    calls = {"fit": 0, "features": 0}
    real_fit = features.fit_extractor

    def counting_fit(*a, **k):
        calls["fit"] += 1
        ext = real_fit(*a, **k)
        real_features = ext.features

        def counted(x):
            calls["features"] += 1
            return real_features(x)

        ext.features = counted
        return ext

    monkeypatch.setattr(features, "fit_extractor", counting_fit)
    x = holdout.x[:120]
    s = Samples(data=x, modality="image", conditions={"label": holdout.groups["label"][:120]},
                metadata={"generator": "test"})
    rep = ReleaseAudit(seed=0).run(s, train, holdout, progress=False, privacy_evidence=SKIP_MI)
    assert rep.data["fidelity"]["fid_local"]["value"] is not None and rep.data["bias"]["per_group_quality"]
    assert calls["fit"] == 1
    assert calls["features"] == 3  # train, holdout and samples, each once, shared by fidelity and bias
    assert isinstance(rep.data["fidelity"]["reconstruction"]["code"], str)


def test_one_terminal_summary_for_run_and_audit(diabetes):
    from genguard.audits import ReleaseAudit
    from genguard.pipeline import summary_rows

    train, holdout = diabetes
    rng = np.random.default_rng(0)
    syn = pd.DataFrame({c: rng.choice(holdout.x[c].to_numpy(), 200) for c in train.x.columns})
    rep = ReleaseAudit(seed=0).run(Samples(data=syn, modality="tabular"), train, holdout, progress=False,
                                   privacy_evidence=SKIP_MI)
    rows = rep.summary_rows()
    assert rows == summary_rows(rep.data)
    labels = [k for k, _ in rows]
    assert "fidelity vs real (worst column / mean column / pairs)" in labels
    assert not any(k.startswith("fid_local") for k in labels)  # image lines stay out of a table's summary
    last = dict(rows)["release gates"]
    assert last.startswith(f"{sum(g['passed'] is True for g in rep.gates)} of {len(rep.gates)} passed")
    assert "fidelity.pairs.mean_excess" in last  # independent columns: the pairwise gate fails


def test_an_installed_package_adds_a_section_through_its_entry_point(tmp_path, monkeypatch):
    """A section from another distribution: its entry point in the group genguard.audit_sections is
    loaded with the built-ins, and its gate joins the modality's default gates."""
    import sys

    from genguard.audits import sections

    (tmp_path / "my_sections.py").write_text(
        "from genguard.audits.sections import AuditSection, Gate, Result, register_section\n"
        "class SampleCount(AuditSection):\n"
        "    name = 'sample_count_plugin'\n"
        "    key = 'fidelity.sample_count'\n"
        "    modalities = ('image',)\n"
        "    gates = (Gate('fidelity.sample_count', 'min', 10, (0.0, 1e9)),)\n"
        "    def compute(self, ctx):\n"
        "        return Result(value=float(len(ctx.items)))\n")
    dist = tmp_path / "my_sections-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-sections\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[genguard.audit_sections]\nsample_count = my_sections:SampleCount\n"
                                           "broken = my_sections_missing:Nothing\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sections, "_entry_points_loaded", False)
    try:
        names = [s.name for s in sections.sections_for("image")]
        assert names[-1] == "sample_count_plugin"
        assert "fidelity.sample_count" in sections.default_gates("image")
        assert "broken" in sections.SECTION_PROBLEMS and "ModuleNotFoundError" in sections.SECTION_PROBLEMS["broken"]
    finally:
        sections.unregister_section("sample_count_plugin")
        sections.SECTION_PROBLEMS.pop("broken", None)
        sys.modules.pop("my_sections", None)
