"""`genguard privacy epsilon | verify | audit` from the command line: output, JSON and exit codes."""
import json

import pytest

from genguard.cli import main


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_epsilon_json_and_summary(capsys):
    code, out, _ = _run(["privacy", "epsilon", "--sample-rate", "0.01", "--noise-multiplier", "1.0", "--steps", "10000",
                         "--delta", "1e-5", "--accountant", "pld", "--json"], capsys)
    rep = json.loads(out)
    assert code == 0 and rep["accountant"] == "pld" and rep["delta"] == 1e-5
    assert round(rep["epsilon"], 2) == 6.19
    assert rep["gdp_approximation"]["approximation"] is True
    code, out, _ = _run(["privacy", "epsilon", "-q", "0.01", "-s", "1.0", "-t", "1000"], capsys)
    assert code == 0 and "2.10" in out and "RDP" in out and "not a guarantee" in out


def test_epsilon_inverse(capsys):
    code, out, _ = _run(["privacy", "epsilon", "-q", "0.01", "-t", "1000", "--target-epsilon", "2", "--json"], capsys)
    rep = json.loads(out)
    assert code == 0 and rep["epsilon"] <= 2.0 and rep["target_epsilon"] == 2.0 and rep["noise_multiplier"] > 0.9


@pytest.mark.parametrize("argv", [
    ["privacy", "epsilon", "-q", "1.5", "-s", "1", "-t", "10"],
    ["privacy", "epsilon", "-q", "0.1", "-t", "10"],
    ["privacy", "epsilon", "-q", "0.1", "-s", "1", "-t", "10", "--delta", "2"],
    ["privacy", "verify", "/nonexistent/ledger.json"],
])
def test_bad_input_exits_2_with_one_line(argv, capsys):
    code, _, err = _run(argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("genguard: error:")


def _signed_model(tmp_path):
    from genguard.guardrails.privacy import build_ledger, compute_epsilon, write_ledger

    d = tmp_path / "m"
    d.mkdir()
    (d / "weights.safetensors").write_bytes(b"weights")
    training = {"private": True, "mechanism": "DP-SGD", "sampling": "poisson", "sample_rate": 0.01,
                "noise_multiplier": 1.0, "max_grad_norm": 1.0, "steps": 100,
                "delta": 1e-5, "accountant": "rdp", "target_epsilon": None,
                "epsilon": compute_epsilon(0.01, 1.0, 100, 1e-5, "rdp"), "private_modules": ["model_"],
                "private_layers": ["Linear"], "grad_sample_mode": "ghost", "secure_mode": False}
    ledger = build_ledger(training, generator="vae", run_id="r", seed=0, weights_path=d / "weights.safetensors")
    ledger.update(randomness={"sampling": "secret", "noise": "secret"}, post_processing_modules=[])
    write_ledger(d, ledger)
    return d


def test_verify_exit_codes_and_json(tmp_path, capsys):
    d = _signed_model(tmp_path)
    code, out, _ = _run(["privacy", "verify", str(d / "ledger.json"), "--json", str(tmp_path / "v.json")], capsys)
    rep = json.loads((tmp_path / "v.json").read_text())
    assert code == 0 and "CONSISTENT" in out and rep["consistent"] is True
    assert {"consistent", "claimed_epsilon", "recomputed", "findings"} <= set(rep)
    led = json.loads((d / "ledger.json").read_text())
    led["noise_multiplier"] = 5.0  # pretend more noise was added than was
    (d / "ledger.json").write_text(json.dumps(led, indent=2) + "\n")  # genguard's byte form: the signature catches it
    code, out, _ = _run(["privacy", "verify", str(d), "--json", str(tmp_path / "v2.json")], capsys)
    rep = json.loads((tmp_path / "v2.json").read_text())
    assert code == 1 and "INCONSISTENT" in out and "SIGNATURE_INVALID" in out
    assert not rep["consistent"] and all({"code", "message"} <= set(f) for f in rep["findings"])


def test_audit_quick_with_membership_inference(tmp_path, capsys, digits):
    from genguard.generators import make_generator

    train, _ = digits
    model = tmp_path / "model"
    make_generator("vae", epochs=2, hidden=32, latent_dim=4, seed=0).fit(train, progress=False).save(model)
    code, out, _ = _run(["privacy", "audit", "--non-private", "--quick", "--canaries", "100", "--epochs", "3",
                         "--black-box-only", "--model", str(model), "--json", str(tmp_path / "a.json")], capsys)
    rep = json.loads((tmp_path / "a.json").read_text())
    assert code == 0 and "empirical epsilon >=" in out and "MIA gan_leaks" in out
    assert rep["canary_audit"]["num_canaries"] == 100 and rep["canary_audit"]["epsilon_lower_bound"] >= 0
    mia = rep["membership_inference"]
    assert 0 <= mia["gan_leaks"]["auc"] <= 1 and "tpr_at_1pct_fpr" in mia["domias"]
    code, _, err = _run(["privacy", "audit", "--non-private", "--epsilon", "3"], capsys)
    assert code == 2 and "not both" in err


#: Every gradient-trained family on its own embedded data; flow, pixelcnn and tabular read ``private_fit_``
#: in ``build``, which the audit must set as ``fit`` does.
GRADIENT_FAMILIES = ["vae", "rbm", "gan", "flow", "pixelcnn", "ddpm", "score", "tabular"]


@pytest.mark.parametrize("generator", GRADIENT_FAMILIES)
def test_audit_runs_for_every_gradient_trained_family(generator, tmp_path, capsys):
    argv = ["privacy", "audit", "--generator", generator, "--quick", "--canaries", "10", "--epochs", "1",
            "--epsilon", "10", "--json", str(tmp_path / "a.json")]
    if generator not in ("flow", "tabular"):  # white box (checkpoints, rebuilds) on two families keeps this fast
        argv.append("--black-box-only")
    code, out, err = _run(argv, capsys)
    assert code == 0, err
    rep = json.loads((tmp_path / "a.json").read_text())["canary_audit"]
    assert rep["private"] and rep["num_canaries"] == 10 and 0 < rep["claimed_epsilon"] <= 10
    assert rep["generator"] == generator and "empirical epsilon >=" in out


def test_audit_of_text_is_one_clear_line(capsys):
    code, _, err = _run(["privacy", "audit", "--generator", "text", "--quick", "--canaries", "10"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "window" in err


@pytest.mark.parametrize("argv,needle", [
    (["-q", "0.01", "-s", "1", "-t", "1000000000000", "--accountant", "pld"], "at most"),
    (["-q", "0.01", "-s", "1", "-t", "1000000000000", "--accountant", "prv"], "at most"),
    (["-q", "0.01", "-s", "0.01", "-t", "1000", "--accountant", "pld"], "at most"),
    (["-q", "0.01", "-s", "1", "-t", str(10**40)], "largest step count"),
    (["-q", "0.01", "-t", "1000", "--target-epsilon", "1e9"], "accepts targets up to"),
    (["-q", "0.01", "-t", "1000", "--target-epsilon", "1e-9"], "cannot be reached"),
    (["-q", "0.01", "-s", "nan", "-t", "10"], "finite"),
])
def test_epsilon_beyond_what_an_accountant_computes_is_one_line(argv, needle, capsys):
    code, _, err = _run(["privacy", "epsilon"] + argv, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err


@pytest.mark.parametrize("argv", [
    ["-q", "1", "-t", "1000", "--target-epsilon", "2"],                  # full batch: brentq once lost its bracket
    ["-q", "1", "-s", "1", "-t", "1000", "--accountant", "prv"],
    ["-q", "0.01", "-s", "1", "-t", "1000000000000"],                    # RDP: cheap at any step count
    ["-q", "0.01", "-s", "1e-9", "-t", "1000"],
])
def test_extreme_but_computable_settings_answer(argv, capsys):
    code, out, err = _run(["privacy", "epsilon"] + argv + ["--json"], capsys)
    rep = json.loads(out)
    assert code == 0 and err == "" and rep["epsilon"] > 0 and rep["guarantee"]
    assert rep["gdp_approximation"]["epsilon"] is None or rep["gdp_approximation"]["epsilon"] > 0


def test_accountant_choices_come_from_the_registry(capsys):
    from genguard.guardrails.privacy.accountants import REGISTRY

    code, out, _ = _run(["privacy", "epsilon", "--help"], capsys)
    assert code == 0 and all(name in out for name in REGISTRY)


def test_verify_of_a_hostile_ledger_exits_1_and_deep_json_exits_2(tmp_path, capsys):
    d = _signed_model(tmp_path)
    text = (d / "ledger.json").read_text()
    (d / "ledger.json").write_text(text.replace('{\n  "format"', '{\n  "epsilon": 0.01,\n  "format"', 1))
    code, out, _ = _run(["privacy", "verify", str(d)], capsys)
    assert code == 1 and "INCONSISTENT" in out and "LEDGER_DUPLICATE_KEY" in out
    (d / "ledger.json").write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = _run(["privacy", "verify", str(d)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "nested" in err


def test_verify_recomputes_with_the_chosen_registered_accountants(tmp_path, capsys):
    d = _signed_model(tmp_path)
    code, out, _ = _run(["privacy", "verify", str(d), "--recompute-with", "rdp", "--json", str(tmp_path / "v.json")],
                        capsys)
    rep = json.loads((tmp_path / "v.json").read_text())
    assert code == 0 and set(rep["recomputed"]) == {"rdp"} and "RDP" in out
    code, _, err = _run(["privacy", "verify", str(d), "--recompute-with", "gdp"], capsys)
    assert code == 2 and "gdp" in err
