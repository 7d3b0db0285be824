"""After a job succeeds: show its tuned-vs-base evaluation and decide what to ask before the agents use it.

A model whose loss diverged or that scored worse than its base is refused by default, with the reasons said
plainly; only an explicit "promote anyway" overrides that. Any other model is promoted only on a "yes".
"""

from __future__ import annotations

import re
from typing import Any

from ragtune.jobs import Job
from ragtune.promotion import job_problems

OVERRIDE = re.compile(r"^\s*(promote anyway|use it anyway|그래도 (?:승격|사용))", re.I)
SCOPE = "all agents and conversations, until you demote it"


def problems(job: dict[str, Any], losses: list[float]) -> list[str]:
    """Return why this job's model should not be used (empty when nothing is wrong)."""
    return job_problems(Job.model_validate(job), losses)


def table(evaluation: dict[str, Any] | None) -> str:
    """Render the evaluation as a before/after table, its verdict and a sample answer."""
    if not evaluation:
        return "No evaluation: this job was not compared with its base model."
    if evaluation.get("status") == "skipped":
        return f"Evaluation skipped: {evaluation.get('reason') or 'no held-out data'}."
    source = evaluation.get("data_source") or {}
    lines = [
        f"Evaluation on {evaluation.get('examples', '?')} held-out examples ({source.get('type', 'held_out')}, "
        "never trained on):",
        "| metric | base | tuned | change | outcome |",
        "|---|---|---|---|---|",
    ]
    for row in evaluation.get("per_testing_criteria_results") or []:
        lines.append(
            f"| {row.get('testing_criteria')} | {_num(row.get('base'))} | {_num(row.get('tuned'))} | "
            f"{_num(row.get('delta'), signed=True)} | {row.get('outcome', '')} |"
        )
    lines.append(f"Verdict: {evaluation.get('verdict', 'inconclusive')}. {evaluation.get('summary') or ''}".rstrip())
    for sample in (evaluation.get("samples") or [])[:1]:
        lines += [
            f"Example: {sample.get('prompt')}",
            f"  reference: {sample.get('reference')}",
            f"  base:      {sample.get('base')}",
            f"  tuned:     {sample.get('tuned')}",
        ]
    return "\n".join(lines)


def question(job: dict[str, Any], found: list[str]) -> str:
    """Return what the agent asks after a successful job: promote it, or (with problems) why it will not."""
    head = f"Job {job['id']} succeeded: {job.get('fine_tuned_model')}.\n\n{table(job.get('evaluation'))}\n\n"
    if found:
        reasons = "\n".join(f"- {p}" for p in found)
        return (
            f"{head}I do not recommend using this model, and I will keep the agents on their base model:\n{reasons}\n"
            "Reply “promote anyway” if you still want the research agent to answer with it; anything else keeps "
            "the base model."
        )
    return (
        f"{head}Use this tuned model for the research agent's answers ({SCOPE})? Reply “yes” to promote it, "
        "anything else keeps the base model."
    )


def kept(job: dict[str, Any], found: list[str]) -> str:
    """Return the answer when the model is not promoted."""
    why = f" because {'; '.join(found)}" if found else ""
    return (
        f"Not promoted{why}. The agents keep answering with their base model; {job.get('fine_tuned_model')} stays "
        "available (finetune_promote_model, or POST /v1/models/{id}/promotion, promotes it later)."
    )


def promoted(result: dict[str, Any]) -> str:
    """Return the answer after a promotion, naming any warnings the user accepted."""
    accepted = result.get("accepted_warnings") or []
    note = f" despite: {'; '.join(accepted)}" if accepted else ""
    return (
        f"Promoted {result.get('model')}{note}. The research agent now answers with it ({SCOPE}: "
        "finetune_demote_model or DELETE /v1/models/{id}/promotion goes back to the base model)."
    )


def _num(value: Any, signed: bool = False) -> str:
    if not isinstance(value, int | float):
        return "-" if value is None else str(value)
    return f"{value:+.3f}" if signed else f"{value:.3f}"
