"""Flow matching / rectified flow: the ODE sampler against an exact velocity field, guidance, bad settings, the loop.

(Fit, reproducible sampling, save/load, labels, learning and the DP-SGD paths are covered for every
registered family in test_gen_families.py.)
"""
import json

import numpy as np
import pytest

from genguard.generators import GeneratorError, make_generator, quick_params


@pytest.fixture(scope="module")
def fitted(digits):
    return make_generator("flowmatch", **{**quick_params("flowmatch"), "epochs": 1}).fit(digits[0], progress=False)


class _Oracle:
    """The exact rectified-flow velocity towards one image c (in [-1, 1]): v(x, t) = (c - x) / (1 - t)."""

    def __init__(self, target, scale):
        import torch

        self.c = torch.from_numpy(target)[None, None]
        self.scale = scale
        self.calls = []

    def eval(self):
        return self

    def __call__(self, x, level, y):
        t = level / self.scale
        self.calls.append(float(t[0]))
        return (self.c - x) / (1 - t)[:, None, None, None]


def test_euler_on_the_exact_velocity_lands_on_the_data(fitted):
    """With the true velocity field of a one-point distribution, Euler steps from noise reach it exactly:
    checks the time direction (noise at 0, data at 1), the time scaling and the [-1, 1] pixel mapping."""
    from genguard.generators.flowmatch import TIME_SCALE

    target01 = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    oracle = _Oracle(target01 * 2 - 1, TIME_SCALE)
    gen = make_generator("flowmatch", **{**fitted.get_params(), "solver": "euler", "sampling_steps": 5})
    gen.__dict__.update({k: v for k, v in fitted.__dict__.items() if k.endswith("_") and k != "model_"})
    gen.model_ = oracle
    s = gen.sample(3, seed=0)
    assert np.allclose(s.data, target01, atol=1e-5)
    assert oracle.calls == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])


def test_guidance_uses_the_null_class_and_changes_samples(fitted):
    import torch

    seen = []
    model = fitted.model_
    orig = model.forward

    def spy(x, level, y):
        seen.append(set(y.tolist()))
        return orig(x, level, y)

    model.forward = spy
    try:
        fitted.guidance = 2.0
        guided = fitted.sample(4, seed=0, label=3).data
        fitted.guidance = 0.0
        plain = fitted.sample(4, seed=0, label=3).data
    finally:
        model.forward = orig
        fitted.guidance = 0.0
    assert {fitted.n_classes_} in seen and {3} in seen  # the unconditional pass asks for the null class
    assert not np.allclose(guided, plain)
    assert torch.is_tensor(fitted.model_.label.weight) and fitted.model_.label.weight.shape[0] == fitted.n_classes_ + 1


@pytest.mark.parametrize("bad, match", [({"solver": "rk45"}, "solver"), ({"sampling_steps": 0}, "sampling_steps"),
                                        ({"p_uncond": 1.0}, "p_uncond")])
def test_bad_settings_are_refused(bad, match, digits):
    with pytest.raises(GeneratorError, match=match):
        make_generator("flowmatch", **{**quick_params("flowmatch"), **bad}).fit(digits[0], progress=False)


def test_the_whole_loop_runs_privately(tmp_path, monkeypatch):
    """`genguard run --generator flowmatch --quick`, in process and with one epoch."""
    from genguard.generators.flowmatch import FlowMatching
    from genguard.pipeline import RunConfig, run

    monkeypatch.setattr(FlowMatching, "quick_params", {**FlowMatching.quick_params, "epochs": 1})
    res = run(RunConfig(out=tmp_path, generator="flowmatch", epsilon=8.0, quick=True, n_samples=60), progress=False)
    report = json.loads((tmp_path / "report.json").read_text())
    assert 0 < report["privacy"]["epsilon"] <= 8.0 and report["privacy"]["verification"]["consistent"]
    assert report["privacy"]["private_modules"] == ["model_"]
    assert 0 <= report["privacy"]["membership_inference"]["max_auc"] <= 1
    assert len(list((tmp_path / "samples").glob("*.png"))) == 60 and res.timings["total_s"] > 0
