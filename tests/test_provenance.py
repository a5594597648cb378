"""Tests for guardrails.provenance: keys, C2PA tagging/verification, tamper cases and the CLI."""
from __future__ import annotations

import io
import json
import stat
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genguard.guardrails.provenance import KeyStore, ProvenanceError, tag_file, verify_file

CLAIM = {"generator": "vae", "run_id": "run-test-1", "private": True, "epsilon": 9.9, "delta": 1e-5,
         "ledger_sha256": "ab" * 32}


def _digit_png(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    a = (rng.random((8, 8)) * 255).astype(np.uint8)
    Image.fromarray(np.kron(a, np.ones((4, 4), dtype=np.uint8))).save(path)
    return path


def _photo(path: Path, name: str = "coffee", fmt: str = "PNG") -> Path:
    from skimage import data

    Image.fromarray(getattr(data, name)()).save(path, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return path


# ---------------------------------------------------------------- PNG chunk surgery (keeps the manifest)
def _chunks(data: bytes):
    pos = 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        typ = data[pos + 4:pos + 8]
        yield typ, data[pos + 8:pos + 8 + n]
        pos += 12 + n


def _chunk(typ: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + typ + body + struct.pack(">I", zlib.crc32(typ + body) & 0xFFFFFFFF)


def _replace_pixels(signed: bytes, pixels_png: bytes) -> bytes:
    """``signed`` with its image data (IHDR/IDAT) taken from ``pixels_png``; every other chunk (caBX) kept."""
    new = {t: b for t, b in _chunks(pixels_png) if t == b"IHDR"}
    idat = b"".join(b for t, b in _chunks(pixels_png) if t == b"IDAT")
    out = [signed[:8]]
    done = False
    for t, b in _chunks(signed):
        if t == b"IHDR":
            out.append(_chunk(t, new[b"IHDR"]))
        elif t == b"IDAT":
            if not done:
                out.append(_chunk(b"IDAT", idat))
                done = True
        else:
            out.append(_chunk(t, b))
    return b"".join(out)


# ---------------------------------------------------------------- keys
def test_keys_created_with_private_modes_and_non_self_signed_leaf(home, keys):
    from cryptography import x509

    d = home / "keys"
    for name in ("root_ca.key", "signer.key", "watermark.key"):
        assert stat.S_IMODE((d / name).stat().st_mode) == 0o600
    chain = x509.load_pem_x509_certificates((d / "chain.pem").read_bytes())
    assert chain[0].issuer != chain[0].subject and chain[0].issuer == chain[1].subject
    assert KeyStore.load_or_create().cert_chain_pem == keys.cert_chain_pem  # loaded, not re-created


def test_self_signed_or_mismatched_user_key_is_rejected(tmp_path, keys, home):
    d = home / "keys"
    with pytest.raises(ProvenanceError, match="self-signed"):
        KeyStore(cert_chain=d / "root_ca.pem", key=d / "root_ca.key")
    with pytest.raises(ProvenanceError, match="does not match"):
        KeyStore(cert_chain=d / "chain.pem", key=d / "root_ca.key")
    with pytest.raises(ProvenanceError, match="cannot read"):
        KeyStore(cert_chain=tmp_path / "nope.pem", key=d / "signer.key")


# ---------------------------------------------------------------- foundation: digits PNG
def test_small_png_gets_manifest_and_zero_bit_mark_and_verifies(tmp_path, keys, home):
    src = _digit_png(tmp_path / "d.png")
    out = tag_file(src, tmp_path / "out" / "d.png", claim=CLAIM, keys=keys)
    r = verify_file(out)
    json.dumps(r)
    assert r["manifest"]["state"] == "Trusted" and r["verdict"] == "intact"
    assert r["generator"] == "vae" and r["run_id"] == "run-test-1"
    assert r["claim"]["epsilon"] == 9.9 and r["claim"]["ledger_sha256"] == "ab" * 32
    # too small for the payload mark: the presence-only zero-bit mark, which names no run
    assert r["watermark"]["kind"] == "zero-bit" and r["watermark"]["found"] and r["watermark"]["payload"] is None
    assert verify_file(out, trust_anchor=home / "keys" / "root_ca.pem")["manifest"]["state"] == "Trusted"
    # the original is untouched and has no manifest
    assert verify_file(src)["manifest"]["state"] == "Missing" and verify_file(src)["verdict"] == "untagged"


def test_in_place_tagging_replaces_file(tmp_path, keys):
    src = _digit_png(tmp_path / "d.png", seed=3)
    assert tag_file(src, claim=CLAIM, keys=keys) == src
    assert verify_file(src)["verdict"] == "intact"


def test_manifest_has_created_action_and_training_assertion(tmp_path, keys):
    import c2pa

    out = tag_file(_digit_png(tmp_path / "d.png"), tmp_path / "o.png", claim=CLAIM, keys=keys)
    with c2pa.Reader(str(out)) as rd:
        m = rd.get_active_manifest()
    labels = {a["label"]: a["data"] for a in m["assertions"]}
    acts = labels["c2pa.actions.v2"]["actions"]
    assert acts[0]["action"] == "c2pa.created"
    assert acts[0]["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
    assert labels["org.genguard.training"]["run_id"] == "run-test-1"


def test_one_changed_pixel_is_invalid(tmp_path, keys):
    out = tag_file(_digit_png(tmp_path / "d.png"), tmp_path / "o.png", claim=CLAIM, keys=keys)
    signed = out.read_bytes()
    a = np.asarray(Image.open(io.BytesIO(signed))).copy()
    a[5, 7] ^= 1
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    bad = tmp_path / "bad.png"
    bad.write_bytes(_replace_pixels(signed, buf.getvalue()))
    r = verify_file(bad)
    assert r["manifest"]["state"] == "Invalid"
    assert any("mismatch" in c for c in r["manifest"]["codes"])
    assert r["verdict"] == "tampered"


def test_manifest_copied_from_another_image_is_tampered(tmp_path, keys):
    donor = tag_file(_digit_png(tmp_path / "a.png", seed=1), tmp_path / "a_t.png", claim=CLAIM, keys=keys)
    other = _digit_png(tmp_path / "b.png", seed=2).read_bytes()
    graft = tmp_path / "graft.png"
    graft.write_bytes(_replace_pixels(donor.read_bytes(), other))
    r = verify_file(graft)
    assert r["manifest"]["state"] == "Invalid" and r["verdict"] == "tampered"


def test_bad_claims_rejected(tmp_path, keys):
    src = _digit_png(tmp_path / "d.png")
    for bad in ({"run_id": "x"}, {**CLAIM, "epsilon": -1}, {**CLAIM, "ledger_sha256": "zz"}, {**CLAIM, "epsilon": float("nan")}):
        with pytest.raises(ProvenanceError):
            tag_file(src, tmp_path / "o.png", claim=bad, keys=keys)
    assert not (tmp_path / "o.png").exists()


def test_unreadable_files_give_error_verdict(tmp_path):
    (tmp_path / "g.png").write_bytes(b"this is not a png")
    png = io.BytesIO()
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(png, "PNG")
    (tmp_path / "t.png").write_bytes(png.getvalue()[:60])
    (tmp_path / "e.jpg").write_bytes(b"")
    for name in ("g.png", "t.png", "e.jpg", "missing.png"):
        r = verify_file(tmp_path / name)
        assert r["verdict"] == "error", (name, r)
        assert str(tmp_path / name) in r["reason"] and "\n" not in r["reason"]
        json.dumps(r)


# ---------------------------------------------------------------- CLI
def _cli(args, capsys):
    from genguard.cli import main

    with pytest.raises(SystemExit) as ex:
        main(args)
    cap = capsys.readouterr()
    return ex.value.code, cap.out, cap.err


def test_cli_tag_verify_exit_codes(tmp_path, keys, capsys):
    a = _digit_png(tmp_path / "a.png", seed=1)
    b = _digit_png(tmp_path / "b.png", seed=2)
    code, out, err = _cli(["tag", str(a), str(b), "--out", str(tmp_path / "t"), "--generator", "vae", "--run-id", "r9"], capsys)
    assert code == 0, err
    ta, tb = tmp_path / "t" / "a.png", tmp_path / "t" / "b.png"
    code, out, err = _cli(["verify", str(ta), str(tb), "--json", str(tmp_path / "v.json")], capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "v.json").read_text())
    assert [f["verdict"] for f in rep["files"]] == ["intact", "intact"] and rep["files"][0]["run_id"] == "r9"
    # a tampered file -> 1
    signed = tb.read_bytes()
    tb.write_bytes(_replace_pixels(signed, a.read_bytes()))
    code, out, err = _cli(["verify", str(ta), str(tb)], capsys)
    assert code == 1
    # a garbage file among good ones -> reported, others still verified, exit 2
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, out, err = _cli(["verify", str(ta), str(tmp_path / "junk.png"), "--json", str(tmp_path / "v2.json")], capsys)
    assert code == 2
    assert err.strip().startswith("genguard: error: ") and "junk.png" in err
    rep = json.loads((tmp_path / "v2.json").read_text())
    assert [f["verdict"] for f in rep["files"]] == ["intact", "error"]


def test_cli_bad_usage_one_line(tmp_path, capsys):
    code, out, err = _cli(["tag", str(tmp_path / "nope.png")], capsys)
    assert code == 2 and err.count("\n") == 1 and "nope.png" in err
    code, out, err = _cli(["verify", str(tmp_path / "x.png"), "--trust-anchor", str(tmp_path / "none.pem")], capsys)
    assert code == 2 and "none.pem" in err


def test_cli_keys_init_and_user_cert(tmp_path, capsys):
    d = tmp_path / "mykeys"
    code, out, err = _cli(["keys", "init", "--dir", str(d)], capsys)
    assert code == 0 and (d / "chain.pem").exists()
    code, out, err = _cli(["keys", "init", "--dir", str(d)], capsys)
    assert code == 2 and "already exist" in err
    src = _digit_png(tmp_path / "a.png")
    code, out, err = _cli(["tag", str(src), "--out", str(tmp_path / "o"), "--cert", str(d / "chain.pem"),
                           "--key", str(d / "signer.key"), "--run-id", "mine"], capsys)
    assert code == 0, err
    r = verify_file(tmp_path / "o" / "a.png", trust_anchor=d / "root_ca.pem")
    assert r["manifest"]["state"] == "Trusted" and r["run_id"] == "mine"


def test_cli_tag_takes_dp_claim_from_ledger(tmp_path, keys, capsys):
    import hashlib

    from genguard.guardrails.privacy import build_ledger, write_ledger
    from genguard.guardrails.privacy.accounting import compute_epsilon

    (tmp_path / "weights.safetensors").write_bytes(b"pretend weights")
    eps = compute_epsilon(0.01, 1.0, 200, 1e-5, "rdp")
    training = {"private": True, "mechanism": "DP-SGD (Poisson-subsampled Gaussian)",     "sampling": "poisson", "sample_rate": 0.01, "noise_multiplier": 1.0,
                "max_grad_norm": 1.0, "steps": 200, "delta": 1e-5, "accountant": "rdp",
                "target_epsilon": 2.0, "epsilon": eps, "private_modules": ["model_"], "private_layers": ["Linear"],
                "grad_sample_mode": "ghost", "gradient_accumulation_steps": 1, "secure_mode": False,
                "randomness": {"sampling": "secret", "noise": "secret"}, "post_processing_modules": []}
    ledger = write_ledger(tmp_path, build_ledger(training, generator="vae", run_id="ledger-run", seed=0,
                                                 weights_path=tmp_path / "weights.safetensors"))
    src = _digit_png(tmp_path / "a.png")
    code, out, err = _cli(["tag", str(src), "--out", str(tmp_path / "o"), "--ledger", str(ledger)], capsys)
    assert code == 0, err
    r = verify_file(tmp_path / "o" / "a.png")
    assert r["run_id"] == "ledger-run" and r["generator"] == "vae"
    assert r["claim"]["epsilon"] == eps and r["claim"]["private"] is True
    assert r["claim"]["ledger_sha256"] == hashlib.sha256(ledger.read_bytes()).hexdigest()
    (tmp_path / "bad.json").write_text("{not json")
    code, out, err = _cli(["tag", str(src), "--out", str(tmp_path / "o2"), "--ledger", str(tmp_path / "bad.json")], capsys)
    assert code == 2 and "bad.json" in err and not (tmp_path / "o2").exists()


# ---------------------------------------------------------------- what genguard writes (C2PA 2.2)
def _claim_of(path: Path, mime: str | None = None, sidecar: Path | None = None):
    import c2pa

    with open(path, "rb") as fh, (c2pa.Reader(mime, fh, sidecar.read_bytes()) if sidecar is not None
                                  else c2pa.Reader(mime or "image/" + path.suffix.lstrip("."), fh)) as rd:
        d = json.loads(rd.detailed_json())
        store = json.loads(rd.json())
    claim = d["manifests"][d["active_manifest"]]["claim"]
    created = [u["url"].rsplit("/", 1)[-1] for u in claim.get("created_assertions", [])]
    gathered = [u["url"].rsplit("/", 1)[-1] for u in claim.get("gathered_assertions", [])]
    return store["manifests"][store["active_manifest"]], created, gathered


def _assertions(m):
    return {a["label"]: a["data"] for a in m["assertions"]}


def test_written_manifest_is_created_namespaced_and_declares_watermark_without_soft_binding(tmp_path, keys):
    out = tag_file(_photo(tmp_path / "p.png"), tmp_path / "o.png", claim=CLAIM, keys=keys)
    m, created, gathered = _claim_of(out, "image/png")
    assert "c2pa.actions.v2" in created and "org.genguard.training" in created  # attributed to the signer
    assert "org.genguard.watermark" in created and gathered == []
    a = _assertions(m)
    acts = a["c2pa.actions.v2"]["actions"]
    assert acts[0]["action"] == "c2pa.created" and acts[0]["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
    for act in acts:  # custom parameters carry an entity-specific namespace
        assert all("." in k for k in act.get("parameters", {}) if k != "ingredients"), act
    # the watermark algorithm is not on the soft-binding list, so no soft-binding assertion and no c2pa.watermarked
    assert "c2pa.soft-binding" not in a and all(x["action"] != "c2pa.watermarked" for x in acts)
    assert any(x["action"] == "org.genguard.watermarked" for x in acts)
    assert a["org.genguard.watermark"]["identifier"] == __import__("genguard.guardrails.provenance",
                                                                   fromlist=["x"]).watermark_id_for("run-test-1").hex()
    r = verify_file(out)
    assert r["verdict"] == "intact" and "watermark agrees" in r["reason"] and r["made"] == "ai-generated"


def test_csv_is_trained_algorithmic_data_and_weights_are_not_media(tmp_path, keys):
    from genguard.guardrails.provenance import manifest as mf

    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    (tmp_path / "w.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    tag_file(tmp_path / "data.csv", claim=CLAIM, keys=keys)
    tag_file(tmp_path / "w.safetensors", claim=CLAIM, keys=keys)
    # the sidecar lies where C2PA 2.2 §15.5.3.1 says a validator looks: data.c2pa beside data.csv
    assert (tmp_path / "data.c2pa").is_file() and not (tmp_path / "data.csv.c2pa").exists()
    m, created, _ = _claim_of(tmp_path / "data.csv", "text/csv", tmp_path / "data.c2pa")
    assert _assertions(m)["c2pa.actions.v2"]["actions"][0]["digitalSourceType"].endswith("/trainedAlgorithmicData")
    m, _, _ = _claim_of(tmp_path / "w.safetensors", "application/octet-stream", tmp_path / "w.c2pa")
    dst = _assertions(m)["c2pa.actions.v2"]["actions"][0]["digitalSourceType"]
    assert "trainedAlgorithmic" not in dst and dst.endswith("/digitalCreation")
    r = verify_file(tmp_path / "data.csv")
    assert r["verdict"] == "intact" and r["manifest"]["sidecar"].endswith("data.c2pa")
    # the older location is still read
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "t.csv").write_text("x\n1\n")
    tag_file(tmp_path / "old" / "t.csv", claim=CLAIM, keys=keys)
    (tmp_path / "old" / "t.c2pa").rename(tmp_path / "old" / "t.csv.c2pa")
    assert verify_file(tmp_path / "old" / "t.csv")["verdict"] == "intact"
    assert mf.sidecar_path(tmp_path / "data.csv") == tmp_path / "data.c2pa"


def test_tag_on_a_file_with_a_manifest_records_opened_with_parent(tmp_path, keys, home):
    first = tag_file(_photo(tmp_path / "p.jpg", fmt="JPEG"), tmp_path / "a.jpg",
                     claim={**CLAIM, "run_id": "first"}, keys=keys, watermark=False)
    second = tag_file(first, tmp_path / "b.jpg", claim={**CLAIM, "run_id": "second"}, keys=keys, watermark=False)
    m, created, _ = _claim_of(second, "image/jpeg")
    acts = _assertions(m)["c2pa.actions.v2"]["actions"]
    assert acts[0]["action"] == "c2pa.opened"
    ings = m["ingredients"]
    assert len(ings) == 1 and ings[0]["relationship"] == "parentOf" and ings[0].get("active_manifest")
    r = verify_file(second)
    assert r["verdict"] == "intact" and r["run_id"] == "second" and r["history"]["n_manifests"] == 2
    assert r["history"]["tree"]["ingredients"][0]["made"] == "ai-generated"
    assert r["history"]["tree"]["ingredients"][0]["title"] == "a.jpg"


def test_retagging_an_invalid_file_keeps_its_failure_in_the_history(tmp_path, keys):
    """Tagging over someone's broken manifest must not launder it: the parent's recorded failure is shown."""
    fx = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "c2pa" / "public" / "adobe-20220124-E-sig-CA.jpg"
    out = tag_file(fx, tmp_path / "re.jpg", claim=CLAIM, keys=keys)
    r = verify_file(out)
    assert r["history"]["recorded_ingredient_failures"][0]["codes"] == ["claimSignature.mismatch"]
    assert "already invalid" in r["reason"] and "watermark agrees" in r["reason"]
    m, _, _ = _claim_of(out, "image/jpeg")
    assert _assertions(m)["c2pa.actions.v2"]["actions"][0]["action"] == "c2pa.opened"


def test_thumbnail_stays_small(tmp_path, keys):
    from skimage import data

    src = tmp_path / "a.webp"
    Image.fromarray(data.astronaut()).save(src, "WEBP", quality=90)
    out = tag_file(src, tmp_path / "o.webp", claim=CLAIM, keys=keys, watermark=False)
    assert out.stat().st_size < src.stat().st_size + 30_000, (src.stat().st_size, out.stat().st_size)


def test_attacker_ca_is_never_intact_under_a_trust_anchor(tmp_path, keys, home, capsys):
    """An altered copy re-signed by an attacker's own CA with the victim's claim: untrusted, exit 1."""
    atk = tmp_path / "attacker"
    KeyStore.create(atk, common_name="mallory")
    victim = tag_file(_digit_png(tmp_path / "v.png"), tmp_path / "v_t.png", claim=CLAIM, keys=keys)
    forged = tag_file(_digit_png(tmp_path / "f.png", seed=5), tmp_path / "f_t.png", claim=CLAIM,
                      keys=KeyStore.load_or_create(atk))
    anchor = home / "keys" / "root_ca.pem"
    rv, rf = verify_file(victim, trust_anchor=anchor), verify_file(forged, trust_anchor=anchor)
    assert rv["verdict"] == "intact" and rv["signer"]["trust"] == "trusted"
    assert rf["verdict"] == "untrusted" and "mallory" in rf["reason"] and rf["run_id"] == CLAIM["run_id"]
    # without an anchor the verdict names the (unverified) signer
    r = verify_file(forged)
    assert r["verdict"] == "intact" and "mallory signer" in r["reason"] and "unverified" in r["reason"]
    code, out, err = _cli(["verify", str(victim), str(forged), "--trust-anchor", str(anchor)], capsys)
    assert code == 1 and "untrusted" in out


def test_wav_with_embedded_manifest_is_read(tmp_path, keys):
    import wave

    import c2pa

    from genguard.guardrails.provenance import manifest as mf

    src = tmp_path / "s.wav"
    with wave.open(str(src), "wb") as wf:
        wf.setnchannels(1)
        wf.setsampwidth(2)
        wf.setframerate(8000)
        wf.writeframes(np.zeros(800, dtype=np.int16).tobytes())
    out = tmp_path / "o.wav"
    buf = io.BytesIO()
    with c2pa.Builder(mf.build_manifest(CLAIM, "o.wav"), context=mf._signing_context(False)) as b, \
            keys.signer() as s:
        b.sign(s, "audio/wav", io.BytesIO(src.read_bytes()), buf)
    out.write_bytes(buf.getvalue())
    r = verify_file(out)
    assert r["manifest"]["state"] == "Trusted" and r["verdict"] == "intact" and r["made"] == "ai-generated"
    assert r["run_id"] == CLAIM["run_id"]
    bad = bytearray(buf.getvalue())
    bad[-10] ^= 0xFF
    (tmp_path / "bad.wav").write_bytes(bytes(bad))
    assert verify_file(tmp_path / "bad.wav")["verdict"] == "tampered"


def test_invalid_manifest_on_undecodable_pixels_is_tampered_not_error(tmp_path, keys):
    out = tag_file(_digit_png(tmp_path / "d.png"), tmp_path / "o.png", claim=CLAIM, keys=keys)
    chunks = list(_chunks(out.read_bytes()))
    body = b"".join(_chunk(t, (b"\x00garbage" * 4) if t == b"IDAT" else b) for t, b in chunks)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    r = verify_file(bad)
    assert r["verdict"] == "tampered" and r["manifest"]["state"] == "Invalid", r


def test_manifest_declared_ai_is_never_authentic_in_detect(tmp_path, keys):
    from genguard.examine import fuse

    out = tag_file(_photo(tmp_path / "p.png"), tmp_path / "o.png", claim=CLAIM, keys=keys)
    entry = {"detector_verdict": "real-looking", "synthetic_probability": 0.01, "provenance": verify_file(out)}
    entry["verdict"], entry["reasons"], entry["verdict_basis"] = fuse(entry)
    assert entry["verdict"] == "generated" and "declares it ai-generated" in entry["verdict_basis"]
    assert [r["signal"] for r in entry["reasons"]][:1] == ["c2pa"] and entry["detector_verdict"] == "real-looking"
    from genguard.review import render

    page = render([{**entry, "path": str(out), "forgery": None}])
    assert "authentic (p=" not in page and "ai-generated per its own manifest" in page


def test_verdict_table_never_reads_an_unexplained_invalid_as_intact():
    from genguard.guardrails.provenance import history as hi

    h = {"made": "captured", "signer": {"common_name": "x"}, "signer_trust": "unverified", "cawg": None,
         "integrity_failures": [], "ingredient_failures": [], "signer_problems": [],
         "recorded_ingredient_failures": []}
    facts = lambda state, codes: hi.Facts(state, h, codes, None, None, {}, None, None, False, False, False, False)  # noqa: E731
    assert hi.decide(facts("Valid", []))[0] == "intact"
    v, reason, rule = hi.decide(facts("Invalid", ["com.example.unknownFailure"]))
    assert v == "tampered" and "com.example.unknownFailure" in reason
    assert hi.decide(facts("Invalid", []))[0] == "tampered"
    # every verdict the table can give has an exit status
    assert {r(facts("Valid", []))[0] for _, r in hi.RULES if r(facts("Valid", []))} <= set(hi.VERDICT_EXIT)
