"""An outside attacker's checks on the audio paths: what the DP record publishes, hostile WAV files against every
WAV reader, one bad file among good ones in the CLI, and hostile clips against the audio mark's false-positive claim."""
import json
import re
import struct

import numpy as np
import pytest

from genguard.generators.base import Dataset

TINY = dict(sample_rate=2000, clip_seconds=0.5, channels=8, hidden=16, n_layers=4, dilation_cycle=4, crop=64,
            epochs=1, batch_size=16, lr=3e-3)


def _clips(n, seed=0):
    """``n`` labelled clips of tone and noise at 2 kHz (no speech synthesis: the DP record is about n, not content)."""
    rng = np.random.default_rng(seed)
    t = np.arange(1000) / 2000
    x = np.stack([0.3 * np.sin(2 * np.pi * (200 + 40 * (i % 5)) * t) + 0.05 * rng.standard_normal(1000)
                  for i in range(n)]).astype(np.float32)
    return Dataset(x=x, modality="audio", name="tones", groups={"label": np.arange(n) % 2},
                   group_names={"label": ["a", "b"]}, metadata={"sample_rate": 2000})


# --------------------------------------------------------------------------------------------
# the DP record must not state the number of training records
# --------------------------------------------------------------------------------------------
def _published_unit(gen, data):
    from genguard.guardrails.privacy import PrivateTrainer, build_ledger

    gen.fit(data, trainer=PrivateTrainer(target_epsilon=8.0), progress=False)
    ledger = build_ledger(gen.training_report_, generator=gen.name, run_id="r", seed=0, weights_path=None)
    return gen.training_report_["privacy_unit"], ledger["privacy_unit"], ledger["guarantee"]


def test_wavenet_dp_record_does_not_state_the_record_count():
    """epsilon is for add/remove-one neighbours, so the exact n would tell whether one clip was in: two neighbouring
    data sets (n and n+1 clips, same batch count) must publish the same privacy unit, naming neither count."""
    from genguard.generators.wavenet import WaveNet

    a = _published_unit(WaveNet(**TINY, seed=0), _clips(29))
    b = _published_unit(WaveNet(**TINY, seed=0), _clips(30))
    assert a[0] == b[0] and a[1] == b[1], (a, b)
    for text in a:
        assert not re.search(r"\b(29|30)\b", text), text
    assert "one audio clip" in a[1]


def test_text_dp_record_does_not_state_window_or_passage_counts():
    """The same for ByteGPT, whose unit is a window: the window and passage counts are functions of the private text."""
    from genguard.generators.text import ByteGPT

    def text_data(n):
        return Dataset(x=[f"passage {i}: " + "the quick brown fox jumps. " * 3 for i in range(n)], modality="text",
                       name="t")

    kw = dict(n_layer=1, n_embd=16, n_head=2, block_size=32, epochs=1, batch_size=16, sample_length=8)
    a = _published_unit(ByteGPT(**kw), text_data(23))
    b = _published_unit(ByteGPT(**kw), text_data(24))
    assert a[1] == b[1], (a, b)
    assert not re.search(r"\(\d+ windows", a[1]) and "32-byte window" in a[1]
