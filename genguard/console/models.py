"""The console's database tables (SQLAlchemy 2): users and their sessions, failed log-ins, review queues and items,
the audit trail, studies."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Boolean, DateTime, Float, ForeignKey, Index, Integer, String, Text, false, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("admin", "reviewer", "rater")
DECISIONS = ("generated", "edited", "authentic", "unsure")


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    role: Mapped[str] = mapped_column(String(16), nullable=False)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, nullable=False)
    #: a disabled account cannot log in and its sessions are ended
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), nullable=False)


class LoginSession(Base):
    """A logged-in session. The cookie carries a random token; only its SHA-256 is stored, so a copy of the
    database (a backup, a read-only leak) holds no live session."""
    __tablename__ = "sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, index=True)


class LoginFailure(Base):
    """One failed (or in-flight) log-in attempt: the login limiter counts these in a sliding window, so the limit
    holds across restarts and across worker processes sharing the database."""
    __tablename__ = "login_failures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account: Mapped[str] = mapped_column(String(64), nullable=False)  # the name as typed, lower-cased
    address: Mapped[str] = mapped_column(String(64), nullable=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime, nullable=False, index=True)

    __table_args__ = (Index("ix_login_failures_account_at", "account", "at"),
                      Index("ix_login_failures_address_at", "address", "at"))


class Queue(Base):
    __tablename__ = "queues"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    source: Mapped[str] = mapped_column(Text, nullable=False)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, nullable=False)


class Item(Base):
    """One examined file. ``path``/``overlay_path`` are read by the server only: no URL ever carries a path."""
    __tablename__ = "items"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id", ondelete="CASCADE"), nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    overlay_path: Mapped[str | None] = mapped_column(Text)
    provenance_verdict: Mapped[str] = mapped_column(String(32), nullable=False)
    verdict: Mapped[str | None] = mapped_column(String(32))
    synthetic_probability: Mapped[float | None] = mapped_column(Float)
    #: higher = more suspicious: the provenance verdict's rank first, then the synthetic probability
    suspicion: Mapped[float] = mapped_column(Float, nullable=False)
    evidence: Mapped[str] = mapped_column(Text, nullable=False)  # the examination's JSON entry
    decision: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str | None] = mapped_column(Text)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    __table_args__ = (
        # each ends on the id every sort ends on (a PostgreSQL index, unlike SQLite's, does not carry it)
        Index("ix_items_queue_suspicion", "queue_id", "suspicion", "id"),
        Index("ix_items_queue_decision", "queue_id", "decision", "suspicion", "id"),
        Index("ix_items_queue_verdict", "queue_id", "verdict", "suspicion", "id"),
        Index("ix_items_queue_assignee", "queue_id", "assignee_id", "suspicion", "id"),
        Index("ix_items_queue_name", "queue_id", "name", "id"),
        Index("ix_items_queue_probability", "queue_id", "synthetic_probability", "id"),
        Index("ix_items_queue_provenance", "queue_id", "provenance_verdict", "suspicion", "id"),
        Index("ix_items_queue_undecided", "queue_id", "suspicion", "id", postgresql_where=text("decision IS NULL"),
              sqlite_where=text("decision IS NULL")),
    )


class AuditEvent(Base):
    """Who changed what on an item, when, from what to what (append-only)."""
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), nullable=False, index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, nullable=False)
    field: Mapped[str] = mapped_column(String(16), nullable=False)  # decision | note | assignee
    old: Mapped[str | None] = mapped_column(Text)
    new: Mapped[str | None] = mapped_column(Text)


class Study(Base):
    __tablename__ = "studies"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # 2afc | mos
    #: what raters are shown, found from the stimuli's files when the study is made: image | audio
    media: Mapped[str] = mapped_column(String(8), nullable=False, default="image", server_default="image")
    config: Mapped[str] = mapped_column(Text, nullable=False)  # JSON: trials per rater, attention checks
    created_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=now, nullable=False)


class Stimulus(Base):
    __tablename__ = "stimuli"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), nullable=False, index=True)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False)  # real | generated | attention


class Trial(Base):
    """One rater's trial, in that rater's randomised order; ``left``/``right`` are the shown stimuli."""
    __tablename__ = "trials"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), nullable=False)
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id"), nullable=False)
    position: Mapped[int] = mapped_column(Integer, nullable=False)
    attention: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    left_id: Mapped[int] = mapped_column(ForeignKey("stimuli.id"), nullable=False)
    right_id: Mapped[int | None] = mapped_column(ForeignKey("stimuli.id"))
    answer: Mapped[str | None] = mapped_column(String(8))
    answered_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    #: when each clip of an audio trial was first sent to this rater's browser; the players load a clip only when
    #: it is played (preload="none"), so an answer sooner than the clips' length after the first was sent is refused
    left_sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    right_sent_at: Mapped[dt.datetime | None] = mapped_column(DateTime)

    __table_args__ = (Index("ix_trials_study_rater_pos", "study_id", "rater_id", "position"),)
