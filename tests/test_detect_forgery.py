"""Forgery analysis: each method highlights a planted manipulation more than the untouched rest; copy-move F1."""
import numpy as np
import pytest

from genguard.detectors._io import jpeg_roundtrip
from genguard.detectors.evaluate import make_copy_move, pixel_f1
from genguard.detectors.forgery import METHODS, analyze, block_grid, copy_move, ela, jpeg_ghost, noise_inconsistency, overlay


def _photos():
    from skimage import data

    return [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]


def _inside_outside(m, gt):
    return float(m[gt].mean()), float(m[~gt].mean())


def test_copy_move_forgeries_found_and_authentic_left_clean():
    rng = np.random.default_rng(5)
    f1s, clean = [], []
    for i, p in enumerate(_photos() * 2):
        y, x = rng.integers(0, p.shape[0] - 256 + 1), rng.integers(0, p.shape[1] - 256 + 1)
        crop = np.ascontiguousarray(p[y:y + 256, x:x + 256])
        forged, gt = make_copy_move(crop, rng)
        r = copy_move(forged)
        assert r.map.shape == gt.shape
        f1s.append(pixel_f1(r.map > 0.5, gt))
        authentic = copy_move(jpeg_roundtrip(crop, 90))
        clean.append(authentic.map.mean())
    assert np.mean(f1s) >= 0.55, f"copy-move F1s {np.round(f1s, 2)}"
    assert np.mean(clean) < 0.01 and sum(c > 0.01 for c in clean) <= 1


def test_copy_move_translation_found_by_keypoints_and_blocks():
    """A translated copy is found both by keypoint matching and by overlapping-block matching."""
    from skimage import data

    img = np.ascontiguousarray(data.coffee()[:256, :256])
    out = img.copy()
    out[150:214, 20:84] = img[30:94, 150:214]
    gt = np.zeros(img.shape[:2], bool)
    gt[150:214, 20:84] = gt[30:94, 150:214] = True
    r = copy_move(jpeg_roundtrip(out, 95))
    assert pixel_f1(r.map > 0.5, gt) >= 0.8
    assert r.details["keypoint_matches"] > 0 and r.details["block_matches"] > 0
    assert r.score > 0.5


def test_block_grid_finds_misaligned_jpeg_splice():
    from skimage import data

    a, b = data.astronaut()[:256, :256].copy(), data.coffee()[:256, :256].copy()
    bg, src = jpeg_roundtrip(a, 70), jpeg_roundtrip(b, 70)
    out = bg.copy()
    out[96:192, 96:192] = src[99:195, 101:197]  # grid shifted by (3, 5)
    gt = np.zeros((256, 256), bool)
    gt[96:192, 96:192] = True
    r = block_grid(jpeg_roundtrip(out, 90))
    inside, outside = _inside_outside(r.map, gt)
    assert inside > 2 * outside + 0.05
    # no JPEG history at all: the method says it does not apply instead of inventing a map
    r0 = block_grid(data.astronaut()[:256, :256].copy())
    assert r0.score == 0.0 and "not applicable" in r0.details.get("note", "")


def test_jpeg_ghost_and_ela_see_a_region_with_another_compression_history():
    from skimage import data

    a = data.astronaut()[:256, :256].copy()
    low = jpeg_roundtrip(a, 50)
    out = a.copy()
    out[64:160, 96:192] = low[64:160, 96:192]  # the region was once saved at quality 50
    out = jpeg_roundtrip(out, 95)
    gt = np.zeros((256, 256), bool)
    gt[64:160, 96:192] = True
    g = jpeg_ghost(out)
    ins, outs = _inside_outside(g.map, gt)
    assert ins > outs + 0.1, (ins, outs)
    e = ela(out)
    ins, outs = _inside_outside(e.map, gt)
    assert abs(ins - outs) > 0.05  # the region's error level differs from the rest


@pytest.mark.parametrize("name", ["astronaut", "coffee"])
def test_noise_inconsistency_finds_a_noisier_region(name):
    from skimage import data

    a = getattr(data, name)()[:256, :256].astype(np.float32)
    rng = np.random.default_rng(1)
    a[128:224, 32:128] += rng.normal(0, 10, (96, 96, 3))
    out = np.clip(a, 0, 255).astype(np.uint8)
    gt = np.zeros((256, 256), bool)
    gt[128:224, 32:128] = True
    ins, outs = _inside_outside(noise_inconsistency(out).map, gt)
    assert ins > outs + 0.1, (ins, outs)


@pytest.mark.parametrize("shape", [(203, 157, 3), (20, 20, 3), (64, 300, 3)])
def test_maps_at_image_size_any_shape(shape):
    rng = np.random.default_rng(0)
    img = (rng.random(shape) * 255).astype(np.uint8)
    res = analyze(img)
    assert set(res) == set(METHODS)
    for name, r in res.items():
        assert r.map.shape == shape[:2], name
        assert r.map.dtype == np.float32 and 0 <= r.map.min() and r.map.max() <= 1, name
        assert 0.0 <= r.score <= 1.0, name
    ov = overlay(img, res["ela"].map)
    assert ov.shape == shape and ov.dtype == np.uint8
