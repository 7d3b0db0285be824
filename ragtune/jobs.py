"""The fine-tuning job store shared by the job service and the workers (OpenAI's job shapes).

The service writes files and jobs; workers lease queued jobs atomically, heartbeat, append events,
metrics and checkpoints, and finish them. A job whose lease expires (its worker died) is re-queued to
resume from its last checkpoint, or failed with a reason after `max_attempts`: no job stays running.

Two backends behind one interface (`BaseJobStore`): `JobStore`, a SQLite file under RAGTUNE_HOME (the default),
and `PostgresJobStore` (ragtune/jobs_pg.py) when RAGTUNE_DATABASE_URL is set, for workers on several machines.
`ragtune.job_stores.open_job_store(settings)` picks one. Only metadata lives in the database: uploaded files,
checkpoints and job outputs stay on disk under RAGTUNE_HOME, which every machine must mount at the same path.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

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
PROMOTION_TABLE = (
    "create table if not exists promotion (slot text primary key, model text not null, job_id text not null, "
    "promoted_at integer not null, accepted_warnings text not null default '')"
)


def new_id(prefix: str) -> str:
    """Return an OpenAI-style id such as `ftjob-3fa2...`."""
    return f"{prefix}-{secrets.token_hex(12)}"


class BaseJobStore(ABC):
    """Files, jobs, events and checkpoints, written once for both engines (SQLite file or PostgreSQL).

    Subclasses give the connection: how to run one statement, how to open a transaction that serialises writers,
    and the few SQL fragments that differ (row locks, the metadata filter). Every rule lives here, so both
    backends lease, recover and page the same way (tests/ragtune/test_jobstore_contract.py runs both).
    """

    lock_row: ClassVar[str] = ""  # appended to a select that is about to update the row it reads
    skip_locked: ClassVar[str] = ""  # appended to a select that leases or recovers: other writers' rows are skipped

    def __init__(self, *, max_attempts: int = 3) -> None:
        self.max_attempts = max_attempts
        self._lock = threading.RLock()  # one connection per store: threads take turns, transactions stay whole

    @property
    @abstractmethod
    def location(self) -> str:
        """Say where the store lives (a file path, or a redacted URL) for logs and messages."""

    @abstractmethod
    def close(self) -> None:
        """Close the connection."""

    @abstractmethod
    def _execute(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """Run one statement written with `?` placeholders; return its rows (name-indexable), [] if none."""

    @abstractmethod
    def _begin(self) -> AbstractContextManager[Any]:
        """Open a transaction in which reads followed by writes cannot interleave with another writer's."""

    @abstractmethod
    def _metadata_clause(self) -> str:
        """Return a condition with two `?` (key, value) true when the job's metadata holds that pair."""

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        with self._lock, self._begin():
            yield

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._execute(sql, args)

    def _row(self, sql: str, args: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    # files -----------------------------------------------------------------------------------
    def add_file(self, file: FileObject) -> FileObject:
        """Record an uploaded, already validated file (its bytes stay on disk at `file.path`)."""
        self._rows(
            "insert into files(id, bytes, created_at, filename, purpose, status, path, format, report)"
            " values (?,?,?,?,?,?,?,?,?)",
            (
                file.id,
                file.bytes,
                file.created_at,
                file.filename,
                file.purpose,
                file.status,
                file.path,
                file.format,
                json.dumps(file.report),
            ),
        )
        return file

    def get_file(self, file_id: str) -> FileObject:
        """Return a file or raise UnknownId."""
        row = self._row("select * from files where id = ?", (file_id,))
        if row is None:
            raise UnknownId(f"no file with id {file_id!r}; list files to see the ids")
        return _file(row)

    def list_files(self, purpose: str | None = None) -> list[FileObject]:
        """Return files, newest first."""
        where, args = (" where purpose = ?", [purpose]) if purpose else ("", [])
        return [_file(r) for r in self._rows(f"select * from files{where} order by created_at desc, rowid desc", args)]

    def delete_file(self, file_id: str) -> FileObject:
        """Forget a file and remove its bytes from disk."""
        file = self.get_file(file_id)
        self._rows("delete from files where id = ?", (file_id,))
        Path(file.path).unlink(missing_ok=True)
        return file

    # jobs ------------------------------------------------------------------------------------
    def create_job(self, job: Job) -> Job:
        """Insert a new job (normally in `validating_files` or `queued`)."""
        self._rows(
            "insert into jobs(id, created_at, status, body, worker_id, attempts) values (?,?,?,?,?,?)",
            (job.id, job.created_at, job.status.value, _body(job), job.worker_id, job.attempts),
        )
        return job

    def get_job(self, job_id: str) -> Job:
        """Return a job or raise UnknownId."""
        return self._get_job(job_id)

    def _get_job(self, job_id: str, lock: str = "") -> Job:
        row = self._row(f"select * from jobs where id = ?{lock}", (job_id,))
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
            anchor = self._row("select created_at, rowid from jobs where id = ?", (after,))
            if anchor is None:
                raise UnknownId(f"no fine-tuning job with id {after!r} to page after")
            clauses.append("(created_at < ? or (created_at = ? and rowid < ?))")
            args += [anchor["created_at"], anchor["created_at"], anchor["rowid"]]
        if status:
            clauses.append("status = ?")
            args.append(status)
        for key, value in (metadata or {}).items():
            clauses.append(self._metadata_clause())
            args += [key, value]
        where = f" where {' and '.join(clauses)}" if clauses else ""
        rows = self._rows(f"select * from jobs{where} order by created_at desc, rowid desc limit ?", (*args, limit))
        return [_job(r) for r in rows]

    def update_job(self, job_id: str, **fields: Any) -> Job:
        """Change a job's non-state fields (result files, output dir, trained tokens...)."""
        stray = COLUMN_FIELDS & fields.keys()
        if stray:
            raise ValueError(f"update_job cannot change {sorted(stray)}: use transition() or the lease methods")
        with self._transaction():
            job = self._get_job(job_id, self.lock_row)
            updated = job.model_copy(update=fields)
            self._execute("update jobs set body = ? where id = ?", (_body(updated), job_id))
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
        with self._transaction():
            job = self._get_job(job_id, self.lock_row)
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
        self._execute(f"update jobs set {lease} status = ?, body = ? where id = ?", (to.value, _body(body), job.id))

    # worker side -------------------------------------------------------------------------------
    def lease_next(self, worker_id: str, lease_seconds: float, *, job_id: str | None = None) -> Job | None:
        """Atomically take the oldest queued job (or the named one) for `worker_id`, after recovering expired leases."""
        with self._transaction():
            self._recover_expired()
            if job_id is None:
                row = self._row(
                    f"select * from jobs where status = 'queued' order by created_at, rowid limit 1{self.skip_locked}"
                )
            else:
                row = self._row(f"select * from jobs where id = ? and status = 'queued'{self.lock_row}", (job_id,))
            if row is None:
                return None
            job = _job(row)
            now = time.time()
            body = job.model_copy(update={"started_at": job.started_at or int(now)})
            self._execute(
                "update jobs set status = 'running', worker_id = ?, lease_until = ?, attempts = attempts + 1,"
                " body = ? where id = ?",
                (worker_id, now + lease_seconds, _body(body), job.id),
            )
            self._event(job.id, f"worker {worker_id} started attempt {job.attempts + 1}")
        return self.get_job(job.id)

    def heartbeat(self, job_id: str, worker_id: str, lease_seconds: float) -> JobStatus | None:
        """Renew the lease; return the job's state now (cancelled/paused mean stop), None if the lease was lost."""
        with self._transaction():
            row = self._row(f"select status, worker_id from jobs where id = ?{self.lock_row}", (job_id,))
            if row is None:
                raise UnknownId(f"no fine-tuning job with id {job_id!r}")
            status = JobStatus(row["status"])
            if status is JobStatus.running and row["worker_id"] != worker_id:
                return None
            if status is JobStatus.running:
                self._execute("update jobs set lease_until = ? where id = ?", (time.time() + lease_seconds, job_id))
            return status

    def recover_expired(self) -> list[str]:
        """Re-queue or fail running jobs whose worker stopped heartbeating; return their ids."""
        with self._transaction():
            return self._recover_expired()

    def _recover_expired(self) -> list[str]:
        rows = self._execute(
            f"select * from jobs where status = 'running' and lease_until < ?{self.skip_locked}", (time.time(),)
        )
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
        with self._lock:
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
            id=new_id("ftevent"), created_at=int(time.time()), level=level, message=message, data=data, type=type
        )
        self._execute(
            "insert into events(id, job_id, created_at, level, message, data, type) values (?,?,?,?,?,?,?)",
            (event.id, job_id, event.created_at, event.level, message, json.dumps(data) if data else None, type),
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
            anchor = self._row("select seq from events where id = ?", (after,))
            if anchor is None:
                raise UnknownId(f"no event with id {after!r}")
            clauses.append("seq < ?" if order == "desc" else "seq > ?")
            args.append(anchor["seq"])
        if type:
            clauses.append("type = ?")
            args.append(type)
        direction = "desc" if order == "desc" else "asc"
        rows = self._rows(
            f"select * from events where {' and '.join(clauses)} order by seq {direction} limit ?", (*args, limit)
        )
        return [_event(r) for r in rows]

    def add_checkpoint(self, job_id: str, step: int, path: str, metrics: dict[str, Any] | None = None) -> Checkpoint:
        """Record a saved checkpoint of a job (the weights stay on disk at `path`)."""
        ckpt = Checkpoint(
            id=new_id("ftckpt"),
            created_at=int(time.time()),
            fine_tuned_model_checkpoint=path,
            fine_tuning_job_id=job_id,
            metrics=metrics or {},
            step_number=step,
        )
        self._rows(
            "insert into checkpoints(id, job_id, created_at, step_number, path, metrics) values (?,?,?,?,?,?)",
            (ckpt.id, job_id, ckpt.created_at, step, path, json.dumps(ckpt.metrics)),
        )
        return ckpt

    def list_checkpoints(self, job_id: str, *, limit: int = 10, after: str | None = None) -> list[Checkpoint]:
        """Return a job's checkpoints, newest (highest step) first; `after` pages past a checkpoint id."""
        self.get_job(job_id)
        clauses, args = ["job_id = ?"], [job_id]
        if after:
            anchor = self._row(
                "select step_number, rowid from checkpoints where id = ? and job_id = ?", (after, job_id)
            )
            if anchor is None:
                raise UnknownId(f"no checkpoint with id {after!r} in job {job_id}")
            clauses.append("(step_number < ? or (step_number = ? and rowid < ?))")
            args += [anchor["step_number"], anchor["step_number"], anchor["rowid"]]
        rows = self._rows(
            f"select * from checkpoints where {' and '.join(clauses)} order by step_number desc, rowid desc limit ?",
            (*args, limit),
        )
        return [_checkpoint(r) for r in rows]

    # promotion (ragtune/promotion.py owns the rules; the store keeps its one row per slot) -----------------------
    def get_promotion(self, slot: str) -> dict[str, Any] | None:
        """Return the promotion row of `slot` as a dict, or None."""
        row = self._row(
            "select slot, model, job_id, promoted_at, accepted_warnings from promotion where slot = ?", (slot,)
        )
        return (
            None
            if row is None
            else {k: row[k] for k in ("slot", "model", "job_id", "promoted_at", "accepted_warnings")}
        )

    def set_promotion(self, slot: str, model: str, job_id: str, promoted_at: int, accepted_warnings: str) -> None:
        """Make `model` the one promoted in `slot`, replacing the previous one."""
        self._rows(
            "insert into promotion(slot, model, job_id, promoted_at, accepted_warnings) values (?,?,?,?,?)"
            " on conflict (slot) do update set model = excluded.model, job_id = excluded.job_id,"
            " promoted_at = excluded.promoted_at, accepted_warnings = excluded.accepted_warnings",
            (slot, model, job_id, promoted_at, accepted_warnings),
        )

    def clear_promotion(self, slot: str) -> None:
        """Forget the promotion of `slot`."""
        self._rows("delete from promotion where slot = ?", (slot,))


class JobStore(BaseJobStore):
    """The SQLite job store (RAGTUNE_HOME/jobs.db): safe for several processes on one machine."""

    def __init__(self, path: Path | str, *, max_attempts: int = 3) -> None:
        super().__init__(max_attempts=max_attempts)
        self.path = Path(path)
        self.conn = db.connect(self.path, vec=False)
        db.migrate(self.conn, MIGRATIONS)
        self.conn.execute(PROMOTION_TABLE)  # kept out of the numbered migrations: older stores gain it on open
        self.tables = db.tables(self.conn)  # sqlite-utils over the same connection, for ad-hoc reads

    @property
    def location(self) -> str:
        """Return the SQLite file's path."""
        return str(self.path)

    def close(self) -> None:
        """Close the connection."""
        self.conn.close()

    def _execute(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        return self.conn.execute(sql, tuple(args)).fetchall()

    def _begin(self) -> AbstractContextManager[Any]:
        return db.transaction(self.conn)  # BEGIN IMMEDIATE: one writer at a time across processes

    def _metadata_clause(self) -> str:
        return "exists (select 1 from json_each(body, '$.metadata') where key = ? and value = ?)"


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
    """Return OpenAI's `ft:{base}:{org}:{suffix}:{id}` name (also the vLLM LoRA name) for a finished job.

    Tuning an earlier tuned model keeps the original base, as OpenAI does (never `ft:ft:...`).
    """
    base = job.model.rsplit("/", 1)[-1]
    if base.startswith("ft:") and base.count(":") >= 4:
        base = base.split(":")[1]
    return f"ft:{base}:{job.organization_id}:{job.user_provided_suffix or ''}:{job.id}"
