"""`genguard audit`: release audit of a folder of generated samples against reference data, with policy gates."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import numpy as np

from genguard.engines import BatchTask, check_engine_options, engine_options, run_batches
from genguard.output import json_option


class SampleReadTask(BatchTask):
    """The audit's per-file work: decode one sample image, grey, area-resized to the reference's size.

    Both engines run it (in process by default, on Ray with ``--engine ray``); the pixels travel back as
    JSON numbers, which hold a float32 exactly, so the two engines give the same array, bit for bit.
    """

    name = "reading"

    def __init__(self, size: tuple[int, int]) -> None:
        self.size = (int(size[0]), int(size[1]))

    def process(self, index: int, path: str) -> dict[str, Any]:
        from genguard.generators.data import read_image

        return {"path": path, "pixels": read_image(path, size=self.size).ravel().tolist()}

    def describe(self, path: str, exc: Exception) -> str:
        from genguard.errors import one_line

        text = one_line(exc)
        return text if text.startswith(path) else f"{path}: {text}"


def read_samples(folder: Path, size: tuple[int, int], *, engine: str = "local", workers: int | None = None,
                 address: str | None = None) -> tuple[Any, list[Path]]:
    """The sample images of ``folder`` as one ``(n, H, W)`` float32 array, read by ``engine``, in file order.

    The first unreadable file stops the audit with its one-line reason (an audit of a partial sample set
    would report shares and fidelity of a set nobody released)."""
    import json

    import numpy as np

    from genguard.audits import AuditError
    from genguard.generators.data import list_images

    files = list_images(folder)
    out = np.empty((len(files), *size), dtype=np.float32)
    errors: dict[int, str] = {}
    seen: set[int] = set()

    def on_result(i: int, path: str, text: str) -> None:
        entry = json.loads(text)
        seen.add(i)
        if "error" in entry:
            errors[i] = str(entry["error"])
        else:
            out[i] = np.asarray(entry["pixels"], dtype=np.float32).reshape(size)

    missing = run_batches(SampleReadTask, {"size": size}, [(i, str(f)) for i, f in enumerate(files)], on_result,
                          engine=engine, workers=workers, address=address, batch_size=None if engine == "ray" else 64)
    if missing:
        raise AuditError(f"{files[missing[0]]}: its Ray worker died; {len(missing)} file(s) not read")
    if errors:
        raise AuditError(errors[min(errors)])
    return out, files


def _load_reference(reference: str, train_dir: Path | None, holdout_dir: Path | None):
    from genguard.generators.data import digits_split, load_image_folder, train_holdout

    from genguard.audits import AuditError

    if (train_dir is None) != (holdout_dir is None):
        raise AuditError("--train and --holdout go together: give both folders or neither")
    if train_dir is not None:
        train = load_image_folder(train_dir)
        holdout = load_image_folder(holdout_dir)
        if train.x.shape[1:] != holdout.x.shape[1:]:
            raise AuditError(f"{holdout_dir}: images of shape {holdout.x.shape[1:]}, but {train_dir} has {train.x.shape[1:]}")
        if train.group_names != holdout.group_names:
            raise AuditError(f"{holdout_dir}: sub-folders (groups) differ from those of {train_dir}")
        return train, holdout
    if reference == "digits":
        return digits_split()
    path = Path(reference)
    if not path.is_dir():
        raise AuditError(f"{reference}: --reference must be 'digits' or a folder of images (sub-folders = groups)")
    return train_holdout(load_image_folder(path))


def _load_model_info(model_dir: Path | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    from genguard.audits import AuditError

    if model_dir is None:
        return None, None
    if not model_dir.is_dir():
        raise AuditError(f"{model_dir}: --model must be a model folder")
    if (model_dir / "model").is_dir() and not (model_dir / "config.json").is_file():
        model_dir = model_dir / "model"
    ledger = None
    ledger_path = model_dir / "ledger.json"
    if ledger_path.is_file():
        from genguard.guardrails.privacy import read_ledger

        try:
            ledger = read_ledger(ledger_path)
        except ValueError as exc:
            raise AuditError(str(exc)) from None
    info: dict[str, Any] = {"model_dir": str(model_dir)}
    cfg_path = model_dir / "config.json"
    if cfg_path.is_file():
        from genguard.generators._io import read_json_checked

        cfg = read_json_checked(cfg_path, AuditError, "model config")
        if isinstance(cfg, dict):
            info.update({"name": cfg.get("generator"), "params": cfg.get("params")})
    if ledger is not None:
        info.setdefault("run_id", ledger.get("run_id"))
        info.setdefault("seed", ledger.get("seed"))
    return ledger, info


@click.command("audit")
@click.option("--samples", "samples_dir", type=click.Path(path_type=Path), required=True,
              help="Folder of generated images (`_labelK` in a file name = requested group), of WAV files (sub-folders = "
                   "requested classes), a folder of .txt "
                   "texts, or a CSV table.")
@click.option("--reference", default="digits", show_default=True,
              help="'digits' (embedded), a folder of real images (sub-folders = groups); for a CSV: 'diabetes' or a "
                   "CSV; for texts: 'pydoc' or a folder of .txt; for WAVs: 'digits' (spoken) or a folder of WAVs.")
@click.option("--train", "train_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of the training images (with --holdout; overrides --reference).")
@click.option("--holdout", "holdout_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of held-out real images never trained on.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Model folder: its ledger.json feeds the privacy section.")
@click.option("--policy", type=click.Path(path_type=Path), default=None, help="YAML policy with settings and gates.")
@click.option("--human", "human_file", type=click.Path(path_type=Path), default=None,
              help="A human study's results.json from `genguard console` (2AFC or MOS): the report's human "
                   "section, gated like the rest (e.g. human.two_afc.ci_high: {min: 0.3}).")
@engine_options(resumable=False)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the audit's classifier and tests.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for report.json and report.html.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier report in --out (refused without it).")
@json_option("Also write the report (as in OUT/report.json) to FILE ('-': standard output; the summary then goes "
             "to stderr).")
def audit_cmd(samples_dir: Path, reference: str, train_dir: Path | None, holdout_dir: Path | None,
              model_dir: Path | None, policy: Path | None, human_file: Path | None, seed: int, out: Path,
              overwrite: bool, json_out: str | None, engine: str = "local", address: str | None = None,
              workers: int | None = None) -> int:
    """Release audit: bias, fidelity, memorization and privacy of a folder of samples; exit 1 if a gate fails."""
    from genguard.output import human_to_stderr, make_console, make_table, write_json

    from genguard.audits import AuditError
    from genguard.audits.policy import load_policy
    from genguard.generators._io import check_output_dir

    check_output_dir(out, ("report.json", "report.html"), overwrite, AuditError)
    check_engine_options(engine, address, workers)
    from genguard.generators.audio_data import is_wav_folder

    audio_audit = is_wav_folder(samples_dir)
    image_audit = not (audio_audit or samples_dir.suffix.lower() == ".csv"
                       or (samples_dir.is_dir() and any(samples_dir.rglob("*.txt"))))
    if engine != "local" and not image_audit:
        raise click.UsageError("--engine ray reads image samples; a text or table audit reads one file in process")

    load_policy(str(policy) if policy is not None else None)  # fail fast on a bad policy, before any work
    pol = str(policy) if policy is not None else None
    human = None
    if human_file is not None:  # checked before any work, like the policy
        from genguard.audits.human_section import check_study
        from genguard.generators._io import read_json_checked

        human = check_study(read_json_checked(human_file, AuditError, "human study results"), str(human_file))
    ledger, info = _load_model_info(model_dir)
    info = info or {}
    evidence = None
    if ledger is not None:
        # the same evidence as `genguard run`: signature, weights hash and ε re-verified; a ledger that
        # does not verify fails every privacy gate (audits.policy.evaluate_gates)
        from genguard.pipeline import privacy_evidence_step

        evidence = privacy_evidence_step(Path(info["model_dir"]))
    info.setdefault("samples_dir", str(samples_dir))
    if audio_audit:
        report = _audit_audio(samples_dir, reference, ledger, info, pol, seed, evidence, human)
    elif samples_dir.suffix.lower() == ".csv":
        report = _audit_table(samples_dir, reference, train_dir, holdout_dir, ledger, info, pol, seed, evidence, human)
    elif samples_dir.is_dir() and any(samples_dir.rglob("*.txt")):
        report = _audit_text(samples_dir, reference, model_dir, ledger, info, pol, seed, evidence, human)
    else:
        report = _audit_images(samples_dir, reference, train_dir, holdout_dir, ledger, info, pol, seed, evidence, human,
                               engine={"engine": engine, "address": address, "workers": workers})
    json_path, html_path = report.write(out)
    console = make_console(stderr=human_to_stderr(json_out))
    table = make_table("", "", title=f"genguard audit — {report.data['generator']['n_samples']} samples",
                       show_header=False, title_justify="left")
    for label, value in report.summary_rows():
        table.add_row(label, value)
    console.print(table)
    console.print(f"report: {html_path}  ·  {json_path}")
    write_json(json_out, report.data)
    if not report.passed:
        from genguard.audits.html import gate_banner

        console.print(f"[bold red]{gate_banner(report.data['gates'])}[/bold red]")
        return 1
    from genguard.audits.html import gate_banner

    console.print(f"[bold green]{gate_banner(report.data['gates'])}[/bold green]")
    return 0


def _audit_images(samples_dir, reference, train_dir, holdout_dir, ledger, info, pol, seed, evidence=None, human=None,
                  engine=None):
    from genguard.generators.base import Samples
    from genguard.generators.data import labels_from_filenames

    from genguard.audits import AuditError, ReleaseAudit

    train, holdout = _load_reference(reference, train_dir, holdout_dir)
    if train.x.ndim != 3:
        raise AuditError(f"{train_dir or reference}: the audit needs grey images, got shape {train.x.shape[1:]}")
    images, files = read_samples(samples_dir, tuple(train.x.shape[1:3]), **(engine or {}))
    labels = labels_from_filenames(files)
    conditions = {}
    if labels is not None:
        n_groups = len(train.group_names.get("label", [])) or int(train.groups.get("label", [0]).max()) + 1
        bad = [f for f, lab in zip(files, labels) if lab >= n_groups]
        if bad:
            raise AuditError(f"{bad[0]}: requested label outside the reference's {n_groups} groups")
        conditions["label"] = labels
    samples = Samples(data=images, modality="image", conditions=conditions,
                      metadata={"files": [f.name for f in files], "source": str(samples_dir)})
    return ReleaseAudit(policy=pol, seed=seed).run(samples, train, holdout, ledger=ledger, generator_info=info,
                                                   privacy_evidence=evidence, human=human)


def _audit_audio(samples_dir, reference, ledger, info, pol, seed, evidence=None, human=None):
    """A folder of generated WAVs (sub-folders = requested classes, or flat) against real clips: the reference
    folder's WAVs (sub-folders = classes) or the embedded spoken digits. An unreadable WAV is named, skipped and
    counted; it never sinks the batch."""
    from genguard.generators import GeneratorError
    from genguard.generators.audio_data import (CLIP_SECONDS, SAMPLE_RATE, fit_length, list_wavs, load_spoken_digits,
                                                load_wav_folder, read_wav)
    from genguard.generators.base import Samples
    from genguard.generators.data import labels_from_filenames, train_holdout

    from genguard.audits import AuditError, ReleaseAudit

    try:
        ref = load_spoken_digits() if reference == "digits" else load_wav_folder(Path(reference))
        files = list_wavs(samples_dir)
    except GeneratorError as exc:
        raise AuditError(str(exc)) from None
    rate = int(ref.metadata.get("sample_rate", SAMPLE_RATE))
    n = int(round(rate * CLIP_SECONDS))
    clips, kept, skipped = [], [], []
    for f in files:
        try:
            clips.append(fit_length(read_wav(f, rate, max_seconds=CLIP_SECONDS + 1.0)[0], n))
            kept.append(f)
        except GeneratorError as exc:
            click.echo(f"skipped {exc}", err=True)
            skipped.append(f.name)
    if not clips:
        raise AuditError(f"{samples_dir}: no readable WAV file ({len(skipped)} skipped)")
    names = ref.group_names.get("label") or []
    conditions = {}
    parents = [f.parent.relative_to(samples_dir).as_posix() for f in kept]
    if names and all(p in names for p in parents):
        conditions["label"] = np.array([names.index(p) for p in parents], dtype=np.int64)
    elif all(p == "." for p in parents) and labels_from_filenames(kept) is not None:
        conditions["label"] = np.asarray(labels_from_filenames(kept), dtype=np.int64)
    elif any(p != "." for p in parents):
        unknown = sorted({p for p in parents if p not in names})
        raise AuditError(f"{samples_dir}: sub-folders {unknown[:3]} are not classes of the reference {names}")
    train, holdout = train_holdout(ref)
    info = {**info, "skipped_files": len(skipped), "skipped": skipped[:50]}
    samples = Samples(data=np.stack(clips), modality="audio", conditions=conditions,
                      metadata={"files": [f.name for f in kept], "source": str(samples_dir), "sample_rate": rate})
    return ReleaseAudit(policy=pol, seed=seed).run_audio(samples, train, holdout, ledger=ledger, generator_info=info,
                                                         privacy_evidence=evidence, human=human)


def _audit_table(csv_path, reference, train_csv, holdout_csv, ledger, info, pol, seed, evidence=None, human=None):
    import pandas as pd

    from genguard.generators.data import load_diabetes, train_holdout

    from genguard.audits import AuditError, ReleaseAudit

    def read(path):
        try:
            frame = pd.read_csv(path)
        except FileNotFoundError:
            raise AuditError(f"{path}: no such file") from None
        except Exception as exc:  # pandas raises many parser error types
            raise AuditError(f"{path}: not a readable CSV ({str(exc).splitlines()[0] if str(exc) else exc})") from None
        if frame.empty:
            raise AuditError(f"{path}: CSV has no rows")
        return frame

    synthetic = read(csv_path)
    if train_csv is not None or holdout_csv is not None:
        if train_csv is None or holdout_csv is None:
            raise AuditError("--train and --holdout go together: give both CSV files or neither")
        train, holdout = read(train_csv), read(holdout_csv)
    elif reference in ("diabetes", "digits"):  # digits is the default: a CSV means the embedded table
        tr, ho = train_holdout(load_diabetes())
        train, holdout = tr.x, ho.x
    else:
        full = read(reference)
        perm = __import__("numpy").random.default_rng(seed).permutation(len(full))
        k = max(1, len(full) // 5)
        train, holdout = full.iloc[perm[k:]].reset_index(drop=True), full.iloc[perm[:k]].reset_index(drop=True)
    missing = [c for c in train.columns if c not in synthetic.columns]
    if missing:
        raise AuditError(f"{csv_path}: missing columns {missing} of the reference table")
    return ReleaseAudit(policy=pol, seed=seed).run_tabular(synthetic[list(train.columns)], train, holdout,
                                                          ledger=ledger, generator_info=info,
                                                          privacy_evidence=evidence, human=human)


def _audit_text(samples_dir, reference, model_dir, ledger, info, pol, seed, evidence=None, human=None):
    from genguard.generators.data import load_data, train_holdout

    from genguard.audits import AuditError, ReleaseAudit
    from genguard.audits.text_bias import as_text_generator

    texts = []
    for f in sorted(samples_dir.rglob("*.txt")):
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            raise AuditError(f"{f}: not readable UTF-8 text ({exc.__class__.__name__})") from None
    ref = load_data("pydoc" if reference == "digits" else reference, modality_hint="text")
    if ref.modality != "text":
        raise AuditError(f"{reference}: not a text reference (give 'pydoc' or a folder of .txt files)")
    train, holdout = train_holdout(ref)
    generate = None
    if model_dir is not None and (model_dir / "config.json").is_file():
        from genguard import generators
        gen = generators.load(model_dir)
        if gen.modality == "text":
            generate = as_text_generator(gen, seed=seed)
    return ReleaseAudit(policy=pol, seed=seed).run_text(texts, train.x, holdout.x, generate=generate, ledger=ledger,
                                                       generator_info=info, privacy_evidence=evidence, human=human)


def register(group: click.Group) -> None:
    group.add_command(audit_cmd)
