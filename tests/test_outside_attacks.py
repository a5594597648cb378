"""Attacks from outside: an adversary holding what genguard publishes (ledger, report, weights, samples, code).

Each test is one probe; it fails if the probe gets what it wants.
"""
import numpy as np
import pytest
import torch
from torch import nn

from genguard.generators.base import Dataset, TorchGenerator
from genguard.guardrails.privacy import PrivateTrainer, build_ledger


class _Frozen(TorchGenerator):
    """One private linear model trained with lr = 0: the released weights cannot depend on the data."""

    name = "frozen"
    modality = "image"

    def __init__(self, epochs=2, batch_size=64, lr=0.0, seed=0):
        self.epochs, self.batch_size, self.lr, self.seed = epochs, batch_size, lr, seed

    def build(self, data):
        self.model_ = nn.Linear(16, 1)

    def private_modules(self):
        return ("model_",)

    def make_optimizers(self):
        return {"model_": torch.optim.SGD(self.model_.parameters(), lr=self.lr)}

    def train_tensors(self, data):
        return (torch.from_numpy(np.asarray(data.x, dtype=np.float32).reshape(len(data), -1)),)

    def batch_loss(self, batch):
        (x,) = batch
        return self.model_(x).pow(2).mean()


def _published(gen):
    """Everything of a run that reaches a reader: the ledger and the training section of report.json."""
    ledger = build_ledger(gen.training_report_, generator=gen.name, run_id="r", seed=gen.seed, weights_path=None)
    ledger.pop("created")
    return ledger, dict(gen.training_report_)


def test_published_training_figures_do_not_tell_neighbouring_data_sets_apart():
    # q = 1 (batch size >= n) and lr = 0: the weights are the same on D and D'; what is published must be too.
    rng = np.random.default_rng(0)
    x = (0.01 * rng.random((32, 4, 4))).astype(np.float32)
    neighbour = x.copy()
    neighbour[0] = 1.0  # replace one record by an outlier (still a valid image)
    runs = []
    for data in (x, neighbour):
        gen = _Frozen().fit(Dataset(x=data, modality="image", name="toy"),
                            trainer=PrivateTrainer(noise_multiplier=1.0), progress=False)
        runs.append(({k: v.copy() for k, v in gen._state_tensors().items()}, _published(gen)))
    (wa, (la, ra)), (wb, (lb, rb)) = runs
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    differing = sorted(k for k in set(la) | set(lb) if la.get(k) != lb.get(k))
    assert differing == [], f"the ledger tells D from D' by {differing}"
    differing = sorted(k for k in set(ra) | set(rb) if ra.get(k) != rb.get(k))
    assert differing == [], f"the training report tells D from D' by {differing}"


# -- a verifier that cannot be talked into yes: what a reader reads is what was checked ----------------
def _signed_model(tmp_path, key, training, **changes):
    from genguard.guardrails.privacy import write_ledger

    d = tmp_path / "m"
    d.mkdir(parents=True)
    (d / "weights.safetensors").write_bytes(b"pretend weights")
    ledger = build_ledger(training, generator="vae", run_id="r", seed=0, weights_path=d / "weights.safetensors")
    ledger.update({"randomness": {"sampling": "secret", "noise": "secret"}, "post_processing_modules": []})
    ledger.update(changes)
    write_ledger(d, ledger, key=key)
    return d


def _dp_training():
    from genguard.guardrails.privacy.accounting import compute_epsilon

    return {"private": True, "mechanism": "DP-SGD (Poisson-subsampled Gaussian)", "sampling": "poisson", "sample_rate": 0.01, "noise_multiplier": 1.0,
            "max_grad_norm": 1.0, "steps": 200, "delta": 1e-5, "accountant": "rdp",
            "target_epsilon": 2.0, "epsilon": compute_epsilon(0.01, 1.0, 200, 1e-5, "rdp"),
            "private_modules": ["model_"], "private_layers": ["Linear"], "grad_sample_mode": "ghost",
            "gradient_accumulation_steps": 1, "secure_mode": False}


@pytest.fixture
def attacker_key(tmp_path):
    from genguard.guardrails.privacy.signing import load_or_create_signing_key

    return load_or_create_signing_key(tmp_path / "attacker-keys")


def test_a_guarantee_sentence_other_than_the_recorded_claim_is_never_consistent(tmp_path, attacker_key):
    from genguard.guardrails.privacy import verify_ledger

    training = _dp_training()
    honest = verify_ledger(_signed_model(tmp_path / "a", attacker_key, training),
                           trusted_key=attacker_key.public_key())
    assert honest["consistent"], honest["findings"]
    # The sentence a privacy officer reads claims a hundred times less than the checked numbers.
    forged = _signed_model(tmp_path / "b", attacker_key, training,
                           guarantee="(0.01, 1e-05)-DP for the records of the training set, by the RDP accountant "
                                     "over 200 Poisson-sampled DP-SGD steps")
    rep = verify_ledger(forged, trusted_key=attacker_key.public_key())
    assert not rep["consistent"], rep["findings"]


def test_a_non_private_ledger_that_states_an_epsilon_is_not_consistent(tmp_path, attacker_key):
    from genguard.guardrails.privacy import verify_ledger

    d = _signed_model(tmp_path, attacker_key, {"private": False, "steps": 3}, epsilon=1.0, delta=1e-5,
                      guarantee="(1, 1e-05)-DP for the records of the training set")
    rep = verify_ledger(d, trusted_key=attacker_key.public_key())
    assert not (rep["consistent"] and rep["claimed_epsilon"] is not None), rep


def test_adding_one_record_is_not_visible_in_the_ledger():
    rng = np.random.default_rng(0)
    x = (0.01 * rng.random((32, 4, 4))).astype(np.float32)
    ledgers = []
    for data in (x, np.concatenate([x, np.ones((1, 4, 4), np.float32)])):
        gen = _Frozen().fit(Dataset(x=data, modality="image", name="toy"),
                            trainer=PrivateTrainer(noise_multiplier=1.0, delta=1e-3), progress=False)
        ledgers.append(_published(gen)[0])
    a, b = ledgers
    assert sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)) == []


def test_the_default_delta_does_not_spell_out_n():
    from genguard.guardrails.privacy.trainer import resolve_delta

    # 1/(10 n) would publish n; a power of ten at or below it only tells n's order of magnitude.
    assert resolve_delta(None, 123_456) == resolve_delta(None, 123_457) == 1e-7
    assert resolve_delta(None, 100_000) == 1e-6 and resolve_delta(None, 1000) == 1e-5
    assert all(resolve_delta(None, n) <= 1 / (10 * n) for n in (100_000, 250_001, 999_999, 10**6))


def _image_folder(root, classes):
    from PIL import Image

    rng = np.random.default_rng(1)
    for name, count in classes.items():
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_class_of_one_record_read_from_folder_names_is_a_caveat_of_the_guarantee(tmp_path):
    # D' = D plus one image in a sub-folder of its own: the label vocabulary saved with the model
    # (config.json) names it, whatever the noise. The ledger must not claim DP over that.
    from genguard.generators import make_generator
    from genguard.generators.data import load_data

    saved = []
    for name, classes in (("d", {"a": 12, "b": 12}), ("d1", {"a": 12, "b": 12, "alice": 1})):
        data = load_data(str(_image_folder(tmp_path / name, classes)))
        gen = make_generator("vae", epochs=1, batch_size=8, hidden=8, latent_dim=2)
        gen.fit(data, trainer=PrivateTrainer(noise_multiplier=1.0, delta=1e-3), progress=False)
        gen.save(tmp_path / f"{name}-model")
        ledger = build_ledger(gen.training_report_, generator="vae", run_id="r", seed=0, weights_path=None)
        saved.append(((tmp_path / f"{name}-model" / "config.json").read_text(), ledger))
    (config_d, _), (config_d1, ledger_d1) = saved
    assert "alice" in config_d1 and "alice" not in config_d  # the leak itself: a caveat must say so
    assert "caveat: the label names (sub-folder names)" in ledger_d1["guarantee"], ledger_d1["guarantee"]


# -- provenance: a DP claim is signed into a manifest only when its ledger verifies -------------------
def _cli(*args, cwd=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "genguard", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_tag_does_not_sign_an_epsilon_from_a_ledger_that_does_not_verify(tmp_path):
    import json

    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    forged = tmp_path / "ledger.json"  # no signature, no weights: any file saying epsilon 0.01
    forged.write_text(json.dumps({"format": "genguard-privacy-ledger/1", "private": True, "epsilon": 0.01,
                                  "delta": 1e-5, "run_id": "victim-run", "generator": "vae"}))
    r = _cli("tag", "--ledger", str(forged), "--out", str(tmp_path / "out"), str(tmp_path / "t.csv"))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "ledger.json" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out" / "t.c2pa").exists()


def test_sample_does_not_sign_the_claim_of_an_edited_ledger(tmp_path):
    import json

    from genguard.generators import make_generator
    from genguard.generators.data import digits_split
    from genguard.guardrails.privacy import write_ledger
    from genguard.guardrails.privacy.ledger import ledger_file_text, sha256_file

    train, _ = digits_split()
    model = tmp_path / "model"
    gen = make_generator("gmm").fit(train, progress=False)
    gen.save(model)
    ledger = build_ledger(gen.training_report_, generator=gen.name, run_id="r", seed=0,
                          weights_path=model / "weights.safetensors")
    write_ledger(model, ledger)
    edited = json.loads((model / "ledger.json").read_text())
    edited.update(private=True, epsilon=0.01, delta=1e-5)  # a model folder from elsewhere, its claim edited
    (model / "ledger.json").write_text(ledger_file_text(edited))
    assert sha256_file(model / "ledger.json")
    r = _cli("sample", "--model", str(model), "-n", "2", "--out", str(tmp_path / "s"))
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "ledger.json" in r.stderr and "Traceback" not in r.stderr


# -- hostile input: a saved model's state is checked at the edge ------------------------------------
@pytest.fixture(scope="module")
def gmm_model(tmp_path_factory):
    from genguard.generators import make_generator
    from genguard.generators.data import digits_split

    d = tmp_path_factory.mktemp("gmm") / "model"
    make_generator("gmm", n_components=2, max_iter=5).fit(digits_split()[0], progress=False).save(d)
    return d


@pytest.mark.parametrize("key, value", [
    ("pixel_scale_", 100000), ("pixel_scale_", -3), ("pixel_scale_", "x"), ("pixel_scale_", 1e300),
    ("levels_", "many"), ("image_shape_", [100000, 100000]), ("image_shape_", "8x8"), ("n_classes_", -1),
])
def test_sample_refuses_a_hostile_saved_state_in_one_line(gmm_model, tmp_path, key, value):
    import json
    import shutil

    model = tmp_path / "model"
    shutil.copytree(gmm_model, model)
    config = json.loads((model / "config.json").read_text())
    config["state"][key] = value
    (model / "config.json").write_text(json.dumps(config))
    r = _cli("sample", "--model", str(model), "-n", "1", "--out", str(tmp_path / "s"), "--no-tag")
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "config.json" in r.stderr and key in r.stderr, r.stderr
    assert "internal error" not in r.stderr and "Traceback" not in r.stderr


def test_a_copy_resigned_by_a_lookalike_ca_does_not_read_like_the_genuine_file(tmp_path):
    from PIL import Image

    from genguard.guardrails.provenance.keys import KeyStore
    from genguard.guardrails.provenance.tagging import tag_file, verify_file

    victim = KeyStore.load_or_create(tmp_path / "victim")
    KeyStore.create(tmp_path / "attacker")  # the same default names as the victim's local CA
    attacker = KeyStore.load_or_create(tmp_path / "attacker")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((32, 32)) * 255).astype(np.uint8)).save(tmp_path / "orig.png")
    claim = {"generator": "vae", "run_id": "victim-run-1"}
    genuine = tag_file(tmp_path / "orig.png", tmp_path / "genuine.png", claim=claim, keys=victim)
    altered = np.array(Image.open(genuine))
    altered[8:16, 8:16] = 0
    Image.fromarray(altered).save(tmp_path / "altered.png")  # re-encoded: the victim's manifest is gone
    forged = tag_file(tmp_path / "altered.png", tmp_path / "forged.png", claim=claim, keys=attacker)
    rg, rf = verify_file(genuine, keys=victim), verify_file(forged, keys=victim)
    assert rg["verdict"] == "intact" and rg["signer"]["trust"] == "trusted", rg["reason"]
    assert "this machine's genguard root" in rg["reason"]
    assert rf["signer"]["trust"] == "unverified" and "this machine" not in rf["reason"], rf["reason"]


def test_the_ledger_records_no_realised_batch_size():
    # The largest realised Poisson batch is a statistic of the secret masks (and, under add/remove, of the
    # data): the ledger records the configured physical batch size instead.
    rng = np.random.default_rng(0)
    data = Dataset(x=(0.01 * rng.random((64, 4, 4))).astype(np.float32), modality="image", name="toy")
    gen = _Frozen(epochs=2, batch_size=8).fit(data, trainer=PrivateTrainer(noise_multiplier=1.0), progress=False)
    assert gen.training_report_["max_physical_batch_size"] == 8 * 4  # the default: four expected batches
