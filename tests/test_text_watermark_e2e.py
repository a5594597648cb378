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
    z_marked = [wm.detect_ids(byte_ids(t))["z_score"] for t in marked.data]
    z_plain = [wm.detect_ids(byte_ids(t))["z_score"] for t in plain.data]
    assert sum(z >= 4 for z in z_marked) >= 11, z_marked
    assert sum(z >= 4 for z in z_plain) == 0, z_plain
    human = [t[:400] for t in data.x[:40]]
    assert sum(wm.detect_ids(byte_ids(t))["found"] for t in human) == 0

    # a watermarked text whose sidecar manifest was lost is 'stripped', not 'untagged'
    paths = write_samples(marked, tmp_path)
    rec = verify_file(paths[0])
    assert rec["manifest"]["state"] == "Missing" and rec["verdict"] == "stripped", rec
    assert rec["watermark"]["z_score"] >= 4
    # another key sees no watermark in the same text
    other = byte_watermark(b"k" * 32)
    assert not other.detect_ids(byte_ids(marked.data[0]))["found"]


def test_run_with_text_generator_tags_and_watermarks(tmp_path):
    from genguard.pipeline import RunConfig, run

    run(RunConfig(out=tmp_path, generator="text", quick=True, epsilon=10.0, n_samples=6), progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["generator"]["modality"] == "text"
    assert report["provenance"]["verdicts"] == {"intact": 6}
    assert "window" in report["privacy"]["guarantee"]  # the privacy unit is stated
    assert all(p.with_suffix(".c2pa").is_file() for p in (tmp_path / "samples").glob("*.txt"))
