"""`genguard run`, `genguard train` and `genguard sample`: the loop, and its steps one at a time."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from genguard.output import json_option, write_json
from genguard.pipeline import (
    PipelineError, RunConfig, load_model, load_training_data, run, sample_step, summary_rows,
    train_step,
)


def _console(json_out=None):
    from genguard.output import human_to_stderr, make_console

    return make_console(stderr=human_to_stderr(json_out))


def _epsilon_option(f):
    f = click.option("--no-dp", is_flag=True, help="Train without differential privacy (no guarantee).")(f)
    f = click.option("--epsilon", type=float, default=10.0, show_default=True,
                     help="Target ε of DP-SGD (opacus, Poisson sampling).")(f)
    f = click.option("--delta", type=float, default=None,
                     help="δ of the DP guarantee [default: 1e-5, always < 1/n].")(f)
    f = click.option("--reproducible-dp", is_flag=True,
                     help="Key DP-SGD's batches and noise by your secret key and --seed, so the same seed "
                          "reproduces the model; by default they are secret and fresh per run. Never publish "
                          "two models trained with the same key and seed.")(f)
    f = click.option("--public-size", type=click.IntRange(min=1), default=None, metavar="N",
                     help="A public stand-in for the number of training records (a round figure published with "
                          "the data, never counted from it): DP-SGD's sample rate and step count come from it, so "
                          "the ledger does not reveal ceil(n / batch size). DP-SGD generators only.")(f)
    return f


class GeneratorName(click.ParamType):
    """A registered generator's name: a choice read from the registry when the option is parsed, so a
    generator added by ``@register`` or an entry point is a valid choice too; unknown names fail before
    any work with the registered names and how to register one; shell completion offers the names."""

    name = "generator"

    def get_metavar(self, param, ctx=None) -> str:  # noqa: ARG002 (click's signature)
        return "NAME"

    def convert(self, value, param, ctx):
        from genguard.generators import available
        from genguard.generators.registry import how_to_register

        if value in available():
            return value
        self.fail(f"unknown generator {value!r}; available: {', '.join(available())}; "
                  f"to add one, {how_to_register(str(value))}", param, ctx)

    def shell_complete(self, ctx, param, incomplete: str):
        from click.shell_completion import CompletionItem
        from genguard.generators import available

        return [CompletionItem(n) for n in available() if n.startswith(incomplete)]


_DP_WORDS = {"dp-sgd": "DP-SGD", "own": "own mechanism", "none": "none (--no-dp only)"}


def list_generators() -> str:
    """The registered generators as plain text lines (never truncated, also when piped)."""
    from genguard.generators.registry import iter_described, problems

    rows = [("name", "modality", "conditions", "default data", "private training", "summary")]
    for d in iter_described():
        rows.append((d["name"], "/".join(d["modalities"]), ",".join(d["conditions"]) or "-",
                     d["default_data"] or "- (give --data)", _DP_WORDS.get(d["dp_mechanism"], d["dp_mechanism"]),
                     d["summary"]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    for name, reason in sorted(problems().items()):
        lines.append(f"(not loadable) {name}: {reason}")
    lines.append("Add one: @genguard.generators.register on the class, or an entry point in the group "
                 "'genguard.generators' (see the README, 'Bring your own generator').")
    return "\n".join(lines)


def _list_callback(ctx, param, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    click.echo(list_generators())
    ctx.exit(0)
def _overwrite_option(f):
    return click.option("--overwrite", is_flag=True,
                        help="Replace the results of an earlier run in --out (refused without it).")(f)


#: What marks a folder as holding an earlier run's results (refused without --overwrite).
RUN_MARKERS = ("report.json", "report.html", "model", "samples")


def _check_out(out: Path, markers: tuple[str, ...], overwrite: bool) -> None:
    import os

    from genguard.generators._io import check_output_dir

    if os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        # every rank would write the same folder; distributed training is the Python API's (rank 0 saves)
        raise PipelineError(f"WORLD_SIZE={os.environ['WORLD_SIZE']}: this command runs in one process; under "
                            "torchrun train through the Python API (see examples/train_distributed.py)")
    check_output_dir(out, markers, overwrite, PipelineError)


def _print_summary(console, rows, title: str) -> None:
    from genguard.output import make_table

    table = make_table("", "", title=title, show_header=False, title_justify="left")
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


@click.command("run")
@click.option("--out", "out", type=click.Path(path_type=Path), default=Path("genguard-out"), show_default=True,
              help="Folder for report.json, report.html, samples/ and model/.")
@click.option("--generator", type=GeneratorName(), default="dpmerf", show_default=True,
              help="Registered generator to train (list them: `genguard train --list`).")
@_epsilon_option
@click.option("--quick", is_flag=True, help="Small settings that finish in under a minute on 2 cores.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of training, sampling and audit.")
@click.option("-n", "--samples", "n_samples", type=int, default=None,
              help="Samples to generate and audit [default: 1000, 200 with --quick].")
@click.option("--policy", type=click.Path(path_type=Path), default=None, help="YAML policy with the release gates.")
@json_option("Also write the report (as in OUT/report.json) to FILE ('-': standard output; the summary then goes "
             "to stderr).")
@_overwrite_option
def run_cmd(out: Path, generator: str, epsilon: float, delta: float | None, no_dp: bool, reproducible_dp: bool,
            public_size: int | None, quick: bool, seed: int, n_samples: int | None, policy: Path | None, json_out: str | None,
            overwrite: bool) -> int:
    """The whole loop on the generator's own embedded data: train (DP by default), sample, tag, audit.

    Exit 0 when every release gate passes, 1 when one fails. An --out folder that
    already holds a run's results is refused unless --overwrite is given.
    """
    _check_out(out, RUN_MARKERS, overwrite)
    console = _console(json_out)
    cfg = RunConfig(out=out, generator=generator, epsilon=None if no_dp else epsilon, delta=delta, quick=quick,
                    seed=seed, n_samples=n_samples, policy=policy, reproducible_dp=reproducible_dp,
                    public_size=public_size)
    result = run(cfg, log=lambda s: console.print(f"[dim]·[/dim] {s}"))
    _print_summary(console, summary_rows(result.report.data), f"genguard run — {cfg.generator}, seed {cfg.seed}")
    t = result.timings
    console.print(f"train {t['train_s']:.1f}s · sample+tag {t['sample_and_tag_s']:.1f}s · audit {t['audit_s']:.1f}s "
                  f"· total {t['total_s']:.1f}s")
    console.print(f"report: {out / 'report.html'}  ·  {out / 'report.json'}")
    write_json(json_out, {**result.report.data, "timings": t})
    if not result.passed:
        from genguard.audits.html import gate_banner

        console.print(f"[bold red]{gate_banner(result.report.data['gates'])}[/bold red] (see report.html)")
        return 1
    from genguard.audits.html import gate_banner

    console.print(f"[bold green]{gate_banner(result.report.data['gates'])}[/bold green]")
    return 0


@click.command("train")
@click.option("--list", "list_", is_flag=True, is_eager=True, expose_value=False, callback=_list_callback,
              help="List the registered generators (modality, conditions, default data, private training) and exit.")
@click.option("--generator", type=GeneratorName(), required=True,
              help="Registered generator name (see `genguard train --list`).")
@click.option("--data", default=None,
              help="Embedded data set name or a folder/file of yours [default: the generator's own data set].")
@_epsilon_option
@click.option("--quick", is_flag=True, help="The generator's small settings, for a fast try (seconds to a minute).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of training (and of the saved model).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to write; the model goes to OUT/model.")
@json_option("Write the model folder and its privacy ledger as JSON to FILE ('-': standard output).")
@_overwrite_option
def train_cmd(generator: str, data: str | None, epsilon: float, delta: float | None, no_dp: bool, reproducible_dp: bool,
              public_size: int | None, quick: bool, seed: int, out: Path, json_out: str | None, overwrite: bool) -> int:
    """Train one generator and save it (weights.safetensors, config.json, ledger.json) under OUT/model.

    An OUT that already holds a model is refused unless --overwrite is given.
    """
    _check_out(out, ("model",), overwrite)
    console = _console(json_out)
    cfg = RunConfig(out=out, generator=generator, data=data, epsilon=None if no_dp else epsilon, delta=delta,
                    quick=quick, seed=seed, reproducible_dp=reproducible_dp, public_size=public_size)
    console.print(f"[dim]·[/dim] data: {cfg.data}" + (" (the generator's own)" if data is None else ""))
    train, _ = load_training_data(cfg.data)
    if cfg.private:
        _check_conformance(cfg, train, console)
    gen, ledger, model_dir = train_step(cfg, train)
    eps = ledger.get("epsilon")
    console.print(f"saved {gen.name} to {model_dir} (run {ledger['run_id']})")
    console.print(f"privacy: {ledger['guarantee']}" if eps is not None else "privacy: none (trained with --no-dp)")
    write_json(json_out, {"model_dir": str(model_dir), "generator": gen.name, "data": cfg.data, "ledger": ledger})
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
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of sampling: the same seed, the same files.")
@click.option("--label", type=int, default=None, help="Class to ask a conditional generator for (--condition label=K).")
@click.option("-c", "--condition", "conditions", multiple=True, metavar="NAME=VALUE",
              help="A condition the generator takes (`genguard train --list` shows them), e.g. -c prompt='def '.")
@click.option("--no-tag", is_flag=True, help="Write samples without provenance.")
@json_option("Write the files written and their provenance check as JSON to FILE ('-': standard output).")
@_overwrite_option
def sample_cmd(model_dir: Path, n: int, out: Path, seed: int, label: int | None, conditions: tuple[str, ...],
               no_tag: bool, json_out: str | None, overwrite: bool) -> int:
    """Sample from a saved model, write files (PNG, .txt, CSV) and tag each with provenance.

    A model saved without a ledger is tagged under a run id derived from its weights (model-<sha256>).
    An OUT folder that already holds files is refused unless --overwrite is given.
    """
    if n <= 0:
        raise PipelineError(f"-n must be positive, got {n}")
    if out.is_dir() and not overwrite:
        held = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        if held:
            raise PipelineError(f"{out}: already holds files ({', '.join(held[:3])}{', ...' if len(held) > 3 else ''}); "
                                "choose another folder or pass --overwrite")
    if (model_dir / "model" / "config.json").is_file():
        model_dir = model_dir / "model"
    gen, ledger, ledger_sha = load_model(model_dir)
    given = parse_conditions(conditions, getattr(gen, "conditional_on", ()), gen.name)
    if label is not None:
        given["label"] = label
    _, paths, provenance = sample_step(gen, n, out, seed, ledger, ledger_sha256=ledger_sha, tag=not no_tag,
                                       model_dir=model_dir, **given)
    console = _console(json_out)
    console.print(f"wrote {len(paths)} files to {out}")
    if not no_tag:
        console.print(f"provenance (checked after tagging): {verdict_words(provenance.get('verdicts') or {})}")
    write_json(json_out, {"model_dir": str(model_dir), "out": str(out), "seed": seed, "conditions": given,
                          "files": [str(p) for p in paths], "provenance": provenance})
    return 0


def verdict_words(counts: dict) -> str:
    """``{"intact": 9, "error": 1}`` as ``9 intact, 1 error`` (largest first)."""
    if not counts:
        return "nothing checked"
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def parse_conditions(items: tuple[str, ...], allowed: tuple[str, ...], name: str) -> dict:
    """``NAME=VALUE`` pairs as sampling conditions (integers where they parse as one)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise PipelineError(f"--condition takes NAME=VALUE, got {item!r}")
        if allowed and key not in allowed:
            raise PipelineError(f"generator {name!r} takes the conditions {', '.join(allowed)}; got {key!r}")
        try:
            out[key] = int(value)
        except ValueError:
            out[key] = value
    return out


def register(group: click.Group) -> None:
    group.add_command(run_cmd)
    group.add_command(train_cmd)
    group.add_command(sample_cmd)
