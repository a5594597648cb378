"""`genguard audit`: release audit of a folder of generated samples against reference data, with policy gates."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click


def _load_reference(reference: str, train_dir: Path | None, holdout_dir: Path | None):
    from generators.data import digits_split, load_image_folder, train_holdout

    from audits import AuditError

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
    from audits import AuditError

    if model_dir is None:
        return None, None
    if not model_dir.is_dir():
        raise AuditError(f"{model_dir}: --model must be a model folder")
    if (model_dir / "model").is_dir() and not (model_dir / "config.json").is_file():
        model_dir = model_dir / "model"
    ledger = None
    ledger_path = model_dir / "ledger.json"
    if ledger_path.is_file():
        from guardrails.privacy import read_ledger

        try:
            ledger = read_ledger(ledger_path)
        except ValueError as exc:
            raise AuditError(str(exc)) from None
    info: dict[str, Any] = {"model_dir": str(model_dir)}
    cfg_path = model_dir / "config.json"
    if cfg_path.is_file():
        try:
            cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise AuditError(f"{cfg_path}: unreadable model config ({exc})") from None
        if isinstance(cfg, dict):
            info.update({"name": cfg.get("generator"), "params": cfg.get("params")})
    if ledger is not None:
        info.setdefault("run_id", ledger.get("run_id"))
        info.setdefault("seed", ledger.get("seed"))
    return ledger, info


@click.command("audit")
@click.option("--samples", "samples_dir", type=click.Path(path_type=Path), required=True,
              help="Folder of generated images (PNG etc.); `_labelK` in a file name is the requested group.")
@click.option("--reference", default="digits", show_default=True,
              help="'digits' (the embedded split) or a folder of real images whose sub-folders are the groups.")
@click.option("--train", "train_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of the training images (with --holdout; overrides --reference).")
@click.option("--holdout", "holdout_dir", type=click.Path(path_type=Path), default=None,
              help="Folder of held-out real images never trained on.")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=None,
              help="Model folder: its ledger.json feeds the privacy section.")
@click.option("--policy", type=click.Path(path_type=Path), default=None, help="YAML policy with settings and gates.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the audit's classifier and tests.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for report.json and report.html.")
def audit_cmd(samples_dir: Path, reference: str, train_dir: Path | None, holdout_dir: Path | None,
              model_dir: Path | None, policy: Path | None, seed: int, out: Path) -> int:
    """Release audit: bias, fidelity, memorization and privacy of a folder of samples; exit 1 if a gate fails."""
    from rich.console import Console
    from rich.table import Table

    from generators.base import Samples
    from generators.data import labels_from_filenames, read_sample_images

    from audits import AuditError, ReleaseAudit
    from audits.policy import load_policy

    load_policy(str(policy) if policy is not None else None)  # fail fast on a bad policy, before any work
    train, holdout = _load_reference(reference, train_dir, holdout_dir)
    if train.x.ndim != 3:
        raise AuditError(f"{train_dir or reference}: the audit needs grey images, got shape {train.x.shape[1:]}")
    images, files = read_sample_images(samples_dir, size=tuple(train.x.shape[1:3]))
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
    ledger, info = _load_model_info(model_dir)
    info = info or {}
    info.setdefault("samples_dir", str(samples_dir))
    report = ReleaseAudit(policy=str(policy) if policy is not None else None, seed=seed).run(
        samples, train, holdout, ledger=ledger, generator_info=info)
    json_path, html_path = report.write(out)
    console = Console()
    table = Table(title=f"genguard audit — {len(samples)} samples", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in report.summary_rows():
        table.add_row(label, value)
    console.print(table)
    console.print(f"report: {html_path}  ·  {json_path}")
    if not report.passed:
        console.print("[bold red]release gates failed:[/bold red] " + ", ".join(g["name"] for g in report.failed_gates))
        return 1
    console.print("[bold green]all release gates passed[/bold green]")
    return 0


def register(group: click.Group) -> None:
    group.add_command(audit_cmd)
