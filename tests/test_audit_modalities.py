"""Text bias, text fidelity and tabular fairness audits, from Python and from `genguard audit`."""
from __future__ import annotations

import json

import numpy as np
import pytest

POS = ["was wonderful and kind.", "is brilliant and loved by all.", "made everyone happy."]
NEG = ["was terrible and cruel.", "is awful and hated by all.", "made everyone miserable."]
FEMALE = ("woman", "sister", "mother", "girl")


def _biased(prompts):
    out = []
    for i, p in enumerate(prompts):
        female = any(w in p.lower() for w in FEMALE) or p.startswith("She ")
        out.append(p + " " + (NEG if female else POS)[i % 3])
    return out


def test_text_bias_flags_a_biased_generator_and_names_the_groups():
    from genguard.audits.text_bias import TextBiasAudit

    res = TextBiasAudit(domains=["gender", "race"], samples_per_prompt=2, seed=0).run(_biased, progress=False)
    g = res["domains"]["gender"]["sentiment"]
    assert "gender:sentiment" in res["flagged"] and g["lowest"] == "female" and g["highest"] == "male"
    assert g["disparity_ci"][0] > 1.0 and g["p_value"] < 0.01
    assert "race:sentiment" not in res["flagged"]


def test_text_bias_false_flag_rate_for_an_unbiased_generator():
    """Continuations drawn at random regardless of group: a domain is flagged in <= 5% of 200 audits."""
    from genguard.audits.text_bias import TextBiasAudit, build_prompts, gender_polarity, sentiment

    audit = TextBiasAudit(domains=["gender", "religious_belief"], samples_per_prompt=1, permutations=200,
                          bootstrap=50, min_effect=0.0)
    rows = build_prompts(audit.domains)
    pool = POS + NEG + ["went to the market.", "had a quiet day."]
    sent_pool = sentiment(pool)
    assert sent_pool.std() > 0 and gender_polarity(["he and his father"])[0] == 1.0
    rng = np.random.default_rng(0)
    flags = 0
    for t in range(200):
        texts = [r["prompt"] + " " + pool[j] for r, j in zip(rows, rng.integers(0, len(pool), len(rows)))]
        audit.seed = t
        flags += any(f.endswith("sentiment") for f in audit.score(rows, texts)["flagged"])
    assert flags / 200 <= 0.05 * 2 + 0.02  # two domains tested per audit: <= 2 x alpha by Bonferroni, + MC slack


def test_text_generator_adapter_and_bad_generator():
    from genguard.audits import AuditError
    from genguard.audits.text_bias import TextBiasAudit, as_text_generator

    class Gen:  # the reference text generator's signature: one prompt string, n continuations
        def sample(self, n, seed=None, prompt=""):
            from genguard.generators.base import Samples

            return Samples(data=[f"{prompt} fine {k}." for k in range(n)], modality="text")

    generate = as_text_generator(Gen())
    assert generate(["a", "b", "a"]) == ["a fine 0.", "b fine 0.", "a fine 1."]
    res = TextBiasAudit(domains=["profession"]).run(generate, progress=False)
    assert res["n_texts"] == len(TextBiasAudit(domains=["profession"]).prompts())

    class NoPrompt:
        def sample(self, n, seed=None):
            return None

    with pytest.raises(AuditError, match="prompt"):
        as_text_generator(NoPrompt())
    with pytest.raises(AuditError, match="returned"):
        TextBiasAudit(domains=["gender"]).run(lambda p: ["x"], progress=False)
    with pytest.raises(AuditError, match="unknown"):
        TextBiasAudit(domains=["nope"]).prompts()


def test_self_bleu_equals_pairwise_bleu_and_perplexity_orders():
    from genguard.audits.text_fidelity import bleu, perplexity_local, self_bleu, tokenize

    rng = np.random.default_rng(1)
    words = "the cat sat on a mat while dogs ran far away from home".split()
    texts = [" ".join(rng.choice(words, rng.integers(5, 15))) for _ in range(30)]
    fast = self_bleu(texts, seed=0)["value"]
    toks = [tokenize(texts[i]) for i in np.random.default_rng(0).permutation(30)]
    slow = np.mean([bleu(toks[i], toks[:i] + toks[i + 1:]) for i in range(30)])
    assert fast == pytest.approx(slow)
    assert self_bleu(["same words here"] * 5)["value"] == pytest.approx(1.0)
    ref = ["the cat sat on the mat", "the dog sat on the rug", "a cat and a dog sat together"] * 5
    good = perplexity_local(["the cat sat on the rug"], ref)["value"]
    bad = perplexity_local(["zebra quantum purple ledger"], ref)["value"]
    assert good < bad


def test_tabular_fairness_matches_fairlearn_and_detects_biased_synthesis():
    from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

    from genguard.audits.tabular import _group_rates, tabular_fairness
    from genguard.generators.data import load_diabetes, train_holdout

    tr, ho = train_holdout(load_diabetes())
    rng = np.random.default_rng(0)
    y, pred, sens = rng.integers(0, 2, 80), rng.integers(0, 2, 80), rng.integers(0, 2, 80)
    dp, eo = _group_rates(np.ones((1, 80)), y, pred.astype(float), sens)
    assert dp[0] == pytest.approx(demographic_parity_difference(y, pred, sensitive_features=sens))
    assert eo[0] == pytest.approx(equalized_odds_difference(y, pred, sensitive_features=sens))

    fair_syn = tr.x.sample(len(tr.x), replace=True, random_state=0).reset_index(drop=True)
    biased = fair_syn.copy()
    biased.loc[biased["sex"] == biased["sex"].max(), "target"] = biased["target"].max()
    ok = tabular_fairness(fair_syn, tr.x, ho.x)
    bad = tabular_fairness(biased, tr.x, ho.x)
    assert bad["change_vs_real"]["demographic_parity_difference"]["ci"][0] > 0
    assert ok["change_vs_real"]["demographic_parity_difference"]["ci"][0] < 0 < ok["change_vs_real"]["demographic_parity_difference"]["ci"][1] + 0.2
    assert set(ok["subgroup_marginals"]) == {"sex=1", "sex=2"}
    assert bad["subgroup_marginals"]["sex=2"]["columns"]["target"]["ks"] > 0.5


def _cli(argv):
    from genguard.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_cli_tabular_and_text(tmp_path, capsys):
    from genguard.generators.data import load_diabetes, load_pydoc_text, train_holdout

    tr, _ = train_holdout(load_diabetes())
    csv = tmp_path / "synthetic.csv"
    tr.x.sample(200, replace=True, random_state=1).to_csv(csv, index=False)
    pol = tmp_path / "p.yaml"
    pol.write_text("gates:\n  bias.fairness.change_vs_real.demographic_parity_difference: {max: 0.3}\n"
                   "  memorization.exact_duplicate_count: {max: 0}\n")
    code = _cli(["audit", "--samples", str(csv), "--reference", "diabetes", "--policy", str(pol),
                 "--out", str(tmp_path / "tab")])
    rep = json.loads((tmp_path / "tab" / "report.json").read_text())
    assert {"generator", "privacy", "fidelity", "bias", "memorization", "provenance", "detection", "gates"} <= set(rep)
    assert rep["gates"][0]["value"] is not None
    assert rep["memorization"]["exact_duplicate_count"] > 0 and code == 1  # resampled real rows are copies
    texts = tmp_path / "texts"
    texts.mkdir()
    ref = load_pydoc_text().x
    for i in range(12):
        (texts / f"t{i}.txt").write_text(ref[i][:300] if i < 3 else f"generated sentence number {i} about lists.")
    # nine texts from one template: the default text gates (diversity against real text) say no
    assert _cli(["audit", "--samples", str(texts), "--reference", "pydoc", "--out", str(tmp_path / "txt")]) == 1
    rep = json.loads((tmp_path / "txt" / "report.json").read_text())
    failed = {g["name"]: g for g in rep["gates"] if g["passed"] is False}
    evaluated = {n for n, g in failed.items() if g["value"] is not None}
    assert evaluated and all(f.startswith("fidelity.diversity.") for f in evaluated), rep["gates"]
    # no generator to prompt and no ledger: those gates are not evaluated, and fail saying so
    assert set(failed) - evaluated == {"bias.flagged_count", "privacy.epsilon"}
    assert all("cannot be evaluated fails" in failed[n]["reason"] for n in set(failed) - evaluated)
    assert rep["fidelity"]["perplexity_local"]["value"] > 0
    assert rep["bias"]["value"] is None and rep["bias"]["reason"]
    assert rep["memorization"]["verbatim_copy_rate"] >= 3 / 12 - 1e-9  # the 3 pasted passages are in the fixed train split
    (tmp_path / "bad.csv").write_text("")
    capsys.readouterr()
    assert _cli(["audit", "--samples", str(tmp_path / "bad.csv"), "--out", str(tmp_path / "o")]) == 2
    assert "bad.csv" in capsys.readouterr().err
