"""A mixed folder a reviewer would recognise, and the verdicts `genguard detect` gives it (not a timed test).

Writes one folder (nothing downloaded; photos that ship with scikit-image, scikit-learn and matplotlib; a
fixed seed) holding several files of each kind:

* ``photo_png`` / ``photo_jpeg90``: untouched photo crops, PNG and JPEG 90;
* ``sdxl_mark``: photo crops through diffusers' own ``StableDiffusionXLWatermarker`` (as its pipelines call it);
* ``a1111`` / ``comfyui``: PNGs with the ``parameters`` (AUTOMATIC1111) or ``prompt`` + ``workflow`` (ComfyUI)
  text chunks as those tools write them;
* ``a1111_stripped`` / ``comfyui_stripped``: the same pixels re-saved without the chunks;
* ``genguard_tagged``: samples of a genguard reference generator (``genguard train --generator gmm --no-dp``,
  then ``genguard sample``), which tags each with a signed C2PA manifest and genguard's watermark, under
  keys made in a temporary ``GENGUARD_HOME``;
* ``genguard_tampered``: the same files with pixels changed after signing (the manifest chunk kept);
* ``genguard_manifest_stripped``: the same pixels re-saved without the manifest (the watermark only);
* ``genguard_mark_copied``: untouched photo crops carrying a genguard watermark lifted from *another* image
  (a photo crop tagged with ``genguard tag``; its residual added to this one: the copy attack);
* ``copy_move``: a 40-72 px block copied within a photo crop, saved at JPEG 90
  (``detectors/forgery_sets.copy_move_block``);
* ``unseen_tconv`` / ``unseen_bicubic_noise``: images from generator families the detector never saw: an
  untrained stack of stride-2 transposed convolutions fed noise, and uniform noise up-sampled x8 bicubically.

Then runs ``genguard detect FOLDER --json`` through the CLI (a subprocess, one thread) and prints a table of
kind x verdict counts with one example ``verdict_basis`` per kind, and the CPU time of building and of detect.

The watermark key is derived from the seed (the signing keys are new each run), so the folder's pixels, and
every verdict, are the same run to run. The script exits 1 and names the file if a guaranteed verdict fails.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/mixed_folder.py [--per-kind 6] [--seed 0] [--keep DIR]
[--kinds photo_png,...] [--compare-fuse OLD_EXAMINE_PY]`` (needs diffusers and invisible-watermark for the SDXL
kind, like benchmarks/wild_signals.py). ``--compare-fuse`` re-fuses the same results with another version of
``genguard/examine.py`` (``git show REV:genguard/examine.py > old.py``) and prints both counts per kind.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from PIL import Image, PngImagePlugin  # noqa: E402

from _png_chunks import replace_pixels  # noqa: E402

#: photos held out of the shipped detector's training (benchmarks/detector_families.TEST_PHOTOS) and of the
#: forgery calibration's build split (detectors/forgery_sets.BUILD_PHOTOS), so the pixel signals are not
#: judged on images they were fitted to
PHOTOS = ("flower", "grace_hopper", "gravel", "motorcycle_right")
SIDE = 256

KINDS = ("photo_png", "photo_jpeg90", "sdxl_mark", "a1111", "comfyui", "a1111_stripped", "comfyui_stripped",
         "genguard_tagged", "genguard_tampered", "genguard_manifest_stripped", "genguard_mark_copied", "copy_move", "unseen_tconv",
         "unseen_bicubic_noise")
#: the verdicts each kind must get whatever the pixel detector and forgery analyses say (the test checks these);
#: the pixel-only kinds (photos, copy-move, unseen families) have none guaranteed
GUARANTEED = {"sdxl_mark": {"generated"}, "a1111": {"generated"}, "comfyui": {"generated"},
              "genguard_tagged": {"generated"}, "genguard_tampered": {"edited"},
              "genguard_manifest_stripped": {"generated"}}
#: kinds whose non-pixel evidence is gone or worthless (stripped chunks, a copied mark): their verdict must be
#: what the pixel signals alone give -- no_evidence or inconclusive unless the detector or a forgery analysis
#: fires on the photo -- and never one decided by the stripped or copied signal
PIXELS_ONLY = ("a1111_stripped", "comfyui_stripped", "genguard_mark_copied")

A1111 = ("a photo of a cat on a sofa, masterpiece, best quality\nNegative prompt: blurry, lowres\n"
         "Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: {seed}, Size: 256x256, Model hash: 6ce0161689, "
         "Model: v1-5-pruned-emaonly, Version: v1.6.0")


def comfy_chunks(seed: int) -> dict[str, str]:
    """ComfyUI's two chunks: the API-format ``prompt`` graph and the UI ``workflow`` (both JSON)."""
    prompt = {"3": {"class_type": "KSampler", "inputs": {"seed": seed, "steps": 20, "cfg": 8.0,
                                                         "sampler_name": "euler", "scheduler": "normal",
                                                         "denoise": 1.0, "model": ["4", 0], "positive": ["6", 0],
                                                         "negative": ["7", 0], "latent_image": ["5", 0]}},
              "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd_xl_base_1.0.safetensors"}},
              "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 256, "height": 256, "batch_size": 1}},
              "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a flower in a garden", "clip": ["4", 1]}},
              "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
              "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
              "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}}}
    workflow = {"last_node_id": 9, "last_link_id": 9, "version": 0.4,
                "nodes": [{"id": int(k), "type": v["class_type"]} for k, v in prompt.items()]}
    return {"prompt": json.dumps(prompt), "workflow": json.dumps(workflow)}


def crops(n: int, rng: np.random.Generator, side: int = SIDE) -> list[np.ndarray]:
    """``n`` random ``side`` x ``side`` RGB crops, cycling over :data:`PHOTOS`."""
    from skimage import data

    from genguard.detectors.forgery_sets import photo

    imgs = [np.ascontiguousarray(data.stereo_motorcycle()[1]) if p == "motorcycle_right" else photo(p) for p in PHOTOS]
    out = []
    for i in range(n):
        img = imgs[i % len(imgs)]
        y, x = int(rng.integers(0, img.shape[0] - side + 1)), int(rng.integers(0, img.shape[1] - side + 1))
        out.append(np.ascontiguousarray(img[y:y + side, x:x + side]))
    return out


def save_png(path: Path, rgb: np.ndarray, text: dict[str, str] | None = None) -> None:
    info = PngImagePlugin.PngInfo()
    for k, v in (text or {}).items():
        info.add_text(k, v, zip=len(v) > 1000)  # long values go into zTXt, as PIL-based tools write them
    Image.fromarray(rgb).save(path, "PNG", pnginfo=info)


def save_jpeg(path: Path, rgb: np.ndarray, quality: int = 90) -> None:
    Image.fromarray(rgb).save(path, "JPEG", quality=quality)


def sdxl_marked(rgb: np.ndarray) -> np.ndarray:
    """A photo through diffusers' own SDXL watermarker, as its pipelines call it (float tensor in [-1, 1])."""
    import torch
    from diffusers.pipelines.stable_diffusion_xl.watermark import StableDiffusionXLWatermarker

    t = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    out = StableDiffusionXLWatermarker().apply_watermark(t)
    return ((out[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)


def unseen_tconv(seed: int, side: int = SIDE) -> np.ndarray:
    """An untrained DCGAN-like generator: 8x8 noise through five stride-2 ConvTranspose2d layers to ``side``."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    chans = [64, 48, 32, 24, 16, 3]
    layers: list[nn.Module] = []
    for i, o in zip(chans, chans[1:]):
        layers += [nn.ConvTranspose2d(i, o, 4, 2, 1), nn.BatchNorm2d(o), nn.ReLU()]
    net = nn.Sequential(*layers[:-2], nn.Tanh()).eval()
    with torch.no_grad():
        x = net(torch.randn(1, 64, side // 32, side // 32))[0]
        # an untrained net's output has no set scale: stretch each image to the full 8-bit range
        x = (x - x.min()) / (x.max() - x.min() + 1e-8)
    return (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def bicubic_noise(rng: np.random.Generator, side: int = SIDE) -> np.ndarray:
    small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((side, side), Image.BICUBIC))


def change_pixels_keep_manifest(signed: Path, dest: Path, rng: np.random.Generator) -> None:
    """``signed`` with a small block of pixels painted over after signing; every other chunk (caBX) kept.

    This is what an edit by a tool that keeps unknown chunks looks like: the manifest is still there, and its
    hash of the pixels no longer matches.
    """
    data = signed.read_bytes()
    with Image.open(signed) as im:
        mode, arr = im.mode, np.array(im)
    h, w = arr.shape[:2]
    r = max(4, min(h, w) // 4)
    y, x = int(rng.integers(0, h - r + 1)), int(rng.integers(0, w - r + 1))
    arr[y:y + r, x:x + r] = 255 - arr[y:y + r, x:x + r]
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "PNG")
    dest.write_bytes(replace_pixels(data, buf.getvalue()))


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "genguard", "--threads", "1", *args], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"genguard {' '.join(args)} failed ({r.returncode}): {r.stderr.strip()[-2000:]}")
    return r


def cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, GENGUARD_HOME=str(home), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def benchmark_keys(home: Path, seed: int, env: dict[str, str]) -> None:
    """Keys for the run in ``home``: made by ``genguard keys init``, then the watermark key replaced by one
    derived from ``seed``, so the marked pixels are the same run to run (a benchmark key, never for real use;
    the C2PA signing keys stay random, and only signatures, not pixels, differ between runs)."""
    import hashlib

    wm = home / "keys" / "watermark.key"
    if wm.exists():
        return
    _cli(["keys", "init"], env)
    key = hashlib.sha256(f"genguard mixed-folder benchmark watermark key, seed {seed}".encode()).hexdigest()
    wm.write_text(key + "\n")
    wm.chmod(0o600)


def build(folder: Path, home: Path, per_kind: int, seed: int = 0, kinds: tuple[str, ...] = KINDS) -> dict[str, str]:
    """Write the mixed folder; returns file name -> kind (also in the name: ``<kind>__NN.ext``)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    env = cli_env(home)
    benchmark_keys(home, seed, env)
    out: dict[str, str] = {}

    def name(kind: str, i: int, ext: str) -> Path:
        out[f"{kind}__{i:02d}.{ext}"] = kind
        return folder / f"{kind}__{i:02d}.{ext}"

    base = crops(per_kind * 7, rng)  # separate crops for each photo-based kind
    take = iter(range(len(base)))

    def kind_crops() -> list[np.ndarray]:
        return [base[next(take)] for _ in range(per_kind)]

    for i, c in enumerate(kind_crops()):
        if "photo_png" in kinds:
            save_png(name("photo_png", i, "png"), c)
    for i, c in enumerate(kind_crops()):
        if "photo_jpeg90" in kinds:
            save_jpeg(name("photo_jpeg90", i, "jpg"), c, 90)
    sdxl_crops = kind_crops()
    if "sdxl_mark" in kinds:
        for i, c in enumerate(sdxl_crops):
            save_png(name("sdxl_mark", i, "png"), sdxl_marked(c))
    meta_crops = kind_crops()
    for i, c in enumerate(meta_crops):
        s = int(rng.integers(0, 2**32))
        if "a1111" in kinds:
            save_png(name("a1111", i, "png"), c, {"parameters": A1111.format(seed=s)})
        if "comfyui" in kinds:
            save_png(name("comfyui", i, "png"), c, comfy_chunks(s))
        # the same files re-saved by a tool that keeps pixels and drops text chunks
        if "a1111_stripped" in kinds:
            save_png(name("a1111_stripped", i, "png"), np.asarray(Image.open(folder / f"a1111__{i:02d}.png")
                                                                  if "a1111" in kinds else c))
        if "comfyui_stripped" in kinds:
            save_png(name("comfyui_stripped", i, "png"), np.asarray(Image.open(folder / f"comfyui__{i:02d}.png")
                                                                    if "comfyui" in kinds else c))
    if any(k.startswith("genguard_") for k in kinds):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            _cli(["train", "--generator", "gmm", "--no-dp", "--seed", str(seed), "--out", str(tmp / "m")], env)
            _cli(["sample", "--model", str(tmp / "m"), "-n", str(per_kind), "--seed", str(seed),
                  "--out", str(tmp / "s")], env)
            samples = sorted((tmp / "s").glob("*.png"))
            if len(samples) != per_kind:
                raise SystemExit(f"genguard sample wrote {len(samples)} images, expected {per_kind}")
            for i, s in enumerate(samples):
                if "genguard_tagged" in kinds:
                    name("genguard_tagged", i, "png").write_bytes(s.read_bytes())
                if "genguard_tampered" in kinds:
                    change_pixels_keep_manifest(s, name("genguard_tampered", i, "png"), rng)
                if "genguard_manifest_stripped" in kinds:
                    with Image.open(s) as im:  # PIL writes no caBX chunk: same pixels, manifest gone
                        im.save(name("genguard_manifest_stripped", i, "png"), "PNG")
    copy_src, copy_dst = kind_crops(), kind_crops()
    if "genguard_mark_copied" in kinds:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            for i, (src, dst) in enumerate(zip(copy_src, copy_dst)):
                save_png(tmp / f"src{i}.png", src)
            _cli(["tag", *map(str, sorted(tmp.glob("src*.png"))), "--out", str(tmp / "tagged"),
                  "--generator", "gmm", "--run-id", f"run-mixed-folder-{seed}"], env)
            for i, (src, dst) in enumerate(zip(copy_src, copy_dst)):
                with Image.open(tmp / "tagged" / f"src{i}.png") as im:
                    mark = np.asarray(im.convert("RGB"), np.int16) - src.astype(np.int16)
                save_png(name("genguard_mark_copied", i, "png"), np.clip(dst + mark, 0, 255).astype(np.uint8))
    cm_crops = kind_crops()
    if "copy_move" in kinds:
        from genguard.detectors.forgery_sets import copy_move_block

        for i, c in enumerate(cm_crops):
            forged, _ = copy_move_block(c, rng)  # already through JPEG 90; saved at 90 like the calibration's
            save_jpeg(name("copy_move", i, "jpg"), forged, 90)
    for i in range(per_kind):
        if "unseen_tconv" in kinds:
            save_png(name("unseen_tconv", i, "png"), unseen_tconv(seed * 1000 + i))
        if "unseen_bicubic_noise" in kinds:
            save_png(name("unseen_bicubic_noise", i, "png"), bicubic_noise(rng))
    return out


def kind_of(path: str) -> str:
    m = re.match(r"(.+)__\d+\.\w+$", Path(path).name)
    return m.group(1) if m else "?"


def detect(folder: Path, home: Path, out_json: Path) -> tuple[list[dict], float, float]:
    """``genguard detect FOLDER --json OUT`` in a subprocess: (entries, its CPU seconds, its wall seconds)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    _cli(["detect", str(folder), "--json", str(out_json)], cli_env(home))
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return json.loads(out_json.read_text()), cpu, wall


def table(entries: list[dict], kinds: tuple[str, ...] = KINDS) -> str:
    from genguard.examine import VERDICTS

    counts = {k: Counter() for k in kinds}
    for e in entries:
        counts.setdefault(kind_of(e["path"]), Counter())[e.get("verdict") or "error"] += 1
    basis: dict[str, str] = {}
    for e in entries:  # the example is a file with its kind's most common verdict
        k = kind_of(e["path"])
        if (e.get("verdict") or "error") == counts[k].most_common(1)[0][0]:
            basis.setdefault(k, e.get("verdict_basis") or e.get("error", ""))
    cols = [*VERDICTS, "error"]
    lines = ["| kind | n | " + " | ".join(cols) + " | guaranteed | one example's verdict_basis |",
             "|---|---|" + "---|" * len(cols) + "---|---|"]
    for k, c in counts.items():
        if not c:
            continue
        ok = "/".join(sorted(GUARANTEED[k])) if k in GUARANTEED else (
            "inconclusive unless the pixels decide" if k == "genguard_mark_copied" else
            "what the pixels alone give" if k in PIXELS_ONLY else "–")
        if k == "sdxl_mark":
            ok += " where the mark is read"
        lines.append(f"| {k} | {sum(c.values())} | " + " | ".join(str(c.get(v, 0)) for v in cols) + f" | {ok} | "
                     + basis[k].replace("|", "/")[:160] + " |")
    return "\n".join(lines)


def sdxl_read(entries: list[dict]) -> int:
    return sum(any(f["name"] == "sdxl" for f in ((e.get("wild") or {}).get("known_watermarks") or {}).get("found", []))
               for e in entries if kind_of(e["path"]) == "sdxl_mark")


def reference_reads(folder: Path) -> int:
    """How many sdxl_mark files invisible-watermark's own decoder reads (the publisher's reference)."""
    from diffusers.pipelines.stable_diffusion_xl.watermark import WATERMARK_BITS
    from imwatermark import WatermarkDecoder

    dec, n = WatermarkDecoder("bits", 48), 0
    for p in sorted(folder.glob("sdxl_mark__*.png")):
        x = np.asarray(Image.open(p).convert("RGB"))
        n += any(int(np.sum(np.asarray(dec.decode(np.ascontiguousarray(v), "dwtDct"), int) != WATERMARK_BITS)) <= 4
                 for v in (x, x[:, :, ::-1]))
    return n


def compare_fuse(entries: list[dict], examine_py: Path, kinds: tuple[str, ...] = KINDS) -> str:
    """Verdict counts per kind from another ``fuse`` (loaded from ``examine_py``) beside this tree's, on the
    same detect results: a before/after of a fusion change in one run."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("examine_compared", examine_py)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{examine_py}: not a Python file")
    other = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(other)
    lines = [f"kind | verdicts with {examine_py}'s fuse | with this tree's"]
    for k in kinds:
        es = [e for e in entries if kind_of(e["path"]) == k and not e.get("error")]
        before = Counter(other.fuse(e)[0] for e in es)
        after = Counter(e["verdict"] for e in es)
        fmt = lambda c: ", ".join(f"{v} {n}" for v, n in sorted(c.items()))  # noqa: E731
        lines.append(f"{k} | {fmt(before)} | {fmt(after)}" + (" (changed)" if before != after else ""))
    return "\n".join(lines)


def pixel_verdict(entry: dict) -> str:
    """The verdict the pixel detector and forgery analyses alone give this entry (provenance and wild signals dropped)."""
    from genguard.examine import fuse

    return fuse({**entry, "provenance": None, "wild": None})[0]


def allowed(entry: dict) -> set[str] | None:
    """The verdicts an entry's kind allows (None: a pixel-only kind, nothing guaranteed)."""
    k = kind_of(entry["path"])
    if k == "sdxl_mark" and not ((entry.get("wild") or {}).get("known_watermarks") or {}).get("found"):
        # dwtDct's embedding does not survive the encoder's rounding in some photos (invisible-watermark's
        # own decoder misses those too): no mark in the pixels, nothing to guarantee
        return None
    if k in GUARANTEED:
        return GUARANTEED[k]
    if k == "genguard_mark_copied":
        pixels = pixel_verdict(entry)
        if not ((entry.get("provenance") or {}).get("watermark") or {}).get("found"):
            # the lifted mark did not survive on this photo (strong texture drowns it): only pixels are left
            return {pixels}
        # the unbound mark is undecided; the pixel signals may still decide
        return {pixels if pixels in ("generated", "edited") else "inconclusive"}
    if k in PIXELS_ONLY:  # nothing else is left: exactly the pixels' verdict
        return {pixel_verdict(entry)}
    return None


def wrong(entries: list[dict]) -> list[str]:
    """Files whose verdict breaks their kind's guarantee (any is a bug); "authentic" is never a verdict."""
    out = []
    for e in entries:
        ok = allowed(e)
        if e.get("verdict") == "authentic" or (ok is not None and e.get("verdict") not in ok):
            out.append(f"{Path(e['path']).name}: {e.get('verdict')} ({e.get('verdict_basis')})")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-kind", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=Path, help="write the folder and detect.json here (kept) instead of a temp dir")
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated kinds to write [default: all]")
    ap.add_argument("--compare-fuse", type=Path, metavar="EXAMINE_PY",
                    help="another version of genguard/examine.py (e.g. from git show REV:genguard/examine.py): "
                         "re-fuse the same detect results with its fuse and print both verdict counts per kind")
    a = ap.parse_args(argv)
    kinds = tuple(k.strip() for k in a.kinds.split(",") if k.strip())
    if not kinds or set(kinds) - set(KINDS):
        ap.error(f"--kinds: unknown {sorted(set(kinds) - set(KINDS))}; choose from {', '.join(KINDS)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = a.keep or Path(tmp)
        folder, home = work / "mixed", Path(tmp) / "home"
        if folder.exists() and any(folder.iterdir()):
            raise SystemExit(f"{folder}: already holds files; give an empty --keep folder")
        c0 = time.process_time()
        ch0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        files = build(folder, home, a.per_kind, a.seed, kinds)
        ch1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        build_cpu = time.process_time() - c0 + (ch1.ru_utime - ch0.ru_utime) + (ch1.ru_stime - ch0.ru_stime)
        build_wall = time.perf_counter() - t0
        entries, cpu, wall = detect(folder, home, work / "detect.json")
        print(f"mixed folder: {len(files)} files, {len(set(files.values()))} kinds, seed {a.seed}; "
              f"built in {build_cpu:.1f} s CPU ({build_wall:.1f} s wall)")
        print(f"genguard detect (one thread): {len(entries)} images, {cpu:.1f} s CPU, {wall:.1f} s wall, "
              f"{cpu / max(1, len(entries)):.2f} s CPU per image")
        print(table(entries, kinds))
        if "sdxl_mark" in kinds:
            print(f"SDXL marks read: genguard {sdxl_read(entries)} of {a.per_kind}; invisible-watermark's own decoder "
                  f"(either channel order, <= 4 of 48 bits wrong) {reference_reads(folder)} of {a.per_kind}")
        if "genguard_mark_copied" in kinds:
            wms = [(e.get("provenance") or {}).get("watermark") or {} for e in entries
                   if kind_of(e["path"]) == "genguard_mark_copied"]
            print(f"copied genguard marks found by verify: {sum(bool(w.get('found')) for w in wms)} of {len(wms)}, "
                  f"bound to the photo: {sum((w.get('content_binding') or {}).get('bound') is True for w in wms)}")
        if a.compare_fuse:
            print(compare_fuse(entries, a.compare_fuse, kinds))
        bad = wrong(entries)
        print(f"guarantees broken: {len(bad)}")
        for b in bad:
            print("  " + b)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
