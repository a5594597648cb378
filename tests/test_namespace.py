"""The installed distribution puts one import package at the top of site-packages: genguard."""
import importlib
import pathlib

import pytest


def test_the_built_wheel_holds_only_the_genguard_package(tmp_path):
    """Built as pip would install it: one top-level package, the four folders inside it."""
    import subprocess
    import sys
    import zipfile

    root = pathlib.Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(tmp_path), str(root)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("genguard-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"genguard"}, top
    for inner in ("genguard/generators/vae.py", "genguard/guardrails/privacy/trainer.py",
                  "genguard/detectors/default_detector.safetensors", "genguard/audits/release.py"):
        assert inner in names, inner
    (top_level,) = [n for n in names if n.endswith(".dist-info/top_level.txt")]
    assert zipfile.ZipFile(wheel).read(top_level).decode().split() == ["genguard"]


@pytest.mark.parametrize("name", ["generators", "guardrails", "detectors", "audits"])
def test_subpackages_live_under_genguard(name):
    mod = importlib.import_module(f"genguard.{name}")
    assert mod.__name__ == f"genguard.{name}"
    folder = pathlib.Path(mod.__file__).parent.name
    assert folder == name


def test_bare_names_are_not_importable_outside_the_checkout(tmp_path):
    """From another folder, none of the four old top-level names resolves to our code."""
    import subprocess
    import sys

    code = (
        "import importlib.util, sys\n"
        "for n in ('generators', 'guardrails', 'detectors', 'audits'):\n"
        "    s = importlib.util.find_spec(n)\n"
        "    if s is not None and str(s.origin or '').startswith(sys.argv[1]):\n"
        "        sys.exit(n)\n"
    )
    import genguard.generators

    root = str(pathlib.Path(genguard.generators.__file__).resolve().parents[1])
    r = subprocess.run([sys.executable, "-c", code, root], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
