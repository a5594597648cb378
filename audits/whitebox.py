"""White-box one-run audit of DP-SGD with Dirac gradient canaries: an empirical lower bound on epsilon.

The auditor of Steinke, Nasr & Jagielski, "Privacy Auditing with One (1)
Training Run" (NeurIPS 2023, Algorithm 1 with gradient canaries), in the
white-box setting of Nasr et al., "Tight Auditing of Differentially Private
Machine Learning" (USENIX Security 2023): the auditor may insert gradients and
sees every noisy update. Here:

* ``m`` canaries are Dirac gradients ``C e_k`` at ``m`` distinct random
  coordinates ``k`` of the private parameters (``C`` the clipping norm, the
  largest contribution one record may make);
* each canary is included with probability 1/2 (the one-run audit's coin);
  an included canary then joins each step's Poisson batch with the records'
  sampling rate ``q``, and is added to the clipped sum *before* the noise;
* the auditor reads every step's released noisy sum at the canary's
  coordinate and scores the canary by a sum over steps (plain sum, and the
  log likelihood ratio of the subsampled Gaussian); it then guesses "in" for
  the highest and "out" for the lowest scores and turns the correct guesses
  into a lower bound with :func:`genguard.audits.privacy.one_run_epsilon_lower_bound`.

Why Dirac canaries: they are the worst case the clipping allows (norm exactly
``C``) and need no crafted records, so the audit runs for every
gradient-trained generator whatever its modality. The coins and the canaries'
Poisson masks come from the auditor's own ``secrets``-seeded generator, never
from the trainer's randomness.

``known_sampling=True`` models a trainer whose batch selection is public (it
can be rebuilt from the ledger): the auditor then also scores each canary only
on the steps it was sampled in. For a correct trainer that knowledge is not
available and the score must not use it.

The bound audits the *mechanism* as run (sampling, clipping bound, noise),
not the released weights; it can refute a claim, never confirm one. A single
run with ``m`` canaries cannot certify more than about ``log(r)`` for ``r``
guesses (the ``ceiling`` reported), however leaky the trainer.
"""
from __future__ import annotations

import dataclasses
import math
import secrets
from typing import Any, Sequence

import numpy as np

from genguard.guardrails.privacy.errors import PrivacyError

#: Guess counts tried, as fractions of m (Bonferroni-corrected in :func:`audit_from_scores`).
GUESS_FRACTIONS = (0.002, 0.01, 0.05, 0.2)

__all__ = ["DiracCanaries", "ScaledNoiseBug", "white_box_audit", "audit_delta", "GUESS_FRACTIONS"]


def audit_delta(num_canaries: int, training_delta: float) -> float:
    """The delta the bound is computed at: the training delta, unless ``m * delta`` would dominate the test.

    Steinke et al.'s test adds ``2 m delta`` (times a factor <= 1) to its p-value, so
    with many canaries the training delta makes every bound vacuous; the audit then
    tests at ``1e-3 / m`` and compares against the claim recomputed at that delta.
    """
    return float(min(training_delta, 1e-3 / max(int(num_canaries), 1)))


class DiracCanaries:
    """A :class:`~genguard.guardrails.privacy.PrivateTrainer` mechanism probe inserting ``m`` Dirac canaries.

    Pass it as ``PrivateTrainer(..., mechanism_probe=probe)``; after training,
    :attr:`scores` and :attr:`included` hold what :func:`white_box_audit`
    turns into a bound. ``seed`` (tests only) fixes the auditor's randomness;
    by default it is drawn with :mod:`secrets`.
    """

    def __init__(self, num_canaries: int, *, known_sampling: bool = False, seed: int | None = None) -> None:
        if isinstance(num_canaries, bool) or int(num_canaries) != num_canaries or num_canaries < 2:
            raise PrivacyError(f"the white-box audit needs at least 2 canaries, got {num_canaries!r}")
        self.num_canaries = int(num_canaries)
        self.known_sampling = bool(known_sampling)
        self._seed = secrets.randbits(63) if seed is None else int(seed)
        self.steps = 0
        self.included: np.ndarray | None = None

    # -- the probe protocol (called by the trainer) ------------------------------------------------
    def start(self, params: Sequence[Any], sample_rate: float, noise_multiplier: float, max_grad_norm: float,
              expected_batch: float) -> None:
        import torch

        sizes = [p.numel() for p in params]
        d = int(sum(sizes))
        m = self.num_canaries
        if m > d:
            raise PrivacyError(f"{m} Dirac canaries need {m} distinct coordinates; the private modules have {d} "
                               "parameters: use fewer canaries")
        self._g = torch.Generator().manual_seed(self._seed)
        self.q, self.sigma, self.C, self.expected_batch = float(sample_rate), float(noise_multiplier), \
            float(max_grad_norm), float(expected_batch)
        coords = torch.randperm(d, generator=self._g)[:m]
        self._included = torch.rand(m, generator=self._g) < 0.5
        self.included = self._included.numpy().copy()
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._groups: list[tuple[int, Any, Any]] = []  # (param index, local coordinates, canary ids)
        for j in range(len(params)):
            sel = torch.nonzero((coords >= int(offsets[j])) & (coords < int(offsets[j + 1]))).squeeze(1)
            if len(sel):
                self._groups.append((j, coords[sel] - int(offsets[j]), sel))
        self._params = list(params)
        dtype = params[0].dtype
        self._sum = torch.zeros(m, dtype=torch.float64)
        self._llr = torch.zeros(m, dtype=torch.float64)
        self._known = torch.zeros(m, dtype=torch.float64)
        self._sampled = torch.zeros(m, dtype=torch.bool)
        self._dtype = dtype
        self.steps = 0

    def before_noise(self, step: int, idx: Any, sums: dict) -> None:
        import torch

        # Every canary slot is Poisson-sampled with the records' rate; only included canaries are added.
        # (With public sampling the auditor knows ``_sampled`` for every canary, never the inclusion coin.)
        self._sampled = torch.rand(self.num_canaries, generator=self._g) < self.q
        add = (self._included & self._sampled).to(self._dtype) * self.C
        for j, local, ids in self._groups:
            p = self._params[j]
            s = sums[p]
            if not s.is_contiguous():
                s = sums[p] = s.contiguous()
            s.view(-1).index_add_(0, local, add[ids])

    def after_noise(self, step: int, sums: dict) -> None:
        import torch

        x = torch.empty(self.num_canaries, dtype=torch.float64)
        for j, local, ids in self._groups:
            x[ids] = sums[self._params[j]].reshape(-1)[local].double() * self.expected_batch
        self._sum += x
        # log N(x; C, s^2) / N(x; 0, s^2) under the subsampled mixture (1-q) N(0, s^2) + q N(C, s^2), s = sigma C
        z = (x / self.C - 0.5) / (self.sigma ** 2)
        self._llr += torch.logaddexp(torch.full_like(z, math.log1p(-self.q) if self.q < 1 else -math.inf),
                                     z + math.log(self.q))
        if self.known_sampling:
            self._known += x * self._sampled.double()
        self.steps += 1

    # -- results -------------------------------------------------------------------------------------
    @property
    def scores(self) -> dict[str, np.ndarray]:
        if self.included is None:
            raise PrivacyError("the canaries were never inserted: the trainer did not call the probe")
        out = {"sum": self._sum.numpy().copy(), "likelihood_ratio": self._llr.numpy().copy()}
        if self.known_sampling:
            out["known_sampling_sum"] = self._known.numpy().copy()
        return out


class ScaledNoiseBug:
    """A deliberately broken mechanism, for demonstrations and tests: the released noise is ``factor`` times
    what the ledger claims (the bug of adding ``sigma C / E[B]`` where ``sigma C`` is due, for instance)."""

    def __init__(self, factor: float) -> None:
        if not 0.0 <= float(factor) < 1.0:
            raise PrivacyError(f"the noise bug scales noise down by a factor in [0, 1), got {factor}")
        self.factor = float(factor)

    def start(self, params, sample_rate, noise_multiplier, max_grad_norm, expected_batch) -> None:
        self.expected_batch = float(expected_batch)

    def before_noise(self, step: int, idx: Any, sums: dict) -> None:
        self._clean = {p: s.detach().clone() for p, s in sums.items()}

    def after_noise(self, step: int, sums: dict) -> None:
        for p, s in sums.items():
            clean = self._clean[p] / self.expected_batch
            s.sub_(clean).mul_(self.factor).add_(clean)  # released = (clean + factor * noise) / E[B]


class _Chain:
    """Several mechanism probes in order (a bug first, then the auditor's canaries, so the canaries are
    added to what the bug sees and observe what it releases)."""

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def start(self, *args: Any) -> None:
        self.first.start(*args)
        self.second.start(*args)

    def before_noise(self, step: int, idx: Any, sums: dict) -> None:
        self.second.before_noise(step, idx, sums)  # canaries join the clipped sum ...
        self.first.before_noise(step, idx, sums)   # ... which the bug then records

    def after_noise(self, step: int, sums: dict) -> None:
        self.first.after_noise(step, sums)
        self.second.after_noise(step, sums)


def _default_data(generator: str) -> Any:
    from genguard.generators import get_generator_class
    from genguard.generators.data import digits_split, load_embedded, train_holdout

    name = (get_generator_class(generator).default_data or "digits")
    return digits_split()[0] if name == "digits" else train_holdout(load_embedded(name))[0]


def white_box_audit(generator: str = "vae", *, trainer: Any = None, data: Any = None, num_canaries: int = 1000,
                    generator_params: dict[str, Any] | None = None, known_sampling: bool = False,
                    confidence: float = 0.95, delta: float | None = None,
                    guess_fractions: Sequence[float] = GUESS_FRACTIONS, seed: int | None = None,
                    mechanism_bug: Any = None, progress: bool = False) -> dict[str, Any]:
    """Train ``generator`` once with ``trainer`` and ``num_canaries`` Dirac canaries; bound epsilon from below.

    ``trainer``: a :class:`~genguard.guardrails.privacy.PrivateTrainer` (default: target epsilon 10) on the
    genguard engine. ``delta``: where the bound is computed (default :func:`audit_delta`); the claim is
    recomputed at the same delta with the trainer's accountant so the two are comparable.
    ``mechanism_bug`` (demonstrations, tests): a probe such as :class:`ScaledNoiseBug` that breaks the
    mechanism on purpose, to show that the audit refutes a false claim.
    """
    from genguard.audits.privacy import audit_from_scores, one_run_epsilon_lower_bound
    from genguard.generators import get_generator_class
    from genguard.generators.base import TorchGenerator
    from genguard.guardrails.privacy import PrivateTrainer
    from genguard.guardrails.privacy.accounting import compute_epsilon

    cls = get_generator_class(generator)
    if not issubclass(cls, TorchGenerator):
        raise PrivacyError(f"{generator}: the white-box audit needs a generator trained by DP-SGD (a torch generator)")
    if trainer is None:
        trainer = PrivateTrainer(target_epsilon=10.0)
    if not getattr(trainer, "private", False) or not hasattr(trainer, "mechanism_probe"):
        raise PrivacyError("the white-box audit needs a PrivateTrainer (it audits the DP-SGD mechanism)")
    if data is None:
        data = _default_data(generator)
    probe = DiracCanaries(num_canaries, known_sampling=known_sampling, seed=seed)
    gen = cls(**dict(generator_params or {}))
    inserted = probe if mechanism_bug is None else _Chain(mechanism_bug, probe)
    gen.fit(data, trainer=dataclasses.replace(trainer, mechanism_probe=inserted), progress=progress)
    report = gen.training_report_
    m = probe.num_canaries
    d_audit = audit_delta(m, float(report["delta"])) if delta is None else float(delta)
    result = audit_from_scores(probe.scores, probe.included, delta=d_audit, confidence=confidence,
                               guess_fractions=guess_fractions)
    per_level = 1.0 - (1.0 - confidence) / len(result["configurations"])
    ceiling = max(one_run_epsilon_lower_bound(m, row["num_guesses"], row["num_guesses"], d_audit, per_level)
                  for row in result["configurations"])
    claimed_at_audit = compute_epsilon(report["sample_rate"], report["noise_multiplier"], report["steps"], d_audit,
                                       report["accountant"])
    result.update({
        "method": "white-box one-run audit, Dirac gradient canaries (Steinke, Nasr & Jagielski 2023; Nasr et al. 2023)",
        "generator": generator,
        "known_sampling": bool(known_sampling),
        "mechanism_bug": None if mechanism_bug is None else f"{type(mechanism_bug).__name__}({vars(mechanism_bug).get('factor', '')})",
        "steps": int(probe.steps),
        "sample_rate": float(report["sample_rate"]),
        "noise_multiplier": float(report["noise_multiplier"]),
        "max_grad_norm": float(report["max_grad_norm"]),
        "claimed_epsilon": float(report["epsilon"]),
        "training_delta": float(report["delta"]),
        "claimed_epsilon_at_audit_delta": float(claimed_at_audit),
        "ceiling": float(ceiling),
        "canaries": (f"{m} Dirac gradients of norm C = {report['max_grad_norm']:g} at distinct random coordinates "
                     "of the private parameters, each included with probability 1/2, then Poisson-sampled per step"),
        "note": "an empirical lower bound on the mechanism's epsilon: it can refute a DP claim, never certify one; "
                f"one run with these guess counts cannot show more than {ceiling:.2f}",
    })
    result["bound_exceeds_claim"] = bool(result["epsilon_lower_bound"] > claimed_at_audit)
    return result
