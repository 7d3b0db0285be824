"""The fine-tuning job store shared by the job service and the workers (SQLite, OpenAI's job shapes).

The service writes files and jobs; workers lease queued jobs atomically, heartbeat, append events,
metrics and checkpoints, and finish them. A job whose lease expires (its worker died) is re-queued to
resume from its last checkpoint, or failed with a reason after `max_attempts`: no job stays running.
"""

from __future__ import annotations

import json
import secrets
import time
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import sqlite_utils
from pydantic import BaseModel, ConfigDict, Field

from ragtune import db


class JobStatus(StrEnum):
    """OpenAI's fine-tuning job states, plus `paused`."""

    validating_files = "validating_files"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    paused = "paused"


TERMINAL = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})
TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.validating_files: frozenset({JobStatus.queued, JobStatus.failed, JobStatus.cancelled}),
    JobStatus.queued: frozenset({JobStatus.running, JobStatus.cancelled, JobStatus.paused, JobStatus.failed}),
    # running -> queued is recovery: the job resumes from its last checkpoint on the next worker.
    JobStatus.running: frozenset(
        {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.paused, JobStatus.queued}
    ),
    JobStatus.paused: frozenset({JobStatus.queued, JobStatus.cancelled}),
    JobStatus.succeeded: frozenset(),
    JobStatus.failed: frozenset(),
    JobStatus.cancelled: frozenset(),
}


class UnknownId(KeyError):
    """Raised for a file, job or checkpoint id the store does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown id"


class IllegalTransition(ValueError):
    """Raised when a job is asked to move to a state its current state cannot reach."""


class Integration(BaseModel):
    """A third-party integration in OpenAI's shape, e.g. {"type": "wandb", "wandb": {"project": "p"}}; stored only."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description='Integration kind, e.g. "wandb"')
    wandb: dict[str, Any] | None = Field(default=None, description="wandb settings: project, name, entity, tags")


class JobError(BaseModel):
    """Why a job failed, in OpenAI's shape."""

    code: str
    message: str
    param: str | None = None


class FileObject(BaseModel):
    """An uploaded dataset file (OpenAI `file` object plus our validation report)."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: str
    status: str = "processed"
    path: str = Field(exclude=True)
    format: str | None = None
    report: dict[str, Any] = Field(default_factory=dict)


class Job(BaseModel):
    """A fine-tuning job: OpenAI's `fine_tuning.job` fields plus base model, method, PEFT and output."""

    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    finished_at: int | None = None
    model: str
    fine_tuned_model: str | None = None
    organization_id: str = "org-ragtune"
    status: JobStatus
    hyperparameters: dict[str, Any] = Field(default_factory=dict)
    training_file: str
    validation_file: str | None = None
    result_files: list[str] = Field(default_factory=list)
    trained_tokens: int | None = None
    error: JobError | None = None
    seed: int = 0
    estimated_finish: int | None = None
    method: dict[str, Any] = Field(default_factory=lambda: {"type": "supervised"})
    metadata: dict[str, str] | None = None
    integrations: list[Integration] = Field(default_factory=list)
    user_provided_suffix: str | None = None
    # ragtune's own fields
    peft: dict[str, Any] | None = None
    resources: dict[str, float] | None = None  # what a Ray submission asks for: {cpus, gpus, memory_gb}
    output_dir: str | None = None
    worker_id: str | None = None
    attempts: int = 0
    started_at: int | None = None
    # tuned vs base on held-out data, and what went wrong (docs/dev/CONTRACTS.md, "Evaluation and warnings")
    evaluation: dict[str, Any] | None = None
    warnings: list[dict[str, str]] = Field(default_factory=list)


EventLevel = Literal["info", "warn", "error"]
EventType = Literal["message", "metrics"]


class JobEvent(BaseModel):
    """One line of a job's log: a message or a metrics record (step, loss, lr, tokens/s)."""

    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: EventLevel = "info"
    message: str
    data: dict[str, Any] | None = None
    type: EventType = "message"
    seq: int = Field(default=0, exclude=True)


class Checkpoint(BaseModel):
    """A saved training state a job can resume from or serve."""

    id: str
    object: Literal["fine_tuning.job.checkpoint"] = "fine_tuning.job.checkpoint"
    created_at: int
    fine_tuned_model_checkpoint: str
    fine_tuning_job_id: str
    metrics: dict[str, Any] = Field(default_factory=dict)
    step_number: int


MIGRATIONS = [
    """
    create table files (
      id text primary key, bytes integer not null, created_at integer not null, filename text not null,
      purpose text not null, status text not null, path text not null, format text, report text not null
    );
    create table jobs (
      id text primary key, created_at integer not null, status text not null, body text not null,
      worker_id text, lease_until real, attempts integer not null default 0
    );
    create index jobs_status on jobs(status, created_at);
    create table events (
      seq integer primary key autoincrement, id text unique not null, job_id text not null references jobs(id)
        on delete cascade, created_at integer not null, level text not null, message text not null,
      data text, type text not null
    );
    create index events_job on events(job_id, seq);
    create table checkpoints (
      id text primary key, job_id text not null references jobs(id) on delete cascade, created_at integer not null,
      step_number integer not null, path text not null, metrics text not null
    );
    """,
    # Status, attempts and worker live in their columns only (the body copy drifted and was patched on read).
    "update jobs set body = json_remove(body, '$.status', '$.attempts', '$.worker_id');",
]
# Job fields kept in columns, not in the JSON body: the single source of truth the worker and the API read.
COLUMN_FIELDS = frozenset({"status", "attempts", "worker_id"})


def new_id(prefix: str) -> str:
    """Return an OpenAI-style id such as `ftjob-3fa2...`."""
    return f"{prefix}-{secrets.token_hex(12)}"


class JobStore:
    """SQLite-backed files, jobs, events and checkpoints; safe for several processes at once."""

    def __init__(self, path: Path | str, *, max_attempts: int = 3) -> None:
        self.path = Path(path)
        self.max_attempts = max_attempts
        self.conn = db.connect(self.path, vec=False)
        db.migrate(self.conn, MIGRATIONS)
        self.tables = db.tables(self.conn)  # files and checkpoints: plain rows, so sqlite-utils does the SQL

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    # files -----------------------------------------------------------------------------------
    def add_file(self, file: FileObject) -> FileObject:
        """Record an uploaded, already validated file."""
        row = file.model_dump(exclude={"object"}) | {"path": file.path, "report": json.dumps(file.report)}
        self.tables.table("files").insert(row)
        return file

    def get_file(self, file_id: str) -> FileObject:
        """Return a file or raise UnknownId."""
        try:
            return _file(self.tables.table("files").get(file_id))
        except sqlite_utils.db.NotFoundError:
            raise UnknownId(f"no file with id {file_id!r}; list files to see the ids") from None

    def list_files(self, purpose: str | None = None) -> list[FileObject]:
        """Return files, newest first."""
        where, args = ("purpose = ?", [purpose]) if purpose else (None, [])
        rows = self.tables.table("files").rows_where(where, args, order_by="created_at desc, rowid desc")
        return [_file(r) for r in rows]

    def delete_file(self, file_id: str) -> FileObject:
        """Forget a file and remove its bytes from disk."""
        file = self.get_file(file_id)
        self.tables.table("files").delete(file_id)
        Path(file.path).unlink(missing_ok=True)
        return file

    # jobs ------------------------------------------------------------------------------------
    def create_job(self, job: Job) -> Job:
        """Insert a new job (normally in `validating_files` or `queued`)."""
        self.conn.execute(
            "insert into jobs(id, created_at, status, body, worker_id, attempts) values (?,?,?,?,?,?)",
            (job.id, job.created_at, job.status.value, _body(job), job.worker_id, job.attempts),
        )
        return job

    def get_job(self, job_id: str) -> Job:
        """Return a job or raise UnknownId."""
        row = self.conn.execute("select * from jobs where id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownId(f"no fine-tuning job with id {job_id!r}; list jobs to see the ids")
        return _job(row)

    def list_jobs(
        self,
        *,
        after: str | None = None,
        limit: int = 20,
        status: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> list[Job]:
        """Return jobs newest first, paged OpenAI-style with `after` = the last id of the previous page.

        `metadata` keeps only jobs whose metadata holds every given key with that value (filtered in SQL).
        """
        clauses: list[str] = []
        args: list[Any] = []
        if after:
            anchor = self.conn.execute("select created_at, rowid from jobs where id = ?", (after,)).fetchone()
            if anchor is None:
                raise UnknownId(f"no fine-tuning job with id {after!r} to page after")
            clauses.append("(created_at < ? or (created_at = ? and rowid < ?))")
            args += [anchor[0], anchor[0], anchor[1]]
        if status:
            clauses.append("status = ?")
            args.append(status)
        for key, value in (metadata or {}).items():
            clauses.append("exists (select 1 from json_each(body, '$.metadata') where key = ? and value = ?)")
            args += [key, value]
        where = f" where {' and '.join(clauses)}" if clauses else ""
        rows = self.conn.execute(
            f"select * from jobs{where} order by created_at desc, rowid desc limit ?", (*args, limit)
        )
        return [_job(r) for r in rows]

    def update_job(self, job_id: str, **fields: Any) -> Job:
        """Change a job's non-state fields (result files, output dir, trained tokens...)."""
        with db.transaction(self.conn):
            job = self.get_job(job_id)
            stray = COLUMN_FIELDS & fields.keys()
            if stray:
                raise ValueError(f"update_job cannot change {sorted(stray)}: use transition() or the lease methods")
            updated = job.model_copy(update=fields)
            self.conn.execute("update jobs set body = ? where id = ?", (_body(updated), job_id))
        return self.get_job(job_id)

    def transition(
        self,
        job_id: str,
        to: JobStatus | str,
        *,
        error: JobError | None = None,
        message: str | None = None,
        **fields: Any,
    ) -> Job:
        """Move a job to `to` if its current state allows it; else raise IllegalTransition."""
        to = JobStatus(to)
        with db.transaction(self.conn):
            job = self.get_job(job_id)
            self._check(job, to)
            self._write_state(job, to, error=error, **fields)
            if message:
                self._event(job_id, message, level="error" if to is JobStatus.failed else "info")
        return self.get_job(job_id)

    @staticmethod
    def _check(job: Job, to: JobStatus) -> None:
        if to not in TRANSITIONS[job.status]:
            allowed = ", ".join(sorted(s.value for s in TRANSITIONS[job.status])) or "none (it has finished)"
            raise IllegalTransition(
                f"job {job.id} is {job.status.value}; it cannot become {to.value} (allowed: {allowed})"
            )

    def _write_state(self, job: Job, to: JobStatus, *, error: JobError | None = None, **fields: Any) -> None:
        update: dict[str, Any] = {"status": to, **fields}
        if error is not None:
            update["error"] = error
        if to in TERMINAL:
            update["finished_at"] = int(time.time())
        body = job.model_copy(update=update)
        lease = "lease_until = null, worker_id = null," if to is not JobStatus.running else ""
        self.conn.execute(
            f"update jobs set {lease} status = ?, body = ? where id = ?",
            (to.value, _body(body), job.id),
        )

    # worker side -------------------------------------------------------------------------------
    def lease_next(self, worker_id: str, lease_seconds: float, *, job_id: str | None = None) -> Job | None:
        """Atomically take the oldest queued job (or the named one) for `worker_id`, after recovering expired leases."""
        with db.transaction(self.conn):
            self._recover_expired()
            if job_id is None:
                row = self.conn.execute(
                    "select * from jobs where status = 'queued' order by created_at, rowid limit 1"
                ).fetchone()
            else:
                row = self.conn.execute("select * from jobs where id = ? and status = 'queued'", (job_id,)).fetchone()
            if row is None:
                return None
            job = _job(row)
            now = time.time()
            body = job.model_copy(update={"started_at": job.started_at or int(now)})
            self.conn.execute(
                "update jobs set status = 'running', worker_id = ?, lease_until = ?, attempts = attempts + 1,"
                " body = ? where id = ?",
                (worker_id, now + lease_seconds, _body(body), job.id),
            )
            self._event(job.id, f"worker {worker_id} started attempt {job.attempts + 1}")
        return self.get_job(job.id)

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float) -> JobStatus | None:
        """Renew the lease; return the job's state now (cancelled/paused mean stop), None if the lease was lost."""
        with db.transaction(self.conn):
            row = self.conn.execute("select status, worker_id from jobs where id = ?", (job_id,)).fetchone()
            if row is None:
                raise UnknownId(f"no fine-tuning job with id {job_id!r}")
            status = JobStatus(row["status"])
            if status is JobStatus.running and row["worker_id"] != worker_id:
                return None
            if status is JobStatus.running:
                self.conn.execute("update jobs set lease_until = ? where id = ?", (time.time() + lease_seconds, job_id))
            return status

    def recover_expired(self) -> list[str]:
        """Re-queue or fail running jobs whose worker stopped heartbeating; return their ids."""
        with db.transaction(self.conn):
            return self._recover_expired()

    def _recover_expired(self) -> list[str]:
        rows = self.conn.execute(
            "select * from jobs where status = 'running' and lease_until < ?", (time.time(),)
        ).fetchall()
        for row in rows:
            job = _job(row)
            lost = f"worker {row['worker_id']} stopped heartbeating during attempt {job.attempts}"
            if job.attempts >= self.max_attempts:
                err = JobError(code="worker_lost", message=f"{lost}; gave up after {job.attempts} attempts")
                self._write_state(job, JobStatus.failed, error=err)
                self._event(job.id, err.message, level="error")
            else:
                self._write_state(job, JobStatus.queued)
                self._event(job.id, f"{lost}; re-queued to resume from the last checkpoint", level="warn")
        return [r["id"] for r in rows]

    # events and checkpoints ----------------------------------------------------------------------
    def add_event(
        self,
        job_id: str,
        message: str,
        *,
        level: EventLevel = "info",
        data: dict[str, Any] | None = None,
        type: EventType = "message",
    ) -> JobEvent:
        """Append an event (use type='metrics' with data={step, train_loss, learning_rate, tokens_per_second})."""
        return self._event(job_id, message, level=level, data=data, type=type)

    def _event(
        self,
        job_id: str,
        message: str,
        *,
        level: EventLevel = "info",
        data: dict[str, Any] | None = None,
        type: EventType = "message",
    ) -> JobEvent:
        event = JobEvent(
            id=new_id("ftevent"),
            created_at=int(time.time()),
            level=level,
            message=message,
            data=data,
            type=type,
        )
        self.conn.execute(
            "insert into events(id, job_id, created_at, level, message, data, type) values (?,?,?,?,?,?,?)",
            (
                event.id,
                job_id,
                event.created_at,
                event.level,
                message,
                json.dumps(data) if data else None,
                type,
            ),
        )
        return event

    def list_events(
        self,
        job_id: str,
        *,
        after: str | None = None,
        limit: int = 20,
        order: Literal["asc", "desc"] = "desc",
        type: str | None = None,
    ) -> list[JobEvent]:
        """Return a job's events; `desc` (OpenAI's order) pages backwards from `after`, `asc` tails forward."""
        self.get_job(job_id)
        clauses, args = ["job_id = ?"], [job_id]
        if after:
            seq = self.conn.execute("select seq from events where id = ?", (after,)).fetchone()
            if seq is None:
                raise UnknownId(f"no event with id {after!r}")
            clauses.append("seq < ?" if order == "desc" else "seq > ?")
            args.append(seq[0])
        if type:
            clauses.append("type = ?")
            args.append(type)
        rows = self.conn.execute(
            f"select * from events where {' and '.join(clauses)} order by seq {order} limit ?", (*args, limit)
        )
        return [_event(r) for r in rows]

    def add_checkpoint(self, job_id: str, step: int, path: str, metrics: dict[str, Any] | None = None) -> Checkpoint:
        """Record a saved checkpoint of a job."""
        ckpt = Checkpoint(
            id=new_id("ftckpt"),
            created_at=int(time.time()),
            fine_tuned_model_checkpoint=path,
            fine_tuning_job_id=job_id,
            metrics=metrics or {},
            step_number=step,
        )
        row = {"id": ckpt.id, "job_id": job_id, "created_at": ckpt.created_at, "step_number": step, "path": path}
        self.tables.table("checkpoints").insert(row | {"metrics": json.dumps(ckpt.metrics)})
        return ckpt

    def list_checkpoints(self, job_id: str, *, limit: int = 10, after: str | None = None) -> list[Checkpoint]:
        """Return a job's checkpoints, newest (highest step) first; `after` pages past a checkpoint id."""
        self.get_job(job_id)
        clauses, args = ["job_id = ?"], [job_id]
        if after:
            anchor = self.conn.execute(
                "select step_number, rowid from checkpoints where id = ? and job_id = ?", (after, job_id)
            ).fetchone()
            if anchor is None:
                raise UnknownId(f"no checkpoint with id {after!r} in job {job_id}")
            clauses.append("(step_number < ? or (step_number = ? and rowid < ?))")
            args += [anchor[0], anchor[0], anchor[1]]
        rows = self.conn.execute(
            f"select * from checkpoints where {' and '.join(clauses)} order by step_number desc, rowid desc limit ?",
            (*args, limit),
        )
        return [_checkpoint(r) for r in rows]


def _file(row: Any) -> FileObject:
    return FileObject(
        id=row["id"],
        bytes=row["bytes"],
        created_at=row["created_at"],
        filename=row["filename"],
        purpose=row["purpose"],
        status=row["status"],
        path=row["path"],
        format=row["format"],
        report=json.loads(row["report"]),
    )


def _body(job: Job) -> str:
    """Serialise a job for the `body` column, leaving out the fields that have columns of their own."""
    return job.model_dump_json(exclude=set(COLUMN_FIELDS))


def _job(row: Any) -> Job:
    columns = {"status": row["status"], "attempts": row["attempts"], "worker_id": row["worker_id"]}
    return Job.model_validate({**json.loads(row["body"]), **columns})


def _event(row: Any) -> JobEvent:
    return JobEvent(
        id=row["id"],
        created_at=row["created_at"],
        level=row["level"],
        message=row["message"],
        data=json.loads(row["data"]) if row["data"] else None,
        type=row["type"],
        seq=row["seq"],
    )


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(
        id=row["id"],
        created_at=row["created_at"],
        fine_tuned_model_checkpoint=row["path"],
        fine_tuning_job_id=row["job_id"],
        metrics=json.loads(row["metrics"]),
        step_number=row["step_number"],
    )


def fine_tuned_model_name(job: Job) -> str:
    """Return OpenAI's `ft:{base}:{org}:{suffix}:{id}` name (also the vLLM LoRA name) for a finished job."""
    base = job.model.rsplit("/", 1)[-1]
    return f"ft:{base}:{job.organization_id}:{job.user_provided_suffix or ''}:{job.id}"
