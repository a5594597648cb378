"""The CLI's surface: help everywhere, --json FILE|-, untruncated piped tables, thread default, warnings, new keys."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import click
import pytest
from click.testing import CliRunner

from genguard.cli import cli
from genguard.output import WarningSink, default_threads, resolve_threads


def _walk(cmd: click.Command, path: str = "genguard"):
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            yield from _walk(sub, f"{path} {name}")


def test_every_command_and_option_has_help():
    missing = []
    for path, cmd in _walk(cli):
        if not (cmd.help or cmd.short_help or "").strip():
            missing.append(f"{path}: command without help")
        for p in cmd.params:
            if isinstance(p, click.Option) and not (p.help or "").strip():
                missing.append(f"{path} {p.opts[0]}: option without help")
    assert not missing, "\n".join(missing)


def test_commands_that_produce_results_take_json_file_or_dash():
    by_path = dict(_walk(cli))
    for path in ("genguard run", "genguard train", "genguard sample", "genguard tag", "genguard verify",
                 "genguard audit", "genguard detect", "genguard privacy epsilon", "genguard privacy verify",
                 "genguard privacy audit", "genguard detector eval"):
        opt = next((p for p in by_path[path].params if "--json" in getattr(p, "opts", ())), None)
        assert opt is not None, f"{path} has no --json"
        assert not opt.is_flag, f"{path}: --json must take FILE or '-'"
        assert getattr(opt.type, "allow_dash", False), f"{path}: --json does not accept '-'"


def test_detector_train_needs_no_out():
    opt = next(p for p in dict(_walk(cli))["genguard detector train"].params if p.name == "out")
    assert not opt.required and opt.default is not None


def test_privacy_epsilon_json_forms(tmp_path):
    args = ["privacy", "epsilon", "-q", "0.01", "-s", "1.0", "-t", "100"]
    r = CliRunner().invoke(cli, args + ["--json"])  # the old flag form still prints JSON alone
    assert r.exit_code == 0, r.output
    bare = json.loads(r.stdout)
    r = CliRunner().invoke(cli, args + ["--json", "-"])
    assert json.loads(r.stdout) == bare
    target = tmp_path / "eps.json"
    r = CliRunner().invoke(cli, args + ["--json", str(target)])
    assert r.exit_code == 0 and "epsilon =" in r.stdout  # the summary, and the file beside it
    assert json.loads(target.read_text())["epsilon"] == pytest.approx(bare["epsilon"])


def test_default_threads_never_oversubscribes():
    assert default_threads(cpus=2, load=0.0) == 2
    assert default_threads(cpus=2, load=1.2) == 1  # one core busy elsewhere: one thread
    assert default_threads(cpus=2, load=7.0) == 1
    assert default_threads(cpus=64, load=0.0) == 4
    assert default_threads(cpus=64, load=61.0) == 3
    assert resolve_threads(3) == (3, "--threads")


def test_resolve_threads_respects_omp(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_threads(None) == (1, "OMP_NUM_THREADS")
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert 1 <= resolve_threads(None)[0] <= 4


def test_dependency_warning_shown_once_in_plain_words(capsys):
    sink = WarningSink()
    cls = type("ConvergenceWarning", (UserWarning,), {})
    for _ in range(3):
        sink.show(cls("lbfgs failed to converge (status=1):\nSTOP: TOTAL NO. of ITERATIONS"), cls,
                  "/x/site-packages/sklearn/linear_model/_logistic.py", 469)
    sink.show("Secure RNG turned off.", UserWarning, "/x/site-packages/opacus/privacy_engine.py", 1)
    sink.show("Secure RNG turned off.", UserWarning, "/x/site-packages/opacus/privacy_engine.py", 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert "did not converge" in err[0] or "before converging" in err[0]
    assert "STOP" not in err[0] and "lbfgs" not in err[0]
    assert err[1].startswith("genguard: warning: opacus: ")


def _genguard(args, env, cwd):
    return subprocess.run([sys.executable, "-m", "genguard", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_piped_tables_keep_long_paths_whole_and_verify_takes_folders(tmp_path):
    """Output to a pipe (a log, CI) is never cut to `inbox/astr…`: the whole path is in the table."""
    deep = tmp_path / "inbox" / ("astronomy-observations-from-the-southern-hemisphere-" * 3) / "night"
    deep.mkdir(parents=True)
    names = [deep / f"{'a' * 60}-{i}.txt" for i in range(2)]
    for p in names:
        p.write_text("plain text with no provenance\n")
    env = dict(os.environ, GENGUARD_HOME=str(tmp_path / "home"), GENGUARD_NO_PROGRESS="1", COLUMNS="80")
    r = _genguard(["verify", str(tmp_path / "inbox")], env, tmp_path)  # a folder, as detect and review take
    assert r.returncode == 0, r.stderr
    for p in names:
        assert str(p) in r.stdout.replace("\n", ""), r.stdout
        assert str(p) in r.stdout, "the path was folded over lines or cut"
    assert "…" not in r.stdout


def test_first_key_creation_is_announced_once(tmp_path):
    f = tmp_path / "note.txt"
    f.write_text("hello\n")
    env = dict(os.environ, GENGUARD_HOME=str(tmp_path / "home"), GENGUARD_NO_PROGRESS="1")
    r = _genguard(["tag", str(f), "--no-watermark", "--json", "-"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["files"][0]["file"] == str(f)  # JSON alone on stdout
    assert "created new keys in" in r.stderr and str(tmp_path / "home" / "keys") in r.stderr
    assert "back it up" in r.stderr or "give root_ca.pem" in r.stderr
    r = _genguard(["tag", str(f), "--no-watermark"], env, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "created new keys" not in r.stderr


def test_keys_init_refusal_names_the_flag(tmp_path):
    d = tmp_path / "k"
    assert CliRunner().invoke(cli, ["keys", "init", "--dir", str(d)]).exit_code == 0
    r = CliRunner().invoke(cli, ["keys", "init", "--dir", str(d)])
    assert r.exit_code != 0
    msg = str(r.exception) + r.output
    assert "--force" in msg and "use overwrite" not in msg


def test_sample_summary_is_words_not_a_dict():
    from genguard.commands.pipeline import verdict_words

    assert verdict_words({"error": 1, "intact": 9}) == "9 intact, 1 error"
    assert "{" not in verdict_words({"intact": 3})


def test_group_help_lists_each_command_without_cutting_it():
    for path, cmd in _walk(cli):
        if not isinstance(cmd, click.Group):
            continue
        r = CliRunner().invoke(cli, path.split()[1:] + ["--help"], terminal_width=80)
        assert r.exit_code == 0, r.output
        listing = r.output.split("Commands:", 1)[1]
        assert "..." not in listing, f"{path} --help cuts a command's summary:\n{listing}"
        for name, sub in cmd.commands.items():
            first = (sub.help or "").split(".")[0].split()
            assert " ".join(first[-3:]) in " ".join(listing.split()), f"{path} {name}: summary cut"


def test_jsonable_is_strict_for_configs_and_lenient_for_reports():
    import math
    from pathlib import Path

    import numpy as np

    from genguard.generators._io import jsonable

    out = jsonable({"a": np.float32(1.5), "b": (1, Path("/x")), "c": math.nan, "d": np.arange(3)})
    assert out == {"a": 1.5, "b": [1, "/x"], "c": None, "d": [0, 1, 2]}
    fn = print
    assert jsonable({"f": fn})["f"] is fn  # json.dumps still refuses it: a config never saves "<built-in ...>"
    with pytest.raises(TypeError):
        json.dumps(jsonable({"f": fn}))
    assert jsonable({"f": fn}, strict=False)["f"].startswith("<built-in")


def test_thread_choice_reaches_torch_imported_later():
    code = ("from genguard.output import set_threads; set_threads(1); import torch; "
            "print(torch.get_num_threads())")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"


def test_generator_option_is_a_registry_choice_with_completion(tmp_path):
    """`--generator` is checked against the registry when parsed (before any work, one line, exit 2) and
    completes from it, so a generator registered by a user's code is a choice like the built-in ones."""
    env = dict(os.environ, GENGUARD_NO_PROGRESS="1", _GENGUARD_COMPLETE="bash_complete",
               COMP_WORDS="genguard train --generator fl", COMP_CWORD="3")
    proc = subprocess.run([sys.executable, "-m", "genguard"], env=env, capture_output=True, text=True, timeout=120)
    assert sorted(l.split(",", 1)[1] for l in proc.stdout.splitlines()) == ["flow", "flowmatch"]

    out = tmp_path / "never"
    proc = subprocess.run([sys.executable, "-m", "genguard", "train", "--generator", "flw", "--out", str(out)],
                          env=dict(os.environ, GENGUARD_NO_PROGRESS="1"), capture_output=True, text=True, timeout=120)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "unknown generator 'flw'" in lines[0] and "flowmatch" in lines[0] and "--help" in lines[0]
    assert not out.exists()  # refused at parse time: nothing trained, nothing written

    from genguard.commands.pipeline import GeneratorName
    from genguard.generators import register
    from genguard.generators.gmm import GaussianMixtureGenerator

    @register
    class MyMixture(GaussianMixtureGenerator):
        name = "my-mixture-for-choice-test"

    try:
        assert GeneratorName().convert("my-mixture-for-choice-test", None, None) == "my-mixture-for-choice-test"
    finally:
        from genguard.generators import registry
        registry._classes.pop("my-mixture-for-choice-test", None)


def test_usage_errors_are_one_line_with_a_pointer_to_help():
    proc = subprocess.run([sys.executable, "-m", "genguard", "run", "--no-such-flag"], capture_output=True, text=True,
                          env=dict(os.environ, GENGUARD_NO_PROGRESS="1"), timeout=120)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "No such option '--no-such-flag'" in lines[0] and "genguard run --help" in lines[0]
