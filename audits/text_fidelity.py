"""Text fidelity: perplexity under a local n-gram model of the reference text, and self-BLEU diversity of generated texts.

``perplexity_local`` is measured with an interpolated Kneser-Ney bigram model
of words trained by the audit on the reference texts (no language model is
downloaded), so it is comparable only between audits with the same reference
text, never to published perplexities of neural language models. The same
model's perplexity on held-out reference text is reported as the baseline.

``self_bleu`` (Zhu et al., Texygen 2018): mean BLEU-4 of each generated text
against all the others as references; high means repetitive output. BLEU is
implemented here (modified n-gram precision, brevity penalty, add-one
smoothing for n > 1 as in Lin & Och 2004) to avoid a dependency for 40 lines.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any, Sequence

import numpy as np

from genguard.audits.sections import Reason, missing

_TOKEN = re.compile(r"[A-Za-z0-9_']+|[^\sA-Za-z0-9_']")


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


class BigramKN:
    """Interpolated Kneser-Ney bigram model over word tokens (discount 0.75), with an <unk> floor."""

    def __init__(self, discount: float = 0.75) -> None:
        self.discount = discount

    def fit(self, texts: Sequence[str]) -> "BigramKN":
        bigrams: Counter = Counter()
        unigrams: Counter = Counter()
        for t in texts:
            toks = ["<s>"] + tokenize(t) + ["</s>"]
            unigrams.update(toks)
            bigrams.update(zip(toks[:-1], toks[1:]))
        self.bigrams_ = bigrams
        self.context_count_ = Counter()
        self.followers_ = Counter()
        continuation: Counter = Counter()
        for (a, b), c in bigrams.items():
            self.context_count_[a] += c
            self.followers_[a] += 1
            continuation[b] += 1
        total = sum(continuation.values())
        self.vocab_ = set(unigrams)
        v = len(self.vocab_) + 1  # + <unk>
        # continuation probability, smoothed so unseen words keep some mass
        self.p_cont_ = {w: (c + 1) / (total + v) for w, c in continuation.items()}
        self.p_unk_ = 1 / (total + v)
        return self

    def _p(self, a: str, b: str) -> float:
        pc = self.p_cont_.get(b, self.p_unk_)
        ca = self.context_count_.get(a, 0)
        if ca == 0:
            return pc
        c = self.bigrams_.get((a, b), 0)
        lam = self.discount * self.followers_[a] / ca
        return max(c - self.discount, 0.0) / ca + lam * pc

    def perplexity(self, texts: Sequence[str]) -> float:
        nll, n = 0.0, 0
        for t in texts:
            toks = ["<s>"] + tokenize(t) + ["</s>"]
            for a, b in zip(toks[:-1], toks[1:]):
                nll -= math.log(self._p(a, b))
                n += 1
        return math.exp(nll / max(n, 1))


def perplexity_local(generated: Sequence[str], reference: Sequence[str], seed: int = 0,
                     holdout_fraction: float = 0.2) -> dict[str, Any]:
    """Perplexity of generated texts under a KN bigram model of the reference, with a real-text baseline."""
    if len(generated) == 0 or len(reference) < 2:
        return missing(Reason.TOO_FEW_SAMPLES, "needs generated texts and at least 2 reference texts")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(reference))
    k = max(1, int(round(len(reference) * holdout_fraction)))
    held = [reference[i] for i in perm[:k]]
    fit_on = [reference[i] for i in perm[k:]]
    model = BigramKN().fit(fit_on)
    return {"value": model.perplexity(generated), "baseline_reference_holdout": model.perplexity(held),
            "model": "interpolated Kneser-Ney word bigram trained on the reference text",
            "note": "local model: comparable only between audits with the same reference text"}


def _ngrams(toks: list[str], n: int) -> Counter:
    return Counter(tuple(toks[i:i + n]) for i in range(len(toks) - n + 1))


def bleu(hypothesis: list[str], references: Sequence[list[str]], max_n: int = 4) -> float:
    """Sentence BLEU with add-one smoothing for n > 1 (Lin & Och 2004)."""
    if not hypothesis:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        hyp = _ngrams(hypothesis, n)
        max_ref: Counter = Counter()
        for r in references:
            for g, c in _ngrams(r, n).items():
                if c > max_ref[g]:
                    max_ref[g] = c
        clipped = sum(min(c, max_ref[g]) for g, c in hyp.items())
        total = sum(hyp.values())
        if n == 1:
            if clipped == 0:
                return 0.0
            log_p += math.log(clipped / total)
        else:
            log_p += math.log((clipped + 1) / (total + 1))
    ref_lens = [len(r) for r in references]
    closest = min(ref_lens, key=lambda rl: (abs(rl - len(hypothesis)), rl))
    bp = 1.0 if len(hypothesis) > closest else math.exp(1 - closest / len(hypothesis))
    return bp * math.exp(log_p / max_n)


def self_bleu(texts: Sequence[str], max_texts: int = 200, max_n: int = 4, seed: int = 0) -> dict[str, Any]:
    """Mean BLEU-4 of each text against all the others (on a random subset of ``max_texts``).

    Computed in one pass over the n-grams: for each n-gram the largest count
    in any *other* text is the largest count overall, or the second largest
    when this text alone holds the largest. Same result as calling
    :func:`bleu` per text (checked in the tests), in linear rather than
    quadratic time.
    """
    if len(texts) < 2:
        return missing(Reason.TOO_FEW_SAMPLES, "needs at least 2 generated texts")
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(texts))[:max_texts]
    toks = [tokenize(texts[i]) for i in idx]
    lens = np.array([len(t) for t in toks])
    counts = [[_ngrams(t, n) for n in range(1, max_n + 1)] for t in toks]
    scores = np.zeros(len(toks))
    stats = []
    for n in range(max_n):
        top1: dict = {}
        top1_holders: Counter = Counter()
        top2: dict = {}
        for c in counts:
            for g, v in c[n].items():
                t1 = top1.get(g, 0)
                if v > t1:
                    top2[g] = t1
                    top1[g] = v
                    top1_holders[g] = 1
                elif v == t1:
                    top1_holders[g] += 1
                elif v > top2.get(g, 0):
                    top2[g] = v
        stats.append((top1, top1_holders, top2))
    for i, c in enumerate(counts):
        if lens[i] == 0:
            continue
        log_p = 0.0
        zero = False
        for n in range(max_n):
            top1, holders, top2 = stats[n]
            clipped = 0
            for g, v in c[n].items():
                other = top2.get(g, 0) if (v == top1[g] and holders[g] == 1) else top1[g]
                clipped += min(v, other)
            total = sum(c[n].values())
            if n == 0:
                if clipped == 0:
                    zero = True
                    break
                log_p += math.log(clipped / total)
            else:
                log_p += math.log((clipped + 1) / (total + 1))
        if zero:
            continue
        # closest other length (ties -> shorter), as in bleu()
        others = np.delete(lens, i)
        diff = np.abs(others - lens[i])
        closest = int(others[np.lexsort((others, diff))[0]])
        bp = 1.0 if lens[i] > closest else math.exp(1 - closest / lens[i])
        scores[i] = bp * math.exp(log_p / max_n)
    se = float(scores.std(ddof=1) / np.sqrt(len(scores)))
    return {"value": float(scores.mean()), "ci": [float(scores.mean() - 1.96 * se), float(scores.mean() + 1.96 * se)],
            "n": int(len(scores)), "note": "higher = less diverse (1.0: every text repeats the others)"}


def text_fidelity(generated: Sequence[str], reference: Sequence[str], seed: int = 0) -> dict[str, Any]:
    out = {"perplexity_local": perplexity_local(generated, reference, seed=seed),
           "self_bleu": self_bleu(generated, seed=seed)}
    ref_sb = self_bleu(reference, seed=seed)
    if ref_sb.get("value") is not None and out["self_bleu"].get("value") is not None:
        out["self_bleu"]["baseline_reference"] = ref_sb["value"]
    if len(generated) < 50:
        out["warnings"] = [f"only {len(generated)} generated texts: perplexity and self-BLEU are noisy"]
    return out


def verbatim_copies(generated: Sequence[str], train: Sequence[str], n: int = 13, alpha: float = 0.05) -> dict[str, Any]:
    """Texts that repeat any ``n``-token span of the training text verbatim (13-gram overlap, as in GPT-3's
    contamination check); the memorization measure for text."""
    from genguard.audits.stats import wilson_interval

    seen = set()
    for t in train:
        toks = tokenize(t)
        for i in range(len(toks) - n + 1):
            seen.add(tuple(toks[i:i + n]))
    hits = []
    for j, t in enumerate(generated):
        toks = tokenize(t)
        if any(tuple(toks[i:i + n]) in seen for i in range(len(toks) - n + 1)):
            hits.append(j)
    k = len(hits)
    lo, hi = wilson_interval(k, len(generated), alpha)
    return {"verbatim_copy_rate": k / max(len(generated), 1), "verbatim_copy_rate_ci": [float(lo), float(hi)],
            "verbatim_copies": hits[:50], "ngram": n,
            "method": f"a generated text is a copy when it repeats any {n}-token span of the training text"}

