"""`genguard run`, `genguard train` and `genguard sample`: the loop, and its steps one at a time."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from genguard.pipeline import (
    PipelineError, RunConfig, load_model, load_training_data, run, sample_step, summary_rows,
    train_step,
)


def _console():
    from rich.console import Console

    return Console()


def _epsilon_option(f):
    f = click.option("--no-dp", is_flag=True, help="Train without differential privacy (no guarantee).")(f)
    f = click.option("--epsilon", type=float, default=10.0, show_default=True,
                     help="Target ε of DP-SGD (opacus, Poisson sampling).")(f)
    f = click.option("--delta", type=float, default=None,
                     help="δ of the DP guarantee [default: 1e-5, always < 1/n].")(f)
    return f


def _print_summary(console, rows, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


@click.command("run")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("genguard-out"), show_default=True,
              help="Folder for report.json, report.html, samples/ and model/.")
@click.option("--generator", default="vae", show_default=True, help="Reference generator to train.")
@_epsilon_option
@click.option("--quick", is_flag=True, help="Small settings that finish in under a minute on 2 cores.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of training, sampling and audit.")
@click.option("-n", "--samples", "n_samples", type=int, default=None,
              help="Samples to generate and audit [default: 1000, 200 with --quick].")
@click.option("--policy", type=click.Path(path_type=Path), default=None, help="YAML policy with the release gates.")
def run_cmd(out: Path, generator: str, epsilon: float, delta: float | None, no_dp: bool, quick: bool, seed: int,
            n_samples: int | None, policy: Path | None) -> int:
    """The whole loop on the embedded digits: train (DP by default), sample, tag, audit.

    Exit 0 when every release gate passes, 1 when one fails.
    """
    console = _console()
    cfg = RunConfig(out=out, generator=generator, epsilon=None if no_dp else epsilon, delta=delta, quick=quick,
                    seed=seed, n_samples=n_samples, policy=policy)
    result = run(cfg, log=lambda s: console.print(f"[dim]·[/dim] {s}"))
    _print_summary(console, summary_rows(result.report.data), f"genguard run — {cfg.generator}, seed {cfg.seed}")
    t = result.timings
    console.print(f"train {t['train_s']:.1f}s · sample+tag {t['sample_and_tag_s']:.1f}s · audit {t['audit_s']:.1f}s "
                  f"· total {t['total_s']:.1f}s")
    console.print(f"report: {out / 'report.html'}  ·  {out / 'report.json'}")
    if not result.passed:
        console.print("[bold red]release gates failed[/bold red] (see report.html)")
        return 1
    console.print("[bold green]all release gates passed[/bold green]")
    return 0


@click.command("train")
@click.option("--generator", required=True, help="Reference generator name (see `genguard train --list`).")
@click.option("--data", default="digits", show_default=True, help="Embedded data set name or a folder/file of yours.")
@_epsilon_option
@click.option("--quick", is_flag=True, help="Small settings for a fast try.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Model folder to write.")
def train_cmd(generator: str, data: str, epsilon: float, delta: float | None, no_dp: bool, quick: bool, seed: int,
              out: Path) -> int:
    """Train one generator and save it (weights.safetensors, config.json, ledger.json) under OUT/model."""
    console = _console()
    cfg = RunConfig(out=out, generator=generator, data=data, epsilon=None if no_dp else epsilon, delta=delta,
                    quick=quick, seed=seed)
    train, _ = load_training_data(data)
    if cfg.private:
        _check_conformance(cfg, train, console)
    gen, ledger, model_dir = train_step(cfg, train)
    eps = ledger.get("epsilon")
    console.print(f"saved {gen.name} to {model_dir} (run {ledger['run_id']})")
    console.print(f"privacy: {ledger['guarantee']}" if eps is not None else "privacy: none (trained with --no-dp)")
    return 0


def _check_conformance(cfg: RunConfig, train: Any, console: Any) -> None:
    """A generator that is not one of genguard's own must pass the fast DP conformance check before DP-SGD."""
    from genguard.generators import get_generator_class, make_generator
    from genguard.generators.base import TorchGenerator
    from genguard.guardrails.privacy.conformance import check_private_training
    from genguard.pipeline import generator_params

    cls = get_generator_class(cfg.generator)
    if cls.__module__.startswith("genguard.generators.") or not issubclass(cls, TorchGenerator):
        return  # reference generators are checked in genguard's own tests
    gen = make_generator(cfg.generator, **generator_params(cfg.generator, cfg.private, cfg.quick, cfg.seed))
    result = check_private_training(gen, train, fast=True, raise_on_failure=True)
    console.print(f"DP conformance (fast) of {cfg.generator}: passed {sum(c.passed is True for c in result.checks)} checks")


@click.command("sample")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), required=True,
              help="A model folder written by `genguard train` (or its parent).")
@click.option("-n", "n", type=int, default=100, show_default=True, help="Number of samples.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the sample files.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--label", type=int, default=None, help="Class to ask a conditional generator for.")
@click.option("--no-tag", is_flag=True, help="Write samples without provenance.")
def sample_cmd(model_dir: Path, n: int, out: Path, seed: int, label: int | None, no_tag: bool) -> int:
    """Sample from a saved model, write files (PNG, .txt, CSV) and tag each with provenance."""
    if n <= 0:
        raise PipelineError(f"-n must be positive, got {n}")
    if (model_dir / "model" / "config.json").is_file():
        model_dir = model_dir / "model"
    gen, ledger, ledger_sha = load_model(model_dir)
    conditions = {} if label is None else {"label": label}
    _, paths, provenance = sample_step(gen, n, out, seed, ledger, ledger_sha256=ledger_sha, tag=not no_tag,
                                       **conditions)
    console = _console()
    console.print(f"wrote {len(paths)} files to {out}")
    if not no_tag:
        console.print(f"provenance: {provenance['verdicts']}")
    return 0


def register(group: click.Group) -> None:
    group.add_command(run_cmd)
    group.add_command(train_cmd)
    group.add_command(sample_cmd)
