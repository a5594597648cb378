"""The `genguard` command line: one group, each concern's commands registered from genguard.commands.

Exit codes (the contract in ARCHITECTURE.md): 0 success, 1 a policy gate or a
verification failed, 2 bad usage or unreadable input (one line, no traceback;
set GENGUARD_DEBUG=1 for the traceback).
"""
from __future__ import annotations

import importlib
import os
import sys

import click

from genguard import __version__
from genguard.output import HelpGroup

#: Modules that add commands to the group; each defines ``register(group)``.
COMMAND_MODULES = (
    "genguard.commands.pipeline",
    "genguard.commands.provenance",
    "genguard.commands.privacy",
    "genguard.commands.detect",
    "genguard.commands.audit",
    "genguard.commands.review",
    "genguard.commands.marking",
    "genguard.commands.console",
)


@click.group(cls=HelpGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="genguard")
@click.option("--threads", type=click.IntRange(1, 256), default=None, envvar="GENGUARD_THREADS", show_envvar=True,
              help="Torch/BLAS threads [default: OMP_NUM_THREADS when set, else the CPUs available to this process "
                   "minus the 1-minute load average, at least 1 and at most 4: more threads than free cores slow "
                   "a CPU-bound run down].")
def cli(threads: int | None) -> None:
    """genguard: train privately, sample, tag with provenance, detect synthetic images and audit generators.

    Shell completion (bash; zsh and fish alike): eval "$(_GENGUARD_COMPLETE=bash_source genguard)".
    """
    from genguard.output import resolve_threads, set_threads

    n, _ = resolve_threads(threads)
    set_threads(n)


for _name in COMMAND_MODULES:
    try:
        _mod = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        if _exc.name != _name:  # a real missing dependency inside the module: surface it
            raise
        continue
    _mod.register(cli)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group, turning the project's bad-input errors into one line and exit 2."""
    from genguard.errors import one_line, user_error_types
    from genguard.output import KeyWatch, WarningSink

    WarningSink().install()  # each dependency's warning once, one plain line on stderr
    keys = KeyWatch()
    try:
        try:
            rv = cli.main(args=argv, prog_name="genguard", standalone_mode=False)
        finally:
            keys.announce()
    except click.exceptions.Abort:
        click.echo("genguard: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.UsageError as exc:  # one line like every other bad input, with where to look
        where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        click.echo(f"genguard: error: {one_line(exc.format_message())}{where}", err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except user_error_types() as exc:
        if os.environ.get("GENGUARD_DEBUG"):
            raise
        click.echo(f"genguard: error: {one_line(exc)}", err=True)
        sys.exit(2)
    except (RecursionError, MemoryError) as exc:  # input too deep or too big for a reader that missed it
        if os.environ.get("GENGUARD_DEBUG"):
            raise
        what = "nested too deeply" if isinstance(exc, RecursionError) else "too large for the available memory"
        click.echo(f"genguard: error: input {what} ({exc.__class__.__name__})", err=True)
        sys.exit(2)
    except Exception as exc:  # a bug: still one line, never a traceback unless asked for
        if os.environ.get("GENGUARD_DEBUG"):
            raise
        click.echo(f"genguard: internal error: {exc.__class__.__name__}: {one_line(exc)} "
                   "(set GENGUARD_DEBUG=1 for the traceback)", err=True)
        sys.exit(2)
    sys.exit(rv if isinstance(rv, int) else 0)
