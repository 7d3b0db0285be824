"""Ray Jobs dispatch: one Ray submission per attempt of a job, reconciled into the job store on a timer.

The job store stays the source of truth. A submission runs `<python> -m ragtune.servers.worker --once --job ID
--worker-id ray:<submission>` with the kit's own interpreter and RAGTUNE_* environment (a runtime env of env vars
only: nothing to download), so the training process writes events, metrics and checkpoints exactly as under a
local worker. `reconcile` maps what Ray reports back onto the job: a submission that ended while its job is still
`running` re-queues it (to resume from its checkpoint) or fails it with Ray's reason and log tail; a vanished
submission (cluster restart) counts as a lost worker; `ray job stop` cancels; cancel and pause stop the run.
"""

from __future__ import annotations

import importlib
import logging
import os
import secrets
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ragtune.config import FinetuneSettings
from ragtune.jobs import TERMINAL, IllegalTransition, Job, JobError, JobStatus
from ragtune.jobs import BaseJobStore as JobStore  # either backend: SQLite file or PostgreSQL

from .resources import parallel, parse_resources

__all__ = ["DispatchError", "RayDispatcher", "parse_resources", "resources", "worker_env"]

log = logging.getLogger(__name__)

ENDED = frozenset({"STOPPED", "SUCCEEDED", "FAILED"})
WORKER_PREFIX = "ray:"
PAUSE_GRACE_SECONDS = 150.0  # the worker saves a checkpoint and exits by itself within 120 s; then we stop the run
ENDED_GRACE_SECONDS = 60.0  # a finished job's worker exits within seconds; one still running after this is stuck
FORWARDED = ("RAGTUNE_", "HF_", "TRANSFORMERS_", "OMP_NUM_THREADS", "TOKENIZERS_PARALLELISM", "CUDA_")
SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASSWORD")


class DispatchError(RuntimeError):
    """Raised when a job cannot be handed to its executor (Ray missing, unreachable, or refusing it)."""


@dataclass(frozen=True)
class Run:
    """One Ray submission of a job, as Ray's job list reports it."""

    submission_id: str
    job_id: str
    attempts_at_submit: int
    status: str
    message: str
    start_time: int
    exit_code: int | None

    @property
    def ended(self) -> bool:
        """True once Ray's job reached STOPPED, SUCCEEDED or FAILED."""
        return self.status in ENDED

    def describe(self) -> str:
        """Say how the run ended, in Ray's words."""
        code = f", exit code {self.exit_code}" if self.exit_code is not None else ""
        return f"Ray submission {self.submission_id} is {self.status}{code}: {self.message or 'no message'}"


def worker_env(settings: FinetuneSettings, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Return the env vars a Ray submission needs to reach the same job store and model cache (no secrets)."""
    environ = dict(os.environ if environ is None else environ)
    env = {
        k: v for k, v in environ.items() if k.startswith(FORWARDED) and not any(w in k.upper() for w in SECRET_WORDS)
    }
    env["RAGTUNE_HOME"] = str(settings.home.resolve())
    env["RAGTUNE_JOBS_DB"] = str(settings.db_path().resolve())
    if settings.database():  # PostgreSQL: the Ray node's worker leases from the same database (a .env may hold it)
        env["RAGTUNE_DATABASE_URL"] = settings.database() or ""
    env["RAGTUNE_MODELS_DIR"] = str(settings.models_path().resolve())
    env.pop("RAGTUNE_DISPATCH", None)  # the worker never dispatches
    return env


def resources(job: Job) -> dict[str, float]:
    """Return the Ray entrypoint resources a job asks for (x_ragtune.resources; see resources.py)."""
    want = job.resources or {}
    if parallel(want).layout == "ray_train":  # the entrypoint only drives TorchTrainer: its workers hold the resources
        return {"entrypoint_num_cpus": 0.0}
    out: dict[str, float] = {"entrypoint_num_cpus": float(want.get("cpus", parallel(want).world_size))}
    if want.get("gpus"):
        out["entrypoint_num_gpus"] = float(want["gpus"])
    if want.get("memory_gb"):
        out["entrypoint_memory"] = int(float(want["memory_gb"]) * 1024**3)
    return out


class RayDispatcher:
    """Submit each queued job to a Ray cluster (Ray Jobs API) and keep the job store in step with Ray."""

    name = "ray"

    def __init__(
        self,
        address: str | None,
        *,
        env: dict[str, str] | None = None,
        python: str | None = None,
        token: str | None = None,
        client_factory: Callable[[str | None, dict[str, str]], Any] | None = None,
    ) -> None:
        self.address = address
        self.env = env or {}
        self.python = python or sys.executable
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._factory = client_factory or _ray_client
        self._client: Any = None
        self._lock = threading.Lock()
        self._submitted: dict[str, float] = {}  # job id -> when we last submitted it (monotonic)
        self._stopped: set[str] = set()  # submissions we stopped ourselves
        self._paused_seen: dict[str, float] = {}  # job id -> when reconcile first saw it paused with a live run
        self._ended_seen: dict[str, float] = {}  # job id -> when reconcile first saw it finished with a live run

    def client(self) -> Any:
        """Return the Ray Jobs client, creating it on first use."""
        with self._lock:
            if self._client is None:
                self._client = self._factory(self.address, self.headers)
            return self._client

    # ------------------------------------------------------------------------------------ submit / stop
    def entrypoint(self, job: Job, submission_id: str) -> str:
        """Return the shell command Ray runs: the worker's one-job entry point under the kit's interpreter."""
        argv = [self.python, "-m", "ragtune.servers.worker", "--once", "--job", job.id]
        return shlex.join([*argv, "--worker-id", WORKER_PREFIX + submission_id])

    def submit(self, job: Job) -> str:
        """Submit one attempt of `job` (submission id = job id, then `<id>-<attempt>`); return a note."""
        client = self.client()
        names = [job.id, f"{job.id}-{job.attempts + 1}", f"{job.id}-{job.attempts + 1}-{secrets.token_hex(3)}"]
        for i, sid in enumerate(names):
            try:
                client.submit_job(
                    entrypoint=self.entrypoint(job, sid),
                    submission_id=sid,
                    runtime_env={"env_vars": self.env},
                    metadata={"ragtune_job": job.id, "ragtune_attempts": str(job.attempts)},
                    **resources(job),
                )
            except Exception as e:  # the Ray client raises plain RuntimeError/requests errors
                if "already exists" in str(e) and i < len(names) - 1:
                    continue
                raise DispatchError(f"Ray at {self.address or 'auto'} did not accept job {job.id}: {e}") from e
            self._submitted[job.id] = time.monotonic()
            asked = ", ".join(f"{k.removeprefix('entrypoint_')}={v:g}" for k, v in resources(job).items())
            return f"submitted to Ray at {self.address or 'auto'} as {sid} ({asked})"
        raise AssertionError("unreachable")

    def stop(self, job_id: str) -> list[str]:
        """Stop every live Ray submission of a job (cancel); return the submission ids stopped."""
        stopped = []
        for run in self.runs().get(job_id, []):
            if not run.ended:
                self._stop(run)
                stopped.append(run.submission_id)
        return stopped

    def _stop(self, run: Run) -> None:
        self._stopped.add(run.submission_id)
        try:
            self.client().stop_job(run.submission_id)
        except Exception as e:
            log.warning("could not stop Ray submission %s: %s", run.submission_id, e)

    def logs_tail(self, submission_id: str, lines: int = 12, limit: int = 1500) -> str:
        """Return the last lines of a submission's log (the reason a crash gives)."""
        try:
            text = self.client().get_job_logs(submission_id)
        except Exception as e:
            return f"(no logs: {e})"
        kept = [ln for ln in text.splitlines() if ln.strip()][-lines:]
        return "\n".join(kept)[-limit:] or "(empty log)"

    # ------------------------------------------------------------------------------------ reconcile
    def runs(self) -> dict[str, list[Run]]:
        """Return ragtune's submissions on the cluster by job id, oldest first (raises DispatchError)."""
        try:
            details = self.client().list_jobs()
        except Exception as e:
            raise DispatchError(f"cannot list Ray jobs at {self.address or 'auto'}: {e}") from e
        out: dict[str, list[Run]] = {}
        for d in details:
            meta = d.metadata or {}
            if "ragtune_job" not in meta or not d.submission_id:
                continue
            run = Run(
                submission_id=d.submission_id,
                job_id=meta["ragtune_job"],
                attempts_at_submit=int(meta.get("ragtune_attempts", 0)),
                status=str(getattr(d.status, "value", d.status)),
                message=d.message or "",
                start_time=int(d.start_time or 0),
                exit_code=d.driver_exit_code,
            )
            out.setdefault(run.job_id, []).append(run)
        for runs in out.values():
            runs.sort(key=lambda r: r.start_time)
        return out

    def reconcile(self, store: JobStore, lock: threading.RLock) -> list[str]:
        """Map Ray's view of every submission onto the jobs it runs; return the job ids changed or resubmitted."""
        listed_at = time.monotonic()
        try:
            runs = self.runs()
        except DispatchError as e:
            log.warning("%s; job states are kept as they are until Ray answers", e)
            return []
        changed: list[str] = []
        with lock:
            jobs = [j for s in ("queued", "running", "paused") for j in store.list_jobs(status=s, limit=10_000)]
        for job in jobs:
            job_runs = runs.get(job.id, [])
            try:
                if self._reconcile_job(store, lock, job, job_runs, listed_at):
                    changed.append(job.id)
            except IllegalTransition as e:  # the worker moved the job meanwhile: its word wins
                log.info("job %s moved on while reconciling with Ray: %s", job.id, e)
        known = {j.id for j in jobs}
        for job_id, job_runs in runs.items():  # a run still alive after its job ended: stop it (after a grace)
            live = [r for r in job_runs if not r.ended and r.submission_id not in self._stopped]
            if job_id in known or not live:
                continue
            with lock:
                status = _status(store, job_id)
            if status is None or status not in TERMINAL:
                continue
            since = self._ended_seen.setdefault(job_id, time.monotonic())
            # cancelled: stop now (cancel_job already did unless the service restarted); succeeded/failed: the
            # worker is exiting by itself, so only a run still there after the grace is stopped
            if status is JobStatus.cancelled or time.monotonic() - since > ENDED_GRACE_SECONDS:
                for run in live:
                    self._stop(run)
                changed.append(job_id)
        return changed

    def _reconcile_job(
        self, store: JobStore, lock: threading.RLock, job: Job, runs: list[Run], listed_at: float
    ) -> bool:
        latest = runs[-1] if runs else None
        if job.status is JobStatus.paused:
            return self._stop_paused(job, runs)
        self._paused_seen.pop(job.id, None)
        if job.status is JobStatus.queued:
            if self._submitted.get(job.id, 0.0) > listed_at or (latest and not latest.ended):
                return False  # submitted after we listed, or waiting in Ray's queue / starting up
            if latest is None:
                note = "no Ray submission found for this queued job (cluster restarted?); submitting it again"
            elif latest.status == "STOPPED" and latest.submission_id not in self._stopped:
                return self._cancel(store, lock, job, f"stopped in Ray ({latest.describe()})")
            elif latest.attempts_at_submit >= job.attempts:  # the run never leased the job: it could not start
                return self._fail(store, lock, job, "ray_submission_failed", self._why(latest, "before it started"))
            else:
                note = f"{latest.describe()}; submitting attempt {job.attempts + 1}"
            with lock:
                store.add_event(job.id, note, level="warn")
                fresh = store.get_job(job.id)
                if fresh.status is not JobStatus.queued:
                    return False
            with lock:
                try:
                    store.add_event(job.id, self.submit(fresh))
                except DispatchError as e:
                    store.add_event(job.id, f"{e}; retrying at the next reconcile", level="warn")
            return True
        # running
        if not (job.worker_id or "").startswith(WORKER_PREFIX):
            return False  # a local worker holds it: its lease decides
        sid = (job.worker_id or "")[len(WORKER_PREFIX) :]
        run = next((r for r in runs if r.submission_id == sid), None)
        if run is not None and not run.ended:
            return False
        if run is None:
            return self._requeue_or_fail(
                store, lock, job, f"its Ray submission {sid} vanished (cluster restart or node loss)"
            )
        if run.status == "SUCCEEDED":
            return self._fail(store, lock, job, "ray_job_exited", self._why(run, "but the job was not finished"))
        if run.status == "STOPPED" and run.submission_id not in self._stopped:
            return self._cancel(store, lock, job, f"stopped in Ray ({run.describe()})")
        return self._requeue_or_fail(store, lock, job, self._why(run, "while training"))

    def _why(self, run: Run, when: str) -> str:
        return f"{run.describe()} {when}; log tail:\n{self.logs_tail(run.submission_id)}"

    def _stop_paused(self, job: Job, runs: list[Run]) -> bool:
        live = [r for r in runs if not r.ended and r.submission_id not in self._stopped]
        if not live:
            self._paused_seen.pop(job.id, None)
            return False
        first = self._paused_seen.setdefault(job.id, time.monotonic())
        if time.monotonic() - first < PAUSE_GRACE_SECONDS:
            return False  # the worker is saving a checkpoint; it exits by itself
        for run in live:
            self._stop(run)
        return True

    def _requeue_or_fail(self, store: JobStore, lock: threading.RLock, job: Job, reason: str) -> bool:
        with lock:
            if job.attempts >= store.max_attempts:
                msg = f"{reason}; gave up after {job.attempts} attempts"
                store.transition(job.id, JobStatus.failed, error=JobError(code="worker_lost", message=msg), message=msg)
                return True
            store.transition(
                job.id, JobStatus.queued, message=f"{reason}; re-queued to resume from the last checkpoint"
            )
            queued = store.get_job(job.id)
            try:
                store.add_event(job.id, self.submit(queued))
            except DispatchError as e:
                store.add_event(job.id, f"{e}; retrying at the next reconcile", level="warn")
        return True

    @staticmethod
    def _fail(store: JobStore, lock: threading.RLock, job: Job, code: str, reason: str) -> bool:
        with lock:
            store.transition(job.id, JobStatus.failed, error=JobError(code=code, message=reason), message=reason)
        return True

    @staticmethod
    def _cancel(store: JobStore, lock: threading.RLock, job: Job, reason: str) -> bool:
        with lock:
            store.transition(job.id, JobStatus.cancelled, message=f"cancelled: {reason}")
        return True


def _status(store: JobStore, job_id: str) -> JobStatus | None:
    try:
        return store.get_job(job_id).status
    except KeyError:
        return None


def _ray_client(address: str | None, headers: dict[str, str]) -> Any:
    try:
        module = importlib.import_module("ray.job_submission")
    except ImportError as e:
        raise DispatchError(
            "RAGTUNE_DISPATCH=ray needs Ray: pip install 'ragtune[ray]' (or set "
            "RAGTUNE_DISPATCH=local and run python -m ragtune.servers.worker)"
        ) from e
    try:
        return module.JobSubmissionClient(address, headers=headers or None)
    except Exception as e:  # unreachable head, refused token: one line with the setting to check
        raise DispatchError(f"cannot reach the Ray Jobs API at {address or 'auto'} (RAGTUNE_RAY_ADDRESS): {e}") from e
