"""Signed ledger and its independent verification: one test per finding, tampering included."""
import json
import os
import stat

import pytest

from genguard.guardrails.privacy import PrivacyError, build_ledger, read_ledger, verify_ledger, write_ledger
from genguard.guardrails.privacy.accounting import compute_epsilon
from genguard.guardrails.privacy.signing import (
    PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, canonical_bytes, key_directory, load_or_create_signing_key, load_public_key,
    verify_document,
)

N, Q, SIGMA, EPOCHS = 1000, 0.01, 1.0, 2
STEPS = int(EPOCHS / Q)


def _training(**changes):
    rep = {
        "private": True, "mechanism": "DP-SGD (Poisson-subsampled Gaussian)", "dataset_size": N, "sampling": "poisson",
        "sample_rate": Q, "expected_batch_size": Q * N, "noise_multiplier": SIGMA, "max_grad_norm": 1.0,
        "epochs": EPOCHS, "steps": STEPS, "delta": 1e-5, "accountant": "rdp", "target_epsilon": 2.0,
        "epsilon": compute_epsilon(Q, SIGMA, STEPS, 1e-5, "rdp"), "private_modules": ["model_"],
        "private_layers": ["Linear"], "grad_sample_mode": "ghost", "gradient_accumulation_steps": 1,
        "secure_mode": False,
    }
    rep.update(changes)
    return rep


def _model(tmp_path, name="m", ledger_changes=None, **changes):
    d = tmp_path / name
    d.mkdir()
    (d / "weights.safetensors").write_bytes(b"pretend weights " * 10)
    ledger = build_ledger(_training(**changes), generator="vae", run_id="run-1", seed=7,
                          weights_path=d / "weights.safetensors")
    ledger.update(ledger_changes or {})
    write_ledger(d, ledger)
    return d


def _codes(rep, severity=None):
    return {f["code"] for f in rep["findings"] if severity is None or f["severity"] == severity}


def test_ledger_has_every_field_and_verifies(tmp_path):
    d = _model(tmp_path)
    led = read_ledger(d)
    for key in ("dataset_size", "sampling", "sample_rate", "noise_multiplier", "max_grad_norm", "steps", "delta",
                "accountant", "epsilon", "trained_modules", "private_layers", "seed", "package_versions",
                "weights_sha256", "signature"):
        assert led.get(key) is not None, key
    assert led["signature"]["algorithm"] == "Ed25519" and led["trained_modules"] == ["model_"]
    rep = verify_ledger(d)
    assert rep["consistent"], rep["findings"]
    assert _codes(rep) == {"SIGNER_NOT_ANCHORED"}
    assert set(rep["recomputed"]) == {"prv", "pld"}
    assert rep["recomputed"]["pld"] < rep["claimed_epsilon"]
    assert rep["weights"]["state"] == "match" and rep["signature"]["state"] == "valid"


def test_key_created_once_private_and_reused(tmp_path):
    kd = key_directory()
    d1, d2 = _model(tmp_path, "a"), _model(tmp_path, "b")
    assert stat.S_IMODE(os.stat(kd / PRIVATE_KEY_FILE).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(kd).st_mode) == 0o700
    assert read_ledger(d1)["signature"]["key_id"] == read_ledger(d2)["signature"]["key_id"]
    trusted = load_public_key(kd / PUBLIC_KEY_FILE)
    rep = verify_ledger(d1, trusted_key=trusted)
    assert rep["consistent"] and not rep["findings"]


def test_open_private_key_is_refused(tmp_path):
    load_or_create_signing_key(tmp_path)
    os.chmod(tmp_path / PRIVATE_KEY_FILE, 0o644)
    with pytest.raises(PrivacyError, match="chmod 600"):
        load_or_create_signing_key(tmp_path)


def test_untrusted_signer(tmp_path):
    other = load_or_create_signing_key(tmp_path / "otherkeys")
    d = _model(tmp_path)
    rep = verify_ledger(d, trusted_key=other.public_key())
    assert not rep["consistent"] and "SIGNER_NOT_TRUSTED" in _codes(rep, "error")


def test_canonical_form_ignores_key_order_and_signature():
    a = {"b": 1, "a": [1.5, "é"], "signature": {"x": 1}}
    b = {"a": [1.5, "é"], "b": 1}
    assert canonical_bytes(a) == canonical_bytes(b) == '{"a":[1.5,"é"],"b":1}'.encode()


def test_tampered_ledger_is_caught(tmp_path):
    d = _model(tmp_path)
    led = json.loads((d / "ledger.json").read_text())
    led["epsilon"] = led["epsilon"] / 2
    (d / "ledger.json").write_text(json.dumps(led))
    rep = verify_ledger(d)
    assert not rep["consistent"]
    assert {"SIGNATURE_INVALID", "EPSILON_UNDERSTATED"} <= _codes(rep, "error")
    assert verify_document(led)["state"] == "invalid"


def test_tampered_and_missing_weights(tmp_path):
    d = _model(tmp_path)
    with open(d / "weights.safetensors", "ab") as fh:
        fh.write(b"\0")
    rep = verify_ledger(d)
    assert not rep["consistent"] and "WEIGHTS_HASH_MISMATCH" in _codes(rep, "error")
    os.unlink(d / "weights.safetensors")
    assert "WEIGHTS_MISSING" in _codes(verify_ledger(d), "error")


def test_unsigned_ledger(tmp_path):
    d = tmp_path / "u"
    d.mkdir()
    (d / "weights.safetensors").write_bytes(b"w")
    write_ledger(d, build_ledger(_training(), generator="vae", run_id="r", seed=1, weights_path=d / "weights.safetensors"),
                 sign=False)
    assert "SIGNATURE_MISSING" in _codes(verify_ledger(d), "error")


@pytest.mark.parametrize("changes,code", [
    (dict(epsilon=0.05), "EPSILON_UNDERSTATED"),
    (dict(steps=STEPS + 50), "STEPS_INCONSISTENT"),
    (dict(expected_batch_size=Q * N * 2), "SAMPLE_RATE_INCONSISTENT"),
    (dict(sample_rate=0.0), "SAMPLE_RATE_INCONSISTENT"),
    (dict(sampling="shuffle"), "NON_POISSON_SAMPLING"),
    (dict(dataset_size=50_000, delta=1e-4, expected_batch_size=Q * 50_000), "DELTA_TOO_LARGE"),
    (dict(accountant="gdp"), "GDP_CLAIMED_AS_GUARANTEE"),
    (dict(private_layers=["Linear", "BatchNorm1d"]), "UNSUPPORTED_LAYER"),
    (dict(gradient_accumulation_steps=4), "GRADIENT_ACCUMULATION"),
    (dict(noise_multiplier=None), "FIELD_MISSING"),
])
def test_each_finding(tmp_path, changes, code):
    rep = verify_ledger(_model(tmp_path, **changes))
    assert code in _codes(rep, "error"), rep["findings"]
    assert not rep["consistent"]
    assert rep["signature"]["state"] == "valid"  # signed honestly: the claim itself is what is wrong


def test_epsilon_within_one_percent_is_not_a_finding(tmp_path):
    tight = min(compute_epsilon(Q, SIGMA, STEPS, 1e-5, a) for a in ("prv", "pld"))
    rep = verify_ledger(_model(tmp_path, epsilon=tight * 0.995))
    assert rep["consistent"], rep["findings"]


def test_non_private_ledger_has_nothing_to_check(tmp_path):
    d = tmp_path / "np"
    d.mkdir()
    (d / "weights.safetensors").write_bytes(b"w")
    write_ledger(d, build_ledger({"private": False, "steps": 3}, generator="vae", run_id="r", seed=1,
                                 weights_path=d / "weights.safetensors"))
    rep = verify_ledger(d)
    assert rep["consistent"] and "NOT_PRIVATE" in _codes(rep, "info") and rep["recomputed"] == {}


def test_unreadable_ledger_is_a_privacy_error(tmp_path):
    (tmp_path / "ledger.json").write_text("{nope")
    with pytest.raises(PrivacyError, match="unreadable ledger"):
        verify_ledger(tmp_path)
    with pytest.raises(PrivacyError, match="no such ledger"):
        verify_ledger(tmp_path / "missing.json")


def test_regenerable_noise_is_a_warning(tmp_path):
    rep = verify_ledger(_model(tmp_path, noise_source="torch MT19937 seeded from the run seed (reproducible)"))
    assert rep["consistent"] and "NOISE_REGENERABLE" in _codes(rep, "warning")


def test_dpmerf_one_shot_release_verifies_without_false_findings(tmp_path):
    """A full-data Gaussian release (q = 1) needs no Poisson subsampling and has no layers to list."""
    from genguard.generators import make_generator, quick_params
    from genguard.generators.data import digits_split
    from genguard.guardrails.privacy import build_ledger, write_ledger
    from genguard.guardrails.privacy.verify import verify_ledger

    train, _ = digits_split()
    gen = make_generator("dpmerf", **{**quick_params("dpmerf"), "epsilon": 5.0}).fit(train)
    gen.save(tmp_path)
    ledger = build_ledger(gen.training_report_, generator="dpmerf", run_id="r", seed=0,
                          weights_path=tmp_path / "weights.safetensors")
    assert "DP-SGD" not in ledger["guarantee"] and "DP-MERF" in ledger["guarantee"]
    write_ledger(tmp_path, ledger)
    rep = verify_ledger(tmp_path)
    codes = {f["code"] for f in rep["findings"]}
    assert rep["consistent"], rep["findings"]
    assert not codes & {"NON_POISSON_SAMPLING", "LAYERS_NOT_RECORDED"}
