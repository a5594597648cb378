"""Are generated outputs marked as EU AI Act Article 50(2) asks: signed, time-stamped AI disclosure plus a robust watermark.

A technical check, not legal advice. What it rests on:

* Article 50(2) of Regulation (EU) 2024/1689 (the Act's own text): outputs "marked in a machine-readable
  format and detectable as artificially generated or manipulated", by technical solutions that are
  "effective, interoperable, robust and reliable as far as technically feasible".
* The Code of Practice on Transparency of AI-Generated Content (European AI Office, final text of
  10 June 2026), Measure 1.1, as summarised by IPTC ("EU AI transparency Code of Practice", iptc.org,
  10 June 2026): sub-measure 1.1.1 digitally-signed metadata recording whether content is AI-generated
  or manipulated, "digitally signed and time-stamped"; sub-measure 1.1.2 imperceptible watermarking;
  sub-measure 1.1.3 fingerprinting/logging (optional, not checked here). The Code's own text was not
  available offline; its identifiers are quoted from that summary. For robustness no measure identifier
  was found, so that line cites the Act's "robust ... as far as technically feasible" alone.

Each file gets one :class:`Line` per requirement of :data:`REQUIREMENTS` with a coded status
(:data:`STATUSES`). Reading the manifest and the watermark is :func:`tagging.verify_file`'s job; this module
only judges its result, and runs the everyday-edit suite (:mod:`edits`) on a sample of watermarked images.
"""
from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

DISCLAIMER = "technical check, not legal advice"
ACT = "Regulation (EU) 2024/1689 (AI Act) Art. 50(2)"
CODE = "Code of Practice on Transparency of AI-Generated Content (10 June 2026)"
CODE_SOURCE = "measure numbers as summarised by IPTC (iptc.org, 10 June 2026); the Code's text was not checked"
SOURCES = (
    f"{ACT}: outputs 'marked in a machine-readable format and detectable as artificially generated or "
    "manipulated'; solutions 'effective, interoperable, robust and reliable as far as technically feasible'",
    f"{CODE}, Measure 1.1: sub-measure 1.1.1 digitally-signed, time-stamped metadata; 1.1.2 imperceptible "
    f"watermarking; 1.1.3 fingerprinting/logging (optional, not checked) — {CODE_SOURCE}",
)

#: met: the output shows it. missing: it does not. unchecked: genguard cannot tell here (no key, no detector
#: for this modality) and so cannot show it met. not-feasible: no such technique exists for this modality
#: (the Act asks "as far as technically feasible"). not-sampled: the robustness suite ran on other files.
STATUSES = ("met", "missing", "unchecked", "not-feasible", "not-sampled")
#: statuses that make `marking check` exit 1: the requirement is not shown to be met
FAILING = ("missing", "unchecked")
MODALITIES = ("image", "text", "tabular", "audio", "audio/video/other")


@dataclasses.dataclass(frozen=True)
class Requirement:
    """One requirement of the check, with the source it rests on."""

    code: str
    name: str
    basis: str


REQUIREMENTS = (
    Requirement("signed_metadata", "signed metadata present and valid",
                f"Code sub-measure 1.1.1 (digitally-signed metadata); {ACT} 'machine-readable'"),
    Requirement("timestamp", "signature time-stamped",
                "Code sub-measure 1.1.1 ('digitally signed and time-stamped')"),
    Requirement("ai_disclosure", "machine-readable AI disclosure",
                "Code sub-measure 1.1.1 (metadata records whether content is AI-generated or manipulated); "
                f"{ACT} 'detectable as artificially generated or manipulated'"),
    Requirement("watermark", "imperceptible watermark present", "Code sub-measure 1.1.2 (imperceptible watermarking)"),
    Requirement("robustness", "mark survives everyday edits",
                f"{ACT} 'robust and reliable as far as technically feasible' (no Code measure identifier found)"),
)
REQUIREMENT_BY_CODE = {r.code: r for r in REQUIREMENTS}

_IMAGE_FORMATS = ("png", "jpeg", "webp", "gif", "tiff", "heic", "avif", "svg", "jxl", "dng")
_TABULAR_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl", ".json", ".npy", ".npz")
_AI_MADE = ("ai-generated", "ai-composited")


@dataclasses.dataclass
class Line:
    """One requirement's result for one file."""

    requirement: str
    status: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        r = REQUIREMENT_BY_CODE[self.requirement]
        return {"requirement": self.requirement, "name": r.name, "status": self.status, "detail": self.detail,
                "basis": r.basis}


def modality(path: str | Path) -> str:
    """``image``, ``text``, ``tabular``, ``audio`` (WAV) or ``audio/video/other``, from the magic bytes (the suffix for
    text/tables)."""
    from genguard.guardrails.provenance import manifest as mf
    from genguard.guardrails.provenance.tagging import TEXT_SUFFIXES

    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in TEXT_SUFFIXES:
        return "text"
    if suffix in _TABULAR_SUFFIXES:
        return "tabular"
    import os
    import stat

    try:
        if not stat.S_ISREG(os.stat(p).st_mode):  # never open a FIFO or device (open would block)
            return "audio/video/other"
        with open(p, "rb") as fh:
            head = fh.read(64)
    except OSError:
        return "audio/video/other"
    fmt = mf.sniff_read_format(head, p)
    if fmt == "wav":
        return "audio"
    return "image" if fmt in _IMAGE_FORMATS else "audio/video/other"


# ---------------------------------------------------------------------------------------------- per file
def _signed_metadata(rec: dict[str, Any]) -> Line:
    state = (rec.get("manifest") or {}).get("state", "Missing")
    verdict = rec.get("verdict")
    where = " (sidecar)" if (rec.get("manifest") or {}).get("sidecar") else ""
    if state == "Missing":
        return Line("signed_metadata", "missing", "no C2PA manifest (embedded or sidecar)")
    if state == "Remote":
        return Line("signed_metadata", "unchecked",
                    "manifest is at a remote URL, not fetched (genguard never reaches the network)")
    reason = rec.get("reason") or "manifest does not validate"
    if verdict == "intact":  # verify's rule table: hashes and signature hold, the signer is not refused
        trust = (rec.get("signer") or {}).get("trust") or "unverified"
        return Line("signed_metadata", "met", f"C2PA manifest{where}, {state}, signer {trust}")
    if verdict == "untrusted":
        return Line("signed_metadata", "missing", f"C2PA manifest{where} validates but its signer is refused: {reason}")
    return Line("signed_metadata", "missing", f"C2PA manifest{where} does not validate ({state}): {reason}")


def _timestamp(rec: dict[str, Any], metadata: Line) -> Line:
    if metadata.status != "met":
        return Line("timestamp", "missing", "no valid signed metadata to carry a time-stamp")
    codes = (rec.get("history") or {}).get("timestamp_codes") or []
    bad = [c for c in codes if c not in ("timeStamp.validated", "timeStamp.trusted")]
    if "timeStamp.validated" in codes and not bad:
        when = (rec.get("signer") or {}).get("time")
        tsa = "time-stamp authority trusted" if "timeStamp.trusted" in codes else "time-stamp authority not trusted"
        return Line("timestamp", "met", f"RFC 3161 time-stamp{f' {when}' if when else ''} validated; {tsa}")
    if bad:
        return Line("timestamp", "missing", f"time-stamp does not validate ({', '.join(bad)})")
    return Line("timestamp", "missing", "the signature carries no time-stamp (genguard's signer signs offline "
                                        "without a time-stamp authority)")


def _disclosure(rec: dict[str, Any], metadata: Line) -> Line:
    if metadata.status != "met":
        return Line("ai_disclosure", "missing", "no valid signed metadata to carry a disclosure")
    made = rec.get("made") or "unknown"
    types = [t.rsplit("/", 1)[-1] for t in (rec.get("history") or {}).get("source_types") or []]
    if made in _AI_MADE:
        return Line("ai_disclosure", "met", f"{made} (digitalSourceType {', '.join(types) or '?'})")
    return Line("ai_disclosure", "missing", f"the manifest does not declare AI generation or manipulation "
                                            f"(made: {made}; no trainedAlgorithmicMedia/Data source type)")


def _watermark(rec: dict[str, Any], kind: str, side: int | None = None) -> Line:
    from genguard.guardrails.provenance.tagging import MIN_WATERMARK_SIDE, SMALL_MARK_MIN_SIDE

    wm = rec.get("watermark") if isinstance(rec.get("watermark"), dict) else {}
    if kind == "tabular":
        return Line("watermark", "not-feasible", "genguard has no imperceptible watermark for tables; the signed "
                                                 "sidecar binds the file by hash only")
    if kind == "audio/video/other":
        return Line("watermark", "unchecked", "genguard has no watermark detector for this audio or video format, "
                                              "nor for documents (WAV only); a third-party watermark is not checked")
    if kind == "audio":
        if wm.get("found"):
            return Line("watermark", "met", f"genguard audio zero-bit mark detected, p={wm['p_value']:.1e} ({wm.get('test')} "
                        "test; presence only: it names no run, and can be copied onto other audio)")
        why = str(wm.get("reason") or "")
        if "key" in why:
            return Line("watermark", "unchecked", f"genguard watermark not checked: {why}")
        if wm.get("markable") is False or "too short" in why:  # the clip's length or rate cannot hold the mark
            return Line("watermark", "not-feasible", why)
        if why:
            return Line("watermark", "missing", f"genguard audio mark absent ({why})")
        seen = f" (p={wm['p_value']:.1e} over {wm.get('chips')} chips with sound)" if "p_value" in wm else ""
        return Line("watermark", "missing", f"genguard audio mark absent{seen}")
    if wm.get("found") and wm.get("kind") == "zero-bit":
        return Line("watermark", "met", f"genguard zero-bit mark detected, p={wm['p_value']:.1e} (image under "
                    f"{MIN_WATERMARK_SIDE} px: presence only, no payload, names no run)")
    if wm.get("found"):
        p = wm.get("p_value")
        what = "text green-list watermark" if kind == "text" else "genguard image watermark"
        pv = f", p={p:.1e}" if isinstance(p, (int, float)) else (f", z={wm['z']:.1f}" if wm.get("z") is not None else "")
        return Line("watermark", "met", f"{what} detected{pv}")
    if kind == "image" and side is not None and side < SMALL_MARK_MIN_SIDE:
        return Line("watermark", "not-feasible", f"image {side} px on its short side: genguard marks images of "
                    f"{SMALL_MARK_MIN_SIDE} px a side and more (none detected)")
    if not wm.get("applicable", True):
        why = str(wm.get("reason") or "not applicable")
        if "too small" in why:
            return Line("watermark", "not-feasible", why)
        if "too short to tell" in why:  # no text this short could show the mark: absence proves nothing
            return Line("watermark", "unchecked", f"text watermark not decidable: {why}")
        if "key" in why:
            return Line("watermark", "unchecked", f"genguard watermark not checked: {why}")
        return Line("watermark", "missing", f"genguard watermark absent ({why})")
    return Line("watermark", "missing", "genguard watermark absent" + (" (no text watermark detected with this key)"
                                                                      if kind == "text" else ""))


def _short_side(path, kind: str) -> int | None:
    if kind != "image":
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:  # the header only
            return min(im.size)
    except Exception:  # a format PIL does not read (HEIC, SVG): the size is not needed to judge
        return None


def check_file(path: str | Path, *, trust_anchor: str | Path | None = None, keys=None) -> dict[str, Any]:
    """The marking lines of one file (robustness left ``not-sampled``; :func:`check_outputs` fills it)."""
    from genguard.guardrails.provenance.tagging import verify_file

    kind = modality(path)
    rec = verify_file(path, trust_anchor=trust_anchor, keys=keys)
    out: dict[str, Any] = {"path": str(path), "modality": kind, "verdict": rec.get("verdict"),
                           "reason": rec.get("reason"), "made": rec.get("made")}
    if rec.get("verdict") == "error":
        out["error"] = rec.get("reason")
        out["lines"] = []
        return out
    meta = _signed_metadata(rec)
    lines = [meta, _timestamp(rec, meta), _disclosure(rec, meta), _watermark(rec, kind, _short_side(path, kind))]
    wm = lines[-1]
    if kind == "image" and wm.status == "met":
        lines.append(Line("robustness", "not-sampled", "robustness measured on a sample of the other images"))
    elif kind == "image":
        lines.append(Line("robustness", "missing" if wm.status != "not-feasible" else "not-feasible",
                          "no watermark; a C2PA manifest does not survive re-encoding"))
    elif kind == "audio" and wm.status == "met":
        lines.append(Line("robustness", "not-sampled", "robustness measured on a sample of the other clips"))
    elif kind == "audio":
        lines.append(Line("robustness", "missing" if wm.status != "not-feasible" else "not-feasible",
                          "no watermark; a C2PA manifest does not survive re-encoding"))
    elif kind == "text":
        lines.append(Line("robustness", "unchecked", "the everyday-edit suite is for images; text edits are not measured"))
    elif kind == "tabular":
        lines.append(Line("robustness", "not-feasible", "no watermark; any edit breaks the sidecar's hash binding"))
    else:
        lines.append(Line("robustness", "unchecked", "no watermark detector for this modality"))
    out["lines"] = [ln.as_dict() for ln in lines]
    return out


# ---------------------------------------------------------------------------------------------- robustness
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion k/n ((0, 1) when n = 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return max(0.0, c - h), min(1.0, c + h)


def robustness_of(path: str | Path, key: bytes, edits: dict | None = None) -> dict[str, bool]:
    """Whether the genguard watermark of ``path`` is still detected (at its 1e-6 false-positive test) after each edit."""
    from genguard.guardrails.provenance.edits import EVERYDAY_EDITS
    from genguard.guardrails.provenance.tagging import _decode_image, _read
    from genguard.guardrails.provenance.watermark import ImageWatermark

    from genguard.guardrails.provenance.tagging import MIN_WATERMARK_SIDE

    arr, _ = _decode_image(_read(Path(path)), str(path))
    if min(arr.shape[:2]) < MIN_WATERMARK_SIDE:  # a small image carries the zero-bit mark: measure that one
        from genguard.guardrails.provenance.smallmark import SmallImageMark

        small = SmallImageMark(key)
        return {name: bool(small.detect(fn(arr))["found"]) for name, fn in (edits or EVERYDAY_EDITS).items()}
    wm = ImageWatermark(key)
    return {name: bool(wm.detect(fn(arr))["found"]) for name, fn in (edits or EVERYDAY_EDITS).items()}


def audio_robustness_of(path: str | Path, key: bytes, edits: dict | None = None) -> dict[str, bool]:
    """Whether the genguard audio mark of the WAV ``path`` is still detected (at its 1e-6 test) after each edit
    of :data:`audio_edits.AUDIO_EDITS`."""
    from genguard.guardrails.provenance.audio_edits import AUDIO_EDITS
    from genguard.guardrails.provenance.audio_watermark import AudioWatermark
    from genguard.guardrails.provenance.tagging import _decode_wav, _read

    from genguard.guardrails.provenance.audio_watermark import DETECT_MAX_SECONDS

    wav = _decode_wav(_read(Path(path)), str(path), DETECT_MAX_SECONDS)
    x, wm = wav.mono().astype(np.float64), AudioWatermark(key)
    out = {}
    for name, fn in (edits or AUDIO_EDITS).items():
        y, rate = fn(x, wav.rate)
        out[name] = bool(wm.detect(y, rate)["found"])
    return out


def _key_for(keys) -> bytes | None:
    from genguard.guardrails.provenance.tagging import _local_watermark_key

    if keys is not None:
        return keys.watermark_key
    return _local_watermark_key()[0]


def check_outputs(paths: Iterable[str | Path], *, sample: int = 8, seed: int = 0, trust_anchor=None, keys=None,
                  progress=None) -> dict[str, Any]:
    """The marking check of a set of outputs: per file, per modality, and the robustness suite on a sample.

    ``sample`` watermarked images (chosen with ``seed``) go through every edit of
    :data:`edits.EVERYDAY_EDITS`; a file in the sample meets the robustness line only when its watermark
    survives every edit. The per-edit survival rate over the sample is reported with a 95 % Wilson interval.
    Never raises for a bad file: it is listed with ``error`` and counts as bad input.
    """
    from genguard.guardrails.provenance.audio_edits import AUDIO_EDITS
    from genguard.guardrails.provenance.edits import EVERYDAY_EDITS

    paths = [Path(p) for p in paths]
    files = []
    for p in paths:
        files.append(check_file(p, trust_anchor=trust_anchor, keys=keys))
        if progress is not None:
            progress(1)
    rob = _robustness(files, "image", EVERYDAY_EDITS, robustness_of, sample, seed, keys)
    rob["note"] = "every edit re-encodes the pixels without metadata, so no embedded C2PA manifest survives it"
    arob = _robustness(files, "audio", AUDIO_EDITS, audio_robustness_of, sample, seed, keys)
    arob["note"] = "every edit rewrites the samples without the C2PA chunk, so no embedded manifest survives it"
    return {"disclaimer": DISCLAIMER, "sources": list(SOURCES), "files": files,
            "by_modality": by_modality(files), "robustness": rob, "audio_robustness": arob, "passed": passed(files),
            "missing": missing_summary(files)}


def _robustness(files: list[dict[str, Any]], kind: str, edits: dict, measure, sample: int, seed: int,
                keys) -> dict[str, Any]:
    """Run ``edits`` on a seeded sample of the marked files of modality ``kind``; fill their robustness lines."""
    marked = [f for f in files if f["modality"] == kind and any(
        ln["requirement"] == "robustness" and ln["status"] == "not-sampled" for ln in f.get("lines", []))]
    chosen = sorted(random.Random(seed).sample(range(len(marked)), min(max(0, sample), len(marked))))
    key = _key_for(keys) if chosen else None
    survived: dict[str, list[bool]] = {name: [] for name in edits}
    what = "watermark" if kind == "image" else "audio mark"
    for i in chosen:
        f = marked[i]
        line = next(ln for ln in f["lines"] if ln["requirement"] == "robustness")
        try:
            res = measure(f["path"], key)
        except Exception as exc:  # the file changed or cannot be decoded again: say so, keep the batch
            line.update(status="unchecked", detail=f"robustness not measured: {str(exc).splitlines()[0]}")
            continue
        for name, ok in res.items():
            survived[name].append(ok)
        lost = [n for n, ok in res.items() if not ok]
        line["edits"] = res
        if lost:
            line.update(status="missing", detail=f"{what} lost after {', '.join(lost)}; survives "
                        f"{', '.join(n for n, ok in res.items() if ok) or 'none'}; the C2PA manifest survives none")
        else:
            line.update(status="met", detail=f"{what} survives all {len(res)} edits "
                        f"({', '.join(res)}); the C2PA manifest survives none")
    return {"edits": list(edits), "n_sampled": len(chosen), f"n_watermarked_{'images' if kind == 'image' else 'clips'}":
            len(marked), "seed": seed, "test": f"genguard {what} detected at its 1e-6 false-positive test",
            "survival": {n: {"survived": sum(v), "n": len(v), "rate": (sum(v) / len(v)) if v else None,
                             "ci95": list(wilson(sum(v), len(v))) if v else None} for n, v in survived.items()}}


def by_modality(files: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per modality and requirement: how many files have each status."""
    out: dict[str, Any] = {}
    for f in files:
        m = out.setdefault(f["modality"], {"n_files": 0, "errors": 0, "requirements": {}})
        m["n_files"] += 1
        m["errors"] += bool(f.get("error"))
        for ln in f.get("lines", []):
            counts = m["requirements"].setdefault(ln["requirement"], {})
            counts[ln["status"]] = counts.get(ln["status"], 0) + 1
    return out


def missing_summary(files: Sequence[dict[str, Any]]) -> list[str]:
    """One line per failing requirement and modality: what is missing, in how many files."""
    counts: dict[tuple[str, str], int] = {}
    for f in files:
        for ln in f.get("lines", []):
            if ln["status"] in FAILING:
                counts[(f["modality"], ln["requirement"])] = counts.get((f["modality"], ln["requirement"]), 0) + 1
    return [f"{mod}: {REQUIREMENT_BY_CODE[req].name} — {_failing_statuses(files, mod, req)} in {n} file(s) "
            f"[{REQUIREMENT_BY_CODE[req].basis}]" for (mod, req), n in counts.items()]


def _failing_statuses(files, mod: str, req: str) -> str:
    st = {ln["status"] for f in files if f["modality"] == mod for ln in f.get("lines", [])
          if ln["requirement"] == req and ln["status"] in FAILING}
    return "/".join(sorted(st))


def passed(files: Sequence[dict[str, Any]]) -> bool:
    """True when no file is unreadable and no requirement of any file is missing or unchecked."""
    return bool(files) and all(not f.get("error") and all(ln["status"] not in FAILING for ln in f["lines"])
                               for f in files)
