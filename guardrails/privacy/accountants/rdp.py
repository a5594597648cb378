"""Rényi DP accountant (opacus ``RDPAccountant``): the classic bound, loosest of the three, cheap at any step count."""
from __future__ import annotations

import math
import warnings

from genguard.guardrails.privacy.accountants import Accountant, register_accountant


def rdp_epsilon(q: float, sigma: float, steps: int, delta: float, alphas: list[float] | None = None) -> float:
    """opacus' RDP epsilon; ``alphas`` restricted to integers is fast and never below the full-order epsilon."""
    from opacus.accountants import RDPAccountant

    acc = RDPAccountant()
    acc.history = [(float(sigma), float(q), int(steps))]
    with warnings.catch_warnings():  # "optimal order is the largest/smallest alpha": the bound stays valid
        warnings.simplefilter("ignore")
        return float(acc.get_epsilon(delta, alphas=alphas) if alphas is not None else acc.get_epsilon(delta))


#: Integer orders: closed forms, no series, so fast at every sigma.
INTEGER_ORDERS = list(range(2, 64)) + [80, 96, 128, 192, 256]


def rdp_integer_epsilon(q: float, sigma: float, steps: int, delta: float) -> float:
    """RDP epsilon over integer orders: an upper bound on every accountant registered here, at a few ms a call."""
    return rdp_epsilon(q, sigma, steps, delta, INTEGER_ORDERS)


@register_accountant
class RDPAccountant(Accountant):
    """RDP composes by multiplying each order's divergence by the step count, so its cost does not grow with steps."""

    name = "rdp"
    description = "Rényi DP (opacus RDPAccountant; Mironov 2017): loosest, any step count"

    #: opacus' fractional-order series for the subsampled Gaussian converge slowly at tiny sigma;
    #: below this the integer orders alone are used (still an upper bound, at most a little looser).
    FRACTIONAL_SIGMA_FLOOR = 0.1

    def _epsilon(self, q: float, sigma: float, steps: int, delta: float) -> float:
        if sigma < self.FRACTIONAL_SIGMA_FLOOR:
            return rdp_integer_epsilon(q, sigma, steps, delta)
        eps = rdp_epsilon(q, sigma, steps, delta)
        return eps if math.isfinite(eps) else rdp_integer_epsilon(q, sigma, steps, delta)
