"""The review console in a real browser: Debian's Chromium driven by Playwright (nothing downloaded).

Locally, without chromium or playwright, these tests skip and say why; in CI
(env CI set) a missing browser is a failure, so a skip can never hide them.
"""
import csv
import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CHROMIUM = os.environ.get("GENGUARD_CHROMIUM", "/usr/bin/chromium")


def _need(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI: {reason} (the browser tests must run in CI)")
    pytest.skip(reason)


try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None
try:
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError:  # pragma: no cover
    fastapi = None

FAST_N = 2 ** 10


@pytest.fixture(scope="module")
def browser():
    if fastapi is None:
        _need("the console extra is not installed (pip install -e '.[console]')")
    if sync_playwright is None:
        _need("playwright (Python) is not installed; pip install playwright, never `playwright install`")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _need(f"no chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                              args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()


@pytest.fixture()
def site(tmp_path):
    from genguard.console import create_app, create_user
    from genguard.console.server import BackgroundServer

    app = create_app(None, tmp_path / "home")
    with app.state.sessions() as s:
        for name, role in (("boss", "admin"), ("rev", "reviewer"), ("rat", "rater")):
            create_user(s, name, role, f"{name}-password", n=FAST_N)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    rng = np.random.default_rng(0)
    entries = []
    for i, verdict in enumerate(["tampered", "untagged", "untagged", "intact"]):
        name = '<img src=x onerror=alert(1)>.png' if i == 1 else f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(imgs / name)
        entries.append({"path": str(imgs / name), "synthetic_probability": 0.9 - 0.2 * i,
                        "verdict": "generated" if i < 2 else "no_evidence",
                        "provenance": {"verdict": verdict, "reason": "r",
                                       "history": {"title": '<script>alert("t")</script>'}}})
    (tmp_path / "d.json").write_text(json.dumps(entries))
    from genguard.console.importer import import_source

    with app.state.sessions() as s:
        qid = import_source(s, tmp_path / "d.json", "queue", 1, tmp_path / "maps").id
    with BackgroundServer(app) as url:
        yield app, url, qid, tmp_path


def _login(page, url, name):
    page.goto(url + "/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", f"{name}-password")
    page.click("#login")
    page.wait_for_load_state()


def test_review_with_keyboard_shortcuts_and_export(browser, site):
    app, url, qid, tmp = site
    ctx = browser.new_context(accept_downloads=True)
    page = ctx.new_page()
    dialogs = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _login(page, url, "rev")
    assert "genguard console" in page.title()
    page.goto(f"{url}/queues/{qid}")
    page.click("#items a >> nth=0")  # the most suspicious item: the tampered one
    assert page.inner_text("#item-name") == "img0.png"
    first = page.url
    page.keyboard.press("g")
    page.wait_for_url(lambda u: u != first)
    assert page.inner_text("#item-name") == '<img src=x onerror=alert(1)>.png'  # shown as text, not run
    # a key typed in the note is text, not a decision
    page.click("#note")
    page.keyboard.type("grain looks pasted")
    assert page.url != first and page.inner_text("#decision") == "undecided"
    page.click("h1")  # leave the note box
    second = page.url
    page.keyboard.press("e")
    page.wait_for_url(lambda u: u != second)
    third = page.url
    page.keyboard.press("n")  # skip without deciding
    page.wait_for_url(lambda u: u != third)
    fourth = page.url
    page.keyboard.press("a")
    page.wait_for_url(lambda u: u != fourth)  # on to the one left undecided (the skipped one)
    assert page.url == third
    with app.state.sessions() as s:
        from genguard.console.models import Item

        got = {i.name: (i.decision, i.note) for i in s.query(Item)}
    assert got["img0.png"] == ("generated", None)
    assert got['<img src=x onerror=alert(1)>.png'] == ("edited", "grain looks pasted")
    assert sorted(d for d, _ in got.values() if d) == ["authentic", "edited", "generated"]
    page.goto(f"{url}/queues/{qid}")
    with page.expect_download() as dl:
        page.click("text=export CSV")
    rows = list(csv.DictReader(io.StringIO(Path(dl.value.path()).read_text())))
    assert {r["name"]: r["decision"] for r in rows}["img0.png"] == "generated"
    assert {r["name"]: r["decided_by"] for r in rows}["img0.png"] == "rev"
    assert dialogs == []  # no hostile name or title ever ran as script
    ctx.close()


def test_human_study_session_in_the_browser(browser, site):
    app, url, qid, tmp = site
    real, gen = tmp / "real", tmp / "gen"
    rng = np.random.default_rng(1)
    for d in (real, gen):
        d.mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(d / f"{i}.png")
    from genguard.console import studies

    with app.state.sessions() as s:
        sid = studies.create_study(s, "2afc", "2afc", real, gen, 1, tmp / "home", trials_per_rater=3,
                                   attention_checks=1).id
    page = browser.new_page()
    _login(page, url, "rat")
    assert page.locator("a[href='/queues/%d']" % qid).count() == 0  # a rater sees no review queue
    page.goto(f"{url}/studies/{sid}")
    for k in range(4):
        assert page.inner_text("#progress") == f"{k} of 4 done"
        imgs = page.locator("form#trial img")
        assert imgs.count() == 2
        # The trial page can be in the DOM before its images have arrived: wait until each has either
        # loaded or failed, then a broken one (naturalWidth 0) still fails the test.
        page.wait_for_function("() => [...document.querySelectorAll('form#trial img')].every(e => e.complete)")
        assert all(imgs.nth(j).evaluate("e => e.naturalWidth") > 0 for j in range(2))
        page.keyboard.press("ArrowLeft" if k % 2 else "ArrowRight")
        page.wait_for_selector(f"text={k + 1} of 4 done")
    assert page.is_visible("#done")
    with app.state.sessions() as s:
        res = studies.results(s, s.get(studies.Study, sid), max_attention_failures=1)["human"]
    assert res["two_afc"]["trials"] == 3
    page.close()


def _audio_study(app, tmp, kind, gen_n=3, real_n=2, trials=3):
    from genguard.console import studies
    from genguard.console.models import Stimulus
    from genguard.generators.audio_data import write_wav

    real, gen = tmp / f"real-wav-{kind}", tmp / f"gen-wav-{kind}"
    rng = np.random.default_rng(2)
    for d, n in ((real, real_n), (gen, gen_n)):
        d.mkdir()
        for i in range(n):
            t = np.arange(8000) / 16000
            write_wav(d / f"{i}.wav", 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t), 16000)
    with app.state.sessions() as s:
        sid = studies.create_study(s, f"audio {kind}", kind, real, gen, 1, tmp / "home", trials_per_rater=trials,
                                   attention_checks=1).id
        source = {st.id: st.source for st in s.query(Stimulus).filter_by(study_id=sid)}
    return sid, source


def _progress_stays(page, text):
    page.wait_for_timeout(300)  # time for a (wrongly) submitted answer to have reloaded the page
    assert page.inner_text("#progress") == text


def test_audio_mos_session_in_the_browser(browser, site):
    from genguard.console import studies
    from genguard.console.models import Trial

    app, url, qid, tmp = site
    sid, source = _audio_study(app, tmp, "mos")
    page = browser.new_page()
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    _login(page, url, "rat")
    page.goto(f"{url}/studies/{sid}")
    assert "How natural and clean does this clip sound?" in page.inner_text(".question")
    for k in range(4):
        assert page.inner_text("#progress") == f"{k} of 4 done"
        assert page.locator("form#trial audio").count() == 1 and page.locator("form#trial img").count() == 0
        tid = int(page.get_attribute("form#trial", "action").rsplit("/", 1)[-1])
        with app.state.sessions() as s:
            shown = source[s.get(Trial, tid).left_id]
        key = "1" if shown == "attention" else ("5" if shown == "real" else "3")
        # not yet heard: the answers are disabled and their key does nothing
        assert page.locator("form#trial button[name=answer]").first.is_disabled()
        page.keyboard.press(key)
        _progress_stays(page, f"{k} of 4 done")
        page.keyboard.press(" ")  # space plays the clip (served as a WAV the browser decodes, allowed by the CSP)
        page.wait_for_function("() => document.querySelector('form#trial audio').currentTime > 0")
        if k == 0:  # ... pauses it again, and never answers
            page.keyboard.press(" ")
            page.wait_for_function("() => document.querySelector('form#trial audio').paused")
            _progress_stays(page, "0 of 4 done")
            page.keyboard.press(" ")
        page.wait_for_function("() => document.querySelector('form#trial audio').ended")
        # the catch clip lasts as long as the study's other clips: its length does not give it away
        assert page.eval_on_selector("form#trial audio", "a => a.duration") == pytest.approx(0.5, abs=0.01)
        assert not page.locator("form#trial button[name=answer]").first.is_disabled()
        page.keyboard.press(key)
        page.wait_for_selector(f"text={k + 1} of 4 done")
    assert page.is_visible("#done")
    with app.state.sessions() as s:
        res = studies.results(s, s.get(studies.Study, sid))["human"]
    assert res["media"] == "audio" and res["raters_excluded_by_attention_checks"] == 0
    assert res["mos"]["ratings"] == 3
    assert not [e for e in errors if "Content Security Policy" in e], errors
    page.close()


def test_audio_2afc_session_with_the_keyboard_in_the_browser(browser, site):
    """Space plays the left clip, then the right; the arrow keys answer only once both were heard to the end."""
    from genguard.console import studies
    from genguard.console.models import Trial

    app, url, qid, tmp = site
    sid, source = _audio_study(app, tmp, "2afc", gen_n=2, real_n=2, trials=2)
    page = browser.new_page()
    _login(page, url, "rat")
    page.goto(f"{url}/studies/{sid}")
    assert "real recording" in page.inner_text(".question")
    for k in range(3):
        assert page.inner_text("#progress") == f"{k} of 3 done"
        assert page.locator("form#trial audio").count() == 2
        tid = int(page.get_attribute("form#trial", "action").rsplit("/", 1)[-1])
        with app.state.sessions() as s:
            t = s.get(Trial, tid)
            real_side = "left" if source[t.left_id] == "real" else "right"
        key = "ArrowLeft" if real_side == "left" else "ArrowRight"
        page.keyboard.press(" ")
        page.wait_for_function("() => document.querySelector('#clip-left').ended")
        page.keyboard.press(key)  # the right clip is still unheard
        _progress_stays(page, f"{k} of 3 done")
        page.keyboard.press(" ")  # the next in turn: the right clip
        page.wait_for_function("() => document.querySelector('#clip-right').ended")
        page.keyboard.press(key)
        page.wait_for_selector(f"text={k + 1} of 3 done")
    assert page.is_visible("#done")
    with app.state.sessions() as s:
        res = studies.results(s, s.get(studies.Study, sid))["human"]
    assert res["raters_excluded_by_attention_checks"] == 0
    assert res["two_afc"]["trials"] == 2 and res["two_afc"]["share_generated_judged_real"] == 0.0
    page.close()


def test_login_form_rejects_a_wrong_password_visibly(browser, site):
    app, url, qid, tmp = site
    page = browser.new_page()
    page.goto(url + "/login")
    page.fill("input[name=username]", "rev")
    page.fill("input[name=password]", "nope-nope")
    page.click("#login")
    assert "wrong user name or password" in page.inner_text("#error")
    page.goto(f"{url}/queues/{qid}")
    assert re.search(r"/login\?next=", page.url)
    page.close()


def test_log_out_in_the_browser_ends_the_session_for_a_copied_cookie(browser, site):
    app, url, qid, tmp = site
    ctx = browser.new_context()
    page = ctx.new_page()
    _login(page, url, "rev")
    page.goto(f"{url}/queues/{qid}")
    assert "/login" not in page.url
    copied = ctx.cookies()
    assert [c["name"] for c in copied] == ["gg_session"] and copied[0]["httpOnly"]
    page.click("header form button")  # log out
    page.wait_for_load_state()
    assert page.url.startswith(url + "/login")
    thief = browser.new_context()
    thief.add_cookies(copied)
    other = thief.new_page()
    other.goto(f"{url}/queues/{qid}")
    assert re.search(r"/login\?next=", other.url)  # the cookie from before the log-out is no session
    thief.close()
    ctx.close()
