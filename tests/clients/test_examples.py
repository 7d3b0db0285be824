"""Each example client runs as a user would run it, against real servers on loopback, and checks what it shows."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types import AgentCapabilities, AgentCard, AgentInterface, AgentSkill, Part
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse

from .conftest import ROOT, TOKEN, free_port, in_thread, run_client, serve, server_env, text, tool_call

# ---- claude_desktop.py --------------------------------------------------------------------------------


def test_claude_desktop_merges_backs_up_and_keeps_other_servers(tmp_path: Path) -> None:
    config = tmp_path / "claude_desktop_config.json"
    original = {
        "mcpServers": {"other": {"command": "/usr/bin/other", "args": []}},
        "globalShortcut": "Ctrl+Space",
    }
    config.write_text(json.dumps(original))
    result = run_client(
        "claude_desktop.py",
        "--config",
        str(config),
        "--home",
        str(tmp_path / "home"),
        "--root",
        str(ROOT / "docs"),
    )
    assert result.returncode == 0, result.stderr
    written = json.loads(config.read_text())
    assert (
        written["globalShortcut"] == "Ctrl+Space" and written["mcpServers"]["other"] == original["mcpServers"]["other"]
    )
    for name, module in (
        ("ragtune-retrieval", "ragtune.servers.retrieval"),
        ("ragtune-finetune", "ragtune.servers.finetune"),
    ):
        entry = written["mcpServers"][name]
        assert Path(entry["command"]).is_absolute() and Path(entry["command"]).exists()
        assert entry["args"] == ["-m", module, "serve", "--transport", "stdio"]
        assert entry["env"]["RAGTUNE_HOME"] == str((tmp_path / "home").resolve())
    assert json.loads((tmp_path / "claude_desktop_config.json.bak").read_text()) == original


def test_claude_desktop_print_changes_nothing_and_refuses_broken_json(tmp_path: Path) -> None:
    config = tmp_path / "claude_desktop_config.json"
    printed = run_client("claude_desktop.py", "--config", str(config), "--print")
    assert printed.returncode == 0 and not config.exists()
    assert set(json.loads(printed.stdout)["mcpServers"]) == {"ragtune-retrieval", "ragtune-finetune"}
    config.write_text("{not json")
    refused = run_client("claude_desktop.py", "--config", str(config))
    assert refused.returncode != 0 and "not valid JSON" in refused.stderr
    assert config.read_text() == "{not json" and not (tmp_path / "claude_desktop_config.json.bak").exists()


def test_claude_desktop_entries_start_over_stdio(tmp_path: Path) -> None:
    result = run_client(
        "claude_desktop.py",
        "--config",
        str(tmp_path / "c.json"),
        "--print",
        "--verify",
        "--home",
        str(tmp_path / "home"),
        "--root",
        str(ROOT / "docs"),
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ragtune-retrieval:" in result.stdout and "retrieval_search" in result.stdout
    assert "ragtune-finetune:" in result.stdout and "finetune_create_job" in result.stdout


# ---- finetune_openai.py -------------------------------------------------------------------------------


def test_finetune_openai_uploads_creates_and_queues_a_job(finetune_url: str, tmp_path: Path) -> None:
    result = run_client(
        "finetune_openai.py",
        "--base-url",
        f"{finetune_url}/v1",
        "--token",
        TOKEN,
        "--until",
        "queued",
        "--timeout",
        "60",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "malformed file refused" in result.stdout and "line 2" in result.stdout
    assert "reached queued" in result.stdout


def test_finetune_openai_without_the_token_fails(finetune_url: str) -> None:
    result = run_client(
        "finetune_openai.py", "--base-url", f"{finetune_url}/v1", "--token", "wrong", "--until", "queued"
    )
    assert result.returncode != 0
    assert "Error code: 401" in result.stderr and "missing or wrong bearer token" in result.stderr, result.stderr[
        -2000:
    ]


# ---- openai_toolcalling.py ----------------------------------------------------------------------------


def _tool_then_answer(tool: str, arguments: dict[str, Any]):
    """Call `tool` first; once a tool result is in the conversation, answer by quoting it."""

    def respond(body: dict[str, Any]) -> dict[str, Any]:
        results = [m["content"] for m in body["messages"] if m["role"] == "tool"]
        return text(f"According to the tool: {results[-1][:300]}") if results else tool_call(tool, arguments)

    return respond


def test_openai_toolcalling_runs_a_real_tool_call_over_mcp(finetune_url: str, scripted_chat) -> None:
    situation = {"goal": "style", "n_examples": 500}
    chat = scripted_chat(_tool_then_answer("finetune_recommend_method", situation))
    result = run_client(
        "openai_toolcalling.py",
        "Which method fits 500 support answers?",
        "--mcp-url",
        f"{finetune_url}/mcp",
        "--token",
        TOKEN,
        "--base-url",
        chat.url,
        "--api-key",
        "x",
        "--model",
        "scripted",
        "--expect-tool",
        "finetune_recommend_method",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    first, second = chat.requests
    offered = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert "finetune_recommend_method" in offered and offered["finetune_recommend_method"]["parameters"]["properties"]
    tool_message = next(m for m in second["messages"] if m["role"] == "tool")
    assert tool_message["tool_call_id"] == "call_1"
    assert json.loads(tool_message["content"])["method"] == "lora_sft"  # the advisor's real answer
    assert "According to the tool" in result.stdout and "lora_sft" in result.stdout


def test_openai_toolcalling_fails_when_the_model_calls_no_tool(finetune_url: str, scripted_chat) -> None:
    chat = scripted_chat(lambda body: text("I know this without tools."))
    result = run_client(
        "openai_toolcalling.py",
        "anything",
        "--mcp-url",
        f"{finetune_url}/mcp",
        "--token",
        TOKEN,
        "--base-url",
        chat.url,
        "--model",
        "scripted",
    )
    assert result.returncode == 1 and "without calling any tool" in result.stderr


def test_openai_toolcalling_searches_the_retrieval_server(retrieval_url: str, scripted_chat) -> None:
    chat = scripted_chat(_tool_then_answer("retrieval_search", {"query": "What is LoRA?", "k": 3}))
    result = run_client(
        "openai_toolcalling.py",
        "What is LoRA?",
        "--mcp-url",
        f"{retrieval_url}/mcp",
        "--token",
        TOKEN,
        "--base-url",
        chat.url,
        "--model",
        "scripted",
        "--expect-tool",
        "retrieval_search",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    hits = json.loads(next(m for m in chat.requests[1]["messages"] if m["role"] == "tool")["content"])["hits"]
    assert any("low-rank" in hit["text"] for hit in hits)


# ---- langchain_rag.py ---------------------------------------------------------------------------------


def test_langchain_rag_extractive_answers_from_the_corpus(retrieval_url: str) -> None:
    result = run_client("langchain_rag.py", "What is LoRA?", "--mcp-url", f"{retrieval_url}/mcp", "--token", TOKEN)
    assert result.returncode == 0, result.stderr[-3000:]
    answer = result.stdout.split("answer:", 1)[1]
    assert "LoRA" in answer and ("[1]" in answer or "[2]" in answer)


def test_langchain_rag_passes_the_retrieved_context_to_the_model(retrieval_url: str, scripted_chat) -> None:
    def respond(body: dict[str, Any]) -> dict[str, Any]:
        system = body["messages"][0]["content"]
        return text("Quoting [1]: " + system.split("[1]", 1)[1][:400])

    chat = scripted_chat(respond)
    result = run_client(
        "langchain_rag.py",
        "What is LoRA?",
        "--mcp-url",
        f"{retrieval_url}/mcp",
        "--token",
        TOKEN,
        "--base-url",
        chat.url,
        "--model",
        "scripted",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (request,) = chat.requests
    assert "low-rank" in request["messages"][0]["content"] and request["messages"][-1]["content"] == "What is LoRA?"


# ---- a2a_cli.py ---------------------------------------------------------------------------------------


class EchoExecutor(AgentExecutor):
    """A minimal a2a-sdk agent, not ragtune's: works, then answers with an artifact echoing the request."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        task = context.current_task or new_task_from_user_message(context.message)
        await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        await updater.start_work(updater.new_agent_message([Part(text="thinking")]))
        await updater.add_artifact([Part(text=f"echo: {context.get_user_input()}")], name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        await TaskUpdater(event_queue, context.task_id, context.context_id).cancel()


class RequireToken(BaseHTTPMiddleware):
    """Bearer token on everything but the card."""

    async def dispatch(self, request, call_next):  # type: ignore[no-untyped-def]
        if request.url.path.startswith("/.well-known/") or request.headers.get("authorization") == f"Bearer {TOKEN}":
            return await call_next(request)
        return JSONResponse({"error": "missing or wrong bearer token"}, status_code=401)


def echo_app(advertised: str) -> Starlette:
    """A foreign A2A agent built with nothing but a2a-sdk, whose card advertises `advertised`."""
    card = AgentCard(
        name="echo",
        description="Echoes what it hears",
        version="1.0.0",
        supported_interfaces=[AgentInterface(protocol_binding="JSONRPC", protocol_version="1.0", url=advertised)],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id="echo", name="Echo", description="Repeats the message", tags=["test"], examples=["hello", "안녕"]
            )
        ],
    )
    handler = DefaultRequestHandler(agent_executor=EchoExecutor(), task_store=InMemoryTaskStore(), agent_card=card)
    return Starlette(
        routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, rpc_url="/")],
        middleware=[Middleware(RequireToken)],
    )


@pytest.fixture
def echo_agent() -> Iterator[str]:
    """The foreign agent on loopback, advertising its real address."""
    port = free_port()
    with in_thread(echo_app(f"http://127.0.0.1:{port}"), port):
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("advertised", ["0.0.0.0", "research.invalid"])
def test_a2a_cli_dials_the_given_host_when_the_card_advertises_an_unreachable_one(advertised: str) -> None:
    """A card may advertise 0.0.0.0 or a compose service name; the CLI dials the host it was given instead."""
    port = free_port()
    with in_thread(echo_app(f"http://{advertised}:{port}/"), port):
        result = run_client(
            "a2a_cli.py", f"http://localhost:{port}", "hi", "--token", TOKEN, "--expect-text", "echo: hi"
        )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"card advertises http://{advertised}:{port}/; using http://localhost:{port}/" in result.stdout


def test_a2a_cli_shows_a_foreign_agents_card(echo_agent: str) -> None:
    result = run_client("a2a_cli.py", echo_agent, "--card")
    assert result.returncode == 0, result.stderr
    assert "echo 1.0.0: Echoes what it hears" in result.stdout and "skill echo" in result.stdout
    assert '"안녕"' in result.stdout and "\\uc548" not in result.stdout  # --card prints Korean as Korean


@pytest.mark.parametrize("stream", [False, True])
def test_a2a_cli_sends_and_streams_with_a_token(echo_agent: str, stream: bool) -> None:
    message = f"hello {uuid.uuid4().hex[:6]}"
    result = run_client(
        "a2a_cli.py",
        echo_agent,
        message,
        "--token",
        TOKEN,
        "--expect",
        "completed",
        "--expect-text",
        f"echo: {message}",
        *(["--stream"] if stream else []),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert ": completed" in result.stdout
    if stream:
        assert "[working] thinking" in result.stdout  # a status update printed as it arrived


def test_a2a_cli_fails_without_the_token_or_on_a_wrong_answer(echo_agent: str) -> None:
    refused = run_client("a2a_cli.py", echo_agent, "hello")
    assert refused.returncode != 0 and "401" in refused.stderr
    wrong = run_client("a2a_cli.py", echo_agent, "hello", "--token", TOKEN, "--expect-text", "goodbye")
    assert wrong.returncode == 1 and "lacks 'goodbye'" in wrong.stderr


QA_LINES = "\n".join(
    json.dumps({"question": q, "answer": a})
    for q, a in [
        ("What is ragtune?", "A kit of MCP servers and A2A agents."),
        ("Which port is retrieval?", "8701."),
        ("Which port is fine-tuning?", "8702."),
    ]
)


def test_a2a_cli_talks_to_a_ragtune_agent(finetune_url: str, tmp_path: Path) -> None:
    port = free_port()
    env = {
        **server_env(tmp_path / "agent-home"),
        "RAGTUNE_FINETUNE_URL": f"{finetune_url}/mcp",
        "RAGTUNE_RESEARCH_AGENT_URL": "http://127.0.0.1:9",
    }  # the inline dataset needs no research agent
    with serve(
        ["-m", "ragtune.agents.finetune", "--port", str(port)],
        env,
        f"http://127.0.0.1:{port}/.well-known/agent-card.json",
    ):
        card = run_client("a2a_cli.py", f"http://127.0.0.1:{port}")
        assert card.returncode == 0, card.stderr
        assert "security: bearer" in card.stdout.lower()
        refused = run_client("a2a_cli.py", f"http://127.0.0.1:{port}", "hello")
        assert refused.returncode != 0 and "401" in refused.stderr
        advice = run_client(
            "a2a_cli.py",
            f"http://127.0.0.1:{port}",
            "--stream",
            "--token",
            TOKEN,
            "--expect",
            "completed",
            "--expect-text",
            "LoRA",
            "We have 500 support tickets answered in our format. Which fine-tuning method fits?",
        )
        assert advice.returncode == 0, advice.stderr[-3000:]
        assert "[working]" in advice.stdout and "lora-sft" in advice.stdout
        ask = run_client(
            "a2a_cli.py",
            f"http://127.0.0.1:{port}",
            "--stream",
            "--token",
            TOKEN,
            "--expect",
            "input-required",
            "Instruction-tune the model on these Q/A pairs for 2 steps:\n" + QA_LINES,
        )
        assert ask.returncode == 0, ask.stderr[-3000:]
        task_id, context_id = re.search(r"^task (\S+) in context (\S+): input-required", ask.stdout, re.M).groups()
        declined = run_client(
            "a2a_cli.py",
            f"http://127.0.0.1:{port}",
            "--stream",
            "--token",
            TOKEN,
            "--task-id",
            task_id,
            "--context-id",
            context_id,
            "--expect",
            "completed",
            "--expect-text",
            "Not launched",
            "no",
        )
        assert declined.returncode == 0, declined.stderr[-3000:]
        assert f"task {task_id} in context {context_id}: completed" in declined.stdout
