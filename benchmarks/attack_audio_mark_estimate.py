"""Attack on the audio mark: estimate the key's chip signs from marked clips alone (no key, no originals, no
detector queries), then put the estimate on other audio with the public embedder and ask the key holder's detector.

    python benchmarks/attack_audio_mark_estimate.py [--marked 1 2 4 8] [--trials 4] [--seconds 4]

The detector's statistic (guardrails/provenance/audio_watermark.py: residual, fold) needs no key, and tagging
starts the mark's period at frame 0, so the offset-0 chip statistic of a marked clip leans towards the key's signs.
Summed over K marked clips of unrelated content, its sign estimates each of the 576 chip signs. The forged clip is a
fresh speech-like clip nobody marked. Prints, per K: the fraction of chip signs recovered, how many forged clips the
detector calls marked, and the median p-value; the control is the same fresh clips unforged.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genguard.generators.audio_data import speech_like  # noqa: E402

RATE = 16000


def main() -> None:
    from genguard.guardrails.provenance import audio_watermark as aw

    ap = argparse.ArgumentParser()
    ap.add_argument("--marked", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--trials", type=int, default=4, help="keys (one victim key per trial)")
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args()
    rows = {k: {"acc": [], "found": 0, "p": []} for k in args.marked}
    control_found, control_p = 0, []
    for trial in range(args.trials):
        key = np.random.default_rng(1000 + trial).bytes(32)
        victim = aw.AudioWatermark(key)
        # clips the victim published, marked (e.g. a run's generated samples); the attacker never sees the originals
        marked = [victim.embed(speech_like(args.seconds, 100 * trial + i), RATE) for i in range(max(args.marked))]
        stats = [aw.fold(aw.residual(aw.stft(m)))[0] for m in marked]  # offset 0: where tagging starts the period
        fresh = speech_like(args.seconds, 99_000 + trial)
        c = victim.detect(fresh, RATE)
        control_found += bool(c["found"])
        control_p.append(c["p_value"])
        for k in args.marked:
            est = np.sign(np.sum(stats[:k], axis=0))
            est[est == 0] = 1.0
            rows[k]["acc"].append(float(np.mean(est == victim.signs_)))
            forger = aw.AudioWatermark(b"attacker's own key, unrelated!!")
            forger.signs_ = est  # the public embedder with the estimated signs
            r = victim.detect(forger.embed(fresh, RATE), RATE)
            rows[k]["found"] += bool(r["found"])
            rows[k]["p"].append(r["p_value"])
    print(f"{args.trials} victim keys, {args.seconds:g} s speech-like clips, detector threshold p <= {aw.FPR:g}")
    print(f"control (fresh clip, not forged): found {control_found}/{args.trials}, median p {np.median(control_p):.2g}")
    for k, r in rows.items():
        print(f"K={k} marked clips: chip signs recovered {np.mean(r['acc']):.3f} (min {min(r['acc']):.3f}); "
              f"forged clips found {r['found']}/{args.trials}, median p {np.median(r['p']):.2g}")


if __name__ == "__main__":
    main()
