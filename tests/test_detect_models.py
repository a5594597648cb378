"""Detectors separate real photo patches from upsampled (generator-like) images; calibration, save/load, bad input."""
import numpy as np
import pytest

from genguard.detectors import DetectorError
from genguard.detectors.models import Detector, load_detector, make_detector


def _data(seed, n):
    """Real 64x64 photo crops vs. crops of the same photos downsampled x2 and upsampled (bilinear / transposed-conv-like).

    Content is the same kind in both classes; only the upsampling trace differs.
    """
    import cv2
    from skimage import data

    rng = np.random.default_rng(seed)
    photos = [data.astronaut(), data.coffee(), data.rocket(), np.dstack([data.camera()] * 3), data.chelsea()]

    def crop():
        p = photos[rng.integers(len(photos))]
        y, x = rng.integers(0, p.shape[0] - 64), rng.integers(0, p.shape[1] - 64)
        return np.ascontiguousarray(p[y:y + 64, x:x + 64])

    real = [crop() for _ in range(n)]
    fake = []
    for i in range(n):
        small = cv2.resize(crop(), (32, 32), interpolation=cv2.INTER_AREA)
        interp = cv2.INTER_LINEAR if i % 2 else cv2.INTER_CUBIC
        fake.append(cv2.resize(small, (64, 64), interpolation=interp))
    return real, fake


@pytest.fixture(scope="module")
def train_test():
    return _data(0, 100), _data(1, 40)


def _auc(det, test):
    from sklearn.metrics import roc_auc_score

    real, fake = test
    p = det.predict_proba(real + fake)
    return roc_auc_score([0] * len(real) + [1] * len(fake), p), p


@pytest.fixture(scope="module")
def ensemble(train_test):
    (real, fake), _ = train_test
    return make_detector("ensemble", npr_epochs=5, seed=0).fit(real, fake)


@pytest.mark.parametrize("kind", ["spectral", "dct", "noise"])
def test_linear_detectors_separate_upsampled_images(train_test, kind):
    (real, fake), test = train_test
    det = make_detector(kind).fit(real, fake)
    auc, p = _auc(det, test)
    assert auc >= 0.85, f"{kind} AUC {auc:.3f}"
    assert ((0 <= p) & (p <= 1)).all()


def test_npr_and_ensemble_separate(train_test, ensemble):
    _, test = train_test
    auc, p = _auc(ensemble, test)
    assert auc >= 0.95, f"ensemble AUC {auc:.3f}"
    npr = make_detector("npr", npr_epochs=5).fit(*train_test[0])
    assert _auc(npr, test)[0] >= 0.8
    # calibrated: most real images get p < 0.5 and most fakes p > 0.5
    n = len(test[0])
    assert np.mean(p[:n] < 0.5) > 0.8 and np.mean(p[n:] > 0.5) > 0.8


def test_shuffled_labels_give_chance(train_test):
    (real, fake), test = train_test
    rng = np.random.default_rng(3)
    allx = real + fake
    perm = rng.permutation(len(allx))
    det = make_detector("dct").fit([allx[i] for i in perm[:100]], [allx[i] for i in perm[100:]])
    assert 0.3 < _auc(det, test)[0] < 0.7  # the detector learns traces, not the label order


def test_save_load_roundtrip_is_safetensors_not_pickle(tmp_path, train_test, ensemble):
    _, (real, fake) = train_test
    path = ensemble.save(tmp_path / "det.safetensors")
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert raw[8:9] == b"{" and b"genguard-detector/1" in raw[8:8 + n]
    assert b"\x80\x04" not in raw[:2]  # not a pickle protocol header
    loaded = Detector.load(path)
    np.testing.assert_allclose(loaded.predict_proba(real[:8] + fake[:8]), ensemble.predict_proba(real[:8] + fake[:8]),
                               atol=1e-6)
    assert loaded.get_params() == ensemble.get_params()
    assert path.stat().st_size < 1_000_000


def test_load_rejects_non_detector_files(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(DetectorError, match="bad.safetensors"):
        load_detector(bad)
    with pytest.raises(DetectorError, match="no such detector"):
        load_detector(tmp_path / "absent.safetensors")


def test_verdict_band_and_isotonic(train_test):
    (real, fake), test = train_test
    det = make_detector("spectral", calibration="isotonic", band=(0.3, 0.7)).fit(real, fake)
    assert det.verdict(0.71) == "synthetic" and det.verdict(0.5) == "inconclusive" and det.verdict(0.1) == "authentic"
    v = det.predict(test[0][:5])
    assert set(v) <= {"synthetic", "authentic", "inconclusive"}
    with pytest.raises(DetectorError):
        make_detector("spectral", band=(0.8, 0.2))
    with pytest.raises(DetectorError):
        make_detector("spectral", calibration="magic")
    with pytest.raises(DetectorError):
        make_detector("nonsense")


def test_any_size_and_mode(ensemble):
    from skimage import data

    img = data.astronaut()
    grey = img[..., 0]
    rgba = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    tiny = img[:20, :30]
    odd = img[:203, :157]
    p = ensemble.predict_proba([img, grey, rgba, tiny, odd, img.astype(np.float32) / 255.0])
    assert p.shape == (6,) and np.isfinite(p).all()
    assert abs(p[0] - p[2]) < 1e-6 and abs(p[0] - p[5]) < 1e-3  # RGBA (opaque) and float inputs agree with uint8 RGB


def test_bad_fit_and_unfitted():
    with pytest.raises(DetectorError, match="not fitted"):
        make_detector("dct").predict_proba([np.zeros((64, 64), np.uint8)])
    with pytest.raises(DetectorError, match="at least 4"):
        make_detector("dct").fit([np.zeros((64, 64), np.uint8)] * 2, [np.ones((64, 64), np.uint8)] * 10)


def test_augmentation_keeps_format_from_deciding(train_test):
    """Real all JPEG-compressed, fakes all lossless in training; after re-encoding both to one format
    the detector must still rank by the upsampling trace, not by the format."""
    from sklearn.metrics import roc_auc_score

    from genguard.detectors._io import jpeg_roundtrip

    (real, fake), (treal, tfake) = train_test
    det = make_detector("ensemble", npr_epochs=4).fit([jpeg_roundtrip(r, 85) for r in real], fake)
    # test: the reverse (fakes JPEG, reals lossless); a format-learner would invert its ranking
    p = det.predict_proba(treal + [jpeg_roundtrip(f, 85) for f in tfake])
    assert roc_auc_score([0] * len(treal) + [1] * len(tfake), p) >= 0.8


def test_npr_scoring_path_equals_the_trained_network(train_test):
    """Scoring folds each batch norm into its convolution and runs 64-tile channels-last batches; the logits
    must be the trained network's own eval-mode outputs, and a refit must not reuse the old folded network."""
    import torch

    from genguard.detectors.models import NPRTileModel

    rng = np.random.default_rng(3)
    tiles = rng.random((150, 64, 64)).astype(np.float32)
    y = (np.arange(150) % 2).astype(float)
    tiles[y == 1] = np.repeat(np.repeat(tiles[y == 1][:, ::2, ::2], 2, 1), 2, 2)
    m = NPRTileModel(epochs=1, seed=0).fit(tiles, y)
    with torch.no_grad():
        ref = m.net_.eval()(m._inputs(tiles)).squeeze(1).numpy()
    assert np.abs(m.logits(tiles) - ref).max() < 1e-4
    m2 = NPRTileModel(epochs=1, seed=1).fit(tiles, y)
    m.net_ = m2.net_  # a new network under the same model object
    assert np.abs(m.logits(tiles) - m2.logits(tiles)).max() < 1e-5
    assert np.abs(m.logits(tiles) - ref).max() > 1e-3


def test_noise_features_match_their_definitions():
    """The vectorised noise statistics equal a direct reading of their definitions (skewness, kurtosis and
    lag-1 autocorrelation of the median-filter residual) on photo tiles and on noise."""
    from scipy import ndimage, stats
    from skimage import data

    from genguard.detectors.features import noise_features

    g = data.camera().astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    tiles = np.stack([g[y:y + 64, x:x + 64] for y, x in rng.integers(0, 440, (6, 2))]
                     + [rng.random((64, 64)).astype(np.float32)])
    f = noise_features(tiles)
    for t, row in zip(tiles, f):
        r = (t - ndimage.median_filter(t, size=3))[2:-2, 2:-2].astype(np.float64)
        z = r.ravel()
        assert row[1] == pytest.approx(stats.skew(z), rel=3e-3, abs=1e-3)  # float32 sums
        assert row[2] == pytest.approx(np.log(stats.kurtosis(z, fisher=False)), rel=3e-3)
        rc = r - r.mean()
        lag1 = (rc[:, 1:] * rc[:, :-1]).mean() / (rc ** 2).mean()
        assert row[21] == pytest.approx(lag1, abs=1e-3)
