"""Benchmark of the reference generators: speed, local fidelity, TSTR, privately and not (not a timed test).

Every image generator trains on the digits train split (1,437 images), without
DP and through DP-SGD (``guardrails.privacy.PrivateTrainer``) at epsilon 10 and
1 (delta 1e-5); dpmerf releases its own one-shot private embedding. Columns:

* ``train_s`` and ``samples_per_s`` (wall clock on this machine; shared CPUs make them noisy);
* ``fid_local``: Fréchet distance between real holdout and generated digits in the
  hidden layer (128 units) of an MLP classifier trained here on the real digits
  train split. It is NOT comparable to published Inception-based FID figures;
* ``precision`` / ``recall``: k-nearest-neighbour manifold precision and recall
  (Kynkäänniemi et al. 2019, k=5) in the same local feature space;
* ``tstr``: accuracy on the real holdout of a logistic regression trained only on
  1,000 class-conditional samples (100 per digit).

Also the per-byte perplexity on held-out pydoc text for ``text`` and per-column
fidelity (mean KS statistic of numerics, TV distance of ``sex``) for the tabular
generators on the diabetes holdout.

Usage: ``python benchmarks/generator_quality.py [--only NAME ...] [--eps none 10 1] [--json FILE]``
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GENGUARD_NO_PROGRESS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

#: Settings used here per generator and privacy level: sized to finish in minutes on a shared 2-core
#: machine (the constructors' defaults train longer). ``None`` key = non-private.
IMAGE_CONFIGS: dict[str, dict] = {
    "gmm": {None: {"n_components": 8}},
    # The default generator of `genguard run`: its class defaults, exactly what the run trains.
    "dpmerf": {None: {}, 10.0: {}, 1.0: {}},
    "vae": {None: {"epochs": 40},
            10.0: {"hidden": 64, "latent_dim": 8, "batch_size": 256, "lr": 5e-3, "epochs": 60},
            1.0: {"hidden": 64, "latent_dim": 8, "batch_size": 256, "lr": 5e-3, "epochs": 30}},
    "flow": {None: {"epochs": 30}, 10.0: {"hidden": 128, "batch_size": 256, "lr": 3e-3, "epochs": 10}},
    "rbm": {None: {"epochs": 30, "cd_k": 3, "gibbs_steps": 200},
            10.0: {"n_hidden": 128, "batch_size": 256, "epochs": 15, "lr": 1e-2, "gibbs_steps": 200}},
    # gan without DP: its class defaults (mode-seeking term and EMA sampling), what `genguard run --no-dp` trains
    "gan": {None: {}, 10.0: {"width": 32, "batch_size": 256, "epochs": 5, "lr": 1e-3}},
    "pixelcnn": {None: {"epochs": 10}, 10.0: {"batch_size": 256, "epochs": 4, "lr": 5e-3}},
    "ddpm": {None: {"epochs": 30}, 10.0: {"batch_size": 256, "epochs": 6, "lr": 3e-3, "noise_multiplicity": 2}},
    "score": {None: {"epochs": 30}, 10.0: {"batch_size": 256, "epochs": 6, "lr": 3e-3}},
}


class LocalFeatures:
    """Hidden-layer features of an MLP digit classifier trained on the real train split (the ``fid_local`` net)."""

    def __init__(self, x_train: np.ndarray, y_train: np.ndarray, seed: int = 0) -> None:
        from sklearn.neural_network import MLPClassifier

        self.clf = MLPClassifier(hidden_layer_sizes=(128,), max_iter=400, random_state=seed).fit(x_train, y_train)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.clf.coefs_[0] + self.clf.intercepts_[0], 0.0)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    from scipy import linalg

    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        covmean = np.asarray(linalg.sqrtm(s1 @ s2)).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """k-NN manifold precision (fake inside real balls) and recall (real inside fake balls)."""
    from sklearn.metrics import pairwise_distances

    def radii(x: np.ndarray) -> np.ndarray:
        d = pairwise_distances(x)
        return np.sort(d, axis=1)[:, k]

    rr, rf = radii(real), radii(fake)
    d = pairwise_distances(fake, real)
    precision = float((d <= rr[None, :]).any(1).mean())
    recall = float((d.T <= rf[None, :]).any(1).mean())
    return precision, recall


def tstr(samples, holdout) -> float:
    from sklearn.linear_model import LogisticRegression

    x = samples.data.reshape(len(samples), -1)
    clf = LogisticRegression(max_iter=2000).fit(x, samples.conditions["label"])
    return float(clf.score(holdout.x.reshape(len(holdout), -1), holdout.groups["label"]))


def fit(name: str, params: dict, train, eps: float | None):
    from genguard.generators import make_generator
    from genguard.guardrails.privacy import PrivateTrainer

    gen = make_generator(name, **params)
    trainer = PrivateTrainer(target_epsilon=eps) if eps is not None else None
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gen.fit(train, trainer=trainer, progress=False)
    return gen, time.perf_counter() - t0


def image_rows(names, epsilons, feats, train, holdout):
    real_f = feats(holdout.x.reshape(len(holdout), -1))
    for name in names:
        for eps in epsilons:
            cfg = IMAGE_CONFIGS[name].get(eps)
            row = {"generator": name, "epsilon": eps}
            if cfg is None:
                why = ("EM/one-shot fit: no DP-SGD path" if name == "gmm" else "not run at this epsilon (time budget)")
                yield {**row, "skipped": why}
                continue
            try:
                gen, secs = fit(name, cfg, train, eps)
                t0 = time.perf_counter()
                s = gen.sample(1000, seed=0, label=np.repeat(np.arange(10), 100))
                sps = 1000 / (time.perf_counter() - t0)
                fake_f = feats(s.data.reshape(len(s), -1))
                p, r = precision_recall(real_f, fake_f)
                rep = getattr(gen, "training_report_", {})
                yield {**row, "params": cfg, "train_s": round(secs, 1), "samples_per_s": round(sps, 1),
                       "fid_local": round(frechet_distance(real_f, fake_f), 2), "precision": round(p, 3),
                       "recall": round(r, 3), "tstr": round(tstr(s, holdout), 3),
                       "epsilon_spent": rep.get("epsilon")}
            except Exception as exc:  # a benchmark row that fails is reported, not hidden
                yield {**row, "error": f"{type(exc).__name__}: {exc}"}


def text_rows(epsilons):
    from genguard.generators.data import load_pydoc_text, train_holdout

    train, holdout = train_holdout(load_pydoc_text())
    texts = [t[:1500] for t in holdout.x[:12]]
    for eps in [e for e in epsilons if e is None or e >= 10]:  # DP text at eps 1: not run (time budget)
        params = {} if eps is None else {"max_windows": 1000, "batch_size": 128, "epochs": 2, "lr": 5e-3}
        gen, secs = fit("text", params, train, eps)
        yield {"generator": "text", "epsilon": eps, "train_s": round(secs, 1),
               "perplexity_per_byte": round(gen.perplexity(texts), 2),
               "epsilon_spent": gen.training_report_.get("epsilon"), "example": gen.sample(1, seed=0).data[0][:80]}


def tabular_rows(epsilons):
    from genguard.generators.data import load_diabetes, train_holdout
    from genguard.generators.tabular import column_fidelity

    train, holdout = train_holdout(load_diabetes())
    # the holdout itself, resampled, as the reference value of the metrics (sampling noise floor)
    for name in ("tabular", "gmm", "dpmerf"):
        for eps in epsilons:
            if name == "gmm" and eps is not None:
                continue
            params = {"gmm": {"n_components": 3, "reg_covar": 1e-3}, "dpmerf": {"steps": 800}}.get(name, {})
            if name == "tabular" and eps is not None:
                params = {"epochs": 100, "batch_size": 128}
            gen, secs = fit(name, params, train, eps)
            fid = column_fidelity(holdout.x, gen.sample(len(holdout) * 5, seed=0).data)
            ks = [v["ks"] for v in fid.values() if "ks" in v]
            yield {"generator": f"{name} (diabetes)", "epsilon": eps, "train_s": round(secs, 1),
                   "mean_ks": round(float(np.mean(ks)), 3), "max_ks": round(float(np.max(ks)), 3),
                   "sex_tv": round(fid["sex"]["tv"], 3), "epsilon_spent": gen.training_report_.get("epsilon")}


def fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if not math.isnan(v) else "nan"
    return str(v)


def main(argv=None) -> int:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=None, help="generators to run (default: all)")
    ap.add_argument("--eps", nargs="*", default=["none", "10", "1"], help="privacy levels: none and/or numbers")
    ap.add_argument("--json", default=None, help="write all rows as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    epsilons = [None if e == "none" else float(e) for e in args.eps]
    names = args.only or list(IMAGE_CONFIGS) + ["text", "tabular"]
    from genguard.generators.data import digits_split

    train, holdout = digits_split()
    feats = LocalFeatures(train.x.reshape(len(train), -1), train.groups["label"])
    rows = []
    cols = ["generator", "epsilon", "train_s", "samples_per_s", "fid_local", "precision", "recall", "tstr", "epsilon_spent"]
    print(" | ".join(cols), flush=True)
    img = [n for n in names if n in IMAGE_CONFIGS]
    for row in image_rows(img, epsilons, feats, train, holdout):
        rows.append(row)
        extra = row.get("skipped") or row.get("error") or ""
        print(" | ".join(fmt(row.get(c)) for c in cols) + (f" | {extra}" if extra else ""), flush=True)
    if "text" in names:
        for row in text_rows(epsilons):
            rows.append(row)
            print(json.dumps(row), flush=True)
    if "tabular" in names:
        for row in tabular_rows(epsilons):
            rows.append(row)
            print(json.dumps(row), flush=True)
    best = {}
    for row in rows:
        if "tstr" in row:
            k = "none" if row["epsilon"] is None else row["epsilon"]
            if row["tstr"] > best.get(k, (0, ""))[0]:
                best[k] = (row["tstr"], row["generator"])
    print("best TSTR per epsilon:", json.dumps({str(k): v for k, v in best.items()}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
