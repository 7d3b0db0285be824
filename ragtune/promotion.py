"""Which tuned model the agents answer with: one global choice, kept in the fine-tuning service's job store.

Promotion is global: once a tuned model is promoted, every agent process and every conversation (A2A context)
answers with it until it is demoted (or its job's weights are deleted). Only the fine-tuning service writes the
state (table `promotion` in the job store); agents read it over HTTP (`GET /v1/ragtune/promotion`), so it holds
across processes and hosts. A model whose evaluation says "worse" or whose loss diverged is refused unless the
caller accepts the warnings explicitly (`accept_warnings=True`), so nothing promotes such a model silently.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import BaseModel, Field, SecretStr

from ragtune.jobs import BaseJobStore as JobStore
from ragtune.jobs import Job, JobStatus, UnknownId

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

    from ragtune.config import AgentSettings

log = logging.getLogger(__name__)

SLOT = "agents"  # one global slot today; a per-context slot would be another row
PROMOTION_PATH = "/v1/ragtune/promotion"
DIVERGE_RATIO = 1.5  # the worker's rule (docs/dev/CONTRACTS.md, evaluation and warnings)


class Promotion(BaseModel):
    """The tuned model every agent answers with, and the warnings its promoter accepted."""

    object: Literal["ragtune.promotion"] = "ragtune.promotion"
    model: str
    job_id: str
    promoted_at: int
    scope: Literal["global"] = "global"
    accepted_warnings: list[str] = Field(default_factory=list)


class PromotionRefused(ValueError):
    """Raised when a model may not be promoted as asked (worse than its base, diverged, not a finished job)."""


class ModelNotFound(PromotionRefused):
    """Raised when no fine-tuning job produced the named model."""


# --- service side: the state in the job store --------------------------------------------------------------
def promote(store: JobStore, model_id: str, *, accept_warnings: bool = False) -> Promotion:
    """Make `model_id` the model every agent answers with; refuse a worse or diverged one unless accepted."""
    job = promotable_job(store, model_id)
    problems = promotion_problems(store, job)
    if problems and not accept_warnings:
        raise PromotionRefused(
            f"not promoting {model_id}: {'; '.join(problems)}. Pass accept_warnings=true to promote it anyway"
        )
    row = Promotion(model=model_id, job_id=job.id, promoted_at=int(time.time()), accepted_warnings=problems)
    store.set_promotion(SLOT, row.model, row.job_id, row.promoted_at, "\n".join(problems))
    return row


def demote(store: JobStore, model_id: str | None = None) -> Promotion | None:
    """Go back to the base model; with `model_id`, only if that model is the promoted one. Return what was removed."""
    current = promoted(store)
    if current is None or (model_id is not None and current.model != model_id):
        return None
    store.clear_promotion(SLOT)
    return current


def promoted(store: JobStore) -> Promotion | None:
    """Return the promoted model, dropping a promotion whose job no longer exists or no longer succeeded."""
    row = store.get_promotion(SLOT)
    if row is None:
        return None
    try:
        job = store.get_job(row["job_id"])
    except UnknownId:
        job = None
    if job is None or job.status != JobStatus.succeeded or job.fine_tuned_model != row["model"]:
        log.warning("promoted model %s is gone; the agents use their base model again", row["model"])
        store.clear_promotion(SLOT)
        return None
    accepted = [w for w in row["accepted_warnings"].split("\n") if w]
    return Promotion(
        model=row["model"], job_id=row["job_id"], promoted_at=row["promoted_at"], accepted_warnings=accepted
    )


def promotable_job(store: JobStore, model_id: str) -> Job:
    """Return the succeeded job that produced `model_id` (`ft:...:<job id>`), or say why there is none."""
    job_id = model_id.rsplit(":", 1)[-1]
    try:
        job = store.get_job(job_id)
    except UnknownId:
        job = None
    if job is None or job.fine_tuned_model != model_id:
        raise ModelNotFound(f"no succeeded fine-tuning job produced {model_id!r}; list models to see the names")
    if job.status != JobStatus.succeeded:
        raise PromotionRefused(f"job {job.id} is {job.status.value}; only a succeeded job's model can be promoted")
    return job


def promotion_problems(store: JobStore, job: Job) -> list[str]:
    """List, in plain words, why a job's model should not be used (its warnings, verdict and logged losses)."""
    events = store.list_events(job.id, limit=100_000, order="asc", type="metrics")
    return job_problems(job, [float(e.data["train_loss"]) for e in events if e.data and "train_loss" in e.data])


def job_problems(job: Job, losses: Sequence[float] = ()) -> list[str]:
    """List why a job's model should not be used: the worker's warnings, a "worse" verdict, a diverged loss."""
    warnings = [w if isinstance(w, dict) else {"message": str(w)} for w in getattr(job, "warnings", None) or []]
    problems = [str(w.get("message") or w.get("code")) for w in warnings]
    codes = {w.get("code") for w in warnings}
    if "tuned_worse_than_base" not in codes and _evaluation(job).get("verdict") == "worse":
        problems.append("the tuned model scored worse than its base model on held-out data")
    if "loss_diverged" not in codes and (why := loss_divergence(losses)):
        problems.insert(0, why)
    return list(dict.fromkeys(problems))


def loss_divergence(losses: Sequence[float]) -> str | None:
    """Say why a training loss curve diverged (the worker's rule: non-finite, or last k > 1.5x first k), else None."""
    if not losses:
        return None
    if any(not math.isfinite(x) for x in losses):
        return "the training loss became NaN or infinite"
    k = min(5, max(1, len(losses) // 4))
    start, end = sum(losses[:k]) / k, sum(losses[-k:]) / k
    if end > DIVERGE_RATIO * start:
        return f"the training loss diverged: it rose from {start:.2f} to {end:.2f} instead of falling"
    return None


def _evaluation(job: Job) -> dict[str, Any]:
    """Return the job's tuned-vs-base evaluation as a dict ({} before the worker has evaluated it)."""
    value = getattr(job, "evaluation", None)
    if isinstance(value, BaseModel):
        return value.model_dump()
    return dict(value) if isinstance(value, dict) else {}


# --- agent side: read the state over HTTP, talk to the served model ----------------------------------------
def service_url(settings: AgentSettings) -> str:
    """Return the fine-tuning service's base URL (its MCP URL without `/mcp`)."""
    url = settings.finetune_url.rstrip("/")
    return url[: -len("/mcp")] if url.endswith("/mcp") else url


def current_model(settings: AgentSettings, *, timeout: float = 5.0) -> str | None:
    """Return the promoted tuned model's name, or None (base model) when none is promoted or the service is down."""
    headers = {"Authorization": f"Bearer {settings.token()}"} if settings.token() else {}
    try:
        response = httpx.get(service_url(settings) + PROMOTION_PATH, headers=headers, timeout=timeout)
    except httpx.HTTPError as e:
        log.warning(
            "fine-tuning service at %s unreachable (%s); answering with the base model", settings.finetune_url, e
        )
        return None
    if response.status_code == 404:
        return None
    response.raise_for_status()
    body = response.json()
    return body.get("model") if isinstance(body, dict) else None


def served_chat_model(settings: AgentSettings, model_id: str) -> BaseChatModel:
    """Return a chat model that calls `model_id` on the fine-tuning service's OpenAI-compatible /v1."""
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model_id,
        base_url=service_url(settings) + "/v1",
        api_key=SecretStr(settings.token() or "unused"),
        temperature=0,
        max_completion_tokens=settings.chat_max_tokens,
        timeout=120,
    )
