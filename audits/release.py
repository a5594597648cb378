"""The release audit: run the registered audit sections of the samples' modality and assemble report.json, report.html and the gates.

::

    from genguard.audits import ReleaseAudit
    report = ReleaseAudit(policy=None, seed=0).run(samples, train, holdout, ledger=ledger)
    report.passed            # all gates passed (skipped gates do not count)
    report.write(out_dir)    # -> (report.json, report.html)

``samples`` is a :class:`generators.Samples` of images, texts or a table;
the sections that apply to its modality (:mod:`audits.sections`,
:mod:`audits.builtin_sections`) compute the report, and the policy's default
gates are the ones those sections declare.
"""
from __future__ import annotations

import datetime as _dt
import platform
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from genguard.audits import AuditError
from genguard.audits.builtin_sections import with_membership_inference  # noqa: F401 - part of this module's API
from genguard.audits.policy import evaluate_gates, load_policy
from genguard.audits.sections import AuditContext, sections_for, set_path
from genguard.audits.sections import summary_rows as _summary_rows

REPORT_KEYS = ("generator", "privacy", "fidelity", "bias", "memorization", "provenance", "detection", "marking", "human",
               "gates")


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
        """(metric, value) pairs of the terminal summary: each section's lines, then the gates."""
        return _summary_rows(self.data)


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
            marking: Mapping[str, Any] | None = None, generate: Any = None, group: str | None = None,
            target: str | None = None, human: Mapping[str, Any] | None = None) -> AuditReport:
        """Run the audit sections of the samples' modality (image, text or tabular).

        ``train`` / ``holdout`` are :class:`generators.Dataset` of the same
        modality. ``labels`` (one group code per image) overrides the
        classifier's labels; ``privacy_evidence`` (ledger verification,
        membership inference, canary audit) joins the privacy section;
        ``generate(prompts) -> list[str]`` lets a text audit measure bias;
        ``group`` / ``target`` name a table's group and outcome columns
        (defaults: the data set's first group and its ``target`` metadata,
        then the policy's ``tabular`` settings); ``human`` is a human study's
        results (the console's results.json) for the ``human`` section.
        """
        from genguard.generators.base import Dataset, Samples

        if not isinstance(samples, Samples):
            raise AuditError(f"samples must be generators.Samples, got {type(samples).__name__}")
        if not isinstance(train, Dataset):
            raise AuditError(f"train must be a generators.Dataset, got {type(train).__name__}")
        if holdout is not None and not isinstance(holdout, Dataset):
            raise AuditError(f"holdout must be a generators.Dataset or None, got {type(holdout).__name__}")
        if len(samples) == 0:
            raise AuditError("no samples to audit")
        if samples.modality != train.modality or (holdout is not None and holdout.modality != train.modality):
            raise AuditError(f"samples are {samples.modality} but the reference data {train.modality}"
                             + (f" / {holdout.modality}" if holdout is not None else ""))
        common = dict(ledger=ledger, generator_info=generator_info, provenance=provenance, detection=detection,
                      privacy_evidence=privacy_evidence, progress=progress, marking=marking, human=human)
        if samples.modality == "text":
            return self.run_text(list(samples.data), list(train.x), list(holdout.x) if holdout is not None else None,
                                 generate=generate, **common)
        if samples.modality == "tabular":
            if holdout is None:
                raise AuditError("a table audit needs the real holdout table (the reference level of its figures)")
            return self.run_tabular(samples.data, train.x, holdout.x,
                                    group=group or next(iter(train.groups), None),
                                    target=target or train.metadata.get("target"), **common)
        if samples.modality == "audio":
            return self.run_audio(samples, train, holdout, reconstructions=reconstructions, **common)
        if samples.modality != "image":
            raise AuditError(f"no audit sections for {samples.modality} samples (image, text, tabular and audio "
                             "are audited)")
        x = np.asarray(samples.data, dtype=np.float32)
        if x.shape[1:] != train.x.shape[1:]:
            raise AuditError(f"samples have shape {x.shape[1:]} but the reference images {train.x.shape[1:]}")
        if not np.isfinite(x).all():
            raise AuditError("samples contain NaN or infinite values")
        outside = float(np.mean((x < 0.0) | (x > 1.0)))
        x = np.clip(x, 0.0, 1.0)
        policy = load_policy(self.policy, modality="image")
        ctx = AuditContext(modality="image", samples=samples, train=train, holdout=holdout, policy=policy,
                           seed=self.seed, inputs=dict(common, labels=labels, reconstructions=reconstructions,
                                                       outside_share=outside))
        ctx.items = x
        ctx.artefacts.update({"samples": x, "train": train.x, "names": samples.metadata.get("files")})
        return self._run_sections(ctx, "auditing", progress)

    def run_audio(self, samples: Any, train: Any, holdout: Any = None, *, reconstructions: Any = None,
                  reconstruction_note: str | None = None, ledger: Mapping[str, Any] | None = None,
                  generator_info: Mapping[str, Any] | None = None, provenance: Any = None, detection: Any = None,
                  privacy_evidence: Mapping[str, Any] | None = None, marking: Mapping[str, Any] | None = None,
                  progress: bool = True, human: Mapping[str, Any] | None = None) -> AuditReport:
        """Release audit of generated clips (``Samples`` of audio) against real train/holdout clips.

        Everything is compared at the samples' ``sample_rate``: the real clips are resampled to it and cut or
        padded to the generated length. ``reconstructions`` = (originals, reconstructions) at that rate give
        MSE and STOI."""
        from genguard.generators.audio_data import fit_length, resample
        from genguard.generators.base import Dataset

        rate = samples.metadata.get("sample_rate")
        if not isinstance(rate, int) or isinstance(rate, bool) or not 1_000 <= rate <= 384_000:
            raise AuditError(f"audio samples need metadata['sample_rate'] in Hz, got {rate!r}")
        x = np.asarray(samples.data, dtype=np.float32)
        if x.ndim != 2:
            raise AuditError(f"audio samples must be (n, samples) mono clips, got shape {x.shape}")
        if not np.isfinite(x).all():
            raise AuditError("audio samples contain NaN or infinite values")
        outside = float(np.mean(np.abs(x) > 1.0))
        x = np.clip(x, -1.0, 1.0)

        def at_rate(ds: Any) -> Any:
            if ds is None:
                return None
            r = resample(ds.x, int(ds.metadata["sample_rate"]), rate)
            if r.shape[1] != x.shape[1]:
                r = np.stack([fit_length(c, x.shape[1]) for c in r])
            return Dataset(x=np.clip(r, -1.0, 1.0), modality="audio", name=ds.name, groups=dict(ds.groups),
                           group_names=dict(ds.group_names), metadata={**ds.metadata, "sample_rate": rate})

        policy = load_policy(self.policy, modality="audio")
        ctx = AuditContext(modality="audio", samples=samples, train=at_rate(train), holdout=at_rate(holdout),
                           policy=policy, seed=self.seed,
                           inputs=dict(ledger=ledger, generator_info=generator_info, provenance=provenance,
                                       detection=detection, privacy_evidence=privacy_evidence, marking=marking,
                                       progress=progress, human=human, reconstructions=reconstructions,
                                       reconstruction_note=reconstruction_note, sample_rate=rate,
                                       outside_share=outside))
        ctx.items = x
        return self._run_sections(ctx, "auditing audio", progress)

    def run_tabular(self, synthetic: Any, train: Any, holdout: Any, *, group: str | None = None, target: str | None = None,
                    ledger: Mapping[str, Any] | None = None, generator_info: Mapping[str, Any] | None = None,
                    provenance: Any = None, detection: Any = None, privacy_evidence: Mapping[str, Any] | None = None,
                    marking: Mapping[str, Any] | None = None,
                    progress: bool = True, human: Mapping[str, Any] | None = None) -> AuditReport:
        """Release audit of a synthetic table (pandas) against the real train/holdout tables."""
        policy = load_policy(self.policy, modality="tabular")
        group = group or policy["tabular"]["group"]
        target = target or policy["tabular"]["target"]
        for name, frame in (("synthetic", synthetic), ("train", train), ("holdout", holdout)):
            if not hasattr(frame, "columns") or group not in frame.columns:
                raise AuditError(f"{name} table has no group column {group!r}")
        ctx = AuditContext(modality="tabular", samples=None, train=train, holdout=holdout, policy=policy,
                           seed=self.seed, inputs=dict(ledger=ledger, generator_info=generator_info,
                                                       provenance=provenance, detection=detection,
                                                       privacy_evidence=privacy_evidence, marking=marking,
                                                       progress=progress, group=group, target=target, human=human))
        ctx.items = synthetic
        return self._run_sections(ctx, "auditing table", progress)

    def run_text(self, texts: Any, train: Any, holdout: Any = None, *, generate: Any = None,
                 ledger: Mapping[str, Any] | None = None, generator_info: Mapping[str, Any] | None = None,
                 provenance: Any = None, detection: Any = None, privacy_evidence: Mapping[str, Any] | None = None,
                 progress: bool = True, marking: Mapping[str, Any] | None = None,
                 human: Mapping[str, Any] | None = None) -> AuditReport:
        """Release audit of generated texts: perplexity_local, self-BLEU and distinct-n diversity against real
        text, verbatim copies, and BOLD-style bias when a ``generate(prompts) -> list[str]`` callable is given."""
        policy = load_policy(self.policy, modality="text")
        texts = [str(t) for t in texts]
        if not texts:
            raise AuditError("no generated texts to audit")
        train = list(train)
        holdout = list(holdout) if holdout is not None else None
        ctx = AuditContext(modality="text", samples=None, train=train, holdout=holdout, policy=policy,
                           seed=self.seed, inputs=dict(ledger=ledger, generator_info=generator_info,
                                                       provenance=provenance, detection=detection,
                                                       privacy_evidence=privacy_evidence, marking=marking,
                                                       progress=progress, generate=generate, human=human,
                                                       reference_texts=train + (holdout or [])))
        ctx.items = texts
        return self._run_sections(ctx, "auditing text", progress)

    # ------------------------------------------------------------------------------
    def _run_sections(self, ctx: AuditContext, label: str, progress: bool) -> AuditReport:
        from genguard.generators.base import progress_bar

        sections = sections_for(ctx.modality)
        data: dict[str, Any] = {k: None for k in REPORT_KEYS}
        ctx.data = data
        with progress_bar(label, total=sum(1 for s in sections if s.step) + 1, enabled=progress) as advance:
            for section in sections:
                set_path(data, section.key, section.compute(ctx))
                if section.step:
                    advance(1, section.step)
            report = self._finish(data, ctx.policy, ctx.artefacts)
            advance(1, "gates")
        return report

    def _finish(self, data: dict[str, Any], policy: Mapping[str, Any], artefacts: dict[str, Any]) -> AuditReport:
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
