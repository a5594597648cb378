"""Audits: fidelity, bias, memorization, privacy verification, the release report and its policy gates.

May import ``generators``, ``guardrails`` and ``detectors``; never ``genguard``.

Public entry point::

    from audits import ReleaseAudit, AuditError
    report = ReleaseAudit(policy=None, seed=0).run(samples, train, holdout, ledger=ledger)
"""
from __future__ import annotations

from typing import Any


class AuditError(ValueError):
    """Bad input to an audit: empty or mismatched samples, unreadable policy, unknown reference."""


_LAZY = {
    "ReleaseAudit": "audits.release",
    "AuditReport": "audits.release",
    "load_policy": "audits.policy",
    "evaluate_gates": "audits.policy",
    "DEFAULT_POLICY": "audits.policy",
    "knn": "audits.nn",
}


def __getattr__(name: str) -> Any:  # lazy: importing audits stays cheap
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audits' has no attribute {name!r}")


__all__ = ["AuditError", *_LAZY]
