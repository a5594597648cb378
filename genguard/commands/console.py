"""`genguard console`: start the review and human-evaluation web application (needs the `console` extra)."""
from __future__ import annotations

import getpass
import os

import click


def _shown(db_url: str | None) -> str:
    """The URL as it may be printed: a password in it is masked."""
    if not db_url:
        return "(default)"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(db_url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return "(unparsable URL)"


@click.command("console")
@click.option("--db", "db_url", default=None, metavar="URL",
              help="SQLAlchemy database URL, e.g. postgresql+psycopg://user@host/genguard "
                   "[default: SQLite console.sqlite3 in $GENGUARD_HOME or ~/.genguard].")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but localhost exposes the console to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port to listen on.")
@click.option("--create-admin", "create_admin", default=None, metavar="NAME",
              help="Create an admin account first (password from $GENGUARD_CONSOLE_PASSWORD, else asked).")
@click.option("--no-serve", is_flag=True, help="Apply the migrations (and --create-admin), then exit.")
def console_cmd(db_url: str | None, host: str, port: int, create_admin: str | None, no_serve: bool) -> int:
    """Serve the review console: queues of examined files with one-key decisions, assignment, an audit trail and
    exports, and human studies (2AFC real-vs-generated, MOS) with their statistics."""
    from genguard.generators._io import InputError

    try:
        import fastapi  # noqa: F401
        import sqlalchemy  # noqa: F401
        import uvicorn
        import alembic  # noqa: F401
    except ModuleNotFoundError as exc:
        raise InputError(f"the console needs the 'console' extra ({exc.name} is missing): "
                         "pip install 'genguard[console]'") from None
    from sqlalchemy.exc import SQLAlchemyError

    from genguard.console import create_app, create_user

    try:
        app = create_app(db_url)
    except (SQLAlchemyError, ValueError) as exc:  # a bad URL or an unreachable database: one line, exit 2
        raise InputError(f"database {_shown(db_url)}: {str(exc).splitlines()[0][:300]}") from None
    if create_admin:
        password = os.environ.get("GENGUARD_CONSOLE_PASSWORD") or getpass.getpass(f"password for {create_admin}: ")
        with app.state.sessions() as s:
            try:
                create_user(s, create_admin, "admin", password)
            except ValueError as exc:
                raise InputError(f"--create-admin: {exc}") from None
        click.echo(f"created admin {create_admin}")
    click.echo(f"database: {app.state.engine.url.render_as_string(hide_password=True)}")
    from sqlalchemy import func, select

    from genguard.console.models import User

    with app.state.sessions() as s:
        if not s.scalar(select(func.count(User.id))):
            click.echo("no accounts yet: add one with `genguard console --create-admin NAME`", err=True)
    if no_serve:
        return 0
    if host not in ("127.0.0.1", "localhost", "::1"):
        click.echo(f"genguard: warning: listening on {host}: reachable from the network; put it behind TLS", err=True)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"genguard console: http://{shown}:{port}/  (Ctrl-C to stop)")
    uvicorn.run(app, host=host, port=port, log_level="warning", proxy_headers=False)
    return 0


def register(group: click.Group) -> None:
    group.add_command(console_cmd)
