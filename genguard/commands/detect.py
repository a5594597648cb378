"""`genguard detect` and `genguard detector train/eval`: per-image verdicts, forgery maps, detector training and evaluation."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

import click

from genguard.engines import (MAX_TASK_RETRIES, BatchTask, EngineError, ResultStream, check_engine_options,
                              engine_options, read_path_list, run_batches)
from genguard.examine import VERDICT_WORDS as _VERDICT_WORDS, examine_image
from genguard.output import HelpGroup



def _err(msg: str) -> None:
    click.echo(f"genguard: {msg}", err=True)


def _load_detector(path: str | None, arch: str | None = None, crop: int | None = None):
    """genguard's own detector file (or the shipped default), or with ``arch`` a published detector's weights."""
    from genguard.detectors.models import load_default, load_detector

    if arch is not None or crop is not None:
        if path is None:
            raise click.UsageError("--arch/--crop need --detector FILE: the published detector's weights "
                                   "(genguard ships none and downloads none)")
        if arch is None:
            raise click.UsageError("--crop applies to a published detector: give --arch too")
        from genguard.detectors.pretrained import load_pretrained

        return load_pretrained(path, arch, **({"crop": crop} if crop is not None else {}))
    if path is None:
        return load_default()
    from genguard.detectors import DetectorError

    try:
        return load_detector(path)
    except DetectorError as exc:
        if Path(path).is_file():  # perhaps a published checkpoint: say how to read one
            raise DetectorError(f"{exc}; for a published detector's weights name the architecture with "
                                f"--arch {'|'.join(_archs())}") from None
        raise


def _archs() -> list[str]:
    from genguard.detectors.pretrained import ARCHS

    return list(ARCHS)


_ARCH_HELP = ("The published architecture of the --detector weights (a state dict in .safetensors or .pth/.pt, read "
              "without running code): cnndetection (Wang et al. 2020, ResNet-50) or npr (Tan et al. 2024); "
              "preprocessed as in the paper; probabilities are the paper's, not re-calibrated.")
_CROP_HELP = "With --arch: centre-crop each image to this size first (CNNDetection's cropped setting is 224)."


def _note_pretrained(det) -> None:
    info = getattr(det, "info_", {})
    if "arch" in info:
        _err(f"note: {info['paper']}; {info['calibration']}" + (f"; {info['size_note']}" if info.get("size_note") else ""))


class DetectTask(BatchTask):
    """`genguard detect`'s per-batch work: the detector loaded once per worker, :func:`examine_image` per file."""

    name = "detection"

    def __init__(self, detector_file: str | None = None, heatmaps: str | None = None, no_forgery: bool = False,
                 max_pixels: int = 67_108_864, trust_anchor: str | None = None, arch: str | None = None,
                 crop: int | None = None) -> None:
        self.detector_file, self.no_forgery, self.max_pixels = detector_file, no_forgery, max_pixels
        self.heatmaps = Path(heatmaps) if heatmaps else None
        self.trust_anchor = Path(trust_anchor) if trust_anchor else None
        self.det = _load_detector(detector_file, arch, crop)

    def process(self, index: int, path: str) -> dict[str, Any]:
        return examine_image(index, Path(path), self.det, self.heatmaps, self.no_forgery, self.max_pixels,
                             self.trust_anchor)

    def error_entry(self, path: str, message: str) -> dict[str, Any]:
        return {"path": path, "error": message, "synthetic_probability": None, "verdict": None,
                "detector_verdict": None, "provenance": None, "wild": None, "forgery": None}


def _not_done(missing: list[str], stream: ResultStream, what: str) -> NoReturn:
    kept = stream.abort()
    shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    raise EngineError(f"{len(missing)} file(s) not {what}: their Ray worker died {MAX_TASK_RETRIES + 1} times "
                      f"({shown})" + (f"; the others' results are in {kept} (rerun with --resume to retry the rest)"
                                      if kept else ""))


@click.command("detect")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "json_out", type=click.Path(path_type=Path, allow_dash=True),
              help="Write the per-image results here: a JSON list (streamed into FILE.partial.jsonl while running), "
                   "JSON Lines as it goes when FILE ends in .jsonl, a Parquet table (one row per image, streamed "
                   "into FILE.partial.jsonl) when it ends in .parquet, or standard output for '-'.")
@click.option("--heatmaps", type=click.Path(path_type=Path), help="Write greyscale forgery maps and an overlay per image here.")
@click.option("--detector", "detector_file", type=click.Path(path_type=Path),
              help="A detector file from `genguard detector train` (default: the shipped one), or with --arch a "
                   "published detector's weights.")
@click.option("--arch", type=click.Choice(["cnndetection", "npr"]), default=None, help=_ARCH_HELP)
@click.option("--crop", type=click.IntRange(8, 4096), default=None, help=_CROP_HELP)
@click.option("--no-forgery", is_flag=True, help="Skip forgery analysis (synthetic-probability only).")
@click.option("--max-pixels", type=click.IntRange(1, 1_000_000_000), default=67_108_864, show_default=True,
              help="Refuse larger images (decompression bombs); raising it raises the memory ceiling too.")
@engine_options
def detect(paths: tuple[Path, ...], json_out: Path | None, heatmaps: Path | None, detector_file: Path | None,
           arch: str | None, crop: int | None, no_forgery: bool, max_pixels: int, engine: str,
           address: str | None, workers: int | None, resume: bool, paths_from: str | None) -> int:
    """Per-image verdict (generated / edited / no evidence found / inconclusive) with its reasons.

    The verdict fuses the file's own C2PA manifest, known public watermarks (Stable Diffusion, SDXL),
    generator metadata (AUTOMATIC1111, ComfyUI, InvokeAI, NovelAI, EXIF/XMP), the calibrated pixel
    detector and the forgery analyses; "no evidence found" is never a claim of authenticity.

    PATHS are image files or folders (searched recursively). A corrupt file is
    reported and skipped; exit 2 if no image could be read. Results are written
    as each image finishes, so a stopped run keeps what it finished (--resume
    goes on from there). --engine ray spreads the images over Ray workers, each
    loading the detector once.
    """
    from genguard.detectors import DetectorError
    from genguard.detectors._io import list_images, progress_bar

    to_stdout = json_out is not None and str(json_out) == "-"
    say = (lambda m: click.echo(m, err=True)) if to_stdout else click.echo
    if resume and (json_out is None or to_stdout):
        raise click.UsageError("--resume needs --json FILE (the results of the earlier run)")
    check_engine_options(engine, address, workers)
    if not paths and not paths_from:
        raise click.UsageError("give image files or folders, or --paths-from LIST")
    listed = [Path(p) for p in read_path_list(paths_from)] if paths_from else []
    options = {"detector_file": str(detector_file) if detector_file else None, "arch": arch, "crop": crop,
               "heatmaps": str(heatmaps) if heatmaps else None, "no_forgery": no_forgery, "max_pixels": max_pixels}
    local_task = DetectTask(**options)  # a bad --detector file fails here, before any worker starts
    _note_pretrained(getattr(local_task, "det", None))
    if detector_file is None:
        _err("note: using the default detector, trained only on ten small generator families made here "
             "(see benchmarks/train_default_detector.py); it has never seen a large modern generator, "
             "and a low score is no evidence of authenticity")
    files = (list_images(paths) if paths else []) + listed  # a listed file that is missing is its own error entry
    if not files:
        raise DetectorError(f"{', '.join(map(str, paths))}: no images found")
    stream = ResultStream(json_out, resume=resume)
    by_index: dict[int, dict[str, Any]] = {}
    for i, f in enumerate(files):
        if str(f) in stream.done:
            by_index[i] = stream.done[str(f)]
    todo = [(i, str(f)) for i, f in enumerate(files) if i not in by_index]
    if resume and by_index:
        say(f"resuming: {len(by_index)} of {len(files)} image(s) already done in {stream.stream_path}")
    try:
        with progress_bar("detecting", total=len(files)) as advance:
            advance(len(by_index))

            def on_result(i: int, path: str, line: str) -> None:
                entry = json.loads(line)
                if entry.get("error") and len(files) > 1:  # a single bad file is reported once, by the error below
                    _err(f"skipped {entry['error']}")
                by_index[i] = entry
                stream.write_line(line)
                advance(1)

            missing = run_batches(DetectTask, options, todo, on_result, engine=engine, workers=workers,
                                  address=address, local_task=local_task)
    except KeyboardInterrupt:
        kept = stream.abort()
        _err(f"interrupted after {len(by_index)} of {len(files)} image(s)"
             + (f"; their results are in {kept} (rerun with --resume to finish)" if kept else ""))
        raise click.exceptions.Exit(130) from None
    if missing:
        _not_done([str(files[i]) for i in missing], stream, "examined")
    results = [by_index[i] for i in range(len(files))]
    n_ok = sum(1 for e in results if not e.get("error"))
    for e in results:
        if e.get("error"):
            continue
        p = e["synthetic_probability"]
        words = _VERDICT_WORDS.get(e["verdict"], str(e["verdict"]))
        say(f"{words:<17} p={p:.3f}  {e['path']}" if p is not None else f"{words:<17} p=n/a    {e['path']}")
        say(f"    why: {e.get('verdict_basis', '')}")
    counts = {v: sum(1 for e in results if e.get("verdict") == v) for v in _VERDICT_WORDS}
    n_err = sum(1 for e in results if e.get("error"))
    say(f"{n_ok} image(s): " + ", ".join(f"{counts[v]} {w}" for v, w in _VERDICT_WORDS.items())
        + (f"; {n_err} unreadable, skipped" if n_err else ""))
    if json_out is not None and n_ok == 0:  # nothing readable: an earlier result file is left as it was
        kept = stream.abort()
        if kept and Path(kept) != json_out:
            Path(kept).unlink(missing_ok=True)
    elif json_out is not None:
        stream.finish(lambda: results)
        if not to_stdout:
            say(f"wrote {json_out}")
    if n_ok == 0:
        if len(files) == 1:
            raise DetectorError(results[0]["error"])
        raise DetectorError(f"no readable image among {len(files)} file(s)")
    return 0


@click.group("detector", cls=HelpGroup)
def detector() -> None:
    """Train and evaluate synthetic-image detectors."""


def _read_folders(real: Path, fake: Path, fmt: str, limit: int | None):
    from genguard.detectors.evaluate import load_folder

    errors: list[str] = []
    r, _ = load_folder(real, fmt, errors, limit=limit, progress=True)
    f, groups = load_folder(fake, fmt, errors, limit=limit, progress=True)
    for e in errors:
        _err(f"skipped {e}")
    return r, f, groups, errors


def _kinds() -> list[str]:
    """The registered tile models (detectors.models.TILE_MODELS) and the ensemble: adding one adds it here."""
    from genguard.detectors.models import kinds

    return list(kinds())


def _kind_help() -> str:
    from genguard.detectors.models import kind_descriptions

    return "Tile model: " + "; ".join(f"{k}: {v}" for k, v in kind_descriptions().items()) + "."


@detector.command("train")
@click.option("--real", required=True, type=click.Path(path_type=Path), help="Folder of real images.")
@click.option("--fake", required=True, type=click.Path(path_type=Path), help="Folder of generated images (sub-folders allowed).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("genguard-detector.safetensors"), show_default=True,
              help="Detector file to write (.safetensors); use it with `genguard detect --detector FILE`.")
@click.option("--kind", type=click.Choice(_kinds()), default="ensemble", show_default=True, help=_kind_help())
@click.option("--format", "fmt", default="jpeg95", show_default=True,
              help="Re-encode real and fake to this one format first: png (decoded pixels) or jpegNN.")
@click.option("--calibration", type=click.Choice(["platt", "isotonic"]), default="platt", show_default=True,
              help="How scores become probabilities, fitted on a held-out part of the images.")
@click.option("--band", nargs=2, type=float, default=(0.2, 0.8), show_default=True,
              help="Inconclusive band: P(synthetic) between LOW and HIGH.")
@click.option("--npr-epochs", type=int, default=8, show_default=True, help="Training epochs of the NPR network.")
@click.option("--stack-cv", type=click.Choice(["holdout", "family"]), default="holdout", show_default=True,
              help="How the ensemble weighs its members: on held-out images, or (family) on logits of each generator "
                   "sub-folder of --fake scored by members fitted without it; needs two or more sub-folders.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and of training.")
def detector_train(real: Path, fake: Path, out: Path, kind: str, fmt: str, calibration: str, band: tuple[float, float],
                   npr_epochs: int, stack_cv: str, seed: int) -> int:
    """Fit a detector on folders of real and generated images, calibrate it on a held-out part, save it."""
    from genguard.detectors.models import make_detector

    r, f, groups, errors = _read_folders(real, fake, fmt, None)
    det = make_detector(kind, calibration=calibration, band=tuple(band), npr_epochs=npr_epochs, stack_cv=stack_cv,
                        seed=seed, progress=True)
    det.fit(r, f, fake_groups=groups)
    det.info_ = {"real": str(real), "fake": str(fake), "format": fmt, "generators": sorted(set(groups) - {""}),
                 "skipped": len(errors)}
    det.save(out)
    click.echo(f"trained {kind} detector on {len(r)} real and {len(f)} fake images "
               f"({det.n_train_['holdout_images']} held out for calibration); wrote {out} ({out.stat().st_size:,} bytes)")
    return 0


@detector.command("eval")
@click.option("--real", required=True, type=click.Path(path_type=Path), help="Folder of real images.")
@click.option("--fake", required=True, type=click.Path(path_type=Path),
              help="Folder of generated images; one sub-folder per generator enables leave-one-generator-out.")
@click.option("--detector", "detector_file", type=click.Path(path_type=Path),
              help="Detector file (default: the shipped one), or with --arch a published detector's weights.")
@click.option("--arch", type=click.Choice(["cnndetection", "npr"]), default=None, help=_ARCH_HELP)
@click.option("--crop", type=click.IntRange(8, 4096), default=None, help=_CROP_HELP)
@click.option("--robustness", is_flag=True, help="Also evaluate after JPEG 95/75/50, resize x0.5/x2, blur, crop and noise.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), metavar="FILE|-",
              help="Write all results as JSON to FILE ('-': standard output, the tables then go to stderr).")
@click.option("--format", "fmt", default="jpeg95", show_default=True,
              help="Re-encode real and fake to this one format first: png (decoded pixels) or jpegNN.")
@click.option("--logo/--no-logo", default=True, show_default=True,
              help="Leave-one-generator-out refits when the fake folder has one sub-folder per generator.")
@click.option("--n-boot", type=int, default=1000, show_default=True, help="Bootstrap resamples for the 95% intervals.")
@click.option("--limit", type=int, default=None, help="Use at most this many images per folder.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap and of refits.")
def detector_eval(real: Path, fake: Path, detector_file: Path | None, arch: str | None, crop: int | None,
                  robustness: bool, json_out: Path | None, fmt: str, logo: bool, n_boot: int, limit: int | None,
                  seed: int) -> int:
    """AUC, AP, accuracy at the calibrated threshold and TPR at 1% FPR, each with a bootstrap 95% interval."""
    from genguard.detectors._io import atomic_write_json
    from genguard.detectors.evaluate import evaluate, format_table, leave_one_generator_out

    det = _load_detector(str(detector_file) if detector_file else None, arch, crop)
    _note_pretrained(det)
    r, f, groups, errors = _read_folders(real, fake, fmt, limit)
    res = evaluate(det, r, f, robustness=robustness, n_boot=n_boot, seed=seed, progress=True)
    out: dict[str, Any] = {"detector": str(detector_file) if detector_file else "default", "kind": det.kind,
                           "format": fmt, "n_real": len(r), "n_fake": len(f), "skipped": errors, "results": res}
    if getattr(det, "info_", {}).get("arch"):
        out["pretrained"] = det.info_
    say = (lambda m: click.echo(m, err=True)) if json_out is not None and str(json_out) == "-" else click.echo
    say(format_table(res, f"{det.kind} detector on {len(r)} real / {len(f)} fake (re-encoded as {fmt}); "
                          "value [95% bootstrap interval]"))
    names = sorted(set(groups))
    if logo and len(names) >= 2 and "" not in names and not hasattr(det, "fit"):
        out["leave_one_generator_out"] = None
        out["leave_one_generator_out_reason"] = "a published detector's weights are fixed: nothing to refit"
        say("leave-one-generator-out skipped: a published detector's weights are fixed (nothing to refit)")
    elif logo and len(names) >= 2 and "" not in names:
        lg = leave_one_generator_out(det.clone, r, f, groups, n_boot=min(n_boot, 300), seed=seed, progress=True)
        out["leave_one_generator_out"] = lg
        say(format_table(lg["per_generator"], "leave-one-generator-out (held-out generator: metrics)"))
        say(f"LOGO mean AUC {lg['mean_auc']:.3f} (min {lg['min_auc']:.3f})")
    if json_out is not None:
        atomic_write_json(json_out, out)
        if str(json_out) != "-":
            say(f"wrote {json_out}")
    return 0


def register(group: click.Group) -> None:
    group.add_command(detect)
    group.add_command(detector)
