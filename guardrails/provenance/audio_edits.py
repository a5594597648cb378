"""The everyday-edit suite for audio: MP3 at 64 and 128 kbit/s, 16->8->16 kHz resampling, white noise at 20 dB SNR, gain x0.5 and x2 (clipped), 10 % trims.

Each edit takes (mono float samples, rate) and returns (samples, rate); the noise is drawn from a fixed
seed, so a robustness figure can be recomputed. Every edit rewrites the samples without the WAV's
chunks, so an embedded C2PA manifest never survives one. The MP3 edit needs ``lameenc`` (encoder) and
``miniaudio`` (decoder), both from PyPI (the ``audio`` extra); without them it raises
:class:`MissingCodec` naming the package.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


class MissingCodec(RuntimeError):
    """An optional codec package is not installed."""


def _pcm16(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(np.asarray(x) * 32767.0), -32768, 32767).astype("<i2")


def mp3(x: np.ndarray, rate: int, kbps: int = 128) -> tuple[np.ndarray, int]:
    """Encode with LAME at ``kbps`` (constant bit rate, quality 2) and decode again (miniaudio's dr_mp3)."""
    try:
        import lameenc
        import miniaudio
    except ImportError as exc:
        raise MissingCodec(f"the MP3 edit needs lameenc and miniaudio (pip install 'genguard[audio]'): {exc}") from None
    enc = lameenc.Encoder()
    enc.set_bit_rate(int(kbps))
    enc.set_in_sample_rate(int(rate))
    enc.set_channels(1)
    enc.set_quality(2)
    data = bytes(enc.encode(_pcm16(x).tobytes()) + enc.flush())
    dec = miniaudio.decode(data, output_format=miniaudio.SampleFormat.SIGNED16, nchannels=1, sample_rate=int(rate))
    return np.frombuffer(dec.samples, dtype=np.int16).astype(np.float64) / 32768.0, rate


def resample_round_trip(x: np.ndarray, rate: int, via: int = 8000) -> tuple[np.ndarray, int]:
    """Down to ``via`` Hz and back (polyphase, scipy's default anti-alias filter)."""
    from genguard.guardrails.provenance.audio_watermark import resample

    return resample(resample(x, rate, via), via, rate)[:len(x)], rate


def white_noise(x: np.ndarray, rate: int, snr_db: float = 20.0, seed: int = 0) -> tuple[np.ndarray, int]:
    """Add Gaussian white noise at ``snr_db`` below the clip's mean power."""
    p = float(np.mean(np.asarray(x, dtype=np.float64) ** 2))
    rng = np.random.default_rng(seed)
    return x + rng.standard_normal(len(x)) * np.sqrt(p * 10 ** (-snr_db / 10)), rate


def gain(x: np.ndarray, rate: int, factor: float = 0.5) -> tuple[np.ndarray, int]:
    """Multiply by ``factor``, clipping at full scale (x2 clips loud clips)."""
    return np.clip(np.asarray(x) * factor, -1.0, 1.0), rate


def trim(x: np.ndarray, rate: int, start: float = 0.1, end: float = 0.0) -> tuple[np.ndarray, int]:
    """Cut ``start`` and ``end`` (shares of the length) off the clip."""
    n = len(x)
    return x[int(round(n * start)):n - int(round(n * end))], rate


AUDIO_EDITS: dict[str, Callable[[np.ndarray, int], tuple[np.ndarray, int]]] = {
    "mp3_64k": lambda x, r: mp3(x, r, 64),
    "mp3_128k": lambda x, r: mp3(x, r, 128),
    "resample_8k": resample_round_trip,
    "noise_20db": white_noise,
    "gain_0.5": lambda x, r: gain(x, r, 0.5),
    "gain_2_clipped": lambda x, r: gain(x, r, 2.0),
    "trim_start_10pct": lambda x, r: trim(x, r, 0.1, 0.0),
    "trim_end_10pct": lambda x, r: trim(x, r, 0.0, 0.1),
}
