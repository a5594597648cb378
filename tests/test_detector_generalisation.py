"""The shipped detector on an up-sampler it never saw, deterministic training, the real-only surprise model, the LOFO splitter."""
import numpy as np
import pytest

from genguard.detectors import DetectorError
from genguard.detectors.evaluate import leave_one_family_out_splits
from genguard.detectors.models import SurpriseTileModel, load_default, load_detector, make_detector


def _crops(n, seed, size=64):
    from skimage import data

    rng = np.random.default_rng(seed)
    # chelsea and gravel are kept out of the default detector's training photos
    photos = [data.chelsea(), np.dstack([data.gravel()] * 3), data.astronaut(), data.coffee()]
    out = []
    for i in range(n):
        p = photos[i % len(photos)]
        y, x = rng.integers(0, p.shape[0] - size), rng.integers(0, p.shape[1] - size)
        out.append(np.ascontiguousarray(p[y:y + size, x:x + size]))
    return out


def _untrained_upsampler(crops, seed):
    """Each crop area-down-sampled x2, then up-sampled by an untrained net: Lanczos x2 + a random 3x3 conv per channel.

    The fakes are the real crops' own content (so a detector that learned content cannot tell them apart), and
    Lanczos resizing is no operator of the default detector's training families.
    """
    import cv2

    rng = np.random.default_rng(seed)
    out = []
    for c in crops:
        small = cv2.resize(c, (c.shape[1] // 2, c.shape[0] // 2), interpolation=cv2.INTER_AREA)
        up = cv2.resize(small, (c.shape[1], c.shape[0]), interpolation=cv2.INTER_LANCZOS4).astype(np.float32)
        k = np.zeros((3, 3), np.float32)
        k[1, 1] = 1.0
        k += rng.normal(0, 0.05, (3, 3)).astype(np.float32)
        k /= k.sum()
        out.append(np.clip(cv2.filter2D(up, -1, k), 0, 255).astype(np.uint8))
    return out


def test_shipped_detector_scores_an_unseen_upsampler_above_chance():
    from sklearn.metrics import roc_auc_score

    det = load_default()
    assert "surprise" in det.members_  # the real-only density component ships
    real = _crops(48, seed=11)
    fake = _untrained_upsampler(_crops(48, seed=11), seed=3)
    p = det.predict_proba(real + fake)
    auc = roc_auc_score(np.r_[np.zeros(48), np.ones(48)], p)
    assert auc >= 0.65, auc  # a detector of content alone scores about 0.5 here: the classes share their content
    lo, hi = det.band
    assert 0.0 <= lo <= hi <= 1.0 and (lo, hi) != (0.2, 0.8)  # the band was recomputed, not the constructor's


def _small_set(seed):
    real = _crops(24, seed)
    return real, _untrained_upsampler(_crops(24, seed + 1), seed)


def test_training_is_deterministic_for_a_seed(tmp_path):
    real, fake = _small_set(5)
    test = _crops(8, 99)
    kw = dict(kind="ensemble", npr_epochs=1, train_tiles=1, augment=True)
    a = make_detector(**kw, seed=4).fit(real, fake)
    b = make_detector(**kw, seed=4).fit(real, fake)
    c = make_detector(**kw, seed=5).fit(real, fake)
    pa, pb, pc = a.predict_proba(test), b.predict_proba(test), c.predict_proba(test)
    np.testing.assert_array_equal(pa, pb)
    assert not np.array_equal(pa, pc)  # the seed is used, so equality above is not vacuous
    a.save(tmp_path / "a.safetensors")
    b.save(tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    np.testing.assert_array_equal(load_detector(tmp_path / "a.safetensors").predict_proba(test), pa)


def _tiles(images):
    from genguard.detectors._io import to_grey

    return np.stack([to_grey(im) for im in images]).astype(np.float32)


def test_surprise_density_is_fitted_on_real_tiles_only():
    real = _tiles(_crops(40, 1))
    fake_a = _tiles(_untrained_upsampler(_crops(40, 2), 0))
    fake_b = np.clip(fake_a + np.random.default_rng(0).normal(0, 0.05, fake_a.shape), 0, 1).astype(np.float32)
    y = np.r_[np.zeros(40), np.ones(40)]
    ma = SurpriseTileModel().fit(np.concatenate([real, fake_a]), y)
    mb = SurpriseTileModel().fit(np.concatenate([real, fake_b]), y)
    for k in ("w_", "edges_", "scales_"):
        np.testing.assert_array_equal(getattr(ma, k), getattr(mb, k))
    # surprise is ~0 on real patches like the ones it was fitted on and departs from it on smoothed fakes
    s_real = ma.features(_tiles(_crops(20, 7)))[:, 0]
    s_fake = ma.features(fake_a)[:, 0]
    assert abs(float(np.median(s_real))) < 0.3
    assert float(np.median(s_fake)) < float(np.median(s_real)) - 0.1
    with pytest.raises(DetectorError, match="real tiles"):
        SurpriseTileModel().fit(fake_a, np.ones(40))


def test_surprise_state_round_trip_and_bad_shapes():
    real = _tiles(_crops(20, 1))
    fake = _tiles(_untrained_upsampler(_crops(20, 2), 0))
    m = SurpriseTileModel().fit(np.concatenate([real, fake]), np.r_[np.zeros(20), np.ones(20)])
    cfg, t = m.state()
    m2 = SurpriseTileModel.from_state(cfg, t)
    np.testing.assert_array_equal(m.logits(fake), m2.logits(fake))
    with pytest.raises(DetectorError, match="shapes"):
        SurpriseTileModel.from_state(cfg, {**t, "coef": t["coef"][:3]})
    with pytest.raises(DetectorError, match="incomplete"):
        SurpriseTileModel.from_state(cfg, {k: v for k, v in t.items() if k != "w"})


def test_lofo_splitter_never_leaks_the_held_out_family():
    rng = np.random.default_rng(0)
    fams = np.array(["real"] * 50 + [f"f{i}" for i in range(8) for _ in range(20)] + ["check"] * 10)
    split = rng.choice(["train", "test"], size=len(fams))
    seen = []
    for held, tr, te in leave_one_family_out_splits(fams, split, exclude=["check"]):
        seen.append(held)
        assert held not in set(fams[tr]) and "check" not in set(fams[tr])
        assert set(split[tr]) == {"train"} and set(split[te]) == {"test"}
        assert set(fams[te]) == {"real", held}
        assert not set(tr) & set(te)
        # every other family's train images are used, none of the held-out one's
        assert set(tr) == set(np.nonzero((split == "train") & ~np.isin(fams, [held, "check"]))[0])
    assert seen == [f"f{i}" for i in range(8)]
    with pytest.raises(DetectorError, match="'train' or 'test'"):
        list(leave_one_family_out_splits(fams, np.where(split == "test", "val", split)))
    with pytest.raises(DetectorError, match="two fake families"):
        list(leave_one_family_out_splits(np.array(["real", "f0"]), np.array(["train", "test"])))
