"""C2PA manifests with c2pa-python: build genguard's manifest, sign it embedded or as a sidecar, read and summarise any manifest offline."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from genguard.guardrails.provenance import ProvenanceError

IPTC = "http://cv.iptc.org/newscodes/digitalsourcetype/"
TRAINED_ALGORITHMIC_MEDIA = IPTC + "trainedAlgorithmicMedia"
TRAINED_ALGORITHMIC_DATA = IPTC + "trainedAlgorithmicData"
TRAINING_LABEL = "org.genguard.training"
#: genguard's own watermark is not on the C2PA soft-binding algorithm list, and C2PA 2.2 §9.3.2 says every
#: soft binding shall use a listed algorithm (and §18.14.5 ties ``c2pa.watermarked`` to a soft-binding
#: assertion). So the watermark is declared the way the specification leaves open for anything else: an
#: entity-specific assertion (§6.2.1 namespacing) and an entity-specific action name, both created by the signer.
WATERMARK_LABEL = "org.genguard.watermark"
WATERMARK_ACTION = "org.genguard.watermarked"
WATERMARK_ALG = "org.genguard.watermark.v1"
#: Read only, for manifests written by older genguard versions.
LEGACY_SOFT_BINDING_LABEL = "c2pa.soft-binding"
SIDECAR_SUFFIX = ".c2pa"
PARENT_LABEL = "org.genguard.parent"
#: Longest edge of the manifest thumbnail, JPEG at low quality: enough to recognise the image, ~10 kB.
THUMBNAIL_LONG_EDGE = 256

#: Formats whose manifest genguard embeds when it tags (and watermarks); everything else gets a sidecar.
EMBEDDED_MIME = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp", "wav": "audio/wav"}
#: Formats whose embedded manifest is read (c2pa-python reads all of these).
READ_MIME = {**EMBEDDED_MIME, "gif": "image/gif", "tiff": "image/tiff", "wav": "audio/wav", "avi": "video/avi",
             "mp4": "video/mp4", "mov": "video/quicktime", "heic": "image/heic", "avif": "image/avif",
             "pdf": "application/pdf", "mp3": "audio/mpeg", "flac": "audio/flac", "svg": "image/svg+xml",
             "jxl": "image/jxl", "dng": "image/dng"}
_EXT_FORMAT = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".gif": "gif", ".tif": "tiff",
               ".tiff": "tiff", ".wav": "wav", ".avi": "avi", ".mp4": "mp4", ".m4v": "mp4", ".m4a": "mp4",
               ".mov": "mov", ".heic": "heic", ".heif": "heic", ".avif": "avif", ".pdf": "pdf", ".mp3": "mp3",
               ".flac": "flac", ".svg": "svg", ".jxl": "jxl", ".dng": "dng"}


def sniff_format(data: bytes) -> str | None:
    """``png``, ``jpeg`` or ``webp`` (the formats genguard tags by embedding) from the magic bytes, else None."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def sniff_read_format(data: bytes, path: str | Path | None = None) -> str | None:
    """Any format whose embedded manifest c2pa reads, from the magic bytes (the suffix only for SVG/DNG)."""
    fmt = sniff_format(data)
    if fmt:
        return fmt
    head = data[:16]
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "wav"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:5] == b"%PDF-":
        return "pdf"
    if head[:4] == b"fLaC":
        return "flac"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "mp3"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis"):
            return "heic"
        if brand in (b"avif", b"avis"):
            return "avif"
        if brand == b"qt  ":
            return "mov"
        return "mp4"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "dng" if path is not None and Path(path).suffix.lower() == ".dng" else "tiff"
    if head[:2] == b"\xff\x0a" or head[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n":
        return "jxl"
    if path is not None and Path(path).suffix.lower() == ".svg" and data.lstrip()[:1] == b"<":
        return "svg"
    return None


def sidecar_path(path: str | Path) -> Path:
    """Where genguard writes the sidecar of ``path``: the same name with the extension ``.c2pa``, as
    C2PA 2.2 §15.5.3.1 tells validators to look (``data.c2pa`` beside ``data.csv``). When another file of the
    folder has the same stem the spec location would be ambiguous, so ``data.csv.c2pa`` is used instead."""
    p = Path(path)
    spec = p.with_suffix(SIDECAR_SUFFIX)
    if p.suffix == "" or p.suffix == SIDECAR_SUFFIX:
        return p.with_name(p.name + SIDECAR_SUFFIX)
    try:
        clash = any(q != p and q.stem == p.stem and q.suffix != SIDECAR_SUFFIX and q.is_file()
                    for q in p.parent.glob(_glob_escape(p.stem) + ".*"))
    except OSError:
        clash = False
    return p.with_name(p.name + SIDECAR_SUFFIX) if clash else spec


def _glob_escape(s: str) -> str:
    return "".join(f"[{c}]" if c in "*?[]" else c for c in s)


def sidecar_candidates(path: str | Path) -> list[Path]:
    """Sidecars to try for ``path``, most specific first: ``data.csv.c2pa`` (older genguard) then ``data.c2pa``."""
    p = Path(path)
    out = [p.with_name(p.name + SIDECAR_SUFFIX)]
    if p.suffix and p.suffix != SIDECAR_SUFFIX:
        out.append(p.with_suffix(SIDECAR_SUFFIX))
    return out


def sidecar_mime(path: str | Path) -> str:
    """The MIME type recorded for a sidecar-bound file (the hash binding does not depend on it)."""
    ext = Path(path).suffix.lower()
    return {
        ".csv": "text/csv", ".txt": "text/plain", ".md": "text/markdown", ".json": "application/json",
        ".jsonl": "application/jsonl", ".wav": "audio/wav", ".npy": "application/octet-stream",
        ".safetensors": "application/octet-stream", ".pt": "application/octet-stream",
    }.get(ext, "application/octet-stream")


# ---------------------------------------------------------------------------------------------- writing
#: What a file genguard tags is, by its kind: generated media, generated data, or a model (not media).
SOURCE_TYPE_BY_KIND = {"media": TRAINED_ALGORITHMIC_MEDIA, "data": TRAINED_ALGORITHMIC_DATA}
_DATA_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet", ".npy", ".npz")
_MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".onnx", ".gguf")


def asset_kind(path: str | Path) -> str:
    """``media`` (images, audio, text a model wrote), ``data`` (generated tables/arrays) or ``model`` (weights)."""
    ext = Path(path).suffix.lower()
    if ext in _MODEL_SUFFIXES:
        return "model"
    if ext in _DATA_SUFFIXES:
        return "data"
    return "media"


def _namespaced(params: dict[str, Any]) -> dict[str, Any]:
    """Custom action parameters use entity-specific names (C2PA 2.2 §18.14.4.7)."""
    return {k if "." in k else f"org.genguard.{k}": v for k, v in params.items()}


def build_manifest(claim: dict[str, Any], title: str, watermark_id: bytes | None = None,
                   watermark_info: dict[str, Any] | None = None, *, kind: str = "media",
                   parent: bool = False) -> dict[str, Any]:
    """The manifest definition genguard signs (C2PA 2.2).

    - ``c2pa.actions.v2`` is a *created* assertion (§10.2.2: gathered ones are not attributed to the signer).
      Its first action is ``c2pa.created`` with ``trainedAlgorithmicMedia`` (media) or ``trainedAlgorithmicData``
      (a generated table), or ``c2pa.opened`` when ``parent`` (the file already carried a manifest, which
      :func:`sign_embedded` adds as the ``parentOf`` ingredient, §18.14.2). Model weights are not media a
      model made: they get ``c2pa.created`` with ``digitalCreation`` and the training assertion says the rest.
    - custom action parameters are namespaced (§18.14.4.7);
    - a watermark is declared by the entity-specific ``org.genguard.watermark`` assertion and action
      (see :data:`WATERMARK_LABEL`), not by a soft binding.
    """
    gg_version = _tool_version()
    agent = {"name": "genguard", "version": gg_version}
    params = _namespaced({"generator": claim["generator"], "run_id": claim["run_id"]})
    if parent:
        first = {"action": "c2pa.opened", "softwareAgent": agent, "parameters": params}
        second = {"action": "c2pa.edited", "softwareAgent": agent,
                  "digitalSourceType": SOURCE_TYPE_BY_KIND.get(kind, TRAINED_ALGORITHMIC_MEDIA),
                  "parameters": params}
        actions = [first, second]
    else:
        dst = SOURCE_TYPE_BY_KIND.get(kind, IPTC + "digitalCreation")
        actions = [{"action": "c2pa.created", "digitalSourceType": dst, "softwareAgent": agent, "parameters": params}]
    assertions: list[dict[str, Any]] = []
    if watermark_id is not None:
        actions.append({"action": WATERMARK_ACTION, "softwareAgent": agent,
                        "parameters": _namespaced({"alg": WATERMARK_ALG, **(watermark_info or {})})})
        # not a c2pa.soft-binding assertion (its alg must be on the list, §9.3.2), so not its schema either
        # (blocks/value/pad, §18.10.2): genguard's own, with the identifier as hex text
        assertions.append({"label": WATERMARK_LABEL, "created": True, "data": {
            "alg": WATERMARK_ALG, "identifier": watermark_id.hex(), **(watermark_info or {})}})
    assertions.insert(0, {"label": "c2pa.actions.v2", "created": True,
                          "data": {"actions": actions, "allActionsIncluded": True}})
    assertions.append({"label": TRAINING_LABEL, "created": True, "data": dict(claim)})
    return {
        "claim_generator_info": [{"name": "genguard", "version": gg_version}],
        "title": title,
        "assertions": assertions,
    }


def _tool_version() -> str:
    """genguard's installed version (guardrails must not import the genguard package)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genguard")
    except PackageNotFoundError:
        return "0.1.0"


def _c2pa():
    import c2pa

    return c2pa


#: Reading never touches the network, whatever a file says: no remote manifest, no OCSP, no DID
#: resolution, no trust-list download (an empty host allow-list stops any fetch c2pa-rs might add).
OFFLINE = {"verify": {"remote_manifest_fetch": False, "ocsp_fetch": False},
           "core": {"allowed_network_hosts": []},
           "builder": {"certificate_status_fetch": None}}
_CTX: dict[Any, Any] = {}


def _signing_context(thumbnail: bool):
    key = ("sign", thumbnail)
    if key not in _CTX:
        builder = {"thumbnail": {"enabled": thumbnail, "long_edge": THUMBNAIL_LONG_EDGE, "format": "jpeg",
                                 "quality": "low"},
                   # the thumbnail is made by genguard itself: attribute it to the signer too
                   "created_assertion_labels": ["c2pa.thumbnail.claim", "c2pa.thumbnail.claim.jpeg"],
                   "actions": {"auto_created_action": {"enabled": False}, "auto_opened_action": {"enabled": False}}}
        _CTX[key] = _c2pa().Context.from_dict({**OFFLINE, "builder": {**OFFLINE["builder"], **builder}})
    return _CTX[key]


def reader_context(trust_anchor_pem: str | None):
    """An offline c2pa Context; with ``trust_anchor_pem``, C2PA and CAWG signers are checked against it."""
    key = ("read", trust_anchor_pem)
    if key not in _CTX:
        cfg: dict[str, Any] = json.loads(json.dumps(OFFLINE))
        if trust_anchor_pem is not None:
            cfg["verify"]["verify_trust"] = True
            cfg["trust"] = {"trust_anchors": trust_anchor_pem}
            cfg["cawg_trust"] = {"verify_trust_list": True, "trust_anchors": trust_anchor_pem}
        _CTX[key] = _c2pa().Context.from_dict(cfg)
    return _CTX[key]


def _check_riff(data: bytes | None, name: str) -> None:
    """Refuse a RIFF container (WAV, WebP, AVI) of more chunks than any real one has before c2pa walks it: c2pa
    reads every chunk header through a Python callback, so a file of millions of empty chunks would take minutes."""
    if data is None or data[:4] != b"RIFF":
        return
    from genguard.guardrails.provenance.wavfile import WavError, check_chunk_count

    try:
        check_chunk_count(data, name)
    except WavError as exc:
        raise ProvenanceError(str(exc)) from None


def sign_embedded(data: bytes, fmt: str, manifest: dict[str, Any], keys, thumbnail: bool = True,
                  parent_data: bytes | None = None, parent_title: str | None = None) -> bytes:
    """Return ``data`` (a PNG/JPEG/WebP/WAV file's bytes) with the signed manifest embedded (a WAV gets a ``C2PA`` RIFF chunk).

    ``thumbnail=False`` leaves the manifest thumbnail out (the pipeline's 32x32 samples); otherwise it is a
    256-px low-quality JPEG (~10 kB; c2pa's default, 1024 px, made a 62 kB WebP 842 kB).
    ``parent_data``: the file as it was before tagging, carrying someone's manifest: it becomes the
    ``parentOf`` ingredient that the first action, ``c2pa.opened``, names (C2PA 2.2 §18.14.2).
    """
    _check_riff(data, f"{fmt} file")
    _check_riff(parent_data, f"{fmt} file")
    c2pa = _c2pa()
    out = io.BytesIO()
    if parent_data is not None:
        manifest = json.loads(json.dumps(manifest))
        manifest["assertions"][0]["data"]["actions"][0]["parameters"]["ingredientIds"] = [PARENT_LABEL]
    try:
        with c2pa.Builder(manifest, context=_signing_context(thumbnail)) as builder, keys.signer() as signer:
            if parent_data is not None:
                builder.add_ingredient({"title": parent_title or manifest.get("title", "parent"), "relationship": "parentOf",
                                        "label": PARENT_LABEL}, EMBEDDED_MIME[fmt], io.BytesIO(parent_data))
            builder.sign(signer, EMBEDDED_MIME[fmt], io.BytesIO(data), out)
    except c2pa.C2paError as exc:
        raise ProvenanceError(f"c2pa could not sign the {fmt} file: {exc}") from None
    return out.getvalue()


def sign_sidecar(data: bytes, mime: str, manifest: dict[str, Any], keys) -> bytes:
    """Return a detached manifest store (the ``.c2pa`` sidecar) bound to ``data`` by its SHA-256 hash."""
    c2pa = _c2pa()
    try:
        with c2pa.Builder(manifest, context=_signing_context(False)) as builder, keys.signer() as signer:
            builder.set_no_embed()
            return builder.sign(signer, mime, io.BytesIO(data), io.BytesIO())
    except c2pa.C2paError as exc:
        raise ProvenanceError(f"c2pa could not sign a sidecar manifest: {exc}") from None


def has_manifest(data: bytes, mime: str, name: str = "file") -> bool:
    """Whether ``data`` carries an embedded manifest store (readable or not); ``name`` (the file) is named in the
    error raised for a RIFF file of too many chunks."""
    _check_riff(data, name)
    c2pa = _c2pa()
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, context=reader_context(None))
    except c2pa.C2paError:
        return True
    if reader is None:
        return False
    reader.close()
    return True


# ---------------------------------------------------------------------------------------------- reading
def _first_line(exc: BaseException) -> str:
    s = str(exc)
    return s.splitlines()[0] if s else type(exc).__name__


def _empty(state: str, **extra) -> dict[str, Any]:
    return {"state": state, "codes": [], "assertions": {}, "signer": None, "history": None, **extra}


def read_manifest(data: bytes, mime: str, manifest_data: bytes | None = None,
                  trust_anchor_pem: str | None = None, anchor_given: bool | None = None) -> dict[str, Any]:
    """Validate the manifest in ``data`` (or the detached ``manifest_data``), offline.

    Returns ``{"state": Valid|Trusted|Invalid|Missing|Remote, "codes": [...], "assertions": {label: data},
    "signer": {...}, "history": {...}}`` (see :mod:`genguard.guardrails.provenance.history`). ``Remote``: the
    file points to a manifest elsewhere, which is not fetched. ``anchor_given=False`` with a
    ``trust_anchor_pem``: the anchor only tells a trusted signer from an unverified one (this machine's
    own genguard root), never makes another signer "untrusted". Raises :class:`ProvenanceError` when the asset
    itself cannot be parsed.
    """
    from genguard.guardrails.provenance.history import summarize

    _check_riff(data, f"unreadable {mime} file")
    c2pa = _c2pa()
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), manifest_data,
                                        context=reader_context(trust_anchor_pem))
    except c2pa.C2paError as exc:
        msg = _first_line(exc)
        if "must fetch remote manifests from url" in msg:
            return _empty("Remote", remote_url=msg.rsplit(" ", 1)[-1])
        if manifest_data is None and ("asset could not be parsed" in msg or "NotSupported" in msg
                                      or "type is unsupported" in msg or "Io:" in msg):
            # a truncated or corrupt container (c2pa's I/O error) is an unreadable file, not a bad manifest
            raise ProvenanceError(f"unreadable {mime} file: {msg}") from None
        # the store is there but c2pa cannot parse or check it (unknown algorithm, prerelease, bad JUMBF):
        # a manifest that does not validate
        return _empty("Invalid", codes=["manifest.unreadable"], detail=msg)
    if reader is None:
        return _empty("Missing")
    try:
        with reader:
            state = reader.get_validation_state() or "Invalid"
            results = reader.get_validation_results() or {}
            store = json.loads(reader.json() or "{}")
    except (c2pa.C2paError, ValueError, KeyError, TypeError) as exc:
        return _empty("Invalid", codes=["manifest.unreadable"], detail=_first_line(exc))
    if state not in ("Valid", "Trusted", "Invalid"):
        state = "Invalid"
    hist = summarize(store if isinstance(store, dict) else {}, results if isinstance(results, dict) else {},
                     trust_anchor_given=trust_anchor_pem is not None if anchor_given is None else anchor_given)
    am = results.get("activeManifest", {}) if isinstance(results, dict) else {}
    codes = [f.get("code") for f in am.get("failure", []) if isinstance(f, dict)]
    codes += [s.get("code") for s in am.get("success", []) if isinstance(s, dict)
              and str(s.get("code", "")).startswith("signingCredential.trusted")]
    active = hist.pop("_active", {}) or {}
    assertions = {a.get("label"): a.get("data") for a in active.get("assertions", []) if isinstance(a, dict)}
    return {"state": state, "codes": [c for c in codes if c], "assertions": assertions,
            "signer": active.get("signature_info"), "history": hist}


def manifest_watermark_id(assertions: dict[str, Any]) -> bytes | None:
    """The watermark identifier that a genguard manifest declares, if any (new assertion, or the old soft binding)."""
    import base64

    wm = assertions.get(WATERMARK_LABEL)
    if isinstance(wm, dict) and wm.get("alg") == WATERMARK_ALG:
        try:
            return bytes.fromhex(str(wm.get("identifier")))
        except ValueError:
            return None
    sb = assertions.get(LEGACY_SOFT_BINDING_LABEL)
    if isinstance(sb, dict) and sb.get("alg") == WATERMARK_ALG:
        try:
            return base64.b64decode(sb["blocks"][0]["value"])
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return None
