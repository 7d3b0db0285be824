"""A2A conformance fixes of issue #12 over real HTTP: the 1.0 card shape and caching headers, a 0.3 card for 0.3
clients, -32005 for a part the agent cannot read, and the TCK's scripted test mode."""

from __future__ import annotations

import json
from typing import TypedDict

import httpx
import pytest
from a2a.compat.v0_3.types import AgentCard as AgentCardV03
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END, START, StateGraph
from ragtune.agents.a2a_app import AgentSpec, build_app, skill

from ragtune.config import AgentSettings
from ragtune.llm import StandInChatModel, make_chat_model

V1 = {"A2A-Version": "1.0"}
LEGACY_FIELDS = {"url", "preferredTransport", "protocolVersion", "security", "additionalInterfaces"}


class State(TypedDict, total=False):
    request: str
    answer: str


async def echo_graph(saver: BaseCheckpointSaver):
    async def echo(state: State) -> State:
        return {"answer": f"graph: {state['request']}"}

    g = StateGraph(State)
    g.add_node("echo", echo)
    g.add_edge(START, "echo")
    g.add_edge("echo", END)
    return g.compile(checkpointer=saver)


def app(port: int, **settings):
    spec = AgentSpec("ragtune-conf", "conformance", [skill("echo", "Echo", "echoes", ["test"], ["hi"])], echo_graph)
    return build_app(spec, AgentSettings(**settings), f"http://127.0.0.1:{port}")


def send(message_id: str, parts: list[dict]) -> dict:
    message = {"messageId": message_id, "role": "ROLE_USER", "parts": parts}
    return {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": message}}


async def test_card_is_pure_1_0_with_caching_headers_and_revalidates(free_port, serving):
    port = free_port()
    async with serving(app(port, api_token="s3cret-Token-for-tests"), port) as url, httpx.AsyncClient() as h:
        r = await h.get(f"{url}/.well-known/agent-card.json")
        card = r.json()
        assert LEGACY_FIELDS.isdisjoint(card), LEGACY_FIELDS & set(card)
        assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "Bearer"
        assert {i["protocolVersion"] for i in card["supportedInterfaces"]} == {"1.0", "0.3"}
        assert "max-age" in r.headers["cache-control"] and r.headers["etag"] and r.headers["last-modified"]
        again = await h.get(f"{url}/.well-known/agent-card.json", headers={"If-None-Match": r.headers["etag"]})
        since = await h.get(
            f"{url}/.well-known/agent-card.json", headers={"If-Modified-Since": r.headers["last-modified"]}
        )
        assert again.status_code == since.status_code == 304 and not again.content


async def test_0_3_clients_get_the_0_3_card_shape_on_request(free_port, serving):
    port = free_port()
    async with serving(app(port), port) as url, httpx.AsyncClient() as h:
        by_path = (await h.get(f"{url}/.well-known/agent.json")).json()
        by_header = (await h.get(f"{url}/.well-known/agent-card.json", headers={"A2A-Version": "0.3"})).json()
    assert by_path == by_header
    legacy = AgentCardV03.model_validate(by_path)  # what an a2a-sdk 0.3 client parses
    assert legacy.url == f"http://127.0.0.1:{port}/" and legacy.protocol_version == "0.3"


@pytest.mark.parametrize(
    "part",
    [
        {"raw": "dGNr", "mediaType": "application/x-unsupported-tck-type"},
        {"text": "hi", "mediaType": "image/png"},
        {"data": {"a": 1}},
    ],
)
async def test_a_part_the_agent_cannot_read_is_content_type_not_supported(part, free_port, serving):
    port = free_port()
    async with serving(app(port), port) as url, httpx.AsyncClient() as h:
        error = (await h.post(f"{url}/", json=send("m-1", [part]), headers=V1)).json()["error"]
        ok = (await h.post(f"{url}/", json=send("m-2", [{"text": "hi", "mediaType": "text/plain"}]), headers=V1)).json()
    assert error["code"] == -32005 and "text/plain" in error["message"]
    assert ok["result"]["task"]["artifacts"][0]["parts"][0]["text"] == "graph: hi"


async def test_tck_mode_plays_scripted_message_ids_and_leaves_the_rest_to_the_graph(free_port, serving):
    port = free_port()
    hi = [{"text": "hi"}]
    async with serving(app(port, a2a_tck_mode=True), port) as url, httpx.AsyncClient() as h:
        data = (await h.post(f"{url}/", json=send("tck-artifact-data-1", hi), headers=V1)).json()["result"]["task"]
        reply = (await h.post(f"{url}/", json=send("tck-message-response-1", hi), headers=V1)).json()["result"]
        plain = (await h.post(f"{url}/", json=send("m-3", hi), headers=V1)).json()["result"]["task"]
    assert data["status"]["state"] == "TASK_STATE_COMPLETED"
    assert data["artifacts"][0]["parts"][0]["data"] == {"key": "value", "count": 42}
    assert reply["message"]["parts"][0]["text"] == "Direct message response"
    assert plain["artifacts"][0]["parts"][0]["text"] == "graph: hi"


async def test_tck_mode_is_off_by_default(free_port, serving):
    port = free_port()
    async with serving(app(port), port) as url, httpx.AsyncClient() as h:
        task = (await h.post(f"{url}/", json=send("tck-complete-task-1", [{"text": "hi"}]), headers=V1)).json()
    assert task["result"]["task"]["artifacts"][0]["parts"][0]["text"] == "graph: hi"


def test_the_stand_in_model_answers_at_once_without_tools():
    model = make_chat_model(AgentSettings(chat_model="stand-in"))
    assert isinstance(model, StandInChatModel) and not model.supports_tool_calling
    assert model.invoke("Question:   what is   LoRA?").content == "Question: what is LoRA?"


async def test_a_follow_up_on_an_input_required_task_completes_in_tck_mode(free_port, serving):
    port = free_port()
    async with serving(app(port, a2a_tck_mode=True), port) as url, httpx.AsyncClient() as h:
        first = (await h.post(f"{url}/", json=send("tck-input-required-1", [{"text": "hi"}]), headers=V1)).json()
        task_id = first["result"]["task"]["id"]
        follow = send("tck-complete-task-2", [{"text": "done"}])
        follow["params"]["message"]["taskId"] = task_id
        done = (await h.post(f"{url}/", json=follow, headers=V1)).json()["result"]["task"]
    assert first["result"]["task"]["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    assert done["id"] == task_id and done["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_wire_media_types_415_for_a_non_json_rpc_body_and_negotiated_rest_replies(free_port, serving):
    port = free_port()
    body = {"message": {"messageId": "m-4", "role": "ROLE_USER", "parts": [{"text": "hi"}]}}
    async with serving(app(port), port) as url, httpx.AsyncClient() as h:
        text = await h.post(f"{url}/", content=str(send("m-5", [])), headers={**V1, "Content-Type": "text/plain"})
        rest_text = await h.post(
            f"{url}/rest/message:send", content=json.dumps(body), headers={**V1, "Content-Type": "text/plain"}
        )
        plain = await h.post(f"{url}/rest/message:send", json=body, headers=V1)
        a2a = await h.post(f"{url}/rest/message:send", json=body, headers={**V1, "Accept": "application/a2a+json"})
    assert text.status_code == 415 and text.json()["error"]["code"] == -32005
    assert (
        rest_text.status_code == 415
        and rest_text.json()["error"]["details"][0]["reason"] == "CONTENT_TYPE_NOT_SUPPORTED"
    )
    assert plain.headers["content-type"] == "application/json" and plain.json()["task"]["id"]
    assert a2a.headers["content-type"] == "application/a2a+json"
