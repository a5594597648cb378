"""The error types the CLI reports as bad input (one line, exit 2) rather than as a crash."""
from __future__ import annotations

import importlib


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every package's bad-input error class that is importable (each subclasses ValueError)."""
    found: list[type[BaseException]] = [FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError]
    for module, name in (
        ("genguard.generators.base", "GeneratorError"),
        ("genguard.guardrails.privacy.trainer", "PrivacyError"),
        ("genguard.pipeline", "PipelineError"),
        ("genguard.guardrails.provenance", "ProvenanceError"),
        ("genguard.detectors", "DetectorError"),
        ("genguard.audits", "AuditError"),
    ):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)
