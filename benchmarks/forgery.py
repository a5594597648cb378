"""Forgery analyses on untouched photos and planted forgeries: calibration, AUC, copy-move F1, false alarms.

Usage:
    OMP_NUM_THREADS=1 python benchmarks/forgery.py [--write-calibration] [--quick] [--json FILE]

Sets (genguard.detectors.forgery_sets; photos that ship with scikit-image,
scikit-learn and matplotlib, nothing downloaded): a *build* split
(astronaut, coffee, chelsea, rocket, camera, immunohistochemistry) and a
*check* split (china, flower, grace_hopper, stereo_motorcycle, coins) never
used to set anything. Untouched images: square crops of 128-384 px saved as
PNG, JPEG 95/90/75 or JPEG 75 then 90. Forgeries (all saved at JPEG 90):
copy-move of a 40-72 px square block (translated) or disc (half the time
rotated <= 10 degrees, half the time scaled 0.9-1.1), a splice from another
JPEG with a misaligned grid, a region once saved at JPEG 50-70, a region with
added noise (sigma 4-10).

Printed, for each split:
* per method, the AUC of the calibration statistic (the unclipped robust z
  behind the map for ela, jpeg_ghost, block_grid and noise; the score for
  copy-move) on planted forgeries of the kinds the
  method targets vs untouched) with a 95% bootstrap interval, and the share
  of untouched images / forgeries flagged at the 5% false-alarm threshold
  (the threshold comes from the build split's untouched images);
* copy-move pixel F1 (map > 0.5 vs truth, source and copy both manipulated)
  with a 95% bootstrap interval, and its image-level false-alarm rate on the
  untouched images (any pixel marked).

``--write-calibration`` writes detectors/forgery_calibration.json from the
build split (the statistic on the untouched images, AUCs, whether each method
discriminates).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))

#: the planted forgeries each method is meant to see (its AUC is measured on these)
TARGETS = {
    "ela": ("ghost", "splice_grid"),
    "jpeg_ghost": ("ghost",),
    "block_grid": ("splice_grid",),
    "copy_move": ("copy_move_block", "copy_move_disc"),
    "noise": ("noise",),
}
#: AUC below which a method is reported as not discriminating
MIN_AUC = 0.6


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann-Whitney AUC (ties count one half)."""
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    if not len(pos) or not len(neg):
        return float("nan")
    gt = (pos[:, None] > neg[None, :]).mean()
    eq = (pos[:, None] == neg[None, :]).mean()
    return float(gt + 0.5 * eq)


def boot(stat, *arrays, n_boot: int = 1000, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n_boot):
        vals.append(stat(*[a[rng.integers(0, len(a), len(a))] for a in arrays]))
    lo, hi = np.nanquantile(vals, [0.025, 0.975])
    return float(lo), float(hi)


def run_split(split: str, n_untouched: int, n_forged: int) -> dict:
    from genguard.detectors import forgery_sets as fs
    from genguard.detectors.evaluate import pixel_f1
    from genguard.detectors.forgery import METHODS, analyze, calibration_statistic

    t0 = time.perf_counter()
    un = {m: [] for m in METHODS}
    cm_false_alarm = []
    for img, _ in fs.untouched(split, per_photo=n_untouched):
        res = analyze(img, calibrated=False)
        for m in METHODS:
            un[m].append(calibration_statistic(res[m]))
        cm_false_alarm.append(bool((res["copy_move"].map > 0.5).any()))
    forged = {m: [] for m in METHODS}
    kinds, f1 = [], []
    for img, gt, d in fs.forgeries(split, per_photo=n_forged):
        res = analyze(img, calibrated=False)
        for m in METHODS:
            forged[m].append(calibration_statistic(res[m]))
        kinds.append(d["kind"])
        if d["kind"].startswith("copy_move"):
            f1.append(pixel_f1(res["copy_move"].map > 0.5, gt))
    return {"split": split, "untouched": {m: np.asarray(v) for m, v in un.items()},
            "forged": {m: np.asarray(v) for m, v in forged.items()}, "kinds": np.asarray(kinds),
            "copy_move_f1": np.asarray(f1), "copy_move_false_alarm": np.asarray(cm_false_alarm, float),
            "seconds": time.perf_counter() - t0}


def copy_move_third() -> dict:
    """Copy-move F1 and false alarms on forgery_sets.copy_move_third (photos in neither split)."""
    from genguard.detectors import forgery_sets as fs
    from genguard.detectors.evaluate import pixel_f1
    from genguard.detectors.forgery import copy_move

    forged, clean = fs.copy_move_third()
    f1 = np.asarray([pixel_f1(copy_move(img).map > 0.5, gt) for img, gt, _ in forged])
    fa = np.asarray([float((copy_move(img).map > 0.5).any()) for img, _ in clean])
    return {"pixel_f1": round(float(f1.mean()), 3), "pixel_f1_ci": [round(x, 3) for x in boot(np.mean, f1)],
            "n_forged": int(len(f1)), "false_alarm_rate": round(float(fa.mean()), 3),
            "false_alarm_ci": [round(x, 3) for x in boot(np.mean, fa)], "n_untouched": int(len(fa))}


def copy_move_times(repeats: int = 3) -> dict[str, float]:
    """Median seconds of one copy_move call on a JPEG-90 photo crop of 256^2, 512^2 and 1024^2 pixels."""
    from genguard.detectors._io import jpeg_roundtrip
    from genguard.detectors.forgery import copy_move
    from genguard.detectors.forgery_sets import photo

    big = photo("retina")
    out = {}
    for side in (256, 512, 1024):
        img = jpeg_roundtrip(np.ascontiguousarray(big[200:200 + side, 200:200 + side]), 90)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            copy_move(img)
            ts.append(time.perf_counter() - t0)
        out[f"{side}x{side}"] = round(float(np.median(ts)), 3)
    return out


def summarise(r: dict, thresholds: dict[str, float] | None) -> dict:
    from genguard.detectors.forgery import METHODS

    out: dict = {"split": r["split"], "n_untouched": len(r["copy_move_false_alarm"]),
                 "n_forged": len(r["kinds"]), "methods": {}}
    for m in METHODS:
        pos = r["forged"][m][np.isin(r["kinds"], TARGETS[m])]
        neg = r["untouched"][m]
        row = {"auc": round(auc(pos, neg), 3), "auc_ci": [round(x, 3) for x in boot(auc, pos, neg)],
               "auc_all_kinds": round(auc(r["forged"][m], neg), 3), "n_target": int(len(pos))}
        if thresholds is not None:
            thr = thresholds[m]
            row["flagged_untouched"] = round(float((neg >= thr).mean()), 3) if np.isfinite(thr) else 0.0
            row["flagged_target_forgeries"] = round(float((pos >= thr).mean()), 3) if np.isfinite(thr) else 0.0
        out["methods"][m] = row
    f1 = r["copy_move_f1"]
    fa = r["copy_move_false_alarm"]
    out["copy_move"] = {"pixel_f1": round(float(f1.mean()), 3),
                        "pixel_f1_ci": [round(x, 3) for x in boot(np.mean, f1)], "n_forged": int(len(f1)),
                        "false_alarm_rate": round(float(fa.mean()), 3),
                        "false_alarm_ci": [round(x, 3) for x in boot(np.mean, fa)], "n_untouched": int(len(fa))}
    return out


def threshold_at(raw: np.ndarray, rate: float) -> float:
    """Smallest raw score whose conservative tail share (1 + #>=) / (n + 1) is at most ``rate`` (inf if none)."""
    ref = np.sort(np.asarray(raw, float))
    n = len(ref)
    for s in np.unique(ref):
        if (1 + np.count_nonzero(ref >= s)) / (n + 1) <= rate:
            return float(s)
    # above every untouched score: the tail share is 1 / (n + 1)
    return float(np.nextafter(ref.max(), np.inf)) if 1 / (n + 1) <= rate else float("inf")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--write-calibration", action="store_true")
    ap.add_argument("--quick", action="store_true", help="fewer images (a smoke run; intervals are wide)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from genguard.generators._io import atomic_write_json
    from genguard.detectors.forgery import CALIBRATION_FILE, METHODS

    nu, nf = (4, 5) if args.quick else (17, 10)
    build = run_split("build", nu, nf)
    thresholds = {m: threshold_at(build["untouched"][m], 0.05) for m in METHODS}
    sb = summarise(build, thresholds)
    check = run_split("check", max(2, nu * 10 // 17), nf)
    sc = summarise(check, thresholds)
    for s, r in ((sb, build), (sc, check)):
        print(f"\n== {s['split']} split: {s['n_untouched']} untouched, {s['n_forged']} forged "
              f"({r['seconds']:.0f} s on this machine)")
        print(f"{'method':<11} {'AUC (target kinds) [95% CI]':<30} {'AUC all':>7} "
              f"{'flag@5% untouched':>18} {'flag@5% forged':>15}")
        for m, row in s["methods"].items():
            print(f"{m:<11} {row['auc']:.3f} [{row['auc_ci'][0]:.3f}, {row['auc_ci'][1]:.3f}] (n={row['n_target']:<3})"
                  f"{'':<6} {row['auc_all_kinds']:>7.3f} {row['flagged_untouched']:>18.3f} "
                  f"{row['flagged_target_forgeries']:>15.3f}")
        c = s["copy_move"]
        print(f"copy-move pixel F1 {c['pixel_f1']:.3f} [{c['pixel_f1_ci'][0]:.3f}, {c['pixel_f1_ci'][1]:.3f}] "
              f"on {c['n_forged']} forgeries; image-level false alarms {c['false_alarm_rate']:.3f} "
              f"[{c['false_alarm_ci'][0]:.3f}, {c['false_alarm_ci'][1]:.3f}] on {c['n_untouched']} untouched")
    third = copy_move_third()
    print(f"\n== copy-move third set (forgery_sets.copy_move_third: photos in neither split, 200-600 px, "
          f"blocks translated / discs rotated <= 20 deg, scaled 0.85-1.15)\n"
          f"copy-move pixel F1 {third['pixel_f1']:.3f} [{third['pixel_f1_ci'][0]:.3f}, {third['pixel_f1_ci'][1]:.3f}] "
          f"on {third['n_forged']} forgeries; image-level false alarms {third['false_alarm_rate']:.3f} "
          f"[{third['false_alarm_ci'][0]:.3f}, {third['false_alarm_ci'][1]:.3f}] on {third['n_untouched']} untouched")
    times = copy_move_times()
    print("copy-move seconds per image (median of 3, this process's one thread): "
          + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()))
    if args.write_calibration:
        if args.quick:
            print("refusing to write a calibration from a --quick run", file=sys.stderr)
            return 2
        methods = {}
        for m in METHODS:
            row = sb["methods"][m]
            disc = bool(row["auc"] >= MIN_AUC)
            methods[m] = {
                # the statistic calibration ranks by (forgery.calibration_statistic); null = nothing analysed
                "statistic": "score" if m == "copy_move" else "z99",
                "untouched_raw_scores": [round(float(x), 6) if np.isfinite(x) else None
                                         for x in np.sort(build["untouched"][m])],
                "n_untouched": int(len(build["untouched"][m])),
                "threshold_5pct": thresholds[m] if np.isfinite(thresholds[m]) else None,
                "auc": row["auc"], "auc_ci": row["auc_ci"], "auc_target_kinds": list(TARGETS[m]),
                "auc_check_split": sc["methods"][m]["auc"],
                "discriminates": disc,
                "reason": ("" if disc else
                           f"on planted forgeries of its kind ({', '.join(TARGETS[m])}) its raw score reaches "
                           f"AUC {row['auc']:.2f} [{row['auc_ci'][0]:.2f}, {row['auc_ci'][1]:.2f}] against untouched "
                           f"photos, near chance (< {MIN_AUC})"),
            }
        path = ROOT / "detectors" / CALIBRATION_FILE
        atomic_write_json(path, {"built_by": "OMP_NUM_THREADS=1 python benchmarks/forgery.py --write-calibration",
                                 "untouched_set": "forgery_sets.untouched('build', per_photo=17)",
                                 "forged_set": "forgery_sets.forgeries('build', per_photo=10)",
                                 "min_auc": MIN_AUC, "methods": methods})
        print(f"\nwrote {path}")
    if args.json:
        atomic_write_json(args.json, {"build": sb, "check": sc, "copy_move_third": third,
                                     "copy_move_seconds": times,
                                     "thresholds": {m: (t if np.isfinite(t) else None) for m, t in thresholds.items()}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
