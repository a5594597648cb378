"""The report's `privacy` section: what a run's ledger claims, stated honestly."""
from __future__ import annotations

from typing import Any


def privacy_section(ledger: dict[str, Any] | None, **evidence: Any) -> dict[str, Any]:
    """Summarise a privacy ledger for the release report.

    ``evidence`` may carry further results (an independent recomputation, an
    empirical canary audit, membership-inference figures) under their own
    keys; they are included as given. With no ledger the section says so.
    """
    if ledger is None:
        return {"value": None, "reason": "no privacy ledger: the model was not trained by genguard, or its ledger is missing"}
    section: dict[str, Any] = {
        "private": bool(ledger.get("private")),
        "epsilon": ledger.get("epsilon"),
        "delta": ledger.get("delta"),
        "accountant": ledger.get("accountant"),
        "guarantee": ledger.get("guarantee"),
        "run_id": ledger.get("run_id"),
    }
    if ledger.get("private"):
        for key in ("target_epsilon", "noise_multiplier", "sample_rate", "steps", "epochs", "max_grad_norm",
                    "dataset_size", "sampling", "private_modules"):
            section[key] = ledger.get(key)
    else:
        section["reason"] = "trained without differential privacy: no (epsilon, delta) guarantee"
    section.update(evidence)
    return section
