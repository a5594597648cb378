"""The error types the CLI reports as bad input (one line, exit 2) rather than as a crash.

There is one error path: every reader validates types and ranges at the edge
and raises its package's error (a ``ValueError`` subclass) naming the file and
the problem; :func:`genguard.cli.main` turns any of them into one stderr line
``genguard: error: ...`` and exit 2. Anything else reaching the CLI is a bug:
it is still one line (``genguard: internal error: ...``, exit 2) unless
GENGUARD_DEBUG=1 asks for the traceback.
"""
from __future__ import annotations

import importlib


def user_error_types() -> tuple[type[BaseException], ...]:
    """Every package's bad-input error class that is importable (each subclasses ValueError)."""
    found: list[type[BaseException]] = [FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError]
    for module, name in (
        ("genguard.generators._io", "InputError"),
        ("genguard.generators.base", "GeneratorError"),
        ("genguard.guardrails.privacy.trainer", "PrivacyError"),
        ("genguard.pipeline", "PipelineError"),
        ("genguard.guardrails.provenance", "ProvenanceError"),
        ("genguard.detectors", "DetectorError"),
        ("genguard.audits", "AuditError"),
        ("genguard.engines", "EngineError"),
    ):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            continue
    return tuple(found)


def one_line(exc: BaseException) -> str:
    """The first line of an exception's message (or its class name), at most 500 characters."""
    msg = str(exc).splitlines()[0].strip() if str(exc).strip() else exc.__class__.__name__
    return msg if len(msg) <= 500 else msg[:497] + "..."
