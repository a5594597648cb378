"""`genguard detect`, `genguard detector train` and `genguard detector eval` end to end, bad inputs included."""
import json

import numpy as np
import pytest
from PIL import Image

from genguard.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """real/ (photo crops, PNG and JPEG) and fake/<bilinear|cubic>/ (x2-upsampled crops, PNG)."""
    import cv2
    from skimage import data

    root = tmp_path_factory.mktemp("detdata")
    rng = np.random.default_rng(0)
    photos = [data.astronaut(), data.coffee(), data.rocket(), data.chelsea()]

    def crop():
        p = photos[rng.integers(len(photos))]
        y, x = rng.integers(0, p.shape[0] - 64), rng.integers(0, p.shape[1] - 64)
        return np.ascontiguousarray(p[y:y + 64, x:x + 64])

    (root / "real").mkdir()
    for i in range(60):
        Image.fromarray(crop()).save(root / "real" / (f"r{i:03d}.png" if i % 2 else f"r{i:03d}.jpg"), quality=95)
    for name, interp in (("bilinear", cv2.INTER_LINEAR), ("cubic", cv2.INTER_CUBIC)):
        (root / "fake" / name).mkdir(parents=True)
        for i in range(30):
            small = cv2.resize(crop(), (32, 32), interpolation=cv2.INTER_AREA)
            Image.fromarray(cv2.resize(small, (64, 64), interpolation=interp)).save(root / "fake" / name / f"f{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def trained(folders, tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "spectral.safetensors"
    with pytest.raises(SystemExit) as exc:
        main(["detector", "train", "--real", str(folders / "real"), "--fake", str(folders / "fake"),
              "--out", str(out), "--kind", "dct"])
    assert exc.value.code == 0
    return out


def test_train_then_eval_with_robustness_and_logo(folders, trained, tmp_path, capsys):
    js = tmp_path / "eval.json"
    code, out, err = run(["detector", "eval", "--real", str(folders / "real"), "--fake", str(folders / "fake"),
                          "--detector", str(trained), "--robustness", "--json", str(js), "--n-boot", "50"], capsys)
    assert code == 0, err
    res = json.loads(js.read_text())
    assert res["format"] == "jpeg95" and res["n_real"] == 60 and res["n_fake"] == 60
    conds = set(res["results"])
    assert {"clean", "jpeg95", "jpeg75", "jpeg50", "resize0.5", "resize2", "blur1", "crop0.75", "noise2"} <= conds
    clean = res["results"]["clean"]
    for k in ("auc", "ap", "accuracy", "tpr_at_1pct_fpr"):
        lo, hi = clean[k]["ci95"]
        assert lo <= clean[k]["value"] + 1e-9 and clean[k]["value"] <= hi + 1e-9
    assert clean["auc"]["value"] >= 0.85  # seen in training (same kind of images): should separate
    logo = res["leave_one_generator_out"]
    assert set(logo["per_generator"]) == {"bilinear", "cubic"} and 0 <= logo["mean_auc"] <= 1
    assert "LOGO mean AUC" in out


def test_detect_json_maps_and_overlay(folders, trained, tmp_path, capsys):
    imgs = tmp_path / "imgs"
    (imgs / "sub").mkdir(parents=True)
    from skimage import data

    Image.fromarray(data.astronaut()[:150, :201]).save(imgs / "photo.jpg", quality=90)
    Image.fromarray(data.camera()[:120, :90]).save(imgs / "sub" / "grey.tiff")
    Image.fromarray(np.dstack([data.coffee()[:100, :100], np.full((100, 100), 200, np.uint8)])).save(imgs / "rgba.png")
    Image.fromarray(data.chelsea()[:80, :80]).save(imgs / "sub" / "cat.webp")
    (imgs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    js, hm = tmp_path / "out.json", tmp_path / "maps"
    code, out, err = run(["detect", str(imgs), "--json", str(js), "--heatmaps", str(hm), "--detector", str(trained)], capsys)
    assert code == 0, err
    assert "broken.jpg" in err and err.count("\n") >= 1  # reported ...
    res = json.loads(js.read_text())
    assert len(res) == 5
    bad = [r for r in res if r.get("error")]
    assert len(bad) == 1 and bad[0]["verdict"] is None  # ... and skipped
    for r in (r for r in res if not r.get("error")):
        assert 0 <= r["synthetic_probability"] <= 1
        assert r["verdict"] in ("generated", "edited", "no_evidence", "inconclusive")
        # the same answer as `genguard verify`: these photos carry no manifest and no watermark
        assert r["provenance"]["manifest"]["state"] == "Missing" and r["provenance"]["verdict"] == "untagged"
        size = Image.open(r["path"]).size
        assert {"ela", "jpeg_ghost", "block_grid", "copy_move", "noise"} <= set(r["forgery"])
        for m in r["forgery"].values():
            im = Image.open(m["map"])
            assert im.mode == "L" and im.size == size and 0 <= m["score"] <= 1
        ov = Image.open(r["overlay"])
        assert ov.size == size and ov.mode == "RGB"


def test_detect_bad_inputs_exit_2_one_line(tmp_path, trained, capsys):
    bad = tmp_path / "only.png"
    bad.write_bytes(b"garbage")
    code, out, err = run(["detect", str(bad), "--detector", str(trained)], capsys)
    # one bad file: its own reason, once, on one line
    assert code == 2 and "only.png: not a readable image" in err and len(err.strip().splitlines()) == 1
    code, out, err = run(["detect", str(tmp_path / "nothing_here"), "--detector", str(trained)], capsys)
    assert code == 2 and "nothing_here" in err and "Traceback" not in err
    notdet = tmp_path / "x.safetensors"
    notdet.write_bytes(b"\x00" * 64)
    ok = tmp_path / "ok.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(ok)
    code, out, err = run(["detect", str(ok), "--detector", str(notdet)], capsys)
    assert code == 2 and "x.safetensors" in err and len(err.strip().splitlines()) == 1


def _png_with_header_size(path, w, h):
    """A tiny file whose PNG header claims w x h pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def test_detect_refuses_decompression_bomb(tmp_path, trained, capsys):
    bomb = tmp_path / "bomb.png"
    _png_with_header_size(bomb, 12_000, 10_000)
    good = tmp_path / "good.png"
    Image.fromarray(np.full((70, 70, 3), 128, np.uint8)).save(good)
    js = tmp_path / "o.json"
    code, out, err = run(["detect", str(bomb), str(good), "--detector", str(trained), "--json", str(js),
                          "--no-forgery"], capsys)
    assert code == 0
    assert "bomb.png" in err and "decompression bomb" in err
    res = json.loads(js.read_text())
    assert res[0]["error"] and res[1]["verdict"] in ("generated", "edited", "no_evidence", "inconclusive")


def test_default_detector_ships_small_and_loads(tmp_path, capsys):
    from genguard.detectors.models import DEFAULT_DETECTOR, load_default

    assert DEFAULT_DETECTOR.is_file() and DEFAULT_DETECTOR.stat().st_size < 5_000_000
    det = load_default()
    assert det.kind == "ensemble" and "trained_by" in det.info_
    from skimage import data

    # real photo patches from a photo held out of its training: mostly not called synthetic
    img = data.chelsea()
    patches = [img[y:y + 64, x:x + 64] for y in range(0, 236, 64) for x in range(0, 384, 64)]
    p = det.predict_proba(patches)
    called = [det.verdict(float(v)) for v in p]
    assert np.mean([v == "synthetic" for v in called]) <= 0.1, np.round(p, 2)
    img_path = tmp_path / "c.png"
    Image.fromarray(img).save(img_path)
    code, out, err = run(["detect", str(img_path), "--no-forgery"], capsys)
    assert code == 0 and "c.png" in out


def test_train_with_family_stacking_uses_the_generator_subfolders(folders, tmp_path, capsys):
    from genguard.detectors.models import load_detector

    out = tmp_path / "fam.safetensors"
    code, _, err = run(["detector", "train", "--real", str(folders / "real"), "--fake", str(folders / "fake"),
                        "--out", str(out), "--kind", "ensemble", "--npr-epochs", "1", "--stack-cv", "family"], capsys)
    assert code == 0, err
    det = load_detector(out)
    assert det.stack_cv == "family" and det.stack_info_["folds"] == [["bilinear"], ["cubic"]]
    assert (det.stack_coef_ >= 0).all()
    # fakes in one folder are one family: nothing to cross-fit, a one-line refusal
    code, _, err = run(["detector", "train", "--real", str(folders / "real"), "--fake", str(folders / "fake" / "cubic"),
                        "--out", str(tmp_path / "x.safetensors"), "--stack-cv", "family"], capsys)
    assert code == 2 and "two generator families" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()
