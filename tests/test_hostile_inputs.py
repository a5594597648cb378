"""Hostile and huge input against every reader and command: exit 2 with one line, or a correct result; never a
crash, a hang or unbounded memory; earlier outputs intact.

The corpus is generated here: header decompression bombs in every format Pillow opens (PNG, GIF, BMP, TIFF,
JPEG, WebP, AVIF, plus HEIC, which this build cannot decode), truncations, wrong types, deep nesting, special
files (FIFO, device, socket, symlink loop), extreme numbers. Property-based tests (hypothesis) cover the readers
themselves. Each CLI case runs in-process under an alarm (a hang fails the case instead of the suite); the
bombs also run in a subprocess whose peak RSS is measured.
"""
from __future__ import annotations

import io
import json
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from genguard.cli import main

CASE_SECONDS = 20  # alarm per case: far above what any case takes (most run in well under a second)
SUBPROCESS_RSS_MB = 1500  # peak RSS allowed to a bomb run in a fresh process (torch included)


# --------------------------------------------------------------------------------------------------
# hostile file builders
# --------------------------------------------------------------------------------------------------
def _photo(h=64, w=80, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def encode(fmt, arr=None, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_photo() if arr is None else arr).save(buf, fmt, **kw)
    return buf.getvalue()


def png_bomb(w=100_000, h=100_000) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def gif_bomb(w=65535, h=65535) -> bytes:
    return (b"GIF89a" + struct.pack("<HH", w, h) + b"\x00\x00\x00," + struct.pack("<HHHH", 0, 0, w, h)
            + b"\x00\x02\x02\x44\x01\x00;")


def bmp_bomb(w=60_000, h=60_000) -> bytes:
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + 16, 0, 0, 54) + info + b"\x00" * 16


def tiff_bomb(w=100_000, h=100_000) -> bytes:
    tags = [(256, 4, 1, w), (257, 4, 1, h), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 4, 1, 8 + 2 + 12 * 8 + 4), (278, 4, 1, h), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + b"\x00" * 4
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\x00" * 16


def jpeg_bomb(w=65_000, h=65_000) -> bytes:
    data = bytearray(encode("JPEG", quality=90))
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def webp_bomb(w=16383, h=16383) -> bytes:
    """A lossless WebP whose VP8L header claims the largest WebP canvas (268 MP) over a few bytes of data."""
    body = bytearray(encode("WEBP", lossless=True)[20:])
    rest = int.from_bytes(body[1:5], "little") & ~((1 << 28) - 1)
    body[1:5] = ((w - 1) | ((h - 1) << 14) | rest).to_bytes(4, "little")
    chunk = b"VP8L" + struct.pack("<I", len(body)) + bytes(body) + (b"\x00" if len(body) % 2 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def webp_vp8x_bomb(w=16383, h=16383) -> bytes:
    vp8x = (b"VP8X" + struct.pack("<I", 10) + b"\x00" * 4 + (w - 1).to_bytes(3, "little")
            + (h - 1).to_bytes(3, "little"))
    rest = vp8x + encode("WEBP", lossless=True)[12:]
    return b"RIFF" + struct.pack("<I", 4 + len(rest)) + b"WEBP" + rest


def avif_bomb(w=60_000, h=60_000) -> bytes:
    data = bytearray(encode("AVIF", quality=60))
    i = data.index(b"ispe")
    data[i + 8:i + 16] = struct.pack(">II", w, h)
    return bytes(data)


def heic_fake() -> bytes:
    return struct.pack(">I", 24) + b"ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64


BOMBS = {"bomb.png": png_bomb, "bomb.gif": gif_bomb, "bomb.bmp": bmp_bomb, "bomb.tif": tiff_bomb,
         "bomb.jpg": jpeg_bomb, "bomb.webp": webp_bomb, "bomb_vp8x.webp": webp_vp8x_bomb, "bomb.avif": avif_bomb,
         "fake.heic": heic_fake}


def _bad_images() -> dict[str, bytes]:
    """Name -> content of images that must be refused in one line (bombs, truncations, garbage)."""
    out = {name: f() for name, f in BOMBS.items()}
    for fmt, ext, kw in (("PNG", "png", {}), ("JPEG", "jpg", {"quality": 90}), ("WEBP", "webp", {"quality": 80}),
                         ("GIF", "gif", {}), ("TIFF", "tif", {}), ("AVIF", "avif", {"quality": 60})):
        full = encode(fmt, **kw)
        for frac in (0.02, 0.5):
            out[f"trunc{int(frac * 100)}.{ext}"] = full[: max(4, int(len(full) * frac))]
    out.update({"empty.png": b"", "garbage.png": os.urandom(512), "text.jpg": b"hello, not an image\n",
                "signature_only.png": b"\x89PNG\r\n\x1a\n"})
    return out


def _odd_but_valid_images() -> dict[str, bytes]:
    """Images that must give a correct result (exit 0): tiny, thin, 16-bit, palette+alpha, CMYK, animated."""
    out = {"one.png": encode("PNG", np.zeros((1, 1, 3), np.uint8)),
           "thin.png": encode("PNG", _photo(1, 500)),
           "tall.png": encode("PNG", _photo(500, 1))}
    b = io.BytesIO()
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)).save(b, "PNG")
    out["sixteen.png"] = b.getvalue()
    b = io.BytesIO()
    Image.fromarray(_photo()).convert("P").save(b, "PNG", transparency=0)
    out["palette_alpha.png"] = b.getvalue()
    b = io.BytesIO()
    Image.fromarray(_photo()).convert("CMYK").save(b, "JPEG")
    out["cmyk.jpg"] = b.getvalue()
    b = io.BytesIO()
    frames = [Image.fromarray(_photo(seed=i)) for i in range(3)]
    frames[0].save(b, "GIF", save_all=True, append_images=frames[1:])
    out["animated.gif"] = b.getvalue()
    return out


def _special(kind: str, d: Path) -> Path:
    p = d / f"special_{kind}.png"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        s.close()
    elif kind == "device":
        p.symlink_to("/dev/zero")  # an endless "file": reading it whole would never finish
    elif kind == "loop":
        p.symlink_to(p)
    elif kind == "dangling":
        p.symlink_to(d / "nowhere.png")
    elif kind == "folder":
        p.mkdir()
    return p


SPECIALS = ("fifo", "socket", "device", "loop", "dangling", "folder")


# --------------------------------------------------------------------------------------------------
# running the CLI
# --------------------------------------------------------------------------------------------------
class _Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise _Timeout()


def run_cli(argv, capsys, seconds=CASE_SECONDS):
    """(exit code, stdout, stderr, seconds) of ``genguard argv`` in-process, under an alarm."""
    capsys.readouterr()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    t0 = time.monotonic()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except _Timeout:
        pytest.fail(f"genguard {' '.join(map(str, argv))} did not finish within {seconds} s (hang)")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    out = capsys.readouterr()
    return code, out.out, out.err, time.monotonic() - t0


def error_lines(err: str) -> list[str]:
    """stderr lines that report a problem (notes and warnings are informational)."""
    return [l for l in err.splitlines() if l.strip() and not l.startswith(("genguard: note:", "genguard: warning:"))]


def assert_clean_failure(code, err, name: str | None = None, n_lines: int = 1):
    assert "Traceback" not in err and "internal error" not in err, err
    assert code == 2, err
    lines = error_lines(err)
    assert len(lines) == n_lines, err
    if name is not None:
        assert name in lines[0], err


def _snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    bad = {}
    for name, data in _bad_images().items():
        (d / name).write_bytes(data)
        bad[name] = d / name
    good = {}
    for name, data in _odd_but_valid_images().items():
        (d / name).write_bytes(data)
        good[name] = d / name
    specials = {k: _special(k, d) for k in SPECIALS}
    return {"dir": d, "bad": bad, "good": good, "special": specials}


@pytest.fixture()
def out_dir(tmp_path):
    """An output folder holding an earlier run's results, which no failing case may touch."""
    o = tmp_path / "out"
    o.mkdir()
    (o / "earlier.json").write_text('{"earlier": true}\n')
    (o / "review.json").write_text("[]\n")
    (o / "report.json").write_text('{"earlier": "report"}\n')
    return o


# --------------------------------------------------------------------------------------------------
# images: detect, verify, review
# --------------------------------------------------------------------------------------------------
IMAGE_COMMANDS = {
    "detect": lambda f, o: ["detect", f, "--no-forgery", "--json", o / "earlier.json"],
    "verify": lambda f, o: ["verify", f, "--json", o / "earlier.json"],
    "review": lambda f, o: ["review", f, "--out", o / "rv", "--no-forgery"],
}


@pytest.mark.parametrize("command", sorted(IMAGE_COMMANDS))
@pytest.mark.parametrize("name", sorted(_bad_images()))
def test_bad_image_is_one_line_exit_2(corpus, out_dir, capsys, command, name):
    before = _snapshot(out_dir)
    f = corpus["bad"][name]
    code, out, err, secs = run_cli(IMAGE_COMMANDS[command](f, out_dir), capsys)
    if command == "verify" and code == 0:
        # verify reads the manifest before the pixels: a file it cannot parse as an image at all is
        # "untagged" only when the format sniffing says it is not an image; never a crash
        assert "Traceback" not in err
    else:
        assert_clean_failure(code, err, name)
    assert secs < 10
    after = _snapshot(out_dir)
    assert {k: v for k, v in after.items() if not k.startswith("rv/")} == before or command == "verify"
    assert after["earlier.json"] == before["earlier.json"] or command == "verify"


@pytest.mark.parametrize("command", sorted(IMAGE_COMMANDS))
@pytest.mark.parametrize("kind", SPECIALS)
def test_special_files_refused_without_hanging(corpus, out_dir, capsys, command, kind):
    before = _snapshot(out_dir)
    f = corpus["special"][kind]
    code, out, err, secs = run_cli(IMAGE_COMMANDS[command](f, out_dir), capsys)
    assert "Traceback" not in err and "internal error" not in err, err
    assert code == 2, err
    assert secs < 10
    if command != "review":
        assert len(error_lines(err)) == 1, err
    assert f.name in err or (kind == "folder" and "no files" in err)
    if command != "verify":  # verify --json reports the unreadable file in its results, by design
        assert _snapshot(out_dir)["earlier.json"] == before["earlier.json"]


@pytest.mark.parametrize("name", sorted(_odd_but_valid_images()))
def test_odd_valid_images_give_a_result_and_finite_json(corpus, tmp_path, capsys, name):
    f = corpus["good"][name]
    js = tmp_path / "r.json"
    code, out, err, secs = run_cli(["detect", f, "--json", js], capsys)  # with forgery analysis
    assert code == 0, err
    assert "Traceback" not in err and not error_lines(err)
    text = js.read_text()
    assert "NaN" not in text and "Infinity" not in text
    (entry,) = json.loads(text)
    p = entry["synthetic_probability"]
    assert p is None or 0.0 <= p <= 1.0
    assert entry["verdict"] in ("generated", "edited", "no_evidence", "inconclusive")
    code, out, err, _ = run_cli(["review", f, "--out", tmp_path / "rv"], capsys)
    assert code == 0 and "NaN" not in (tmp_path / "rv" / "review.json").read_text(), err


def test_batch_reports_each_bad_file_and_goes_on(corpus, tmp_path, capsys):
    bad = [corpus["bad"]["bomb.webp"], corpus["special"]["fifo"], corpus["bad"]["trunc50.jpg"]]
    good = [corpus["good"]["thin.png"], corpus["good"]["cmyk.jpg"]]
    js = tmp_path / "r.json"
    code, out, err, _ = run_cli(["detect", *bad, *good, "--no-forgery", "--json", js], capsys)
    assert code == 0, err
    lines = error_lines(err)
    assert len(lines) == len(bad) and all(b.name in l for b, l in zip(bad, lines)), err
    entries = json.loads(js.read_text())
    assert [bool(e.get("error")) for e in entries] == [True] * len(bad) + [False] * len(good)
    assert not (tmp_path / "r.json.partial.jsonl").exists()


def test_detect_streams_json_lines_as_it_goes(corpus, tmp_path, capsys):
    js = tmp_path / "r.jsonl"
    files = [corpus["good"]["thin.png"], corpus["bad"]["garbage.png"], corpus["good"]["one.png"]]
    code, out, err, _ = run_cli(["detect", *files, "--no-forgery", "--json", js], capsys)
    assert code == 0
    rows = [json.loads(l) for l in js.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(f) for f in files]


def test_stopped_detect_keeps_what_it_finished(corpus, tmp_path):
    """SIGINT in the middle of a batch: the finished entries are on disk as JSON Lines."""
    src = tmp_path / "many"
    src.mkdir()
    img = _photo(256, 256)
    # Enough files that the batch cannot finish between the poll below and the signal (about 30 files/s).
    for i in range(20):
        Image.fromarray(np.roll(img, i, axis=1)).save(src / f"{i:03d}.png")
    for i in range(20, 400):
        shutil.copyfile(src / f"{i % 20:03d}.png", src / f"{i:03d}.png")
    js = tmp_path / "r.json"
    env = dict(os.environ, GENGUARD_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "genguard", "detect", str(src), "--json", str(js)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)
    partial = tmp_path / "r.json.partial.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (partial.exists() and partial.read_text().count("\n") >= 2):
        time.sleep(0.1)
    assert proc.poll() is None, "detect finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    rows = [json.loads(l) for l in partial.read_text().splitlines()]
    assert len(rows) >= 2 and all("synthetic_probability" in r for r in rows)
    assert "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["bomb.webp", "bomb.png", "bomb.avif"])
def test_bombs_stay_within_memory_in_a_fresh_process(corpus, tmp_path, name):
    """Peak RSS of a whole `genguard detect` process on a bomb (interpreter, torch and detector included)."""
    env = dict(os.environ, GENGUARD_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "genguard", "detect", str(corpus["bad"][name])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    t0 = time.monotonic()
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert os.waitstatus_to_exitcode(status) == 2, err
    assert usage.ru_maxrss / 1024 < SUBPROCESS_RSS_MB, f"{usage.ru_maxrss / 1024:.0f} MB"
    assert time.monotonic() - t0 < 30


def test_huge_legitimate_image_is_analysed_on_a_bounded_copy():
    """Over the analysis budget, forgery runs on a downscaled copy and says so; the watermark on a crop."""
    from genguard.detectors.forgery import ANALYSIS_MAX_PIXELS, analyze
    from genguard.guardrails.provenance.watermark import DETECT_MAX_SIDE, ImageWatermark

    big = np.tile(_photo(300, 300), (10, 11, 1))  # 3000 x 3300 = 9.9 MP
    res = analyze(big, ("ela", "noise"))
    for r in res.values():
        w, h = r.details["analysed"]["analysed_size"]
        assert w * h <= ANALYSIS_MAX_PIXELS and r.map.shape == (h, w) and "downscaled" in r.details["analysed"]["note"]
    det = ImageWatermark(b"k" * 32).detect(np.tile(_photo(300, 300), (8, 8, 1)))
    assert det["analysed"]["analysed_size"] == [DETECT_MAX_SIDE, DETECT_MAX_SIDE] and det["found"] is False


def test_max_pixels_is_range_checked(corpus, capsys):
    code, out, err, _ = run_cli(["detect", corpus["good"]["one.png"], "--max-pixels", "-5"], capsys)
    assert code == 2 and "max-pixels" in err


# --------------------------------------------------------------------------------------------------
# output safety
# --------------------------------------------------------------------------------------------------
def test_json_dash_is_stdout_and_dev_stdout_is_never_replaced(corpus, tmp_path, capsys):
    code, out, err, _ = run_cli(["detect", corpus["good"]["thin.png"], "--no-forgery", "--json", "-"], capsys)
    assert code == 0 and json.loads(out)[0]["path"].endswith("thin.png")
    assert not Path("-").exists()
    from genguard.generators._io import atomic_write_json

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    atomic_write_json(fifo, {"through": "the pipe"})
    assert json.loads(reader.communicate(timeout=10)[0]) == {"through": "the pipe"}
    assert fifo.is_fifo()  # written through, not renamed over
    with pytest.raises(PermissionError):
        from genguard.generators._io import atomic_write_bytes

        atomic_write_bytes("/dev/null", b"secret", mode=0o600)
    assert Path("/dev/null").is_char_device()


@pytest.mark.parametrize("command", ["review", "audit"])
def test_existing_results_are_refused_without_overwrite(corpus, out_dir, capsys, command):
    before = _snapshot(out_dir)
    argv = (["review", corpus["good"]["thin.png"], "--out", out_dir, "--no-forgery"] if command == "review"
            else ["audit", "--samples", corpus["dir"], "--out", out_dir])
    code, out, err, _ = run_cli(argv, capsys)
    assert_clean_failure(code, err, "--overwrite")
    assert _snapshot(out_dir) == before
    if command == "review":
        code, out, err, _ = run_cli(argv + ["--overwrite"], capsys)
        assert code == 0 and json.loads((out_dir / "review.json").read_text())[0]["path"].endswith("thin.png")


def test_run_and_train_refuse_a_folder_with_a_model(tmp_path, capsys):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "ledger.json").write_text("{}")
    for argv in (["run", "--quick", "--out", tmp_path], ["train", "--generator", "vae", "--quick", "--out", tmp_path]):
        code, out, err, secs = run_cli(argv, capsys)
        assert_clean_failure(code, err, "--overwrite")
        assert secs < 5  # refused before any training
    assert (tmp_path / "model" / "ledger.json").read_text() == "{}"


# --------------------------------------------------------------------------------------------------
# policies
# --------------------------------------------------------------------------------------------------
HOSTILE_POLICIES = {
    "deep_flow.yaml": "bias: " + "[" * 100_000 + "]" * 100_000,
    "deep_block.yaml": "".join(" " * i + f"k{i}:\n" for i in range(300)),
    "alias_bomb.yaml": "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9) + "]\n" for p, c in zip("abcdefgh", "bcdefghi")),
    "nan_gate.yaml": "gates:\n  bias.flagged_count: {max: .nan}\n",
    "inf_gate.yaml": "gates:\n  fidelity.precision: {min: -.inf}\n",
    "gates_list.yaml": "gates: [1, 2, 3]\n",
    "bias_int.yaml": "bias: 7\n",
    "huge_mc.yaml": "bias: {mc_draws: 100000000000000}\n",
    "huge_nth.yaml": "memorization: {nth_neighbour: 1000000000000}\n",
    "bool_level.yaml": "level: true\n",
    "python_tag.yaml": "level: !!python/object/apply:os.system ['echo pwned']\n",
    "unknown.yaml": "levle: 0.1\n",
    "not_utf8.yaml": b"level: \xff\xfe 0.1\n",
    "scalar.yaml": "42\n",
    "gate_name_int.yaml": "gates:\n  7: {max: 1}\n",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_POLICIES))
def test_hostile_policy_is_one_line_exit_2(tmp_path, out_dir, capsys, name):
    p = tmp_path / name
    data = HOSTILE_POLICIES[name]
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    before = _snapshot(out_dir)
    code, out, err, secs = run_cli(["audit", "--samples", tmp_path, "--policy", p, "--out", out_dir, "--overwrite"],
                                   capsys)
    assert_clean_failure(code, err, name)
    assert secs < 5 and "pwned" not in out
    assert _snapshot(out_dir) == before


def test_policy_fifo_refused(tmp_path, out_dir, capsys):
    p = tmp_path / "policy.yaml"
    os.mkfifo(p)
    code, out, err, _ = run_cli(["audit", "--samples", tmp_path, "--policy", p, "--out", out_dir, "--overwrite"], capsys)
    assert_clean_failure(code, err, "FIFO")


# --------------------------------------------------------------------------------------------------
# model folders (config.json, weights)
# --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, digits):
    from genguard.generators import make_generator

    train, _ = digits
    gen = make_generator("vae", epochs=1, hidden=16, latent_dim=4, batch_size=256)
    gen.fit(train.subset(np.arange(256)), progress=False)
    d = tmp_path_factory.mktemp("model")
    gen.save(d)
    return d


def _config_cases(cfg: dict) -> dict[str, object]:
    def with_(**kw):
        return {**cfg, **kw}

    return {
        "generator_list": with_(generator=["vae"]),
        "generator_int": with_(generator=3),
        "params_list": with_(params=[1, 2]),
        "params_unknown": with_(params={**cfg["params"], "evil": 1}),
        "other_class": with_(**{"class": "genguard.generators.gan.GAN"}),
        "huge_hidden": with_(params={**cfg["params"], "hidden": 10 ** 9}),
        "negative_hidden": with_(params={**cfg["params"], "hidden": -4}),
        "hidden_string": with_(params={**cfg["params"], "hidden": "16"}),
        "bool_epochs": with_(params={**cfg["params"], "epochs": True}),
        "state_list": with_(state=[1]),
        "state_missing_fields": with_(state={}),
        "state_wrong_types": with_(state={**cfg["state"], "image_shape_": "8x8", "n_classes_": [10]}),
        "state_huge_shape": with_(state={**cfg["state"], "image_shape_": [100_000, 100_000]}),
        "hidden_mismatch": with_(params={**cfg["params"], "hidden": 4096}),
        "not_a_dict": [cfg],
    }


CONFIG_CASE_NAMES = ["generator_list", "generator_int", "params_list", "params_unknown", "other_class", "huge_hidden",
                     "negative_hidden", "hidden_string", "bool_epochs", "state_list", "state_missing_fields",
                     "state_wrong_types", "state_huge_shape", "hidden_mismatch", "not_a_dict"]
RAW_CONFIGS = {"deep": "[" * 100_000 + "]" * 100_000, "nan_literal": '{"generator": "vae", "params": {"lr": NaN}}',
               "truncated": '{"generator": "va', "not_utf8": b'{"generator": "\xff"}', "empty": ""}


def _copy_model(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


@pytest.mark.parametrize("case", CONFIG_CASE_NAMES + sorted(RAW_CONFIGS))
def test_hostile_model_config_is_one_line_exit_2(model_dir, tmp_path, out_dir, capsys, case):
    d = _copy_model(model_dir, tmp_path / "m")
    cfg = json.loads((model_dir / "config.json").read_text())
    if case in RAW_CONFIGS:
        raw = RAW_CONFIGS[case]
        (d / "config.json").write_bytes(raw if isinstance(raw, bytes) else raw.encode())
    else:
        (d / "config.json").write_text(json.dumps(_config_cases(cfg)[case]))
    before = _snapshot(out_dir)
    code, out, err, secs = run_cli(["sample", "--model", d, "-n", "2", "--out", out_dir / "s", "--no-tag"], capsys)
    assert_clean_failure(code, err, "config.json" if case not in ("hidden_mismatch",) else None)
    assert secs < 5
    assert _snapshot(out_dir) == before


def test_model_config_fifo_and_huge_weights_refused(model_dir, tmp_path, capsys):
    d = _copy_model(model_dir, tmp_path / "m")
    (d / "config.json").unlink()
    os.mkfifo(d / "config.json")
    code, out, err, _ = run_cli(["sample", "--model", d, "-n", "2", "--out", tmp_path / "s", "--no-tag"], capsys)
    assert_clean_failure(code, err, "FIFO")


def test_nan_weights_warn_and_samples_warn(model_dir, tmp_path, capsys):
    from safetensors.numpy import load_file, save_file

    d = _copy_model(model_dir, tmp_path / "m")
    t = load_file(str(d / "weights.safetensors"))
    k = sorted(t)[0]
    t[k] = np.full_like(t[k], np.nan)
    save_file(t, str(d / "weights.safetensors"))
    code, out, err, _ = run_cli(["sample", "--model", d, "-n", "2", "--out", tmp_path / "s", "--no-tag"], capsys)
    warnings_ = [l for l in err.splitlines() if l.startswith("genguard: warning:")]
    assert any("NaN or infinite" in w and k in w for w in warnings_), err
    assert "Traceback" not in err


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------
def _diabetes_csv() -> str:
    from sklearn.datasets import load_diabetes

    return load_diabetes(as_frame=True).frame.head(60).to_csv(index=False)


def _table_cases() -> dict[str, bytes]:
    good = _diabetes_csv()
    lines = good.splitlines()
    header = lines[0]
    string_col = "\n".join([header] + [",".join(["abc"] + l.split(",")[1:]) for l in lines[1:]])
    nan_col = "\n".join([header] + [",".join(["nan"] + l.split(",")[1:]) for l in lines[1:]])
    inf_col = "\n".join([header] + [",".join(["1e999"] + l.split(",")[1:]) for l in lines[1:]])
    return {"strings.csv": string_col.encode(), "nan.csv": nan_col.encode(), "inf.csv": inf_col.encode(),
            "header_only.csv": (header + "\n").encode(), "empty.csv": b"", "one_column.csv": b"a\n1\n2\n",
            "not_utf8.csv": b"age,sex\n\xff\xfe,1\n", "ragged.csv": (header + "\n1,2\n1,2,3,4,5,6,7,8,9,10,11,12,13\n").encode()}


@pytest.mark.parametrize("name", sorted(_table_cases()))
def test_hostile_table_is_one_line_exit_2(tmp_path, out_dir, capsys, name):
    p = tmp_path / name
    p.write_bytes(_table_cases()[name])
    before = _snapshot(out_dir)
    code, out, err, secs = run_cli(["audit", "--samples", p, "--reference", "diabetes", "--out", out_dir,
                                    "--overwrite"], capsys)
    assert_clean_failure(code, err)
    assert secs < 10
    assert _snapshot(out_dir) == before


# --------------------------------------------------------------------------------------------------
# keys under concurrency and permissions
# --------------------------------------------------------------------------------------------------
def _four(argv_for, env):
    procs = [subprocess.Popen([sys.executable, "-m", "genguard", *argv_for(i)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(4)]
    return [(p.wait(timeout=120), p.stderr.read()) for p in procs]


def test_four_concurrent_first_use_tags_share_one_key_set(tmp_path):
    env = dict(os.environ, GENGUARD_HOME=str(tmp_path / "home"), GENGUARD_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    for i in range(4):
        Image.fromarray(_photo(300, 300, seed=i)).save(tmp_path / f"i{i}.png")
    res = _four(lambda i: ["tag", str(tmp_path / f"i{i}.png"), "--run-id", f"run{i}", "--generator", "g"], env)
    assert all(code == 0 for code, _ in res), res
    out = tmp_path / "v.json"
    r = subprocess.run([sys.executable, "-m", "genguard", "verify", *(str(tmp_path / f"i{i}.png") for i in range(4)),
                        "--json", str(out)], env=env, capture_output=True, text=True, timeout=120)
    files = json.loads(out.read_text())["files"]
    assert r.returncode == 0 and [f["manifest"]["state"] for f in files] == ["Trusted"] * 4, r.stderr  # this machine's own root
    keys = tmp_path / "home" / "keys"
    from genguard.guardrails.provenance import KeyStore

    KeyStore(keys / "chain.pem", keys / "signer.key")  # the surviving leaf key matches its chain
    reg = json.loads((keys / "watermark_registry.json").read_text())
    assert sorted(v["run_id"] for v in reg.values()) == ["run0", "run1", "run2", "run3"]  # no entry lost


def test_four_concurrent_keys_init_leave_one_consistent_set(tmp_path):
    env = dict(os.environ, GENGUARD_NO_PROGRESS="1", OMP_NUM_THREADS="1")
    d = tmp_path / "keys"
    res = _four(lambda i: ["keys", "init", "--dir", str(d)], env)
    assert sorted(code for code, _ in res) == [0, 2, 2, 2], res  # one winner; the others are told keys exist
    assert all("already exist" in e for code, e in res if code == 2)
    from genguard.guardrails.provenance import KeyStore

    ks = KeyStore(d / "chain.pem", d / "signer.key")
    assert ks.alg == "es256"


def test_key_folder_mode_kept_and_readable_keys_refused(tmp_path, capsys):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    code, out, err, _ = run_cli(["keys", "init", "--dir", shared], capsys)
    assert code == 0 and "others can write" in err
    assert oct(os.stat(shared).st_mode & 0o7777) == oct(0o1777)  # never chmod-ed
    os.chmod(shared / "signer.key", 0o644)
    img = tmp_path / "a.png"
    Image.fromarray(_photo()).save(img)
    os.environ["GENGUARD_HOME_SAVED"] = os.environ.get("GENGUARD_HOME", "")
    from genguard.guardrails.provenance import KeyStore, ProvenanceError

    with pytest.raises(ProvenanceError, match="signer.key.*0644"):
        KeyStore.load_or_create(shared)
    assert Image.open(img).size == (80, 64)  # nothing done with the image


def test_tag_keeps_exif_and_refuses_name_clashes(tmp_path, capsys):
    ex = Image.Exif()
    ex[0x0112] = 6  # orientation: rotate 90 on display
    ex[0x010F] = "TestCam"
    src = tmp_path / "photo.jpg"
    Image.fromarray(_photo(300, 400)).save(src, exif=ex.tobytes(), quality=92)
    code, out, err, _ = run_cli(["tag", src, "--out", tmp_path / "o", "--run-id", "r", "--generator", "g"], capsys)
    assert code == 0, err
    tagged = Image.open(tmp_path / "o" / "photo.jpg").getexif()
    assert tagged.get(0x0112) == 6 and tagged.get(0x010F) == "TestCam"
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "photo.jpg").write_bytes(src.read_bytes())
    before = (tmp_path / "o" / "photo.jpg").read_bytes()
    code, out, err, _ = run_cli(["tag", src, tmp_path / "b" / "photo.jpg", "--out", tmp_path / "o"], capsys)
    assert_clean_failure(code, err, "same name")
    assert (tmp_path / "o" / "photo.jpg").read_bytes() == before


# --------------------------------------------------------------------------------------------------
# property-based tests of the readers
# --------------------------------------------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=4), c, max_size=4),
                           max_leaves=30)


def _depth(v) -> int:
    if isinstance(v, list):
        return 1 + max((_depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((_depth(x) for x in v.values()), default=0)
    return 0


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_json_depth_matches_the_structure_and_json_safe_is_always_valid_json(v):
    from genguard.generators._io import json_depth, json_safe, loads_json_checked

    safe = json_safe(v)
    text = json.dumps(safe, allow_nan=False)  # never raises: no NaN survives
    assert json_depth(text) == _depth(safe)
    assert loads_json_checked(text, "x") == safe


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_json_reader_raises_only_its_error(data):
    from genguard.generators._io import InputError, loads_json_checked

    try:
        loads_json_checked(data, "blob")
    except InputError as exc:
        assert str(exc).startswith("blob: ") and "\n" not in str(exc)


_PNG = encode("PNG", _photo(16, 16))
_JPG = encode("JPEG", _photo(16, 16))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(base=st.sampled_from([_PNG, _JPG, webp_bomb(), gif_bomb(40, 40)]),
       edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=8),
       cut=st.integers(0, 600))
def test_mutated_images_raise_only_detector_error(tmp_path, base, edits, cut):
    from genguard.detectors import DetectorError
    from genguard.detectors._io import read_image

    data = bytearray(base)
    for pos, val in edits:
        if pos < len(data):
            data[pos] = val
    p = tmp_path / "m.img"
    p.write_bytes(bytes(data[:cut]) if cut < len(data) else bytes(data))
    try:
        a = read_image(p)
    except DetectorError as exc:
        assert "m.img" in str(exc) and "\n" not in str(exc)
    else:
        assert a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 and a.shape[0] * a.shape[1] <= 67_108_864


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["level", "on_missing", "bias", "fidelity", "memorization", "gates", "text",
                                        "tabular"]), json_values, max_size=4))
def test_policy_dicts_validate_or_raise_audit_error(policy):
    from genguard.audits import AuditError
    from genguard.audits.policy import load_policy

    try:
        p = load_policy(policy)
    except AuditError:
        return
    assert 0 < p["level"] < 1
    for spec in (p["gates"] or {}).values():
        assert math.isfinite(next(iter(spec.values())))
    assert 100 <= p["bias"]["mc_draws"] <= 100_000


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["hidden", "latent_dim", "epochs", "lr", "seed", "beta", "nope"]),
                       json_values, max_size=4))
def test_generator_params_validate_or_raise_generator_error(params):
    from genguard.generators import get_generator_class
    from genguard.generators.base import MAX_WIDTH, GeneratorError, check_params

    try:
        ok = check_params(get_generator_class("vae"), params, "cfg")
    except GeneratorError as exc:
        assert str(exc).startswith("cfg: ")
        return
    for k in ("hidden", "latent_dim"):
        if k in ok:
            assert isinstance(ok[k], int) and 0 <= ok[k] <= MAX_WIDTH


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["path", "provenance", "verdict", "synthetic_probability", "forgery", "error"]),
                       json_values | st.just("<script>x</script>"), max_size=6))
def test_review_cards_never_raise_and_escape_everything(entry):
    from genguard.review import render

    page = render([entry])
    assert "<script>x" not in page


@pytest.mark.parametrize("anchor", ["garbage_pem", "fifo", "missing"])
def test_malformed_trust_anchor_is_blamed_on_the_anchor(corpus, tmp_path, capsys, anchor):
    a = tmp_path / "anchor.pem"
    if anchor == "garbage_pem":
        a.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all!!\n-----END CERTIFICATE-----\n")
    elif anchor == "fifo":
        os.mkfifo(a)
    img = corpus["good"]["thin.png"]
    for argv in (["verify", img, "--trust-anchor", a], ["review", img, "--trust-anchor", a, "--out", tmp_path / "r"]):
        code, out, err, _ = run_cli(argv, capsys)
        assert_clean_failure(code, err, "anchor.pem")
        assert "thin.png" not in err


def test_verify_json_dash_is_only_json_on_stdout(corpus, capsys):
    code, out, err, _ = run_cli(["verify", corpus["good"]["thin.png"], "--json", "-"], capsys)
    assert code == 0 and json.loads(out)["files"][0]["verdict"] == "untagged"


def test_sample_refuses_a_folder_with_files(model_dir, tmp_path, capsys):
    o = tmp_path / "s"
    o.mkdir()
    (o / "mine.txt").write_text("keep me")
    argv = ["sample", "--model", model_dir, "-n", "2", "--out", o, "--no-tag"]
    code, out, err, _ = run_cli(argv, capsys)
    assert_clean_failure(code, err, "--overwrite")
    code, out, err, _ = run_cli(argv + ["--overwrite"], capsys)
    assert code == 0 and (o / "mine.txt").read_text() == "keep me" and len(list(o.iterdir())) > 1
