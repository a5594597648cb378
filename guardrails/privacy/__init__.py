"""Privacy: DP-SGD training of any torch generator (opacus) and the privacy ledger of every run."""
from guardrails.privacy.ledger import LEDGER_FILE, build_ledger, read_ledger, sha256_file, write_ledger
from guardrails.privacy.trainer import DEFAULT_DELTA, PrivacyError, PrivateTrainer, resolve_delta

__all__ = [
    "DEFAULT_DELTA", "LEDGER_FILE", "PrivacyError", "PrivateTrainer", "build_ledger", "read_ledger",
    "resolve_delta", "sha256_file", "write_ledger",
]
