"""DP-SGD training through opacus and the privacy ledger."""
import numpy as np
import pytest

from genguard.generators import make_generator
from genguard.guardrails.privacy import PrivacyError, PrivateTrainer, build_ledger, read_ledger, resolve_delta, write_ledger


def test_delta_rules():
    assert resolve_delta(None, 1437) == 1e-5
    # 1/(10 n) = 5e-7 would publish n; the power of ten below it does not (and is smaller, so still valid)
    assert resolve_delta(None, 200_000) == resolve_delta(None, 200_001) == 1e-7
    with pytest.raises(PrivacyError, match="not below 1/n"):
        resolve_delta(0.01, 1437)
    with pytest.raises(PrivacyError, match="delta"):
        resolve_delta(0.0, 10)


@pytest.mark.parametrize("eps", [0, -1, float("nan"), float("inf")])
def test_bad_epsilon_is_refused(eps):
    with pytest.raises(PrivacyError, match="epsilon"):
        PrivateTrainer(target_epsilon=eps)


def test_batchnorm_is_refused_with_a_fix():
    from torch import nn

    from genguard.guardrails.privacy.trainer import validate_private_module

    with pytest.raises(PrivacyError, match="GroupNorm"):
        validate_private_module(nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)), "toy")


def test_private_vae_meets_target_and_ledger_records_it(digits, tmp_path):
    train, _ = digits
    gen = make_generator("vae", epochs=3, batch_size=256, hidden=64, latent_dim=8, seed=1)
    gen.fit(train, trainer=PrivateTrainer(target_epsilon=4.0), progress=False)
    rep = gen.training_report_
    assert rep["private"] and rep["sampling"] == "poisson"
    assert 0 < rep["epsilon"] <= 4.0 + 1e-9
    assert rep["steps"] > 0 and rep["noise_multiplier"] > 0.5
    assert rep["sample_rate"] == pytest.approx(1 / np.ceil(1437 / 256))  # opacus: q = 1 / batches per epoch
    # weights are plain modules again (no opacus wrapper), so save/load works
    gen.save(tmp_path)
    ledger = build_ledger(rep, generator="vae", run_id="r1", seed=1, weights_path=tmp_path / "weights.safetensors")
    write_ledger(tmp_path, ledger)
    back = read_ledger(tmp_path)
    assert back["epsilon"] == rep["epsilon"] and back["delta"] == 1e-5
    assert len(back["weights_sha256"]) == 64
    assert not {"dataset_size", "expected_batch_size", "epochs"} & set(back)  # n is not published
    assert "torch" in back["package_versions"]
    assert np.isfinite(gen.sample(4, seed=0).data).all()


# ---------------------------------------------------------------------------------------------
# The fast engine: exact per-sample clipping, several private modules, physical batching
# ---------------------------------------------------------------------------------------------
import torch
from torch import nn

from genguard.generators.base import Dataset, TorchGenerator
from genguard.guardrails.privacy.clipping import PerSampleClipper


class _Custom(nn.Module):
    """A layer with its own parameter and no opacus grad sampler: handled by the functorch rule."""

    def __init__(self, d):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, d))

    def forward(self, x):
        return x * self.scale


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(5, 7)
        self.seq = nn.Linear(7, 3)
        self.norm = nn.LayerNorm(3)
        self.custom = _Custom(3)
        self.head = nn.Linear(3, 1, bias=False)

    def forward(self, x):
        h = torch.tanh(self.lin(x))                           # (b, 7)
        h = h.unsqueeze(1).expand(-1, 4, -1) * torch.arange(1, 5.0).view(1, 4, 1)
        h = self.custom(self.norm(self.seq(h)))               # (b, 4, 3): rows per sample
        return self.head(h).sum((1, 2)) + self.head(h[:, 0]).sum(1)  # head called twice


def _brute_force_clipped_sum(model, x, c):
    params = [p for p in model.parameters()]
    total = [torch.zeros_like(p) for p in params]
    norms = []
    for i in range(len(x)):
        grads = torch.autograd.grad(model(x[i:i + 1]).pow(2).mean(), params)
        norm = torch.sqrt(sum(g.pow(2).sum() for g in grads))
        norms.append(norm)
        coef = min(1.0, c / (float(norm) + 1e-6))
        for t, g in zip(total, grads):
            t += coef * g
    return total, torch.stack(norms)


@pytest.mark.parametrize("mode", ["ghost", "hooks", "functorch"])
def test_per_sample_clipping_matches_brute_force(mode):
    torch.manual_seed(0)
    model = _Toy().double()
    x = torch.randn(9, 5, dtype=torch.float64)
    expected, expected_norms = _brute_force_clipped_sum(model, x, 0.5)
    clipper = PerSampleClipper({"m": model}, max_grad_norm=0.5, mode=mode).attach()
    try:
        total = 0
        for chunk in (x[:4], x[4:]):  # physical batches: clipped sums add up
            with clipper.record():
                loss = model(chunk).pow(2).mean()
            norms = clipper.backward_and_clip(loss, len(chunk))
            total += len(norms)
        got = clipper.take_clipped_sum()
    finally:
        clipper.detach()
    assert total == 9
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(got[p], e, rtol=1e-6, atol=1e-8)
    assert all(p.requires_grad for p in model.parameters())  # frozen weights restored


def test_layer_without_rule_is_refused():
    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.ones(3))
            self.inner = nn.Linear(3, 3)

        def forward(self, x):
            return self.inner(x) * self.w

    with pytest.raises(PrivacyError, match="no per-sample gradient rule"):
        PerSampleClipper({"m": Odd()}, 1.0, "ghost")


class ToyGAN(TorchGenerator):
    """Two private modules (critic and an auxiliary encoder) and a post-processing generator."""

    name = "toygan"
    modality = "image"

    def __init__(self, epochs=2, batch_size=16, lr=1e-2, seed=0):
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed

    def build(self, data):
        self.critic_ = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 1))
        self.aux_ = nn.Linear(16, 2)
        self.gen_ = nn.Linear(4, 16)

    def private_modules(self):
        return ("critic_", "aux_")

    def trained_modules(self):
        return ("critic_", "aux_", "gen_")

    def train_tensors(self, data):
        return (torch.from_numpy(np.asarray(data.x).reshape(len(data), -1)),)

    def batch_loss(self, batch):
        (x,) = batch
        z = torch.cos(x[:, :4] * 7.0)  # one synthetic item per record, so the loss separates over records
        fake = self.gen_(z).detach()
        return (self.critic_(fake) - self.critic_(x)).mean() + self.aux_(x).pow(2).mean()

    def after_private_step(self, batch, optimizers):
        optimizers["gen_"].zero_grad(set_to_none=True)
        z = torch.linspace(-1, 1, 64).view(16, 4)
        (-self.critic_(self.gen_(z)).mean()).backward()
        optimizers["gen_"].step()


def _toy_data(n=64):
    rng = np.random.default_rng(0)
    return Dataset(x=rng.random((n, 4, 4)).astype(np.float32), modality="image", name="toy")


def _weights(gen):
    return {k: v.copy() for k, v in gen._state_tensors().items()}


def test_several_private_modules_and_physical_batching_give_the_same_run():
    data = _toy_data()
    runs = []
    for phys in (None, 3):
        gen = ToyGAN(seed=3)
        # keyed randomness: both runs see the same batches and noise, so only physical batching differs
        gen.fit(data, trainer=PrivateTrainer(noise_multiplier=1.0, max_physical_batch_size=phys, reproducible=True),
                progress=False)
        runs.append(gen)
    rep = runs[0].training_report_
    assert rep["private_modules"] == ["critic_", "aux_"] and rep["steps"] == 2 * 4
    assert rep["private_layers"] == ["Linear"] and rep["grad_sample_mode"] == "ghost"
    assert runs[1].training_report_["max_physical_batch_size"] == 3
    a, b = _weights(runs[0]), _weights(runs[1])
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-4, atol=1e-5)
    # the generator (post-processing) was trained too, through after_private_step
    init = ToyGAN(seed=3)
    torch.manual_seed(3)
    init.build(data)
    assert not np.allclose(a["gen_.weight"], init.gen_.weight.detach().numpy())


def test_same_seed_same_weights_and_modes_agree():
    data = _toy_data()
    w = {}
    for mode in ("ghost", "hooks"):
        gen = ToyGAN(seed=5)
        gen.fit(data, trainer=PrivateTrainer(noise_multiplier=0.8, grad_sample_mode=mode, reproducible=True),
                progress=False)
        w[mode] = _weights(gen)
    for k in w["ghost"]:
        np.testing.assert_allclose(w["ghost"][k], w["hooks"][k], rtol=1e-4, atol=1e-5)


def test_gradient_accumulation_and_bad_modes_are_refused():
    with pytest.raises(PrivacyError, match="max_physical_batch_size"):
        PrivateTrainer(gradient_accumulation_steps=4)
    with pytest.raises(PrivacyError, match="grad_sample_mode"):
        PrivateTrainer(grad_sample_mode="magic")
    with pytest.raises(PrivacyError, match="approximation"):
        PrivateTrainer(accountant="gdp")


def test_batchnorm_generator_is_refused_at_fit():
    class BNToy(ToyGAN):
        def build(self, data):
            super().build(data)
            self.critic_ = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))

    with pytest.raises(PrivacyError, match="ModuleValidator.fix"):
        BNToy().fit(_toy_data(), trainer=PrivateTrainer(noise_multiplier=1.0), progress=False)


def test_pld_accountant_and_opacus_reference_mode(digits):
    train, _ = digits
    gen = make_generator("vae", epochs=2, batch_size=256, hidden=32, latent_dim=4, seed=2)
    gen.fit(train, trainer=PrivateTrainer(target_epsilon=3.0, accountant="pld"), progress=False)
    assert gen.training_report_["accountant"] == "pld" and gen.training_report_["epsilon"] <= 3.0
    gen2 = make_generator("vae", epochs=2, batch_size=256, hidden=32, latent_dim=4, seed=2)
    gen2.fit(train, trainer=PrivateTrainer(target_epsilon=3.0, grad_sample_mode="opacus"), progress=False)
    rep = gen2.training_report_
    assert rep["grad_sample_mode"] == "opacus" and rep["steps"] == 2 * 6 and rep["epsilon"] <= 3.0


def test_secret_randomness_by_default_keyed_only_on_request():
    data = _toy_data()
    a, b = ToyGAN(seed=4), ToyGAN(seed=4)
    for gen in (a, b):
        gen.fit(data, trainer=PrivateTrainer(noise_multiplier=1.0), progress=False)
    assert not np.allclose(_weights(a)["critic_.0.weight"], _weights(b)["critic_.0.weight"])
    assert a.training_report_["randomness"] == {"sampling": "secret", "noise": "secret"}
    assert "secrets" in a.training_report_["noise_source"] and "caveat" not in a.training_report_
    c = ToyGAN(seed=4).fit(data, trainer=PrivateTrainer(noise_multiplier=1.0, reproducible=True), progress=False)
    d = ToyGAN(seed=4).fit(data, trainer=PrivateTrainer(noise_multiplier=1.0, reproducible=True), progress=False)
    assert c.training_report_["randomness"] == {"sampling": "keyed", "noise": "keyed"}
    assert "HMAC" in c.training_report_["noise_source"] and "must not both be published" in c.training_report_["caveat"]
    # reproducible for the key holder ...
    assert np.array_equal(_weights(c)["critic_.0.weight"], _weights(d)["critic_.0.weight"])


def test_reproducible_noise_is_keyed_not_regenerable_from_the_seed(tmp_path):
    import os
    import stat

    from genguard.guardrails.privacy.signing import noise_seed

    a, b = tmp_path / "a", tmp_path / "b"
    assert noise_seed(4, a) == noise_seed(4, a) and noise_seed(4, a) != noise_seed(5, a)
    # ... but another key (another machine, or a reader of the ledger) gets other noise for the same seed
    assert noise_seed(4, a) != noise_seed(4, b)
    assert stat.S_IMODE(os.stat(a / "dp-noise.key").st_mode) == 0o600
    os.chmod(a / "dp-noise.key", 0o644)
    with pytest.raises(PrivacyError, match="readable by others"):
        noise_seed(4, a)


def test_secure_mode_without_csprng_is_a_clear_error():
    pytest.importorskip("opacus")
    try:
        import torchcsprng  # noqa: F401
        pytest.skip("torchcsprng installed")
    except ImportError:
        pass
    with pytest.raises(PrivacyError, match="torchcsprng"):
        PrivateTrainer(secure_mode=True)


class _ConvToy(nn.Module):
    """Conv2d, GroupNorm and Embedding (the layers of the image/text generators): opacus' per-sample rules."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.GroupNorm(2, 4)
        self.out = nn.Linear(4 * 16, 1)

    def forward(self, x):
        img, tok = x[:, :16].view(-1, 1, 4, 4), x[:, 16].long()
        h = self.norm(self.conv(img)) + self.emb(tok)[:, :, None, None]
        return self.out(torch.tanh(h).flatten(1)).squeeze(1)


@pytest.mark.parametrize("mode", ["ghost", "hooks"])
def test_conv_norm_embedding_clipping_matches_brute_force(mode):
    torch.manual_seed(1)
    model = _ConvToy().double()
    x = torch.cat([torch.randn(7, 16, dtype=torch.float64), torch.randint(0, 5, (7, 1)).double()], 1)
    expected, _ = _brute_force_clipped_sum(model, x, 0.3)
    clipper = PerSampleClipper({"m": model}, max_grad_norm=0.3, mode=mode).attach()
    try:
        with clipper.record():
            loss = model(x).pow(2).mean()
        clipper.backward_and_clip(loss, len(x))
        got = clipper.take_clipped_sum()
    finally:
        clipper.detach()
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(got[p], e, rtol=1e-6, atol=1e-8)
