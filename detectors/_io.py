"""Image reading, atomic writes and the progress bar for detectors/ (which imports nothing else of genguard)."""
from __future__ import annotations

import io
import json
import os
import struct
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from genguard.detectors import DetectorError

#: Images with more pixels than this (8192 x 8192) are refused as possible decompression bombs; with
#: it every command that decodes an image stays under its documented memory ceiling (README).
MAX_PIXELS = 67_108_864
#: Image files larger than this are refused before they are opened.
MAX_IMAGE_BYTES = 512 * 1024 * 1024
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif")


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def check_regular_file(path: str | os.PathLike, max_bytes: int | None = MAX_IMAGE_BYTES) -> os.stat_result:
    """Refuse what is not a regular file (FIFO, device, socket, folder) before it is opened, and oversized files.

    ``stat`` never blocks; ``open`` on a FIFO waits for a writer forever. (The
    same check lives in generators/_io.py; detectors/ imports nothing of the project.)
    """
    import stat as _stat

    p = Path(path)
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise DetectorError(f"{p}: no such file") from None
    except OSError as exc:
        raise DetectorError(f"{p}: cannot read: {exc.strerror or exc}") from None
    if _stat.S_ISDIR(st.st_mode):
        raise DetectorError(f"{p}: is a folder, not an image")
    if not _stat.S_ISREG(st.st_mode):
        kind = "a FIFO" if _stat.S_ISFIFO(st.st_mode) else "a socket" if _stat.S_ISSOCK(st.st_mode) else "a device"
        raise DetectorError(f"{p}: is {kind}, not a regular file; refused")
    if max_bytes is not None and st.st_size > max_bytes:
        raise DetectorError(f"{p}: {st.st_size:,} bytes exceeds the {max_bytes:,}-byte limit for an image file")
    return st


def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read any PNG/JPEG/WebP/AVIF/TIFF/BMP/GIF (grey, RGB, RGBA, 16-bit, palette) as uint8 RGB (H, W, 3).

    The file must be a regular file within :data:`MAX_IMAGE_BYTES`, and the
    pixel count is checked from the header before any pixel is decoded (Pillow
    reads only the header in ``open``, for every format it knows), so a
    decompression bomb is refused without using its memory. Only the first
    frame of an animation is decoded. Every failure raises
    :class:`DetectorError` naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            old_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # our own limit below applies, with a clearer message
            try:
                with Image.open(path) as im:
                    w, h = im.size
                    if w * h > max_pixels:
                        raise DetectorError(
                            f"{path}: {w}x{h} = {w * h:,} pixels exceeds the {max_pixels:,}-pixel limit "
                            "(possible decompression bomb; raise --max-pixels if you trust the file)")
                    if w == 0 or h == 0:
                        raise DetectorError(f"{path}: empty image")
                    im.seek(0)
                    if im.size != (w, h):  # a later-declared frame size must obey the same budget
                        raise DetectorError(f"{path}: frame size {im.size} differs from the header's {w}x{h}")
                    im.load()
                    return pil_to_rgb(im)
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except DetectorError:
        raise
    except MemoryError:
        raise DetectorError(f"{path}: not enough memory to decode this image") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError,
            struct.error, Image.DecompressionBombError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise DetectorError(f"{path}: not a readable image ({exc.__class__.__name__}: {msg})") from None


_ROWS = 1024  # rows converted at a time, so a float copy of a large image is never made whole


def pil_to_rgb(im) -> np.ndarray:
    """A decoded PIL image of any mode as uint8 RGB; alpha is composited over white.

    Conversions that need floats run in bands of rows, so the peak extra
    memory is a few MB whatever the image size.
    """
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        src = np.asarray(im)
        hi = float(src.max()) if src.size else 0.0
        scale = 1.0
        if mode.startswith("I;16") or hi > 255:
            scale = (65535.0 if hi > 255 else 255.0) / 255.0
        out = np.empty(src.shape[:2] + (3,), np.uint8)
        for y in range(0, src.shape[0], _ROWS):
            band = src[y:y + _ROWS].astype(np.float32) / np.float32(scale)
            band = np.nan_to_num(band, nan=0.0, posinf=255.0, neginf=0.0)
            out[y:y + _ROWS] = np.clip(np.round(band), 0, 255).astype(np.uint8)[..., None]
        return out
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        rgba = np.asarray(im.convert("RGBA"))
        out = np.empty(rgba.shape[:2] + (3,), np.uint8)
        for y in range(0, rgba.shape[0], _ROWS):
            band = rgba[y:y + _ROWS].astype(np.float32)
            alpha = band[..., 3:4] / 255.0
            out[y:y + _ROWS] = np.clip(np.round(band[..., :3] * alpha + 255.0 * (1.0 - alpha)), 0, 255).astype(np.uint8)
        return out
    if mode != "RGB":
        im = im.convert("RGB")
    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))


def as_rgb_array(image: Any, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """A path or an array (H, W), (H, W, 1|3|4), uint8 or float in [0, 1], as uint8 RGB."""
    if isinstance(image, (str, os.PathLike)):
        return read_image(image, max_pixels=max_pixels)
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 2, 3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DetectorError(f"an image must be (H, W) or (H, W, 1|3|4), got shape {np.asarray(image).shape}")
    if arr.shape[0] * arr.shape[1] > max_pixels:
        raise DetectorError(f"array image of {arr.shape[1]}x{arr.shape[0]} exceeds the {max_pixels:,}-pixel limit")
    if arr.dtype != np.uint8:
        f = arr.astype(np.float32)
        if not np.isfinite(f).all():
            raise DetectorError("image array contains NaN or infinite values")
        if f.max() <= 1.0 + 1e-6 and f.min() >= 0.0:
            f = f * 255.0
        arr = np.clip(np.round(f), 0, 255).astype(np.uint8)
    c = arr.shape[2]
    if c == 1:
        return np.repeat(arr, 3, axis=2)
    if c == 2:  # grey + alpha
        arr = np.concatenate([np.repeat(arr[..., :1], 3, axis=2), arr[..., 1:]], axis=2)
        c = 4
    if c == 4:
        a = arr[..., 3:4].astype(np.float32) / 255.0
        rgb = arr[..., :3].astype(np.float32) * a + 255.0 * (1 - a)
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def to_grey(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB (or grey) to float32 luma (ITU-R BT.601) in [0, 1], computed in float32 bands of rows."""
    a = np.asarray(rgb)
    scale = a.dtype == np.uint8
    if a.ndim == 2:
        g = a.astype(np.float32)
    else:
        g = np.empty(a.shape[:2], np.float32)
        wts = np.array([0.299, 0.587, 0.114], np.float32)
        for y in range(0, a.shape[0], _ROWS):
            g[y:y + _ROWS] = a[y:y + _ROWS, :, :3].astype(np.float32) @ wts
    if scale or (g.size and g.max() > 1.0 + 1e-6):
        g /= np.float32(255.0)
    return g


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files given, and image files in the folders given (recursively), in a stable order."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.suffix.lower() in IMAGE_SUFFIXES and not q.is_dir()))
        elif p.exists():
            out.append(p)
        else:
            raise DetectorError(f"{p}: no such file or folder")
    return out


# --------------------------------------------------------------------------------------
# encoding (used by augmentation, robustness and forgery analysis)
# --------------------------------------------------------------------------------------
def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Encode uint8 RGB/grey as JPEG at ``quality`` (4:2:0 like most cameras) and decode it again."""
    import cv2

    a = np.asarray(rgb, dtype=np.uint8)
    bgr = a[..., ::-1] if a.ndim == 3 else a
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [int(cv2.IMWRITE_JPEG_QUALITY), int(quality)])
    if not ok:
        raise DetectorError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR if a.ndim == 3 else cv2.IMREAD_GRAYSCALE)
    return np.ascontiguousarray(dec[..., ::-1]) if a.ndim == 3 else dec


def encode_png(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------
def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temporary file beside ``path``, fsync, then rename: never a half-written file.

    ``-`` is standard output; an existing non-regular target (``/dev/stdout``, a FIFO) is written in
    place and never renamed over (as in generators/_io.py).
    """
    import stat as _stat
    import sys

    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return Path("-")
    path = Path(path)
    if path.is_dir():
        raise DetectorError(f"{path}: is a folder; give a file path")
    try:
        special = not _stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        special = False
    if special:
        with open(path, "wb") as fh:
            fh.write(data)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    done = False
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        done = True
    finally:
        if not done:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
    return path


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats as ``None`` (plus a sibling ``<key>_reason`` in a dict): JSON has no NaN."""
    import math

    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            v = v.item() if isinstance(v, np.generic) else v
            if isinstance(v, float) and not math.isfinite(v):
                out[str(k)] = None
                out.setdefault(f"{k}_reason", f"not a finite number ({v})")
            else:
                out[str(k)] = json_safe(v)
        return out
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return obj


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(json_safe(obj), indent=2, allow_nan=False) + "\n").encode("utf-8"))


def write_png(path: str | os.PathLike, arr: np.ndarray) -> Path:
    return atomic_write_bytes(path, encode_png(arr))


# --------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------
class _NullBar:
    def __call__(self, n: int = 1, status: str = "") -> None:
        return None


class progress_bar:
    """Context manager yielding ``advance(n, status)``: a rich bar on stderr, off if GENGUARD_NO_PROGRESS is set."""

    def __init__(self, description: str, total: int | None, enabled: bool = True) -> None:
        self.description, self.total = description, total
        self.enabled = enabled and not os.environ.get("GENGUARD_NO_PROGRESS")
        self._progress = None

    def __enter__(self):
        if not self.enabled:
            return _NullBar()
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                                  console=Console(stderr=True))
        self._progress.start()
        task = self._progress.add_task(self.description, total=self.total, status="")

        def advance(n: int = 1, status: str = "") -> None:
            self._progress.update(task, advance=n, status=status)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.stop()


def sequence_len(x: Sequence[Any]) -> int:
    return len(x)
