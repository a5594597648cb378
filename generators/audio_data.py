"""Audio data: the embedded spoken-digit set (synthesised offline with eSpeak NG), bounded WAV reading and writing.

The spoken digits are a Speech-Commands-like set made on first use from what
the ``espeakng-loader`` wheel bundles (the eSpeak NG library and its voice
data): ten words "zero".."nine" spoken by several English voices and voice
variants at drawn rates and pitches, 16 kHz mono, one second per clip. The
draws come from a seed, eSpeak NG's synthesis is deterministic, so the same
seed gives the same clips; the set is cached under the genguard home
(``$GENGUARD_HOME`` or ``~/.genguard``) with an atomic write.

WAV files are read with the standard library's :mod:`wave` under limits on
file size, declared length, channels and sample rate; anything else is a
:class:`GeneratorError` of one line naming the file.
"""
from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from genguard.generators._io import atomic_write_bytes, read_bytes_bounded
from genguard.generators.base import Dataset, GeneratorError

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
SAMPLE_RATE = 16_000
CLIP_SECONDS = 1.0
DEFAULT_PER_CLASS = 40
DEFAULT_SEED = 0
#: Voices of the bundled data that speak English, and variants (voice timbres) of eSpeak NG.
VOICES = ("en", "en-us", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2")
RATE_RANGE = (120, 220)       # words per minute
PITCH_RANGE = (20, 80)        # eSpeak's 0..100 pitch scale
FORMAT_VERSION = 2

#: Largest WAV file read (bytes): 64 MiB is over 30 min of 16 kHz 16-bit mono.
MAX_WAV_BYTES = 64 * 1024 * 1024
#: Longest clip kept from a user's file (seconds); longer clips are cut to it.
MAX_CLIP_SECONDS = 30.0
#: Most files read from a user's folder.
MAX_FILES = 100_000
WAV_SUFFIXES = (".wav", ".wave")

_LOCK = threading.Lock()
_ENGINE: "_ESpeak | None" = None


# --------------------------------------------------------------------------------------
# eSpeak NG through ctypes
# --------------------------------------------------------------------------------------
class _ESpeak:
    """The eSpeak NG library bundled by ``espeakng-loader``, in synchronous mode (samples through a callback)."""

    AUDIO_OUTPUT_SYNCHRONOUS = 2
    RATE, VOLUME, PITCH, RANGE = 1, 2, 3, 4
    POS_CHARACTER = 1

    def __init__(self) -> None:
        import ctypes

        try:
            import espeakng_loader
        except ImportError:
            raise GeneratorError("the spoken-digit data set needs the espeakng-loader package "
                                 "(pip install espeakng-loader)") from None
        self._ct = ctypes
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                     ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Info.restype = ctypes.c_char_p
        lib.espeak_Info.argtypes = [ctypes.c_void_p]
        rate = lib.espeak_Initialize(self.AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0)
        if rate <= 0:
            raise GeneratorError(f"eSpeak NG failed to initialise (code {rate}) from {espeakng_loader.get_data_path()}")
        self.rate = int(rate)
        self.version = (lib.espeak_Info(None) or b"?").decode("ascii", "replace")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(wav: Any, n: int, events: Any) -> int:
            if n > 0 and wav:
                self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        self._callback = callback_type(collect)  # kept referenced: the library calls it later
        lib.espeak_SetSynthCallback(self._callback)
        self._lib = lib

    def reseed(self, seed: int) -> None:
        """Seed the randomness the synthesiser draws (breathiness noise through libc ``rand``, which the library
        seeds from the clock when it initialises)."""
        self._ct.CDLL(None).srand(self._ct.c_uint(seed))
        if hasattr(self._lib, "espeak_ng_SetRandSeed"):
            self._lib.espeak_ng_SetRandSeed(self._ct.c_long(seed))

    def say(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int = 50) -> np.ndarray:
        """``text`` spoken by ``voice`` as float32 in [-1, 1] at :attr:`rate` Hz (see :func:`_say_forked`)."""
        lib = self._lib
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise GeneratorError(f"eSpeak NG has no voice {voice!r} in its bundled data")
        for param, value in ((self.RATE, rate), (self.PITCH, pitch), (self.RANGE, pitch_range), (self.VOLUME, 100)):
            lib.espeak_SetParameter(param, int(value), 0)
        self._chunks = []
        data = text.encode() + b"\0"
        rc = lib.espeak_Synth(data, len(data), 0, self.POS_CHARACTER, 0, 0, None, None)
        lib.espeak_Synchronize()
        if rc != 0 or not self._chunks:
            raise GeneratorError(f"eSpeak NG could not say {text!r} with voice {voice!r} (code {rc})")
        return np.concatenate(self._chunks).astype(np.float32) / 32768.0


def _say_forked(eng: _ESpeak, text: str, voice: str, rate: int, pitch: int) -> np.ndarray:
    """``eng.say`` in a forked child, so every utterance starts from the same synthesiser state.

    eSpeak NG carries state from one utterance to the next (the same call twice gives different samples), and
    it is not reset by espeak_Terminate/espeak_Initialize in the same process; a child forked from a process
    that has only initialised the library always starts from the freshly initialised state.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: synthesise, write the raw float32 samples, exit without running any cleanup
        code = 1  # unless the samples were written: the parent sees the failure in the exit status
        try:
            os.close(r)
            eng.reseed(0)
            x = eng.say(text, voice, rate, pitch)
            with os.fdopen(w, "wb") as fh:
                fh.write(x.astype("<f4").tobytes())
            code = 0
        finally:  # the forked child never returns into the parent's code, whatever it hit
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not data:
        raise GeneratorError(f"eSpeak NG could not say {text!r} with voice {voice!r}")
    return np.frombuffer(data, dtype="<f4").astype(np.float32)


def _worker_main() -> None:
    """Entry of the synthesis subprocess: JSON jobs on stdin, an .npz of the clips on stdout."""
    import json
    import sys

    jobs = json.loads(sys.stdin.buffer.read())
    eng = _ESpeak()
    clips = [_say_forked(eng, str(t), str(v), int(r), int(p)) for t, v, r, p in jobs]
    buf = io.BytesIO()
    np.savez(buf, rate=np.int64(eng.rate), lengths=np.array([len(c) for c in clips], dtype=np.int64),
             samples=np.concatenate(clips) if clips else np.zeros(0, dtype=np.float32))
    sys.stdout.buffer.write(buf.getvalue())
    sys.stdout.buffer.flush()


def _synthesise(jobs: list[tuple[str, str, int, int]]) -> tuple[list[np.ndarray], int]:
    """The utterances of ``jobs`` (text, voice, rate, pitch), each from the library's initial state: a fresh
    small Python process initialises eSpeak NG and forks once per utterance (:func:`_say_forked`)."""
    import json
    import subprocess
    import sys

    if not hasattr(os, "fork"):
        raise GeneratorError("synthesising the spoken digits reproducibly needs os.fork (Linux or macOS)")
    proc = subprocess.run([sys.executable, "-c", "from genguard.generators.audio_data import _worker_main; "
                           "_worker_main()"], input=json.dumps(jobs).encode(), capture_output=True, timeout=600)
    if proc.returncode != 0:
        last = (proc.stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"])[-1]
        raise GeneratorError(f"synthesising the spoken digits failed: {last}")
    with np.load(io.BytesIO(proc.stdout), allow_pickle=False) as z:
        rate, lengths, samples = int(z["rate"]), z["lengths"], z["samples"]
    return list(np.split(samples.astype(np.float32), np.cumsum(lengths)[:-1])), rate


def _engine() -> _ESpeak:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _ESpeak()
    return _ENGINE


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Polyphase resampling (scipy) along the last axis; float32."""
    if rate_in == rate_out:
        return np.asarray(x, dtype=np.float32)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(rate_in), int(rate_out))
    return resample_poly(np.asarray(x, dtype=np.float64), rate_out // g, rate_in // g, axis=-1).astype(np.float32)


def speech_like(seconds: float, seed: int, rate: int = SAMPLE_RATE) -> np.ndarray:
    """A voiced, syllable-modulated signal with moving formants (glottal pulses through two resonators whose
    frequencies change every 100 ms, under a 3-5 Hz syllable envelope), peak 0.25: a stand-in for speech
    where eSpeak NG is not wanted (tests of the audio mark, attack scripts). Seeded, so reproducible."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = rng.uniform(100, 200) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))
    pulses = np.diff(np.floor(np.cumsum(f0 / rate)), prepend=0.0) + 0.02 * rng.standard_normal(n)
    x = np.zeros(n)
    zi = np.zeros(4)
    step = rate // 10
    for s in range(0, n, step):
        f1, f2 = rng.uniform(300, 900), rng.uniform(900, 2500)
        a = np.convolve([1, -2 * 0.97 * np.cos(2 * np.pi * f1 / rate), 0.97 ** 2],
                        [1, -2 * 0.95 * np.cos(2 * np.pi * f2 / rate), 0.95 ** 2])
        x[s:s + step], zi = lfilter([1.0], a, pulses[s:s + step], zi=zi)
    env = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 0.7
    y = x * env
    return 0.25 * y / np.max(np.abs(y))


def fit_length(x: np.ndarray, n: int, offset: int = 0) -> np.ndarray:
    """``x`` cut or zero-padded to ``n`` samples; ``offset`` samples of silence first (a shorter clip)."""
    out = np.zeros(n, dtype=np.float32)
    x = np.asarray(x, dtype=np.float32)[: max(0, n - offset)]
    out[offset:offset + len(x)] = x
    return out


def _trim_silence(x: np.ndarray, threshold: float = 0.01) -> np.ndarray:
    loud = np.flatnonzero(np.abs(x) > threshold)
    return x[loud[0]:loud[-1] + 1] if len(loud) else x


def synthesise_digits(per_class: int = DEFAULT_PER_CLASS, seed: int = DEFAULT_SEED) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """``(clips (n, 16000) float32, labels (n,), one dict of voice settings per clip)``, the same for the same seed."""
    if not (1 <= per_class <= 1000):
        raise GeneratorError(f"per_class must lie in [1, 1000], got {per_class}")
    rng = np.random.default_rng(seed)
    n_out = int(SAMPLE_RATE * CLIP_SECONDS)
    jobs, labels, settings = [], [], []
    for digit, word in enumerate(DIGIT_WORDS):
        for _ in range(per_class):
            voice = str(rng.choice(VOICES))
            variant = str(rng.choice(VARIANTS))
            name = f"{voice}+{variant}" if variant else voice
            rate = int(rng.integers(*RATE_RANGE))
            pitch = int(rng.integers(*PITCH_RANGE))
            gain = float(rng.uniform(0.5, 0.95))
            jobs.append((word, name, rate, pitch))
            labels.append(digit)
            settings.append({"voice": name, "rate": rate, "pitch": pitch, "gain": round(gain, 4)})
    with _LOCK:
        spoken, engine_rate = _synthesise(jobs)
    clips = []
    for x, s in zip(spoken, settings):
        x = _trim_silence(resample(x, engine_rate, SAMPLE_RATE))
        x = x / max(float(np.abs(x).max()), 1e-6) * s["gain"]
        slack = max(0, n_out - len(x))
        offset = int(rng.integers(0, slack // 2 + 1))  # starts within the first half of the free time
        clips.append(fit_length(x, n_out, offset))
    return np.stack(clips), np.asarray(labels, dtype=np.int64), settings


def genguard_home() -> Path:
    """``$GENGUARD_HOME`` when set, else ``~/.genguard``."""
    home = os.environ.get("GENGUARD_HOME")
    return Path(home) if home else Path.home() / ".genguard"


def _cache_path(per_class: int, seed: int, version: str) -> Path:
    tag = hashlib.sha256(f"{FORMAT_VERSION}|{version}|{per_class}|{seed}".encode()).hexdigest()[:12]
    return genguard_home() / "data" / f"spoken_digits-{per_class}x10-seed{seed}-{tag}.npz"


def load_spoken_digits(per_class: int = DEFAULT_PER_CLASS, seed: int = DEFAULT_SEED, cache: bool = True) -> Dataset:
    """The embedded spoken digits as a :class:`Dataset` of audio (``x`` (n, 16000) in [-1, 1], group ``label``)."""
    with _LOCK:
        version = _engine().version
    path = _cache_path(per_class, seed, version)
    x = y = None
    if cache and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                x, y = z["x"].astype(np.float32), z["y"].astype(np.int64)
            if x.shape != (10 * per_class, int(SAMPLE_RATE * CLIP_SECONDS)) or y.shape != (len(x),):
                x = y = None
            elif not np.isfinite(x).all() or np.abs(x).max() > 1.0 or y.min() < 0 or y.max() > 9:
                x = y = None
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # a damaged cache is rebuilt, never trusted
            x = y = None
    if x is None:
        x, y, _ = synthesise_digits(per_class, seed)
        if cache:
            buf = io.BytesIO()
            np.savez_compressed(buf, x=x, y=y)
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, buf.getvalue())
    return Dataset(x=x, modality="audio", name="spoken_digits", groups={"label": y},
                   group_names={"label": list(DIGIT_WORDS)},
                   metadata={"source": f"eSpeak NG {version} (espeakng-loader), synthesised offline, seed {seed}",
                             "sample_rate": SAMPLE_RATE, "voices": list(VOICES), "variants": list(VARIANTS)})


# --------------------------------------------------------------------------------------
# WAV files
# --------------------------------------------------------------------------------------
def read_wav(path: str | os.PathLike, sample_rate: int | None = None, max_seconds: float = MAX_CLIP_SECONDS,
             max_bytes: int = MAX_WAV_BYTES) -> tuple[np.ndarray, int]:
    """One PCM WAV file as mono float32 in [-1, 1] and its rate (``sample_rate``: resampled to it).

    Refuses, with one line naming the file: non-regular or too large files, anything that is not RIFF/WAVE
    PCM (8/16/24/32-bit integer), a declared length beyond the bytes present, more channels or a sample rate
    outside the limits of :mod:`genguard.guardrails.provenance.wavfile` (``MAX_CHANNELS``, ``MIN_RATE`` to
    ``MAX_RATE``), and empty audio. At most ``max_seconds`` are decoded.
    """
    # one RIFF parser for the whole project (guardrails/provenance/wavfile.py): every declared size is checked
    # against the bytes present and the chunk walk is bounded; the standard library's wave module trusts a chunk's
    # declared size (a gigabyte fmt chunk ends in a bare RuntimeError) and walks any number of chunks
    from genguard.guardrails.provenance.wavfile import WavError
    from genguard.guardrails.provenance.wavfile import read_wav as parse_wav

    p = Path(path)
    data = read_bytes_bounded(p, max_bytes, GeneratorError, "WAV file")
    try:
        w = parse_wav(data, str(p), max_seconds)
    except WavError as exc:
        reason = str(exc)
        reason = reason[len(str(p)) + 2:] if reason.startswith(f"{p}: ") else reason
        raise GeneratorError(f"{p}: unreadable WAV ({reason})") from None
    if w.fmt != "pcm":
        raise GeneratorError(f"{p}: {w.bits}-bit float samples are not supported (8, 16, 24 or 32-bit PCM)")
    if w.data_present < w.data_declared:
        raise GeneratorError(f"{p}: header declares {w.data_declared:,} bytes of samples but the file has "
                             f"{w.data_present:,} (truncated or forged)")
    if w.samples.shape[0] == 0:
        raise GeneratorError(f"{p}: no audio samples")
    rate = w.rate
    x = w.mono()
    if sample_rate is not None and rate != sample_rate:
        x, rate = resample(x, rate, sample_rate), int(sample_rate)
    return np.clip(x, -1.0, 1.0).astype(np.float32), int(rate)


def wav_bytes(x: np.ndarray, sample_rate: int) -> bytes:
    """Mono 16-bit PCM WAV of ``x`` (float in [-1, 1], clipped)."""
    import wave

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise GeneratorError(f"a WAV clip must be one channel (1-D), got shape {x.shape}")
    pcm = np.round(np.clip(np.nan_to_num(x), -1.0, 1.0) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def write_wav(path: str | os.PathLike, x: np.ndarray, sample_rate: int) -> Path:
    return atomic_write_bytes(Path(path), wav_bytes(x, sample_rate))


def list_wavs(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in WAV_SUFFIXES)
    if len(files) > MAX_FILES:
        raise GeneratorError(f"{folder}: {len(files):,} WAV files (at most {MAX_FILES:,})")
    return files


def load_wav_folder(folder: str | os.PathLike, sample_rate: int = SAMPLE_RATE,
                    clip_seconds: float = CLIP_SECONDS) -> Dataset:
    """A user's folder of WAV files (sub-folders = classes, group ``label``) at ``sample_rate``, each clip cut or
    padded to ``clip_seconds``. The first unreadable file stops the load with its name (the data set would
    otherwise silently lose records)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise GeneratorError(f"{folder}: no such folder")
    files = list_wavs(folder)
    if not files:
        raise GeneratorError(f"{folder}: no WAV files found (looked for {', '.join(WAV_SUFFIXES)})")
    n = int(round(sample_rate * clip_seconds))
    clips = [fit_length(read_wav(p, sample_rate, max_seconds=clip_seconds + 1.0)[0], n) for p in files]
    ds = Dataset(x=np.stack(clips), modality="audio", name=folder.name or str(folder),
                 metadata={"source": str(folder), "sample_rate": sample_rate})
    parents = [p.parent.relative_to(folder).as_posix() if p.parent != folder else "" for p in files]
    names = sorted(set(parents))
    if len(names) > 1 or (names and names[0] != ""):
        ds.groups = {"label": np.array([names.index(q) for q in parents], dtype=np.int64)}
        ds.group_names = {"label": names}
        ds.metadata["label_names_from_data"] = "sub-folder names"
    return ds


def is_wav_folder(path: Path) -> bool:
    """True when ``path`` is a folder holding WAV files and no images."""
    if not path.is_dir():
        return False
    return any(p.suffix.lower() in WAV_SUFFIXES for p in path.rglob("*") if p.is_file())
