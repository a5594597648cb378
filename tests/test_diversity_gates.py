"""Text and table diversity gates: measured against real data's own level, they fail a collapsed generator."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

TEXT_GATES = ("fidelity.diversity.self_bleu_relative", "fidelity.diversity.distinct_1_relative",
              "fidelity.diversity.distinct_2_relative")
TABLE_GATES = ("fidelity.columns.max_excess", "fidelity.columns.mean_excess", "fidelity.pairs.mean_excess")


@pytest.fixture(scope="module")
def pydoc():
    from genguard.generators.data import load_pydoc_text, train_holdout

    tr, ho = train_holdout(load_pydoc_text())
    return list(tr.x), list(ho.x)


@pytest.fixture(scope="module")
def diabetes():
    from genguard.generators.data import load_diabetes, train_holdout

    tr, ho = train_holdout(load_diabetes())
    return tr.x, ho.x


def _gates(report):
    return {g["name"]: g for g in report.gates}


def test_each_modality_has_its_default_gates():
    from genguard.audits import AuditError
    from genguard.audits.policy import DEFAULT_GATES, DEFAULT_POLICY, load_policy

    assert set(TEXT_GATES) <= set(load_policy(None, modality="text")["gates"])
    assert set(TABLE_GATES) <= set(load_policy({"level": 0.05}, modality="tabular")["gates"])
    assert not set(TEXT_GATES + TABLE_GATES) & set(load_policy(None)["gates"])  # image audits keep theirs
    assert load_policy(None)["gates"] == DEFAULT_POLICY["gates"] == DEFAULT_GATES["image"]
    # a policy that states gates replaces the defaults whatever the modality
    assert load_policy({"gates": {"privacy.epsilon": {"max": 1}}}, modality="text")["gates"] == {
        "privacy.epsilon": {"max": 1}}
    assert {"fidelity.tstr", "bias.flagged_count"} <= set(load_policy(None, modality="audio")["gates"])
    with pytest.raises(AuditError, match="modality"):
        load_policy(None, modality="video")
    with pytest.raises(AuditError, match="must be in"):
        load_policy({"gates": {"fidelity.pairs.mean_excess": {"max": -0.1}}}, modality="tabular")


# --------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------
def _text_audit(texts, pydoc):
    from genguard.audits import ReleaseAudit

    train, holdout = pydoc
    return ReleaseAudit(seed=0).run_text(texts, train, holdout, progress=False)


def test_real_text_passes_and_a_collapsed_text_generator_fails(pydoc, tmp_path):
    train, holdout = pydoc
    real = _text_audit(holdout, pydoc)
    g = _gates(real)
    for name in TEXT_GATES:
        assert g[name]["passed"] is True, g[name]
        assert 0.8 < real.data["fidelity"]["diversity"][name.rsplit(".", 1)[1]]["point"] < 1.25
    # a generator that repeats one training passage, with a sliding start so no two texts are identical
    collapsed = [train[3][i:i + 400] for i in range(0, 300, 5)]
    bad = _text_audit(collapsed, pydoc)
    g = _gates(bad)
    for name in TEXT_GATES:
        assert g[name]["passed"] is False, g[name]
        assert g[name]["value"] < 0.3
    assert not bad.passed and set(TEXT_GATES) <= {x["name"] for x in bad.failed_gates}
    rows = dict(bad.summary_rows())
    assert any(k.startswith("diversity vs real (self-BLEU") for k in rows)
    _, html = bad.write(tmp_path)
    page = html.read_text()
    assert "Text diversity against real text" in page and "distinct_2_relative" in page


def test_text_diversity_is_compared_at_the_same_length_and_count(pydoc):
    from genguard.audits.text_diversity import text_diversity

    train, holdout = pydoc
    # the same real passages cut to a fifth of their length, and given twice as many times as the reference has:
    # at matched length and count they are as diverse as the reference (an unmatched distinct-n would not be)
    short = [t[:len(t) // 5] for t in train]
    d = text_diversity(short, train + holdout, seed=1)
    assert d["tokens_per_text"] <= 128 and d["matched_texts"] == len(short)
    for m in ("self_bleu_relative", "distinct_1_relative", "distinct_2_relative"):
        assert d[m]["value"] <= d[m]["point"] and d[m]["ci"][0] <= d[m]["ci"][1]
        assert 0.75 < d[m]["point"] < 1.35, (m, d[m])
    # exact repeats: no distinct n-grams beyond one text's, and self-BLEU 1
    rep = text_diversity([train[0]] * 40, train + holdout)
    assert rep["self_bleu_relative"]["point"] == pytest.approx(0.0, abs=1e-9)
    assert rep["distinct_2_relative"]["point"] < 0.1
    assert text_diversity(["a b"] * 3, train)["value"] is None  # too few texts: said so, not guessed
    # one template with a number varied: no two texts are equal, yet few distinct words
    templ = text_diversity([f"Generated sentence number {i} about lists and tuples." for i in range(100)],
                           train + holdout)
    assert templ["distinct_1_relative"]["value"] < 0.5 and templ["distinct_2_relative"]["value"] < 0.5


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------
def _table_audit(synthetic, diabetes):
    from genguard.audits import ReleaseAudit

    train, holdout = diabetes
    skip_mi = {"membership_inference": {"value": None, "reason": "not run in this test"}}
    return ReleaseAudit(seed=0).run_tabular(synthetic, train, holdout, group="sex", target="target",
                                           progress=False, privacy_evidence=skip_mi)


def test_real_rows_pass_and_a_collapsed_table_generator_fails(diabetes, tmp_path):
    train, holdout = diabetes
    real = _gates(_table_audit(holdout, diabetes))
    for name in TABLE_GATES:
        assert real[name]["passed"] is True, real[name]
    # one real holdout row (never trained on) repeated with a little noise: no copies of training rows,
    # so only the fidelity gates can say no
    rng = np.random.default_rng(0)
    row = holdout.iloc[[7]].to_numpy(float)
    x = np.repeat(row, 500, 0) + rng.normal(0, 0.05, (500, row.shape[1])) * train.std().to_numpy()
    x[:, list(train.columns).index("sex")] = rng.choice(train["sex"].to_numpy(), 500)
    collapsed = pd.DataFrame(x, columns=train.columns)
    rep = _table_audit(collapsed, diabetes)
    g = _gates(rep)
    assert g["fidelity.columns.max_excess"]["passed"] is False and g["fidelity.columns.max_excess"]["value"] > 0.5
    assert g["fidelity.columns.mean_excess"]["passed"] is False
    assert g["fidelity.pairs.mean_excess"]["passed"] is False
    assert g["memorization.exact_duplicate_count"]["passed"] is True
    assert not rep.passed
    _, html = rep.write(tmp_path)
    page = html.read_text()
    assert "Table fidelity against real data" in page and "worst column excess" in page
    assert page.count("<th>bmi</th>") >= 1


def test_independent_columns_fail_only_the_pairwise_gate(diabetes):
    """Each column drawn from its own real marginal: every column is right, every relation is lost."""
    train, holdout = diabetes
    rng = np.random.default_rng(1)
    indep = pd.DataFrame({c: rng.choice(holdout[c].to_numpy(), 500) for c in train.columns})
    g = _gates(_table_audit(indep, diabetes))
    assert g["fidelity.columns.max_excess"]["passed"] is True
    assert g["fidelity.columns.mean_excess"]["passed"] is True
    assert g["fidelity.pairs.mean_excess"]["passed"] is False


def test_table_fidelity_reference_level_and_categorical_columns(diabetes):
    from genguard.audits.tabular import table_fidelity

    train, holdout = diabetes
    d = table_fidelity(holdout, train, holdout)
    assert d["columns"]["max_excess"]["value"] == pytest.approx(0.0, abs=1e-12)
    assert d["pairs"]["mean_excess"]["point"] == pytest.approx(0.0, abs=1e-12)
    assert d["columns"]["per_column"]["sex"]["measure"] == "total variation"
    assert d["columns"]["per_column"]["bmi"]["measure"] == "KS"
    lo, hi = d["columns"]["mean_excess"]["ci"]
    assert lo <= 0.0 <= hi  # the interval covers the truth for real rows
    # a categorical column filled with values it never takes is as far as it can be
    bad = holdout.copy()
    bad["sex"] = 1.5
    d = table_fidelity(bad, train, holdout)
    assert d["columns"]["max_excess"]["column"] == "sex"
    assert d["columns"]["per_column"]["sex"]["distance"] == pytest.approx(1.0)
    assert table_fidelity(holdout.iloc[:3], train, holdout)["value"] is None
