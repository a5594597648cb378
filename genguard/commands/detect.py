"""`genguard detect` and `genguard detector train/eval`: per-image verdicts, forgery maps, detector training and evaluation."""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any, NoReturn

import click

from genguard.engines import (MAX_TASK_RETRIES, BatchTask, EngineError, ResultStream, check_engine_options,
                              engine_options, read_path_list, run_batches)
from genguard.output import HelpGroup


def _err(msg: str) -> None:
    click.echo(f"genguard: {msg}", err=True)


def _load_detector(path: str | None):
    from genguard.detectors.models import load_default, load_detector

    return load_detector(path) if path else load_default()


def _jsonable(obj: Any) -> Any:
    from genguard.generators._io import jsonable

    return jsonable(obj, strict=False)


def provenance_of(path: Path, trust_anchor: Path | None = None) -> dict[str, Any]:
    """The `genguard verify` result for one image (verify_file never raises for a bad file)."""
    from genguard.guardrails.provenance import verify_file

    return _jsonable(verify_file(path, trust_anchor=trust_anchor))


#: How-made classes (from a file's own C2PA history) that rule out calling the image authentic.
AI_DISCLOSED = ("ai-generated", "ai-composited")


def _apply_disclosure(entry: dict[str, Any]) -> None:
    """A file whose own manifest declares AI content is synthetic, whatever the pixel detector says: a
    disclosure against the signer's interest needs no trust in the signer. The detector's verdict is kept."""
    made = (entry.get("provenance") or {}).get("made")
    if made in AI_DISCLOSED and entry.get("verdict") != "synthetic":
        entry["detector_verdict"] = entry.get("verdict")
        entry["verdict"] = "synthetic"
        entry["verdict_basis"] = f"its C2PA manifest declares it {made}"


def _safe_stem(i: int, path: Path) -> str:
    return f"{i:04d}_" + re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem)[:80]


def examine_image(i: int, f: Path, det: Any, heatmaps: Path | None, no_forgery: bool,
                  max_pixels: int = 100_000_000, trust_anchor: Path | None = None) -> dict[str, Any]:
    """One image's detect entry: synthetic probability and verdict, provenance, forgery scores and maps.

    An unreadable image gives an entry with ``error`` (one line naming the file) instead of raising.
    """
    from genguard.detectors import DetectorError
    from genguard.detectors._io import read_image, write_png
    from genguard.detectors.forgery import METHODS, analyze, bounded_copy, map_to_png_array, overlay

    entry: dict[str, Any] = {"path": str(f)}
    try:
        rgb = read_image(f, max_pixels=max_pixels)
    except DetectorError as exc:
        entry.update({"error": str(exc), "synthetic_probability": None, "verdict": None,
                      "provenance": None, "forgery": None})
        return entry
    from genguard.detectors.preprocess import PATCH

    p = float(det.predict_proba([rgb])[0])
    if not math.isfinite(p):  # never NaN in JSON: null plus the reason
        entry.update(synthetic_probability=None, verdict="inconclusive",
                     synthetic_probability_reason=f"the detector returned {p} for this image")
    else:
        entry["synthetic_probability"] = round(p, 6)
        entry["verdict"] = det.verdict(p)
    if min(rgb.shape[:2]) < PATCH:
        # Padded up to one tile: outside anything the detector was trained or calibrated on.
        entry["verdict"] = "inconclusive"
        entry["note"] = f"image smaller than the detector's {PATCH}-pixel tile; its probability is not meaningful"
    entry["provenance"] = provenance_of(f, trust_anchor)
    _apply_disclosure(entry)
    entry["forgery"] = None
    if not no_forgery:
        import numpy as np

        rgb, analysed = bounded_copy(rgb)  # maps and overlay at the analysed size (the image's own up to 4k)
        res = analyze(rgb, METHODS)
        forgery: dict[str, Any] = {}
        combined = np.zeros(rgb.shape[:2], np.float32)
        stem = _safe_stem(i, f)
        for name, r in res.items():
            map_path = None
            if heatmaps is not None:
                map_path = heatmaps / stem / f"{name}.png"
                write_png(map_path, map_to_png_array(r.map))
            combined = np.maximum(combined, r.map * r.score)
            score = float(r.score)
            forgery[name] = {"score": round(score, 6) if math.isfinite(score) else 0.0,
                             "map": str(map_path) if map_path else None, "details": _jsonable(r.details)}
            if not math.isfinite(score):
                forgery[name]["score_reason"] = f"analysis gave {score}; reported as 0 (no evidence)"
        entry["forgery"] = forgery
        if heatmaps is not None:
            ov = heatmaps / stem / "overlay.png"
            write_png(ov, overlay(rgb, combined))
            entry["overlay"] = str(ov)
    return entry


class DetectTask(BatchTask):
    """`genguard detect`'s per-batch work: the detector loaded once per worker, :func:`examine_image` per file."""

    name = "detection"

    def __init__(self, detector_file: str | None = None, heatmaps: str | None = None, no_forgery: bool = False,
                 max_pixels: int = 67_108_864, trust_anchor: str | None = None) -> None:
        self.detector_file, self.no_forgery, self.max_pixels = detector_file, no_forgery, max_pixels
        self.heatmaps = Path(heatmaps) if heatmaps else None
        self.trust_anchor = Path(trust_anchor) if trust_anchor else None
        self.det = _load_detector(detector_file)

    def process(self, index: int, path: str) -> dict[str, Any]:
        return examine_image(index, Path(path), self.det, self.heatmaps, self.no_forgery, self.max_pixels,
                             self.trust_anchor)

    def error_entry(self, path: str, message: str) -> dict[str, Any]:
        return {"path": path, "error": message, "synthetic_probability": None, "verdict": None,
                "provenance": None, "forgery": None}


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
                   "JSON Lines as it goes when FILE ends in .jsonl, or standard output for '-'.")
@click.option("--heatmaps", type=click.Path(path_type=Path), help="Write greyscale forgery maps and an overlay per image here.")
@click.option("--detector", "detector_file", type=click.Path(path_type=Path),
              help="A detector file from `genguard detector train` (default: the shipped one).")
@click.option("--no-forgery", is_flag=True, help="Skip forgery analysis (synthetic-probability only).")
@click.option("--max-pixels", type=click.IntRange(1, 1_000_000_000), default=67_108_864, show_default=True,
              help="Refuse larger images (decompression bombs); raising it raises the memory ceiling too.")
@engine_options
def detect(paths: tuple[Path, ...], json_out: Path | None, heatmaps: Path | None, detector_file: Path | None,
           no_forgery: bool, max_pixels: int, engine: str, address: str | None, workers: int | None,
           resume: bool, paths_from: str | None) -> int:
    """Per-image verdict (synthetic / authentic / inconclusive), provenance and forgery maps.

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
    options = {"detector_file": str(detector_file) if detector_file else None,
               "heatmaps": str(heatmaps) if heatmaps else None, "no_forgery": no_forgery, "max_pixels": max_pixels}
    local_task = DetectTask(**options)  # a bad --detector file fails here, before any worker starts
    if detector_file is None:
        _err("note: using the default detector, trained only on small reference generators "
             "(see benchmarks/train_default_detector.py); its verdicts do not transfer to other generators")
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
        line = f"{e['verdict']:<12} p={p:.3f}  {e['path']}" if p is not None else f"{e['verdict']:<12} p=n/a    {e['path']}"
        if e["forgery"]:
            top = max(e["forgery"].items(), key=lambda kv: kv[1]["score"])
            line += f"  (strongest forgery cue: {top[0]} {top[1]['score']:.2f})"
        say(line)
    counts = {v: sum(1 for e in results if e.get("verdict") == v) for v in ("synthetic", "inconclusive", "authentic")}
    n_err = sum(1 for e in results if e.get("error"))
    say(f"{n_ok} image(s): {counts['synthetic']} synthetic, {counts['inconclusive']} inconclusive, "
        f"{counts['authentic']} authentic" + (f"; {n_err} unreadable, skipped" if n_err else ""))
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
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the split and of training.")
def detector_train(real: Path, fake: Path, out: Path, kind: str, fmt: str, calibration: str, band: tuple[float, float],
                   npr_epochs: int, seed: int) -> int:
    """Fit a detector on folders of real and generated images, calibrate it on a held-out part, save it."""
    from genguard.detectors.models import make_detector

    r, f, groups, errors = _read_folders(real, fake, fmt, None)
    det = make_detector(kind, calibration=calibration, band=tuple(band), npr_epochs=npr_epochs, seed=seed, progress=True)
    det.fit(r, f)
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
@click.option("--detector", "detector_file", type=click.Path(path_type=Path), help="Detector file (default: the shipped one).")
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
def detector_eval(real: Path, fake: Path, detector_file: Path | None, robustness: bool, json_out: Path | None, fmt: str,
                  logo: bool, n_boot: int, limit: int | None, seed: int) -> int:
    """AUC, AP, accuracy at the calibrated threshold and TPR at 1% FPR, each with a bootstrap 95% interval."""
    from genguard.detectors._io import atomic_write_json
    from genguard.detectors.evaluate import evaluate, format_table, leave_one_generator_out

    det = _load_detector(str(detector_file) if detector_file else None)
    r, f, groups, errors = _read_folders(real, fake, fmt, limit)
    res = evaluate(det, r, f, robustness=robustness, n_boot=n_boot, seed=seed, progress=True)
    out: dict[str, Any] = {"detector": str(detector_file) if detector_file else "default", "kind": det.kind,
                           "format": fmt, "n_real": len(r), "n_fake": len(f), "skipped": errors, "results": res}
    say = (lambda m: click.echo(m, err=True)) if json_out is not None and str(json_out) == "-" else click.echo
    say(format_table(res, f"{det.kind} detector on {len(r)} real / {len(f)} fake (re-encoded as {fmt}); "
                          "value [95% bootstrap interval]"))
    names = sorted(set(groups))
    if logo and len(names) >= 2 and "" not in names:
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
