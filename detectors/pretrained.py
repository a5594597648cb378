"""Published synthetic-image detectors run from weights the user supplies: CNNDetection and NPR, as their papers define them.

genguard ships no such weights and never downloads any. A user who has a
published checkpoint points ``genguard detect --detector FILE --arch NAME`` at
it; the architecture is defined here (torchvision is not a dependency) with
parameter names identical to the authors' code, so their files load unchanged.

- ``cnndetection``: Wang et al., "CNN-generated images are surprisingly easy to
  spot... for now", CVPR 2020 (github.com/PeterWang512/CNNDetection). A
  torchvision ResNet-50 whose ``fc`` gives one logit; P(synthetic) =
  sigmoid(logit). Their demo feeds the whole image (optionally centre-cropped
  to 224), scaled to [0, 1] and normalised with the ImageNet mean and std.
  Their checkpoints are ``{"model": state_dict, ...}``.
- ``npr``: Tan et al., "Rethinking the Up-Sampling Operations in CNN-based
  Generative Network for Generalizable Deepfake Detection", CVPR 2024
  (github.com/chuangchuangtan/NPR-DeepfakeDetection). The same ResNet-50 stem
  and bottlenecks but only ``layer1`` and ``layer2`` (512 channels), a 3x3
  stride-2 first convolution, ``fc1`` 512 -> 1, applied to the neighbouring
  pixel relationships NPR = x - up(down(x)) (nearest, factor 0.5) scaled by
  2/3. Their test script resizes every image to 256x256 (bilinear), no crop,
  then the same ImageNet normalisation. Their checkpoint is a bare state dict.

Probabilities are the paper's sigmoid outputs, not re-calibrated here: they
were fitted to the authors' training data (ProGAN for both) and a threshold
of 0.5. ``genguard detector eval --detector FILE --arch NAME`` measures how
they do on your images; the verdict's inconclusive ``band`` is a parameter.

Images are decoded by genguard's reader, which composites transparency over
white; the authors' ``Image.convert("RGB")`` drops alpha instead, so only
images with transparent pixels can score differently from their scripts.

Loading reads tensors only: ``.safetensors`` through safetensors, anything
else through ``torch.load(weights_only=True)``, which refuses a pickle that
would run code. The key check is strict (missing and unexpected keys are
listed) except for BatchNorm's ``num_batches_tracked`` counters, which do not
affect inference and which some converters drop.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from genguard.detectors import DetectorError
from genguard.detectors._io import as_rgb_array

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The depth of torchvision's ResNet-50; the tiny variants used in tests change only depth and width.
RESNET50_LAYERS = (3, 4, 6, 3)
#: A checkpoint larger than this is refused before it is read (ResNet-50 in fp32 is about 94 MiB).
MAX_FILE_BYTES = 1 << 30


def _torch():
    import torch

    return torch


# --------------------------------------------------------------------------------------
# architectures (parameter names follow torchvision's ResNet, which both papers' code copies)
# --------------------------------------------------------------------------------------
def _build_modules():
    torch = _torch()
    nn = torch.nn
    F = torch.nn.functional

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Any = None) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + identity)

    class ResNetBackbone(nn.Module):
        """torchvision's ResNet with Bottleneck blocks; ``stages`` of them kept, ``width`` the stem's channels."""

        def __init__(self, layers: Sequence[int], width: int, stem_kernel: int, fc_name: str) -> None:
            super().__init__()
            self.inplanes = width
            pad = stem_kernel // 2
            self.conv1 = nn.Conv2d(3, width, stem_kernel, stride=2, padding=pad, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            for i, n in enumerate(layers):
                setattr(self, f"layer{i + 1}", self._make_layer(width * 2 ** i, n, stride=1 if i == 0 else 2))
            self.n_stages = len(layers)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc_name = fc_name
            setattr(self, fc_name, nn.Linear(self.inplanes, 1))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

        def _make_layer(self, planes: int, blocks: int, stride: int):
            downsample = None
            if stride != 1 or self.inplanes != planes * 4:
                downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                           nn.BatchNorm2d(planes * 4))
            mods = [Bottleneck(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * 4
            mods += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*mods)

        def trunk(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            for i in range(self.n_stages):
                x = getattr(self, f"layer{i + 1}")(x)
            return getattr(self, self.fc_name)(torch.flatten(self.avgpool(x), 1))

    class CNNDetectionNet(ResNetBackbone):
        def __init__(self, width: int = 64, layers: Sequence[int] = RESNET50_LAYERS) -> None:
            super().__init__(layers, width, stem_kernel=7, fc_name="fc")

        def forward(self, x):
            return self.trunk(x)

    class NPRNet(ResNetBackbone):
        def __init__(self, width: int = 64, layers: Sequence[int] = RESNET50_LAYERS[:2]) -> None:
            if len(layers) != 2:
                raise DetectorError(f"NPR keeps exactly two ResNet stages (layer1, layer2), got {len(layers)}")
            super().__init__(layers, width, stem_kernel=3, fc_name="fc1")

        @staticmethod
        def npr(x):
            # the authors' call, kept as is: on odd sizes it would not give back x's shape, hence even crops upstream
            down = F.interpolate(x, scale_factor=0.5, mode="nearest", recompute_scale_factor=True)
            return x - F.interpolate(down, scale_factor=2.0, mode="nearest", recompute_scale_factor=True)

        def forward(self, x):
            return self.trunk(self.npr(x) * 2.0 / 3.0)

    return CNNDetectionNet, NPRNet


def build_network(arch: str, width: int = 64, layers: Sequence[int] | None = None):
    """The ``arch`` network with random weights; ``width``/``layers`` shrink it (same key pattern) for tests."""
    cnn, npr = _build_modules()
    if arch not in ARCHS:
        raise DetectorError(f"unknown detector architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    cls = cnn if arch == "cnndetection" else npr
    return cls(width=width, layers=tuple(layers) if layers is not None else ARCHS[arch]["layers"])


#: Each architecture's paper setting: network depth and test-time preprocessing.
ARCHS: dict[str, dict[str, Any]] = {
    "cnndetection": {"layers": RESNET50_LAYERS, "resize": None, "crop": None,
                     "paper": "Wang et al., CVPR 2020 (CNNDetection): ResNet-50, whole image or centre crop 224"},
    "npr": {"layers": RESNET50_LAYERS[:2], "resize": 256, "crop": None,
            "paper": "Tan et al., CVPR 2024 (NPR): ResNet-50 stages 1-2 on x - up(down(x)), images resized to 256x256"},
}


# --------------------------------------------------------------------------------------
# reading a user's weights
# --------------------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike) -> dict[str, Any]:
    """Tensors of a checkpoint file, unwrapped from ``model``/``state_dict`` and a ``module.`` prefix.

    Never runs code from the file: safetensors, or ``torch.load(weights_only=True)``.
    """
    torch = _torch()
    path = Path(path)
    if not path.is_file():
        raise DetectorError(f"{path}: no such weights file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DetectorError(f"{path}: {size:,} bytes, larger than the {MAX_FILE_BYTES:,}-byte limit for detector weights")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: Any = load_file(str(path), device="cpu")
        except Exception as exc:  # safetensors raises several types for a bad header
            raise DetectorError(f"{path}: not a readable safetensors file ({exc.__class__.__name__}: "
                                f"{str(exc).splitlines()[0][:160] if str(exc) else ''})") from None
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise DetectorError(_torch_load_error(path, exc)) from None
    for _ in range(3):  # {"model": {...}}, {"state_dict": {...}}, possibly nested once
        if isinstance(obj, dict):
            inner = next((obj[k] for k in ("model", "state_dict") if isinstance(obj.get(k), dict)), None)
            if inner is not None:
                obj = inner
                continue
        break
    if not isinstance(obj, dict) or not obj:
        raise DetectorError(f"{path}: holds no state dict (a mapping of parameter names to tensors)")
    keys = list(obj)
    if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):  # saved from DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise DetectorError(f"{path}: entries that are not tensors: {', '.join(map(str, bad[:5]))}"
                            + (f" and {len(bad) - 5} more" if len(bad) > 5 else ""))
    return obj


def _torch_load_error(path: Path, exc: Exception) -> str:
    """One line for a file torch.load(weights_only=True) would not read: a code-carrying global, or other damage."""
    import pickle
    import re

    msg = str(exc)
    glob = re.search(r"Unsupported global: GLOBAL ([\w.]+)", msg)
    if glob:
        return (f"{path}: refused: loading it needs the Python object {glob.group(1)}, which the weights-only "
                "reader does not allow (objects beyond tensors can run code when unpickled); save the model's "
                "state_dict() with torch.save or convert it to .safetensors")
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in msg:
        detail = re.search(r"WeightsUnpickler error: \s*(.+)", msg)
        why = detail.group(1).strip().splitlines()[0][:120] if detail else "unsupported content"
        return (f"{path}: refused by the weights-only reader ({why}): not a plain-tensor torch checkpoint; "
                "genguard never unpickles code")
    first = msg.strip().splitlines()[0][:160] if msg.strip() else ""
    return f"{path}: not a readable torch checkpoint ({exc.__class__.__name__}: {first})"


#: Sizes a checkpoint may declare (ResNet-152 has 36 blocks in a stage): a file cannot make us build a huge network.
MAX_WIDTH, MAX_BLOCKS = 256, 64


def _infer_size(state: dict[str, Any], arch: str) -> tuple[int, tuple[int, ...]]:
    """Stem width and blocks per stage as written in the file (the published ones give 64 and ResNet-50's)."""
    w = state.get("conv1.weight")
    width = int(w.shape[0]) if w is not None and w.ndim == 4 else 64
    n_stages = len(ARCHS[arch]["layers"])
    layers = []
    for s in range(1, n_stages + 1):
        idx = {int(k.split(".")[1]) for k in state if k.startswith(f"layer{s}.") and k.split(".")[1].isdigit()}
        layers.append(max(idx) + 1 if idx else ARCHS[arch]["layers"][s - 1])
    if not 1 <= width <= MAX_WIDTH or max(layers) > MAX_BLOCKS:
        raise DetectorError(f"stem width {width} / blocks per stage {layers} outside what any {arch} checkpoint "
                            f"has (width <= {MAX_WIDTH}, <= {MAX_BLOCKS} blocks)")
    return width, tuple(layers)


def _list(names: Sequence[str], n: int = 6) -> str:
    names = sorted(names)
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def load_network(path: str | os.PathLike, arch: str):
    """The ``arch`` network with the weights of ``path``, in eval mode; DetectorError naming the file otherwise."""
    if arch not in ARCHS:
        raise DetectorError(f"unknown detector architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    state = read_state_dict(path)
    try:
        width, layers = _infer_size(state, arch)
    except DetectorError as exc:
        raise DetectorError(f"{path}: not a {arch} checkpoint: {exc}") from None
    net = build_network(arch, width=width, layers=layers)
    expected = net.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} key(s): {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} key(s): {_list(unexpected)}")
        raise DetectorError(f"{path}: not a {arch} checkpoint: " + "; ".join(parts))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise DetectorError(f"{path}: not a {arch} checkpoint: shape mismatch for {len(wrong)} tensor(s): {_list(wrong, 3)}")
    torch = _torch()
    nonfinite = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if nonfinite:
        raise DetectorError(f"{path}: NaN or infinite values in {_list(nonfinite, 3)}")
    net.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=False)
    return net.eval()


# --------------------------------------------------------------------------------------
# preprocessing (the papers' test-time transforms, without torchvision)
# --------------------------------------------------------------------------------------
def center_crop(rgb: np.ndarray, size: int, width: int | None = None) -> np.ndarray:
    """torchvision's CenterCrop to ``size`` x ``width`` (square by default): offsets round((H - size) / 2);
    a smaller image is zero-padded first, as torchvision does."""
    th, tw = size, size if width is None else width
    h, w = rgb.shape[:2]
    if h < th or w < tw:
        ph, pw = max(th - h, 0), max(tw - w, 0)
        rgb = np.pad(rgb, ((ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2), (0, 0)))
        h, w = rgb.shape[:2]
    top, left = int(round((h - th) / 2.0)), int(round((w - tw) / 2.0))
    return rgb[top:top + th, left:left + tw]


def resize_bilinear(rgb: np.ndarray, size: int) -> np.ndarray:
    """torchvision's Resize((size, size)) on a PIL image, which is PIL's bilinear resize (antialiased)."""
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))


def normalise(rgb: np.ndarray) -> np.ndarray:
    """ToTensor then Normalize(ImageNet mean, std): (3, H, W) float32."""
    x = rgb.astype(np.float32).transpose(2, 0, 1) / 255.0
    mean = np.asarray(IMAGENET_MEAN, np.float32)[:, None, None]
    std = np.asarray(IMAGENET_STD, np.float32)[:, None, None]
    return (x - mean) / std


# --------------------------------------------------------------------------------------
# the detector
# --------------------------------------------------------------------------------------
class PretrainedDetector:
    """A published detector from a user's weights file, with ``predict_proba``/``verdict`` like :class:`Detector`.

    ``resize``/``crop`` default to the paper's test setting (CNNDetection: the
    whole image, ``crop=224`` for their cropped variant; NPR: resize to 256).
    An image larger than ``max_side`` on a side (with no resize) is
    centre-cropped to it, never resized, so the up-sampling traces both models
    look at are kept and memory stays bounded. NPR needs even sizes: an odd
    row or column is dropped, as the authors' commented-out code does.
    Probabilities are the model's sigmoid, calibrated by its authors on their
    data only.
    """

    calibration_note = ("probabilities are the published model's own sigmoid outputs (calibrated by its authors on "
                        "their training data, threshold 0.5), not re-calibrated by genguard; measure them on your "
                        "images with `genguard detector eval`")

    def __init__(self, path: str | os.PathLike, arch: str, resize: int | None | str = "paper",
                 crop: int | None | str = "paper", band: tuple[float, float] = (0.2, 0.8), batch_size: int = 8,
                 max_side: int = 1024, device: str = "cpu") -> None:
        if arch not in ARCHS:
            raise DetectorError(f"unknown detector architecture {arch!r}; choose one of {', '.join(ARCHS)}")
        if not (0.0 <= band[0] <= band[1] <= 1.0):
            raise DetectorError(f"inconclusive band must satisfy 0 <= low <= high <= 1, got {band}")
        for name, v in (("resize", resize), ("crop", crop)):
            if v not in (None, "paper") and (not isinstance(v, int) or v < 8 or v > 4096):
                raise DetectorError(f"{name} must be None or a size in 8..4096 pixels, got {v!r}")
        if batch_size < 1 or max_side < 32:
            raise DetectorError(f"batch_size must be >= 1 and max_side >= 32, got {batch_size} and {max_side}")
        self.path, self.arch, self.band = Path(path), arch, tuple(band)
        self.resize = ARCHS[arch]["resize"] if resize == "paper" else resize
        self.crop = ARCHS[arch]["crop"] if crop == "paper" else crop
        self.batch_size, self.max_side, self.device = batch_size, max_side, device
        self.kind = f"pretrained-{arch}"
        self.network_ = load_network(self.path, arch).to(device)
        width, layers = self.network_.conv1.out_channels, tuple(
            len(getattr(self.network_, f"layer{i + 1}")) for i in range(self.network_.n_stages))
        self.info_ = {"arch": arch, "weights": str(self.path), "paper": ARCHS[arch]["paper"], "width": width,
                      "layers": list(layers), "resize": self.resize, "crop": self.crop,
                      "calibration": self.calibration_note}
        if width != 64 or layers != ARCHS[arch]["layers"]:
            self.info_["size_note"] = (f"not the published size: stem width {width}, blocks per stage {list(layers)} "
                                       f"(the paper's: 64, {list(ARCHS[arch]['layers'])})")
        self.fitted_ = True

    def __repr__(self) -> str:
        return (f"PretrainedDetector(path={str(self.path)!r}, arch={self.arch!r}, resize={self.resize!r}, "
                f"crop={self.crop!r}, band={self.band!r})")

    #: the smallest side an image may have before its score means little (the network's total stride is 32)
    min_side = 32

    def preprocess(self, image: Any) -> np.ndarray:
        """One image (path or array) as the paper's network input: (3, H, W) float32."""
        rgb = as_rgb_array(image)
        if self.resize is not None:
            rgb = resize_bilinear(rgb, self.resize)
        if self.crop is not None:
            rgb = center_crop(rgb, self.crop)
        h, w = rgb.shape[:2]
        if h > self.max_side or w > self.max_side:
            rgb = center_crop(rgb, min(h, self.max_side), min(w, self.max_side))
        if self.arch == "npr":
            rgb = rgb[:rgb.shape[0] // 2 * 2, :rgb.shape[1] // 2 * 2]
            if rgb.shape[0] < 2 or rgb.shape[1] < 2:
                raise DetectorError(f"image of {w}x{h} is too small for NPR (needs at least 2x2)")
        return normalise(np.ascontiguousarray(rgb))

    def decision_function(self, images: Sequence[Any]) -> np.ndarray:
        """The network's logit per image; images of one input size are run together, ``batch_size`` at a time."""
        torch = _torch()
        if isinstance(images, (str, os.PathLike)) or (isinstance(images, np.ndarray) and images.ndim in (2, 3)):
            images = [images]
        images = list(images)
        out = np.zeros(len(images), np.float64)
        # a chunk of images is preprocessed at a time, so float copies of a large folder never coexist
        chunk = 8 * self.batch_size
        with torch.inference_mode():
            for c0 in range(0, len(images), chunk):
                xs = {i: self.preprocess(images[i]) for i in range(c0, min(c0 + chunk, len(images)))}
                by_shape: dict[tuple[int, ...], list[int]] = {}
                for i, x in xs.items():
                    by_shape.setdefault(x.shape, []).append(i)
                for idx in by_shape.values():
                    for s in range(0, len(idx), self.batch_size):
                        part = idx[s:s + self.batch_size]
                        batch = torch.from_numpy(np.stack([xs[i] for i in part])).to(self.device)
                        out[part] = self.network_(batch).reshape(-1).double().cpu().numpy()
        return out

    def calibrate(self, real: Sequence[Any], fake: Sequence[Any], method: str = "platt") -> "PretrainedDetector":
        """Re-calibrate on the user's own labelled images: P(synthetic) then comes from a ``method`` calibrator
        (genguard's Platt/isotonic) fitted to the network's logits, not from the authors' sigmoid. Use images
        kept apart from those you evaluate on; the weights are unchanged."""
        from genguard.detectors.calibration import Calibrator

        if len(real) < 2 or len(fake) < 2:
            raise DetectorError(f"need at least 2 real and 2 fake images to calibrate, got {len(real)} and {len(fake)}")
        scores = self.decision_function(list(real) + list(fake))
        y = np.r_[np.zeros(len(real), int), np.ones(len(fake), int)]
        self.calibrator_ = Calibrator(method).fit(scores, y)
        self.info_["calibration"] = (f"re-calibrated by the user ({method}) on {len(real)} real and {len(fake)} "
                                     "generated images; valid for images like those")
        return self

    def predict_proba(self, images: Sequence[Any]) -> np.ndarray:
        """sigmoid(logit), the paper's P(synthetic) (see ``calibration_note``), or the user's calibration if set."""
        s = self.decision_function(images)
        if getattr(self, "calibrator_", None) is not None and len(s):
            return np.asarray(self.calibrator_(s), dtype=np.float64)
        return 1.0 / (1.0 + np.exp(-np.clip(s, -500, 500)))

    def verdict(self, p: float) -> str:
        from genguard.detectors.models import band_verdict

        return band_verdict(p, self.band)

    def predict(self, images: Sequence[Any]) -> list[str]:
        return [self.verdict(float(p)) for p in self.predict_proba(images)]


def load_pretrained(path: str | os.PathLike, arch: str, **params: Any) -> PretrainedDetector:
    """``PretrainedDetector(path, arch, **params)``: the published ``arch`` detector with the weights in ``path``."""
    return PretrainedDetector(path, arch, **params)
