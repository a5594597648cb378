"""Tests for the image watermark, the text watermark, and the tamper cases that rely on them."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from genguard.guardrails.provenance import tag_file, verify_file
from genguard.guardrails.provenance import manifest as mf
from genguard.guardrails.provenance.watermark import (ImageWatermark, N_PAYLOAD, conv_encode, crc8, viterbi_decode)

KEY = b"test-key-0123456789abcdef-0123456"
PAYLOAD = bytes.fromhex("0badc0ffee42")
CLAIM = {"generator": "vae", "run_id": "run-wm-7", "private": True, "epsilon": 4.0, "delta": 1e-5,
         "ledger_sha256": None}


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return data.coffee()[:320, 100:500].copy()  # 320x400 RGB


def _jpeg(a, q):
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=q)
    return np.asarray(Image.open(b).convert("RGB"))


def _psnr(a, b):
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


# ---------------------------------------------------------------- coding
def test_convolutional_code_corrects_errors_and_crc_detects_them():
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2, N_PAYLOAD)
    coded = conv_encode(bits)
    soft = 2.0 * coded - 1.0
    soft[rng.choice(len(soft), 8, replace=False)] *= -1  # 8 hard errors in 108 coded bits
    assert np.array_equal(viterbi_decode(soft), bits)
    c = crc8(bits)
    flipped = bits.copy()
    flipped[5] ^= 1
    assert not np.array_equal(crc8(flipped), c)


# ---------------------------------------------------------------- image watermark
def test_embed_is_invisible_and_roundtrips(photo):
    wm = ImageWatermark(KEY)
    w = wm.embed(photo, PAYLOAD)
    assert w.shape == photo.shape and w.dtype == np.uint8
    assert _psnr(photo, w) >= 38.0
    d = wm.detect(w)
    assert d["found"] and d["payload"] == PAYLOAD.hex() and d["p_value"] <= 1e-6
    json.dumps({k: v for k, v in d.items() if not k.startswith("_")})


@pytest.mark.parametrize("attack", ["jpeg50", "crop70", "resize0.5", "resize0.5_jpeg75", "blur_noise_bright"])
def test_watermark_survives_everyday_edits(photo, attack):
    import cv2

    wm = ImageWatermark(KEY)
    w = wm.embed(photo, PAYLOAD)
    h, wd = w.shape[:2]
    if attack == "jpeg50":
        x = _jpeg(w, 50)
    elif attack == "crop70":
        s = np.sqrt(0.7)
        ch, cw = int(h * s), int(wd * s)
        x = w[(h - ch) // 2:(h - ch) // 2 + ch, (wd - cw) // 2:(wd - cw) // 2 + cw]
    elif attack == "resize0.5":
        x = cv2.resize(w, (wd // 2, h // 2), interpolation=cv2.INTER_AREA)
    elif attack == "resize0.5_jpeg75":
        x = _jpeg(cv2.resize(w, (wd // 2, h // 2), interpolation=cv2.INTER_AREA), 75)
    else:
        x = cv2.GaussianBlur(w, (0, 0), 1.0)
        x = np.clip(x * 1.2 + np.random.default_rng(0).normal(0, 5, x.shape), 0, 255).astype(np.uint8)
    d = wm.detect(x)
    assert d["found"], d
    assert d["payload"] == PAYLOAD.hex()
    assert d["content_binding"]["bound"], d["content_binding"]


def test_every_key_keeps_its_payload_under_jpeg75():
    """20 keys on a 288-px photo under JPEG 75 (PIL defaults, 4:2:0): at most one may fail to read its
    payload bound to the content (the benchmark measures 1 of 100 keys). Without informed embedding 4 of
    these 20 keys lose it (the host image works against a few of their pilot or coded bits in every tile)."""
    import hashlib

    from skimage import data

    from genguard.guardrails.provenance.edits import EVERYDAY_EDITS

    raw = np.asarray(Image.fromarray(data.astronaut()).resize((288, 288)))
    lost = []
    for i in range(20):
        wm = ImageWatermark(hashlib.sha256(b"k%d" % i).digest())
        payload = hashlib.sha256(b"p%d" % i).digest()[:6]
        d = wm.detect(EVERYDAY_EDITS["jpeg75"](wm.embed(raw, payload)))
        if not (d["found"] and d["payload"] == payload.hex() and d["content_binding"]["bound"]):
            lost.append(i)
    assert len(lost) <= 1, lost


def test_binding_p_value_is_exact():
    """The meet-in-the-middle count equals brute-force enumeration of the sign patterns."""
    from itertools import product

    from genguard.guardrails.provenance.watermark import binding_p_value

    rng = np.random.default_rng(3)
    for n in (6, 9):
        f = rng.standard_normal(n)
        for _ in range(5):
            b = rng.integers(0, 2, n)
            obs = np.sum((2 * b - 1) * f)
            brute = np.mean([np.dot(e, np.abs(f)) >= obs - 1e-12 for e in product((-1, 1), repeat=n)])
            assert binding_p_value(f, b) == pytest.approx(brute, abs=1e-12)
    f = rng.standard_normal(32)
    assert binding_p_value(f, (f > 0).astype(int)) == pytest.approx(2.0 ** -32)  # full agreement: 1 pattern of 2**32
    assert binding_p_value(f, (f < 0).astype(int)) == 1.0


def test_unrelated_content_does_not_bind_by_chance():
    """The hash a mark carries for a crop of one photo, tested against crops of other photos (what a
    transplanted mark meets), over 4 keys: the p-values behave like the exact null says (none at the 1e-6
    level among 160 pairs, whose chance is < 1.6e-4, and not many more small ones than uniform: at most 6
    at <= 0.01, where uniform gives 1.6 on average and P[Binom(160, 0.01) > 6] < 2e-3); the deterministic
    seed makes the outcome fixed, the bound says why it is not luck. The benchmark runs 2,000 pairs."""
    import hashlib

    from skimage import data
    from sklearn.datasets import load_sample_images

    from genguard.guardrails.provenance.watermark import BIND_P, _luma, binding_p_value, content_box

    pool = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), data.camera(), data.immunohistochemistry(),
            data.brick(), data.grass()] + list(load_sample_images().images)
    rng = np.random.default_rng(11)

    def crop():
        i = int(rng.integers(len(pool)))
        a = pool[i]
        h, w = a.shape[:2]
        ph, pw = int(rng.integers(256, min(h, 512) + 1)), int(rng.integers(256, min(w, 512) + 1))
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        lum = _luma(a[y:y + ph, x:x + pw])
        t, b, lf, rt = content_box(lum)
        return i, lum[t:b, lf:rt]

    ps = []
    for k in range(4):
        wm = ImageWatermark(hashlib.sha256(b"null-%d" % k).digest())
        for _ in range(40):
            (i, a), (j, b) = crop(), crop()
            while j == i:
                j, b = crop()
            ps.append(binding_p_value(wm.content_features(b), wm.content_hash(a)))
    ps = np.array(ps)
    assert ps.min() > BIND_P and np.sum(ps <= 0.01) <= 6, (ps.min(), np.sum(ps <= 0.01))
    assert np.sum(ps <= 0.5) >= 50  # the p-values are not all pushed to 1 either (a broken test could be)


def test_no_false_detection_without_watermark_or_with_another_key(photo):
    from skimage import data

    wm = ImageWatermark(KEY)
    imgs = [photo, data.astronaut()[:300, :300], data.camera()[100:400, 50:450], data.chelsea(),
            ImageWatermark(b"another-key-000000000000000000000").embed(photo, PAYLOAD)]
    for im in imgs:
        d = wm.detect(im)
        assert not d["found"] and d["p_value"] > 1e-6 and d["payload"] is None


def _rotate(a, deg):
    import cv2

    h, w = a.shape[:2]
    return cv2.warpAffine(a, cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0), (w, h), flags=cv2.INTER_LINEAR)


@pytest.mark.parametrize("edit", ["rot90_flip", "rotate-4", "rotate+2_jpeg75", "aspect0.85", "scale0.6_jpeg60",
                                  "scale1.6_jpeg60", "crop50_offcentre", "webp70"])
def test_watermark_survives_geometry(photo, edit):
    import cv2

    wm = ImageWatermark(KEY)
    w = wm.embed(photo, PAYLOAD)
    h, wd = w.shape[:2]
    if edit == "rot90_flip":
        x = np.ascontiguousarray(np.rot90(w)[:, ::-1])
    elif edit == "rotate-4":
        x = _rotate(w, -4.0)
    elif edit == "rotate+2_jpeg75":
        x = _jpeg(_rotate(w, 2.0), 75)
    elif edit == "aspect0.85":
        x = cv2.resize(w, (round(wd * 0.85), h), interpolation=cv2.INTER_AREA)
    elif edit.startswith("scale"):
        f = float(edit[5:8])
        x = _jpeg(cv2.resize(w, (round(wd * f), round(h * f)), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR), 60)
    elif edit == "crop50_offcentre":
        s = np.sqrt(0.5)
        x = w[7:7 + int(h * s), 31:31 + int(wd * s)]
    else:
        b = io.BytesIO()
        Image.fromarray(w).save(b, "WEBP", quality=70)
        x = np.asarray(Image.open(b).convert("RGB"))
    d = wm.detect(x)
    assert d["found"] and d["p_value"] <= 1e-6, d
    assert d["payload"] == PAYLOAD.hex()
    if edit != "crop50_offcentre":  # a heavy crop changes the coarse content hash; the rest keep the binding
        assert d["content_binding"]["bound"], d["content_binding"]


def test_union_bound_covers_every_alignment_examined(photo):
    """The p-value is the best single-alignment p times the fixed number of alignments the search may
    examine (offsets x tile symmetries x affine and scale candidates), even when found at the first try."""
    from genguard.guardrails.provenance import watermark as W

    assert W.M_ALIGNMENTS == W.TILE ** 2 * (W.N_DIHEDRAL * (1 + W.N_AFFINE_CANDIDATES)
                                           + W.N_SCALE_CANDIDATES * len(W.SCALE_REFINE))
    wm = ImageWatermark(KEY)
    d = wm.detect(wm.embed(photo, PAYLOAD))
    per_alignment = 2.0 ** -63 * 2.0 ** -8  # 0 pilot errors and a matching CRC: the smallest possible
    assert d["bit_errors"] == 0 and d["p_value"] == pytest.approx(W.M_ALIGNMENTS * per_alignment, rel=1e-9)


def test_no_detection_on_varied_clean_images():
    """Crops, rotations, rescales, flips and re-encodings of the photos scikit-image and scikit-learn ship:
    none may be detected (the benchmark runs 1,000 of these; the bound is 1e-6 per image)."""
    import cv2
    from skimage import data
    from sklearn.datasets import load_sample_images

    pool = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket(), np.stack([data.camera()] * 3, -1),
            np.stack([data.brick()] * 3, -1), np.stack([data.grass()] * 3, -1)] + list(load_sample_images().images)
    rng = np.random.default_rng(5)
    wm = ImageWatermark(KEY)
    for i in range(8):
        a = pool[i % len(pool)]
        h, w = a.shape[:2]
        ph, pw = int(rng.integers(200, min(h, 420))), int(rng.integers(200, min(w, 420)))
        y, x = int(rng.integers(0, h - ph + 1)), int(rng.integers(0, w - pw + 1))
        p = np.ascontiguousarray(a[y:y + ph, x:x + pw])
        k = i % 4
        if k == 1:
            p = _rotate(p, float(rng.uniform(-5, 5)))
        elif k == 2:
            p = cv2.resize(p, (round(pw * rng.uniform(0.6, 1.6)), round(ph * rng.uniform(0.6, 1.6))))
        elif k == 3:
            p = _jpeg(np.ascontiguousarray(np.rot90(p)[:, ::-1]), 60)
        d = wm.detect(p)
        assert not d["found"] and d["p_value"] > 1e-6, (i, d["p_value"])


def _copy_attack(marked: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Estimate the mark as (marked - 5x5-median-filtered marked) and add it to an unrelated image."""
    import cv2

    est = marked.astype(np.float32) - cv2.medianBlur(marked, 5).astype(np.float32)
    h, w = min(target.shape[0], marked.shape[0]), min(target.shape[1], marked.shape[1])
    return np.clip(np.rint(target[:h, :w].astype(np.float32) + est[:h, :w]), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- tamper cases through tag/verify
def test_stripped_metadata_still_names_the_run(tmp_path, keys, photo):
    src = tmp_path / "p.png"
    Image.fromarray(photo).save(src)
    tagged = tag_file(src, tmp_path / "t.png", claim=CLAIM, keys=keys)
    r = verify_file(tagged)
    assert r["verdict"] == "intact" and r["watermark"]["found"] and r["watermark"]["bit_errors_vs_manifest"] == 0
    resaved = tmp_path / "resaved.png"
    Image.open(tagged).save(resaved)  # PIL drops the caBX chunk
    r = verify_file(resaved)
    assert r["manifest"]["state"] == "Missing"
    assert r["verdict"] == "stripped" and r["run_id"] == "run-wm-7" and r["generator"] == "vae"
    # the untouched original is untagged
    assert verify_file(src)["verdict"] == "untagged"


def test_reencoded_jpeg_is_never_intact_by_manifest(tmp_path, keys, photo):
    src = tmp_path / "p.jpg"
    Image.fromarray(photo).save(src, quality=92)
    tagged = tag_file(src, tmp_path / "t.jpg", claim=CLAIM, keys=keys)
    assert verify_file(tagged)["verdict"] == "intact"
    data = tagged.read_bytes()
    # 1) plain re-encode: the manifest is gone, the watermark remains
    re1 = tmp_path / "re1.jpg"
    Image.open(tagged).save(re1, quality=75)
    r1 = verify_file(re1)
    assert r1["manifest"]["state"] == "Missing" and r1["verdict"] == "stripped"
    # 2) re-encode that carries the original APP11 (JUMBF) segments over: the hash no longer matches
    segs, pos = [], 2
    while pos < len(data) and data[pos] == 0xFF and data[pos + 1] != 0xDA:
        n = int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] == 0xEB:
            segs.append(data[pos:pos + 2 + n])
        pos += 2 + n
    assert segs, "tagged JPEG has no APP11 segment"
    buf = io.BytesIO()
    Image.open(tagged).save(buf, "JPEG", quality=75)
    b = buf.getvalue()
    re2 = tmp_path / "re2.jpg"
    re2.write_bytes(b[:2] + b"".join(segs) + b[2:])
    r2 = verify_file(re2)
    assert r2["manifest"]["state"] == "Invalid" and r2["verdict"] == "tampered"
    for r in (r1, r2):
        assert r["verdict"] != "intact"


def test_watermark_contradicting_a_valid_manifest_is_tampered(tmp_path, keys, photo):
    src = tmp_path / "p.png"
    Image.fromarray(photo).save(src)
    wm_only = tag_file(src, tmp_path / "wm.png", claim=CLAIM, keys=keys, c2pa=False)
    # sign the watermarked pixels with a valid manifest that declares a different watermark id
    other = {**CLAIM, "run_id": "someone-else"}
    man = mf.build_manifest(other, "x.png", watermark_id=bytes.fromhex("111111111111"))
    forged = tmp_path / "forged.png"
    forged.write_bytes(mf.sign_embedded(wm_only.read_bytes(), "png", man, keys))
    r = verify_file(forged)
    assert r["manifest"]["state"] == "Trusted"
    assert r["verdict"] == "tampered" and "contradicts" in r["reason"]


def test_webp_embedded_manifest(tmp_path, keys, photo):
    src = tmp_path / "p.webp"
    Image.fromarray(photo).save(src, quality=95)
    t = tag_file(src, tmp_path / "t.webp", claim=CLAIM, keys=keys)
    r = verify_file(t)
    assert r["manifest"]["state"] == "Trusted" and r["verdict"] == "intact" and r["watermark"]["found"]


def test_sidecar_binds_csv_json_text(tmp_path, keys):
    # (a WAV gets an embedded manifest and the audio mark instead: tests/test_audio_provenance.py)
    files = {"t.csv": b"a,b\n1,2\n3,4\n", "t.json": b'{"x": 1}\n', "t.txt": b"hello world\n"}
    for name, body in files.items():
        (tmp_path / name).write_bytes(body)
    for name in ("t.csv", "t.json", "t.txt"):
        out = tag_file(tmp_path / name, tmp_path / "out" / name, claim=CLAIM, keys=keys)
        assert out.read_bytes() == (tmp_path / name).read_bytes()  # content unchanged
        assert mf.sidecar_path(out).exists()
        r = verify_file(out)
        assert r["manifest"]["state"] == "Trusted" and r["verdict"] == "intact" and r["run_id"] == "run-wm-7", (name, r)
    # an edited CSV against its sidecar is tampered
    csv = tmp_path / "out" / "t.csv"
    csv.write_bytes(b"a,b\n1,2\n3,5\n")
    r = verify_file(csv)
    assert r["manifest"]["state"] == "Invalid" and r["verdict"] == "tampered"
    # no sidecar: untagged
    assert verify_file(tmp_path / "t.csv")["verdict"] == "untagged"
    # a garbage sidecar is a manifest that does not validate
    (tmp_path / "out" / "t.json.c2pa").write_bytes(b"not a manifest")
    r = verify_file(tmp_path / "out" / "t.json")
    assert r["verdict"] == "tampered" and r["manifest"]["codes"] == ["manifest.unreadable"]


# ---------------------------------------------------------------- text watermark
@pytest.fixture(scope="module")
def tiny_lm():
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=400, n_positions=160, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).eval()


def test_text_watermark_detected_from_ids_alone(tiny_lm):
    import torch

    from genguard.guardrails.provenance.text import TextWatermark

    wm = TextWatermark(b"text-key-0123456789abcdef", vocab_size=400, bos_token_id=0)
    prompt = torch.randint(1, 400, (4, 3), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(prompt)
    with torch.no_grad():
        marked = wm.generate(tiny_lm, prompt, attention_mask=mask, max_new_tokens=120, min_new_tokens=120, pad_token_id=0)
        plain = tiny_lm.generate(prompt, attention_mask=mask, do_sample=True, max_new_tokens=120, min_new_tokens=120,
                                 pad_token_id=0)
    other = TextWatermark(b"another-text-key-000000000", vocab_size=400, bos_token_id=0)
    for row in marked[:, 3:]:
        d = wm.detect_ids(row.tolist())
        assert d["found"] and d["p_value"] <= wm.p_threshold
        assert not other.detect_ids(row.tolist())["found"]
    for row in plain[:, 3:]:
        d = wm.detect_ids(row.tolist())
        assert not d["found"] and d["p_value"] > wm.p_threshold
    assert wm.detect_ids([5])["applicable"] is False
    with pytest.raises(ValueError):
        wm.detect_ids([1, 2, 999])


def test_copy_attack_does_not_frame_the_run(tmp_path, keys, photo):
    """One tagged image minus its median-filtered copy, added to unrelated photos: the mark transplants
    (it is detected), but its content hash does not match the new content, so verify names no run.

    The binding test's level is 1e-6: an unrelated photo binds by chance with probability at most 1e-6
    for a fresh key (an exact conditional test, if the victim's 32 hash bits are fair coins; README), so
    none of the three targets may bind (a chance of at most 3e-6 that a correct binding fails this test)."""
    from skimage import data

    src = tmp_path / "victim.png"
    Image.fromarray(photo).save(src)
    tagged = tag_file(src, tmp_path / "victim-tagged.png", claim=CLAIM, keys=keys)
    marked = np.asarray(Image.open(tagged).convert("RGB"))
    targets = [data.astronaut()[40:360, 60:460], data.coffee()[40:360, 100:500], data.chelsea()[0:300, 20:420]]
    results = []
    for i, target in enumerate(targets):
        forged = tmp_path / f"forged{i}.png"
        Image.fromarray(_copy_attack(marked, target)).save(forged)
        results.append(verify_file(forged))
    assert sum(bool(r["watermark"].get("found")) for r in results) >= 2  # the transplant itself works
    found = [r for r in results if r["watermark"].get("found")]
    # a transplant can also be detected with an unreadable payload (CRC fails: nothing to bind, nothing
    # named); measured over 40 fresh keys, 119 of the 120 transplants read their payload
    readable = [r for r in found if r["watermark"]["payload"] is not None]
    assert readable
    for r in found:
        wm = r["watermark"]
        assert wm["p_value"] <= 1e-6
        assert r["run_id"] is None and r["generator"] is None and not wm.get("names")
    for r in readable:
        wm = r["watermark"]
        assert wm["content_binding"]["bound"] is False and wm["content_binding"]["p_value"] > 1e-6, wm["content_binding"]
        assert "copy attack" in wm["note"] and "copy attack" in r["reason"]
        assert r["verdict"] == "stripped"
    # the genuine tagged image, stripped of its manifest, still names the run
    resaved = tmp_path / "resaved.png"
    Image.open(tagged).save(resaved)
    g = verify_file(resaved)
    assert g["watermark"]["content_binding"]["bound"] and g["run_id"] == "run-wm-7"


def test_averaged_mark_from_many_images_is_not_bound_to_new_content():
    """Averaging the residuals of many images marked for the same run estimates the shared part of the
    mark well (it is detected on a new photo), but each image's content hash differs, so the estimate
    carries no hash of the new content and must not verify as bound to it."""
    import cv2
    from skimage import data
    from sklearn.datasets import load_sample_images

    wm = ImageWatermark(KEY)
    srcs = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()] + list(load_sample_images().images)
    crops = [np.ascontiguousarray(a[o:o + 288, o:o + 288]) for a in srcs for o in (0, 10)]
    est = np.zeros((288, 288, 3), np.float32)
    for c in crops:
        m = wm.embed(c, PAYLOAD)
        est += m.astype(np.float32) - cv2.medianBlur(m, 5).astype(np.float32)
    est /= len(crops)
    target = data.immunohistochemistry()[:288, :288].astype(np.float32)
    forged = np.clip(np.rint(target + 3.0 * est), 0, 255).astype(np.uint8)  # amplified: the averaged residual is weak
    d = wm.detect(forged)
    assert d["found"]  # the attack does transplant a detectable mark (the pilots are shared by every image)
    # ... but not a usable claim: the per-image hashes scramble the coded bits (the payload reads as
    # unreadable), or a decoded hash does not match the new content
    assert d["payload"] is None or d["content_binding"]["bound"] is False, d["content_binding"]
