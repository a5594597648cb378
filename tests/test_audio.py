"""Audio: the spoken-digit data, hostile WAV files, WaveNet (causality, sampling, save/load, DP) and the audio audit."""
import os
import struct
import wave

import numpy as np
import pytest

from genguard.generators.base import Dataset, GeneratorError

espeak = pytest.importorskip("espeakng_loader") if not os.environ.get("CI") else __import__("espeakng_loader")
pystoi = pytest.importorskip("pystoi") if not os.environ.get("CI") else __import__("pystoi")

from genguard.generators import audio_data as ad  # noqa: E402
from genguard.generators.wavenet import WaveNet, mu_law_decode, mu_law_encode  # noqa: E402

TINY = dict(sample_rate=2000, clip_seconds=0.5, channels=8, hidden=16, n_layers=4, dilation_cycle=4, crop=64,
            epochs=2, batch_size=16, lr=3e-3)


@pytest.fixture(scope="module")
def small_digits():
    """Four clips per digit (40), split 32 / 8."""
    from genguard.generators.data import train_holdout

    return train_holdout(ad.load_spoken_digits(per_class=4, seed=7))


@pytest.fixture(scope="module")
def tiny_wavenet(small_digits):
    train, _ = small_digits
    return WaveNet(**TINY, seed=1).fit(train, progress=False)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------
def test_spoken_digits_are_deterministic_and_shaped():
    a, ya, sa = ad.synthesise_digits(per_class=2, seed=3)
    b, yb, _ = ad.synthesise_digits(per_class=2, seed=3)
    c, _, sc = ad.synthesise_digits(per_class=2, seed=4)
    assert a.shape == (20, 16_000) and a.dtype == np.float32
    assert np.array_equal(a, b) and np.array_equal(ya, yb)
    assert not np.array_equal(a, c) and sa != sc
    assert np.bincount(ya).tolist() == [2] * 10
    assert np.abs(a).max() <= 1.0 and (np.abs(a).max(axis=1) > 0.3).all()  # every clip is speech, not silence
    assert len({s["voice"] for s in sa}) > 5  # several voices and variants


def test_spoken_digits_cache_is_written_once_and_a_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("GENGUARD_HOME", str(tmp_path))
    d1 = ad.load_spoken_digits(per_class=1, seed=11)
    files = list((tmp_path / "data").glob("spoken_digits-*.npz"))
    assert len(files) == 1 and d1.modality == "audio" and d1.metadata["sample_rate"] == 16_000
    assert not list((tmp_path / "data").glob("*.tmp*"))  # atomic write leaves no temporary file
    assert np.array_equal(ad.load_spoken_digits(per_class=1, seed=11).x, d1.x)
    files[0].write_bytes(b"PK\x03\x04 not a zip")
    assert np.array_equal(ad.load_spoken_digits(per_class=1, seed=11).x, d1.x)


# --------------------------------------------------------------------------------------------
# WAV files
# --------------------------------------------------------------------------------------------
def _wav(path, x, rate=16_000, width=2, channels=1):
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 2:
            w.writeframes((np.asarray(x) * 32767).astype("<i2").tobytes())
        else:
            w.writeframes(bytes(len(x) * width * channels))
    return path


def test_wav_round_trip_resamples_and_reads_stereo(tmp_path):
    t = np.arange(8000) / 8000
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    ad.write_wav(tmp_path / "a.wav", x, 8000)
    y, rate = ad.read_wav(tmp_path / "a.wav")
    assert rate == 8000 and np.abs(y - x).max() < 1e-3
    z, rate = ad.read_wav(tmp_path / "a.wav", sample_rate=16_000)  # wrong rate: resampled, not refused
    assert rate == 16_000 and len(z) == 16_000 and np.isfinite(z).all()
    st = np.stack([x, -x], axis=1).reshape(-1)
    _wav(tmp_path / "s.wav", st, rate=8000, channels=2)
    m, _ = ad.read_wav(tmp_path / "s.wav")
    assert len(m) == 8000 and np.abs(m).max() < 1e-3  # channels averaged: x and -x cancel


@pytest.mark.parametrize("damage, match", [
    ("truncated_header", "unreadable WAV|not a WAV"),
    ("huge_declared", "declares"),
    ("not_wav", "not a WAV"),
    ("float_wav", "unreadable WAV|not supported"),
    ("empty", "not a WAV"),
])
def test_hostile_wav_files_give_one_line_naming_the_file(tmp_path, damage, match):
    good = ad.wav_bytes(np.zeros(1600), 16_000)
    p = tmp_path / f"{damage}.wav"
    if damage == "truncated_header":
        p.write_bytes(good[:30])
    elif damage == "huge_declared":
        data = bytearray(good)
        i = data.index(b"data")
        data[i + 4:i + 8] = struct.pack("<I", 0x7FFFFFF0)
        p.write_bytes(bytes(data))
    elif damage == "not_wav":
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    elif damage == "float_wav":
        data = bytearray(good)
        i = data.index(b"fmt ")
        data[i + 8:i + 10] = struct.pack("<H", 3)  # WAVE_FORMAT_IEEE_FLOAT: could hold NaN
        p.write_bytes(bytes(data))
    else:
        p.write_bytes(b"")
    with pytest.raises(GeneratorError, match=match) as exc:
        ad.read_wav(p)
    assert str(p) in str(exc.value) and "\n" not in str(exc.value)


def test_oversized_wav_is_refused_before_reading(tmp_path):
    p = ad.write_wav(tmp_path / "big.wav", np.zeros(16_000), 16_000)
    with pytest.raises(GeneratorError, match="big.wav"):
        ad.read_wav(p, max_bytes=1000)


def test_wav_folder_classes_and_one_bad_file_named(tmp_path):
    from genguard.generators.data import load_data

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            ad.write_wav(tmp_path / cls / f"{i}.wav", 0.1 * np.random.default_rng(i).standard_normal(4000), 8000)
    ds = load_data(str(tmp_path))
    assert ds.modality == "audio" and ds.x.shape == (6, 16_000) and ds.group_names["label"] == ["cat", "dog"]
    assert ds.groups["label"].tolist() == [0, 0, 0, 1, 1, 1]
    (tmp_path / "dog" / "bad.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(GeneratorError, match="bad.wav"):
        load_data(str(tmp_path))


def test_audio_dataset_refuses_nan_and_missing_rate():
    with pytest.raises(GeneratorError, match="NaN"):
        Dataset(x=np.full((2, 100), np.nan, dtype=np.float32), modality="audio", metadata={"sample_rate": 8000})
    with pytest.raises(GeneratorError, match="sample_rate"):
        Dataset(x=np.zeros((2, 100), dtype=np.float32), modality="audio")


# --------------------------------------------------------------------------------------------
# WaveNet
# --------------------------------------------------------------------------------------------
def test_mu_law_round_trip():
    x = np.linspace(-1, 1, 1001)
    codes = mu_law_encode(x)
    assert codes.min() == 0 and codes.max() == 255 and mu_law_encode(0.0) == 128
    assert np.abs(mu_law_decode(codes) - x).max() < 0.035  # 8-bit companding error at full scale


def test_wavenet_is_causal(small_digits):
    import torch

    gen = WaveNet(**TINY, seed=0)
    gen.build(small_digits[0])
    model = gen.model_
    torch.manual_seed(0)
    for p in model.parameters():  # away from initialisation so no path is accidentally zero
        p.data.normal_(0, 0.3)
    x = torch.randint(0, 256, (3, 80))
    y = torch.tensor([0, 4, 9])
    pos = gen._positions(np.broadcast_to(np.arange(80) - 20, (3, 80)), gen.clip_samples)
    k = 40
    with torch.no_grad():
        a = model(x, y, pos)
        x2 = x.clone()
        x2[:, k:] = (x2[:, k:] + 17) % 256
        b = model(x2, y, pos)
    # the prediction at t reads inputs <= t only (inputs[t] is the code before sample t)
    assert torch.equal(a[:, :k], b[:, :k])
    assert (a[:, k] - b[:, k]).abs().max() > 1e-4  # ... and does read input t (the test is not vacuous)
    # the receptive field is exactly 1 + sum of dilations
    x3 = x.clone()
    x3[:, 0] = (x3[:, 0] + 1) % 256
    with torch.no_grad():
        c = model(x3, y, pos)
    rf = gen.receptive_field
    assert (c[:, rf - 1] - a[:, rf - 1]).abs().max() > 1e-6 and torch.equal(c[:, rf], a[:, rf])
    # where in the clip a sample lies is an input of its own: the same codes at a later place predict otherwise
    with torch.no_grad():
        d = model(x, y, gen._positions(np.broadcast_to(np.arange(80) + 200, (3, 80)), gen.clip_samples))
    assert (d - a).abs().max() > 1e-3
    with pytest.raises(ValueError, match="position"):
        model(x, y)


def test_incremental_sampling_matches_the_full_forward_pass(tiny_wavenet):
    import torch

    greedy = tiny_wavenet
    greedy.temperature = 1e-4  # softmax(logits / 1e-4): the argmax
    try:
        s = greedy.sample(3, seed=0, label=[1, 5, 8])
    finally:
        greedy.temperature = 1.0
    codes = torch.from_numpy(mu_law_encode(s.data))
    pad = greedy.receptive_field
    inp = torch.cat([torch.full((3, pad), 128, dtype=torch.long), codes[:, :-1]], dim=1)
    pos = greedy._positions(np.broadcast_to(np.arange(inp.shape[1]) + 1 - pad, inp.shape), codes.shape[1])
    with torch.no_grad():
        logits = greedy.model_(inp, torch.tensor([1, 5, 8]), pos)[:, pad - 1:]
    agree = (logits.argmax(-1) == codes).float().mean().item()
    assert agree > 0.99, agree
    # at temperature 1e-4 a code other than the argmax is drawn only at a near-tie: where they differ, the
    # sampled code's logit in the full pass is within 2e-3 of the best (odds of e^-20 beyond that)
    gap = logits.max(-1).values - logits.gather(-1, codes[..., None])[..., 0]
    assert gap.max().item() < 2e-3, gap.max().item()


def test_wavenet_sampling_is_seeded_and_save_load_round_trips(tiny_wavenet, tmp_path):
    a = tiny_wavenet.sample(4, seed=3)
    assert a.data.shape == (4, 1000) and a.metadata["sample_rate"] == 2000 and a.modality == "audio"
    assert np.array_equal(a.data, tiny_wavenet.sample(4, seed=3).data)
    assert not np.array_equal(a.data, tiny_wavenet.sample(4, seed=4).data)
    tiny_wavenet.save(tmp_path)
    back = WaveNet.load(tmp_path)
    assert np.array_equal(back.sample(4, seed=3).data, a.data)
    with pytest.raises(GeneratorError, match="label"):
        back.sample(2, label=10)


def test_hostile_config_cannot_ask_for_a_huge_model(tiny_wavenet, tmp_path):
    import json

    tiny_wavenet.save(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["params"]["dilation_cycle"] = 40  # 2**39-sample ring buffers
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(GeneratorError, match="dilation_cycle"):
        WaveNet.load(tmp_path)


def test_private_wavenet_ledger_verifies(small_digits, tmp_path):
    from genguard.guardrails.privacy import PrivateTrainer, build_ledger, verify_ledger, write_ledger

    train, _ = small_digits
    gen = WaveNet(**{**TINY, "batch_size": 16, "epochs": 2}, seed=2)
    gen.fit(train, trainer=PrivateTrainer(target_epsilon=5.0), progress=False)
    rep = gen.training_report_
    assert rep["private"] and 0 < rep["epsilon"] <= 5.0 + 1e-9 and "one audio clip" in rep["privacy_unit"]
    gen.save(tmp_path)
    ledger = build_ledger(rep, generator="wavenet", run_id="r-audio", seed=2,
                          weights_path=tmp_path / "weights.safetensors")
    write_ledger(tmp_path, ledger)
    check = verify_ledger(tmp_path / "ledger.json")
    assert check["consistent"], check["findings"]
    assert "one audio clip" in ledger["privacy_unit"]
    assert np.isfinite(gen.sample(2, seed=0).data).all()


# --------------------------------------------------------------------------------------------
# audio audit
# --------------------------------------------------------------------------------------------
def test_stoi_of_a_clip_against_itself_and_against_noise(small_digits):
    from genguard.audits.audio import stoi_scores

    x = small_digits[0].x[:6].astype(np.float64)
    noise = np.random.default_rng(0).standard_normal(x.shape) * 0.3
    own = stoi_scores(x, x, 16_000)
    ok = np.isfinite(own)  # NaN: too little speech for STOI's 384 ms segments (a short word)
    assert ok.sum() >= 2 and np.allclose(own[ok], 1.0, atol=1e-6)
    assert (stoi_scores(x, noise, 16_000)[ok] < 0.45).all()  # unrelated noise: STOI's floor for 1 s clips is ~0.2-0.4
    assert (stoi_scores(x, x + 0.05 * noise, 16_000)[ok] > 0.6).all()


def test_audio_sections_compute_and_the_page_plays_escaped_clips(small_digits, tiny_wavenet, tmp_path):
    from genguard.audits import ReleaseAudit
    from genguard.pipeline import audio_reconstructions

    train, holdout = small_digits
    samples = tiny_wavenet.sample(20, seed=0)
    samples.metadata["files"] = [f"out/<img src=x onerror=alert({i})>.wav" for i in range(20)]
    policy = {"memorization": {"nth_neighbour": 5}}
    rep = ReleaseAudit(policy=policy, seed=0).run_audio(samples, train, holdout, progress=False,
                                                        **audio_reconstructions(tiny_wavenet, holdout))
    d = rep.data
    assert d["generator"]["modality"] == "audio" and d["generator"]["sample_rate"] == 2000
    f = d["fidelity"]
    assert f["fad_local"]["value"] > 0 and "VGGish" in f["fad_local"]["note"]
    assert f["fad_local"]["baseline_holdout_vs_train"] is not None
    assert 0 <= f["tstr"]["value"] <= 1 and f["tstr"]["chance"] == pytest.approx(0.1)
    assert f["mse"]["value"] > 0 and f["mse"]["n"] == len(holdout)
    assert f["stoi"]["value"] is None or 0 <= f["stoi"]["value"] <= 1
    assert len(d["bias"]["groups"]) == 10 and d["bias"]["label_source"] == "audio classifier"
    assert d["memorization"]["near_duplicate_rate"] is not None
    assert {g["name"] for g in d["gates"]} >= {"fidelity.tstr", "bias.flagged_count", "memorization.near_duplicate_rate"}
    _, html = rep.write(tmp_path)
    page = html.read_text()
    assert page.count("<audio controls") == 8 and "data:audio/wav;base64," in page
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(0)&gt;.wav" in page
    assert "waveforms and spectrograms" in page


def test_real_holdout_as_samples_scores_better_than_noise(small_digits):
    """The audit tells real speech from noise: fad_local and TSTR move the right way."""
    from genguard.audits import ReleaseAudit
    from genguard.generators.base import Samples

    train, holdout = small_digits
    real = Samples(data=train.x, modality="audio", conditions={"label": train.groups["label"]},
                   metadata={"sample_rate": 16_000})
    noise = Samples(data=(np.random.default_rng(0).standard_normal(real.data.shape) * 0.2).astype(np.float32),
                    modality="audio", conditions=dict(real.conditions), metadata={"sample_rate": 16_000})
    policy = {"memorization": {"nth_neighbour": 5}}
    r = ReleaseAudit(policy=policy, seed=0).run_audio(real, train, holdout, progress=False).data["fidelity"]
    n = ReleaseAudit(policy=policy, seed=0).run_audio(noise, train, holdout, progress=False).data["fidelity"]
    assert r["fad_local"]["value"] < n["fad_local"]["value"]
    assert r["tstr"]["value"] > n["tstr"]["value"]


def test_class_position_map_is_causal_class_specific_and_sampled_as_trained(small_digits):
    """With ``class_position`` each class has a position map of its own: causality is unchanged, the same codes
    at the same place predict otherwise under another class only through it, and ring-buffer sampling (which
    reads the map from a per-class table) agrees with the full forward pass."""
    import torch

    train, _ = small_digits
    gen = WaveNet(**{**TINY, "epochs": 1}, class_position=True, seed=3).fit(train, progress=False)
    model = gen.model_
    x = torch.randint(0, 256, (2, 80), generator=torch.Generator().manual_seed(0))
    pos = gen._positions(np.broadcast_to(np.arange(80) - 20, (2, 80)), gen.clip_samples)
    with torch.no_grad():
        a = model(x, torch.tensor([2, 2]), pos)
        x2 = x.clone()
        x2[:, 40:] = (x2[:, 40:] + 17) % 256
        assert torch.equal(model(x2, torch.tensor([2, 2]), pos)[:, :40], a[:, :40])
        w = model.class_position.weight.clone()
        model.class_position.weight.zero_()
        flat = model(x, torch.tensor([2, 2]), pos)
        model.class_position.weight.copy_(w)
    assert (a - flat).abs().max() > 1e-4  # the map is read (the test is not vacuous)
    table = model.class_position_table(pos[0])
    onehot = torch.nn.functional.one_hot(torch.tensor([7]), gen.n_classes_).float()
    direct = model.class_position((onehot[:, None, :, None] * pos[:1, :, None, :]).flatten(-2))[0]
    assert torch.allclose(table[7], direct, atol=1e-5)
    gen.temperature = 1e-4
    s = gen.sample(2, seed=0, label=[4, 9])
    codes = torch.from_numpy(mu_law_encode(s.data))
    pad = gen.receptive_field
    inp = torch.cat([torch.full((2, pad), 128, dtype=torch.long), codes[:, :-1]], dim=1)
    p2 = gen._positions(np.broadcast_to(np.arange(inp.shape[1]) + 1 - pad, inp.shape), codes.shape[1])
    with torch.no_grad():
        logits = model(inp, torch.tensor([4, 9]), p2)[:, pad - 1:]
    assert (logits.argmax(-1) == codes).float().mean().item() > 0.99
