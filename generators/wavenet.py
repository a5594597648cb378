"""Class-conditional WaveNet: dilated causal convolutions with gated residual blocks over 8-bit μ-law audio."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators._common import sample_labels
from genguard.generators.base import Dataset, GeneratorError, Samples, TorchGenerator, as_int_array, unwrap_module
from genguard.generators.registry import register

MU = 255
LEVELS = MU + 1
#: μ-law code of silence (amplitude 0).
SILENCE = 128
MAX_LAYERS = 64
MAX_DILATION_CYCLE = 14
MAX_RATE = 48_000
MAX_CLIP_SECONDS = 10.0


def mu_law_encode(x: Any) -> np.ndarray:
    """Amplitudes in [-1, 1] -> μ-law codes 0..255 (ITU G.711 companding, μ = 255)."""
    x = np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0)
    f = np.sign(x) * np.log1p(MU * np.abs(x)) / np.log1p(MU)
    return np.floor((f + 1.0) / 2.0 * MU + 0.5).astype(np.int64)


def mu_law_decode(codes: Any) -> np.ndarray:
    """μ-law codes 0..255 -> amplitudes in [-1, 1] (the inverse of :func:`mu_law_encode` up to quantisation)."""
    f = 2.0 * np.asarray(codes, dtype=np.float64) / MU - 1.0
    return (np.sign(f) * np.expm1(np.abs(f) * np.log1p(MU)) / MU).astype(np.float32)


def position_features(positions: Any, clip_samples: int, k: int) -> np.ndarray:
    """Features of where in the clip a predicted sample lies: u = position / clip length, then sin and cos of
    pi*j*u for j = 1..k (periods down to 2/k of the clip), (..., 1 + 2k) float32. The receptive field is a few
    milliseconds, far shorter than a word; these tell every block which part of the word it is producing."""
    u = np.asarray(positions, dtype=np.float64)[..., None] / float(clip_samples)
    j = np.arange(1, k + 1, dtype=np.float64)
    return np.concatenate([u, np.sin(np.pi * j * u), np.cos(np.pi * j * u)], axis=-1).astype(np.float32)


def _build_modules(n_classes: int, channels: int, hidden: int, n_layers: int, dilation_cycle: int,
                   n_position: int = 0, class_position: bool = False):
    import torch
    from torch import nn
    from torch.nn import functional as F

    dilations = [2 ** (i % dilation_cycle) for i in range(n_layers)]

    class Block(nn.Module):
        """Gated residual block: a kernel-2 causal convolution of dilation d as one Linear over
        ``[h[t-d], h[t]]``, the class embedding added before the gate, 1x1 residual and skip outputs."""

        def __init__(self, dilation: int) -> None:
            super().__init__()
            self.dilation = dilation
            self.conv = nn.Linear(2 * channels, 2 * channels)
            self.res = nn.Linear(channels, channels)
            self.skip = nn.Linear(channels, hidden)

        def gate(self, past: torch.Tensor, now: torch.Tensor, cond: torch.Tensor):
            z = self.conv(torch.cat([past, now], dim=-1)) + cond
            a, b = z.chunk(2, dim=-1)
            g = torch.tanh(a) * torch.sigmoid(b)
            return now + self.res(g), self.skip(g)

        def forward(self, h: torch.Tensor, cond: torch.Tensor):
            # (B, L, C): the input d steps back, zeros before the start (causal padding on the left only)
            past = F.pad(h, (0, 0, self.dilation, 0))[:, : h.shape[1]]
            return self.gate(past, h, cond)

    class WaveNetModule(nn.Module):
        """Embedding of the previous sample's code, the residual stack, and a two-layer head to 256 logits."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(LEVELS, channels)
            self.cond = nn.Embedding(n_classes, n_layers * 2 * channels)
            self.position = nn.Linear(n_position, n_layers * 2 * channels) if n_position else None
            # a position map of each class's own: the class and position terms above are added, so the word's
            # time course (where its vowel, its fricative, its silence lie) would otherwise be the same for every
            # class; a Linear over (one-hot class x position features), so DP-SGD clips it like any other layer
            self.class_position = (nn.Linear(n_classes * n_position, n_layers * 2 * channels, bias=False)
                                   if class_position and n_position else None)
            self.blocks = nn.ModuleList([Block(d) for d in dilations])
            self.head1 = nn.Linear(hidden, hidden)
            self.head2 = nn.Linear(hidden, LEVELS)

        def conditions(self, y: torch.Tensor) -> list[torch.Tensor]:
            return list(self.cond(y).chunk(n_layers, dim=-1))

        def position_conditions(self, feats: torch.Tensor, y: torch.Tensor | None = None) -> list[torch.Tensor]:
            """Per-layer additive terms (..., 2C) of the position features ``feats`` (B, L, n_position), with the
            class ``y`` (B,)'s own position map when the model has one (without ``y``: the shared map only;
            sampling adds the class's own from :meth:`class_position_table`)."""
            z = self.position(feats)
            if self.class_position is not None and y is not None:
                onehot = F.one_hot(y, n_classes).to(feats.dtype)  # (B, K)
                z = z + self.class_position((onehot[:, None, :, None] * feats[..., None, :]).flatten(-2))
            return list(z.chunk(n_layers, dim=-1))

        def class_position_table(self, feats: torch.Tensor) -> torch.Tensor | None:
            """(K, L, n_layers * 2C): every class's position map at the positions ``feats`` (L, n_position), for
            sampling (one row per class instead of one per clip)."""
            if self.class_position is None:
                return None
            w = self.class_position.weight.view(-1, n_classes, feats.shape[-1])  # (out, K, n_position)
            return torch.einsum("lp,okp->klo", feats, w)

        def head(self, skip: torch.Tensor) -> torch.Tensor:
            return self.head2(torch.relu(self.head1(torch.relu(skip))))

        def forward(self, inputs: torch.Tensor, y: torch.Tensor, pos: torch.Tensor | None = None) -> torch.Tensor:
            """Logits (B, L, 256) of the code at each position given the codes ``inputs`` (B, L) before it;
            ``pos`` (B, L, n_position): the position features of the sample each input predicts."""
            h = self.embed(inputs)
            conds = [c[:, None, :] for c in self.conditions(y)]
            if self.position is not None:
                if pos is None:
                    raise ValueError("this WaveNet is conditioned on position: pass pos")
                conds = [c + p for c, p in zip(conds, self.position_conditions(pos, y))]
            skip = 0.0
            for block, c in zip(self.blocks, conds):
                h, s = block(h, c)
                skip = skip + s
            return self.head(skip)

    return WaveNetModule(), dilations


@register
class WaveNet(TorchGenerator):
    """Class-conditional WaveNet (van den Oord et al. 2016) on mono audio, trained on CPU in minutes.

    Audio is resampled to ``sample_rate`` (8 kHz by default; the embedded
    spoken digits are 16 kHz), cut to ``clip_seconds`` and companded to 256
    μ-law levels. The network predicts a softmax over the next code from the
    codes before it through ``n_layers`` gated residual blocks of kernel-2
    causal convolutions with dilations 1, 2, 4, ... (repeating every
    ``dilation_cycle`` layers); the class embedding is added in every block,
    and with ``class_position`` a map of the position features of each
    class's own (the word's time course differs by class).

    Training: each record is one clip; each step scores a window of ``crop``
    positions of it at a place that moves every epoch (a hash of the record
    and the epoch; the clip is padded on the left with
    silence for one receptive field, so every scored position sees a full
    context) and the record's loss is the mean cross-entropy over the window.
    One clip is one record, hence the privacy unit of DP-SGD. The whole
    network sees real data and is the private module (Embedding and Linear
    layers only, no normalisation that mixes records).

    ``sample`` draws codes ancestrally with a seeded generator (the same seed
    gives the same clips), keeping each layer's past inputs in a ring buffer
    of its dilation so one step costs one pass through the blocks.
    """

    name = "wavenet"
    modality = "audio"
    conditional_on = ("label",)
    default_data = "spoken_digits"
    # 8 kHz and 1 s, as the full settings: the audio mark needs a Nyquist frequency above its 3.4 kHz band and a
    # clip of 1 s (guardrails/provenance/audio_watermark.py); at 4 kHz or under 1 s the samples would go out unmarked
    # class_position: each class's own position map (README, Audio: TSTR 0.15-0.19 against 0.05-0.10 without it,
    # non-private and DP, two seeds each)
    quick_params = {"sample_rate": 8000, "clip_seconds": 1.0, "channels": 16, "hidden": 32, "n_layers": 6,
                    "dilation_cycle": 6, "crop": 128, "class_position": True, "epochs": 10, "batch_size": 32,
                    "lr": 3e-3}
    run_params = {  # sized to train in minutes on one CPU core; DP-SGD wants larger batches and a higher rate
        "dp_quick": {**quick_params, "batch_size": 128, "epochs": 8, "lr": 1e-2},
        "plain_quick": dict(quick_params),
        "dp": {"batch_size": 128, "epochs": 30, "lr": 1e-2},
        "plain": {},
    }

    def __init__(self, sample_rate: int = 8000, clip_seconds: float = 1.0, channels: int = 24, hidden: int = 48,
                 n_layers: int = 8, dilation_cycle: int = 8, crop: int = 256, temperature: float = 1.0,
                 position_features: int = 16, class_position: bool = False, epochs: int = 30, batch_size: int = 32,
                 lr: float = 2e-3, seed: int = 0) -> None:
        self.sample_rate = sample_rate
        self.clip_seconds = clip_seconds
        self.channels = channels
        self.hidden = hidden
        self.n_layers = n_layers
        self.dilation_cycle = dilation_cycle
        self.crop = crop
        self.temperature = temperature
        self.position_features = position_features
        self.class_position = class_position
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    # -- sizes --------------------------------------------------------------------------
    def _check_settings(self) -> None:
        if not (1_000 <= self.sample_rate <= MAX_RATE):
            raise GeneratorError(f"wavenet: sample_rate must lie in [1000, {MAX_RATE}] Hz, got {self.sample_rate}")
        if not (0.05 <= self.clip_seconds <= MAX_CLIP_SECONDS):
            raise GeneratorError(f"wavenet: clip_seconds must lie in [0.05, {MAX_CLIP_SECONDS}], got {self.clip_seconds}")
        if not (1 <= self.n_layers <= MAX_LAYERS) or not (1 <= self.dilation_cycle <= MAX_DILATION_CYCLE):
            raise GeneratorError(f"wavenet: n_layers must lie in [1, {MAX_LAYERS}] and dilation_cycle in "
                                 f"[1, {MAX_DILATION_CYCLE}], got {self.n_layers} and {self.dilation_cycle}")
        if not (0 <= self.position_features <= 64):
            raise GeneratorError(f"wavenet: position_features must lie in [0, 64], got {self.position_features}")
        if self.crop < 1 or not (self.temperature > 0):
            raise GeneratorError("wavenet: crop must be >= 1 and temperature > 0")

    @property
    def receptive_field(self) -> int:
        """Samples a prediction depends on (the current one's predecessors): 1 + the sum of the dilations."""
        return 1 + sum(2 ** (i % self.dilation_cycle) for i in range(self.n_layers))

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    # -- hooks for the trainers ------------------------------------------------------
    def build(self, data: Dataset) -> None:
        self._check_settings()
        if np.asarray(data.x).ndim != 2:
            raise GeneratorError(f"wavenet expects mono clips (n, samples), got shape {np.shape(data.x)} from {data.name!r}")
        if "label" not in data.groups:
            raise GeneratorError(f"wavenet is class-conditional: data set {data.name!r} has no 'label' group")
        self.n_classes_ = int(max(len(data.group_names.get("label", [])), int(data.groups["label"].max()) + 1))
        self.class_names_ = list(data.group_names.get("label", [str(i) for i in range(self.n_classes_)]))
        self.data_rate_ = int(data.metadata["sample_rate"])
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        import torch

        self._check_settings()
        n_position = 1 + 2 * self.position_features if self.position_features else 0
        self.model_, self.dilations_ = _build_modules(self.n_classes_, self.channels, self.hidden, self.n_layers,
                                                      self.dilation_cycle, n_position, bool(self.class_position))
        g = torch.Generator().manual_seed(self.seed + 1)
        # window positions: a fixed hash of the record's codes and the epoch (see batch_loss)
        self._crop_key = torch.randint(1, 1 << 20, (self.clip_samples,), generator=g, dtype=torch.long)
        self._epoch = 0

    def on_epoch_end(self, epoch: int) -> None:
        self._epoch = epoch + 1

    def _extra_state(self) -> dict[str, Any]:
        return {"n_classes_": self.n_classes_, "class_names_": self.class_names_, "data_rate_": self.data_rate_}

    def private_modules(self) -> tuple[str, ...]:
        return ("model_",)

    def codes(self, clips: Any, rate: int) -> np.ndarray:
        """Clips at ``rate`` Hz -> μ-law codes at the model's rate and length, (n, clip_samples)."""
        from genguard.generators.audio_data import fit_length, resample

        x = resample(np.asarray(clips, dtype=np.float32), int(rate), self.sample_rate)
        n = self.clip_samples
        x = np.stack([fit_length(c, n) for c in x]) if x.shape[1] != n else x
        return mu_law_encode(x)

    def train_tensors(self, data: Dataset):
        import torch

        pad = self.receptive_field
        codes = self.codes(data.x, int(data.metadata["sample_rate"]))
        codes = np.concatenate([np.full((len(codes), pad), SILENCE, dtype=np.int64), codes], axis=1)
        y = torch.from_numpy(np.asarray(data.groups["label"], dtype=np.int64))
        return (torch.from_numpy(codes), y)

    def batch_loss(self, batch):
        import torch
        from torch.nn import functional as F

        codes, y = batch
        pad = self.receptive_field
        n = codes.shape[1] - pad  # clip samples
        crop = min(self.crop, n)
        # window [start, start + crop) of the clip, scored with one receptive field of context before it. The
        # start is a function of the record and the epoch only: a record's loss is the same wherever it is
        # batched (the private trainer's probe compares a record alone and repeated), and moves every epoch.
        key = (codes[:, pad:] * self._crop_key[None, :n]).sum(dim=1) + self._epoch * 1_000_003
        start = torch.remainder(key * 2_654_435_761, n - crop + 1)
        offsets = torch.arange(pad + crop)[None, :] + start[:, None]  # positions in the padded clip
        window = torch.gather(codes, 1, offsets)
        # input j of the window predicts padded position offsets[j + 1], i.e. clip position offsets[j + 1] - pad
        logits = self.model_(window[:, :-1], y, self._positions(offsets[:, 1:] - pad, n))[:, pad - 1:]
        target = window[:, pad:]
        ce = F.cross_entropy(logits.reshape(-1, LEVELS), target.reshape(-1), reduction="none")
        return ce.view(len(codes), crop).mean(dim=1).mean()

    def _positions(self, positions: Any, n: int):
        """Position features (torch) of the predicted samples' clip positions, or None without them."""
        import torch

        if not self.position_features:
            return None
        p = positions.numpy() if hasattr(positions, "numpy") else np.asarray(positions)
        return torch.from_numpy(position_features(p, n, self.position_features))

    def fit(self, data: Dataset, trainer: Any = None, progress: bool = True) -> "WaveNet":
        super().fit(data, trainer=trainer, progress=progress)
        # no clip count: epsilon is for add/remove-one neighbours, and the exact n would say whether a clip was in
        self.training_report_["privacy_unit"] = (
            f"one audio clip (each step scores a {min(self.crop, self.clip_samples)}-sample window of each "
            "sampled clip)")
        return self

    # -- teacher-forced prediction (the audit's reconstructions) ----------------------------
    def reconstruct(self, clips: Any, rate: int, labels: Any) -> np.ndarray:
        """Teacher-forced one-step predictions of ``clips``: at each position the expected amplitude under the
        predicted distribution given the true codes before it, at the model's rate, (n, clip_samples)."""
        import torch

        self.check_is_fitted()
        codes = self.codes(clips, rate)
        y = as_int_array(labels, len(codes), self.n_classes_)
        pad = self.receptive_field
        model = unwrap_module(self.model_)
        model.eval()
        levels = torch.from_numpy(mu_law_decode(np.arange(LEVELS)))
        out = []
        with torch.no_grad():
            for s in range(0, len(codes), 16):
                c = torch.from_numpy(codes[s:s + 16])
                inp = torch.cat([torch.full((len(c), pad), SILENCE, dtype=torch.long), c[:, :-1]], dim=1)
                pos = self._positions(np.broadcast_to(np.arange(inp.shape[1]) + 1 - pad, inp.shape), c.shape[1])
                p = torch.softmax(model(inp, torch.from_numpy(y[s:s + 16]), pos), dim=-1)[:, pad - 1:]
                out.append((p @ levels).numpy())
        return np.concatenate(out).astype(np.float32)

    # -- sampling ---------------------------------------------------------------------
    def sample(self, n: int, seed: int | None = None, label: Any = None, **conditions: Any) -> Samples:
        import torch

        self.check_is_fitted()
        labels = sample_labels(self.name, n, label, conditions, self.n_classes_)
        n = len(labels)
        g = torch.Generator().manual_seed(int(seed if seed is not None else self.seed))
        out = [self._sample_batch(labels[s:s + 256], g) for s in range(0, n, 256)]
        clips = mu_law_decode(np.concatenate(out))
        return Samples(data=clips, modality="audio", conditions={"label": labels},
                       metadata={"generator": self.name, "seed": seed, "sample_rate": self.sample_rate,
                                 "class_names": self.class_names_, "temperature": self.temperature})

    def _sample_batch(self, labels: np.ndarray, g: Any) -> np.ndarray:
        import torch

        model = unwrap_module(self.model_)
        model.eval()
        b = len(labels)
        with torch.inference_mode():
            conds = model.conditions(torch.from_numpy(labels))
            zero = torch.zeros(b, self.channels)
            rings = [[zero] * d for d in self.dilations_]  # layer inputs of the last d steps, by t mod d
            prev = torch.full((b,), SILENCE, dtype=torch.long)
            # the silence prefix of training fills the receptive field before the first sample
            pad = self.receptive_field
            codes = torch.empty(b, self.clip_samples, dtype=torch.long)
            steps = pad - 1 + self.clip_samples
            # step t reads padded position t and predicts clip position t + 1 - pad, as in training
            pos = self._positions(np.arange(steps) + 1 - pad, self.clip_samples)
            pconds = model.position_conditions(pos) if pos is not None else None
            table = model.class_position_table(pos) if pos is not None else None  # (K, steps, n_layers * 2C)
            yb = torch.from_numpy(labels)
            for t in range(steps):
                h = model.embed(prev)
                skip = 0.0
                own = table[:, t][yb].chunk(len(model.blocks), dim=-1) if table is not None else None
                for i, (block, ring, c) in enumerate(zip(model.blocks, rings, conds)):
                    slot = t % block.dilation
                    past = ring[slot]
                    ring[slot] = h
                    if pconds is not None:
                        c = c + pconds[i][t] + (own[i] if own is not None else 0.0)
                    h, s = block.gate(past, h, c)
                    skip = skip + s
                if t < pad - 1:
                    continue  # still inside the silence prefix: its codes are given
                logits = model.head(skip) / self.temperature
                prev = torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=g)[:, 0]
                codes[:, t - (pad - 1)] = prev
        return codes.numpy()
