"""`genguard run --generator wavenet --quick` end to end, on a small folder of spoken-digit WAV files."""
import json
import os
import subprocess
import sys

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("pystoi")


def test_wavenet_run_quick_on_a_wav_folder(tmp_path):
    from genguard.generators.audio_data import DIGIT_WORDS, load_spoken_digits, write_wav

    d = load_spoken_digits(per_class=4, seed=5)
    data = tmp_path / "wavs"
    for i, (clip, label) in enumerate(zip(d.x, d.groups["label"])):
        (data / DIGIT_WORDS[label]).mkdir(parents=True, exist_ok=True)
        write_wav(data / DIGIT_WORDS[label] / f"{i}.wav", clip, 16_000)
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "genguard", "run", "--generator", "wavenet", "--quick", "-n", "30",
                           "--data", str(data), "--out", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]  # 1: a release gate failed, which a tiny run may
    report = json.loads((out / "report.json").read_text())
    assert report["generator"]["modality"] == "audio" and report["generator"]["n_samples"] == 30
    assert 0 < report["privacy"]["epsilon"] <= 10.0 and report["privacy"]["verification"]["consistent"] is True
    assert "one audio clip" in json.loads((out / "model" / "ledger.json").read_text())["privacy_unit"]
    wavs = sorted((out / "samples").glob("*.wav"))
    assert len(wavs) == 30
    assert report["provenance"]["intact_rate"] == 1.0  # every WAV's signed sidecar verifies
    assert report["fidelity"]["fad_local"]["value"] is not None and report["fidelity"]["tstr"]["value"] is not None
    assert report["detection"]["code"] == "NOT_APPLICABLE_MODALITY"
    assert "<audio controls" in (out / "report.html").read_text()
    # a changed sample no longer verifies
    raw = bytearray(wavs[0].read_bytes())
    raw[-1] ^= 0xFF
    wavs[0].write_bytes(bytes(raw))
    v = subprocess.run([sys.executable, "-m", "genguard", "verify", str(wavs[0])], capture_output=True, text=True,
                       timeout=300)
    assert v.returncode == 1, v.stdout + v.stderr
