"""`genguard train` / `sample` / `verify` of a WaveNet on a small folder of spoken-digit WAV files."""
import json
import os
import subprocess
import sys

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("espeakng_loader")
    pytest.importorskip("pystoi")


def test_wavenet_train_sample_verify_on_a_wav_folder(tmp_path):
    from genguard.generators.audio_data import DIGIT_WORDS, load_spoken_digits, write_wav

    d = load_spoken_digits(per_class=4, seed=5)
    data = tmp_path / "wavs"
    for i, (clip, label) in enumerate(zip(d.x, d.groups["label"])):
        (data / DIGIT_WORDS[label]).mkdir(parents=True, exist_ok=True)
        write_wav(data / DIGIT_WORDS[label] / f"{i}.wav", clip, 16_000)
    out = tmp_path / "run"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "genguard", *args], capture_output=True, text=True, timeout=600)

    proc = cli("train", "--generator", "wavenet", "--quick", "--data", str(data), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    ledger = json.loads((out / "model" / "ledger.json").read_text())
    assert ledger["private"] and 0 < ledger["epsilon"] <= 10.0 and "one audio clip" in ledger["privacy_unit"]
    assert "sub-folder names" in json.dumps(ledger)  # the class names come from the data: the ledger says so
    proc = cli("sample", "--model", str(out / "model"), "-n", "6", "--label", "3", "--out", str(out / "samples"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    wavs = sorted((out / "samples").glob("*.wav"))
    assert len(wavs) == 6 and all("_label3" in w.name for w in wavs)
    v = cli("verify", *map(str, wavs), "--json", str(tmp_path / "v.json"))
    assert v.returncode == 0, v.stdout + v.stderr  # the signed manifest binds each WAV
    # the --quick model's 1 s clips at 8 kHz are long enough, and at a rate high enough, to be marked (at 4 kHz or
    # 0.8 s tagging would skip them: markable False). Whether the mark is then found depends on the clip having
    # sound: this DP model's clips are near-silence, where it is not (README, Audio)
    from genguard.guardrails.provenance.wavfile import read_wav

    recs = json.loads((tmp_path / "v.json").read_text())["files"]
    assert len(recs) == 6 and all(r["watermark"]["applicable"] and "markable" not in r["watermark"] for r in recs), \
        [r["watermark"] for r in recs]
    assert {(read_wav(w.read_bytes()).rate, read_wav(w.read_bytes()).duration) for w in wavs} == {(8000, 1.0)}
    raw = bytearray(wavs[0].read_bytes())
    raw[-1] ^= 0xFF
    wavs[0].write_bytes(bytes(raw))
    v = cli("verify", str(wavs[0]))
    assert v.returncode == 1, v.stdout + v.stderr  # a changed sample no longer verifies
