"""Ed25519 signatures over a canonical JSON serialisation, with the per-user ledger signing key.

Canonical form (``CANONICALIZATION``): the document without its ``signature``
member, serialised by ``json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False, allow_nan=False)`` and encoded as UTF-8. JSON numbers
round-trip exactly through Python's float repr, so a verifier that parses the
file and re-serialises it obtains the same bytes.

The key lives in ``$GENGUARD_HOME/keys`` (else ``~/.genguard/keys``), created
on first use: private key PKCS#8 PEM, mode 0600, directory 0700. The public
key is embedded in every signature (raw 32 bytes, base64) with its key id
(first 16 hex digits of its SHA-256); a verifier that has a trusted copy of
the public key passes it to check who signed, not only that nothing changed.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from genguard.generators._io import atomic_write_bytes
from genguard.guardrails.privacy.errors import PrivacyError

ALGORITHM = "Ed25519"
CANONICALIZATION = "json-sorted-compact-utf8/1"
PRIVATE_KEY_FILE = "ledger-signing-ed25519.pem"
PUBLIC_KEY_FILE = "ledger-signing-ed25519.pub.pem"
NOISE_KEY_FILE = "dp-noise.key"


def key_directory() -> Path:
    home = os.environ.get("GENGUARD_HOME")
    return (Path(home) if home else Path.home() / ".genguard") / "keys"


def canonical_bytes(document: dict[str, Any]) -> bytes:
    body = {k: v for k, v in document.items() if k != "signature"}
    try:
        return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    except ValueError as exc:
        raise PrivacyError(f"document cannot be serialised canonically: {exc}") from None


def _raw_public(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(public_key: Any) -> str:
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def _key_dir(directory: str | os.PathLike | None, create: bool = False) -> Path:
    """The key directory (default :func:`key_directory`); ``create`` makes it, owner-only (0700)."""
    d = Path(directory) if directory is not None else key_directory()
    if create:
        d.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(d, 0o700)
        except OSError:
            pass
    return d


def _read_private(path: Path, what: str) -> bytes:
    """A secret key file's bytes, refused when others can read it."""
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PrivacyError(f"{path}: {what} is readable by others (mode {mode:o}); run chmod 600 {path}")
    return path.read_bytes()


def load_or_create_signing_key(directory: str | os.PathLike | None = None) -> Any:
    """The Ed25519 private key in ``directory`` (default :func:`key_directory`), created there on first use."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    d = _key_dir(directory)
    path = d / PRIVATE_KEY_FILE
    if path.exists():
        try:
            key = serialization.load_pem_private_key(_read_private(path, "private key"), password=None)
        except (ValueError, TypeError) as exc:
            raise PrivacyError(f"{path}: unreadable private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise PrivacyError(f"{path}: not an Ed25519 private key")
        return key
    _key_dir(d, create=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    atomic_write_bytes(path, pem, mode=0o600)
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    atomic_write_bytes(d / PUBLIC_KEY_FILE, pub, mode=0o644)
    return key


def noise_seed(run_seed: int, directory: str | os.PathLike | None = None, purpose: str = "noise") -> int:
    """A keyed seed of DP-SGD's randomness: HMAC-SHA256 of the run seed under a secret key (0600).

    Only for the explicit opt-in to reproducible DP (``PrivateTrainer(reproducible=True)``): the same
    run seed gives the same ``purpose`` stream (``"noise"`` or ``"sampling"``) on this key holder's
    machine, while a reader of the ledger, which records the run seed, cannot regenerate it. Two
    releases with the same key and seed share it, so they must not both be published. By default the
    trainer draws a fresh secret seed per run instead.
    """
    import hmac
    import secrets

    if purpose not in ("noise", "sampling") and not purpose.startswith("sampling/rank "):
        raise PrivacyError(f"unknown purpose {purpose!r} of a keyed DP seed; expected 'noise', 'sampling' or 'sampling/rank R of W'")
    path = _key_dir(directory) / NOISE_KEY_FILE
    if path.exists():
        secret = _read_private(path, "secret noise key")
        if len(secret) < 32:
            raise PrivacyError(f"{path}: secret noise key is truncated ({len(secret)} bytes)")
    else:
        _key_dir(directory, create=True)
        secret = secrets.token_bytes(32)
        atomic_write_bytes(path, secret, mode=0o600)
    digest = hmac.new(secret, f"genguard-dp-{purpose}:{int(run_seed)}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def load_public_key(path: str | os.PathLike) -> Any:
    """A trusted Ed25519 public key from a PEM file (or the raw base64 form embedded in signatures)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = Path(path)
    try:
        if not path.is_file():  # a FIFO or device would block or stream forever
            raise PrivacyError(f"{path}: not a regular file (a public key is a small PEM file)")
        with open(path, "rb") as fh:
            data = fh.read(1 << 16)
    except OSError as exc:
        raise PrivacyError(f"{path}: cannot read public key ({exc.strerror or exc})") from None
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_public_key(data)
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(data.strip(), validate=True))
    except (ValueError, TypeError) as exc:
        raise PrivacyError(f"{path}: not a public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise PrivacyError(f"{path}: not an Ed25519 public key")
    return key


def sign_document(document: dict[str, Any], key: Any = None) -> dict[str, Any]:
    """A copy of ``document`` with a ``signature`` member over its canonical form."""
    key = key if key is not None else load_or_create_signing_key()
    signed = {k: v for k, v in document.items() if k != "signature"}
    sig = key.sign(canonical_bytes(signed))
    signed["signature"] = {
        "algorithm": ALGORITHM,
        "canonicalization": CANONICALIZATION,
        "public_key": base64.b64encode(_raw_public(key.public_key())).decode("ascii"),
        "key_id": key_id(key.public_key()),
        "value": base64.b64encode(sig).decode("ascii"),
    }
    return signed


def verify_document(document: dict[str, Any], trusted_key: Any = None) -> dict[str, Any]:
    """Check ``document['signature']``: ``{"state": "valid"|"invalid"|"missing"|"untrusted", "key_id", "reason"}``.

    ``untrusted``: the signature is intact but made with a key other than ``trusted_key``.
    Without ``trusted_key``, ``valid`` proves integrity since signing, not who signed.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    sig = document.get("signature")
    if sig is None:
        return {"state": "missing", "key_id": None, "reason": "the ledger carries no signature"}
    if not isinstance(sig, dict) or sig.get("algorithm") != ALGORITHM or sig.get("canonicalization") != CANONICALIZATION:
        return {"state": "invalid", "key_id": None, "reason": "unknown signature algorithm or canonicalization"}
    try:
        public = Ed25519PublicKey.from_public_bytes(base64.b64decode(sig["public_key"], validate=True))
        value = base64.b64decode(sig["value"], validate=True)
    except (KeyError, TypeError, ValueError) as exc:
        return {"state": "invalid", "key_id": sig.get("key_id"), "reason": f"malformed signature ({exc})"}
    kid = key_id(public)
    try:
        public.verify(value, canonical_bytes(document))
    except InvalidSignature:
        return {"state": "invalid", "key_id": kid, "reason": "signature does not match the ledger's content (edited after signing)"}
    except PrivacyError as exc:
        return {"state": "invalid", "key_id": kid, "reason": str(exc)}
    if sig.get("key_id") not in (None, kid):
        return {"state": "invalid", "key_id": kid, "reason": "key id does not match the embedded public key"}
    if trusted_key is not None and _raw_public(trusted_key) != _raw_public(public):
        return {"state": "untrusted", "key_id": kid,
                "reason": f"signed by key {kid}, not by the trusted key {key_id(trusted_key)}"}
    return {"state": "valid", "key_id": kid,
            "reason": "signature valid for the trusted key" if trusted_key is not None
            else "signature valid for the embedded key (no trusted key given: integrity, not identity)"}
