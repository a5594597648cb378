"""Character-level hidden Markov model (hmmlearn's CategoricalHMM) over text such as Python's documentation."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from genguard.generators._common import check_n
from genguard.generators.base import Dataset, Generator, GeneratorError, Samples, progress_bar
from genguard.generators.registry import register

#: Characters seen fewer times than this in training map to the unknown symbol.
UNKNOWN = "\ufffd"


@register
class CharHMM(Generator):
    """A discrete-emission HMM over characters, fitted by Baum-Welch (hmmlearn).

    Text passages are cut into sequences of at most ``max_seq_len``
    characters; at most ``max_chars`` characters are used in all. Characters
    outside the ``max_vocab`` most frequent ones become ``\\ufffd``.
    ``sample(n, length=...)`` returns ``n`` strings; ``log_prob(texts)`` the
    exact log-likelihood of each string (nats). Not differentially private.
    """

    name = "hmm"
    modality = "text"
    default_data = "pydoc"
    quick_params = {"n_states": 8, "n_iter": 3, "max_chars": 5000, "sample_length": 60}
    modalities = ("text", "sequence")
    dp_mechanism = "none"  # Baum-Welch sees the data directly

    def __init__(self, n_states: int = 24, n_iter: int = 20, max_chars: int = 40_000, max_seq_len: int = 400,
                 max_vocab: int = 96, sample_length: int = 200, tol: float = 1e-3, seed: int = 0) -> None:
        self.n_states = n_states
        self.n_iter = n_iter
        self.max_chars = max_chars
        self.max_seq_len = max_seq_len
        self.max_vocab = max_vocab
        self.sample_length = sample_length
        self.tol = tol
        self.seed = seed

    def fit(self, data: Dataset, trainer: Any = None, progress: bool = True) -> "CharHMM":
        from hmmlearn.hmm import CategoricalHMM

        if trainer is not None and getattr(trainer, "private", False):
            raise GeneratorError("hmm is fitted by Baum-Welch (EM), not by gradient steps: it cannot train with DP-SGD")
        if not isinstance(data, Dataset) or data.modality not in ("text", "sequence"):
            raise GeneratorError("hmm trains on a text Dataset (a list of strings)")
        texts = [t for t in data.x if isinstance(t, str) and t]
        if len(texts) != len(data.x):
            raise GeneratorError(f"hmm: every item of {data.name!r} must be a non-empty string")
        chunks, total = [], 0
        for t in texts:
            for start in range(0, len(t), self.max_seq_len):
                piece = t[start:start + self.max_seq_len]
                if total + len(piece) > self.max_chars:
                    piece = piece[: self.max_chars - total]
                if len(piece) >= 2:
                    chunks.append(piece)
                    total += len(piece)
                if total >= self.max_chars:
                    break
            if total >= self.max_chars:
                break
        counts: dict[str, int] = {}
        for c in chunks:
            for ch in c:
                counts[ch] = counts.get(ch, 0) + 1
        vocab = sorted(sorted(counts, key=lambda ch: -counts[ch])[: self.max_vocab - 1]) + [UNKNOWN]
        self.vocab_ = "".join(vocab)
        index = self._index()
        seqs = [np.array([index.get(ch, len(vocab) - 1) for ch in c]) for c in chunks]
        x = np.concatenate(seqs)[:, None]
        lengths = [len(s) for s in seqs]
        model = CategoricalHMM(n_components=self.n_states, n_iter=1, tol=0.0, random_state=self.seed,
                               init_params="ste", params="ste", n_features=len(vocab))
        prev = -np.inf
        with progress_bar("fitting hmm", total=self.n_iter, enabled=progress) as advance:
            for it in range(self.n_iter):
                model.fit(x, lengths)
                model.init_params = ""  # later calls continue EM from the current parameters
                ll = float(model.monitor_.history[-1]) / len(x)
                advance(1, f"log-lik/char {ll:.4f}")
                if ll - prev < self.tol:
                    break
                prev = ll
        self.startprob_ = np.asarray(model.startprob_)
        self.transmat_ = np.asarray(model.transmat_)
        self.emissionprob_ = np.asarray(model.emissionprob_)
        self.training_report_ = {"private": False, "mechanism": "Baum-Welch (hmmlearn)", "iterations": it + 1,
                                 "chars": int(len(x)), "loglik_per_char": ll}
        self.fitted_ = True
        return self

    def _index(self) -> dict[str, int]:
        return {ch: i for i, ch in enumerate(self.vocab_)}

    def _state_tensors(self) -> dict[str, np.ndarray]:
        return {"startprob": self.startprob_, "transmat": self.transmat_, "emissionprob": self.emissionprob_}

    def _extra_state(self) -> dict[str, Any]:
        return {"vocab_": self.vocab_}

    def _load_state_tensors(self, tensors: Mapping[str, np.ndarray], extra: Mapping[str, Any]) -> None:
        try:
            self.vocab_ = str(extra["vocab_"])
            self.startprob_ = np.asarray(tensors["startprob"], dtype=np.float64)
            self.transmat_ = np.asarray(tensors["transmat"], dtype=np.float64)
            self.emissionprob_ = np.asarray(tensors["emissionprob"], dtype=np.float64)
        except KeyError as exc:
            raise GeneratorError(f"hmm weights are incomplete (missing {exc})") from None
        if self.emissionprob_.shape != (len(self.transmat_), len(self.vocab_)):
            raise GeneratorError("hmm weights do not match the saved vocabulary")

    def sample(self, n: int, seed: int | None = None, length: int | None = None, **conditions: Any) -> Samples:
        """``n`` strings of ``length`` characters (default ``sample_length``), by ancestral sampling."""
        self.check_is_fitted()
        if conditions:
            raise GeneratorError(f"hmm is unconditional, got conditions {sorted(conditions)}")
        n = check_n(n)
        length = self.sample_length if length is None else length
        if not isinstance(length, (int, np.integer)) or length <= 0:
            raise GeneratorError(f"length must be a positive integer, got {length!r}")
        rng = np.random.default_rng(int(seed if seed is not None else self.seed))
        trans_cdf = np.cumsum(self.transmat_, axis=1)
        emit_cdf = np.cumsum(self.emissionprob_, axis=1)
        state = np.searchsorted(np.cumsum(self.startprob_), rng.random(n) * np.cumsum(self.startprob_)[-1])
        out = np.zeros((n, length), dtype=np.int64)
        for t in range(length):
            state = np.minimum(state, len(self.transmat_) - 1)
            u = rng.random(n)
            out[:, t] = np.minimum((u[:, None] * emit_cdf[state, -1:] > emit_cdf[state]).sum(1), len(self.vocab_) - 1)
            u = rng.random(n)
            state = (u[:, None] * trans_cdf[state, -1:] > trans_cdf[state]).sum(1)
        texts = ["".join(self.vocab_[i] for i in row) for row in out]
        return Samples(data=texts, modality="text", metadata={"generator": self.name, "seed": seed, "length": length})

    def log_prob(self, x: Any) -> np.ndarray:
        """Exact log-likelihood (nats) of each string under the HMM (forward algorithm)."""
        self.check_is_fitted()
        texts = x.x if isinstance(x, Dataset) else ([x] if isinstance(x, str) else list(x))
        if not texts or not all(isinstance(t, str) and t for t in texts):
            raise GeneratorError("hmm.log_prob expects non-empty strings")
        index, unk = self._index(), len(self.vocab_) - 1
        log_b = np.log(self.emissionprob_ + 1e-300)
        out = []
        for t in texts:
            obs = [index.get(ch, unk) for ch in t]
            alpha = np.log(self.startprob_ + 1e-300) + log_b[:, obs[0]]
            for o in obs[1:]:
                m = alpha.max()
                alpha = m + np.log(np.exp(alpha - m) @ self.transmat_ + 1e-300) + log_b[:, o]
            m = alpha.max()
            out.append(m + np.log(np.exp(alpha - m).sum()))
        return np.asarray(out)
