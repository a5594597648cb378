"""Privacy accounting for Poisson-subsampled Gaussian DP-SGD: epsilon for (q, sigma, T, delta) and its inverse.

The accountants are registered classes (:mod:`guardrails.privacy.accountants`), each over a
maintained library (nothing re-derived here):

* ``rdp`` — Rényi DP (opacus ``RDPAccountant``), the classic, loosest of the three;
* ``prv`` — privacy-loss random variables (opacus ``PRVAccountant``, Gopi et al. 2021);
* ``pld`` — privacy-loss distributions (Google ``dp_accounting.pld``), pessimistic estimate.

All three return upper bounds on epsilon, i.e. valid guarantees. Gaussian DP
(``gdp``, a central-limit approximation) is offered only through
:func:`gdp_epsilon_approximation`, which labels its result as an approximation
and is never accepted as an accountant for a guarantee.
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from genguard.guardrails.privacy.errors import PrivacyError
from genguard.guardrails.privacy.accountants import (
    MAX_STEPS, REGISTRY, AccountantLimitError, check_mechanism, get_accountant,
)
from genguard.guardrails.privacy.accountants.pld import PLD_VALUE_DISCRETIZATION  # noqa: F401  (re-exported)
from genguard.guardrails.privacy.accountants.rdp import rdp_integer_epsilon

#: The registered accountants by name (a live view of :data:`accountants.REGISTRY`: ``in``, iteration, ``join``).
ACCOUNTANTS = REGISTRY


def _check(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> None:
    check_mechanism(sample_rate, noise_multiplier, steps, delta)


def compute_epsilon(sample_rate: float, noise_multiplier: float, steps: int, delta: float,
                    accountant: str = "rdp") -> float:
    """Epsilon of ``steps`` Poisson-sampled Gaussian steps (rate ``sample_rate``, noise ``noise_multiplier``) at ``delta``.

    :class:`~genguard.guardrails.privacy.accountants.AccountantLimitError` (a :class:`PrivacyError`) when the
    accountant cannot compute it in bounded memory; its message names the largest step count it accepts.

    >>> round(compute_epsilon(0.01, 1.0, 1000, 1e-5, "rdp"), 2)
    2.1
    """
    acc = get_accountant(accountant)
    return acc.epsilon(sample_rate, noise_multiplier, steps, delta)


def gdp_epsilon_approximation(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> dict[str, Any]:
    """Gaussian-DP epsilon (opacus ``GaussianAccountant``, CLT of Bu et al. 2020): an approximation, labelled so."""
    from opacus.accountants import GaussianAccountant

    _check(sample_rate, noise_multiplier, steps, delta)
    note = "Gaussian-DP central-limit approximation: may understate epsilon; not a guarantee"
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # opacus warns that GDP can underestimate; we say so
            warnings.simplefilter("ignore")
            acc = GaussianAccountant()
            acc.history = [(float(noise_multiplier), float(sample_rate), int(steps))]
            eps = float(acc.get_epsilon(delta)) if steps else 0.0
    except (ArithmeticError, ValueError, RuntimeError) as exc:  # its root finder fails far outside the CLT regime
        return {"epsilon": None, "delta": float(delta), "approximation": True, "note": note,
                "reason": f"the GDP approximation could not be computed here ({str(exc).splitlines()[0][:80]})"}
    if not math.isfinite(eps):
        return {"epsilon": None, "delta": float(delta), "approximation": True, "note": note,
                "reason": f"the GDP approximation is not finite here ({eps!r})"}
    return {"epsilon": eps, "delta": float(delta), "approximation": True, "note": note}


#: The inverse searches noise multipliers in this range: below 0.01 no accountant here gives a
#: usable epsilon for any realistic run, above 1e4 the signal is gone.
SIGMA_SEARCH_RANGE = (0.01, 1e4)


def noise_multiplier_for_epsilon(target_epsilon: float, sample_rate: float, steps: int, delta: float,
                                 accountant: str = "rdp", tolerance: float = 0.01) -> float:
    """Smallest noise multiplier (to within ``tolerance`` in epsilon) whose epsilon is at most ``target_epsilon``.

    Epsilon falls monotonically in sigma. The search is bracketed with the
    integer-order RDP bound (fast, and an upper bound on every accountant
    here, so its sigma always meets the target) and then refined with Brent's
    method on the requested accountant (each RDP evaluation with fractional
    orders can take seconds at small sigma, so a plain bisection would be slow).
    The returned sigma always meets the target. Sigma is searched in
    :data:`SIGMA_SEARCH_RANGE`; a target outside what that range reaches is
    refused with the range of targets that can be met.
    """
    from scipy.optimize import brentq

    if (isinstance(target_epsilon, bool) or not isinstance(target_epsilon, (int, float))
            or not math.isfinite(target_epsilon) or target_epsilon <= 0):
        raise PrivacyError(f"epsilon must be a positive finite number, got {target_epsilon!r}")
    check_mechanism(sample_rate, 1.0, steps, delta)
    acc = get_accountant(accountant)
    if steps == 0:
        raise PrivacyError("steps must be positive to calibrate a noise multiplier")
    q, steps, delta = float(sample_rate), int(steps), float(delta)
    s_min, s_max = SIGMA_SEARCH_RANGE

    def f_int(sigma: float) -> float:
        return rdp_integer_epsilon(q, sigma, steps, delta)

    e_max = f_int(s_max)
    if e_max > target_epsilon:
        raise PrivacyError(f"epsilon {target_epsilon:g} cannot be reached with sample rate {q:g} over {steps} steps "
                           f"at delta {delta:g}: even noise multiplier {s_max:g} gives {e_max:.4g}")
    e_min = f_int(s_min)
    if not e_min > target_epsilon:
        raise PrivacyError(f"epsilon {target_epsilon:g} is met already by the smallest noise multiplier searched "
                           f"({s_min:g}, epsilon <= {e_min:.4g} by RDP); the inverse accepts targets up to {e_min:.4g} "
                           "at these settings")

    # 1. An integer-order RDP sigma: cheap, and valid for every accountant. Bisect in log(sigma).
    lo, hi = s_min, s_max
    while hi - lo > 1e-4 * hi:
        mid = math.sqrt(lo * hi) if hi / lo > 2 else (lo + hi) / 2
        if f_int(mid) > target_epsilon:
            lo = mid
        else:
            hi = mid
    sigma_int = hi

    # 2. Refine on the requested accountant: root of eps(sigma) = target - tolerance/2 in [lo, sigma_int].
    memo: dict[float, float] = {}

    def eps(sigma: float) -> float:
        if sigma not in memo:
            try:
                memo[sigma] = acc.epsilon(q, sigma, steps, delta)
            except AccountantLimitError:  # too little noise to compute: far above any target reached here
                memo[sigma] = math.inf
        return memo[sigma]

    e_hi = acc.epsilon(q, sigma_int, steps, delta)  # a refusal here is the answer: say it
    memo[sigma_int] = e_hi
    if target_epsilon - e_hi <= tolerance:
        return float(sigma_int)
    goal = target_epsilon - tolerance / 2
    # Tight accountants need ~5-15% less noise than integer-order RDP; a narrow bracket also keeps
    # fractional-order RDP away from small sigmas, where opacus' series converge slowly.
    lo = sigma_int * 0.85
    while eps(lo) <= goal:
        lo *= 0.85
        if lo < s_min:
            return float(sigma_int)
    sigma = float(brentq(lambda s: min(eps(s), 1e300) - goal, lo, sigma_int, xtol=1e-4, rtol=1e-5, maxiter=50))
    for _ in range(1000):  # guard the tolerance: never return a sigma that misses the target
        if eps(sigma) <= target_epsilon:
            return sigma
        sigma *= 1.001
    return float(sigma_int)


def epsilon_report(sample_rate: float, noise_multiplier: float, steps: int, delta: float,
                   accountant: str = "rdp", with_gdp: bool = True) -> dict[str, Any]:
    """What ``genguard privacy epsilon --json`` prints: the guarantee, its inputs, and GDP labelled as approximation."""
    eps = compute_epsilon(sample_rate, noise_multiplier, steps, delta, accountant)
    out: dict[str, Any] = {
        "epsilon": eps, "delta": float(delta), "accountant": accountant, "guarantee": True,
        "sample_rate": float(sample_rate), "noise_multiplier": float(noise_multiplier), "steps": int(steps),
        "mechanism": "Poisson-subsampled Gaussian (DP-SGD)",
    }
    if with_gdp:
        out["gdp_approximation"] = gdp_epsilon_approximation(sample_rate, noise_multiplier, steps, delta)
    return out
