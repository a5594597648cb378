"""The privacy ledger: one signed JSON record per training run, written atomically next to the weights.

Fields of a private run: dataset size, sampling mode, sample rate, expected
batch size, noise multiplier, clipping norm, epochs and steps actually taken,
delta, accountant, claimed epsilon, the privatised modules and their layer
types, seed, package versions and the SHA-256 of the saved weights. A DP-SGD
run also records ``randomness`` (``{"sampling": S, "noise": N}``, each
``"secret"``: a fresh CSPRNG seed recorded nowhere, or ``"keyed"``: HMAC of the
recorded seed under the secret key, the reproducible opt-in), and
``trained_modules`` / ``private_modules`` / ``post_processing_modules``. The record
is signed with Ed25519 over its canonical serialisation
(:mod:`guardrails.privacy.signing`); ``genguard privacy verify`` checks it.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from genguard.generators._io import atomic_write_json
from genguard.guardrails.privacy.errors import PrivacyError

LEDGER_FILE = "ledger.json"
LEDGER_FORMAT = "genguard-privacy-ledger/1"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages that decide what a run computes (for reproducibility)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for pkg in ("genguard", "torch", "opacus", "numpy", "scikit-learn", "dp-accounting", "c2pa-python", "transformers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def build_ledger(training: dict[str, Any], *, generator: str, run_id: str, seed: int,
                 weights_path: str | os.PathLike | None, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ledger record for one run, from a trainer's report (``PrivateTrainer.train`` or ``PlainTrainer``)."""
    private = bool(training.get("private"))
    ledger: dict[str, Any] = {
        "format": LEDGER_FORMAT,
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "generator": generator,
        "private": private,
        "seed": seed,
        "config": config or {},
        "package_versions": package_versions(),
        "weights_sha256": sha256_file(weights_path) if weights_path else None,
    }
    if private:
        for key in ("mechanism", "dataset_size", "sampling", "sample_rate", "expected_batch_size", "noise_multiplier",
                    "max_grad_norm", "epochs", "steps", "delta", "accountant", "target_epsilon", "epsilon",
                    "private_modules", "grad_sample_mode", "secure_mode"):
            ledger[key] = training.get(key)
        for key in ("private_layers", "max_physical_batch_size", "gradient_accumulation_steps", "clipped_fraction",
                    "noise_source", "privacy_unit", "caveat", "randomness", "reproducible", "warnings"):
            if key in training:
                ledger[key] = training[key]
        # Which saved modules learnt from the private data through DP-SGD, and which only from public
        # inputs and DP outputs (post-processing); every trained module is in weights.safetensors.
        private_modules = list(training.get("private_modules") or [])
        ledger["private_modules"] = private_modules
        ledger["trained_modules"] = list(training.get("trained_modules") or private_modules)
        ledger["post_processing_modules"] = list(training.get(
            "post_processing_modules", [m for m in ledger["trained_modules"] if m not in private_modules]))
        unit = ledger.get("privacy_unit") or "the records of the training set"
        mechanism = str(ledger.get("mechanism") or "")
        if "DP-SGD" in mechanism:
            sampled = "Poisson-sampled" if ledger["sampling"] == "poisson" else f"{ledger['sampling']}-sampled"
            how = f"over {ledger['steps']} {sampled} DP-SGD steps"
        else:  # e.g. DP-MERF's single Gaussian release of a mean embedding
            how = f"for {mechanism or 'the recorded mechanism'} ({ledger['steps']} release(s))"
        ledger["guarantee"] = (
            f"({ledger['epsilon']:.4g}, {ledger['delta']:.3g})-DP for {unit}, "
            f"by the {str(ledger['accountant']).upper()} accountant {how}"
        )
        if ledger.get("caveat"):
            ledger["guarantee"] += f"; caveat: {ledger['caveat']}"
    else:
        ledger.update({"epsilon": None, "delta": None, "steps": training.get("steps"),
                       "guarantee": "none: trained without differential privacy"})
    return ledger


def write_ledger(directory: str | os.PathLike, ledger: dict[str, Any], *, sign: bool = True,
                 key: Any = None) -> Path:
    """Sign ``ledger`` (Ed25519, key from :func:`guardrails.privacy.signing.load_or_create_signing_key`
    unless ``key`` is given) and write it atomically to ``directory/ledger.json``; ``ledger`` is not modified."""
    from genguard.guardrails.privacy.signing import sign_document

    record = sign_document(ledger, key) if sign else {k: v for k, v in ledger.items() if k != "signature"}
    return atomic_write_json(Path(directory) / LEDGER_FILE, record)


def read_ledger(path: str | os.PathLike) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / LEDGER_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise PrivacyError(f"{path}: no such ledger") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PrivacyError(f"{path}: unreadable ledger ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
        raise PrivacyError(f"{path}: not a genguard privacy ledger")
    return data


def ledger_sha256(path: str | os.PathLike) -> str:
    return sha256_file(path)
