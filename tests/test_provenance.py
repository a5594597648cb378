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
def test_small_png_gets_manifest_without_watermark_and_verifies(tmp_path, keys, home):
    src = _digit_png(tmp_path / "d.png")
    out = tag_file(src, tmp_path / "out" / "d.png", claim=CLAIM, keys=keys)
    r = verify_file(out)
    json.dumps(r)
    assert r["manifest"]["state"] == "Valid" and r["verdict"] == "intact"
    assert r["generator"] == "vae" and r["run_id"] == "run-test-1"
    assert r["claim"]["epsilon"] == 9.9 and r["claim"]["ledger_sha256"] == "ab" * 32
    assert r["watermark"]["applicable"] is False and "small" in r["watermark"]["reason"]
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

    ledger = tmp_path / "ledger.json"
    ledger.write_text(json.dumps({"run_id": "ledger-run", "generator": "vae", "private": True,
                                  "epsilon": 7.5, "delta": 1e-5}))
    src = _digit_png(tmp_path / "a.png")
    code, out, err = _cli(["tag", str(src), "--out", str(tmp_path / "o"), "--ledger", str(ledger)], capsys)
    assert code == 0, err
    r = verify_file(tmp_path / "o" / "a.png")
    assert r["run_id"] == "ledger-run" and r["generator"] == "vae"
    assert r["claim"]["epsilon"] == 7.5 and r["claim"]["private"] is True
    assert r["claim"]["ledger_sha256"] == hashlib.sha256(ledger.read_bytes()).hexdigest()
    (tmp_path / "bad.json").write_text("{not json")
    code, out, err = _cli(["tag", str(src), "--out", str(tmp_path / "o2"), "--ledger", str(tmp_path / "bad.json")], capsys)
    assert code == 2 and "bad.json" in err and not (tmp_path / "o2").exists()
