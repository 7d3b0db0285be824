"""The launcher behind `python agents/run.py`: run the whole kit offline, then a scripted demo.

It starts two MCP servers, a worker and three A2A agents on loopback.

`python agents/run.py` (what `make demo` runs) ingests the user guides (docs/guide, docs/ko, README.md) into the
`guides` collection and talks to the coordinator over A2A: a Korean and an English question with citations,
fine-tuning advice, then the fine-tuning step of agents/demo_finetune.py: a small real LoRA job on clean Q/A
pairs from the guides, its before/after table, promotion on "yes", and a held-out question answered with the base
model and with the tuned one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

from ragtune.agents.a2a_peer import CARD_PATH, A2APeer
from ragtune.agents.corpus import GUIDES_COLLECTION, Corpus, CorpusError, choose_corpus, retrieval_roots
from ragtune.agents.demo_finetune import FinetuneService, finetune_demo, footprint
from ragtune.agents.launcher import LaunchError, Service, Supervisor
from ragtune.agents.mcp_tools import McpTools, ToolFailed
from rich.console import Console
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from ragtune.config import AgentSettings, FinetuneSettings, RetrievalSettings
from ragtune.paths import default_roots

console = Console(highlight=False)
SHOWN_CHARS = 1200  # a request carrying a dataset is shown cut, not as screens of JSONL
KOREAN_Q = "ragtune은 한국어 문서를 어떻게 검색하나요?"
ENGLISH_Q = "What is LoRA?"
ADVICE_Q = (
    "We have about 3,000 customer-support conversations and want the assistant to answer in our house style "
    "and tone. Our product facts live in docs that change every week. Should we fine-tune, and how?"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the launcher's flags."""
    p = argparse.ArgumentParser(
        prog="python agents/run.py",
        description="Start ragtune (retrieval + fine-tuning MCP servers, a worker, three A2A agents) on loopback, "
        "ingest the user guides, and run a scripted conversation through the coordinator.",
    )
    p.add_argument("--ask", metavar="TEXT", help="ask one question through the coordinator instead of the demo")
    p.add_argument("--interactive", action="store_true", help="a REPL: talk to the coordinator until Ctrl-D")
    p.add_argument(
        "--serve",
        action="store_true",
        help="keep serving; print the MCP and A2A URLs and the Claude Desktop entry, until Ctrl-C",
    )
    p.add_argument("--steps", type=int, default=20, help="SFT steps of the demo fine-tuning job (default 20)")
    p.add_argument(
        "--docs",
        help="folder to ingest and search instead of the user guides (docs/guide, docs/ko, README.md); it goes "
        "into its own collection, docs-<folder name>",
    )
    p.add_argument("--collection", help="collection to ingest into and search (default: guides, or docs-<folder>)")
    p.add_argument("--yes", action="store_true", help="answer 'yes' to confirmations in --ask/--interactive")
    return p.parse_args(argv)


def child_env(home: Path, settings: AgentSettings, rs: RetrievalSettings, fs: FinetuneSettings) -> dict[str, str]:
    """Return the environment every child gets: one RAGTUNE_HOME, the loopback URLs of each other, offline hub."""
    env = dict(os.environ)
    local = "http://127.0.0.1"
    env.update(
        RAGTUNE_HOME=str(home),
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        PYTHONUNBUFFERED="1",
        RAGTUNE_RETRIEVAL_URL=f"{local}:{rs.retrieval_port}/mcp",
        RAGTUNE_FINETUNE_URL=f"{local}:{fs.finetune_port}/mcp",
        RAGTUNE_RESEARCH_AGENT_URL=f"{local}:{settings.research_port}",
        RAGTUNE_FINETUNE_AGENT_URL=f"{local}:{settings.finetune_agent_port}",
    )
    env.setdefault("RAGTUNE_RETRIEVAL_ROOTS", default_roots())
    env.setdefault("RAGTUNE_FINETUNE_ROOTS", default_roots())
    return env


def services(
    settings: AgentSettings, rs: RetrievalSettings, fs: FinetuneSettings, collection: str = GUIDES_COLLECTION
) -> list[Service]:
    """Describe the six processes, in start order; the research agent searches the demo corpus's collection."""
    local = "http://127.0.0.1"
    return [
        Service(
            "retrieval",
            [
                "-m",
                "ragtune.servers.retrieval",
                "serve",
                "--transport",
                "http",
                "--port",
                str(rs.retrieval_port),
            ],
            rs.retrieval_port,
            f"{local}:{rs.retrieval_port}/health",
        ),
        Service(
            "finetune",
            [
                "-m",
                "ragtune.servers.finetune",
                "serve",
                "--transport",
                "http",
                "--port",
                str(fs.finetune_port),
            ],
            fs.finetune_port,
            f"{local}:{fs.finetune_port}/health",
        ),
        Service("worker", ["-m", "ragtune.servers.worker"]),
        Service(
            "research-agent",
            ["-m", "ragtune.agents.research", "--port", str(settings.research_port), "--collection", collection],
            settings.research_port,
            f"{local}:{settings.research_port}/health",
            f"{local}:{settings.research_port}{CARD_PATH}",
        ),
        Service(
            "finetune-agent",
            ["-m", "ragtune.agents.finetune", "--port", str(settings.finetune_agent_port)],
            settings.finetune_agent_port,
            f"{local}:{settings.finetune_agent_port}/health",
            f"{local}:{settings.finetune_agent_port}{CARD_PATH}",
        ),
        Service(
            "coordinator",
            ["-m", "ragtune.agents.coordinator", "--port", str(settings.coordinator_port)],
            settings.coordinator_port,
            f"{local}:{settings.coordinator_port}/health",
            f"{local}:{settings.coordinator_port}{CARD_PATH}",
        ),
    ]


def start_all(sup: Supervisor, svcs: list[Service]) -> None:
    """Start every service, then wait for each; the agents load the embedded model (~10-30 s)."""
    for svc in svcs:
        sup.start(svc)
    t0 = time.monotonic()
    with console.status("starting services…") as status:
        for svc in svcs:
            status.update(f"waiting for {svc.name} (loading the embedded model takes ~10-30 s)…")
            sup.wait_ready(svc)
            console.print(f"  [green]✓[/] {svc.name}" + (f"  [dim]127.0.0.1:{svc.port}[/]" if svc.port else ""))
    console.print(f"[dim]all services up in {time.monotonic() - t0:.0f} s; logs in {sup.logs}[/]")


async def ingest(retrieval: McpTools, corpus: Corpus) -> None:
    """Ingest the demo corpus into its collection through the retrieval MCP server, showing its progress."""
    with Progress(
        TextColumn("ingesting {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(corpus.label(), total=None)

        async def show(progress: float, total: float | None, message: str | None) -> None:
            bar.update(task, completed=progress, total=total)

        report = await retrieval.call(
            "retrieval_ingest_path",
            progress=show,
            paths=[str(p) for p in corpus.paths],
            collection=corpus.collection,
        )
    console.print(Text(f"✓ ingested: {report.get('message') or report}", style="green"))


async def converse(
    coordinator: A2APeer, text: str, *, auto_yes: bool | None = True, context_id: str | None = None
) -> str:
    """Send one request to the coordinator, print its live status, answer its confirmation, print the answer."""
    shown = text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}… ({len(text):,} characters in all)"
    console.print(Panel(Text(shown), title="you → coordinator", border_style="cyan"))
    context_id, task_id = context_id or uuid.uuid4().hex, None
    while True:
        last = answer = None
        try:
            with console.status("working…") as status:
                async for ev in coordinator.stream(text, context_id=context_id, task_id=task_id):
                    last = ev
                    if ev.kind == "answer":
                        answer = ev
                    elif ev.text and ev.state_name == "working":
                        status.update(ev.text)
                        console.print(Text(f"  {ev.text}", style="dim"))
        except asyncio.CancelledError:  # Ctrl-C: cancel the task, so the coordinator cancels any job it started
            if last is not None:
                await asyncio.shield(_cancel_quietly(coordinator, last.task_id))
            raise
        if last is None:
            raise RuntimeError("the coordinator answered nothing")
        if last.state_name != "input_required":
            break
        console.print(Panel(Text(last.text), title="coordinator asks", border_style="yellow"))
        reply = "yes" if auto_yes else console.input("[yellow]your answer> [/]")
        console.print(Text(f"you: {reply}", style="yellow"))
        text, task_id = reply, last.task_id
    body = answer.text if answer is not None else last.text or f"(task {last.state_name})"
    style = "green" if last.state_name == "completed" else "red"
    console.print(Panel(Text(body), title=f"coordinator ({last.state_name})", border_style=style))
    return last.state_name


async def _cancel_quietly(coordinator: A2APeer, task_id: str) -> None:
    try:
        async with asyncio.timeout(15):
            await coordinator.cancel(task_id)
    except Exception:  # already finished, or the services are going down anyway
        pass


async def demo(coordinator: A2APeer, steps: int, service: FinetuneService, home: Path) -> bool:
    """The scripted conversation, then the fine-tuning step (agents/demo_finetune.py); True when all went well."""
    started = time.monotonic()
    states = [await converse(coordinator, q) for q in (KOREAN_Q, ENGLISH_Q, ADVICE_Q)]
    tuned = await finetune_demo(console, coordinator, converse, service, steps)
    footprint(console, home, time.monotonic() - started)
    return all(s == "completed" for s in states) and tuned


def print_urls(settings: AgentSettings, rs: RetrievalSettings, fs: FinetuneSettings, home: Path) -> None:
    """Print where everything listens and a Claude Desktop entry for the two MCP servers (stdio)."""
    console.print(
        Panel(
            "\n".join(
                [
                    f"retrieval MCP   http://127.0.0.1:{rs.retrieval_port}/mcp",
                    f"finetune MCP    http://127.0.0.1:{fs.finetune_port}/mcp   REST http://127.0.0.1:{fs.finetune_port}/v1",
                    f"coordinator A2A http://127.0.0.1:{settings.coordinator_port}/.well-known/agent-card.json",
                    f"research A2A    http://127.0.0.1:{settings.research_port}/.well-known/agent-card.json",
                    f"finetune A2A    http://127.0.0.1:{settings.finetune_agent_port}/.well-known/agent-card.json",
                ]
            ),
            title="serving (Ctrl-C stops everything)",
        )
    )
    env = {
        "RAGTUNE_HOME": str(home),
        # Without the roots, Desktop's server could ingest nothing: it starts in an arbitrary folder (issue #12).
        "RAGTUNE_RETRIEVAL_ROOTS": ":".join(str(r.expanduser().resolve()) for r in rs.retrieval_roots),
        "RAGTUNE_FINETUNE_ROOTS": ":".join(str(r.expanduser().resolve()) for r in fs.finetune_roots),
        "HF_HUB_OFFLINE": "1",
    }
    entry = {
        "mcpServers": {
            f"ragtune-{name}": {
                "command": sys.executable,
                "args": ["-m", f"ragtune.servers.{name}", "serve", "--transport", "stdio"],
                "env": env,
            }
            for name in ("retrieval", "finetune")
        }
    }
    console.print("Claude Desktop (claude_desktop_config.json):")
    console.print_json(json.dumps(entry))


async def session(
    args: argparse.Namespace,
    settings: AgentSettings,
    rs: RetrievalSettings,
    fs: FinetuneSettings,
    home: Path,
    corpus: Corpus,
) -> int:
    """Ingest, then run the chosen mode against the running services."""
    await ingest(McpTools(f"http://127.0.0.1:{rs.retrieval_port}/mcp", settings.token()), corpus)
    coordinator = A2APeer(f"http://127.0.0.1:{settings.coordinator_port}", settings.token())
    try:
        if args.ask:
            return 0 if await converse(coordinator, args.ask, auto_yes=args.yes or None) == "completed" else 1
        if args.interactive:
            context = uuid.uuid4().hex
            while True:
                try:
                    text = console.input("[cyan]you> [/]").strip()
                except EOFError:
                    return 0
                if text:
                    await converse(coordinator, text, auto_yes=args.yes or None, context_id=context)
        if args.serve:
            print_urls(settings, rs, fs, home)
            await asyncio.Event().wait()
        service = FinetuneService(fs.finetune_port, settings.token())
        try:
            return 0 if await demo(coordinator, args.steps, service, home) else 1
        finally:
            await service.aclose()
    finally:
        await coordinator.aclose()


def main(argv: list[str] | None = None) -> int:
    """Start everything, run the session, stop everything (also on Ctrl-C and errors)."""
    args = parse_args(argv)
    os.environ.setdefault("RAGTUNE_HOME", str(Path(".ragtune").resolve()))
    home = Path(os.environ["RAGTUNE_HOME"]).resolve()
    os.environ["RAGTUNE_HOME"] = str(home)
    settings, rs, fs = AgentSettings(), RetrievalSettings(), FinetuneSettings()
    try:
        corpus = choose_corpus(args.docs, args.collection)
    except CorpusError as e:
        console.print(Text(str(e), style="red"))
        return 2
    console.rule("ragtune")
    console.print(f"data in {home}; corpus {corpus.label()}")
    env = child_env(home, settings, rs, fs)
    env["RAGTUNE_RETRIEVAL_ROOTS"] = retrieval_roots(corpus, os.environ.get("RAGTUNE_RETRIEVAL_ROOTS"))
    sup = Supervisor(env, home / "logs", settings.token())
    try:
        start_all(sup, services(settings, rs, fs, corpus.collection))
        return asyncio.run(session(args, settings, rs, fs, home, corpus))
    except LaunchError as e:
        console.print(Text(f"cannot start: {e}", style="red"))
        return 2
    except ToolFailed as e:
        console.print(Text(str(e), style="red"))
        return 1
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted[/]")
        return 130
    finally:
        with console.status("stopping every process…"):
            sup.stop()
