"""Audits: fidelity, bias, memorization, privacy verification, the release report and its policy gates.

May import ``generators``, ``guardrails`` and ``detectors``; never ``genguard``.
"""


class AuditError(ValueError):
    """Bad input to an audit: empty or mismatched samples, unreadable policy, unknown reference."""
