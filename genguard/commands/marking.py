"""CLI command `genguard marking check`: are outputs marked as EU AI Act Art. 50(2) asks (technical check, not legal advice)."""
from __future__ import annotations

from pathlib import Path

import click

from genguard.generators._io import atomic_write_json

_COLOURS = {"met": "green", "missing": "bold red", "unchecked": "yellow", "not-feasible": "dim", "not-sampled": "dim"}


def _expand(paths) -> list[Path]:
    """Paths named, and the regular files of folders named (recursively, sorted); C2PA sidecars are read with their asset."""
    from genguard.guardrails.provenance import ProvenanceError

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            # not is_dir: a FIFO or socket in the folder is reported as an error result, not silently left out; a
            # named folder with nothing in it stays an entry of its own (e.g. a folder x.wav from a glob)
            out += sorted(q for q in p.rglob("*") if not q.is_dir() and q.suffix.lower() != ".c2pa"
                          and not q.name.startswith(".")) or [p]
        else:  # a missing or special file is reported as an error result beside the others, not raised
            out.append(p)
    if not out:
        raise ProvenanceError("no files to check")
    return out


def _with_progress(files: list[Path], work):
    """Run ``work(advance)`` under a progress bar when there are enough files for it to take a while."""
    import os

    if len(files) < 20 or os.environ.get("GENGUARD_NO_PROGRESS"):
        return work(lambda n=1: None)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("checking marking"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=True, console=Console(stderr=True)) as prog:
        task = prog.add_task("checking", total=len(files))
        return work(lambda n=1: prog.advance(task, n))


def register(group: click.Group) -> None:
    """Add `marking check` to the genguard command group."""

    from genguard.output import HelpGroup

    @group.group("marking", cls=HelpGroup)
    def marking_group() -> None:
        """EU AI Act Art. 50(2) marking of generated outputs (a technical check, not legal advice)."""

    @marking_group.command("check")
    @click.argument("paths", nargs=-1, required=True, type=click.Path())
    @click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
                  help="write the results as JSON ('-': standard output)")
    @click.option("--trust-anchor", type=click.Path(dir_okay=False), default=None,
                  help="PEM root certificate(s) to trust for the signer")
    @click.option("--sample", type=click.IntRange(min=0), default=8, show_default=True,
                  help="watermarked images put through the everyday-edit suite (0: skip it)")
    @click.option("--seed", type=int, default=0, show_default=True, help="seed of the robustness sample")
    def check(paths, json_out, trust_anchor, sample, seed) -> int:
        """Per output and modality: signed metadata, time-stamp, AI disclosure, watermark and its robustness to
        everyday edits, one line per requirement, with the source each rests on.

        Exit 0 when every output meets every requirement (or it is not technically feasible for its modality),
        1 when something is missing or cannot be checked, 2 when a file cannot be read (the others are still
        reported and the JSON is written)."""
        import sys

        from rich.console import Console
        from rich.table import Table

        from genguard.guardrails.provenance import marking as mk

        if trust_anchor is not None:
            from genguard.commands.provenance import _check_trust_anchor

            _check_trust_anchor(Path(trust_anchor))
        files = _expand(paths)
        result = _with_progress(files, lambda adv: mk.check_outputs(files, sample=sample, seed=seed,
                                                                     trust_anchor=trust_anchor, progress=adv))
        from genguard.output import make_console

        console = make_console(stderr=json_out == "-")
        table = Table("file", "modality", "requirement", "status", "detail", title="marking check — " + mk.DISCLAIMER)
        for f in result["files"]:
            if f.get("error"):
                table.add_row(f["path"], f["modality"], "-", "[red]error[/]", f["error"])
                continue
            for i, ln in enumerate(f["lines"]):
                st = ln["status"]
                table.add_row(f["path"] if i == 0 else "", f["modality"] if i == 0 else "", ln["name"],
                              f"[{_COLOURS.get(st, 'red')}]{st}[/]", ln["detail"])
        console.print(table, markup=True, highlight=False)
        rob = result["robustness"]
        if rob["n_sampled"]:
            parts = [f"{n} {s['survived']}/{s['n']} (95% CI {s['ci95'][0]:.2f}-{s['ci95'][1]:.2f})"
                     for n, s in rob["survival"].items()]
            console.print(f"robustness ({rob['n_sampled']} of {rob['n_watermarked_images']} watermarked images, "
                          f"seed {rob['seed']}): watermark survives " + "; ".join(parts), highlight=False)
        arob = result.get("audio_robustness") or {}
        if arob.get("n_sampled"):
            parts = [f"{n} {s['survived']}/{s['n']} (95% CI {s['ci95'][0]:.2f}-{s['ci95'][1]:.2f})"
                     for n, s in arob["survival"].items()]
            console.print(f"audio robustness ({arob['n_sampled']} of {arob['n_watermarked_clips']} marked clips, "
                          f"seed {arob['seed']}): mark survives " + "; ".join(parts), highlight=False)
        for line in result["missing"]:
            console.print(f"missing: {line}", highlight=False, markup=False)
        console.print("sources: " + " | ".join(result["sources"]), highlight=False, markup=False)
        console.print(f"{mk.DISCLAIMER}.", highlight=False)
        if json_out:
            atomic_write_json(json_out, result)
        errors = [f for f in result["files"] if f.get("error")]
        for f in errors:
            click.echo(f"genguard: error: {f['error']}", err=True)
        if errors:
            return 2
        return 0 if result["passed"] else 1
