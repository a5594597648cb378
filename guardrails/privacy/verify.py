"""Independent verification of a privacy ledger: strict parsing, signature, weights hash, recomputed epsilon, coded findings.

A privacy officer should not have to trust the team that trained a model.
:func:`verify_ledger` re-derives the DP claim from the ledger's own training
parameters with accountants other than the usual RDP (PRV from opacus, PLD
from Google's dp-accounting) and reports each problem as a finding
``{"code", "severity", "message"}`` (codes: :data:`FINDING_CODES`). The
ledger is ``consistent`` when no finding has severity ``error``.

What it refuses, in order:

1. a file that is no ledger (unreadable, too large, nested too deep, not JSON):
   :class:`PrivacyError`, exit 2 in the CLI;
2. before the signature is checked: duplicate keys, non-finite numbers, a
   byte form other than the one genguard writes, fields no verifier knows
   (``LEDGER_*`` codes; nothing else is checked then, since the claim read
   here might not be the claim another reader sees);
3. any parameter outside the mechanism's domain (its own ``*_OUT_OF_DOMAIN``
   code), a value of the wrong type, a claim no accountant could recompute,
   randomness that a reader of the ledger could regenerate.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from genguard.guardrails.privacy.errors import PrivacyError
from genguard.guardrails.privacy.ledger import LEDGER_FILE, NO_GUARANTEE, guarantee_sentence, load_ledger, sha256_file

WEIGHTS_FILE = "weights.safetensors"
#: The accountants that recompute a claim (tight ones); RDP is the fallback when both refuse.
RECOMPUTE_WITH = ("prv", "pld")
FALLBACK_ACCOUNTANT = "rdp"
#: A claimed epsilon more than this fraction below the recomputed one is understated.
EPSILON_TOLERANCE = 0.01
#: Layer types whose per-sample gradients are not independent or that opacus cannot privatise as is.
UNSUPPORTED_LAYER_TYPES = {
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LazyBatchNorm1d", "LazyBatchNorm2d",
    "LazyBatchNorm3d", "LSTM", "GRU", "RNN", "MultiheadAttention",
}
#: Values of ``randomness.sampling`` / ``randomness.noise`` a guarantee can rest on: ``secret`` (fresh
#: per run, recorded nowhere) or ``keyed`` (derived from the 0600 secret key and the seed).
SAFE_RANDOMNESS = ("secret", "keyed")

FINDING_CODES = {
    # the file (refused before the signature is checked)
    "LEDGER_DUPLICATE_KEY": "a key appears twice: two readers may see two claims under one valid signature",
    "LEDGER_NON_FINITE_NUMBER": "NaN, Infinity or an overflowing number in the ledger",
    "LEDGER_NOT_CANONICAL": "the bytes are not the form genguard writes (edited, or another writer)",
    "LEDGER_UNKNOWN_FIELD": "a field no verifier checks",
    # the signature and the weights
    "SIGNATURE_MISSING": "the ledger is not signed",
    "SIGNATURE_INVALID": "the ledger was edited after signing, or the signature is malformed",
    "SIGNER_NOT_TRUSTED": "signed by a key other than the trusted one",
    "SIGNER_NOT_ANCHORED": "signature intact, but no trusted key was given to check who signed",
    "WEIGHTS_MISSING": "no weights file beside the ledger",
    "WEIGHTS_HASH_MISSING": "the ledger records no weights hash",
    "WEIGHTS_HASH_MISMATCH": "the weights file is not the one the ledger was written for",
    # the claim
    "NOT_PRIVATE": "the run claims no differential privacy",
    "NOT_PRIVATE_WITH_CLAIM": "a run recorded as not private states an epsilon, a delta or a guarantee",
    "GUARANTEE_MISMATCH": "the guarantee sentence is not the one the ledger's own fields give (it states another claim)",
    "FIELD_MISSING": "a field needed to check the claim is missing",
    "FIELD_WRONG_TYPE": "a field has the wrong type (a string or boolean where a number goes, ...)",
    "SAMPLE_RATE_OUT_OF_DOMAIN": "sample rate q not in (0, 1]",
    "NOISE_MULTIPLIER_OUT_OF_DOMAIN": "noise multiplier sigma not > 0",
    "DELTA_OUT_OF_DOMAIN": "delta not in (0, 1)",
    "STEPS_OUT_OF_DOMAIN": "steps not a non-negative integer",
    "CLIPPING_NORM_OUT_OF_DOMAIN": "clipping norm not > 0",
    "EPSILON_OUT_OF_DOMAIN": "claimed epsilon negative",
    "ACCOUNTANT_UNKNOWN": "the ledger's accountant is not a registered one",
    "GDP_CLAIMED_AS_GUARANTEE": "a Gaussian-DP (CLT) approximation claimed as the guarantee",
    "EPSILON_UNDERSTATED": "claimed epsilon below the recomputed one by more than 1%",
    "EPSILON_ABOVE_TARGET": "spent epsilon above the requested target",
    "NON_POISSON_SAMPLING": "non-Poisson sampling accounted as Poisson",
    "GRADIENT_ACCUMULATION": "gradients accumulated across Poisson batches",
    "UNSUPPORTED_LAYER": "a privatised layer breaks per-sample DP-SGD",
    "LAYERS_NOT_RECORDED": "the ledger does not list the privatised layer types",
    "RECOMPUTE_REFUSED": "an accountant cannot recompute this claim in bounded memory (the message names its limit)",
    "RECOMPUTE_FAILED": "an accountant failed while recomputing epsilon",
    "CLAIM_NOT_RECOMPUTED": "no accountant could confirm the claim: it is not consistent",
    "RANDOMNESS_REGENERABLE": "batch sampling or noise not recorded as secret or keyed: a reader may regenerate it",
    "RANDOMNESS_KEYED": "randomness keyed by the secret key and seed: two releases sharing both must not both be published",
    "RANDOMNESS_INCONSISTENT": "the ledger's reproducible flag contradicts where it says the randomness came from",
    "TRAINING_WARNING": "the trainer recorded a warning about this run (e.g. a clipping norm far above the gradients)",
    "MODULE_NOT_SAVED": "a privately trained module is missing from the trained (saved) modules",
    "MODULE_UNACCOUNTED": "a trained module is neither private nor post-processing",
    "POST_PROCESSING_NOT_RECORDED": "the ledger does not say which modules are post-processing",
    "DISTRIBUTED_INVALID": "the recorded world size or backend of a distributed run is malformed",
    "DISTRIBUTED_NOISE_NOT_ONCE": "a distributed run did not add exactly one noise draw per logical step",
}


def _finding(code: str, severity: str, message: str) -> dict[str, str]:
    assert code in FINDING_CODES, code
    return {"code": code, "severity": severity, "message": message}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    try:
        return _is_number(v) and math.isfinite(v)
    except OverflowError:
        return False


class _Claim:
    """Typed, domain-checked reading of a private run's parameters; each bad value becomes one finding."""

    #: field -> (domain test, code, what the domain is)
    DOMAINS = {
        "sample_rate": (lambda v: 0.0 < v <= 1.0, "SAMPLE_RATE_OUT_OF_DOMAIN", "in (0, 1]"),
        "noise_multiplier": (lambda v: v > 0.0, "NOISE_MULTIPLIER_OUT_OF_DOMAIN", "> 0"),
        "max_grad_norm": (lambda v: v > 0.0, "CLIPPING_NORM_OUT_OF_DOMAIN", "> 0"),
        "steps": (lambda v: isinstance(v, int) and v >= 0, "STEPS_OUT_OF_DOMAIN", "a non-negative integer"),
        "delta": (lambda v: 0.0 < v < 1.0, "DELTA_OUT_OF_DOMAIN", "in (0, 1)"),
        "epsilon": (lambda v: v >= 0.0, "EPSILON_OUT_OF_DOMAIN", ">= 0"),
        "target_epsilon": (lambda v: v > 0.0, "EPSILON_OUT_OF_DOMAIN", "> 0"),
        "gradient_accumulation_steps": (lambda v: isinstance(v, int) and v >= 1, "GRADIENT_ACCUMULATION", "an integer >= 1"),
    }
    #: What the accounting needs, and nothing n follows from (the ledger does not publish n).
    REQUIRED = ("sampling", "sample_rate", "noise_multiplier", "max_grad_norm", "steps", "delta",
                "accountant", "epsilon")
    STRINGS = ("sampling", "accountant", "mechanism", "guarantee", "noise_source", "grad_sample_mode", "privacy_unit")

    def __init__(self, ledger: dict[str, Any], findings: list[dict[str, str]]) -> None:
        self.values: dict[str, float | int | None] = {}
        for key in self.REQUIRED:
            if ledger.get(key) is None:
                findings.append(_finding("FIELD_MISSING", "error", f"field {key!r} is missing"))
        for key, (ok, code, domain) in self.DOMAINS.items():
            v = ledger.get(key)
            self.values[key] = None
            if v is None:
                continue
            if not _is_number(v):
                findings.append(_finding("FIELD_WRONG_TYPE", "error", f"field {key!r} must be a number, got {v!r:.60}"))
            elif not _finite(v):
                findings.append(_finding("LEDGER_NON_FINITE_NUMBER", "error", f"field {key!r} is not finite ({v!r})"))
            elif key == "steps" and isinstance(v, float):
                findings.append(_finding(code, "error", f"steps must be {domain}, got {v!r} (a float)"))
            elif not ok(v):
                findings.append(_finding(code, "error", f"{key} = {v!r} is outside the mechanism's domain ({domain})"))
            else:
                self.values[key] = v
        for key in self.STRINGS:
            v = ledger.get(key)
            if v is not None and not isinstance(v, str):
                findings.append(_finding("FIELD_WRONG_TYPE", "error", f"field {key!r} must be a string, got {v!r:.60}"))
        for key in ("secure_mode",):
            v = ledger.get(key)
            if v is not None and not isinstance(v, bool):
                findings.append(_finding("FIELD_WRONG_TYPE", "error", f"field {key!r} must be true or false, got {v!r:.60}"))

    def __getitem__(self, key: str):
        return self.values.get(key)


def _modules(ledger: dict[str, Any], key: str, findings: list[dict[str, str]]) -> list[str] | None:
    v = ledger.get(key)
    if v is None:
        return None
    if not isinstance(v, list) or not all(isinstance(m, str) for m in v):
        findings.append(_finding("FIELD_WRONG_TYPE", "error", f"field {key!r} must be a list of module names"))
        return None
    return v


def _check_randomness(ledger: dict[str, Any], full_batch: bool, findings: list[dict[str, str]]) -> None:
    """Sampling and noise must be secret from every reader of the ledger (or keyed by the 0600 key)."""
    r = ledger.get("randomness")
    noise_source = ledger.get("noise_source") if isinstance(ledger.get("noise_source"), str) else ""
    if not isinstance(r, dict):
        hint = f" (noise source: {noise_source})" if noise_source else ""
        findings.append(_finding("RANDOMNESS_REGENERABLE", "error",
                                 "the ledger does not record that batch sampling and noise were secret or keyed"
                                 f"{hint}; the seed it publishes may regenerate them, and the DP guarantee assumes "
                                 "they are secret: retrain with a genguard that records its randomness"))
        return
    keyed = []
    for part in ("sampling", "noise"):
        v = r.get(part)
        if part == "sampling" and full_batch and v == "none":
            continue  # every record in every release: there is no selection to keep secret
        if v not in SAFE_RANDOMNESS:
            findings.append(_finding("RANDOMNESS_REGENERABLE", "error",
                                     f"randomness.{part} = {v!r}: only {' or '.join(SAFE_RANDOMNESS)} keep it from "
                                     "readers of the ledger; with it known, the DP guarantee does not hold"))
        elif v == "keyed":
            keyed.append(part)
    if "seeded from the run seed" in noise_source or (ledger.get("grad_sample_mode") == "opacus"
                                                       and ledger.get("secure_mode") is not True
                                                       and r.get("noise") != "secret"):
        findings.append(_finding("RANDOMNESS_REGENERABLE", "error",
                                 f"grad_sample_mode {ledger.get('grad_sample_mode')!r}, noise source {noise_source!r}: "
                                 "the noise comes from a generator seeded by the published run seed"))
    flag = ledger.get("reproducible")
    if flag is not None and (not isinstance(flag, bool) or flag != bool(keyed)):
        findings.append(_finding("RANDOMNESS_INCONSISTENT", "error",
                                 f"reproducible = {flag!r}, but {', '.join(keyed) or 'nothing'} recorded as keyed"))
    for w in ledger.get("warnings") or [] if isinstance(ledger.get("warnings"), list) else []:
        text = w.get("message") if isinstance(w, dict) else w
        code = w.get("code") if isinstance(w, dict) else None
        findings.append(_finding("TRAINING_WARNING", "warning", f"{code or 'trainer'}: {str(text)[:300]}"))
    if keyed:
        findings.append(_finding("RANDOMNESS_KEYED", "warning",
                                 f"{' and '.join(keyed)} derived from the secret key and the run seed: reproducible by "
                                 "the key holder only; two releases trained with the same key and seed on neighbouring "
                                 "data must not both be published (their difference cancels the noise)"))


def _check_distributed(ledger: dict[str, Any], findings: list[dict[str, str]]) -> None:
    """A run over several processes is accounted exactly as one (q over the whole data set, one noise draw
    per logical step, added once): the recomputation ignores the world size, so the record must say that
    the noise was added once; anything else (a draw per rank, a share per rank) is another mechanism."""
    d = ledger.get("distributed")
    if d is None:
        return  # a ledger from before distributed training: one process
    if not isinstance(d, dict):
        findings.append(_finding("DISTRIBUTED_INVALID", "error", f"field 'distributed' must be an object, got {d!r:.40}"))
        return
    w = d.get("world_size")
    if not (isinstance(w, int) and not isinstance(w, bool) and w >= 1):
        findings.append(_finding("DISTRIBUTED_INVALID", "error",
                                 f"distributed.world_size = {w!r:.40}: must be an integer >= 1"))
    b = d.get("backend")
    if b is not None and not isinstance(b, str):
        findings.append(_finding("DISTRIBUTED_INVALID", "error", f"distributed.backend = {b!r:.40}: must be a string"))
    k = d.get("noise_draws_per_step")
    if k != 1 or isinstance(k, bool):
        findings.append(_finding("DISTRIBUTED_NOISE_NOT_ONCE", "error",
                                 f"distributed.noise_draws_per_step = {k!r:.40} over world size {w!r:.20}: the claim "
                                 "is recomputed for one Gaussian draw of std sigma*C per logical step, added once"))


def _check_modules(ledger: dict[str, Any], findings: list[dict[str, str]]) -> None:
    private = _modules(ledger, "private_modules", findings)
    trained = _modules(ledger, "trained_modules", findings)
    post = _modules(ledger, "post_processing_modules", findings)
    if private is not None and trained is not None:
        missing = [m for m in private if m not in trained]
        if missing:
            findings.append(_finding("MODULE_NOT_SAVED", "error",
                                     f"private modules {', '.join(missing)} are not among the trained modules "
                                     f"({', '.join(trained) or 'none'}): the released weights are not what was privatised"))
    if "post_processing_modules" not in ledger:
        findings.append(_finding("POST_PROCESSING_NOT_RECORDED", "warning",
                                 "the ledger does not list its post-processing modules (an older genguard); "
                                 "check by hand that only the private modules saw the data"))
    elif post is not None and trained is not None and private is not None:
        loose = [m for m in trained if m not in private and m not in post]
        both = [m for m in post if m in private]
        if loose or both:
            findings.append(_finding("MODULE_UNACCOUNTED", "error",
                                     (f"trained modules {', '.join(loose)} are neither private nor post-processing"
                                      if loose else "")
                                     + ("; " if loose and both else "")
                                     + (f"modules {', '.join(both)} are listed as both private and post-processing"
                                        if both else "")))


def _recompute(claim: _Claim, claimed: float | None, accountants: tuple[str, ...],
               findings: list[dict[str, str]]) -> dict[str, Any]:
    from genguard.guardrails.privacy.accountants import AccountantLimitError, get_accountant

    q, sigma, steps, delta = claim["sample_rate"], claim["noise_multiplier"], claim["steps"], claim["delta"]
    recomputed: dict[str, Any] = {}
    if None in (q, sigma, steps, delta):
        findings.append(_finding("CLAIM_NOT_RECOMPUTED", "error",
                                 "the claim cannot be recomputed: sample rate, noise multiplier, steps and delta must "
                                 "all be present and inside the mechanism's domain"))
        return recomputed

    def run(name: str, refusal_severity: str) -> None:
        try:
            recomputed[name] = get_accountant(name).epsilon(q, sigma, steps, delta)
        except AccountantLimitError as exc:
            recomputed[name] = None
            findings.append(_finding("RECOMPUTE_REFUSED", refusal_severity, str(exc)))
        except Exception as exc:  # an accountant failing is reported, never a crash of the verification
            recomputed[name] = None
            findings.append(_finding("RECOMPUTE_FAILED", "error", f"{name.upper()}: {str(exc).splitlines()[0][:200]}"))

    for acc in accountants:
        run(acc, "warning")
    tight = [v for v in recomputed.values() if v is not None]
    if not tight and FALLBACK_ACCOUNTANT not in recomputed:
        run(FALLBACK_ACCOUNTANT, "error")  # cheap at any step count: the claim is still checked, loosely
    valid = {k: v for k, v in recomputed.items() if v is not None}
    if not valid:
        findings.append(_finding("CLAIM_NOT_RECOMPUTED", "error", "no accountant could recompute the claim"))
        return recomputed
    if claimed is None:
        return recomputed
    listed = ", ".join(f"{k.upper()} {v:.4g}" for k, v in valid.items())
    bound = min(valid.values())  # each accountant gives an upper bound; the tightest is the least a claim may state
    if claimed >= bound * (1 - EPSILON_TOLERANCE):
        return recomputed
    if tight:
        findings.append(_finding("EPSILON_UNDERSTATED", "error",
                                 f"claimed epsilon {claimed:.4g} is below the recomputed {listed} "
                                 f"by more than {EPSILON_TOLERANCE:.0%}"))
    else:  # only the loose RDP bound: a claim below it is neither confirmed nor refuted
        findings.append(_finding("CLAIM_NOT_RECOMPUTED", "error",
                                 f"claimed epsilon {claimed:.4g} is below {listed}, and the tight accountants refused "
                                 "(see RECOMPUTE_REFUSED): the claim cannot be confirmed"))
    return recomputed


def _check_claim(ledger: dict[str, Any], accountants: tuple[str, ...], findings: list[dict[str, str]]) -> dict[str, Any]:
    from genguard.guardrails.privacy.accountants import REGISTRY

    claim = _Claim(ledger, findings)
    q = claim["sample_rate"]
    accountant = ledger.get("accountant") if isinstance(ledger.get("accountant"), str) else ""
    guarantee = ledger.get("guarantee") if isinstance(ledger.get("guarantee"), str) else ""
    mechanism = ledger.get("mechanism") if isinstance(ledger.get("mechanism"), str) else ""
    if accountant.lower() in ("gdp", "gaussian", "clt") or "GDP" in guarantee.upper().split():
        findings.append(_finding("GDP_CLAIMED_AS_GUARANTEE", "error",
                                 f"accountant {accountant!r}: Gaussian DP is a central-limit approximation that can "
                                 "understate epsilon; it is not a guarantee"))
    elif accountant and accountant not in REGISTRY:
        findings.append(_finding("ACCOUNTANT_UNKNOWN", "error",
                                 f"accountant {accountant!r} is not one of {', '.join(REGISTRY)}: its claim is unchecked"))
    full_batch = q is not None and q == 1.0  # every record in every release: no subsampling to assume
    if ledger.get("sampling") != "poisson" and not full_batch:
        findings.append(_finding("NON_POISSON_SAMPLING", "error",
                                 f"sampling {ledger.get('sampling')!r} accounted as Poisson subsampling; "
                                 "the stated epsilon does not apply"))
    # epsilon is recomputed from q, sigma, steps and delta alone; delta < 1/n is the trainer's check,
    # since the ledger does not publish n (it would tell add/remove-one neighbours apart).
    accum = claim["gradient_accumulation_steps"]
    if accum is not None and accum > 1:
        findings.append(_finding("GRADIENT_ACCUMULATION", "error",
                                 f"gradients accumulated over {int(accum)} Poisson batches per step; the accountant "
                                 "charged each batch as a separate noisy step"))
    dp_sgd = "DP-SGD" in (mechanism or "DP-SGD")
    layers = ledger.get("private_layers")
    if dp_sgd and not isinstance(layers, list):
        findings.append(_finding("LAYERS_NOT_RECORDED", "warning", "the ledger does not list the privatised layer types"))
    elif isinstance(layers, list):
        bad = sorted(set(map(str, layers)) & UNSUPPORTED_LAYER_TYPES)
        if bad:
            findings.append(_finding("UNSUPPORTED_LAYER", "error",
                                     f"privatised layers {', '.join(bad)} break per-sample DP-SGD "
                                     "(BatchNorm mixes records; recurrent/attention layers need opacus' DP variants)"))
    _check_randomness(ledger, full_batch, findings)
    if dp_sgd:
        _check_modules(ledger, findings)
        _check_distributed(ledger, findings)
    claimed, target = claim["epsilon"], claim["target_epsilon"]
    if target is not None and claimed is not None and claimed > target * (1 + EPSILON_TOLERANCE):
        findings.append(_finding("EPSILON_ABOVE_TARGET", "warning", f"epsilon {claimed:.4g} exceeds the target {target:.4g}"))
    if full_batch and "analytic" not in accountants:
        accountants = (*accountants, "analytic")  # the exact curve of an un-subsampled Gaussian release
    return _recompute(claim, claimed, accountants, findings)


def _check_guarantee(ledger: dict[str, Any], findings: list[dict[str, str]]) -> None:
    """The sentence a reader reads must be the one the checked fields give, caveat included."""
    stated = ledger.get("guarantee")
    try:
        expected = guarantee_sentence(ledger)
    except (KeyError, TypeError, ValueError):
        expected = None  # fields of the wrong type are findings of their own
    if stated != expected:
        findings.append(_finding("GUARANTEE_MISMATCH", "error",
                                 f"the guarantee reads {stated!r:.160}, but the ledger's fields give "
                                 f"{expected!r:.160}"))


def verify_ledger(path: str | os.PathLike, *, weights: str | os.PathLike | None = None,
                  trusted_key: Any = None, accountants: tuple[str, ...] = RECOMPUTE_WITH) -> dict[str, Any]:
    """Check the ledger at ``path`` (a ``ledger.json`` or the model directory holding it).

    ``weights`` defaults to ``weights.safetensors`` beside the ledger; ``trusted_key`` is an Ed25519
    public key (see :func:`guardrails.privacy.signing.load_public_key`). :class:`PrivacyError` when the
    file is no ledger at all (the CLI's exit 2); everything else is a coded finding.
    """
    from genguard.guardrails.privacy.signing import verify_document

    loaded = load_ledger(path)
    path, ledger = loaded.path, loaded.document
    findings: list[dict[str, str]] = []
    recomputed: dict[str, Any] = {}
    sig: dict[str, Any] = {"state": "not checked", "key_id": None,
                           "reason": "the file was refused before its signature was checked"}
    wpath = Path(weights) if weights is not None else path.parent / WEIGHTS_FILE
    recorded = ledger.get("weights_sha256")
    wstate: dict[str, Any] = {"path": str(wpath), "recorded_sha256": recorded if isinstance(recorded, str) else None,
                              "sha256": None, "state": "not checked"}
    if loaded.problems:
        findings += [_finding(code, "error", f"{path}: {msg}") for code, msg in loaded.problems]
    else:
        sig = verify_document(ledger, trusted_key)
        if sig["state"] == "missing":
            findings.append(_finding("SIGNATURE_MISSING", "error", f"{path}: {sig['reason']}"))
        elif sig["state"] == "invalid":
            findings.append(_finding("SIGNATURE_INVALID", "error", f"{path}: {sig['reason']}"))
        elif sig["state"] == "untrusted":
            findings.append(_finding("SIGNER_NOT_TRUSTED", "error", sig["reason"]))
        elif trusted_key is None:
            findings.append(_finding("SIGNER_NOT_ANCHORED", "info", sig["reason"]))

        if not recorded:
            wstate["state"] = "not recorded"
            findings.append(_finding("WEIGHTS_HASH_MISSING", "error", "the ledger records no SHA-256 of the weights"))
        elif not isinstance(recorded, str):
            wstate["state"] = "not recorded"
            findings.append(_finding("FIELD_WRONG_TYPE", "error", "field 'weights_sha256' must be a hex string"))
        elif not wpath.is_file():
            wstate["state"] = "missing"
            findings.append(_finding("WEIGHTS_MISSING", "error", f"{wpath}: no weights file to check against the ledger"))
        else:
            wstate["sha256"] = sha256_file(wpath)
            wstate["state"] = "match" if wstate["sha256"] == recorded else "mismatch"
            if wstate["state"] == "mismatch":
                findings.append(_finding("WEIGHTS_HASH_MISMATCH", "error",
                                         f"{wpath}: SHA-256 {wstate['sha256'][:16]}... differs from the ledger's "
                                         f"{recorded[:16]}..."))

        private = ledger.get("private")
        if not isinstance(private, bool):
            findings.append(_finding("FIELD_WRONG_TYPE", "error", f"field 'private' must be true or false, got {private!r:.40}"))
        elif not private:
            findings.append(_finding("NOT_PRIVATE", "info",
                                     "trained without differential privacy: there is no (epsilon, delta) claim to check"))
            if (ledger.get("epsilon") is not None or ledger.get("delta") is not None
                    or ledger.get("guarantee") not in (None, NO_GUARANTEE)):
                findings.append(_finding("NOT_PRIVATE_WITH_CLAIM", "error",
                                         "private is false, yet the ledger states epsilon "
                                         f"{ledger.get('epsilon')!r:.30}, delta {ledger.get('delta')!r:.30} and "
                                         f"guarantee {ledger.get('guarantee')!r:.80}: no such claim was checked"))
        else:
            recomputed = _check_claim(ledger, tuple(accountants), findings)
            _check_guarantee(ledger, findings)
    consistent = not any(f["severity"] == "error" for f in findings)
    claimed = ledger.get("epsilon")
    return {
        "ledger": str(path),
        "run_id": ledger.get("run_id") if isinstance(ledger.get("run_id"), str) else None,
        "generator": ledger.get("generator") if isinstance(ledger.get("generator"), str) else None,
        "private": ledger.get("private") is True,
        "consistent": consistent,
        "claimed_epsilon": float(claimed) if _finite(claimed) else None,
        "delta": float(ledger["delta"]) if _finite(ledger.get("delta")) else None,
        "accountant": ledger.get("accountant") if isinstance(ledger.get("accountant"), str) else None,
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
