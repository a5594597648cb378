"""Audits: fidelity, bias, memorization, privacy verification, the release report and its policy gates.

May import ``generators``, ``guardrails`` and ``detectors``; never ``genguard``.

Public entry point::

    from genguard.audits import ReleaseAudit, AuditError
    audit = ReleaseAudit(policy=None, seed=0)          # policy: None, a dict, or a YAML path
    report = audit.run(samples, train, holdout, ledger=ledger)      # images (digits)
    report = audit.run_tabular(synthetic_df, train_df, holdout_df)  # tables (fairlearn MetricFrame)
    report = audit.run_text(texts, train_texts, generate=fn)        # texts (+ BOLD-style bias)
    report.data, report.passed, report.write(out_dir)

Modules: ``stats`` (intervals, tests, Holm), ``nn`` (exact blocked k-NN),
``features`` (the audit's own extractor/classifier), ``fidelity``, ``bias``,
``memorization``, ``text_bias``, ``text_fidelity``, ``tabular``, ``policy``,
``release`` and ``html`` (the report), ``privacy`` (the privacy section).
"""
from __future__ import annotations

from typing import Any


class AuditError(ValueError):
    """Bad input to an audit: empty or mismatched samples, unreadable policy, unknown reference."""


_LAZY = {
    "ReleaseAudit": "genguard.audits.release",
    "AuditReport": "genguard.audits.release",
    "load_policy": "genguard.audits.policy",
    "evaluate_gates": "genguard.audits.policy",
    "DEFAULT_POLICY": "genguard.audits.policy",
    "knn": "genguard.audits.nn",
    "TextBiasAudit": "genguard.audits.text_bias",
}


def __getattr__(name: str) -> Any:  # lazy: importing audits stays cheap
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'audits' has no attribute {name!r}")


__all__ = ["AuditError", *_LAZY]
