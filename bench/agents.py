"""Latency of one question through coordinator -> research -> MCP search -> answer, per hop, p50 over 20 questions.

Starts the kit like `agents/run.py` (embedded defaults, loopback), ingests docs/, then times each question from
the client's side using the arrival time of the relayed status updates, so each hop is visible:
A2A coordinator hop, A2A research hop, MCP search (inside the research agent), model time, and the rest.
Also times a bare MCP retrieval_search call from this process. Writes docs/benchmarks/agents.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# As a script, bench/ comes first on sys.path and this very file would shadow the `agents` package.
sys.path[:1] = [str(ROOT)]
demo = importlib.import_module("ragtune.agents.demo")
A2APeer = importlib.import_module("ragtune.agents.a2a_peer").A2APeer
Supervisor = importlib.import_module("ragtune.agents.launcher").Supervisor
McpTools = importlib.import_module("ragtune.agents.mcp_tools").McpTools
config = importlib.import_module("ragtune.config")
is_korean = importlib.import_module("ragtune.agents.research.evidence").is_korean

QUESTIONS = [
    "What is LoRA?",
    "When should I use RAG instead of fine-tuning?",
    "How does ragtune search Korean text?",
    "What does the worker do?",
    "How do I connect Claude Desktop?",
    "What is continued pretraining?",
    "When is DPO the right method?",
    "What is rejection sampling?",
    "How much memory does full fine-tuning need?",
    "What does the retrieval server store?",
    "How are fine-tuning jobs followed?",
    "What is the agent card?",
    "LoRA는 무엇인가요?",
    "RAG와 파인튜닝 중 무엇을 먼저 해야 하나요?",
    "한국어 검색은 어떻게 하나요?",
    "전체 파인튜닝은 언제 하나요?",
    "DPO는 언제 쓰나요?",
    "데이터가 자주 바뀌면 어떻게 하나요?",
    "ragtune은 무엇인가요?",
    "빠른 시작 방법을 알려 주세요",
]


def free_port() -> int:
    """Return a loopback port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HOPS = ["total", "coordinator A2A hop", "research A2A hop", "MCP search (in agent)", "model", "other"]


async def time_question(coordinator: A2APeer, question: str) -> dict[str, float]:
    """Time one question, splitting it at the arrival of the relayed status lines."""
    marks: dict[str, float] = {}
    t0 = time.perf_counter()
    async for ev in coordinator.stream(question, context_id=uuid.uuid4().hex):
        now = time.perf_counter() - t0
        text = ev.text
        if text.startswith("routing to"):
            marks.setdefault("routed", now)
        elif text.startswith("[research] retrieving"):
            marks.setdefault("retrieving", now)
        elif text.startswith("[research]") and " hits, " in text:
            marks.setdefault("retrieved", now)
        elif text.startswith("[research] writing"):
            marks.setdefault("writing", now)
        elif "writing" in marks and "written" not in marks and (text.startswith("[research]") or ev.kind == "answer"):
            marks["written"] = now
        if ev.kind == "answer":
            marks.setdefault("answered", now)
    total = time.perf_counter() - t0
    search = marks.get("retrieved", 0) - marks.get("retrieving", 0)
    model = marks.get("written", 0) - marks.get("writing", 0)
    coord = marks.get("routed", 0) + (total - marks.get("answered", total))
    research = marks.get("retrieving", 0) - marks.get("routed", 0)
    return {
        "total": total,
        "coordinator A2A hop": coord,
        "research A2A hop": research,
        "MCP search (in agent)": search,
        "model": model,
        "other": total - coord - research - search - model,
    }


async def run(
    n: int, settings: config.AgentSettings, rs: config.RetrievalSettings
) -> tuple[list[dict[str, float]], list[float]]:
    """Ingest, warm up, then time n questions and n bare MCP searches."""
    retrieval = McpTools(f"http://127.0.0.1:{rs.retrieval_port}/mcp", settings.token())
    await demo.ingest(retrieval, ROOT / "docs")
    coordinator = A2APeer(f"http://127.0.0.1:{settings.coordinator_port}", settings.token())
    await time_question(coordinator, "warm-up: what is ragtune?")
    rows, bare = [], []
    for i, q in enumerate((QUESTIONS * 2)[:n]):
        rows.append(await time_question(coordinator, q) | {"korean": is_korean(q)})
        t = time.perf_counter()
        await retrieval.call("retrieval_search", query=q, k=5)
        bare.append(time.perf_counter() - t)
        print(f"{i + 1:2d}/{n} {rows[-1]['total']:6.2f} s  {q}", flush=True)
    await coordinator.aclose()
    return rows, bare


def report(rows: list[dict[str, Any]], bare: list[float], n: int, command: str) -> str:
    """Render the p50 table as markdown."""
    p50 = {h: statistics.median(r[h] for r in rows) for h in HOPS}
    p90 = {h: sorted(r[h] for r in rows)[int(0.9 * (len(rows) - 1))] for h in HOPS}
    lines = [
        "# Agent latency: coordinator → research → MCP search → answer",
        "",
        f"Command: `{command}` (embedded defaults: SmolLM2-135M on CPU, e5-small embeddings, everything on loopback;",
        f"2-core CPU box shared with other work). {n} questions, half English (model writes, then a grounding check",
        "may fall back to extractive), half Korean (extractive, no model call). Times are seen by the client from the",
        "arrival of the coordinator's relayed status updates, so the hops add up to the total.",
        "",
        "| hop | p50 (s) | p90 (s) |",
        "| --- | ---: | ---: |",
        *[f"| {h} | {p50[h]:.3f} | {p90[h]:.3f} |" for h in HOPS],
        f"| bare MCP `retrieval_search` from a client (new session per call) | {statistics.median(bare):.3f} | "
        f"{sorted(bare)[int(0.9 * (len(bare) - 1))]:.3f} |",
        "",
        "By language (p50 s): "
        + ", ".join(
            f"{lang}: total {statistics.median(r['total'] for r in rs):.3f}, "
            f"model {statistics.median(r['model'] for r in rs):.3f}"
            for lang, rs in (
                ("English", [r for r in rows if not r["korean"]]),
                ("Korean", [r for r in rows if r["korean"]]),
            )
            if rs
        )
        + ".",
        "",
        "- *coordinator A2A hop*: request → the coordinator's first status, plus answer → end of stream.",
        "- *research A2A hop*: the coordinator's routing → the research agent's first status (card cached, one HTTP",
        "  stream).",
        "- *MCP search (in agent)*: the research agent's retrieval_search call over streamable HTTP, including the",
        "  MCP session set-up and the hybrid search itself.",
        "- *model*: the embedded model writing the English draft (zero for Korean questions).",
        "- *other*: relevance filtering, extractive selection, status relays.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Start the kit in a scratch RAGTUNE_HOME, measure, write the markdown report."""
    p = argparse.ArgumentParser(prog="python bench/agents.py", description=__doc__.splitlines()[0])
    p.add_argument("-n", type=int, default=20, help="questions to time (default 20)")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "agents.md"), help="markdown report path")
    args = p.parse_args(argv)
    home = Path(tempfile.mkdtemp(prefix="ragtune-bench-agents-"))
    os.environ["RAGTUNE_HOME"] = str(home)
    for name in (
        "RETRIEVAL",
        "FINETUNE",
        "COORDINATOR",
        "RESEARCH",
        "FINETUNE_AGENT",
    ):  # never clash with a demo
        os.environ[f"RAGTUNE_{name}_PORT"] = str(free_port())
    settings, rs, fs = config.AgentSettings(), config.RetrievalSettings(), config.FinetuneSettings()
    sup = Supervisor(demo.child_env(home, settings, rs, fs), home / "logs", settings.token())
    try:
        demo.start_all(sup, [s for s in demo.services(settings, rs, fs) if s.name != "worker"])
        rows, bare = asyncio.run(run(args.n, settings, rs))
    finally:
        sup.stop()
    text = report(rows, bare, args.n, f"python bench/agents.py -n {args.n}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
