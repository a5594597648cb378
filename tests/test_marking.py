"""`genguard marking check`: per-requirement lines for genguard's own, stripped, untagged and third-party outputs."""
import json
import random
import secrets
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genguard.guardrails.provenance import KeyStore, tag_file
from genguard.guardrails.provenance import marking as mk
from genguard.guardrails.provenance.edits import EVERYDAY_EDITS

FIXTURES = Path("/work/shared/fixtures/c2pa")
CLAIM = {"generator": "vae", "run_id": "mark-1"}
SIDE = 288  # above the 256-px watermark floor, small enough to keep the edit suite fast


def _photo(path, seed=0, side=SIDE):
    from skimage import data

    a = data.astronaut() if seed == 0 else data.chelsea()
    Image.fromarray(a).resize((side, side)).save(path)
    return path


def _status(rec, req):
    return next(ln for ln in rec["lines"] if ln["requirement"] == req)


@pytest.fixture(scope="module")
def outputs(home, tmp_path_factory):
    d = tmp_path_factory.mktemp("marking")
    keys = KeyStore.load_or_create()
    raw = _photo(d / "raw.png")
    tagged = tag_file(raw, d / "tagged.png", claim=CLAIM, keys=keys)
    with Image.open(tagged) as im:  # same pixels, manifest dropped (PIL writes no caBX chunk)
        im.save(d / "stripped.png")
    csv = d / "table.csv"
    csv.write_text("age,income\n31,1200\n45,3100\n")
    tag_file(csv, claim=CLAIM, keys=keys)
    txt = d / "plain.txt"
    txt.write_text("A paragraph a person wrote, with no watermark in it at all. " * 6)
    tag_file(txt, claim=CLAIM, keys=keys)
    return {"dir": d, "raw": raw, "tagged": tagged, "stripped": d / "stripped.png", "csv": csv, "txt": txt,
            "keys": keys}


def test_genguard_tagged_image_lines(outputs):
    rec = mk.check_file(outputs["tagged"])
    assert rec["modality"] == "image"
    assert [ln["requirement"] for ln in rec["lines"]] == [r.code for r in mk.REQUIREMENTS]
    assert _status(rec, "signed_metadata")["status"] == "met"
    # genguard's local signer uses no time-stamp authority: said, not glossed over
    ts = _status(rec, "timestamp")
    assert ts["status"] == "missing" and "no time-stamp" in ts["detail"]
    assert _status(rec, "ai_disclosure")["status"] == "met"
    assert "trainedAlgorithmicMedia" in _status(rec, "ai_disclosure")["detail"]
    assert _status(rec, "watermark")["status"] == "met"
    assert _status(rec, "robustness")["status"] == "not-sampled"
    for ln in rec["lines"]:
        assert ln["basis"]  # every line names the source it rests on


def test_untagged_image_misses_metadata_and_watermark(outputs):
    rec = mk.check_file(outputs["raw"])
    assert _status(rec, "signed_metadata")["status"] == "missing"
    assert _status(rec, "ai_disclosure")["status"] == "missing"
    assert _status(rec, "watermark")["status"] == "missing"
    assert _status(rec, "robustness")["status"] == "missing"


def test_stripped_image_keeps_watermark_only(outputs):
    rec = mk.check_file(outputs["stripped"])
    assert rec["verdict"] == "stripped"
    assert _status(rec, "signed_metadata")["status"] == "missing"
    assert _status(rec, "watermark")["status"] == "met"


def test_watermark_under_another_key_is_not_ours(outputs, tmp_path):
    KeyStore.create(tmp_path / "other")
    other = KeyStore.load_or_create(tmp_path / "other")
    t = tag_file(outputs["raw"], tmp_path / "other.png", claim=CLAIM, keys=other)
    rec = mk.check_file(t)  # checked with the local key, not the one that marked it
    assert _status(rec, "watermark")["status"] == "missing"
    assert mk.check_file(t, keys=other)["lines"][3]["status"] == "met"


def test_csv_and_text_lines(outputs):
    rec = mk.check_file(outputs["csv"])
    assert rec["modality"] == "tabular"
    assert _status(rec, "signed_metadata")["status"] == "met" and "sidecar" in _status(rec, "signed_metadata")["detail"]
    assert "trainedAlgorithmicData" in _status(rec, "ai_disclosure")["detail"]
    assert _status(rec, "watermark")["status"] == "not-feasible"
    assert _status(rec, "robustness")["status"] == "not-feasible"
    rec = mk.check_file(outputs["txt"])
    assert rec["modality"] == "text"
    assert _status(rec, "signed_metadata")["status"] == "met"
    assert _status(rec, "watermark")["status"] == "missing"  # human text: the detector must not find a mark


def _green_text(key: bytes, n: int = 400, seed: int = 0) -> str:
    """Text whose every byte is on the keyed green list of the byte before (what a watermarked generator favours)."""
    import torch
    from transformers.generation.logits_process import WatermarkLogitsProcessor

    from genguard.guardrails.provenance.text import BYTE_OFFSET, byte_watermark

    wm = byte_watermark(key)
    proc = WatermarkLogitsProcessor(vocab_size=wm.vocab_size, device="cpu", greenlist_ratio=wm.greenlist_ratio,
                                    bias=wm.bias, hashing_key=wm.hashing_key_, seeding_scheme=wm.seeding_scheme,
                                    context_width=wm.context_width)
    rng = random.Random(seed)
    printable = set(range(ord("a"), ord("z") + 1)) | {ord(" ")}
    out = [ord("t")]
    for _ in range(n):
        green = {int(i) - BYTE_OFFSET for i in proc._get_greenlist_ids(torch.tensor([out[-1] + BYTE_OFFSET]))}
        out.append(rng.choice(sorted(green & printable) or sorted(printable)))
    return bytes(out).decode("ascii")


def test_watermarked_text_is_met(outputs, tmp_path):
    p = tmp_path / "gen.txt"
    p.write_text(_green_text(outputs["keys"].watermark_key))
    tag_file(p, claim=CLAIM, keys=outputs["keys"])
    rec = mk.check_file(p)
    assert _status(rec, "watermark")["status"] == "met", _status(rec, "watermark")
    # the same text checked with another key is not watermarked
    KeyStore.create(tmp_path / "k2")
    assert _status(mk.check_file(p, keys=KeyStore.load_or_create(tmp_path / "k2")), "watermark")["status"] == "missing"


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="C2PA fixtures not present")
@pytest.mark.parametrize("name", ["formats/adobe-20240110-single_manifest_store.pdf", "c2pars/ocsp.jpg"])
def test_third_party_ai_manifest(outputs, name):
    rec = mk.check_file(FIXTURES / name)
    assert _status(rec, "signed_metadata")["status"] == "met"
    assert _status(rec, "ai_disclosure")["status"] == "met"
    assert "trainedAlgorithmicMedia" in _status(rec, "ai_disclosure")["detail"]
    # Adobe's signatures carry an RFC 3161 time-stamp, which c2pa validates
    assert _status(rec, "timestamp")["status"] == "met"
    assert _status(rec, "watermark")["status"] in ("missing", "unchecked")


@pytest.mark.skipif(not FIXTURES.is_dir(), reason="C2PA fixtures not present")
def test_tampered_manifest_is_not_signed_metadata(outputs):
    rec = mk.check_file(FIXTURES / "public/adobe-20220124-E-dat-CA.jpg")
    assert _status(rec, "signed_metadata")["status"] == "missing"
    assert "does not validate" in _status(rec, "signed_metadata")["detail"]
    assert _status(rec, "timestamp")["status"] == "missing"
    assert _status(rec, "ai_disclosure")["status"] == "missing"


def test_robustness_suite_measures_the_watermark(outputs):
    key = outputs["keys"].watermark_key
    res = mk.robustness_of(outputs["tagged"], key)
    assert set(res) == set(EVERYDAY_EDITS)
    # the design target (JPEG 75, screenshots) is a rate over keys, not a promise for each: 6 keys in 100
    # lose the mark under JPEG 75 on this photo at the 1e-6 test (host interference tied to the key, see
    # the README's "Informed embedding"), so assert the rate over fresh keys
    from genguard.guardrails.provenance.watermark import ImageWatermark

    with Image.open(outputs["raw"]) as im:
        raw = np.asarray(im.convert("RGB"))
    survived = 0
    for _ in range(10):
        wm = ImageWatermark(secrets.token_bytes(32))
        marked = wm.embed(raw, secrets.token_bytes(6))
        survived += all(wm.detect(EVERYDAY_EDITS[e](marked))["found"] for e in ("jpeg75", "screenshot-png"))
    assert survived >= 8
    # an edit that destroys the pixels destroys the mark: the suite really re-detects
    noise = {"replace": lambda a: np.random.default_rng(0).integers(0, 256, a.shape, dtype=np.uint8),
             "none": lambda a: a}
    assert mk.robustness_of(outputs["tagged"], key, noise) == {"replace": False, "none": True}
    report = mk.check_outputs([outputs["tagged"], outputs["stripped"], outputs["raw"]], sample=1, seed=0)
    rob = report["robustness"]
    assert rob["n_sampled"] == 1 and rob["n_watermarked_images"] == 2
    sampled = [f for f in report["files"] if "edits" in _status(f, "robustness")]
    assert len(sampled) == 1
    line = _status(sampled[0], "robustness")
    assert line["status"] == ("met" if all(line["edits"].values()) else "missing")
    for name, s in rob["survival"].items():
        assert s["n"] == 1 and s["survived"] == int(line["edits"][name])
        assert s["ci95"][0] <= s["rate"] <= s["ci95"][1]
    assert report["by_modality"]["image"]["n_files"] == 3
    assert report["disclaimer"] == "technical check, not legal advice"


def test_wilson_interval():
    lo, hi = mk.wilson(8, 10)
    assert 0.49 < lo < 0.50 and 0.94 < hi < 0.95  # textbook value 0.490-0.943
    assert mk.wilson(0, 0) == (0.0, 1.0)


# ---------------------------------------------------------------- CLI
def _cli(args, capsys):
    from genguard.cli import main

    with pytest.raises(SystemExit) as ex:
        main(args)
    cap = capsys.readouterr()
    return ex.value.code, cap.out, cap.err


def test_cli_exit_1_json_and_disclaimer(outputs, capsys, tmp_path):
    out = tmp_path / "m.json"
    code, so, err = _cli(["marking", "check", str(outputs["tagged"]), str(outputs["raw"]), "--sample", "0",
                          "--json", str(out)], capsys)
    assert code == 1, err
    assert "technical check, not legal advice" in so
    assert "Art. 50(2)" in so
    data = json.loads(out.read_text())
    assert data["passed"] is False and len(data["files"]) == 2
    assert any("signed metadata" in m for m in data["missing"])
    code, so, err = _cli(["marking", "check", str(outputs["csv"]), "--json", "-"], capsys)
    assert json.loads(so)["files"][0]["modality"] == "tabular"  # `--json -`: JSON alone on stdout


def test_cli_exit_0_when_every_requirement_is_met(outputs, capsys, monkeypatch):
    # a signature with a validated RFC 3161 time-stamp (which genguard's offline signer cannot produce):
    # c2pa's codes are added to the real verification of a tagged table
    from genguard.guardrails.provenance import tagging

    real = tagging.verify_file

    def stamped(*a, **k):
        rec = real(*a, **k)
        rec["history"]["timestamp_codes"] = ["timeStamp.validated", "timeStamp.trusted"]
        return rec

    monkeypatch.setattr(tagging, "verify_file", stamped)
    code, so, err = _cli(["marking", "check", str(outputs["csv"])], capsys)
    assert code == 0, so + err
    monkeypatch.setattr(tagging, "verify_file", real)
    code, _, _ = _cli(["marking", "check", str(outputs["csv"])], capsys)
    assert code == 1  # the same table without a time-stamp


def test_cli_bad_input_exit_2(outputs, capsys, tmp_path):
    code, so, err = _cli(["marking", "check", str(tmp_path / "nope.png")], capsys)
    assert code == 2 and "nope.png" in err and "Traceback" not in err
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    code, so, err = _cli(["marking", "check", str(bad), str(outputs["tagged"]), "--sample", "0"], capsys)
    assert code == 2 and "bad.png" in err and "Traceback" not in err
    assert "tagged.png" in so  # one bad file does not sink the batch


def test_folder_expansion_skips_sidecars(outputs, capsys):
    code, so, err = _cli(["marking", "check", str(outputs["dir"]), "--sample", "0", "--json", "-"], capsys)
    names = sorted(Path(f["path"]).name for f in json.loads(so)["files"])
    assert names == ["plain.txt", "raw.png", "stripped.png", "table.csv", "tagged.png"]


def test_small_image_carries_the_zero_bit_mark_only(outputs, tmp_path):
    small = tag_file(_photo(tmp_path / "s.png", side=128), tmp_path / "st.png", claim=CLAIM, keys=outputs["keys"])
    rec = mk.check_file(small)
    assert _status(rec, "signed_metadata")["status"] == "met"
    wm = _status(rec, "watermark")
    # under 256 px: a presence-only mark, and the line says it names no run
    assert wm["status"] == "met" and "presence only" in wm["detail"] and "256 px" in wm["detail"]
    tiny = tag_file(_photo(tmp_path / "t.png", side=12), tmp_path / "tt.png", claim=CLAIM, keys=outputs["keys"])
    wm = _status(mk.check_file(tiny), "watermark")
    assert wm["status"] == "not-feasible" and "16 px" in wm["detail"]
    # an untagged small image is not marked
    assert _status(mk.check_file(_photo(tmp_path / "u.png", side=64)), "watermark")["status"] == "missing"


def test_release_report_marking_section(outputs, tmp_path):
    from genguard.audits.html import render_html
    from genguard.audits.marking import marking_section

    hostile = tmp_path / "<img src=x onerror=alert(1)>.csv"  # file names reach the HTML: they must be escaped
    hostile.write_text("a\n1\n")
    paths = [outputs["tagged"], outputs["raw"], outputs["csv"], hostile]
    sec = marking_section(paths, max_files=3, sample=1, seed=1)
    assert sec["n_outputs"] == 4 and sec["n_checked"] == 3 and "seed 1" in sec["selection"]
    assert sec["disclaimer"] == "technical check, not legal advice" and sec["passed"] is False
    assert sec == marking_section(paths, max_files=3, sample=1, seed=1)  # same seed, same section
    r = sec["requirements"]["signed_metadata"]
    assert r["judged"] == 3 and r["ci95"][0] <= r["rate"] <= r["ci95"][1]
    assert marking_section([])["value"] is None
    full = marking_section(paths, sample=0)
    html = render_html({"gates": [], "marking": full}, {})
    assert "Art. 50(2)" in html and "technical check, not legal advice" in html
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_signer_outside_the_trust_anchor_is_not_signed_metadata(outputs, tmp_path):
    # a manifest signed by someone else's CA, checked against ours: valid bytes, refused signer
    KeyStore.create(tmp_path / "attacker")
    forged = tag_file(outputs["raw"], tmp_path / "forged.png", claim=CLAIM,
                      keys=KeyStore.load_or_create(tmp_path / "attacker"))
    anchor = Path(outputs["keys"].directory) / "root_ca.pem"
    assert _status(mk.check_file(forged), "signed_metadata")["status"] == "met"  # no anchor: unverified signer
    line = _status(mk.check_file(forged, trust_anchor=anchor), "signed_metadata")
    assert line["status"] == "missing" and "signer" in line["detail"]
    assert _status(mk.check_file(outputs["tagged"], trust_anchor=anchor), "signed_metadata")["status"] == "met"


def test_special_and_missing_paths_do_not_sink_the_batch(outputs, capsys, tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)  # opening it would block forever
    code, so, err = _cli(["marking", "check", str(fifo), str(tmp_path / "gone.png"), str(outputs["csv"]),
                          "--json", "-"], capsys)
    assert code == 2 and "Traceback" not in err
    assert "pipe.png" in err and "FIFO" in err and "gone.png" in err
    files = json.loads(so)["files"]
    assert [bool(f.get("error")) for f in files] == [True, True, False]
