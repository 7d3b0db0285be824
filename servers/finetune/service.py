"""The fine-tuning service core that both the REST API and the MCP tools call: files, jobs, events.

It validates everything before writing (a bad dataset or request creates nothing), resolves "auto"
hyperparameters, queues jobs for workers, and never trains.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from ragtune.servers.finetune import hyper
from ragtune.servers.finetune.dispatch import Dispatcher, DispatchError, make_dispatcher
from ragtune.servers.finetune.ray_jobs import parse_resources
from ragtune.servers.finetune.resources import parallel, plan_resources
from ragtune.servers.finetune.schemas import JobRequest, Page, ServiceError

from ragtune import promotion
from ragtune.config import FinetuneSettings
from ragtune.datasets import DatasetError, LoadedDataset, parse_dataset
from ragtune.embedders.tuned import TunedEmbedderError, resolve_embedding_base
from ragtune.job_stores import open_job_store
from ragtune.jobs import (
    TERMINAL,
    BaseJobStore,
    Checkpoint,
    FileObject,
    IllegalTransition,
    Job,
    JobError,
    JobEvent,
    JobStatus,
    UnknownId,
    new_id,
)
from ragtune.models import UnknownModel, resolve_base_model

__all__ = ["FinetuneService", "JobRequest", "Page", "ServiceError"]

PURPOSE = "fine-tune"
WAITING = frozenset({JobStatus.validating_files, JobStatus.queued, JobStatus.paused})


def _quota(what: str, param: str) -> ServiceError:
    """Return the 409 a quota refusal answers with (issue #12: nothing bounded jobs, files or bytes)."""
    return ServiceError(
        409, f"quota exceeded: {what}; delete old ones or raise the limit", param=param, code="quota_exceeded"
    )


class FinetuneService:
    """Files and fine-tuning jobs over one job store (SQLite or PostgreSQL); thread-safe (REST and MCP share it)."""

    def __init__(
        self,
        settings: FinetuneSettings,
        *,
        store: BaseJobStore | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.settings = settings
        self.store = store or open_job_store(settings)  # PostgreSQL when RAGTUNE_DATABASE_URL is set
        self.dispatcher = dispatcher or make_dispatcher(settings)
        self.files_dir = settings.data_path("files")
        self.jobs_dir = settings.data_path("jobs")
        self.files_dir.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()

    def close(self) -> None:
        """Close the job store."""
        self.store.close()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Serialise store access and turn store errors into HTTP-shaped ones."""
        with self._lock:
            try:
                yield
            except UnknownId as e:
                raise ServiceError(404, str(e), code="not_found") from e
            except IllegalTransition as e:
                raise ServiceError(409, str(e), code="invalid_state") from e

    # datasets ----------------------------------------------------------------------------------------
    def validate(
        self,
        data: bytes | str,
        *,
        filename: str = "dataset.jsonl",
        format: str | None = None,
        max_tokens: int | None = None,
        allow_prompt_only: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> LoadedDataset:
        """Validate dataset bytes without storing them; raise ServiceError 400 listing the bad lines."""
        if len(data) > self.settings.finetune_max_file_mb * 1e6:
            raise ServiceError(
                413,
                f"{filename} is {len(data) / 1e6:.1f} MB; the limit is "
                f"{self.settings.finetune_max_file_mb:g} MB (RAGTUNE_FINETUNE_MAX_FILE_MB)",
                param="file",
                code="file_too_large",
            )
        try:
            return parse_dataset(
                data,
                source=filename,
                format=format,
                max_tokens=max_tokens,
                allow_prompt_only=allow_prompt_only,
                progress=progress,
            )
        except DatasetError as e:
            raise ServiceError(400, str(e), param="file", code="invalid_file", problems=e.problems) from e
        except ValueError as e:
            raise ServiceError(400, str(e), param="format") from e

    def read_path(self, path: str) -> tuple[bytes, str]:
        """Read a dataset file under the allowed roots (symlinks resolved); refuse anything else."""
        target = Path(path).expanduser().resolve()
        roots = [r.expanduser().resolve() for r in self.settings.finetune_roots]
        if not any(target == r or target.is_relative_to(r) for r in roots):
            raise ServiceError(
                403,
                f"{target} is outside the allowed folders ({', '.join(map(str, roots))}); move "
                "the file there or add its folder to RAGTUNE_FINETUNE_ROOTS",
                param="path",
                type="permission_error",
                code="path_not_allowed",
            )
        if target.exists() and not target.is_file():  # a FIFO would block the read forever (issue #12)
            raise ServiceError(400, f"{target} is not a regular file: pass a dataset file", param="path")
        if not target.is_file():
            raise ServiceError(404, f"no file at {target}", param="path", code="not_found")
        if target.stat().st_size > self.settings.finetune_max_file_mb * 1e6:
            raise ServiceError(
                413,
                f"{target.name} is larger than RAGTUNE_FINETUNE_MAX_FILE_MB={self.settings.finetune_max_file_mb:g}",
                param="path",
                code="file_too_large",
            )
        return target.read_bytes(), target.name

    # files -------------------------------------------------------------------------------------------
    def upload(
        self,
        data: bytes,
        filename: str,
        purpose: str = PURPOSE,
        *,
        allow_prompt_only: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> FileObject:
        """Validate and store a dataset; nothing is written when it has problems.

        `allow_prompt_only` accepts chat records without an answer (prompts for rejection sampling with a rule
        reward); jobs of other methods refuse such files.
        """
        if purpose != PURPOSE:
            raise ServiceError(
                400,
                f"purpose {purpose!r} is not supported; upload datasets with purpose {PURPOSE!r}",
                param="purpose",
            )
        self._check_file_quota(len(data))
        loaded = self.validate(data, filename=filename, allow_prompt_only=allow_prompt_only, progress=progress)
        file_id = new_id("file")
        safe = re.sub(r"[^\w.-]", "_", Path(filename).name)[-80:] or "dataset.jsonl"
        path = self.files_dir / f"{file_id}-{safe}"
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        obj = FileObject(
            id=file_id,
            bytes=len(data),
            created_at=int(time.time()),
            filename=Path(filename).name,
            purpose=purpose,
            path=str(path),
            format=loaded.format,
            report=loaded.report,
        )
        try:
            with self._guard():
                return self.store.add_file(obj)
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def _check_file_quota(self, size: int) -> None:
        """Refuse an upload past the file count or total size quota (409 quota_exceeded)."""
        with self._guard():
            files = self.store.list_files(None)
        cfg = self.settings
        if len(files) >= cfg.finetune_max_files:
            raise _quota(f"{len(files)} files are stored, the limit (RAGTUNE_FINETUNE_MAX_FILES)", "file")
        used_mb = (sum(f.bytes for f in files) + size) / 1e6
        if used_mb > cfg.finetune_max_total_upload_mb:
            raise _quota(
                f"this upload would bring stored files to {used_mb:.1f} MB, over the "
                f"{cfg.finetune_max_total_upload_mb:g} MB limit (RAGTUNE_FINETUNE_MAX_TOTAL_UPLOAD_MB)",
                "file",
            )

    def list_files(self, *, purpose: str | None = None, after: str | None = None, limit: int = 100) -> Page:
        """Return files newest first, paged with `after`."""
        with self._guard():
            files = self.store.list_files(purpose)
        if after:
            ids = [f.id for f in files]
            if after not in ids:
                raise ServiceError(404, f"no file with id {after!r} to page after", param="after", code="not_found")
            files = files[ids.index(after) + 1 :]
        return Page[FileObject](data=files[:limit], has_more=len(files) > limit)

    def get_file(self, file_id: str) -> FileObject:
        """Return a file's metadata."""
        with self._guard():
            return self.store.get_file(file_id)

    def file_content(self, file_id: str) -> bytes:
        """Return the original bytes of an uploaded file."""
        path = Path(self.get_file(file_id).path)
        if not path.is_file():
            raise ServiceError(
                404,
                f"the bytes of file {file_id} are missing from {path.parent}; upload it again",
                code="file_missing",
            )
        return path.read_bytes()

    def delete_file(self, file_id: str) -> FileObject:
        """Delete a file unless an unfinished job still needs it."""
        with self._guard():
            self.store.get_file(file_id)
            for job in self._all_jobs():
                if job.status not in TERMINAL and file_id in (job.training_file, job.validation_file):
                    raise ServiceError(
                        409,
                        f"file {file_id} is used by job {job.id}, which is {job.status.value}; "
                        "cancel the job or wait for it to finish",
                        code="file_in_use",
                    )
            return self.store.delete_file(file_id)

    def _all_jobs(self) -> list[Job]:
        return self.store.list_jobs(limit=1_000_000)

    # jobs --------------------------------------------------------------------------------------------
    def create_job(self, request: JobRequest | dict[str, Any]) -> Job:
        """Validate a job request, record it, check its files, and queue it (or fail it with the reason)."""
        req = request if isinstance(request, JobRequest) else JobRequest.model_validate(request)
        job = self._plan(req)
        job, sizing = self._size_resources(job)
        with self._guard():
            self._check_job_quota()
            self.store.create_job(job)
            self.store.add_event(
                job.id,
                f"created fine-tuning job: {job.method['type']} of {job.model}"
                f" ({'LoRA r=' + str(job.peft['r']) if job.peft else 'full fine-tuning'})",
            )
            if sizing:
                self.store.add_event(job.id, sizing, data={"kind": "resources", "resources": job.resources})
            try:
                return self._check_files_and_queue(job)
            except Exception as e:  # never leave a job in validating_files: fail it with the reason
                reason = f"could not queue the job: {type(e).__name__}: {e}"
                return self.store.transition(
                    job.id,
                    JobStatus.failed,
                    message=reason,
                    error=JobError(code="internal_error", message=reason),
                )

    def _size_resources(self, job: Job) -> tuple[Job, str | None]:
        """Under Ray, size the job's request from the memory estimate (resources.py); refuse what cannot fit (400)."""
        if self.settings.dispatch != "ray":
            if parallel(job.resources).layout == "ray_train":
                raise ServiceError(
                    400,
                    "resources.num_workers runs Ray Train workers: set RAGTUNE_DISPATCH=ray, or use "
                    "resources.processes (or gpus) for data parallel on one machine",
                    param="x_ragtune.resources",
                )
            return job, None
        try:
            plan = plan_resources(
                job.resources,
                model=job.model,
                peft=job.peft,
                hyper=job.hyperparameters,
                method=job.method["type"],
                gpu_memory_gb=self.settings.ray_gpu_memory_gb,
            )
        except ValueError as e:
            raise ServiceError(400, str(e), param="x_ragtune.resources", code="insufficient_gpu_memory") from e
        return job.model_copy(update={"resources": plan.resources}), plan.note

    def _check_job_quota(self) -> None:
        """Refuse a job past the total or waiting job quota (409 quota_exceeded); call under the lock."""
        jobs = self._all_jobs()
        cfg = self.settings
        if len(jobs) >= cfg.finetune_max_jobs:
            raise _quota(f"{len(jobs)} jobs are kept, the limit (RAGTUNE_FINETUNE_MAX_JOBS)", "training_file")
        waiting = sum(j.status in WAITING for j in jobs)
        if waiting >= cfg.finetune_max_queued_jobs:
            raise _quota(
                f"{waiting} jobs are already waiting, the limit (RAGTUNE_FINETUNE_MAX_QUEUED_JOBS); "
                "wait for some to finish or cancel them",
                "training_file",
            )

    def _plan(self, req: JobRequest) -> Job:
        try:
            kind, options = hyper.parse_method(req.method, req.hyperparameters)
            peft = hyper.parse_peft(req.peft or (req.x_ragtune or {}).get("peft"), kind)
        except hyper.RequestError as e:
            raise ServiceError(400, e.message, param=e.param, code=e.code) from e
        try:
            resources = parse_resources((req.x_ragtune or {}).get("resources"))
        except ValueError as e:
            raise ServiceError(400, str(e), param="x_ragtune.resources") from e
        if kind == "embedding":  # the retriever: e5-small or an earlier tuned embedder, not a chat model
            try:
                model = resolve_embedding_base(req.model, self.settings.home)
            except TunedEmbedderError as e:
                raise ServiceError(400, str(e), param="model", code="model_not_found") from e
        else:
            model = (req.model or self.settings.default_base_model).strip()
            try:
                resolve_base_model(model)
            except UnknownModel as e:
                raise ServiceError(400, str(e), param="model", code="model_not_found") from e
        train = self._job_file(req.training_file, "training_file", kind)
        if req.validation_file:
            valid = self._job_file(req.validation_file, "validation_file", kind)
            if valid.format != train.format:
                raise ServiceError(
                    400,
                    f"validation_file is {valid.format} but training_file is {train.format}; use the same format",
                    param="validation_file",
                )
        if req.metadata and (
            len(req.metadata) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in req.metadata.items())
        ):
            raise ServiceError(
                400,
                "metadata holds at most 16 pairs, keys up to 64 and values up to 512 characters",
                param="metadata",
            )
        try:
            resolved = hyper.resolve(kind, options, peft, train.report)
        except hyper.RequestError as e:
            raise ServiceError(400, e.message, param=e.param, code=e.code) from e
        unanswered = train.report.get("prompt_only", 0)
        if unanswered and not (kind == "rejection_sampling" and resolved["reward"] != "reference_similarity"):
            raise ServiceError(
                400,
                f"training_file {train.id} has {unanswered} examples without an assistant answer; "
                f"{kind} needs one in every example (only rejection_sampling with a rule reward such "
                "as regex:<pattern> trains from prompts alone)",
                param="training_file",
                code="invalid_file_format",
            )
        public = {
            k: resolved[k] for k in ("n_epochs", "batch_size", "learning_rate_multiplier", "beta") if k in resolved
        }
        method = {
            "type": kind,
            kind: {
                **{k: v for k, v in options.items() if k != "hyperparameters"},
                **{k: resolved[k] for k in ("n_samples", "temperature", "reward", "max_new_tokens") if k in resolved},
                "hyperparameters": public,
            },
        }
        job_id = new_id("ftjob")
        return Job(
            id=job_id,
            created_at=int(time.time()),
            model=model,
            status=JobStatus.validating_files,
            hyperparameters=resolved,
            training_file=train.id,
            validation_file=req.validation_file,
            seed=req.seed if req.seed is not None else 0,  # Job.seed's default, the recipes' too (CONTRACTS.md)
            method=method,
            metadata=req.metadata,
            integrations=req.integrations or [],
            user_provided_suffix=req.suffix,
            peft=peft,
            resources=resources,
            output_dir=str((self.jobs_dir / job_id).resolve()),
        )

    def _job_file(self, file_id: str, param: str, kind: str) -> FileObject:
        with self._lock:
            try:
                file = self.store.get_file(file_id)
            except UnknownId as e:
                raise ServiceError(
                    400,
                    f"{param} {file_id!r} does not exist; upload it first (POST /v1/files, "
                    "purpose=fine-tune) and pass the returned id",
                    param=param,
                    code="file_not_found",
                ) from e
        accepts = hyper.ACCEPTS[kind]
        if file.format not in accepts:
            raise ServiceError(
                400,
                f"{param} {file_id} holds {file.format} records but method {kind!r} needs "
                f"{' or '.join(accepts)} records; upload a matching file or pick another method "
                "(chat -> supervised/rejection_sampling, preference -> dpo, text -> cpt, pairs -> embedding)",
                param=param,
                code="invalid_file_format",
            )
        return file

    def _check_files_and_queue(self, job: Job) -> Job:
        """Check the stored files are still intact (validated at upload) and queue the job, or fail it."""
        notes: list[str] = []
        for param, fid in (("training_file", job.training_file), ("validation_file", job.validation_file)):
            if not fid:
                continue
            file = self.store.get_file(fid)
            path = Path(file.path)
            if not path.is_file() or path.stat().st_size != file.bytes:
                reason = f"{param} {fid} changed or vanished on disk since it was validated; upload it again"
                return self.store.transition(
                    job.id,
                    JobStatus.failed,
                    message=reason,
                    error=JobError(code=f"invalid_{param}", message=reason, param=param),
                )
            notes += [f"{fid}: {w}" for w in file.report.get("warnings", [])]
            longest = file.report.get("tokens", {}).get("max", 0)
            if longest > job.hyperparameters["max_length"]:
                notes.append(
                    f"{fid}: some examples (up to ~{longest} tokens) are longer than max_length "
                    f"{job.hyperparameters['max_length']} and will be truncated"
                )
        if job.method["type"] == "cpt" and self.store.get_file(job.training_file).format == "chat":
            notes.append("chat records are flattened to plain text for continued pretraining")
        for note in notes:
            self.store.add_event(job.id, note, level="warn")
        job = self.store.transition(job.id, JobStatus.queued, message="validated files; job queued")
        return self._dispatch(job)

    def _dispatch(self, job: Job) -> Job:
        try:
            note = self.dispatcher.submit(job)
        except DispatchError as e:
            return self.store.transition(
                job.id,
                JobStatus.failed,
                message=str(e),
                error=JobError(code="dispatch_failed", message=str(e)),
            )
        self.store.add_event(job.id, note)
        return self.store.get_job(job.id)

    def list_jobs(
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        status: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Page:
        """Return jobs newest first, paged OpenAI-style; `metadata` keeps jobs carrying every given pair."""
        if status is not None and status not in JobStatus.__members__:
            raise ServiceError(
                400, f"unknown status {status!r}; use one of {', '.join(JobStatus.__members__)}", param="status"
            )
        with self._guard():
            jobs = self.store.list_jobs(after=after, limit=limit + 1, status=status, metadata=metadata)
        return Page[Job](data=jobs[:limit], has_more=len(jobs) > limit)

    def get_job(self, job_id: str) -> Job:
        """Return a job."""
        with self._guard():
            return self.store.get_job(job_id)

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a job; a running worker notices at its next heartbeat and stops (Ray: its run is stopped too)."""
        job = self._move(job_id, JobStatus.cancelled, "cancelled by request")
        stopped = self.dispatcher.stop(job_id)
        if stopped:
            with self._guard():
                self.store.add_event(job_id, f"stopped {self.dispatcher.name} run(s): {', '.join(stopped)}")
        return job

    def pause_job(self, job_id: str) -> Job:
        """Pause a queued or running job; the worker saves a checkpoint and releases it."""
        return self._move(job_id, JobStatus.paused, "paused by request")

    def resume_job(self, job_id: str) -> Job:
        """Re-queue a paused job to continue from its last checkpoint."""
        with self._guard():  # one critical section: the reaper must not submit it a second time in between
            job = self.store.transition(
                job_id, JobStatus.queued, message="resumed by request; queued to continue from the last checkpoint"
            )
            return self._dispatch(job)

    def reconcile(self) -> list[str]:
        """Recover jobs whose worker stopped heartbeating, then let the dispatcher sync its runs (the reaper's tick)."""
        with self._guard():
            recovered = self.store.recover_expired()
        return recovered + self.dispatcher.reconcile(self.store, self._lock)

    def _move(self, job_id: str, to: JobStatus, message: str) -> Job:
        with self._guard():
            return self.store.transition(job_id, to, message=message)

    def events(
        self, job_id: str, *, after: str | None = None, limit: int = 20, order: Literal["asc", "desc"] = "desc"
    ) -> Page:
        """Return a job's events, newest first by default (OpenAI's order); `asc` tails forward."""
        with self._guard():
            events = self.store.list_events(job_id, after=after, limit=limit + 1, order=order)
        return Page[JobEvent](data=events[:limit], has_more=len(events) > limit)

    def latest_metrics(self, job_id: str) -> dict[str, Any] | None:
        """Return the data of a job's newest metrics event, if any."""
        with self._guard():
            events = self.store.list_events(job_id, limit=1, type="metrics")
        return events[0].data if events else None

    def checkpoints(self, job_id: str, *, after: str | None = None, limit: int = 10) -> Page:
        """Return a job's checkpoints, newest first."""
        with self._guard():
            ckpts = self.store.list_checkpoints(job_id, after=after, limit=limit + 1)
        return Page[Checkpoint](data=ckpts[:limit], has_more=len(ckpts) > limit)

    # promotion (which tuned model the agents answer with; global) ----------------------------------
    def promote(self, model_id: str, *, accept_warnings: bool = False) -> promotion.Promotion:
        """Promote a tuned model for every agent; 409 says why a worse or diverged one is refused."""
        with self._guard(), _promotion_errors():
            return promotion.promote(self.store, model_id, accept_warnings=accept_warnings)

    def demote(self, model_id: str | None = None) -> promotion.Promotion | None:
        """Send the agents back to their base model; return the promotion removed, if any."""
        with self._guard():
            return promotion.demote(self.store, model_id)

    def current_promotion(self) -> promotion.Promotion | None:
        """Return the promoted model, if any."""
        with self._guard():
            return promotion.promoted(self.store)


@contextmanager
def _promotion_errors() -> Iterator[None]:
    """Turn promotion refusals into HTTP-shaped errors: 404 for an unknown model, 409 for a refused one."""
    try:
        yield
    except promotion.ModelNotFound as e:
        raise ServiceError(404, str(e), param="model", code="model_not_found") from e
    except promotion.PromotionRefused as e:
        raise ServiceError(409, str(e), param="model", code="promotion_refused") from e
