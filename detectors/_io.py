"""Image reading, atomic writes and the progress bar for detectors/ (which imports nothing else of genguard)."""
from __future__ import annotations

import io
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from genguard.detectors import DetectorError

#: Images with more pixels than this are refused as possible decompression bombs.
MAX_PIXELS = 100_000_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")


# --------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read any PNG/JPEG/WebP/TIFF/BMP/GIF (grey, RGB, RGBA, 16-bit, palette) as uint8 RGB (H, W, 3).

    The pixel count is checked from the header before any pixel is decoded, so
    a decompression bomb is refused without using its memory. Every failure
    raises :class:`DetectorError` naming the file.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise DetectorError(f"{path}: no such file")
    if path.is_dir():
        raise DetectorError(f"{path}: is a folder, not an image")
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
                            "(possible decompression bomb; raise max_pixels if you trust the file)")
                    if w == 0 or h == 0:
                        raise DetectorError(f"{path}: empty image")
                    im.seek(0)
                    im.load()
                    return pil_to_rgb(im)
            finally:
                Image.MAX_IMAGE_PIXELS = old_limit
    except DetectorError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else ""
        raise DetectorError(f"{path}: not a readable image ({exc.__class__.__name__}: {msg})") from None


def pil_to_rgb(im) -> np.ndarray:
    """A decoded PIL image of any mode as uint8 RGB; alpha is composited over white."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = float(arr.max())
        if mode.startswith("I;16") or hi > 255:
            scale = 65535.0 if hi > 255 else 255.0
            arr = arr / scale * 255.0
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        rgba = np.asarray(im, dtype=np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)
        return np.clip(np.round(rgb), 0, 255).astype(np.uint8)
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
    """uint8 RGB (or grey) to float32 luma (ITU-R BT.601) in [0, 1]."""
    a = np.asarray(rgb)
    if a.ndim == 2:
        g = a.astype(np.float32)
    else:
        g = a[..., 0] * 0.299 + a[..., 1] * 0.587 + a[..., 2] * 0.114
        g = g.astype(np.float32)
    if np.asarray(rgb).dtype == np.uint8 or g.max() > 1.0 + 1e-6:
        g = g / 255.0
    return g.astype(np.float32)


def list_images(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files given, and image files in the folders given (recursively), in a stable order."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES))
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
    """Write to a temporary file beside ``path``, fsync, then rename: never a half-written file."""
    path = Path(path)
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


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=False) + "\n").encode("utf-8"))


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
