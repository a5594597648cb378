"""Statistical honesty of the audit, by simulation: false-flag rate, power, near-duplicate precision/recall; metric checks."""
from __future__ import annotations

import io

import numpy as np
import pytest

from genguard.audits.bias import flag_counts, intersections, representation
from genguard.audits.stats import (
    goodman_intervals,
    goodness_of_fit,
    holm_adjust,
    js_divergence,
    kl_divergence,
    mc_null_statistics,
    mc_p_value,
    pearson_statistic,
    total_variation,
    wilson_interval,
)

ALPHA = 0.05


def _ref_shares(train):
    return np.bincount(train.groups["label"], minlength=10) / len(train)


# ----------------------------------------------------------------------------------------
# bias: false flags and power
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [30, 200, 1000])
def test_false_flag_rate_at_most_nominal(digits, n):
    """Counts drawn from the expected shares: some group flagged in <= 5% of 1,000 simulated audits."""
    train, _ = digits
    p = _ref_shares(train)
    rng = np.random.default_rng(100 + n)
    counts = rng.multinomial(n, p, size=1000)
    null = mc_null_statistics(n, p, draws=4000, seed=1)
    flags, pv = flag_counts(counts, p, null, ALPHA, min_effect=0.0)  # min_effect 0: the tests alone decide
    rate = flags.any(axis=1).mean()
    assert rate <= ALPHA, f"false-flag rate {rate:.3f} at n={n}"
    # the Monte-Carlo GOF test itself is close to nominal, even at n=30 (expected counts ~3)
    assert (pv < ALPHA).mean() <= ALPHA + 0.02


def test_false_flag_rate_through_the_attribute_classifier(digits):
    """End to end: real holdout digits drawn with the reference shares, labelled by the audit's classifier."""
    from genguard.audits.features import fit_extractor

    train, holdout = digits
    p = _ref_shares(train)
    ext = fit_extractor(train.x, train.groups["label"], holdout_x=holdout.x, holdout_y=holdout.groups["label"])
    pred = ext.predict(holdout.x)
    y = holdout.groups["label"]
    by_label = [np.flatnonzero(y == k) for k in range(10)]
    rng = np.random.default_rng(7)
    n, trials = 1000, 300
    per_label = rng.multinomial(n, p, size=trials)
    counts = np.zeros((trials, 10), dtype=np.int64)
    for t in range(trials):
        idx = np.concatenate([rng.choice(by_label[k], per_label[t, k]) for k in range(10)])
        counts[t] = np.bincount(pred[idx], minlength=10)
    null = mc_null_statistics(n, p, draws=4000, seed=0)
    flags, _ = flag_counts(counts, p, null, ALPHA, min_effect=0.02)
    assert flags.any(axis=1).mean() <= ALPHA


def test_power_for_five_point_under_representation():
    """n = 1,000, one group at 5% instead of 10%: flagged in >= 90% of 1,000 simulated audits."""
    expected = np.full(10, 0.1)
    truth = np.full(10, 0.95 / 9)
    truth[3] = 0.05
    rng = np.random.default_rng(3)
    counts = rng.multinomial(1000, truth, size=1000)
    null = mc_null_statistics(1000, expected, draws=4000, seed=2)
    flags, _ = flag_counts(counts, expected, null, ALPHA, min_effect=0.02)
    assert flags[:, 3].mean() >= 0.9


def test_min_effect_suppresses_negligible_but_significant_differences():
    expected = np.full(10, 0.1)
    truth = np.full(10, 0.099 / 0.9 * 0.9)
    truth[0] = 0.085
    truth[1:] = (1 - 0.085) / 9
    rng = np.random.default_rng(4)
    counts = rng.multinomial(200_000, truth, size=50)  # huge n: 1.5 points is highly significant
    null = mc_null_statistics(200_000, expected, draws=2000, seed=2)
    loose, _ = flag_counts(counts, expected, null, ALPHA, min_effect=0.0)
    strict, _ = flag_counts(counts, expected, null, ALPHA, min_effect=0.02)
    assert loose[:, 0].all() and not strict.any()


def test_representation_report_matches_rule(digits):
    train, _ = digits
    p = _ref_shares(train)
    rng = np.random.default_rng(5)
    codes = rng.choice(10, 1000, p=p)
    codes[codes == 4] = 0  # group 4 vanishes
    out = representation(codes, [str(i) for i in range(10)], p, seed=0)
    assert "4" in out["flagged"] and out["groups"]["4"]["flagged"] and out["groups"]["4"]["observed"] == 0
    assert out["p_value"] < 0.01
    assert out["kl_divergence"] is not None and out["max_min_ratio"]["value"] is None


# ----------------------------------------------------------------------------------------
# intersections (Holm)
# ----------------------------------------------------------------------------------------
def test_intersections_holm_false_flag_rate_and_power():
    rng = np.random.default_rng(9)
    pa, pb = np.array([0.5, 0.3, 0.2]), np.array([0.6, 0.4])
    joint = np.outer(pa, pb)
    trials, n = 1000, 600
    any_flag = 0
    for _ in range(trials):
        cell = rng.choice(6, n, p=joint.ravel())
        res = intersections(cell // 2, cell % 2, ["a0", "a1", "a2"], ["b0", "b1"], joint, min_effect=0.0)
        any_flag += bool(res["flagged"])
    assert any_flag / trials <= ALPHA
    # a missing cell is found
    shifted = joint.ravel().copy()
    shifted[5] = 0.0
    shifted /= shifted.sum()
    cell = rng.choice(6, n, p=shifted)
    res = intersections(cell // 2, cell % 2, ["a0", "a1", "a2"], ["b0", "b1"], joint)
    assert "a2&b1" in res["flagged"]


# ----------------------------------------------------------------------------------------
# near-duplicates
# ----------------------------------------------------------------------------------------
def _jpeg(img, quality=75, scale=4):
    from PIL import Image

    a = (np.clip(img, 0, 1) * 255).round().astype(np.uint8).repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO()
    Image.fromarray(a, "L").save(buf, format="JPEG", quality=quality)
    im = Image.open(io.BytesIO(buf.getvalue())).convert("L").resize((8, 8), Image.Resampling.BOX)
    return np.asarray(im, np.float32) / 255.0


def test_planted_near_duplicates_precision_recall(digits):
    """Noisy, shifted and JPEG re-encoded training copies among novel items: precision and recall >= 0.95."""
    from genguard.audits.memorization import memorization_section, shift_images

    train, holdout = digits
    rng = np.random.default_rng(11)
    idx = rng.choice(len(train), 150, replace=False)
    noisy = np.clip(train.x[idx[:50]] + rng.normal(0, 0.03, (50, 8, 8)), 0, 1)
    moves = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    shifted = np.stack([shift_images(train.x[i:i + 1], *moves[j % 4])[0] for j, i in enumerate(idx[50:100])])
    jpeg = np.stack([_jpeg(train.x[i]) for i in idx[100:]])
    novel = holdout.x  # real digits never trained on
    samples = np.concatenate([noisy, shifted, jpeg, novel]).astype(np.float32)
    planted = np.zeros(len(samples), dtype=bool)
    planted[:150] = True
    sec = memorization_section(samples, train.x, None, max_listed=10_000)
    reported = {e["sample"]: e["train_item"] for e in sec["near_duplicates"]}
    hits = np.array([i in reported for i in range(len(samples))])
    tp = (hits & planted).sum()
    precision = tp / max(hits.sum(), 1)
    recall = tp / planted.sum()
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    # a found copy points at the item it was made from
    right = np.mean([reported[i] == idx[i] for i in range(150) if i in reported])
    assert right >= 0.95
    # holdout items are not reported as memorized training items
    assert hits[150:].mean() <= 0.01


def test_holdout_not_reported_and_dcr_near_half(digits):
    """A 'generator' that returns real unseen digits: no copies, share closer to train ~ 0.5."""
    from genguard.audits.memorization import memorization_section

    train, holdout = digits
    # a random split: neighbouring indices of the digits come from the same writers
    perm = np.random.default_rng(0).permutation(len(holdout))
    half = len(holdout) // 2
    sec = memorization_section(holdout.x[perm[:half]], train.x, holdout.x[perm[half:]], seed=0)
    assert sec["near_duplicate_rate"] <= 0.01
    assert sec["dcr"]["p_value"] > 0.05
    assert abs(sec["dcr"]["share_nearest_in_train"] - sec["dcr"]["expected_share_if_no_copying"]) < 0.1


def test_dcr_detects_copying(digits):
    from genguard.audits.memorization import dcr_train_vs_holdout

    train, holdout = digits
    rng = np.random.default_rng(2)
    copies = np.clip(train.x[rng.choice(len(train), 300)] + rng.normal(0, 0.05, (300, 8, 8)), 0, 1)
    res = dcr_train_vs_holdout(copies.astype(np.float32), train.x, holdout.x, seed=0)
    assert res["share_nearest_in_train"] > 0.95 and res["p_value"] < 1e-3


# ----------------------------------------------------------------------------------------
# statistics against references
# ----------------------------------------------------------------------------------------
def test_goodman_simultaneous_coverage():
    p = np.array([0.4, 0.3, 0.15, 0.1, 0.05])
    rng = np.random.default_rng(0)
    counts = rng.multinomial(300, p, size=2000)
    lo, hi = goodman_intervals(counts, 0.05)
    covered = ((lo <= p) & (p <= hi)).all(axis=1).mean()
    assert covered >= 0.94  # asymptotic intervals: measured 0.947 here (documented in goodman_intervals)


def test_wilson_matches_known_value():
    lo, hi = wilson_interval(8, 20)
    assert abs(lo - 0.2188) < 1e-3 and abs(hi - 0.6134) < 1e-3  # Wilson (1927) / statsmodels proportion_confint


def test_mc_gof_agrees_with_chi2_for_large_counts():
    from scipy import stats

    p = np.array([0.2, 0.3, 0.5])
    counts = np.array([230, 290, 480])
    res = goodness_of_fit(counts, p, draws=20000, seed=0)
    ref = stats.chisquare(counts, 1000 * p).pvalue
    assert abs(res["p_value"] - ref) < 0.02
    assert res["statistic"] == pytest.approx(stats.chisquare(counts, 1000 * p).statistic)


def test_mc_p_value_never_zero_and_impossible_counts():
    null = mc_null_statistics(50, [0.5, 0.5, 0.0], draws=99, seed=0)
    assert mc_p_value(1e9, null) == pytest.approx(1 / 100)
    assert np.isinf(pearson_statistic([10, 10, 1], [0.5, 0.5, 0.0]))


def test_holm_reference_example():
    p = [0.01, 0.04, 0.03, 0.005]
    # statsmodels multipletests(p, method='holm')[1]
    assert np.allclose(holm_adjust(p), [0.03, 0.06, 0.06, 0.02])


def test_divergences():
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    assert total_variation(p, q) == pytest.approx(0.4)
    assert kl_divergence(p, q) == pytest.approx(0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1))
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence(p, p) == 0.0
    assert np.isinf(kl_divergence([0.5, 0.5], [1.0, 0.0]))


# ----------------------------------------------------------------------------------------
# fidelity metrics against references
# ----------------------------------------------------------------------------------------
def test_frechet_distance_matches_scipy_sqrtm():
    from scipy import linalg

    from genguard.audits.fidelity import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 6))
    b = rng.normal(0.3, 1.4, size=(300, 6))
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * np.real(linalg.sqrtm(s1 @ s2)))
    assert frechet_distance(a, b)["value"] == pytest.approx(ref, rel=1e-8)
    w = frechet_distance(a[:5], b[:5])["warnings"]
    assert w and "singular" in w[0]


def test_kid_unbiased_near_zero_for_same_distribution():
    from genguard.audits.fidelity import kernel_distance

    rng = np.random.default_rng(1)
    same = kernel_distance(rng.normal(size=(600, 8)), rng.normal(size=(600, 8)), subset_size=300)
    diff = kernel_distance(rng.normal(size=(600, 8)), rng.normal(0.5, 1, size=(600, 8)), subset_size=300)
    assert same["ci"][0] <= 0 <= same["ci"][1]
    assert diff["ci"][0] > same["ci"][1]


def test_prdc_identical_and_disjoint():
    from genguard.audits.fidelity import prdc

    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5))
    same = prdc(x, x.copy(), k=5)
    assert same["precision"]["value"] == 1.0 and same["recall"]["value"] == 1.0 and same["coverage"]["value"] == 1.0
    far = prdc(x, x + 100.0, k=5)
    assert far["precision"]["value"] == 0.0 and far["coverage"]["value"] == 0.0


def test_alpha_beta_authenticity():
    from genguard.audits.fidelity import alpha_beta_authenticity

    rng = np.random.default_rng(3)
    real = rng.normal(size=(500, 4))
    good = alpha_beta_authenticity(real, rng.normal(size=(500, 4)))
    copies = alpha_beta_authenticity(real, real[:500] + 1e-4)
    shifted = alpha_beta_authenticity(real, rng.normal(3, 1, size=(500, 4)))
    assert good["alpha_precision"]["value"] > 0.8 and good["authenticity"]["value"] > 0.3
    assert copies["authenticity"]["value"] < 0.05
    assert shifted["alpha_precision"]["value"] < good["alpha_precision"]["value"] - 0.3


def test_reconstruction_psnr_ssim():
    from genguard.audits.fidelity import reconstruction_quality

    rng = np.random.default_rng(4)
    x = rng.uniform(size=(20, 8, 8))
    mild = reconstruction_quality(x, np.clip(x + rng.normal(0, 0.01, x.shape), 0, 1))
    strong = reconstruction_quality(x, np.clip(x + rng.normal(0, 0.2, x.shape), 0, 1))
    assert mild["psnr_db"]["value"] > 35 > strong["psnr_db"]["value"]
    assert mild["ssim"]["value"] > strong["ssim"]["value"]


def test_knn_exact_against_brute_force():
    from genguard.audits.nn import knn

    rng = np.random.default_rng(5)
    q, b = rng.normal(size=(700, 64)), rng.normal(size=(5000, 64))
    d, i = knn(q, b, k=4, query_block=128, base_block=1000, n_jobs=2)
    full = np.sqrt(((q[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    assert (np.argsort(full, axis=1)[:, :4] == i).all()
    assert np.allclose(np.sort(full, axis=1)[:, :4], d, atol=1e-5)
    ds, is_ = knn(b[:800], b[:800], k=2, exclude_self=True, base_block=300)
    assert not (is_ == np.arange(800)[:, None]).any()
