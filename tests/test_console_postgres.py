"""The review console on PostgreSQL: the Alembic migrations on an empty database, then the SQLite API flows again.

A throw-away PostgreSQL server is started for this module (initdb and pg_ctl
from Debian's postgresql package, data in a temporary folder, 127.0.0.1 on a
port the OS picks) and every test gets an empty database of its own. Without
PostgreSQL or psycopg these tests skip and say why; in CI (env CI set) that
is a failure.
"""
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("sqlalchemy")
pytest.importorskip("alembic")

from test_console_api import (  # noqa: E402,F401  (collected again here, with this module's `env`)
    FAST_N, check_upgrade_keeps_data, detect_json, import_json, login,
    test_2afc_study_randomised_with_attention_checks_and_wilson_results,
    test_a_cookie_copied_before_logout_is_refused_after_it,
    test_concurrent_decisions_on_one_item_keep_a_consistent_audit_trail,
    test_concurrent_first_visits_deal_one_set_of_trials,
    test_decisions_leave_an_audit_trail_and_export,
    test_disabling_a_user_or_changing_role_or_password_ends_their_sessions,
    test_every_post_route_needs_the_sessions_csrf_token, test_files_are_served_only_by_item_id,
    test_hostile_file_name_and_manifest_title_are_escaped, test_login_cookie_flags_rotation_and_rate_limit,
    test_mos_study_results_have_intervals_and_alpha, test_pages_need_a_login_and_the_right_role,
    test_queue_orders_most_suspicious_first_filters_and_paginates,
    test_text_with_nul_characters_is_refused_or_cleaned,
    test_the_login_limit_survives_a_restart_and_holds_across_workers,
)
from test_console_studies_audio import (  # noqa: E402,F401
    later, test_an_audio_answer_waits_until_the_clips_could_be_heard_through,
    test_audio_mos_study_skips_bad_clips_serves_reencoded_wavs_and_gives_results,
)

from genguard.console import create_app, create_user  # noqa: E402


def _need(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI: {reason} (the PostgreSQL tests must run in CI)")
    pytest.skip(reason)


def _bindir() -> Path | None:
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(d) / "initdb").exists():
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def postgres():
    """A PostgreSQL server of this module's own: yields the URL of its maintenance database."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _need("psycopg is not installed (pip install -e '.[console]')")
    bindir = _bindir()
    if bindir is None:
        _need("no PostgreSQL server binaries (apt-get install postgresql)")
    # initdb and postgres refuse to run as root: then the server runs as the postgres user, in a folder it owns
    # (pytest's tmp_path sits under a root-only folder, so a folder of its own in the temp dir)
    as_root = os.geteuid() == 0
    run_as: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="gg-pg-"))
    if as_root:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            _need("running as root and there is no postgres user to run the server as")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    try:
        subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                        "--no-sync", "-E", "UTF8", "--no-instructions"], check=True, capture_output=True, timeout=120)
        opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
                "-c full_page_writes=off -c max_connections=100 -c timezone=Pacific/Chatham")
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"),
                        "-w", "-t", "60", "start"], check=True, capture_output=True, timeout=90)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        log = (root / "log").read_text(errors="replace")[-2000:] if (root / "log").exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc}\n{getattr(exc, 'stderr', b'') or b''!r}\n{log}")
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def pg_url(postgres):
    """An empty database on the module's server, dropped after the test."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    dsn = postgres.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f"CREATE DATABASE {name}")
    yield f"{postgres}/{name}"
    with psycopg.connect(dsn, autocommit=True) as con:
        con.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture()
def env(pg_url, tmp_path):
    """The SQLite module's ``env``, on PostgreSQL: the same users, so the same tests run unchanged."""
    app = create_app(pg_url, tmp_path / "home")
    assert app.state.engine.dialect.name == "postgresql"
    with app.state.sessions() as s:
        for name, role in (("boss", "admin"), ("rev", "reviewer"), ("rev2", "reviewer"), ("rat", "rater"),
                           ("rat2", "rater")):
            create_user(s, name, role, f"{name}-password", n=FAST_N)
    yield app, tmp_path
    app.state.engine.dispose()


def test_migrations_build_the_schema_on_an_empty_postgresql_database(pg_url, tmp_path):
    from sqlalchemy import inspect

    app = create_app(pg_url, tmp_path / "home")
    insp = inspect(app.state.engine)
    assert {"users", "sessions", "login_failures", "queues", "items", "audit_events", "studies", "stimuli",
            "trials", "alembic_version"} <= set(insp.get_table_names())
    idx = {i["name"]: i["column_names"] for i in insp.get_indexes("items")}
    assert {"ix_items_queue_suspicion", "ix_items_queue_decision", "ix_items_queue_verdict",
            "ix_items_queue_probability", "ix_items_queue_provenance", "ix_items_queue_name",
            "ix_items_queue_undecided"} <= set(idx)
    # a PostgreSQL index does not carry the id by itself: the sort indexes end on it, so a page's ids come
    # from the index alone (an index-only scan) however deep the page
    assert all(cols[-1] == "id" for name, cols in idx.items() if name.startswith("ix_items_queue_")), idx
    with app.state.engine.connect() as conn:
        assert conn.exec_driver_sql("select version_num from alembic_version").scalar() == "0005"
        # names sort in code-point order, as on SQLite, whatever the database's locale
        assert conn.exec_driver_sql("select collation_name from information_schema.columns "
                                    "where table_name = 'items' and column_name = 'name'").scalar() == "C"
        assert conn.exec_driver_sql("select data_type from information_schema.columns "
                                    "where table_name = 'users' and column_name = 'disabled'").scalar() == "boolean"
    app.state.engine.dispose()
    again = create_app(pg_url, tmp_path / "home")  # a second start is a no-op, not an error
    again.state.engine.dispose()


def test_an_older_postgresql_schema_is_upgraded_in_place_keeping_its_data(pg_url, tmp_path):
    app = check_upgrade_keeps_data(pg_url, tmp_path / "home")
    app.state.engine.dispose()


def test_times_are_utc_whatever_the_servers_time_zone(env):
    """The server runs in Pacific/Chatham (UTC+12:45 or +13:45): the audit trail's times are still UTC."""
    import datetime as dt

    app, tmp = env
    boss = login(app, "boss")
    qid = import_json(boss, detect_json(tmp))
    iid = boss.get(f"/queues/{qid}").json()["items"][0]["id"]
    before = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    boss.post(f"/items/{iid}/decision", data={"decision": "unsure"})
    at = boss.get(f"/items/{iid}").json()["audit"][0]["at"]
    got = dt.datetime.fromisoformat(at.rstrip("Z"))
    assert abs((got - before).total_seconds()) < 60, (at, before)
    with app.state.engine.connect() as conn:
        assert conn.exec_driver_sql("show timezone").scalar() == "Pacific/Chatham"


def test_the_console_command_migrates_a_postgresql_url(pg_url, tmp_path, monkeypatch, capsys):
    from genguard.cli import main

    monkeypatch.setenv("GENGUARD_HOME", str(tmp_path / "h"))
    monkeypatch.setenv("GENGUARD_CONSOLE_PASSWORD", "a-long-password")
    with pytest.raises(SystemExit) as e:
        main(["console", "--db", pg_url, "--create-admin", "root1", "--no-serve"])
    out = capsys.readouterr()
    assert e.value.code == 0, out.err
    assert "created admin root1" in out.out and "postgresql+psycopg://postgres@127.0.0.1" in out.out
    assert not (tmp_path / "h" / "console.sqlite3").exists()
    with pytest.raises(SystemExit) as e:  # an unreachable server: one line naming the database, exit 2
        main(["console", "--db", pg_url.replace("postgres@", "postgres:s3cret-pw@").rsplit("/", 1)[0] + "/no_such_db",
              "--no-serve"])
    out = capsys.readouterr()
    assert e.value.code == 2 and out.err.count("\n") == 1 and "no_such_db" in out.err
    assert "s3cret-pw" not in out.err and "***" in out.err  # a password in the URL is never printed
