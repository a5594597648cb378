"""DP-SGD training through opacus and the privacy ledger."""
import numpy as np
import pytest

from generators import make_generator
from guardrails.privacy import PrivacyError, PrivateTrainer, build_ledger, read_ledger, resolve_delta, write_ledger


def test_delta_rules():
    assert resolve_delta(None, 1437) == 1e-5
    assert resolve_delta(None, 200_000) == pytest.approx(1 / 2_000_000)
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

    from guardrails.privacy.trainer import validate_private_module

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
    assert back["dataset_size"] == 1437 and len(back["weights_sha256"]) == 64
    assert "torch" in back["package_versions"]
    assert np.isfinite(gen.sample(4, seed=0).data).all()
