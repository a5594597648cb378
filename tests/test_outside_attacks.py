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
