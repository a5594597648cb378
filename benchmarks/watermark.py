"""Benchmark of genguard's image and text watermarks against invisible-watermark (dwtDct, dwtDctSvd): quality, robustness, false positives, speed.

Run:  OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/watermark.py [--json OUT] [--quick] [--genguard-only] [--no-text] [--timing-only] [--small-only] [--keys N] [--baselines-only]
      [--photos N] [--negatives N] [--attacks SUBSTR,...]

Images: 16 real photos shipped by scikit-image and scikit-learn, at native size, as RGB. Every
method embeds a 48-bit payload. Detection rates are at a false-positive rate of at most 1e-6 per image:
for genguard the watermark's own binomial test; for invisible-watermark (which has no test) a match of
at least 41 of 48 bits, since P[Binom(48, 1/2) >= 41] < 1e-6. False positives: genguard's detector on
1,000 unwatermarked images (random patches of real photos, and upscaled outputs of the reference VAE).
Text: transformers' green-list watermark (via guardrails.provenance.text) on a tiny GPT-2 trained
here for a few hundred steps on half of Python's documentation topics (pydoc_data); human text =
consecutive 200-token passages of the other half plus standard-library docstrings.
Everything runs on one thread (the machine is shared); figures are printed, not asserted.
"""
from __future__ import annotations

import argparse
import io
import os
import sys
import time
from math import comb
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

cv2.setNumThreads(1)

PAYLOAD = bytes.fromhex("5ac0ffee1234")
PAYLOAD_BITS = np.unpackbits(np.frombuffer(PAYLOAD, dtype=np.uint8)).astype(int)
BASELINE_MAX_ERRORS = max(k for k in range(49) if sum(comb(48, i) for i in range(k + 1)) / 2 ** 48 <= 1e-6)
PHOTOS = ["astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "hubble_deep_field",
          "immunohistochemistry", "grass", "china.jpg", "flower.jpg", "brick", "gravel", "clock", "cell"]


def load_photos() -> dict[str, np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_images

    sk = load_sample_images()
    sk_map = {Path(f).name: im for f, im in zip(sk.filenames, sk.images)}
    out = {}
    for name in PHOTOS:
        a = sk_map[name] if name.endswith(".jpg") else getattr(data, name)()
        a = np.asarray(a)
        if a.ndim == 2:
            a = np.stack([a] * 3, axis=-1)
        out[name] = np.ascontiguousarray(a[..., :3].astype(np.uint8))
    return out


# ------------------------------------------------------------------ attacks
def _jpeg(a, q):
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=q)
    return np.asarray(Image.open(b).convert("RGB"))


def _resize(a, f):
    h, w = a.shape[:2]
    return cv2.resize(a, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def _crop(a, area):
    h, w = a.shape[:2]
    s = np.sqrt(area)
    ch, cw = round(h * s), round(w * s)
    y, x = (h - ch) // 2, (w - cw) // 2
    return a[y:y + ch, x:x + cw]


def _webp(a, q):
    b = io.BytesIO()
    Image.fromarray(a).save(b, "WEBP", quality=q)
    return np.asarray(Image.open(b).convert("RGB"))


def _rotate(a, deg):
    """Rotation about the centre, same canvas, corners filled black (what most editors do without 'expand')."""
    h, w = a.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), deg, 1.0)
    return cv2.warpAffine(a, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def _aspect(a, fx):
    h, w = a.shape[:2]
    return cv2.resize(a, (max(1, round(w * fx)), h), interpolation=cv2.INTER_AREA if fx < 1 else cv2.INTER_LINEAR)


def _scale(a, f):
    h, w = a.shape[:2]
    return cv2.resize(a, (max(1, round(w * f)), max(1, round(h * f))),
                      interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


def _crop_corner(a, area):
    """Off-centre crop keeping ``area`` of the pixels (top-left anchored, so the tile phase changes)."""
    h, w = a.shape[:2]
    s = np.sqrt(area)
    ch, cw = round(h * s), round(w * s)
    y, x = (h - ch) // 3, (w - cw) // 5
    return a[y:y + ch, x:x + cw]


def _pad(a, frac=0.15, value=(240, 240, 240)):
    """Screenshot-style padding: a flat frame around the image, 15% of each side (the image is ~59% of the canvas)."""
    h, w = a.shape[:2]
    ph, pw = round(h * frac), round(w * frac)
    return cv2.copyMakeBorder(a, ph, ph, pw, pw, cv2.BORDER_CONSTANT, value=value)


def _noise(a, sigma=5.0, seed=0):
    return np.clip(np.rint(a + np.random.default_rng(seed).normal(0, sigma, a.shape)), 0, 255).astype(np.uint8)


ATTACKS = {
    "none": lambda a: a,
    "jpeg90": lambda a: _jpeg(a, 90),
    "jpeg75": lambda a: _jpeg(a, 75),
    "jpeg50": lambda a: _jpeg(a, 50),
    "resize0.5": lambda a: _resize(a, 0.5),
    "resize0.5+back": lambda a: cv2.resize(_resize(a, 0.5), (a.shape[1], a.shape[0]), interpolation=cv2.INTER_LINEAR),
    "crop90%": lambda a: _crop(a, 0.9),
    "crop70%": lambda a: _crop(a, 0.7),
    "blur1": lambda a: cv2.GaussianBlur(a, (0, 0), 1.0),
    "noise5": lambda a: _noise(a),
    "bright+20%": lambda a: np.clip(np.rint(a * 1.2), 0, 255).astype(np.uint8),
    "bright-20%": lambda a: np.clip(np.rint(a * 0.8), 0, 255).astype(np.uint8),
    "resize0.5+jpeg75": lambda a: _jpeg(_resize(a, 0.5), 75),
    # geometry
    "rot90": lambda a: np.ascontiguousarray(np.rot90(a)),
    "rot180": lambda a: np.ascontiguousarray(a[::-1, ::-1]),
    "flip-h": lambda a: np.ascontiguousarray(a[:, ::-1]),
    "flip-v": lambda a: np.ascontiguousarray(a[::-1]),
    "rotate+1": lambda a: _rotate(a, 1.0),
    "rotate-2": lambda a: _rotate(a, -2.0),
    "rotate+5": lambda a: _rotate(a, 5.0),
    "rotate-5": lambda a: _rotate(a, -5.0),
    "aspect0.8": lambda a: _aspect(a, 0.8),
    "aspect0.9": lambda a: _aspect(a, 0.9),
    "aspect1.25": lambda a: _aspect(a, 1.25),
    "crop50%-offcentre": lambda a: _crop_corner(a, 0.5),
    "webp70": lambda a: _webp(a, 70),
    "pad15%": lambda a: _pad(a),
    "rotate+3+jpeg75": lambda a: _jpeg(_rotate(a, 3.0), 75),
}
# resize-then-JPEG grid (scales 0.4-2, JPEG 60 and 75)
for _f in (0.4, 0.5, 0.7, 1.5, 2.0):
    for _q in (60, 75):
        ATTACKS[f"scale{_f}+jpeg{_q}"] = (lambda f, q: lambda a: _jpeg(_scale(a, f), q))(_f, _q)


# ------------------------------------------------------------------ methods
class Genguard:
    name = "genguard"

    def __init__(self):
        from genguard.guardrails.provenance.watermark import ImageWatermark

        self.wm = ImageWatermark(b"benchmark-key-0123456789abcdef!!")

    def embed(self, rgb):
        return self.wm.embed(rgb, PAYLOAD)

    def decode(self, rgb):
        d = self.wm.detect(rgb)
        self.last_bound = bool((d.get("content_binding") or {}).get("bound"))
        return d["_bits"].astype(int), bool(d["found"])


class InvisibleWatermark:
    def __init__(self, method):
        self.method = method
        self.name = f"imwatermark-{method}"

    def embed(self, rgb):
        from imwatermark import WatermarkEncoder

        enc = WatermarkEncoder()
        enc.set_watermark("bits", PAYLOAD_BITS.tolist())
        bgr = enc.encode(np.ascontiguousarray(rgb[..., ::-1]), self.method)
        return np.ascontiguousarray(np.clip(bgr, 0, 255).astype(np.uint8)[..., ::-1])

    def decode(self, rgb):
        from imwatermark import WatermarkDecoder

        try:
            bits = np.array(WatermarkDecoder("bits", 48).decode(np.ascontiguousarray(rgb[..., ::-1]), self.method)).astype(int)
        except Exception:  # too small after the attack, etc.: no bits read
            return None, False
        return bits, bool(np.sum(bits != PAYLOAD_BITS) <= BASELINE_MAX_ERRORS)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def robustness(photos, methods):
    res = {}
    for m in methods:
        t0 = time.time()
        ps, acc, det, bnd = [], {k: [] for k in ATTACKS}, {k: [] for k in ATTACKS}, {k: [] for k in ATTACKS}
        for name, img in photos.items():
            w = m.embed(img)
            ps.append(psnr(img, w))
            for an, f in ATTACKS.items():
                bits, found = m.decode(f(w))
                acc[an].append(0.5 if bits is None else float(np.mean(bits == PAYLOAD_BITS)))
                det[an].append(found)
                bnd[an].append(found and getattr(m, "last_bound", False))
        res[m.name] = {"psnr_mean": float(np.mean(ps)), "psnr_min": float(np.min(ps)),
                       "bit_accuracy": {k: float(np.mean(v)) for k, v in acc.items()},
                       "detection": {k: float(np.mean(v)) for k, v in det.items()},
                       "bound": {k: float(np.mean(v)) for k, v in bnd.items()},
                       "seconds": time.time() - t0}
        print(f"  {m.name}: done in {time.time() - t0:.0f} s", file=sys.stderr)
    return res


def negatives(photos, n=1000, seed=0):
    """n unwatermarked images: random patches (256-512 px, random flips) of the photos plus upscaled VAE samples."""
    rng = np.random.default_rng(seed)
    from skimage import data

    pool = list(photos.values()) + [np.stack([data.brick()] * 3, -1), np.stack([data.gravel()] * 3, -1), data.retina()]
    n_gen = n // 5
    for _ in range(n - n_gen):
        a = pool[rng.integers(len(pool))]
        h, w = a.shape[:2]
        ph, pw = rng.integers(256, min(h, 512) + 1), rng.integers(256, min(w, 512) + 1)
        y, x = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        p = a[y:y + ph, x:x + pw]
        if rng.random() < 0.5:
            p = p[:, ::-1]
        yield np.ascontiguousarray(p)
    yield from vae_outputs(n_gen, seed)


def vae_outputs(n, seed):
    """Samples of the reference conditional VAE (briefly trained here), upscaled x32 to 256x256 RGB."""
    import torch

    torch.set_num_threads(1)
    from genguard.generators.data import load_digits
    from genguard.generators.vae import ConditionalVAE

    g = ConditionalVAE(epochs=5, seed=seed).fit(load_digits())
    x = np.asarray(g.sample(n, seed=seed).data)
    imgs = []
    for im in x:
        u8 = np.clip(np.rint(im * 255), 0, 255).astype(np.uint8)
        big = cv2.resize(u8, (256, 256), interpolation=cv2.INTER_NEAREST if len(imgs) % 2 else cv2.INTER_CUBIC)
        imgs.append(np.stack([big] * 3, -1))
    return imgs


def false_positives(images):
    from genguard.guardrails.provenance.watermark import ImageWatermark

    wm = ImageWatermark(b"benchmark-key-0123456789abcdef!!")
    found, minp, count, fewest = 0, 1.0, 0, 64
    for im in images:
        d = wm.detect(im)
        found += bool(d["found"])
        minp = min(minp, d["p_value"])
        fewest = min(fewest, d["bit_errors"])
        count += 1
    return {"images": count, "detections": found, "smallest_p_value": minp, "fewest_pilot_errors": fewest}


def throughput(n=40):
    from genguard.guardrails.provenance.watermark import ImageWatermark

    wm = ImageWatermark(b"benchmark-key-0123456789abcdef!!")
    rng = np.random.default_rng(1)
    from skimage import data

    base = data.astronaut()
    imgs = [np.roll(base, (int(rng.integers(512)), int(rng.integers(512))), axis=(0, 1)) for _ in range(n)]
    t = time.perf_counter()
    ok = 0
    for im in imgs:
        ok += wm.detect(wm.embed(im, PAYLOAD))["found"]
    dt = time.perf_counter() - t
    return {"images": n, "images_per_second": n / dt, "threads": 1, "all_detected": ok == n}


# ------------------------------------------------------------------ text
def stdlib_docstrings() -> list[str]:
    """Docstrings of standard-library modules, classes and functions: more of Python's own documentation."""
    import importlib
    import inspect

    names = ["os", "re", "json", "collections", "itertools", "functools", "pathlib", "subprocess", "argparse",
             "logging", "datetime", "decimal", "fractions", "statistics", "random", "string", "textwrap",
             "typing", "dataclasses", "enum", "contextlib", "asyncio", "threading", "multiprocessing", "socket",
             "email", "http.client", "urllib.parse", "xml.etree.ElementTree", "csv", "sqlite3", "zipfile",
             "tarfile", "shutil", "tempfile", "unittest", "doctest", "pdb", "inspect", "ast", "dis", "pickle",
             "copy", "heapq", "bisect", "array", "struct", "codecs", "io", "time", "calendar", "locale",
             "gettext", "hashlib", "hmac", "secrets", "ssl", "selectors", "signal", "mmap", "queue", "sched",
             "configparser", "tomllib", "difflib", "pprint", "reprlib", "weakref", "types", "abc", "numbers",
             "math", "cmath", "operator", "glob", "fnmatch", "linecache", "tokenize", "traceback", "warnings",
             "importlib", "pkgutil", "zipimport", "platform", "sysconfig", "site", "gc", "uuid", "ipaddress",
             "base64", "binascii", "quopri", "html", "html.parser", "mailbox", "mimetypes", "wave", "colorsys",
             "shlex", "cmd", "graphlib", "concurrent.futures", "contextvars", "timeit", "trace", "tracemalloc"]
    docs = []
    for n in names:
        try:
            mod = importlib.import_module(n)
        except Exception:
            continue
        objs = [mod] + [v for _, v in inspect.getmembers(mod) if inspect.isclass(v) or inspect.isfunction(v)]
        objs += [m for c in objs if inspect.isclass(c) for _, m in inspect.getmembers(c) if inspect.isfunction(m)]
        for o in objs:
            d = inspect.getdoc(o)
            if d and len(d) > 200 and d not in docs:
                docs.append(d)
    return docs


def text_benchmark(n_samples=200, n_tokens=200, n_human=1000, train_steps=300):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers, decoders
    from transformers import GPT2Config, GPT2LMHeadModel

    from genguard.generators.data import load_pydoc_text
    from genguard.guardrails.provenance.text import TextWatermark

    torch.set_num_threads(1)
    torch.manual_seed(0)
    docs = list(load_pydoc_text().x)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(docs))
    train_docs = [docs[i] for i in order[: len(docs) // 2]]
    human_docs = [docs[i] for i in order[len(docs) // 2:]]
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(train_docs, trainers.BpeTrainer(vocab_size=2048, special_tokens=["<bos>", "[UNK]"]))
    V = tok.get_vocab_size()
    ids = np.concatenate([tok.encode(d).ids for d in train_docs])
    cfg = GPT2Config(vocab_size=V, n_positions=320, n_embd=128, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    seq = 128
    model.train()
    for step in range(train_steps):
        starts = rng.integers(0, len(ids) - seq - 1, size=16)
        batch = torch.tensor(np.stack([ids[s:s + seq] for s in starts]), dtype=torch.long)
        loss = model(batch, labels=batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    wm = TextWatermark(b"benchmark-text-key-0123456789ab!", vocab_size=V, bos_token_id=0)
    zs = []
    t = time.time()
    with torch.no_grad():
        for start in range(0, n_samples, 50):
            prompts = torch.tensor([[0] + tok.encode(human_docs[(start + j) % len(human_docs)][:40]).ids[:4]
                                    for j in range(50)], dtype=torch.long)
            prompts = prompts[:, :5] if prompts.shape[1] >= 5 else prompts
            out = wm.generate(model, prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=n_tokens,
                              min_new_tokens=n_tokens, pad_token_id=1, top_k=0)
            for row in out[:, prompts.shape[1]:]:
                zs.append(wm.detect_ids(row.tolist())["z_score"])
    gen_s = time.time() - t
    # human passages: consecutive 200-token windows of held-out documentation
    hz = []
    hids = np.concatenate([tok.encode(d).ids for d in human_docs + stdlib_docstrings()])
    for k in range(min(n_human, len(hids) // n_tokens)):
        hz.append(wm.detect_ids(hids[k * n_tokens:(k + 1) * n_tokens].tolist())["z_score"])
    zs, hz = np.array(zs), np.array(hz)
    return {"model": f"GPT-2 config, 2 layers x 128, vocab {V}, trained {train_steps} steps on pydoc (final loss {loss.item():.2f})",
            "watermarked_samples": len(zs), "tokens_per_sample": n_tokens,
            "share_z_ge_4": float(np.mean(zs >= 4)), "z_median": float(np.median(zs)), "z_min": float(zs.min()),
            "human_passages": len(hz), "human_false_positives_z_ge_4": int(np.sum(hz >= 4)),
            "human_z_max": float(hz.max()), "generation_seconds": gen_s}


def copy_attack(photos):
    """The copy attack on every photo: (marked - 5x5 median of marked) added to the next photo (cropped to a
    common size); and the chance binding over unrelated pairs (binding_null)."""
    from genguard.guardrails.provenance.watermark import ImageWatermark

    wm = ImageWatermark(b"benchmark-key-0123456789abcdef!!")
    names = list(photos)
    det = bound = 0
    for i, n in enumerate(names):
        m = wm.embed(photos[n], PAYLOAD)
        t = photos[names[(i + 1) % len(names)]]
        h, w = min(t.shape[0], m.shape[0]), min(t.shape[1], m.shape[1])
        est = m[:h, :w].astype(np.float32) - cv2.medianBlur(m, 5)[:h, :w].astype(np.float32)
        d = wm.detect(np.clip(np.rint(t[:h, :w].astype(np.float32) + est), 0, 255).astype(np.uint8))
        det += bool(d["found"])
        bound += bool(d["found"] and (d.get("content_binding") or {}).get("bound"))
    return {"transplants": len(names), "detected": det, "bound_to_new_content": bound, **binding_null(photos)}


def binding_null(photos, n_pairs=2000, n_keys=10, seed=0):
    """The binding test's p-value on unrelated pairs: the hash a mark would carry for one random crop
    (256-512 px, random mirror) of one photo, tested against the content of a crop of a different photo
    (what a transplanted mark meets), over n_keys keys. If the test's null holds, the p-values are no
    smaller than uniform: about 1% of pairs at or under 0.01, none at 1e-6 in a few thousand."""
    import hashlib

    from genguard.guardrails.provenance.watermark import BIND_P, N_BIND, ImageWatermark, _luma, binding_p_value, content_box

    rng = np.random.default_rng(seed)
    names = list(photos)

    def crop():
        i = int(rng.integers(len(names)))
        a = photos[names[i]]
        h, w = a.shape[:2]
        ph, pw = rng.integers(256, min(h, 512) + 1), rng.integers(256, min(w, 512) + 1)
        y, x = rng.integers(0, h - ph + 1), rng.integers(0, w - pw + 1)
        y0 = _luma(a[y:y + ph, x:x + pw])
        y0 = y0[:, ::-1] if rng.random() < 0.5 else y0
        t, b, lf, rt = content_box(y0)
        return i, np.ascontiguousarray(y0[t:b, lf:rt])

    ps, mism, bits = [], [], []
    for k in range(n_keys):
        wm = ImageWatermark(hashlib.sha256(b"binding-null-%d" % k).digest())
        for _ in range(n_pairs // n_keys):
            (i, a), (j, b) = crop(), crop()
            while j == i:
                j, b = crop()
            carried, feats = wm.content_hash(a), wm.content_features(b)
            ps.append(binding_p_value(feats, carried))
            mism.append(int(np.sum(carried != (feats > 0))))
            bits.append(carried)
    ps, bits = np.array(ps), np.array(bits)
    return {"unrelated_pairs": len(ps), "keys": n_keys, "binding_level": BIND_P, "bound_by_chance": int(np.sum(ps <= BIND_P)),
            "p_le_1e-4": int(np.sum(ps <= 1e-4)), "p_le_0.001": int(np.sum(ps <= 1e-3)), "p_le_0.01": int(np.sum(ps <= 0.01)),
            "p_le_0.1": int(np.sum(ps <= 0.1)), "smallest_p": float(ps.min()), "mismatch_mean": float(np.mean(mism)),
            "mismatch_sd": float(np.std(mism)), "bits": N_BIND, "bit_share_ones_range": [float(bits.mean(0).min()), float(bits.mean(0).max())]}


def binding_genuine(photos, edits=("none", "jpeg60", "scale0.4+jpeg60", "rotate+5", "rotate-5", "aspect0.8", "aspect1.25",
                                   "crop70%", "crop50%-offcentre", "webp70", "pad15%")):
    """Share of detected genuine marks that bind after each edit, and the largest binding p-value seen."""
    from genguard.guardrails.provenance.watermark import ImageWatermark

    wm = ImageWatermark(b"benchmark-key-0123456789abcdef!!")
    out = {}
    marked = {n: wm.embed(a, PAYLOAD) for n, a in photos.items()}
    for e in edits:
        f = ATTACKS.get(e) or (lambda a: _jpeg(a, 60))
        det, bound, worst = 0, 0, 0.0
        for n, m in marked.items():
            d = wm.detect(f(m))
            if d["found"] and d["payload_crc_ok"]:
                det += 1
                bound += bool(d["content_binding"]["bound"])
                worst = max(worst, d["content_binding"]["p_value"])
        out[e] = {"detected": det, "bound": bound, "largest_p": worst}
    return out


def timing_1024(n=5):
    """CPU seconds (process time, 1 thread) of embed + detect of a 1024x1024 photo, unedited, rotated, squeezed and rescaled."""
    from genguard.guardrails.provenance.watermark import ImageWatermark
    from skimage import data

    wm = ImageWatermark(b"benchmark-key-0123456789abcdef!!")
    base = cv2.resize(data.astronaut(), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    out = {}
    for label, edit in (("unedited", lambda a: a), ("rotate+2", lambda a: _rotate(a, 2.0)),
                        ("rotate-5", lambda a: _rotate(a, -5.0)), ("aspect0.9", lambda a: _aspect(a, 0.9)),
                        ("scale0.7+jpeg75", lambda a: _jpeg(_scale(a, 0.7), 75))):
        e, d, found = [], [], 0
        for i in range(n):
            im = np.roll(base, (37 * i, 53 * i), axis=(0, 1))
            t = time.process_time()
            w = wm.embed(im, PAYLOAD)
            e.append(time.process_time() - t)
            w = edit(w)
            t = time.process_time()
            found += bool(wm.detect(w)["found"])
            d.append(time.process_time() - t)
        out[label] = {"found": f"{found}/{n}", "embed_ms_median": 1000 * float(np.median(e)), "detect_ms_median": 1000 * float(np.median(d)),
                      "embed_plus_detect_ms_median": 1000 * float(np.median(np.add(e, d)))}
    return out


def small_marks(n=40, n_clean=1000):
    """The zero-bit mark for images under 256 px (genguard.guardrails.provenance.smallmark): detection per edit on
    n digit samples (8x8 digits x4 and x8 nearest, as the generators write them) and n photo crops at 32 and
    64 px, with PSNR; false positives on n_clean clean images of each kind (and the marked ones read with another key)."""
    from sklearn.datasets import load_digits

    from genguard.guardrails.provenance.smallmark import SmallImageMark
    from skimage import data

    wm, other = SmallImageMark(b"benchmark-key-0123456789abcdef!!"), SmallImageMark(b"another-key-0123456789abcdef!!!!")
    digits = load_digits().images
    photo = data.astronaut()
    rng = np.random.default_rng(0)

    def dig(i, s):
        return np.round(np.kron(digits[i % len(digits)] / 16.0, np.ones((s, s))) * 255).astype(np.uint8)

    def ph(i, s):
        y, x = rng.integers(0, 512 - 128, 2)
        return cv2.resize(photo[y:y + 128, x:x + 128], (s, s), interpolation=cv2.INTER_AREA)

    def png(a):
        b = io.BytesIO()
        Image.fromarray(a).save(b, "PNG")
        return np.asarray(Image.open(b))

    edits = {"none": lambda a: a, "png": png, "jpeg95": lambda a: _jpeg_any(a, 95), "jpeg90": lambda a: _jpeg_any(a, 90),
             "jpeg75": lambda a: _jpeg_any(a, 75), "noise2": lambda a: _noise(a, 2.0),
             "bright+10%": lambda a: np.clip(np.rint(a * 1.1), 0, 255).astype(np.uint8),
             "rot90": lambda a: np.ascontiguousarray(np.rot90(a)), "flip-h": lambda a: np.ascontiguousarray(a[:, ::-1]),
             "resize0.5": lambda a: cv2.resize(a, (a.shape[1] // 2, a.shape[0] // 2), interpolation=cv2.INTER_AREA),
             "crop1px": lambda a: a[1:, 1:]}
    out = {}
    for label, gen in (("digit 32x32", lambda i: dig(i, 4)), ("digit 64x64", lambda i: dig(i, 8)),
                       ("photo 32x32", lambda i: ph(i, 32)), ("photo 64x64", lambda i: ph(i, 64))):
        imgs = [gen(i) for i in range(n)]
        marked = [wm.embed(a) for a in imgs]
        clean = [gen(n + i) for i in range(n_clean)]
        out[label] = {"psnr_min": min(psnr(a, m) for a, m in zip(imgs, marked)),
                      "detection": {e: float(np.mean([wm.detect(f(m))["found"] for m in marked])) for e, f in edits.items()},
                      "other_key_detections": int(sum(other.detect(m)["found"] for m in marked)),
                      "clean_images": n_clean, "clean_detections": int(sum(wm.detect(a)["found"] for a in clean))}
    return out


def per_key_misses(n_keys=100, informed=False):
    """Keys (of n_keys, derived from a counter) whose mark or payload is lost under JPEG 75 (or the mark under the screenshot re-encode) on
    the astronaut photo resized to 288 px (the setting of tests/test_marking.py), and the pilot errors after JPEG 75."""
    import hashlib

    from genguard.guardrails.provenance.edits import EVERYDAY_EDITS
    from genguard.guardrails.provenance.watermark import ImageWatermark
    from skimage import data

    raw = np.asarray(Image.fromarray(data.astronaut()).resize((288, 288)))
    lost, errs = [], []
    for i in range(n_keys):
        wm = ImageWatermark(hashlib.sha256(b"k%d" % i).digest(), informed=informed)
        m = wm.embed(raw, hashlib.sha256(b"p%d" % i).digest()[:6])
        d = wm.detect(EVERYDAY_EDITS["jpeg75"](m))
        errs.append(d["bit_errors"])
        if not (d["found"] and d["payload_crc_ok"] and wm.detect(EVERYDAY_EDITS["screenshot-png"](m))["found"]):
            lost.append(i)
    return {"keys": n_keys, "lost": len(lost), "lost_keys": lost, "pilot_errors_median": float(np.median(errs))}


def _jpeg_any(a, q):
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=q)
    return np.asarray(Image.open(b))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None, help="write all figures here (atomically)")
    ap.add_argument("--quick", action="store_true", help="4 photos, 200 negatives, 50 text samples (smoke run)")
    ap.add_argument("--photos", type=int, default=None, help="use the first N photos (default all 16)")
    ap.add_argument("--negatives", type=int, default=None, help="number of clean images for the false-positive count")
    ap.add_argument("--attacks", default=None, help="comma-separated substrings: only the attacks whose name contains one")
    ap.add_argument("--genguard-only", action="store_true", help="skip invisible-watermark")
    ap.add_argument("--baselines-only", action="store_true", help="only invisible-watermark's dwtDct and dwtDctSvd")
    ap.add_argument("--no-text", action="store_true", help="skip the text watermark benchmark")
    ap.add_argument("--timing-only", action="store_true", help="only the 1024x1024 CPU-time figures")
    ap.add_argument("--small-only", action="store_true", help="only the zero-bit mark for images under 256 px")
    ap.add_argument("--binding", action="store_true", help="only the content-binding figures (unrelated pairs, genuine edits)")
    ap.add_argument("--keys", type=int, default=None, help="only the per-key miss rate over this many keys (plain and informed)")
    args = ap.parse_args(argv)
    if args.keys:
        for inf in (False, True):
            r = per_key_misses(args.keys, informed=inf)
            print(f"{'informed (default)' if inf else 'plain'} embedding: {r['lost']} of {r['keys']} keys lose the mark or its payload under JPEG 75 "
                  f"or the screenshot re-encode (288-px astronaut); median pilot errors after JPEG 75 {r['pilot_errors_median']:.0f} of 64; "
                  f"lost keys {r['lost_keys']}")
        return
    if args.binding:
        photos = load_photos()
        r = binding_null(photos, n_pairs=200 if args.quick else 2000)
        print(f"binding test on {r['unrelated_pairs']} unrelated crop pairs ({r['keys']} keys, {r['bits']}-bit hash): bound by chance "
              f"{r['bound_by_chance']} (level {r['binding_level']:g}); p <= 1e-4: {r['p_le_1e-4']}, <= 1e-3: {r['p_le_0.001']}, "
              f"<= 0.01: {r['p_le_0.01']}, <= 0.1: {r['p_le_0.1']}; smallest p {r['smallest_p']:.2g}; hash mismatches "
              f"{r['mismatch_mean']:.1f} +- {r['mismatch_sd']:.1f} of {r['bits']} (fair coins: {r['bits'] / 2:.1f} +- {np.sqrt(r['bits']) / 2:.1f}); "
              f"share of ones per hash bit {r['bit_share_ones_range'][0]:.2f}-{r['bit_share_ones_range'][1]:.2f}")
        for e, v in binding_genuine(dict(list(photos.items())[:4] if args.quick else photos)).items():
            print(f"genuine, {e}: bound {v['bound']} of {v['detected']} detected (largest binding p {v['largest_p']:.2g})")
        return
    if args.small_only:
        res = small_marks()
        names = list(next(iter(res.values()))["detection"])
        print("| image | PSNR min | " + " | ".join(names) + " | other key | clean images flagged |")
        print("|---|---|" + "---|" * len(names) + "---|---|")
        for k, v in res.items():
            print(f"| {k} | {v['psnr_min']:.1f} | " + " | ".join(f"{v['detection'][e]:.2f}" for e in names)
                  + f" | {v['other_key_detections']}/40 | {v['clean_detections']}/{v['clean_images']} |")
        return
    if args.timing_only:
        for k, v in timing_1024(5 if not args.quick else 3).items():
            print(f"1024x1024 CPU time, 1 thread, {k}: embed {v['embed_ms_median']:.0f} ms + detect {v['detect_ms_median']:.0f} ms "
                  f"= {v['embed_plus_detect_ms_median']:.0f} ms (median of runs; found {v['found']})")
        return
    photos = load_photos()
    n_ph = 4 if args.quick else (args.photos or len(photos))
    photos = dict(list(photos.items())[:n_ph])
    if args.attacks:
        keep = [k for k in ATTACKS if k == "none" or any(t in k for t in args.attacks.split(","))]
        for k in list(ATTACKS):
            if k not in keep:
                del ATTACKS[k]
    print(f"photos: {', '.join(f'{k} {v.shape[1]}x{v.shape[0]}' for k, v in photos.items())}", file=sys.stderr)
    methods = [Genguard()] + ([] if args.genguard_only else [InvisibleWatermark("dwtDct"), InvisibleWatermark("dwtDctSvd")])
    if args.baselines_only:
        methods = methods[1:]
        rob = robustness(photos, methods)
        if args.json:
            from genguard.generators._io import atomic_write_json

            atomic_write_json(args.json, {"robustness": rob, "baseline_detect_rule": f">= {48 - BASELINE_MAX_ERRORS} of 48 bits"})
        return
    rob = robustness(photos, methods)
    n_neg = args.negatives if args.negatives is not None else (200 if args.quick else 1000)
    fp = false_positives(negatives(photos, n=n_neg)) if n_neg else None
    thr = timing_1024(3 if args.quick else 5)
    cp = copy_attack(photos)
    txt = None if args.no_text else text_benchmark(n_samples=50 if args.quick else 200, n_human=200 if args.quick else 1000,
                                                   train_steps=100 if args.quick else 300)

    names = [m.name for m in methods]
    print(f"\n## Image watermark, {len(photos)} photos at native size, 48-bit payload, detection at FPR <= 1e-6\n")
    print("| attack | " + " | ".join(f"{n} bit acc | {n} detect" for n in names) + " | genguard detected and content-bound |")
    print("|---|" + "---|---|" * len(names) + "---|")
    print("| PSNR dB (mean / min) | " + " | ".join(f"{rob[n]['psnr_mean']:.1f} / {rob[n]['psnr_min']:.1f} | " for n in names) + "|")
    for an in ATTACKS:
        print(f"| {an} | " + " | ".join(f"{rob[n]['bit_accuracy'][an]:.3f} | {rob[n]['detection'][an]:.2f}" for n in names)
              + f" | {rob['genguard']['bound'][an]:.2f} |")
    if fp:
        print(f"\nfalse positives (genguard detector, unwatermarked): {fp['detections']} / {fp['images']} "
              f"(smallest p-value {fp['smallest_p_value']:.2g})")
    print(f"copy attack (mark - 5x5 median, added to the next photo): detected {cp['detected']}/{cp['transplants']}, "
          f"bound to the new content {cp['bound_to_new_content']}/{cp['transplants']}; unrelated crop pairs bound by chance: "
          f"{cp['bound_by_chance']}/{cp['unrelated_pairs']} at level {cp['binding_level']:g} ({cp['p_le_0.01']} with p <= 0.01; "
          f"mean mismatch {cp['mismatch_mean']:.1f} of {cp['bits']})")
    for k, v in thr.items():
        print(f"1024x1024 CPU time, 1 thread, {k}: embed {v['embed_ms_median']:.0f} ms + detect {v['detect_ms_median']:.0f} ms "
              f"= {v['embed_plus_detect_ms_median']:.0f} ms (median of runs; found {v['found']})")
    if txt:
        print(f"\n## Text watermark ({txt['model']})\n")
        print(f"watermarked {txt['tokens_per_sample']}-token samples with z >= 4: {txt['share_z_ge_4']:.3f} of "
              f"{txt['watermarked_samples']} (median z {txt['z_median']:.1f}, min {txt['z_min']:.1f})")
        print(f"human passages (Python docs) with z >= 4: {txt['human_false_positives_z_ge_4']} of {txt['human_passages']} "
              f"(max z {txt['human_z_max']:.2f})")
    if args.json:
        from genguard.generators._io import atomic_write_json

        atomic_write_json(args.json, {"robustness": rob, "false_positives": fp, "timing_1024": thr, "copy_attack": cp, "text": txt,
                                      "baseline_detect_rule": f">= {48 - BASELINE_MAX_ERRORS} of 48 bits"})


if __name__ == "__main__":
    main()
