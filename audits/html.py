"""Render the release report as one self-contained HTML page (plots inline as base64 PNG, no external assets)."""
from __future__ import annotations

import base64
import io
import json
from typing import Any, Mapping

import numpy as np

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>genguard release audit{% if gen_name %}: {{ gen_name }}{% endif %}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left;font-size:.92rem}
.pass{color:#17803d;font-weight:600}.fail{color:#b42318;font-weight:700}.skip{color:#777}
.verdict{font-size:1.3rem;padding:.5rem 1rem;display:inline-block;border-radius:6px}
.vpass{background:#e7f6ec}.vfail{background:#fdecea}
.note{color:#555;font-size:.88rem}.warn{color:#9a6700;font-size:.9rem}
img{max-width:100%} pre{background:#f6f8fa;padding:.6rem;overflow:auto;font-size:.8rem;max-height:30rem}
</style></head><body>
<h1>Release audit{% if gen_name %}: {{ gen_name }}{% endif %}</h1>
<p class="note">seed {{ meta.seed }} · {{ meta.timestamp }} · {{ n_samples }} samples</p>
<p class="verdict {{ 'vpass' if passed else 'vfail' }}">{{ banner }}</p>

<h2>Gates</h2>
<table><tr><th>gate</th><th>value</th><th>threshold</th><th>result</th></tr>
{% for g in gates %}<tr><td>{{ g.name }}</td><td>{{ fmt(g.value) }}</td><td>{{ g.op }} {{ g.threshold }}</td>
<td class="{{ {True:'pass', False:'fail', None:'skip'}[g.passed] }}">{{ {True:'pass', False:'FAIL', None:'not evaluated (allowed)'}[g.passed] }}{% if g.reason %} — {{ g.reason }}{% endif %}</td></tr>{% endfor %}
</table>

<h2>Samples</h2>
{% if img_grid %}<img alt="grid of generated samples" src="data:image/png;base64,{{ img_grid }}">{% endif %}

<h2>Bias / representation</h2>
{% if bias.get('groups') %}
<p>Attribute <b>{{ bias.attribute }}</b>, labels from the {{ bias.label_source }}; expected shares: {{ bias.expected_source }}.
Goodness-of-fit p = {{ fmt(bias.p_value) }} ({{ bias.test.test }}); total variation {{ fmt(bias.total_variation) }}
(95% bootstrap interval {{ fmt(bias.total_variation_ci[0]) }}–{{ fmt(bias.total_variation_ci[1]) }}; 95% of samples drawn from the expected shares stay below {{ fmt(bias.total_variation_null_95) }}).
Flagged: <b>{{ bias.flagged|join(', ') or 'none' }}</b>.</p>
<p class="note">{{ bias.decision_rule }}; {{ bias.interval }}; min_effect {{ bias.min_effect }}.</p>
{% if bias.classifier %}<p class="note">Attribute classifier held-out accuracy {{ fmt(bias.classifier.holdout_accuracy) }}: its errors shift observed shares.</p>{% endif %}
{% if img_bias %}<img alt="group shares with simultaneous intervals" src="data:image/png;base64,{{ img_bias }}">{% endif %}
{% if bias.condition_adherence and bias.condition_adherence.value is not none %}<p>Asking for group k yields group k in {{ fmt(bias.condition_adherence.value) }} of samples
(95% CI {{ fmt(bias.condition_adherence.ci[0]) }}–{{ fmt(bias.condition_adherence.ci[1]) }}).</p>{% endif %}
{% elif bias.get('reason') %}<p class="note">Not computed: {{ bias.reason }}</p>
{% else %}<pre>{{ dumps(bias) }}</pre>{% endif %}
{% if bias.get('fairness') %}<h3>Fairness of a model trained on the synthetic table</h3><pre>{{ dumps(bias.fairness) }}</pre>{% endif %}
{% for w in bias.get('warnings', []) %}<p class="warn">⚠ {{ w }}</p>{% endfor %}

<h2>Fidelity</h2>
{% if fidelity.get('fid_local') %}
<p class="note">{{ fidelity.feature_extractor.note }}</p>
<table><tr><th>metric</th><th>value</th><th>interval</th></tr>
{% for m in ['fid_local','kid_local','precision','recall','density','coverage','alpha_precision','beta_recall','authenticity'] %}
{% set v = fidelity.get(m) %}<tr><td>{{ m }}</td><td>{{ fmt(v.value if v else None) }}</td><td>{{ ci(v) }}</td></tr>{% endfor %}
</table>
{% if fidelity.fid_local.baseline_reference_holdout_vs_train is defined %}<p class="note">fid_local of the real holdout vs train (reference level): {{ fmt(fidelity.fid_local.baseline_reference_holdout_vs_train) }}</p>{% endif %}
{% if img_prdc %}<img alt="precision recall density coverage" src="data:image/png;base64,{{ img_prdc }}">{% endif %}
{% set dv = fidelity.get('diversity') or {} %}
<h3>Diversity against real data's own level</h3>
{% if dv.get('matched_size') %}
<p class="note">{{ dv.reference_note }}; compared at {{ dv.matched_size }} items each (the larger set subsampled, {{ dv.subsets }} subset(s)). 1 = as diverse as the real holdout.
The gate reads the lower end of the interval (Wilson bounds of both shares combined), so a small sample cannot pass on a lucky estimate.</p>
<table><tr><th>figure</th><th>gated value (lower end)</th><th>point</th><th>interval</th><th>generated</th><th>real holdout</th></tr>
{% for m in ['recall_relative', 'coverage_relative'] %}{% set v = dv.get(m) or {} %}
<tr><td>{{ m }}</td><td>{{ fmt(v.get('value')) }}</td><td>{{ fmt(v.get('point')) }}</td><td>{{ ci(v) }}</td><td>{{ fmt(v.get('generated')) }}</td><td>{{ fmt(v.get('reference')) }}</td></tr>{% endfor %}
</table>
{% set wc = dv.get('within_class') or {} %}
{% if wc.get('per_class') %}<p>Within-class spread (smallest over classes, gated): <b>{{ fmt(wc.min_ratio.value) }}</b>; mean {{ fmt(wc.mean_ratio) }}.
<span class="note">{{ wc.measure }}.</span></p>
<table><tr><th>class</th>{% for c in wc.per_class %}<th>{{ c }}</th>{% endfor %}</tr>
<tr><td>spread ratio</td>{% for c, v in wc.per_class.items() %}<td>{{ fmt(v.value) }}</td>{% endfor %}</tr>
<tr><td>generated items</td>{% for c, v in wc.per_class.items() %}<td>{{ v.n_generated }}</td>{% endfor %}</tr></table>
{% elif wc.get('reason') %}<p class="note">Within-class spread not computed: {{ wc.reason }}</p>{% endif %}
{% elif dv.get('reason') %}<p class="note">Not computed: {{ dv.reason }}</p>{% endif %}
{% elif fidelity.get('perplexity_local') or fidelity.get('columns') %}
{% if fidelity.get('perplexity_local') %}<p>perplexity_local {{ fmt(fidelity.perplexity_local.value) }} (real held-out text: {{ fmt(fidelity.perplexity_local.baseline_reference_holdout) }}); self-BLEU {{ fmt((fidelity.self_bleu or {}).get('value')) }}.</p>{% endif %}
{% elif fidelity.get('reason') %}<p class="note">Not computed: {{ fidelity.reason }}</p>
{% else %}<pre>{{ dumps(fidelity) }}</pre>{% endif %}
{% for w in fidelity.get('warnings', []) %}<p class="warn">⚠ {{ w }}</p>{% endfor %}
{% for block in section_html %}{{ block }}{% endfor %}

<h2>Memorization</h2>
{% if memorization.get('near_duplicate_rate') is not none %}
<p>Near-duplicate rate {{ fmt(memorization.near_duplicate_rate) }} (95% CI {{ fmt(memorization.near_duplicate_rate_ci[0]) }}–{{ fmt(memorization.near_duplicate_rate_ci[1]) }}),
{{ memorization.near_duplicate_count }} suspected copies, {{ memorization.exact_duplicate_count }} exact.
Rule: {{ memorization.method }} (threshold {{ memorization.distance_ratio_threshold }}, n = {{ memorization.nth_neighbour }}).
{% if memorization.holdout_false_positive_rate is number %}The same rule accuses {{ fmt(memorization.holdout_false_positive_rate) }} of real holdout items{% if memorization.holdout_false_positive_rate_note %} ({{ memorization.holdout_false_positive_rate_note }}){% endif %}.{% endif %}</p>
{% set cal = memorization.get('threshold_calibration') or {} %}
{% if cal.get('n_calibration') %}<p>Threshold calibrated on real data: {{ cal.rule }}. Calibration records: {{ cal.calibration_records|join('; ') }}.
Asked false-copy rate {{ cal.false_copy_rate_asked }}; bound achieved {{ fmt(cal.false_copy_rate_bound) }}{% if cal.capped %} (the cap {{ cal.cap }} was lower than the calibrated value {{ fmt(cal.calibrated_quantile) }}){% endif %}.
Smallest real ratio {{ fmt(cal.real_ratio_quantiles['0']) }}, 1% quantile {{ fmt(cal.real_ratio_quantiles['0.01']) }}, median {{ fmt(cal.real_ratio_quantiles['0.5']) }}.</p>
{% elif cal.get('reason') %}<p class="note">Threshold not calibrated: {{ cal.reason }}.</p>{% endif %}
{% if memorization.dcr.share_nearest_in_train is defined %}<p>Distance to closest record: a sample's nearest real item is a training item in {{ fmt(memorization.dcr.share_nearest_in_train) }} of samples;
{{ fmt(memorization.dcr.expected_share_if_no_copying) }} is expected when the output does not depend on which items were trained on (permutation p = {{ fmt(memorization.dcr.p_value) }}).</p>{% endif %}
{% if img_pairs %}<p>{{ pairs_caption }}</p><img alt="nearest-neighbour pairs: sample and training item" src="data:image/png;base64,{{ img_pairs }}">{% endif %}
{% elif memorization.get('reason') %}<p class="note">Not computed: {{ memorization.reason }}</p>
{% else %}<pre>{{ dumps(memorization) }}</pre>{% endif %}

<h2>Privacy</h2>
{% if privacy.get('epsilon') is not none %}
<p>{{ 'DP-SGD' if privacy.private else 'Not private' }}: ε = {{ fmt(privacy.epsilon) }}, δ = {{ privacy.delta }}, accountant {{ privacy.accountant }}.</p>
{% if img_privacy %}<img alt="privacy budget" src="data:image/png;base64,{{ img_privacy }}">{% endif %}
{% else %}<p class="note">{{ privacy.get('reason', 'no epsilon stated') }}</p>{% endif %}

<h2>Provenance and detection</h2>
<pre>{{ dumps({'provenance': provenance, 'detection': detection}) }}</pre>

<h2>Marking (EU AI Act Art. 50(2))</h2>
{% if marking.get('requirements') %}
<p class="note">{{ marking.disclaimer }}. {{ marking.selection }}; {{ 'every checked output meets every requirement' if marking.passed else 'something is missing' }}.</p>
<table><tr><th>requirement</th><th>met / judged</th><th>95% CI</th><th>not feasible</th><th>rests on</th></tr>
{% for code, r in marking.requirements.items() %}<tr><td>{{ r.name }}</td><td>{{ r.met }} / {{ r.judged }}</td>
<td>{% if r.ci95 %}{{ fmt(r.ci95[0]) }}–{{ fmt(r.ci95[1]) }}{% else %}–{% endif %}</td><td>{{ r.not_feasible }}</td><td>{{ r.basis }}</td></tr>
{% endfor %}</table>
{% if marking.robustness.n_sampled %}<p>Everyday edits on {{ marking.robustness.n_sampled }} watermarked image(s): {% for name, s in marking.robustness.survival.items() %}{{ name }} {{ s.survived }}/{{ s.n }}{% if not loop.last %}, {% endif %}{% endfor %} ({{ marking.robustness.note }}).</p>{% endif %}
{% for m in marking.missing %}<p class="warn">missing: {{ m }}</p>{% endfor %}
{% for u in marking.not_marked %}<p class="warn">not watermarked, {{ u.n }} of {{ marking.n_checked }} checked output(s): {{ u.reason }} ({{ u.files|join(', ') }})</p>{% endfor %}
<p class="note">Sources: {% for src in marking.sources %}{{ src }}{% if not loop.last %}; {% endif %}{% endfor %}</p>
{% else %}<p class="note">{{ marking.get('reason', 'not checked') }}</p>{% endif %}

<h2>Full report.json</h2>
<pre>{{ dumps(data) }}</pre>
</body></html>
"""


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def image_grid(images: np.ndarray, n: int = 100, cols: int = 20) -> str | None:
    if images is None or len(images) == 0 or np.asarray(images).ndim < 3:
        return None
    plt = _plt()
    imgs = np.asarray(images)[:n]
    rows = int(np.ceil(len(imgs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.5, rows * 0.5))
    for ax, i in zip(np.atleast_1d(axes).ravel(), range(rows * cols)):
        ax.axis("off")
        if i < len(imgs):
            ax.imshow(imgs[i], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    return _png(fig)


def bias_plot(bias: Mapping[str, Any]) -> str | None:
    groups = bias.get("groups") if isinstance(bias, Mapping) else None
    if not groups:
        return None
    plt = _plt()
    names = list(groups)
    def _f(v: Any) -> float:
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float("nan")

    obs = np.array([_f(groups[g].get("observed")) for g in names])
    exp = np.array([_f(groups[g].get("expected")) for g in names])
    ci = [groups[g].get("ci") if isinstance(groups[g].get("ci"), (list, tuple)) and len(groups[g]["ci"]) == 2
          else (None, None) for g in names]
    lo = np.array([_f(c[0]) for c in ci])
    hi = np.array([_f(c[1]) for c in ci])
    flagged = [bool(groups[g].get("flagged")) for g in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 0.6 * len(names)), 3.2))
    ax.bar(x, obs, color=["#d9534f" if f else "#5b8def" for f in flagged], alpha=0.8, label="observed share")
    # an interval can be missing (one group, a degenerate table) or round past the estimate: matplotlib
    # refuses negative or NaN error bars, so those draw as no bar rather than failing the report
    yerr = np.clip(np.nan_to_num(np.array([obs - lo, hi - obs], dtype=float), nan=0.0), 0.0, None)
    ax.errorbar(x, obs, yerr=yerr, fmt="none", ecolor="black", capsize=3,
                label="simultaneous 95% interval")
    ax.scatter(x, exp, marker="_", s=400, color="black", zorder=3, label="expected share")
    ax.set_xticks(x, names)
    ax.set_ylabel("share of samples")
    ax.set_title(f"{bias.get('attribute', '')}: observed vs expected (red = flagged)")
    ax.legend(fontsize=7, loc="upper right")
    return _png(fig)


def prdc_plot(fid: Mapping[str, Any]) -> str | None:
    ms = [m for m in ("precision", "recall", "density", "coverage")
          if isinstance(fid.get(m), Mapping) and fid[m].get("value") is not None]
    if not ms:
        return None
    plt = _plt()
    vals = np.array([fid[m]["value"] for m in ms])
    err = np.array([[v - fid[m].get("ci", [v, v])[0], fid[m].get("ci", [v, v])[1] - v] for m, v in zip(ms, vals)],
                   dtype=float).T
    err = np.clip(np.nan_to_num(err, nan=0.0), 0.0, None)
    fig, ax = plt.subplots(figsize=(4.5, 2.8))
    ax.bar(ms, vals, color="#5b8def", yerr=err, capsize=3)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_title("PRDC in the local feature space (95% Wilson intervals)")
    return _png(fig)


def pairs_plot(samples: np.ndarray, train: np.ndarray, mem: Mapping[str, Any], max_pairs: int = 12) -> tuple[str | None, str]:
    if samples is None or np.asarray(samples).ndim < 3 or not isinstance(mem, Mapping) or "_ratios" not in mem:
        return None, ""
    dups = mem.get("near_duplicates") or []
    if dups:
        pairs = [(d["sample"], d["train_item"], d["distance_ratio"]) for d in dups[:max_pairs]]
        caption = f"Suspected copies (of {mem.get('near_duplicate_count')}), sample left, training item right:"
    else:
        ratios = mem["_ratios"]
        order = np.argsort(ratios)[:8]

        nearest = mem.get("_nearest")
        if nearest is None:
            return None, ""
        pairs = [(int(i), int(nearest[i]), float(ratios[i])) for i in order]
        caption = "No suspected copies. The 8 samples closest to a training item, sample left, training item right:"
    plt = _plt()
    fig, axes = plt.subplots(2, len(pairs), figsize=(1.1 * len(pairs), 2.6), squeeze=False)
    for j, (si, ti, r) in enumerate(pairs):
        axes[0, j].imshow(samples[si], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        axes[0, j].set_title(f"s{si}\nratio {r:.2f}", fontsize=7)
        axes[1, j].imshow(train[ti], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        axes[1, j].set_title(f"train {ti}", fontsize=7)
        axes[0, j].axis("off")
        axes[1, j].axis("off")
    return _png(fig), caption


def privacy_plot(privacy: Mapping[str, Any], policy: Mapping[str, Any]) -> str | None:
    if not isinstance(privacy, Mapping) or privacy.get("epsilon") is None:
        return None
    plt = _plt()
    bars = [("spent ε", float(privacy["epsilon"]))]
    if privacy.get("target_epsilon") is not None:
        bars.append(("target ε", float(privacy["target_epsilon"])))
    gate = (policy.get("gates") or {}).get("privacy.epsilon")
    if gate and "max" in gate:
        bars.append(("policy max ε", float(gate["max"])))
    fig, ax = plt.subplots(figsize=(4, 2.2))
    ax.barh([b[0] for b in bars], [b[1] for b in bars], color=["#5b8def", "#aaa", "#d9534f"][:len(bars)])
    ax.set_xlabel("epsilon")
    ax.set_title(f"privacy budget (δ = {privacy.get('delta')})")
    return _png(fig)


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ci(v: Any) -> str:
    if isinstance(v, Mapping) and v.get("ci"):
        return f"{_fmt(v['ci'][0])} – {_fmt(v['ci'][1])}"
    return ""


def render_block(template: str, **values: Any) -> Any:
    """An HTML fragment of a section's own (autoescaped jinja2 ``template``), marked safe for the page."""
    import jinja2
    import markupsafe

    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    return markupsafe.Markup(env.from_string(template).render(fmt=_fmt, ci=_ci, **values))


def gate_banner(gates: list[Mapping[str, Any]]) -> str:
    """One line: how many gates there were, how many were evaluated, passed and failed (and which)."""
    n = len(gates)
    evaluated = [g for g in gates if g.get("passed") is not None and g.get("evaluated", True)]
    failed = [str(g.get("name")) for g in gates if g.get("passed") is False]
    allowed = sum(1 for g in gates if g.get("passed") is None)
    unevaluated_failed = sum(1 for g in gates if g.get("passed") is False and g.get("evaluated") is False)
    head = f"{len(evaluated)} of {n} gates evaluated"
    if not failed:
        return f"All evaluated gates passed ({head}" + (f"; {allowed} not evaluated, allowed by the policy)" if allowed else ")")
    return (f"Gate(s) failed: {', '.join(failed)} ({head}"
            + (f"; {unevaluated_failed} failed because they could not be evaluated" if unevaluated_failed else "")
            + (f"; {allowed} not evaluated, allowed by the policy" if allowed else "") + ")")


def render_html(data: Mapping[str, Any], artefacts: Mapping[str, Any]) -> str:
    import jinja2

    from genguard.audits.sections import MODALITIES, sections_for

    env = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    tmpl = env.from_string(_TEMPLATE)
    mem = artefacts.get("memorization") or {}
    pairs_img, caption = pairs_plot(artefacts.get("samples"), artefacts.get("train"), mem)
    gen = data.get("generator") or {}

    def _sec(name: str) -> Mapping[str, Any]:
        v = data.get(name)
        return v if isinstance(v, Mapping) else {}

    failed = ", ".join(g["name"] for g in data["gates"] if g["passed"] is False)
    banner = gate_banner(data["gates"])
    modality = gen.get("modality") if gen.get("modality") in MODALITIES else "image"
    section_html = [b for b in (s.html(data, artefacts) for s in sections_for(modality)) if b]
    return tmpl.render(section_html=section_html,
        data=data, meta=data.get("meta", {}), gates=data["gates"], passed=not failed, failed=failed, banner=banner,
        gen_name=gen.get("name"), n_samples=gen.get("n_samples"),
        bias=_sec("bias"), fidelity=_sec("fidelity"), memorization=_sec("memorization"), privacy=_sec("privacy"),
        provenance=data.get("provenance"), detection=data.get("detection"), marking=_sec("marking"),
        img_grid=image_grid(artefacts.get("samples")), img_bias=bias_plot(_sec("bias")),
        img_prdc=prdc_plot(_sec("fidelity")), img_pairs=pairs_img, pairs_caption=caption,
        img_privacy=privacy_plot(_sec("privacy"), (data.get("meta") or {}).get("policy", {})),
        fmt=_fmt, ci=_ci, dumps=lambda o: json.dumps(o, indent=1),
    )
