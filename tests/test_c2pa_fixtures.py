"""The official C2PA test files: each gets its state, codes and verdict; none crashes, sinks a batch or reaches the network."""
from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from genguard.guardrails.provenance import verify_file

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "c2pa"
ANCHOR = FIXTURES / "test_cert_root_bundle.pem"


@pytest.fixture(scope="module", autouse=True)
def _fixtures_present():
    # CI always has shared/ beside the clone: a missing folder is a broken set-up, never a skip
    assert FIXTURES.is_dir() and ANCHOR.is_file(), f"C2PA fixtures missing: {FIXTURES}"


# (state, verdict, made) without a trust anchor, and the verdict with the c2pa-rs test root as anchor
EXPECTED = {
    "c2pars/C.jpg": ("Valid", "intact", "edited", "intact"),
    "c2pars/CIE-sig-CA.jpg": ("Valid", "intact", "edited", "intact"),
    "c2pars/C_with_CAWG_data.jpg": ("Valid", "intact", "captured", "intact"),
    "c2pars/E-sig-CA.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "c2pars/XCA.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "c2pars/boxhash.jpg": ("Valid", "intact", "edited", "intact"),
    "c2pars/cloud.jpg": ("Remote", "remote", None, "remote"),
    "c2pars/cloudx.jpg": ("Remote", "remote", None, "remote"),
    "c2pars/libpng-test_with_url.png": ("Remote", "remote", None, "remote"),
    "c2pars/libpng-test.png": ("Missing", "untagged", None, "untagged"),
    "c2pars/no_alg.jpg": ("Invalid", "tampered", None, "tampered"),
    "c2pars/prerelease.jpg": ("Invalid", "tampered", None, "tampered"),
    "c2pars/ocsp.jpg": ("Valid", "intact", "ai-composited", "untrusted"),
    "c2pars/riff_bomb_1000.wav": ("Missing", "untagged", None, "untagged"),
    "c2pars/sample3.invalid.wav": ("Missing", "error", None, "error"),
    "c2pars/cloud_manifest.c2pa": ("Missing", "error", None, "error"),
    "cawg/adobe_connected_identities.jpg": ("Invalid", "intact", "unknown", "untrusted"),
    "cawg/duplicate_assertion_reference.jpg": ("Valid", "tampered", "edited", "tampered"),
    "cawg/extra_assertion_claim_v1.jpg": ("Valid", "tampered", "edited", "tampered"),
    "cawg/invalid_cose_sign1.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "cawg/malformed_cbor.jpg": ("Invalid", "tampered", "unknown", "tampered"),
    "cawg/no_hard_binding.jpg": ("Valid", "tampered", "edited", "tampered"),
    "cawg/signature_mismatch.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "cawg/success.jpg": ("Valid", "intact", "edited", "intact"),
    "formats/video1.mp4": ("Valid", "intact", "unknown", "intact"),
    "formats/adobe-20240110-single_manifest_store.pdf": ("Valid", "intact", "ai-generated", "untrusted"),
    "formats/sample1.wav": ("Missing", "untagged", None, "untagged"),
    "public/adobe-20220124-A.jpg": ("Missing", "untagged", None, "untagged"),
    "public/adobe-20220124-CAI.jpg": ("Valid", "intact", "edited", "intact"),
    "public/adobe-20220124-E-clm-CAICAI.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "public/adobe-20220124-E-dat-CA.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "public/adobe-20220124-E-sig-CA.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "public/adobe-20220124-E-uri-CA.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "public/adobe-20220124-E-uri-CIE-sig-CA.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "public/adobe-20220124-XCA.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "public/adobe-20220124-XCI.jpg": ("Invalid", "tampered", "edited", "tampered"),
    "public/nikon-20221019-building.jpeg": ("Invalid", "untrusted", "unknown", "untrusted"),
    # c2pa-rs 0.91.3 reports assertion.dataHash.mismatch here; @trustnxt/c2pa-ts 0.9.4 finds the data hash
    # matching. genguard follows c2pa-rs; which reader is right is not settled (a c2pa-rs regression on
    # these 2023 Truepic JPEGs is possible), so this row pins today's behaviour, not a ground truth.
    "public/truepic-20230212-camera.jpg": ("Invalid", "tampered", "unknown", "tampered"),
}


def _cli(args, capsys):
    from genguard.cli import main

    with pytest.raises(SystemExit) as ex:
        main(args)
    cap = capsys.readouterr()
    return ex.value.code, cap.out, cap.err


def _all_files() -> list[str]:
    return sorted(str(p) for p in FIXTURES.glob("*/*") if p.is_file())


@pytest.mark.parametrize("anchored", [False, True], ids=["no-anchor", "test-root-anchor"])
def test_every_fixture_in_one_batch(tmp_path, capsys, anchored):
    """All official files in one `verify` call: one result each, JSON written, expected state/verdict/made."""
    files = _all_files()
    out = tmp_path / "v.json"
    args = ["verify", *files, "--json", str(out)] + (["--trust-anchor", str(ANCHOR)] if anchored else [])
    code, stdout, err = _cli(args, capsys)
    assert code == 2  # sample3.invalid.wav cannot be parsed; everything else is still reported
    assert "Traceback" not in err and "Traceback" not in stdout
    res = {str(Path(r["path"]).relative_to(FIXTURES)): r for r in json.loads(out.read_text())["files"]}
    assert set(res) == {str(Path(f).relative_to(FIXTURES)) for f in files}
    for name, (state, verdict, made, anchored_verdict) in EXPECTED.items():
        r = res[name]
        want = anchored_verdict if anchored else verdict
        assert (r["manifest"]["state"] if not anchored or state != "Valid" else "Valid") in (state, "Trusted"), (name, r)
        assert r["verdict"] == want, (name, r["verdict"], r["reason"])
        assert r["made"] == made, (name, r["made"])
        assert "\n" not in r["reason"]
    # every manifest verdict names its signer and says how far it is trusted
    for name in ("c2pars/C.jpg", "c2pars/ocsp.jpg", "public/nikon-20221019-building.jpeg"):
        r = res[name]
        assert r["signer"]["common_name"] and r["signer"]["common_name"] in r["reason"], r
        assert r["signer"]["trust"] == ("unverified" if not anchored else
                                        "trusted" if name == "c2pars/C.jpg" else r["signer"]["trust"])
    if not anchored:
        assert "no trust anchor given" in res["c2pars/C.jpg"]["reason"]
    else:
        assert res["c2pars/C.jpg"]["signer"]["trust"] == "trusted"
        assert res["c2pars/ocsp.jpg"]["signer"]["trust"] == "untrusted"  # Adobe's production root is not given
    # the AI disclosure and the signer are in the table too
    assert "ai-generated" in stdout and "ai-composited" in stdout


def test_specific_causes_are_named():
    r = verify_file(FIXTURES / "public" / "adobe-20220124-E-uri-CIE-sig-CA.jpg")
    assert "ingredient" in r["reason"] and "assertion.hashedURI.mismatch" in r["reason"]
    r = verify_file(FIXTURES / "cawg" / "adobe_connected_identities.jpg")
    assert r["signer"]["cawg"] == "not checked offline" and "not checked offline" in r["reason"]
    r = verify_file(FIXTURES / "public" / "nikon-20221019-building.jpeg")
    assert "signingCredential.expired" in r["reason"] and "content hashes match" in r["reason"]
    r = verify_file(FIXTURES / "cawg" / "extra_assertion_claim_v1.jpg")
    assert "cawg.identity.assertion.mismatch" in r["reason"]
    r = verify_file(FIXTURES / "cawg" / "malformed_cbor.jpg")
    assert r["verdict"] == "tampered" and "assertion.required.missing" in r["manifest"]["codes"]
    # an ingredient that was already invalid when added is disclosed history, not hidden
    r = verify_file(FIXTURES / "c2pars" / "CIE-sig-CA.jpg")
    assert r["verdict"] == "intact" and "E-sig-CA.jpg" in r["reason"] and "already invalid" in r["reason"]
    r = verify_file(FIXTURES / "formats" / "adobe-20240110-single_manifest_store.pdf")
    assert r["made"] == "ai-generated" and any("trainedAlgorithmicMedia" in s for s in r["history"]["source_types"])


# ------------------------------------------------------------------ network
class _Recorder(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).hits.append(self.path)
        self.send_response(404)
        self.end_headers()

    def log_message(self, *a):
        pass


def _fix_png_crcs(data: bytes) -> bytes:
    out, pos = [data[:8]], 8
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        typ, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        out.append(data[pos:pos + 8] + body + struct.pack(">I", zlib.crc32(typ + body) & 0xFFFFFFFF))
        pos += 12 + n
    return b"".join(out)


@pytest.fixture
def beacon(tmp_path):
    """libpng-test_with_url.png pointed at a loopback server that records every request (bounded: 5 s)."""
    _Recorder.hits = []
    srv = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    srv.timeout = 5
    port = srv.server_address[1]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    raw = (FIXTURES / "c2pars" / "libpng-test_with_url.png").read_bytes()
    url = f"http://127.0.0.1:{port:05d}/x.c2pa".encode()
    old = b"http://localhost:5000/libpng-test.c2pa"
    assert old in raw
    url = url + b"a" * (len(old) - len(url)) if len(url) < len(old) else url[:len(old)]
    f = tmp_path / "beacon.png"
    f.write_bytes(_fix_png_crcs(raw.replace(old, url)))
    yield f, _Recorder.hits, url.decode()
    srv.shutdown()


def test_remote_manifest_is_not_fetched(beacon, capsys):
    f, hits, url = beacon
    import c2pa

    # the control: with c2pa's defaults the file does make the reader call home -- the test can see it
    with open(f, "rb") as fh:
        try:
            c2pa.Reader("image/png", fh)
        except c2pa.C2paError:
            pass
    assert hits, "control failed: the loopback server saw no request from a default c2pa Reader"
    hits.clear()
    r = verify_file(f)
    assert r["verdict"] == "remote" and r["manifest"]["state"] == "Remote" and url in r["reason"]
    code, out, err = _cli(["verify", str(f)], capsys)
    assert code == 0 and "remote" in out
    assert hits == [], f"genguard reached the network: {hits}"


def test_verify_opens_no_socket(monkeypatch, tmp_path, capsys):
    """In-process: every socket connect / name lookup raises; the whole fixture batch still verifies."""
    calls = []

    def refuse(*a, **k):
        calls.append(a[:2])
        raise OSError("network use forbidden in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    code, out, err = _cli(["verify", *_all_files(), "--json", str(tmp_path / "v.json")], capsys)
    assert code == 2 and calls == []


@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (the in-process and loopback tests still run)")
def test_verify_subprocess_makes_no_inet_connect(tmp_path):
    """At the system-call level (c2pa-rs is native code, out of reach of a Python monkeypatch)."""
    log = tmp_path / "strace.log"
    # control: the tracing sees an AF_INET connect when there is one
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(log), sys.executable, "-c",
                    "import socket; socket.socket().connect_ex(('127.0.0.1', 9))"], check=True, timeout=60)
    assert "AF_INET" in log.read_text()
    files = _all_files()
    env = {**os.environ, "GENGUARD_NO_PROGRESS": "1"}
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log),
                           sys.executable, "-m", "genguard", "verify", *files], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    inet = [ln for ln in log.read_text().splitlines() if "AF_INET" in ln]
    assert inet == [], inet[:5]
