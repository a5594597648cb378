"""Tag a file with provenance (watermark + signed C2PA manifest) and verify a file's provenance into one verdict."""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
from pathlib import Path
from typing import Any

from genguard.generators._io import (MAX_IMAGE_BYTES, MAX_PIXELS, atomic_write_bytes, atomic_write_json, check_pixels,
                                     read_bytes_bounded)

from genguard.guardrails.provenance import ProvenanceError
from genguard.guardrails.provenance import manifest as mf
from genguard.guardrails.provenance.keys import KeyStore, default_key_dir

#: Smallest image side that gets an invisible watermark. The watermark is spread over a periodic
#: 96x96-pixel tile and its strength is capped by the PSNR budget, so its evidence grows with the
#: image area; below 256 px a side (and after a x0.5 resize, below 128) there is too little of it to
#: decode 48 bits and pass the 1e-6 false-positive test after everyday edits. The default pipeline's
#: 32x32 digits are far below this: they carry the C2PA manifest only.
MIN_WATERMARK_SIDE = 256
#: images from this side up to MIN_WATERMARK_SIDE get the keyed zero-bit mark instead (presence only; see
#: guardrails/provenance/smallmark.py): the 32x32 digit samples carry it
SMALL_MARK_MIN_SIDE = 16
REGISTRY_FILE = "watermark_registry.json"
_HEX = re.compile(r"^[0-9a-fA-F]{64}$")


def _check_claim(claim: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(claim, dict):
        raise ProvenanceError("claim must be a dict with at least 'generator' and 'run_id'")
    for k in ("generator", "run_id"):
        if not isinstance(claim.get(k), str) or not claim[k]:
            raise ProvenanceError(f"claim[{k!r}] must be a non-empty string")
    out = dict(claim)
    out.setdefault("private", False)
    for k in ("epsilon", "delta"):
        v = out.setdefault(k, None)
        if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not v == v or v < 0):
            raise ProvenanceError(f"claim[{k!r}] must be a non-negative number or None, got {v!r}")
    ls = out.setdefault("ledger_sha256", None)
    if ls is not None and not (isinstance(ls, str) and _HEX.match(ls)):
        raise ProvenanceError(f"claim['ledger_sha256'] must be a 64-character hex SHA-256, got {ls!r}")
    try:
        json.dumps(out, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ProvenanceError(f"claim is not JSON-serialisable: {exc}") from None
    return out


def watermark_id_for(run_id: str) -> bytes:
    """The 48-bit watermark payload naming a run: the first 6 bytes of SHA-256(run id)."""
    return hashlib.sha256(run_id.encode("utf-8")).digest()[:6]


def _registry_path(keys: KeyStore | None) -> Path:
    d = keys.directory if keys is not None and keys.directory is not None else default_key_dir()
    return d / REGISTRY_FILE


def _load_registry(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _register(keys: KeyStore | None, wm_id: bytes, claim: dict[str, Any]) -> None:
    from genguard.guardrails.provenance.keys import _locked

    path = _registry_path(keys)
    entry = {"generator": claim["generator"], "run_id": claim["run_id"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path.parent, exclusive=True):  # concurrent taggers must not drop each other's entries
        reg = _load_registry(path)
        if reg.get(wm_id.hex()) != entry:
            reg[wm_id.hex()] = entry
            atomic_write_json(path, reg)


def _read(path: Path) -> bytes:
    # regular files only (a FIFO would block open forever), within the byte budget
    return read_bytes_bounded(path, MAX_IMAGE_BYTES, ProvenanceError)


def _decode_image(data: bytes, name: str):
    """(array uint8 HxW or HxWx3/4, PIL mode) of an image file, or ProvenanceError."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            check_pixels(*im.size, name, MAX_PIXELS, ProvenanceError)  # from the header, before decoding
            im.load()
            mode = im.mode
            if mode not in ("L", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in mode or "transparency" in im.info else "RGB")
                mode = im.mode
            return np.asarray(im).copy(), mode
    except ProvenanceError:
        raise
    except Exception as exc:  # PIL raises many types for truncated/garbage data
        raise ProvenanceError(f"{name}: unreadable image: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None


#: 8-bit modes the watermark can be written back into without losing precision
_WATERMARKABLE_MODES = ("L", "RGB", "RGBA", "P", "LA", "PA")


def _source_mode(data: bytes) -> str:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.mode


def _source_metadata(data: bytes) -> dict[str, bytes]:
    """EXIF (orientation included) and ICC profile of the source, carried over when the pixels are re-encoded."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        meta = {}
        exif = im.info.get("exif") or (im.getexif().tobytes() if len(im.getexif()) else None)
        if exif:
            meta["exif"] = exif
        if im.info.get("icc_profile"):
            meta["icc_profile"] = im.info["icc_profile"]
        return meta


def _encode_image(arr, fmt: str, meta: dict[str, bytes] | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    im = Image.fromarray(arr)
    meta = meta or {}
    if fmt == "png":
        im.save(buf, "PNG", optimize=False, **meta)
    elif fmt == "jpeg":
        (im.convert("RGB") if im.mode == "RGBA" else im).save(buf, "JPEG", quality=95, subsampling=0, **meta)
    else:
        im.save(buf, "WEBP", quality=95, method=4, **meta)
    return buf.getvalue()


def tag_file(path: str | os.PathLike, out: str | os.PathLike | None = None, *, claim: dict[str, Any],
             keys: KeyStore | None = None, watermark: bool = True, c2pa: bool = True) -> Path:
    """Write a tagged copy of ``path`` to ``out`` (or replace ``path`` atomically when ``out`` is None).

    PNG/JPEG/WebP: an invisible watermark naming the run (images of at least
    :data:`MIN_WATERMARK_SIDE` px) and an embedded signed C2PA manifest. Any other file: the file is
    copied unchanged and a signed sidecar ``<out>.c2pa`` binds it by hash. Returns the tagged file's path.
    """
    path = Path(path)
    claim = _check_claim(claim)
    dest = Path(out) if out is not None else path
    try:
        out_mode = path.stat().st_mode & 0o777 if out is None else 0o644
    except OSError:
        out_mode = 0o644
    if dest.exists() and dest.is_dir():
        raise ProvenanceError(f"{dest}: output is a directory; give a file path")
    data = _read(path)
    fmt = mf.sniff_format(data)
    if c2pa and keys is None:
        keys = KeyStore.load_or_create()

    from genguard.guardrails.provenance import wavfile

    if wavfile.is_wav(data):
        atomic_write_bytes(dest, _tag_wav(path, dest, data, claim, keys, watermark, c2pa), mode=out_mode)
        return dest
    if fmt is None:  # sidecar-bound file
        sidecar = None
        if c2pa:
            manifest = mf.build_manifest(claim, title=dest.name, kind=mf.asset_kind(dest))
            sidecar = mf.sign_sidecar(data, mf.sidecar_mime(dest), manifest, keys)
        if dest != path:
            atomic_write_bytes(dest, data, mode=out_mode)
        if sidecar is not None:
            atomic_write_bytes(mf.sidecar_path(dest), sidecar, mode=0o644)
        return dest

    arr, mode = _decode_image(data, str(path))
    # a file that already carries someone's manifest keeps it as the parentOf ingredient (c2pa.opened)
    parent = c2pa and mf.has_manifest(data, mf.EMBEDDED_MIME[fmt], str(path))
    original = data
    wm_id = None
    wm_info = None
    if watermark and min(arr.shape[:2]) >= MIN_WATERMARK_SIDE and _source_mode(data) in _WATERMARKABLE_MODES:
        from genguard.guardrails.provenance.watermark import ImageWatermark

        wmk = ImageWatermark(_watermark_key(keys))
        wm_id = watermark_id_for(claim["run_id"])
        arr = wmk.embed(arr, wm_id)
        wm_info = {"payload_bits": 48, "false_positive_rate": wmk.false_positive_rate}
        data = _encode_image(arr, fmt, _source_metadata(data))  # EXIF orientation and ICC survive tagging
        _register(keys, wm_id, claim)
    elif watermark and min(arr.shape[:2]) >= SMALL_MARK_MIN_SIDE and _source_mode(data) in _WATERMARKABLE_MODES:
        # too small for the payload: the keyed zero-bit mark (presence only, names no run, so nothing is
        # registered and the manifest declares no watermark id)
        from genguard.guardrails.provenance.smallmark import SmallImageMark

        arr = SmallImageMark(_watermark_key(keys)).embed(arr)
        data = _encode_image(arr, fmt, _source_metadata(data))
    # without a watermark the original bytes are kept as they are (no needless re-encoding)
    if c2pa:
        manifest = mf.build_manifest(claim, title=dest.name, watermark_id=wm_id, watermark_info=wm_info,
                                     parent=parent)
        # a manifest thumbnail only for images big enough to deserve one (see sign_embedded)
        data = mf.sign_embedded(data, fmt, manifest, keys, thumbnail=min(arr.shape[:2]) >= MIN_WATERMARK_SIDE,
                                parent_data=original if parent else None, parent_title=path.name)
    atomic_write_bytes(dest, data, mode=out_mode)
    return dest


def _decode_wav(data: bytes, name: str, max_seconds: float | None = None):
    from genguard.guardrails.provenance.wavfile import WavError, read_wav

    try:
        return read_wav(data, name, max_seconds)
    except WavError as exc:
        raise ProvenanceError(str(exc)) from None


def _tag_wav(path: Path, dest: Path, data: bytes, claim: dict[str, Any], keys: KeyStore | None, watermark: bool,
             c2pa: bool) -> bytes:
    """The tagged bytes of a WAV file: the audio watermark (see :mod:`.audio_watermark`), then a signed C2PA
    manifest in a ``C2PA`` chunk. Marking rewrites the samples in their own format (PCM width or float) and
    keeps only the fmt and data chunks (LIST/INFO and other chunks are dropped)."""
    from genguard.guardrails.provenance.audio_watermark import AudioWatermark
    from genguard.guardrails.provenance.wavfile import encode_wav

    from genguard.guardrails.provenance.audio_watermark import MAX_MARK_SECONDS

    wav = _decode_wav(data, str(path))
    if watermark and wav.duration > MAX_MARK_SECONDS:
        raise ProvenanceError(f"{path}: {wav.duration:.0f} s of audio is longer than the {MAX_MARK_SECONDS:.0f} s "
                              "genguard marks in one piece; split it, or tag with --no-watermark")
    parent = c2pa and mf.has_manifest(data, mf.EMBEDDED_MIME["wav"], str(path))
    original = data
    # a clip too short, or at a rate too low, to carry the mark keeps its samples: verify_file and `genguard tag`
    # say why it is unmarked (audio_unmarked_reason)
    if watermark and AudioWatermark.markable(wav.duration, wav.rate):
        # the zero-bit mark names no run (nothing registered, no watermark id in the manifest)
        marked = AudioWatermark(_watermark_key(keys)).embed(wav.samples, wav.rate)
        data = encode_wav(marked, wav.rate, wav.fmt, wav.bits)
    if c2pa:
        manifest = mf.build_manifest(claim, title=dest.name, parent=parent)
        try:
            data = mf.sign_embedded(data, "wav", manifest, keys, thumbnail=False,
                                    parent_data=original if parent else None, parent_title=path.name)
        except ProvenanceError as exc:  # c2pa's own parse errors (a lying RIFF size): name the file
            raise ProvenanceError(f"{path}: {exc}") from None
    return data


#: what a genguard audio mark alone shows, stated with every detection
AUDIO_MARK_NOTE = ("the mark shows that a holder of this watermark key marked this audio's band energies; it is a "
                   "property of the signal, not of the file, so it can be copied onto other audio (copy attack) "
                   "and it does not show who made the clip: the signed manifest's hash binds the exact file")


def _audio_mark(data: bytes, path: Path, keys: KeyStore | None) -> dict[str, Any]:
    """The audio watermark's reading of a WAV file (raises ProvenanceError when the audio does not decode)."""
    from genguard.guardrails.provenance.audio_watermark import DETECT_MAX_SECONDS, unmarkable_reason

    wav = _decode_wav(data, str(path), DETECT_MAX_SECONDS)
    key, why = (keys.watermark_key, "") if keys is not None else _local_watermark_key()
    if key is None:
        return {"applicable": False, "reason": why}
    from genguard.guardrails.provenance.audio_watermark import AudioWatermark

    det = AudioWatermark(key).detect(wav.samples, wav.rate)
    if wav.note:
        det["file_note"] = wav.note
    why = unmarkable_reason(wav.duration, wav.rate)
    if why is not None and not det.get("found"):  # absence is expected here: tagging does not mark such a clip
        det.update(markable=False, reason=f"genguard does not mark this clip: {why}")
    if det.get("found"):
        det["note"] = AUDIO_MARK_NOTE
    return det


#: why a clip that was marked can still read as unmarked: the embedder works on the band energies the clip has
MARK_NOT_FOUND = "the mark was embedded but is not found in this clip"


def audio_mark_absence(det: dict[str, Any], detail: bool = False) -> str | None:
    """Why an audio mark reading (:func:`_audio_mark`, verify's ``watermark``) shows no mark on a tagged clip: a
    clip tagging does not mark (too short, too low a rate), or a mark embedded and not found; with ``detail`` the
    test's p-value is named (one reason per file instead of one per kind). None when found or not applicable."""
    from genguard.guardrails.provenance.audio_watermark import N_CHIPS

    if det.get("markable") is False:
        return str(det.get("reason"))
    if not det.get("applicable") or det.get("found"):
        return None
    seen = ""
    if detail and "p_value" in det:
        seen = f"p={det['p_value']:.1e} over {det['chips']} of {N_CHIPS} chips with sound; "
    return f"{MARK_NOT_FOUND} ({seen}near-silence or noise carries it too weakly)"


def audio_unmarked_reason(path: str | os.PathLike, keys: KeyStore | None = None, detect: bool = False) -> str | None:
    """Why the WAV file ``path`` carries no audio mark after tagging: too short, or too low a sample rate (tagging
    does not mark it), or with ``detect``, a mark embedded but not found with the watermark key (a clip of
    near-silence or noise gives the mark too little to ride on). None when it is marked (or is not a WAV file, or
    there is no key to look with)."""
    from genguard.guardrails.provenance import wavfile
    from genguard.guardrails.provenance.audio_watermark import unmarkable_reason

    data = _read(Path(path))
    if not wavfile.is_wav(data):
        return None
    wav = _decode_wav(data, str(path))
    why = unmarkable_reason(wav.duration, wav.rate)
    if why is None and detect:
        why = audio_mark_absence(_audio_mark(data, Path(path), keys), detail=True)
    return why


def _small_mark(arr, keys: KeyStore | None) -> dict[str, Any] | None:
    """The zero-bit mark's reading of a small image, when it is found or the payload mark cannot be read
    (under 64 px); None when the payload detector should speak (a larger marked image shrunk below 256 px)."""
    key, why = (keys.watermark_key, "") if keys is not None else _local_watermark_key()
    if key is None:
        out = {"applicable": False, "reason": why}
    else:
        from genguard.guardrails.provenance.smallmark import SmallImageMark

        det = SmallImageMark(key).detect(arr)
        out = det if det["found"] or min(arr.shape[:2]) < 64 else None
    return out


def _watermark_key(keys: KeyStore | None) -> bytes:
    if keys is None:
        keys = KeyStore.load_or_create()
    return keys.watermark_key


TEXT_SUFFIXES = (".txt", ".md", ".rst")


def _as_text(path: Path, data: bytes) -> str | None:
    """The file as text when it is a plain-text file (by suffix) that decodes as UTF-8; else None."""
    if path.suffix.lower() not in TEXT_SUFFIXES:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _local_watermark_key() -> tuple[bytes | None, str]:
    d = default_key_dir()
    from genguard.guardrails.provenance.keys import WATERMARK_KEY

    if (d / WATERMARK_KEY).exists():
        try:
            return bytes.fromhex((d / WATERMARK_KEY).read_text().strip()), ""
        except (OSError, ValueError) as exc:
            return None, f"unreadable watermark key {d / WATERMARK_KEY}: {exc}"
    return None, f"no watermark key in {d} (run `genguard keys init`, or pass keys=)"


def _read_anchor(trust_anchor) -> str | None:
    if trust_anchor is None:
        return None
    try:
        pem = Path(trust_anchor).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvenanceError(f"{trust_anchor}: cannot read trust anchor: {exc}") from None
    if "BEGIN CERTIFICATE" not in pem:
        raise ProvenanceError(f"{trust_anchor}: no PEM certificate in trust anchor")
    return pem


def _local_root_pem(keys: KeyStore | None) -> str | None:
    """This machine's genguard root CA (PEM), when it has one: the implicit anchor for its own outputs."""
    from genguard.guardrails.provenance.keys import ROOT_CERT

    try:
        if keys is not None:
            pem = keys.root_pem.decode("ascii") if keys.root_pem else None
        else:
            root = default_key_dir() / ROOT_CERT
            pem = root.read_text() if root.is_file() else None
    except (OSError, UnicodeDecodeError):
        return None
    return pem if pem and "BEGIN CERTIFICATE" in pem else None


def _find_manifest(path: Path, data: bytes, anchor_pem: str | None,
                   anchor_given: bool | None = None) -> tuple[dict[str, Any], str | None]:
    """The manifest of ``path`` (embedded in any format c2pa reads, else a sidecar) and the format read."""
    if path.suffix.lower() == mf.SIDECAR_SUFFIX:
        raise ProvenanceError(f"{path}: a C2PA manifest store, not an asset; verify the file it belongs to "
                              "(its sidecar is read with it)")
    rfmt = mf.sniff_read_format(data, path)
    man = mf.read_manifest(data, mf.READ_MIME[rfmt], None, anchor_pem, anchor_given) if rfmt else \
        {"state": "Missing", "codes": [], "assertions": {}, "signer": None, "history": None}
    if man["state"] == "Missing":
        mime = mf.READ_MIME[rfmt] if rfmt else mf.sidecar_mime(path)
        for sc in mf.sidecar_candidates(path):
            if sc.is_file():
                man = mf.read_manifest(data, mime, _read(sc), anchor_pem, anchor_given)
                man["sidecar"] = str(sc)
                break
    if man["state"] == "Missing" and rfmt is None and path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        raise ProvenanceError(f"{path}: not a valid {path.suffix.lstrip('.').upper()} file (bad signature bytes)")
    return man, rfmt


def verify_file(path: str | os.PathLike, trust_anchor: str | os.PathLike | None = None, *,
                keys: KeyStore | None = None) -> dict[str, Any]:
    """Check a file's C2PA manifest (offline) and watermark and reduce them to one verdict (JSON-able; never
    raises for a bad file: an unreadable file gives verdict ``error`` with a one-line ``reason``).

    Verdicts (:data:`history.RULES` decides, first match): ``remote`` (the manifest lives at a URL, not
    fetched), ``tampered`` (the active manifest's hashes/signature, a CAWG identity assertion, or an
    ingredient's manifest fail, or the watermark contradicts the manifest), ``untrusted`` (the signer's
    certificate expired/revoked, or a trust anchor was given and the signer is not under it), ``intact``,
    ``stripped`` (no manifest, but a genguard watermark), ``untagged``, ``error``. ``made`` says how the
    content was made per the manifest's history (``ai-generated`` ... ``unknown``), ``signer`` who signed.
    """
    from genguard.guardrails.provenance import history as hi

    path = Path(path)
    rec: dict[str, Any] = {"path": str(path), "manifest": {"state": "Missing", "codes": []}, "generator": None,
                           "run_id": None, "claim": None, "made": None, "signer": None, "history": None,
                           "watermark": {"applicable": False, "reason": "not checked"},
                           "verdict": "error", "reason": ""}
    anchor_pem = _read_anchor(trust_anchor)
    try:
        data = _read(path)
        if not data:
            raise ProvenanceError(f"{path}: empty file")
        fmt = mf.sniff_format(data)
        # Without a user's anchor, this machine's own genguard root still tells its own signer
        # (trusted) from a look-alike CA with the same names (unverified); nobody else becomes untrusted.
        local_pem = _local_root_pem(keys) if anchor_pem is None else None
        if local_pem is not None:
            man, rfmt = _find_manifest(path, data, local_pem, anchor_given=False)
        else:
            man, rfmt = _find_manifest(path, data, anchor_pem)
        rec["manifest"] = {"state": man["state"], "codes": man["codes"]}
        for k in ("detail", "remote_url", "sidecar"):
            if man.get(k):
                rec["manifest"][k] = man[k]
        hist = man.get("history")
        if hist:
            rec["history"] = hist
            rec["made"] = hist["made"]
            rec["signer"] = {**(hist.get("signer") or {}), "trust": hist["signer_trust"],
                             "cawg": (hist.get("cawg") or {}).get("trust")}
            rec["manifest"]["signer"] = hist.get("signer")
        training = man["assertions"].get(mf.TRAINING_LABEL)
        if isinstance(training, dict):
            rec["claim"] = training
            rec["generator"] = training.get("generator")
            rec["run_id"] = training.get("run_id")

        # ---- watermark
        wm_found = None  # the decoded payload, when the watermark is detected and its CRC checks
        wm_present = False  # detected at the stated false-positive rate, payload readable or not
        text = _as_text(path, data) if rfmt is None else None
        if text is not None:
            # genguard's reference text generator watermarks its byte tokens (green list, keyed)
            key, why = (keys.watermark_key, "") if keys is not None else _local_watermark_key()
            if key is None:
                rec["watermark"] = {"applicable": False, "reason": why}
            else:
                from genguard.guardrails.provenance.text import byte_ids, byte_watermark

                rec["watermark"] = byte_watermark(key).detect_ids(byte_ids(text))
                rec["watermark"]["kind"] = "text (byte-level green list)"
                wm_present = bool(rec["watermark"].get("found"))
        elif rfmt == "wav":
            try:
                rec["watermark"] = _audio_mark(data, path, keys)
            except ProvenanceError as exc:
                if man["state"] == "Missing":
                    raise
                rec["watermark"] = {"applicable": False, "reason": f"audio does not decode: {exc}"}
            wm_present = bool(rec["watermark"].get("found"))
        elif fmt is None:
            rec["watermark"] = {"applicable": False, "reason": "no image watermark in this file type"
                                + ("; bound by the signed sidecar manifest's hash" if man.get("sidecar") else "")}
        else:
            try:
                arr, _ = _decode_image(data, str(path))
            except ProvenanceError as exc:
                if man["state"] == "Missing":
                    raise
                # the manifest still speaks (typically: Invalid because the pixels were damaged)
                arr = None
                rec["watermark"] = {"applicable": False, "reason": f"pixels do not decode: {exc}"}
            if arr is None:
                pass
            elif min(arr.shape[:2]) < SMALL_MARK_MIN_SIDE:
                rec["watermark"] = {"applicable": False, "reason": f"image {arr.shape[1]}x{arr.shape[0]} is too small "
                                    f"to carry a watermark (tagging marks images of at least {SMALL_MARK_MIN_SIDE} px a side)"}
            elif min(arr.shape[:2]) < MIN_WATERMARK_SIDE and (small := _small_mark(arr, keys)) is not None:
                rec["watermark"] = small
                wm_present = bool(rec["watermark"].get("found"))
            else:
                key, why = (keys.watermark_key, "") if keys is not None else _local_watermark_key()
                if key is None:
                    rec["watermark"] = {"applicable": False, "reason": why}
                else:
                    from genguard.guardrails.provenance.watermark import ImageWatermark

                    det = ImageWatermark(key).detect(arr)
                    det.pop("_bits", None)
                    rec["watermark"] = det
                    wm_present = bool(det["found"])
                    unbound = (det.get("content_binding") or {}).get("bound") is False
                    if unbound:
                        # a mark lifted from another image (the copy attack) must not name that image's run
                        det["note"] = "watermark present but not bound to this content (possible copy attack)"
                    if det["found"] and det.get("payload") and not unbound:
                        wm_found = bytes.fromhex(det["payload"])
                        reg = _load_registry(_registry_path(keys))
                        det["names"] = reg.get(det["payload"])
        # ---- verdict
        declared = mf.manifest_watermark_id(man["assertions"])
        if declared is not None and isinstance(rec["watermark"], dict) and rec["watermark"].get("payload"):
            dec = bytes.fromhex(rec["watermark"]["payload"])
            rec["watermark"]["bit_errors_vs_manifest"] = sum(bin(a ^ b).count("1") for a, b in zip(dec, declared))
        facts = hi.Facts(man["state"], hist, man["codes"], man.get("detail"), man.get("remote_url"),
                         rec["watermark"], wm_found, declared, isinstance(training, dict), wm_present,
                         text is not None, anchor_pem is not None)
        rec["verdict"], rec["reason"], rec["rule"] = hi.decide(facts)
        if local_pem is not None and rec["signer"] and rec["signer"].get("trust") == "trusted":
            rec["signer"]["anchor"] = "this machine's genguard root"
            rec["reason"] = rec["reason"].replace("(trusted)", "(trusted: this machine's genguard root)", 1)
        if rec["verdict"] == "stripped":
            named = rec["watermark"].get("names") if isinstance(rec["watermark"], dict) else None
            if named:
                rec["generator"] = rec["generator"] or named.get("generator")
                rec["run_id"] = rec["run_id"] or named.get("run_id")
    except ProvenanceError as exc:
        rec["verdict"] = "error"
        msg = str(exc).splitlines()[0]
        rec["reason"] = msg if msg.startswith(str(path)) else f"{path}: {msg}"
    except Exception as exc:  # a hostile file must never sink a batch: a coded error result instead
        if os.environ.get("GENGUARD_DEBUG"):
            raise
        rec["verdict"] = "error"
        rec["manifest"]["codes"] = list(rec["manifest"].get("codes") or []) + ["genguard.internal"]
        rec["reason"] = f"{path}: could not be checked ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return rec
