"""Keyed zero-bit audio watermark: spread spectrum on STFT band energies (300 Hz-3.4 kHz), informed embedding, an exact binomial (and a Hoeffding) detection test.

Design (analysis at 16 kHz whatever the file's rate; the mark is band-limited, so it is computed at
16 kHz and resampled onto the file):

* STFT with a 512-point sqrt-Hann window, hop 256 (32 ms frames, perfect reconstruction). The bins from
  300 Hz to 3.4 kHz (the telephone band: it survives 8 kHz resampling and MP3 at 64 kbit/s) are grouped
  into N_BANDS bands. A *chip* is one band over CHIP_FRAMES frames (128 ms); N_TIME_CHIPS chips in time
  make one period (4.1 s), which repeats over the whole clip. Each of the period's N_CHIPS chips has a
  keyed +/-1 sign; the embedder scales the chip's STFT magnitudes by exp(+-g) (g ~ 0.1, about +-0.9 dB).
* Informed embedding: the embedder measures the host's own statistic on each chip and raises the gain
  of chips the host works against (at most INFORMED_MAX_GAIN x the base), then scales the whole mark
  down to the quality budget (TARGET_SNR_DB; STOI on speech-like clips is in the README).
* Zero-bit: the mark says "a holder of this key marked this audio" and carries no payload. A 48-bit
  payload was tried on the same chips (the image mark's convolutional code and CRC): on 60 s speech-like
  clips it decoded on half of them before any edit and on none after MP3 at 64 kbit/s, so the run is
  named by the signed C2PA manifest only, as for the image zero-bit mark (:mod:`.smallmark`).
* Detection: log band energy per frame, minus the frame's mean over bands (undoes gain and broadband
  loudness) and minus a SMOOTH_FRAMES moving average (the slow spectral envelope), clipped to
  +-RESIDUAL_CLIP; silent frames count zero. The residual is folded onto one period at each of
  PERIOD_FRAMES frame offsets (a trim at the start moves the period: this is the synchronisation
  search), giving one sum F_c per chip.
* Test: under "no mark with this key" the chip signs s_c are uniformly random key material, independent
  of the audio, so at any one offset (a) each chip with F_c != 0 agrees with s_c with probability exactly
  1/2, independently: the agreements are Binomial(n, 1/2); and (b) sum_c F_c s_c is a Rademacher sum,
  whose tail Hoeffding's inequality bounds by exp(-t^2 / (2 sum_c F_c^2)). The sign test is the stronger
  on speech, the correlation on steady sounds. Both tests at every offset are paid for by the union
  bound: p = 2 * PERIOD_FRAMES * min(p_a, p_b), and a mark is declared when p <= 1e-6, so the
  false-positive rate per clip is at most 1e-6 by construction, whatever the audio. Silence has no
  non-zero chip, so it is never "found".
* What a mark alone proves: that someone holding the key marked *this audio's band energies*. A mark
  is a property of the signal, not of the file's bytes: it can be estimated from a marked clip (the
  marked minus a smoothed band envelope) and imposed on another clip (the copy attack), and the
  detector would then find it. It carries no content hash and no run id; the signed C2PA manifest (a
  hash of the exact bytes) is what binds a file to a run.
* Narrow-band sound (a steady pure tone, a slow chirp) has energy in one band only: the other bands hold
  its window leakage, which follows the tone's own gain, so there is nothing independent to modulate
  and such clips are marked weakly (README table); they never give a false detection.
"""
from __future__ import annotations

import hashlib
from math import log
from typing import Any

import numpy as np

RATE = 16000
N_FFT = 512
HOP = 256
F_LO, F_HI = 300.0, 3400.0
N_BANDS = 9
CHIP_FRAMES = 8
N_TIME_CHIPS = 32
PERIOD_FRAMES = CHIP_FRAMES * N_TIME_CHIPS  # 256 frames = 4.1 s
N_CHIPS = N_BANDS * N_TIME_CHIPS
#: shortest clip that is marked at all: under one second there are too few chips to pass the test
MIN_SECONDS = 1.0
FPR = 1e-6
#: tests at each offset: the sign test and the linear correlation over every chip
N_TESTS = 2
M_ALIGNMENTS = N_TESTS * PERIOD_FRAMES
BASE_GAIN = 0.10  # log-amplitude of a chip's modulation (about +-0.9 dB)
INFORMED_MAX_GAIN = 3.0
TARGET_SNR_DB = 25.0
SMOOTH_FRAMES = 24
RESIDUAL_CLIP = 3.0
#: a frame whose mid-band power is below this (about -90 dBFS per bin) counts as silent
SILENCE_POWER = 1e-9
#: detection reads at most this much of a clip (the mark repeats every period, so more adds little)
DETECT_MAX_SECONDS = 120.0

_BIN_LO = int(np.ceil(F_LO * N_FFT / RATE))
_BIN_HI = int(np.floor(F_HI * N_FFT / RATE))
_EDGES = np.linspace(_BIN_LO, _BIN_HI + 1, N_BANDS + 1).round().astype(int)
_WINDOW = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float64)


def _log_binom_sf_half(k: int, n: int) -> float:
    """log P[Binom(n, 1/2) >= k], exact to double precision."""
    if k <= 0:
        return 0.0
    if k > n:
        return -np.inf
    from scipy.stats import binom

    return float(binom.logsf(k - 1, n, 0.5))


def resample(x: np.ndarray, rate: int, to: int) -> np.ndarray:
    """Polyphase resampling of a 1-D or (frames, channels) signal from ``rate`` to ``to`` Hz."""
    if rate == to:
        return np.asarray(x, dtype=np.float64)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(rate), int(to))
    return resample_poly(np.asarray(x, dtype=np.float64), to // g, rate // g, axis=0)


def _frames(x: np.ndarray) -> np.ndarray:
    n = 1 + max(0, -(-(len(x) - N_FFT) // HOP))
    pad = np.zeros((n - 1) * HOP + N_FFT)
    pad[:len(x)] = x
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(n)[:, None]
    return pad[idx]


def stft(x: np.ndarray) -> np.ndarray:
    """(frames, N_FFT // 2 + 1) complex STFT, with HOP samples of zeros in front (so sample 0 is fully covered)."""
    return np.fft.rfft(_frames(np.concatenate([np.zeros(HOP), x, np.zeros(HOP)])) * _WINDOW, axis=1)


def istft(spec: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`stft` (weighted overlap-add; sqrt-Hann twice sums to one at 50 % overlap)."""
    fr = np.fft.irfft(spec, n=N_FFT, axis=1) * _WINDOW
    seg = fr[:, :HOP].copy()  # N_FFT == 2 * HOP: each hop is one frame's first half plus the previous one's second
    seg[1:] += fr[:-1, HOP:]
    out = np.concatenate([seg.reshape(-1), fr[-1, HOP:]])
    return out[HOP:HOP + length]


def band_log_energy(spec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log band energies (frames, N_BANDS), frame is not silent (frames,)) of a 16 kHz STFT."""
    p = spec.real ** 2 + spec.imag ** 2
    cs = np.concatenate([np.zeros((p.shape[0], 1)), np.cumsum(p[:, _BIN_LO:_BIN_HI + 1], axis=1)], axis=1)
    e = cs[:, _EDGES[1:] - _BIN_LO] - cs[:, _EDGES[:-1] - _BIN_LO]
    live = cs[:, -1] / (_BIN_HI + 1 - _BIN_LO) > SILENCE_POWER
    return np.log(e + SILENCE_POWER * 11), live


def residual(spec: np.ndarray) -> np.ndarray:
    """The detector's per-frame, per-band statistic (independent of any key): see the module docstring."""
    e, live = band_log_energy(spec)
    r = e - e.mean(axis=1, keepdims=True)
    if len(r) > 1:
        k = np.ones(SMOOTH_FRAMES) / SMOOTH_FRAMES
        w = np.convolve(live.astype(np.float64), k, mode="same")
        m = np.stack([np.convolve(r[:, b] * live, k, mode="same") for b in range(N_BANDS)], axis=1)
        r = r - m / np.maximum(w, 1e-9)[:, None]
    r = np.clip(r, -RESIDUAL_CLIP, RESIDUAL_CLIP)
    r[~live] = 0.0
    return r


def fold(r: np.ndarray) -> np.ndarray:
    """Chip sums at every frame offset: (PERIOD_FRAMES offsets, N_TIME_CHIPS, N_BANDS)."""
    n = r.shape[0]
    g = np.zeros((PERIOD_FRAMES, N_BANDS))
    np.add.at(g, np.arange(n) % PERIOD_FRAMES, r)
    # circular box sum over a chip's frames: h[phi] = sum_k g[(phi + k) mod P]
    gg = np.concatenate([g, g[:CHIP_FRAMES - 1]])
    cs = np.concatenate([np.zeros((1, N_BANDS)), np.cumsum(gg, axis=0)])
    h = cs[CHIP_FRAMES:CHIP_FRAMES + PERIOD_FRAMES] - cs[:PERIOD_FRAMES]
    # offset o: chip j of the period starts at frame o + j*CHIP_FRAMES (mod P)
    idx = (np.arange(PERIOD_FRAMES)[:, None] + CHIP_FRAMES * np.arange(N_TIME_CHIPS)[None, :]) % PERIOD_FRAMES
    return h[idx]


def fold_energy(power: np.ndarray, chip: np.ndarray) -> np.ndarray:
    """Mid-band STFT energy of each chip of the period, summed over its repetitions: (N_TIME_CHIPS, N_BANDS)."""
    cs = np.concatenate([np.zeros((power.shape[0], 1)), np.cumsum(power[:, _BIN_LO:_BIN_HI + 1], axis=1)], axis=1)
    e = cs[:, _EDGES[1:] - _BIN_LO] - cs[:, _EDGES[:-1] - _BIN_LO]
    out = np.zeros((N_TIME_CHIPS, N_BANDS))
    np.add.at(out, chip, e)
    return out


class AudioWatermark:
    """Embed / detect a keyed zero-bit audio mark with a secret ``key`` (bytes); ``snr_db``: quality budget."""

    false_positive_rate = FPR
    kind = "audio zero-bit"

    def __init__(self, key: bytes, snr_db: float = TARGET_SNR_DB, gain: float = BASE_GAIN) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise ValueError("watermark key must be at least 16 bytes")
        self.snr_db = float(snr_db)
        self.gain = float(gain)
        seed = np.frombuffer(hashlib.sha256(b"genguard-wm-audio-v1" + bytes(key)).digest(), dtype=np.uint32)
        self.signs_ = np.random.default_rng(seed).choice(np.array([-1.0, 1.0]), size=(N_TIME_CHIPS, N_BANDS))

    @staticmethod
    def markable(seconds: float) -> bool:
        return seconds >= MIN_SECONDS

    def embed(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """A marked copy of ``samples`` (float, (frames,) or (frames, channels), +/-1 full scale)."""
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim not in (1, 2) or x.shape[0] == 0:
            raise ValueError("samples must be (frames,) or (frames, channels)")
        mono = x if x.ndim == 1 else x.mean(axis=1)
        if not self.markable(len(mono) / rate):
            raise ValueError(f"clip of {len(mono) / rate:.2f} s is too short to mark (needs {MIN_SECONDS} s)")
        m16 = resample(mono, rate, RATE)
        spec = stft(m16)
        chip = (np.arange(spec.shape[0]) // CHIP_FRAMES) % N_TIME_CHIPS  # the period starts at frame 0
        s = self.signs_
        # informed embedding: the host's own folded statistic per chip, and the response to one unit of gain;
        # a chip the host works against gets more gain (at most INFORMED_MAX_GAIN x), never less than the base
        host = fold(residual(spec))[0]
        unit = fold(residual(spec * np.exp(self._gains(chip, s * self.gain))))[0] - host
        resp = np.maximum(s * unit, 0.0) / self.gain
        live = resp > 1e-9
        against = np.maximum(0.0, -s * host) / np.maximum(resp, 1e-9)
        g = np.where(live, np.clip(self.gain + against, self.gain, self.gain * INFORMED_MAX_GAIN), 0.0)
        marked = istft(spec * np.exp(self._gains(chip, s * g)), len(m16))
        delta = marked - m16
        p_sig, p_mark = float(np.mean(m16 ** 2)), float(np.mean(delta ** 2))
        if p_mark > 0 and 10 * np.log10(p_sig / p_mark) < self.snr_db:
            delta *= np.sqrt(p_sig / p_mark * 10 ** (-self.snr_db / 10))
        d = resample(delta, RATE, rate)[:len(mono)]
        d = np.pad(d, (0, len(mono) - len(d)))
        return (x + d) if x.ndim == 1 else (x + d[:, None])

    @staticmethod
    def _gains(chip: np.ndarray, chip_gain: np.ndarray) -> np.ndarray:
        """(frames, bins) log-amplitude gain: each chip's value on its band's bins, 0 elsewhere."""
        gb = np.zeros((len(chip), N_FFT // 2 + 1))
        per_frame = chip_gain[chip]  # (frames, N_BANDS)
        for b in range(N_BANDS):
            gb[:, _EDGES[b]:_EDGES[b + 1]] = per_frame[:, b:b + 1]
        return gb

    def detect(self, samples: np.ndarray, rate: int) -> dict[str, Any]:
        """Look for this key's mark. JSON-able dict: ``found``, ``p_value``, ``test`` (sign / correlation),
        ``chips`` and ``agreements`` at the best offset, ``offset_s`` (where the period starts in the clip)."""
        x = np.asarray(samples, dtype=np.float64)
        mono = x if x.ndim == 1 else x.mean(axis=1)
        mono = mono[:int(DETECT_MAX_SECONDS * rate)]
        if not np.all(np.isfinite(mono)):
            return {"applicable": False, "found": False, "kind": self.kind,
                    "reason": "samples are not finite (NaN or infinity)"}
        if len(mono) < rate * 0.25:
            return {"applicable": False, "found": False, "kind": self.kind,
                    "reason": f"clip of {len(mono) / rate:.2f} s is too short to carry a mark"}
        f = fold(residual(stft(resample(mono, rate, RATE))))  # (offsets, chips, bands)
        agree = (f * self.signs_[None] > 0).sum(axis=(1, 2))
        n = (f != 0).sum(axis=(1, 2))
        # Hoeffding: P[sum F s >= t] <= exp(-t^2 / (2 sum F^2)) for independent signs, whatever the F
        t_lin = (f * self.signs_[None]).sum(axis=(1, 2))
        q_lin = (f ** 2).sum(axis=(1, 2))
        lp_lin = np.where(t_lin > 0, -t_lin ** 2 / (2 * np.maximum(q_lin, 1e-300)), 0.0)
        best = (0.0, 0, "none")
        for o in range(PERIOD_FRAMES):
            if n[o] and agree[o] > n[o] / 2:
                lp = _log_binom_sf_half(int(agree[o]), int(n[o]))
                if lp < best[0]:
                    best = (lp, o, "sign")
            if lp_lin[o] < best[0]:
                best = (float(lp_lin[o]), o, "correlation")
        lp, o, test = best
        log_p = lp + log(M_ALIGNMENTS)
        return {"applicable": True, "found": bool(log_p <= log(FPR)), "kind": self.kind, "test": test,
                "p_value": float(min(1.0, np.exp(log_p))), "chips": int(n[o]), "agreements": int(agree[o]),
                "offset_s": round(o * HOP / RATE, 4), "alignments_tested": M_ALIGNMENTS,
                "false_positive_rate": FPR, "payload": None}
