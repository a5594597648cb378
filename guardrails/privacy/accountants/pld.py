"""Privacy-loss distributions (Google ``dp_accounting.pld``, pessimistic estimate): tight, grid bounded here."""
from __future__ import annotations

from genguard.guardrails.privacy.accountants import Accountant, register_accountant
from genguard.guardrails.privacy.accountants.rdp import rdp_integer_epsilon

#: PLD discretisation of the privacy loss. The pessimistic PLD stays an upper bound at any
#: interval; 1e-3 moves epsilon by < 0.1% against 1e-4 at the pinned reference points and is
#: ~10x faster (100,000 steps in ~0.1 s).
PLD_VALUE_DISCRETIZATION = 1e-3
#: Largest composed PLD grid computed (points). Measured: ~110 bytes of peak memory per point
#: (FFT buffers), so 8e6 points stay under ~1 GB; 1e12 steps at q = 0.01, sigma = 1 would need 3e10.
PLD_MAX_GRID = 8_000_000
#: The composed PLD spans privacy losses up to a fraction of the (looser) RDP epsilon: 0.33 measured
#: at q = 0.01, sigma = 1 from 1e8 to 1e12 steps; 0.5 leaves a margin.
PLD_SUPPORT_PER_RDP_EPSILON = 0.5


def pld_grid(q: float, sigma: float, steps: int, delta: float) -> int:
    """Estimated number of points of the composed PLD (from the cheap integer-order RDP epsilon)."""
    eps = rdp_integer_epsilon(q, sigma, steps, delta)
    return int(min(PLD_SUPPORT_PER_RDP_EPSILON * eps / PLD_VALUE_DISCRETIZATION, 1e300))


@register_accountant
class PLDAccountant(Accountant):
    name = "pld"
    description = "privacy-loss distributions (Google dp-accounting, pessimistic): tight"

    def limit(self, q: float, sigma: float, steps: int, delta: float) -> str | None:
        points = pld_grid(q, sigma, steps, delta)
        if points > PLD_MAX_GRID:
            return f"its grid would hold about {points:.3g} points (> {PLD_MAX_GRID:.0e})"
        return None

    def _epsilon(self, q: float, sigma: float, steps: int, delta: float) -> float:
        import dp_accounting
        from dp_accounting.pld import pld_privacy_accountant

        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)
        acc = pld_privacy_accountant.PLDAccountant(value_discretization_interval=PLD_VALUE_DISCRETIZATION)
        acc.compose(event)
        return float(acc.get_epsilon(delta))
