"""Signing keys for C2PA manifests: a per-user local root CA plus a leaf signing certificate, or the user's own PEM chain."""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import stat
import warnings
from pathlib import Path

from genguard.generators._io import atomic_write_bytes

from genguard.guardrails.provenance import ProvenanceError

ROOT_CERT = "root_ca.pem"
ROOT_KEY = "root_ca.key"
LEAF_CERT = "signer.pem"
LEAF_KEY = "signer.key"
CHAIN = "chain.pem"  # leaf then root: what c2pa embeds in each manifest
WATERMARK_KEY = "watermark.key"  # 32 random bytes, hex: the secret of the invisible watermark
PRIVATE_FILES = (ROOT_KEY, LEAF_KEY, WATERMARK_KEY)
LOCK_FILE = ".lock"  # flock(2) on it serialises creation and loading, so concurrent first uses agree


class KeyPermissionWarning(UserWarning):
    """A key folder that others can write to (they could swap the keys)."""


@contextlib.contextmanager
def _locked(d: Path, exclusive: bool):
    """Hold an flock on ``d/.lock``: exclusive while keys are created, shared while they are read."""
    import fcntl

    fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _make_dir(d: Path) -> None:
    """Create the key folder 0700 if it does not exist; an existing folder's mode is never changed."""
    try:
        if d.is_dir():
            return
        d.parent.mkdir(parents=True, exist_ok=True)
        d.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise ProvenanceError(f"{d}: cannot create key directory: {exc.strerror or exc}") from None


def check_key_permissions(d: Path) -> None:
    """Refuse private keys that others can read or write; warn when others can replace files in the folder.

    Checked before any work is done with the keys (a leaked signing key lets
    anyone sign as this user; a swapped one makes every later tag worthless).
    """
    for name in PRIVATE_FILES:
        p = d / name
        try:
            st = os.stat(p)
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise ProvenanceError(f"{p}: cannot check key permissions: {exc.strerror or exc}") from None
        if not stat.S_ISREG(st.st_mode):
            raise ProvenanceError(f"{p}: not a regular file; refused as a key")
        if st.st_mode & 0o077:
            raise ProvenanceError(f"{p}: private key has mode {stat.S_IMODE(st.st_mode):04o}, readable or writable "
                                  f"by others; run `chmod 600 {p}` (and consider the key leaked: `genguard keys init --force`)")
    try:
        dst = os.stat(d)
    except OSError:
        return
    if dst.st_mode & 0o022:
        sticky = " (sticky, so others cannot replace your files)" if dst.st_mode & stat.S_ISVTX else ""
        warnings.warn(f"key folder {d} has mode {stat.S_IMODE(dst.st_mode):04o}: others can write to it{sticky}; "
                      "keep keys in a folder only you can write (e.g. chmod 700)", KeyPermissionWarning, stacklevel=3)


def default_key_dir() -> Path:
    """``$GENGUARD_HOME/keys`` when GENGUARD_HOME is set, else ``~/.genguard/keys``."""
    home = os.environ.get("GENGUARD_HOME")
    return (Path(home) if home else Path.home() / ".genguard") / "keys"


def _signing_alg(key_pem: bytes) -> str:
    """The c2pa algorithm name for a PEM private key (es256/es384/es512, ps256 for RSA, ed25519)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ProvenanceError(f"signing key is not an unencrypted PEM private key: {exc}") from None
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return {256: "es256", 384: "es384", 521: "es512"}.get(key.curve.key_size, "es256")
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    raise ProvenanceError(f"unsupported signing key type {type(key).__name__}; use EC P-256/384, RSA or Ed25519")


class KeyStore:
    """A certificate chain (leaf first, PEM) and the leaf's private key, ready for c2pa signing.

    ``KeyStore.load_or_create()`` gives the per-user local CA; ``KeyStore(cert_chain=..., key=...)``
    wraps a user's own chain and key (paths or PEM bytes).
    """

    def __init__(self, cert_chain: str | os.PathLike | bytes, key: str | os.PathLike | bytes,
                 root_cert: str | os.PathLike | bytes | None = None) -> None:
        self.cert_chain_pem = self._read(cert_chain, "certificate chain")
        self.key_pem = self._read(key, "private key")
        self.root_pem = self._read(root_cert, "root certificate") if root_cert is not None else None
        if b"BEGIN CERTIFICATE" not in self.cert_chain_pem:
            raise ProvenanceError(f"{self._name(cert_chain)}: no PEM certificate found")
        self.alg = _signing_alg(self.key_pem)
        self._check_leaf(self._name(cert_chain))
        self.directory: Path | None = None

    @staticmethod
    def _name(src) -> str:
        return str(src) if not isinstance(src, bytes) else "<PEM bytes>"

    @staticmethod
    def _read(src, what: str) -> bytes:
        if isinstance(src, bytes):
            return src
        p = Path(src)
        try:
            return p.read_bytes()
        except OSError as exc:
            raise ProvenanceError(f"{p}: cannot read {what}: {exc.strerror or exc}") from None

    def _check_leaf(self, name: str) -> None:
        """c2pa refuses a self-signed leaf; say so up front rather than at signing time."""
        from cryptography import x509

        try:
            certs = x509.load_pem_x509_certificates(self.cert_chain_pem)
        except ValueError as exc:
            raise ProvenanceError(f"{name}: unreadable PEM certificate chain: {exc}") from None
        leaf = certs[0]
        if leaf.issuer == leaf.subject:
            raise ProvenanceError(
                f"{name}: the signing certificate is self-signed; C2PA needs a leaf issued by a CA "
                "(run `genguard keys init` for a local CA, or pass a chain leaf-first)"
            )
        from cryptography.hazmat.primitives import serialization

        pub = serialization.load_pem_private_key(self.key_pem, password=None).public_key()
        fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        if pub.public_bytes(*fmt) != leaf.public_key().public_bytes(*fmt):
            raise ProvenanceError(f"{name}: the private key does not match the first (leaf) certificate of the chain")

    # ------------------------------------------------------------------ creation
    @classmethod
    def load_or_create(cls, directory: str | os.PathLike | None = None) -> "KeyStore":
        """Load the local CA and signer from ``directory`` (default :func:`default_key_dir`), creating them on first use."""
        d = Path(directory) if directory is not None else default_key_dir()
        _make_dir(d)
        check_key_permissions(d)
        if not (d / CHAIN).exists() or not (d / LEAF_KEY).exists():
            with _locked(d, exclusive=True):
                # whoever gets the lock first creates; the others find its keys here and use them
                if not (d / CHAIN).exists() or not (d / LEAF_KEY).exists():
                    cls._create_unlocked(d, "genguard local", overwrite=False)
        with _locked(d, exclusive=False):  # never read a set that another process is replacing
            ks = cls(d / CHAIN, d / LEAF_KEY, root_cert=d / ROOT_CERT if (d / ROOT_CERT).exists() else None)
        ks.directory = d
        return ks

    @classmethod
    def create(cls, directory: str | os.PathLike, *, common_name: str = "genguard local", overwrite: bool = False) -> Path:
        """Write a new root CA (10 years) and leaf signing certificate (2 years) into ``directory``.

        Private keys are written with mode 0600; a new directory is made 0700 (an existing one keeps
        its mode). Refuses to overwrite existing keys unless ``overwrite``. Creation holds an exclusive
        lock, so concurrent creators never mix two key sets: one wins, the others see its keys.
        """
        d = Path(directory)
        _make_dir(d)
        if not overwrite:  # keys being replaced may be refused for their modes; that is why they are replaced
            check_key_permissions(d)
        with _locked(d, exclusive=True):
            return cls._create_unlocked(d, common_name, overwrite)

    @classmethod
    def _create_unlocked(cls, directory: Path, common_name: str, overwrite: bool) -> Path:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        d = Path(directory)
        if not overwrite and ((d / LEAF_KEY).exists() or (d / ROOT_KEY).exists()):
            raise ProvenanceError(f"{d}: keys already exist (use --force to replace them)")

        now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
        root_key = ec.generate_private_key(ec.SECP256R1())
        leaf_key = ec.generate_private_key(ec.SECP256R1())
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} root CA"),
                               x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genguard")])
        leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{common_name} signer"),
                               x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genguard")])
        root_ski = x509.SubjectKeyIdentifier.from_public_key(root_key.public_key())
        root = (
            x509.CertificateBuilder()
            .subject_name(root_name).issuer_name(root_name)
            .public_key(root_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(root_ski, critical=False)
            .sign(root_key, hashes.SHA256())
        )
        leaf = (
            x509.CertificateBuilder()
            .subject_name(leaf_name).issuer_name(root_name)
            .public_key(leaf_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + _dt.timedelta(days=730))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(root_ski), critical=False)
            .sign(root_key, hashes.SHA256())
        )
        pem = serialization.Encoding.PEM
        pkcs8 = (pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        # the chain (what load_or_create looks for) is written last, so a set without it is never used
        atomic_write_bytes(d / ROOT_KEY, root_key.private_bytes(*pkcs8), mode=0o600)
        atomic_write_bytes(d / LEAF_KEY, leaf_key.private_bytes(*pkcs8), mode=0o600)
        atomic_write_bytes(d / ROOT_CERT, root.public_bytes(pem), mode=0o644)
        atomic_write_bytes(d / LEAF_CERT, leaf.public_bytes(pem), mode=0o644)
        atomic_write_bytes(d / WATERMARK_KEY, os.urandom(32).hex().encode() + b"\n", mode=0o600)
        atomic_write_bytes(d / CHAIN, leaf.public_bytes(pem) + root.public_bytes(pem), mode=0o644)
        return d

    @property
    def watermark_key(self) -> bytes:
        """The watermark secret: ``watermark.key`` of a key directory, else derived from the signing key by HMAC."""
        if self.directory is not None and (self.directory / WATERMARK_KEY).exists():
            try:
                return bytes.fromhex((self.directory / WATERMARK_KEY).read_text().strip())
            except (OSError, ValueError) as exc:
                raise ProvenanceError(f"{self.directory / WATERMARK_KEY}: unreadable watermark key: {exc}") from None
        import hashlib
        import hmac

        return hmac.new(self.key_pem, b"genguard-watermark-key-v1", hashlib.sha256).digest()

    # ------------------------------------------------------------------ c2pa
    def signer(self):
        """A fresh ``c2pa.Signer`` (signers are consumed by use, so make one per signature)."""
        import c2pa

        info = c2pa.C2paSignerInfo(self.alg, self.cert_chain_pem, self.key_pem, None)
        try:
            return c2pa.Signer.from_info(info)
        except c2pa.C2paError as exc:
            raise ProvenanceError(f"c2pa refused the signing certificate/key: {exc}") from None

    @property
    def root_path(self) -> Path | None:
        return self.directory / ROOT_CERT if self.directory is not None and (self.directory / ROOT_CERT).exists() else None

    def __repr__(self) -> str:
        return f"KeyStore(alg={self.alg!r}, directory={str(self.directory) if self.directory else None!r})"
