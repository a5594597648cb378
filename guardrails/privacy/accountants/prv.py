"""Privacy-loss random variables (opacus ``PRVAccountant``, Gopi et al. 2021): tight, FFT over a bounded grid."""
from __future__ import annotations

import math
import warnings

from genguard.guardrails.privacy.accountants import Accountant, register_accountant
from genguard.guardrails.privacy.accountants.rdp import rdp_integer_epsilon

#: Largest PRV grid (float64 points) computed; its FFTs hold a few copies, so ~8e6 points stay under ~1 GB.
PRV_MAX_GRID = 8_000_000
#: The PRV density is evaluated as exp(t) over the domain [-L, L]: beyond ~709 it overflows to inf,
#: and opacus then returns epsilon = inf without an error (q = 1, sigma = 1, 1000 steps: L = 699 still works).
PRV_MAX_DOMAIN = 700.0


def _eps_error(q: float, sigma: float, steps: int, delta: float) -> float:
    # opacus returns the *upper* end of its error bracket (a guarantee). Its grid grows with
    # sqrt(steps) / eps_error, so a fixed eps_error=0.01 takes ~6 s at 100,000 steps; an error of
    # 0.5% of the (cheap, larger) RDP epsilon keeps the bound within 0.5% and under 0.5 s.
    return max(0.01, 0.005 * rdp_integer_epsilon(q, sigma, steps, delta))


def prv_grid(q: float, sigma: float, steps: int, delta: float) -> tuple[float, int]:
    """(domain half-width L, number of grid points) that opacus' PRV accountant would allocate."""
    from opacus.accountants.analysis.prv import PoissonSubsampledGaussianPRV, compute_safe_domain_size

    eps_error = _eps_error(q, sigma, steps, delta)
    delta_error = delta / 1000  # opacus' default
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        L = float(compute_safe_domain_size([PoissonSubsampledGaussianPRV(q, sigma)], [steps],
                                           eps_error=eps_error, delta_error=delta_error))
    # The mesh opacus' PRVAccountant._get_domain uses.
    mesh = eps_error / math.sqrt(steps * math.log(12 / delta_error) / 2)
    points = 2 * L / mesh if math.isfinite(L) else math.inf
    return L, int(min(points, 1e300))


@register_accountant
class PRVAccountant(Accountant):
    name = "prv"
    description = "privacy-loss random variables (opacus PRVAccountant; Gopi et al. 2021): tight"

    def limit(self, q: float, sigma: float, steps: int, delta: float) -> str | None:
        L, points = prv_grid(q, sigma, steps, delta)
        if not L <= PRV_MAX_DOMAIN:
            return f"its privacy-loss domain would reach {L:.3g} (> {PRV_MAX_DOMAIN:g}, where its densities overflow)"
        if points > PRV_MAX_GRID:
            return f"its grid would hold {points:.3g} points (> {PRV_MAX_GRID:.0e})"
        return None

    def _epsilon(self, q: float, sigma: float, steps: int, delta: float) -> float:
        from opacus.accountants import PRVAccountant as OpacusPRV

        acc = OpacusPRV()
        acc.history = [(sigma, q, steps)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(acc.get_epsilon(delta, eps_error=_eps_error(q, sigma, steps, delta)))
