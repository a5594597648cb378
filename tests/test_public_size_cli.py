"""`genguard train --public-size N`: neighbouring training sets either side of a multiple of the batch size
publish different ledgers without it (the sample rate is 1 / ceil(n / B)) and the same ledger with it."""
from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROWS = (81, 82)  # 64 and 65 training records after the train/holdout split: either side of the batch size, 64
PUBLISHED = ("sample_rate", "steps", "noise_multiplier", "epsilon", "delta", "privacy_unit", "guarantee")


def _ledger(tmp_path, rows: int, *extra: str) -> dict:
    from sklearn.datasets import load_diabetes

    csv = tmp_path / f"d{rows}.csv"
    load_diabetes(as_frame=True, scaled=False).frame.iloc[:rows].to_csv(csv, index=False)
    out = tmp_path / f"o{rows}{'-'.join(extra)}"
    r = subprocess.run([sys.executable, "-m", "genguard", "train", "--generator", "tabular", "--quick", "--data", str(csv),
                        "--out", str(out), *extra], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    ledger = json.loads((out / "model" / "ledger.json").read_text())
    return {k: ledger.get(k) for k in PUBLISHED}


def test_training_set_sizes_are_where_the_test_needs_them():
    from sklearn.datasets import load_diabetes

    from genguard.pipeline import load_training_data

    frame = load_diabetes(as_frame=True, scaled=False).frame
    sizes = []
    for rows in ROWS:
        with tempfile.TemporaryDirectory() as d:
            frame.iloc[:rows].to_csv(Path(d) / "t.csv", index=False)
            sizes.append(len(load_training_data(str(Path(d) / "t.csv"))[0].x))
    assert sizes == [64, 65]


def test_public_size_makes_neighbouring_ledgers_identical(tmp_path):
    a, b = _ledger(tmp_path, ROWS[0]), _ledger(tmp_path, ROWS[1])
    assert a["sample_rate"] == 1.0 and b["sample_rate"] == 0.5  # ceil(n / 64) published: 1 batch against 2
    a, b = _ledger(tmp_path, ROWS[0], "--public-size", "100"), _ledger(tmp_path, ROWS[1], "--public-size", "100")
    assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert a["sample_rate"] == 0.5


@pytest.mark.parametrize("args, message", [
    (["--generator", "dpmerf", "--public-size", "100"], "DP-SGD generators"),
    (["--generator", "tabular", "--no-dp", "--public-size", "100"], "--no-dp"),
    (["--generator", "tabular", "--public-size", "0"], "public-size"),
])
def test_public_size_is_refused_where_it_means_nothing(tmp_path, args, message):
    r = subprocess.run([sys.executable, "-m", "genguard", "train", *args, "--quick", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
