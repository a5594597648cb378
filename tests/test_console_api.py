"""The review console's HTTP API (FastAPI TestClient): accounts, CSRF, queues, decisions, audit trail, exports, studies.

Every page is hit the way an outsider would: without a session, with another
session's token, with hostile file names and manifest fields, with paths that
try to leave the imported items.
"""
import csv
import io
import json
import re
import sqlite3
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")
from fastapi.testclient import TestClient  # noqa: E402

from genguard.console import create_app, create_user  # noqa: E402

FAST_N = 2 ** 10  # scrypt cost for test accounts only (the stored hash records N; the default is 2**15)
XSS_NAME = '<svg onload=alert("name")>.png'
XSS_TITLE = '<img src=x onerror=alert("title")>'


def _png(path, value=128, size=48):
    rng = np.random.default_rng(value)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture()
def env(tmp_path):
    app = create_app(None, tmp_path / "home")
    with app.state.sessions() as s:
        for name, role in (("boss", "admin"), ("rev", "reviewer"), ("rev2", "reviewer"), ("rat", "rater"),
                           ("rat2", "rater")):
            create_user(s, name, role, f"{name}-password", n=FAST_N)
    return app, tmp_path


def login(app, name, password=None):
    c = TestClient(app)
    page = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = c.post("/login", data={"username": name, "password": password or f"{name}-password", "csrf": csrf},
               headers={"Accept": "application/json"})
    assert r.status_code == 200, r.text
    c.headers["X-CSRF-Token"] = r.json()["csrf"]
    c.headers["Accept"] = "application/json"
    return c


def detect_json(tmp_path, n=6):
    """A `genguard detect --json` result with a hostile file name and manifest title among ordinary entries."""
    imgs = tmp_path / "imgs"
    imgs.mkdir(exist_ok=True)
    entries = []
    verdicts = ["untagged", "intact", "tampered", "untagged", "stripped", "untagged"]
    for i in range(n):
        name = XSS_NAME if i == 0 else f"img{i}.png"
        _png(imgs / name, i)
        entries.append({"path": f"imgs/{name}", "synthetic_probability": round(0.1 + 0.15 * i, 3),
                        "verdict": "generated" if i >= 3 else "no_evidence", "forgery": {"ela": {"score": 0.3}},
                        "provenance": {"verdict": verdicts[i % len(verdicts)], "reason": f"reason {i}",
                                       "manifest": {"state": "Valid", "codes": []},
                                       "history": {"title": XSS_TITLE, "actions": ["c2pa.created"],
                                                   "source_types": ["http://cv.iptc.org/x/trainedAlgorithmicMedia"],
                                                   "ingredients": [{"title": XSS_TITLE, "relationship": "parentOf"}]},
                                       "signer": {"common_name": XSS_TITLE, "issuer": "Evil CA", "trust": "unverified"},
                                       "watermark": {"applicable": True, "found": True, "p_value": 1e-9}}})
    p = tmp_path / "detect.json"
    p.write_text(json.dumps(entries))
    return p


def import_json(c, path, name="q"):
    r = c.post("/queues", data={"source": str(path), "name": name})
    assert r.status_code == 200, r.text
    return r.json()["queue"]


def test_migrations_apply_at_start_and_key_is_private(env):
    app, tmp = env
    db = tmp / "home" / "console.sqlite3"
    con = sqlite3.connect(db)
    assert con.execute("select version_num from alembic_version").fetchall() == [("0005",)]
    idx = {r[0] for r in con.execute("select name from sqlite_master where type='index'")}
    assert {"ix_items_queue_suspicion", "ix_items_queue_decision", "ix_items_queue_verdict",
            "ix_items_queue_probability", "ix_items_queue_provenance", "ix_items_queue_undecided"} <= idx
    con.close()
    create_app(None, tmp / "home")  # a second start on the same database is a no-op, not an error
    assert (tmp / "home" / "console-secret.key").stat().st_mode & 0o777 == 0o600
    assert db.stat().st_mode & 0o077 == 0
    con = sqlite3.connect(db)
    hashes = [h for (h,) in con.execute("select password_hash from users")]
    assert all(h.startswith("scrypt$") and "password" not in h for h in hashes)


def _migrate_to(url, revision):
    from alembic import command
    from alembic.config import Config

    from genguard.console import db as dbm

    engine = dbm.make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(dbm.MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return engine


def check_upgrade_keeps_data(url, home):
    """A database made by the revisions before server-side sessions, with a user and a decided item in it, is
    upgraded in place: the user logs in with the old password, the item keeps its decision."""
    from genguard.console import auth

    engine = _migrate_to(url, "0002")
    with engine.begin() as conn:
        conn.exec_driver_sql("insert into users (name, role, password_hash, created_at) values "
                             f"('old', 'admin', '{auth.hash_password('old-password', n=FAST_N)}', '2026-01-01')")
        conn.exec_driver_sql("insert into queues (name, source, created_by, created_at) "
                             "values ('q', '/x', 1, '2026-01-01')")
        conn.exec_driver_sql("insert into items (queue_id, path, name, provenance_verdict, suspicion, evidence, "
                             "decision, decided_by) values (1, '/x/a.png', 'a.png', 'untagged', 2.5, '{}', "
                             "'edited', 1)")
        conn.exec_driver_sql("insert into studies (name, kind, config, created_by, created_at) "
                             "values ('old study', 'mos', '{}', 1, '2026-01-01')")
    engine.dispose()
    app = create_app(url, home)
    with app.state.engine.connect() as conn:
        assert conn.exec_driver_sql("select version_num from alembic_version").fetchall() == [("0005",)]
        assert conn.exec_driver_sql("select name, disabled from users").fetchall() == [("old", False)]
        # a study made before audio studies is an image study
        assert conn.exec_driver_sql("select name, media from studies").fetchall() == [("old study", "image")]
    c = login(app, "old")
    item = c.get("/queues/1").json()["items"]
    assert [(i["name"], i["decision"]) for i in item] == [("a.png", "edited")]
    return app


def test_an_older_schema_is_upgraded_in_place_keeping_its_data(tmp_path):
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    app = check_upgrade_keeps_data(url, tmp_path / "home")
    assert not (tmp_path / "home" / "console.sqlite3").exists()  # --db given: the default file is never made
    assert app.state.engine.url.database.endswith("old.sqlite3")


def test_login_cookie_flags_rotation_and_rate_limit(env):
    app, _ = env
    c = TestClient(app)
    page = c.get("/login")
    anon_cookie = c.cookies.get("gg_session")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    r = c.post("/login", data={"username": "rev", "password": "rev-password", "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303
    set_cookie = r.headers["set-cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=strict" in set_cookie.replace("Strict", "strict")
    assert c.cookies.get("gg_session") != anon_cookie  # a fresh session id at log-in (no fixation)
    # a cookie whose token was altered (signature no longer matches) is not a session
    live = c.cookies.get("gg_session")
    assert TestClient(app, cookies={"gg_session": live}).get("/api/me").status_code == 200
    token, rest = live.split("|", 1)
    forged = TestClient(app, cookies={"gg_session": token[:-1] + ("A" if token[-1] != "A" else "B") + "|" + rest})
    assert forged.get("/api/me").status_code == 401

    bad = TestClient(app)
    csrf = re.search(r'name="csrf" value="([^"]+)"', bad.get("/login").text).group(1)
    codes = [bad.post("/login", data={"username": "rev", "password": "wrong", "csrf": csrf}).status_code
             for _ in range(5)]
    assert codes == [401] * 5
    r = bad.post("/login", data={"username": "rev", "password": "rev-password", "csrf": csrf})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0  # even the right password now waits
    # the page to return to after log-in is a path on the console, never another site
    for target, expect in (("/queues/1?x=1", "/queues/1?x=1"), ("//evil.example", "/"), ("/\\evil.example", "/"),
                           ("https://evil.example", "/")):
        c2 = TestClient(app)
        tok = re.search(r'name="csrf" value="([^"]+)"', c2.get("/login").text).group(1)
        r = c2.post("/login", data={"username": "rev2", "password": "rev2-password", "csrf": tok, "next": target},
                    follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == expect, target
    # another user from the same client is not locked out by rev's failures
    assert bad.post("/login", data={"username": "rev2", "password": "rev2-password", "csrf": csrf},
                    headers={"Accept": "application/json"}).status_code == 200


def _signed(app, value):
    from genguard.console import auth

    return auth.Signer(auth.load_secret(app.state.home / "console-secret.key")).sign(value)


def test_a_cookie_copied_before_logout_is_refused_after_it(env):
    import hashlib

    from genguard.console.models import LoginSession

    app, _ = env
    c = login(app, "rev")
    cookie, csrf = c.cookies.get("gg_session"), c.headers["X-CSRF-Token"]
    token = cookie.split("|", 1)[0]
    thief = TestClient(app, cookies={"gg_session": cookie}, headers={"Accept": "application/json",
                                                                      "X-CSRF-Token": csrf})
    assert thief.get("/api/me").json()["user"] == "rev"
    with app.state.sessions() as s:  # the database keeps the token's hash only
        stored = [r.token_hash for r in s.query(LoginSession)]
    assert hashlib.sha256(token.encode()).hexdigest() in stored and token not in stored
    # a stolen database is no session either, even with the signing key: the hash is not the token
    leaked = TestClient(app, cookies={"gg_session": _signed(app, stored[0])})
    assert leaked.get("/api/me").status_code == 401

    assert c.post("/logout", follow_redirects=False).status_code == 303
    assert thief.get("/api/me").status_code == 401
    assert thief.get("/queues/1").status_code == 401
    r = thief.post("/items/1/decision", data={"decision": "generated"})
    assert r.status_code == 403  # not a session any more: not even its CSRF token passes
    with app.state.sessions() as s:
        assert s.query(LoginSession).count() == 0

    # an expired session is refused too, whatever the cookie's own age says
    c2 = login(app, "rev")
    assert c2.get("/api/me").status_code == 200
    import datetime as dt

    with app.state.sessions() as s:
        for row in s.query(LoginSession):
            row.expires_at = row.created_at - dt.timedelta(seconds=1)
        s.commit()
    assert c2.get("/api/me").status_code == 401


def _uid(app, name):
    from genguard.console.models import User

    with app.state.sessions() as s:
        return s.query(User).filter_by(name=name).one().id


def test_disabling_a_user_or_changing_role_or_password_ends_their_sessions(env):
    app, _ = env
    boss = login(app, "boss")
    rev = login(app, "rev")
    assert rev.get("/api/me").status_code == 200
    r = boss.post(f"/admin/users/{_uid(app, 'rev')}", data={"disabled": "1"})
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert rev.get("/api/me").status_code == 401  # the live session of a disabled user is refused
    assert rev.post("/items/1/decision", data={"decision": "generated"}).status_code == 403
    c = TestClient(app)
    tok = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    r = c.post("/login", data={"username": "rev", "password": "rev-password", "csrf": tok},
               headers={"Accept": "application/json"})
    assert r.status_code == 401 and r.json()["error"] == "wrong user name or password"  # nothing tells it apart
    boss.post(f"/admin/users/{_uid(app, 'rev')}", data={"disabled": "0"})
    assert login(app, "rev").get("/api/me").json()["role"] == "reviewer"

    rev2 = login(app, "rev2")
    assert boss.post(f"/admin/users/{_uid(app, 'rev2')}", json={"role": "rater"}).json()["role"] == "rater"
    assert rev2.get("/api/me").status_code == 401  # a demoted reviewer's session does not keep the old role
    assert login(app, "rev2").get("/queues/1").status_code == 403

    rat = login(app, "rat")
    assert boss.post(f"/admin/users/{_uid(app, 'rat')}", data={"password": "short"}).status_code == 400
    assert rat.get("/api/me").status_code == 200  # a refused change changes nothing
    boss.post(f"/admin/users/{_uid(app, 'rat')}", data={"password": "a-new-password"})
    assert rat.get("/api/me").status_code == 401
    login(app, "rat", "a-new-password")

    # a user's own password change ends their other sessions and renews the one that made it
    here, there = login(app, "rat2"), login(app, "rat2")
    assert here.post("/account/password", data={"current": "wrong", "password": "x" * 12}).status_code == 403
    r = here.post("/account/password", data={"current": "rat2-password", "password": "rat2-new-password"})
    assert r.status_code == 200
    here.headers["X-CSRF-Token"] = r.json()["csrf"]
    assert here.get("/api/me").json()["user"] == "rat2" and there.get("/api/me").status_code == 401
    login(app, "rat2", "rat2-new-password")
    # an admin cannot lock themselves out; another admin's account is out of a non-admin's reach
    r = boss.post(f"/admin/users/{_uid(app, 'boss')}", data={"disabled": "1"})
    assert r.status_code == 400 and boss.get("/api/me").status_code == 200
    assert login(app, "rev").post(f"/admin/users/{_uid(app, 'boss')}", data={"disabled": "1"}).status_code == 403
    assert boss.post("/admin/users/999", data={"disabled": "1"}).status_code == 404


def _db_url(app):
    return app.state.engine.url.render_as_string(hide_password=False)


def _fail_logins(app, name, k):
    c = TestClient(app)
    tok = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    return [c.post("/login", data={"username": name, "password": "wrong", "csrf": tok}).status_code
            for _ in range(k)], c, tok


def test_the_login_limit_survives_a_restart_and_holds_across_workers(env):
    import datetime as dt
    import threading

    from genguard.console.models import LoginFailure

    app, tmp = env
    codes, _, _ = _fail_logins(app, "rev", 3)
    assert codes == [401] * 3
    # a restart (a new app on the same database) keeps the count: 2 more failures reach the limit of 5
    restarted = create_app(_db_url(app), tmp / "home")
    codes, c, tok = _fail_logins(restarted, "REV", 3)  # the account name as typed, case folded
    assert codes == [401, 401, 429]
    # a second worker process shares it as well
    worker = create_app(_db_url(app), tmp / "home")
    w = TestClient(worker, cookies=c.cookies)
    r = w.post("/login", data={"username": "rev", "password": "rev-password", "csrf": tok})
    assert r.status_code == 429 and 50 <= int(r.headers["Retry-After"]) <= 61
    # a sliding window: once the failures are older than the window, the right password works
    with app.state.sessions() as s:
        for row in s.query(LoginFailure):
            row.at -= dt.timedelta(seconds=61)
        s.commit()
    r = w.post("/login", data={"username": "rev", "password": "rev-password", "csrf": tok},
               headers={"Accept": "application/json"})
    assert r.status_code == 200

    lim = app.state.limiter
    # a spray of names from one address: 20 per window (4 x the per-account limit), then that address waits
    assert all(lim.attempt(f"name{i}", "10.0.0.9")[0] for i in range(20))
    assert lim.attempt("name-new", "10.0.0.9") == (None, pytest.approx(60, abs=2))
    assert lim.attempt("name-new", "10.0.0.10")[0]  # another address is not held back
    # a guess at one account from many addresses: 20 per window over all addresses
    assert all(lim.attempt("boss", f"10.1.0.{i}")[0] for i in range(20))
    assert lim.attempt("boss", "10.2.0.1")[0] is None
    # of concurrent attempts (threads standing for workers) exactly the limit reach the password check
    got = []
    barrier = threading.Barrier(12)

    def attempt():
        barrier.wait()
        got.append(lim.attempt("rat", "10.3.0.1")[0])

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(g is not None for g in got) == 5


def test_concurrent_decisions_on_one_item_keep_a_consistent_audit_trail(env):
    import threading

    app, tmp = env
    boss = login(app, "boss")
    qid = import_json(boss, detect_json(tmp))
    iid = boss.get(f"/queues/{qid}").json()["items"][0]["id"]
    clients = [login(app, n) for n in ("boss", "rev", "rev2")]
    barrier = threading.Barrier(6)
    codes = []

    def decide(k):
        c = clients[k % 3]
        barrier.wait()
        for j in range(3):
            r = c.post(f"/items/{iid}/decision", data={"decision": DECISIONS[(k + j) % 4], "note": f"n{k}-{j}"})
            codes.append(r.status_code)

    from genguard.console.models import DECISIONS

    threads = [threading.Thread(target=decide, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [200] * 18
    item = boss.get(f"/items/{iid}").json()
    for field, final in (("decision", item["decision"]), ("note", item["note"])):
        chain = [(e["from"], e["to"]) for e in item["audit"] if e["field"] == field]
        # each event's old value is the previous event's new value: no decision was lost or replaced unseen
        assert chain[0][0] is None and chain[-1][1] == final
        assert all(a[1] == b[0] for a, b in zip(chain, chain[1:])), chain
    assert len([e for e in item["audit"] if e["field"] == "note"]) == 18


def test_concurrent_first_visits_deal_one_set_of_trials(env):
    import threading

    from genguard.console.models import Trial

    app, tmp = env
    real, gen = _study_dirs(tmp)
    boss = login(app, "boss")
    sid = boss.post("/studies", data={"name": "s", "kind": "2afc", "real": str(real), "generated": str(gen),
                                      "trials_per_rater": "4", "attention_checks": "1"}).json()["study"]
    tabs = [login(app, "rat") for _ in range(6)]
    barrier = threading.Barrier(len(tabs))
    totals = []

    def visit(c):
        barrier.wait()
        totals.append(c.get(f"/studies/{sid}").json()["total"])

    threads = [threading.Thread(target=visit, args=(c,)) for c in tabs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert totals == [5] * 6
    with app.state.sessions() as s:
        positions = sorted(t.position for t in s.query(Trial).filter_by(study_id=sid))
    assert positions == list(range(5))


def test_text_with_nul_characters_is_refused_or_cleaned(env):
    app, tmp = env
    boss = login(app, "boss")
    qid = import_json(boss, detect_json(tmp))
    r = boss.post("/items/1/decision", data={"decision": "generated", "note": "a\x00b"})
    assert r.status_code == 400 and "NUL" in r.text
    assert boss.get(f"/queues/{qid}", params={"verdict": "x\x00"}).status_code == 400
    c = TestClient(app)
    tok = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
    assert c.post("/login", data={"username": "boss\x00", "password": "x", "csrf": tok}).status_code == 400
    # a result JSON's "\u0000" in a path reaches no column (the evidence keeps it, escaped)
    (tmp / "nul.json").write_text(json.dumps([{"path": "a\u0000b.png", "provenance": {"verdict": "x\u0000"}}]))
    q2 = import_json(boss, tmp / "nul.json")
    item = boss.get(f"/queues/{q2}").json()["items"][0]
    assert item["name"] == "a\ufffdb.png" and item["provenance_verdict"] == "x\ufffd"
    assert boss.get(f"/items/{item['id']}").json()["evidence"]["path"] == "a\x00b.png"


def test_every_post_route_needs_the_sessions_csrf_token(env):
    app, tmp = env
    c = login(app, "boss")
    other = login(app, "rev")
    posts = [r.path for r in app.routes if "POST" in getattr(r, "methods", set())]
    assert {"/login", "/logout", "/queues", "/items/{iid}/decision", "/queues/{qid}/assign", "/admin/users",
            "/admin/users/{uid}", "/account/password", "/studies", "/studies/{sid}/trials/{tid}"} <= set(posts)
    for path in posts:
        url = re.sub(r"\{[^}]+\}", "1", path)
        for token in (None, other.headers["X-CSRF-Token"], "x"):
            headers = {"Accept": "application/json"}
            if token:
                headers["X-CSRF-Token"] = token
            r = TestClient(app, cookies=c.cookies).post(url, data={"decision": "generated", "csrf": token or ""},
                                                         headers=headers)
            assert r.status_code == 403 and "CSRF" in r.text, (path, token, r.status_code)
    # without a session nothing but the log-in form is even read; an oversized body is refused unread
    anon = TestClient(app)
    assert anon.post("/queues", files={"upload": ("x.json", b"[]")}).status_code == 403
    big = c.post("/items/1/decision", content=b"x" * (1024 * 1024 + 1),
                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert big.status_code == 413


def test_pages_need_a_login_and_the_right_role(env):
    app, tmp = env
    anon = TestClient(app)
    assert anon.get("/queues/1", headers={"Accept": "application/json"}).status_code == 401
    r = anon.get("/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    boss = login(app, "boss")
    qid = import_json(boss, detect_json(tmp))
    rater, rev = login(app, "rat"), login(app, "rev")
    assert rater.get(f"/queues/{qid}").status_code == 403
    assert rater.get("/items/1/image").status_code == 403
    assert rev.post("/queues", data={"source": str(tmp / "detect.json")}).status_code == 403
    assert rev.post("/admin/users", data={"username": "x", "role": "admin", "password": "12345678"}).status_code == 403
    assert rev.get(f"/queues/{qid}").status_code == 200


def test_queue_orders_most_suspicious_first_filters_and_paginates(env):
    app, tmp = env
    boss = login(app, "boss")
    qid = import_json(boss, detect_json(tmp))
    items = boss.get(f"/queues/{qid}").json()["items"]
    assert [i["provenance_verdict"] for i in items][:2] == ["tampered", "stripped"]
    untagged = [i["synthetic_probability"] for i in items if i["provenance_verdict"] == "untagged"]
    assert untagged == sorted(untagged, reverse=True) and len(untagged) == 3
    syn = boss.get(f"/queues/{qid}", params={"verdict": "generated"}).json()
    assert syn["total"] == 3 and all(i["verdict"] == "generated" for i in syn["items"])
    first = items[0]["id"]
    boss.post(f"/items/{first}/decision", data={"decision": "generated"})
    und = boss.get(f"/queues/{qid}", params={"status": "undecided"}).json()
    assert und["total"] == 5 and first not in [i["id"] for i in und["items"]]
    by_name = boss.get(f"/queues/{qid}", params={"sort": "name"}).json()["items"]
    assert [i["name"] for i in by_name] == sorted(i["name"] for i in by_name)
    assert boss.get(f"/queues/{qid}", params={"sort": "path; drop table items"}).status_code == 400

    big = [{"path": f"x{i:04d}.png", "synthetic_probability": (i % 97) / 97, "verdict": "no_evidence",
            "provenance": {"verdict": "untagged"}} for i in range(120)]
    (tmp / "big.json").write_text(json.dumps(big))
    q2 = import_json(boss, tmp / "big.json")
    pages = [boss.get(f"/queues/{q2}", params={"page": p}).json() for p in (1, 2, 3)]
    assert pages[0]["total"] == 120 and [len(p["items"]) for p in pages] == [50, 50, 20]
    seen = [i["id"] for p in pages for i in p["items"]]
    assert len(set(seen)) == 120  # no item twice, none missing
    probs = [i["synthetic_probability"] for p in pages for i in p["items"]]
    assert probs == sorted(probs, reverse=True)


def test_decisions_leave_an_audit_trail_and_export(env):
    app, tmp = env
    boss, rev, rev2 = login(app, "boss"), login(app, "rev"), login(app, "rev2")
    qid = import_json(boss, detect_json(tmp))
    items = boss.get(f"/queues/{qid}").json()["items"]
    a, b = items[0]["id"], items[1]["id"]
    r = rev.post(f"/items/{a}/decision", data={"decision": "generated", "note": "=HYPERLINK(\"http://x\")"})
    assert r.status_code == 200 and r.json()["next"] == b  # on to the next undecided, most suspicious first
    rev2.post(f"/items/{a}/decision", data={"decision": "authentic", "note": "looked again"})
    assert rev.post(f"/items/{a}/decision", data={"decision": "maybe"}).status_code == 400
    trail = boss.get(f"/items/{a}").json()["audit"]
    dec = [(e["who"], e["from"], e["to"]) for e in trail if e["field"] == "decision"]
    assert dec == [("rev", None, "generated"), ("rev2", "generated", "authentic")]
    assert [e["to"] for e in trail if e["field"] == "note"] == ['=HYPERLINK("http://x")', "looked again"]

    # assignment: an item assigned to rev2 cannot be decided by rev; the assignment is in the trail
    assert boss.post(f"/queues/{qid}/assign", json={"items": [b], "assignee": "rev2"}).json()["assigned"] == 1
    assert rev.post(f"/items/{b}/decision", data={"decision": "edited"}).status_code == 403
    assert rev2.post(f"/items/{b}/decision", data={"decision": "edited"}).status_code == 200
    mine = rev2.get(f"/queues/{qid}", params={"assignee": "me"}).json()
    assert [i["id"] for i in mine["items"]] == [b]
    assert boss.post(f"/queues/{qid}/assign", json={"items": [b], "assignee": "rat"}).status_code == 400

    rows = list(csv.DictReader(io.StringIO(boss.get(f"/queues/{qid}/export.csv").text)))
    by_id = {int(r["id"]): r for r in rows}
    assert len(rows) == 6 and by_id[a]["decision"] == "authentic" and by_id[a]["decided_by"] == "rev2"
    assert by_id[b]["decision"] == "edited" and by_id[b]["assignee"] == "rev2"
    assert all(not r["name"].startswith(("=", "+", "-", "@")) for r in rows)
    rev.post(f"/items/{a}/decision", data={"decision": "authentic", "note": "=1+1"})
    rows = list(csv.DictReader(io.StringIO(boss.get(f"/queues/{qid}/export.csv").text)))
    assert {int(r["id"]): r for r in rows}[a]["note"] == "'=1+1"  # never a live formula in a spreadsheet
    js = boss.get(f"/queues/{qid}/export.json").json()
    ja = {i["id"]: i for i in js["items"]}[a]
    assert ja["decision"] == "authentic" and ja["note"] == "=1+1"
    assert [(e["who"], e["to"]) for e in ja["audit"] if e["field"] == "decision"] == [
        ("rev", "generated"), ("rev2", "authentic")]
    assert any(e["field"] == "assignee" and e["to"] == "rev2" for e in {i["id"]: i for i in js["items"]}[b]["audit"])


def test_hostile_file_name_and_manifest_title_are_escaped(env):
    app, tmp = env
    boss = login(app, "boss")
    qid = import_json(boss, detect_json(tmp), name='<script>alert("queue")</script>')
    boss.headers["Accept"] = "text/html"
    pages = [boss.get("/"), boss.get(f"/queues/{qid}")]
    items = boss.get(f"/queues/{qid}", headers={"Accept": "application/json"}).json()["items"]
    hostile = next(i for i in items if i["name"] == XSS_NAME)
    pages.append(boss.get(f"/items/{hostile['id']}"))
    for p in pages:
        assert p.status_code == 200
        assert "<script>alert" not in p.text and "<img src=x" not in p.text and "<svg" not in p.text
        assert "script-src 'self'" in p.headers["content-security-policy"]
    item = pages[-1].text
    assert "&lt;svg onload=alert(&#34;name&#34;)&gt;.png" in item
    assert "&lt;img src=x onerror=alert(&#34;title&#34;)&gt;" in item  # title, signer, ingredient: text only
    assert item.count("&lt;img src=x") >= 3
    # every script the pages load is the console's own file
    assert set(re.findall(r"<script[^>]*>", item)) == {'<script src="/static/console.js">'}


def test_files_are_served_only_by_item_id(env, tmp_path):
    app, tmp = env
    boss = login(app, "boss")
    secret = tmp / "home" / "console-secret.key"
    entries = [{"path": str(_png(tmp / "ok.png")), "provenance": {"verdict": "untagged"}},
               {"path": "/etc/passwd", "provenance": {"verdict": "untagged"}},
               {"path": str(secret), "overlay": str(secret), "provenance": {"verdict": "untagged"}}]
    (tmp / "t.json").write_text(json.dumps(entries))
    qid = import_json(boss, tmp / "t.json")
    ids = {i["name"]: i["id"] for i in boss.get(f"/queues/{qid}").json()["items"]}
    r = boss.get(f"/items/{ids['ok.png']}/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    # a non-image in the queue is never sent, not even re-encoded; its bytes never appear
    for iid in (ids["passwd"], ids["console-secret.key"]):
        for what in ("image", "overlay"):
            r = boss.get(f"/items/{iid}/{what}")
            assert r.status_code == 404 and secret.read_bytes() not in r.content and b"root:" not in r.content
    for url in ("/items/..%2f..%2fetc%2fpasswd/image", "/items/1/image/../../../etc/passwd",
                "/static/../console.sqlite3", "/static/..%2f..%2fconsole-secret.key", "/static/%2e%2e/app.py",
                f"/items/{ids['ok.png']}/image?path=/etc/passwd"):
        r = boss.get(url)
        assert b"root:" not in r.content and b"import" not in r.content and b"SQLite" not in r.content, url
        if "?path=" in url:
            assert r.content[:4] == b"\x89PNG"  # the query parameter is ignored: still the item's own image
        else:
            assert r.status_code in (400, 404, 422), (url, r.status_code)


def test_folder_import_examines_files_and_serves_overlays(env):
    from skimage import data

    app, tmp = env
    src = tmp / "folder"
    src.mkdir()
    Image.fromarray(data.astronaut()[:160, :160]).save(src / "photo.png")
    (src / "notes.txt").write_text("plain text")
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")  # one bad file never sinks the import
    boss = login(app, "boss")
    r = boss.post("/queues", data={"source": str(src), "name": "folder"})
    assert r.status_code == 200 and r.json()["items"] == 3
    listing = boss.get(f"/queues/{r.json()['queue']}").json()["items"]
    items = {i["name"]: i for i in listing}
    assert listing[0]["name"] == "broken.jpg" and listing[0]["provenance_verdict"] == "error"  # unreadable first
    assert "broken.jpg" in boss.get(f"/items/{items['broken.jpg']['id']}").json()["evidence"]["error"]
    photo = boss.get(f"/items/{items['photo.png']['id']}").json()
    assert photo["evidence"]["verdict"] in ("generated", "edited", "no_evidence", "inconclusive")
    assert photo["evidence"]["reasons"] and photo["evidence"]["verdict_basis"]
    assert set(photo["evidence"]["forgery"]) and photo["evidence"]["provenance"]["verdict"] == "untagged"
    ov = boss.get(f"/items/{items['photo.png']['id']}/overlay")
    assert ov.status_code == 200 and ov.content[:4] == b"\x89PNG"
    assert boss.get(f"/items/{items['notes.txt']['id']}/image").status_code == 404
    bad = boss.post("/queues", data={"source": str(tmp / "nope")})
    assert bad.status_code == 400 and "no such file" in bad.json()["error"]
    (tmp / "bad.json").write_text("{not json")
    bad = boss.post("/queues", data={"source": str(tmp / "bad.json")})
    assert bad.status_code == 400 and "bad.json: not valid JSON" in bad.json()["error"]
    # an upload of a `verify --json` result is a queue too
    verify = {"files": [{"path": str(src / "photo.png"), "manifest": {"state": "Missing", "codes": []},
                         "watermark": {"applicable": True, "found": False}, "verdict": "untagged", "reason": "none"}]}
    r = boss.post("/queues", files={"upload": ("v.json", json.dumps(verify), "application/json")}, data={"name": "v"})
    assert r.status_code == 200 and r.json()["items"] == 1


def _study_dirs(tmp):
    real, gen = tmp / "real", tmp / "gen"
    real.mkdir()
    gen.mkdir()
    for i in range(6):
        _png(real / f"r{i}.png", 100 + i)
        _png(gen / f"g{i}.png", 200 + i)
    return real, gen


def test_2afc_study_randomised_with_attention_checks_and_wilson_results(env):
    app, tmp = env
    real, gen = _study_dirs(tmp)
    boss = login(app, "boss")
    gates = {"human.two_afc.ci_high": {"min": 0.99}, "human.two_afc.share_generated_judged_real": {"max": 0.5}}
    bad = boss.post("/studies", data={"name": "s", "kind": "2afc", "real": str(real), "generated": str(gen),
                                      "gates": '{"human.two_afc.ci_high": {"above": 1}}'})
    assert bad.status_code == 400 and "min: x" in bad.json()["error"]
    sid = boss.post("/studies", data={"name": "s", "kind": "2afc", "real": str(real), "generated": str(gen),
                                      "trials_per_rater": "6", "attention_checks": "2",
                                      "gates": json.dumps(gates)}).json()["study"]
    raters = {n: login(app, n) for n in ("rat", "rat2")}
    from genguard.console.models import Stimulus, Trial
    with app.state.sessions() as s:
        source = {st.id: st.source for st in s.query(Stimulus)}
    orders = {}
    for name, c in raters.items():
        info = c.get(f"/studies/{sid}").json()
        assert info["total"] == 8 and info["done"] == 0
        with app.state.sessions() as s:
            trials = s.query(Trial).filter_by(study_id=sid).order_by(Trial.position).all()
            mine = [t for t in trials if t.rater_id == {"rat": 4, "rat2": 5}[name]]
        orders[name] = [(t.left_id, t.right_id) for t in mine]
        assert sum(t.attention for t in mine) == 2
        for t in mine:  # rat: attentive, always picks the generated image as real (fooled every time);
            left = source[t.left_id]  # rat2: fails the attention checks (picks the catch image)
            if name == "rat":
                want = "right" if (source[t.right_id] == "real" if t.attention else left == "real") else "left"
            else:
                want = "left" if left == "attention" else ("right" if source[t.right_id] == "attention" else "left")
            # another rater can neither see nor answer this trial
            other = raters["rat2" if name == "rat" else "rat"]
            assert other.get(f"/studies/{sid}/trials/{t.id}/left").status_code == 404
            assert other.post(f"/studies/{sid}/trials/{t.id}", data={"answer": "left"}).status_code == 404
            assert c.get(f"/studies/{sid}/trials/{t.id}/{want}").content[:4] == b"\x89PNG"
            assert c.post(f"/studies/{sid}/trials/{t.id}", data={"answer": want}).status_code == 200
        assert c.post(f"/studies/{sid}/trials/{mine[0].id}", data={"answer": "left"}).status_code == 400
        assert c.get(f"/studies/{sid}").json()["trial"] is None
    assert orders["rat"] != orders["rat2"]  # each rater gets an order and sides of their own
    assert raters["rat"].get(f"/studies/{sid}/results.json").status_code == 403
    res = boss.get(f"/studies/{sid}/results.json").json()["human"]
    assert res["raters_excluded_by_attention_checks"] == 1
    two = res["two_afc"]
    assert two["raters"] == 1 and two["trials"] == 6 and two["share_generated_judged_real"] == 1.0
    lo, hi = two["ci"]
    assert 0.5 < lo < 0.7 and hi == pytest.approx(1.0)  # Wilson: 6/6 -> (0.61, 1.0)
    verdicts = {g["name"]: g["passed"] for g in res["gates"]}
    assert verdicts == {"human.two_afc.ci_high": True, "human.two_afc.share_generated_judged_real": False}
    assert res["passed"] is False
    loose = boss.get(f"/studies/{sid}/results.json", params={"max_attention_failures": 2}).json()["human"]
    assert loose["two_afc"]["raters"] == 2 and loose["raters_excluded_by_attention_checks"] == 0


def test_mos_study_results_have_intervals_and_alpha(env):
    app, tmp = env
    real, gen = _study_dirs(tmp)
    boss = login(app, "boss")
    sid = boss.post("/studies", json={"name": "m", "kind": "mos", "real": str(real), "generated": str(gen),
                                      "trials_per_rater": 12, "attention_checks": 1}).json()["study"]
    from genguard.console.models import Stimulus, Trial
    with app.state.sessions() as s:
        source = {st.id: st.source for st in s.query(Stimulus)}
    for name, uid in (("rat", 4), ("rat2", 5)):
        c = login(app, name)
        c.get(f"/studies/{sid}")
        with app.state.sessions() as s:
            mine = s.query(Trial).filter_by(study_id=sid, rater_id=uid).all()
        for t in mine:
            src = source[t.left_id]
            score = "1" if src == "attention" else ("5" if src == "real" else ("2" if name == "rat" else "3"))
            c.post(f"/studies/{sid}/trials/{t.id}", data={"answer": score})
        assert c.post(f"/studies/{sid}/trials/{mine[0].id}", data={"answer": "6"}).status_code == 400
    m = boss.get(f"/studies/{sid}/results.json").json()["human"]["mos"]
    assert m["by_source"]["real"]["mos"] == 5.0 and m["by_source"]["generated"]["mos"] == 2.5
    assert m["generated_minus_real"]["difference"] == -2.5
    assert m["ratings"] == 24 and m["raters"] == 2
    assert 0.8 < m["krippendorff_alpha_interval"] < 1.0
    assert boss.get(f"/studies/{sid}/results.json").json()["human"]["gates"] == []  # raters agree on real vs generated, differ by 1 on generated
    bad = boss.post("/studies", data={"name": "x", "kind": "2afc", "generated": str(gen)})
    assert bad.status_code == 400 and "real" in bad.json()["error"]


def test_console_command_starts_migrates_and_rejects_a_bad_database(tmp_path, monkeypatch, capsys):
    env = {"GENGUARD_HOME": str(tmp_path / "h"), "GENGUARD_CONSOLE_PASSWORD": "a-long-password",
           "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, "-m", "genguard", "console", "--create-admin", "root1", "--no-serve"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    assert "created admin root1" in p.stdout and str(tmp_path / "h" / "console.sqlite3") in p.stdout
    from genguard.cli import main

    for k, v in env.items():
        monkeypatch.setenv(k, v)

    def run(*args):
        with pytest.raises(SystemExit) as e:
            main(["console", *args])
        return e.value.code, capsys.readouterr()

    code, out = run("--create-admin", "root1", "--no-serve")
    assert code == 2 and "exists" in out.err and "Traceback" not in out.err
    code, out = run("--db", "nosuchdialect://x/y", "--no-serve")
    assert code == 2 and out.err.count("\n") == 1 and "database" in out.err
    code, out = run("--help")
    assert code == 0 and "--db URL" in out.out and "127.0.0.1" in out.out
    import uvicorn

    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.update(kw))
    code, out = run("--port", "8799")
    assert code == 0 and served["host"] == "127.0.0.1" and served["port"] == 8799  # localhost unless told
    assert "http://127.0.0.1:8799/" in out.out
