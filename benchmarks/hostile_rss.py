"""Peak RSS and wall time of `genguard detect`, `verify` and `privacy verify` on the largest legitimate and on
hostile inputs, each in a fresh process (interpreter, torch and models included).

    python benchmarks/hostile_rss.py [--work DIR] [--cap-mb 6000] [--skip-train]

Every input is generated here: a 4k UHD photo-like JPEG, the largest image the readers accept (8192 x 8192 =
67,108,864 pixels) as a 16 MB noisy JPEG and as a tiny flat lossless WebP that decodes to 256 MB (a bomb
inside the budget), a 13,000 x 13,000 PNG, header bombs (WebP 16383^2, PNG 100,000^2), a FIFO, a DP ledger
from `genguard train --quick` and hostile copies of it (1e12 steps, JSON nested 100,000 deep).

Peak RSS is the child's ``ru_maxrss`` from wait4(2). Linux carries the parent's high-water mark into a
forked child until exec, so the inputs are generated in a separate process and this one stays small
(its own RSS, printed first, is the floor of every figure). A watchdog polls /proc and kills a child above
``--cap-mb`` so that a regression cannot take down a shared machine; such a row reads ``KILLED``.
The ceilings documented in the README are checked at the end (exit 1 when one is exceeded).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

#: The documented per-command memory ceilings (MB of peak RSS, any input).
CEILINGS_MB = {"detect": 2048, "verify": 2048, "privacy verify": 2048}


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(argv: list[str], env: dict[str, str], cap_mb: int, timeout: float = 600) -> dict:
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "genguard", *argv], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    killed = {"why": None}
    done = threading.Event()

    def watch():  # never poll() the child: that would reap it before wait4 reads its rusage
        import signal

        while not done.wait(0.02):
            why = (f"RSS above {cap_mb} MB" if _rss_kb(proc.pid) > cap_mb * 1024 else
                   f"over {timeout:.0f} s" if time.monotonic() - t0 > timeout else None)
            if why:
                killed["why"] = why
                try:
                    os.kill(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    done.set()
    th.join()
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    lines = [l for l in err.splitlines() if l.strip() and not l.startswith(("genguard: note:", "genguard: warning:"))]
    return {"exit": os.waitstatus_to_exitcode(status), "peak_mb": usage.ru_maxrss / 1024,
            "seconds": time.monotonic() - t0, "killed": killed["why"], "stderr": lines[-1][:110] if lines else ""}


def make_inputs(d: Path) -> dict[str, Path]:
    import cv2
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = {}
    small = (rng.random((540, 960, 3)) * 255).astype(np.uint8)
    photo = cv2.GaussianBlur(cv2.resize(small, (3840, 2160), interpolation=cv2.INTER_CUBIC), (0, 0), 1.0)
    out["4k.jpg"] = d / "4k.jpg"
    if (d / "13000sq.png").exists():  # inputs from an earlier run of this script
        return out
    Image.fromarray(photo).save(out["4k.jpg"], quality=90)
    del photo
    big = cv2.resize(small, (8192, 8192), interpolation=cv2.INTER_CUBIC)
    big = np.clip(big.astype(np.int16) + rng.integers(-8, 9, size=(8192, 8192, 1), dtype=np.int16), 0, 255)
    out["8192sq.jpg"] = d / "8192sq.jpg"
    Image.fromarray(big.astype(np.uint8)).save(out["8192sq.jpg"], quality=90)
    del big
    out["8192sq_flat.webp"] = d / "8192sq_flat.webp"
    Image.new("RGB", (8192, 8192), (120, 130, 140)).save(out["8192sq_flat.webp"], lossless=True, method=0)
    out["13000sq.png"] = d / "13000sq.png"
    Image.new("RGB", (13000, 13000), (10, 20, 30)).save(out["13000sq.png"], compress_level=1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_hostile_inputs import png_bomb, webp_bomb

    out["bomb16383.webp"] = d / "bomb16383.webp"
    out["bomb16383.webp"].write_bytes(webp_bomb())
    out["bomb100000.png"] = d / "bomb100000.png"
    out["bomb100000.png"].write_bytes(png_bomb())
    out["fifo.png"] = d / "fifo.png"
    if not out["fifo.png"].exists():
        os.mkfifo(out["fifo.png"])
    return out


def make_ledgers(d: Path, env: dict[str, str], skip_train: bool) -> dict[str, Path]:
    model = d / "run"
    if not (model / "model" / "ledger.json").exists() and not skip_train:
        subprocess.run([sys.executable, "-m", "genguard", "train", "--generator", "vae", "--quick", "--out", str(model),
                        "--overwrite"], env=env, check=True, stdout=subprocess.DEVNULL)
    out: dict[str, Path] = {}
    led = model / "model" / "ledger.json"
    if led.exists():
        out["ledger (vae --quick, DP)"] = led
        rec = json.loads(led.read_text())
        huge = d / "huge_steps"
        huge.mkdir(exist_ok=True)
        rec["steps"] = 10 ** 12
        (huge / "ledger.json").write_text(json.dumps(rec))
        out["ledger claiming 1e12 steps"] = huge / "ledger.json"
    deep = d / "deep"
    deep.mkdir(exist_ok=True)
    (deep / "ledger.json").write_text("[" * 100_000 + "]" * 100_000)
    out["ledger nested 100,000 deep"] = deep / "ledger.json"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=None, help="folder for the generated inputs (default: a temp dir)")
    ap.add_argument("--cap-mb", type=int, default=6000, help="kill a child above this RSS (MB)")
    ap.add_argument("--skip-train", action="store_true", help="no training: only the hostile ledger")
    ap.add_argument("--make-inputs", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="genguard-rss-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GENGUARD_NO_PROGRESS="1", OMP_NUM_THREADS="1", GENGUARD_HOME=str(work / "home"))
    if args.make_inputs:  # run in a child: its big arrays must not raise the children's ru_maxrss
        make_inputs(work)
        make_ledgers(work, env, args.skip_train)
        return 0
    subprocess.run([sys.executable, "-m", "genguard", "keys", "init"], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)  # a watermark key, so verify runs watermark detection
    subprocess.run([sys.executable, __file__, "--work", str(work), "--make-inputs"]
                   + (["--skip-train"] if args.skip_train else []), env=env, check=True)
    imgs = {p.name: p for p in work.iterdir()}
    ledgers = {k: v for k, v in {"ledger (vae --quick, DP)": work / "run" / "model" / "ledger.json",
                                 "ledger claiming 1e12 steps": work / "huge_steps" / "ledger.json",
                                 "ledger nested 100,000 deep": work / "deep" / "ledger.json"}.items() if v.exists()}
    import resource

    print(f"benchmark process RSS (floor of every figure): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    cases = [
        ("detect", "legitimate", "4k UHD JPEG, forgery on", ["detect", imgs["4k.jpg"], "--json", work / "d1.json"]),
        ("detect", "legitimate", "8192^2 noisy JPEG (max pixels), forgery on", ["detect", imgs["8192sq.jpg"]]),
        ("detect", "legitimate", "8192^2 flat lossless WebP (tiny file, max pixels)", ["detect", imgs["8192sq_flat.webp"]]),
        ("detect", "hostile", "13,000^2 PNG", ["detect", imgs["13000sq.png"]]),
        ("detect", "hostile", "WebP header bomb 16383^2", ["detect", imgs["bomb16383.webp"]]),
        ("detect", "hostile", "PNG header bomb 100,000^2", ["detect", imgs["bomb100000.png"]]),
        ("detect", "hostile", "FIFO", ["detect", imgs["fifo.png"]]),
        ("verify", "legitimate", "4k UHD JPEG (watermark search)", ["verify", imgs["4k.jpg"]]),
        ("verify", "legitimate", "8192^2 noisy JPEG (max pixels)", ["verify", imgs["8192sq.jpg"]]),
        ("verify", "legitimate", "8192^2 flat lossless WebP", ["verify", imgs["8192sq_flat.webp"]]),
        ("verify", "hostile", "13,000^2 PNG", ["verify", imgs["13000sq.png"]]),
        ("verify", "hostile", "WebP header bomb 16383^2", ["verify", imgs["bomb16383.webp"]]),
        ("verify", "hostile", "FIFO", ["verify", imgs["fifo.png"]]),
    ] + [("privacy verify", "legitimate" if "quick" in k else "hostile", k, ["privacy", "verify", p])
         for k, p in ledgers.items()]
    rows = []
    print(f"{'command':<15} {'input':<11} {'case':<48} {'exit':>4} {'peak MB':>8} {'s':>6}  stderr / note")
    for cmd, kind, label, argv in cases:
        r = measure([str(a) for a in argv], env, args.cap_mb)
        rows.append({"command": cmd, "kind": kind, "case": label, **r})
        note = f"KILLED ({r['killed']})" if r["killed"] else r["stderr"]
        print(f"{cmd:<15} {kind:<11} {label:<48} {r['exit']:>4} {r['peak_mb']:>8.0f} {r['seconds']:>6.1f}  {note}",
              flush=True)
    (work / "hostile_rss.json").write_text(json.dumps(rows, indent=2))
    bad = [r for r in rows if r["killed"] or r["peak_mb"] > CEILINGS_MB[r["command"]]]
    print(f"\nceilings: " + ", ".join(f"{k} <= {v} MB" for k, v in CEILINGS_MB.items()))
    for r in bad:
        print(f"EXCEEDED: {r['command']} on {r['case']}: {r['peak_mb']:.0f} MB {r['killed'] or ''}")
    print(f"results: {work / 'hostile_rss.json'}")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
