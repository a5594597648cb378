"""check_private_training: every reference family passes, and each deliberately broken generator is caught."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from genguard.generators import make_generator, quick_params  # noqa: E402
from genguard.generators.base import Dataset, TorchGenerator  # noqa: E402
from genguard.guardrails.privacy import PrivateTrainer  # noqa: E402
from genguard.guardrails.privacy.conformance import (  # noqa: E402
    FIXES, ConformanceError, check_private_training)

RANDOMNESS = {"secret_sampling", "secret_noise"}
FAMILIES = ["vae", "gan", "rbm", "flow", "pixelcnn", "ddpm", "score", "text", "tabular"]


def _data_for(name: str) -> Dataset:
    from genguard.generators.data import digits_split, load_embedded, train_holdout

    if name == "text":
        return train_holdout(load_embedded("pydoc"))[0]
    if name == "tabular":
        return train_holdout(load_embedded("diabetes"))[0]
    return digits_split()[0]


_RESULTS: dict = {}


def _reference(name: str):
    if name not in _RESULTS:
        _RESULTS[name] = check_private_training(make_generator(name, **quick_params(name)), _data_for(name))
    return _RESULTS[name]


@pytest.mark.parametrize("name", FAMILIES)
def test_reference_family_keeps_records_inside_the_mechanism(name):
    # gan: passes only with the generator step that reads no private labels (post_processing).
    result = _reference(name)
    failed = [f"{c.name}: {c.code} {c.message}" for c in result.failures if c.name not in RANDOMNESS]
    assert not failed, failed
    assert {c.name for c in result.checks} >= {"private_modules", "uncovered_parameters", "record_mixing", "buffers",
                                               "mean_loss", "sensitivity", "build_state", "post_processing",
                                               "saved_modules", "noise_scale"}
    assert result.check("sensitivity").measured["moved"] <= 2.0 * 1.001


@pytest.mark.parametrize("name", FAMILIES)
def test_reference_family_draws_secret_batches_and_noise(name):
    # Two trainers configured alike (same seed, same settings) must not share batches or noise.
    result = _reference(name)
    assert result.passed, result.summary()


# ---------------------------------------------------------------------------------------------
# deliberately broken generators
# ---------------------------------------------------------------------------------------------
class _CenterBatch(nn.Module):
    """Subtracts the batch mean: mixes records without being a BatchNorm and without parameters."""

    def forward(self, x):
        return x - x.mean(0, keepdim=True)


class _RunningMean(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.register_buffer("mean", torch.zeros(d))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.mean.mul_(0.9).add_(0.1 * x[:1].mean(0))  # from one record only: no mixing, but state
        return x


class Tiny(TorchGenerator):
    """A small conditional autoencoder on 4x4 images; ``variant`` breaks it in one way."""

    name = "tiny"
    modality = "image"
    default_data = "digits"

    def __init__(self, variant: str = "ok", epochs: int = 1, batch_size: int = 8, lr: float = 1e-2, seed: int = 0):
        self.variant = variant
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    def build(self, data):
        d, v = int(np.prod(np.asarray(data.x).shape[1:])), self.variant
        self.k_ = len(data.group_names["label"])  # public metadata: the label vocabulary
        middle = {"batchnorm": [nn.BatchNorm1d(12, affine=False)], "center": [_CenterBatch()],
                  "running": [_RunningMean(12)]}.get(v, [])
        self.model_ = nn.Sequential(nn.Linear(d + self.k_, 12), *middle, nn.Tanh(), nn.Linear(12, d))
        if v == "encoder":
            self.enc_ = nn.Linear(d, self.k_)  # sees the real batch, gets a gradient, is not private
        if v in ("labels_post", "unsaved"):
            self.head_ = nn.Embedding(self.k_, 4)
        if v == "build_stats":
            self.stats_ = nn.Module()
            self.stats_.register_buffer("mean", torch.from_numpy(np.asarray(data.x).reshape(len(data), -1).mean(0)))

    def build_from_state(self, extra):
        raise NotImplementedError("Tiny is trained in these tests, never reloaded")

    def sample(self, n, seed=None, **conditions):
        raise NotImplementedError("Tiny is trained in these tests, never sampled")

    def private_modules(self):
        return ("model_",)

    def trained_modules(self):
        return ("model_", "head_") if self.variant == "labels_post" else ("model_",)

    def extra_modules(self):
        return ("stats_",) if self.variant == "build_stats" else ()

    def make_optimizers(self):
        opts = {"model_": torch.optim.SGD(self.model_.parameters(), lr=self.lr)}
        if self.variant in ("labels_post", "unsaved"):
            opts["head_"] = torch.optim.SGD(self.head_.parameters(), lr=self.lr)
        if self.variant == "encoder":
            opts["model_"] = torch.optim.SGD(list(self.model_.parameters()) + list(self.enc_.parameters()), lr=self.lr)
        return opts

    def train_tensors(self, data):
        x = torch.from_numpy(np.asarray(data.x, dtype=np.float32).reshape(len(data), -1))
        return x, torch.from_numpy(data.groups["label"].astype(np.int64))

    def batch_loss(self, batch):
        x, y = batch
        cond = nn.functional.one_hot(y, self.k_).float()
        if self.variant == "encoder":
            cond = cond + self.enc_(x)
        if self.variant == "labels_post":
            self._last_labels = y.detach()  # smuggled to post-processing, whatever batch the trainer passes it
        per_item = (self.model_(torch.cat([x, cond], 1)) - x).pow(2).mean(1)
        return per_item.sum() if self.variant == "sum" else per_item.mean()

    def after_private_step(self, batch, optimizers):
        if self.variant not in ("labels_post", "unsaved"):
            return
        # labels_post reads the private labels; unsaved uses public labels but is never saved
        y = self._last_labels if self.variant == "labels_post" else torch.arange(self.k_)
        opt = optimizers["head_"]
        opt.zero_grad()
        self.head_(y).pow(2).mean().backward()
        opt.step()


def _tiny_data(n: int = 24) -> Dataset:
    rng = np.random.default_rng(0)
    return Dataset(x=rng.random((n, 4, 4)).astype(np.float32), modality="image", name="tiny",
                   groups={"label": np.arange(n) % 3}, group_names={"label": ["a", "b", "c"]})


_FRESH = PrivateTrainer(noise_multiplier=1.0)


def test_the_correct_tiny_generator_passes_the_mechanism_checks():
    result = check_private_training(Tiny("ok"), _tiny_data(), trainer=_FRESH)
    failed = [c.code for c in result.failures if c.name not in RANDOMNESS]
    assert failed == [], result.summary()


@pytest.mark.parametrize("variant, code", [
    ("batchnorm", "RECORD_MIXING_LAYER"),   # BatchNorm without parameters: opacus' validator misses it
    ("center", "RECORD_MIXING"),            # a parameter-free layer mixing records, caught by its effect
    ("running", "BUFFER_UPDATED"),          # a buffer written during a private forward pass
    ("encoder", "UNCOVERED_PARAMETER"),     # a module outside private_modules trained on raw gradients
    ("sum", "LOSS_NOT_MEAN"),               # batch_loss returns a sum
    ("build_stats", "BUILD_STATE_DEPENDS_ON_DATA"),  # a data mean saved with the model
])
def test_broken_generator_is_caught_with_its_code(variant, code):
    result = check_private_training(Tiny(variant), _tiny_data(), trainer=_FRESH, fast=True)
    assert code in result.codes, result.summary()
    failure = next(c for c in result.failures if c.code == code)
    assert failure.fix == FIXES[code] and failure.message
    assert not result.passed


def test_a_record_mixing_layer_moves_the_clipped_sum_beyond_2c():
    # The blown-up record drags every other record's gradient with it through the batch mean.
    result = check_private_training(Tiny("center"), _tiny_data(), trainer=_FRESH, fast=True)
    assert "SENSITIVITY_EXCEEDED" in result.codes, result.summary()
    assert result.check("sensitivity").measured["moved"] > 2.0


def test_post_processing_that_reads_private_labels_is_caught():
    result = check_private_training(Tiny("labels_post"), _tiny_data(), trainer=_FRESH)
    check = result.check("post_processing")
    assert check.code == "POST_PROCESSING_READS_DATA", result.summary()
    assert any(k.startswith("head_.") for k in check.measured["substituted"])


def test_a_trained_module_that_is_not_saved_is_caught():
    # Caught by the check itself, or refused by fit() (then reported as REFUSED naming the module).
    result = check_private_training(Tiny("unsaved"), _tiny_data(), trainer=_FRESH)
    failures = [c for c in result.failures if c.code in ("UNSAVED_TRAINED_MODULE", "REFUSED")]
    assert failures and all("head_" in c.message for c in failures), result.summary()


def test_fast_subset_and_raising():
    result = check_private_training(Tiny("ok"), _tiny_data(), trainer=_FRESH, fast=True)
    names = {c.name for c in result.checks}
    assert "post_processing" not in names and "secret_sampling" not in names and "sensitivity" in names
    assert result.passed, result.summary()
    with pytest.raises(ConformanceError, match="LOSS_NOT_MEAN"):
        check_private_training(Tiny("sum"), _tiny_data(), trainer=_FRESH, fast=True, raise_on_failure=True)
    d = result.to_dict()
    assert d["passed"] is True and all({"name", "passed", "code", "fix"} <= set(c) for c in d["checks"])


def test_reproducible_randomness_is_reported():
    # The same seed and the keyed noise seed: an adversary replaying with the same settings sees the same noise.
    import dataclasses

    names = {f.name for f in dataclasses.fields(PrivateTrainer)}
    opt_in = {"reproducible" if "reproducible" in names else "reproducible_noise": True}
    result = check_private_training(Tiny("ok"), _tiny_data(), trainer=PrivateTrainer(noise_multiplier=1.0, **opt_in))
    assert "NOISE_REPRODUCIBLE" in result.codes


def test_the_check_leaves_the_generator_unfitted():
    gen = Tiny("ok")
    check_private_training(gen, _tiny_data(), trainer=_FRESH, fast=True)
    assert not getattr(gen, "fitted_", False) and not hasattr(gen, "model_")


class TinySum(Tiny):
    def __init__(self, variant: str = "sum", epochs: int = 1, batch_size: int = 64, lr: float = 1e-2, seed: int = 0):
        super().__init__(variant, epochs, batch_size, lr, seed)


class TinyOk(Tiny):
    def __init__(self, variant: str = "ok", epochs: int = 1, batch_size: int = 256, lr: float = 1e-2, seed: int = 0):
        super().__init__(variant, epochs, batch_size, lr, seed)


def _train_cli(argv, capsys):
    from genguard.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out + out.err


def test_genguard_train_refuses_a_user_generator_that_fails_the_fast_check(tmp_path, monkeypatch, capsys):
    from genguard.generators import register
    from genguard.generators.registry import unregister

    monkeypatch.setattr(TinySum, "name", "tinysum")
    monkeypatch.setattr(TinyOk, "name", "tinyok")
    register(TinySum)
    register(TinyOk)
    try:
        code, out = _train_cli(["train", "--generator", "tinysum", "--out", str(tmp_path / "a")], capsys)
        assert code == 2 and "LOSS_NOT_MEAN" in out and "Traceback" not in out
        assert not (tmp_path / "a" / "model").exists()
        code, out = _train_cli(["train", "--generator", "tinyok", "--out", str(tmp_path / "b")], capsys)
        assert code == 0, out
        assert "DP conformance (fast) of tinyok: passed" in out
    finally:
        unregister("tinysum")
        unregister("tinyok")


class _Raises(Tiny):
    def batch_loss(self, batch):
        raise RuntimeError("shape mismatch in my layer")


def test_a_hook_that_raises_is_a_coded_failure_not_a_crash():
    result = check_private_training(_Raises("ok"), _tiny_data(), trainer=_FRESH, fast=True)
    assert "HOOK_FAILED" in result.codes
    assert any("shape mismatch" in c.message for c in result.failures)
