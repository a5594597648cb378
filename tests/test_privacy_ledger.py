"""Signed ledger and its independent verification: one test per finding, tampering included."""
import json
import os
import stat

import pytest

from genguard.guardrails.privacy import PrivacyError, build_ledger, read_ledger, verify_ledger, write_ledger
from genguard.guardrails.privacy.accounting import compute_epsilon
from genguard.guardrails.privacy.ledger import LEDGER_FIELDS, ledger_file_text
from genguard.guardrails.privacy.signing import (
    PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, canonical_bytes, key_directory, load_or_create_signing_key, load_public_key,
    verify_document,
)

N, Q, SIGMA, EPOCHS = 1000, 0.01, 1.0, 2
STEPS = int(EPOCHS / Q)


def _training(**changes):
    rep = {
        "private": True, "mechanism": "DP-SGD (Poisson-subsampled Gaussian)", "sampling": "poisson",
        "sample_rate": Q, "noise_multiplier": SIGMA, "max_grad_norm": 1.0, "steps": STEPS, "delta": 1e-5, "accountant": "rdp", "target_epsilon": 2.0,
        "epsilon": compute_epsilon(Q, SIGMA, STEPS, 1e-5, "rdp"), "private_modules": ["model_"],
        "private_layers": ["Linear"], "grad_sample_mode": "ghost", "gradient_accumulation_steps": 1,
        "secure_mode": False,
    }
    rep.update(changes)
    return rep


#: What today's trainer records about its randomness and modules (added to the built ledger before signing).
SAFE = {"randomness": {"sampling": "secret", "noise": "secret"}, "post_processing_modules": []}


def _model(tmp_path, name="m", ledger_changes=None, key=None, **changes):
    d = tmp_path / name
    d.mkdir()
    (d / "weights.safetensors").write_bytes(b"pretend weights " * 10)
    ledger = build_ledger(_training(**changes), generator="vae", run_id="run-1", seed=7,
                          weights_path=d / "weights.safetensors")
    ledger.update(SAFE)
    ledger.update(ledger_changes or {})
    ledger = {k: v for k, v in ledger.items() if v is not DROP}
    write_ledger(d, ledger, key=key)
    return d


DROP = object()


def _codes(rep, severity=None):
    return {f["code"] for f in rep["findings"] if severity is None or f["severity"] == severity}


def test_ledger_has_every_field_and_verifies(tmp_path):
    d = _model(tmp_path)
    led = read_ledger(d)
    for key in ("sampling", "sample_rate", "noise_multiplier", "max_grad_norm", "steps", "delta",
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
    (d / "ledger.json").write_text(ledger_file_text(led))  # in genguard's own byte form: the signature catches it
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
    write_ledger(d, {**build_ledger(_training(), generator="vae", run_id="r", seed=1,
                                    weights_path=d / "weights.safetensors"), **SAFE}, sign=False)
    assert "SIGNATURE_MISSING" in _codes(verify_ledger(d), "error")


@pytest.mark.parametrize("changes,code", [
    (dict(epsilon=0.05), "EPSILON_UNDERSTATED"),
    (dict(sample_rate=0.0), "SAMPLE_RATE_OUT_OF_DOMAIN"),
    (dict(sampling="shuffle"), "NON_POISSON_SAMPLING"),
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
    if "randomness" not in ledger:  # the one-shot release must say its noise is secret, like DP-SGD
        write_ledger(tmp_path, ledger)
        assert "RANDOMNESS_REGENERABLE" in _codes(verify_ledger(tmp_path), "error")
        ledger["randomness"] = {"sampling": "none", "noise": "secret"}
    write_ledger(tmp_path, ledger)
    rep = verify_ledger(tmp_path)
    codes = {f["code"] for f in rep["findings"]}
    assert rep["consistent"], rep["findings"]
    assert not codes & {"NON_POISSON_SAMPLING", "LAYERS_NOT_RECORDED", "POST_PROCESSING_NOT_RECORDED"}


# --- A verifier that cannot be talked into yes: hostile but correctly signed ledgers ---------------------------
@pytest.fixture
def own_key(tmp_path):
    """The test's own signing key, trusted by the verifier: the signature is never what fails below."""
    return load_or_create_signing_key(tmp_path / "ownkeys")


def _signed(tmp_path, own_key, **changes):
    tmp_path.mkdir(exist_ok=True)
    d = _model(tmp_path, "hostile", key=own_key, **changes)
    rep = verify_ledger(d, trusted_key=own_key.public_key())
    assert rep["signature"]["state"] == "valid", rep["signature"]
    return rep


@pytest.mark.parametrize("changes,code", [
    (dict(noise_multiplier=0.0, epsilon=9.995), "NOISE_MULTIPLIER_OUT_OF_DOMAIN"),
    (dict(noise_multiplier=-1.0), "NOISE_MULTIPLIER_OUT_OF_DOMAIN"),
    (dict(delta=0.0), "DELTA_OUT_OF_DOMAIN"),
    (dict(delta=-1e-5), "DELTA_OUT_OF_DOMAIN"),
    (dict(delta=1.5), "DELTA_OUT_OF_DOMAIN"),
    (dict(steps=-5), "STEPS_OUT_OF_DOMAIN"),
    (dict(steps=200.5), "STEPS_OUT_OF_DOMAIN"),
    (dict(sample_rate=1.5), "SAMPLE_RATE_OUT_OF_DOMAIN"),
    (dict(sample_rate=-0.01), "SAMPLE_RATE_OUT_OF_DOMAIN"),
    (dict(epsilon=-1.0), "EPSILON_OUT_OF_DOMAIN"),
    (dict(max_grad_norm=0.0), "CLIPPING_NORM_OUT_OF_DOMAIN"),
    (dict(noise_multiplier=True), "FIELD_WRONG_TYPE"),
    (dict(steps="200"), "FIELD_WRONG_TYPE"),
    (dict(accountant="magic"), "ACCOUNTANT_UNKNOWN"),
])
def test_impossible_claims_are_refused_with_their_own_code(tmp_path, own_key, changes, code):
    rep = _signed(tmp_path, own_key, **changes)
    assert code in _codes(rep, "error"), rep["findings"]
    assert not rep["consistent"]


def test_zero_noise_claim_is_never_consistent_even_when_epsilon_looks_plausible(tmp_path, own_key):
    rep = _signed(tmp_path, own_key, noise_multiplier=0.0, epsilon=9.995)
    assert {"NOISE_MULTIPLIER_OUT_OF_DOMAIN", "CLAIM_NOT_RECOMPUTED"} <= _codes(rep, "error")
    assert rep["recomputed"] == {}


def _rewrite(d, old, new):
    text = (d / "ledger.json").read_text()
    assert old in text
    (d / "ledger.json").write_text(text.replace(old, new, 1))


def test_duplicate_key_is_refused_before_the_signature(tmp_path, own_key):
    """The parser differential: a first-wins reader sees epsilon 0.01, Python's last-wins json keeps the signed one."""
    d = _model(tmp_path, key=own_key)
    _rewrite(d, '{\n  "format"', '{\n  "epsilon": 0.01,\n  "format"')
    naive = json.loads((d / "ledger.json").read_text())
    assert verify_document(naive, own_key.public_key())["state"] == "valid"  # the attack works on a naive reader
    rep = verify_ledger(d, trusted_key=own_key.public_key())
    assert not rep["consistent"] and "LEDGER_DUPLICATE_KEY" in _codes(rep, "error")
    assert rep["signature"]["state"] == "not checked" and rep["recomputed"] == {}
    with pytest.raises(PrivacyError, match="LEDGER_DUPLICATE_KEY"):
        read_ledger(d)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_epsilon_is_refused(tmp_path, own_key, literal):
    d = _model(tmp_path, key=own_key)
    eps = read_ledger(d)["epsilon"]
    _rewrite(d, f'"epsilon": {json.dumps(eps)}', f'"epsilon": {literal}')
    rep = verify_ledger(d, trusted_key=own_key.public_key())
    assert not rep["consistent"] and "LEDGER_NON_FINITE_NUMBER" in _codes(rep, "error")
    assert rep["claimed_epsilon"] is None
    json.dumps(rep, allow_nan=False)  # the report itself stays valid JSON


@pytest.mark.parametrize("old,new", [
    ('"delta": 1e-05', '"delta": 0.00001'),    # same value, other bytes: the byte form is what was signed
    ('"steps": 200', '"steps": 2e2'),
    ('"steps": 200', '"steps":200'),
    ('"run_id": "run-1"', '"run_id": "run\\u002d1"'),
])
def test_non_canonical_bytes_are_refused(tmp_path, own_key, old, new):
    d = _model(tmp_path, key=own_key)
    _rewrite(d, old, new)
    rep = verify_ledger(d, trusted_key=own_key.public_key())
    assert not rep["consistent"] and _codes(rep, "error") == {"LEDGER_NOT_CANONICAL"}


@pytest.mark.parametrize("changes", [{"epsilon_note": "trust me"}, {"randomness": {"sampling": "secret", "noise": "secret",
                                                                                  "seed_hint": 3}}])
def test_unknown_signed_fields_are_refused(tmp_path, own_key, changes):
    d = _model(tmp_path, key=own_key, ledger_changes=changes)
    rep = verify_ledger(d, trusted_key=own_key.public_key())
    assert not rep["consistent"] and "LEDGER_UNKNOWN_FIELD" in _codes(rep, "error")


def test_build_ledger_writes_only_known_fields(tmp_path):
    """The write side and the verifier agree on the field list (else every new ledger would be refused)."""
    full = _training(privacy_unit="one image", caveat="c", noise_source="secret", clipped_fraction=0.5,
                     max_physical_batch_size=8)
    led = build_ledger(full, generator="vae", run_id="r", seed=1, weights_path=None)
    assert set(led) <= LEDGER_FIELDS, set(led) - LEDGER_FIELDS
    d = _model(tmp_path)
    assert (d / "ledger.json").read_text() == ledger_file_text(read_ledger(d))


@pytest.mark.parametrize("payload,match", [
    ("[" * 100_000 + "]" * 100_000, "nested"),
    ('{"format": "genguard-privacy-ledger/1", "x": ' + "[" * 40 + "]" * 40 + "}", "nested"),
    ('{"format": "genguard-privacy-ledger/1", "steps": 1' + "0" * 5000 + "}", "unreadable"),
    ("\xff\xfe", "UTF-8"),
    ('{"format": "other"}', "not a genguard privacy ledger"),
    ("[]", "not a genguard privacy ledger"),
])
def test_unparseable_ledgers_are_one_privacy_error(tmp_path, payload, match):
    p = tmp_path / "ledger.json"
    p.write_bytes(payload.encode("latin-1") if payload.startswith("\xff") else payload.encode())
    with pytest.raises(PrivacyError, match=match):
        verify_ledger(p)


def test_huge_and_special_files_are_refused_without_reading_them(tmp_path):
    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(64 << 20)  # sparse: costs no disk
    with pytest.raises(PrivacyError, match="larger than"):
        verify_ledger(big)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    with pytest.raises(PrivacyError, match="not a regular file"):
        verify_ledger(fifo)  # would block forever if opened


# --- Randomness a reader of the ledger could regenerate is a failure ------------------------------------------
@pytest.mark.parametrize("changes", [
    {"randomness": DROP},
    {"randomness": DROP, "noise_source": "torch MT19937 seeded from the run seed (reproducible)"},
    {"randomness": {"sampling": "public", "noise": "secret"}},
    {"randomness": {"sampling": "secret", "noise": "seeded"}},
    {"randomness": {"sampling": "secret"}},
    {"randomness": "secret"},
    {"randomness": {"sampling": "secret", "noise": "secret"}, "noise_source": "torch global RNG seeded from the run seed"},
    {"randomness": {"sampling": "secret", "noise": "keyed"}, "grad_sample_mode": "opacus"},
])
def test_regenerable_randomness_is_a_failure(tmp_path, own_key, changes):
    d = _model(tmp_path, key=own_key, ledger_changes=changes)
    rep = verify_ledger(d, trusted_key=own_key.public_key())
    assert not rep["consistent"] and "RANDOMNESS_REGENERABLE" in _codes(rep, "error"), rep["findings"]


def test_keyed_randomness_is_consistent_with_its_caveat(tmp_path, own_key):
    d = _model(tmp_path, key=own_key, ledger_changes={"randomness": {"sampling": "keyed", "noise": "keyed"}})
    rep = verify_ledger(d, trusted_key=own_key.public_key())
    assert rep["consistent"], rep["findings"]
    warn = [f for f in rep["findings"] if f["code"] == "RANDOMNESS_KEYED"]
    assert warn and "must not both be published" in warn[0]["message"]
    d2 = _model(tmp_path, "ok", key=own_key, ledger_changes={"randomness": {"sampling": "secret", "noise": "secret"},
                                                             "grad_sample_mode": "opacus", "secure_mode": True})
    assert verify_ledger(d2, trusted_key=own_key.public_key())["consistent"]


# --- Modules: what was privatised is what was saved -----------------------------------------------------------
@pytest.mark.parametrize("changes,code,severity", [
    ({"trained_modules": ["generator_"]}, "MODULE_NOT_SAVED", "error"),
    ({"trained_modules": ["model_", "encoder_"]}, "MODULE_UNACCOUNTED", "error"),
    ({"post_processing_modules": ["model_"]}, "MODULE_UNACCOUNTED", "error"),
    ({"post_processing_modules": DROP}, "POST_PROCESSING_NOT_RECORDED", "warning"),
])
def test_module_lists(tmp_path, own_key, changes, code, severity):
    d = _model(tmp_path, key=own_key, ledger_changes=changes)
    rep = verify_ledger(d, trusted_key=own_key.public_key())
    assert code in _codes(rep, severity), rep["findings"]
    assert rep["consistent"] == (severity != "error")


def test_gan_with_post_processing_generator_is_consistent(tmp_path, own_key):
    d = _model(tmp_path, key=own_key, ledger_changes={"trained_modules": ["discriminator_", "generator_"],
                                                      "post_processing_modules": ["generator_"]},
               private_modules=["discriminator_"])
    assert verify_ledger(d, trusted_key=own_key.public_key())["consistent"]


# --- Claims the tight accountants cannot compute in bounded memory ------------------------------------------
def test_a_trillion_steps_is_checked_with_rdp_and_says_so(tmp_path, own_key):
    steps = 10**12
    eps = compute_epsilon(Q, SIGMA, steps, 1e-5, "rdp")
    rep = _signed(tmp_path, own_key, steps=steps, epochs=steps * Q, epsilon=eps)
    refused = [f for f in rep["findings"] if f["code"] == "RECOMPUTE_REFUSED"]
    assert {f["message"][:3] for f in refused} == {"PRV", "PLD"} and all("at most" in f["message"] for f in refused)
    assert rep["recomputed"]["prv"] is None and rep["recomputed"]["pld"] is None
    assert rep["recomputed"]["rdp"] == pytest.approx(eps)
    assert rep["consistent"], rep["findings"]  # the claim is the RDP bound itself: a valid (if useless) guarantee
    low = _signed(tmp_path / "low", own_key, steps=steps, epochs=steps * Q, epsilon=eps / 2)
    assert not low["consistent"] and "CLAIM_NOT_RECOMPUTED" in _codes(low, "error")


def test_every_finding_code_is_documented_for_the_privacy_officer():
    from pathlib import Path

    from genguard.guardrails.privacy.verify import FINDING_CODES

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme[readme.index("## For a privacy officer"):readme.index("## Reference generators")]
    assert [c for c in FINDING_CODES if f"| `{c}` |" not in section] == []


# --- Property: no out-of-domain value, whatever its type, is ever called consistent ----------------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_OUT_OF_DOMAIN = {
    "noise_multiplier": st.one_of(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False), st.booleans(),
                                  st.text(max_size=5), st.lists(st.integers(), max_size=2), st.integers(max_value=0)),
    "delta": st.one_of(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
                       st.floats(min_value=1.0 / N, max_value=1e300, allow_nan=False), st.booleans(), st.text(max_size=5)),
    "sample_rate": st.one_of(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False),
                             st.floats(min_value=1.0, exclude_min=True, max_value=1e300, allow_nan=False), st.booleans()),
    "steps": st.one_of(st.integers(max_value=-1), st.floats(allow_nan=False, allow_infinity=False).filter(
        lambda v: v != int(v)), st.booleans(), st.text(max_size=5), st.integers(min_value=10**16, max_value=10**30)),
}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_out_of_domain_value_is_ever_consistent(tmp_path_factory, data):
    field = data.draw(st.sampled_from(sorted(_OUT_OF_DOMAIN)))
    value = data.draw(_OUT_OF_DOMAIN[field])
    d = _model(tmp_path_factory.mktemp("prop"), ledger_changes={field: value})
    rep = verify_ledger(d)
    assert not rep["consistent"], (field, value, rep["findings"])
    assert rep["signature"]["state"] == "valid"
    json.dumps(rep, allow_nan=False)
