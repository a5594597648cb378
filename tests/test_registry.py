"""The generator registry and protocol at the edge: self-describing classes, @register, entry points,
`genguard train --list` / `--quick` for every registered name, messages that say what to add."""
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from genguard import generators
from genguard.cli import main
from genguard.generators import GeneratorError, ProtocolError, TorchGenerator, check_generator, register
from genguard.generators.checks import class_problems
from genguard.generators.registry import unregister

ROOT = Path(__file__).resolve().parents[1]
#: Epoch-like parameters cut down for the parametrised CLI test: it checks the option handling and
#: the defaults for every registered name; the real --quick timings are in the README.
TINY = {"epochs": 1, "steps": 10, "n_iter": 1, "max_iter": 5, "max_windows": 40}


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "genguard", *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "GENGUARD_NO_PROGRESS": "1", **(env or {})})


def _run_main(args):
    with pytest.raises(SystemExit) as exc:
        main(args)
    return exc.value.code


@pytest.fixture
def tiny_quick(monkeypatch):
    """Every registered class's quick settings with one epoch (a test setting, not the product's)."""
    for name in generators.available():
        cls = generators.get_generator_class(name)
        monkeypatch.setattr(cls, "quick_params", {**cls.quick_params, **{k: v for k, v in TINY.items()
                                                                         if k in cls.quick_params}})
        run = {k: {**v, **{t: x for t, x in TINY.items() if t in v}} for k, v in (cls.run_params or {}).items()}
        monkeypatch.setattr(cls, "run_params", run)


@pytest.mark.parametrize("name", generators.available())
def test_train_quick_needs_no_other_option(name, tiny_quick, tmp_path, capsys):
    cls = generators.get_generator_class(name)
    args = ["train", "--generator", name, "--quick", "--out", str(tmp_path)]
    if cls.dp_mechanism == "none":  # refused by default, with the way out named
        assert _run_main(args) == 2
        assert "--no-dp" in capsys.readouterr().err
        args.append("--no-dp")
    assert _run_main(args) == 0
    ledger = json.loads((tmp_path / "model" / "ledger.json").read_text())
    assert ledger["config"]["data"] == cls.default_data  # the generator's own data, not the digits
    assert ledger["private"] is (cls.dp_mechanism != "none")
    assert json.loads((tmp_path / "model" / "config.json").read_text())["generator"] == name
    assert type(generators.load(tmp_path / "model")) is cls


def test_train_list_exists_and_names_every_generator():
    proc = _cli("train", "--help")
    assert proc.returncode == 0 and "--list" in proc.stdout
    proc = _cli("train", "--list")
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines()[1:] if line and not line.startswith(("Add", "("))}
    assert names == set(generators.available()) and "flowmatch" in names
    hmm = next(line for line in proc.stdout.splitlines() if line.startswith("hmm "))
    assert "pydoc" in hmm and "--no-dp" in hmm


def test_text_trains_on_its_own_data_by_default(tmp_path):
    """The outside user's case, end to end in a fresh process: text data, not the digits."""
    proc = _cli("train", "--generator", "hmm", "--quick", "--no-dp", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "pydoc" in proc.stdout
    proc = _cli("train", "--generator", "text", "--data", "digits", "--quick", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "omit --data" in proc.stderr


# -- registration ------------------------------------------------------------------------------------
def _torch_class(**attrs):
    """A complete small TorchGenerator class (the example's PixelGaussian), with attributes replaced."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from own_generator import PixelGaussian
    finally:
        sys.path.pop(0)
    attrs = {"name": "variant", **attrs}
    return type("Variant" + str(len(_made)), (PixelGaussian,), attrs) if _made.append(1) is None else None


_made: list = []


def test_register_adds_and_refuses_a_taken_name():
    cls = register(_torch_class(name="reg-test"))
    try:
        assert "reg-test" in generators.available()
        assert type(generators.make_generator("reg-test")) is cls
        register(cls)  # the same class again (a module reloaded): no change
        with pytest.raises(GeneratorError, match="already taken"):
            register(_torch_class(name="reg-test"))
        with pytest.raises(GeneratorError, match="already taken"):
            register(_torch_class(name="vae"))
    finally:
        unregister("reg-test")


@pytest.mark.parametrize("attrs, fix", [
    ({"name": "generator"}, "set the class attribute name"),
    ({"name": "Bad Name"}, "set the class attribute name"),
    ({"dp_mechanism": "maybe"}, "set dp_mechanism to one of"),
    ({"modality": "video"}, "set modality to one of"),
    ({"quick_params": {"epochz": 1}}, "names epochz, which __init__ does not take"),
    ({"run_params": {"fast": {}}}, "run_params keys must be among"),
    ({"batch_loss": TorchGenerator.batch_loss}, "define batch_loss(self, batch)"),
    ({"private_modules": TorchGenerator.private_modules}, "define private_modules(self)"),
    ({"__init__": lambda self, width, epochs=1: None}, "'width' has no default"),
    ({"__init__": lambda self, **kw: None}, "list every parameter by name"),
])
def test_class_problems_say_what_to_add(attrs, fix):
    cls = _torch_class(**attrs)
    problems = class_problems(cls)
    assert any(fix in p for p in problems), problems
    with pytest.raises(ProtocolError, match="does not follow the Generator protocol"):
        register(cls)


def test_a_sample_only_class_is_told_to_define_fit():
    class BlackBox(generators.Generator):
        name = "black-box"

        def sample(self, n, seed=None, **conditions):
            return generators.Samples(data=np.zeros((n, 8, 8)), modality="image")

    assert any("define fit(self, data" in p for p in class_problems(BlackBox))
    with pytest.raises(NotImplementedError, match=r"BlackBox does not define fit\(\); add fit\(self, data"):
        BlackBox().fit(None)


def test_missing_torch_attributes_are_named_before_training(digits):
    class NoEpochs(_torch_class()):
        def __init__(self, batch_size: int = 64, lr: float = 0.1, seed: int = 0) -> None:
            self.batch_size, self.lr, self.seed = batch_size, lr, seed

    with pytest.raises(GeneratorError, match=r"set self\.epochs in __init__"):
        NoEpochs().fit(digits[0], progress=False)


@pytest.mark.parametrize("private", [False, True])
def test_a_forgotten_mean_names_batch_loss_not_a_tensor_ambiguity(private, digits):
    class PerRecord(_torch_class()):
        def batch_loss(self, batch):
            x, y = batch
            mean, log_std = self.model_(y).chunk(2, dim=1)
            return (0.5 * ((x - mean) / log_std.exp()) ** 2 + log_std).mean(1)  # one loss per record: no .mean()

    from genguard.guardrails.privacy import PrivateTrainer

    trainer = PrivateTrainer(target_epsilon=5.0) if private else None
    with pytest.raises(GeneratorError, match=r"PerRecord\.batch_loss returned a tensor of shape \(\d+,\).*mean"):
        PerRecord(epochs=1).fit(digits[0], trainer=trainer, progress=False)
    with pytest.raises(ProtocolError, match="batch_loss"):
        check_generator(PerRecord(epochs=1), data=digits[0].subset(np.arange(50)))


def test_check_generator_runs_the_behaviour_and_catches_unseeded_sampling(digits):
    small = digits[0].subset(np.arange(100))
    done = check_generator(_torch_class()(epochs=1), data=small)
    assert "save/load round trip" in done and "same seed, same samples" in done

    class Unseeded(_torch_class()):
        def sample(self, n, seed=None, label=None, **conditions):
            return super().sample(n, seed=np.random.randint(1 << 30), label=label)

    with pytest.raises(ProtocolError, match="same outputs for the same seed"):
        check_generator(Unseeded(epochs=1), data=small)
    from genguard.generators.checks import PRIVATE_CHECK

    assert "check_private_training" in PRIVATE_CHECK and "check_private_training" in check_generator.__doc__ + \
        generators.checks.__doc__


# -- loading and entry points --------------------------------------------------------------------------
def test_load_of_an_unregistered_model_says_how_and_imports_nothing(digits, tmp_path):
    cls = register(_torch_class(name="gone"))
    cls(epochs=1).fit(digits[0], progress=False).save(tmp_path / "m")
    unregister("gone")
    # the saved class path points at a module that would run code on import: it must never be imported
    (tmp_path / "evil_mod.py").write_text("import pathlib; pathlib.Path(__file__).with_name('RAN').write_text('x')\n")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["class"] = "evil_mod.Variant"  # what an attacker could write
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(GeneratorError) as exc:
            generators.load(tmp_path / "m")
    finally:
        sys.path.remove(str(tmp_path))
    msg = str(exc.value)
    assert "'gone' model" in msg and "not registered" in msg and "@genguard.generators.register" in msg
    assert '"genguard.generators"' in msg and 'gone = "evil_mod:Variant"' in msg
    assert "evil_mod" not in sys.modules and not (tmp_path / "RAN").exists()


def _plugin(tmp_path, body, ep_line):
    pkg = tmp_path / "site"
    (pkg / "myplug").mkdir(parents=True)
    (pkg / "myplug" / "__init__.py").write_text(textwrap.dedent(body))
    info = pkg / "myplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[genguard.generators]\n{ep_line}\n")
    return {"PYTHONPATH": str(pkg)}


def test_an_installed_entry_point_is_listed_trained_and_loaded(tmp_path):
    env = _plugin(tmp_path, """
        from genguard.generators.gmm import GaussianMixtureGenerator

        class TinyMixture(GaussianMixtureGenerator):
            '''A plug-in's mixture (one component per class).'''
            name = "tiny-mixture"
            quick_params = {"n_components": 1, "max_iter": 5}
        """, "tiny-mixture = myplug:TinyMixture")
    proc = _cli("train", "--list", env=env)
    assert proc.returncode == 0 and "tiny-mixture" in proc.stdout and "A plug-in's mixture" in proc.stdout
    proc = _cli("train", "--generator", "tiny-mixture", "--quick", "--no-dp", "--out", str(tmp_path / "run"), env=env)
    assert proc.returncode == 0, proc.stderr
    proc = _cli("sample", "--model", str(tmp_path / "run"), "-n", "3", "--out", str(tmp_path / "s"), "--no-tag", env=env)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "s").glob("*.png"))) == 3
    # without the plug-in installed the same model folder is refused, with the way to register it
    proc = _cli("sample", "--model", str(tmp_path / "run"), "-n", "3", "--out", str(tmp_path / "s2"))
    assert proc.returncode == 2 and "not registered" in proc.stderr and "Traceback" not in proc.stderr


def test_a_broken_entry_point_breaks_nothing_else(tmp_path):
    env = _plugin(tmp_path, "raise ImportError('needs a missing library')\n", "broken = myplug:Nope\nvae = myplug:Fake")
    proc = _cli("train", "--list", env=env)
    assert proc.returncode == 0 and "vae" in proc.stdout
    assert "(not loadable) broken" in proc.stdout and "needs a missing library" in proc.stdout
    # a plug-in cannot take over a built-in name: it is ignored, and the listing says so
    assert "(not loadable) vae: entry point vae = 'myplug:Fake' of distribution myplug is ignored" in proc.stdout
    proc = _cli("train", "--generator", "broken", "--quick", "--out", str(tmp_path / "o"), env=env)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "failed to import" in lines[0]


# -- tagging without a ledger --------------------------------------------------------------------------
def test_outputs_of_a_model_without_ledger_are_tagged_under_a_derived_run_id(digits, tmp_path):
    from genguard.pipeline import sample_step

    gen = generators.make_generator("gmm", n_components=1, max_iter=5).fit(digits[0], progress=False)
    gen.save(tmp_path / "m")  # no ledger: not trained by genguard's pipeline
    weights = (tmp_path / "m" / "weights.safetensors").read_bytes()
    _, paths, prov = sample_step(gen, 4, tmp_path / "s", 0, None, progress=False, model_dir=tmp_path / "m")
    assert prov["claim"]["run_id"] == "model-" + hashlib.sha256(weights).hexdigest()[:16]
    assert prov["intact_rate"] == 1.0 and prov["claim"]["private"] is False
    _, paths, prov = sample_step(gen, 4, tmp_path / "s2", 0, None, progress=False)
    files = hashlib.sha256(b"".join(hashlib.sha256(p.read_bytes()).hexdigest().encode() for p in sorted(paths)))
    # derived from the files before tagging: recompute from a fresh, untagged sampling of the same seed
    from genguard.generators.data import write_samples

    fresh = write_samples(gen.sample(4, seed=0), tmp_path / "s3")
    expect = hashlib.sha256(b"".join(hashlib.sha256(p.read_bytes()).hexdigest().encode() for p in sorted(fresh)))
    assert prov["claim"]["run_id"] == "outputs-" + expect.hexdigest()[:16] != "outputs-" + files.hexdigest()[:16]


# -- the audit's sample-only membership inference ------------------------------------------------------
def test_audit_runs_membership_inference_when_a_holdout_is_given(digits):
    from genguard.audits import ReleaseAudit

    train, holdout = digits
    copies = generators.Samples(data=train.x.copy(), modality="image",
                                conditions={"label": train.groups["label"]}, metadata={})
    report = ReleaseAudit(seed=0).run(copies, train, holdout, progress=False).data
    mi = report["privacy"]["membership_inference"]
    assert mi["gan_leaks"]["auc"] > 0.95 and mi["max_auc"] > 0.95  # a generator that copies is caught
    report = ReleaseAudit(seed=0).run(copies, train, None, progress=False).data
    assert report["privacy"]["membership_inference"]["value"] is None
    assert "holdout" in report["privacy"]["membership_inference"]["reason"]


def test_the_readme_example_runs(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "own_generator.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "GENGUARD_NO_PROGRESS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert 0 < out["epsilon"] <= 5.0 and out["intact_rate"] == 1.0 and out["run_id"].startswith("model-")
    assert "save/load round trip" in out["checks"]
    assert out["black_box_near_duplicates"] > 0.9  # the memorising black box is caught
    assert (tmp_path / "audit" / "report.json").is_file()
