"""Accounts kept in the database: users, server-side sessions and the login limiter.

Threat model. A session cookie copied from a browser (a shared computer, a
proxy log, malware) must stop working when its owner logs out, when an admin
disables the account, and when the password or role changes; so the cookie is
only a random token and the session is a row the server deletes. Failed
log-ins are rows too: a password-guessing client cannot reset its budget by
waiting for a restart, nor multiply it by the number of worker processes.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from sqlalchemy import delete, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from genguard.console import auth
from genguard.console.models import ROLES, LoginFailure, LoginSession, User, now


def clean_text(v: object, limit: int) -> str:
    """``v`` as text of at most ``limit`` characters without NUL (PostgreSQL's text types cannot hold one)."""
    return str(v).replace("\x00", "\ufffd")[:limit]


def check_password(password: str) -> None:
    if len(password) < 8:
        raise ValueError("password: at least 8 characters")


def create_user(session: Session, name: str, role: str, password: str, n: int = auth.SCRYPT_N) -> User:
    """Add a user (``role`` one of admin, reviewer, rater) with a scrypt password hash."""
    name = name.strip()
    if role not in ROLES:
        raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
    if not name or len(name) > 64 or any(c.isspace() or not c.isprintable() for c in name):
        raise ValueError(f"user name {name!r}: 1-64 printable characters, no spaces")
    check_password(password)
    if session.scalar(select(User.id).where(User.name == name)):
        raise ValueError(f"user {name!r} exists")
    user = User(name=name, role=role, password_hash=auth.hash_password(password, n=n))
    session.add(user)
    session.commit()
    return user


def update_user(session: Session, user: User, *, role: str | None = None, password: str | None = None,
                disabled: bool | None = None, n: int = auth.SCRYPT_N) -> bool:
    """Change a user's role, password or disabled flag; any change ends every session of that user.
    Returns whether anything changed."""
    changed = False
    if role is not None and role != user.role:
        if role not in ROLES:
            raise ValueError(f"role {role!r}: use one of {', '.join(ROLES)}")
        user.role, changed = role, True
    if password is not None:
        check_password(password)
        user.password_hash, changed = auth.hash_password(password, n=n), True
    if disabled is not None and bool(disabled) != user.disabled:
        user.disabled, changed = bool(disabled), True
    if changed:
        end_sessions(session, user.id)
    session.commit()
    return changed


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, user: User, max_age_s: int) -> str:
    """A new session for ``user``: returns the token for the cookie (the database keeps its hash only)."""
    t = now()
    session.execute(delete(LoginSession).where(LoginSession.expires_at <= t))  # the table stays small
    token = secrets.token_urlsafe(32)
    session.add(LoginSession(token_hash=_digest(token), user_id=user.id, created_at=t,
                             expires_at=t + dt.timedelta(seconds=max_age_s)))
    session.commit()
    return token


def session_user(session: Session, token: str | None) -> User | None:
    """The enabled user of a live session ``token``, else None (unknown, ended or expired session)."""
    if not token:
        return None
    return session.scalar(select(User).join(LoginSession, LoginSession.user_id == User.id)
                          .where(LoginSession.token_hash == _digest(token), LoginSession.expires_at > now(),
                                 User.disabled.is_(False)))


def end_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(LoginSession).where(LoginSession.token_hash == _digest(token)))
        session.commit()


def end_sessions(session: Session, user_id: int) -> None:
    """End every session of a user (the caller commits)."""
    session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))


class LoginLimiter:
    """Failed log-ins counted in the database over a sliding ``window_s``: at most ``limit`` per (account, client
    address), ``address_limit`` per address over all accounts (a spray of names) and ``account_limit`` per account
    over all addresses (a distributed guess at one password); past any of them, 429.

    An attempt is counted and written in one transaction that no other attempt interleaves with (SQLite: the
    insert holds the database's write lock until the commit; PostgreSQL: a transaction-scoped advisory lock), so
    of any number of concurrent attempts (threads or worker processes) exactly the limit reach the password check.
    A successful log-in deletes its (account, address) rows.
    """

    #: the PostgreSQL advisory-lock key the limiter's transactions take (any fixed 64-bit number)
    LOCK_KEY = 0x67676C6F67696E  # "gglogin"

    def __init__(self, sessions: sessionmaker, limit: int = 5, window_s: float = 60.0,
                 address_limit: int | None = None, account_limit: int | None = None) -> None:
        self.sessions, self.limit, self.window_s = sessions, limit, window_s
        self.address_limit = address_limit if address_limit is not None else 4 * limit
        self.account_limit = account_limit if account_limit is not None else 4 * limit

    @staticmethod
    def _key(account: str, address: str) -> tuple[str, str]:
        return clean_text(account.lower(), 64), clean_text(address, 64)

    def attempt(self, account: str, address: str) -> tuple[int | None, float]:
        """Record an attempt; returns (its row id, 0) when it may go on to the password check, else (None, seconds
        until one may)."""
        account, address = self._key(account, address)
        with self.sessions() as s:
            if s.get_bind().dialect.name == "postgresql":
                s.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self.LOCK_KEY})
            t = now()
            since = t - dt.timedelta(seconds=self.window_s)
            s.execute(delete(LoginFailure).where(LoginFailure.at <= since))
            row = LoginFailure(account=account, address=address, at=t)
            s.add(row)
            s.flush()
            wait = 0.0
            for cond, limit in (((LoginFailure.account == account) & (LoginFailure.address == address), self.limit),
                                (LoginFailure.address == address, self.address_limit),
                                (LoginFailure.account == account, self.account_limit)):
                q = select(LoginFailure.at).where(cond, LoginFailure.at > since, LoginFailure.id != row.id)
                n = s.scalar(select(func.count()).select_from(q.subquery()))
                if n >= limit:
                    # refused, and not counted: it may go on once enough of the others leave the window
                    oldest = s.scalars(q.order_by(LoginFailure.at.desc()).offset(limit - 1).limit(1)).first()
                    wait = max(wait, self.window_s - (t - oldest).total_seconds() if oldest else self.window_s)
            if wait:
                s.rollback()
                return None, max(wait, 1.0)
            s.commit()
            return row.id, 0.0

    def succeeded(self, account: str, address: str) -> None:
        """The password was right: forget this (account, address)'s failures, the attempt's own row included."""
        account, address = self._key(account, address)
        with self.sessions() as s:
            s.execute(delete(LoginFailure).where(LoginFailure.account == account, LoginFailure.address == address))
            s.commit()
