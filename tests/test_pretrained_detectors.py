"""Published detectors from a user's weights file (CNNDetection, NPR): key sets, loading, preprocessing, refusal of
code-carrying pickles, and `genguard detect/detector eval --detector FILE --arch NAME` end to end."""
import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from genguard.cli import main
from genguard.detectors import DetectorError
from genguard.detectors import pretrained as pt

TINY = {"cnndetection": dict(width=4, layers=(1, 2, 1, 1)), "npr": dict(width=4, layers=(1, 2))}


def run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def reference_keys(arch):
    """torchvision ResNet-50 names and shapes, written out from the authors' networks/resnet.py (not from
    genguard's module): CNNDetection keeps all four stages and fc 2048 -> 1; NPR keeps layer1-2, a 3x3 stem and fc1 512 -> 1."""
    keys = {}

    def bn(prefix, c):
        keys.update({f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
                     f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()})

    stem = 7 if arch == "cnndetection" else 3
    keys["conv1.weight"] = (64, 3, stem, stem)
    bn("bn1", 64)
    inplanes = 64
    stages = [3, 4, 6, 3] if arch == "cnndetection" else [3, 4]
    for s, blocks in enumerate(stages):
        planes = 64 * 2 ** s
        for b in range(blocks):
            p = f"layer{s + 1}.{b}"
            keys[f"{p}.conv1.weight"] = (planes, inplanes, 1, 1)
            bn(f"{p}.bn1", planes)
            keys[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            keys[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            bn(f"{p}.bn3", planes * 4)
            if b == 0:
                keys[f"{p}.downsample.0.weight"] = (planes * 4, inplanes, 1, 1)
                bn(f"{p}.downsample.1", planes * 4)
            inplanes = planes * 4
    fc = "fc" if arch == "cnndetection" else "fc1"
    keys[f"{fc}.weight"], keys[f"{fc}.bias"] = (1, inplanes), (1,)
    return keys


@pytest.mark.parametrize("arch", ["cnndetection", "npr"])
def test_full_size_key_set_is_the_published_one(arch):
    with torch.device("meta"):
        net = pt.build_network(arch)
    got = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert got == reference_keys(arch)
    n_params = sum(p.numel() for p in net.parameters())
    # torchvision's resnet50 has 25,557,032 parameters; with fc 2048 -> 1 instead of -> 1000: 23,510,081
    assert n_params == (23_510_081 if arch == "cnndetection" else 1_437_761)


def tiny_net(arch, seed=0):
    torch.manual_seed(seed)
    net = pt.build_network(arch, **TINY[arch])
    with torch.no_grad():  # non-trivial BatchNorm statistics so that loading them matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    return net.eval()


def images(n=3, seed=0, size=(80, 72)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("arch", ["cnndetection", "npr"])
@pytest.mark.parametrize("form", ["model_key", "bare", "state_dict_module", "safetensors"])
def test_roundtrip_gives_the_networks_own_outputs(tmp_path, arch, form):
    from safetensors.torch import save_file

    net = tiny_net(arch)
    sd = net.state_dict()
    if form == "model_key":  # CNNDetection's layout: {"model": ..., "optimizer": ..., "total_steps": ...}
        path = tmp_path / "w.pth"
        torch.save({"model": sd, "optimizer": {"state": {}, "param_groups": []}, "total_steps": 7}, path)
    elif form == "bare":  # NPR's layout
        path = tmp_path / "w.pth"
        torch.save(sd, path)
    elif form == "state_dict_module":  # a DataParallel model saved under "state_dict"
        path = tmp_path / "w.pt"
        torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    else:
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in sd.items() if not k.endswith("num_batches_tracked")}, str(path))
    det = pt.load_pretrained(path, arch, batch_size=2)
    ims = images(5)
    with torch.no_grad():
        want = np.array([net(torch.from_numpy(det.preprocess(im))[None]).item() for im in ims])
    got = det.decision_function(ims)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(det.predict_proba(ims), 1 / (1 + np.exp(-want)), rtol=1e-5)
    assert "size_note" in det.info_ and det.info_["layers"] == list(TINY[arch]["layers"])
    # another seed's weights give other outputs: the file's weights were used, not a fresh init
    other = tiny_net(arch, seed=1)
    with torch.no_grad():
        assert not np.allclose(other(torch.from_numpy(det.preprocess(ims[0]))[None]).item(), got[0], atol=1e-4)


def test_mixed_sizes_are_batched_by_shape_and_match_one_by_one(tmp_path):
    net = tiny_net("cnndetection")
    torch.save({"model": net.state_dict()}, tmp_path / "w.pth")
    det = pt.load_pretrained(tmp_path / "w.pth", "cnndetection", batch_size=1)  # chunks of 8: crosses a chunk edge
    ims = (images(3, size=(64, 64)) + images(2, seed=1, size=(48, 96)) + images(1, seed=2, size=(64, 64))
           + images(4, seed=3, size=(40, 40)))
    together = det.predict_proba(ims)
    alone = np.array([det.predict_proba([im])[0] for im in ims])
    np.testing.assert_allclose(together, alone, rtol=1e-5)
    assert len(set(np.round(together, 6))) == len(ims)


def test_user_calibration_replaces_the_papers_sigmoid(tmp_path):
    """On images the network separates (bright vs dark), a Platt fit moves the probabilities towards the labels,
    keeps the ranking, and says so in info_; before calibration the output is the plain sigmoid."""
    torch.save(tiny_net("cnndetection").state_dict(), tmp_path / "w.pth")
    det = pt.load_pretrained(tmp_path / "w.pth", "cnndetection")
    rng = np.random.default_rng(4)
    dark = [rng.integers(0, 90, (64, 64, 3), dtype=np.uint8) for _ in range(12)]
    bright = [rng.integers(160, 256, (64, 64, 3), dtype=np.uint8) for _ in range(12)]
    s = det.decision_function(dark + bright)
    real, fake = (dark, bright) if s[12:].mean() > s[:12].mean() else (bright, dark)
    sig = det.predict_proba(real + fake)
    np.testing.assert_allclose(sig, 1 / (1 + np.exp(-det.decision_function(real + fake))))
    det.calibrate(real[:6], fake[:6])
    cal = det.predict_proba(real[6:] + fake[6:])
    assert cal[6:].mean() - cal[:6].mean() > sig[18:].mean() - sig[6:12].mean()
    assert np.array_equal(np.argsort(cal, kind="stable"), np.argsort(det.decision_function(real[6:] + fake[6:]), kind="stable"))
    assert "re-calibrated by the user (platt)" in det.info_["calibration"]
    with pytest.raises(DetectorError, match="at least 2"):
        det.calibrate(real[:1], fake)


def test_preprocessing_is_the_papers():
    rng = np.random.default_rng(0)
    im = rng.integers(0, 256, (9, 11, 3), dtype=np.uint8)
    x = pt.normalise(im)
    assert x.shape == (3, 9, 11) and x.dtype == np.float32
    for c, (m, s) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        np.testing.assert_allclose(x[c], (im[..., c] / 255.0 - m) / s, rtol=1e-5, atol=1e-6)
    # torchvision CenterCrop: top = round((9 - 4) / 2) = 2, left = round((11 - 4) / 2) = 4 (round half to even)
    np.testing.assert_array_equal(pt.center_crop(im, 4), im[2:6, 4:8])
    big = np.arange(6 * 6 * 3, dtype=np.uint8).reshape(6, 6, 3)
    padded = pt.center_crop(big, 9)  # smaller than the crop: zero-padded (1 before, 2 after), as torchvision does
    assert padded.shape == (9, 9, 3) and padded[:1].max() == 0 and padded[-2:].max() == 0
    np.testing.assert_array_equal(padded[1:7, 1:7], big)
    # NPR's test-time Resize((256, 256)) is PIL's bilinear
    photo = rng.integers(0, 256, (100, 300, 3), dtype=np.uint8)
    np.testing.assert_array_equal(pt.resize_bilinear(photo, 256),
                                  np.asarray(Image.fromarray(photo).resize((256, 256), Image.BILINEAR)))


def test_each_arch_sees_the_input_its_paper_uses(tmp_path):
    for arch in ("cnndetection", "npr"):
        torch.save(tiny_net(arch).state_dict(), tmp_path / f"{arch}.pth")
    cnn = pt.load_pretrained(tmp_path / "cnndetection.pth", "cnndetection")
    assert cnn.preprocess(images(1, size=(300, 200))[0]).shape == (3, 300, 200)  # whole image, no resize
    cnn224 = pt.load_pretrained(tmp_path / "cnndetection.pth", "cnndetection", crop=224)
    assert cnn224.preprocess(images(1, size=(300, 250))[0]).shape == (3, 224, 224)
    npr = pt.load_pretrained(tmp_path / "npr.pth", "npr")
    assert npr.preprocess(images(1, size=(300, 201))[0]).shape == (3, 256, 256)
    npr_native = pt.load_pretrained(tmp_path / "npr.pth", "npr", resize=None)
    assert npr_native.preprocess(images(1, size=(67, 41))[0]).shape == (3, 66, 40)  # odd row/column dropped
    bounded = pt.load_pretrained(tmp_path / "cnndetection.pth", "cnndetection", max_side=64)
    assert bounded.preprocess(images(1, size=(40, 2000))[0]).shape == (3, 40, 64)  # cropped, never resized


def test_npr_sees_only_neighbouring_pixel_relations(tmp_path):
    """x - up(down(x)) (nearest, x0.5) is zero on any image made of 2x2 constant blocks: NPR cannot tell two such
    images apart, while it does tell apart images that differ inside the blocks."""
    torch.save(tiny_net("npr").state_dict(), tmp_path / "npr.pth")
    det = pt.load_pretrained(tmp_path / "npr.pth", "npr")
    rng = np.random.default_rng(3)
    blocky = [np.repeat(np.repeat(rng.integers(0, 256, (128, 128, 3), dtype=np.uint8), 2, 0), 2, 1) for _ in range(2)]
    s = det.decision_function(blocky)
    assert abs(s[0] - s[1]) < 1e-6
    noisy = [b.copy() for b in blocky]
    noisy[1][1::2, 1::2] = rng.integers(0, 256, noisy[1][1::2, 1::2].shape, dtype=np.uint8)
    s2 = det.decision_function(noisy)
    assert abs(s2[0] - s[0]) < 1e-6 and abs(s2[1] - s2[0]) > 1e-4
    x = torch.from_numpy(pt.normalise(noisy[1]))[None]  # the residual itself, against a numpy reference
    ref = x.numpy() - np.repeat(np.repeat(x.numpy()[:, :, ::2, ::2], 2, 2), 2, 3)
    np.testing.assert_allclose(det.network_.npr(x).numpy(), ref, atol=1e-6)


class _Payload:
    """Unpickling this writes a file: what a hostile checkpoint would do with code."""

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("via", ["torch.save", "pickle2", "pickle"])
def test_code_carrying_pickle_is_refused_and_never_run(tmp_path, via):
    canary = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    payload = {"model": {"conv1.weight": torch.zeros(1)}, "x": _Payload(canary)}
    if via == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps({"x": _Payload(canary)}, protocol=2 if via == "pickle2" else None))
    with pytest.raises(DetectorError) as exc:
        pt.load_pretrained(path, "cnndetection")
    msg = str(exc.value)
    assert "evil.pth" in msg and "refused" in msg and "\n" not in msg
    if via != "pickle":  # protocol 4's framing stops the weights-only reader before it reaches the global
        assert "object exec" in msg and "can run code" in msg
    assert not canary.exists()
    # the file really is hostile: an unsafe load runs its code
    if via.startswith("pickle"):
        pickle.loads(path.read_bytes())
    else:
        torch.load(path, weights_only=False)
    assert canary.read_text() == "pwned"


def test_wrong_or_damaged_checkpoints_get_one_line_naming_the_file(tmp_path):
    sd = tiny_net("cnndetection").state_dict()
    cases = {}
    cases["missing"] = {k: v for k, v in sd.items() if k != "layer2.1.conv2.weight"}
    cases["unexpected"] = {**sd, "head.weight": torch.zeros(3)}
    cases["shape"] = {**sd, "fc.weight": torch.zeros(2, sd["fc.weight"].shape[1]), "fc.bias": torch.zeros(2)}
    cases["nan"] = {**sd, "fc.bias": torch.tensor([float("nan")])}
    cases["not_tensors"] = {"conv1.weight": [1, 2, 3]}
    cases["huge"] = {**sd, "layer1.100000.conv1.weight": torch.zeros(1)}  # would build 100,001 blocks
    want = {"missing": "layer2.1.conv2.weight", "unexpected": "head.weight", "shape": "fc.weight (2,",
            "nan": "fc.bias", "not_tensors": "conv1.weight", "huge": "blocks per stage"}
    for name, obj in cases.items():
        p = tmp_path / f"{name}.pth"
        torch.save(obj, p)
        with pytest.raises(DetectorError) as exc:
            pt.load_pretrained(p, "cnndetection")
        msg = str(exc.value)
        assert f"{name}.pth" in msg and want[name] in msg and "\n" not in msg, msg
    torch.save(sd, tmp_path / "cnn.pth")  # right file, wrong architecture
    with pytest.raises(DetectorError, match=r"cnn\.pth: not a npr checkpoint: .*unexpected.*layer3"):
        pt.load_pretrained(tmp_path / "cnn.pth", "npr")
    (tmp_path / "junk.safetensors").write_bytes(b"\x01" * 40)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    for f in ("junk.safetensors", "junk.pth", "absent.pth"):
        with pytest.raises(DetectorError, match=f.replace(".", r"\.")) as exc:
            pt.load_pretrained(tmp_path / f, "npr")
        assert "\n" not in str(exc.value) and "can run code" not in str(exc.value)


def _write_images(folder, ims):
    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(ims):
        Image.fromarray(im).save(folder / f"{i}.png")


def test_cli_detect_and_eval_with_published_weights(tmp_path, capsys):
    from safetensors.torch import save_file

    torch.save(tiny_net("npr").state_dict(), tmp_path / "npr.pth")
    cnn = tiny_net("cnndetection")
    save_file({k: v.contiguous() for k, v in cnn.state_dict().items()}, str(tmp_path / "cnn.safetensors"))
    ims = images(2, seed=5, size=(96, 96))
    _write_images(tmp_path / "imgs", ims)
    js = tmp_path / "out.json"
    code, out, err = run(["detect", str(tmp_path / "imgs"), "--detector", str(tmp_path / "npr.pth"), "--arch", "npr",
                          "--json", str(js)], capsys)
    assert code == 0, err
    assert "not re-calibrated" in err and "Tan et al." in err
    res = json.loads(js.read_text())
    want = pt.load_pretrained(tmp_path / "npr.pth", "npr").predict_proba(ims)
    got = [e["synthetic_probability"] for e in sorted(res, key=lambda e: e["path"])]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert all(e["detector"]["arch"] == "npr" and e["verdict"] in ("generated", "no_evidence", "inconclusive")
               for e in res)

    code, out, err = run(["detect", str(tmp_path / "imgs" / "0.png"), "--detector", str(tmp_path / "cnn.safetensors"),
                          "--arch", "cnndetection", "--crop", "64", "--no-forgery", "--json", "-"], capsys)
    assert code == 0, err
    want = pt.load_pretrained(tmp_path / "cnn.safetensors", "cnndetection", crop=64).predict_proba(ims[:1])[0]
    assert abs(json.loads(out)[0]["synthetic_probability"] - want) < 1e-5

    _write_images(tmp_path / "real", images(6, seed=7, size=(64, 64)))
    _write_images(tmp_path / "fake" / "a", images(3, seed=8, size=(64, 64)))
    _write_images(tmp_path / "fake" / "b", images(3, seed=9, size=(64, 64)))
    ej = tmp_path / "eval.json"
    code, out, err = run(["detector", "eval", "--real", str(tmp_path / "real"), "--fake", str(tmp_path / "fake"),
                          "--detector", str(tmp_path / "npr.pth"), "--arch", "npr", "--n-boot", "20",
                          "--json", str(ej)], capsys)
    assert code == 0, err
    ev = json.loads(ej.read_text())
    assert ev["kind"] == "pretrained-npr" and ev["pretrained"]["arch"] == "npr" and ev["n_real"] == 6
    assert ev["leave_one_generator_out"] is None and "fixed" in ev["leave_one_generator_out_reason"]
    assert 0.0 <= ev["results"]["clean"]["auc"]["value"] <= 1.0


def test_cli_review_with_published_weights(tmp_path, capsys):
    torch.save({"model": tiny_net("cnndetection").state_dict()}, tmp_path / "cnn.pth")
    ims = images(2, seed=11, size=(64, 64))
    _write_images(tmp_path / "imgs", ims)
    code, out, err = run(["review", str(tmp_path / "imgs"), "--out", str(tmp_path / "rev"), "--no-forgery",
                          "--detector", str(tmp_path / "cnn.pth"), "--arch", "cnndetection"], capsys)
    assert code == 0, err
    assert "Wang et al." in err
    rev = json.loads((tmp_path / "rev" / "review.json").read_text())
    entries = rev if isinstance(rev, list) else rev.get("files", rev.get("entries"))
    want = pt.load_pretrained(tmp_path / "cnn.pth", "cnndetection").predict_proba(ims)
    got = sorted((e["path"], e["synthetic_probability"]) for e in entries)
    np.testing.assert_allclose([g[1] for g in got], want, atol=1e-5)


def test_cli_bad_weights_and_usage(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.fromarray(images(1, size=(64, 64))[0]).save(img)
    canary = tmp_path / "pwned.txt"
    torch.save({"x": _Payload(canary)}, tmp_path / "evil.pth")
    code, out, err = run(["detect", str(img), "--detector", str(tmp_path / "evil.pth"), "--arch", "npr"], capsys)
    assert code == 2 and "evil.pth" in err and "refused" in err and len(err.strip().splitlines()) == 1
    assert not canary.exists()
    code, out, err = run(["detect", str(img), "--arch", "npr"], capsys)
    assert code == 2 and "--detector" in err and "Traceback" not in err
    torch.save(tiny_net("npr").state_dict(), tmp_path / "npr.pth")  # a published file without --arch: told how
    code, out, err = run(["detect", str(img), "--detector", str(tmp_path / "npr.pth")], capsys)
    assert code == 2 and "npr.pth" in err and "--arch" in err and len(err.strip().splitlines()) == 1


def test_cli_arch_choices_are_the_registered_architectures():
    from genguard.commands.detect import detect

    opt = next(p for p in detect.params if p.name == "arch")
    assert list(opt.type.choices) == list(pt.ARCHS)


def test_examine_image_marks_images_below_the_networks_stride_inconclusive(tmp_path):
    from genguard.examine import examine_image

    torch.save(tiny_net("npr").state_dict(), tmp_path / "npr.pth")
    det = pt.load_pretrained(tmp_path / "npr.pth", "npr")
    for side, inconclusive in ((20, True), (48, False)):
        f = tmp_path / f"s{side}.png"
        Image.fromarray(images(1, seed=side, size=(side, side))[0]).save(f)
        e = examine_image(0, f, det, None, True)
        assert e["detector"]["arch"] == "npr" and "not re-calibrated" in e["detector"]["calibration"]
        assert ("32-pixel minimum side" in e.get("note", "")) == inconclusive
        if inconclusive:
            assert e["detector_verdict"] == "inconclusive"
