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


# --- The registry and bounded resources --------------------------------------------------------------------
from genguard.guardrails.privacy.accountants import (  # noqa: E402
    MAX_STEPS, REGISTRY, Accountant, AccountantLimitError, get_accountant, register_accountant,
)


def test_builtin_accountants_are_registered_in_order():
    assert list(REGISTRY)[:3] == ["rdp", "prv", "pld"]
    assert all(REGISTRY[n].description for n in REGISTRY)


def test_a_new_accountant_is_one_class(monkeypatch):
    """Register, compute through compute_epsilon, and appear wherever the registry is read."""
    monkeypatch.setattr(REGISTRY, "_classes", dict(REGISTRY._classes))  # leave the real registry as it was

    @register_accountant
    class Doubled(Accountant):  # an RDP bound, doubled: still an upper bound
        name = "rdp2"
        description = "twice RDP (test only)"

        def _epsilon(self, q, sigma, steps, delta):
            return 2 * get_accountant("rdp").epsilon(q, sigma, steps, delta)

    assert "rdp2" in REGISTRY
    assert compute_epsilon(0.01, 1.0, 1000, 1e-5, "rdp2") == pytest.approx(2 * compute_epsilon(0.01, 1.0, 1000, 1e-5))
    with pytest.raises(PrivacyError, match="already registered"):
        register_accountant(type("Other", (Accountant,), {"name": "rdp2"}))
    with pytest.raises(PrivacyError, match="not a guarantee"):
        register_accountant(type("G", (Accountant,), {"name": "gdp"}))


@pytest.mark.parametrize("accountant,q,sigma,steps", [
    ("pld", 0.01, 1.0, 10**12), ("prv", 0.01, 1.0, 10**12), ("pld", 0.01, 0.01, 1000), ("prv", 0.01, 0.01, 1000),
])
def test_what_cannot_be_computed_in_bounded_memory_is_refused_before_allocating(accountant, q, sigma, steps):
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.process_time()
    with pytest.raises(AccountantLimitError, match="bounded memory") as exc:
        compute_epsilon(q, sigma, steps, 1e-5, accountant)
    assert time.process_time() - t < 5.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing big was allocated
    most = exc.value.max_steps
    assert most is not None and f"{most:.4g}" in str(exc.value)
    acc = get_accountant(accountant)
    if most > 0:  # the named limit is the boundary of what the accountant accepts
        assert acc.limit(q, sigma, most, 1e-5) is None
        assert acc.limit(q, sigma, int(most * 1.01) + 1, 1e-5) is not None


def test_steps_beyond_any_accountant_and_rdp_at_a_trillion():
    with pytest.raises(AccountantLimitError, match="largest step count"):
        compute_epsilon(0.01, 1.0, MAX_STEPS + 1, 1e-5, "rdp")
    with pytest.raises(PrivacyError, match="finite"):
        compute_epsilon(0.01, 10**400, 10, 1e-5)  # an int too large for a float
    eps = compute_epsilon(0.01, 1.0, 10**12, 1e-5, "rdp")
    assert 9e7 < eps < 1e8  # grows linearly in steps at this size; cheap to compute


def test_inverse_at_full_batch_and_out_of_range_targets():
    sigma = noise_multiplier_for_epsilon(2.0, 1.0, 1000, 1e-5, "rdp")
    assert compute_epsilon(1.0, sigma, 1000, 1e-5, "rdp") <= 2.0
    with pytest.raises(PrivacyError, match="accepts targets up to"):
        noise_multiplier_for_epsilon(1e9, 0.01, 1000, 1e-5, "pld")
    with pytest.raises(PrivacyError, match="cannot be reached"):
        noise_multiplier_for_epsilon(1e-9, 0.01, 1000, 1e-5, "rdp")


@pytest.mark.parametrize("kwargs,match", [
    (dict(noise_multiplier=1e300), "largest any accountant accepts"),
    (dict(delta=1e-300, accountant="prv"), "cannot compute"),
    (dict(delta=1e-300, accountant="pld"), "not a usable bound"),
])
def test_numerical_limits_of_the_libraries_are_one_line_refusals(kwargs, match):
    args = dict(sample_rate=0.01, noise_multiplier=1.0, steps=1000, delta=1e-5, accountant="rdp")
    args.update(kwargs)
    with pytest.raises(AccountantLimitError, match=match):
        compute_epsilon(**args)
