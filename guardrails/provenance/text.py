"""Text watermark for any causal LM through transformers' green-list generation watermarking, keyed, with detection from text alone."""
from __future__ import annotations

import hashlib
import hmac
from typing import Any, Sequence

#: z-score above which a passage is called watermarked. One-sided normal tail: p = 3.2e-5 per passage.
Z_THRESHOLD = 4.0


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
    and ``transformers.WatermarkDetector`` for detection.

    ``key`` (bytes) is turned into the processor's ``hashing_key`` by HMAC-SHA256, so the green lists are secret.
    Detection needs only the token ids (or the text plus the same tokenizer), the vocabulary size and the key.
    Repeated n-grams are counted once (``ignore_repeated_ngrams``) so that repetitive human text cannot
    inflate the z-score.
    """

    def __init__(self, key: bytes, vocab_size: int, *, bos_token_id: int | None = None, greenlist_ratio: float = 0.25,
                 bias: float = 2.5, context_width: int = 1, seeding_scheme: str = "lefthash",
                 z_threshold: float = Z_THRESHOLD) -> None:
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
        self.z_threshold = z_threshold
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

    def _get_detector(self):
        if self._detector is None:
            from transformers import PretrainedConfig, WatermarkDetector

            # -1 never matches a token, so the detector strips nothing when the model has no BOS token
            bos = self.bos_token_id if self.bos_token_id is not None else -1
            cfg = PretrainedConfig(vocab_size=self.vocab_size, bos_token_id=bos)
            self._detector = WatermarkDetector(model_config=cfg, device="cpu", watermarking_config=self.config(),
                                               ignore_repeated_ngrams=True)
        return self._detector

    def detect_ids(self, ids: Sequence[int]) -> dict[str, Any]:
        """Score one passage given as token ids: green fraction, z-score, one-sided p-value, verdict."""
        import torch

        ids = [int(i) for i in ids]
        if len(ids) < self.context_width + 2:
            return {"applicable": False, "found": False, "reason": f"only {len(ids)} tokens; too short to score",
                    "num_tokens_scored": 0, "z_score": None, "p_value": None}
        if min(ids) < 0 or max(ids) >= self.vocab_size:
            raise ValueError(f"token ids must lie in [0, {self.vocab_size}), got [{min(ids)}, {max(ids)}]")
        if self.bos_token_id is not None and ids[0] == self.bos_token_id:
            ids = ids[1:]
        out = self._get_detector()(torch.tensor([ids], dtype=torch.long), z_threshold=self.z_threshold,
                                   return_dict=True)
        z = float(out.z_score[0])
        p = float(out.p_value[0])
        n = out.num_tokens_scored
        green = out.num_green_tokens
        return {"applicable": True, "found": bool(z >= self.z_threshold), "z_score": z, "p_value": p,
                "num_tokens_scored": int(n[0]), "green_fraction": float(green[0] / max(n[0], 1)),
                "z_threshold": self.z_threshold, "method": "transformers WatermarkDetector (green list, "
                f"gamma={self.greenlist_ratio}, {self.seeding_scheme}, unique n-grams)"}

    def detect(self, text: str, tokenizer) -> dict[str, Any]:
        """Score a passage of text, tokenised with the generator's own tokenizer (no special tokens added)."""
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if callable(tokenizer) else tokenizer.encode(text)
        return self.detect_ids(ids)
