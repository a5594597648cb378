"""The privacy ledger: one signed JSON record per training run, written atomically next to the weights.

Fields of a private run: sampling mode, sample rate q, noise multiplier,
clipping norm, steps actually taken, delta, accountant, claimed epsilon, the privatised modules and their layer
types, seed, package versions and the SHA-256 of the saved weights. A DP-SGD
run also records ``randomness`` (``{"sampling": S, "noise": N}``, each
``"secret"``: a fresh CSPRNG seed recorded nowhere, or ``"keyed"``: HMAC of the
recorded seed under the secret key, the reproducible opt-in), and
``trained_modules`` / ``private_modules`` / ``post_processing_modules``. The record
is signed with Ed25519 over its canonical serialisation
(:mod:`guardrails.privacy.signing`); ``genguard privacy verify`` checks it.

The data-set size n, the expected batch size q n and the epoch count are not recorded: epsilon is
for add/remove-one neighbours, and a published n would tell whether one record was in. Everything
the accounting needs (q, sigma, steps, delta) does not follow n one to one.
"""
from __future__ import annotations

import hashlib
import json
import math
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
        for key in ("mechanism", "sampling", "sample_rate", "noise_multiplier", "max_grad_norm", "steps", "delta",
                    "accountant", "target_epsilon", "epsilon",
                    "private_modules", "grad_sample_mode", "secure_mode"):
            ledger[key] = training.get(key)
        for key in ("private_layers", "max_physical_batch_size", "gradient_accumulation_steps", "clipped_fraction",
                    "noise_source", "privacy_unit", "caveat", "randomness", "reproducible", "warnings", "distributed"):
            if key in training:
                ledger[key] = training[key]
        # Which saved modules learnt from the private data through DP-SGD, and which only from public
        # inputs and DP outputs (post-processing); every trained module is in weights.safetensors.
        private_modules = list(training.get("private_modules") or [])
        ledger["private_modules"] = private_modules
        ledger["trained_modules"] = list(training.get("trained_modules") or private_modules)
        ledger["post_processing_modules"] = list(training.get(
            "post_processing_modules", [m for m in ledger["trained_modules"] if m not in private_modules]))
        ledger["guarantee"] = guarantee_sentence(ledger)
    else:
        ledger.update({"epsilon": None, "delta": None, "steps": training.get("steps"),
                       "guarantee": NO_GUARANTEE})
    return ledger


#: The guarantee sentence of a run trained without differential privacy.
NO_GUARANTEE = "none: trained without differential privacy"


def guarantee_sentence(ledger: dict[str, Any]) -> str:
    """The one sentence a reader takes the claim from, built from the ledger's own fields (so a verifier
    can rebuild it and refuse a sentence that states anything else)."""
    unit = ledger.get("privacy_unit") or "the records of the training set"
    mechanism = str(ledger.get("mechanism") or "")
    if "DP-SGD" in mechanism:
        sampled = "Poisson-sampled" if ledger["sampling"] == "poisson" else f"{ledger['sampling']}-sampled"
        how = f"over {ledger['steps']} {sampled} DP-SGD steps"
    else:  # e.g. DP-MERF's single Gaussian release of a mean embedding
        how = f"for {mechanism or 'the recorded mechanism'} ({ledger['steps']} release(s))"
    sentence = (f"({ledger['epsilon']:.4g}, {ledger['delta']:.3g})-DP for {unit}, "
                f"by the {str(ledger['accountant']).upper()} accountant {how}")
    if ledger.get("caveat"):
        sentence += f"; caveat: {ledger['caveat']}"
    return sentence


def write_ledger(directory: str | os.PathLike, ledger: dict[str, Any], *, sign: bool = True,
                 key: Any = None) -> Path:
    """Sign ``ledger`` (Ed25519, key from :func:`guardrails.privacy.signing.load_or_create_signing_key`
    unless ``key`` is given) and write it atomically to ``directory/ledger.json``; ``ledger`` is not modified."""
    from genguard.guardrails.privacy.signing import sign_document

    record = sign_document(ledger, key) if sign else {k: v for k, v in ledger.items() if k != "signature"}
    return atomic_write_json(Path(directory) / LEDGER_FILE, record)


#: Every field a ledger may carry (top level). Anything else in signed content is refused before the
#: signature is checked: a field no verifier knows is a claim no verifier checked. The write side
#: adds a field here when it starts writing one (a test keeps build_ledger and this set in step).
LEDGER_FIELDS = frozenset({
    "format", "run_id", "created", "generator", "private", "seed", "config", "package_versions", "weights_sha256",
    "mechanism", "sampling", "sample_rate", "noise_multiplier", "max_grad_norm", "steps", "delta", "accountant",
    "target_epsilon", "epsilon", "private_modules",
    "grad_sample_mode", "secure_mode", "private_layers", "max_physical_batch_size", "gradient_accumulation_steps",
    "clipped_fraction", "noise_source", "privacy_unit", "caveat", "caveats", "randomness", "trained_modules",
    "post_processing_modules", "guarantee", "signature", "reproducible", "warnings", "distributed",
})
#: Fields inside the nested objects whose members are fixed (``config`` and ``package_versions`` are free-form).
NESTED_FIELDS = {
    "signature": frozenset({"algorithm", "canonicalization", "public_key", "key_id", "value"}),
    "randomness": frozenset({"sampling", "noise"}),
    "distributed": frozenset({"world_size", "backend", "noise_draws_per_step"}),
}
#: A ledger is a few kilobytes; anything this large is not one (and is not read into memory).
MAX_LEDGER_BYTES = 1 << 20
#: Nesting deeper than this is refused before parsing (a ledger nests three levels; Python's parser
#: would recurse once per level and overflow its stack on 100,000).
MAX_LEDGER_DEPTH = 32


def ledger_file_text(ledger: dict[str, Any]) -> str:
    """The one byte form genguard writes a ledger in (``write_ledger``): what a verifier compares the file to."""
    return json.dumps(ledger, indent=2, sort_keys=False, allow_nan=False) + "\n"


def _json_depth(text: str) -> int:
    """Maximum nesting of ``[``/``{`` outside strings, without recursion (numpy over the bracket characters)."""
    import re

    import numpy as np

    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", text)
    codes = np.frombuffer(bare.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    step = np.zeros(len(codes), dtype=np.int32)
    step[(codes == ord("[")) | (codes == ord("{"))] = 1
    step[(codes == ord("]")) | (codes == ord("}"))] = -1
    return int(np.cumsum(step).max()) if len(step) else 0


class LedgerLoad:
    """A ledger as read: the parsed ``document`` and the ``problems`` (code, message) that refuse it.

    Problems are found before any signature is checked: duplicate keys (two readers could see two
    different claims under one valid signature), non-finite numbers, a byte form other than the one
    genguard writes, and fields no verifier knows.
    """

    def __init__(self, path: Path, document: dict[str, Any], problems: list[tuple[str, str]]) -> None:
        self.path = path
        self.document = document
        self.problems = problems


def load_ledger(path: str | os.PathLike) -> LedgerLoad:
    """Read and strictly parse a ledger; :class:`PrivacyError` (one line, naming the file) when it is no ledger at all."""
    path = Path(path)
    if path.is_dir():
        path = path / LEDGER_FILE
    try:
        if path.exists() and not path.is_file():
            raise PrivacyError(f"{path}: not a regular file")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_LEDGER_BYTES + 1)
    except FileNotFoundError:
        raise PrivacyError(f"{path}: no such ledger") from None
    except OSError as exc:
        raise PrivacyError(f"{path}: unreadable ledger ({exc.strerror or exc})") from None
    if len(raw) > MAX_LEDGER_BYTES:
        raise PrivacyError(f"{path}: unreadable ledger (larger than {MAX_LEDGER_BYTES} bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PrivacyError(f"{path}: unreadable ledger (not UTF-8: {exc.reason} at byte {exc.start})") from None
    depth = _json_depth(text)
    if depth > MAX_LEDGER_DEPTH:
        raise PrivacyError(f"{path}: unreadable ledger (JSON nested {depth} deep; at most {MAX_LEDGER_DEPTH} accepted)")

    problems: list[tuple[str, str]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for k, v in items:
            if k in seen:
                problems.append(("LEDGER_DUPLICATE_KEY", f"key {k!r} appears more than once; readers may disagree "
                                                         "on which value is the claim"))
            seen[k] = v
        return seen

    def constant(name: str) -> float:
        problems.append(("LEDGER_NON_FINITE_NUMBER", f"non-finite number {name} (not JSON; no claim can rest on it)"))
        return math.nan

    def number(token: str) -> float:
        value = float(token)
        if not math.isfinite(value):
            problems.append(("LEDGER_NON_FINITE_NUMBER", f"number {token[:40]} overflows to {value}"))
        return value

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError as exc:
        raise PrivacyError(f"{path}: unreadable ledger ({exc})") from None
    except (ValueError, RecursionError) as exc:  # e.g. an integer of more than 4300 digits
        raise PrivacyError(f"{path}: unreadable ledger ({str(exc).splitlines()[0][:120]})") from None
    if not isinstance(data, dict) or data.get("format") != LEDGER_FORMAT:
        raise PrivacyError(f"{path}: not a genguard privacy ledger (no \"format\": \"{LEDGER_FORMAT}\")")
    if not problems:
        try:
            expected = ledger_file_text(data)
        except ValueError:
            expected = None
        if text not in (expected, None if expected is None else expected[:-1]):
            problems.append(("LEDGER_NOT_CANONICAL", "the file is not in the byte form genguard writes (indent 2, "
                                                     "keys as signed, numbers as Python prints them); it was edited "
                                                     "or produced by another writer"))
    unknown = sorted(set(data) - LEDGER_FIELDS)
    for key, allowed in NESTED_FIELDS.items():
        if isinstance(data.get(key), dict):
            unknown += [f"{key}.{k}" for k in sorted(set(data[key]) - allowed)]
    for key in unknown:
        problems.append(("LEDGER_UNKNOWN_FIELD", f"unknown field {key!r}: no verifier checks it, so it is refused"))
    return LedgerLoad(path, data, problems)


def read_ledger(path: str | os.PathLike) -> dict[str, Any]:
    """The ledger at ``path`` (a file or the model directory holding it), refused unless it parses strictly."""
    loaded = load_ledger(path)
    if loaded.problems:
        code, message = loaded.problems[0]
        more = f" (and {len(loaded.problems) - 1} more)" if len(loaded.problems) > 1 else ""
        raise PrivacyError(f"{loaded.path}: refused ledger: {code}: {message}{more}")
    return loaded.document


def ledger_sha256(path: str | os.PathLike) -> str:
    return sha256_file(path)
