"""Independent verification of a privacy ledger: signature, weights hash, recomputed epsilon, coded findings.

A privacy officer should not have to trust the team that trained a model.
:func:`verify_ledger` re-derives the DP claim from the ledger's own training
parameters with two accountants other than the usual RDP (PRV from opacus,
PLD from Google's dp-accounting) and reports each inconsistency as a finding
``{"code", "severity", "message"}``. The ledger is ``consistent`` when no
finding has severity ``error``.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from genguard.guardrails.privacy.errors import PrivacyError
from genguard.guardrails.privacy.ledger import LEDGER_FILE, read_ledger, sha256_file

WEIGHTS_FILE = "weights.safetensors"
RECOMPUTE_WITH = ("prv", "pld")
#: A claimed epsilon more than this fraction below the recomputed one is understated.
EPSILON_TOLERANCE = 0.01
#: Layer types whose per-sample gradients are not independent or that opacus cannot privatise as is.
UNSUPPORTED_LAYER_TYPES = {
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm1d", "LazyBatchNorm2d",
    "LazyBatchNorm3d", "LSTM", "GRU", "RNN", "MultiheadAttention",
}
REQUIRED = ("dataset_size", "sampling", "sample_rate", "noise_multiplier", "max_grad_norm", "steps", "delta",
            "accountant", "epsilon")

FINDING_CODES = {
    "SIGNATURE_MISSING": "the ledger is not signed",
    "SIGNATURE_INVALID": "the ledger was edited after signing, or the signature is malformed",
    "SIGNER_NOT_TRUSTED": "signed by a key other than the trusted one",
    "SIGNER_NOT_ANCHORED": "signature intact, but no trusted key was given to check who signed",
    "WEIGHTS_MISSING": "no weights file beside the ledger",
    "WEIGHTS_HASH_MISSING": "the ledger records no weights hash",
    "WEIGHTS_HASH_MISMATCH": "the weights file is not the one the ledger was written for",
    "NOT_PRIVATE": "the run claims no differential privacy",
    "FIELD_MISSING": "a field needed to check the claim is missing or malformed",
    "EPSILON_UNDERSTATED": "claimed epsilon below the recomputed one by more than 1%",
    "EPSILON_ABOVE_TARGET": "spent epsilon above the requested target",
    "STEPS_INCONSISTENT": "steps do not match epochs / sample rate",
    "SAMPLE_RATE_INCONSISTENT": "sample rate does not match expected batch size / dataset size",
    "NON_POISSON_SAMPLING": "non-Poisson sampling accounted as Poisson",
    "DELTA_TOO_LARGE": "delta >= 1/n",
    "GDP_CLAIMED_AS_GUARANTEE": "a Gaussian-DP (CLT) approximation claimed as the guarantee",
    "UNSUPPORTED_LAYER": "a privatised layer breaks per-sample DP-SGD",
    "LAYERS_NOT_RECORDED": "the ledger does not list the privatised layer types",
    "GRADIENT_ACCUMULATION": "gradients accumulated across Poisson batches",
    "RECOMPUTE_FAILED": "an accountant could not recompute epsilon",
    "NOISE_REGENERABLE": "the noise was drawn from the recorded seed, so it is not secret from readers of the ledger",
}


def _finding(code: str, severity: str, message: str) -> dict[str, str]:
    return {"code": code, "severity": severity, "message": message}


def _num(ledger: dict[str, Any], key: str) -> float | None:
    v = ledger.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def verify_ledger(path: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                  trusted_key: Any = None, accountants: tuple[str, ...] = RECOMPUTE_WITH) -> dict[str, Any]:
    """Check the ledger at ``path`` (a ``ledger.json`` or the model directory holding it).

    ``weights`` defaults to ``weights.safetensors`` beside the ledger; ``trusted_key`` is an Ed25519
    public key (see :func:`guardrails.privacy.signing.load_public_key`).
    """
    from genguard.guardrails.privacy.accounting import compute_epsilon
    from genguard.guardrails.privacy.signing import verify_document

    path = Path(path)
    if path.is_dir():
        path = path / LEDGER_FILE
    ledger = read_ledger(path)
    findings: list[dict[str, str]] = []

    sig = verify_document(ledger, trusted_key)
    if sig["state"] == "missing":
        findings.append(_finding("SIGNATURE_MISSING", "error", f"{path}: {sig['reason']}"))
    elif sig["state"] == "invalid":
        findings.append(_finding("SIGNATURE_INVALID", "error", f"{path}: {sig['reason']}"))
    elif sig["state"] == "untrusted":
        findings.append(_finding("SIGNER_NOT_TRUSTED", "error", sig["reason"]))
    elif trusted_key is None:
        findings.append(_finding("SIGNER_NOT_ANCHORED", "info", sig["reason"]))

    wpath = Path(weights) if weights is not None else path.parent / WEIGHTS_FILE
    recorded = ledger.get("weights_sha256")
    wstate: dict[str, Any] = {"path": str(wpath), "recorded_sha256": recorded, "sha256": None, "state": None}
    if not recorded:
        wstate["state"] = "not recorded"
        findings.append(_finding("WEIGHTS_HASH_MISSING", "error", "the ledger records no SHA-256 of the weights"))
    elif not wpath.is_file():
        wstate["state"] = "missing"
        findings.append(_finding("WEIGHTS_MISSING", "error", f"{wpath}: no weights file to check against the ledger"))
    else:
        wstate["sha256"] = sha256_file(wpath)
        wstate["state"] = "match" if wstate["sha256"] == recorded else "mismatch"
        if wstate["state"] == "mismatch":
            findings.append(_finding("WEIGHTS_HASH_MISMATCH", "error",
                                     f"{wpath}: SHA-256 {wstate['sha256'][:16]}... differs from the ledger's {str(recorded)[:16]}..."))

    claimed = _num(ledger, "epsilon")
    recomputed: dict[str, Any] = {}
    if not ledger.get("private"):
        findings.append(_finding("NOT_PRIVATE", "info", "trained without differential privacy: there is no (epsilon, delta) claim to check"))
    else:
        missing = [k for k in REQUIRED if ledger.get(k) is None or (k not in ("sampling", "accountant") and _num(ledger, k) is None)]
        for k in missing:
            findings.append(_finding("FIELD_MISSING", "error", f"field {k!r} is missing or not a finite number"))
        n = _num(ledger, "dataset_size")
        q = _num(ledger, "sample_rate")
        sigma = _num(ledger, "noise_multiplier")
        steps = _num(ledger, "steps")
        delta = _num(ledger, "delta")
        epochs = _num(ledger, "epochs")
        accountant = str(ledger.get("accountant") or "")
        guarantee = str(ledger.get("guarantee") or "")
        if accountant.lower() in ("gdp", "gaussian", "clt") or "GDP" in guarantee.upper().split():
            findings.append(_finding("GDP_CLAIMED_AS_GUARANTEE", "error",
                                     f"accountant {accountant!r}: Gaussian DP is a central-limit approximation that can "
                                     "understate epsilon; it is not a guarantee"))
        full_batch = q is not None and abs(q - 1.0) < 1e-12  # every record in every release: no subsampling to assume
        if ledger.get("sampling") != "poisson" and not full_batch and accountant.lower() in ("rdp", "prv", "pld", "gdp"):
            findings.append(_finding("NON_POISSON_SAMPLING", "error",
                                     f"sampling {ledger.get('sampling')!r} accounted with {accountant.upper()}, which assumes "
                                     "Poisson subsampling; the stated epsilon does not apply"))
        if n is not None and delta is not None and delta >= 1.0 / n:
            findings.append(_finding("DELTA_TOO_LARGE", "error", f"delta={delta:g} is not below 1/n = {1 / n:.3g} (n={int(n)})"))
        if n is not None and q is not None:
            ebs = _num(ledger, "expected_batch_size")
            if not 0 < q <= 1:
                findings.append(_finding("SAMPLE_RATE_INCONSISTENT", "error", f"sample rate {q:g} is not in (0, 1]"))
            elif ebs is not None and abs(ebs - q * n) > max(1e-6 * q * n, 1e-9):
                findings.append(_finding("SAMPLE_RATE_INCONSISTENT", "error",
                                         f"expected batch size {ebs:g} != sample rate x dataset size = {q * n:g}"))
        if epochs is not None and q is not None and steps is not None and 0 < q <= 1:
            expected_steps = epochs / q
            if abs(steps - expected_steps) > 1.0 + 1e-9:
                findings.append(_finding("STEPS_INCONSISTENT", "error",
                                         f"{int(steps)} steps but {epochs:g} epochs at sample rate {q:.6g} give "
                                         f"{expected_steps:.1f}"))
        accum = _num(ledger, "gradient_accumulation_steps")
        if accum is not None and accum > 1:
            findings.append(_finding("GRADIENT_ACCUMULATION", "error",
                                     f"gradients accumulated over {int(accum)} Poisson batches per step; the accountant "
                                     "charged each batch as a separate noisy step"))
        layers = ledger.get("private_layers")
        if not isinstance(layers, list) and "DP-SGD" not in str(ledger.get("mechanism") or "DP-SGD"):
            pass  # not a per-sample-gradient mechanism (e.g. DP-MERF's one Gaussian release): no layers to list
        elif not isinstance(layers, list):
            findings.append(_finding("LAYERS_NOT_RECORDED", "warning", "the ledger does not list the privatised layer types"))
        else:
            bad = sorted(set(map(str, layers)) & UNSUPPORTED_LAYER_TYPES)
            if bad:
                findings.append(_finding("UNSUPPORTED_LAYER", "error",
                                         f"privatised layers {', '.join(bad)} break per-sample DP-SGD "
                                         "(BatchNorm mixes records; recurrent/attention layers need opacus' DP variants)"))
        noise = str(ledger.get("noise_source") or "")
        if "seeded from the run seed" in noise:
            findings.append(_finding("NOISE_REGENERABLE", "warning",
                                     f"noise source: {noise}; the DP guarantee assumes the noise is secret, so keep the "
                                     "seed confidential or retrain with reproducible_noise=False / secure_mode"))
        target = _num(ledger, "target_epsilon")
        if target is not None and claimed is not None and claimed > target * (1 + EPSILON_TOLERANCE):
            findings.append(_finding("EPSILON_ABOVE_TARGET", "warning", f"epsilon {claimed:.4g} exceeds the target {target:.4g}"))
        if None not in (q, sigma, steps, delta) and 0 < q <= 1 and sigma > 0 and 0 < delta < 1 and steps >= 0:
            for acc in accountants:
                try:
                    recomputed[acc] = compute_epsilon(q, sigma, int(steps), delta, acc)
                except Exception as exc:  # an accountant failing must be reported, not crash the verification
                    recomputed[acc] = None
                    findings.append(_finding("RECOMPUTE_FAILED", "error", f"{acc.upper()}: {exc}"))
            valid = [v for v in recomputed.values() if v is not None]
            if valid and claimed is not None:
                # Each accountant gives an upper bound; the tightest one is the least a claim may state.
                tight = min(valid)
                if claimed < tight * (1 - EPSILON_TOLERANCE):
                    findings.append(_finding("EPSILON_UNDERSTATED", "error",
                                             f"claimed epsilon {claimed:.4g} is below the recomputed "
                                             + ", ".join(f"{k.upper()} {v:.4g}" for k, v in recomputed.items() if v is not None)
                                             + f" by more than {EPSILON_TOLERANCE:.0%}"))
    consistent = not any(f["severity"] == "error" for f in findings)
    return {
        "ledger": str(path),
        "run_id": ledger.get("run_id"),
        "generator": ledger.get("generator"),
        "private": bool(ledger.get("private")),
        "consistent": consistent,
        "claimed_epsilon": claimed,
        "delta": ledger.get("delta"),
        "accountant": ledger.get("accountant"),
        "recomputed": recomputed,
        "signature": sig,
        "weights": wstate,
        "findings": findings,
    }


def load_trusted_key(path: str | os.PathLike | None) -> Any:
    if path is None:
        return None
    from genguard.guardrails.privacy.signing import load_public_key

    return load_public_key(path)


__all__ = ["FINDING_CODES", "PrivacyError", "verify_ledger", "load_trusted_key"]
