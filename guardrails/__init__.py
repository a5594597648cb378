"""Guardrails: privacy-preserving training (DP-SGD, ledger) and content provenance (C2PA, watermarks).

Imports only ``generators`` from the rest of genguard.
"""
