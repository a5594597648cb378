"""Image reading for detectors/: every mode and format, corrupt files, decompression bombs, atomic writes."""
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from genguard.detectors import DetectorError
from genguard.detectors._io import as_rgb_array, atomic_write_bytes, list_images, read_image, to_grey


def _photo():
    from skimage import data

    return data.astronaut()[100:180, 150:250].copy()


@pytest.mark.parametrize("mode,ext", [("L", "png"), ("RGB", "jpg"), ("RGBA", "png"), ("RGB", "webp"),
                                      ("RGB", "tiff"), ("L", "tif"), ("P", "gif"), ("LA", "png")])
def test_reads_every_mode_and_format(tmp_path, mode, ext):
    im = Image.fromarray(_photo()).convert(mode)
    p = tmp_path / f"x.{ext}"
    im.save(p)
    rgb = read_image(p)
    assert rgb.dtype == np.uint8 and rgb.shape == (80, 100, 3)
    # the content survives: correlation with the original luma is high
    g0 = to_grey(_photo()).ravel()
    assert np.corrcoef(g0, to_grey(rgb).ravel())[0, 1] > 0.9


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)
    rgb = read_image(p)
    assert rgb.max() == 255 and rgb.min() == 0 and len(np.unique(rgb[..., 0])) > 200


def test_rgba_alpha_composited_over_white():
    a = np.zeros((4, 4, 4), np.uint8)  # fully transparent black
    assert (as_rgb_array(a) == 255).all()


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    bad = tmp_path / "garbage.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(DetectorError, match="garbage.png"):
        read_image(bad)
    good = tmp_path / "t.jpg"
    Image.fromarray(_photo()).save(good, quality=90)
    trunc = tmp_path / "truncated.jpg"
    trunc.write_bytes(good.read_bytes()[: 300])
    with pytest.raises(DetectorError, match="truncated.jpg"):
        read_image(trunc)
    with pytest.raises(DetectorError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def _png_with_header_size(path, w, h):
    """A tiny file whose PNG header claims w x h pixels (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def test_decompression_bomb_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    _png_with_header_size(p, 20_000, 20_000)  # 400 megapixels
    with pytest.raises(DetectorError, match=r"bomb\.png.*exceeds the 67,108,864-pixel limit"):
        read_image(p)
    small = tmp_path / "small.png"
    Image.fromarray(_photo()).save(small)
    with pytest.raises(DetectorError, match="exceeds"):
        read_image(small, max_pixels=1000)


def test_array_inputs_validated():
    with pytest.raises(DetectorError):
        as_rgb_array(np.zeros((3, 4, 5)))
    with pytest.raises(DetectorError):
        as_rgb_array(np.full((4, 4), np.nan))
    assert as_rgb_array(np.ones((5, 6), np.float32)).max() == 255


def test_list_images_recursive_and_missing(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    Image.fromarray(_photo()).save(tmp_path / "a" / "b" / "x.png")
    (tmp_path / "a" / "notes.txt").write_text("x")
    assert [p.name for p in list_images([tmp_path])] == ["x.png"]
    with pytest.raises(DetectorError, match="nope"):
        list_images([tmp_path / "nope"])


def test_atomic_write_leaves_old_file_on_failure(tmp_path):
    p = tmp_path / "out.bin"
    atomic_write_bytes(p, b"old")

    with pytest.raises(TypeError):
        atomic_write_bytes(p, 12345)  # not bytes: the write fails midway
    assert p.read_bytes() == b"old"
    assert [q.name for q in tmp_path.iterdir()] == ["out.bin"]
