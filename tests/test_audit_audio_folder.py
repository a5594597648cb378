"""`genguard audit` of a folder of WAV files against a folder of real WAVs: audio sections, gates, bad files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from genguard.cli import main
from genguard.generators.audio_data import write_wav

RATE = 8000


def _tone(freq: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(RATE) / RATE
    return (0.4 * np.sin(2 * np.pi * freq * (1 + 0.03 * rng.standard_normal()) * t)
            + 0.02 * rng.standard_normal(RATE)).astype(np.float32)


def _folder(root, per_class, rng, classes=("low", "high"), freqs=(300.0, 1800.0)):
    for name, f in zip(classes, freqs):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            write_wav(root / name / f"{i}.wav", _tone(f, rng), RATE)


def test_audit_wav_folder_runs_audio_sections_and_skips_bad_files(tmp_path, capsys):
    rng = np.random.default_rng(0)
    real, gen = tmp_path / "real", tmp_path / "gen"
    _folder(real, 30, rng)
    _folder(gen, 12, rng)
    (gen / "low" / "forged.wav").write_bytes(b"RIFF\xff\xff\xff\x00WAVEfmt junk")
    # a listening test's results as the console exports them (`/studies/N/results.json` of an audio MOS study)
    from genguard.audits import human

    ratings = [(r, f"{src}{i}", src, float(score + (r == "b"))) for r in ("a", "b")
               for src, score in (("real", 4), ("generated", 2)) for i in range(4)]
    study = {"human": {"study": '<script>alert("study")</script>', "kind": "mos", "media": "audio",
                       "raters_excluded_by_attention_checks": 1, "mos": human.mos(ratings), "gates": [],
                       "passed": True}}
    (tmp_path / "results.json").write_text(json.dumps(study))
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "--samples", str(gen), "--reference", str(real), "--out", str(tmp_path / "r"),
              "--human", str(tmp_path / "results.json")])
    out = capsys.readouterr()
    output = out.out + out.err
    assert exit_.value.code == 1, output  # not private: the privacy gate fails
    assert "forged.wav" in output
    data = json.loads((tmp_path / "r" / "report.json").read_text())
    assert data["generator"]["n_samples"] == 24
    assert data["generator"]["skipped_files"] == 1
    assert data["fidelity"]["fad_local"]["value"] is not None
    assert data["fidelity"]["tstr"]["value"] > 0.8  # two well-separated tone classes
    assert data["human"]["media"] == "audio" and data["human"]["mos"]["generated_minus_real"]["difference"] == -2.0
    assert "human MOS: generated − real" in output
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<audio" in page
    assert "Human evaluation: &lt;script&gt;" in page and '<script>alert("study")' not in page
    assert "A listening test on audio clips. 1 rater(s) excluded" in page


def test_audit_wav_subfolder_outside_reference_classes_is_refused(tmp_path, capsys):
    rng = np.random.default_rng(1)
    real, gen = tmp_path / "real", tmp_path / "gen"
    _folder(real, 5, rng)
    _folder(gen, 2, rng, classes=("low", "middle"))
    with pytest.raises(SystemExit) as exit_:
        main(["audit", "--samples", str(gen), "--reference", str(real), "--out", str(tmp_path / "r")])
    out = capsys.readouterr()
    output = out.out + out.err
    assert exit_.value.code == 2
    assert "middle" in output
