"""The issue's failure over the real stack: the research agent searches a collection nothing was ingested into (a
real retrieval server, the real research agent), and the coordinator's task fails with that reason instead of
completing with the error text as its answer (issue #9)."""

from __future__ import annotations

import anyio
from a2a.types import TaskState
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.coordinator.__main__ import make_app as coordinator_app
from ragtune.agents.research.__main__ import make_app as research_app
from ragtune.servers.retrieval.server import build_app as retrieval_app

from ragtune.config import AgentSettings, RetrievalSettings
from ragtune.llm import StandInChatModel


async def test_an_empty_corpus_fails_the_coordinators_task_with_the_reason(free_port, serving, monkeypatch):
    monkeypatch.setenv("RAGTUNE_EMBEDDER", "none")  # lexical only: no embedder to load for an empty corpus
    rport, aport, cport = free_port(), free_port(), free_port()
    async with serving(retrieval_app(RetrievalSettings(retrieval_port=rport), embedder=None), rport) as r_url:
        settings = AgentSettings(
            retrieval_url=f"{r_url}/mcp",
            research_agent_url=f"http://127.0.0.1:{aport}",
            finetune_agent_url=f"http://127.0.0.1:{aport}",  # only the research agent is asked
        )
        research = research_app(settings, f"http://127.0.0.1:{aport}", collection="guides", model=StandInChatModel())
        async with (
            serving(research, aport),
            serving(coordinator_app(settings, f"http://127.0.0.1:{cport}"), cport) as url,
        ):
            peer = A2APeer(url)
            with anyio.fail_after(60):
                last = await peer.ask("What port does the fine-tuning server listen on?")
            task = await peer.get_task(last.task_id)
            await peer.aclose()
    assert task.status.state == TaskState.TASK_STATE_FAILED and not task.artifacts
    assert last.text.startswith("the research agent's task failed:") and "unknown collection 'guides'" in last.text
