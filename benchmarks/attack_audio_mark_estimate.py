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

RATE = 16000


def speech_like(seconds: float, seed: int) -> np.ndarray:
    """A voiced, syllable-modulated signal with moving formants (the stand-in of tests/test_audio_provenance.py)."""
    from scipy.signal import lfilter

    rng = np.random.default_rng(seed)
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    f0 = rng.uniform(100, 200) * (1 + 0.1 * np.sin(2 * np.pi * 0.5 * t))
    pulses = np.diff(np.floor(np.cumsum(f0 / RATE)), prepend=0.0) + 0.02 * rng.standard_normal(n)
    x = np.zeros(n)
    zi = np.zeros(4)
    for s in range(0, n, RATE // 10):
        f1, f2 = rng.uniform(300, 900), rng.uniform(900, 2500)
        a = np.convolve([1, -2 * 0.97 * np.cos(2 * np.pi * f1 / RATE), 0.97 ** 2],
                        [1, -2 * 0.95 * np.cos(2 * np.pi * f2 / RATE), 0.95 ** 2])
        x[s:s + RATE // 10], zi = lfilter([1.0], a, pulses[s:s + RATE // 10], zi=zi)
    env = np.clip(np.sin(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 6)), 0, None) ** 0.7
    y = x * env
    return 0.25 * y / np.max(np.abs(y))


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
