"""Bring your own generator: register it, check it, train it with DP-SGD, save/load, tag and audit it.

Run:  python examples/own_generator.py [--out DIR]

Two ways a generator of yours meets genguard:

1. Sample-only (a black box you cannot retrain): anything that returns
   ``genguard.generators.Samples`` can be tagged and audited — see ``audit_black_box``.
2. Trainable: subclass ``TorchGenerator``, describe it with a few class attributes and
   ``@register`` it; then ``make_generator``, ``load``, ``genguard train --generator NAME`` (once
   registered through an entry point) and the private trainer all work with it.

To make the CLI see it, declare an entry point in your package's ``pyproject.toml``::

    [project.entry-points."genguard.generators"]
    pixel-gaussian = "mypackage.models:PixelGaussian"
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from genguard.generators import Samples, TorchGenerator, check_generator, load, make_generator, register
from genguard.generators.data import digits_split


@register
class PixelGaussian(TorchGenerator):
    """Independent Gaussian pixels per class: the smallest honest generator (a learned mean and spread)."""

    # What the pipeline and the CLI read: no guessing from parameter names.
    name = "pixel-gaussian"
    modality = "image"
    conditional_on = ("label",)
    default_data = "digits"  # `genguard train --generator pixel-gaussian` needs no --data
    quick_params = {"epochs": 2}
    # dp_mechanism = "dp-sgd" is inherited from TorchGenerator: PrivateTrainer drives the hooks below.

    def __init__(self, epochs: int = 20, batch_size: int = 256, lr: float = 0.05, seed: int = 0) -> None:
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.seed = seed

    # -- the torch hooks ------------------------------------------------------------------------
    def build(self, data):
        self.image_shape_ = list(np.asarray(data.x).shape[1:])
        self.n_classes_ = int(len(data.group_names["label"]))
        self.build_from_state({})

    def build_from_state(self, extra):
        import torch

        d = int(np.prod(self.image_shape_))
        self.model_ = torch.nn.Embedding(self.n_classes_, 2 * d)  # per class: mean and log-std of each pixel
        torch.nn.init.zeros_(self.model_.weight)

    def _extra_state(self):
        return {"image_shape_": self.image_shape_, "n_classes_": self.n_classes_}

    def private_modules(self):
        return ("model_",)  # the only module that sees real data

    def train_tensors(self, data):
        import torch

        x = torch.from_numpy(np.asarray(data.x, dtype=np.float32).reshape(len(data), -1))
        return (x, torch.from_numpy(np.asarray(data.groups["label"], dtype=np.int64)))

    def batch_loss(self, batch):
        x, y = batch
        mean, log_std = self.model_(y).chunk(2, dim=1)
        nll = 0.5 * ((x - mean) / log_std.exp()) ** 2 + log_std
        return nll.mean(1).mean()  # one loss per record, then the mean over the batch (forget .mean(): genguard says so)

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self, n, seed=None, label=None, **conditions):
        import torch

        self.check_is_fitted()
        if conditions:
            raise ValueError(f"{self.name} takes only the condition 'label', got {sorted(conditions)}")
        labels = np.full(n, int(label)) if label is not None else np.arange(n) % self.n_classes_
        g = torch.Generator().manual_seed(int(self.seed if seed is None else seed))
        with torch.no_grad():
            mean, log_std = self.model_(torch.from_numpy(labels)).chunk(2, dim=1)
            x = (mean + log_std.exp() * torch.randn(mean.shape, generator=g)).clamp(0, 1)
        return Samples(data=x.numpy().reshape(n, *self.image_shape_), modality="image",
                       conditions={"label": labels}, metadata={"generator": self.name, "seed": seed})


def audit_black_box(sample_fn, train, holdout, out: Path) -> dict:
    """A sample-only generator: wrap its outputs in Samples, then tag and audit them."""
    from genguard.audits import ReleaseAudit
    from genguard.generators.data import write_samples
    from genguard.pipeline import claim_from_ledger, tag_and_verify

    images, labels = sample_fn(100)
    samples = Samples(data=images, modality="image", conditions={"label": labels},
                      metadata={"generator": "black-box", "pixel_scale": 4})
    paths = write_samples(samples, out / "black-box")
    # no ledger and no weights: the run id is derived from the outputs themselves, nothing to invent
    provenance = tag_and_verify(paths, claim_from_ledger(None, "black-box", None, paths=paths), progress=False)
    report = ReleaseAudit(seed=0).run(samples, train, holdout, provenance=provenance, progress=False)
    return report.data


def main(out: Path) -> dict:
    from genguard.audits import ReleaseAudit
    from genguard.guardrails.privacy import PrivateTrainer
    from genguard.pipeline import sample_step

    train, holdout = digits_split()
    results: dict = {}

    # 1. the protocol check: class attributes, hooks, one batch's loss, fit, reproducible sampling, save/load
    results["checks"] = check_generator(PixelGaussian(epochs=1), data=train.subset(np.arange(200)))

    # 2. private training through the registry, exactly as `genguard train` does it
    gen = make_generator("pixel-gaussian", **PixelGaussian.quick_params)
    gen.fit(train, trainer=PrivateTrainer(target_epsilon=5.0), progress=False)
    results["epsilon"] = gen.training_report_["epsilon"]
    gen.save(out / "model")
    back = load(out / "model")  # found by its registered name, never by the module path in config.json
    assert np.array_equal(back.sample(8, seed=1).data, gen.sample(8, seed=1).data)

    # 3. sample and tag without a ledger: the run id is model-<sha256 of the weights>
    samples, paths, provenance = sample_step(back, 100, out / "samples", seed=0, ledger=None, progress=False,
                                             model_dir=out / "model")
    results["run_id"] = provenance["claim"]["run_id"]
    results["intact_rate"] = provenance["intact_rate"]

    # 4. the release audit, with the sample-only membership inference against the holdout
    report = ReleaseAudit(seed=0).run(samples, train, holdout, provenance=provenance, progress=False)
    report.write(out / "audit")
    results["membership_auc"] = report.data["privacy"]["membership_inference"]["max_auc"]
    results["passed"] = report.passed

    # 5. a black box that memorised its training set: the audit's memorization and membership checks flag it
    rng = np.random.default_rng(0)

    def copier(n):
        idx = rng.integers(0, len(train), n)
        return train.x[idx], train.groups["label"][idx]

    bb = audit_black_box(copier, train, holdout, out)
    results["black_box_near_duplicates"] = bb["memorization"]["near_duplicate_rate"]
    results["black_box_membership_auc"] = bb["privacy"]["membership_inference"]["max_auc"]
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for the model, samples and audits")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="genguard-own-"))
    print(json.dumps(main(out), indent=2, default=str))
