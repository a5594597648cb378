"""Fitting choices of the reference generators that a metric can check: DP-MERF's noise-floor stop."""
import warnings

import numpy as np
import pytest

from genguard.generators import GeneratorError, make_generator
from genguard.generators.data import digits_split

SMALL = {"n_features": 300, "steps": 400, "batch_size": 200}


@pytest.fixture(scope="module")
def digits():
    return digits_split()


def _fit(train, **params):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return make_generator("dpmerf", **{**SMALL, **params}).fit(train, progress=False)


def test_dpmerf_stops_at_the_noise_floor_only_when_there_is_noise(digits):
    train, _ = digits
    noisy = _fit(train, epsilon=1.0, stop_at_noise=1.0)
    rep = noisy.training_report_
    # at epsilon 1 the released embedding is mostly noise: the loss reaches the floor long before 400 steps
    assert rep["noise_floor"] > 0
    assert 50 < rep["generator_steps"] < SMALL["steps"]
    # the floor is what the Gaussian noise contributes, sum_c w_c * 2 D (sigma s)^2 / count_c^2 with the
    # sensitivity s = sqrt(1 + count_weight^2): with about 144 records per class this is
    # 2 * 300 * sigma^2 s^2 / 144^2 give or take the noise on the counts
    s2 = 1 + rep["count_weight"] ** 2
    assert rep["max_grad_norm"] ** 2 == pytest.approx(s2)
    approx = 2 * SMALL["n_features"] * s2 * rep["noise_multiplier"] ** 2 / (len(train) / 10) ** 2
    assert 0.7 * approx < rep["noise_floor"] < 1.4 * approx
    assert rep["final_loss"] < 1.05 * rep["noise_floor"]
    # disabled, and without noise, the fit runs every step
    assert _fit(train, epsilon=1.0).training_report_["generator_steps"] == SMALL["steps"]  # off by default
    exact = _fit(train).training_report_
    assert exact["noise_floor"] == 0 and exact["generator_steps"] == SMALL["steps"]


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_dpmerf_refuses_a_meaningless_stop_factor(digits, bad):
    with pytest.raises(GeneratorError, match="stop_at_noise"):
        _fit(digits[0], stop_at_noise=bad)


GAN_SMALL = {"epochs": 10, "width": 32, "batch_size": 32}


def _class_spread_and_fidelity(gen, train, per_class=60):
    """Within-class spread of the samples relative to the real digits', and how often a classifier trained
    on the real digits recognises each sample as the class it was drawn for."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import pairwise_distances

    labels = np.repeat(np.arange(10), per_class)
    x = gen.sample(len(labels), seed=0, label=labels).data.reshape(len(labels), -1)
    real, ry = train.x.reshape(len(train), -1), train.groups["label"]
    spread = np.mean([pairwise_distances(x[labels == c]).mean() / pairwise_distances(real[ry == c]).mean()
                      for c in range(10)])
    clf = LogisticRegression(max_iter=1000).fit(real, ry)
    return float(spread), float(clf.score(x, labels))


def test_gan_does_not_collapse_to_one_digit_per_class(digits):
    """A collapsed conditional GAN draws near-copies within each class: spread far below the real one
    (0.3-0.45 before the mode-seeking term), while noise would pass a spread test but not the classifier."""
    train, _ = digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen = make_generator("gan", **GAN_SMALL).fit(train, progress=False)
    spread, recognised = _class_spread_and_fidelity(gen, train)
    assert spread > 0.7, spread
    assert recognised > 0.6, recognised
