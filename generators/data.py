"""Embedded data sets (digits, diabetes, Python's documentation text, spoken digits) and reading/writing user files.

Everything here ships with an installed package — scikit-learn's digits and
diabetes data, the ``pydoc_data`` topics of CPython — so nothing is downloaded.
"""
from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from genguard.generators._io import atomic_write_bytes, atomic_write_text
from genguard.generators.base import Dataset, GeneratorError, Samples

#: Seed of the fixed train/holdout split of every embedded data set.
SPLIT_SEED = 20240611
HOLDOUT_FRACTION = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
#: Images larger than this are refused as possible decompression bombs.
MAX_PIXELS = 100_000_000
#: Generated digits (8x8) are written as PNG enlarged by this factor (nearest neighbour),
#: so a person can look at them; reading them back reverses it exactly.
DIGITS_PIXEL_SCALE = 4

EMBEDDED = ("digits", "diabetes", "pydoc", "spoken_digits")


def _stratified_split(labels: np.ndarray, holdout_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    train, holdout = train_test_split(idx, test_size=holdout_fraction, random_state=seed, stratify=labels)
    return np.sort(train), np.sort(holdout)


def load_digits() -> Dataset:
    """scikit-learn's 1,797 handwritten digits as 8x8 images in [0, 1], the digit as group ``label``."""
    from sklearn.datasets import load_digits as _ld

    d = _ld()
    x = (d.images / 16.0).astype(np.float32)
    return Dataset(
        x=x,
        modality="image",
        name="digits",
        groups={"label": d.target.astype(np.int64)},
        group_names={"label": [str(i) for i in range(10)]},
        metadata={"source": "sklearn.datasets.load_digits", "pixel_scale": DIGITS_PIXEL_SCALE, "levels": 17},
    )


def load_diabetes() -> Dataset:
    """scikit-learn's diabetes table (442 rows, unscaled), ``sex`` as the group attribute."""
    from sklearn.datasets import load_diabetes as _ldb

    frame = _ldb(as_frame=True, scaled=False).frame.copy()
    uniq = sorted(frame["sex"].unique())
    names = [f"sex={v:g}" for v in uniq]
    codes = np.searchsorted(uniq, frame["sex"].to_numpy())
    return Dataset(
        x=frame,
        modality="tabular",
        name="diabetes",
        groups={"sex": codes.astype(np.int64)},
        group_names={"sex": names},
        metadata={"source": "sklearn.datasets.load_diabetes", "categorical": ["sex"], "target": "target"},
    )


def load_pydoc_text(min_chars: int = 200) -> Dataset:
    """Passages of Python's own documentation (``pydoc_data.topics``), one topic per item."""
    from pydoc_data.topics import topics

    passages = []
    for key in sorted(topics):
        text = re.sub(r"[ \t]+", " ", topics[key]).strip()
        if len(text) >= min_chars:
            passages.append(text)
    if not passages:
        raise GeneratorError("pydoc_data.topics holds no passages on this Python")
    return Dataset(x=passages, modality="text", name="pydoc", metadata={"source": "pydoc_data.topics"})


def load_embedded(name: str) -> Dataset:
    from genguard.generators.audio_data import load_spoken_digits

    loaders = {"digits": load_digits, "diabetes": load_diabetes, "pydoc": load_pydoc_text,
               "spoken_digits": load_spoken_digits}
    if name not in loaders:
        raise GeneratorError(f"unknown data set {name!r}; embedded ones are {', '.join(EMBEDDED)}, or give a folder")
    return loaders[name]()


def train_holdout(data: Dataset, holdout_fraction: float = HOLDOUT_FRACTION, seed: int = SPLIT_SEED) -> tuple[Dataset, Dataset]:
    """The fixed, stratified (by the first group attribute, if any) train/holdout split."""
    n = len(data)
    if data.groups:
        labels = next(iter(data.groups.values()))
    else:
        labels = np.zeros(n, dtype=np.int64)
    if n < 10:
        raise GeneratorError(f"data set {data.name!r} has {n} items; at least 10 are needed for a train/holdout split")
    try:
        train, holdout = _stratified_split(labels, holdout_fraction, seed)
    except ValueError:  # a group too small to stratify: fall back to a plain random split
        rng = np.random.default_rng(seed)
        perm = rng.permutation(n)
        k = max(1, int(round(n * holdout_fraction)))
        holdout, train = np.sort(perm[:k]), np.sort(perm[k:])
    return data.subset(train, f"{data.name}-train"), data.subset(holdout, f"{data.name}-holdout")


def digits_split() -> tuple[Dataset, Dataset]:
    """The embedded default data: digits train (1,437) and holdout (360) splits."""
    return train_holdout(load_digits())


# --------------------------------------------------------------------------------------
# Images on disk
# --------------------------------------------------------------------------------------
def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None, grey: bool = True,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read one image as float32 in [0, 1]; ``size`` = (H, W) resizes with area averaging.

    Raises :class:`GeneratorError` naming the file for anything unreadable,
    empty, or larger than ``max_pixels`` (a possible decompression bomb).
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise GeneratorError(f"{path}: {w}x{h} image exceeds the {max_pixels:,}-pixel limit (possible decompression bomb)")
            if w == 0 or h == 0:
                raise GeneratorError(f"{path}: empty image")
            im.load()
            im = im.convert("L" if grey else "RGB")
            if size is not None and (h, w) != tuple(size):
                im = im.resize((size[1], size[0]), Image.Resampling.BOX)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except GeneratorError:
        raise
    except FileNotFoundError:
        raise GeneratorError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise GeneratorError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    return arr


def list_images(folder: str | os.PathLike) -> list[Path]:
    folder = Path(folder)
    if not folder.exists():
        raise GeneratorError(f"{folder}: no such folder")
    if folder.is_file():
        return [folder]
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GeneratorError(f"{folder}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def load_image_folder(folder: str | os.PathLike, size: tuple[int, int] = (8, 8), grey: bool = True,
                      group_from_subfolders: bool = True) -> Dataset:
    """A user's folder of images as a :class:`Dataset`; sub-folder names become the ``label`` group."""
    folder = Path(folder)
    files = list_images(folder)
    images = np.stack([read_image(p, size=size, grey=grey) for p in files])
    ds = Dataset(x=images, modality="image", name=folder.name or str(folder), metadata={"source": str(folder)})
    if group_from_subfolders:
        parents = [p.parent.relative_to(folder).as_posix() if p.parent != folder else "" for p in files]
        names = sorted(set(parents))
        if len(names) > 1 or (names and names[0] != ""):
            codes = np.array([names.index(p) for p in parents], dtype=np.int64)
            ds.groups = {"label": codes}
            ds.group_names = {"label": names}
            # The label vocabulary is read from the data (a class of one record is named by its folder):
            # private training says so in its guarantee.
            ds.metadata["label_names_from_data"] = "sub-folder names"
    return ds


def load_data(name_or_path: str, modality_hint: str | None = None) -> Dataset:
    """An embedded data set by name, or a user's folder of images / CSV / text files."""
    if name_or_path in EMBEDDED:
        return load_embedded(name_or_path)
    path = Path(name_or_path)
    if not path.exists():
        raise GeneratorError(f"{path}: neither an embedded data set ({', '.join(EMBEDDED)}) nor an existing path")
    if path.suffix.lower() == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(path)
        except Exception as exc:  # pandas raises many parser error types
            raise GeneratorError(f"{path}: not a readable CSV ({exc})") from None
        if frame.empty:
            raise GeneratorError(f"{path}: CSV has no rows")
        return Dataset(x=frame, modality="tabular", name=path.stem, metadata={"source": str(path)})
    if (path.is_dir() and modality_hint == "text") or path.suffix.lower() in (".txt", ".md", ".rst"):
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix.lower() in (".txt", ".md", ".rst"))
        texts = []
        for f in files:
            try:
                texts.append(f.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise GeneratorError(f"{f}: not readable UTF-8 text ({exc})") from None
        texts = [t for t in texts if t.strip()]
        if not texts:
            raise GeneratorError(f"{path}: no text found")
        return Dataset(x=texts, modality="text", name=path.stem, metadata={"source": str(path)})
    from genguard.generators.audio_data import is_wav_folder, load_wav_folder

    if modality_hint == "audio" or (modality_hint is None and is_wav_folder(path) and not _has_images(path)):
        return load_wav_folder(path)
    return load_image_folder(path)


def _has_images(folder: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------
# Writing samples
# --------------------------------------------------------------------------------------
def image_to_png_bytes(img: np.ndarray, scale: int = 1) -> bytes:
    from PIL import Image

    arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
    arr = np.round(arr * 255.0).astype(np.uint8)
    if scale > 1:
        arr = arr.repeat(scale, axis=0).repeat(scale, axis=1)
    mode = "L" if arr.ndim == 2 else ("RGBA" if arr.shape[-1] == 4 else "RGB")
    buf = io.BytesIO()
    Image.fromarray(arr, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def write_samples(samples: Samples, out_dir: str | os.PathLike, prefix: str = "sample") -> list[Path]:
    """Write samples as files (images PNG, audio 16-bit WAV, text .txt, tables one CSV); returns the paths written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    if samples.modality == "image":
        scale = int(samples.metadata.get("pixel_scale", 1))
        labels = samples.conditions.get("label")
        width = max(4, len(str(len(samples))))
        for i, img in enumerate(samples.data):
            tag = f"_label{int(labels[i])}" if labels is not None else ""
            p = out / f"{prefix}_{i:0{width}d}{tag}.png"
            atomic_write_bytes(p, image_to_png_bytes(img, scale))
            paths.append(p)
    elif samples.modality == "audio":
        from genguard.generators.audio_data import write_wav

        rate = int(samples.metadata["sample_rate"])
        labels = samples.conditions.get("label")
        width = max(4, len(str(len(samples))))
        for i, clip in enumerate(samples.data):
            tag = f"_label{int(labels[i])}" if labels is not None else ""
            paths.append(write_wav(out / f"{prefix}_{i:0{width}d}{tag}.wav", clip, rate))
    elif samples.modality == "text":
        width = max(4, len(str(len(samples))))
        for i, text in enumerate(samples.data):
            p = out / f"{prefix}_{i:0{width}d}.txt"
            atomic_write_text(p, text)
            paths.append(p)
    elif samples.modality == "tabular":
        p = out / f"{prefix}s.csv"
        atomic_write_text(p, samples.data.to_csv(index=False))
        paths.append(p)
    else:  # sequences: one line of space-separated symbols each
        p = out / f"{prefix}s.txt"
        atomic_write_text(p, "\n".join(" ".join(str(int(t)) for t in seq) for seq in samples.data) + "\n")
        paths.append(p)
    return paths


def read_sample_images(folder: str | os.PathLike, size: tuple[int, int] = (8, 8)) -> tuple[np.ndarray, list[Path]]:
    """Read a folder of generated images back at ``size`` (area-averaged), with their paths."""
    files = list_images(folder)
    return np.stack([read_image(p, size=size) for p in files]), files


def labels_from_filenames(paths: Iterable[Path]) -> np.ndarray | None:
    """Recover ``_labelK`` conditions written by :func:`write_samples`; None if any file lacks one."""
    out = []
    for p in paths:
        m = re.search(r"_label(\d+)", Path(p).stem)
        if m is None:
            return None
        out.append(int(m.group(1)))
    return np.asarray(out, dtype=np.int64)
