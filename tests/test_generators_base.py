"""The Generator protocol, the embedded data and the reference VAE."""
import json

import numpy as np
import pytest

from genguard.generators import GeneratorError, available, load, make_generator
from genguard.generators.base import Dataset
from genguard.generators.data import (
    digits_split, labels_from_filenames, load_data, load_image_folder, read_image, read_sample_images,
    write_samples,
)


def test_digits_split_is_fixed_and_stratified(digits):
    train, holdout = digits
    assert len(train) == 1437 and len(holdout) == 360
    assert train.x.shape[1:] == (8, 8) and 0.0 <= train.x.min() and train.x.max() <= 1.0
    # same split every time, disjoint, and every class in both parts in proportion
    t2, h2 = digits_split()
    assert np.array_equal(t2.x, train.x)
    shares_t = np.bincount(train.groups["label"]) / len(train)
    shares_h = np.bincount(holdout.groups["label"]) / len(holdout)
    assert np.abs(shares_t - shares_h).max() < 0.01
    flat_t = {row.tobytes() for row in train.x.reshape(len(train), -1)}
    overlap = sum(row.tobytes() in flat_t for row in holdout.x.reshape(len(holdout), -1))
    assert overlap <= 2  # the digits data holds a few exact duplicate images


def test_dataset_rejects_nan_and_bad_shapes():
    with pytest.raises(GeneratorError, match="NaN"):
        Dataset(x=np.full((3, 8, 8), np.nan, dtype=np.float32), modality="image")
    with pytest.raises(GeneratorError, match="shape"):
        Dataset(x=np.zeros((3, 64), dtype=np.float32), modality="image")
    with pytest.raises(GeneratorError, match="empty"):
        Dataset(x=np.zeros((0, 8, 8)), modality="image")


def test_unknown_generator_names_the_choices():
    with pytest.raises(GeneratorError, match="unknown generator 'nope'.*vae"):
        make_generator("nope")
    assert "vae" in available()


@pytest.fixture(scope="module")
def fitted_vae(digits):
    return make_generator("vae", epochs=8, seed=3).fit(digits[0], progress=False)


def test_vae_samples_are_reproducible_and_conditional(fitted_vae):
    a = fitted_vae.sample(30, seed=7)
    b = fitted_vae.sample(30, seed=7)
    c = fitted_vae.sample(30, seed=8)
    assert a.data.shape == (30, 8, 8) and a.modality == "image"
    assert np.array_equal(a.data, b.data) and not np.array_equal(a.data, c.data)
    assert np.array_equal(a.conditions["label"], np.arange(30) % 10)
    sevens = fitted_vae.sample(5, seed=1, label=7)
    assert (sevens.conditions["label"] == 7).all()
    with pytest.raises(GeneratorError, match="label"):
        fitted_vae.sample(5, label=12)
    with pytest.raises(GeneratorError, match="only the condition"):
        fitted_vae.sample(5, colour="red")


def test_vae_learns_class_structure(fitted_vae, digits):
    """Samples asked for class k look like class k to a classifier trained on real digits."""
    from sklearn.linear_model import LogisticRegression

    train, _ = digits
    clf = LogisticRegression(max_iter=3000).fit(train.x.reshape(len(train), -1), train.groups["label"])
    s = fitted_vae.sample(500, seed=0)
    agreement = (clf.predict(s.data.reshape(500, -1)) == s.conditions["label"]).mean()
    assert agreement > 0.6


def test_save_load_round_trip_without_pickle(fitted_vae, tmp_path):
    fitted_vae.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["generator"] == "vae" and cfg["params"]["seed"] == 3
    loaded = load(tmp_path / "m")
    assert np.array_equal(loaded.sample(12, seed=5).data, fitted_vae.sample(12, seed=5).data)
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(GeneratorError, match="weights.safetensors"):
        load(tmp_path / "m")
    with pytest.raises(GeneratorError, match="config.json missing"):
        load(tmp_path)


def test_written_samples_read_back_exactly(fitted_vae, tmp_path):
    s = fitted_vae.sample(10, seed=2)
    s.metadata["pixel_scale"] = 4
    paths = write_samples(s, tmp_path)
    assert len(paths) == 10 and all(p.suffix == ".png" for p in paths)
    back, files = read_sample_images(tmp_path, size=(8, 8))
    assert np.abs(back - np.round(s.data * 255) / 255).max() < 1e-6
    assert np.array_equal(labels_from_filenames(files), s.conditions["label"])


def test_bad_image_inputs_name_the_file(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(GeneratorError, match="bad.png"):
        read_image(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GeneratorError, match="no images found"):
        load_image_folder(empty)
    with pytest.raises(GeneratorError, match="neither an embedded"):
        load_data(str(tmp_path / "missing"))


def test_decompression_bomb_is_refused(tmp_path):
    from PIL import Image

    p = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(p)
    with pytest.raises(GeneratorError, match="pixel limit"):
        read_image(p, max_pixels=1_000_000)


def test_image_folder_groups_from_subfolders(tmp_path):
    from PIL import Image

    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.new("RGB", (16, 12), (i * 40, 0, 0)).save(tmp_path / cls / f"{i}.jpg")
    ds = load_image_folder(tmp_path, size=(8, 8))
    assert ds.x.shape == (6, 8, 8)
    assert ds.group_names["label"] == ["cats", "dogs"]
    assert list(ds.groups["label"]) == [0, 0, 0, 1, 1, 1]


def test_atomic_writes_keep_modes_and_leave_no_temp_files(tmp_path):
    import os
    import stat

    from genguard.generators._io import atomic_write_bytes, atomic_write_json

    p = atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o666 & ~_current_umask()
    k = atomic_write_bytes(tmp_path / "key.pem", b"secret", mode=0o600)
    assert stat.S_IMODE(os.stat(k).st_mode) == 0o600
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "r.json", {"bad": {1, 2}})  # not JSON-serialisable
    assert json.loads(p.read_text()) == {"a": 1}  # the earlier file survives a failed write
    # JSON has no NaN: a non-finite value becomes null plus a reason, never the literal NaN
    q = atomic_write_json(tmp_path / "n.json", {"x": float("nan"), "y": [float("inf")]})
    assert "NaN" not in q.read_text() and "Infinity" not in q.read_text()
    assert json.loads(q.read_text()) == {"x": None, "x_reason": "not a finite number (nan)", "y": [None]}
    q.unlink()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["key.pem", "r.json"]


def _current_umask():
    import os

    m = os.umask(0)
    os.umask(m)
    return m
