"""Open SQLite the one way ragtune needs it: extensions loaded, WAL, a busy timeout, migrations."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

try:  # The CI Python's stdlib sqlite3 cannot load extensions; pysqlite3-binary can.
    import pysqlite3.dbapi2 as sqlite3  # untyped: sqlite3 is Any to mypy, so the fallback below is no redefinition
except ImportError:  # pragma: no cover - exercised only where the wheel is absent
    import sqlite3

log = logging.getLogger(__name__)

Connection = Any  # sqlite3.Connection from pysqlite3 or the stdlib
IntegrityError = sqlite3.IntegrityError
OperationalError = sqlite3.OperationalError


def connect(path: Path | str, *, vec: bool = True, check_same_thread: bool = False) -> Connection:
    """Return a connection with WAL, foreign keys, a 10 s busy timeout and (optionally) sqlite-vec."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10.0, check_same_thread=check_same_thread, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("pragma busy_timeout = 10000")
    conn.execute("pragma foreign_keys = on")
    if str(path) != ":memory:":
        conn.execute("pragma journal_mode = wal")
        conn.execute("pragma synchronous = normal")
    if vec:
        load_vec(conn)
    return conn


def tables(conn: Connection) -> sqlite_utils.Database:
    """Wrap `conn` in sqlite-utils for simple row access (insert, get, rows_where) on the same connection.

    Plugins stay off and recursive triggers as SQLite sets them; inside `transaction()` its writes join the open
    transaction. Hot paths (FTS5 ranking, vector sync, leases) keep hand-written SQL.
    """
    return sqlite_utils.Database(conn, recursive_triggers=False, execute_plugins=False)


def load_vec(conn: Connection) -> None:
    """Load sqlite-vec into `conn`; explain the fix when this Python cannot load extensions."""
    import sqlite_vec

    if not hasattr(conn, "enable_load_extension"):
        raise RuntimeError("this Python's sqlite3 cannot load extensions: pip install pysqlite3-binary")
    conn.enable_load_extension(True)
    sqlite_vec.load(conn)
    conn.enable_load_extension(False)


@contextlib.contextmanager
def transaction(conn: Connection, *, immediate: bool = True) -> Iterator[Connection]:
    """Run a block in one transaction: all of it lands, or none (BEGIN IMMEDIATE avoids writer deadlocks)."""
    conn.execute("begin immediate" if immediate else "begin")
    try:
        yield conn
    except BaseException:
        conn.execute("rollback")
        raise
    else:
        conn.execute("commit")


# A migration is SQL (FTS5 tables, triggers, JSON rewrites) or a function given sqlite-utils over the connection
# (add a column, an index, a table from a dict of types), run inside the migration's transaction.
Migration = str | Callable[[sqlite_utils.Database], None]


class SchemaTooNew(RuntimeError):
    """Raised when a database was written by a newer ragtune than the one opening it (SQLite or PostgreSQL)."""


def migrate(conn: Connection, migrations: Sequence[Migration]) -> int:
    """Apply the migrations past `pragma user_version`, each in its own transaction; return the new version."""
    current = conn.execute("pragma user_version").fetchone()[0]
    if current > len(migrations):
        raise SchemaTooNew(
            f"this database's schema is version {current}, newer than this ragtune ({len(migrations)}): "
            "upgrade ragtune to the version that wrote it, or point RAGTUNE_HOME at another folder"
        )
    for version, step in enumerate(migrations, start=1):
        if version <= current:
            continue
        with transaction(conn):
            if isinstance(step, str):
                for statement in _statements(step):
                    conn.execute(statement)
            else:
                step(tables(conn))
            conn.execute(f"pragma user_version = {version}")
        log.debug("migrated %s to version %d", conn, version)
    return max(current, len(migrations))


def _statements(script: str) -> list[str]:
    """Split a migration script on ';' at statement ends (executescript would commit implicitly)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            if buf.strip():
                out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out
