"""Leave-one-family-out table of the default detector recipe, the check families, and its throughput at 256x256.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/detector_generalisation.py [--data genguard-out/detector-families.npz]
        [--detector FILE] [--baseline FILE] [--families a,b] [--npr-epochs 4] [--stack-cv holdout|family]
        [--unseen-n 48] [--n-boot 300] [--json FILE] [--quick]

For each of the ten training families of benchmarks/detector_families.py: refit the default recipe
(benchmarks/train_default_detector.py's ``detector_params``) on the other nine + real train patches, and
test on the held-out family's fakes made from held-out photos + the held-out photos' own patches (600).
Each test set is scored clean (PNG pixels), after JPEG 75 and after resize x0.5; AUC and TPR at 1% FPR with
95% bootstrap intervals (real and fake resampled separately). The same test sets are scored by the
``--baseline`` detector (default: the file shipped before this recipe, if given) and by ``--detector``
(default: the shipped one; it saw every training family, so only its check-family rows are unseen).
Check families (gan_tconv, ddpm_bilinear, pixelshuffle_sr) are never trained on.
The unseen operator: AUC of ``--detector`` (and ``--baseline``) and of each of its members on the crops of
tests/test_detector_generalisation.py (Lanczos x2 + a random 3x3 convolution, in no training family; ``--unseen-n``
crops of each class, 48 as in the test), with a paired bootstrap interval of the two ensembles' AUC difference.
Throughput: images/s at 256x256 for ``--detector`` on one thread, per second of this process's CPU time
and per wall second (the machine is shared, so wall time is pessimistic).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))
sys.path.append(str(HERE))

CONDITIONS = ("clean", "jpeg75", "resize0.5")


def score(det, images, conds) -> dict[str, np.ndarray]:
    from genguard.detectors.preprocess import robustness_transforms

    tr = robustness_transforms(0)
    return {c: det.predict_proba([tr[c](im) for im in images]) for c in conds}


def metrics(y, p, n_boot: int) -> dict:
    from genguard.detectors.evaluate import binary_metrics

    m = binary_metrics(y, p, n_boot=n_boot)
    return {k: m[k] for k in ("auc", "tpr_at_1pct_fpr")}


def unseen_operator_set(n: int = 48) -> tuple[list[np.ndarray], np.ndarray]:
    """tests/test_detector_generalisation.py's crops (``n`` real + their ``n`` twins down-sampled x2, Lanczos-
    up-sampled and convolved with a random 3x3 kernel: an operator in no training family) and their labels."""
    sys.path.append(str(ROOT / "tests"))  # the test's own crops and operator, so the figures are the test's
    from test_detector_generalisation import _crops, _untrained_upsampler

    real = _crops(n, seed=11)
    return real + _untrained_upsampler(_crops(n, seed=11), seed=3), np.r_[np.zeros(n), np.ones(n)]


def unseen_operator(det, images, y) -> tuple[dict[str, float], np.ndarray]:
    """(AUC of ``det`` and of each of its members (mean tile logit), ``det``'s P per image) on the unseen operator."""
    from sklearn.metrics import roc_auc_score

    p = det.predict_proba(images)
    out = {"detector": float(roc_auc_score(y, p))}
    out.update({n: float(roc_auc_score(y, q)) for n, q in det.member_probabilities(images).items()})
    return out, p


def paired_auc_difference(y, p_a, p_b, n_boot: int, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of AUC(p_a) - AUC(p_b) on the same images (real and fake resampled apart)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    r, f = np.nonzero(y == 0)[0], np.nonzero(y == 1)[0]
    d = []
    for _ in range(n_boot):
        i = np.r_[rng.choice(r, len(r)), rng.choice(f, len(f))]
        d.append(roc_auc_score(y[i], p_a[i]) - roc_auc_score(y[i], p_b[i]))
    lo, hi = np.quantile(d, [0.025, 0.975])
    return float(lo), float(hi)


def throughput(det, n: int = 48) -> tuple[float, float]:
    """(images per wall second, images per CPU second) of predict_proba on 256x256 RGB photo crops, one thread."""
    import skimage.data as sd

    rng = np.random.default_rng(99)
    srcs = [sd.astronaut(), sd.coffee(), sd.rocket(), np.dstack([sd.camera()] * 3)]
    imgs = []
    for i in range(n):
        s = srcs[i % len(srcs)]
        y, x = rng.integers(0, s.shape[0] - 255), rng.integers(0, s.shape[1] - 255)
        imgs.append(np.ascontiguousarray(s[y:y + 256, x:x + 256]))
    det.predict_proba(imgs[:2])
    t, c = time.perf_counter(), time.process_time()
    det.predict_proba(imgs)
    return n / (time.perf_counter() - t), n / (time.process_time() - c)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "genguard-out" / "detector-families.npz"))
    ap.add_argument("--detector", default=None, help="the detector to time and check (default: the shipped one)")
    ap.add_argument("--baseline", default=None, help="an earlier detector file scored on the same test sets")
    ap.add_argument("--families", default="", help="only hold out these (comma-separated); default all ten")
    ap.add_argument("--npr-epochs", type=int, default=None, help="override the recipe's NPR epochs for the refits")
    ap.add_argument("--stack-cv", choices=["holdout", "family"], default=None,
                    help="override how the recipe's refits fit their stacking weights (default: the recipe's)")
    ap.add_argument("--unseen-n", type=int, default=48, help="real (and as many fake) crops of the unseen operator")
    ap.add_argument("--n-boot", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--quick", action="store_true", help="small data set (built if missing), 2 families, no intervals")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    import detector_families as F
    from train_default_detector import detector_params

    from genguard.detectors.evaluate import leave_one_family_out_splits
    from genguard.detectors.models import load_default, load_detector, make_detector

    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    data_path = args.data if not args.quick else str(Path(args.data).with_name("detector-families-quick.npz"))
    data = F.load_or_build(data_path, seed=args.seed, quick=args.quick, log=log)
    fam, split, x = data["family"], data["split"], data["x"]
    check = [c for c in F.CHECK_FAMILIES if c in set(fam.tolist())]
    held = [h for h in args.families.split(",") if h] or (["deconv", "flow"] if args.quick else None)
    n_boot = 0 if args.quick else args.n_boot
    params = detector_params(args.seed)
    if args.npr_epochs is not None:
        params["npr_epochs"] = args.npr_epochs
    if args.stack_cv is not None:
        params["stack_cv"] = args.stack_cv
    shipped = load_detector(args.detector) if args.detector else load_default()
    baseline = load_detector(args.baseline) if args.baseline else None

    rows: dict[str, dict] = {}
    real_te = list(x[(split == "test") & (fam == "real")])
    cache: dict[str, dict] = {}

    def side(det, key, h_images, conds):
        if key not in cache:
            cache[key] = score(det, real_te, conds)
        pf = score(det, h_images, conds)
        y = np.r_[np.zeros(len(real_te)), np.ones(len(h_images))]
        return {c: metrics(y, np.r_[cache[key][c], pf[c]], n_boot) for c in conds}

    t_all = time.time()
    for h, tr, te in leave_one_family_out_splits(fam, split, exclude=check):
        if held is not None and h not in held:
            continue
        t0 = time.time()
        is_real = fam[tr] == "real"
        ims = F.aligned_images(data, np.isin(np.arange(len(x)), tr))
        real = [im for im, r in zip(ims, is_real) if r]
        fake = [im for im, r in zip(ims, is_real) if not r]
        det = make_detector(**params).fit(real, fake, fake_groups=fam[tr][~is_real])
        h_images = list(x[te][fam[te] == h])
        y = np.r_[np.zeros(len(real_te)), np.ones(len(h_images))]
        p_real = score(det, real_te, CONDITIONS)
        p_fake = score(det, h_images, CONDITIONS)
        row = {"lofo": {c: metrics(y, np.r_[p_real[c], p_fake[c]], n_boot) for c in CONDITIONS}}
        # the refit detector on the check families (never trained on by any detector here)
        row["lofo_on_check"] = {}
        for cf in check:
            ci = list(x[(split == "test") & (fam == cf)])
            pc = score(det, ci, ("clean",))["clean"]
            row["lofo_on_check"][cf] = metrics(np.r_[np.zeros(len(real_te)), np.ones(len(ci))],
                                               np.r_[p_real["clean"], pc], 0)["auc"]["value"]
        if baseline is not None:
            row["baseline"] = side(baseline, "baseline", h_images, CONDITIONS)
        row["fit_seconds"] = round(time.time() - t0, 1)
        rows[h] = row
        log(f"  held out {h}: AUC {row['lofo']['clean']['auc']['value']:.3f}, "
            f"TPR@1% {row['lofo']['clean']['tpr_at_1pct_fpr']['value']:.3f} ({row['fit_seconds']}s)")

    check_rows = {}
    for cf in check:
        ci = list(x[(split == "test") & (fam == cf)])
        check_rows[cf] = {"shipped": side(shipped, "shipped", ci, CONDITIONS)}
        if baseline is not None:
            check_rows[cf]["baseline"] = side(baseline, "baseline", ci, CONDITIONS)
    u_images, u_y = unseen_operator_set(args.unseen_n)
    unseen, u_p = {}, {}
    unseen["detector"], u_p["detector"] = unseen_operator(shipped, u_images, u_y)
    if baseline is not None:
        unseen["baseline"], u_p["baseline"] = unseen_operator(baseline, u_images, u_y)
        unseen["difference_ci95"] = paired_auc_difference(u_y, u_p["detector"], u_p["baseline"], max(n_boot, 300))
    wall, cpu = throughput(shipped, n=16 if args.quick else 48)

    def f(m, k):
        v = m[k]
        return f"{v['value']:.3f} [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]" if n_boot else f"{v['value']:.3f}"

    n_fake = {h: int(((split == "test") & (fam == h)).sum()) for h in list(rows) + check}
    print(f"leave-one-family-out: recipe refit without the held-out family; test = {len(real_te)} patches of held-out "
          f"photos ({', '.join(data['test_photos'])}) + the family's fakes of those photos; 95% bootstrap CI "
          f"(n_boot={n_boot})")
    hdr = f"{'held out':<16}{'n_fake':>7}  {'condition':<10}{'AUC':<22}{'TPR@1%FPR':<22}"
    if baseline is not None:
        hdr += f"{'baseline AUC':<22}{'baseline TPR@1%FPR':<22}"
    print(hdr)
    for h, row in rows.items():
        for c in CONDITIONS:
            line = f"{h:<16}{n_fake[h]:>7}  {c:<10}{f(row['lofo'][c], 'auc'):<22}{f(row['lofo'][c], 'tpr_at_1pct_fpr'):<22}"
            if baseline is not None:
                line += f"{f(row['baseline'][c], 'auc'):<22}{f(row['baseline'][c], 'tpr_at_1pct_fpr'):<22}"
            print(line)
    for c in CONDITIONS:
        a = [r["lofo"][c]["auc"]["value"] for r in rows.values()]
        t = [r["lofo"][c]["tpr_at_1pct_fpr"]["value"] for r in rows.values()]
        line = f"{'mean':<16}{'':>7}  {c:<10}{np.mean(a):<22.3f}{np.mean(t):<22.3f}"
        if baseline is not None:
            line += (f"{np.mean([r['baseline'][c]['auc']['value'] for r in rows.values()]):<22.3f}"
                     f"{np.mean([r['baseline'][c]['tpr_at_1pct_fpr']['value'] for r in rows.values()]):<22.3f}")
        print(line)
    print(f"\ncheck families (never trained on), scored by {args.detector or 'the shipped detector'}"
          + (" and the baseline" if baseline is not None else ""))
    print(hdr.replace("held out", "family  "))
    for cf, row in check_rows.items():
        for c in CONDITIONS:
            line = f"{cf:<16}{n_fake[cf]:>7}  {c:<10}{f(row['shipped'][c], 'auc'):<22}{f(row['shipped'][c], 'tpr_at_1pct_fpr'):<22}"
            if baseline is not None:
                line += f"{f(row['baseline'][c], 'auc'):<22}{f(row['baseline'][c], 'tpr_at_1pct_fpr'):<22}"
            print(line)
    if rows:
        print("LOFO refits on the check families (clean AUC, mean over refits): "
              + ", ".join(f"{cf} {np.mean([r['lofo_on_check'][cf] for r in rows.values()]):.3f}" for cf in check))
    print(f"\nunseen operator (tests/test_detector_generalisation.py: Lanczos x2 + random 3x3 conv, {args.unseen_n} + "
          f"{args.unseen_n} crops), AUC:")
    for who in ("detector", "baseline"):
        if who in unseen:
            aucs = unseen[who]
            print(f"  {who:<9} ensemble {aucs['detector']:.3f}; members "
                  + ", ".join(f"{k} {v:.3f}" for k, v in aucs.items() if k != "detector"))
    if "difference_ci95" in unseen:
        lo, hi = unseen["difference_ci95"]
        print(f"  ensemble AUC detector - baseline: {unseen['detector']['detector'] - unseen['baseline']['detector']:+.3f} "
              f"[{lo:+.3f}, {hi:+.3f}] (95% paired bootstrap)")
    print(f"\nthroughput at 256x256, one thread (OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}): "
          f"{cpu:.1f} images per CPU-second, {wall:.1f} per wall second (shared machine); target >= 30")
    print(f"total {time.time() - t_all:.0f}s")
    if args.json:
        from genguard.detectors._io import atomic_write_json

        atomic_write_json(args.json, {"lofo": rows, "check": check_rows, "unseen_operator": unseen,
                                      "throughput": {"wall": wall, "cpu": cpu},
                                      "params": params, "n_boot": n_boot})
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
