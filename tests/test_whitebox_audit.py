"""White-box Dirac-canary audit: it runs for every gradient-trained family, refutes broken mechanisms, and
stays below the claim for the correct one."""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from genguard.audits.privacy import one_run_epsilon_lower_bound  # noqa: E402
from genguard.audits.whitebox import DiracCanaries, ScaledNoiseBug, audit_delta, white_box_audit  # noqa: E402
from genguard.generators import quick_params  # noqa: E402
from genguard.guardrails.privacy import PrivateTrainer  # noqa: E402
from genguard.guardrails.privacy.errors import PrivacyError  # noqa: E402

FAMILIES = ["vae", "gan", "rbm", "flow", "pixelcnn", "ddpm", "score", "text", "tabular"]
VAE_SMALL = {"hidden": 64, "latent_dim": 8, "batch_size": 512, "lr": 1e-2, "epochs": 20}
# Wider: the records' own gradients spread over more coordinates, so less of them lands on a canary's.
VAE_AUDIT = {**VAE_SMALL, "hidden": 128, "epochs": 30}


def _data(name: str, n: int = 64):
    from genguard.generators.data import digits_split, load_embedded, train_holdout

    if name == "text":
        return train_holdout(load_embedded("pydoc"))[0].subset(np.arange(20))
    if name == "tabular":
        return train_holdout(load_embedded("diabetes"))[0].subset(np.arange(n))
    return digits_split()[0].subset(np.arange(n))


def _digits():
    from genguard.generators.data import digits_split

    return digits_split()[0]


@pytest.mark.parametrize("name", FAMILIES)
def test_audit_runs_for_every_family_and_sees_noise_free_canaries(name):
    # With the noise switched off (a broken mechanism), included canaries stand out in every family.
    # Small batches (16 of 64 records, q = 1/4) keep the records' own gradients at the canaries'
    # coordinates small next to C.
    params = {**quick_params(name), "epochs": 2, "batch_size": 16}
    if name == "text":
        params["max_windows"] = 64
    r = white_box_audit(name, trainer=PrivateTrainer(noise_multiplier=1.0), data=_data(name), num_canaries=400,
                        generator_params=params, mechanism_bug=ScaledNoiseBug(0.0), seed=3)
    assert r["steps"] >= 1 and r["num_canaries"] == 400
    assert r["epsilon_lower_bound"] > 1.0, r["best"]
    assert r["bound_exceeds_claim"] is False or r["claimed_epsilon_at_audit_delta"] < r["epsilon_lower_bound"]


def test_correct_trainer_is_not_refuted_and_a_noise_bug_is():
    data = _digits()
    good = white_box_audit("vae", trainer=PrivateTrainer(target_epsilon=2.0), data=data, num_canaries=5000,
                           generator_params=VAE_AUDIT, seed=5)
    assert not good["bound_exceeds_claim"], good
    assert good["epsilon_lower_bound"] <= good["claimed_epsilon_at_audit_delta"]
    bad = white_box_audit("vae", trainer=PrivateTrainer(target_epsilon=2.0), data=data, num_canaries=5000,
                          generator_params=VAE_AUDIT, mechanism_bug=ScaledNoiseBug(0.05), seed=5)
    assert bad["bound_exceeds_claim"], bad
    assert bad["epsilon_lower_bound"] > good["epsilon_lower_bound"] + 1.0
    assert bad["ceiling"] >= bad["epsilon_lower_bound"]


def test_public_sampling_helps_the_auditor():
    # A trainer whose batches are public lets the auditor score only the steps that held the canary.
    data = _digits()
    kw = dict(trainer=PrivateTrainer(target_epsilon=10.0), data=data, num_canaries=5000, generator_params=VAE_SMALL,
              seed=7)
    hidden = white_box_audit("vae", **kw)
    public = white_box_audit("vae", known_sampling=True, **kw)
    assert public["best"]["score"] == "known_sampling_sum"
    assert public["epsilon_lower_bound"] > hidden["epsilon_lower_bound"]


def test_canaries_enter_before_the_noise_with_norm_c():
    # Noise off, q = 1: each included canary adds exactly C at its coordinate each step; excluded ones add 0.
    probe = DiracCanaries(50, seed=1)
    params = [torch.nn.Parameter(torch.zeros(10, 10))]
    probe.start(params, 1.0, 1.0, 0.5, 4.0)
    sums = {params[0]: torch.zeros(10, 10)}
    probe.before_noise(0, torch.arange(4), sums)
    flat = sums[params[0]].reshape(-1)
    assert float(flat.sum()) == pytest.approx(0.5 * probe.included.sum())
    assert set(np.round(flat.numpy(), 6)) <= {0.0, 0.5}
    sums[params[0]] /= 4.0  # what the trainer releases: (sum + noise) / E[B]
    probe.after_noise(0, sums)
    np.testing.assert_allclose(probe.scores["sum"], 0.5 * probe.included)


def test_coins_come_from_a_secret_source_and_bad_settings_are_refused():
    p = [torch.nn.Parameter(torch.zeros(1000))]
    a, b = DiracCanaries(500), DiracCanaries(500)
    a.start(p, 0.1, 1.0, 1.0, 10.0)
    b.start(p, 0.1, 1.0, 1.0, 10.0)
    assert (a.included != b.included).any()
    with pytest.raises(PrivacyError, match="distinct coordinates"):
        DiracCanaries(2000).start(p, 0.1, 1.0, 1.0, 10.0)
    with pytest.raises(PrivacyError, match="at least 2"):
        DiracCanaries(1)
    with pytest.raises(PrivacyError, match="genguard engine"):
        white_box_audit("vae", trainer=PrivateTrainer(noise_multiplier=1.0, grad_sample_mode="opacus"),
                        data=_data("vae"), num_canaries=10, generator_params={**VAE_SMALL, "epochs": 1})
    with pytest.raises(PrivacyError, match="torch generator"):
        white_box_audit("gmm", num_canaries=10)


def test_audit_delta_keeps_the_delta_term_small():
    assert audit_delta(100, 1e-5) == 1e-5
    assert audit_delta(100_000, 1e-5) == pytest.approx(1e-8)
    # at the training delta, 100k canaries would make even perfect guesses worthless
    assert one_run_epsilon_lower_bound(100_000, 1000, 1000, 1e-5) < one_run_epsilon_lower_bound(100_000, 1000, 1000, 1e-8)


def _cli(argv, capsys):
    from genguard.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_cli_white_box_audit(tmp_path, capsys):
    out_json = tmp_path / "wb.json"
    code, out, _ = _cli(["privacy", "audit", "--white-box", "--generator", "rbm", "--quick", "--canaries", "100",
                         "--epochs", "1", "--json", str(out_json)], capsys)
    assert code == 0, out
    assert "white-box audit of rbm" in out and "Dirac" in out and "not refuted" in out
    rep = json.loads(out_json.read_text())["white_box_audit"]
    assert rep["num_canaries"] == 100 and rep["steps"] >= 1
    code, _, err = _cli(["privacy", "audit", "--white-box", "--non-private"], capsys)
    assert code == 2 and "white-box" in err and "Traceback" not in err
