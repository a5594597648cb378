"""The accountant registry: each accountant is a small class registered by name (``rdp``, ``prv``, ``pld``).

An accountant turns ``steps`` Poisson-subsampled Gaussian steps (sampling rate
``q``, noise multiplier ``sigma``) into an upper bound on epsilon at ``delta``.
Every registered accountant must return a *guarantee* (an upper bound); Gaussian
DP, a central-limit approximation, is deliberately not one of them.

Memory and time are bounded: before computing, an accountant says whether the
request fits (:meth:`Accountant.limit`); one that does not is refused with
:class:`AccountantLimitError`, whose message names the largest step count the
accountant accepts at that ``q`` and ``sigma``. Nothing is allocated first.

A new accountant is one module with a class decorated by
:func:`register_accountant` (plus its test); an installed package can add one
through the entry-point group ``genguard.accountants``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Callable, ClassVar

from genguard.guardrails.privacy.errors import PrivacyError

ENTRY_POINT_GROUP = "genguard.accountants"
#: No accountant is asked about more steps than this: beyond it Python ints stop converting to
#: floats exactly (2**53 ~ 9.007e15), and no training run takes a quadrillion steps.
MAX_STEPS = 10**15
#: Beyond this noise multiplier epsilon is ~0 for any run, and opacus' RDP series overflow (1e300
#: raises OverflowError after seconds): refuse rather than compute.
MAX_NOISE_MULTIPLIER = 1e6


class AccountantLimitError(PrivacyError):
    """An accountant cannot compute this request in bounded memory or time (the message says what it accepts)."""

    def __init__(self, message: str, *, accountant: str, max_steps: int | None = None) -> None:
        super().__init__(message)
        self.accountant = accountant
        self.max_steps = max_steps


def check_mechanism(sample_rate: float, noise_multiplier: float, steps: int, delta: float) -> None:
    """Refuse anything outside the Poisson-subsampled Gaussian mechanism's domain, with a one-line reason."""
    for name, value in (("sample rate", sample_rate), ("noise multiplier", noise_multiplier), ("delta", delta)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PrivacyError(f"{name} must be a number, got {value!r}")
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int too large for a float
            finite = False
        if not finite:
            raise PrivacyError(f"{name} must be a finite number, got {value!r}")
    if not 0.0 < sample_rate <= 1.0:
        raise PrivacyError(f"sample rate must lie in (0, 1], got {sample_rate:g}")
    if not noise_multiplier > 0.0:
        raise PrivacyError(f"noise multiplier must be positive, got {noise_multiplier:g}")
    if not 0.0 < delta < 1.0:
        raise PrivacyError(f"delta must lie in (0, 1), got {delta:g}")
    if noise_multiplier > MAX_NOISE_MULTIPLIER:
        raise AccountantLimitError(f"noise multiplier {noise_multiplier:g} exceeds the largest any accountant accepts "
                                   f"({MAX_NOISE_MULTIPLIER:g}; epsilon is ~0 well before it)", accountant="any")
    if isinstance(steps, bool) or not isinstance(steps, int):
        if not (isinstance(steps, float) and math.isfinite(steps) and steps == int(steps)):
            raise PrivacyError(f"steps must be a non-negative integer, got {steps!r}")
    if steps < 0:
        raise PrivacyError(f"steps must be a non-negative integer, got {steps!r}")
    if steps > MAX_STEPS:
        raise AccountantLimitError(f"steps {int(steps):.4g} exceed the largest step count any accountant accepts "
                                   f"({MAX_STEPS:.0e})", accountant="any", max_steps=MAX_STEPS)


class Accountant:
    """Epsilon of Poisson-subsampled Gaussian DP-SGD; subclasses set ``name`` and implement ``_epsilon``."""

    name: ClassVar[str] = ""
    #: One line for ``--help`` and the README: the method and the library that implements it.
    description: ClassVar[str] = ""

    def limit(self, q: float, sigma: float, steps: int, delta: float) -> str | None:
        """Why this request cannot be computed in bounded memory/time, or None when it can (cheap to call)."""
        return None

    def _epsilon(self, q: float, sigma: float, steps: int, delta: float) -> float:
        raise NotImplementedError

    def max_steps(self, q: float, sigma: float, delta: float) -> int:
        """The largest step count :meth:`limit` accepts at ``q``, ``sigma``, ``delta`` (0 when none)."""
        if self.limit(q, sigma, MAX_STEPS, delta) is None:
            return MAX_STEPS
        lo, hi = 0, 1
        while hi < MAX_STEPS and self.limit(q, sigma, hi, delta) is None:
            lo, hi = hi, min(hi * 4, MAX_STEPS)
        while hi - lo > max(1, lo // 1000):  # three significant digits is all a message needs
            mid = (lo + hi) // 2
            if self.limit(q, sigma, mid, delta) is None:
                lo = mid
            else:
                hi = mid
        return lo

    def epsilon(self, q: float, sigma: float, steps: int, delta: float) -> float:
        """Upper bound on epsilon; :class:`AccountantLimitError` when it cannot be computed here."""
        check_mechanism(q, sigma, steps, delta)
        steps = int(steps)
        if steps == 0:
            return 0.0
        q, sigma, delta = float(q), float(sigma), float(delta)
        reason = self.limit(q, sigma, steps, delta)
        if reason is not None:
            most = self.max_steps(q, sigma, delta)
            accepted = (f"it accepts at most {most:.4g} steps at q = {q:g}, sigma = {sigma:g}" if most > 0 else
                        f"it accepts no step at q = {q:g}, sigma = {sigma:g}; a larger noise multiplier is needed")
            raise AccountantLimitError(f"{self.name.upper()} cannot compute {steps:.4g} steps in bounded memory "
                                       f"({reason}); {accepted}", accountant=self.name, max_steps=most)
        try:
            eps = float(self._epsilon(q, sigma, steps, delta))
        except (ArithmeticError, ValueError, MemoryError) as exc:  # the library's own numerical limits
            first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
            raise AccountantLimitError(f"{self.name.upper()} cannot compute q = {q:g}, sigma = {sigma:g}, "
                                       f"{steps:.4g} steps at delta = {delta:g}: {first} (try the rdp accountant)",
                                       accountant=self.name) from None
        if not math.isfinite(eps) or eps < 0:
            raise AccountantLimitError(f"{self.name.upper()} returned {eps!r} for q = {q:g}, sigma = {sigma:g}, "
                                       f"{steps:.4g} steps: not a usable bound (try the rdp accountant)",
                                       accountant=self.name)
        return eps


class AccountantRegistry(Mapping):
    """Name -> accountant class; iteration gives the names in registration order (``rdp`` first)."""

    def __init__(self) -> None:
        self._classes: dict[str, type[Accountant]] = {}
        self._entry_points_loaded = False

    def register(self, cls: type[Accountant]) -> type[Accountant]:
        if not (isinstance(cls, type) and issubclass(cls, Accountant)) or not cls.name:
            raise PrivacyError(f"{cls!r}: an accountant is an Accountant subclass with a non-empty name")
        if cls.name == "gdp":
            raise PrivacyError("gdp is a central-limit approximation, not a guarantee; it cannot be registered")
        known = self._classes.get(cls.name)
        if known is not None and known is not cls:
            raise PrivacyError(f"accountant {cls.name!r} is already registered ({known.__module__}.{known.__qualname__})")
        self._classes[cls.name] = cls
        return cls

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        from importlib import metadata

        for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
            try:
                cls = ep.load()
            except Exception as exc:  # a broken plug-in must not take the built-in accountants with it
                import warnings

                warnings.warn(f"accountant entry point {ep.name!r} could not be loaded: {exc}", RuntimeWarning)
                continue
            self.register(cls)

    def __getitem__(self, name: str) -> type[Accountant]:
        self._load_entry_points()
        return self._classes[name]

    def __iter__(self) -> Iterator[str]:
        self._load_entry_points()
        return iter(list(self._classes))

    def __len__(self) -> int:
        self._load_entry_points()
        return len(self._classes)

    def get(self, name: str, default=None):  # Mapping.get, typed for readers
        try:
            return self[name]
        except KeyError:
            return default


REGISTRY = AccountantRegistry()
register_accountant: Callable[[type[Accountant]], type[Accountant]] = REGISTRY.register


def accountant_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get_accountant(name: str) -> Accountant:
    """An instance of the accountant registered as ``name``; a one-line error naming the choices otherwise."""
    if name == "gdp":
        raise PrivacyError("GDP is a central-limit approximation, not a guarantee; use "
                           f"{', '.join(REGISTRY)} (gdp_epsilon_approximation() shows it labelled as an approximation)")
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise PrivacyError(f"unknown accountant {name!r}; choose one of {', '.join(REGISTRY)}")
    return cls()


# The built-in accountants register themselves on import (order: rdp, prv, pld, analytic).
from genguard.guardrails.privacy.accountants import rdp as _rdp  # noqa: E402,F401
from genguard.guardrails.privacy.accountants import prv as _prv  # noqa: E402,F401
from genguard.guardrails.privacy.accountants import pld as _pld  # noqa: E402,F401
from genguard.guardrails.privacy.accountants import analytic as _analytic  # noqa: E402,F401

__all__ = [
    "Accountant", "AccountantLimitError", "AccountantRegistry", "ENTRY_POINT_GROUP", "MAX_NOISE_MULTIPLIER", "MAX_STEPS",
    "REGISTRY",
    "accountant_names", "check_mechanism", "get_accountant", "register_accountant",
]
