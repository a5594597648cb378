"""Alembic migrations of the console's schema (applied at start by genguard.console.db.upgrade)."""
