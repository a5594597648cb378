"""The review console: one self-contained HTML page that puts provenance, detection and forgery evidence side by side.

A trust-and-safety reviewer runs ``genguard review FILES... --out DIR`` and opens
``DIR/review.html`` (no server, no network; images are inlined). Every file gets a
card: what its provenance says (C2PA state and codes, the generator and run
named, the DP budget claimed, the watermark), what the detector says
(calibrated synthetic probability and verdict) and where forgery analysis
points (overlay and per-method scores). Cards are ordered most-suspicious first.
``DIR/review.json`` holds the same results for machines.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from genguard.examine import VERDICT_WORDS as _VERDICT_WORDS
from genguard.generators._io import MAX_PIXELS, atomic_write_json, atomic_write_text, check_pixels, check_regular_file

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif", ".heic", ".heif")
#: Order of cards: the evidence a reviewer must see first.
_PRIORITY = {"tampered": 0, "untrusted": 1, "error": 2, "stripped": 3, "remote": 4, "untagged": 5, "intact": 6}


def collect_files(paths: list[Path]) -> list[Path]:
    """Files named, and files under folders named (recursively), skipping C2PA sidecars. A FIFO, socket or device
    found in a folder is kept, so the reader names it as unreadable instead of it vanishing from the results."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if not q.is_dir() and q.suffix != ".c2pa"))
        else:
            out.append(p)
    return out


def review(paths: list[Path], out_dir: Path, detector: Any, trust_anchor: Path | None = None,
           forgery: bool = True, progress: bool = True) -> list[dict[str, Any]]:
    """Examine every file and write ``review.html`` and ``review.json`` into ``out_dir``."""
    from genguard.generators.base import progress_bar
    from genguard.examine import examine_image
    from genguard.guardrails.provenance import verify_file

    files = collect_files(paths)
    results: list[dict[str, Any]] = []
    maps = out_dir / "maps"
    with progress_bar("reviewing", total=len(files), enabled=progress) as advance:
        for i, f in enumerate(files):
            if not f.exists():
                results.append({"path": str(f), "error": f"{f}: no such file"})
            elif f.suffix.lower() in IMAGE_SUFFIXES:
                entry = examine_image(i, f, detector, maps if forgery else None, not forgery,
                                      trust_anchor=trust_anchor)
                if entry.get("error"):  # unreadable as an image: still say what its provenance is
                    entry["provenance"] = verify_file(f, trust_anchor=trust_anchor)
                results.append(entry)
            else:
                results.append({"path": str(f), "provenance": verify_file(f, trust_anchor=trust_anchor),
                                "synthetic_probability": None, "verdict": None, "forgery": None})
            advance(1)
    results.sort(key=_suspicion)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "review.json", _plain(results))
    atomic_write_text(out_dir / "review.html", render(results))
    return results


def _provenance_verdict(entry: dict[str, Any]) -> str:
    prov = _dict(entry.get("provenance"))
    if entry.get("error"):
        return "error"
    return str(prov.get("verdict") or "untagged")


def _suspicion(entry: dict[str, Any]) -> tuple[int, float]:
    p = entry.get("synthetic_probability")
    p = p if isinstance(p, (int, float)) and p == p else -1.0
    return (_PRIORITY.get(_provenance_verdict(entry), 5), -float(p))


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _thumb(path: str | Path, size: int = 256) -> str | None:
    """A data: URI of a PNG thumbnail (nearest-neighbour for tiny images, so pixels stay visible)."""
    from PIL import Image, UnidentifiedImageError

    try:
        check_regular_file(path, None, OSError)
        with Image.open(path) as im:
            check_pixels(*im.size, str(path), MAX_PIXELS, OSError)
            im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale directly
            im.load()
            im = im.convert("RGB")
            scale = size / max(im.size)
            resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


_COLOURS = {"tampered": "#b42318", "error": "#b42318", "untrusted": "#b42318", "stripped": "#b54708",
            "remote": "#b54708", "untagged": "#475467", "ai-generated": "#6941c6", "ai-composited": "#6941c6",
            "intact": "#067647", "generated": "#b42318", "edited": "#b42318", "inconclusive": "#b54708",
            "no_evidence": "#475467"}


def _badge(text: str, kind: str | None = None) -> str:
    colour = _COLOURS.get(kind or text, "#475467")
    return f'<span class="badge" style="background:{colour}">{html.escape(text)}</span>'


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape(str(v))


def _signer_text(signer: dict[str, Any] | None) -> str | None:
    if not signer:
        return None
    name = signer.get("common_name") or signer.get("issuer") or "?"
    s = f"{name} (issuer {signer.get('issuer')}; C2PA: {signer.get('trust')}"
    return s + (f"; CAWG identity: {signer['cawg']})" if signer.get("cawg") else ")")
def _num(v: Any, spec: str) -> str | None:
    """``v`` formatted with ``spec`` when it is a finite number; other values (from a file) shown as text."""
    import math

    if v is None:
        return None
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return format(v, spec) if math.isfinite(v) else str(v)
    return str(v)[:200]


def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _card(entry: dict[str, Any]) -> str:
    path = entry.get("path", "?")
    verdict = _provenance_verdict(entry)
    path = str(path)
    # everything below may come from a file's manifest: any type, so format defensively
    prov = _dict(entry.get("provenance"))
    manifest = _dict(prov.get("manifest"))
    claim = _dict(prov.get("claim"))
    wm = _dict(prov.get("watermark"))
    parts = [f'<div class="card"><h3>{html.escape(Path(path).name)}</h3><div class="path">{html.escape(path)}</div>']
    parts.append('<div class="badges">' + _badge(verdict))
    made = prov.get("made")
    if made in ("ai-generated", "ai-composited"):
        parts.append(_badge(f"{made} per its own manifest", made))
    if entry.get("verdict"):
        v = str(entry["verdict"])
        p = _num(entry.get("synthetic_probability"), ".2f") or "n/a"
        parts.append(_badge(f"{_VERDICT_WORDS.get(v, v)} (detector alone: {entry.get('detector_verdict')}, p={p})", v))
    parts.append("</div>")
    reasons = [r for r in entry.get("reasons") or [] if isinstance(r, dict)]
    if entry.get("verdict_basis") or reasons:
        parts.append(f'<p class="note"><b>Why:</b> {html.escape(str(entry.get("verdict_basis") or ""))}</p>')
        items = "".join(f"<li><b>{html.escape(str(r.get('signal')))}</b> ({html.escape(str(r.get('finding')))}, "
                        f"{html.escape(str(r.get('strength')))}): {html.escape(str(r.get('says')))}</li>" for r in reasons)
        if items:
            parts.append(f'<ul class="note">{items}</ul>')
    if entry.get("error"):
        parts.append(f'<p class="err">{html.escape(str(entry["error"]))}</p></div>')
        return "".join(parts)
    imgs = []
    if Path(path).suffix.lower() in IMAGE_SUFFIXES:
        t = _thumb(path)
        if t:
            imgs.append(f'<figure><img src="{t}" alt="image"><figcaption>image</figcaption></figure>')
        if entry.get("overlay"):
            o = _thumb(entry["overlay"])
            if o:
                imgs.append(f'<figure><img src="{o}" alt="forgery overlay"><figcaption>forgery overlay'
                            f'{_OVERLAY_LEGEND}</figcaption></figure>')
    if imgs:
        parts.append('<div class="imgs">' + "".join(imgs) + "</div>")
    rows = [
        ("reason", prov.get("reason")),
        ("C2PA manifest", manifest.get("state")),
        ("made (per manifest)", made),
        ("AI disclosure", ", ".join(s.rsplit("/", 1)[-1] for s in _dict(prov.get("history")).get("source_types") or [])
         or None),
        ("actions", ", ".join(_dict(prov.get("history")).get("actions") or []) or None),
        ("signer", _signer_text(_dict(prov.get("signer")))),
        ("codes", ", ".join(map(str, manifest.get("codes") if isinstance(manifest.get("codes"), list) else [])) or None),
        ("generator", prov.get("generator") or claim.get("generator")),
        ("run", prov.get("run_id") or claim.get("run_id")),
        ("DP ε / δ claimed", None if claim.get("epsilon") is None else f"{_num(claim['epsilon'], '.4g')} / {_num(claim.get('delta'), '.4g')}"),
        ("watermark", ("found" if wm.get("found") else ("not applicable" if wm.get("applicable") is False else "not found"))
         if wm else None),
        ("watermark p-value", wm.get("p_value")),
        ("watermark payload", wm.get("payload")),
    ]
    parts.append('<table>' + "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows
                                     if v not in (None, "")) + "</table>")
    if entry.get("forgery"):
        parts.append(_forgery_table(_dict(entry["forgery"])))
    parts.append("</div>")
    return "".join(parts)


def _forgery_table(forgery: dict[str, Any]) -> str:
    """Per method: calibrated score, false-alarm rate on untouched photos, flag, and what its map shows.

    A method that cannot tell forgeries from untouched photos is greyed and says so,
    whatever its score; the bar is red only for a flagged result.
    """
    rows = []
    for k, v in sorted(forgery.items(), key=lambda kv: -_score_of(kv[1])):
        d = _dict(_dict(v).get("details"))
        score = _score_of(v)
        fa = _rate_of(d.get("false_alarm_rate"))
        fa_ok = fa is not None
        disc = d.get("discriminates")
        if disc is False:
            verdict, cls = "not evidence", "nodisc"
        elif d.get("flagged") is True:
            verdict, cls = "flagged", "flag"
        elif fa_ok:
            verdict, cls = "within untouched range", "ok"
        else:
            verdict, cls = "uncalibrated", "ok"
        fa_txt = f"{100 * float(fa):.1f}%" if fa_ok else "n/a"
        legend = d.get("legend") or ""
        rows.append(f'<tr class="{cls}"><td>{html.escape(str(k))}</td>'
                    + ('<td>—</td>' if disc is False else
                       f'<td><div class="bar {cls}" style="width:{100 * score:.0f}%"></div>{score:.2f}</td>')
                    + f'<td>{html.escape(fa_txt)}</td><td>{html.escape(verdict)}</td>'
                    f'<td class="legend">{html.escape(str(legend))}</td></tr>')
    return ('<table class="forgery"><tr><th>forgery method</th><th>score (1 − false-alarm rate)</th>'
            '<th>untouched photos scoring this high</th><th>reading</th><th>what its map shows</th></tr>'
            + "".join(rows) + "</table>")


#: colour scale of the overlay: grey image, red where a discriminating method's map is high
_OVERLAY_LEGEND = ('<div class="scale"><span>no evidence</span><span class="ramp"></span><span>strong evidence</span></div>'
                   '<div class="legend">Red marks where the methods that can tell forgeries from untouched photos '
                   'found an anomaly, weighted by its calibrated score; methods marked "not evidence" score 0 and '
                   'never paint it.</div>')


def _rate_of(x: Any) -> float | None:
    """A rate in [0, 1] from a JSON value, or None (anything else: a string, a bool, NaN, 1e400)."""
    import math

    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    try:
        x = float(x)
    except OverflowError:
        return None
    return x if math.isfinite(x) and 0.0 <= x <= 1.0 else None


def _score_of(v: Any) -> float:
    import math

    x = _dict(v).get("score")
    if isinstance(x, int) and not isinstance(x, bool):
        return float(min(max(x, 0), 1))  # an int too large for a float still compares
    if isinstance(x, float) and math.isfinite(x):
        return float(min(max(x, 0.0), 1.0))
    return 0.0


def render(results: list[dict[str, Any]]) -> str:
    """The review page as one HTML string (self-contained)."""
    counts: dict[str, int] = {}
    for e in results:
        v = _provenance_verdict(e)
        counts[v] = counts.get(v, 0) + 1
    summary = " ".join(_badge(f"{n} {k}", k) for k, n in sorted(counts.items(), key=lambda kv: _PRIORITY.get(kv[0], 9)))
    cards = "\n".join(_card(e) for e in results)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>genguard review</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#101828;background:#f9fafb}}
.card{{background:#fff;border:1px solid #e4e7ec;border-radius:8px;padding:1rem;margin:1rem 0;max-width:980px}}
.card h3{{margin:.1rem 0}} .path{{color:#667085;font-size:.8rem;word-break:break-all}}
.badge{{display:inline-block;color:#fff;border-radius:4px;padding:.1rem .5rem;margin:.3rem .3rem .3rem 0;font-size:.85rem}}
.imgs{{display:flex;gap:1rem}} figure{{margin:0}} figcaption{{font-size:.75rem;color:#667085}}
img{{image-rendering:pixelated;border:1px solid #e4e7ec;max-width:256px}}
table{{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}} th,td{{text-align:left;padding:.15rem .6rem;border-bottom:1px solid #f2f4f7}}
.forgery td{{min-width:14rem}} .bar{{display:inline-block;height:.6rem;background:#f04438;margin-right:.4rem;vertical-align:middle}}
.bar.ok{{background:#98a2b3}} .bar.nodisc{{background:#d0d5dd}} tr.nodisc td{{color:#98a2b3}}
.legend{{font-size:.75rem;color:#475467;max-width:22rem}}
.scale{{display:flex;align-items:center;gap:.3rem;font-size:.7rem;color:#667085}}
.ramp{{display:inline-block;width:6rem;height:.6rem;background:linear-gradient(90deg,#808080,#f04438)}}
.err{{color:#b42318}} .note{{color:#475467;font-size:.85rem;max-width:980px}}
</style></head><body>
<h1>genguard review</h1>
<p>{len(results)} file(s): {summary}</p>
<p class="note">Provenance: <b>intact</b> = a valid manifest that matches the file (its signer named, and
trusted only when a trust anchor was given); <b>untrusted</b> = the signer's certificate failed, or is not under the
trust anchor; <b>tampered</b> = the manifest, a CAWG identity or an ingredient's manifest does not validate, or a
watermark contradicts it; <b>remote</b> = the manifest is at a URL, never fetched; <b>stripped</b> = no manifest but
a genguard watermark; <b>untagged</b> = neither. <b>made</b> is how the content was made per the manifest's own
history (strongest over its ingredients). The verdict fuses every signal — the file's own C2PA, known public
watermarks, generator metadata, the pixel detector and the forgery analyses that discriminate — into
<b>generated</b>, <b>edited</b>, <b>no evidence found</b> or <b>inconclusive</b>, with its reasons; none of them is
"authentic": finding nothing is not proof. The synthetic probability comes from a calibrated detector with an inconclusive band;
the default detector knows only ten small generator families made here and has never seen a large modern generator. Forgery scores are
calibrated on untouched photos: a score of 0.97 means 3% of untouched photos (crops of shipped photos, PNG and JPEG)
score at least as high on that method; a method is flagged at 5% or less, and a method that cannot tell planted
forgeries from untouched photos is shown as "not evidence" whatever its score. Most suspicious files come first.</p>
{cards}
</body></html>
"""
