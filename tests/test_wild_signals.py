"""Signals from the wild: public generators' watermarks (checked with the publishers' own encoders),
generator metadata as the tools write it, hostile metadata, and the fused verdict that never says authentic."""
from __future__ import annotations

import io
import itertools
import json
import os
import re
import subprocess
import time
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, PngImagePlugin
from skimage import data as skdata

from genguard.detectors.wild import (P_THRESHOLD, agreement_p_value, generator_metadata,
                                     known_watermarks)
from genguard.examine import fuse


def _need(module: str):
    """Import a test dependency; in CI a missing one is a failure, never a silent skip."""
    if os.environ.get("CI"):
        return __import__(module, fromlist=["_"])
    return pytest.importorskip(module)


def _photos() -> list[np.ndarray]:
    return [skdata.astronaut(), skdata.chelsea(), skdata.rocket(), skdata.coffee()]


def _sdxl_marked(rgb: np.ndarray) -> np.ndarray:
    """A photo through diffusers' own SDXL watermarker, as its pipelines call it (float tensor in [-1, 1])."""
    torch = _need("torch")
    _need("imwatermark")
    wm_mod = _need("diffusers.pipelines.stable_diffusion_xl.watermark")
    t = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
    out = wm_mod.StableDiffusionXLWatermarker().apply_watermark(t)
    return ((out[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def test_agreement_p_value_is_the_exact_permutation_probability():
    rng = np.random.default_rng(0)
    n = 7
    for _ in range(5):
        payload = rng.integers(0, 2, n)
        decoded = rng.integers(0, 2, n)
        obs = int(np.sum((decoded == 1) & (payload == 1)))
        perms = list(itertools.permutations(range(n)))
        exact = np.mean([np.sum((decoded[list(p)] == 1) & (payload == 1)) >= obs for p in perms])
        assert agreement_p_value(decoded, payload) == pytest.approx(exact, rel=1e-9)
    # a biased decode (a flat image decodes to zeros) is no evidence however many zeros agree
    payload = np.array([0] * 40 + [1] * 8)
    assert agreement_p_value(np.zeros(48, int), payload) == 1.0


def test_sdxl_watermark_added_by_diffusers_is_found():
    found = 0
    for rgb in _photos():
        res = known_watermarks(_sdxl_marked(rgb))
        names = [f["name"] for f in res["found"]]
        found += names == ["sdxl"]
        assert set(names) <= {"sdxl"}, res
    # dwtDct itself fails to embed in some photos (the reference decoder misses coffee too)
    assert found >= 3


def test_stable_diffusion_v1_scripts_payload_is_found():
    imw = _need("imwatermark")
    cv2 = _need("cv2")
    enc = imw.WatermarkEncoder()
    enc.set_watermark("bytes", b"StableDiffusionV1")  # what CompVis' scripts/txt2img.py writes
    rgb = skdata.astronaut()
    marked = enc.encode(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "dwtDct")[:, :, ::-1].copy()
    res = known_watermarks(marked)
    assert [f["name"] for f in res["found"]] == ["sd-v1"] and res["found"][0]["p_value"] <= P_THRESHOLD
    assert "proves" in res["found"][0] and "does_not_prove" in res["found"][0]


def _clean_crops(n: int):
    rng = np.random.default_rng(1)
    photos = [skdata.astronaut(), skdata.chelsea(), skdata.rocket(), skdata.coffee(), skdata.hubble_deep_field(),
              np.stack([skdata.camera()] * 3, -1), skdata.immunohistochemistry()]
    for i in range(n):
        ph = photos[i % len(photos)]
        s = int(rng.integers(96, min(ph.shape[:2]) + 1))
        y, x = rng.integers(0, ph.shape[0] - s + 1), rng.integers(0, ph.shape[1] - s + 1)
        crop = ph[y:y + s, x:x + s]
        if i % 3 == 0:
            buf = io.BytesIO()
            Image.fromarray(crop).save(buf, "JPEG", quality=int(rng.integers(60, 96)))
            crop = np.asarray(Image.open(buf).convert("RGB"))
        yield crop


def test_no_known_watermark_on_clean_photos():
    """The false-positive side: 300 crops of untouched photos (benchmarks/wild_signals.py runs 2,000)."""
    hits = [r["found"] for r in map(known_watermarks, _clean_crops(300)) if r["found"]]
    assert not hits


def test_too_small_is_said_not_guessed():
    r = known_watermarks(np.zeros((24, 24, 3), np.uint8))
    assert r["found"] == [] and "too small" in r["reason"]
    with pytest.raises(ValueError, match="shape"):
        known_watermarks(np.zeros((24, 24), np.uint8))


A1111 = ("a photo of a cat, masterpiece\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, "
         "Seed: 1234, Size: 512x512, Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.6.0")
COMFY_PROMPT = {"3": {"class_type": "KSampler", "inputs": {"seed": 1, "steps": 20}},
                "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}}}


def _png(tmp_path: Path, name: str, text: dict[str, str], rgb: np.ndarray | None = None) -> Path:
    info = PngImagePlugin.PngInfo()
    for k, v in text.items():
        info.add_text(k, v, zip=len(v) > 1000)
    p = tmp_path / name
    Image.fromarray(rgb if rgb is not None else skdata.astronaut()[:128, :128]).save(p, pnginfo=info)
    return p


XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       '<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
       'Iptc4xmpExt:DigitalSourceType="http://cv.iptc.org/newscodes/digitalsourcetype/{code}"/></rdf:RDF></x:xmpmeta>')


@pytest.mark.parametrize("text, tool", [
    ({"parameters": A1111}, "AUTOMATIC1111"),
    ({"prompt": json.dumps(COMFY_PROMPT), "workflow": json.dumps({"nodes": [{"id": 3}, {"id": 4}]})}, "ComfyUI"),
    ({"invokeai_metadata": json.dumps({"generation_mode": "txt2img", "steps": 30})}, "InvokeAI"),
    ({"Software": "NovelAI", "Source": "NovelAI Diffusion V3", "Comment": json.dumps({"steps": 28, "seed": 9})}, "NovelAI"),
    ({"XML:com.adobe.xmp": XMP.format(code="trainedAlgorithmicMedia")}, "trainedAlgorithmicMedia"),
])
def test_generator_metadata_is_parsed(tmp_path, text, tool):
    sig = generator_metadata(_png(tmp_path, "g.png", text))["signals"]
    assert any(tool in (s["tool"] or "") and s["finding"] == "generated" for s in sig), sig
    assert all("does_not_prove" in s for s in sig)
    comfy = [s for s in sig if s["tool"] == "ComfyUI"]
    if comfy:
        assert comfy[0]["fields"]["checkpoints"] == ["sd_xl_base_1.0.safetensors"]


def test_jpeg_exif_and_xmp_metadata(tmp_path):
    im = Image.fromarray(skdata.chelsea())
    exif = Image.Exif()
    exif[0x0131] = "Adobe Firefly"
    p = tmp_path / "f.jpg"
    im.save(p, "JPEG", exif=exif, xmp=XMP.format(code="compositeWithTrainedAlgorithmicMedia").encode())
    sig = generator_metadata(p)["signals"]
    assert {(s["signal"], s["finding"]) for s in sig} >= {("metadata.software", "generated"),
                                                           ("metadata.digital_source_type", "edited")}
    # an unsigned capture claim is recorded and decides nothing
    p2 = tmp_path / "c.jpg"
    im.save(p2, "JPEG", xmp=XMP.format(code="digitalCapture").encode())
    sig = generator_metadata(p2)["signals"]
    assert [s["finding"] for s in sig] == ["claim"]


def test_hostile_metadata_never_crashes(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    big = "Steps: 1, Sampler: x, " + "A" * 3_000_000
    for i, text in enumerate([{"prompt": deep}, {"parameters": big}, {"workflow": "{not json"},
                              {"XML:com.adobe.xmp": "<x:xmpmeta>" + "DigitalSourceType=\"" * 50_000}]):
        r = generator_metadata(_png(tmp_path, f"h{i}.png", text))
        assert isinstance(r["signals"], list)
    # a run of XMP openings without a close must not make the packet search quadratic
    hostile = tmp_path / "xmp.jpg"
    Image.fromarray(skdata.chelsea()).save(hostile, "JPEG")
    hostile.write_bytes(hostile.read_bytes() + b"<x:xmpmeta DigitalSourceType=" * 400_000)
    t0 = time.monotonic()
    assert generator_metadata(hostile)["signals"] == []
    assert time.monotonic() - t0 < 10
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe1\x00\x10Exif\x00\x00II*\x00\xff\xff\xff\xff" + b"\x00" * 64)
    assert generator_metadata(bad)["signals"] == []


def _entry(**kw):
    base = {"detector_verdict": "real-looking", "synthetic_probability": 0.1, "provenance": {"verdict": "untagged"},
            "wild": {"metadata": {"signals": []}, "known_watermarks": {"found": []}}, "forgery": {}}
    base.update(kw)
    return base


def test_fused_verdict_orders_evidence_and_never_says_authentic():
    v, reasons, basis = fuse(_entry())
    assert v == "no_evidence" and "not proof of authenticity" in basis
    v, _, basis = fuse(_entry(detector_verdict="synthetic", synthetic_probability=0.95))
    assert v == "generated" and "pixel detector" in basis
    v, _, _ = fuse(_entry(detector_verdict="inconclusive"))
    assert v == "inconclusive"
    sdxl = {"name": "sdxl", "source": "SDXL", "bits": 48, "bit_errors": 0, "p_value": 1e-12, "proves": "p"}
    v, _, basis = fuse(_entry(wild={"metadata": {"signals": []}, "known_watermarks": {"found": [sdxl]}}))
    assert v == "generated" and "SDXL" in basis
    # a signed capture claim against the pixel detector: undecided, both said
    cap = {"verdict": "intact", "made": "captured", "signer": {"common_name": "Cam"}, "manifest": {"codes": []}}
    v, _, basis = fuse(_entry(provenance=cap, detector_verdict="synthetic", synthetic_probability=0.9))
    assert v == "inconclusive" and "capture" in basis
    # a signed manifest broken by an edit of the pixels
    tam = {"verdict": "tampered", "manifest": {"codes": ["assertion.dataHash.mismatch"]}}
    assert fuse(_entry(provenance=tam))[0] == "edited"
    tam2 = {"verdict": "tampered", "manifest": {"codes": ["claimSignature.mismatch"]}}
    assert fuse(_entry(provenance=tam2))[0] == "inconclusive"
    # a discriminating forgery analysis speaks; one that does not is not painted as evidence
    flag = {"flagged": True, "discriminates": True, "false_alarm_rate": 0.0097}
    assert fuse(_entry(forgery={"copy_move": {"score": 0.99, "details": flag}}))[0] == "edited"
    common = {**flag, "false_alarm_rate": 0.049}  # a 5% flag alone does not decide
    assert fuse(_entry(forgery={"block_grid": {"score": 0.95, "details": common}}))[0] == "no_evidence"
    mute = {**flag, "discriminates": False}
    assert fuse(_entry(forgery={"noise": {"score": 0.99, "details": mute}}))[0] == "no_evidence"
    for e in (_entry(), _entry(detector_verdict="synthetic")):
        assert "authentic" != fuse(e)[0]


def test_stripped_file_with_an_unbound_genguard_mark_is_not_called_generated():
    """A mark that does not bind to the pixels (lifted from another marked image, or a heavy crop), or whose
    binding cannot be checked, says a genguard image was involved, not that this one is: undecided on its
    own, and the pixel signals speak."""
    unbound = {"verdict": "stripped", "reason": "no manifest; genguard watermark detected (p=3.1e-16) but not bound",
               "watermark": {"found": True, "payload": "ab" * 6, "p_value": 3e-16,
                             "content_binding": {"bound": False, "p_value": 0.4},
                             "note": "watermark present but not bound to this content (possible copy attack)"}}
    v, reasons, basis = fuse(_entry(provenance=unbound))
    assert v == "inconclusive" and "not bound" in basis and "run's mark" not in basis
    assert [r["strength"] for r in reasons if r["signal"] == "watermark"] == ["weak"]
    # a payload too damaged to check the binding (its CRC fails) is no better: it could be a copy too
    damaged = {**unbound, "reason": "no manifest; genguard watermark detected (p=5.4e-08) but its payload is too damaged",
               "watermark": {"found": True, "payload": None, "payload_crc_ok": False, "p_value": 5e-8,
                             "content_binding": None}}
    v, _, basis = fuse(_entry(provenance=damaged))
    assert v == "inconclusive" and "too damaged" in basis
    # the pixel detector still decides when it fires
    assert fuse(_entry(provenance=unbound, detector_verdict="synthetic", synthetic_probability=0.97))[0] == "generated"
    # a bound mark with its manifest removed is still strong evidence; so is the small images' zero-bit mark
    bound = {**unbound, "watermark": {**unbound["watermark"], "content_binding": {"bound": True}, "note": None}}
    v, _, basis = fuse(_entry(provenance=bound))
    assert v == "generated" and "run's mark" in basis
    small = {"verdict": "stripped", "watermark": {"found": True, "kind": "zero-bit", "payload": None, "p_value": 1e-9,
                                                  "note": "zero-bit mark for small images: it shows this key marked "
                                                          "the image, and names no run"}}
    v, _, basis = fuse(_entry(provenance=small))
    assert v == "generated" and "zero-bit" in basis and "names no run" in basis


def test_detect_on_a_mixed_folder(tmp_path):
    """`genguard detect` on real-world kinds of file: verdicts and reasons in the JSON; a stripped copy
    of a generator's PNG is "no evidence found" (or what the detector alone says), never authentic."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    base = skdata.astronaut()[:256, :256]
    Image.fromarray(_sdxl_marked(skdata.astronaut())).save(folder / "sdxl.png")
    _png(folder, "a1111.png", {"parameters": A1111}, base)
    _png(folder, "comfy.png", {"prompt": json.dumps(COMFY_PROMPT)}, base)
    Image.fromarray(base).save(folder / "stripped.png")  # the same pixels, metadata gone
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "genguard", "detect", str(folder), "--no-forgery", "--json", str(out)],
                          capture_output=True, text=True, env=dict(os.environ, GENGUARD_NO_PROGRESS="1"), timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = {Path(e["path"]).name: e for e in json.loads(out.read_text())}
    assert res["sdxl.png"]["verdict"] == "generated" and "invisible watermark" in res["sdxl.png"]["verdict_basis"]
    for name in ("a1111.png", "comfy.png"):
        assert res[name]["verdict"] == "generated" and "PNG text" in res[name]["verdict_basis"]
    s = res["stripped.png"]
    expected = {"real-looking": "no_evidence", "inconclusive": "inconclusive", "synthetic": "generated"}
    assert s["verdict"] == expected[s["detector_verdict"]] and s["wild"]["metadata"]["signals"] == []
    assert "why:" in proc.stdout and not re.search(r"\bauthentic\b", proc.stdout)
    assert all(e["verdict"] != "authentic" and e["reasons"] is not None for e in res.values())
