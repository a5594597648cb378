"""The end-to-end loop: train (DP by default) → save with a ledger → sample → tag → audit → report.

Each step is also a function of its own, so `genguard train` and `genguard
sample` run the same code one step at a time.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from genguard.generators import get_generator_class, load, make_generator
from genguard.generators.base import Dataset, Generator, Samples, progress_bar
from genguard.generators.data import digits_split, load_data, train_holdout, write_samples
from genguard.guardrails.privacy.ledger import sha256_file

DEFAULT_SAMPLES = 1000
QUICK_SAMPLES = 200


class PipelineError(ValueError):
    """Bad input to the pipeline: an output path that is a file, bad epsilon, unknown generator."""


@dataclasses.dataclass
class RunConfig:
    """Everything that decides what `genguard run` computes (recorded in the report)."""

    out: Path
    generator: str = "dpmerf"
    data: str | None = None  # None: the generator's own embedded data set (its class attribute default_data)
    epsilon: float | None = 10.0
    delta: float | None = None
    accountant: str = "rdp"
    max_grad_norm: float = 1.0
    quick: bool = False
    seed: int = 0
    n_samples: int | None = None
    policy: Path | None = None
    tag: bool = True
    # DP batches and noise are secret and fresh per run unless this opts in to keying them by the
    # secret key and the seed (then the same seed reproduces the release; never publish two such).
    reproducible_dp: bool = False
    # a public stand-in for the number of training records (a round figure published with the data, never computed
    # from it): DP-SGD's sample rate, step count and default delta come from it, so the ledger does not publish
    # ceil(n / batch size), which tells neighbouring data sets apart where n crosses a multiple of the batch size
    public_size: int | None = None

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        cls = get_generator_class(self.generator)  # an unknown name fails before any work, listing the choices
        if self.data is None:
            self.data = cls.default_data
            if self.data is None:
                raise PipelineError(f"generator {self.generator!r} names no default data set (its class attribute "
                                    "default_data is None); give --data")
        if self.epsilon is not None and cls.dp_mechanism == "none":
            raise PipelineError(f"generator {self.generator!r} has no differentially private training "
                                f"(dp_mechanism 'none'); run it with --no-dp (no guarantee) or choose one of "
                                f"{', '.join(private_generators())}")
        if self.public_size is not None:
            if self.epsilon is None:
                raise PipelineError("--public-size sets DP-SGD's sample rate; it means nothing with --no-dp")
            if cls.dp_mechanism != "dp-sgd":
                raise PipelineError(f"--public-size applies to DP-SGD generators; {self.generator!r} releases through "
                                    f"its own mechanism ({cls.dp_mechanism!r}), which publishes no sample rate")
            if self.public_size < 1:
                raise PipelineError(f"--public-size must be a positive number of records, got {self.public_size}")
        if self.epsilon is not None and not (np.isfinite(self.epsilon) and self.epsilon > 0):
            raise PipelineError(f"--epsilon must be a positive number, got {self.epsilon}")
        if self.n_samples is not None and self.n_samples <= 0:
            raise PipelineError(f"the number of samples must be positive, got {self.n_samples}")
        if self.out.exists() and not self.out.is_dir():
            raise PipelineError(f"{self.out}: exists and is not a folder")
        if self.policy is not None and not Path(self.policy).is_file():
            raise PipelineError(f"{self.policy}: no such policy file")

    @property
    def private(self) -> bool:
        return self.epsilon is not None

    @property
    def samples_wanted(self) -> int:
        return self.n_samples or (QUICK_SAMPLES if self.quick else DEFAULT_SAMPLES)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["out"] = str(self.out)
        d["policy"] = str(self.policy) if self.policy else None
        return d


def private_generators() -> list[str]:
    """Registered generators that train with a DP guarantee (DP-SGD or a mechanism of their own)."""
    from genguard.generators.registry import registered

    return [n for n, c in registered().items() if c.dp_mechanism != "none"]


def generator_params(name: str, private: bool, quick: bool, seed: int) -> dict[str, Any]:
    """The pipeline's settings for ``name``, read from the class: its ``run_params`` for this setting
    ("dp"/"plain", "_quick") where it has them, else ``quick_params`` with --quick and its defaults without."""
    cls = get_generator_class(name)
    key = ("dp" if private else "plain") + ("_quick" if quick else "")
    params = dict((cls.run_params or {}).get(key, {}))
    if not params and quick:
        params = dict(cls.quick_params)
    if "seed" in _init_parameters(cls):
        params["seed"] = seed
    return params


def _init_parameters(cls: type) -> set[str]:
    import inspect

    return set(list(inspect.signature(cls.__init__).parameters)[1:])


def _fit(gen: Generator, data: Dataset, trainer: Any, progress: bool) -> None:
    import inspect

    kwargs: dict[str, Any] = {"trainer": trainer} if trainer is not None else {}
    if "progress" in inspect.signature(gen.fit).parameters:
        kwargs["progress"] = progress
    gen.fit(data, **kwargs)


def load_training_data(data: str) -> tuple[Dataset, Dataset]:
    """The fixed train/holdout split of an embedded data set or a user's folder."""
    if data == "digits":
        return digits_split()
    return train_holdout(load_data(data))


def train_step(cfg: RunConfig, train: Dataset, progress: bool = True) -> tuple[Generator, dict[str, Any], Path]:
    """Train the generator, save it to ``out/model`` with its privacy ledger; return (model, ledger, dir).

    The generator's ``dp_mechanism`` decides: "dp-sgd" is trained by ``guardrails.privacy.PrivateTrainer``,
    "own" receives the same trainer and reads its ``target_epsilon``, ``delta`` and ``accountant`` (DP-MERF),
    and "none" (GMM, HMM) is refused unless ``--no-dp`` is given (checked in :class:`RunConfig`).
    """
    from genguard.guardrails.privacy import PrivateTrainer, build_ledger, write_ledger

    params = generator_params(cfg.generator, cfg.private, cfg.quick, cfg.seed)
    trainer = None
    if cfg.private:
        trainer = PrivateTrainer(target_epsilon=cfg.epsilon, delta=cfg.delta, accountant=cfg.accountant,
                                 max_grad_norm=cfg.max_grad_norm, reproducible=cfg.reproducible_dp,
                                 public_size=cfg.public_size)
    gen = make_generator(cfg.generator, **params)
    accepted = getattr(type(gen), "modalities", ()) or (gen.modality,)
    if train.modality not in accepted:
        raise PipelineError(f"generator {cfg.generator!r} trains on {' or '.join(accepted)} data, but {train.name!r} "
                            f"is {train.modality}; omit --data to use its own data set ({type(gen).default_data})")
    _fit(gen, train, trainer, progress)
    if cfg.private and not (getattr(gen, "training_report_", None) or {}).get("private"):
        raise PipelineError(f"generator {cfg.generator!r} says dp_mechanism {type(gen).dp_mechanism!r} but its "
                            "training report does not say private=True; nothing was saved")
    model_dir = cfg.out / "model"
    gen.save(model_dir)
    weights = model_dir / "weights.safetensors"
    run_id = "run-" + sha256_file(weights)[:16]
    ledger = build_ledger(gen.training_report_, generator=gen.name, run_id=run_id, seed=cfg.seed,
                          weights_path=weights, config=cfg.as_dict())
    write_ledger(model_dir, ledger)
    return gen, ledger, model_dir


def sample_step(gen: Generator, n: int, out_dir: Path, seed: int, ledger: dict[str, Any] | None,
                ledger_sha256: str | None = None, tag: bool = True, progress: bool = True,
                replace: bool = False, model_dir: Path | None = None,
                **conditions: Any) -> tuple[Samples, list[Path], dict[str, Any]]:
    """Sample ``n`` items, write them under ``out_dir`` and tag each with provenance.

    Returns the samples, the files written, and the report's ``provenance`` section. Earlier
    samples in ``out_dir`` are replaced only with ``replace=True`` (the pipeline's own folder).
    """
    if out_dir.exists() and not out_dir.is_dir():
        raise PipelineError(f"{out_dir}: exists and is not a folder")
    stale = sorted(out_dir.glob("sample_*")) + sorted(out_dir.glob("samples.*")) if out_dir.is_dir() else []
    if stale and not replace:
        raise PipelineError(f"{out_dir}: already holds samples ({stale[0].name}, ...); choose an empty folder")
    if tag and getattr(gen, "watermarkable", False):
        # the reference text generator embeds the keyed green-list watermark while it samples
        from genguard.guardrails.provenance import KeyStore
        from genguard.guardrails.provenance.text import byte_watermark

        conditions = {**conditions, "watermarking_config": byte_watermark(KeyStore.load_or_create().watermark_key).config()}
    samples = gen.sample(n, seed=seed, **conditions)
    for old in stale:  # only files of our own naming: a previous run's samples would mislead the audit
        old.unlink()
    paths = write_samples(samples, out_dir)
    if not tag:
        from genguard.audits.sections import Reason, missing

        return samples, paths, missing(Reason.NOT_RUN, "tagging disabled (--no-tag)")
    claim = claim_from_ledger(ledger, gen.name, ledger_sha256, model_dir=model_dir, paths=paths)
    provenance = tag_and_verify(paths, claim, progress=progress)
    return samples, paths, provenance


def tag_and_verify(paths: list[Path], claim: dict[str, Any], progress: bool = True) -> dict[str, Any]:
    """C2PA-tag every file in place, then verify each one; summarise for the report."""
    from genguard.guardrails.provenance import KeyStore, tag_file, verify_file
    from genguard.guardrails.provenance.tagging import audio_mark_absence

    keys = KeyStore.load_or_create()
    with progress_bar("tagging", total=len(paths), enabled=progress) as advance:
        for p in paths:
            tag_file(p, claim=claim, keys=keys)
            advance(1)
    states: dict[str, int] = {}
    verdicts: dict[str, int] = {}
    unmarked: dict[str, list[str]] = {}  # reason -> files tagging could not watermark (a clip too short, ...)
    found = 0
    with progress_bar("verifying", total=len(paths), enabled=progress) as advance:
        for p in paths:
            result = verify_file(p)
            state = result.get("manifest", {}).get("state", "Missing")
            states[state] = states.get(state, 0) + 1
            verdicts[result.get("verdict", "error")] = verdicts.get(result.get("verdict", "error"), 0) + 1
            wm = result.get("watermark") or {}
            found += bool(wm.get("found"))
            why = audio_mark_absence(wm) if wm.get("markable") is False or wm.get("kind") == "audio zero-bit" else None
            if why is not None:
                unmarked.setdefault(why, []).append(Path(p).name)
            advance(1)
    n = len(paths)
    return {
        "files": n,
        "manifest_states": states,
        "verdicts": verdicts,
        "intact_rate": verdicts.get("intact", 0) / n if n else None,
        "watermark_found": found,
        "unmarked": [{"reason": why, "n": len(files), "files": files} for why, files in unmarked.items()],
        "claim": claim,
        "signer": keys.describe() if hasattr(keys, "describe") else None,
        "method": "C2PA manifest embedded with c2pa-python, verified by re-reading every written file",
    }


def claim_from_ledger(ledger: dict[str, Any] | None, generator: str, ledger_sha256: str | None,
                      model_dir: Path | None = None, paths: list[Path] | None = None) -> dict[str, Any]:
    """The training claim that goes into every output's provenance record.

    Without a ledger the run id is derived, not invented: ``model-`` and the weights' SHA-256 when the
    model folder is known, else ``outputs-`` and the SHA-256 of the written files; either names exactly
    what was released, and the claim says it is not private.
    """
    ledger = ledger or {}
    run_id = ledger.get("run_id")
    if not run_id:
        weights = Path(model_dir) / "weights.safetensors" if model_dir is not None else None
        if weights is not None and weights.is_file():
            run_id = "model-" + sha256_file(weights)[:16]
        else:
            h = hashlib.sha256()
            for p in sorted(paths or []):
                h.update(sha256_file(p).encode())
            run_id = "outputs-" + h.hexdigest()[:16]
    return {
        "generator": generator,
        "run_id": run_id,
        "private": bool(ledger.get("private")),
        "epsilon": ledger.get("epsilon"),
        "delta": ledger.get("delta"),
        "ledger_sha256": ledger_sha256,
    }


@dataclasses.dataclass
class RunResult:
    out: Path
    report: Any
    ledger: dict[str, Any]
    timings: dict[str, float]

    @property
    def passed(self) -> bool:
        return bool(self.report.passed)


def run(cfg: RunConfig, progress: bool = True, log: Callable[[str], None] = lambda s: None) -> RunResult:
    """The whole loop on the configured data; writes report.json/html, samples/ and model/ under cfg.out.

    Image generators get the full audit; text and tabular generators the parts that apply
    (``ReleaseAudit.run_text`` / ``run_tabular``).
    """
    from genguard.audits import ReleaseAudit

    timings: dict[str, float] = {}
    cfg.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, holdout = load_training_data(cfg.data)
    log(f"data: {train.name} ({len(train)} train, {len(holdout)} holdout)")

    t = time.perf_counter()
    gen, ledger, model_dir = train_step(cfg, train, progress=progress)
    ledger_sha = sha256_file(model_dir / "ledger.json")
    timings["train_s"] = time.perf_counter() - t
    eps = ledger.get("epsilon")
    log(f"trained {gen.name} in {timings['train_s']:.1f}s" + (f", ε={eps:.3f} at δ={ledger['delta']:g}" if eps else " without DP"))

    t = time.perf_counter()
    n = cfg.samples_wanted if train.modality != "text" else min(cfg.samples_wanted, 100)
    samples, paths, provenance = sample_step(gen, n, cfg.out / "samples", cfg.seed, ledger,
                                             ledger_sha256=ledger_sha, tag=cfg.tag, progress=progress,
                                             replace=True)
    timings["sample_and_tag_s"] = time.perf_counter() - t
    log(f"wrote {len(samples)} samples to {cfg.out / 'samples'}")
    for u in (provenance.get("unmarked") or []) if isinstance(provenance, dict) else []:
        log(f"warning: {u['n']} of {provenance['files']} samples carry no watermark: {u['reason']}")

    t = time.perf_counter()
    privacy_evidence = privacy_evidence_step(model_dir)
    timings["privacy_checks_s"] = time.perf_counter() - t

    t = time.perf_counter()
    audit = ReleaseAudit(policy=cfg.policy, seed=cfg.seed)
    generator_info = {"name": gen.name, "params": gen.get_params(), "run_id": ledger.get("run_id"),
                      "seed": cfg.seed, "model_dir": str(model_dir), "config": cfg.as_dict(),
                      "training": dict(gen.training_report_)}
    from genguard.audits.marking import marking_section

    common = dict(ledger=ledger, generator_info=generator_info, provenance=provenance,
                  privacy_evidence=privacy_evidence, progress=progress,
                  marking=marking_section(paths, seed=cfg.seed))
    from genguard.audits.sections import Reason, missing

    generate = None
    if samples.modality == "audio":
        detection = missing(Reason.NOT_APPLICABLE_MODALITY, "genguard's synthetic-media detectors are image "
                                                            "detectors; there is no audio detector")
        common["detection"] = detection
    elif samples.modality == "image":
        detection = missing(Reason.TOO_SMALL,
                            "samples are 8x8 digits: too small for the synthetic-image detectors, which need "
                            "natural images of at least 32x32 pixels")
    else:
        detection = missing(Reason.NOT_APPLICABLE_MODALITY,
                            f"the synthetic-image detectors do not apply to {samples.modality} outputs")
        if samples.modality == "text" and "prompt" in gen.conditional_on:
            from genguard.audits.text_bias import as_text_generator

            generate = as_text_generator(gen, seed=cfg.seed)
    if samples.modality == "audio":
        report = audit.run_audio(samples, train, holdout, **audio_reconstructions(gen, holdout), **common)
    else:
        report = audit.run(samples, train, holdout, detection=detection, generate=generate, **common)
    report.write(cfg.out)
    timings["audit_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0
    return RunResult(out=cfg.out, report=report, ledger=ledger, timings=timings)


def audio_reconstructions(gen: Generator, holdout: Dataset, limit: int = 40) -> dict[str, Any]:
    """``reconstructions`` for the audio audit: the first ``limit`` holdout clips at the generator's rate and the
    generator's teacher-forced predictions of them (``reconstruct``), or nothing when it has none."""
    if not hasattr(gen, "reconstruct") or "label" not in holdout.groups:
        return {}
    from genguard.generators.audio_data import fit_length, resample

    x, y = holdout.x[:limit], holdout.groups["label"][:limit]
    rate = int(gen.sample_rate)
    orig = resample(x, int(holdout.metadata["sample_rate"]), rate)
    rec = gen.reconstruct(x, int(holdout.metadata["sample_rate"]), y)
    orig = np.stack([fit_length(c, rec.shape[1]) for c in orig])
    return {"reconstructions": (orig, rec),
            "reconstruction_note": (f"{len(rec)} real holdout clips against the generator's teacher-forced "
                                    "predictions of them (each sample predicted from the true samples before it; "
                                    "expected amplitude of the predicted 256-level mu-law distribution), at "
                                    f"{rate} Hz")}


def privacy_evidence_step(model_dir: Path) -> dict[str, Any]:
    """The ledger re-verified for the report (signature, weights hash, ε recomputed with PRV and PLD).
    Membership inference from the samples alone is part of the audit itself (``ReleaseAudit``)."""
    from genguard.guardrails.privacy.verify import verify_ledger

    check = verify_ledger(model_dir / "ledger.json")
    return {"verification": {k: check.get(k) for k in ("consistent", "claimed_epsilon", "recomputed", "findings")}}


def verified_ledger(path: str | os.PathLike) -> dict[str, Any]:
    """The ledger at ``path``, refused (:class:`PipelineError`) unless ``privacy verify`` calls it consistent.

    Its claim (epsilon, delta, run id) is about to be signed into C2PA manifests with the local key:
    a model folder or ledger from elsewhere must not launder an edited or unsigned claim into trusted
    provenance.
    """
    from genguard.guardrails.privacy import read_ledger, verify_ledger

    ledger = read_ledger(path)
    rep = verify_ledger(path)
    if not rep["consistent"]:
        bad = next(f for f in rep["findings"] if f["severity"] == "error")
        raise PipelineError(f"{rep['ledger']}: the ledger does not verify ({bad['code']}: {bad['message'][:160]}), so "
                            "its claim is not signed into provenance; check it with `genguard privacy verify`, or "
                            "remove it to tag without a DP claim")
    return ledger


def load_model(model_dir: str | os.PathLike) -> tuple[Generator, dict[str, Any] | None, str | None]:
    """A saved generator, its ledger (verified) and the ledger's SHA-256 (None, None if the folder has no ledger)."""
    gen = load(model_dir)
    ledger_path = Path(model_dir) / "ledger.json"
    if not ledger_path.is_file():
        return gen, None, None
    return gen, verified_ledger(ledger_path), sha256_file(ledger_path)


def summary_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The terminal summary of a report.json: the audit sections' own lines, then the gates (audits.sections)."""
    from genguard.audits.sections import summary_rows as rows

    return rows(report)
