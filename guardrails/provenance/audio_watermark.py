"""Keyed zero-bit audio watermark: spread spectrum on STFT band energies (300 Hz-3.4 kHz), informed embedding, an exact binomial (and a Hoeffding) detection test.

Design (analysis at 16 kHz whatever the file's rate; the mark is band-limited, so it is computed at
16 kHz and resampled onto the file):

* STFT with a 512-point sqrt-Hann window, hop 256 (32 ms frames, perfect reconstruction). The bins from
  300 Hz to 3.4 kHz (the telephone band: it survives 8 kHz resampling and MP3 at 64 kbit/s) are grouped
  into N_BANDS bands. A file whose Nyquist frequency is below the top band's edge (a rate under MIN_RATE,
  6.8 kHz) cannot hold the mark and is not marked, nor is a clip under MIN_SECONDS; :func:`unmarkable_reason`
  says which, and tagging reports it per file. A *chip* is one band in one frame; N_TIME_CHIPS frames make one period (1.02 s),
  which repeats over the whole clip. Each of the period's N_CHIPS chips has a keyed +/-1 sign; the
  embedder scales the chip's STFT magnitudes by exp(+-g).
* Informed embedding: the embedder measures the host's own statistic on each chip and raises the gain
  of chips the host works against (at most INFORMED_MAX_GAIN x the base); the base is then lowered
  (bisection) until the mark meets the quality budget, TARGET_SNR_DB (20 dB; STOI of marked speech
  against the original is in the README table), or raised (at most RAISE_MAX x) where the budget is not
  spent, as on a short clip that is mostly silence. The detector's statistic is a log-energy jump, so a
  chip counts the same whatever its loudness, while its cost in the SNR budget grows with its energy:
  the base gain of each chip is weighted by (median chip energy / its energy) ** QUIET_POWER, within
  [QUIET_MIN, QUIET_MAX], so the budget goes where it buys the most chips (a loud vowel no longer uses
  it all up).
* Zero-bit: the mark says "a holder of this key marked this audio" and carries no payload. A 48-bit
  payload was tried (the image mark's convolutional code and CRC over the same kind of chips): on 60 s
  speech-like clips it decoded on half of them before any edit and on none after MP3 at 64 kbit/s, so
  the run is named by the signed C2PA manifest only, as for the image zero-bit mark (:mod:`.smallmark`).
* Detection: log band energy per frame, minus the frame's mean over bands (undoes gain and broadband
  loudness); the statistic of a frame is its jump from the previous frame (speech and music change
  little between 50 %-overlapping frames, the mark's keyed sign flips do), clipped to +-RESIDUAL_CLIP,
  zero where a frame is silent. Folded onto one period at each of PERIOD_FRAMES frame offsets and
  SUB_PHASES sub-hop phases (a trim at the start moves the period: this is the synchronisation search),
  a chip's statistic F_c is the jump into it minus the jump out of it, summed over the repetitions.
* Test: under "no mark with this key" the chip signs s_c are uniformly random key material, independent
  of the audio, so at any one alignment (a) each chip with F_c != 0 agrees with s_c with probability
  exactly 1/2, independently: the agreements are Binomial(n, 1/2); and (b) sum_c F_c s_c is a Rademacher
  sum, whose tail Hoeffding's inequality bounds by exp(-t^2 / (2 sum_c F_c^2)). The sign test is the
  stronger on speech, the correlation on steady sounds. The false-positive budget of 1e-6 is split in
  two halves fixed in advance: the *as-written* alignment (the period starting at the clip's first
  sample, where the embedder put it: a file that was not trimmed) with both tests, p_w = N_TESTS *
  min(p_a, p_b), and the *search* over all M_ALIGNMENTS alignments, p_s = M_ALIGNMENTS * min(p_a, p_b).
  The reported p = 2 * min(p_w, p_s) (Bonferroni over the two families) and a mark is declared when
  p <= 1e-6, so the false-positive rate per clip is at most 1e-6 by construction, whatever the audio. A
  clip as written pays for 4 tests instead of 512, which matters on clips of a second or two (a digit,
  the reference WaveNet's output); a trimmed one pays for 1,024 instead of 512. Silence has no non-zero
  chip, so it is never "found".
* What a mark alone proves: that someone holding the key marked *this audio's band energies*. A mark
  is a property of the signal, not of the file's bytes: it can be estimated from a marked clip (the
  marked minus a smoothed band envelope) and imposed on another clip (the copy attack), and the
  detector would then find it. It carries no content hash and no run id; the signed C2PA manifest (a
  hash of the exact bytes) is what binds a file to a run.
* Narrow-band sound (a steady pure tone, a chirp) has energy in one band at a time: the other bands hold
  its window leakage, which follows the tone's own gain, so there is little independent to modulate; such
  clips are marked weakly and lose the mark to MP3 and noise (README table). They never give a false
  detection.
"""
from __future__ import annotations

import hashlib
from math import log
from typing import Any

import numpy as np

from genguard.guardrails.provenance.smallmark import _log_binom_sf_half  # the same exact sign-test tail

RATE = 16000
N_FFT = 512
HOP = 256
F_LO, F_HI = 300.0, 3400.0
N_BANDS = 9
CHIP_FRAMES = 1
N_TIME_CHIPS = 64
PERIOD_FRAMES = CHIP_FRAMES * N_TIME_CHIPS  # 64 frames = 1.02 s
N_CHIPS = N_BANDS * N_TIME_CHIPS
#: shortest clip that is marked at all: under one second there are too few chips to pass the test
MIN_SECONDS = 1.0
FPR = 1e-6
#: tests at each offset: the sign test and the linear correlation over every chip
N_TESTS = 2
#: the frame grid is searched at this many sub-hop phases too (a trim rarely cuts at a multiple of HOP, and a
#: half-hop misalignment blurs one-frame chips)
SUB_PHASES = 4
M_ALIGNMENTS = N_TESTS * PERIOD_FRAMES * SUB_PHASES
BASE_GAIN = 0.10  # log-amplitude of a chip's modulation (about +-0.9 dB) before the quality budget
INFORMED_MAX_GAIN = 3.0
#: the base gain of a chip is weighted by (median chip energy / its energy) ** QUIET_POWER within these bounds
QUIET_POWER = 0.5
QUIET_MIN, QUIET_MAX = 0.5, 2.0
TARGET_SNR_DB = 20.0
BUDGET_STEPS = 6
#: where the base gain leaves the SNR budget unspent, it is raised towards the budget, at most this many times
RAISE_MAX = 3.0
EDGE_FRAMES = 1
#: the frame jumps are clipped here (nats): speech onsets jump by several, the mark by ~0.2; clipping
#: keeps the host's heavy tail from drowning the mark (measured: 0.25 beats 0.5, 1 and 3)
RESIDUAL_CLIP = 0.25
#: a frame whose mid-band power is below this (about -90 dBFS per bin) counts as silent
SILENCE_POWER = 1e-9
#: longest clip marked in one piece (memory: the STFT of 10 min at 16 kHz is ~600 MB of complex128)
MAX_MARK_SECONDS = 600.0
#: detection reads at most this much of a clip (the mark repeats every period, so more adds little)
DETECT_MAX_SECONDS = 120.0

_BIN_LO = int(np.ceil(F_LO * N_FFT / RATE))
_BIN_HI = int(np.floor(F_HI * N_FFT / RATE))
_EDGES = np.linspace(_BIN_LO, _BIN_HI + 1, N_BANDS + 1).round().astype(int)
#: upper edge of the mark's highest band (Hz, 3406.25)
BAND_TOP_HZ = float(_EDGES[-1] * RATE / N_FFT)
#: lowest sample rate that is marked: below it the file's Nyquist frequency cuts the top of the mark's band, the
#: resampled mark loses those bands and the frame normalisation over all bands is skewed (measured on 1 s
#: speech-like clips: p 3e-5 to 8e-3 at 4 kHz, never found; p <= 2e-11 at 6.8 kHz and up)
MIN_RATE = int(np.ceil(2 * BAND_TOP_HZ))
_WINDOW = np.sqrt(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)).astype(np.float64)




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
    """The detector's per-frame, per-band statistic (independent of any key): the jump of log band energy
    into each frame (mean of EDGE_FRAMES frames from it minus mean of the EDGE_FRAMES before it), after the
    frame's mean over bands is taken off; zero where any of those frames is silent."""
    e, live = band_log_energy(spec)
    r = e - e.mean(axis=1, keepdims=True)
    n, w = r.shape[0], EDGE_FRAMES
    out = np.zeros_like(r)
    if n < 2 * w + 1:
        return out
    cs = np.concatenate([np.zeros((1, N_BANDS)), np.cumsum(r, axis=0)])
    cl = np.concatenate([[0], np.cumsum(~live)])
    t = np.arange(w, n - w + 1)
    after = (cs[t + w] - cs[t]) / w
    before = (cs[t] - cs[t - w]) / w
    ok = (cl[t + w] - cl[t - w]) == 0
    out[t] = np.clip(after - before, -RESIDUAL_CLIP, RESIDUAL_CLIP) * ok[:, None]
    return out


def fold(r: np.ndarray) -> np.ndarray:
    """Chip sums at every frame offset: (PERIOD_FRAMES offsets, N_TIME_CHIPS, N_BANDS)."""
    n = r.shape[0]
    g = np.zeros((PERIOD_FRAMES, N_BANDS))
    np.add.at(g, np.arange(n) % PERIOD_FRAMES, r)
    # offset o: chip j of the period starts at frame o + j*CHIP_FRAMES (mod P); its statistic is the jump up
    # into it minus the jump up out of it (into chip j + 1)
    idx = (np.arange(PERIOD_FRAMES)[:, None] + CHIP_FRAMES * np.arange(N_TIME_CHIPS)[None, :]) % PERIOD_FRAMES
    return g[idx] - g[(idx + CHIP_FRAMES) % PERIOD_FRAMES]


def unmarkable_reason(seconds: float, rate: int) -> str | None:
    """Why a clip of ``seconds`` at ``rate`` Hz is not marked (too short, or a rate whose Nyquist frequency cuts
    the mark's band), one sentence; None when it can be marked."""
    why = []
    if not seconds >= MIN_SECONDS:
        why.append(f"clip of {seconds:.2f} s is too short to mark (genguard marks clips of {MIN_SECONDS:g} s and more)")
    if not rate >= MIN_RATE:
        why.append(f"sample rate {rate} Hz is too low to mark: its Nyquist frequency ({rate / 2:g} Hz) cuts the "
                   f"mark's band ({F_LO:g}-{BAND_TOP_HZ:.0f} Hz; genguard marks audio of {MIN_RATE} Hz and more)")
    return "; ".join(why) or None


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
    def markable(seconds: float, rate: int) -> bool:
        """Whether a clip of ``seconds`` at ``rate`` Hz can carry the mark (see :func:`unmarkable_reason`)."""
        return unmarkable_reason(seconds, rate) is None

    def embed(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """A marked copy of ``samples`` (float, (frames,) or (frames, channels), +/-1 full scale). The mark is made
        on the mono mix and shared between channels in proportion to their RMS, so each channel keeps the budget."""
        x = np.asarray(samples, dtype=np.float64)
        if x.ndim not in (1, 2) or x.shape[0] == 0:
            raise ValueError("samples must be (frames,) or (frames, channels)")
        mono = x if x.ndim == 1 else x.mean(axis=1)
        why = unmarkable_reason(len(mono) / rate, rate)
        if why is not None:
            raise ValueError(why)
        m16 = resample(mono, rate, RATE)
        spec = stft(m16)
        chip = (np.arange(spec.shape[0]) // CHIP_FRAMES) % N_TIME_CHIPS  # the period starts at frame 0
        s = self.signs_
        # informed embedding: the host's own folded statistic per chip, and the response to one unit of gain;
        # a chip the host works against gets more gain (at most INFORMED_MAX_GAIN x the base), never less than
        # the base. The quality budget (snr_db) is met by lowering the base (bisection), not by scaling the
        # finished mark, which would undo the compensation
        host = fold(residual(spec))[0]
        unit = fold(residual(spec * np.exp(self._gains(chip, s * self.gain))))[0] - host
        resp = np.maximum(s * unit, 0.0) / self.gain
        live = resp > 1e-9
        against = np.maximum(0.0, -s * host) / np.maximum(resp, 1e-9)
        weight = self._quiet_weights(spec, chip)
        p_sig = float(np.mean(m16 ** 2))

        def mark(base: float) -> tuple[np.ndarray, float]:
            b = base * weight
            g = np.where(live, np.clip(b + against, b, b * INFORMED_MAX_GAIN), 0.0)
            d = istft(spec * np.exp(self._gains(chip, s * g)), len(m16)) - m16
            p_mark = float(np.mean(d ** 2))
            return d, (10 * np.log10(p_sig / p_mark) if p_mark > 0 else np.inf)

        delta, snr = mark(self.gain)
        hi = None  # the bisection's bounds on the base, where one is needed
        if snr < self.snr_db:
            lo, hi, best = 0.0, self.gain, None
        else:  # budget to spare (short clips, noise): raise the base towards it, up to RAISE_MAX x
            raised, q = mark(self.gain * RAISE_MAX)
            if q >= self.snr_db:
                delta = raised  # the full raise fits the budget
            else:
                lo, hi, best = self.gain, self.gain * RAISE_MAX, delta
        if hi is not None:
            for _ in range(BUDGET_STEPS):
                mid = 0.5 * (lo + hi)
                d, q = mark(mid)
                lo, hi, best = (mid, hi, d) if q >= self.snr_db else (lo, mid, best)
            delta = best if best is not None else d * 0.0
            p_mark = float(np.mean(delta ** 2))
            if p_mark > 0 and 10 * np.log10(p_sig / p_mark) < self.snr_db:  # never above the budget
                delta *= np.sqrt(p_sig / p_mark * 10 ** (-self.snr_db / 10))
        d = resample(delta, RATE, rate)[:len(mono)]
        d = np.pad(d, (0, len(mono) - len(d)))
        if x.ndim == 1:
            return x + d
        # the mark was sized against the mono mix; each channel gets it in proportion to its own RMS, scaled so
        # that the channels' mean (what the detector reads) still carries exactly d. Then every channel's SNR is
        # (sum of RMS / channels)^2 / p_mark, at least the mono mix's power over p_mark (Minkowski): a quiet or
        # silent channel is not given a mark sized for a loud one
        rms = np.sqrt(np.mean(x ** 2, axis=0))
        share = rms * x.shape[1] / rms.sum() if rms.sum() > 0 else np.ones(x.shape[1])
        return x + d[:, None] * share[None, :]

    @staticmethod
    def _quiet_weights(spec: np.ndarray, chip: np.ndarray) -> np.ndarray:
        """(N_TIME_CHIPS, N_BANDS) weights of the base gain: quieter chips get more (see the module's docstring)."""
        e, frame_live = band_log_energy(spec)
        energy = np.zeros((N_TIME_CHIPS, N_BANDS))
        count = np.zeros(N_TIME_CHIPS)
        np.add.at(energy, chip[frame_live], np.exp(e[frame_live]))
        np.add.at(count, chip[frame_live], 1)
        seen = count > 0
        if not seen.any():
            return np.ones((N_TIME_CHIPS, N_BANDS))
        energy[seen] /= count[seen, None]
        ref = np.median(energy[seen])
        w = np.ones((N_TIME_CHIPS, N_BANDS))
        w[seen] = (ref / np.maximum(energy[seen], 1e-300)) ** QUIET_POWER
        return np.clip(w, QUIET_MIN, QUIET_MAX)

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
        m16 = resample(mono, rate, RATE)
        best = (0.0, 0, "none", 0, 0, 0)
        written = (0.0, 0, "none", 0, 0, 0)  # the period starting at the first sample, as the embedder put it
        for ph in range(SUB_PHASES):
            f = fold(residual(stft(m16[ph * HOP // SUB_PHASES:])))  # (offsets, chips, bands)
            agree = (f * self.signs_[None] > 0).sum(axis=(1, 2))
            n = (f != 0).sum(axis=(1, 2))
            # Hoeffding: P[sum F s >= t] <= exp(-t^2 / (2 sum F^2)) for independent signs, whatever the F
            t_lin = (f * self.signs_[None]).sum(axis=(1, 2))
            q_lin = (f ** 2).sum(axis=(1, 2))
            lp_lin = np.where(t_lin > 0, -t_lin ** 2 / (2 * np.maximum(q_lin, 1e-300)), 0.0)
            for o in range(PERIOD_FRAMES):
                tried = []
                if n[o] and agree[o] > n[o] / 2:
                    tried.append((_log_binom_sf_half(int(agree[o]), int(n[o])), o, "sign", ph, int(agree[o]), int(n[o])))
                tried.append((float(lp_lin[o]), o, "correlation", ph, int(agree[o]), int(n[o])))
                for t in tried:
                    best = min(best, t, key=lambda v: v[0])
                    if ph == 0 and o == 0:
                        written = min(written, t, key=lambda v: v[0])
        # the two families share the 1e-6 budget equally, fixed in advance (module docstring)
        lp_written, lp_search = written[0] + log(N_TESTS), best[0] + log(M_ALIGNMENTS)
        lp, o, test, ph, n_agree, n_chips = written if lp_written <= lp_search else best
        log_p = log(2) + min(lp_written, lp_search)
        return {"applicable": True, "found": bool(log_p <= log(FPR)), "kind": self.kind, "test": test,
                "alignment": "as written" if lp_written <= lp_search else "searched",
                "p_value": float(min(1.0, np.exp(log_p))), "chips": n_chips, "agreements": n_agree,
                "offset_s": round((o * HOP + ph * HOP // SUB_PHASES) / RATE, 4),
                "alignments_tested": M_ALIGNMENTS + N_TESTS, "false_positive_rate": FPR, "payload": None}
