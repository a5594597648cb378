"""Accountants pinned to reference values; the inverse; GDP only as a labelled approximation."""
import time

import pytest

from genguard.guardrails.privacy import PrivacyError
from genguard.guardrails.privacy.accounting import (
    compute_epsilon, epsilon_report, gdp_epsilon_approximation, noise_multiplier_for_epsilon,
)


@pytest.mark.parametrize("accountant,steps,expected", [
    ("rdp", 1_000, 2.10), ("pld", 1_000, 1.83), ("rdp", 10_000, 6.71), ("pld", 10_000, 6.19),
])
def test_reference_values(accountant, steps, expected):
    assert round(compute_epsilon(0.01, 1.0, steps, 1e-5, accountant), 2) == expected


def test_prv_is_a_tight_upper_bound_between_pld_and_rdp():
    rdp = compute_epsilon(0.01, 1.0, 1_000, 1e-5, "rdp")
    prv = compute_epsilon(0.01, 1.0, 1_000, 1e-5, "prv")
    pld = compute_epsilon(0.01, 1.0, 1_000, 1e-5, "pld")
    assert pld * 0.99 < prv < rdp
    assert prv == pytest.approx(pld, rel=0.02)


@pytest.mark.parametrize("accountant", ["rdp", "prv", "pld"])
def test_100k_steps_under_a_second(accountant):
    compute_epsilon(0.01, 1.0, 10, 1e-5, accountant)  # imports out of the timing
    t = time.process_time()  # CPU time: the test machine is shared, wall time is not ours alone
    eps = compute_epsilon(0.01, 1.0, 100_000, 1e-5, accountant)
    assert time.process_time() - t < 1.0
    assert 25 < eps < 28


def test_monotone_and_zero_steps():
    assert compute_epsilon(0.01, 1.0, 0, 1e-5) == 0.0
    a, b = compute_epsilon(0.01, 1.0, 500, 1e-5, "pld"), compute_epsilon(0.01, 2.0, 500, 1e-5, "pld")
    assert b < a


@pytest.mark.parametrize("accountant", ["rdp", "pld"])
def test_inverse_meets_the_target_tightly(accountant):
    sigma = noise_multiplier_for_epsilon(2.0, 0.01, 1_000, 1e-5, accountant)
    eps = compute_epsilon(0.01, sigma, 1_000, 1e-5, accountant)
    assert eps <= 2.0 and eps > 2.0 - 0.02
    assert compute_epsilon(0.01, sigma * 0.97, 1_000, 1e-5, accountant) > 2.0


def test_gdp_is_never_the_guarantee():
    with pytest.raises(PrivacyError, match="not a guarantee"):
        compute_epsilon(0.01, 1.0, 1_000, 1e-5, "gdp")
    approx = gdp_epsilon_approximation(0.01, 1.0, 1_000, 1e-5)
    assert approx["approximation"] is True and "not a guarantee" in approx["note"]
    rep = epsilon_report(0.01, 1.0, 1_000, 1e-5, "pld")
    assert rep["epsilon"] == pytest.approx(1.83, abs=0.005) and rep["accountant"] == "pld" and rep["guarantee"]
    assert rep["gdp_approximation"]["epsilon"] != rep["epsilon"]


@pytest.mark.parametrize("kwargs,match", [
    (dict(sample_rate=0.0), "sample rate"), (dict(sample_rate=1.5), "sample rate"),
    (dict(noise_multiplier=0.0), "noise multiplier"), (dict(delta=1.0), "delta"),
    (dict(steps=-1), "steps"), (dict(steps=1.5), "steps"), (dict(accountant="foo"), "unknown accountant"),
    (dict(noise_multiplier=float("nan")), "finite"),
])
def test_bad_input_is_one_clear_error(kwargs, match):
    args = dict(sample_rate=0.01, noise_multiplier=1.0, steps=10, delta=1e-5, accountant="rdp")
    args.update(kwargs)
    with pytest.raises(PrivacyError, match=match):
        compute_epsilon(**args)


def test_unreachable_target_is_refused():
    with pytest.raises(PrivacyError, match="epsilon"):
        noise_multiplier_for_epsilon(-1.0, 0.01, 100, 1e-5)
