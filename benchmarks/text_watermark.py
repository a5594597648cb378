"""Text watermark of the reference text generator: detection from the text alone after 0/10/25% word
replacement, false positives on human text, and the p-value as a function of length.

    OMP_NUM_THREADS=1 python benchmarks/text_watermark.py [--n 200] [--human 2000]

Human text: passages of Python's own documentation (pydoc topics, ``load_pydoc_text``) plus the
plain-text files under /usr/share/doc shipped on this machine, cut into passages of the generator's
default sample length, scored with several keys.
"""
from __future__ import annotations

import argparse
import gzip
import random
from pathlib import Path

from scipy.stats import binom

from genguard.generators import make_generator, quick_params
from genguard.generators.data import load_pydoc_text
from genguard.guardrails.provenance.text import byte_ids, byte_watermark


def replace_words(text: str, share: float, vocab: list[str], rng: random.Random) -> str:
    words = text.split(" ")
    for i in rng.sample(range(len(words)), round(share * len(words))):
        words[i] = rng.choice(vocab)
    return " ".join(words)


def human_passages(pydoc: list[str], length: int, limit: int) -> list[str]:
    docs = list(pydoc)
    for p in sorted(Path("/usr/share/doc").rglob("*")):
        try:
            raw = gzip.open(p).read() if p.suffix == ".gz" else p.read_bytes() if p.is_file() else b""
            docs.append(raw.decode("utf-8"))
        except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
            continue
    out = []
    for d in docs:
        b = d.encode("utf-8")
        out += [b[s:s + length].decode("utf-8", "ignore") for s in range(0, len(b) - length + 1, length)]
    random.Random(0).shuffle(out)
    return out[:limit]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200, help="watermarked samples")
    ap.add_argument("--human", type=int, default=2000, help="human passages per key")
    ap.add_argument("--keys", type=int, default=3)
    ap.add_argument("--length", type=int, default=None, help="sample length (default: the generator's default)")
    args = ap.parse_args()
    data = load_pydoc_text()
    params = quick_params("text")
    gen = make_generator("text", **params).fit(data, progress=False)
    length = args.length or make_generator("text").sample_length  # the generator's default sample length
    wm = byte_watermark(b"benchmark-text-key-0123456789ab!")
    print(f"watermark: gamma={wm.greenlist_ratio}, bias={wm.bias}, threshold p <= {wm.p_threshold:g}, "
          f"minimum {wm.min_scored_tokens} distinct scored tokens")
    marked = gen.sample(args.n, seed=1, length=length, watermarking_config=wm.config()).data
    vocab = sorted({w for t in data.x for w in t.split() if w.isalpha()})
    rng = random.Random(0)
    print(f"\n{args.n} samples of {length} bytes (quick-trained generator)")
    print("| words replaced | detected | median p |")
    print("|---|---|---|")
    for share in (0.0, 0.10, 0.25):
        res = [wm.detect_ids(byte_ids(replace_words(t, share, vocab, rng) if share else t)) for t in marked]
        ps = sorted(r["p_value"] if r["p_value"] is not None else 1.0 for r in res)
        print(f"| {share:.0%} | {sum(r['found'] for r in res) / len(res):.3f} | {ps[len(ps) // 2]:.1e} |")
    human = human_passages(data.x, length, args.human)
    flagged = short = total = 0
    min_p = 1.0
    for k in range(args.keys):
        w = byte_watermark(f"benchmark-human-key-{k:02d}-0123456789".encode())
        for t in human:
            r = w.detect_ids(byte_ids(t))
            total += 1
            flagged += r["found"]
            short += not r["applicable"]
            min_p = min(min_p, r["p_value"] if r["p_value"] is not None else 1.0)
    print(f"\nhuman text: {flagged} of {total} passages flagged ({len(human)} passages x {args.keys} keys), "
          f"{short} too short to tell, smallest p {min_p:.1e}")
    print("\np-value of a passage with n distinct scored tokens at the green share watermarked text reaches")
    res = [wm.detect_ids(byte_ids(t)) for t in marked]
    share = sum(r["num_green_tokens"] for r in res) / sum(r["num_tokens_scored"] for r in res)
    print(f"(mean green share of the samples: {share:.2f}; all-green: gamma**n)")
    print("| scored tokens n | p all green | p at the samples' green share |")
    print("|---|---|---|")
    for n in (5, 10, 14, 20, 30, 50, 80, 120):
        print(f"| {n} | {binom.sf(n - 1, n, wm.greenlist_ratio):.1e} | "
              f"{binom.sf(round(share * n) - 1, n, wm.greenlist_ratio):.1e} |")


if __name__ == "__main__":
    main()
