"""Where an agent keeps its A2A tasks and LangGraph checkpoints: SQLite files under HOME, or PostgreSQL.

With RAGTUNE_DATABASE_URL set, every replica of an agent shares one PostgreSQL schema, `agent_<name>`, that holds
its a2a-sdk `tasks` table and LangGraph's checkpoint tables, so any replica can answer `GetTask` or resume an
input-required conversation another one started. One schema per agent keeps agents apart: the coordinator and a
peer may see the same A2A contextId (the LangGraph thread id) for different graphs.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from langgraph.checkpoint.base import BaseCheckpointSaver
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ragtune import pg
from ragtune.config import CommonSettings


def agent_schema(slug: str) -> str:
    """Return the PostgreSQL schema of one agent (`agent_research`): a safe identifier from its name."""
    return "agent_" + re.sub(r"[^a-z0-9_]", "_", slug.lower())


def task_engine(settings: CommonSettings, slug: str, home: Path) -> AsyncEngine:
    """Return the SQLAlchemy engine a2a-sdk's DatabaseTaskStore keeps this agent's tasks in."""
    url = settings.database()
    if not url:
        return create_async_engine(f"sqlite+aiosqlite:///{home / f'{slug}-tasks.db'}")
    # search_path puts the SDK's fixed `tasks` table in the agent's schema (prepare_threshold off: poolers).
    connect_args = {"options": f"-c search_path={agent_schema(slug)}", "prepare_threshold": None}
    return create_async_engine(pg.sqlalchemy_url(url), connect_args=connect_args, pool_pre_ping=True)


def prepare_schema(settings: CommonSettings, slug: str) -> None:
    """Create the agent's PostgreSQL schema (no-op on SQLite); a clear error when the server is unreachable."""
    url = settings.database()
    if not url:
        return
    with pg.connect(url, vector=False) as conn, conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (pg.MIGRATION_LOCK,))
        conn.execute(f'create schema if not exists "{agent_schema(slug)}"')


@asynccontextmanager
async def open_checkpointer(settings: CommonSettings, slug: str, home: Path) -> AsyncIterator[BaseCheckpointSaver]:
    """Open the agent's LangGraph checkpointer: AsyncPostgresSaver in its schema, or AsyncSqliteSaver under HOME."""
    url = settings.database()
    if not url:
        from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

        async with AsyncSqliteSaver.from_conn_string(str(home / f"{slug}-checkpoints.db")) as saver:
            yield saver
        return
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
    from psycopg.rows import dict_row
    from psycopg_pool import AsyncConnectionPool

    kwargs: dict[str, Any] = {
        "autocommit": True,  # what AsyncPostgresSaver needs from its connections
        "prepare_threshold": 0,
        "row_factory": dict_row,
        "options": f"-c search_path={agent_schema(slug)}",
    }
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        pg.plain_url(url), min_size=1, max_size=4, kwargs=kwargs, open=False
    )
    await pool.open(wait=True, timeout=30)
    try:
        pg_saver = AsyncPostgresSaver(pool)  # a pool of autocommit dict-row connections, as it requires
        async with pool.connection() as conn:  # replicas starting together set the tables up one at a time
            await conn.execute("select pg_advisory_lock(%s)", (pg.MIGRATION_LOCK,))
            try:
                await pg_saver.setup()
            finally:
                await conn.execute("select pg_advisory_unlock(%s)", (pg.MIGRATION_LOCK,))
        yield pg_saver
    finally:
        await pool.close()


async def prepare_tasks(engine: AsyncEngine, store: Any) -> None:
    """Create the task table now, under the migration lock, rather than racing other replicas on first use."""
    if engine.dialect.name != "postgresql":
        return
    async with engine.connect() as conn:
        await conn.exec_driver_sql(f"select pg_advisory_lock({pg.MIGRATION_LOCK})")
        try:
            await store.initialize()
        finally:
            await conn.exec_driver_sql(f"select pg_advisory_unlock({pg.MIGRATION_LOCK})")
