"""The release report's built-in sections (generator, privacy, fidelity, bias, memorization, provenance, detection, marking) for images, texts and tables.

Each is an :class:`~genguard.audits.sections.AuditSection` registered in the
order the report is assembled; see :mod:`audits.sections` for the protocol.
Values computed from the real data once per audit (the image feature
extractor and its features of the train and holdout splits, the tabular
fairness fit) are shared through ``ctx.shared``.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.audits import AuditError
from genguard.audits.sections import (AuditContext, AuditSection, Gate, Reason, fmt, get, missing, register_section,
                                      row)

_SHARE = (0.0, 1.0)
_RELATIVE = (0.0, 10.0)
_COUNT = (0.0, float("inf"))


# --------------------------------------------------------------------------------------
# shared by every modality
# --------------------------------------------------------------------------------------
@register_section
class GeneratorSection(AuditSection):
    """What was audited: the generator's name, parameters and seed as the caller gave them, sample count, modality."""

    name = "generator"
    key = "generator"

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        out: dict[str, Any] = dict(ctx.inputs.get("generator_info") or {})
        s = ctx.samples
        if ctx.modality in ("image", "audio"):
            out.setdefault("name", s.metadata.get("generator"))
            out["n_samples"] = len(s)
            out["modality"] = s.modality
            out["conditions"] = sorted(s.conditions)
            if "seed" not in out and s.metadata.get("seed") is not None:
                out["seed"] = s.metadata.get("seed")
            if ctx.modality == "audio":
                out["sample_rate"] = s.metadata.get("sample_rate")
            outside = ctx.inputs.get("outside_share", 0.0)
            if outside > 0:
                what = "pixel values lay outside [0, 1]" if ctx.modality == "image" else "audio samples lay outside [-1, 1]"
                out["warnings"] = [f"{outside:.2%} of {what} and were clipped"]
        else:
            out.update({"n_samples": len(ctx.items), "modality": ctx.modality})
        return out


def with_membership_inference(evidence: Mapping[str, Any] | None, samples: Any, train: Any, holdout: Any,
                              seed: int) -> dict[str, Any]:
    """``evidence`` plus the sample-only membership inference (:func:`audits.privacy.membership_inference`)
    when the caller has not run it: members are training records, non-members the holdout (as many of
    each), and the other training records are DOMIAS's reference population. Without a holdout it is
    reported ``null`` with the reason."""
    from genguard.audits.privacy import membership_inference
    from genguard.guardrails.privacy.errors import PrivacyError

    out = dict(evidence or {})
    if "membership_inference" in out:
        return out
    if holdout is None or len(holdout) < 2 or len(train) < 4:
        out["membership_inference"] = missing(Reason.NO_HOLDOUT, "no holdout records (known non-members) given")
        return out
    rng = np.random.default_rng(seed)
    k = min(len(holdout), len(train) // 2)
    perm = rng.permutation(len(train))
    train, holdout = np.asarray(train), np.asarray(holdout)
    try:
        mi = membership_inference(samples, train[perm[:k]], holdout[rng.permutation(len(holdout))[:k]],
                                  train[perm[k:]], seed=seed)
    except PrivacyError as exc:
        out["membership_inference"] = missing(Reason.FAILED, str(exc))
        return out
    mi["reference"] = "members: training records; non-members: the holdout; DOMIAS reference: the other training records"
    out["membership_inference"] = mi
    return out


def _standardised_rows(ctx: AuditContext) -> list[np.ndarray]:
    cols = list(ctx.train.columns)
    r = ctx.train[cols].to_numpy(float)
    mu, sd = r.mean(0), r.std(0) + 1e-12
    return [((df[cols].to_numpy(float) - mu) / sd).astype(np.float32) for df in (ctx.items, ctx.train, ctx.holdout)]


@register_section
class PrivacySection(AuditSection):
    """The ledger's DP claim, its re-verification and the sample-only membership inference."""

    name = "privacy"
    key = "privacy"
    gates = (Gate("privacy.epsilon", "max", 10.0, _COUNT),)

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.privacy import privacy_section

        evidence = ctx.inputs.get("privacy_evidence")
        if ctx.modality == "image":
            evidence = with_membership_inference(evidence, ctx.items, ctx.train.x,
                                                 ctx.holdout.x if ctx.holdout is not None else None, ctx.seed)
        elif ctx.modality == "tabular":
            try:
                evidence = with_membership_inference(evidence, *_standardised_rows(ctx), ctx.seed)
            except (ValueError, KeyError) as exc:  # a non-numeric column: no distances between rows
                evidence = {"membership_inference": missing(Reason.NOT_NUMERIC, str(exc)), **dict(evidence or {})}
        elif ctx.modality == "audio":
            from genguard.audits.audio_sections import audio_privacy_features

            feats = audio_privacy_features(ctx)
            if feats is None:
                evidence = {"membership_inference": missing(Reason.NO_LABELS, "no labels to train the audit's clip "
                                                            "classifier, whose features the attacks compare"),
                            **dict(evidence or {})}
            else:
                evidence = with_membership_inference(evidence, *feats, ctx.seed)
                mi = evidence.get("membership_inference")
                if isinstance(mi, dict) and mi.get("value", 0) is not None:
                    mi["feature_space"] = "the audit's log-mel CNN features of the clips"
        else:
            evidence = {"membership_inference": missing(
                Reason.NOT_APPLICABLE_MODALITY, "the sample-only attacks compare numeric vectors; texts have no such "
                "distance here (verbatim copies are in memorization)"), **dict(evidence or {})}
        ledger = ctx.inputs.get("ledger")
        return privacy_section(dict(ledger) if ledger is not None else None, **evidence)

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        eps = get(data, "privacy.epsilon")
        return [("privacy ε (δ)", f"{fmt(eps)} ({fmt(get(data, 'privacy.delta'), 'g')})" if eps is not None
                 else "not private")]


# --------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------
def image_extractor(ctx: AuditContext) -> Any:
    """The audit's feature extractor (an attribute classifier trained on the reference), fitted once per audit."""
    from genguard.audits.features import fit_extractor

    def make() -> Any:
        attribute = ctx.policy["bias"]["attribute"]
        train, holdout = ctx.train, ctx.holdout
        if attribute not in train.groups:
            return None
        hx = holdout.x if holdout is not None and attribute in holdout.groups else None
        hy = holdout.groups[attribute] if hx is not None else None
        return fit_extractor(train.x, train.groups[attribute], class_names=train.group_names.get(attribute),
                             holdout_x=hx, holdout_y=hy, seed=ctx.seed)

    return ctx.shared("extractor", make)


def image_features(ctx: AuditContext, which: str) -> np.ndarray:
    """Features of ``train``, ``holdout`` or ``samples`` under the shared extractor, computed once per audit."""
    ext = image_extractor(ctx)
    src = {"train": lambda: ctx.train.x, "holdout": lambda: ctx.holdout.x, "samples": lambda: ctx.items}[which]
    return ctx.shared(f"features:{which}", lambda: ext.features(src()))


def predicted_labels(ctx: AuditContext) -> np.ndarray:
    """The attribute classifier's label of each sample, computed once per audit (fidelity and bias read it)."""
    return ctx.shared("predicted_labels", lambda: image_extractor(ctx).predict(ctx.items))


@register_section
class ImageFidelitySection(AuditSection):
    """fid_local, kid_local, PRDC, alpha-precision/beta-recall, and diversity against the real holdout's level."""

    name = "image_fidelity"
    key = "fidelity"
    modalities = ("image",)
    step = "fidelity"
    gates = (Gate("fidelity.precision", "min", 0.5, _SHARE),
             # diversity, each relative to real data's own level (1 = as diverse as the real holdout); see README
             Gate("fidelity.diversity.recall_relative", "min", 0.5, _RELATIVE),
             Gate("fidelity.diversity.coverage_relative", "min", 0.5, _RELATIVE),
             Gate("fidelity.diversity.within_class.min_ratio", "min", 0.5, _RELATIVE))
    # raw recall and coverage grow with the sample count: offered, not gated by default (the relative ones are)
    offered = (Gate("fidelity.recall", "min", 0.5, _SHARE), Gate("fidelity.coverage", "min", 0.5, _SHARE))

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.fidelity import alpha_beta_authenticity, diversity, frechet_distance, kernel_distance, prdc

        policy, train, holdout = ctx.policy, ctx.train, ctx.holdout
        attribute = policy["bias"]["attribute"]
        ext = image_extractor(ctx)
        if ext is None:
            return missing(Reason.NO_LABELS, f"reference data has no '{attribute}' labels to train the audit's "
                                             "feature extractor on")
        fr, ff = image_features(ctx, "train"), image_features(ctx, "samples")
        out: dict[str, Any] = {"feature_extractor": ext.describe()}
        fid = frechet_distance(fr, ff)
        if holdout is not None:
            base = frechet_distance(fr, image_features(ctx, "holdout"))
            fid["baseline_holdout_vs_train"] = base.get("value")
            fid["baseline_note"] = ("fid_local of the real holdout split against the train split: the level a perfect "
                                    "generator would reach at the holdout's sample size")
        out["fid_local"] = fid
        out["kid_local"] = kernel_distance(fr, ff, seed=ctx.seed)
        k = int(policy["fidelity"].get("prdc_k", 5))
        pr = prdc(fr, ff, k=k)
        for m in ("precision", "recall", "density", "coverage"):
            out[m] = {k: pr[k] for k in ("value", "reason", "code") if k in pr} if pr.get("value", 0) is None else pr[m]
        if pr.get("value", 0) is not None:
            out["prdc_k"] = pr["k"]
        ab = alpha_beta_authenticity(fr, ff)
        for m in ("alpha_precision", "beta_recall", "authenticity"):
            out[m] = {k: ab[k] for k in ("value", "reason", "code") if k in ab} if ab.get("value", 0) is None else ab[m]
        if ab.get("value", 0) is not None:
            out["alpha_beta_embedding"] = ab["embedding"]
        if holdout is not None:
            out["diversity"] = diversity(fr, ff, image_features(ctx, "holdout"), real_labels=train.groups[attribute],
                                         fake_labels=predicted_labels(ctx), class_names=train.group_names.get(attribute),
                                         k=k, seed=ctx.seed, alpha=ctx.alpha)
        else:
            out["diversity"] = missing(Reason.NO_HOLDOUT)
        out["warnings"] = (list(fid.get("warnings", [])) + list(out["kid_local"].get("warnings", []))
                           + list(pr.get("warnings", [])))
        rec = ctx.inputs.get("reconstructions")
        if rec is not None:
            from genguard.audits.fidelity import reconstruction_quality

            out["reconstruction"] = reconstruction_quality(rec[0], rec[1])
        else:
            out["reconstruction"] = missing(Reason.NOT_GIVEN, "no (original, reconstruction) pairs given")
        out["_real_features"] = fr
        out["_fake_features"] = ff
        ctx.artefacts["fidelity"] = out
        return out

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [row("fid_local (local features; not Inception FID)", data, ["fidelity.fid_local"], ".2f"),
                row("precision / recall / coverage", data,
                    ["fidelity.precision", "fidelity.recall", "fidelity.coverage"]),
                row("diversity vs real (recall / coverage / within-class)", data,
                    ["fidelity.diversity.recall_relative", "fidelity.diversity.coverage_relative",
                     "fidelity.diversity.within_class.min_ratio"], suffix=" (1 = real data)")]


def _bias_rows(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    if get(data, "bias") is None and isinstance(data.get("bias"), Mapping) and "reason" in data["bias"]:
        return [("bias", "not computed")]
    return [("bias: total variation (p-value)",
             f"{fmt(get(data, 'bias.total_variation'))} ({fmt(get(data, 'bias.p_value'), '.3g')})"),
            ("bias: flagged groups", ", ".join(map(str, get(data, "bias.flagged") or [])) or "none")]


_BIAS_GATE = Gate("bias.flagged_count", "max", 0, _COUNT)


@register_section
class ImageBiasSection(AuditSection):
    """Representation of the groups among the samples (labels from the audit classifier or the caller), condition
    adherence, per-group quality and intersections."""

    name = "image_bias"
    key = "bias"
    modalities = ("image",)
    step = "bias"
    gates = (_BIAS_GATE,)

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.bias import condition_adherence, per_group_quality, representation, resolve_expected

        policy, train, samples, x = ctx.policy, ctx.train, ctx.samples, ctx.items
        bp = policy["bias"]
        attribute = bp["attribute"]
        names = train.group_names.get(attribute)
        if attribute not in train.groups:
            return missing(Reason.NO_LABELS, f"reference data has no '{attribute}' attribute")
        codes_ref = train.groups[attribute]
        if names is None:
            names = [str(i) for i in range(int(codes_ref.max()) + 1)]
        expected, source = resolve_expected(bp.get("target", "reference"), names, codes_ref)
        requested = samples.conditions.get(attribute)
        ext = image_extractor(ctx)
        labels = ctx.inputs.get("labels")
        if labels is not None:
            produced = np.asarray(labels, dtype=np.int64)
            if produced.shape != (len(x),):
                raise AuditError(f"labels: expected {len(x)} group codes, got shape {produced.shape}")
            label_source = "user"
        elif ext is not None:
            produced = predicted_labels(ctx)
            label_source = "attribute classifier"
        else:
            return missing(Reason.NO_LABELS, "no labels and no attribute classifier")
        kw = dict(alpha=ctx.alpha, min_effect=float(bp["min_effect"]), draws=int(bp.get("mc_draws", 4000)),
                  seed=ctx.seed, expected_source=source, attribute=attribute)
        out = representation(produced, names, expected, **kw)
        out["label_source"] = label_source
        if ext is not None:
            out["classifier"] = {k: v for k, v in ext.describe().items() if k != "note"}
        if requested is not None:
            req = np.asarray(requested, dtype=np.int64)
            out["requested"] = {k: v for k, v in representation(req, names, expected, **kw).items()
                                if k in ("groups", "flagged", "p_value", "total_variation", "n")}
            out["condition_adherence"] = condition_adherence(req, produced, names, ctx.alpha)
        else:
            out["requested"] = missing(Reason.NOT_GIVEN, "the samples carry no requested condition")
            out["condition_adherence"] = missing(Reason.NOT_GIVEN, "the samples carry no requested condition")
        if ext is not None:
            out["per_group_quality"] = per_group_quality(image_features(ctx, "train"), codes_ref,
                                                         image_features(ctx, "samples"), produced, names,
                                                         k=int(policy["fidelity"].get("prdc_k", 5)))
        out["intersections"] = self._intersections(ctx)
        out["flagged_count"] = len(out["flagged"])
        ctx.artefacts["bias"] = out
        return out

    @staticmethod
    def _intersections(ctx: AuditContext) -> dict[str, Any]:
        """Cells of the first two attributes that both the reference and the samples' conditions carry."""
        from genguard.audits.bias import intersections

        samples, train = ctx.samples, ctx.train
        attrs = [a for a in train.groups if a in samples.conditions]
        if len(attrs) < 2:
            return missing(Reason.NO_LABELS, "needs two attributes known for both the reference and the samples "
                                             f"(have {attrs or 'none'})")
        a, b = attrs[:2]
        na = train.group_names.get(a) or [str(i) for i in range(int(train.groups[a].max()) + 1)]
        nb = train.group_names.get(b) or [str(i) for i in range(int(train.groups[b].max()) + 1)]
        joint = np.zeros((len(na), len(nb)))
        np.add.at(joint, (train.groups[a], train.groups[b]), 1)
        res = intersections(samples.conditions[a], samples.conditions[b], na, nb, joint / joint.sum(),
                            alpha=ctx.alpha, min_effect=float(ctx.policy["bias"]["min_effect"]), attributes=(a, b))
        res["label_source"] = "requested conditions"
        return res

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _bias_rows(data)


_MEMO_GATES = (Gate("memorization.near_duplicate_rate", "max", 0.01, _SHARE),
               Gate("memorization.exact_duplicate_count", "max", 0, _COUNT))


def _memo_rows(data: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [row("memorization: near-duplicate rate", data, ["memorization.near_duplicate_rate"])]


@register_section
class ImageMemorizationSection(AuditSection):
    """Near-duplicates of training images (calibrated distance ratio, shift-tolerant), DCR train vs holdout."""

    name = "image_memorization"
    key = "memorization"
    modalities = ("image",)
    step = "memorization"
    gates = _MEMO_GATES

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.memorization import memorization_section

        mp = ctx.policy["memorization"]
        files = ctx.samples.metadata.get("files")
        sec = memorization_section(
            ctx.items, ctx.train.x, ctx.holdout.x if ctx.holdout is not None else None,
            threshold=float(mp["distance_ratio"]), nth=int(mp["nth_neighbour"]), max_shift=int(mp["max_shift"]),
            alpha=ctx.alpha, seed=ctx.seed, calibrate=bool(mp.get("calibrate", True)),
            false_copy_rate=float(mp.get("false_copy_rate", 0.001)),
            sample_names=[str(f) for f in files] if files is not None else None)
        ctx.artefacts["memorization"] = sec
        return sec

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _memo_rows(data)


# --------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------
def table_fairness(ctx: AuditContext) -> dict[str, Any]:
    from genguard.audits.tabular import tabular_fairness

    return ctx.shared("fairness", lambda: tabular_fairness(
        ctx.items, ctx.train, ctx.holdout, group=ctx.inputs["group"], target=ctx.inputs["target"], seed=ctx.seed,
        alpha=ctx.alpha))


@register_section
class TableBiasSection(AuditSection):
    """Group shares of the synthetic table against the reference, and fairness of a model trained on it."""

    name = "table_bias"
    key = "bias"
    modalities = ("tabular",)
    step = "fairness"
    gates = (_BIAS_GATE,)

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.bias import representation, resolve_expected

        group, train, synthetic = ctx.inputs["group"], ctx.train, ctx.items
        fair = table_fairness(ctx)
        names = [f"{group}={v:g}" for v in sorted(train[group].unique())]
        values = sorted(train[group].unique())
        ref_codes = np.searchsorted(values, train[group].to_numpy())
        syn_vals = synthetic[group].to_numpy()
        unknown = ~np.isin(syn_vals, values)
        if unknown.any():
            raise AuditError(f"synthetic table: {group!r} takes values {sorted(set(syn_vals[unknown]))[:5]} "
                             f"not in the real data")
        expected, source = resolve_expected(ctx.policy["bias"].get("target", "reference"), names, ref_codes)
        bias = representation(np.searchsorted(values, syn_vals), names, expected, alpha=ctx.alpha,
                              min_effect=float(ctx.policy["bias"]["min_effect"]), seed=ctx.seed,
                              expected_source=source, attribute=group)
        bias["flagged_count"] = len(bias["flagged"])
        bias["fairness"] = {k: v for k, v in fair.items() if k != "subgroup_marginals"}
        ctx.artefacts["bias"] = bias
        return bias

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _bias_rows(data)


@register_section
class TableFidelitySection(AuditSection):
    """Per-column and pairwise fidelity against the real holdout's level, and per-subgroup marginals."""

    name = "table_fidelity"
    key = "fidelity"
    modalities = ("tabular",)
    step = "fidelity"
    # distance to the training table beyond the real holdout's (0 = as close as unseen real rows); see README
    gates = (Gate("fidelity.columns.max_excess", "max", 0.25, _SHARE),
             Gate("fidelity.columns.mean_excess", "max", 0.1, _SHARE),
             Gate("fidelity.pairs.mean_excess", "max", 0.11, _SHARE))

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.tabular import table_fidelity

        return {**table_fidelity(ctx.items, ctx.train, ctx.holdout, seed=ctx.seed, alpha=ctx.alpha),
                "subgroup_marginals": table_fairness(ctx)["subgroup_marginals"],
                "note": "subgroup_marginals: two-sample Kolmogorov-Smirnov statistic per column within each group"}

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [row("fidelity vs real (worst column / mean column / pairs)", data,
                    ["fidelity.columns.max_excess", "fidelity.columns.mean_excess", "fidelity.pairs.mean_excess"],
                    suffix=" (0 = real data)")]

    def html(self, data: Mapping[str, Any], artefacts: Mapping[str, Any]) -> Any:
        from genguard.audits.html import render_block

        fidelity = data.get("fidelity") if isinstance(data.get("fidelity"), Mapping) else {}
        if fidelity.get("value", 0) is None or "columns" not in fidelity:
            return render_block("<h3>Table fidelity</h3><p class=\"note\">Not computed: {{ r }}</p>",
                                r=fidelity.get("reason"))
        return render_block(_TABLE_HTML, fidelity=fidelity)


_TABLE_HTML = """{% set cols = fidelity.get('columns') or {} %}
{% if cols.get('per_column') %}<h3>Table fidelity against real data's own level</h3>
<p class="note">{{ fidelity.reference_note }}; compared at {{ fidelity.matched_size }} rows ({{ fidelity.subsets }} subset(s)). {{ cols.measure }}.</p>
<table><tr><th>figure</th><th>gated value</th><th>point</th><th>interval</th></tr>
<tr><td>worst column excess ({{ cols.max_excess.column }})</td><td>{{ fmt(cols.max_excess.value) }}</td><td>{{ fmt(cols.max_excess.value) }}</td><td></td></tr>
<tr><td>mean column excess</td><td>{{ fmt(cols.mean_excess.value) }}</td><td>{{ fmt(cols.mean_excess.point) }}</td><td>{{ ci(cols.mean_excess) }}</td></tr>
{% set pr = fidelity.get('pairs') or {} %}{% if pr.get('mean_excess') %}<tr><td>mean pair excess</td><td>{{ fmt(pr.mean_excess.value) }}</td><td>{{ fmt(pr.mean_excess.point) }}</td><td>{{ ci(pr.mean_excess) }}</td></tr>{% endif %}
</table>
<table><tr><th>column</th>{% for c in cols.per_column %}<th>{{ c }}</th>{% endfor %}</tr>
<tr><td>distance to train</td>{% for c, v in cols.per_column.items() %}<td>{{ fmt(v.distance) }}</td>{% endfor %}</tr>
<tr><td>real holdout's</td>{% for c, v in cols.per_column.items() %}<td>{{ fmt(v.reference) }}</td>{% endfor %}</tr>
<tr><td>excess</td>{% for c, v in cols.per_column.items() %}<td>{{ fmt(v.excess) }}</td>{% endfor %}</tr></table>
{% if pr.get('worst') %}<p class="note">{{ pr.measure }}. Pairs furthest from the real level: {% for w in pr.worst %}{{ w.pair|join('–') }} ({{ fmt(w.excess) }}){% if not loop.last %}, {% endif %}{% endfor %}.</p>{% endif %}{% endif %}
"""


@register_section
class TableMemorizationSection(AuditSection):
    """Near-duplicate rows of the training table (Euclidean distance between standardised rows)."""

    name = "table_memorization"
    key = "memorization"
    modalities = ("tabular",)
    step = "memorization"
    gates = _MEMO_GATES

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.memorization import memorization_section

        syn, tr, ho = _standardised_rows(ctx)
        mp = ctx.policy["memorization"]
        sec = memorization_section(syn, tr, ho, threshold=float(mp["distance_ratio"]),
                                   nth=min(int(mp["nth_neighbour"]), len(tr) - 1), max_shift=0, alpha=ctx.alpha,
                                   seed=ctx.seed, calibrate=bool(mp.get("calibrate", True)),
                                   false_copy_rate=float(mp.get("false_copy_rate", 0.001)))
        sec["distance"] = "Euclidean distance between standardised rows"
        ctx.artefacts["memorization"] = sec
        return sec

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _memo_rows(data)


# --------------------------------------------------------------------------------------
# texts
# --------------------------------------------------------------------------------------
@register_section
class TextFidelitySection(AuditSection):
    """perplexity_local under a local n-gram model of the reference text, and self-BLEU."""

    name = "text_fidelity"
    key = "fidelity"
    modalities = ("text",)
    step = "fidelity"

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.text_fidelity import text_fidelity

        return text_fidelity(ctx.items, ctx.inputs["reference_texts"], seed=ctx.seed)

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [("perplexity_local (real held-out text)",
                 f"{fmt(get(data, 'fidelity.perplexity_local'), '.1f')} "
                 f"({fmt(get(data, 'fidelity.perplexity_local.baseline_reference_holdout'), '.1f')})")]


@register_section
class TextBiasSection(AuditSection):
    """BOLD-style bias of continuations of prompts (needs the generator, not only its texts)."""

    name = "text_bias"
    key = "bias"
    modalities = ("text",)
    step = "bias"
    gates = (_BIAS_GATE,)

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.text_bias import TextBiasAudit

        generate = ctx.inputs.get("generate")
        if generate is None:
            return missing(Reason.NO_GENERATOR, "text bias needs a generator to prompt (generate callable or "
                                                "--model); a folder of texts has no prompts")
        tp = ctx.policy.get("text") or {}
        bias = TextBiasAudit(domains=tp.get("domains"), samples_per_prompt=int(tp.get("samples_per_prompt", 1)),
                             alpha=ctx.alpha, min_effect=float(tp.get("min_effect", 0.1)),
                             seed=ctx.seed).run(generate, progress=bool(ctx.inputs.get("progress")))
        bias["flagged_count"] = len(bias["flagged"])
        return bias

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _bias_rows(data)


@register_section
class TextMemorizationSection(AuditSection):
    """Texts that repeat a 13-token span of the training text verbatim."""

    name = "text_memorization"
    key = "memorization"
    modalities = ("text",)
    step = "memorization"

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.text_fidelity import verbatim_copies

        return verbatim_copies(ctx.items, list(ctx.train), alpha=ctx.alpha)

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [row("memorization: verbatim copy rate", data, ["memorization.verbatim_copy_rate"])]


# --------------------------------------------------------------------------------------
# given by the caller (checked elsewhere), or said why not
# --------------------------------------------------------------------------------------
class _Given(AuditSection):
    """A section the caller computes (provenance checks, detection, marking) and hands to the audit."""

    input_name = ""
    not_run = ""

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        given = ctx.inputs.get(self.input_name)
        return dict(given) if given is not None else missing(Reason.NOT_RUN, self.not_run)


@register_section
class ProvenanceSection(_Given):
    name = "provenance"
    key = "provenance"
    input_name = "provenance"
    not_run = "provenance was not checked in this audit (run genguard verify on the samples)"

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [row("provenance: intact files", data, ["provenance.intact_rate"])]


@register_section
class DetectionSection(_Given):
    name = "detection"
    key = "detection"
    input_name = "detection"
    not_run = "synthetic-media detection was not run in this audit"


@register_section
class MarkingSection(_Given):
    """Art. 50(2) marking of the written outputs (audits.marking.marking_section), or why it is absent."""

    name = "marking"
    key = "marking"
    input_name = "marking"
    not_run = "marking was not checked in this audit (run genguard marking check on the outputs)"
