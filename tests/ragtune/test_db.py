"""SQLite access: migrations in SQL or through sqlite-utils, all-or-nothing; sqlite-utils joins transactions."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlite_utils

from ragtune import db


def _add_priority(tables: sqlite_utils.Database) -> None:
    tables["jobs"].add_column("priority", int, not_null_default=0)
    tables["jobs"].create_index(["priority"])


def test_sql_and_sqlite_utils_migrations_run_once_in_order(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "m.db", vec=False)
    steps: list[db.Migration] = ["create table jobs (id text primary key, status text not null);", _add_priority]
    assert db.migrate(conn, steps) == 2
    conn.execute("insert into jobs(id, status) values ('a', 'queued')")
    assert db.migrate(conn, steps) == 2  # nothing re-runs: add_column again would raise
    assert db.tables(conn)["jobs"].get("a") == {"id": "a", "status": "queued", "priority": 0}
    assert conn.execute("pragma user_version").fetchone()[0] == 2


def test_a_failing_migration_leaves_the_version_and_schema_as_they_were(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "m.db", vec=False)
    db.migrate(conn, ["create table jobs (id text primary key);"])

    def broken(tables: sqlite_utils.Database) -> None:
        tables["jobs"].add_column("note", str)
        raise RuntimeError("half way")

    with pytest.raises(RuntimeError, match="half way"):
        db.migrate(conn, ["create table jobs (id text primary key);", broken])
    assert conn.execute("pragma user_version").fetchone()[0] == 1
    assert list(db.tables(conn)["jobs"].columns_dict) == ["id"]


def test_sqlite_utils_writes_join_an_open_transaction(tmp_path: Path) -> None:
    conn = db.connect(tmp_path / "t.db", vec=False)
    conn.execute("create table t (id text primary key)")
    with pytest.raises(RuntimeError), db.transaction(conn):
        db.tables(conn)["t"].insert({"id": "a"})
        raise RuntimeError("roll back")
    assert db.tables(conn)["t"].count == 0
