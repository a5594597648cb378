"""The analytic Gaussian accountant (exact for full-batch releases) and DP-MERF's release, checked from outside.

Reference points are computed here by code that shares nothing with the accountant: the privacy profile as
a numerical integral of the two output densities, and Google's dp-accounting PLD (an upper bound)."""
import math

import numpy as np
import pytest

from genguard.guardrails.privacy import PrivacyError, PrivateTrainer
from genguard.guardrails.privacy.accountants import AccountantLimitError, get_accountant
from genguard.guardrails.privacy.accountants.analytic import analytic_delta
from genguard.guardrails.privacy.accounting import compute_epsilon, noise_multiplier_for_epsilon


def _delta_by_integration(eps: float, sigma: float) -> float:
    """delta(eps) = integral of max(0, p(x) - e^eps q(x)), p = N(0, sigma^2), q = N(1, sigma^2) (hockey stick)."""
    from scipy import integrate
    from scipy.stats import norm

    # p > e^eps q exactly where x < 1/2 - eps sigma^2 (the privacy loss is linear in x)
    cut = 0.5 - eps * sigma * sigma
    f = lambda x: norm.pdf(x, 0, sigma) - math.exp(eps) * norm.pdf(x, 1, sigma)  # noqa: E731
    val, _ = integrate.quad(f, cut - 40 * sigma, cut, epsabs=1e-14, epsrel=1e-10, limit=200)
    return val


@pytest.mark.parametrize("eps,sigma", [(0.5, 3.0), (1.0, 3.748), (2.0, 1.5), (8.0, 0.6), (0.1, 20.0)])
def test_profile_matches_the_integral_of_the_densities(eps, sigma):
    assert analytic_delta(eps, 1.0 / sigma) == pytest.approx(_delta_by_integration(eps, sigma), rel=1e-6, abs=1e-15)


@pytest.mark.parametrize("sigma,steps", [(3.748, 1), (0.9, 1), (10.0, 50), (2.0, 4)])
def test_never_above_the_pld_upper_bound_and_close_to_it(sigma, steps):
    exact = compute_epsilon(1.0, sigma, steps, 1e-5, "analytic")
    pld = compute_epsilon(1.0, sigma, steps, 1e-5, "pld")
    rdp = compute_epsilon(1.0, sigma, steps, 1e-5, "rdp")
    assert exact <= pld * (1 + 1e-9) and exact == pytest.approx(pld, rel=5e-3)
    assert exact < rdp  # RDP's conversion to (eps, delta) is loose


def test_the_epsilon_returned_is_a_guarantee_and_tight():
    mu = 1 / 3.748
    eps = get_accountant("analytic").epsilon(1.0, 3.748, 1, 1e-5)
    assert analytic_delta(eps, mu) <= 1e-5 < analytic_delta(eps * (1 - 1e-6), mu)


def test_composition_of_full_batch_releases_is_one_release_with_less_noise():
    assert compute_epsilon(1.0, 6.0, 9, 1e-5, "analytic") == pytest.approx(
        compute_epsilon(1.0, 2.0, 1, 1e-5, "analytic"), rel=1e-9)


def test_calibration_at_epsilon_1_needs_less_noise_than_rdp():
    exact = noise_multiplier_for_epsilon(1.0, 1.0, 1, 1e-5, "analytic")
    rdp = noise_multiplier_for_epsilon(1.0, 1.0, 1, 1e-5, "rdp")
    assert compute_epsilon(1.0, exact, 1, 1e-5, "analytic") <= 1.0
    assert exact == pytest.approx(3.75, abs=0.01) and rdp / exact > 1.07


def test_subsampled_dp_sgd_is_refused():
    with pytest.raises(AccountantLimitError, match="full-batch"):
        compute_epsilon(0.01, 1.0, 1000, 1e-5, "analytic")
    with pytest.raises(PrivacyError, match="unknown accountant"):
        PrivateTrainer(target_epsilon=1.0, accountant="analytic")  # DP-SGD subsamples: the curve does not hold


class _Trainer(PrivateTrainer):
    """The pipeline's trainer with its secret noise replaced by a generator the test knows (white-box)."""

    def noise_generator(self, gen):
        import torch

        return torch.Generator().manual_seed(1234), "secret"


def test_dpmerf_release_noise_is_what_the_ledger_says():
    """Redraw the release's noise from a known generator: the counts carry sigma * sqrt(1 + a^2) / a, the
    embedding sigma * sqrt(1 + a^2), sigma is the analytic calibration, and the ledger's figures match."""
    import torch

    from genguard.generators import make_generator
    from genguard.generators.data import digits_split
    from genguard.guardrails.privacy import build_ledger

    train, _ = digits_split()
    a = 0.3
    gen = make_generator("dpmerf", n_features=50, steps=60, batch_size=100, count_weight=a)
    gen.fit(train, trainer=_Trainer(target_epsilon=1.0), progress=False)
    rep = gen.training_report_
    sigma = noise_multiplier_for_epsilon(1.0, 1.0, 1, 1e-5, "analytic")
    assert rep["accountant"] == "analytic" and rep["noise_multiplier"] == pytest.approx(sigma)
    assert rep["max_grad_norm"] == pytest.approx(math.sqrt(1 + a * a)) and rep["count_weight"] == a
    assert rep["epsilon"] == pytest.approx(compute_epsilon(1.0, sigma, 1, 1e-5, "analytic")) and rep["epsilon"] <= 1.0
    g = torch.Generator().manual_seed(1234)
    n_classes, width = 10, 2 * 50
    torch.randn((n_classes, width), generator=g)  # the embedding's noise is drawn first
    count_noise = torch.randn((n_classes,), generator=g).numpy() * sigma * math.sqrt(1 + a * a) / a
    counts = np.bincount(train.groups["label"], minlength=10) + count_noise
    counts = np.maximum(counts, 1.0)
    assert np.allclose(gen.class_prior_, counts / counts.sum(), rtol=1e-5)
    ledger = build_ledger(rep, generator="dpmerf", run_id="r", seed=0, weights_path=None)
    assert "by the ANALYTIC accountant" in ledger["guarantee"]


@pytest.mark.parametrize("bad", [0, -1, float("nan"), 11, "0.3"])
def test_count_weight_out_of_range_is_refused(bad):
    from genguard.generators import GeneratorError, make_generator
    from genguard.generators.data import digits_split

    train, _ = digits_split()
    with pytest.raises(GeneratorError, match="count_weight"):
        make_generator("dpmerf", n_features=10, steps=1, count_weight=bad).fit(train, progress=False)
