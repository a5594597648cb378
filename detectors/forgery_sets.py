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
#: a third, disjoint set for copy-move only (other photos, sizes and transforms than both splits)
THIRD_PHOTOS = ("cat", "hubble_deep_field", "retina", "moon", "grass", "gravel", "clock", "cell")
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


def copy_move_third(n_forged: int = 48, n_untouched: int = 48, seed: int = 7
                    ) -> tuple[list[tuple[np.ndarray, np.ndarray, dict]], list[tuple[np.ndarray, dict]]]:
    """Copy-move forgeries and untouched images from :data:`THIRD_PHOTOS` (in neither split).

    Crops of 200-600 px (not square), a 40-72 px block translated, or a disc
    rotated up to 20 degrees and scaled 0.85-1.15; the source is drawn at random,
    so it lands in smooth (sky, moon, retina background) and textured (grass,
    gravel) places alike; everything saved at JPEG 90. Untouched: crops of the
    same sizes at JPEG 90 or 75.
    """
    import cv2

    from genguard.detectors._io import jpeg_roundtrip

    rng = np.random.default_rng(seed)
    imgs = {n: photo(n) for n in THIRD_PHOTOS}

    def crop():
        name = THIRD_PHOTOS[int(rng.integers(len(THIRD_PHOTOS)))]
        img = imgs[name]
        ch = int(rng.integers(200, min(600, img.shape[0]) + 1))
        cw = int(rng.integers(200, min(600, img.shape[1]) + 1))
        y, x = int(rng.integers(0, img.shape[0] - ch + 1)), int(rng.integers(0, img.shape[1] - cw + 1))
        return name, np.ascontiguousarray(img[y:y + ch, x:x + cw])

    forged = []
    for k in range(n_forged):
        name, img = crop()
        h, w = img.shape[:2]
        r = int(rng.integers(40, 73))
        sy, sx = int(rng.integers(0, h - r)), int(rng.integers(0, w - r))
        for _ in range(1000):
            ty, tx = int(rng.integers(0, h - r)), int(rng.integers(0, w - r))
            if abs(ty - sy) >= r or abs(tx - sx) >= r:
                break
        patch = img[sy:sy + r, sx:sx + r]
        shape = np.ones((r, r), np.uint8)
        ang, sc = 0.0, 1.0
        if k % 2:
            ang, sc = float(rng.uniform(-20, 20)), float(rng.uniform(0.85, 1.15))
            M = cv2.getRotationMatrix2D((r / 2, r / 2), ang, sc)
            patch = cv2.warpAffine(patch, M, (r, r), borderMode=cv2.BORDER_REFLECT)
            shape = np.zeros((r, r), np.uint8)
            cv2.circle(shape, (r // 2, r // 2), int(r * 0.48), 1, -1)
            src = cv2.warpAffine(shape, cv2.invertAffineTransform(M), (r, r), flags=cv2.INTER_NEAREST)
        else:
            src = shape
        out = img.copy()
        region = out[ty:ty + r, tx:tx + r]
        region[shape > 0] = patch[shape > 0]
        gt = np.zeros((h, w), bool)
        gt[sy:sy + r, sx:sx + r] |= src > 0
        gt[ty:ty + r, tx:tx + r] |= shape > 0
        forged.append((jpeg_roundtrip(out, 90), gt, {"photo": name, "size": [w, h], "block": r,
                                                     "angle": round(ang, 1), "scale": round(sc, 3)}))
    untouched_imgs = []
    for k in range(n_untouched):
        name, img = crop()
        q = 90 if k % 2 == 0 else 75
        untouched_imgs.append((jpeg_roundtrip(img, q), {"photo": name, "size": list(img.shape[1::-1]), "jpeg": q}))
    return forged, untouched_imgs


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
