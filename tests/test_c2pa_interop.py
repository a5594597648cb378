"""Interop both ways with an independent C2PA implementation, @trustnxt/c2pa-ts (pure TypeScript, no c2pa-rs).

genguard's files are read and validated by c2pa-ts (signature, hashes, and the chain to the genguard root
checked with @peculiar/x509); files c2pa-ts writes -- an AI image, an edit of an AI ingredient, a broken
signature -- are reported correctly by ``genguard verify``. Needs node and npm (tests/interop/setup.sh
installs the package from npm); without them the tests skip, except under CI, where that is a failure.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genguard.guardrails.provenance import tag_file, verify_file

INTEROP = Path(__file__).resolve().parent / "interop"
SCRIPT = INTEROP / "c2pa_ts.mjs"
CLAIM = {"generator": "vae", "run_id": "interop-1"}


@pytest.fixture(scope="module")
def node():
    if shutil.which("node") is None or shutil.which("npm") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("node/npm missing in CI: the interop test must run there")
        pytest.skip("node/npm not installed")
    if not (INTEROP / "node_modules" / "@trustnxt" / "c2pa-ts").is_dir():
        subprocess.run(["bash", str(INTEROP / "setup.sh")], check=True, timeout=300)
    return shutil.which("node")


def _ts(node, *args) -> dict:
    proc = subprocess.run([node, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _photo(path: Path, fmt: str = "JPEG") -> Path:
    from skimage import data

    Image.fromarray(data.coffee()).save(path, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return path


def test_c2pa_ts_validates_what_genguard_writes(node, tmp_path, keys, home):
    anchor = home / "keys" / "root_ca.pem"
    jpg = tag_file(_photo(tmp_path / "a.jpg"), tmp_path / "t.jpg", claim=CLAIM, keys=keys)
    png = tag_file(_photo(tmp_path / "a.png", "PNG"), tmp_path / "t.png", claim=CLAIM, keys=keys)
    small = tmp_path / "s.png"
    Image.fromarray((np.arange(1024).reshape(32, 32) % 251).astype(np.uint8)).save(small)
    small_t = tag_file(small, tmp_path / "s_t.png", claim=CLAIM, keys=keys)
    reopened = tag_file(jpg, tmp_path / "t2.jpg", claim={**CLAIM, "run_id": "interop-2"}, keys=keys, watermark=False)
    for f in (jpg, png, small_t, reopened):
        r = _ts(node, "read", f, anchor)
        assert r["manifest"] and r["valid"], (f.name, r)
        assert r["failures"] == [] and "claimSignature.validated" in r["successes"]
        assert "assertion.dataHash.match" in r["successes"]
        assert r["chainTrusted"] is True, (f.name, r)
    r = _ts(node, "read", jpg, anchor)
    assert r["actions"][0] == {"action": "c2pa.created",
                               "digitalSourceType": "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"}
    assert _ts(node, "read", reopened, anchor)["actions"][0]["action"] == "c2pa.opened"
    assert _ts(node, "read", reopened, anchor)["manifests"] == 2
    # the chain check can fail: the c2pa-rs test root does not anchor genguard's signer
    fixtures_root = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "c2pa" / "test_cert_root_bundle.pem"
    assert _ts(node, "read", jpg, fixtures_root)["chainTrusted"] is False
    # and c2pa-ts sees a changed byte
    bad = bytearray(jpg.read_bytes())
    bad[len(bad) // 2] ^= 0x55
    (tmp_path / "bad.jpg").write_bytes(bytes(bad))
    r = _ts(node, "read", tmp_path / "bad.jpg", anchor)
    assert not r["valid"] and "assertion.dataHash.mismatch" in r["failures"]


@pytest.fixture(scope="module")
def ts_files(node, tmp_path_factory, keys, home):
    d = tmp_path_factory.mktemp("ts")
    src = _photo(d / "src.jpg")
    kd = home / "keys"
    out = {}
    for mode in ("ai", "edit-of-ai", "broken-signature"):
        out[mode] = d / f"{mode}.jpg"
        _ts(node, "sign", src, out[mode], kd / "chain.pem", kd / "signer.key", mode)
    return out


def test_genguard_reports_c2pa_ts_files(ts_files, home, capsys):
    anchor = home / "keys" / "root_ca.pem"
    r = verify_file(ts_files["ai"], trust_anchor=anchor)
    assert r["manifest"]["state"] == "Trusted" and r["verdict"] == "intact" and r["made"] == "ai-generated"
    assert r["signer"]["trust"] == "trusted" and "c2pa-ts" in r["reason"]
    r = verify_file(ts_files["edit-of-ai"], trust_anchor=anchor)
    assert r["verdict"] == "intact" and r["made"] == "ai-generated", r
    assert r["history"]["actions"] == ["c2pa.opened", "c2pa.color_adjustments"]
    ing = r["history"]["tree"]["ingredients"]
    assert len(ing) == 1 and ing[0]["relationship"] == "parentOf" and ing[0]["made"] == "ai-generated"
    r = verify_file(ts_files["broken-signature"], trust_anchor=anchor)
    assert r["verdict"] == "tampered" and "claimSignature.mismatch" in r["reason"]
    from genguard.cli import main

    with pytest.raises(SystemExit) as ex:
        main(["verify", *map(str, ts_files.values()), "--trust-anchor", str(anchor)])
    assert ex.value.code == 1
    out = capsys.readouterr().out
    assert out.count("ai-generated") >= 3


def test_c2pa_ts_agrees_on_its_own_files(node, ts_files):
    assert _ts(node, "read", ts_files["ai"])["valid"] is True
    assert _ts(node, "read", ts_files["edit-of-ai"])["manifests"] == 2
    assert _ts(node, "read", ts_files["broken-signature"])["valid"] is False
