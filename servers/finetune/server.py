"""MCP tools of the fine-tuning service: datasets, advice, jobs (each job also a resource).

Every tool calls the same `FinetuneService` as the REST API. Tools enqueue and report; they never train.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, Literal, TypeVar

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field
from ragtune.servers.finetune import advisor
from ragtune.servers.finetune.http import mcp_auth_kwargs, public_url
from ragtune.servers.finetune.promotion_tools import register_promotion_tools
from ragtune.servers.finetune.service import FinetuneService, JobRequest, ServiceError
from ragtune.servers.finetune.serving.tool import register_chat_tool
from ragtune.servers.not_found import resource_not_found

from ragtune import __version__
from ragtune.config import FinetuneSettings
from ragtune.datasets import format_report
from ragtune.jobs import Checkpoint, Job, JobEvent, JobStatus

R = TypeVar("R")
JobId = Annotated[str, Field(description="Job id (ftjob-...), from finetune_create_job or finetune_list_jobs")]
READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=False)
INSTRUCTIONS = (
    "Fine-tuning jobs on ragtune's worker. Typical flow: finetune_recommend_method (is fine-tuning even the "
    "right tool?), finetune_validate_dataset, finetune_upload_dataset -> file id, finetune_create_job -> job id, "
    "then finetune_get_job / finetune_job_events until it succeeds. Jobs run on separate workers; tools return "
    "at once."
)


class Problem(BaseModel):
    """One problem in a dataset, with its line number (0 = the whole file)."""

    line: int
    message: str


class DatasetFile(BaseModel):
    """An uploaded, validated dataset."""

    id: str = Field(description="Pass this as training_file to finetune_create_job")
    filename: str
    bytes: int
    created_at: int
    format: str | None = Field(description="chat, text, preference or pairs")
    report: dict[str, Any]


class EmbeddingPairs(DatasetFile):
    """A label-free pairs file built from a retrieval collection (for method embedding)."""

    collection: str
    chunks: int
    pairs: int
    by_source: dict[str, int] = Field(description="pairs per source: title, sentence, question")


class Validation(BaseModel):
    """The result of checking a dataset without storing it."""

    valid: bool
    format: str | None = None
    examples: int = 0
    summary: str
    problems: list[Problem] = Field(default_factory=list)
    report: dict[str, Any] | None = None


class JobView(BaseModel):
    """A job with its latest training metrics and what to do next."""

    job: Job
    latest_metrics: dict[str, Any] | None = None
    checkpoints: int = 0
    next_step: str


class JobList(BaseModel):
    """A page of jobs, newest first."""

    jobs: list[Job]
    has_more: bool


class EventList(BaseModel):
    """A page of job events."""

    events: list[JobEvent]
    has_more: bool


class CheckpointList(BaseModel):
    """A page of checkpoints, newest first."""

    checkpoints: list[Checkpoint]
    has_more: bool


def _call(fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run a service call, turning its refusals into ToolErrors the model can act on."""
    try:
        return fn(*args, **kwargs)
    except ServiceError as e:
        raise ToolError(e.message) from e


def build_server(
    settings: FinetuneSettings, *, service: FinetuneService | None = None, base_url: str | None = None
) -> MCPServer:
    """Build the MCP server over `service` (created from settings when not given)."""
    svc = service or FinetuneService(settings)
    url = base_url or public_url(settings.finetune_host, settings.finetune_port)
    mcp = MCPServer(
        "ragtune-finetune",
        title="ragtune fine-tuning",
        version=__version__,
        instructions=INSTRUCTIONS,
        **mcp_auth_kwargs(settings, url),
    )

    @mcp.tool(title="Upload a dataset", annotations=WRITE)
    async def finetune_upload_dataset(
        ctx: Context,
        path: Annotated[str | None, Field(description="Dataset file under the allowed folders")] = None,
        # Plain `str` (empty = absent): the SDK parses a JSON-looking `str | None` argument, so one JSONL line
        # would arrive as a dict.
        content: Annotated[
            str,
            Field(
                description="Inline JSONL text instead of a path (up to ~4 MB over "
                "HTTP; use a path or POST /v1/files for larger files)"
            ),
        ] = "",
        filename: Annotated[str, Field(description="Name for inline content")] = "dataset.jsonl",
        allow_prompt_only: Annotated[
            bool,
            Field(description="Accept chat examples without an answer (rejection sampling with a rule reward)"),
        ] = False,
    ) -> DatasetFile:
        """Validate and store a JSONL dataset (a path or inline text); returns the file id for a job."""
        data, name = _source(svc, path, content, filename)
        file = await anyio.to_thread.run_sync(
            functools.partial(
                _call, svc.upload, data, name, allow_prompt_only=allow_prompt_only, progress=_progress(ctx)
            )
        )
        return DatasetFile(**file.model_dump(include=set(DatasetFile.model_fields)))

    @mcp.tool(title="Build embedding pairs from a collection", annotations=WRITE)
    def finetune_build_embedding_pairs(
        collection: Annotated[str, Field(description="Retrieval collection whose chunks become training pairs")],
        questions: Annotated[
            bool,
            Field(
                description="Also have the configured chat model (RAGTUNE_CHAT_MODEL / CHAT_BASE_URL) write 2 "
                "questions per chunk: slow, and weak with the embedded 135M model"
            ),
        ] = False,
        max_chunks: Annotated[int | None, Field(ge=1, description="Read at most this many chunks")] = None,
    ) -> EmbeddingPairs:
        """Make label-free pairs (title/heading -> chunk, a sentence -> the rest of its chunk) from a collection
        and store them as a pairs file; pass its id as training_file with method embedding."""
        from ragtune.servers.worker.recipes import RecipeError
        from ragtune.servers.worker.recipes.embedding_pairs import collection_pairs_jsonl

        try:
            data, summary = collection_pairs_jsonl(collection, questions=questions, max_chunks=max_chunks)
        except RecipeError as e:
            raise ToolError(str(e)) from e
        file = _call(svc.upload, data, f"{collection}-pairs.jsonl")
        return EmbeddingPairs(**file.model_dump(include=set(DatasetFile.model_fields)), **summary)

    @mcp.tool(title="Validate a dataset", annotations=READ)
    async def finetune_validate_dataset(
        ctx: Context,
        path: Annotated[str | None, Field(description="Dataset file under the allowed folders")] = None,
        content: Annotated[str, Field(description="Inline JSONL text instead of a path")] = "",
        format: Annotated[
            Literal["chat", "text", "preference", "pairs"] | None,
            Field(description="Force a format instead of detecting it"),
        ] = None,
        max_tokens: Annotated[int | None, Field(ge=16, description="Model context length to check against")] = None,
    ) -> Validation:
        """Check a dataset without storing it: format, problems by line number, token statistics."""
        data, name = _source(svc, path, content, "dataset.jsonl")
        try:
            loaded = await anyio.to_thread.run_sync(
                functools.partial(
                    svc.validate,
                    data,
                    filename=name,
                    format=format,
                    max_tokens=max_tokens,
                    progress=_progress(ctx),
                )
            )
        except ServiceError as e:
            if e.problems is None:
                raise ToolError(e.message) from e
            return Validation(valid=False, summary=e.message, problems=[Problem(**p) for p in e.problems])
        rows = "; ".join(f"{k}: {v}" for k, v in format_report(loaded.report))
        return Validation(
            valid=True, format=loaded.format, examples=len(loaded.records), summary=rows, report=loaded.report
        )

    @mcp.tool(title="Recommend a method", annotations=READ)
    def finetune_recommend_method(
        goal: Annotated[advisor.Goal, Field(description="knowledge | style | task | preference | retrieval")],
        n_examples: Annotated[
            int, Field(ge=0, description="Training examples (preference pairs, question-passage pairs)")
        ],
        data_changes_often: Annotated[bool, Field(description="The facts change often (favours retrieval)")] = False,
        has_preference_pairs: Annotated[bool, Field(description="Chosen/rejected answer pairs exist")] = False,
        has_reference_answers: Annotated[bool, Field(description="Examples come with reference answers")] = False,
        domain_terms_missing: Annotated[
            bool, Field(description="The base model does not know the domain's vocabulary")
        ] = False,
        base_is_instruct: Annotated[bool, Field(description="The base model is already instruction-tuned")] = True,
        gpu_memory_gb: Annotated[float | None, Field(gt=0, description="GPU memory available, in GB")] = None,
        model_params_b: Annotated[float | None, Field(gt=0, description="Model size in billions")] = None,
    ) -> advisor.Recommendation:
        """Advise prompt/RAG vs LoRA vs full fine-tuning vs CPT vs DPO/rejection sampling vs retriever tuning."""
        return advisor.recommend_method(
            advisor.Situation(
                goal=goal,
                n_examples=n_examples,
                data_changes_often=data_changes_often,
                has_preference_pairs=has_preference_pairs,
                has_reference_answers=has_reference_answers,
                domain_terms_missing=domain_terms_missing,
                base_is_instruct=base_is_instruct,
                gpu_memory_gb=gpu_memory_gb,
                model_params_b=model_params_b,
            )
        )

    @mcp.tool(title="Estimate GPU memory", annotations=READ)
    def finetune_estimate_memory(
        model: Annotated[
            str | None, Field(description="Known model, e.g. llama-3-8b, qwen2.5-7b, smollm2-135m")
        ] = None,
        params_b: Annotated[float | None, Field(gt=0, description="Or the size in billions of parameters")] = None,
        method: Annotated[Literal["full", "lora", "qlora"], Field(description="Which weights train")] = "lora",
        precision: Annotated[
            Literal["fp32", "bf16", "fp16", "int8", "int4"], Field(description="Precision of the base weights")
        ] = "bf16",
        seq_len: Annotated[int, Field(ge=1, description="Tokens per training sequence")] = 2048,
        batch: Annotated[int, Field(ge=1, description="Sequences per device batch")] = 1,
        optimizer: Annotated[
            Literal["adamw", "adamw8bit", "sgd"], Field(description="Optimizer (sets the state memory)")
        ] = "adamw",
        gradient_checkpointing: Annotated[bool, Field(description="Recompute activations to save memory")] = True,
    ) -> advisor.MemoryEstimate:
        """Estimate GPU memory (weights, gradients, optimizer, activations) and which GPUs fit."""
        try:
            return advisor.estimate_memory(
                model,
                params=params_b * 1e9 if params_b else None,
                method=method,
                precision=precision,
                seq_len=seq_len,
                batch=batch,
                optimizer=optimizer,
                gradient_checkpointing=gradient_checkpointing,
            )
        except ValueError as e:
            raise ToolError(str(e)) from e

    @mcp.tool(title="Create a fine-tuning job", annotations=WRITE)
    def finetune_create_job(
        training_file: Annotated[str, Field(description="File id from finetune_upload_dataset")],
        model: Annotated[
            str | None,
            Field(
                description="Base model; default the embedded smollm2-135m-instruct (embedding: e5-small, or an "
                "earlier tuned embedder id)"
            ),
        ] = None,
        method: Annotated[
            Literal["supervised", "dpo", "cpt", "rejection_sampling", "embedding"],
            Field(
                description="Training method; finetune_recommend_method helps choose. embedding tunes the "
                "retriever (e5-small) on pairs files and yields an embedder id ft:e5-small:..."
            ),
        ] = "supervised",
        hyperparameters: Annotated[
            dict[str, Any] | None,
            Field(
                description="n_epochs, batch_size, learning_rate_multiplier, learning_rate, max_steps, max_length "
                '(numbers or "auto"), warmup_steps, save_steps, lr_scheduler, packing, merge; embedding also '
                "collection (mine bm25 hard negatives there), hard_negatives, scale"
            ),
        ] = None,
        peft: Annotated[
            dict[str, Any] | None,
            Field(description='{"type": "lora", "r": 16, "alpha": 32} (default) or {"type": "full"}'),
        ] = None,
        beta: Annotated[float | None, Field(gt=0, description="DPO strength (dpo only)")] = None,
        n_samples: Annotated[int | None, Field(ge=2, description="Answers per prompt (rejection_sampling)")] = None,
        reward: Annotated[
            str | None,
            Field(
                description="reference_similarity | regex:<pattern> | contains:<text> | "
                "length[:<max words>] (rejection_sampling)"
            ),
        ] = None,
        temperature: Annotated[float | None, Field(ge=0, description="Sampling temperature")] = None,
        validation_file: Annotated[str | None, Field(description="File id of held-out examples for eval loss")] = None,
        suffix: Annotated[str | None, Field(max_length=64, description="Added to the fine-tuned model's name")] = None,
        seed: Annotated[int | None, Field(description="Random seed; default 42")] = None,
    ) -> Job:
        """Queue a fine-tuning job on a validated dataset; returns at once with the job id."""
        options = {
            k: v
            for k, v in {"n_samples": n_samples, "reward": reward, "temperature": temperature}.items()
            if v is not None
        }
        hyper = dict(hyperparameters or {})
        if beta is not None:
            hyper["beta"] = beta
        try:
            request = JobRequest(
                model=model,
                training_file=training_file,
                validation_file=validation_file,
                method={"type": method, method: {"hyperparameters": hyper, **options}},
                peft=peft,
                suffix=suffix,
                seed=seed,
            )
        except ValueError as e:
            raise ToolError(str(e)) from e
        return _call(svc.create_job, request)

    @mcp.tool(title="Get a job", annotations=READ)
    def finetune_get_job(job_id: JobId) -> JobView:
        """Return a job's status, latest metrics and what to do next."""
        return _view(svc, _call(svc.get_job, job_id))

    @mcp.tool(title="List jobs", annotations=READ)
    def finetune_list_jobs(
        limit: Annotated[int, Field(ge=1, le=100, description="Jobs per page")] = 20,
        after: Annotated[str | None, Field(description="Job id to continue after (the last id of a page)")] = None,
        status: Annotated[JobStatus | None, Field(description="Only jobs in this status")] = None,
    ) -> JobList:
        """List jobs, newest first (page with after = the last id)."""
        page = _call(svc.list_jobs, after=after, limit=limit, status=status.value if status else None)
        return JobList(jobs=page.data, has_more=page.has_more)

    @mcp.tool(
        title="Cancel a job",
        annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=False, open_world_hint=False),
    )
    def finetune_cancel_job(job_id: JobId) -> Job:
        """Cancel a job; a running worker stops within seconds."""
        return _call(svc.cancel_job, job_id)

    @mcp.tool(title="Pause a job", annotations=WRITE)
    def finetune_pause_job(job_id: JobId) -> Job:
        """Pause a queued or running job (it keeps its checkpoints)."""
        return _call(svc.pause_job, job_id)

    @mcp.tool(title="Resume a job", annotations=WRITE)
    def finetune_resume_job(job_id: JobId) -> Job:
        """Resume a paused job from its last checkpoint."""
        return _call(svc.resume_job, job_id)

    @mcp.tool(title="Job events", annotations=READ)
    def finetune_job_events(
        job_id: JobId,
        after: Annotated[str | None, Field(description="Event id to continue from")] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="Events per page")] = 20,
        order: Annotated[Literal["asc", "desc"], Field(description="asc tails forward from `after`")] = "desc",
    ) -> EventList:
        """Return a job's messages and metrics (step, loss, learning rate, tokens/s)."""
        page = _call(svc.events, job_id, after=after, limit=limit, order=order)
        return EventList(events=page.data, has_more=page.has_more)

    @mcp.tool(title="List checkpoints", annotations=READ)
    def finetune_list_checkpoints(
        job_id: JobId, limit: Annotated[int, Field(ge=1, le=100, description="Checkpoints to return")] = 10
    ) -> CheckpointList:
        """List a job's saved checkpoints, newest first."""
        page = _call(svc.checkpoints, job_id, limit=limit)
        return CheckpointList(checkpoints=page.data, has_more=page.has_more)

    register_chat_tool(mcp, svc)  # finetune_chat: try a base or tuned model (servers/finetune/serving/tool.py)
    register_promotion_tools(mcp, svc)  # which tuned model the agents use (servers/finetune/promotion_tools.py)

    @mcp.resource(
        "finetune://jobs/{job_id}",
        name="job",
        mime_type="application/json",
        description="A fine-tuning job as JSON",
    )
    def job_resource(job_id: str, ctx: Context) -> str:
        """Return one job as JSON; an unknown id is resource-not-found with the reason."""
        try:
            return svc.get_job(job_id).model_dump_json(indent=2)
        except ServiceError as e:
            if e.status != 404:
                raise ResourceError(e.message) from e
            raise resource_not_found(ctx, f"finetune://jobs/{job_id}", e.message) from e

    @mcp.resource(
        "finetune://jobs",
        name="jobs",
        mime_type="application/json",
        description="The 50 newest fine-tuning jobs as JSON",
    )
    def jobs_resource() -> str:
        """Return the newest jobs as JSON."""
        return svc.list_jobs(limit=50).model_dump_json(indent=2)

    return mcp


def _progress(ctx: Context) -> Callable[[int, int], None]:
    """Return a callback that sends MCP progress notifications from a worker thread (no-op without a token)."""

    def report(done: int, total: int) -> None:
        anyio.from_thread.run(ctx.report_progress, done, total, f"validated {done} of {total} lines")

    return report


def _source(svc: FinetuneService, path: str | None, content: str, filename: str) -> tuple[bytes, str]:
    if path is not None and not content:
        return _call(svc.read_path, path)
    if content and path is None:
        return content.encode(), filename
    raise ToolError("give exactly one of path (a file under the allowed folders) or content (JSONL text)")


NEXT = {
    JobStatus.validating_files: "wait: files are being checked",
    JobStatus.queued: "wait for a worker (python -m ragtune.servers.worker) to start it; poll finetune_get_job",
    JobStatus.running: "poll finetune_get_job or finetune_job_events for loss; cancel with finetune_cancel_job",
    JobStatus.paused: "resume it with finetune_resume_job, or cancel it",
    JobStatus.succeeded: "use the adapter in output_dir (fine_tuned_model names it)",
    JobStatus.failed: "read error.message, fix the dataset or settings, and create a new job",
    JobStatus.cancelled: "create a new job if you still need one",
}


def _view(svc: FinetuneService, job: Job) -> JobView:
    count = len(svc.checkpoints(job.id, limit=100).data)
    return JobView(job=job, latest_metrics=svc.latest_metrics(job.id), checkpoints=count, next_step=_next_step(job))


def _next_step(job: Job) -> str:
    """What to do next; a succeeded job with warnings or no better-than-base evidence says so first."""
    if job.status is not JobStatus.succeeded or job.evaluation is None:
        return NEXT[job.status]
    if job.warnings:
        codes = ", ".join(w["code"] for w in job.warnings)
        return f"do not use it without asking the user: {codes} (see job.warnings and EVAL.md in output_dir)"
    if job.evaluation.get("verdict") != "better":
        return f"show job.evaluation.summary and ask before using it (verdict {job.evaluation.get('verdict')})"
    return NEXT[job.status] + f"; {job.evaluation.get('summary')}"
