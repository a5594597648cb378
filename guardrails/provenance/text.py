"""Text watermark for any causal LM through transformers' green-list generation watermarking, keyed, with detection from text alone."""
from __future__ import annotations

import hashlib
import hmac
import math
from typing import Any, Sequence

#: A passage is called watermarked when its exact one-sided binomial p-value is at most this: under
#: "no watermark with this key" each distinct (context, token) pair is green with probability gamma,
#: so this is the false-positive rate per passage.
P_THRESHOLD = 1e-4


#: genguard's reference text generator is byte-level with ByT5's mapping: token = byte + 3, 0 pad, 1 eos.
BYTE_VOCAB_SIZE, BYTE_OFFSET, BYTE_EOS = 259, 3, 1


def byte_watermark(key: bytes) -> "TextWatermark":
    """The keyed watermark of genguard's byte-level text generator (``generators.text``)."""
    return TextWatermark(key, BYTE_VOCAB_SIZE, bos_token_id=BYTE_EOS)


def byte_ids(text: str) -> list[int]:
    """A text as the byte-level generator's token ids (UTF-8 bytes + 3)."""
    return [b + BYTE_OFFSET for b in text.encode("utf-8")]


class TextWatermark:
    """Keyed Kirchenbauer et al. green-list watermark, using ``transformers.WatermarkingConfig`` for generation
    and transformers' own green-list function for detection.

    ``key`` (bytes) is turned into the processor's ``hashing_key`` by HMAC-SHA256, so the green lists are secret.
    Detection needs only the token ids (or the text plus the same tokenizer), the vocabulary size and the key.
    Detection scores each distinct (context, token) pair once and reports the exact binomial tail p-value
    (scipy), so repetitive human text cannot inflate it; passages too short to ever reach the threshold
    are reported as not applicable ("too short to tell").
    """

    def __init__(self, key: bytes, vocab_size: int, *, bos_token_id: int | None = None, greenlist_ratio: float = 0.5,
                 bias: float = 6.0, context_width: int = 1, seeding_scheme: str = "lefthash",
                 p_threshold: float = P_THRESHOLD) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
            raise ValueError("text watermark key must be at least 16 bytes")
        if not isinstance(vocab_size, int) or vocab_size < 8:
            raise ValueError(f"vocab_size must be an integer >= 8, got {vocab_size!r}")
        self.vocab_size = vocab_size
        self.bos_token_id = bos_token_id
        self.greenlist_ratio = greenlist_ratio
        self.bias = bias
        self.context_width = context_width
        self.seeding_scheme = seeding_scheme
        if not 0 < p_threshold < 1:
            raise ValueError(f"p_threshold must lie in (0, 1), got {p_threshold!r}")
        self.p_threshold = p_threshold
        digest = hmac.new(bytes(key), b"genguard-text-watermark-v1", hashlib.sha256).digest()
        # a positive 48-bit integer: large enough to be unguessable per token pair, small enough that
        # hashing_key * token_id stays far inside torch's 64-bit seed arithmetic
        self.hashing_key_ = int.from_bytes(digest[:6], "big") | 1
        self._detector = None

    def config(self):
        """The ``transformers.WatermarkingConfig`` to pass to ``model.generate(..., watermarking_config=...)``."""
        from transformers import WatermarkingConfig

        return WatermarkingConfig(greenlist_ratio=self.greenlist_ratio, bias=self.bias, hashing_key=self.hashing_key_,
                                  seeding_scheme=self.seeding_scheme, context_width=self.context_width)

    def generate(self, model, input_ids, **kwargs):
        """``model.generate`` with this watermark applied (sampling by default)."""
        kwargs.setdefault("do_sample", True)
        return model.generate(input_ids, watermarking_config=self.config(), **kwargs)

    @property
    def min_scored_tokens(self) -> int:
        """The fewest scored (distinct) tokens at which even an all-green passage reaches ``p_threshold``:
        all-green over n tokens has p = gamma**n, so n = ceil(log(p_threshold) / log(gamma)). Below it
        no passage can be called watermarked, so verify says "too short to tell" instead of "absent"."""
        n = math.ceil(math.log(self.p_threshold) / math.log(self.greenlist_ratio) - 1e-9)
        while self.greenlist_ratio ** n > self.p_threshold:
            n += 1
        return n

    def _processor(self):
        if self._detector is None:
            from transformers.generation.logits_process import WatermarkLogitsProcessor

            self._detector = WatermarkLogitsProcessor(
                vocab_size=self.vocab_size, device="cpu", greenlist_ratio=self.greenlist_ratio, bias=self.bias,
                hashing_key=self.hashing_key_, seeding_scheme=self.seeding_scheme, context_width=self.context_width)
        return self._detector

    def green_pairs(self, ids: Sequence[int]) -> tuple[int, int]:
        """(green, scored) over the distinct (context, token) pairs of ``ids``.

        Each pair is counted once: a repeated phrase would otherwise count the same coin flip again and
        again, and the binomial null (independent Bernoulli(gamma) per scored token) would not hold."""
        import torch

        proc = self._processor()
        w = self.context_width
        pairs = {(tuple(ids[i - w:i]), ids[i]) for i in range(w, len(ids))}
        green_of: dict[tuple[int, ...], set[int]] = {}
        green = 0
        for ctx, tok in pairs:
            if ctx not in green_of:
                green_of[ctx] = set(proc._get_greenlist_ids(torch.tensor(ctx, dtype=torch.long)).tolist())
            green += tok in green_of[ctx]
        return green, len(pairs)

    def detect_ids(self, ids: Sequence[int]) -> dict[str, Any]:
        """Score one passage given as token ids: green share of its distinct (context, token) pairs, the
        exact one-sided binomial p-value ``binom.sf(green - 1, scored, gamma)``, and a verdict.

        ``applicable`` is False ("too short to tell") when fewer than :attr:`min_scored_tokens` pairs can
        be scored: no text that short could reach the threshold, so its absence of a mark means nothing."""
        from scipy.stats import binom

        ids = [int(i) for i in ids]
        if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got [{min(ids)}, {max(ids)}]")
        if self.bos_token_id is not None and ids and ids[0] == self.bos_token_id:
            ids = ids[1:]
        green, n = self.green_pairs(ids) if len(ids) > self.context_width else (0, 0)
        need = self.min_scored_tokens
        base = {"num_tokens_scored": n, "num_green_tokens": green, "min_scored_tokens": need,
                "p_threshold": self.p_threshold, "greenlist_ratio": self.greenlist_ratio}
        if n < need:
            return {**base, "applicable": False, "found": False, "z_score": None, "p_value": None,
                    "reason": f"too short to tell: {n} distinct scored tokens, fewer than the {need} an all-green "
                              f"text needs to reach p <= {self.p_threshold:g}"}
        gamma = self.greenlist_ratio
        p = float(binom.sf(green - 1, n, gamma))
        z = (green - gamma * n) / math.sqrt(n * gamma * (1 - gamma))
        return {**base, "applicable": True, "found": bool(p <= self.p_threshold), "z_score": float(z),
                "p_value": p, "green_fraction": green / n,
                "method": f"exact binomial tail over distinct (context, token) pairs (green list, gamma={gamma}, "
                          f"{self.seeding_scheme}, context {self.context_width})"}

    def detect(self, text: str, tokenizer) -> dict[str, Any]:
        """Score a passage of text, tokenised with the generator's own tokenizer (no special tokens added)."""
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if callable(tokenizer) else tokenizer.encode(text)
        return self.detect_ids(ids)
