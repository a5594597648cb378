"""Stacking by family cross-fitting: a member that memorised its training generators loses its weight."""
from __future__ import annotations

import numpy as np
import pytest

from genguard.detectors import DetectorError
from genguard.detectors import models


def _means(tiles):
    return tiles.reshape(len(tiles), -1).mean(axis=1)


class MemoriserTileModel:
    """Perfect on the generators it was fitted on, backwards on any other: +5 for a tile whose mean brightness
    is one it saw on a fake, else minus how far the mean is from mid-grey (fakes of an unseen family sit far
    from it, real tiles near it)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, tiles, y, progress=False):
        self.seen_ = np.sort(_means(tiles)[np.asarray(y) == 1])
        return self

    def logits(self, tiles):
        m = _means(tiles)
        near = np.min(np.abs(m[:, None] - self.seen_[None, :]), axis=1) < 0.01
        return np.where(near, 5.0, -5.0 * np.abs(m - 0.5))

    def state(self):
        return {"type": "memoriser"}, {"seen": self.seen_.astype(np.float64)}

    @classmethod
    def from_state(cls, cfg, t):
        m = cls()
        m.seen_ = np.asarray(t["seen"], dtype=np.float64)
        return m


class SmoothnessTileModel:
    """An honest but noisy cue that holds for every family: generated tiles are smoother (lower std)."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def fit(self, tiles, y, progress=False):
        s = tiles.reshape(len(tiles), -1).std(axis=1)
        y = np.asarray(y)
        self.threshold_ = float((s[y == 1].mean() + s[y == 0].mean()) / 2)
        return self

    def logits(self, tiles):
        return 50.0 * (self.threshold_ - tiles.reshape(len(tiles), -1).std(axis=1))

    def state(self):
        return {"type": "smoothness"}, {"threshold": np.asarray([self.threshold_], dtype=np.float64)}

    @classmethod
    def from_state(cls, cfg, t):
        m = cls()
        m.threshold_ = float(t["threshold"][0])
        return m


@pytest.fixture
def toy_members(monkeypatch):
    """An ensemble registry holding only the two toy members (the real ones are slow and not under test here)."""
    monkeypatch.setattr(models, "TILE_MODELS", {})
    models.register_tile_model("memoriser", MemoriserTileModel, lambda d: MemoriserTileModel(d.seed),
                               "memorises its training fakes (a test model)", in_ensemble=True)
    models.register_tile_model("smoothness", SmoothnessTileModel, lambda d: SmoothnessTileModel(d.seed),
                               "tile std (a test model)", in_ensemble=True)
    assert models.ensemble_members() == ("memoriser", "smoothness")


FAMILY_MEANS = {"a": 0.30, "b": 0.35, "c": 0.40, "d": 0.60, "e": 0.65, "f": 0.70}


def _image(rng, mean, std):
    return np.clip(mean + rng.normal(0.0, std, (64, 64)), 0.0, 1.0).astype(np.float32)


def _real(rng, n):
    return [_image(rng, 0.5 + rng.normal(0, 0.003), rng.uniform(0.06, 0.12)) for _ in range(n)]


def _fakes(rng, family_means, n_each):
    ims, groups = [], []
    for fam, mu in family_means.items():
        for _ in range(n_each):
            ims.append(_image(rng, mu + rng.normal(0, 0.003), rng.uniform(0.04, 0.10)))
            groups.append(fam)
    return ims, groups


@pytest.fixture
def toy_data():
    rng = np.random.default_rng(0)
    real = _real(rng, 120)
    fake, groups = _fakes(rng, FAMILY_MEANS, 20)
    # an unseen family for testing, and fresh real images
    test_fake, _ = _fakes(rng, {"g": 0.25}, 40)
    return real, fake, groups, _real(rng, 40), test_fake


def _fit(stack_cv, real, fake, groups):
    det = models.make_detector("ensemble", augment=False, train_tiles=1, stack_cv=stack_cv, stack_folds=3, seed=0)
    return det.fit(real, fake, fake_groups=groups)


def test_family_stacking_weighs_down_a_member_that_memorised_its_families(toy_members, toy_data):
    from sklearn.metrics import roc_auc_score

    real, fake, groups, test_real, test_fake = toy_data
    in_family = _fit("holdout", real, fake, groups)
    by_family = _fit("family", real, fake, groups)
    mem = in_family.member_names().index("memoriser")
    smooth = in_family.member_names().index("smoothness")
    # held-out images of the training families reward the memoriser: it is perfect on them
    assert in_family.stack_coef_[mem] > 0.5, in_family.stack_coef_
    # out of family it runs backwards, so cross-fitting by family switches it off and keeps the honest cue
    assert by_family.stack_coef_[mem] < 0.1 * in_family.stack_coef_[mem], by_family.stack_coef_
    assert by_family.stack_coef_[smooth] > 0.5 * in_family.stack_coef_[smooth]
    assert (by_family.stack_coef_ >= 0).all()
    # and that is what an unseen family sees
    y = np.r_[np.zeros(len(test_real)), np.ones(len(test_fake))]
    auc_in = roc_auc_score(y, in_family.predict_proba(test_real + test_fake))
    auc_fam = roc_auc_score(y, by_family.predict_proba(test_real + test_fake))
    assert auc_fam > auc_in + 0.1, (auc_in, auc_fam)
    assert auc_fam > 0.7  # about what the smoothness cue alone reaches (its two std ranges overlap)


def test_family_folds_are_recorded_and_survive_save_and_load(toy_members, toy_data, tmp_path):
    real, fake, groups, test_real, test_fake = toy_data
    det = _fit("family", real, fake, groups)
    folds = det.stack_info_["folds"]
    assert len(folds) == 3 and sorted(sum(folds, [])) == sorted(FAMILY_MEANS)  # every family in exactly one fold
    back = models.load_detector(det.save(tmp_path / "d.safetensors"))
    assert back.get_params()["stack_cv"] == "family" and back.stack_info_["folds"] == folds
    np.testing.assert_array_equal(back.stack_coef_, det.stack_coef_)
    np.testing.assert_allclose(back.predict_proba(test_real + test_fake), det.predict_proba(test_real + test_fake))
    # the same seed deals the same folds and gives the same weights
    again = _fit("family", real, fake, groups)
    assert again.stack_info_["folds"] == folds
    np.testing.assert_array_equal(again.stack_coef_, det.stack_coef_)


def test_family_stacking_refuses_fits_it_cannot_cross_fit(toy_members, toy_data):
    real, fake, groups, _, _ = toy_data
    det = models.make_detector("ensemble", augment=False, stack_cv="family")
    with pytest.raises(DetectorError, match="needs fake_groups"):
        det.fit(real, fake)
    with pytest.raises(DetectorError, match="entries for"):
        det.fit(real, fake, fake_groups=groups[:-1])
    with pytest.raises(DetectorError, match="two generator families"):
        det.fit(real, fake, fake_groups=["a"] * len(fake))
    with pytest.raises(DetectorError, match="unknown stack_cv"):
        models.make_detector("ensemble", stack_cv="groups")
    with pytest.raises(DetectorError, match="stack_folds"):
        models.make_detector("ensemble", stack_folds=1)


def test_nonnegative_logistic_matches_sklearn_when_the_constraint_is_slack():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 2))
    y = (X @ np.array([1.5, 0.5]) + rng.logistic(size=400) > 0).astype(int)
    coef, b = models.nonnegative_logistic(X, y)
    ref = LogisticRegression(C=1.0).fit(X, y)
    np.testing.assert_allclose(coef, ref.coef_[0], atol=1e-3)
    assert abs(b - ref.intercept_[0]) < 1e-3
    # a column that runs against the label gets weight 0, not a negative one
    coef, _ = models.nonnegative_logistic(np.c_[X[:, 0], -X[:, 0] + 0.1 * rng.normal(size=400)], y)
    assert coef[1] == 0.0 and coef[0] > 0.5


def test_leave_one_generator_out_cross_fits_by_family_only_where_two_families_remain(toy_members, toy_data):
    from genguard.detectors.evaluate import leave_one_generator_out

    real, fake, groups, _, _ = toy_data

    def make():
        return models.make_detector("ensemble", augment=False, stack_cv="family", stack_folds=3)

    res = leave_one_generator_out(make, real, fake, groups, n_boot=0)
    assert res["stack_cv"] == "family" and set(res["per_generator"]) == set(FAMILY_MEANS)
    two = [i for i, g in enumerate(groups) if g in ("a", "d")]
    res = leave_one_generator_out(make, real, [fake[i] for i in two], [groups[i] for i in two], n_boot=0)
    assert res["stack_cv"] == "holdout" and set(res["per_generator"]) == {"a", "d"}
