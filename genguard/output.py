"""The CLI's terminal output: thread default, consoles that never cut file names, JSON targets, warnings, new keys."""
from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Callable

import click

#: The most torch threads the default picks: the small models here gain little beyond it.
MAX_DEFAULT_THREADS = 4


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, so a container's or taskset's limit counts)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(cpus: int | None = None, load: float | None = None) -> int:
    """Torch threads for this machine now: the CPUs not already busy, at least 1, at most 4.

    A CPU-bound run with more threads than free cores is slower, not faster (each
    thread waits for the others at every parallel op), so the 1-minute load average
    is subtracted from the available CPUs.
    """
    cpus = available_cpus() if cpus is None else cpus
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):
            load = 0.0
    free = int(math.floor(cpus - load + 0.5))
    return max(1, min(MAX_DEFAULT_THREADS, cpus, free))


def resolve_threads(option: int | None) -> tuple[int, str]:
    """The thread count and where it came from: --threads / GENGUARD_THREADS, else OMP_NUM_THREADS, else the default."""
    if option is not None:
        return option, "--threads"
    omp = os.environ.get("OMP_NUM_THREADS", "")
    if omp.strip().isdigit() and int(omp) > 0:
        return int(omp), "OMP_NUM_THREADS"
    return default_threads(), "default"


def set_threads(n: int) -> None:
    """Use ``n`` threads in torch and the BLAS libraries (set before they are imported where possible)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(n)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)
    else:  # importing torch here would slow every command; set it when torch is first imported
        _set_torch_threads_on_import(n)


def _set_torch_threads_on_import(n: int) -> None:
    import importlib.abc
    import importlib.machinery

    class _Hook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name != "torch":
                return None
            sys.meta_path.remove(self)
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            original = loader.exec_module

            def exec_module(module):
                original(module)
                module.set_num_threads(n)

            loader.exec_module = exec_module  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _Hook())


# ------------------------------------------------------------------ help

class HelpGroup(click.Group):
    """A command group whose listing shows each command's whole first sentence, wrapped, never cut with '...'."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is None or cmd.hidden:
                continue
            rows.append((name, cmd.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


# ------------------------------------------------------------------ consoles and tables

def stream_is_terminal(stderr: bool = False) -> bool:
    stream = sys.stderr if stderr else sys.stdout
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


#: Width of the console when output is not a terminal: wide enough that no table cell is cut.
PIPE_WIDTH = 100_000


def make_console(stderr: bool = False):
    """A rich console; when not a terminal (logs, CI, pipes) it is so wide that no file name is cut."""
    from rich.console import Console

    return Console(stderr=stderr, width=None if stream_is_terminal(stderr) else PIPE_WIDTH)


def make_table(*columns: str, **kwargs: Any):
    """A rich table whose cells wrap (fold) rather than end in an ellipsis, also on a narrow terminal."""
    from rich.table import Table

    table = Table(**kwargs)
    for c in columns:
        table.add_column(c, overflow="fold")
    return table


# ------------------------------------------------------------------ JSON results

JSON_HELP = "Write the results as JSON to FILE ('-': standard output, the human summary then goes to stderr)."


def json_option(help: str = JSON_HELP, flag_means_stdout: bool = False) -> Callable:
    """``--json FILE|-`` on a command; ``flag_means_stdout`` keeps a bare ``--json`` (old flag form) working."""
    extra: dict[str, Any] = {"is_flag": False, "flag_value": "-"} if flag_means_stdout else {}
    return click.option("--json", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
                        metavar="FILE|-", help=help, **extra)


def human_to_stderr(json_out: Any) -> bool:
    """With ``--json -`` stdout holds the JSON alone, so the human summary goes to stderr."""
    return json_out is not None and str(json_out) == "-"


def echo(json_out: Any) -> Callable[[str], None]:
    """``click.echo`` to stdout, or to stderr when the JSON goes to stdout."""
    err = human_to_stderr(json_out)
    return lambda msg="": click.echo(msg, err=err)


def write_json(json_out: Any, obj: Any) -> None:
    """The result object as JSON: to stdout for ``-``, else written atomically to the file."""
    from genguard.generators._io import atomic_write_text, json_safe

    if json_out is None:
        return
    text = json.dumps(json_safe(obj), indent=2, allow_nan=False, default=str)  # default: paths and the like
    if str(json_out) == "-":
        click.echo(text)
        return
    atomic_write_text(Path(json_out), text + "\n")


# ------------------------------------------------------------------ warnings of dependencies

def _source(filename: str) -> str:
    """The package a warning came from, from its file's path (site-packages/<package>/...)."""
    parts = Path(filename or "").parts
    for marker in ("site-packages", "dist-packages"):
        if marker in parts:
            i = parts.index(marker)
            if i + 1 < len(parts):
                return parts[i + 1].split(".")[0]
    return "genguard"  # the project itself (an editable install lives outside site-packages), or a script


def _plain(message: Any, category: type, source: str) -> str:
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    if category.__name__ == "ConvergenceWarning":
        return ("a scikit-learn model stopped at its iteration limit before converging; "
                "the figures computed with it are still reported but may be less accurate")
    return text if len(text) <= 300 else text[:297] + "..."


class WarningSink:
    """Shows each warning of a dependency once, as one plain line on stderr (GENGUARD_DEBUG=1: in full)."""

    def __init__(self) -> None:
        self.seen: set[tuple[str, str]] = set()

    def show(self, message, category, filename, lineno, file=None, line=None) -> None:
        if os.environ.get("GENGUARD_DEBUG"):
            click.echo(warnings.formatwarning(message, category, filename, lineno, line), err=True, nl=False)
            return
        source = _source(filename)
        text = _plain(message, category, source)
        key = (source, text)
        if key in self.seen:
            return
        self.seen.add(key)
        prefix = "" if source == "genguard" or text.startswith(source) else f"{source}: "
        click.echo(f"genguard: warning: {prefix}{text}", err=True)

    def install(self) -> None:
        import logging

        # Python's own filters stay (library DeprecationWarnings hidden); show() deduplicates what passes
        warnings.showwarning = self.show
        sink = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                try:
                    sink.show(record.getMessage(), type(record.levelname, (Warning,), {}),
                              f"site-packages/{record.name.split('.')[0]}/x.py", record.lineno)
                except Exception:
                    pass

        # libraries that warn through logging rather than the warnings module
        for name in ("opacus", "transformers", "torch", "sklearn", "datasets", "numexpr"):
            lg = logging.getLogger(name)
            lg.handlers[:] = [_Handler(level=logging.WARNING)]
            lg.propagate = False
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")


# ------------------------------------------------------------------ first-time keys

def _key_files() -> dict[str, tuple[Path, str]]:
    """Every secret key genguard may create on first use, with what a user must know about it."""
    from genguard.guardrails.privacy import signing
    from genguard.guardrails.provenance import keys

    pdir, kdir = signing.key_directory(), keys.default_key_dir()
    return {
        "dp-noise": (pdir / signing.NOISE_KEY_FILE,
                     "the DP noise key (back it up: with --reproducible-dp it is what reproduces a model)"),
        "ledger": (pdir / signing.PRIVATE_KEY_FILE,
                   "the ledger signing key (back it up: privacy ledgers are verified against its public key "
                   f"{signing.PUBLIC_KEY_FILE})"),
        "c2pa": (kdir / keys.LEAF_KEY, "the C2PA signing key and local root CA (give root_ca.pem to verifiers)"),
        "watermark": (kdir / keys.WATERMARK_KEY, "the watermark key (back it up: without it your watermarks "
                                                 "cannot be detected)"),
    }


class KeyWatch:
    """Notes which keys exist before a command and announces, once, the ones it created."""

    def __init__(self) -> None:
        try:
            self.files = _key_files()
        except Exception:  # never let the announcement break a command
            self.files = {}
        self.before = {k: p.exists() for k, (p, _) in self.files.items()}

    def announce(self) -> None:
        created = [(p, what) for k, (p, what) in self.files.items() if not self.before.get(k) and p.exists()]
        if not created:
            return
        click.echo(f"genguard: created new keys in {created[0][0].parent} (private files mode 0600):", err=True)
        for p, what in created:
            click.echo(f"  {p}: {what}", err=True)
