"""The launcher calls an agent ready only when its health says ok and its card is served; the coordinator's health
is ok only once its peers answer, so `agents/run.py --serve` never announces a coordinator whose peers are still
loading (issue #9)."""

from __future__ import annotations

import asyncio

from ragtune.agents.a2a_app import AgentSpec, build_app, skill
from ragtune.agents.a2a_peer import CARD_PATH
from ragtune.agents.coordinator.__main__ import make_app as coordinator_app
from ragtune.agents.launcher import Service, Supervisor

from ragtune.config import AgentSettings


async def no_graph(saver):
    return None


def agent(url: str, peers: str | None = None):
    if peers is None:
        spec = AgentSpec("ragtune-peer", "a peer", [skill("s", "S", "does", ["t"], ["x"])], no_graph)
        return build_app(spec, AgentSettings(), url)
    return coordinator_app(AgentSettings(research_agent_url=peers, finetune_agent_url=peers), url)


def ready(url: str, card: str | None = CARD_PATH) -> bool:
    return Supervisor.answers(Service("x", [], None, f"{url}/health", f"{url}{card}" if card else None))


async def test_the_coordinator_is_ready_only_once_its_peers_answer(free_port, serving):
    pport, cport = free_port(), free_port()
    peer_url = f"http://127.0.0.1:{pport}"
    async with serving(agent(f"http://127.0.0.1:{cport}", peers=peer_url), cport) as url:
        assert not await asyncio.to_thread(ready, url)
        async with serving(agent(peer_url), pport):
            assert await asyncio.to_thread(ready, url)
            assert not await asyncio.to_thread(ready, url, "/no-such-card.json")
        assert not await asyncio.to_thread(ready, url)
