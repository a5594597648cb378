"""The review and human-evaluation web application (`genguard console`): FastAPI over SQLAlchemy, migrated by Alembic.

``create_app(db_url=None, home=None)`` builds the ASGI app: the database
(SQLite ``console.sqlite3`` in the genguard home unless a SQLAlchemy URL is
given) is migrated to the newest schema first; the cookie-signing key is
``console-secret.key`` (mode 0600) in the same home. Needs the ``console``
extra: ``pip install 'genguard[console]'``.
"""
from __future__ import annotations

from genguard.console.app import create_app, create_user

__all__ = ["create_app", "create_user"]
