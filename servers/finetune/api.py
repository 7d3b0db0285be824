"""OpenAI-compatible REST (`/v1/files`, `/v1/fine_tuning/jobs`) plus ragtune's advice extras, over the service.

The unmodified `openai` SDK drives it with `base_url=http://127.0.0.1:8702/v1`; errors use OpenAI's
`{"error": {"message", "type", "param", "code"}}` shape and status codes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from ragtune.servers.finetune import advisor
from ragtune.servers.finetune.http import bearer_ok
from ragtune.servers.finetune.service import FinetuneService, JobRequest, Page, ServiceError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ragtune import promotion
from ragtune.jobs import Checkpoint, FileObject, Job, JobEvent


class EstimateRequest(BaseModel):
    """Body of `POST /v1/ragtune/estimate_memory`."""

    model: str | None = None
    params_b: float | None = None
    method: Literal["full", "lora", "qlora"] = "lora"
    precision: Literal["fp32", "bf16", "fp16", "int8", "int4"] = "bf16"
    seq_len: int = 2048
    batch: int = 1
    optimizer: Literal["adamw", "adamw8bit", "sgd"] = "adamw"
    gradient_checkpointing: bool = True


class PromoteRequest(BaseModel):
    """Body of `POST /v1/models/{id}/promotion`."""

    accept_warnings: bool = False


class FileDeleted(BaseModel):
    """OpenAI's answer to `DELETE /v1/files/{id}`."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool


class NoPromotion(BaseModel):
    """The promotion state when the agents answer with their base model (or after a demotion)."""

    object: Literal["ragtune.promotion"] = "ragtune.promotion"
    model: str | None = None
    deleted: bool | None = None


class ValidationReport(BaseModel):
    """Answer of `POST /v1/ragtune/validate` for a dataset that passed."""

    valid: Literal[True] = True
    format: str | None
    report: dict[str, Any]


def error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Return OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code, **extra}}


def install_error_handlers(app: FastAPI) -> None:
    """Answer every failure in OpenAI's error shape."""

    @app.exception_handler(ServiceError)
    async def _service(_: Request, e: ServiceError) -> JSONResponse:
        extra = {"problems": e.problems} if e.problems is not None else {}
        return JSONResponse(error_body(e.message, type=e.type, param=e.param, code=e.code, **extra), e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        param = ".".join(loc) or None
        return JSONResponse(error_body(f"{param or 'request'}: {first.get('msg')}", param=param), 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {401: "invalid_api_key", 404: "not_found", 413: "file_too_large"}.get(e.status_code)
        detail = str(e.detail)
        if e.status_code == 413:  # Starlette's body limit stopped reading the stream (issue #12)
            detail = "the request body is larger than the upload limit: raise RAGTUNE_FINETUNE_MAX_FILE_MB or send less"
        return JSONResponse(error_body(detail, code=code), e.status_code, headers=e.headers)


def build_router(svc: FinetuneService, token: str | None) -> APIRouter:
    """Build the /v1 routes; every route requires `Authorization: Bearer <token>` when a token is set."""

    def require_token(request: Request) -> None:
        if not bearer_ok(request.headers.get("authorization"), token):
            raise StarletteHTTPException(
                401,
                "missing or wrong bearer token: send Authorization: Bearer "
                "$RAGTUNE_API_TOKEN (the openai SDK sends its api_key)",
            )

    router = APIRouter(dependencies=[Depends(require_token)])
    limit_mb = svc.settings.finetune_max_file_mb
    # The whole request may exceed the file by the multipart framing and form fields, no more.
    body_limit = int(limit_mb * 1e6) + 64 * 1024

    @router.post("/files", max_body_size=body_limit)
    async def upload_file(
        file: Annotated[UploadFile, File()],
        purpose: Annotated[str, Form()] = "fine-tune",
        allow_prompt_only: Annotated[bool, Form()] = False,
    ) -> FileObject:
        """Upload and validate a dataset (multipart `file` + `purpose`; ragtune's `allow_prompt_only`)."""
        data = await file.read(int(limit_mb * 1e6) + 1)
        if len(data) > limit_mb * 1e6:
            raise ServiceError(
                413,
                f"{file.filename} is larger than the {limit_mb:g} MB limit (RAGTUNE_FINETUNE_MAX_FILE_MB)",
                param="file",
                code="file_too_large",
            )
        return await run_in_threadpool(
            svc.upload, data, file.filename or "dataset.jsonl", purpose, allow_prompt_only=allow_prompt_only
        )

    @router.get("/files")
    def list_files(
        purpose: str | None = None,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> Page[FileObject]:
        """List uploaded files, newest first."""
        return svc.list_files(purpose=purpose, after=after, limit=limit)

    @router.get("/files/{file_id}")
    def get_file(file_id: str) -> FileObject:
        """Return a file's metadata and validation report."""
        return svc.get_file(file_id)

    @router.get("/files/{file_id}/content")
    def file_content(file_id: str) -> Response:
        """Return a file's original bytes."""
        return Response(svc.file_content(file_id), media_type="application/octet-stream")

    @router.delete("/files/{file_id}")
    def delete_file(file_id: str) -> FileDeleted:
        """Delete a file (refused while an unfinished job uses it)."""
        return FileDeleted(id=svc.delete_file(file_id).id, deleted=True)

    @router.post("/fine_tuning/jobs")
    def create_job(body: JobRequest) -> Job:
        """Create a fine-tuning job; it is queued for a worker (or failed with the reason)."""
        return svc.create_job(body)

    @router.get("/fine_tuning/jobs")
    def list_jobs(
        request: Request,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        status: str | None = None,
    ) -> Page[Job]:
        """List jobs newest first; `metadata[key]=value` filters like OpenAI's."""
        wanted = {k[9:-1]: v for k, v in request.query_params.items() if k.startswith("metadata[") and k.endswith("]")}
        return svc.list_jobs(after=after, limit=limit, status=status, metadata=wanted)

    @router.get("/fine_tuning/jobs/{job_id}")
    def get_job(job_id: str) -> Job:
        """Return a job."""
        return svc.get_job(job_id)

    @router.get("/fine_tuning/jobs/{job_id}/evaluation")
    def get_evaluation(job_id: str) -> dict[str, Any]:
        """Return the job's tuned-vs-base evaluation (docs/dev/CONTRACTS.md); 404 until the job has one."""
        job = svc.get_job(job_id)
        if job.evaluation is None:
            raise ServiceError(
                404,
                f"job {job_id} is {job.status.value} and has no evaluation yet: it is written when training succeeds",
                param="job_id",
                code="evaluation_not_found",
            )
        return {**job.evaluation, "warnings": job.warnings}

    @router.post("/fine_tuning/jobs/{job_id}/cancel")
    def cancel_job(job_id: str) -> Job:
        """Cancel a job."""
        return svc.cancel_job(job_id)

    @router.post("/fine_tuning/jobs/{job_id}/pause")
    def pause_job(job_id: str) -> Job:
        """Pause a queued or running job."""
        return svc.pause_job(job_id)

    @router.post("/fine_tuning/jobs/{job_id}/resume")
    def resume_job(job_id: str) -> Job:
        """Resume a paused job."""
        return svc.resume_job(job_id)

    @router.get("/fine_tuning/jobs/{job_id}/events")
    def list_events(
        job_id: str,
        after: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 20,
        order: Literal["asc", "desc"] = "desc",
    ) -> Page[JobEvent]:
        """List a job's events, newest first (`order=asc` tails forward from `after`)."""
        return svc.events(job_id, after=after, limit=limit, order=order)

    @router.get("/fine_tuning/jobs/{job_id}/checkpoints")
    def list_checkpoints(
        job_id: str, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 10
    ) -> Page[Checkpoint]:
        """List a job's checkpoints, newest first."""
        return svc.checkpoints(job_id, after=after, limit=limit)

    @router.post("/ragtune/recommend")
    def recommend(body: advisor.Situation) -> advisor.Recommendation:
        """Advise which method fits (ragtune extra)."""
        return advisor.recommend_method(body)

    @router.post("/ragtune/estimate_memory")
    def estimate(body: EstimateRequest) -> advisor.MemoryEstimate:
        """Estimate training memory (ragtune extra)."""
        try:
            return advisor.estimate_memory(
                body.model,
                params=body.params_b * 1e9 if body.params_b else None,
                **body.model_dump(exclude={"model", "params_b"}),
            )
        except ValueError as e:
            raise ServiceError(400, str(e)) from e

    @router.get("/ragtune/promotion")
    def get_promotion() -> promotion.Promotion | NoPromotion:
        """Return the tuned model every agent answers with (`model` is null: the base model)."""
        return svc.current_promotion() or NoPromotion()

    @router.post("/models/{model_id}/promotion")
    def promote(model_id: str, body: PromoteRequest | None = None) -> promotion.Promotion:
        """Make a tuned model the one every agent answers with (global until demoted); 409 if it is worse."""
        return svc.promote(model_id, accept_warnings=bool(body and body.accept_warnings))

    @router.delete("/models/{model_id}/promotion")
    def demote(model_id: str) -> NoPromotion:
        """Send the agents back to their base model if `model_id` is the promoted one."""
        return NoPromotion(model=model_id, deleted=svc.demote(model_id) is not None)

    @router.post("/ragtune/validate", max_body_size=body_limit)
    async def validate(
        file: Annotated[UploadFile, File()], format: Annotated[str | None, Form()] = None
    ) -> ValidationReport:
        """Validate a dataset without storing it (ragtune extra); 400 lists the bad lines."""
        data = await file.read(int(limit_mb * 1e6) + 1)
        loaded = await run_in_threadpool(svc.validate, data, filename=file.filename or "dataset", format=format)
        return ValidationReport(format=loaded.format, report=loaded.report)

    return router
