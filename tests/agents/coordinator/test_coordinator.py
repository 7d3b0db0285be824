"""The coordinator over A2A: delegation to the real fine-tuning agent (itself in front
of the real fine-tuning server) with the route chosen by a scripted tool-calling model; input-required is relayed."""

from __future__ import annotations

import uuid

import anyio
from langchain_core.messages import AIMessage
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.coordinator.__main__ import make_app as coordinator_app
from ragtune.agents.finetune.__main__ import make_app as finetune_agent_app
from ragtune.servers.finetune.app import build_app as finetune_app

from ragtune.config import AgentSettings, FinetuneSettings


async def test_model_routes_and_input_required_is_relayed(free_port, serving, scripted_model):
    fport, aport, cport = free_port(), free_port(), free_port()
    async with serving(finetune_app(FinetuneSettings(finetune_port=fport), port=fport), fport) as ft_url:
        settings = AgentSettings(
            finetune_url=f"{ft_url}/mcp",
            research_agent_url="http://127.0.0.1:9",
            finetune_agent_url=f"http://127.0.0.1:{aport}",
        )
        async with serving(finetune_agent_app(settings, f"http://127.0.0.1:{aport}"), aport):
            model = scripted_model(
                [
                    AIMessage("", tool_calls=[{"name": "route", "args": {"agent": "finetune"}, "id": "r1"}]),
                ]
            )
            app = coordinator_app(settings, f"http://127.0.0.1:{cport}", model=model)
            async with serving(app, cport) as url:
                peer = A2APeer(url)
                context = uuid.uuid4().hex
                rows = "\n".join(f'{{"question": "q{i}?", "answer": "answer number {i}"}}' for i in range(12))
                statuses = []
                with anyio.fail_after(60):
                    async for ev in peer.stream(f"Please handle this:\n{rows}", context_id=context):
                        statuses.append(ev)
                texts = [e.text for e in statuses]
                assert any("routing to finetune (by" in t and "keywords" not in t for t in texts)
                assert any(t.startswith("[finetune] ") for t in texts)  # the peer's status, relayed
                last = statuses[-1]
                assert last.state_name == "input_required" and "Reply “yes”" in last.text
                with anyio.fail_after(60):
                    done = await peer.ask("no", context_id=context, task_id=last.task_id)
                assert done.state_name == "completed" and "Not launched" in done.text
                await peer.aclose()
