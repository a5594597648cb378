"""Human studies on WAV clips in the console: media detection, bounded and re-encoded clips, catch clips, results.

Clips are attacked the way an outsider would hand them in: forged headers,
over-long and over-large files, a valid WAV carrying a script in an extra
chunk under a hostile name, folders that mix images with clips.
"""
import io
import struct
import wave

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from test_console_api import _png, env, login  # noqa: E402,F401  (env: the console fixture)

from genguard.console import studies  # noqa: E402
from genguard.generators.audio_data import read_wav, write_wav  # noqa: E402

HOSTILE = '<svg onload=alert("clip")>.wav'
SCRIPT = b"<script>alert('chunk')</script>"


def _tone(freq, rate=16_000, seconds=0.5, amp=0.3):
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _wav_with_chunk(x, rate, extra):
    """A valid 16-bit mono WAV with an extra (unknown) RIFF chunk before the data: readers skip it."""
    pcm = np.round(np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    pad = b"\x00" if len(extra) % 2 else b""
    body = (b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"junk" + struct.pack("<I", len(extra)) + extra + pad
            + b"data" + struct.pack("<I", len(pcm)) + pcm)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _stereo_8bit(path, rate, seconds=0.4):
    n = int(rate * seconds)
    x = (128 + 60 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)).astype(np.uint8)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(1)
        w.setframerate(rate)
        w.writeframes(np.repeat(x, 2).tobytes())


def _audio_dirs(tmp):
    """A generated folder with four good clips (one at 4 kHz, in a sub-folder), a hostile-but-valid one and three
    bad ones; a real folder of three (one at 96 kHz, one stereo 8-bit at 44.1 kHz)."""
    gen, real = tmp / "gen", tmp / "real"
    (gen / "sub").mkdir(parents=True)
    real.mkdir()
    for i in range(3):
        write_wav(gen / f"g{i}.wav", _tone(300 + 100 * i), 16_000)
    write_wav(gen / "sub" / "g3.wav", _tone(600, rate=4000), 4000)  # WaveNet's --quick rate: played at 8 kHz
    (gen / HOSTILE).write_bytes(_wav_with_chunk(_tone(700), 16_000, SCRIPT))
    (gen / "forged.wav").write_bytes(b"RIFF\xff\xff\xff\x00WAVEfmt " + struct.pack("<I", 16)
                                     + struct.pack("<HHIIHH", 1, 1, 16000, 32000, 2, 16)
                                     + b"data" + struct.pack("<I", 10 ** 9) + b"\x00" * 64)
    write_wav(gen / "long.wav", np.zeros(31 * 1000, dtype=np.float32), 1000)  # 31 s, a few kilobytes
    with open(gen / "huge.wav", "wb") as fh:  # over the size limit (sparse: costs no disk)
        fh.write(b"RIFF")
        fh.truncate(studies.MAX_WAV_BYTES + 1)
    write_wav(real / "r0.wav", _tone(250), 16_000)
    write_wav(real / "r1.wav", _tone(500, rate=96_000), 96_000)
    _stereo_8bit(real / "r2.wav", 44_100)
    return real, gen


@pytest.fixture()
def later(monkeypatch):
    """``later(seconds)`` moves the studies' clock on: a rater who has listened that long (no test sleeps)."""
    from genguard.console import models

    skip = {"s": 0.0}
    import datetime as dt

    monkeypatch.setattr(studies, "now", lambda: models.now() + dt.timedelta(seconds=skip["s"]))

    def move(seconds):
        skip["s"] += seconds

    return move


def _parse(data):
    with wave.open(io.BytesIO(data), "rb") as w:
        return w.getnchannels(), w.getsampwidth(), w.getframerate(), w.readframes(w.getnframes())


def test_audio_mos_study_skips_bad_clips_serves_reencoded_wavs_and_gives_results(env, later):
    app, tmp = env
    real, gen = _audio_dirs(tmp)
    boss = login(app, "boss")
    made = boss.post("/studies", json={"name": "wavenet MOS", "kind": "mos", "real": str(real),
                                       "generated": str(gen), "trials_per_rater": 20, "attention_checks": 2}).json()
    assert made["media"] == "audio"
    assert made["skipped"] == {"generated": 3, "real": 0}  # forged, too long, too large; the hostile one is valid
    reasons = " | ".join(made["skipped_reasons"])
    assert "forged.wav" in reasons and "long.wav: longer than 30 s" in reasons and "huge.wav" in reasons
    sid = made["study"]
    from genguard.console.models import Stimulus, Trial

    with app.state.sessions() as s:
        stims = {st.id: st for st in s.query(Stimulus).filter_by(study_id=sid)}
    by_source = {k: sorted(st.path.rsplit("/", 1)[-1] for st in stims.values() if st.source == k)
                 for k in ("generated", "real", "attention")}
    assert by_source == {"generated": sorted(["g0.wav", "g1.wav", "g2.wav", "g3.wav", HOSTILE]),
                         "real": ["r0.wav", "r1.wav", "r2.wav"], "attention": ["attention-0.wav", "attention-1.wav"]}

    rat = login(app, "rat")
    info = rat.get(f"/studies/{sid}").json()
    assert info["media"] == "audio" and info["total"] == 10  # every one of the 8 clips, and 2 catch clips
    page = rat.get(f"/studies/{sid}", headers={"Accept": "text/html"}).text
    assert page.count('<audio controls preload="none"') == 1 and "<img" not in page
    assert "How natural and clean does this clip sound?" in page
    assert 'data-media="audio"' in page
    with app.state.sessions() as s:
        mine = s.query(Trial).filter_by(study_id=sid, rater_id=4).order_by(Trial.position).all()
    for t in mine:
        st = stims[t.left_id]
        r = rat.get(f"/studies/{sid}/trials/{t.id}/left")
        assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
        channels, width, rate, frames = _parse(r.content)
        assert channels == 1 and width == 2 and studies.PLAY_RATES[0] <= rate <= studies.PLAY_RATES[1]
        served = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
        assert SCRIPT not in r.content and b"junk" not in r.content  # decoded and re-encoded, never passed on
        if st.source == "attention":
            # the catch clip: loud, and a pure 1 kHz beep between its noise bursts
            assert rate == studies.ATTENTION_RATE and np.sqrt(np.mean(served ** 2)) > 0.3
            beep = served[int(0.2 * rate):int(0.35 * rate)]
            spectrum = np.abs(np.fft.rfft(beep))
            assert abs(np.argmax(spectrum) * rate / len(beep) - 1000) < 10
            score = "1"
        else:
            original, orig_rate = read_wav(st.path)
            if studies.PLAY_RATES[0] <= orig_rate <= studies.PLAY_RATES[1]:
                assert rate == orig_rate and np.max(np.abs(served - original)) < 2 / 32768
            else:  # 4 and 96 kHz: resampled into the rates every browser plays, the same length in seconds
                assert rate == (8000 if orig_rate < 8000 else 48000)
                assert len(served) / rate == pytest.approx(len(original) / orig_rate)
            score = "5" if st.source == "real" else "2"
        later(len(served) / rate)
        assert rat.post(f"/studies/{sid}/trials/{t.id}", data={"answer": score}).status_code == 200
    # another rater cannot fetch this rater's clips
    assert login(app, "rat2").get(f"/studies/{sid}/trials/{mine[0].id}/left").status_code == 404
    res = boss.get(f"/studies/{sid}/results.json").json()["human"]
    assert res["media"] == "audio" and res["stimuli_skipped"] == {"generated": 3, "real": 0}
    assert res["raters_excluded_by_attention_checks"] == 0
    m = res["mos"]
    assert m["by_source"]["real"]["mos"] == 5.0 and m["by_source"]["generated"]["mos"] == 2.0
    assert m["generated_minus_real"]["difference"] == -3.0 and m["ratings"] == 8
    home = boss.get("/", headers={"Accept": "text/html"}).text
    assert "3 unreadable file(s) left out" in home


def test_audio_2afc_study_pairs_catch_clips_with_real_recordings(env, later):
    app, tmp = env
    real, gen = _audio_dirs(tmp)
    boss = login(app, "boss")
    sid = boss.post("/studies", json={"name": "a", "kind": "2afc", "real": str(real), "generated": str(gen),
                                      "trials_per_rater": 4, "attention_checks": 1}).json()["study"]
    from genguard.console.models import Stimulus, Trial

    with app.state.sessions() as s:
        source = {st.id: st.source for st in s.query(Stimulus).filter_by(study_id=sid)}
    rat = login(app, "rat")
    page = rat.get(f"/studies/{sid}", headers={"Accept": "text/html"}).text
    assert page.count("<audio controls") == 2 and "real recording" in page and "<img" not in page
    with app.state.sessions() as s:
        mine = s.query(Trial).filter_by(study_id=sid, rater_id=4).all()
    assert len(mine) == 5 and sum(t.attention for t in mine) == 1
    for t in mine:  # an attentive rater who is fooled by every generated clip
        sides = {source[t.left_id]: "left", source[t.right_id]: "right"}
        if t.attention:
            assert set(sides) == {"attention", "real"}
        want = sides["real"] if t.attention else sides["generated"]
        for side in ("left", "right"):
            assert rat.get(f"/studies/{sid}/trials/{t.id}/{side}").headers["content-type"] == "audio/wav"
        later(1.0)  # two clips of 0.5 s
        assert rat.post(f"/studies/{sid}/trials/{t.id}", data={"answer": want}).status_code == 200
    two = boss.get(f"/studies/{sid}/results.json").json()["human"]["two_afc"]
    assert two["trials"] == 4 and two["share_generated_judged_real"] == 1.0


def test_mixed_or_unreadable_folders_are_refused_with_one_line(env):
    app, tmp = env
    boss = login(app, "boss")
    mixed, imgs, wavs, bad = (tmp / n for n in ("mixed", "imgs", "wavs", "bad"))
    for d in (mixed, imgs, wavs, bad):
        d.mkdir()
    _png(mixed / "a.png")
    write_wav(mixed / "b.wav", _tone(440), 16_000)
    _png(imgs / "a.png")
    write_wav(wavs / "b.wav", _tone(440), 16_000)
    (bad / "x.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    (bad / "y.wav").write_bytes(b"not a wav at all")

    def refused(**form):
        r = boss.post("/studies", json={"name": "x", "kind": "mos", **form})
        assert r.status_code == 400
        err = r.json()["error"]
        assert "\n" not in err
        return err

    err = refused(generated=str(mixed))
    assert err.startswith(f"{mixed}: ") and "both images" in err and "WAV" in err
    err = refused(generated=str(wavs), real=str(imgs))
    assert err.startswith(f"{imgs}: holds images but {wavs} holds WAV files")
    err = refused(generated=str(imgs), real=str(wavs))
    assert err.startswith(f"{wavs}: holds WAV files but {imgs} holds images")
    err = refused(generated=str(bad))
    assert err.startswith(f"{bad}: no readable WAV file (2 skipped")
    err = refused(generated=str(tmp / "nowhere"))
    assert "not a folder" in err
    from genguard.console.models import Study

    with app.state.sessions() as s:
        assert s.query(Study).count() == 0  # nothing half-made is left behind
    # an image study is still an image study, served as PNG
    made = boss.post("/studies", json={"name": "i", "kind": "mos", "generated": str(imgs)}).json()
    assert made["media"] == "image" and made["skipped"] == {"generated": 0, "real": 0}


def test_catch_clips_are_loud_noise_and_1khz_beeps_written_once_per_study(tmp_path):
    paths = studies._attention_clips(tmp_path / "study-1", 3, seconds=1.3)
    assert [p.name for p in paths] == ["attention-0.wav", "attention-1.wav", "attention-2.wav"]
    clips = [read_wav(p)[0] for p in paths]
    rate = studies.ATTENTION_RATE
    assert all(len(c) == int(1.3 * rate) for c in clips)
    assert not np.allclose(clips[0], clips[1])  # each catch clip has noise of its own
    noise = clips[0][: int(0.15 * rate)]
    flatness = np.exp(np.mean(np.log(np.abs(np.fft.rfft(noise))[1:] ** 2 + 1e-12))) / np.mean(
        np.abs(np.fft.rfft(noise))[1:] ** 2)
    assert flatness > 0.3 and np.sqrt(np.mean(noise ** 2)) > 0.4  # loud and broadband: white noise


def test_an_audio_answer_waits_until_the_clips_could_be_heard_through(env, later):
    """A rater who answers without playing, after playing one clip of two, or before the clips' length has passed
    is refused; replaying does not restart the clock; then the answer counts."""
    app, tmp = env
    real, gen = _audio_dirs(tmp)
    boss = login(app, "boss")
    sid = boss.post("/studies", json={"name": "a", "kind": "2afc", "real": str(real), "generated": str(gen),
                                      "trials_per_rater": 2, "attention_checks": 0}).json()["study"]
    from genguard.console.models import Trial

    rat = login(app, "rat")
    rat.get(f"/studies/{sid}")
    with app.state.sessions() as s:
        t = s.query(Trial).filter_by(study_id=sid, rater_id=4).order_by(Trial.position).first()
    url = f"/studies/{sid}/trials/{t.id}"
    r = rat.post(url, data={"answer": "left"})
    assert r.status_code == 400 and "play the left and the right clip before answering" in r.text
    lengths = {}
    for side in ("left", "right"):
        lengths[side] = studies.clip_seconds(rat.get(f"{url}/{side}").content)
        if side == "left":
            r = rat.post(url, data={"answer": "left"})
            assert r.status_code == 400 and "play the right clip" in r.text
    need = sum(lengths.values())
    assert 0.89 < need < 1.01  # the clips of _audio_dirs last 0.5 s (the stereo real one 0.4 s)
    r = rat.post(url, data={"answer": "left"})
    assert r.status_code == 400 and "before the clips could be heard through" in r.text
    later(need / 2)
    rat.get(f"{url}/left")  # a replay: the first sending counts
    assert rat.post(url, data={"answer": "left"}).status_code == 400
    later(need / 2)
    assert rat.post(url, data={"answer": "left"}).status_code == 200
    with app.state.sessions() as s:
        t = s.get(Trial, t.id)
        assert t.answer == "left" and t.left_sent_at is not None and t.right_sent_at is not None
    # an image study's answers need no listening
    imgs = tmp / "imgs"
    imgs.mkdir()
    for i in range(2):
        _png(imgs / f"{i}.png", value=i)
    sid2 = boss.post("/studies", json={"name": "i", "kind": "mos", "generated": str(imgs),
                                       "attention_checks": 0}).json()["study"]
    tid = rat.get(f"/studies/{sid2}").json()["trial"]
    assert rat.post(f"/studies/{sid2}/trials/{tid}", data={"answer": "3"}).status_code == 200


def test_catch_clips_last_as_long_as_the_studys_median_clip(env):
    app, tmp = env
    gen = tmp / "g"
    gen.mkdir()
    for i, seconds in enumerate((0.6, 0.9, 2.5)):
        write_wav(gen / f"{i}.wav", _tone(300 + 50 * i, seconds=seconds), 16_000)
    boss = login(app, "boss")
    sid = boss.post("/studies", json={"name": "m", "kind": "mos", "generated": str(gen),
                                      "attention_checks": 2}).json()["study"]
    from genguard.console.models import Stimulus

    with app.state.sessions() as s:
        att = [st.path for st in s.query(Stimulus).filter_by(study_id=sid, source="attention")]
    assert len(att) == 2
    for p in att:
        x, rate = read_wav(p)
        assert len(x) / rate == pytest.approx(0.9, abs=1e-3)  # the median of 0.6, 0.9 and 2.5 s
