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


#: How-made classes (from a file's own C2PA history) that rule out calling the image authentic.
AI_DISCLOSED = ("ai-generated", "ai-composited")


def _apply_disclosure(entry: dict[str, Any]) -> None:
    """A file whose own manifest declares AI content is synthetic, whatever the pixel detector says: a
    disclosure against the signer's interest needs no trust in the signer. The detector's verdict is kept."""
    made = (entry.get("provenance") or {}).get("made")
    if made in AI_DISCLOSED and entry.get("verdict") != "synthetic":
        entry["detector_verdict"] = entry.get("verdict")
        entry["verdict"] = "synthetic"
        entry["verdict_basis"] = f"its C2PA manifest declares it {made}"


def _safe_stem(i: int, path: Path) -> str:
    return f"{i:04d}_" + re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:80]


def examine_image(i: int, f: Path, det: Any, heatmaps: Path | None, no_forgery: bool,
                  max_pixels: int = 100_000_000, trust_anchor: Path | None = None) -> dict[str, Any]:
    """One image's detect entry: synthetic probability and verdict, provenance, forgery scores and maps.

    An unreadable image gives an entry with ``error`` (one line naming the file) instead of raising.
    """
    from genguard.detectors import DetectorError
    from genguard.detectors._io import read_image, write_png
    from genguard.detectors.forgery import METHODS, analyze, bounded_copy, map_to_png_array, overlay

    entry: dict[str, Any] = {"path": str(f)}
    try:
        rgb = read_image(f, max_pixels=max_pixels)
    except DetectorError as exc:
        entry.update({"error": str(exc), "synthetic_probability": None, "verdict": None,
                      "provenance": None, "forgery": None})
        return entry
    from genguard.detectors.preprocess import PATCH

    p = float(det.predict_proba([rgb])[0])
    if not math.isfinite(p):  # never NaN in JSON: null plus the reason
        entry.update(synthetic_probability=None, verdict="inconclusive",
                     synthetic_probability_reason=f"the detector returned {p} for this image")
    else:
        entry["synthetic_probability"] = round(p, 6)
        entry["verdict"] = det.verdict(p)
    if min(rgb.shape[:2]) < PATCH:
        # Padded up to one tile: outside anything the detector was trained or calibrated on.
        entry["verdict"] = "inconclusive"
        entry["note"] = f"image smaller than the detector's {PATCH}-pixel tile; its probability is not meaningful"
    entry["provenance"] = provenance_of(f, trust_anchor)
    _apply_disclosure(entry)
    entry["forgery"] = None
    if not no_forgery:
        import numpy as np

        rgb, analysed = bounded_copy(rgb)  # maps and overlay at the analysed size (the image's own up to 4k)
        res = analyze(rgb, METHODS)
        forgery: dict[str, Any] = {}
        combined = np.zeros(rgb.shape[:2], np.float32)
        stem = _safe_stem(i, f)
        for name, r in res.items():
            map_path = None
            if heatmaps is not None:
                map_path = heatmaps / stem / f"{name}.png"
                write_png(map_path, map_to_png_array(r.map))
            combined = np.maximum(combined, r.map * r.score)
            score = float(r.score)
            forgery[name] = {"score": round(score, 6) if math.isfinite(score) else 0.0,
                             "map": str(map_path) if map_path else None, "details": _jsonable(r.details)}
            if not math.isfinite(score):
                forgery[name]["score_reason"] = f"analysis gave {score}; reported as 0 (no evidence)"
        entry["forgery"] = forgery
        if heatmaps is not None:
            ov = heatmaps / stem / "overlay.png"
            write_png(ov, overlay(rgb, combined))
            entry["overlay"] = str(ov)
    return entry
