"""Turn a job's evaluation and loss curve into what users read: the summary event, warnings and EVAL.md.

No torch: the child calls `review` after a recipe returns, so a job never ends silently worse or diverged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import metrics
from .base import RunCallbacks


def read_losses(metrics_file: Path) -> list[float]:
    """Training losses in step order (the last row per step wins, so a resumed run counts once)."""
    by_step: dict[int, float] = {}
    if metrics_file.exists():
        for line in metrics_file.read_text().splitlines():
            row = json.loads(line) if line.strip() else {}
            if row.get("train_loss") is not None:
                by_step[int(row.get("step") or 0)] = float(row["train_loss"])
    return [by_step[s] for s in sorted(by_step)]


def _fmt(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:.3g}"


def skipped(reason: str, source: dict[str, Any] | None = None) -> dict[str, Any]:
    """An evaluation that did not run, and why (its verdict is always inconclusive)."""
    return {
        "status": "skipped",
        "reason": reason,
        "data_source": source or {},
        "examples": 0,
        "per_testing_criteria_results": [],
        "result_counts": {"total": 0, "passed": 0, "failed": 0, "errored": 0},
        "verdict": "inconclusive",
        "samples": [],
    }


def summary_line(ev: dict[str, Any]) -> str:
    """One line: the primary metrics before -> after, and the verdict."""
    if ev.get("status") != "completed":
        return f"evaluation skipped: {ev.get('reason')}"
    primary = metrics.PRIMARY.get(_kind(ev), ())
    rows = [r for r in ev["per_testing_criteria_results"] if r["testing_criteria"] in primary]
    parts = ", ".join(f"{r['testing_criteria']} {_fmt(r['base'])} -> {_fmt(r['tuned'])}" for r in rows)
    return f"evaluation on {ev['examples']} held-out examples (base -> tuned): {parts}; verdict {ev['verdict']}"


def _kind(ev: dict[str, Any]) -> str:
    names = {r["testing_criteria"] for r in ev.get("per_testing_criteria_results", [])}
    if "ndcg@10" in names:
        return "retrieval"
    return "preference" if "preference_accuracy" in names else "chat" if "token_f1" in names else "text"


def find_warnings(losses: list[float], ev: dict[str, Any]) -> list[dict[str, str]]:
    """The warnings a job ends with: a diverged loss curve, a tuned model worse than its base."""
    found = []
    why = metrics.loss_divergence(losses)
    if why:
        found.append({"code": "loss_diverged", "message": f"loss diverged: {why}; lower the learning rate"})
    if ev.get("verdict") == "worse":
        worse = [r["testing_criteria"] for r in ev["per_testing_criteria_results"] if r["outcome"] == "worse"]
        found.append(
            {
                "code": "tuned_worse_than_base",
                "message": f"the tuned model is worse than the base on held-out data ({', '.join(worse)}); "
                "do not use it without checking EVAL.md",
            }
        )
    return found


def markdown(ev: dict[str, Any], warnings: list[dict[str, str]]) -> str:
    """EVAL.md: the before/after table, the verdict, the warnings and a few answers side by side."""
    lines = [f"# Evaluation of {ev.get('fine_tuned_model') or ev.get('job_id')}", "", ev["summary"], ""]
    if ev.get("status") == "completed":
        src = ev["data_source"]
        data = "the validation file"
        if src.get("type") == "held_out":
            data = f"{src['count']} of {src['of']} training records held out (seed {src['seed']}), never trained on"
        lines += [f"Data: {data}; trained on {ev.get('train_examples')} examples.", ""]
        if "corpus" in src:  # retrieval (embedding jobs): what the held-out queries were ranked against
            lines[-1:] = [
                f"Ranked against {src['corpus']} passages ({src.get('collection_chunks', 0)} from the "
                "collection); the samples below show each embedder's first-ranked passage.",
                "",
            ]
        lines += ["| metric | base | tuned | delta | outcome |", "| --- | --- | --- | --- | --- |"]
        for r in ev["per_testing_criteria_results"]:
            cells = [r["testing_criteria"], _fmt(r["base"]), _fmt(r["tuned"]), _fmt(r["delta"]), r["outcome"]]
            lines.append("| " + " | ".join(cells) + " |")
        c = ev["result_counts"]
        lines += [
            "",
            f"Per example: {c['passed']} of {c['total']} better with the tuned model, {c['errored']} errored.",
        ]
    if warnings:
        lines += ["", "## Warnings", "", *(f"- `{w['code']}`: {w['message']}" for w in warnings)]
    if ev.get("samples"):
        lines += ["", "## Answers", "", "| question | reference | base | tuned |", "| --- | --- | --- | --- |"]
        lines += [
            f"| {_cell(s['prompt'])} | {_cell(s['reference'])} | {_cell(s['base'])} | {_cell(s['tuned'])} |"
            for s in ev["samples"]
        ]
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def review(
    out_dir: Path, ev: dict[str, Any] | None, ids: dict[str, Any], callbacks: RunCallbacks
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Finish the evaluation object, find the warnings, report both as events and write EVAL.md."""
    ev = {"object": "fine_tuning.job.evaluation", **ids, **(ev or skipped("the recipe reported no evaluation"))}
    ev["summary"] = summary_line(ev)
    warnings = find_warnings(read_losses(out_dir / "metrics.jsonl"), ev)
    rows = {
        r["testing_criteria"]: {k: r[k] for k in ("base", "tuned", "delta")}
        for r in ev.get("per_testing_criteria_results", [])
    }
    data = {"kind": "eval", "verdict": ev["verdict"], "examples": ev.get("examples", 0), "metrics": rows}
    callbacks.event(ev["summary"], level="warn" if ev["verdict"] == "worse" else "info", data=data)
    for w in warnings:
        callbacks.event(w["message"], level="warn", data={"kind": "warning", **w})
    (out_dir / "EVAL.md").write_text(markdown(ev, warnings))
    return ev, warnings
