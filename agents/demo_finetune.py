"""The demo's fine-tuning step: clean Q/A pairs from the user guides, some held out, a real LoRA job through the
coordinator (which shows the tuned-vs-base table and asks before promoting), then one held-out question answered
through the coordinator with the base model and again with the tuned one.

The pairs come from `agents/research/qa_pairs.py` (real questions, doc sentences as answers); the fine-tuning
agent holds out the same pairs the demo does (`split_records` = `split_holdout`), so the held-out question was
never trained on. A loss that does not fall is said plainly, and a model that is worse is not promoted.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from ragtune.agents.a2a_peer import A2APeer
from ragtune.agents.research.qa_pairs import QAPair, build_pairs, guide_documents, split_holdout
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ragtune.paths import guides
from ragtune.promotion import PROMOTION_PATH

GUIDES = guides()
TRAIN_REQUEST = "Instruction-tune the model on these {n} question/answer pairs from the user guides for {steps} steps:"
Converse = Callable[..., Awaitable[str]]


class FinetuneService:
    """The few REST calls the demo makes to the fine-tuning service (promotion state, the job, its losses)."""

    def __init__(self, port: int, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30)

    async def promoted(self) -> str | None:
        """Return the promoted model, if any."""
        return (await self._get(PROMOTION_PATH)).get("model")

    async def demote(self, model: str) -> None:
        """Send the agents back to their base model."""
        (await self.http.delete(f"/v1/models/{model}/promotion")).raise_for_status()

    async def latest_job(self) -> dict[str, Any]:
        """Return the newest fine-tuning job."""
        return (await self._get("/v1/fine_tuning/jobs", limit=1))["data"][0]

    async def losses(self, job_id: str) -> list[float]:
        """Return the job's logged training losses, oldest first."""
        events = (await self._get(f"/v1/fine_tuning/jobs/{job_id}/events", limit=100))["data"]
        return [float(e["data"]["train_loss"]) for e in reversed(events) if "train_loss" in (e.get("data") or {})]

    async def _get(self, path: str, **params: Any) -> dict[str, Any]:
        response = await self.http.get(path, params=params)
        response.raise_for_status()
        return response.json()

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()


def show_pairs(console: Console, pairs: list[QAPair], held: list[QAPair]) -> None:
    """Print how many pairs were built per language and a few of them."""
    count = {lang: sum(p.lang == lang for p in pairs) for lang in ("en", "ko")}
    table = Table(title=f"{len(pairs)} Q/A pairs from the guides (en {count['en']}, ko {count['ko']})", show_lines=True)
    table.add_column("question")
    table.add_column("answer (a sentence of the guide)")
    table.add_column("held out")
    samples = [p for p in pairs if p.lang == "en"][:2] + [p for p in pairs if p.lang == "ko"][:2]
    for p in samples + held[:2]:
        table.add_row(p.question, p.answer[:160], "yes" if p in held else "")
    console.print(table)
    console.print(f"[dim]{len(held)} pairs held out: never trained on, used for the evaluation and the check below[/]")


def loss_line(losses: list[float]) -> tuple[bool, str]:
    """Say whether the training loss fell (mean of the first vs the last few logged steps)."""
    if len(losses) < 2:
        return False, "the job logged fewer than two losses: cannot tell whether training helped"
    k = min(5, max(1, len(losses) // 4))
    start, end = sum(losses[:k]) / k, sum(losses[-k:]) / k
    if end < start:
        return True, f"training loss fell from {start:.2f} to {end:.2f} over {len(losses)} logged steps"
    return False, f"THE TRAINING LOSS DID NOT FALL ({start:.2f} -> {end:.2f}): this run taught the model nothing useful"


async def ask_once(console: Console, coordinator: A2APeer, question: str, label: str) -> str:
    """Ask one question through the coordinator and print the answer under `label`."""
    reply = await coordinator.ask(question)
    console.print(Panel(Text(reply.text), title=f"{label} ({reply.state_name})", border_style="magenta"))
    return reply.text


async def finetune_demo(
    console: Console, coordinator: A2APeer, converse: Converse, service: FinetuneService, steps: int
) -> bool:
    """Run the fine-tuning step; return True when the job trained, its loss fell and the turns completed."""
    console.rule("fine-tuning on clean Q/A pairs from the guides")
    pairs = build_pairs(guide_documents(GUIDES))
    _, held = split_holdout(pairs)
    show_pairs(console, pairs, held)
    if previous := await service.promoted():  # a promotion from an earlier run would make "before" a tuned answer
        await service.demote(previous)
        console.print(f"[dim]demoted {previous} from an earlier run: the agents start on their base model[/]")
    check = next(p for p in held if p.lang == "en")
    before = await ask_once(console, coordinator, check.question, f"held-out question, base model: {check.question}")
    body = "\n".join(json.dumps(p.record(), ensure_ascii=False) for p in pairs)
    state = await converse(coordinator, f"{TRAIN_REQUEST.format(n=len(pairs), steps=steps)}\n{body}")
    job = await service.latest_job()
    fell, line = loss_line(await service.losses(job["id"]))
    console.print(
        Text(f"{'✓' if fell else '✗'} job {job['id']} {job['status']}: {line}", style="green" if fell else "red")
    )
    promoted = await service.promoted()
    if not promoted:
        console.print(
            Text("The tuned model was not promoted: the research agent keeps its base model.", style="yellow")
        )
        return state == "completed" and fell
    after = await ask_once(console, coordinator, check.question, f"same question, promoted model {promoted}")
    compare(console, check, before, after)
    console.print(
        f"[dim]{promoted} stays promoted for every agent until demoted (DELETE /v1/models/<id>/promotion).[/]"
    )
    return state == "completed" and fell


def compare(console: Console, check: QAPair, before: str, after: str) -> None:
    """Print the guide's answer and the two answers side by side (first lines only)."""
    table = Table(title=f"held-out: {check.question}", show_lines=True)
    table.add_column("the guide says")
    table.add_column("base model")
    table.add_column("tuned model")
    table.add_row(check.answer, _first(before), _first(after))
    console.print(table)


def _first(text: str, lines: int = 4) -> str:
    """Return the answer's first lines and its mode line, which says which model wrote it (or why none did)."""
    rows = text.strip().splitlines()
    mode = [r for r in rows if r.startswith("[mode:")][-1:]
    return "\n".join(rows[:lines] + (["…", *mode] if mode and mode[0] not in rows[:lines] else []))


def footprint(console: Console, home: Path, seconds: float) -> None:
    """Print how long the scripted demo took and how much disk the install and the data use."""
    sizes = {name: _du(path) for name, path in (("venv", Path(sys.prefix)), (str(home), home))}
    disk = ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in sizes.items())
    console.print(f"[dim]demo conversation took {seconds / 60:.1f} min; disk: {disk}[/]")


def _du(path: Path) -> int:
    """Return the bytes under `path` (files only, links not followed)."""
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
    return total
