"""Byte-level GPT-2 (transformers) trained from scratch on text, usable with transformers' generate() and its watermarking."""
from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np

from genguard.generators._common import check_n
from genguard.generators.base import Dataset, GeneratorError, Samples, TorchGenerator, unwrap_module
from genguard.generators.registry import register

#: ByT5's byte vocabulary: 0 pad, 1 eos, 2 unk, then byte b is token b + 3.
BYTE_OFFSET = 3
PAD_ID, EOS_ID = 0, 1
VOCAB_SIZE = 256 + BYTE_OFFSET

_registered = False


def register_conv1d_grad_sampler() -> None:
    """Teach opacus the per-sample gradients of transformers' ``Conv1D`` (GPT-2's linear layers, W of shape in x out)."""
    global _registered
    if _registered:
        return
    from opacus.grad_sample import GradSampleModule, register_grad_sampler
    from transformers.pytorch_utils import Conv1D

    if Conv1D not in GradSampleModule.GRAD_SAMPLERS:
        @register_grad_sampler(Conv1D)
        def _conv1d_grad_sample(layer, activations, backprops):
            a = activations[0].to(backprops.dtype)
            out = {}
            if layer.weight.requires_grad:
                out[layer.weight] = __import__("torch").einsum("n...i,n...j->nij", a, backprops)
            if layer.bias is not None and layer.bias.requires_grad:
                out[layer.bias] = __import__("torch").einsum("n...k->nk", backprops)
            return out
    _registered = True


def encode(text: str) -> list[int]:
    """Text -> token ids (UTF-8 bytes shifted by 3), the same mapping as ``transformers.ByT5Tokenizer``."""
    return [b + BYTE_OFFSET for b in text.encode("utf-8")]


def decode(ids: Any) -> str:
    """Token ids -> text; stops at the first end-of-text token, skips pad/unk, replaces broken UTF-8."""
    out = bytearray()
    for i in ids:
        i = int(i)
        if i == EOS_ID:
            break
        if i >= BYTE_OFFSET:
            out.append(i - BYTE_OFFSET)
    return out.decode("utf-8", errors="replace")


@register
class ByteGPT(TorchGenerator):
    """A small GPT-2 (``transformers.GPT2LMHeadModel``, random init) over UTF-8 bytes.

    Training text is joined with end-of-text tokens and cut into windows of
    ``block_size`` bytes (at most ``max_windows`` of them, picked evenly);
    **under DP-SGD the privacy unit is one window**, not one document.
    ``model_`` is the plain Hugging Face model and :attr:`tokenizer` a
    ``ByT5Tokenizer`` with the same byte mapping (built locally, no download),
    so ``model_.generate(..., watermarking_config=...)`` works directly.
    ``sample(n, prompt=...)`` returns ``n`` strings; ``log_prob(texts)`` the
    exact log-likelihood (nats) of each text's bytes after an end-of-text token.
    """

    name = "text"
    modality = "text"
    default_data = "pydoc"
    quick_params = {"n_layer": 1, "n_embd": 32, "n_head": 2, "block_size": 32, "max_windows": 300,
                    "sample_length": 40, "epochs": 2, "batch_size": 32, "lr": 1e-2}
    conditional_on = ("prompt",)
    watermarkable = True  # sample(watermarking_config=...): the keyed green-list watermark

    def __init__(self, n_layer: int = 2, n_embd: int = 128, n_head: int = 4, block_size: int = 128,
                 max_windows: int = 2000, sample_length: int = 120, temperature: float = 0.8, top_k: int = 0,
                 epochs: int = 3, batch_size: int = 32, lr: float = 2e-3, seed: int = 0) -> None:
        self.n_layer = n_layer
        self.n_embd = n_embd
        self.n_head = n_head
        self.block_size = block_size
        self.max_windows = max_windows
        self.sample_length = sample_length
        self.temperature = temperature
        self.top_k = top_k
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    # -- model ----------------------------------------------------------------------------
    def fit(self, data: Dataset, trainer: Any = None, progress: bool = True) -> "ByteGPT":
        """Train on ``data`` (strings). The text is first cut into ``block_size``-byte windows and each
        window is one training record, so under DP-SGD the privacy unit is one window: a passage that
        spans k windows is protected only at group size k (the training report says so)."""
        self._check_data(data)
        if not all(isinstance(t, str) for t in data.x):
            raise GeneratorError(f"text trains on strings; {data.name!r} holds other items")
        windows = self._windows(data)
        records = Dataset(x=list(windows), modality="text", name=f"{data.name}-windows",
                          metadata={**data.metadata, "source_items": len(data)})
        super().fit(records, trainer=trainer, progress=progress)
        # no window or passage count: both are functions of the private text, and the exact number of records
        # would say whether one was in (epsilon is for add/remove-one neighbours)
        self.training_report_["privacy_unit"] = (
            f"one {self.block_size}-byte window of the training text; a passage spanning k windows is protected "
            "at group size k")
        return self

    def build(self, data: Dataset) -> None:
        if self.n_embd % self.n_head:
            raise GeneratorError(f"n_embd={self.n_embd} must be a multiple of n_head={self.n_head}")
        self.build_from_state({})

    def build_from_state(self, extra: Mapping[str, Any]) -> None:
        from transformers import GPT2Config, GPT2LMHeadModel

        register_conv1d_grad_sampler()
        config = GPT2Config(
            vocab_size=VOCAB_SIZE, n_positions=max(256, self.block_size + self.sample_length), n_embd=self.n_embd,
            n_layer=self.n_layer, n_head=self.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
            bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID, tie_word_embeddings=False,
        )
        self.model_ = GPT2LMHeadModel(config)
        self.model_.generation_config.pad_token_id = PAD_ID

    @property
    def tokenizer(self):
        """A ``transformers.ByT5Tokenizer`` with this model's byte mapping (no files needed)."""
        from transformers import ByT5Tokenizer

        return ByT5Tokenizer(extra_ids=0)

    def private_modules(self) -> tuple[str, ...]:
        return ("model_",)

    def _check_data(self, data: Dataset) -> None:
        if not isinstance(data, Dataset):
            raise GeneratorError(f"text.fit expects a generators.Dataset, got {type(data).__name__}")
        if data.modality != "text":
            raise GeneratorError(f"text trains on text data, got {data.modality} ({data.name})")

    def _windows(self, data: Dataset) -> np.ndarray:
        stream: list[int] = []
        for t in data.x:
            stream.extend(encode(t))
            stream.append(EOS_ID)
        n = len(stream) // self.block_size
        if n < 1:
            raise GeneratorError(f"{data.name!r} holds {len(stream)} bytes, fewer than block_size={self.block_size}")
        windows = np.asarray(stream[: n * self.block_size], dtype=np.int64).reshape(n, self.block_size)
        if n > self.max_windows:
            windows = windows[np.linspace(0, n - 1, self.max_windows).round().astype(int)]
        self.train_windows_ = int(len(windows))
        return windows

    def train_tensors(self, data: Dataset):
        """One row per record: the windows made by :meth:`fit` (or made here from raw strings)."""
        import torch

        items = data.x
        windows = self._windows(data) if items and isinstance(items[0], str) else np.stack(items).astype(np.int64)
        return (torch.from_numpy(windows),)

    def batch_loss(self, batch):
        import torch

        (ids,) = batch
        if len(ids) == 0:
            # An empty Poisson batch: GPT-2's attention cannot reshape a zero-size batch, so give
            # opacus the empty per-sample gradients it expects; its step then releases pure noise.
            for p in self.model_.parameters():
                if p.requires_grad and hasattr(self.model_, "_module"):
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype)
            return torch.full((), float("nan"), requires_grad=True)
        pos = torch.arange(ids.shape[1]).expand(ids.shape[0], -1)  # per-item positions: opacus needs the batch dim
        logits = self.model_(input_ids=ids, position_ids=pos).logits[:, :-1]
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))

    # -- use ------------------------------------------------------------------------------
    def sample(self, n: int, seed: int | None = None, prompt: str = "", length: int | None = None,
               watermarking_config: Any = None, **conditions: Any) -> Samples:
        """``n`` continuations of ``prompt`` (default: a new passage), ``length`` new bytes each.

        ``watermarking_config`` (a ``transformers.WatermarkingConfig``, e.g. from
        ``guardrails.provenance.TextWatermark.config()``) embeds a green-list watermark while sampling.
        """
        import torch

        self.check_is_fitted()
        if conditions:
            raise GeneratorError(f"text takes no conditions besides prompt and length, got {sorted(conditions)}")
        n = check_n(n)
        length = self.sample_length if length is None else int(length)
        if not isinstance(prompt, str):
            raise GeneratorError("prompt must be a string")
        ids = [EOS_ID] + encode(prompt)
        limit = self.model_.config.n_positions
        if length <= 0 or len(ids) + length > limit:
            raise GeneratorError(f"prompt + length must fit the model's {limit} positions and length be positive")
        model = unwrap_module(self.model_)
        model.eval()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed if seed is not None else self.seed))
            with torch.no_grad():
                out = model.generate(
                    input_ids=torch.tensor([ids] * n), attention_mask=torch.ones(n, len(ids), dtype=torch.long),
                    do_sample=True, max_new_tokens=length, temperature=self.temperature, top_k=self.top_k or None,
                    pad_token_id=PAD_ID, eos_token_id=EOS_ID, watermarking_config=watermarking_config,
                )
        texts = [prompt + decode(row[len(ids):]) for row in out.tolist()]
        return Samples(data=texts, modality="text",
                       metadata={"generator": self.name, "seed": seed, "prompt": prompt, "length": length,
                                 "watermarked": watermarking_config is not None})

    def log_prob(self, x: Any) -> np.ndarray:
        """Exact log-likelihood (nats) of each text's bytes (texts longer than the context are refused)."""
        import torch

        self.check_is_fitted()
        texts = x.x if isinstance(x, Dataset) else ([x] if isinstance(x, str) else list(x))
        if not texts or not all(isinstance(t, str) and t for t in texts):
            raise GeneratorError("text.log_prob expects non-empty strings")
        model = unwrap_module(self.model_)
        out = []
        with torch.no_grad():
            for t in texts:
                ids = [EOS_ID] + encode(t)
                if len(ids) > model.config.n_positions:
                    raise GeneratorError(f"text of {len(ids) - 1} bytes exceeds the {model.config.n_positions - 1}-byte context")
                ids_t = torch.tensor([ids])
                logp = torch.log_softmax(model(input_ids=ids_t, attention_mask=torch.ones_like(ids_t)).logits[0, :-1].double(), -1)
                out.append(float(logp.gather(1, ids_t[0, 1:, None]).sum()))
        return np.asarray(out)

    def perplexity(self, texts: list[str], chunk: int | None = None) -> float:
        """Per-byte perplexity over ``texts`` cut into chunks of ``chunk`` bytes (default: block_size - 1)."""
        chunk = chunk or self.block_size - 1
        pieces, total = [], 0
        for t in texts:
            b = t.encode("utf-8")
            for s in range(0, len(b), chunk):
                piece = b[s:s + chunk].decode("utf-8", errors="ignore")
                if piece:
                    pieces.append(piece)
                    total += len(piece.encode("utf-8"))
        if not pieces:
            raise GeneratorError("no text to evaluate")
        return float(math.exp(-self.log_prob(pieces).sum() / total))
