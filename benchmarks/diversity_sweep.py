"""Diversity and TSTR of `genguard run` for a few settings of a generator's DP run_params (not a timed test).

    python benchmarks/diversity_sweep.py vae '[{"beta": 1.0}, {"beta": 0.2}]'         # overrides merged into run_params["dp"]
    python benchmarks/diversity_sweep.py vae '[{"beta": 0.2}]' --quick                 # into run_params["dp_quick"]
    python benchmarks/diversity_sweep.py dpmerf '[{}]'

Each setting runs the whole loop (train at ε = 10, 1,000 samples or 200 with --quick, audit with the
default policy) in a temporary folder and prints recall, the diversity gates' figures, precision,
TSTR (logistic regression trained on the samples, tested on the real holdout) and the failed gates.
DP noise is fresh per run: repeat a setting to see the spread.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("generator")
    ap.add_argument("settings", help="JSON list of dicts merged into the generator's DP run_params")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epsilon", type=float, default=10.0)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    from sklearn.linear_model import LogisticRegression

    from genguard.generators import get_generator_class
    from genguard.generators.data import digits_split, labels_from_filenames, read_sample_images
    from genguard.pipeline import RunConfig, run

    _, holdout = digits_split()
    cls = get_generator_class(args.generator)
    key = "dp_quick" if args.quick else "dp"
    base = dict((cls.run_params or {}).get(key, {}))
    original = cls.run_params
    for override in json.loads(args.settings):
        params = {**base, **override}
        cls.run_params = {**(original or {}), key: params}
        try:
            with tempfile.TemporaryDirectory() as tmp:
                res = run(RunConfig(out=Path(tmp) / "run", generator=args.generator, epsilon=args.epsilon,
                                    quick=args.quick, tag=False), progress=False)
                x, paths = read_sample_images(Path(tmp) / "run" / "samples")
                y = labels_from_filenames(paths)
        finally:
            cls.run_params = original
        d = res.report.data
        fid, dv = d["fidelity"], d["fidelity"]["diversity"]
        tstr = LogisticRegression(max_iter=2000).fit(x.reshape(len(x), -1), y).score(
            holdout.x.reshape(len(holdout.x), -1), holdout.groups["label"])
        print(json.dumps(params), f"train {res.timings['train_s']:.1f}s", f"recall {fid['recall']['value']:.3f}",
              f"recall_relative {dv['recall_relative']['value']:.3f}",
              f"coverage_relative {dv['coverage_relative']['value']:.3f}",
              f"within-class {dv['within_class']['min_ratio']['value']:.3f}",
              f"precision {fid['precision']['value']:.3f}", f"TSTR {tstr:.3f}",
              f"failed {[g['name'] for g in res.report.failed_gates]}", sep=" · ", flush=True)


if __name__ == "__main__":
    main()
