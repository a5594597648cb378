"""DP-SGD under torch.distributed (2 CPU processes, gloo): the accounting of one process, one noise draw per step."""
import os

import pytest
import torch

from genguard.generators import make_generator
from genguard.guardrails.privacy import PrivateTrainer, build_ledger, write_ledger

SIGMA, C = 1.3, 1.0
GEN = {"epochs": 1, "batch_size": 256, "hidden": 32, "latent_dim": 4, "seed": 3}


class NoiseProbe:
    """Rank 0's view of each step: the clean sum of clipped gradients and what the release adds to it."""

    def start(self, params, sample_rate, noise_multiplier, max_grad_norm, expected_batch):
        self.eb, self.noise, self.clean = float(expected_batch), [], None

    def before_noise(self, step, idx, sums):
        self.clean = torch.cat([s.detach().reshape(-1).double() for s in sums.values()])

    def after_noise(self, step, sums):
        released = torch.cat([s.detach().reshape(-1).double() for s in sums.values()])
        self.noise.append(released * self.eb - self.clean)


def _train(train, probe=None):
    gen = make_generator("vae", **GEN)
    gen.fit(train, trainer=PrivateTrainer(noise_multiplier=SIGMA, max_grad_norm=C, mechanism_probe=probe),
            progress=False)
    return gen


def _rank_main(rank, world, rdv, out):
    import torch.distributed as dist

    from genguard.generators.data import digits_split

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rdv}", rank=rank, world_size=world)
    try:
        train, _ = digits_split()
        probe = NoiseProbe()
        gen = _train(train, probe)
        params = torch.cat([p.detach().reshape(-1) for n in gen.trained_modules()
                            for p in getattr(gen, n).parameters()])
        noise = torch.cat(probe.noise) if probe.noise else torch.zeros(0)
        torch.save({"report": gen.training_report_, "params": params, "noise": noise,
                    "n_steps_seen": len(probe.noise)}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    import torch.multiprocessing as mp

    d = tmp_path_factory.mktemp("ddp")
    mp.spawn(_rank_main, args=(2, str(d / "rdv"), str(d)), nprocs=2, join=True)
    return [torch.load(d / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.fixture(scope="module")
def one_rank(digits):
    train, _ = digits
    probe = NoiseProbe()
    gen = _train(train, probe)
    return gen.training_report_, torch.cat(probe.noise)


def test_two_processes_have_the_accounting_of_one(two_ranks, one_rank):
    single, _ = one_rank
    for r in two_ranks:
        rep = r["report"]
        for key in ("sample_rate", "noise_multiplier", "max_grad_norm", "steps", "delta", "accountant", "epsilon"):
            assert rep[key] == single[key], key
        assert rep["distributed"] == {"world_size": 2, "backend": "gloo", "noise_draws_per_step": 1}
        assert rep["randomness"] == {"sampling": "secret", "noise": "secret"}
    assert single["distributed"]["world_size"] == 1
    # the replicas hold one model: every rank applied the same released update
    assert torch.equal(two_ranks[0]["params"], two_ranks[1]["params"])


def test_per_step_noise_is_one_draw_of_sigma_c(two_ranks, one_rank):
    """Var(released * E[B] - clean sum) per coordinate is sigma^2 C^2: not W draws, not a 1/W share each."""
    r0 = two_ranks[0]
    assert r0["n_steps_seen"] == r0["report"]["steps"] > 0
    noise = r0["noise"]
    assert noise.numel() > 10_000
    ratio = float(noise.var()) / (SIGMA * C) ** 2
    # about 1 +- 0.01 for this many coordinates; W = 2 draws would give 2, a share per rank 0.5
    assert abs(ratio - 1) < 0.05, ratio
    assert abs(float(noise.mean())) < 0.05 * SIGMA * C
    single_ratio = float(one_rank[1].var()) / (SIGMA * C) ** 2
    assert abs(single_ratio - ratio) < 0.05


def test_only_rank_0_draws_noise(two_ranks):
    # the probe runs on rank 0 alone, and rank 1 adds no draw of its own (the variance test above would see it)
    assert two_ranks[1]["noise"].numel() == 0 and two_ranks[1]["n_steps_seen"] == 0


def test_ledger_records_world_size_and_verify_checks_it(two_ranks, tmp_path):
    from genguard.guardrails.privacy.verify import verify_ledger

    rep = two_ranks[0]["report"]
    good = build_ledger(rep, generator="vae", run_id="r", seed=3, weights_path=None)
    assert good["distributed"]["world_size"] == 2
    for name, led in (("good", good),
                      ("per_rank", {**good, "distributed": {**good["distributed"], "noise_draws_per_step": 2}}),
                      ("bad_w", {**good, "distributed": {**good["distributed"], "world_size": 0}})):
        write_ledger(tmp_path / name, led)
    codes = {name: {f["code"] for f in verify_ledger(tmp_path / name / "ledger.json")["findings"]
                    if f["severity"] == "error"} for name in ("good", "per_rank", "bad_w")}
    assert not codes["good"] & {"DISTRIBUTED_INVALID", "DISTRIBUTED_NOISE_NOT_ONCE", "CLAIM_NOT_RECOMPUTED"}
    assert "DISTRIBUTED_NOISE_NOT_ONCE" in codes["per_rank"]
    assert "DISTRIBUTED_INVALID" in codes["bad_w"]


def test_shuffled_batches_are_refused_under_distributed(tmp_path):
    from genguard.guardrails.privacy import distributed
    from genguard.guardrails.privacy.errors import PrivacyError

    with pytest.raises(PrivacyError, match="Poisson"):
        distributed.check_supported(False, "ghost")
    with pytest.raises(PrivacyError, match="genguard's engine"):
        distributed.check_supported(True, "opacus")
    assert [distributed.shard(7, r, 2).tolist() for r in range(2)] == [[0, 2, 4, 6], [1, 3, 5]]


def test_cli_training_under_torchrun_is_refused_not_raced(tmp_path, capsys, monkeypatch):
    from genguard.cli import main

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(SystemExit) as exc:
        main(["train", "--generator", "vae", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "examples/train_distributed.py" in err and not (tmp_path / "o").exists()
