"""One image's examination for `detect`, `review` and batch engines: the synthetic-image detector's
probability and verdict, the file's provenance, forgery scores and maps, as one JSON-ready entry.

It lives outside ``genguard.commands`` so every front end (CLI, static review page, web console, Ray
workers) calls the same function and their results cannot drift.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any


def _jsonable(obj: Any) -> Any:
    from genguard.generators._io import jsonable

    return jsonable(obj, strict=False)


def provenance_of(path: Path, trust_anchor: Path | None = None) -> dict[str, Any]:
    """The `genguard verify` result for one image (verify_file never raises for a bad file)."""
    from genguard.guardrails.provenance import verify_file

    return _jsonable(verify_file(path, trust_anchor=trust_anchor))


#: The fused verdicts. There is no "authentic": an examination can find evidence of generation or
#: editing, or find none; absence of evidence is never evidence of authenticity.
VERDICT_WORDS = {"generated": "generated", "edited": "edited", "no_evidence": "no evidence found",
                 "inconclusive": "inconclusive"}
VERDICTS = tuple(VERDICT_WORDS)
#: How-made classes (from a file's own C2PA history) that are a disclosure of AI content.
AI_DISCLOSED = ("ai-generated", "ai-composited")
#: The pixel detector's own labels, as the entry names them (its "authentic" only means "scored like the
#: real photos it was trained on").
_DETECTOR_WORDS = {"synthetic": "synthetic", "inconclusive": "inconclusive", "authentic": "real-looking"}
#: Forgery flags together may call at most this share of the untouched calibration photos "edited": each
#: method's flag counts only at or below the per-method rate that keeps the family within it
#: (``forgery.family_threshold``; several methods at 2% each would call about 4-6% edited).
FORGERY_FALSE_ALARM = 0.02
_HASH_CODES = ("assertion.dataHash.mismatch", "assertion.bmffHash.mismatch", "assertion.boxesHash.mismatch",
               "assertion.collectionHash.mismatch")


def _reason(signal: str, finding: str, says: str, strength: str, **extra: Any) -> dict[str, Any]:
    return {"signal": signal, "finding": finding, "says": says, "strength": strength, **extra}


def _provenance_reasons(prov: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not prov:
        return []
    out = []
    state, made = prov.get("verdict"), prov.get("made")
    from genguard.guardrails.provenance.history import signer_name

    signer = signer_name(prov.get("signer"))
    trust = (prov.get("signer") or {}).get("trust") or "unverified"
    codes = list((prov.get("manifest") or {}).get("codes") or [])
    if state in ("intact", "untrusted") and made in AI_DISCLOSED:
        # a disclosure against the signer's interest needs no trust in the signer
        out.append(_reason("c2pa", "generated" if made == "ai-generated" else "edited",
                           f"its C2PA manifest, signed by {signer} ({trust}), declares it {made}", "strong"))
    elif state in ("intact", "untrusted") and made == "edited":
        out.append(_reason("c2pa", "edited", f"its C2PA manifest, signed by {signer} ({trust}), records edits", "strong"))
    elif state in ("intact", "untrusted") and made == "captured":
        out.append(_reason("c2pa", "claim", f"its C2PA manifest, signed by {signer} ({trust}), declares a capture; "
                           "a signed claim by its signer, not proof that the pixels are unaltered", "claim"))
    elif state == "stripped":
        wm = prov.get("watermark") if isinstance(prov.get("watermark"), dict) else {}
        bound = (wm.get("content_binding") or {}).get("bound")
        if "content_binding" in wm and bound is not True:  # only the image payload mark carries a content hash
            # The image payload mark ties itself to the pixels it was embedded in by a content hash. Without a
            # manifest, a mark that does not bind (lifted from another marked image -- the copy attack -- or
            # cut by a heavy crop), or whose payload is too damaged to check the binding, says a genguard image
            # was involved, not that this content is one: it decides nothing on its own (verify names no run).
            why = ("is not bound to this content (possible copy attack from another marked image, or a heavy crop)"
                   if bound is False else "has a payload too damaged to check that it is bound to this content (it could "
                   "have been copied from another marked image)")
            out.append(_reason("watermark", "inconclusive", f"it carries this machine's genguard watermark, but the "
                               f"mark {why} and there is no manifest: it proves nothing about these pixels", "weak"))
        elif wm.get("kind") == "zero-bit":
            out.append(_reason("watermark", "generated", "it carries this machine's genguard zero-bit mark for small "
                               "images (this key marked it; the mark names no run) but its manifest was removed",
                               "strong"))
        else:
            out.append(_reason("watermark", "generated", "it carries this machine's genguard watermark (a generator "
                               "run's mark) but its manifest was removed", "strong"))
    elif state == "tampered":
        if any(c in codes for c in _HASH_CODES):
            out.append(_reason("c2pa", "edited", "its C2PA manifest no longer matches the content: the file was "
                               f"altered after it was signed ({', '.join(c for c in codes if c in _HASH_CODES)})", "strong"))
        else:
            out.append(_reason("c2pa", "inconclusive", "its C2PA manifest fails validation "
                               f"({', '.join(codes[:4]) or prov.get('reason', '')}): it proves nothing either way", "weak"))
    elif state == "remote":
        out.append(_reason("c2pa", "claim", "its manifest lives at a remote URL, which genguard never fetches", "claim"))
    elif state == "error":
        out.append(_reason("c2pa", "inconclusive", f"provenance could not be checked: {prov.get('reason', '')}", "weak"))
    wm = prov.get("watermark") if isinstance(prov.get("watermark"), dict) else {}
    if state not in ("stripped",) and wm.get("found") and wm.get("note"):
        out.append(_reason("watermark", "inconclusive", wm["note"], "weak"))
    elif state not in ("stripped",) and wm.get("found") and made not in AI_DISCLOSED:
        out.append(_reason("watermark", "generated", "it carries this machine's genguard watermark "
                           f"(p = {wm.get('p_value', 'n/a')})", "strong"))
    return out


def _wild_reasons(wild: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not wild:
        return []
    out = []
    for f in (wild.get("known_watermarks") or {}).get("found", []):
        out.append(_reason("known_watermark", "generated", f"it carries the {f['source']} invisible watermark "
                           f"({f['bits'] - f['bit_errors']}/{f['bits']} bits, p = {f['p_value']:.2g}); "
                           f"proves {f['proves']}", "strong"))
    for s in (wild.get("metadata") or {}).get("signals", []):
        if s["finding"] in ("generated", "edited"):
            out.append(_reason(s["signal"], s["finding"], f"its {s['where']} names {s['tool']}: {s['proves']}; "
                               f"but {s['does_not_prove']}", "weak"))
        else:
            out.append(_reason(s["signal"], "claim", f"its {s['where']} says {s['fields']}: {s['proves']}", "claim"))
    return out


def _detector_reason(entry: dict[str, Any]) -> dict[str, Any] | None:
    v, p = entry.get("detector_verdict"), entry.get("synthetic_probability")
    if v is None:
        return None
    ps = "n/a" if p is None else f"{p:.3f}"
    arch = (entry.get("detector") or {}).get("arch")
    if v == "synthetic" and arch:
        return _reason("detector", "generated", f"the published {arch} detector scores it synthetic (p = {ps}, its "
                       "authors' sigmoid, not re-calibrated here; trained on ProGAN images, it may miss or misjudge "
                       "other generators)", "weak")
    if v == "synthetic":
        return _reason("detector", "generated", f"the pixel detector scores it synthetic (p = {ps}, calibrated; "
                       "trained on a few generator families, it may miss or misjudge others)", "weak")
    if v == "inconclusive":
        return _reason("detector", "inconclusive", entry.get("note") or f"the pixel detector is undecided (p = {ps})", "weak")
    return _reason("detector", "none", f"the pixel detector scores it like real photos (p = {ps}); that is no "
                   "evidence of authenticity (unseen generators often score so)", "none")


def _forgery_reasons(forgery: dict[str, Any] | None) -> list[dict[str, Any]]:
    from genguard.detectors.forgery import family_threshold

    out = []
    per_method, family = family_threshold(FORGERY_FALSE_ALARM) if forgery else (0.0, 0.0)
    for name, r in (forgery or {}).items():
        d = r.get("details") if isinstance(r.get("details"), dict) else {}
        rate = d.get("false_alarm_rate")
        if not (d.get("flagged") and d.get("discriminates") and isinstance(rate, (int, float))):
            continue
        what = f"the {name.replace('_', '-')} analysis flags it (a score reached by {rate:.1%} of untouched photos)"
        if rate <= per_method:
            out.append(_reason(f"forgery.{name}", "edited", what + f"; the forgery flags together call {family:.1%} "
                               "of untouched calibration photos edited", "weak"))
        else:
            out.append(_reason(f"forgery.{name}", "claim", what + "; too common on untouched photos to decide", "claim"))
    return out


def fuse(entry: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
    """One verdict from every signal of an examination: (verdict, reasons, basis).

    Order of evidence: a signed disclosure, a known or genguard watermark, or a manifest broken by an
    edit decide first (they do not depend on a learned model); then generator metadata (a claim
    anyone can write, but one nobody writes by accident); then the calibrated pixel detector and the
    forgery analyses that discriminate. A strong capture claim contradicted by the detector, a manifest
    that fails for other reasons, or an undecided detector give ``inconclusive``; nothing found gives
    ``no_evidence``, never "authentic".
    """
    reasons = _provenance_reasons(entry.get("provenance")) + _wild_reasons(entry.get("wild"))
    det = _detector_reason(entry)
    reasons += ([det] if det else []) + _forgery_reasons(entry.get("forgery"))

    def first(finding: str, strengths: tuple[str, ...]) -> dict[str, Any] | None:
        return next((r for r in reasons if r["finding"] == finding and r["strength"] in strengths), None)

    strong_gen, strong_edit = first("generated", ("strong",)), first("edited", ("strong",))
    capture = next((r for r in reasons if r["signal"] == "c2pa" and r["finding"] == "claim"
                    and "capture" in r["says"]), None)
    if strong_gen:
        return "generated", reasons, strong_gen["says"]
    if strong_edit:
        return "edited", reasons, strong_edit["says"]
    weak_gen, weak_edit = first("generated", ("weak",)), first("edited", ("weak",))
    if weak_gen and capture:
        return "inconclusive", reasons, f"{weak_gen['says']}; but {capture['says']}"
    if weak_gen:
        return "generated", reasons, weak_gen["says"]
    if weak_edit:
        return "edited", reasons, weak_edit["says"]
    undecided = first("inconclusive", ("weak", "strong"))
    if undecided:
        return "inconclusive", reasons, undecided["says"]
    return "no_evidence", reasons, ("no signal of generation or editing was found: no disclosure, no known "
                                    "watermark or generator metadata, the detector and forgery analyses quiet; "
                                    "this is not proof of authenticity")


def _safe_stem(i: int, path: Path) -> str:
    return f"{i:04d}_" + re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:80]


def examine_image(i: int, f: Path, det: Any, heatmaps: Path | None, no_forgery: bool,
                  max_pixels: int = 100_000_000, trust_anchor: Path | None = None) -> dict[str, Any]:
    """One image's detect entry: synthetic probability and verdict, provenance, forgery scores and maps.

    An unreadable image gives an entry with ``error`` (one line naming the file) instead of raising.
    """
    from genguard.detectors import DetectorError
    from genguard.detectors._io import read_image, write_png
    from genguard.detectors.forgery import METHODS, analyze, bounded_copy, evidence_map, map_to_png_array, overlay

    entry: dict[str, Any] = {"path": str(f)}
    try:
        rgb = read_image(f, max_pixels=max_pixels)
    except DetectorError as exc:
        entry.update({"error": str(exc), "synthetic_probability": None, "verdict": None, "detector_verdict": None,
                      "provenance": None, "wild": None, "forgery": None})
        return entry
    from genguard.detectors.preprocess import PATCH

    from genguard.detectors.wild import wild_signals

    p = float(det.predict_proba([rgb])[0])
    if (getattr(det, "info_", None) or {}).get("arch"):  # a published detector: say which, and whose calibration
        entry["detector"] = {k: det.info_[k] for k in ("arch", "weights", "paper", "calibration") if k in det.info_}
    if not math.isfinite(p):  # never NaN in JSON: null plus the reason
        entry.update(synthetic_probability=None, detector_verdict="inconclusive",
                     synthetic_probability_reason=f"the detector returned {p} for this image")
    else:
        entry["synthetic_probability"] = round(p, 6)
        entry["detector_verdict"] = _DETECTOR_WORDS.get(det.verdict(p), det.verdict(p))
    min_side = int(getattr(det, "min_side", PATCH))
    if min(rgb.shape[:2]) < min_side:
        # Padded up to one tile (or below a network's total stride): outside anything the detector was
        # trained or calibrated on.
        entry["detector_verdict"] = "inconclusive"
        what = "minimum side" if hasattr(det, "min_side") else "tile"
        entry["note"] = f"image smaller than the detector's {min_side}-pixel {what}; its probability is not meaningful"
    entry["provenance"] = provenance_of(f, trust_anchor)
    entry["wild"] = _jsonable(wild_signals(f, rgb))
    entry["forgery"] = None
    if not no_forgery:
        rgb, analysed = bounded_copy(rgb)  # maps and overlay at the analysed size (the image's own up to 4k)
        res = analyze(rgb, METHODS)
        forgery: dict[str, Any] = {}
        stem = _safe_stem(i, f)
        for name, r in res.items():
            map_path = None
            if heatmaps is not None:
                map_path = heatmaps / stem / f"{name}.png"
                write_png(map_path, map_to_png_array(r.map))
            score = float(r.score)
            forgery[name] = {"score": round(score, 6) if math.isfinite(score) else 0.0,
                             "map": str(map_path) if map_path else None, "details": _jsonable(r.details)}
            if not math.isfinite(score):
                forgery[name]["score_reason"] = f"analysis gave {score}; reported as 0 (no evidence)"
        entry["forgery"] = forgery
        if heatmaps is not None:
            ov = heatmaps / stem / "overlay.png"
            # only methods that discriminate, each weighted by how rare its score is on untouched photos
            write_png(ov, overlay(rgb, evidence_map(res)))
            entry["overlay"] = str(ov)
    entry["verdict"], entry["reasons"], entry["verdict_basis"] = fuse(entry)
    return entry
