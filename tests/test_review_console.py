"""The review console: provenance, detection and forgery evidence on one page, most suspicious first."""
import json
import subprocess
import sys

import numpy as np
from PIL import Image


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "genguard", *args], capture_output=True, text=True, timeout=600)


def test_review_orders_tampered_first_and_reports_every_file(tmp_path):
    from skimage import data

    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(data.camera()[:160, :160]).save(src / "photo.png")
    Image.fromarray(np.full((20, 20), 90, np.uint8)).save(src / "tiny.png")
    (src / "table.csv").write_text("a,b\n1,2\n3,4\n")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    tagged = tmp_path / "tagged"
    proc = _cli("tag", str(src / "photo.png"), str(src / "table.csv"), "--out", str(tagged), "--no-watermark")
    assert proc.returncode == 0, proc.stderr
    # tamper with the tagged table: its sidecar record no longer matches
    (tagged / "table.csv").write_text("a,b\n1,2\n3,5\n")
    out = tmp_path / "review"
    proc = _cli("review", str(src), str(tagged), "--out", str(out), "--no-forgery")
    assert proc.returncode == 1, proc.stderr  # a tampered file
    results = json.loads((out / "review.json").read_text())
    by_name = {(r["path"].split("/")[-2], r["path"].split("/")[-1]): r for r in results}
    assert len(results) == 6
    assert results[0]["provenance"]["verdict"] == "tampered" and results[0]["path"].endswith("tagged/table.csv")
    assert by_name[("tagged", "photo.png")]["provenance"]["verdict"] == "intact"
    assert by_name[("in", "photo.png")]["provenance"]["verdict"] == "untagged"
    assert by_name[("in", "broken.jpg")]["error"]
    tiny = by_name[("in", "tiny.png")]
    assert tiny["verdict"] == "inconclusive" and "tile" in tiny["note"]
    page = (out / "review.html").read_text()
    assert page.count('class="card"') == 6 and "data:image/png;base64," in page
    assert page.index("table.csv") < page.index("photo.png")  # most suspicious first
