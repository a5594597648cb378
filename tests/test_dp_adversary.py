"""DP-SGD attacked as an outsider would: with the ledger, the code and the released weights in hand.

Each test is the probe of an adversary (rebuild the randomness from what is published, replay a run,
diff neighbouring data sets, hand the trainer a model that breaks per-record sensitivity) and fails if
the trainer gives the adversary what it wants.
"""
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from genguard.generators import make_generator
from genguard.generators.base import Dataset, GeneratorError, TorchGenerator
from genguard.generators.gan import ConditionalGAN
from genguard.guardrails.privacy import PrivacyError, PrivateTrainer, build_ledger


def _data(n=64, d=16, seed=0):
    rng = np.random.default_rng(seed)
    return Dataset(x=rng.random((n, 4, d // 4)).astype(np.float32), modality="image", name="toy")


class Lin(TorchGenerator):
    """One private linear model; train_tensors carries each record's index so the batches can be read back."""

    name = "lin"
    modality = "image"

    def __init__(self, epochs=1, batch_size=16, lr=0.1, seed=0):
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed
        self.seen = []

    def build(self, data):
        self.model_ = nn.Linear(16, 1)

    def private_modules(self):
        return ("model_",)

    def train_tensors(self, data):
        x = torch.from_numpy(np.asarray(data.x).reshape(len(data), -1))
        return x, torch.arange(len(data))

    def batch_loss(self, batch):
        x, idx = batch
        self.seen.append(idx.clone())
        return self.model_(x).pow(2).mean()


def _weights(gen):
    return {k: v.copy() for k, v in gen._state_tensors().items()}


def _batches(gen, steps):
    """The record indices of the last ``steps`` forward passes (the training steps; earlier ones are probes)."""
    return [set(i.tolist()) for i in gen.seen[-steps:]]


# -- the batches and the noise are secret --------------------------------------------------------
def test_poisson_masks_cannot_be_rebuilt_from_the_ledger_seed():
    data = _data()
    gen = Lin(epochs=3, seed=7).fit(data, trainer=PrivateTrainer(noise_multiplier=1.0), progress=False)
    rep = gen.training_report_
    ledger = build_ledger(rep, generator="lin", run_id="r", seed=gen.seed, weights_path=None)
    n, q = len(data), rep["sample_rate"]
    # The adversary's rebuild: every candidate stream derivable from the published seed.
    for derived in (ledger["seed"] * 2 + 1, ledger["seed"], ledger["seed"] + 1):
        g = torch.Generator().manual_seed(derived)
        rebuilt = [set(torch.nonzero(torch.rand(n, generator=g) < q).squeeze(1).tolist()) for _ in range(rep["steps"])]
        rebuilt = [b for b in rebuilt if b]
        real = _batches(gen, len(rebuilt))
        assert sum(a == b for a, b in zip(rebuilt, real)) == 0
    assert ledger["randomness"] == {"sampling": "secret", "noise": "secret"}


def test_same_seed_and_key_twice_draw_other_batches_and_noise():
    data = _data()
    runs = [Lin(epochs=2, seed=0).fit(data, trainer=PrivateTrainer(noise_multiplier=1.0), progress=False)
            for _ in range(2)]
    steps = runs[0].training_report_["steps"]
    assert _batches(runs[0], steps) != _batches(runs[1], steps)


def test_neighbouring_releases_with_the_same_seed_do_not_cancel_their_noise():
    # sigma = 1000: the update is almost all noise. Shared noise would cancel in the difference of the
    # two releases (Adam's first step, lr * sign, then moves both alike); independent noise does not.
    data = _data()
    neighbour = data.subset(np.arange(len(data) - 1))
    w = [_weights(Lin(epochs=1, seed=0).fit(d, trainer=PrivateTrainer(noise_multiplier=1e3), progress=False))
         ["model_.weight"] for d in (data, neighbour)]
    assert np.abs(w[0] - w[1]).max() > 0.05  # lr = 0.1: independent noise flips signs


def test_keyed_reproducibility_is_an_opt_in_tied_to_the_key(monkeypatch, tmp_path):
    data = _data()
    keyed = dict(noise_multiplier=1.0, reproducible=True)
    a = Lin(epochs=2, seed=3).fit(data, trainer=PrivateTrainer(**keyed), progress=False)
    b = Lin(epochs=2, seed=3).fit(data, trainer=PrivateTrainer(**keyed), progress=False)
    assert np.array_equal(_weights(a)["model_.weight"], _weights(b)["model_.weight"])
    assert a.training_report_["randomness"] == {"sampling": "keyed", "noise": "keyed"}
    assert "must not both be published" in build_ledger(a.training_report_, generator="lin", run_id="r", seed=3,
                                                        weights_path=None)["guarantee"]
    monkeypatch.setenv("GENGUARD_HOME", str(tmp_path))  # another key: the same seed no longer replays
    c = Lin(epochs=2, seed=3).fit(data, trainer=PrivateTrainer(**keyed), progress=False)
    assert not np.array_equal(_weights(a)["model_.weight"], _weights(c)["model_.weight"])


def test_opacus_mode_cannot_be_replayed_from_the_seed(digits):
    train, _ = digits
    small = train.subset(np.arange(300))
    shas = []
    for _ in range(2):
        gen = make_generator("vae", epochs=1, batch_size=64, hidden=16, latent_dim=2, seed=5)
        gen.fit(small, trainer=PrivateTrainer(noise_multiplier=1.0, grad_sample_mode="opacus"), progress=False)
        shas.append(_weights(gen))
    assert any(not np.array_equal(shas[0][k], shas[1][k]) for k in shas[0])
    rep = gen.training_report_
    assert rep["randomness"] == {"sampling": "secret", "noise": "secret"}
    # E[B] is q n exactly, as the verifier recomputes it (opacus itself keeps int(q n)).


def test_opacus_mode_records_fractional_expected_batch_consistently(tmp_path):
    from genguard.guardrails.privacy import verify_ledger, write_ledger

    data = _data(n=50)  # batch 16 -> 4 steps per epoch, q = 1/4, E[B] = 12.5 (opacus: int -> 12)
    trainer = PrivateTrainer(noise_multiplier=1.0, grad_sample_mode="opacus")
    gen = Lin(epochs=1, seed=1).fit(data, trainer=trainer, progress=False)
    rep = gen.training_report_
    # E[B] = q n tells n: it stays with the operator, and the published report carries q only.
    assert trainer.diagnostics_["expected_batch_size"] == pytest.approx(12.5, abs=1e-12)
    assert rep["sample_rate"] == 0.25 and "expected_batch_size" not in rep and "dataset_size" not in rep
    gen.save(tmp_path)
    write_ledger(tmp_path, build_ledger(rep, generator="lin", run_id="r", seed=1,
                                        weights_path=tmp_path / "weights.safetensors"))
    codes = {f["code"] for f in verify_ledger(tmp_path)["findings"]}
    assert not {f["code"] for f in verify_ledger(tmp_path)["findings"] if f["severity"] == "error"}


def test_opacus_mode_keyed_replays_for_the_key_holder():
    data = _data(n=48)
    w = []
    for _ in range(2):
        gen = Lin(epochs=1, seed=2).fit(
            data, trainer=PrivateTrainer(noise_multiplier=1.0, grad_sample_mode="opacus", reproducible=True),
            progress=False)
        w.append(_weights(gen)["model_.weight"])
    assert np.array_equal(w[0], w[1])


# -- post-processing sees nothing of the private batch --------------------------------------------
class SpyGAN(ConditionalGAN):
    """The reference GAN, recording the inputs of every generator forward that builds a graph: the
    post-processing step (the private step draws its fakes under no_grad)."""

    def __init__(self, **params):
        super().__init__(**params)
        self.inputs = []

    def build_from_state(self, extra):
        super().build_from_state(extra)
        self.gen_.register_forward_pre_hook(self._spy)

    def _spy(self, module, args):
        if torch.is_grad_enabled():
            self.inputs.append(tuple(a.detach().clone() for a in args))


GAN = dict(latent_dim=4, width=8, epochs=1, batch_size=32, seed=0)


def _gan_probe(train):
    gen = SpyGAN(**GAN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen.fit(train, trainer=PrivateTrainer(target_epsilon=0.1), progress=False)
    return gen, gen.inputs


def test_gan_generator_step_is_not_a_membership_test(digits):
    train, _ = digits
    labels = np.asarray(train.groups["label"])
    no_nine = np.flatnonzero(labels != 9)[:200]
    d = train.subset(no_nine)                                              # D: no 9 at all
    d_prime = train.subset(np.append(no_nine, np.flatnonzero(labels == 9)[0]))  # D' = D + one 9
    gen_d, in_d = _gan_probe(d)
    gen_dp, in_dp = _gan_probe(d_prime)
    # The post-processing step's inputs are identical under D and D' (they are public).
    assert len(in_d) == len(in_dp) > 0
    for (z1, y1), (z2, y2) in zip(in_d, in_dp):
        assert torch.equal(z1, z2) and torch.equal(y1, y2)
    # The adversary's probe: under D the class-9 embedding row no longer stays at its initial value.
    init = ConditionalGAN(**GAN)
    torch.manual_seed(0)
    init.build(d)
    row = init.gen_.embed.weight[9].detach().numpy()
    assert not np.array_equal(gen_d.gen_.embed.weight[9].detach().numpy(), row)
    assert {int(v) for _, y in in_d for v in y} == set(range(10))  # conditions uniform over all classes


def test_post_processing_hook_gets_no_batch_even_when_empty():
    calls = []

    class Spy(Lin):
        def after_private_step(self, batch, optimizers):
            calls.append(batch)

    data = _data(n=6)
    gen = Spy(epochs=2, batch_size=1, seed=0).fit(data, trainer=PrivateTrainer(noise_multiplier=1.0, delta=1e-3),
                                                  progress=False)
    assert len(calls) == gen.training_report_["steps"] == 12  # every step, empty batches included
    assert all(c is None for c in calls)


def test_reference_gan_ledger_names_every_trained_module(digits, tmp_path):
    from safetensors.numpy import load_file

    train, _ = digits
    gen = make_generator("gan", latent_dim=4, width=8, epochs=1, batch_size=128, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen.fit(train.subset(np.arange(256)), trainer=PrivateTrainer(target_epsilon=5.0), progress=False)
    gen.save(tmp_path)
    ledger = build_ledger(gen.training_report_, generator="gan", run_id="r", seed=0,
                          weights_path=tmp_path / "weights.safetensors")
    assert ledger["trained_modules"] == ["disc_", "gen_", "gen_ema_"]  # gen_ema_: the EMA copy used to sample
    assert ledger["private_modules"] == ["disc_"] and ledger["post_processing_modules"] == ["gen_", "gen_ema_"]
    saved = {k.split(".")[0] for k in load_file(str(tmp_path / "weights.safetensors"))}
    assert saved == set(ledger["trained_modules"])


# -- what breaks per-record sensitivity is refused, saying how to fix it --------------------------
class Net(Lin):
    """``Lin`` whose private model is ``make()``; ``extra`` builds more modules."""

    def __init__(self, make=None, epochs=1, batch_size=16, lr=0.1, seed=0):
        super().__init__(epochs, batch_size, lr, seed)
        self.make = make

    def build(self, data):
        self.model_ = self.make()

    def batch_loss(self, batch):
        x, idx = batch
        self.seen.append(idx.clone())
        return self.model_(x).pow(2).mean()


def _fit(gen, **kw):
    return gen.fit(_data(), trainer=PrivateTrainer(noise_multiplier=1.0, **kw), progress=False)


@pytest.mark.parametrize("norm, match", [
    (lambda: nn.BatchNorm1d(8, affine=False), "BatchNorm1d"),
    (lambda: nn.BatchNorm1d(8).requires_grad_(False), "BatchNorm1d"),
    (lambda: nn.InstanceNorm1d(8, track_running_stats=True), "running statistics"),
])
def test_record_mixing_norms_are_refused_with_or_without_parameters(norm, match):
    class View(nn.Module):
        def forward(self, x):
            return x.view(len(x), 8, -1) if x.dim() == 2 else x

    def make():
        return nn.Sequential(nn.Linear(16, 16), View(), norm(), nn.Flatten(), nn.Linear(16, 1))

    with pytest.raises(PrivacyError, match=match) as err:
        _fit(Net(make))
    assert "GroupNorm" in str(err.value)


def test_a_buffer_that_changes_in_a_private_forward_is_refused():
    class RunningMean(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(16, 1)
            self.register_buffer("mean", torch.zeros(16))

        def forward(self, x):
            if self.training:
                self.mean.mul_(0.9).add_(0.1 * x.detach().mean(0))  # records mixed, saved with the model
            return self.lin(x - self.mean)

    with pytest.raises(PrivacyError, match="buffer.*mean.*change during batch_loss"):
        _fit(Net(RunningMean))


def test_a_parameter_outside_the_private_modules_with_a_gradient_is_refused():
    class Encoded(Net):
        def build(self, data):
            self.encoder_ = nn.Linear(16, 8)     # sees the real batch, gets a raw gradient
            self.model_ = nn.Linear(8, 1)

        def trained_modules(self):
            return ("model_", "encoder_")

        def batch_loss(self, batch):
            x, _ = batch
            return self.model_(self.encoder_(x)).pow(2).mean()

    with pytest.raises(PrivacyError, match="encoder_.weight.*outside the private modules"):
        _fit(Encoded())


def test_a_sum_loss_is_refused():
    class Summed(Net):
        def batch_loss(self, batch):
            x, _ = batch
            return self.model_(x).pow(2).sum()

    with pytest.raises(PrivacyError, match="not a mean over records.*loss.mean"):
        _fit(Summed(lambda: nn.Linear(16, 1)))
    with pytest.raises(PrivacyError, match="not a mean over records"):
        _fit(Summed(lambda: nn.Linear(16, 1)), grad_sample_mode="opacus")


def test_data_dependent_build_state_is_refused_unless_declared():
    class Centred(Net):
        def build(self, data):
            self.model_ = nn.Linear(16, 1)
            with torch.no_grad():  # data statistic saved with the model, outside DP-SGD
                self.model_.bias.copy_(torch.tensor(float(np.asarray(data.x).mean())))

    with pytest.raises(PrivacyError, match=r"build\(\) computes saved state.*model_.bias.*declared_data_state"):
        _fit(Centred())

    class Declared(Centred):
        def declared_data_state(self):
            return "the output bias starts at the unnoised pixel mean"

    rep = _fit(Declared()).training_report_
    assert rep["caveat"] == "the output bias starts at the unnoised pixel mean"
    assert "caveat: the output bias" in build_ledger(rep, generator="lin", run_id="r", seed=0,
                                                     weights_path=None)["guarantee"]


def test_a_trained_module_that_would_not_be_saved_is_refused():
    class HiddenGen(Net):
        """A GAN-like model whose post-processing generator is trained but missing from trained_modules."""

        def build(self, data):
            self.model_ = nn.Linear(16, 1)
            self.gen_ = nn.Linear(4, 16)

        def make_optimizers(self):
            return {"model_": torch.optim.SGD(self.model_.parameters(), lr=0.1),
                    "gen_": torch.optim.SGD(self.gen_.parameters(), lr=0.1)}

        def after_private_step(self, batch, optimizers):
            optimizers["gen_"].zero_grad()
            (-self.model_(self.gen_(torch.ones(8, 4))).mean()).backward(inputs=list(self.gen_.parameters()))
            optimizers["gen_"].step()

    with pytest.raises(PrivacyError, match="gen_.*missing from the saved weights"):
        _fit(HiddenGen())
    with pytest.raises(GeneratorError, match="gen_.*missing from weights.safetensors"):
        HiddenGen().fit(_data(), progress=False)  # the plain loop: trained weights never silently vanish


def test_a_clipping_norm_far_above_the_gradients_is_a_warning_to_the_operator_only():
    # The warning is a function of the private gradients without noise: the operator sees it, the
    # ledger (published) does not.
    trainer = PrivateTrainer(noise_multiplier=1.0, max_grad_norm=1e3)
    with pytest.warns(RuntimeWarning, match="swamps the signal"):
        rep = Net(lambda: nn.Linear(16, 1)).fit(_data(), trainer=trainer, progress=False).training_report_
    assert [w["code"] for w in trainer.diagnostics_["warnings"]] == ["CLIPPING_NORM_TOO_LARGE"]
    assert rep["warnings"] == []
    assert build_ledger(rep, generator="lin", run_id="r", seed=0, weights_path=None)["warnings"] == []
    trainer = PrivateTrainer(noise_multiplier=1.0, max_grad_norm=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        Net(lambda: nn.Linear(16, 1)).fit(_data(), trainer=trainer, progress=False)
    assert trainer.diagnostics_["warnings"] == []


# -- what was right stays right ---------------------------------------------------------------------
class _NoiseSpy(PrivateTrainer):
    """Records (released grad * E[B] - clipped sum) / (sigma C) at the one point noise meets the data."""

    def _noisy_step(self, summed, noise, noise_std, expected_batch):
        before = {p: s.clone() for p, s in summed.items()}
        super()._noisy_step(summed, noise, noise_std, expected_batch)
        self.draws = getattr(self, "draws", []) + [
            ((p.grad * expected_batch - before[p]) / (self.noise_multiplier * self.max_grad_norm)).flatten()
            for p in summed]


def test_noise_std_is_sigma_c_over_expected_batch_and_batches_are_binomial():
    data = _data(n=64)
    trainer = _NoiseSpy(noise_multiplier=1.7, max_grad_norm=0.5)
    gen = Net(lambda: nn.Linear(16, 64), epochs=50, batch_size=16).fit(data, trainer=trainer, progress=False)
    z = torch.cat(trainer.draws)
    assert len(z) > 200_000
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01  # SE of the std ~ 0.0015
    sizes = np.array([len(b) for b in _batches(gen, gen.training_report_["steps"])], dtype=float)
    n, q = 64, gen.training_report_["sample_rate"]
    assert q == 0.25 and len(sizes) == 200
    assert abs(sizes.mean() - n * q) < 4 * np.sqrt(n * q * (1 - q) / len(sizes))
    assert 0.6 < sizes.var(ddof=1) / (n * q * (1 - q)) < 1.5


def test_dpmerf_release_noise_is_not_the_seeds(digits):
    train, _ = digits
    small = dict(n_features=50, steps=2, hidden=16, batch_size=64, seed=0)
    a, b = (make_generator("dpmerf", epsilon=1.0, **small).fit(train) for _ in range(2))
    # the released (noisy) class counts would be identical if the noise came from the seed
    assert not np.allclose(a.class_prior_, b.class_prior_)
    assert a.training_report_["randomness"] == {"sampling": "none", "noise": "secret"}
    keyed = [make_generator("dpmerf", **small).fit(train, trainer=PrivateTrainer(target_epsilon=1.0, reproducible=True))
             for _ in range(2)]
    assert np.array_equal(keyed[0].class_prior_, keyed[1].class_prior_)
    assert keyed[0].training_report_["randomness"] == {"sampling": "none", "noise": "keyed"}
    assert "must not both be published" in keyed[0].training_report_["caveat"]


def test_secure_mode_cannot_be_keyed():
    with pytest.raises(PrivacyError, match="secure_mode or reproducible"):
        PrivateTrainer(secure_mode=True, reproducible=True)
