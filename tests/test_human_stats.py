"""Human-study statistics against published worked examples and reference implementations."""
import math

import numpy as np
import pytest

from genguard.audits.human import excluded_raters, human_gates, krippendorff_alpha, mos, two_afc, wilson_interval

N = None
# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section E: 4 observers x 12 units, missing values
KRIPPENDORFF_2011 = [[1, 2, 3, 3, 2, 1, 4, 1, 2, N, N, N],
                     [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, N, 3],
                     [N, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, N],
                     [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, N]]


@pytest.mark.parametrize("level, published", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849),
                                              ("ratio", 0.797)])
def test_alpha_matches_the_published_worked_example(level, published):
    assert krippendorff_alpha(KRIPPENDORFF_2011, level) == pytest.approx(published, abs=5e-4)


def test_alpha_matches_the_krippendorff_package_on_random_tables():
    kp = pytest.importorskip("krippendorff")
    rng = np.random.default_rng(0)
    for trial in range(20):
        data = rng.integers(1, 6, size=(rng.integers(2, 6), rng.integers(5, 30))).astype(float)
        data[rng.random(data.shape) < 0.2] = np.nan
        for level in ("nominal", "ordinal", "interval", "ratio"):
            ref = kp.alpha(reliability_data=data, level_of_measurement=level)
            got = krippendorff_alpha(data.tolist(), level)
            assert got == pytest.approx(ref, abs=1e-9), (trial, level)


def test_alpha_edge_cases():
    assert krippendorff_alpha([[1, 2, 3], [1, 2, 3]], "nominal") == 1.0
    assert math.isnan(krippendorff_alpha([[3, 3], [3, 3]]))  # no variation: undefined, never "perfect"
    assert math.isnan(krippendorff_alpha([[1, N], [N, 2]]))  # no unit rated twice
    with pytest.raises(ValueError):
        krippendorff_alpha([[1, 2]], "cardinal")


def test_wilson_interval_against_a_reference_value_and_coverage():
    # Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662 (95%)
    lo, hi = wilson_interval(81, 263)
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    from scipy.stats import binom

    p, n = 0.3, 40  # exact coverage near the nominal 95% (the Wald interval gives about 0.93 here)
    cover = sum(binom.pmf(k, n, p) for k in range(n + 1) if wilson_interval(k, n)[0] <= p <= wilson_interval(k, n)[1])
    assert 0.935 < cover < 0.965


def test_two_afc_and_mos_summaries():
    r = two_afc([("a", True)] * 30 + [("a", False)] * 10 + [("b", False)] * 20)
    assert r["trials"] == 60 and r["share_generated_judged_real"] == pytest.approx(0.5)
    assert r["per_rater"]["a"]["share"] == 0.75 and r["ci"][0] < 0.5 < r["ci"][1]
    assert excluded_raters([("a", True), ("b", False), ("b", True)]) == {"b"}
    m = mos([(r, s, "real" if s < 5 else "generated", 5 - (s >= 5) * 2 + (r == "y") * 0) for r in "xy"
             for s in range(10)])
    assert m["by_source"]["real"]["mos"] == 5 and m["by_source"]["generated"]["mos"] == 3
    assert m["generated_minus_real"]["difference"] == -2
    assert m["krippendorff_alpha_interval"] == 1.0


def test_human_gates_use_the_release_gate_form_and_fail_on_missing():
    section = {"human": {"two_afc": two_afc([("a", True)] * 5 + [("a", False)] * 5)}}
    g = {x["name"]: x for x in human_gates(section, {"human.two_afc.ci_low": {"min": 0.1},
                                                     "human.mos.krippendorff_alpha_interval": {"min": 0.6}})}
    assert g["human.two_afc.ci_low"]["passed"] is True and g["human.two_afc.ci_low"]["op"] == ">="
    assert g["human.mos.krippendorff_alpha_interval"]["passed"] is False  # no MOS in this study: not a pass
    with pytest.raises(ValueError):
        human_gates(section, {"human.two_afc.ci_low": {"at_least": 0.1}})
