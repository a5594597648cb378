"""Signals from the wild that need no learned weights: public generators' invisible watermarks and the metadata their tools write.

Each finding says what it proves and what it does not:

* **Known watermarks.** Stable Diffusion's reference scripts and diffusers' SDXL pipelines add an
  invisible-watermark ``dwtDct`` mark with a published payload. The decoder here follows the published
  algorithm (Haar DWT of the U channel, 4x4 DCT blocks, the largest AC coefficient's residue modulo the
  scale carries one bit, bits repeated over the blocks) and tests the decoded bits against each payload
  with an exact binomial p-value: a clean image decodes to bits that agree with a fixed payload by chance
  only. Found, it proves the pixels passed through a pipeline that applies that payload (or through
  someone who copied it on purpose: the scheme has no key, anyone can add or remove it). Absent, it
  proves nothing: most generators do not apply it, and a JPEG re-save or a resize removes it.
* **Generator metadata.** AUTOMATIC1111/Forge, ComfyUI, InvokeAI, NovelAI and Fooocus write their
  settings into PNG text chunks; several services name themselves in EXIF/XMP; IPTC's DigitalSourceType
  in XMP can declare ``trainedAlgorithmicMedia``. Found, it shows a generator tool wrote (or someone
  wrote as if) that file's metadata. It is stripped by any re-save and forged in one command, so its
  absence proves nothing and its presence is a claim, not a signature.

Third-party C2PA disclosures are read by ``genguard.guardrails.provenance`` (signed: stronger than both).
"""
from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np

#: A known watermark is reported found when its Bonferroni-adjusted p-value is at or below this.
P_THRESHOLD = 1e-6
#: The dwtDct quantisation step of the U channel in invisible-watermark's default (scales [0, 36, 36]).
DWT_DCT_SCALE = 36.0
_BLOCK = 4
#: How much of a file is searched for XMP packets and how much of one metadata value is parsed.
_MAX_SCAN_BYTES = 16 * 1024 * 1024
_MAX_VALUE_CHARS = 256 * 1024
#: Pixels decoded per image: the top rows of a larger image, at full width (the bit carried by a block
#: depends on its index in row-major order, so the width must stay whole; the payload repeats down).
_DECODE_PIXELS = 1 << 20


def _bits_of_int(message: int) -> tuple[int, ...]:
    # As the publishers build their bit lists: bin(message)[2:], so leading zero bits are dropped.
    return tuple(int(b) for b in bin(message)[2:])


def _bits_of_bytes(payload: bytes) -> tuple[int, ...]:
    return tuple(int(b) for b in np.unpackbits(np.frombuffer(payload, np.uint8)))


@dataclass(frozen=True)
class KnownWatermark:
    """A public generator's published invisible-watermark payload."""

    name: str
    source: str
    bits: tuple[int, ...]


#: Published payloads (invisible-watermark ``dwtDct``). Sources: diffusers'
#: ``pipelines/stable_diffusion_xl/watermark.py`` (SDXL pipelines); Stability AI's
#: ``generative-models`` (``sgm``) inference helpers (later SDXL/SVD reference code); the
#: ``scripts/txt2img.py`` of CompVis/stable-diffusion ("StableDiffusionV1") and
#: Stability-AI/stablediffusion ("SDV2").
KNOWN_WATERMARKS: tuple[KnownWatermark, ...] = (
    KnownWatermark("sdxl", "Stable Diffusion XL (diffusers' StableDiffusionXLWatermarker)",
                   _bits_of_int(0b101100111110110010010000011110111011000110011110)),
    KnownWatermark("sgm", "Stability AI generative-models reference code (SDXL / SVD)",
                   _bits_of_int(0b001010101111111010000111100111001111010100101110)),
    KnownWatermark("sd-v1", "Stable Diffusion v1 reference scripts (payload 'StableDiffusionV1')",
                   _bits_of_bytes(b"StableDiffusionV1")),
    KnownWatermark("sd-v2", "Stable Diffusion 2 reference scripts (payload 'SDV2')", _bits_of_bytes(b"SDV2")),
)

_PROVES_WM = ("the pixels passed through a pipeline that adds this published payload, or someone copied "
              "it on purpose (the scheme has no key)")
_NOT_WM = ("its absence proves nothing: most generators do not add it, and a JPEG re-save, resize or crop "
           "removes it; anyone can add it to a real photo")


#: The encoder's input types in use: uint8 (the reference scripts) and float 0-255 (diffusers). OpenCV's
#: BGR2YUV offsets U by 128 and 0.5 respectively, and the decoder reads raw Haar coefficients that
#: include the offset, so both are tried.
_DOMAINS = ("uint8", "float")


def _u_bands(rgb: np.ndarray) -> dict[tuple[bool, str], np.ndarray]:
    """The Haar approximation band of the U channel exactly as each encoder in use computed it.

    OpenCV's own BGR2YUV is used, on uint8 or float input as the encoder was given it: the decoder
    picks the largest of near-equal coefficients, so even a rounding difference changes which one it
    reads. Keys are (bgr_order, domain); ``bgr_order=False`` reads the array as OpenCV would if an RGB
    array were handed to it as BGR, which is what diffusers' SDXL watermarker does. The band is
    pywt.dwt2(..., 'haar')'s approximation: (a + b + c + d) / 2 over 2x2 cells."""
    import cv2

    h, w = (rgb.shape[0] // 4) * 4, (rgb.shape[1] // 4) * 4
    out = {}
    for bgr_order in (True, False):
        x8 = np.ascontiguousarray(rgb[:h, :w, 2::-1] if bgr_order else rgb[:h, :w, :3])
        for domain in _DOMAINS:
            x = x8 if domain == "uint8" else x8.astype(np.float32)
            u = cv2.extractChannel(cv2.cvtColor(x, cv2.COLOR_BGR2YUV), 1).astype(np.float32)
            out[(bgr_order, domain)] = (u[0::2, 0::2] + u[0::2, 1::2] + u[1::2, 0::2] + u[1::2, 1::2]) * 0.5
    return out


def _block_bits(ca: np.ndarray) -> np.ndarray:
    """One bit per 4x4 block of a Haar band, in row-major block order.

    As the published ``dwtDct`` decoder reads it: in each block, the coefficient of largest magnitude
    other than the first; its magnitude modulo the scale above half the scale is a 1."""
    nr, nc = ca.shape[0] // _BLOCK, ca.shape[1] // _BLOCK
    blocks = ca[:nr * _BLOCK, :nc * _BLOCK].reshape(nr, _BLOCK, nc, _BLOCK).transpose(0, 2, 1, 3)
    flat = np.abs(blocks.reshape(nr * nc, _BLOCK * _BLOCK)[:, 1:])
    val = flat.max(axis=1)
    return np.mod(val, DWT_DCT_SCALE) > 0.5 * DWT_DCT_SCALE


def _decode(block_bits: np.ndarray, n_bits: int) -> np.ndarray:
    """Majority over the blocks carrying each bit (block k carries bit k mod n_bits)."""
    idx = np.arange(len(block_bits)) % n_bits
    sums = np.bincount(idx, weights=block_bits.astype(np.float64), minlength=n_bits)
    counts = np.bincount(idx, minlength=n_bits)
    return (sums * 255 > 127 * counts).astype(np.int64)


def agreement_p_value(decoded: np.ndarray, payload: np.ndarray) -> float:
    """P-value of the agreement between decoded bits and a fixed payload when the two are unrelated.

    A clean image's decoded bits are far from fair coins (flat regions decode to 0), so the test
    conditions on how many ones were decoded: with the decoded bits' positions exchangeable under the
    null, the number of positions where both are 1 is hypergeometric, and agreement on the ones fixes
    agreement on the zeros. Exact; an all-zero or all-one decode has p = 1."""
    n, k_pay, k_dec = len(payload), int(payload.sum()), int(decoded.sum())
    both = int(np.sum((decoded == 1) & (payload == 1)))

    def log_choose(a: int, b: int) -> float:
        return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)

    top = min(k_pay, k_dec)
    terms = [log_choose(k_pay, j) + log_choose(n - k_pay, k_dec - j) for j in range(max(both, k_dec - (n - k_pay), 0), top + 1)]
    if not terms:
        return 1.0
    m = max(terms)
    return float(min(1.0, math.exp(m + math.log(sum(math.exp(t - m) for t in terms)) - log_choose(n, k_dec))))


def known_watermarks(rgb: np.ndarray) -> dict[str, Any]:
    """Test an RGB uint8 image for every :data:`KNOWN_WATERMARKS` payload.

    Each payload is decoded as the four encoders in use would have written it (channel order x
    uint8/float input) and tested with :func:`agreement_p_value`, multiplied by the number of tests
    made (Bonferroni). Images too small to repeat a payload at least twice are not tested for it.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    rows = max(8, (_DECODE_PIXELS // max(rgb.shape[1], 1)) // 8 * 8)
    rgb = rgb[:rows, :, :3]
    n_blocks = (rgb.shape[0] // 8) * (rgb.shape[1] // 8)
    tested = [wm for wm in KNOWN_WATERMARKS if n_blocks >= 2 * len(wm.bits)]
    variants = [(order, dom) for order in (True, False) for dom in _DOMAINS]
    m = len(variants) * len(tested)
    out: dict[str, Any] = {"method": "invisible-watermark dwtDct decoder (published algorithm), exact "
                                     "conditional (hypergeometric) test, Bonferroni over payloads and variants",
                           "threshold": P_THRESHOLD, "tests": m, "found": [], "checked": {}}
    if not tested:
        out["reason"] = f"image {rgb.shape[1]}x{rgb.shape[0]} is too small to carry a known payload twice"
        return out
    soft = {v: _block_bits(band) for v, band in _u_bands(rgb).items()}
    for wm in tested:
        best = None
        payload = np.asarray(wm.bits)
        for (order, dom), bb in soft.items():
            bits = _decode(bb, len(wm.bits))
            errors = int(np.sum(bits != payload))
            p = min(1.0, agreement_p_value(bits, payload) * m)
            if best is None or p < best["p_value"]:
                best = {"bit_errors": errors, "bits": len(wm.bits), "p_value": p,
                        "channel_order": "BGR" if order else "RGB-as-BGR", "encoder_input": dom}
        out["checked"][wm.name] = best
        if best["p_value"] <= P_THRESHOLD:
            out["found"].append({"name": wm.name, "source": wm.source, **best,
                                 "proves": _PROVES_WM, "does_not_prove": _NOT_WM})
    return out


# ---------------------------------------------------------------------------------------------- metadata
_PROVES_META = "a generator tool wrote this file's metadata (or someone wrote it to look so)"
_NOT_META = ("metadata is stripped by any re-save or screenshot and forged in one command: its absence "
             "proves nothing and its presence is a claim, not a signature")

#: Software names in EXIF/XMP/PNG fields that are generators (case-insensitive word match).
GENERATOR_SOFTWARE = (
    "Stable Diffusion", "stable-diffusion-webui", "AUTOMATIC1111", "ComfyUI", "InvokeAI", "NovelAI", "Fooocus",
    "Midjourney", "DALL-E", "DALL·E", "DALLE", "Adobe Firefly", "Firefly", "Imagen", "Bing Image Creator",
    "Leonardo.Ai", "Ideogram", "Flux", "Craiyon", "DreamStudio", "Draw Things", "Diffusers",
)
_SOFTWARE_RE = re.compile(r"(?<![A-Za-z])(" + "|".join(re.escape(s) for s in GENERATOR_SOFTWARE) + r")(?![A-Za-z])",
                          re.IGNORECASE)
_DST_RE = re.compile(rb"DigitalSourceType\s*(?:=\s*[\"']|>\s*)\s*(?:https?://cv\.iptc\.org/newscodes/digitalsourcetype/)?"
                     rb"([A-Za-z]{3,64})", re.IGNORECASE)
#: IPTC digital source types that say the content was made or composited by a trained model.
_DST_AI = {"trainedalgorithmicmedia": "generated", "trainedalgorithmicdata": "generated",
           "compositewithtrainedalgorithmicmedia": "edited", "compositesynthetic": "edited",
           "algorithmicmedia": "generated"}
_EXIF_TAGS = {0x0131: "Software", 0x010E: "ImageDescription", 0x013B: "Artist", 0x010F: "Make"}
_EXIF_USER_COMMENT = 0x9286


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    s = str(v)
    return s[:_MAX_VALUE_CHARS]


def _json(s: str) -> Any:
    try:
        return json.loads(s)
    except (ValueError, RecursionError):
        return None


def _a1111(params: str) -> dict[str, Any] | None:
    # The settings line: "Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: ..."
    if "Steps:" not in params or not ("Sampler:" in params or "CFG scale:" in params):
        return None
    fields = dict(re.findall(r"(Model|Model hash|Sampler|Seed|Steps|Version|Size):\s*([^,\n]{1,200})", params))
    tool = "Fooocus" if "Fooocus" in params else "AUTOMATIC1111 / Forge (stable-diffusion-webui)"
    return {"tool": tool, "fields": fields}


def _comfy(prompt: str | None, workflow: str | None) -> dict[str, Any] | None:
    fields: dict[str, Any] = {}
    graph = _json(prompt) if prompt else None
    if isinstance(graph, dict) and any(isinstance(n, dict) and "class_type" in n for n in graph.values()):
        ckpts = sorted({str(n.get("inputs", {}).get("ckpt_name"))[:200] for n in graph.values()
                        if isinstance(n, dict) and isinstance(n.get("inputs"), dict) and n["inputs"].get("ckpt_name")})
        fields["nodes"] = len(graph)
        if ckpts:
            fields["checkpoints"] = ckpts[:10]
    wf = _json(workflow) if workflow else None
    if isinstance(wf, dict) and isinstance(wf.get("nodes"), list):
        fields["workflow_nodes"] = len(wf["nodes"])
    return {"tool": "ComfyUI", "fields": fields} if fields else None


def _signal(kind: str, finding: str, tool: str, where: str, fields: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"signal": kind, "finding": finding, "tool": tool, "where": where, "fields": fields or {},
            "proves": _PROVES_META, "does_not_prove": _NOT_META}


def _png_text(info: dict[str, Any]) -> list[dict[str, Any]]:
    text = {str(k): _text(v) for k, v in info.items() if isinstance(v, (str, bytes)) and k not in ("icc_profile", "exif")}
    found = []
    lower = {k.lower(): v for k, v in text.items()}
    if "parameters" in lower:
        a = _a1111(lower["parameters"])
        if a:
            found.append(_signal("metadata.generation_settings", "generated", a["tool"], "PNG text 'parameters'", a["fields"]))
    c = _comfy(lower.get("prompt"), lower.get("workflow"))
    if c:
        found.append(_signal("metadata.generation_settings", "generated", c["tool"], "PNG text 'prompt'/'workflow'",
                             c["fields"]))
    invoke = [k for k in ("invokeai_metadata", "invokeai_graph", "sd-metadata", "dream") if k in lower]
    if invoke:
        found.append(_signal("metadata.generation_settings", "generated", "InvokeAI", f"PNG text {invoke[0]!r}"))
    software, source = lower.get("software", ""), lower.get("source", "")
    if "novelai" in software.lower() or "novelai" in source.lower():
        comment = _json(lower.get("comment", "")) if lower.get("comment") else None
        fields = {k: comment[k] for k in ("steps", "sampler", "seed") if isinstance(comment, dict) and k in comment}
        found.append(_signal("metadata.generation_settings", "generated", "NovelAI", "PNG text 'Software'/'Source'", fields))
    if not any(s["tool"] == "NovelAI" for s in found):
        for key in ("software", "source"):
            m = _SOFTWARE_RE.search(lower.get(key, ""))
            if m:
                found.append(_signal("metadata.software", "generated", m.group(1), f"PNG text {key!r}"))
    return found


def _exif(im: Any) -> list[dict[str, Any]]:
    found = []
    try:
        exif = im.getexif()
        items = {name: exif.get(tag) for tag, name in _EXIF_TAGS.items() if exif.get(tag)}
        sub = exif.get_ifd(0x8769) if hasattr(exif, "get_ifd") else {}
        comment = sub.get(_EXIF_USER_COMMENT) if sub else None
    except Exception:  # a malformed EXIF block is no signal, never a crash
        return found
    if comment:
        raw = comment if isinstance(comment, bytes) else str(comment).encode("utf-8", "replace")
        # UserComment starts with an 8-byte character-code prefix (ASCII/UNICODE/JIS or zeros).
        body = raw[8:] if raw[:8] in (b"ASCII\0\0\0", b"UNICODE\0", b"JIS\0\0\0\0\0", b"\0" * 8) else raw
        for enc in (("utf-16-be", "utf-16-le") if raw[:8] == b"UNICODE\0" else ("utf-8",)):
            txt = body.decode(enc, "replace")[:_MAX_VALUE_CHARS]
            a = _a1111(txt)
            if a:
                found.append(_signal("metadata.generation_settings", "generated", a["tool"], "EXIF UserComment", a["fields"]))
                break
    for name in ("Software", "ImageDescription", "Artist", "Make"):
        v = items.get(name)
        if v is None:
            continue
        m = _SOFTWARE_RE.search(_text(v))
        if m and name in ("Software", "Make", "Artist"):
            found.append(_signal("metadata.software", "generated", m.group(1), f"EXIF {name}"))
    return found


def _xmp(chunks: list[bytes]) -> list[dict[str, Any]]:
    found = []
    seen = set()
    for packet in chunks:
        for m in _DST_RE.finditer(packet[:_MAX_SCAN_BYTES]):
            code = m.group(1).decode("ascii", "replace")
            key = code.lower()
            if key in seen:
                continue
            seen.add(key)
            finding = _DST_AI.get(key)
            if finding:
                found.append(_signal("metadata.digital_source_type", finding, f"IPTC DigitalSourceType {code}",
                                     "XMP Iptc4xmpExt:DigitalSourceType", {"digital_source_type": code}))
            else:  # a capture claim in metadata is not evidence of authenticity: recorded, decides nothing
                found.append({"signal": "metadata.digital_source_type", "finding": "claim", "tool": None,
                              "where": "XMP Iptc4xmpExt:DigitalSourceType", "fields": {"digital_source_type": code},
                              "proves": "nothing about the pixels: unsigned metadata anyone can write",
                              "does_not_prove": "that the image is " + code})
        for m in re.finditer(rb"(?:CreatorTool|Software|softwareAgent)\s*(?:=\s*[\"']|>\s*)([^\"'<]{1,300})", packet[:_MAX_SCAN_BYTES]):
            s = _SOFTWARE_RE.search(m.group(1).decode("utf-8", "replace"))
            if s and s.group(1).lower() not in seen:
                seen.add(s.group(1).lower())
                found.append(_signal("metadata.software", "generated", s.group(1), "XMP CreatorTool/Software"))
    return found


def _xmp_packets(head: bytes, limit: int = 16) -> list[bytes]:
    """The XMP packets in raw bytes, in linear time (a regex over a hostile run of openings is quadratic)."""
    out, pos = [], 0
    while len(out) < limit:
        start = head.find(b"<x:xmpmeta", pos)
        if start < 0:
            break
        end = head.find(b"</x:xmpmeta>", start)
        if end < 0:  # no later opening can close either
            break
        out.append(head[start:end + len(b"</x:xmpmeta>")])
        pos = end + len(b"</x:xmpmeta>")
    return out


def generator_metadata(path: str | Path, data: bytes | None = None) -> dict[str, Any]:
    """Generator metadata in a file: PNG text chunks, EXIF and XMP. Never raises for a malformed file.

    ``data`` is the file's bytes when the caller has read them (at most :data:`_MAX_SCAN_BYTES` are
    searched for XMP); otherwise the head of the file is read.
    """
    from PIL import Image

    path = Path(path)
    if data is None:
        with open(path, "rb") as fh:
            data = fh.read(_MAX_SCAN_BYTES)
    head = data[:_MAX_SCAN_BYTES]
    signals: list[dict[str, Any]] = []
    problems: list[str] = []
    xmp_chunks = _xmp_packets(head)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's "Corrupt EXIF data" and the like: a malformed block is no signal
            im = Image.open(BytesIO(data))  # headers and text chunks only; no pixel is decoded here
            info = dict(im.info)
            if im.format == "PNG":
                signals += _png_text(info)
            signals += _exif(im)
            for key in ("xmp", "XML:com.adobe.xmp"):
                v = info.get(key)
                if isinstance(v, (str, bytes)):
                    xmp_chunks.append(v.encode("utf-8", "replace") if isinstance(v, str) else v)
            im.close()
    except Exception as exc:  # any reader failure (bombs, bad chunks, deep nesting): no signal, never a crash
        problems.append(f"metadata not fully readable ({type(exc).__name__})")
    signals += _xmp(xmp_chunks)
    return {"signals": signals, "problems": problems}


def wild_signals(path: str | Path, rgb: np.ndarray | None = None, data: bytes | None = None) -> dict[str, Any]:
    """Both kinds for one file: ``{"known_watermarks": ..., "metadata": ...}``."""
    out: dict[str, Any] = {"metadata": generator_metadata(path, data)}
    out["known_watermarks"] = known_watermarks(rgb) if rgb is not None else {"found": [], "reason": "no pixels"}
    return out
