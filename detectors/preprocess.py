"""Tiling, training-time augmentation and the robustness transforms shared by every detector."""
from __future__ import annotations

from typing import Callable

import numpy as np

from genguard.detectors import DetectorError
from genguard.detectors._io import jpeg_roundtrip

PATCH = 64


def pad_to(g: np.ndarray, patch: int) -> np.ndarray:
    """Mirror-pad an image smaller than ``patch`` (no resampling, so no interpolation traces are added)."""
    h, w = g.shape[:2]
    ph, pw = max(0, patch - h), max(0, patch - w)
    if ph or pw:
        g = np.pad(g, ((0, ph), (0, pw)) + ((0, 0),) * (g.ndim - 2), mode="symmetric")
    return g


def grid_tiles(g: np.ndarray, patch: int = PATCH, max_tiles: int = 16) -> np.ndarray:
    """Non-overlapping ``patch`` tiles on the grid anchored at (0, 0), evenly subsampled to ``max_tiles``.

    Deterministic, so the same image always gives the same score; anchoring at
    (0, 0) keeps tiles aligned with an 8x8 JPEG grid.
    """
    g = pad_to(g, patch)
    h, w = g.shape
    ny, nx = h // patch, w // patch
    pos = [(i * patch, j * patch) for i in range(ny) for j in range(nx)]
    if len(pos) > max_tiles:
        idx = np.unique(np.round(np.linspace(0, len(pos) - 1, max_tiles)).astype(int))
        pos = [pos[i] for i in idx]
    return np.stack([g[y:y + patch, x:x + patch] for y, x in pos]).astype(np.float32)


def random_tiles(g: np.ndarray, k: int, rng: np.random.Generator, patch: int = PATCH) -> np.ndarray:
    """``k`` tiles at random positions (training); a small image gives one padded tile."""
    g = pad_to(g, patch)
    h, w = g.shape
    if h == patch and w == patch:
        return g[None].astype(np.float32)
    ys = rng.integers(0, h - patch + 1, size=k)
    xs = rng.integers(0, w - patch + 1, size=k)
    return np.stack([g[y:y + patch, x:x + patch] for y, x in zip(ys, xs)]).astype(np.float32)


# --------------------------------------------------------------------------------------
# transforms on uint8 RGB
# --------------------------------------------------------------------------------------
def resize(rgb: np.ndarray, scale: float) -> np.ndarray:
    import cv2

    h, w = rgb.shape[:2]
    nh, nw = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(rgb, (nw, nh), interpolation=interp)


def blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(rgb, (0, 0), sigmaX=float(sigma))


def add_noise(rgb: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = rgb.astype(np.float32) + rng.normal(0.0, sigma, size=rgb.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)


def center_crop(rgb: np.ndarray, frac: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    nh, nw = max(1, int(h * frac)), max(1, int(w * frac))
    y, x = (h - nh) // 2 + 1, (w - nw) // 2 + 3  # an odd offset breaks any 8x8 / 2x2 grid alignment
    y, x = min(y, h - nh), min(x, w - nw)
    return rgb[y:y + nh, x:x + nw]


def augment(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random resize (x0.5-1.5), blur (sigma 0.3-1.2) and JPEG (quality 55-98), each on or off at random.

    Applied to real and fake training images alike, so neither the file
    format nor a resampling step can become the cue that separates them.
    """
    out = rgb
    if rng.random() < 0.3:
        out = resize(out, float(rng.uniform(0.5, 1.5)))
    if rng.random() < 0.2:
        out = blur(out, float(rng.uniform(0.3, 1.2)))
    if rng.random() < 0.5:
        out = jpeg_roundtrip(out, int(rng.integers(55, 99)))
    return out


def robustness_transforms(seed: int = 0) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """The robustness suite of issue 6: name -> transform of a uint8 RGB image."""
    rng = np.random.default_rng(seed)
    return {
        "clean": lambda x: x,
        "jpeg95": lambda x: jpeg_roundtrip(x, 95),
        "jpeg75": lambda x: jpeg_roundtrip(x, 75),
        "jpeg50": lambda x: jpeg_roundtrip(x, 50),
        "resize0.5": lambda x: resize(x, 0.5),
        "resize2": lambda x: resize(x, 2.0),
        "blur1": lambda x: blur(x, 1.0),
        "crop0.75": lambda x: center_crop(x, 0.75),
        "noise2": lambda x: add_noise(x, 2.0, rng),
    }


def normalise_format(rgb: np.ndarray, fmt: str) -> np.ndarray:
    """Re-encode to one format so that real and fake cannot differ by file format ('png' = decoded pixels)."""
    if fmt == "png":
        return rgb
    if fmt.startswith("jpeg"):
        try:
            q = int(fmt[4:] or 95)
        except ValueError:
            raise DetectorError(f"unknown format {fmt!r}; use png or jpegNN (e.g. jpeg95)") from None
        return jpeg_roundtrip(rgb, q)
    raise DetectorError(f"unknown format {fmt!r}; use png or jpegNN (e.g. jpeg95)")
