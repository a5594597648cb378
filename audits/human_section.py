"""The release report's ``human`` section: a human study's results (2AFC realism, MOS) from the review console, checked and gated."""
from __future__ import annotations

import math
from typing import Any, Mapping

from genguard.audits import AuditError
from genguard.audits.sections import (MODALITIES, AuditContext, AuditSection, Gate, Reason, Result, fmt, get,
                                      register_section)

#: Figures a release policy may gate on (none is a default gate: a study is run when a team decides to).
_OFFERED = (
    Gate("human.two_afc.share_generated_judged_real", "min", 0.3, (0.0, 1.0)),
    Gate("human.two_afc.ci_high", "min", 0.3, (0.0, 1.0)),
    Gate("human.two_afc.ci_low", "min", 0.1, (0.0, 1.0)),
    Gate("human.mos.generated_minus_real.ci_low", "min", -0.5, (-4.0, 4.0)),
    Gate("human.mos.generated_minus_real.difference", "min", -0.5, (-4.0, 4.0)),
    Gate("human.mos.krippendorff_alpha_interval", "min", 0.667, (-1.0, 1.0)),
    Gate("human.mos.krippendorff_alpha_ordinal", "min", 0.667, (-1.0, 1.0)),
)


def _finite_share(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0.0 <= v <= 1.0


def check_study(study: Any, source: str = "human study") -> dict[str, Any]:
    """The ``human`` section of a console export (``{"human": {...}}`` or the section itself), its figures
    checked: a study file is input like any other, so a malformed or impossible one is refused by name."""
    if isinstance(study, Mapping) and set(study) == {"human"}:
        study = study["human"]
    if not isinstance(study, Mapping) or not ({"two_afc", "mos"} & set(study)):
        raise AuditError(f"{source}: not a human study's results (expected the console's results.json with "
                         "'two_afc' or 'mos')")
    out = dict(study)
    tw = out.get("two_afc")
    if tw is not None:
        if not isinstance(tw, Mapping):
            raise AuditError(f"{source}: two_afc must be an object")
        n, k = tw.get("trials"), tw.get("generated_judged_real")
        if not (isinstance(n, int) and isinstance(k, int) and 0 <= k <= n):
            raise AuditError(f"{source}: two_afc needs integer trials and generated_judged_real with 0 <= k <= n")
        for key in ("share_generated_judged_real", "ci_low", "ci_high"):
            v = tw.get(key)
            if v is not None and not _finite_share(v):
                raise AuditError(f"{source}: two_afc.{key} must be a share in [0, 1], got {v!r}")
        if n and tw.get("share_generated_judged_real") is not None and abs(tw["share_generated_judged_real"] - k / n) > 1e-9:
            raise AuditError(f"{source}: two_afc.share_generated_judged_real disagrees with its counts ({k}/{n})")
    mos = out.get("mos")
    if mos is not None and not isinstance(mos, Mapping):
        raise AuditError(f"{source}: mos must be an object")
    # the study's own gates are re-evaluated by the release policy, not trusted from the file
    out.pop("gates", None)
    out.pop("passed", None)
    return out


@register_section
class HumanSection(AuditSection):
    """A human study's results, given to the audit (``genguard audit --human results.json``)."""

    name = "human"
    key = "human"
    modalities = MODALITIES
    offered = _OFFERED

    def compute(self, ctx: AuditContext) -> Mapping[str, Any] | Result:
        study = ctx.inputs.get("human")
        if study is None:
            return Result.missing(Reason.NOT_GIVEN, "no human study was given (run one in `genguard console` and "
                                  "pass its results.json with `genguard audit --human FILE`)")
        return check_study(study)

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        rows = []
        share = get(data, "human.two_afc.share_generated_judged_real")
        if share is not None:
            rows.append(("human 2AFC: generated judged real",
                         f"{fmt(share)} [{fmt(get(data, 'human.two_afc.ci_low'))}, {fmt(get(data, 'human.two_afc.ci_high'))}]"))
        diff = get(data, "human.mos.generated_minus_real.difference")
        if diff is not None:
            rows.append(("human MOS: generated − real",
                         f"{fmt(diff)} [{fmt(get(data, 'human.mos.generated_minus_real.ci_low'))}, "
                         f"{fmt(get(data, 'human.mos.generated_minus_real.ci_high'))}]"))
        return rows

    def html(self, data: Mapping[str, Any], artefacts: Mapping[str, Any]) -> Any:
        from genguard.audits.html import render_block

        h = data.get("human")
        if not isinstance(h, Mapping):
            return None
        if h.get("value", 0) is None:
            return render_block("<h3>Human evaluation</h3><p class=\"note\">Not given: {{ r }}</p>", r=h.get("reason"))
        return render_block(_HTML, h=h, tw=h.get("two_afc") or {}, mos=h.get("mos") or {})


_HTML = """<h3>Human evaluation{% if h.get('study') %}: {{ h.get('study') }}{% endif %}</h3>
<p class="note">{% if h.get('media') == 'audio' %}A listening test on audio clips. {% endif %}{{ h.get('raters_excluded_by_attention_checks', 0) }} rater(s) excluded by attention checks before any statistic.</p>
{% if tw %}<table><tr><th>2AFC (real vs generated)</th><th>value</th></tr>
<tr><td>share of generated judged real (0.5 = indistinguishable)</td><td>{{ fmt(tw.get('share_generated_judged_real')) }} [{{ fmt(tw.get('ci_low')) }}, {{ fmt(tw.get('ci_high')) }}]</td></tr>
<tr><td>trials / raters</td><td>{{ tw.get('trials') }} / {{ tw.get('raters') }}</td></tr></table>
<p class="note">{{ tw.get('method') }}</p>{% endif %}
{% if mos %}{% set d = mos.get('generated_minus_real') or {} %}<table><tr><th>MOS (1–5)</th><th>value</th></tr>
<tr><td>generated − real</td><td>{{ fmt(d.get('difference')) }} [{{ fmt(d.get('ci_low')) }}, {{ fmt(d.get('ci_high')) }}]</td></tr>
<tr><td>Krippendorff's α (interval / ordinal)</td><td>{{ fmt(mos.get('krippendorff_alpha_interval')) }} / {{ fmt(mos.get('krippendorff_alpha_ordinal')) }}</td></tr></table>{% endif %}
"""
