"""The everyday-edit suite: the processing an image meets between a generator and a viewer, as pixel transforms.

Each edit takes and returns a uint8 array (HxW, HxWx3 or HxWx4) and is deterministic, so a robustness
figure can be recomputed by anyone with the same files. Every edit also drops embedded metadata: the
pixels are re-encoded without it (as a social network, an editor or a screenshot does), so a C2PA
manifest never survives these edits and only a watermark (or a fingerprint) can carry the mark through.
"""
from __future__ import annotations

import io
from typing import Callable

import numpy as np


def _pil(arr: np.ndarray):
    from PIL import Image

    return Image.fromarray(arr)


def jpeg(arr: np.ndarray, quality: int = 75) -> np.ndarray:
    """Re-encode as JPEG at ``quality`` (PIL defaults otherwise: 4:2:0 chroma subsampling)."""
    from PIL import Image

    im = _pil(arr)
    if im.mode not in ("L", "RGB"):
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=int(quality))
    with Image.open(io.BytesIO(buf.getvalue())) as out:
        return np.asarray(out.convert(im.mode)).copy()


def resize(arr: np.ndarray, factor: float = 0.5) -> np.ndarray:
    """Scale both sides by ``factor`` (area averaging when shrinking, as thumbnailers do)."""
    from PIL import Image

    h, w = arr.shape[:2]
    size = (max(1, round(w * factor)), max(1, round(h * factor)))
    resample = Image.Resampling.BOX if factor < 1 else Image.Resampling.BICUBIC
    return np.asarray(_pil(arr).resize(size, resample)).copy()


def crop(arr: np.ndarray, keep: float = 0.8) -> np.ndarray:
    """Keep the central ``keep`` fraction of each side, off-centre by a few pixels so no grid stays aligned."""
    h, w = arr.shape[:2]
    nh, nw = max(1, int(h * keep)), max(1, int(w * keep))
    y, x = min((h - nh) // 2 + 1, h - nh), min((w - nw) // 2 + 3, w - nw)
    return arr[y:y + nh, x:x + nw].copy()


def screenshot(arr: np.ndarray) -> np.ndarray:
    """What a screenshot of the image shown at 100 % gives: opaque RGB (alpha composited on white), PNG, no metadata."""
    from PIL import Image

    im = _pil(arr)
    if im.mode in ("RGBA", "LA"):
        bg = Image.new("RGB", im.size, (255, 255, 255))
        bg.paste(im.convert("RGBA"), mask=im.convert("RGBA").getchannel("A"))
        im = bg
    elif im.mode != "RGB":
        im = im.convert("RGB")
    buf = io.BytesIO()
    im.save(buf, "PNG")
    with Image.open(io.BytesIO(buf.getvalue())) as out:
        return np.asarray(out.convert("RGB")).copy()


def rotate(arr: np.ndarray, degrees: float = 2.0) -> np.ndarray:
    """Rotate by ``degrees`` about the centre, bicubic, same canvas size (corners filled by edge pixels' mean)."""
    from PIL import Image

    im = _pil(arr)
    fill = tuple(int(v) for v in np.asarray(arr).reshape(-1, arr.shape[2] if arr.ndim == 3 else 1).mean(0))
    return np.asarray(im.rotate(degrees, resample=Image.Resampling.BICUBIC, expand=False,
                                fillcolor=fill if len(fill) > 1 else fill[0])).copy()


#: The everyday edits, by name: JPEG 75, half size, 80 % crop, screenshot-like PNG re-encode, 2-degree rotation.
EVERYDAY_EDITS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "jpeg75": lambda a: jpeg(a, 75),
    "resize0.5": lambda a: resize(a, 0.5),
    "crop80%": lambda a: crop(a, 0.8),
    "screenshot-png": screenshot,
    "rotate2deg": lambda a: rotate(a, 2.0),
}
