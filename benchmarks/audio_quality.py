"""WaveNet on the embedded spoken digits, DP-SGD against non-private: STOI, MSE, fad_local and TSTR side by side.

    python benchmarks/audio_quality.py [--quick] [--samples 200] [--epsilon 10] [--seed 0]

Each setting trains the pipeline's WaveNet (``run_params["dp"]`` / ``["plain"]``, or the ``_quick`` ones)
on the fixed train split (320 clips), draws ``--samples`` clips balanced over the ten digits and runs the
audio audit against the real train/holdout clips (80 holdout clips) at the model's sample rate:

* STOI and MSE: the first 40 holdout clips against the model's teacher-forced predictions of them;
* fad_local: Fréchet distance in a log-mel CNN trained on the real train split (not VGGish FAD), with the
  real holdout's own level as the reference;
* TSTR: accuracy on the real holdout of the same CNN trained on the generated clips (chance 0.10),
  next to the CNN trained on real clips (TRTR).

Wall times are on a shared machine; read them as upper bounds.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("GENGUARD_NO_PROGRESS", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--epsilon", type=float, default=10.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("dp", "plain"), default=None)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from genguard.audits import ReleaseAudit
    from genguard.generators.data import load_data, train_holdout
    from genguard.generators.wavenet import WaveNet
    from genguard.guardrails.privacy import PrivateTrainer
    from genguard.pipeline import audio_reconstructions

    train, holdout = train_holdout(load_data("spoken_digits"))
    rows = {}
    for setting in ("dp", "plain"):
        if args.only and setting != args.only:
            continue
        key = setting + ("_quick" if args.quick else "")
        params = {**WaveNet.run_params.get(key, {}), "seed": args.seed}
        gen = WaveNet(**params)
        trainer = PrivateTrainer(target_epsilon=args.epsilon) if setting == "dp" else None
        t = time.perf_counter()
        gen.fit(train, trainer=trainer, progress=False)
        train_s = time.perf_counter() - t
        t = time.perf_counter()
        samples = gen.sample(args.samples, seed=args.seed)
        sample_s = time.perf_counter() - t
        rep = ReleaseAudit(seed=args.seed).run_audio(samples, train, holdout, progress=False,
                                                     **audio_reconstructions(gen, holdout))
        f = rep.data["fidelity"]
        rows[setting] = {
            "epsilon": gen.training_report_.get("epsilon") if setting == "dp" else None,
            "sample_rate": gen.sample_rate, "train_s": train_s, "sample_s": sample_s,
            "stoi": f["stoi"].get("value"), "stoi_ci": f["stoi"].get("ci"),
            "mse": f["mse"].get("value"), "fad_local": f["fad_local"].get("value"),
            "fad_real_holdout": f["fad_local"].get("baseline_holdout_vs_train"),
            "tstr": f["tstr"].get("value"), "tstr_ci": f["tstr"].get("ci"),
            "trtr": f["tstr"].get("baseline_train_on_real"),
            "adherence": (rep.data["bias"].get("condition_adherence") or {}).get("value"),
            "final_loss": gen.training_report_.get("final_loss"),
        }
        print(setting, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in rows[setting].items()}, flush=True)

    def fmt(v):
        if v is None:
            return "n/a"
        if isinstance(v, list):
            return f"[{v[0]:.3f}, {v[1]:.3f}]"
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    print()
    names = list(rows)
    print(f"{'figure':<34}" + "".join(f"{('DP-SGD ε=' + fmt(rows[n]['epsilon'])) if n == 'dp' else 'non-private':>24}"
                                       for n in names))
    for k in ("sample_rate", "train_s", "sample_s", "stoi", "stoi_ci", "mse", "fad_local", "fad_real_holdout",
              "tstr", "tstr_ci", "trtr", "adherence"):
        print(f"{k:<34}" + "".join(f"{fmt(rows[n][k]):>24}" for n in names))


if __name__ == "__main__":
    main()
