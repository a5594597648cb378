"""Privacy: DP-SGD training of any torch generator, accounting, the signed privacy ledger and its verification."""
from genguard.guardrails.privacy.accounting import (
    ACCOUNTANTS, compute_epsilon, epsilon_report, gdp_epsilon_approximation, noise_multiplier_for_epsilon,
)
from genguard.guardrails.privacy.conformance import ConformanceError, check_private_training
from genguard.guardrails.privacy.errors import PrivacyError
from genguard.guardrails.privacy.ledger import LEDGER_FILE, build_ledger, read_ledger, sha256_file, write_ledger
from genguard.guardrails.privacy.trainer import DEFAULT_DELTA, PrivateTrainer, resolve_delta
from genguard.guardrails.privacy.verify import verify_ledger

__all__ = [
    "ConformanceError", "check_private_training",
    "ACCOUNTANTS", "DEFAULT_DELTA", "LEDGER_FILE", "PrivacyError", "PrivateTrainer", "build_ledger",
    "compute_epsilon", "epsilon_report", "gdp_epsilon_approximation", "noise_multiplier_for_epsilon",
    "read_ledger", "resolve_delta", "sha256_file", "verify_ledger", "write_ledger",
]
