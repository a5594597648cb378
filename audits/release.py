"""The release audit: run every check on a generator's samples and assemble report.json, report.html and the gates.

::

    from genguard.audits import ReleaseAudit
    report = ReleaseAudit(policy=None, seed=0).run(samples, train, holdout, ledger=ledger)
    report.passed            # all gates passed (skipped gates do not count)
    report.write(out_dir)    # -> (report.json, report.html)
"""
from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from genguard.audits import AuditError
from genguard.audits.policy import evaluate_gates, load_policy

REPORT_KEYS = ("generator", "privacy", "fidelity", "bias", "memorization", "provenance", "detection", "marking", "gates")


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in ("genguard", "numpy", "scipy", "scikit-learn", "torch", "fairlearn", "vaderSentiment"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _strip_private(obj: Any) -> Any:
    """Drop keys starting with '_' (arrays kept for the HTML) and make the rest JSON-clean."""
    if isinstance(obj, dict):
        return {str(k): _strip_private(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_strip_private(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, np.ndarray):
        return _strip_private(obj.tolist())
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)  # paths and other objects a caller put in generator_info


class AuditReport:
    """Result of :meth:`ReleaseAudit.run`: ``data`` (report.json content), ``passed``, ``write(dir)``."""

    def __init__(self, data: dict[str, Any], artefacts: dict[str, Any]) -> None:
        self.data = data
        self._artefacts = artefacts

    @property
    def gates(self) -> list[dict[str, Any]]:
        return self.data["gates"]

    @property
    def passed(self) -> bool:
        return all(g["passed"] is not False for g in self.data["gates"])

    @property
    def failed_gates(self) -> list[dict[str, Any]]:
        return [g for g in self.data["gates"] if g["passed"] is False]

    def write(self, out_dir: str | Path) -> tuple[Path, Path]:
        from genguard.generators._io import atomic_write_json, atomic_write_text

        from genguard.audits.html import render_html

        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise AuditError(f"{out}: cannot create the output folder ({exc.strerror})") from None
        json_path = atomic_write_json(out / "report.json", self.data)
        html_path = atomic_write_text(out / "report.html", render_html(self.data, self._artefacts))
        return json_path, html_path

    def summary_rows(self) -> list[tuple[str, str]]:
        """(metric, value) pairs for a human summary table."""
        d = self.data
        rows = []

        def num(v: Any, fmt: str = "{:.3f}") -> str:
            if isinstance(v, Mapping):
                v = v.get("value")
            return "n/a" if v is None else fmt.format(v)

        fid = d["fidelity"] if isinstance(d["fidelity"], Mapping) else {}
        div = fid.get("diversity") if isinstance(fid.get("diversity"), Mapping) else {}
        modality = (d.get("generator") or {}).get("modality")
        if modality == "text":
            rows.append(("perplexity_local (real held-out text)",
                         f"{num(fid.get('perplexity_local'), '{:.1f}')} "
                         f"({num((fid.get('perplexity_local') or {}).get('baseline_reference_holdout'), '{:.1f}')})"))
            rows.append(("diversity vs real (self-BLEU / distinct-1 / distinct-2; 1 = real)",
                         f"{num(div.get('self_bleu_relative'))} / {num(div.get('distinct_1_relative'))} / "
                         f"{num(div.get('distinct_2_relative'))}"))
        elif modality == "tabular":
            cols = fid.get("columns") if isinstance(fid.get("columns"), Mapping) else {}
            pairs = fid.get("pairs") if isinstance(fid.get("pairs"), Mapping) else {}
            rows.append(("fidelity vs real (worst column / mean column / pairs; 0 = real)",
                         f"{num(cols.get('max_excess'))} / {num(cols.get('mean_excess'))} / "
                         f"{num(pairs.get('mean_excess'))}"))
        else:
            rows.append(("fid_local (not Inception FID)", num(fid.get("fid_local"), "{:.2f}")))
            rows.append(("precision / coverage", f"{num(fid.get('precision'))} / {num(fid.get('coverage'))}"))
            wc = div.get("within_class") if isinstance(div.get("within_class"), Mapping) else {}
            rows.append(("diversity vs real (recall / coverage / within-class; 1 = real)",
                         f"{num(div.get('recall_relative'))} / {num(div.get('coverage_relative'))} / "
                         f"{num(wc.get('min_ratio'))}"))
        b = d["bias"] if isinstance(d["bias"], Mapping) else {}
        if b.get("value", 0) is not None:
            rows.append(("bias: total variation", num(b.get("total_variation"))))
            rows.append(("bias: flagged groups", ", ".join(b.get("flagged", [])) or "none"))
        m = d["memorization"] if isinstance(d["memorization"], Mapping) else {}
        if m.get("value", 0) is not None:
            rows.append(("near-duplicate rate", num(m.get("near_duplicate_rate"))))
        p = d["privacy"] if isinstance(d["privacy"], Mapping) else {}
        rows.append(("privacy epsilon", num(p.get("epsilon"), "{:.3g}")))
        for g in d["gates"]:
            verdict = {True: "pass", False: "FAIL", None: "skipped"}[g["passed"]]
            rows.append((f"gate {g['name']} {g['op']} {g['threshold']}", f"{verdict} ({num(g['value'], '{:.4g}')})"))
        return rows


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
        out["membership_inference"] = {"value": None, "reason": "no holdout records (known non-members) given"}
        return out
    rng = np.random.default_rng(seed)
    k = min(len(holdout), len(train) // 2)
    perm = rng.permutation(len(train))
    train, holdout = np.asarray(train), np.asarray(holdout)
    try:
        mi = membership_inference(samples, train[perm[:k]], holdout[rng.permutation(len(holdout))[:k]],
                                  train[perm[k:]], seed=seed)
    except PrivacyError as exc:
        out["membership_inference"] = {"value": None, "reason": str(exc)}
        return out
    mi["reference"] = "members: training records; non-members: the holdout; DOMIAS reference: the other training records"
    out["membership_inference"] = mi
    return out


class ReleaseAudit:
    """Audit a generator's samples against its reference data under a release policy.

    Parameters
    ----------
    policy : None, dict or path to a YAML file
        Settings and gate thresholds (see :mod:`audits.policy`).
    seed : int
        Seeds the audit's classifier, Monte-Carlo tests and subsampling: the
        same seed gives the same report, apart from ``meta.timestamp``.
    """

    def __init__(self, policy: Any = None, seed: int = 0) -> None:
        self.policy = policy
        self.seed = seed

    # ------------------------------------------------------------------------------
    def run(self, samples: Any, train: Any, holdout: Any = None, *, ledger: Mapping[str, Any] | None = None,
            generator_info: Mapping[str, Any] | None = None, provenance: Mapping[str, Any] | None = None,
            detection: Mapping[str, Any] | None = None, labels: Any = None, reconstructions: Any = None,
            privacy_evidence: Mapping[str, Any] | None = None, progress: bool = True,
            marking: Mapping[str, Any] | None = None) -> AuditReport:
        """Run the audit. ``labels`` (one group code per sample) overrides the classifier's labels;
        ``privacy_evidence`` (ledger verification, membership inference, canary audit) joins the privacy section."""
        from genguard.generators.base import Dataset, Samples, progress_bar

        from genguard.audits.privacy import privacy_section

        policy = load_policy(self.policy)
        if not isinstance(samples, Samples):
            raise AuditError(f"samples must be generators.Samples, got {type(samples).__name__}")
        if not isinstance(train, Dataset):
            raise AuditError(f"train must be a generators.Dataset, got {type(train).__name__}")
        if holdout is not None and not isinstance(holdout, Dataset):
            raise AuditError(f"holdout must be a generators.Dataset or None, got {type(holdout).__name__}")
        if len(samples) == 0:
            raise AuditError("no samples to audit")
        if samples.modality != "image" or train.modality != "image":
            raise AuditError(f"ReleaseAudit audits image generators (got samples {samples.modality}, reference "
                             f"{train.modality}); use audits.text_bias / audits.tabular for other modalities")
        x = np.asarray(samples.data, dtype=np.float32)
        if x.shape[1:] != train.x.shape[1:]:
            raise AuditError(f"samples have shape {x.shape[1:]} but the reference images {train.x.shape[1:]}")
        if not np.isfinite(x).all():
            raise AuditError("samples contain NaN or infinite values")
        outside = float(np.mean((x < 0.0) | (x > 1.0)))
        x = np.clip(x, 0.0, 1.0)
        artefacts: dict[str, Any] = {"samples": x, "train": train.x, "names": samples.metadata.get("files")}
        data: dict[str, Any] = {k: None for k in REPORT_KEYS}
        steps = 4
        with progress_bar("auditing", total=steps, enabled=progress) as advance:
            data["generator"] = self._generator_section(samples, generator_info)
            if outside > 0:
                data["generator"]["warnings"] = [f"{outside:.2%} of pixel values lay outside [0, 1] and were clipped"]
            evidence = with_membership_inference(privacy_evidence, x, train.x,
                                                 holdout.x if holdout is not None else None, self.seed)
            data["privacy"] = privacy_section(dict(ledger) if ledger is not None else None, **evidence)
            extractor, fid_section = self._fidelity(x, train, holdout, policy)
            data["fidelity"] = fid_section
            advance(1, "fidelity")
            data["bias"] = self._bias(x, samples, train, holdout, extractor, policy, labels, artefacts)
            advance(1, "bias")
            data["memorization"] = self._memorization(x, train, holdout, policy, samples, artefacts)
            advance(1, "memorization")
            if reconstructions is not None:
                from genguard.audits.fidelity import reconstruction_quality

                rec = reconstructions
                data["fidelity"]["reconstruction"] = reconstruction_quality(rec[0], rec[1])
            else:
                data["fidelity"]["reconstruction"] = {"value": None, "reason": "no (original, reconstruction) pairs given"}
            data["provenance"] = dict(provenance) if provenance is not None else {
                "value": None, "reason": "provenance was not checked in this audit (run genguard verify on the samples)"}
            data["detection"] = dict(detection) if detection is not None else {
                "value": None, "reason": "synthetic-image detection was not run in this audit"}
            artefacts["fidelity"] = data["fidelity"]
            report = self._finish(data, policy, artefacts, marking)
            advance(1, "gates")
        return report

    # ------------------------------------------------------------------------------
    def _finish(self, data: dict[str, Any], policy: Mapping[str, Any], artefacts: dict[str, Any],
                marking: Mapping[str, Any] | None = None) -> AuditReport:
        # Art. 50(2) marking of the written outputs (audits.marking.marking_section), or why it is absent
        data["marking"] = dict(marking) if marking is not None else {
            "value": None, "reason": "marking was not checked in this audit (run genguard marking check on the outputs)"}
        clean = _strip_private(data)
        clean["gates"] = evaluate_gates(clean, policy)
        clean["meta"] = {
            "seed": self.seed,
            "policy": _strip_private(policy),
            "versions": _package_versions(),
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "report_format": "genguard-report/1",
        }
        return AuditReport(clean, artefacts)

    def _common(self, data: dict[str, Any], ledger: Any, generator_info: Any, provenance: Any, detection: Any,
                n: int, modality: str, privacy_evidence: Mapping[str, Any] | None = None) -> None:
        from genguard.audits.privacy import privacy_section

        data["generator"] = dict(generator_info or {})
        data["generator"].update({"n_samples": n, "modality": modality})
        data["privacy"] = privacy_section(dict(ledger) if ledger is not None else None, **dict(privacy_evidence or {}))
        data["provenance"] = dict(provenance) if provenance is not None else {
            "value": None, "reason": "provenance was not checked in this audit"}
        data["detection"] = dict(detection) if detection is not None else {
            "value": None, "reason": "synthetic-media detection was not run in this audit"}

    def run_tabular(self, synthetic: Any, train: Any, holdout: Any, *, group: str | None = None, target: str | None = None,
                    ledger: Mapping[str, Any] | None = None, generator_info: Mapping[str, Any] | None = None,
                    provenance: Any = None, detection: Any = None, privacy_evidence: Mapping[str, Any] | None = None,
                    marking: Mapping[str, Any] | None = None,
                    progress: bool = True) -> AuditReport:
        """Release audit of a synthetic table (pandas) against the real train/holdout tables."""
        from genguard.generators.base import progress_bar

        from genguard.audits.bias import representation, resolve_expected
        from genguard.audits.memorization import memorization_section
        from genguard.audits.tabular import table_fidelity, tabular_fairness

        policy = load_policy(self.policy, modality="tabular")
        alpha = float(policy["level"])
        group = group or policy["tabular"]["group"]
        target = target or policy["tabular"]["target"]
        for name, frame in (("synthetic", synthetic), ("train", train), ("holdout", holdout)):
            if not hasattr(frame, "columns") or group not in frame.columns:
                raise AuditError(f"{name} table has no group column {group!r}")
        data: dict[str, Any] = {k: None for k in REPORT_KEYS}
        try:
            cols = list(train.columns)
            mu, sd = train[cols].to_numpy(float).mean(0), train[cols].to_numpy(float).std(0) + 1e-12
            rows = [((df[cols].to_numpy(float) - mu) / sd).astype(np.float32) for df in (synthetic, train, holdout)]
            privacy_evidence = with_membership_inference(privacy_evidence, *rows, self.seed)
        except (ValueError, KeyError) as exc:  # a non-numeric column: no distances between rows
            privacy_evidence = {"membership_inference": {"value": None, "reason": f"rows are not numeric ({exc})"},
                                **dict(privacy_evidence or {})}
        self._common(data, ledger, generator_info, provenance, detection, len(synthetic), "tabular", privacy_evidence)
        with progress_bar("auditing table", total=3, enabled=progress) as advance:
            fair = tabular_fairness(synthetic, train, holdout, group=group, target=target, seed=self.seed, alpha=alpha)
            advance(1, "fairness")
            names = [f"{group}={v:g}" for v in sorted(train[group].unique())]
            values = sorted(train[group].unique())
            ref_codes = np.searchsorted(values, train[group].to_numpy())
            syn_vals = synthetic[group].to_numpy()
            unknown = ~np.isin(syn_vals, values)
            if unknown.any():
                raise AuditError(f"synthetic table: {group!r} takes values {sorted(set(syn_vals[unknown]))[:5]} "
                                 f"not in the real data")
            expected, source = resolve_expected(policy["bias"].get("target", "reference"), names, ref_codes)
            bias = representation(np.searchsorted(values, syn_vals), names, expected, alpha=alpha,
                                  min_effect=float(policy["bias"]["min_effect"]), seed=self.seed,
                                  expected_source=source, attribute=group)
            bias["flagged_count"] = len(bias["flagged"])
            bias["fairness"] = {k: v for k, v in fair.items() if k != "subgroup_marginals"}
            data["bias"] = bias
            data["fidelity"] = {**table_fidelity(synthetic, train, holdout, seed=self.seed, alpha=alpha),
                                "subgroup_marginals": fair["subgroup_marginals"],
                                "note": "subgroup_marginals: two-sample Kolmogorov-Smirnov statistic per column "
                                        "within each group"}
            advance(1, "bias")
            cols = list(train.columns)
            mu, sd = train[cols].to_numpy(float).mean(0), train[cols].to_numpy(float).std(0) + 1e-12
            z = lambda df: ((df[cols].to_numpy(float) - mu) / sd).astype(np.float32)  # noqa: E731
            mp = policy["memorization"]
            data["memorization"] = memorization_section(z(synthetic), z(train), z(holdout),
                                                        threshold=float(mp["distance_ratio"]),
                                                        nth=min(int(mp["nth_neighbour"]), len(train) - 1),
                                                        max_shift=0, alpha=alpha, seed=self.seed,
                                                        calibrate=bool(mp.get("calibrate", True)),
                                                        false_copy_rate=float(mp.get("false_copy_rate", 0.001)))
            data["memorization"]["distance"] = "Euclidean distance between standardised rows"
            advance(1, "memorization")
        return self._finish(data, policy, {"memorization": data["memorization"], "bias": bias}, marking)

    def run_text(self, texts: Any, train: Any, holdout: Any = None, *, generate: Any = None,
                 ledger: Mapping[str, Any] | None = None, generator_info: Mapping[str, Any] | None = None,
                 provenance: Any = None, detection: Any = None, privacy_evidence: Mapping[str, Any] | None = None,
                 progress: bool = True, marking: Mapping[str, Any] | None = None) -> AuditReport:
        """Release audit of generated texts: perplexity_local, self-BLEU, verbatim copies, and BOLD-style
        bias when a ``generate(prompts) -> list[str]`` callable is given."""
        from genguard.generators.base import progress_bar

        from genguard.audits.text_bias import TextBiasAudit
        from genguard.audits.text_fidelity import text_diversity, text_fidelity, verbatim_copies

        policy = load_policy(self.policy, modality="text")
        alpha = float(policy["level"])
        texts = [str(t) for t in texts]
        if not texts:
            raise AuditError("no generated texts to audit")
        ref = list(train) + (list(holdout) if holdout is not None else [])
        data: dict[str, Any] = {k: None for k in REPORT_KEYS}
        privacy_evidence = {"membership_inference": {
            "value": None, "reason": "the sample-only attacks compare numeric vectors; texts have no such distance here "
                                     "(verbatim copies are in memorization)"}, **dict(privacy_evidence or {})}
        self._common(data, ledger, generator_info, provenance, detection, len(texts), "text", privacy_evidence)
        with progress_bar("auditing text", total=3, enabled=progress) as advance:
            data["fidelity"] = text_fidelity(texts, ref, seed=self.seed)
            data["fidelity"]["diversity"] = text_diversity(texts, ref, seed=self.seed, alpha=alpha)
            advance(1, "fidelity")
            if generate is not None:
                tp = policy.get("text") or {}
                bias = TextBiasAudit(domains=tp.get("domains"), samples_per_prompt=int(tp.get("samples_per_prompt", 1)),
                                     alpha=alpha, min_effect=float(tp.get("min_effect", 0.1)),
                                     seed=self.seed).run(generate, progress=progress)
                bias["flagged_count"] = len(bias["flagged"])
                data["bias"] = bias
            else:
                data["bias"] = {"value": None, "reason": "text bias needs a generator to prompt (generate callable "
                                                          "or --model); a folder of texts has no prompts"}
            advance(1, "bias")
            data["memorization"] = verbatim_copies(texts, list(train), alpha=alpha)
            advance(1, "memorization")
        return self._finish(data, policy, {}, marking)

    # ------------------------------------------------------------------------------
    def _generator_section(self, samples: Any, info: Mapping[str, Any] | None) -> dict[str, Any]:
        out: dict[str, Any] = dict(info or {})
        out.setdefault("name", samples.metadata.get("generator"))
        out["n_samples"] = len(samples)
        out["modality"] = samples.modality
        out["conditions"] = sorted(samples.conditions)
        if "seed" not in out and samples.metadata.get("seed") is not None:
            out["seed"] = samples.metadata.get("seed")
        return out

    def _extractor(self, train: Any, holdout: Any, attribute: str):
        from genguard.audits.features import fit_extractor

        if attribute not in train.groups:
            return None
        hx = holdout.x if holdout is not None and attribute in holdout.groups else None
        hy = holdout.groups[attribute] if hx is not None else None
        return fit_extractor(train.x, train.groups[attribute], class_names=train.group_names.get(attribute),
                             holdout_x=hx, holdout_y=hy, seed=self.seed)

    def _fidelity(self, x: np.ndarray, train: Any, holdout: Any, policy: Mapping[str, Any]):
        from genguard.audits.fidelity import alpha_beta_authenticity, diversity, frechet_distance, kernel_distance, prdc

        attribute = policy["bias"]["attribute"]
        ext = self._extractor(train, holdout, attribute)
        if ext is None:
            reason = f"reference data has no '{attribute}' labels to train the audit's feature extractor on"
            return None, {"value": None, "reason": reason}
        fr = ext.features(train.x)
        ff = ext.features(x)
        out: dict[str, Any] = {"feature_extractor": ext.describe()}
        fid = frechet_distance(fr, ff)
        if holdout is not None:
            base = frechet_distance(fr, ext.features(holdout.x))
            fid["baseline_reference_holdout_vs_train"] = base.get("value")
            fid["baseline_note"] = ("fid_local of the real holdout split against the train split: the level a perfect "
                                    "generator would reach at the holdout's sample size")
        out["fid_local"] = fid
        out["kid_local"] = kernel_distance(fr, ff, seed=self.seed)
        pr = prdc(fr, ff, k=int(policy["fidelity"].get("prdc_k", 5)))
        if pr.get("value", 0) is None:
            for m in ("precision", "recall", "density", "coverage"):
                out[m] = {"value": None, "reason": pr["reason"]}
        else:
            for m in ("precision", "recall", "density", "coverage"):
                out[m] = pr[m]
            out["prdc_k"] = pr["k"]
        ab = alpha_beta_authenticity(fr, ff)
        if ab.get("value", 0) is None:
            for m in ("alpha_precision", "beta_recall", "authenticity"):
                out[m] = {"value": None, "reason": ab["reason"]}
        else:
            for m in ("alpha_precision", "beta_recall", "authenticity"):
                out[m] = ab[m]
            out["alpha_beta_embedding"] = ab["embedding"]
        if holdout is not None:
            out["diversity"] = diversity(fr, ff, ext.features(holdout.x), real_labels=train.groups[attribute],
                                         fake_labels=ext.predict(x), class_names=train.group_names.get(attribute),
                                         k=int(policy["fidelity"].get("prdc_k", 5)), seed=self.seed,
                                         alpha=float(policy["level"]))
        else:
            out["diversity"] = {"value": None, "reason": "no holdout data given: no real reference level to compare with"}
        warnings = list(fid.get("warnings", [])) + list(out["kid_local"].get("warnings", [])) + list(pr.get("warnings", []))
        out["warnings"] = warnings
        out["_real_features"] = fr
        out["_fake_features"] = ff
        return ext, out

    def _bias(self, x: np.ndarray, samples: Any, train: Any, holdout: Any, ext: Any, policy: Mapping[str, Any],
              labels: Any, artefacts: dict[str, Any]) -> dict[str, Any]:
        from genguard.audits.bias import condition_adherence, per_group_quality, representation, resolve_expected

        bp = policy["bias"]
        attribute = bp["attribute"]
        alpha = float(policy["level"])
        names = train.group_names.get(attribute)
        if attribute not in train.groups:
            return {"value": None, "reason": f"reference data has no '{attribute}' attribute"}
        codes_ref = train.groups[attribute]
        if names is None:
            names = [str(i) for i in range(int(codes_ref.max()) + 1)]
        expected, source = resolve_expected(bp.get("target", "reference"), names, codes_ref)
        requested = samples.conditions.get(attribute)
        if labels is not None:
            produced = np.asarray(labels, dtype=np.int64)
            if produced.shape != (len(x),):
                raise AuditError(f"labels: expected {len(x)} group codes, got shape {produced.shape}")
            label_source = "user"
        elif ext is not None:
            produced = ext.predict(x)
            label_source = "attribute classifier"
        else:
            return {"value": None, "reason": "no labels and no attribute classifier"}
        kw = dict(alpha=alpha, min_effect=float(bp["min_effect"]), draws=int(bp.get("mc_draws", 4000)),
                  seed=self.seed, expected_source=source, attribute=attribute)
        out = representation(produced, names, expected, **kw)
        out["label_source"] = label_source
        if ext is not None:
            out["classifier"] = {k: v for k, v in ext.describe().items() if k != "note"}
        if requested is not None:
            req = np.asarray(requested, dtype=np.int64)
            out["requested"] = {k: v for k, v in representation(req, names, expected, **kw).items()
                                if k in ("groups", "flagged", "p_value", "total_variation", "n")}
            out["condition_adherence"] = condition_adherence(req, produced, names, alpha)
        else:
            out["requested"] = {"value": None, "reason": "the samples carry no requested condition"}
            out["condition_adherence"] = {"value": None, "reason": "the samples carry no requested condition"}
        if ext is not None:
            fr = ext.features(train.x)
            ff = ext.features(x)
            out["per_group_quality"] = per_group_quality(fr, codes_ref, ff, produced, names,
                                                         k=int(policy["fidelity"].get("prdc_k", 5)))
        out["intersections"] = self._intersections(samples, train, expected_policy=bp, alpha=alpha)
        out["flagged_count"] = len(out["flagged"])
        artefacts["bias"] = out
        return out

    def _intersections(self, samples: Any, train: Any, expected_policy: Mapping[str, Any], alpha: float) -> dict[str, Any]:
        """Cells of the first two attributes that both the reference and the samples' conditions carry."""
        from genguard.audits.bias import intersections

        attrs = [a for a in train.groups if a in samples.conditions]
        if len(attrs) < 2:
            return {"value": None, "reason": "needs two attributes known for both the reference and the samples "
                                             f"(have {attrs or 'none'})"}
        a, b = attrs[:2]
        na = train.group_names.get(a) or [str(i) for i in range(int(train.groups[a].max()) + 1)]
        nb = train.group_names.get(b) or [str(i) for i in range(int(train.groups[b].max()) + 1)]
        joint = np.zeros((len(na), len(nb)))
        np.add.at(joint, (train.groups[a], train.groups[b]), 1)
        res = intersections(samples.conditions[a], samples.conditions[b], na, nb, joint / joint.sum(), alpha=alpha,
                            min_effect=float(expected_policy["min_effect"]), attributes=(a, b))
        res["label_source"] = "requested conditions"
        return res

    def _memorization(self, x: np.ndarray, train: Any, holdout: Any, policy: Mapping[str, Any], samples: Any,
                      artefacts: dict[str, Any]) -> dict[str, Any]:
        from genguard.audits.memorization import memorization_section

        mp = policy["memorization"]
        files = samples.metadata.get("files")
        sec = memorization_section(
            x, train.x, holdout.x if holdout is not None else None, threshold=float(mp["distance_ratio"]),
            nth=int(mp["nth_neighbour"]), max_shift=int(mp["max_shift"]), alpha=float(policy["level"]),
            seed=self.seed, calibrate=bool(mp.get("calibrate", True)),
            false_copy_rate=float(mp.get("false_copy_rate", 0.001)), sample_names=[str(f) for f in files] if files is not None else None)
        artefacts["memorization"] = sec
        return sec
