"""The text and table diversity gates' figures on real data, collapsed generators and a run's own samples.

Prints the tables quoted in the README (default policy thresholds: text figures
min 0.5, lower ends; table excesses max 0.25 / 0.1 / 0.1, worst column point,
means upper ends)::

    OMP_NUM_THREADS=1 python benchmarks/text_table_diversity.py \\
        [--text-samples RUN/samples] [--table-samples RUN/samples/samples.csv] [--seeds 3]

``--text-samples`` / ``--table-samples`` add the samples of a ``genguard run
--generator text`` / ``--generator tabular`` run.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def _text_cases(train: list[str], holdout: list[str], extra: Path | None, rng) -> dict[str, list[str]]:
    words = " ".join(train).split()
    cases = {
        "the real holdout passages": holdout,
        "one training passage, sliding start (collapsed)": [train[3][i:i + 400] for i in range(0, 300, 5)],
        "one training passage repeated": [train[3][:400]] * 100,
        "one template, a number varied": [f"Generated sentence number {i} about lists and tuples." for i in range(100)],
        "word salad from the real vocabulary": [" ".join(rng.choice(words, 80)) for _ in range(100)],
    }
    if extra is not None:
        cases[f"samples in {extra}"] = [f.read_text(encoding="utf-8") for f in sorted(extra.glob("*.txt"))]
    return cases


def _table_cases(train, holdout, extra: Path | None, rng) -> dict:
    import pandas as pd

    row = holdout.iloc[[7]].to_numpy(float)
    x = np.repeat(row, 500, 0) + rng.normal(0, 0.05, (500, row.shape[1])) * train.std().to_numpy()
    x[:, list(train.columns).index("sex")] = rng.choice(train["sex"].to_numpy(), 500)
    cases = {
        "the real holdout rows": holdout,
        "one holdout row with 5% noise (collapsed)": pd.DataFrame(x, columns=train.columns),
        "each column from its own real marginal": pd.DataFrame({c: rng.choice(holdout[c].to_numpy(), 500)
                                                                for c in train.columns}),
        "a Gaussian with the real means and covariance": pd.DataFrame(
            rng.multivariate_normal(train.mean(), train.cov(), 500), columns=train.columns),
    }
    if extra is not None:
        cases[f"samples in {extra}"] = pd.read_csv(extra)[list(train.columns)]
    return cases


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text-samples", type=Path)
    ap.add_argument("--table-samples", type=Path)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    from genguard.audits.policy import DEFAULT_GATES
    from genguard.audits.tabular import table_fidelity
    from genguard.audits.text_diversity import text_diversity
    from genguard.generators.data import load_diabetes, load_pydoc_text, train_holdout

    tr, ho = train_holdout(load_pydoc_text())
    train, holdout = list(tr.x), list(ho.x)
    gates = DEFAULT_GATES["text"]
    print("text (pydoc reference; gated value = lower end, mean over seeds; pass = every text gate)")
    print("| samples | self_bleu_relative | distinct_1_relative | distinct_2_relative | verdict |")
    print("|---|---|---|---|---|")
    for name, texts in _text_cases(train, holdout, args.text_samples, np.random.default_rng(0)).items():
        vals = {m: [] for m in ("self_bleu_relative", "distinct_1_relative", "distinct_2_relative")}
        for seed in range(args.seeds):
            d = text_diversity(texts, train + holdout, seed=seed)
            for m in vals:
                vals[m].append(d[m]["value"])
        ok = all(np.mean(v) >= gates[f"fidelity.diversity.{m}"]["min"] for m, v in vals.items())
        cells = " | ".join(f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in vals.values())
        print(f"| {name} | {cells} | {'pass' if ok else 'fail'} |")

    trd, hod = train_holdout(load_diabetes())
    train_t, holdout_t = trd.x, hod.x
    gates = DEFAULT_GATES["tabular"]
    print("\ntables (diabetes reference; excess over the real holdout's level, mean over seeds)")
    print("| samples | worst column (point) | mean column (upper end) | pairs (upper end) | verdict |")
    print("|---|---|---|---|---|")
    for name, table in _table_cases(train_t, holdout_t, args.table_samples, np.random.default_rng(0)).items():
        vals = {"columns.max_excess": [], "columns.mean_excess": [], "pairs.mean_excess": []}
        worst = set()
        for seed in range(args.seeds):
            d = table_fidelity(table, train_t, holdout_t, seed=seed)
            worst.add(d["columns"]["max_excess"]["column"])
            for m in vals:
                sec, key = m.split(".")
                vals[m].append(d[sec][key]["value"])
        ok = all(np.mean(v) <= gates[f"fidelity.{m}"]["max"] for m, v in vals.items())
        cells = " | ".join(f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in vals.values())
        print(f"| {name} | {cells} | {'pass' if ok else 'fail'} ({', '.join(sorted(worst))} worst) |")


if __name__ == "__main__":
    main()
