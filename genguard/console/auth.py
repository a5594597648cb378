"""Credentials: scrypt password hashes, the cookie-signing key, signed cookie values and CSRF tokens."""
from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

# scrypt with N=2**15, r=8 (32 MiB per hash): memory-hard, as OWASP's password-storage guidance asks.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2 ** 15, 8, 1
_MAXMEM = 64 * 1024 * 1024


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    if not password:
        raise ValueError("empty password")
    salt = os.urandom(16)
    dk = hashlib.scrypt(password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, maxmem=_MAXMEM, dklen=32)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${base64.b64encode(salt).decode()}${base64.b64encode(dk).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, dk = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p),
                             maxmem=_MAXMEM, dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(dk))


#: a hash of a random password, verified when the user does not exist, so timing does not tell names apart
_DUMMY: list[str] = []


def dummy_verify(password: str) -> None:
    if not _DUMMY:
        _DUMMY.append(hash_password(secrets.token_urlsafe(16)))
    verify_password(password, _DUMMY[0])


def load_secret(path: Path) -> bytes:
    """The cookie-signing key: 32 random bytes in ``path`` (mode 0600), created on first use."""
    path = Path(path)
    if path.exists():
        mode = path.stat().st_mode & 0o077
        if mode:
            os.chmod(path, 0o600)  # never leave the key readable by others
        data = path.read_bytes()
        if len(data) < 32:
            raise ValueError(f"{path}: secret key shorter than 32 bytes; delete it to make a new one")
        return data
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    return key


class Signer:
    """HMAC-SHA256 signed, timestamped values (the session cookie) and per-session CSRF tokens."""

    def __init__(self, key: bytes, max_age_s: int = 12 * 3600) -> None:
        self.key = key
        self.max_age_s = max_age_s

    def _mac(self, msg: str) -> str:
        return base64.urlsafe_b64encode(hmac.new(self.key, msg.encode(), hashlib.sha256).digest()).decode().rstrip("=")

    def sign(self, value: str) -> str:
        msg = f"{value}|{int(time.time())}"
        return f"{msg}|{self._mac(msg)}"

    def unsign(self, token: str | None) -> str | None:
        if not token or token.count("|") < 2:
            return None
        msg, mac = token.rsplit("|", 1)
        if not hmac.compare_digest(mac, self._mac(msg)):
            return None
        value, ts = msg.rsplit("|", 1)
        try:
            if time.time() - int(ts) > self.max_age_s:
                return None
        except ValueError:
            return None
        return value

    def csrf(self, sid: str) -> str:
        return self._mac("csrf:" + sid)

    def check_csrf(self, sid: str, token: str | None) -> bool:
        return bool(token) and hmac.compare_digest(str(token), self.csrf(sid))
