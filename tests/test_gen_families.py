"""Every reference generator: quick fit, reproducible sampling, save/load round trip, learning checks, DP-SGD path."""
import json
import warnings

import numpy as np
import pytest

from genguard.generators import GeneratorError, available, get_generator_class, load, make_generator, quick_params
from genguard.generators.data import load_embedded, train_holdout

ALL = ["gmm", "hmm", "rbm", "vae", "gan", "flow", "pixelcnn", "ddpm", "score", "text", "tabular", "dpmerf", "flowmatch"]
AUDIO = ["wavenet"]  # fitted, sampled and round-tripped in tests/test_audio.py on a small spoken-digit set
GRADIENT_TRAINED = ["rbm", "gan", "flow", "pixelcnn", "ddpm", "score", "text", "tabular", "flowmatch"]  # vae: test_private_trainer


def DEFAULT_DATA(name):
    return get_generator_class(name).default_data


def QUICK(name):
    return quick_params(name)


@pytest.fixture(scope="session")
def splits():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = train_holdout(load_embedded(name))
        return cache[name]

    return get


@pytest.fixture(scope="session")
def fitted(splits):
    cache = {}

    def get(name, data=None):
        key = (name, data)
        if key not in cache:
            train, _ = splits(data or DEFAULT_DATA(name))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                cache[key] = make_generator(name, **QUICK(name)).fit(train, progress=False)
        return cache[key]

    return get


def _same(a, b):
    if hasattr(a, "equals"):
        return a.equals(b)
    if isinstance(a, list):
        return a == b
    return np.array_equal(a, b)


def test_registry_and_quick_params_cover_every_family():
    built_in = [n for n in available() if get_generator_class(n).__module__.startswith("genguard.generators.")]
    assert sorted(ALL + AUDIO) == built_in  # (other tests register classes of their own)
    for name in ALL + AUDIO:  # every family names its data and quick settings, and they are real constructor parameters
        assert DEFAULT_DATA(name) in ("digits", "diabetes", "pydoc", "spoken_digits") and QUICK(name)
        make_generator(name, **QUICK(name))


@pytest.mark.parametrize("name", ALL)
def test_fit_sample_save_load_round_trip(name, fitted, tmp_path):
    gen = fitted(name)
    a, b, c = gen.sample(12, seed=5), gen.sample(12, seed=5), gen.sample(12, seed=6)
    assert len(a) == 12 and a.modality == gen.modality
    assert _same(a.data, b.data) and not _same(a.data, c.data)
    if a.modality == "image":
        assert a.data.shape == (12, 8, 8) and np.isfinite(a.data).all()
        assert a.data.min() >= 0 and a.data.max() <= 1
    gen.save(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["generator"] == name and cfg["modality"] == gen.modality
    back = load(tmp_path / "m")
    assert type(back) is type(gen)
    assert _same(back.sample(12, seed=5).data, a.data)


@pytest.mark.parametrize("name", ["rbm", "gan", "flow", "pixelcnn", "ddpm", "score", "dpmerf", "gmm", "flowmatch"])
def test_image_generators_honour_the_label(name, fitted):
    gen = fitted(name)
    s = gen.sample(6, seed=0, label=3)
    assert (s.conditions["label"] == 3).all()
    with pytest.raises(GeneratorError, match="label"):
        gen.sample(3, label=10)
    with pytest.raises(GeneratorError, match="only the condition"):
        gen.sample(3, colour=1)
    with pytest.raises(GeneratorError, match="positive"):
        gen.sample(0)


def test_unfitted_and_bad_data_are_refused(splits):
    with pytest.raises(GeneratorError, match="not fitted"):
        make_generator("flow").sample(3)
    text_train, _ = splits("pydoc")
    with pytest.raises(GeneratorError, match="image"):
        make_generator("flow", **QUICK("flow")).fit(text_train, progress=False)
    digits_train, _ = splits("digits")
    with pytest.raises(GeneratorError, match="text"):
        make_generator("text", **QUICK("text")).fit(digits_train, progress=False)
    with pytest.raises(GeneratorError, match="loss"):
        make_generator("gan", loss="wasserstein", **QUICK("gan")).fit(digits_train, progress=False)


# -- learned something ----------------------------------------------------------------------
@pytest.mark.parametrize("name", ["gmm", "flow", "pixelcnn"])
def test_explicit_density_prefers_real_digits_to_noise(name, fitted, splits):
    gen = fitted(name)
    _, holdout = splits("digits")
    noise = np.random.default_rng(0).random((50, 8, 8)).astype(np.float32)
    real = gen.log_prob(holdout.x[:50])
    assert np.isfinite(real).all()
    assert real.mean() > gen.log_prob(noise).mean() + 20


def test_pixelcnn_log_prob_is_a_normalised_distribution(fitted):
    """On 2x2 images with 3 levels, exp(log_prob) over all 81 images sums to 1 for each class."""
    import itertools

    from genguard.generators.base import Dataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 3, size=(40, 2, 2)) / 2.0
    data = Dataset(x=x.astype(np.float32), modality="image", groups={"label": np.arange(40) % 2},
                   metadata={"levels": 3})
    gen = make_generator("pixelcnn", channels=8, n_blocks=1, epochs=1, batch_size=20).fit(data, progress=False)
    grid = np.array(list(itertools.product([0, 0.5, 1.0], repeat=4)), dtype=np.float32).reshape(-1, 2, 2)
    for label in (0, 1):
        assert np.exp(gen.log_prob(grid, label=label)).sum() == pytest.approx(1.0, abs=1e-6)
    assert np.exp(gen.log_prob(grid)).sum() == pytest.approx(1.0, abs=1e-6)


def test_pixelcnn_is_causal():
    import torch

    from genguard.generators.pixelcnn import _build

    net = _build(17, 10, 8, 2)
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([1, 2])
    base = net(x, y)
    for i, j in [(0, 0), (3, 4), (7, 6)]:
        x2 = x.clone()
        x2[:, 0, i, j] = 1 - x2[:, 0, i, j]
        changed = ((net(x2, y) - base).abs().sum(1)[0] > 1e-6).nonzero().tolist()
        assert changed and all(a * 8 + b > i * 8 + j for a, b in changed)


def test_hmm_prefers_real_text_to_shuffled(fitted, splits):
    gen = fitted("hmm")
    _, holdout = splits("pydoc")
    real = [t[:200] for t in holdout.x[:6]]
    rng = np.random.default_rng(0)
    shuffled = ["".join(rng.permutation(list(t))) for t in real]
    assert gen.log_prob(real).mean() > gen.log_prob(shuffled).mean() + 5
    assert all(len(t) == 60 for t in gen.sample(3, seed=0).data)


def test_text_model_learned_bytes_and_works_with_hf_generate(fitted, splits):
    import torch

    gen = fitted("text")
    _, holdout = splits("pydoc")
    ppl = gen.perplexity([t[:400] for t in holdout.x[:4]])
    assert ppl < 60  # a uniform model over 259 tokens has perplexity 259
    tok = gen.tokenizer
    ids = tok("The ", return_tensors="pt").input_ids[:, :-1]  # drop ByT5's end token
    assert ids.tolist()[0] == [b + 3 for b in b"The "]
    torch.manual_seed(0)
    out = gen.model_.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, max_new_tokens=5,
                              pad_token_id=0)
    assert out.shape == (1, 9)
    s = gen.sample(2, seed=0, prompt="def ")
    assert all(t.startswith("def ") for t in s.data)


def test_rbm_free_energy_prefers_real_digits(fitted, splits):
    gen = fitted("rbm")
    _, holdout = splits("digits")
    noise = (np.random.default_rng(0).random((50, 8, 8)) > 0.5).astype(np.float32)
    labels = holdout.groups["label"][:50]
    assert gen.free_energy(holdout.x[:50], labels).mean() < gen.free_energy(noise, labels).mean() - 5


@pytest.mark.parametrize("name", ["ddpm", "score", "flowmatch"])
def test_denoisers_beat_their_initialisation(name, fitted, splits):
    """The trained denoiser's loss on held-out digits is below that of the same net untrained."""
    import torch

    gen = fitted(name)
    _, holdout = splits("digits")
    fresh = make_generator(name, **QUICK(name))
    fresh._fit_image_meta(holdout)
    fresh.build_from_state({})
    batch = gen.train_tensors(holdout)
    losses = []
    for g in (gen, fresh):
        g._noise = torch.Generator().manual_seed(123)  # the same noise draws for both nets
        with torch.no_grad():
            losses.append(float(g.batch_loss(batch)))
    assert losses[0] < 0.8 * losses[1]


def test_gan_samples_resemble_digits_on_average(fitted, splits):
    gen = fitted("gan")
    train, _ = splits("digits")
    s = gen.sample(200, seed=0)
    corr = np.corrcoef(s.data.mean(0).ravel(), train.x.mean(0).ravel())[0, 1]
    assert corr > 0.5


def test_dpmerf_and_gmm_give_usable_digits(fitted, splits):
    """Train-on-synthetic, test-on-real: a classifier fitted on samples recognises real held-out digits."""
    from sklearn.linear_model import LogisticRegression

    _, holdout = splits("digits")
    for name, floor in (("gmm", 0.85), ("dpmerf", 0.5)):
        s = fitted(name).sample(500, seed=0)
        clf = LogisticRegression(max_iter=1000).fit(s.data.reshape(500, -1), s.conditions["label"])
        assert clf.score(holdout.x.reshape(len(holdout), -1), holdout.groups["label"]) > floor, name


@pytest.mark.parametrize("name", ["tabular", "gmm", "dpmerf"])
def test_tabular_generators_return_the_table_shape(name, fitted, splits):
    gen = fitted(name, "diabetes")
    train, holdout = splits("diabetes")
    s = gen.sample(300, seed=0)
    assert list(s.data.columns) == list(train.x.columns) and len(s.data) == 300
    assert set(s.data["sex"].unique()) <= set(train.x["sex"].unique())
    one = gen.sample(20, seed=1, sex=1)
    assert (one.data["sex"] == sorted(train.x["sex"].unique())[1]).all()
    with pytest.raises(GeneratorError, match="sex"):
        gen.sample(5, colour=1)
    if name != "dpmerf":  # dpmerf's quick run is too short to pin the moments
        from genguard.generators.tabular import column_fidelity

        fid = column_fidelity(holdout.x, s.data)
        assert np.mean([v["ks"] for v in fid.values() if "ks" in v]) < 0.35


def test_em_models_refuse_a_private_trainer(splits):
    from genguard.guardrails.privacy import PrivateTrainer

    train, _ = splits("digits")
    with pytest.raises(GeneratorError, match="DP-SGD"):
        make_generator("gmm").fit(train, trainer=PrivateTrainer(target_epsilon=1.0), progress=False)


# -- DP-SGD path -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", GRADIENT_TRAINED)
def test_trains_with_dp_sgd_within_the_target(name, splits, tmp_path):
    from genguard.guardrails.privacy import PrivateTrainer, build_ledger

    train, _ = splits(DEFAULT_DATA(name))
    params = {**QUICK(name), "epochs": 1}
    if name == "ddpm":  # several noise draws per record: still one clipped per-sample gradient each
        params["noise_multiplicity"] = 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen = make_generator(name, **params).fit(train, trainer=PrivateTrainer(target_epsilon=5.0), progress=False)
    rep = gen.training_report_
    assert rep["private"] and 0 < rep["epsilon"] <= 5.0 + 1e-9 and rep["steps"] > 0
    assert rep["noise_multiplier"] > 0.3
    for prior in ("class_prior_", "group_prior_"):  # no unnoised label counts in a private model
        if hasattr(gen, prior):
            assert np.allclose(getattr(gen, prior), getattr(gen, prior)[0])
    gen.save(tmp_path)
    ledger = build_ledger(rep, generator=name, run_id="t", seed=0, weights_path=tmp_path / "weights.safetensors")
    assert ledger["epsilon"] == rep["epsilon"]
    s = gen.sample(4, seed=0)
    assert len(s) == 4
    assert _same(load(tmp_path).sample(4, seed=0).data, s.data)


def test_dpmerf_one_shot_release_is_ledgered(splits, tmp_path):
    from genguard.guardrails.privacy import PrivateTrainer, build_ledger

    from genguard.generators.dpmerf import gaussian_epsilon

    train, _ = splits("digits")
    q = QUICK("dpmerf")
    priv = make_generator("dpmerf", **q).fit(train, trainer=PrivateTrainer(target_epsilon=1.0), progress=False)
    rep = priv.training_report_
    assert rep["private"] and rep["epsilon"] <= 1.0 and rep["steps"] == 1 and rep["sample_rate"] == 1.0
    # calibrated by the trainer's exact full-batch accountant; opacus' RDP puts the same sigma above the target
    assert rep["accountant"] == "analytic"
    assert gaussian_epsilon(rep["noise_multiplier"], rep["delta"]) > rep["epsilon"]
    assert rep["delta"] == 1e-5
    ledger = build_ledger(rep, generator="dpmerf", run_id="d", seed=0, weights_path=None)
    assert ledger["epsilon"] == rep["epsilon"]
    exact = make_generator("dpmerf", **q).fit(train, progress=False)
    assert exact.training_report_["private"] is False
    assert not np.array_equal(exact.sample(8, seed=0).data, priv.sample(8, seed=0).data)  # the noise is real
    tighter = make_generator("dpmerf", epsilon=0.5, **q).fit(train, progress=False)
    assert tighter.training_report_["noise_multiplier"] > rep["noise_multiplier"]
    with pytest.raises(GeneratorError, match="delta"):
        make_generator("dpmerf", epsilon=1.0, delta=0.01, **q).fit(train, progress=False)


def test_gan_pairs_real_and_fake_in_one_per_sample_gradient():
    """Under opacus, item i's gradient is that of (real_i, fake_i) together: one clipped unit per record."""
    import copy

    import torch
    from opacus import GradSampleModule
    from torch.nn import functional as F

    from genguard.generators.gan import _build

    _, disc = _build(8, 8, 10, 8, 16)
    ref = copy.deepcopy(disc)
    gsm = GradSampleModule(disc)
    torch.manual_seed(0)
    x, f, y = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8), torch.randint(0, 10, (4,))
    (F.softplus(-gsm(x, y)) + F.softplus(gsm(f, y))).mean().backward()
    for i in range(4):
        loss = F.softplus(-ref(x[i:i + 1], y[i:i + 1])) + F.softplus(ref(f[i:i + 1], y[i:i + 1]))
        grads = torch.autograd.grad(loss.sum(), list(ref.parameters()))
        for g, p in zip(grads, disc.parameters()):
            assert torch.allclose(g, p.grad_sample[i], atol=1e-5)


def test_gan_wgan_gp_trains_plainly_and_is_refused_under_dp(splits):
    from genguard.guardrails.privacy import PrivateTrainer

    train, _ = splits("digits")
    params = {**QUICK("gan"), "epochs": 1, "loss": "wgan-gp", "n_critic": 2}
    gen = make_generator("gan", **params).fit(train, progress=False)
    assert np.isfinite(gen.training_report_["final_loss"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(GeneratorError, match="wgan-gp"):
            make_generator("gan", **params).fit(train, trainer=PrivateTrainer(target_epsilon=5.0), progress=False)


@pytest.mark.parametrize("name", ["rbm", "gan"])
def test_refitting_with_the_same_seed_gives_the_same_model(name, splits):
    train, _ = splits("digits")
    params = {**QUICK(name), "epochs": 1}
    gen = make_generator(name, **params)
    first = gen.fit(train, progress=False).sample(5, seed=0).data
    again = gen.fit(train, progress=False).sample(5, seed=0).data
    assert np.array_equal(first, again)
    assert gen.get_params() == make_generator(name, **params).get_params()  # fit never changes params


def test_ddpm_noise_multiplicity_keeps_one_gradient_per_record():
    """Two noise draws per image through the denoiser: opacus' per-sample gradient of item i covers both."""
    import copy

    import torch
    from opacus import GradSampleModule

    from genguard.generators._nets import build_denoiser

    net = build_denoiser(10, 8, 1, emb_dim=16)
    for p in net.parameters():  # the zero-initialised output layer would make most gradients vanish
        torch.nn.init.normal_(p, std=0.1)
    ref = copy.deepcopy(net)
    gsm = GradSampleModule(net)
    torch.manual_seed(0)
    x, y = torch.rand(3, 1, 8, 8), torch.randint(0, 11, (3,))
    draws = [(torch.randint(0, 100, (3,)), torch.randn(3, 1, 8, 8)) for _ in range(2)]

    def loss_of(model, idx):
        return sum(((model(x[idx] + e[idx], t[idx], y[idx]) - e[idx]) ** 2).flatten(1).mean(1) for t, e in draws) / 2

    loss_of(gsm, slice(None)).mean().backward()
    for i in range(3):
        grads = torch.autograd.grad(loss_of(ref, slice(i, i + 1)).sum(), list(ref.parameters()))
        for g, p in zip(grads, net.parameters()):
            assert torch.allclose(g, p.grad_sample[i], atol=1e-5)


@pytest.mark.parametrize("name", GRADIENT_TRAINED)
def test_dp_sgd_survives_empty_poisson_batches(name, splits):
    """Batch size 1 on a few records: Poisson sampling draws empty batches, which must still step (noise only)."""
    from genguard.guardrails.privacy import PrivateTrainer

    train, _ = splits(DEFAULT_DATA(name))
    small = train.subset(np.arange(12))
    if name == "text":
        small = train.subset(np.arange(1))
        small.x = [small.x[0][:32 * 12]]
    params = {**QUICK(name), "epochs": 1, "batch_size": 1}
    if name == "text":
        params["max_windows"] = 12
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen = make_generator(name, **params).fit(small, trainer=PrivateTrainer(target_epsilon=50.0, delta=1e-3),
                                                 progress=False)
    assert gen.training_report_["steps"] == 12
    assert len(gen.sample(2, seed=0)) == 2
