"""End to end: `genguard run --quick` in a temporary folder, and the CLI's bad-input contract."""
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from genguard.cli import main


def _cli(*args, cwd=None):
    """Run the CLI in a subprocess, as a user would (exit codes and stderr included)."""
    return subprocess.run([sys.executable, "-m", "genguard", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def _png_chunks(data: bytes):
    import struct

    pos, out = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        out.append((data[pos + 4:pos + 8], data[pos:pos + 12 + length]))
        pos += 12 + length
    return out


def _replace_png_pixels(original: bytes, pixels: np.ndarray) -> bytes:
    """The original PNG with its IDAT chunks swapped for those of ``pixels``; every other chunk kept."""
    import io

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    new_idat = b"".join(raw for kind, raw in _png_chunks(buf.getvalue()) if kind == b"IDAT")
    out, done = [original[:8]], False
    for kind, raw in _png_chunks(original):
        if kind == b"IDAT":
            if not done:
                out.append(new_idat)
                done = True
            continue
        out.append(raw)
    return b"".join(out)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = _cli("run", "--quick", "--out", str(out), "--epsilon", "8", "--seed", "3")
    return out, proc


def test_run_quick_writes_everything(quick_run):
    out, proc = quick_run
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    for key in ("generator", "privacy", "fidelity", "bias", "memorization", "provenance", "detection", "gates"):
        assert key in report, key
    assert 0 < report["privacy"]["epsilon"] <= 8.0
    assert (out / "report.html").stat().st_size > 10_000
    assert len(list((out / "samples").glob("*.png"))) == 200
    for f in ("weights.safetensors", "config.json", "ledger.json"):
        assert (out / "model" / f).is_file()
    ledger = json.loads((out / "model" / "ledger.json").read_text())
    assert ledger["epsilon"] == report["privacy"]["epsilon"] and ledger["private"] is True
    # the report carries the independent checks: ledger re-verified, ε recomputed, membership inference
    check = report["privacy"]["verification"]
    assert check["consistent"] is True
    assert set(check["recomputed"]) == {"prv", "pld", "analytic"}  # a full-batch release: its exact curve too
    assert max(check["recomputed"].values()) <= 8.0 * 1.01
    assert check["recomputed"]["analytic"] <= check["recomputed"]["pld"] * (1 + 1e-9)
    assert 0.0 <= report["privacy"]["membership_inference"]["max_auc"] <= 1.0
    # a section that was not computed is present with a null value and a reason
    assert report["detection"]["value"] is None and report["detection"]["reason"]
    assert "genguard run" in proc.stdout


def test_every_sample_verifies_and_a_changed_pixel_is_invalid(quick_run, tmp_path):
    out, _ = quick_run
    files = sorted((out / "samples").glob("*.png"))[:5]
    proc = _cli("verify", *map(str, files), "--json", str(tmp_path / "v.json"))
    assert proc.returncode == 0, proc.stderr
    results = json.loads((tmp_path / "v.json").read_text())["files"]
    assert [r["manifest"]["state"] for r in results] == ["Trusted"] * 5  # signed by this machine's genguard root
    run_id = json.loads((out / "model" / "ledger.json").read_text())["run_id"]
    assert all(r["run_id"] == run_id for r in results)

    # change one pixel of a tagged sample and keep its C2PA chunk: re-encode only the pixel data
    victim = tmp_path / "victim.png"
    arr = np.array(Image.open(files[0]))
    arr[0, 0] = 255 - arr[0, 0]
    victim.write_bytes(_replace_png_pixels(files[0].read_bytes(), arr))
    assert np.array(Image.open(victim))[0, 0] == arr[0, 0]
    proc = _cli("verify", str(victim), str(files[1]), "--json", str(tmp_path / "v2.json"))
    assert proc.returncode == 1
    results = json.loads((tmp_path / "v2.json").read_text())["files"]
    assert results[0]["manifest"]["state"] == "Invalid" and results[1]["manifest"]["state"] == "Trusted"


def test_png_without_manifest_is_missing_not_an_error(tmp_path):
    p = tmp_path / "plain.png"
    Image.new("L", (16, 16), 128).save(p)
    proc = _cli("verify", str(p), "--json", str(tmp_path / "v.json"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "v.json").read_text())["files"][0]["manifest"]["state"] == "Missing"


def test_same_seed_same_report_with_keyed_dp(tmp_path):
    """Same seed, same report holds for DP runs only with the keyed opt-in (by default DP's batches and
    noise are secret and fresh per run, so the weights, and the report, differ)."""
    from genguard.pipeline import RunConfig, run

    reports = []
    for _ in range(2):  # the same folder twice: the second run replaces the first one's samples
        res = run(RunConfig(out=tmp_path, epsilon=5.0, quick=True, seed=11, n_samples=100, reproducible_dp=True),
                  progress=False)
        data = json.loads(json.dumps(res.report.data, default=str))
        # what may differ: the report's own timestamp, and the hash of the ledger, which records its creation time
        data.pop("meta", None)
        data["provenance"]["claim"].pop("ledger_sha256")
        reports.append(json.dumps(data, sort_keys=True, default=str))
    assert reports[0] == reports[1]


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--epsilon", "0", "--quick"], "epsilon"),
        (["run", "--epsilon", "-3", "--quick"], "epsilon"),
        (["run", "--generator", "nope", "--quick"], "unknown generator 'nope'"),
        (["run", "--generator", "gmm", "--quick"], "no differentially private training"),
        (["run", "--delta", "0.5", "--quick"], "must lie in (0, 1/n)"),  # the default DP-MERF's own check
        (["run", "--generator", "vae", "--delta", "0.5", "--quick"], "not below 1/n"),  # DP-SGD's accountant
        (["train", "--generator", "vae", "--data", "EMPTY", "--quick"], "no images found"),
        (["train", "--generator", "vae", "--data", "NOTIMAGES", "--quick"], "no images found"),
        (["train", "--generator", "vae", "--data", "CORRUPT", "--quick"], "broken.png"),
        (["sample", "--model", "MISSING", "-n", "3"], "config.json missing"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "NOTIMAGES").mkdir()
    (tmp_path / "NOTIMAGES" / "readme.txt").write_text("hello")
    (tmp_path / "CORRUPT").mkdir()
    (tmp_path / "CORRUPT" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "MISSING").mkdir()
    args = [a if a not in ("EMPTY", "NOTIMAGES", "CORRUPT", "MISSING") else str(tmp_path / a) for a in args]
    proc = _cli(*args, "--out", str(tmp_path / "out"))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_unknown_option_is_usage_error():
    with pytest.raises(SystemExit) as exc:
        main(["run", "--no-such-flag"])
    assert exc.value.code == 2


def test_tabular_run_tags_the_table_and_audits_fairness(tmp_path):
    from genguard.pipeline import RunConfig, run

    res = run(RunConfig(out=tmp_path, generator="tabular", epsilon=10.0, quick=True, n_samples=300), progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["generator"]["modality"] == "tabular" and report["generator"]["n_samples"] == 300
    assert 0 < report["privacy"]["epsilon"] <= 10.0 and report["privacy"]["verification"]["consistent"]
    assert set(report["bias"]["groups"]) == {"sex=1", "sex=2"}
    csv = tmp_path / "samples" / "samples.csv"
    assert csv.is_file() and (tmp_path / "samples" / "samples.c2pa").is_file()  # C2PA 2.2 §15.5.3.1 location
    assert report["provenance"]["verdicts"] == {"intact": 1}
    # editing the table breaks its signed record
    csv.write_text(csv.read_text().replace("\n", "\n9", 1))
    proc = _cli("verify", str(csv), "--json", str(tmp_path / "v.json"))
    assert proc.returncode == 1
    assert json.loads((tmp_path / "v.json").read_text())["files"][0]["verdict"] == "tampered"
    assert res.timings["total_s"] > 0
