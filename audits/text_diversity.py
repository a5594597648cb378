"""Text diversity against real text's own level (self-BLEU, distinct-1/2), and its audit section.

A collapsed text generator (one that repeats a passage, or a few) writes
texts that share most of their n-grams: self-BLEU near 1, few distinct
n-grams. Both figures move with the number of texts and their length, so they
are compared with real text cut to the same length and count; 1 = as diverse
as real text. This module is one section of the release audit and its
function (see :mod:`audits.sections`).
"""
from __future__ import annotations

import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from genguard.audits.sections import AuditContext, AuditSection, Gate, Reason, missing, register_section, row
from genguard.audits.text_fidelity import self_bleu, tokenize


def _distinct(token_lists: Sequence[list[str]], n: int, budget: int) -> float:
    """Distinct-n (Li et al. 2016): unique n-grams over all n-grams, the n-grams of the texts in order, cut
    at ``budget`` so that two sets are compared on the same number of n-grams (the share falls as it grows)."""
    seen: set = set()
    total = 0
    for toks in token_lists:
        for i in range(len(toks) - n + 1):
            if total >= budget:
                return len(seen) / max(total, 1)
            seen.add(tuple(toks[i:i + n]))
            total += 1
    return len(seen) / max(total, 1)


def text_diversity(generated: Sequence[str], reference: Sequence[str], *, seed: int = 0, alpha: float = 0.05,
                   repeats: int = 5, max_texts: int = 200, max_tokens: int = 128,
                   min_tokens: int = 4) -> dict[str, Any]:
    """Self-BLEU and distinct-1/2 of generated texts relative to real text's own level (1 = as diverse as real).

    ``reference`` is real text (the audit passes the training and holdout
    texts: diversity is a property of a set, which a model having seen it does
    not change). All three measures move with the number of texts and their
    length, so both sets are compared like for like: every text is cut to the
    same number of tokens ``L`` (a window of ``L`` tokens placed by a hash of the text; ``L`` is the
    smaller of the two sets' median lengths, at most ``max_tokens``, which
    bounds the time),
    the larger set is subsampled to the smaller's count ``m`` (``repeats``
    random subsets, averaged), and distinct-n counts the same number of
    n-grams in both. ``self_bleu_relative`` is (1 - self-BLEU of the generated
    texts) / (1 - self-BLEU of the real texts): 0 when every text repeats the
    others. ``distinct_n_relative`` is the generated share of distinct n-grams
    over the real share. Each ``value`` is the LOWER end of its interval: for
    self-BLEU the 95% bounds of both means (per-text scores) combined as
    generated-low / real-high; for distinct-n the ``alpha`` percentile range
    of the ratio over random half-size subsets of both sets (half the texts
    vary more than all of them: a conservative interval).
    """
    gen = [tokenize(str(t)) for t in generated]
    ref = [tokenize(str(t)) for t in reference]
    gen = [t for t in gen if t]
    ref = [t for t in ref if t]
    m = min(len(gen), len(ref), max_texts)
    if m < 4:
        return {**missing(Reason.TOO_FEW_SAMPLES), "reason": f"{Reason.TOO_FEW_SAMPLES.sentence}: needs at least 4 non-empty generated and real texts (have {len(gen)}, "
                                         f"{len(ref)})"}
    length = int(min(np.median([len(t) for t in gen]), np.median([len(t) for t in ref]), max_tokens))
    if length < min_tokens:
        return {**missing(Reason.TOO_SMALL), "reason": f"{Reason.TOO_SMALL.sentence}: the texts are too short to compare ({length} tokens at the median; "
                                         f"needs {min_tokens})"}
    rng = np.random.default_rng(seed)

    def window(t: list[str]) -> list[str]:
        # a window placed by the text's own content rather than the start: the openings of real documents
        # (titles, underlines) are more alike than their bodies and would set the real level too low, and
        # a content hash (not a fresh random draw) gives a repeated text the same window every time
        if len(t) <= length:
            return t
        start = zlib.crc32("\x1f".join(t).encode("utf-8")) % (len(t) - length + 1)
        return t[start:start + length]

    gen = [window(t) for t in gen]
    ref = [window(t) for t in ref]

    def subset(x: list, k: int) -> list:
        return x if len(x) == k else [x[i] for i in rng.choice(len(x), k, replace=False)]

    def budget(a: list, b: list, n: int) -> int:
        return min(sum(max(len(t) - n + 1, 0) for t in a), sum(max(len(t) - n + 1, 0) for t in b))

    def joined(x: list) -> list[str]:
        return [" ".join(t) for t in x]  # tokens re-joined: self_bleu tokenises again, to the same tokens

    reps = 1 if len(gen) == m and len(ref) == m else repeats
    sb = {"generated": [], "reference": []}
    dist = {n: {"generated": [], "reference": []} for n in (1, 2)}
    sb_ci = {"generated": [], "reference": []}
    for _ in range(reps):
        g, r = subset(gen, m), subset(ref, m)
        for key, x in (("generated", g), ("reference", r)):
            s = self_bleu(joined(x), max_texts=m, seed=seed)
            sb[key].append(s["value"])
            sb_ci[key].append(s["ci"])
        for n in (1, 2):
            b = budget(g, r, n)
            dist[n]["generated"].append(_distinct(g, n, b))
            dist[n]["reference"].append(_distinct(r, n, b))
    out: dict[str, Any] = {"matched_texts": m, "tokens_per_text": length, "n_generated": len(generated),
                           "n_reference": len(reference), "subsets": reps}
    g_sb, r_sb = float(np.mean(sb["generated"])), float(np.mean(sb["reference"]))
    g_hi = float(np.mean([c[1] for c in sb_ci["generated"]]))
    g_lo = float(np.mean([c[0] for c in sb_ci["generated"]]))
    r_hi = float(np.mean([c[1] for c in sb_ci["reference"]]))
    r_lo = float(np.mean([c[0] for c in sb_ci["reference"]]))
    if r_sb >= 1.0:
        out["self_bleu_relative"] = missing(Reason.DEGENERATE_REFERENCE, "the real texts repeat each other (self-BLEU 1)")
    else:
        lo = max(0.0, 1 - min(g_hi, 1.0)) / max(1 - max(r_lo, 0.0), 1e-12)
        hi = max(0.0, 1 - max(g_lo, 0.0)) / max(1 - min(r_hi, 1.0), 1e-12)
        point = (1 - g_sb) / (1 - r_sb)
        out["self_bleu_relative"] = {"value": float(min(lo, point)), "point": float(point), "ci": [float(lo), float(hi)],
                                     "generated": g_sb, "reference": r_sb, "gated_on": "lower end of the interval",
                                     "measure": "(1 - self-BLEU-4 of the generated texts) / (1 - that of real texts)"}
    half = max(2, m // 2)
    for n in (1, 2):
        g, r = float(np.mean(dist[n]["generated"])), float(np.mean(dist[n]["reference"]))
        ratios = []
        for _ in range(4 * repeats):  # counting n-grams is cheap: more draws for the percentile interval
            gs, rs = subset(gen, half), subset(ref, half)
            b = budget(gs, rs, n)
            rd = _distinct(rs, n, b)
            if rd > 0:
                ratios.append(_distinct(gs, n, b) / rd)
        if r <= 0 or not ratios:
            out[f"distinct_{n}_relative"] = missing(Reason.DEGENERATE_REFERENCE, f"the real texts have no {n}-grams")
            continue
        ci = [float(np.quantile(ratios, alpha / 2)), float(np.quantile(ratios, 1 - alpha / 2))]
        out[f"distinct_{n}_relative"] = {"value": float(min(ci[0], g / r)), "point": float(g / r), "ci": ci,
                                         "generated": g, "reference": r, "gated_on": "lower end of the interval",
                                         "measure": f"share of distinct {n}-grams, same number of {n}-grams"}
    out["reference_note"] = ("reference: real texts (training and holdout) cut to the same length and count, the "
                             "level a generator drawing fresh real text would reach")
    if m < 30:
        out["warnings"] = [f"only {m} texts compared: the diversity figures are noisy, read the intervals"]
    return out



@register_section
class TextDiversitySection(AuditSection):
    """``fidelity.diversity`` of a text audit: self-BLEU and distinct-1/2 relative to the real texts."""

    name = "text_diversity"
    key = "fidelity.diversity"
    modalities = ("text",)
    step = "diversity"
    # 1 = as diverse as real text at the same length and count; gated on the lower ends; see README
    gates = (Gate("fidelity.diversity.self_bleu_relative", "min", 0.5, (0.0, 10.0)),
             Gate("fidelity.diversity.distinct_1_relative", "min", 0.5, (0.0, 10.0)),
             Gate("fidelity.diversity.distinct_2_relative", "min", 0.5, (0.0, 10.0)))

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        return text_diversity(ctx.items, ctx.inputs["reference_texts"], seed=ctx.seed, alpha=ctx.alpha)

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [row("diversity vs real (self-BLEU / distinct-1 / distinct-2)", data,
                    [f"fidelity.diversity.{m}" for m in ("self_bleu_relative", "distinct_1_relative",
                                                         "distinct_2_relative")], suffix=" (1 = real text)")]

    def html(self, data: Mapping[str, Any], artefacts: Mapping[str, Any]) -> Any:
        from genguard.audits.html import render_block

        dv = ((data.get("fidelity") or {}).get("diversity")) or {}
        if not isinstance(dv, Mapping):
            return None
        if dv.get("value", 0) is None:
            return render_block("<h3>Text diversity</h3><p class=\"note\">Not computed: {{ r }}</p>", r=dv.get("reason"))
        return render_block(_HTML, dv=dv)


_HTML = """{% if dv.get('tokens_per_text') %}<h3>Text diversity against real text's own level</h3>
<p class="note">{{ dv.reference_note }}: {{ dv.matched_texts }} texts of {{ dv.tokens_per_text }} tokens each ({{ dv.subsets }} subset(s)). 1 = as diverse as real text; the gate reads the lower end of the interval.</p>
<table><tr><th>figure</th><th>gated value (lower end)</th><th>point</th><th>interval</th><th>generated</th><th>real</th></tr>
{% for m in ['self_bleu_relative', 'distinct_1_relative', 'distinct_2_relative'] %}{% set v = dv.get(m) or {} %}
<tr><td>{{ m }}</td><td>{{ fmt(v.get('value')) }}</td><td>{{ fmt(v.get('point')) }}</td><td>{{ ci(v) }}</td><td>{{ fmt(v.get('generated')) }}</td><td>{{ fmt(v.get('reference')) }}</td></tr>{% endfor %}
</table><p class="note">self_bleu_relative: (1 − self-BLEU of the generated texts) / (1 − self-BLEU of real texts); distinct-n: share of distinct n-grams, counted on as many n-grams in both sets.</p>{% endif %}
"""
