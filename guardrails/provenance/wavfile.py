"""Read and write WAV bytes defensively: PCM 8/16/24/32-bit and IEEE float, chunk sizes checked against the file, bounded memory.

Why not the standard library's ``wave``: it reads PCM only, trusts the declared chunk sizes (a header
declaring 4 GB of data makes it try to read them) and raises many exception types. A WAV is only a
list of RIFF chunks, so it is parsed here: every declared size is checked against the bytes that are
there, a lying data size is cut to the data present (and said so), and anything that is not integer PCM
or IEEE float (A-law, ADPCM, MP3-in-WAV...) is refused with a one-line reason.
"""
from __future__ import annotations

import dataclasses
import struct

import numpy as np

#: Largest WAV genguard reads: 128 MB is over an hour of 16 kHz 16-bit mono. Decoding makes a float32 copy
#: of the samples (at most 4x the bytes, for 8-bit PCM), unless ``max_seconds`` limits it.
MAX_WAV_BYTES = 128 * 1024 * 1024
MAX_CHANNELS = 16
#: sample rates outside this range are refused (no real recording has them; they would make resampling absurd)
MIN_RATE, MAX_RATE = 1000, 384_000
_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE
# the first two bytes of the KSDATAFORMAT_SUBTYPE GUIDs name the format like wFormatTag does
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"


class WavError(ValueError):
    """A WAV file that cannot be read (the message says why, in one line)."""


@dataclasses.dataclass
class Wav:
    """Decoded samples (float32, shape (frames, channels), full scale +/-1) and how they were stored."""

    samples: np.ndarray
    rate: int
    fmt: str  # "pcm" or "float"
    bits: int
    note: str = ""  # e.g. that the declared data size was larger than the file
    data_declared: int = 0  # bytes the data chunk's header declares
    data_present: int = 0  # bytes of it the file holds

    @property
    def duration(self) -> float:
        return self.samples.shape[0] / self.rate

    def mono(self) -> np.ndarray:
        return self.samples.mean(axis=1, dtype=np.float32) if self.samples.shape[1] > 1 else self.samples[:, 0]


def is_wav(data: bytes) -> bool:
    return data[:4] == b"RIFF" and data[8:12] == b"WAVE"


#: A WAV holds a handful of chunks (fmt, data, LIST, C2PA...); a file of more is refused instead of walked: 128 MB of
#: 8-byte empty chunks would be 16 million steps (half a minute) before the samples are reached.
MAX_CHUNKS = 1024


def _chunks(data: bytes, name: str = "<wav>"):
    """(id, start, declared size, size present) of each chunk; stops at the end of the bytes present, and raises
    :class:`WavError` past :data:`MAX_CHUNKS` chunks."""
    p = 12
    count = 0
    while p + 8 <= len(data):
        count += 1
        if count > MAX_CHUNKS:
            raise WavError(f"{name}: more than {MAX_CHUNKS:,} RIFF chunks (a WAV has a handful); refused")
        cid = data[p:p + 4]
        size = struct.unpack_from("<I", data, p + 4)[0]
        present = min(size, len(data) - p - 8)
        yield cid, p + 8, size, present
        p += 8 + size + (size & 1)


def check_chunk_count(data: bytes, name: str = "<wav>") -> None:
    """Raise :class:`WavError` when the RIFF file ``data`` (WAV, WebP, AVI) has more than :data:`MAX_CHUNKS`
    top-level chunks. :func:`read_wav` stops at the samples; this walks the whole file, for readers such as c2pa's
    that walk every chunk (through a Python callback per read: two million chunks took 40 s)."""
    for _ in _chunks(data, name):
        pass


def _chunk_name(cid: bytes) -> str:
    return repr(cid.decode("latin-1")) if all(32 <= c < 127 for c in cid) else cid.hex()


def read_wav(data: bytes, name: str = "<wav>", max_seconds: float | None = None) -> Wav:
    """Decode a WAV file's bytes (only the first ``max_seconds`` when given); raise :class:`WavError` naming
    ``name`` and the problem."""
    if len(data) > MAX_WAV_BYTES:
        raise WavError(f"{name}: {len(data):,} bytes exceeds the {MAX_WAV_BYTES:,}-byte limit for a WAV file")
    if not is_wav(data):
        raise WavError(f"{name}: not a WAV file (no RIFF/WAVE header)")
    fmt_chunk = None
    data_span = None
    note = ""
    data_declared = 0
    for cid, start, size, present in _chunks(data, name):
        if cid == b"data" and data_span is None:
            if present < size:
                note = f"declared data size {size:,} bytes, {present:,} present: read what is there"
            data_span = (start, present)
            data_declared = size
        elif present < size and (fmt_chunk is None or data_span is None):
            # only a data chunk may run short (a recording cut off); any other chunk that claims more bytes than the
            # file has before the samples were found hides them behind a forged size
            raise WavError(f"{name}: {_chunk_name(cid)} chunk declares {size:,} bytes but the file has {present:,} "
                           "after its header (truncated or forged)")
        elif cid == b"fmt " and fmt_chunk is None:
            if present < 16:
                raise WavError(f"{name}: truncated fmt chunk ({present} bytes)")
            fmt_chunk = data[start:start + present]
        if fmt_chunk is not None and data_span is not None:
            break  # nothing after the samples is read: no need to walk it
    if fmt_chunk is None:
        raise WavError(f"{name}: no fmt chunk")
    if data_span is None:
        raise WavError(f"{name}: no data chunk")
    tag, channels, rate, _, block, bits = struct.unpack_from("<HHIIHH", fmt_chunk)
    if tag == _EXTENSIBLE:
        if len(fmt_chunk) < 40 or fmt_chunk[26:40] != _GUID_TAIL:
            raise WavError(f"{name}: WAVE_FORMAT_EXTENSIBLE with an unknown sub-format")
        tag = struct.unpack_from("<H", fmt_chunk, 24)[0]
    if tag not in (_PCM, _FLOAT):
        raise WavError(f"{name}: WAV format tag 0x{tag:04x} is not PCM or IEEE float (compressed WAV is not read)")
    if not 1 <= channels <= MAX_CHANNELS:
        raise WavError(f"{name}: {channels} channels (1 to {MAX_CHANNELS} are read)")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise WavError(f"{name}: sample rate {rate} Hz outside {MIN_RATE}-{MAX_RATE} Hz")
    ok_bits = (8, 16, 24, 32) if tag == _PCM else (32, 64)
    if bits not in ok_bits:
        raise WavError(f"{name}: {bits}-bit {'PCM' if tag == _PCM else 'float'} samples are not read")
    width = bits // 8
    if block != width * channels:
        raise WavError(f"{name}: block size {block} does not match {channels} x {bits}-bit samples")
    start, n = data_span
    frames = n // block  # may be 0: an empty clip is a WAV file, it just carries no mark
    if max_seconds is not None:
        frames = min(frames, int(max_seconds * rate))
    raw = np.frombuffer(data, dtype=np.uint8, count=frames * block, offset=start)
    if tag == _FLOAT:
        x = raw.view("<f4" if bits == 32 else "<f8").astype(np.float32)
        if x.size and not np.all(np.isfinite(x)):
            raise WavError(f"{name}: float samples contain NaN or infinity")
        if x.size and np.max(np.abs(x)) > 1e3:
            raise WavError(f"{name}: float samples up to {float(np.max(np.abs(x))):.3g}, far outside +/-1 full scale")
        fmt = "float"
    elif bits == 8:
        x = (raw.astype(np.float32) - 128.0) / 128.0
        fmt = "pcm"
    elif bits == 24:
        b = raw.reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
        fmt = "pcm"
    else:
        x = raw.view("<i2" if bits == 16 else "<i4").astype(np.float32) / float(1 << (bits - 1))
        fmt = "pcm"
    return Wav(x.reshape(frames, channels), int(rate), fmt, int(bits), note, int(data_declared), int(n))


def encode_wav(samples: np.ndarray, rate: int, fmt: str = "pcm", bits: int = 16) -> bytes:
    """WAV bytes of ``samples`` (float, (frames,) or (frames, channels), +/-1 full scale; clipped for PCM)."""
    x = np.asarray(samples, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    channels = x.shape[1]
    if fmt == "float":
        body = x.astype("<f4" if bits == 32 else "<f8").tobytes()
        tag = _FLOAT
    elif bits == 8:
        body = np.clip(np.rint(x * 128.0 + 128.0), 0, 255).astype(np.uint8).tobytes()
        tag = _PCM
    else:
        full = float(1 << (bits - 1))
        v = np.clip(np.rint(x * full), -full, full - 1).astype(np.int64)
        if bits == 24:
            u = (v & 0xFFFFFF).astype(np.uint32)
            body = np.stack([u & 0xFF, (u >> 8) & 0xFF, u >> 16], axis=-1).astype(np.uint8).tobytes()
        else:
            body = v.astype("<i2" if bits == 16 else "<i4").tobytes()
        tag = _PCM
    block = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt_chunk)) + fmt_chunk
    chunks += b"data" + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks
