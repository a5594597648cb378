"""Untouched photos and planted forgeries for calibrating and measuring the forgery analyses.

Everything comes from photos that ship with the installed packages (no
download): scikit-image's ``data`` photos, scikit-learn's sample images and
matplotlib's sample data. Two disjoint photo sets:

* ``"build"`` (calibration and tuning): scikit-image astronaut, coffee,
  chelsea, rocket, camera, immunohistochemistry;
* ``"check"`` (never used to set a threshold or a quantile): scikit-learn
  china and flower, matplotlib grace_hopper, scikit-image stereo_motorcycle
  (left view) and coins.

Untouched images are crops at several sizes saved as PNG (no compression
history), JPEG at several qualities, or JPEG twice (an untouched photo that
was re-saved); forgeries are made from the same kind of crops: copy-move
(a square block or a rotated / scaled disc of 40-72 px copied within the
image), a splice from another JPEG whose 8x8 grid is misaligned, a region
that was once saved at a low JPEG quality, and a region with added noise;
each forgery is saved at JPEG 90.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

BUILD_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry")
CHECK_PHOTOS = ("china", "flower", "grace_hopper", "stereo_motorcycle", "coins")
#: how an untouched crop is saved: PNG, one JPEG, or JPEG twice (first quality, then second)
SAVES = (("png",), ("jpeg", 95), ("jpeg", 90), ("jpeg", 75), ("jpeg", 75, 90))
FORGERY_KINDS = ("copy_move_block", "copy_move_disc", "splice_grid", "ghost", "noise")


def photo(name: str) -> np.ndarray:
    """One shipped photo as uint8 RGB (greyscale photos repeated over three channels)."""
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_image

        img = load_sample_image(f"{name}.jpg")
    elif name == "grace_hopper":
        import matplotlib.cbook as cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            img = np.asarray(Image.open(f).convert("RGB"))
    else:
        from skimage import data

        img = getattr(data, name)()
        if isinstance(img, tuple):  # stereo_motorcycle: (left, right, disparity)
            img = img[0]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def photos(split: str) -> list[np.ndarray]:
    if split not in ("build", "check"):
        raise ValueError(f"split must be 'build' or 'check', not {split!r}")
    return [photo(n) for n in (BUILD_PHOTOS if split == "build" else CHECK_PHOTOS)]


def _crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(size, h, w)
    y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
    return np.ascontiguousarray(img[y:y + s, x:x + s])


def _save(img: np.ndarray, how: tuple) -> np.ndarray:
    from genguard.detectors._io import jpeg_roundtrip

    if how[0] == "png":
        return img
    for q in how[1:]:
        img = jpeg_roundtrip(img, int(q))
    return img


def untouched(split: str, per_photo: int = 10, sizes: tuple[int, ...] = (128, 192, 256, 384),
              seed: int = 0) -> Iterator[tuple[np.ndarray, dict]]:
    """``per_photo`` untouched crops of each photo of ``split``: sizes and saves cycled, positions random."""
    rng = np.random.default_rng(seed + (0 if split == "build" else 1000))
    for name, img in zip(BUILD_PHOTOS if split == "build" else CHECK_PHOTOS, photos(split)):
        for k in range(per_photo):
            size = sizes[k % len(sizes)]
            how = SAVES[(k + k // len(sizes)) % len(SAVES)]
            yield _save(_crop(img, size, rng), how), {"photo": name, "size": size, "save": list(how)}


def copy_move_block(rgb: np.ndarray, rng: np.random.Generator, size: tuple[int, int] = (40, 73),
                    jpeg_quality: int = 90) -> tuple[np.ndarray, np.ndarray]:
    """A square block of 40-72 px copied (translated) to a non-overlapping place; JPEG ``jpeg_quality``."""
    from genguard.detectors._io import jpeg_roundtrip

    img = rgb.copy()
    h, w = img.shape[:2]
    r = int(rng.integers(*size))
    sy, sx = int(rng.integers(0, h - r)), int(rng.integers(0, w - r))
    for _ in range(1000):
        ty, tx = int(rng.integers(0, h - r)), int(rng.integers(0, w - r))
        if abs(ty - sy) >= r or abs(tx - sx) >= r:
            break
    img[ty:ty + r, tx:tx + r] = rgb[sy:sy + r, sx:sx + r]
    gt = np.zeros((h, w), bool)
    gt[ty:ty + r, tx:tx + r] = gt[sy:sy + r, sx:sx + r] = True
    return jpeg_roundtrip(img, jpeg_quality), gt


def _region(h: int, w: int, rng: np.random.Generator, lo: int = 48, hi: int = 97) -> tuple[int, int, int]:
    r = int(rng.integers(lo, min(hi, h // 2, w // 2) + 1))
    return int(rng.integers(0, h - r + 1)), int(rng.integers(0, w - r + 1)), r


def forgery(kind: str, rgb: np.ndarray, rng: np.random.Generator, donor: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """A forgery of ``kind`` (one of :data:`FORGERY_KINDS`) made from ``rgb``, saved at JPEG 90, and its truth."""
    from genguard.detectors._io import jpeg_roundtrip
    from genguard.detectors.evaluate import make_copy_move

    h, w = rgb.shape[:2]
    if kind == "copy_move_block":
        return copy_move_block(rgb, rng)
    if kind == "copy_move_disc":
        return make_copy_move(rgb, rng, size=(40, 73))
    gt = np.zeros((h, w), bool)
    y, x, r = _region(h, w, rng)
    gt[y:y + r, x:x + r] = True
    out = rgb.copy()
    if kind == "splice_grid":
        # the background and the donor were both JPEGs; the pasted block's grid is off by (dy, dx)
        bg = jpeg_roundtrip(rgb, 75)
        src = jpeg_roundtrip(donor if donor is not None else rgb[::-1].copy(), 75)
        dy, dx = int(rng.integers(1, 8)), int(rng.integers(1, 8))
        sy = int(rng.integers(0, src.shape[0] - r - dy + 1))
        sx = int(rng.integers(0, src.shape[1] - r - dx + 1))
        out = bg.copy()
        out[y:y + r, x:x + r] = src[sy + dy:sy + dy + r, sx + dx:sx + dx + r]
    elif kind == "ghost":
        out[y:y + r, x:x + r] = jpeg_roundtrip(rgb, int(rng.integers(50, 71)))[y:y + r, x:x + r]
    elif kind == "noise":
        o = out.astype(np.float32)
        o[y:y + r, x:x + r] += rng.normal(0, float(rng.uniform(4, 10)), (r, r, 3))
        out = np.clip(np.round(o), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown forgery kind {kind!r}; choose from {', '.join(FORGERY_KINDS)}")
    return jpeg_roundtrip(out, 90), gt


def forgeries(split: str, per_photo: int = 10, kinds: tuple[str, ...] = FORGERY_KINDS,
              sizes: tuple[int, ...] = (256, 384), seed: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray, dict]]:
    """``per_photo`` forgeries of each photo of ``split`` (kinds and sizes cycled): image, truth, description."""
    rng = np.random.default_rng(seed + (500 if split == "build" else 1500))
    imgs = photos(split)
    names = BUILD_PHOTOS if split == "build" else CHECK_PHOTOS
    for i, (name, img) in enumerate(zip(names, imgs)):
        donor = imgs[(i + 1) % len(imgs)]
        for k in range(per_photo):
            kind = kinds[k % len(kinds)]
            size = sizes[(k // len(kinds)) % len(sizes)]
            crop = _crop(img, size, rng)
            out, gt = forgery(kind, crop, rng, _crop(donor, size, rng))
            yield out, gt, {"photo": name, "size": int(crop.shape[0]), "kind": kind}
