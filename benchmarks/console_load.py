"""Load benchmark of `genguard console`: pages/s under concurrent reviewers, queue-page latency at 100,000 items.

Run:  OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/console_load.py [--items 100000] [--clients 20]
      [--seconds 30] [--json OUT] [--db postgresql+psycopg://user@host/emptydb]

Builds a fresh SQLite database (the default backend; ``--db``: an empty database at that URL) holding one queue of ``--items`` items (bulk-inserted;
the evidence of each is a typical detect entry; 200 distinct small PNGs back the images), starts the console
the way a user does (``python -m genguard console`` in its own process, one uvicorn worker), then:

1. queue-page latency, one client, sequential: the first page in each sort and filter, and a deep page
   (offset pagination at page 1,000); median and 95th percentile over repeated requests.
2. throughput: ``--clients`` threads, each logged in as its own reviewer with an httpx client, loop for
   ``--seconds`` over a reviewer's mix: the queue page (random filter and page), an item page, the item's
   image, and a decision POST (with its CSRF token). Pages per second counted over every 200 response;
   latency percentiles per kind. Errors (any non-200) are counted and printed.

Client and server share the machine's cores, so the figures are a floor for a dedicated server.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import numpy as np  # noqa: E402


def build(home: Path, n_items: int, n_clients: int, db_url: str | None = None) -> int:
    from PIL import Image
    from sqlalchemy import insert

    from genguard.console import create_app, create_user
    from genguard.console.importer import suspicion
    from genguard.console.models import Item, Queue

    app = create_app(db_url, home)
    imgs = home / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(200):
        p = imgs / f"img{i:03d}.png"
        Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    with app.state.sessions() as s:
        create_user(s, "admin", "admin", "admin-password")
        for c in range(n_clients):
            create_user(s, f"rev{c}", "reviewer", f"rev{c}-password")
        q = Queue(name="load", source="benchmark", created_by=1)
        s.add(q)
        s.commit()
        qid = q.id
    pv = ["tampered", "untrusted", "error", "stripped", "remote", "untagged", "intact"]
    weights = np.array([1, 1, 1, 2, 1, 60, 34], float)
    weights /= weights.sum()
    t0 = time.perf_counter()
    with app.state.engine.begin() as conn:
        for start in range(0, n_items, 10_000):
            rows = []
            for i in range(start, min(n_items, start + 10_000)):
                prov = str(rng.choice(pv, p=weights))
                p = float(rng.random())
                verdict = "synthetic" if p > 0.8 else ("authentic" if p < 0.5 else "inconclusive")
                ev = {"path": paths[i % 200], "synthetic_probability": p, "verdict": verdict,
                      "provenance": {"verdict": prov, "reason": "benchmark", "manifest": {"state": "Missing"}},
                      "forgery": {"ela": {"score": 0.2}, "noise": {"score": 0.1}}}
                rows.append({"queue_id": qid, "path": paths[i % 200], "name": f"file{i:06d}.png",
                             "provenance_verdict": prov, "verdict": verdict, "synthetic_probability": p,
                             "suspicion": suspicion(prov, p), "evidence": json.dumps(ev)})
            conn.execute(insert(Item.__table__), rows)
    if app.state.engine.dialect.name == "postgresql":
        # the statistics and visibility map autovacuum makes by itself within a minute of a bulk import: without
        # them the first plans after a bulk insert are guesses and no scan is index-only
        with app.state.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE items")
    print(f"built {n_items:,} items in {time.perf_counter() - t0:.1f} s")
    return qid


def login(base: str, name: str) -> tuple[httpx.Client, str]:
    import re

    c = httpx.Client(base_url=base, timeout=60)
    csrf = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    r = c.post("/login", data={"username": name, "password": f"{name}-password", "csrf": csrf},
               headers={"Accept": "application/json"})
    r.raise_for_status()
    return c, r.json()["csrf"]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--db", default=None, help="SQLAlchemy URL of an empty database (default: SQLite in the home)")
    ap.add_argument("--home", type=Path, default=None,
                    help="keep the database here and reuse it on the next run (default: a temporary folder)")
    args = ap.parse_args()
    out: dict = {"items": args.items, "clients": args.clients, "seconds": args.seconds, "cpus": os.cpu_count(),
                 "db": "sqlite" if args.db is None else args.db.split(":", 1)[0]}
    with tempfile.TemporaryDirectory() as tmp:
        home = args.home or Path(tmp)
        marker = home / f"built-{args.items}-{args.clients}"
        if marker.exists() and args.db is None:
            qid = 1
            print(f"reusing {home}")
        else:
            qid = build(home, args.items, args.clients, args.db)
            marker.touch()
        port = 18765 + os.getpid() % 1000
        env = dict(os.environ, GENGUARD_HOME=str(home))
        srv = subprocess.Popen([sys.executable, "-m", "genguard", "console", "--port", str(port),
                                *(["--db", args.db] if args.db else [])], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        base = f"http://127.0.0.1:{port}"
        try:
            for _ in range(600):
                try:
                    httpx.get(base + "/login", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            c, csrf = login(base, "admin")
            c.headers["Accept"] = "text/html"
            cases = {"most suspicious first": "", "undecided": "status=undecided",
                     "detector synthetic": "verdict=synthetic", "provenance stripped": "provenance=stripped",
                     "sort=probability": "sort=probability", "sort=name": "sort=name", "page 1,000": "page=1000",
                     "undecided, page 1,000": "status=undecided&page=1000"}
            lat = {}
            for label, qs in cases.items():
                c.get(f"/queues/{qid}?{qs}")  # warm the page cache once
                ts = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    r = c.get(f"/queues/{qid}?{qs}")
                    ts.append((time.perf_counter() - t0) * 1000)
                    assert r.status_code == 200 and "file" in r.text, r.status_code
                lat[label] = {"median_ms": statistics.median(ts), "p95_ms": pct(ts, 0.95)}
                print(f"queue page, {label:24s} median {lat[label]['median_ms']:7.1f} ms   "
                      f"p95 {lat[label]['p95_ms']:7.1f} ms   ({args.repeats} requests, {args.items:,} items)")
            out["queue_page_latency"] = lat

            # every reviewer logs in first (scrypt is deliberately slow); the clock starts once all have
            sessions = [login(base, f"rev{k}") for k in range(args.clients)]
            stop = [0.0]
            ready = threading.Barrier(args.clients + 1)
            lock = threading.Lock()
            times: dict[str, list[float]] = {"queue": [], "item": [], "image": [], "decision": []}
            errors = [0]

            def client(k: int) -> None:
                cl, tok = sessions[k]
                rnd = random.Random(k)
                ready.wait()
                while time.perf_counter() < stop[0]:
                    iid = rnd.randint(1, args.items)
                    qs = rnd.choice(list(cases.values()) + [f"page={rnd.randint(1, 50)}"])
                    reqs = [("queue", "GET", f"/queues/{qid}?{qs}", None),
                            ("item", "GET", f"/items/{iid}", None), ("image", "GET", f"/items/{iid}/image", None),
                            ("decision", "POST", f"/items/{iid}/decision",
                             {"decision": rnd.choice(["generated", "edited", "authentic", "unsure"])})]
                    for kind, method, url, data in reqs:
                        t0 = time.perf_counter()
                        if method == "GET":
                            r = cl.get(url, headers={"Accept": "text/html"})
                        else:
                            r = cl.post(url, data=data, headers={"Accept": "application/json", "X-CSRF-Token": tok})
                        dt = (time.perf_counter() - t0) * 1000
                        with lock:
                            if r.status_code == 200:
                                times[kind].append(dt)
                            else:
                                errors[0] += 1

            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for t in threads:
                t.start()
            t0 = time.perf_counter()
            stop[0] = t0 + args.seconds
            ready.wait()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            total = sum(len(v) for v in times.values())
            out["throughput"] = {"pages_per_s": total / wall, "requests_ok": total, "errors": errors[0],
                                 "wall_s": wall,
                                 "by_kind": {k: {"n": len(v), "median_ms": statistics.median(v) if v else None,
                                                 "p95_ms": pct(v, 0.95)} for k, v in times.items()}}
            print(f"{args.clients} concurrent reviewers for {wall:.0f} s: {total / wall:.1f} pages/s "
                  f"({total} responses, {errors[0]} errors)")
            for k, v in times.items():
                print(f"  {k:9s} n={len(v):6d}  median {statistics.median(v) if v else float('nan'):7.1f} ms  "
                      f"p95 {pct(v, 0.95):7.1f} ms")
        finally:
            srv.terminate()
            srv.wait(timeout=30)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
