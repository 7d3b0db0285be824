"""Agents on PostgreSQL (RAGTUNE_DATABASE_URL): two replicas share A2A tasks and LangGraph checkpoints."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from a2a.server.context import ServerCallContext
from a2a.server.tasks import DatabaseTaskStore
from a2a.types import TaskState
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.stores import agent_schema, task_engine

from ragtune.config import AgentSettings
from ragtune.pg import DatabaseUnavailable

from .test_a2a_app import echo_app


@pytest.fixture
def on_postgres(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point every agent built in the test at the test's PostgreSQL database."""
    monkeypatch.setenv("RAGTUNE_DATABASE_URL", pg_url)
    return pg_url


async def test_two_replicas_share_tasks_and_checkpoints(on_postgres: str, free_port, serving, isolated_env: Path):
    port_a, port_b = free_port(), free_port()
    async with serving(echo_app(port_a), port_a) as url_a, serving(echo_app(port_b), port_b) as url_b:
        a, b = A2APeer(url_a), A2APeer(url_b)
        first = await a.ask("confirm")  # replica A: the graph interrupts, the task waits for input
        assert first.state_name == "input_required" and first.text == "really?"
        # Replica B never saw this task: it loads it from the shared task store and resumes the shared thread.
        done = await b.ask("yes", context_id=first.context_id, task_id=first.task_id)
        assert done.state_name == "completed" and done.text == "echo confirm yes (turn 1)"
        again = await a.ask("and now", context_id=first.context_id)
        assert again.text == "echo and now (turn 2)"  # A sees the turn B checkpointed
        assert (await b.get_task(again.task_id)).status.state == TaskState.TASK_STATE_COMPLETED
        await a.aclose()
        await b.aclose()

    # A fresh DatabaseTaskStore (no app at all) reads the persisted task back.
    engine = task_engine(AgentSettings(), "echo", isolated_env)
    try:
        task = await DatabaseTaskStore(engine).get(done.task_id, ServerCallContext())
    finally:
        await engine.dispose()
    assert task is not None and task.status.state == TaskState.TASK_STATE_COMPLETED
    assert "echo confirm yes" in task.artifacts[0].parts[0].text
    schema = agent_schema("echo")
    with psycopg.connect(on_postgres) as conn:
        threads = conn.execute(f"select count(*) from {schema}.checkpoints where thread_id = %s", (first.context_id,))
        assert threads.fetchone()[0] >= 3  # the thread's checkpoints are in the agent's own schema
        tasks = conn.execute(f"select count(*) from {schema}.tasks").fetchone()[0]
        assert tasks == 2
    assert not list((isolated_env / "agents").glob("*.db")), "no SQLite file when the URL is set"


async def test_an_unreachable_database_stops_the_agent_with_what_to_fix(monkeypatch, free_port) -> None:
    monkeypatch.setenv("RAGTUNE_DATABASE_URL", "postgresql://ragtune:hunter2@127.0.0.1:1/ragtune")
    app = echo_app(free_port())
    with pytest.raises(DatabaseUnavailable, match="cannot reach PostgreSQL.*RAGTUNE_DATABASE_URL") as info:
        async with app.router.lifespan_context(app):  # what uvicorn runs at startup
            pass
    assert "hunter2" not in str(info.value)
