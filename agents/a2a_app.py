"""Serve a LangGraph graph as an A2A 1.0 agent (0.3 compat on): card, JSON-RPC + REST, task store, bearer token.

Named a2a_app (not a2a) so `python agents/run.py`, which puts agents/ on sys.path, cannot shadow the a2a-sdk.
The graph contract: input `{"request": text}`; nodes report progress with `get_stream_writer()({"status": str})`;
`interrupt({"question": str})` becomes input-required; the final state's `answer` becomes the "answer" artifact.
Tasks and checkpoints live in SQLite files under HOME, or in PostgreSQL with RAGTUNE_DATABASE_URL (agents/stores.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from a2a.helpers import new_task_from_user_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import (
    add_a2a_routes_to_fastapi,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.server.tasks import DatabaseTaskStore, TaskUpdater
from a2a.types import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    HTTPAuthSecurityScheme,
    Part,
    SecurityRequirement,
    SecurityScheme,
    StringList,
    TaskState,
)
from a2a.utils.errors import InvalidParamsError
from fastapi import FastAPI
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command
from ragtune.agents.a2a_card import card_routes
from ragtune.agents.a2a_media import WireMediaTypes, check_media_types
from ragtune.agents.stores import open_checkpointer, prepare_schema, prepare_tasks, task_engine
from ragtune.agents.tck_script import run_tck_script
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    SimpleUser,
)
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse, Response

from ragtune import __version__
from ragtune.bearer import bearer_token, token_matches
from ragtune.config import AgentSettings, check_bind

log = logging.getLogger(__name__)

OPEN_PATHS = ("/.well-known/", "/health")
INPUT_MODES = ["text/plain"]
GraphFactory = Callable[[BaseCheckpointSaver], Awaitable[CompiledStateGraph]]
CancelHook = Callable[[dict[str, Any]], Awaitable[None]]
TaskCancelHook = Callable[[str, dict[str, Any]], Awaitable[None]]
PeerCheck = Callable[[], Awaitable[dict[str, bool]]]
Script = Callable[[RequestContext, EventQueue], Awaitable[bool]]


@dataclass
class AgentSpec:
    """What makes one agent: its name, card text, skills and how to build its graph."""

    name: str
    description: str
    skills: list[AgentSkill]
    build_graph: GraphFactory
    on_cancel: CancelHook | None = None
    cleanup: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_cancel_task: TaskCancelHook | None = None  # (A2A task id, graph values): e.g. cancel the peer tasks it runs
    peers: PeerCheck | None = None  # which peers answer now; /health is ok only when every one does


class TaskFailed(Exception):
    """Raised in a graph node to end the A2A task as failed with this reason, shown to the user as is."""


def skill(id: str, name: str, description: str, tags: Sequence[str], examples: Sequence[str]) -> AgentSkill:
    """Build one card skill; every skill carries examples so a caller knows what to send."""
    return AgentSkill(id=id, name=name, description=description, tags=list(tags), examples=list(examples))


def build_card(spec: AgentSpec, base_url: str, token: str | None) -> AgentCard:
    """Return the agent card: 1.0 JSON-RPC and REST interfaces plus 0.3, bearer scheme when a token is set."""
    base = base_url.rstrip("/")
    card = AgentCard(
        name=spec.name,
        description=spec.description,
        version=__version__,
        supported_interfaces=[
            AgentInterface(protocol_binding="JSONRPC", protocol_version="1.0", url=f"{base}/"),
            AgentInterface(protocol_binding="HTTP+JSON", protocol_version="1.0", url=f"{base}/rest"),
            AgentInterface(protocol_binding="JSONRPC", protocol_version="0.3", url=f"{base}/"),
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=INPUT_MODES,
        default_output_modes=["text/plain"],
        skills=spec.skills,
    )
    if token:
        card.security_schemes["bearer"].CopyFrom(
            SecurityScheme(http_auth_security_scheme=HTTPAuthSecurityScheme(scheme="Bearer"))
        )
        card.security_requirements.append(SecurityRequirement(schemes={"bearer": StringList()}))
    return card


class BearerBackend(AuthenticationBackend):
    """Require `Authorization: Bearer <token>` on every RPC; the card and /health stay open for discovery."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser] | None:
        if self.token is None or conn.url.path.startswith(OPEN_PATHS):
            return None
        header = conn.headers.get("authorization", "")
        if not header.strip():
            raise AuthenticationError("missing bearer token: send 'Authorization: Bearer <RAGTUNE_API_TOKEN>'")
        if not token_matches(bearer_token(header), self.token):  # the parser REST and MCP use too (issue #12)
            raise AuthenticationError("wrong bearer token: use the value of RAGTUNE_API_TOKEN")
        return AuthCredentials(["authenticated"]), SimpleUser("ragtune")


def _auth_error(_conn: HTTPConnection, exc: AuthenticationError) -> Response:
    return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class GraphExecutor(AgentExecutor):
    """Run the agent's graph for each A2A turn: contextId is the LangGraph thread, interrupts are input-required."""

    def __init__(self, spec: AgentSpec) -> None:
        self.spec = spec
        self.graph: CompiledStateGraph | None = None
        self.script: Script | None = None  # the A2A TCK's scripted scenarios, when RAGTUNE_A2A_TCK_MODE is on
        self.canceling: set[str] = set()

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        check_media_types(context.message, INPUT_MODES)
        if self.script is not None and await self.script(context, event_queue):
            return
        text = context.get_user_input().strip()
        if not text:
            raise InvalidParamsError(message="empty message: send your request as a non-empty text part")
        task = context.current_task
        # A new task's stream starts with the Task; a follow-up's must not be re-sent (the SDK would keep the
        # stale input-required state and drop the user's message).
        if task is None:
            if context.message is None:
                raise InvalidParamsError(message="no message: send your request as a message with a text part")
            task = new_task_from_user_message(context.message)
            await event_queue.enqueue_event(task)
        updater = TaskUpdater(event_queue, task.id, task.context_id)
        if self.graph is None:
            await updater.failed(_msg(updater, f"{self.spec.name} is still starting; retry in a few seconds"))
            return
        config: RunnableConfig = {"configurable": {"thread_id": task.context_id, "task_id": task.id}}
        await updater.start_work()
        try:
            await self._run(text, config, updater)
        except Exception as e:  # a turn's failure is reported on the task, never as a bare -32603
            if task.id in self.canceling:  # the cancel already ended the task
                return
            if isinstance(e, TaskFailed):
                log.warning("%s: task %s failed: %s", self.spec.name, task.id, e)
                await updater.failed(_msg(updater, str(e)))
                return
            log.exception("%s failed", self.spec.name)
            await updater.failed(_msg(updater, f"{self.spec.name} failed: {type(e).__name__}: {e}"))
        finally:
            self.canceling.discard(task.id)

    async def _run(self, text: str, config: RunnableConfig, updater: TaskUpdater) -> None:
        assert self.graph is not None
        state = await self.graph.aget_state(config)
        waiting = bool(state and any(t.interrupts for t in state.tasks))
        payload: Any = Command(resume=text) if waiting else {"request": text}
        async for mode, chunk in self.graph.astream(payload, config, stream_mode=["custom", "updates"]):
            if mode == "custom" and isinstance(chunk, dict) and chunk.get("status"):
                await updater.update_status(TaskState.TASK_STATE_WORKING, _msg(updater, str(chunk["status"])))
            elif mode == "updates" and isinstance(chunk, dict) and "__interrupt__" in chunk:
                question = chunk["__interrupt__"][0].value
                question = question.get("question", str(question)) if isinstance(question, dict) else str(question)
                await updater.requires_input(_msg(updater, question))
                return
        values = (await self.graph.aget_state(config)).values
        await updater.add_artifact([Part(text=str(values.get("answer", "")))], name="answer")
        await updater.complete()

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        task_id, context_id = context.task_id, context.context_id
        if task_id is None or context_id is None:  # the SDK loads the task before it calls cancel
            raise InvalidParamsError(message="cancel names no task: pass the id of the task to cancel")
        self.canceling.add(task_id)
        if self.graph is not None and (self.spec.on_cancel or self.spec.on_cancel_task):
            config: RunnableConfig = {"configurable": {"thread_id": context_id}}
            try:
                values = (await self.graph.aget_state(config)).values
                if self.spec.on_cancel:
                    await self.spec.on_cancel(values)
                if self.spec.on_cancel_task:
                    await self.spec.on_cancel_task(task_id, values)
            except Exception:
                log.exception("cancel hook of %s failed", self.spec.name)
        updater = TaskUpdater(event_queue, task_id, context_id)
        await updater.cancel(_msg(updater, "canceled"))


def _msg(updater: TaskUpdater, text: str) -> Any:
    return updater.new_agent_message([Part(text=text)])


def build_app(spec: AgentSpec, settings: AgentSettings, base_url: str) -> FastAPI:
    """Return the agent's FastAPI app; its lifespan opens the checkpointer (SQLite or PostgreSQL), builds the graph."""
    home = settings.data_path("agents")
    home.mkdir(parents=True, exist_ok=True)
    slug = spec.name.removeprefix("ragtune-")
    engine = task_engine(settings, slug, home)
    task_store = DatabaseTaskStore(engine)
    token = settings.token()
    card = build_card(spec, base_url, token)
    executor = GraphExecutor(spec)
    executor.script = run_tck_script if settings.a2a_tck_mode else None
    handler = DefaultRequestHandler(agent_executor=executor, task_store=task_store, agent_card=card)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            prepare_schema(settings, slug)
            await prepare_tasks(engine, task_store)
            saver = await stack.enter_async_context(open_checkpointer(settings, slug, home))
            executor.graph = await spec.build_graph(saver)
            yield
            for close in spec.cleanup:
                await close()
        await engine.dispose()

    app = FastAPI(title=spec.name, lifespan=lifespan)
    add_a2a_routes_to_fastapi(
        app,
        agent_card_routes=card_routes(card),
        jsonrpc_routes=create_jsonrpc_routes(handler, rpc_url="/", enable_v0_3_compat=True),
        rest_routes=create_rest_routes(handler, path_prefix="/rest", enable_v0_3_compat=True),
    )

    @app.get("/health")
    async def health() -> JSONResponse:
        """Readiness: the graph is built and every peer answers its card (503 otherwise)."""
        body: dict[str, Any] = {"ok": executor.graph is not None, "agent": spec.name}
        if spec.peers is not None:
            body["peers"] = await spec.peers()
            body["ok"] = body["ok"] and all(body["peers"].values())
        return JSONResponse(body, status_code=200 if body["ok"] else 503)

    app.add_middleware(WireMediaTypes, jsonrpc_path="/", rest_prefix="/rest")
    app.add_middleware(AuthenticationMiddleware, backend=BearerBackend(token), on_error=_auth_error)
    return app


def serve(app: FastAPI, host: str, port: int, settings: AgentSettings) -> None:
    """Run the app with uvicorn, refusing a non-loopback bind without a token."""
    check_bind(host, settings)
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level.lower(), lifespan="on")
