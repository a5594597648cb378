"""The release report's audio sections: fidelity (fad_local, TSTR, MSE/STOI), class shares, memorization, and the sound itself.

Every figure is computed at the generator's sample rate: the real clips are
resampled to it and cut or padded to the generated clips' length before the
audit starts (:meth:`audits.ReleaseAudit.run`). The feature space is that of
:class:`audits.audio.ClipClassifier`, trained once per audit on the real
train split and shared by the sections through ``ctx.shared``.
"""
from __future__ import annotations

import base64
from typing import Any, Mapping

import numpy as np

from genguard.audits.builtin_sections import _BIAS_GATE, _MEMO_GATES, _bias_rows, _memo_rows
from genguard.audits.sections import AuditContext, AuditSection, Gate, Reason, missing, register_section, row

FEATURE_NOTE = ("features: penultimate layer of a small log-mel CNN trained on this audit's real train split; "
                "fad_local is comparable only between audits of the same data and settings, not with VGGish FAD")


def audio_classifier(ctx: AuditContext) -> Any:
    """The audit's clip classifier fitted on the real train split (None without labels), once per audit."""
    from genguard.audits.audio import ClipClassifier

    def make() -> Any:
        attribute = ctx.policy["bias"]["attribute"]
        if attribute not in ctx.train.groups:
            return None
        names = ctx.train.group_names.get(attribute) or []
        k = max(len(names), int(ctx.train.groups[attribute].max()) + 1)
        return ClipClassifier(k, ctx.inputs["sample_rate"], seed=ctx.seed).fit(ctx.train.x, ctx.train.groups[attribute])

    return ctx.shared("audio_classifier", make)


def audio_features(ctx: AuditContext, which: str) -> np.ndarray:
    clf = audio_classifier(ctx)
    src = {"train": lambda: ctx.train.x, "holdout": lambda: ctx.holdout.x, "samples": lambda: ctx.items}[which]
    return ctx.shared(f"audio_features:{which}", lambda: clf.features(src()))


def audio_predictions(ctx: AuditContext) -> np.ndarray:
    return ctx.shared("audio_predictions", lambda: audio_classifier(ctx).predict(ctx.items))


def _describe(ctx: AuditContext) -> dict[str, Any]:
    clf = audio_classifier(ctx)
    out = {"name": "log-mel CNN (local)", "sample_rate": ctx.inputs["sample_rate"], "note": FEATURE_NOTE}
    if ctx.holdout is not None and ctx.policy["bias"]["attribute"] in ctx.holdout.groups:
        out["holdout_accuracy"] = ctx.shared("audio_trtr", lambda: clf.accuracy(
            ctx.holdout.x, ctx.holdout.groups[ctx.policy["bias"]["attribute"]], ctx.alpha))["value"]
    return out


@register_section
class AudioFidelitySection(AuditSection):
    """fad_local against the real holdout's level, TSTR accuracy, and MSE/STOI of the generator's reconstructions."""

    name = "audio_fidelity"
    key = "fidelity"
    modalities = ("audio",)
    step = "fidelity"
    # a classifier trained on generated clips must recognise real ones clearly above chance (0.1 for ten classes)
    gates = (Gate("fidelity.tstr", "min", 0.2, (0.0, 1.0)),)
    offered = (Gate("fidelity.stoi", "min", 0.5, (0.0, 1.0)),)

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.audio import ClipClassifier, reconstruction_scores
        from genguard.audits.fidelity import frechet_distance

        attribute = ctx.policy["bias"]["attribute"]
        clf = audio_classifier(ctx)
        out: dict[str, Any] = {}
        rec = ctx.inputs.get("reconstructions")
        if rec is not None:
            scores = reconstruction_scores(rec[0], rec[1], ctx.inputs["sample_rate"], ctx.alpha, ctx.seed)
            out["mse"], out["stoi"] = scores["mse"], scores["stoi"]
            out["reconstruction_note"] = ctx.inputs.get("reconstruction_note") or "originals against reconstructions"
        else:
            out["mse"] = missing(Reason.NOT_GIVEN, "no (original, reconstruction) pairs given")
            out["stoi"] = missing(Reason.NOT_GIVEN, "no (original, reconstruction) pairs given")
        if clf is None:
            out["fad_local"] = missing(Reason.NO_LABELS, f"the real clips have no '{attribute}' labels to train the "
                                                         "audit's classifier on")
            out["tstr"] = missing(Reason.NO_LABELS, f"the real clips have no '{attribute}' labels")
            return out
        out["feature_extractor"] = _describe(ctx)
        fr, ff = audio_features(ctx, "train"), audio_features(ctx, "samples")
        fad = frechet_distance(fr, ff)
        if ctx.holdout is not None:
            fad["baseline_holdout_vs_train"] = frechet_distance(fr, audio_features(ctx, "holdout")).get("value")
            fad["baseline_note"] = ("fad_local of the real holdout clips against the train clips: the level a perfect "
                                    "generator would reach at the holdout's size")
        fad["note"] = FEATURE_NOTE
        out["fad_local"] = fad
        requested = ctx.samples.conditions.get(attribute)
        if requested is None:
            out["tstr"] = missing(Reason.NOT_GIVEN, "the samples carry no requested class to train on")
        elif ctx.holdout is None or attribute not in ctx.holdout.groups:
            out["tstr"] = missing(Reason.NO_HOLDOUT)
        elif len(np.unique(requested)) < 2:
            out["tstr"] = missing(Reason.TOO_FEW_SAMPLES, "the samples cover fewer than two classes")
        else:
            k = clf.n_classes
            tstr_clf = ClipClassifier(k, ctx.inputs["sample_rate"], seed=ctx.seed).fit(ctx.items, requested)
            acc = tstr_clf.accuracy(ctx.holdout.x, ctx.holdout.groups[attribute], ctx.alpha)
            acc["method"] = ("train on generated clips with their requested classes, test on the real holdout "
                             "(the same CNN as the audit's feature extractor)")
            acc["chance"] = 1.0 / k
            acc["baseline_train_on_real"] = out["feature_extractor"].get("holdout_accuracy")
            out["tstr"] = acc
        out["_real_features"] = fr
        out["_fake_features"] = ff
        return out

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return [row("fad_local (local log-mel CNN; not VGGish FAD)", data, ["fidelity.fad_local"], ".2f"),
                row("TSTR accuracy (train generated, test real)", data, ["fidelity.tstr"]),
                row("reconstruction MSE / STOI", data, ["fidelity.mse", "fidelity.stoi"], ".4f")]


@register_section
class AudioBiasSection(AuditSection):
    """Class shares among the generated clips (labels from the audit classifier) with the image audit's statistics."""

    name = "audio_bias"
    key = "bias"
    modalities = ("audio",)
    step = "bias"
    gates = (_BIAS_GATE,)

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.bias import condition_adherence, representation, resolve_expected

        bp = ctx.policy["bias"]
        attribute = bp["attribute"]
        if audio_classifier(ctx) is None:
            return missing(Reason.NO_LABELS, f"reference data has no '{attribute}' attribute")
        codes_ref = ctx.train.groups[attribute]
        names = ctx.train.group_names.get(attribute) or [str(i) for i in range(int(codes_ref.max()) + 1)]
        expected, source = resolve_expected(bp.get("target", "reference"), names, codes_ref)
        produced = audio_predictions(ctx)
        kw = dict(alpha=ctx.alpha, min_effect=float(bp["min_effect"]), draws=int(bp.get("mc_draws", 4000)),
                  seed=ctx.seed, expected_source=source, attribute=attribute)
        out = representation(produced, names, expected, **kw)
        out["label_source"] = "audio classifier"
        out["classifier"] = {k: v for k, v in _describe(ctx).items() if k != "note"}
        requested = ctx.samples.conditions.get(attribute)
        if requested is not None:
            out["condition_adherence"] = condition_adherence(np.asarray(requested, dtype=np.int64), produced, names,
                                                             ctx.alpha)
        else:
            out["condition_adherence"] = missing(Reason.NOT_GIVEN, "the samples carry no requested condition")
        out["flagged_count"] = len(out["flagged"])
        return out

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _bias_rows(data)


@register_section
class AudioMemorizationSection(AuditSection):
    """Near-copies of training clips by nearest neighbours in the audit classifier's feature space."""

    name = "audio_memorization"
    key = "memorization"
    modalities = ("audio",)
    step = "memorization"
    gates = _MEMO_GATES

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        from genguard.audits.memorization import memorization_section

        if audio_classifier(ctx) is None:
            return missing(Reason.NO_LABELS, "no labels to train the audit's feature extractor on")
        mp = ctx.policy["memorization"]
        files = ctx.samples.metadata.get("files")
        sec = memorization_section(
            audio_features(ctx, "samples"), audio_features(ctx, "train"),
            audio_features(ctx, "holdout") if ctx.holdout is not None else None,
            threshold=float(mp["distance_ratio"]), nth=int(mp["nth_neighbour"]), max_shift=0, alpha=ctx.alpha,
            seed=ctx.seed, calibrate=bool(mp.get("calibrate", True)),
            false_copy_rate=float(mp.get("false_copy_rate", 0.001)),
            sample_names=[str(f) for f in files] if files is not None else None)
        sec["feature_space"] = FEATURE_NOTE
        ctx.artefacts["memorization"] = sec
        return sec

    def summary_rows(self, data: Mapping[str, Any]) -> list[tuple[str, str]]:
        return _memo_rows(data)


# --------------------------------------------------------------------------------------
# the sound itself in report.html
# --------------------------------------------------------------------------------------
_SOUND_TEMPLATE = """<h2>Sound</h2>
<p class="note">{{ n }} of {{ total }} generated clips at {{ rate }} Hz, with {{ n_real }} real training clips for
comparison (resampled to the same rate). Waveforms above, log-mel spectrograms below.</p>
{% if pictures %}<img alt="waveforms and spectrograms of generated and real clips" src="data:image/png;base64,{{ pictures }}">{% endif %}
<table><tr><th>clip</th><th>class asked</th><th>listen</th></tr>
{% for c in clips %}<tr><td>{{ c.name }}</td><td>{{ c.label }}</td><td><audio controls preload="none" src="data:audio/wav;base64,{{ c.wav }}"></audio></td></tr>{% endfor %}
</table>"""


def sound_pictures(generated: np.ndarray, real: np.ndarray, rate: int, names: list[str]) -> str | None:
    """Waveform and log-mel spectrogram of each clip (generated first, then real), one PNG as base64."""
    from genguard.audits.audio import log_mel
    from genguard.audits.html import _plt, _png

    plt = _plt()
    if plt is None:
        return None
    clips = list(generated) + list(real)
    if not clips:
        return None
    mels = log_mel(np.stack(clips), rate)
    fig, axes = plt.subplots(2, len(clips), figsize=(1.9 * len(clips), 3.4), squeeze=False)
    t = np.arange(len(clips[0])) / rate
    for j, clip in enumerate(clips):
        axes[0, j].plot(t, clip, lw=0.4, color="#1f5fa8" if j < len(generated) else "#3a7d44")
        axes[0, j].set_ylim(-1, 1)
        axes[0, j].set_title(names[j], fontsize=7)
        axes[1, j].imshow(mels[j], origin="lower", aspect="auto", cmap="magma")
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return _png(fig)


@register_section
class AudioSoundSection(AuditSection):
    """No figure of its own: puts pictures and playable clips of the generated (and some real) audio in report.html."""

    name = "audio_sound"
    key = "generator.listening"
    modalities = ("audio",)
    max_clips = 8

    def compute(self, ctx: AuditContext) -> dict[str, Any]:
        ctx.artefacts["audio"] = {"samples": ctx.items, "rate": ctx.inputs["sample_rate"], "train": ctx.train.x,
                                  "labels": ctx.samples.conditions.get(ctx.policy["bias"]["attribute"]),
                                  "class_names": ctx.train.group_names.get(ctx.policy["bias"]["attribute"]),
                                  "names": ctx.samples.metadata.get("files")}
        return {"clips_in_html": min(self.max_clips, len(ctx.items)), "sample_rate": ctx.inputs["sample_rate"]}

    def html(self, data: Mapping[str, Any], artefacts: Mapping[str, Any]) -> Any:
        from genguard.audits.html import render_block
        from genguard.generators.audio_data import wav_bytes

        a = artefacts.get("audio")
        if not a:
            return None
        x, rate = np.asarray(a["samples"]), int(a["rate"])
        k = min(self.max_clips, len(x))
        names = [str(n).rsplit("/", 1)[-1] for n in (a.get("names") or [])][:k] or [f"sample {i}" for i in range(k)]
        labels, cls = a.get("labels"), a.get("class_names") or []
        clips = []
        for i in range(k):
            lab = int(labels[i]) if labels is not None else None
            clips.append({"name": names[i], "label": (cls[lab] if lab is not None and lab < len(cls) else lab),
                          "wav": base64.b64encode(wav_bytes(x[i], rate)).decode("ascii")})
        real = np.asarray(a["train"])[: min(3, len(a["train"]))]
        pictures = sound_pictures(x[: min(6, k)], real, rate, names[:6] + [f"real {i}" for i in range(len(real))])
        return render_block(_SOUND_TEMPLATE, n=k, total=len(x), rate=rate, n_real=len(real), clips=clips,
                            pictures=pictures)


def audio_privacy_features(ctx: AuditContext) -> tuple[np.ndarray, np.ndarray, np.ndarray | None] | None:
    """(samples, train, holdout) in the audit classifier's feature space, for the sample-only membership
    inference of the privacy section; None without labels."""
    if audio_classifier(ctx) is None:
        return None
    return (audio_features(ctx, "samples"), audio_features(ctx, "train"),
            audio_features(ctx, "holdout") if ctx.holdout is not None else None)
