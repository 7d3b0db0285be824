"""ragtune.pg against a real PostgreSQL: migrations, versions, and the errors a user sees."""

from __future__ import annotations

import pytest

from ragtune.db import SchemaTooNew
from ragtune.db import connect as sqlite_connect
from ragtune.db import migrate as sqlite_migrate
from ragtune.pg import DatabaseUnavailable, connect, migrate, redact


def test_migrate_applies_once_and_records_version(pg_url: str) -> None:
    with connect(pg_url) as conn:
        steps = ["create table a (x int)", "alter table a add column y text"]
        assert migrate(conn, "demo", steps) == 2
        assert migrate(conn, "demo", steps) == 2  # second run applies nothing
        conn.execute("insert into a (x, y) values (1, 'b')")
        assert conn.execute("select version from ragtune_schema where component = 'demo'").fetchone()[0] == 2
        assert conn.execute("select extname from pg_extension where extname = 'vector'").fetchone() is not None


def test_schema_newer_than_code_is_refused(pg_url: str) -> None:
    with connect(pg_url) as conn:
        migrate(conn, "demo", ["create table a (x int)", "create table b (x int)"])
        with pytest.raises(SchemaTooNew, match="newer than this ragtune"):
            migrate(conn, "demo", ["create table a (x int)"])


def test_unreachable_server_says_what_to_do() -> None:
    with pytest.raises(DatabaseUnavailable, match="RAGTUNE_DATABASE_URL") as info:
        connect("postgresql://ragtune:hunter2secret@127.0.0.1:1/ragtune")
    assert "hunter2secret" not in str(info.value)


def test_redact_hides_password() -> None:
    assert redact("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"


def test_sqlite_schema_newer_than_code_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    conn = sqlite_connect(tmp_path / "x.db", vec=False)
    sqlite_migrate(conn, ["create table a (x int)", "create table b (x int)"])
    with pytest.raises(SchemaTooNew, match="newer than this ragtune"):
        sqlite_migrate(conn, ["create table a (x int)"])
