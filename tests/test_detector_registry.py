"""The detector tile-model registry: a new tile model is one class and one register call, saved and loaded by name."""
from __future__ import annotations

import json

import numpy as np
import pytest

from genguard.detectors import DetectorError
from genguard.detectors import models


class BrightnessTileModel:
    """A deliberately simple tile model: the logit is a fitted affine function of the tile's mean."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, tiles, y, progress=False):
        m = tiles.reshape(len(tiles), -1).mean(axis=1)
        self.threshold_ = float((m[y == 1].mean() + m[y == 0].mean()) / 2)
        self.sign_ = 1.0 if m[y == 1].mean() > m[y == 0].mean() else -1.0
        return self

    def logits(self, tiles):
        return self.sign_ * 50.0 * (tiles.reshape(len(tiles), -1).mean(axis=1) - self.threshold_)

    def state(self):
        return {"type": "brightness"}, {"params": np.asarray([self.threshold_, self.sign_], dtype=np.float64)}

    @classmethod
    def from_state(cls, cfg, t):
        m = cls()
        m.threshold_, m.sign_ = float(t["params"][0]), float(t["params"][1])
        return m


@pytest.fixture
def brightness():
    spec = models.register_tile_model("brightness", BrightnessTileModel, lambda d: BrightnessTileModel(d.seed),
                                      "mean brightness (a test model)")
    yield spec
    models.TILE_MODELS.pop("brightness", None)


def _images(rng, n, level):
    return [np.clip(rng.normal(level, 0.05, (64, 64)), 0, 1).astype(np.float32) for _ in range(n)]


def test_registered_tile_model_trains_saves_and_loads(tmp_path, brightness):
    assert "brightness" in models.kinds() and "brightness" in models.KINDS
    assert "brightness" not in models.ensemble_members()  # a plug-in never changes what the default ensemble is
    rng = np.random.default_rng(0)
    real, fake = _images(rng, 12, 0.3), _images(rng, 12, 0.7)
    det = models.make_detector("brightness", augment=False).fit(real, fake)
    p_fake = det.predict_proba(_images(rng, 4, 0.7))
    p_real = det.predict_proba(_images(rng, 4, 0.3))
    assert p_fake.min() > p_real.max()
    path = det.save(tmp_path / "b.safetensors")
    back = models.load_detector(path)
    np.testing.assert_allclose(back.predict_proba(real[:3]), det.predict_proba(real[:3]))


def test_file_with_an_unregistered_tile_model_is_refused_by_name(tmp_path, brightness):
    rng = np.random.default_rng(1)
    det = models.make_detector("brightness", augment=False).fit(_images(rng, 8, 0.3), _images(rng, 8, 0.7))
    path = det.save(tmp_path / "b.safetensors")
    models.TILE_MODELS.pop("brightness")
    with pytest.raises(DetectorError, match=r"b\.safetensors: .*'brightness'"):
        models.load_detector(path)


def test_registration_refuses_reserved_names_and_incomplete_classes():
    with pytest.raises(DetectorError, match="reserved"):
        models.register_tile_model("ensemble", BrightnessTileModel, lambda d: None, "x")
    with pytest.raises(DetectorError, match="reserved"):
        models.register_tile_model("npr", BrightnessTileModel, lambda d: None, "x")

    class NoState:
        def fit(self, tiles, y, progress=False): ...
        def logits(self, tiles): ...

    with pytest.raises(DetectorError, match="no state"):
        models.register_tile_model("nostate", NoState, lambda d: NoState(), "x")
    assert "nostate" not in models.TILE_MODELS


def test_cli_kind_choices_are_the_registry(brightness):
    from genguard.commands.detect import _kind_help, _kinds, detector_train

    opt = next(p for p in detector_train.params if p.name == "kind")
    assert {"spectral", "dct", "noise", "npr", "ensemble"} <= set(opt.type.choices) <= set(models.kinds())
    assert "brightness" in _kinds() and "mean brightness" in _kind_help()


def test_shipped_detector_loads_with_its_five_members():
    det = models.load_default()
    assert det.member_names() == ("spectral", "dct", "noise", "npr", "surprise")
    assert json.dumps(det.get_params())  # plain parameters
