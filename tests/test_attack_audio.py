"""An outside attacker's checks on the audio paths: what the DP record publishes, hostile WAV files against every
WAV reader, one bad file among good ones in the CLI, and hostile clips against the audio mark's false-positive claim."""
import json
from pathlib import Path
import re
import struct

import numpy as np
import pytest

from genguard.generators.base import Dataset

TINY = dict(sample_rate=2000, clip_seconds=0.5, channels=8, hidden=16, n_layers=4, dilation_cycle=4, crop=64,
            epochs=1, batch_size=16, lr=3e-3)


def _clips(n, seed=0):
    """``n`` labelled clips of tone and noise at 2 kHz (no speech synthesis: the DP record is about n, not content)."""
    rng = np.random.default_rng(seed)
    t = np.arange(1000) / 2000
    x = np.stack([0.3 * np.sin(2 * np.pi * (200 + 40 * (i % 5)) * t) + 0.05 * rng.standard_normal(1000)
                  for i in range(n)]).astype(np.float32)
    return Dataset(x=x, modality="audio", name="tones", groups={"label": np.arange(n) % 2},
                   group_names={"label": ["a", "b"]}, metadata={"sample_rate": 2000})


# --------------------------------------------------------------------------------------------
# the DP record must not state the number of training records
# --------------------------------------------------------------------------------------------
def _published_unit(gen, data):
    from genguard.guardrails.privacy import PrivateTrainer, build_ledger

    gen.fit(data, trainer=PrivateTrainer(target_epsilon=8.0), progress=False)
    ledger = build_ledger(gen.training_report_, generator=gen.name, run_id="r", seed=0, weights_path=None)
    return gen.training_report_["privacy_unit"], ledger["privacy_unit"], ledger["guarantee"]


def test_wavenet_dp_record_does_not_state_the_record_count():
    """epsilon is for add/remove-one neighbours, so the exact n would tell whether one clip was in: two neighbouring
    data sets (n and n+1 clips, same batch count) must publish the same privacy unit, naming neither count."""
    from genguard.generators.wavenet import WaveNet

    a = _published_unit(WaveNet(**TINY, seed=0), _clips(29))
    b = _published_unit(WaveNet(**TINY, seed=0), _clips(30))
    assert a[0] == b[0] and a[1] == b[1], (a, b)
    for text in a:
        assert not re.search(r"\b(29|30)\b", text), text
    assert "one audio clip" in a[1]


def test_text_dp_record_does_not_state_window_or_passage_counts():
    """The same for ByteGPT, whose unit is a window: the window and passage counts are functions of the private text."""
    from genguard.generators.text import ByteGPT

    def text_data(n):
        return Dataset(x=[f"passage {i}: " + "the quick brown fox jumps. " * 3 for i in range(n)], modality="text",
                       name="t")

    kw = dict(n_layer=1, n_embd=16, n_head=2, block_size=32, epochs=1, batch_size=16, sample_length=8)
    a = _published_unit(ByteGPT(**kw), text_data(23))
    b = _published_unit(ByteGPT(**kw), text_data(24))
    assert a[1] == b[1], (a, b)
    assert not re.search(r"\(\d+ windows", a[1]) and "32-byte window" in a[1]


def _published(n, **trainer):
    from genguard.generators.wavenet import WaveNet
    from genguard.guardrails.privacy import PrivateTrainer, build_ledger

    gen = WaveNet(**TINY, seed=0).fit(_clips(n), trainer=PrivateTrainer(target_epsilon=8.0, **trainer),
                                      progress=False)
    ledger = build_ledger(gen.training_report_, generator=gen.name, run_id="r", seed=0, weights_path=None)
    return {k: v for k, v in ledger.items() if k not in ("created", "package_versions")}


def test_neighbours_across_a_batch_boundary_publish_the_same_ledger_with_a_public_size():
    """q = 1 / ceil(n / B) publishes ceil(n / B): 32 and 33 clips (B = 16) give different sample rates, step counts,
    noise multipliers and epsilons. With a public stand-in for n, every published figure is the same."""
    a, b = _published(32), _published(33)
    assert {k for k in a if a[k] != b[k]} >= {"sample_rate", "steps", "noise_multiplier", "epsilon"}
    a, b = _published(32, public_size=48), _published(33, public_size=48)
    assert a == b, {k: (a[k], b[k]) for k in a if a[k] != b[k]}
    assert a["sample_rate"] == pytest.approx(1 / 3) and a["steps"] == 3


def test_public_size_is_refused_where_it_cannot_hold():
    from genguard.guardrails.privacy import PrivacyError, PrivateTrainer

    for bad in (0, -5, 2.5, True):
        with pytest.raises(PrivacyError, match="public_size"):
            PrivateTrainer(public_size=bad)
    with pytest.raises(PrivacyError, match="Poisson"):
        PrivateTrainer(public_size=100, poisson_sampling=False)
    with pytest.raises(PrivacyError, match="Poisson"):
        PrivateTrainer(public_size=100, grad_sample_mode="opacus")
    from genguard.generators.wavenet import WaveNet

    # delta 0.009 is below 1/10 (the public size) but not below 1/200 (the private records): refused, to the operator
    with pytest.raises(PrivacyError, match="1/n"):
        WaveNet(**TINY, seed=0).fit(_clips(200), trainer=PrivateTrainer(public_size=10, delta=0.009), progress=False)


# --------------------------------------------------------------------------------------------
# forged chunk sizes and chunk floods, against every WAV reader
# --------------------------------------------------------------------------------------------
def _riff(body: bytes) -> bytes:
    return b"RIFF" + struct.pack("<I", 4 + len(body)) + b"WAVE" + body


def _fmt_data(seconds=1.0, rate=8000):
    from genguard.guardrails.provenance.wavfile import encode_wav

    t = np.arange(int(seconds * rate)) / rate
    good = encode_wav(0.3 * np.sin(2 * np.pi * 440 * t), rate)
    return good[12:36], good[36:]  # the fmt chunk (8 + 16 bytes), the data chunk


def _hostile(kind: str) -> bytes:
    fmt, data = _fmt_data()
    empty = b"junk" + struct.pack("<I", 0)
    if kind == "gigabyte_fmt":  # the fmt chunk's own header claims 1 GiB
        return _riff(b"fmt " + struct.pack("<I", 1 << 30) + fmt[8:] + data)
    if kind == "gigabyte_chunk_before_fmt":
        return _riff(b"LIST" + struct.pack("<I", 1 << 30) + b"INFOjunk" + fmt + data)
    if kind == "chunk_flood_before_samples":
        return _riff(empty * 5000 + fmt + data)
    if kind == "chunk_flood_after_samples":  # the samples read fine; c2pa would walk the rest
        return _riff(fmt + data + empty * 5000)
    raise AssertionError(kind)


HOSTILE = ["gigabyte_fmt", "gigabyte_chunk_before_fmt", "chunk_flood_before_samples", "chunk_flood_after_samples"]
_WHY = {"gigabyte_fmt": "declares 1,073,741,824 bytes", "gigabyte_chunk_before_fmt": "declares 1,073,741,824 bytes",
        "chunk_flood_before_samples": "1,024 RIFF chunks", "chunk_flood_after_samples": "1,024 RIFF chunks"}


def _timed(fn):
    import time
    import tracemalloc

    tracemalloc.start()
    t = time.perf_counter()
    try:
        return fn(), None
    except Exception as exc:  # noqa: BLE001 - the test looks at which exception and its message
        return None, exc
    finally:
        elapsed = time.perf_counter() - t
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < 2.0, f"{elapsed:.1f} s"
        assert peak < 32 << 20, f"peak {peak / 1e6:.0f} MB"


@pytest.mark.parametrize("kind", [k for k in HOSTILE if k != "chunk_flood_after_samples"])
def test_sample_readers_refuse_forged_sizes_and_chunk_floods(tmp_path, kind):
    """The bytes reader (tag/verify/marking/watermark), the path reader (audits' --samples WAVDIR, training folders)
    and the review console's clip reader: one line naming the file, fast, within bounded memory."""
    from genguard.console.studies import decode_clip
    from genguard.generators import GeneratorError
    from genguard.generators.audio_data import read_wav as read_wav_path
    from genguard.guardrails.provenance.wavfile import WavError, read_wav

    p = tmp_path / f"{kind}.wav"
    p.write_bytes(_hostile(kind))
    for fn, etype in ((lambda: read_wav(p.read_bytes(), str(p)), WavError), (lambda: read_wav_path(p), GeneratorError),
                      (lambda: decode_clip(p), GeneratorError)):
        out, exc = _timed(fn)
        assert isinstance(exc, etype), (out, exc)
        msg = str(exc)
        assert str(p) in msg and "\n" not in msg and _WHY[kind] in msg, msg


@pytest.mark.parametrize("kind", HOSTILE)
def test_provenance_readers_refuse_forged_sizes_and_chunk_floods(home, tmp_path, kind):
    """verify (c2pa's reader too: it walks every chunk through a Python callback), tag and marking check."""
    from genguard.guardrails.provenance import KeyStore, ProvenanceError, tag_file, verify_file
    from genguard.guardrails.provenance.marking import check_outputs

    keys = KeyStore.load_or_create()
    p = tmp_path / f"{kind}.wav"
    p.write_bytes(_hostile(kind))
    rec, exc = _timed(lambda: verify_file(p, keys=keys))
    assert exc is None and rec["verdict"] == "error", rec
    assert rec["reason"].startswith(str(p)) and _WHY[kind] in rec["reason"], rec["reason"]
    _, exc = _timed(lambda: tag_file(p, tmp_path / "out.wav", claim={"generator": "g", "run_id": "r"}, keys=keys))
    assert isinstance(exc, ProvenanceError) and str(p) in str(exc) and _WHY[kind] in str(exc), exc
    assert not (tmp_path / "out.wav").exists()
    res, exc = _timed(lambda: check_outputs([p], sample=0, keys=keys))
    assert exc is None, exc
    (f,) = res["files"]
    assert f.get("error") and str(p) in f["error"] and _WHY[kind] in f["error"], f


def test_a_real_wav_with_a_few_extra_chunks_still_reads(tmp_path):
    """The limits refuse floods, not ordinary files: LIST/INFO, a trailing odd-sized chunk and a truncated data
    chunk (cut off recording) all read as before."""
    from genguard.generators.audio_data import read_wav as read_wav_path
    from genguard.guardrails.provenance.wavfile import MAX_CHUNKS, read_wav

    fmt, data = _fmt_data()
    info = b"LIST" + struct.pack("<I", 12) + b"INFOISFT" + struct.pack("<I", 0)
    odd = b"note" + struct.pack("<I", 3) + b"abc\x00"
    ok = _riff(info + fmt + (b"junk" + struct.pack("<I", 0)) * (MAX_CHUNKS - 4) + data + odd)
    w = read_wav(ok, "ok")
    assert w.samples.shape == (8000, 1) and not w.note
    cut = _riff(fmt + data)[:-1000]
    w = read_wav(cut, "cut")
    assert w.samples.shape[0] == 7500 and "declared data size" in w.note
    p = tmp_path / "ok.wav"
    p.write_bytes(ok)
    x, rate = read_wav_path(p)
    assert rate == 8000 and x.shape == (8000,) and np.abs(x).max() > 0.29


# --------------------------------------------------------------------------------------------
# one bad audio file among good ones: named on its own line, the others done, exit 2
# --------------------------------------------------------------------------------------------
def _cli(args, capsys):
    from genguard.cli import main

    with pytest.raises(SystemExit) as ex:
        main([str(a) for a in args])
    cap = capsys.readouterr()
    return ex.value.code, cap.out, cap.err


@pytest.fixture
def mixed_folder(tmp_path):
    """Two good clips, a truncated WAV, a FIFO and a folder, all named *.wav (what `folder/*.wav` expands to)."""
    import os

    from genguard.guardrails.provenance.wavfile import encode_wav

    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(3)
    t = np.arange(16000) / 8000
    for name in ("a.wav", "z.wav"):
        (d / name).write_bytes(encode_wav(0.3 * np.sin(2 * np.pi * 300 * t) + 0.05 * rng.standard_normal(16000), 8000))
    (d / "b_truncated.wav").write_bytes((d / "a.wav").read_bytes()[:30])
    os.mkfifo(d / "c_fifo.wav")
    (d / "d_folder.wav").mkdir()
    bad = [d / "b_truncated.wav", d / "c_fifo.wav", d / "d_folder.wav"]
    return d, [d / "a.wav", d / "z.wav"], bad


def _error_lines(err):
    return [ln for ln in err.splitlines() if ln.startswith("genguard: error: ")]


def test_tag_names_each_bad_file_and_tags_the_others(home, mixed_folder, tmp_path, capsys):
    from genguard.guardrails.provenance import KeyStore, verify_file

    d, good, bad = mixed_folder
    code, out, err = _cli(["tag", *sorted(d.iterdir()), "--out", tmp_path / "o", "--generator", "g", "--run-id", "r",
                           "--json", tmp_path / "t.json"], capsys)
    assert code == 2, err
    lines = _error_lines(err)
    assert len(lines) == len(bad), err
    for p, ln in zip(bad, lines):  # one line per bad file, in the order given, each naming it
        assert str(p) in ln and all(str(q) not in ln for q in bad if q != p), ln
    assert sorted(q.name for q in (tmp_path / "o").iterdir()) == ["a.wav", "z.wav"]
    keys = KeyStore.load_or_create()
    for p in good:
        assert verify_file(tmp_path / "o" / p.name, keys=keys)["verdict"] == "intact"
    rows = json.loads((tmp_path / "t.json").read_text())["files"]
    assert [bool(r.get("error")) for r in rows] == [False, True, True, True, False]


@pytest.mark.parametrize("how", ["folder", "files"])
def test_verify_and_marking_check_name_each_bad_audio_file(home, mixed_folder, tmp_path, capsys, how):
    """Given the folder, the FIFO must not silently vanish from the results (the folder named x.wav is a folder
    and is searched); given the files, each of the three is named."""
    d, good, bad = mixed_folder
    args = [d] if how == "folder" else sorted(d.iterdir())
    named = bad[:2] if how == "folder" else bad
    for cmd in (["verify"], ["marking", "check", "--sample", "0"]):
        code, out, err = _cli([*cmd, *args, "--json", tmp_path / "r.json"], capsys)
        assert code == 2, (cmd, err)
        lines = _error_lines(err)
        assert len(lines) == len(named), (cmd, err)
        for p, ln in zip(named, lines):
            assert str(p) in ln, (cmd, ln)
        res = json.loads((tmp_path / "r.json").read_text())["files"]
        key = "path"
        ok = [r for r in res if not (r.get("error") or r.get("verdict") == "error")]
        assert sorted(Path(r[key]).name for r in ok) == ["a.wav", "z.wav"], (cmd, res)


# --------------------------------------------------------------------------------------------
# hostile files must not make things happen: no network, no false mark, no crash
# --------------------------------------------------------------------------------------------
@pytest.fixture
def remote_wav(home, tmp_path):
    """A WAV whose C2PA reference points at a loopback server that records every request (a remote manifest; tagged
    by genguard it becomes a remote ingredient)."""
    import http.server
    import io
    import threading

    import c2pa

    from genguard.guardrails.provenance import KeyStore
    from genguard.guardrails.provenance import manifest as mf
    from genguard.guardrails.provenance.wavfile import encode_wav

    hits: list[str] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            hits.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *a):
            pass

    srv = http.server.HTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{srv.server_address[1]}/m.c2pa"
    keys = KeyStore.load_or_create()
    t = np.arange(16000) / 8000
    wav = encode_wav(0.3 * np.sin(2 * np.pi * 300 * t) + 0.02 * np.random.default_rng(0).standard_normal(16000), 8000)
    man = mf.build_manifest({"generator": "g", "run_id": "r", "private": False, "epsilon": None, "delta": None,
                             "ledger_sha256": None}, title="remote.wav")
    out = io.BytesIO()
    with c2pa.Builder(man, context=mf._signing_context(False)) as b, keys.signer() as s:
        b.set_no_embed()
        b.set_remote_url(url)
        b.sign(s, "audio/wav", io.BytesIO(wav), out)
    p = tmp_path / "remote.wav"
    p.write_bytes(out.getvalue())
    # the control: with c2pa's defaults this file makes the reader call the server, so a silent test would mean
    # something
    try:
        c2pa.Reader("audio/wav", io.BytesIO(p.read_bytes()))
    except c2pa.C2paError:
        pass
    assert hits, "control failed: a default c2pa Reader made no request"
    hits.clear()
    yield p, url, hits, keys
    srv.shutdown()


def test_remote_manifest_and_remote_ingredient_in_a_wav_are_not_fetched(remote_wav, tmp_path):
    from genguard.guardrails.provenance import tag_file, verify_file
    from genguard.guardrails.provenance.marking import check_outputs

    p, url, hits, keys = remote_wav
    r = verify_file(p, keys=keys)
    assert r["verdict"] == "remote" and url in r["reason"] and not r["watermark"].get("found")
    tagged = tag_file(p, tmp_path / "t.wav", claim={"generator": "g", "run_id": "r2"}, keys=keys)
    r = verify_file(tagged, keys=keys)  # the remote file is now a parentOf ingredient whose manifest is remote
    ing = r["history"]["tree"]["ingredients"]
    assert r["verdict"] == "intact" and ing[0]["title"] == "remote.wav" and not ing[0]["has_manifest"], r
    check_outputs([p, tagged], sample=0, keys=keys)
    assert hits == [], f"genguard reached the network: {hits}"


@pytest.mark.skipif(__import__("shutil").which("strace") is None, reason="strace not installed")
def test_audio_commands_make_no_inet_connect(remote_wav, tmp_path):
    """At the system-call level (c2pa-rs is native code): verify, tag (remote ingredient), verify of the result and
    marking check, in one traced process."""
    import os
    import subprocess
    import sys

    p, url, hits, keys = remote_wav
    log = tmp_path / "strace.log"
    subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(log), sys.executable, "-c",
                    "import socket; socket.socket().connect_ex(('127.0.0.1', 9))"], check=True, timeout=60)
    assert "AF_INET" in log.read_text()  # the control: the tracing sees a connect when there is one
    out = tmp_path / "o"
    script = ("import sys\nfrom genguard.cli import main\ncodes = []\n"
              f"for args in ([{'verify'!r}, {str(p)!r}], ['tag', {str(p)!r}, '--out', {str(out)!r}, '--run-id', 'r3'],"
              f" ['verify', {str(out / 'remote.wav')!r}], ['marking', 'check', '--sample', '0', {str(p)!r},"
              f" {str(out / 'remote.wav')!r}]):\n"
              "    try:\n        main(args)\n    except SystemExit as e:\n        codes.append(e.code)\n"
              "print('codes', codes)\n")
    env = {**os.environ, "GENGUARD_NO_PROGRESS": "1"}
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log),
                           sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=env)
    assert "codes [0, 0, 0, 1]" in proc.stdout, (proc.stdout[-2000:], proc.stderr[-2000:])
    inet = [ln for ln in log.read_text().splitlines() if "AF_INET" in ln]
    assert inet == [] and hits == [], (inet[:5], hits)


def _hostile_clips():
    from genguard.guardrails.provenance.wavfile import encode_wav

    rng = np.random.default_rng(11)
    nan = np.full(16000, np.nan)
    nan[::3] = 0.1
    return {
        "silence.wav": encode_wav(np.zeros(3 * 16000), 16000),
        "full_scale_noise.wav": encode_wav(rng.uniform(-1, 1, 3 * 16000), 16000),
        "clipped_noise.wav": encode_wav(np.sign(rng.standard_normal(3 * 16000)), 16000),
        "full_scale_noise_8k_stereo.wav": encode_wav(rng.uniform(-1, 1, (3 * 8000, 2)), 8000),
        "nan_floats.wav": encode_wav(nan, 16000, fmt="float", bits=32),
        "one_sample.wav": encode_wav(np.array([0.9]), 16000),
        "empty.wav": encode_wav(np.zeros(0), 16000),
    }


def test_hostile_unmarked_clips_are_never_marked_and_never_crash(home, tmp_path):
    from genguard.guardrails.provenance import KeyStore, verify_file
    from genguard.guardrails.provenance.marking import check_outputs

    keys = KeyStore.load_or_create()
    paths = []
    for name, data in _hostile_clips().items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(data)
    for p in paths:
        r = verify_file(p, keys=keys)
        assert r["verdict"] in ("untagged", "error") and not r["watermark"].get("found"), (p.name, r)
        if r["verdict"] == "error":
            assert r["reason"].startswith(str(p)) and "\n" not in r["reason"]
    assert verify_file(tmp_path / "nan_floats.wav", keys=keys)["verdict"] == "error"  # NaN refused, named
    res = check_outputs(paths, sample=0, keys=keys)
    for f in res["files"]:
        if f.get("error"):
            assert str(f["path"]) in f["error"], f
            continue
        (wm,) = [ln for ln in f["lines"] if ln["name"] == "imperceptible watermark present"]
        assert wm["status"] != "met", (f["path"], wm)


def test_detector_on_hostile_arrays_with_many_keys():
    """Straight to the detector, arrays no file reader would pass (NaN, infinities, one sample, DC at full scale):
    no exception, never found, across 16 keys."""
    from genguard.guardrails.provenance.audio_watermark import AudioWatermark

    rng = np.random.default_rng(5)
    arrays = [np.full(16000, np.nan), np.r_[np.zeros(8000), np.inf, np.zeros(8000)], np.array([1.0]),
              np.ones(32000), np.zeros(32000), rng.uniform(-1, 1, 32000), np.sign(rng.standard_normal(32000)),
              np.full((16000, 2), 1e30)]
    for k in range(16):
        det = AudioWatermark(bytes([k]) * 32)
        for x in arrays:
            r = det.detect(x, 16000)
            assert r["found"] is False, (k, x[:3], r)
