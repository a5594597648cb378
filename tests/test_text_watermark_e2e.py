"""The reference text generator's outputs carry the keyed green-list watermark, and `verify` finds it."""
import json

import pytest

from genguard.generators import make_generator, quick_params
from genguard.generators.data import load_pydoc_text, write_samples


@pytest.fixture(scope="module")
def text_model():
    data = load_pydoc_text()
    return make_generator("text", **quick_params("text")).fit(data, progress=False), data


def test_watermarked_text_is_found_and_human_text_is_not(text_model, tmp_path):
    from genguard.guardrails.provenance import KeyStore, verify_file
    from genguard.guardrails.provenance.text import byte_ids, byte_watermark

    gen, data = text_model
    wm = byte_watermark(KeyStore.load_or_create().watermark_key)
    marked = gen.sample(12, seed=1, length=200, watermarking_config=wm.config())
    plain = gen.sample(12, seed=1, length=200)
    f_marked = [wm.detect_ids(byte_ids(t))["found"] for t in marked.data]
    f_plain = [wm.detect_ids(byte_ids(t))["found"] for t in plain.data]
    assert sum(f_marked) >= 11, f_marked
    assert sum(f_plain) == 0, f_plain
    human = [t[:400] for t in data.x[:40]]
    assert sum(wm.detect_ids(byte_ids(t))["found"] for t in human) == 0

    # a watermarked text whose sidecar manifest was lost is 'stripped', not 'untagged'
    paths = write_samples(marked, tmp_path)
    rec = verify_file(paths[0])
    assert rec["manifest"]["state"] == "Missing" and rec["verdict"] == "stripped", rec
    assert rec["watermark"]["p_value"] <= rec["watermark"]["p_threshold"]
    # another (independent, secret) key sees no watermark in the same text. The false-positive rate is over the
    # key's draw: a fixed public key such as b"k" * 32 is not one, since one model's texts share its preferred
    # byte pairs, whose greenness under a fixed key is one draw for all of them (measured: p < 0.05 for 13% of
    # 480 such texts under b"k" * 32, 6% under a fresh key per text)
    import os

    other = byte_watermark(os.urandom(32))
    assert not other.detect_ids(byte_ids(marked.data[0]))["found"]


def test_run_with_text_generator_tags_and_watermarks(tmp_path):
    from genguard.pipeline import RunConfig, run

    run(RunConfig(out=tmp_path, generator="text", quick=True, epsilon=10.0, n_samples=6), progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["generator"]["modality"] == "text"
    assert report["provenance"]["verdicts"] == {"intact": 6}
    assert "window" in report["privacy"]["guarantee"]  # the privacy unit is stated
    assert all(p.with_suffix(".c2pa").is_file() for p in (tmp_path / "samples").glob("*.txt"))


def test_p_value_is_the_exact_binomial_tail_over_distinct_pairs():
    from scipy.stats import binom

    from genguard.guardrails.provenance.text import byte_ids, byte_watermark

    wm = byte_watermark(b"p-value-test-key-0123456789abcdef")
    text = "the quick brown fox jumps over the lazy dog; the quick brown fox jumps again and again."
    ids = byte_ids(text)
    # count green distinct (previous byte, byte) pairs by hand with transformers' own green lists
    import torch
    proc = wm._processor()
    pairs = {(ids[i - 1], ids[i]) for i in range(1, len(ids))}
    green = sum(t in set(proc._get_greenlist_ids(torch.tensor([c])).tolist()) for c, t in pairs)
    d = wm.detect_ids(ids)
    assert d["num_tokens_scored"] == len(pairs) < len(ids) - 1  # repeats counted once
    assert d["num_green_tokens"] == green
    assert d["p_value"] == binom.sf(green - 1, len(pairs), wm.greenlist_ratio)
    # repeating the passage adds no scored pairs, so the p-value cannot shrink by repetition
    # (only the one pair across each junction, ".t", is new)
    assert wm.detect_ids(byte_ids(text * 5))["num_tokens_scored"] == len(pairs | {(ids[-1], ids[0])})


def test_short_text_is_too_short_to_tell():
    from genguard.guardrails.provenance.text import byte_ids, byte_watermark

    wm = byte_watermark(b"p-value-test-key-0123456789abcdef")
    n = wm.min_scored_tokens
    assert wm.greenlist_ratio ** n <= wm.p_threshold < wm.greenlist_ratio ** (n - 1)
    d = wm.detect_ids(byte_ids("abcdefgh"))  # 7 distinct pairs
    assert d["applicable"] is False and not d["found"] and "too short to tell" in d["reason"]
    assert wm.detect_ids(byte_ids("abcdefghijklmnopqrstuvwxyz"))["applicable"] is True


def test_default_length_samples_detected_and_human_passages_not(text_model):
    from genguard.guardrails.provenance.text import byte_ids, byte_watermark

    gen, data = text_model
    wm = byte_watermark(b"detection-test-key-0123456789abcd")
    marked = gen.sample(100, seed=3, length=make_generator("text").sample_length, watermarking_config=wm.config())
    found = [wm.detect_ids(byte_ids(t))["found"] for t in marked.data]
    assert sum(found) >= 99, sum(found)
    b = "\n".join(data.x).encode()
    human = [b[s:s + 120].decode("utf-8", "ignore") for s in range(0, len(b) - 120, 120)][:400]
    assert sum(wm.detect_ids(byte_ids(t))["found"] for t in human) <= 1
