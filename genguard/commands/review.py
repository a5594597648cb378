"""`genguard review`: the review console, a self-contained HTML page of provenance, detection and forgery evidence."""
from __future__ import annotations

from pathlib import Path

import click


@click.command("review")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("genguard-review"), show_default=True,
              help="Folder for review.html, review.json and the forgery maps.")
@click.option("--detector", "detector_file", type=click.Path(path_type=Path), default=None,
              help="A detector file from `genguard detector train` (default: the shipped one), or with --arch a "
                   "published detector's weights.")
@click.option("--arch", type=click.Choice(["cnndetection", "npr"]), default=None,
              help="The published architecture of the --detector weights (see `genguard detect --help`).")
@click.option("--crop", type=click.IntRange(8, 4096), default=None,
              help="With --arch: centre-crop each image to this size first (CNNDetection's cropped setting: 224).")
@click.option("--trust-anchor", type=click.Path(path_type=Path), default=None,
              help="PEM root certificate(s) to trust: manifests signed under it show as Trusted.")
@click.option("--no-forgery", is_flag=True, help="Skip forgery analysis (faster).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier review in --out (refused without it).")
def review_cmd(paths: tuple[Path, ...], out: Path, detector_file: Path | None, arch: str | None, crop: int | None,
               trust_anchor: Path | None, no_forgery: bool, overwrite: bool) -> int:
    """Examine files (images, tables, texts; folders recursively) and write a review page, most suspicious first.

    Exit 1 if any file is tampered, 2 if a file is missing or unreadable (the others are still reviewed).
    """
    from genguard.commands.detect import _load_detector, _note_pretrained
    from genguard.generators._io import InputError, check_output_dir
    from genguard.review import review

    check_output_dir(out, ("review.json", "review.html"), overwrite, InputError)
    if trust_anchor is not None:
        from genguard.commands.provenance import _check_trust_anchor

        _check_trust_anchor(trust_anchor)
    from genguard.review import collect_files

    if not collect_files(list(paths)):
        raise InputError(f"{', '.join(map(str, paths))}: no files to review")
    det = _load_detector(str(detector_file) if detector_file else None, arch, crop)
    _note_pretrained(det)
    results = review(list(paths), out, det, trust_anchor=trust_anchor, forgery=not no_forgery)
    counts: dict[str, int] = {}
    for r in results:
        prov = r.get("provenance") if isinstance(r.get("provenance"), dict) else {}
        v = "error" if r.get("error") else prov.get("verdict", "untagged")
        counts[v] = counts.get(v, 0) + 1
        if v == "error":  # each unreadable file named on stderr, one line each; the others still reviewed
            click.echo(f"genguard: error: {r.get('error') or prov.get('reason') or r.get('path')}", err=True)
    click.echo(f"{len(results)} file(s): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    click.echo(f"review: {out / 'review.html'}")
    if counts.get("tampered"):
        return 1
    if counts.get("error"):
        return 2
    return 0


def register(group: click.Group) -> None:
    group.add_command(review_cmd)
