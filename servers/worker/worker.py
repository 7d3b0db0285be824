"""The worker loop: lease a queued job, train it in a child process, heartbeat, obey cancel/pause, finish it.

No torch here: the child (servers/worker/child.py) imports the recipes' training libraries, so a crash,
an out-of-memory kill or a cancel never takes the worker down. Several workers may share one store.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ragtune.config import WorkerSettings
from ragtune.job_stores import open_job_store
from ragtune.jobs import BaseJobStore, IllegalTransition, Job, JobError, JobStatus, JobStore
from ragtune.models import UnknownModel, resolve_base_model

from .child import EXIT_FAILED, EXIT_OK, EXIT_PAUSED
from .launch import command as launch_command
from .recipes import RecipeError, get_recipe

log = logging.getLogger("ragtune.worker")
STATUS_POLL_SECONDS = 0.25
STOP_GRACE_SECONDS = 5.0
PAUSE_GRACE_SECONDS = 120.0


class Worker:
    """Lease jobs from a JobStore and supervise their training child processes."""

    def __init__(
        self, settings: WorkerSettings, store: BaseJobStore | None = None, *, progress: bool | None = None
    ) -> None:
        self.settings = settings
        self.store = store or open_job_store(settings)
        self.worker_id = settings.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.progress = sys.stdout.isatty() if progress is None else progress
        self.stop = threading.Event()
        self.child: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------------------------------ loop
    def run(self, *, once: bool = False, max_jobs: int | None = None, job_id: str | None = None) -> int:
        """Process jobs until stopped (or one with `once`, N with `max_jobs`, exactly `job_id`); return the count."""
        done = 0
        while not self.stop.is_set():
            job = self.lease(job_id) if job_id else self.store.lease_next(self.worker_id, self.settings.lease_seconds)
            if job is None:
                if once or job_id:
                    break
                self.stop.wait(self.settings.poll_seconds)
                continue
            try:
                self.run_job(job)
            except Exception as e:  # the loop is a process boundary: one bad job must not stop the worker
                log.exception("job %s broke the worker loop", job.id)
                self._fail(job.id, "worker_error", f"the worker could not run this job: {e}")
            done += 1
            if once or job_id or (max_jobs and done >= max_jobs):
                break
        return done

    def lease(self, job_id: str) -> Job | None:
        """Lease one named job if it is queued (Ray dispatch runs `--job ID`); None when it is not."""
        job = self.store.lease_next(self.worker_id, self.settings.lease_seconds, job_id=job_id)
        if job is None:
            log.warning("job %s is %s, not queued: nothing to run", job_id, self.store.get_job(job_id).status.value)
        return job

    # ------------------------------------------------------------------------------------------ one job
    def run_job(self, job: Job) -> Job:
        """Train one leased job to its end (succeeded, failed, cancelled, paused or lost) and return it."""
        out_dir = Path(job.output_dir or self.settings.data_path("jobs") / job.id)
        if job.output_dir != str(out_dir):
            job = self.store.update_job(job.id, output_dir=str(out_dir))
        try:
            recipe = get_recipe(job.method.get("type", "supervised"))
            if recipe.resolve_model is None:
                resolve_base_model(job.model)
            else:
                recipe.resolve_model(job.model, self.settings.models_path())
        except RecipeError as e:
            return self._fail(job.id, "invalid_method", str(e))
        except UnknownModel as e:
            return self._fail(job.id, "model_not_found", str(e))
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("result.json", "error.json"):
            (out_dir / stale).unlink(missing_ok=True)
        log.info("training job %s (%s) in %s", job.id, job.method.get("type"), out_dir)
        rc, ended = self._supervise(job, out_dir)
        return self._finish(job.id, rc, ended, out_dir)

    def _command(self, job: Job, out_dir: Path) -> list[str]:
        # A SQLite store is named by its path; a PostgreSQL URL (it holds a password) goes by env, never argv.
        db = ["--db", str(self.store.path)] if isinstance(self.store, JobStore) else []
        return [
            sys.executable,
            "-P",  # the installed ragtune, never a same-named folder in the cwd
            "-m",
            "ragtune.servers.worker.child",
            *db,
            "--job",
            job.id,
            "--out",
            str(out_dir),
            "--models-dir",
            str(self.settings.models_path()),
            "--threads",
            str(self.settings.train_threads),
            "--parent-pid",
            str(os.getpid()),
        ]

    def _child_env(self) -> dict[str, str]:
        """Return the child's environment: ours, plus the PostgreSQL URL when the store is there."""
        env = dict(os.environ)
        if not isinstance(self.store, JobStore):
            env["RAGTUNE_DATABASE_URL"] = getattr(self.store, "url", None) or self.settings.database() or ""
        return env

    def _supervise(self, job: Job, out_dir: Path) -> tuple[int | None, str]:
        """Run the child, heartbeating; return its exit code (None if we stopped it) and why it ended."""
        with (out_dir / "train.log").open("ab") as logf:
            self.child = proc = subprocess.Popen(  # the worker's own environment and cwd: no repository root needed
                launch_command(self._command(job, out_dir), job),  # torchrun / Ray Train for data parallel
                env=self._child_env(),
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        bar = _Progress(self.store, job.id) if self.progress else None
        last_beat, pause_sent = 0.0, 0.0
        try:
            while True:
                try:
                    return proc.wait(timeout=STATUS_POLL_SECONDS), "exited"
                except subprocess.TimeoutExpired:
                    pass
                if bar:
                    bar.update()
                now = time.monotonic()
                if now - last_beat >= self.settings.heartbeat_seconds:
                    last_beat = now
                    status = self.store.heartbeat(job.id, self.worker_id, self.settings.lease_seconds)
                else:
                    status = self.store.get_job(job.id).status
                # queued while we run it: the reaper took the job back (we missed our lease, e.g. frozen)
                if status is None or status is JobStatus.queued or self.stop.is_set():
                    self._terminate(proc)
                    return None, "lease lost" if status in (None, JobStatus.queued) else "worker stopping"
                if status is JobStatus.cancelled:
                    self._terminate(proc)
                    return None, "cancelled"
                if status is JobStatus.paused and not pause_sent:
                    pause_sent = now
                    proc.send_signal(signal.SIGUSR1)
                    self.store.add_event(job.id, "pause requested: saving a checkpoint, then stopping")
                if pause_sent and now - pause_sent > PAUSE_GRACE_SECONDS:
                    self._terminate(proc)
                    return None, "paused"
        finally:
            if bar:
                bar.close()
            self.child = None

    @staticmethod
    def _terminate(proc: subprocess.Popen[bytes]) -> None:
        """Stop the child: SIGTERM, then SIGKILL after a short grace."""
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_GRACE_SECONDS)

    def _finish(self, job_id: str, rc: int | None, ended: str, out_dir: Path) -> Job:
        """Record how the child ended: success, failure with its reason, or the stop the user asked for."""
        job = self.store.get_job(job_id)
        if ended == "cancelled" or job.status is JobStatus.cancelled:
            self.store.add_event(job_id, "training stopped: the job was cancelled")
            return job
        if ended == "worker stopping" and job.status is JobStatus.running:
            return self.store.transition(
                job_id,
                JobStatus.queued,
                worker_id=None,
                message=f"worker {self.worker_id} stopped; re-queued to resume from the last checkpoint",
            )
        if ended == "lease lost":
            lost = "training stopped: this worker lost its lease (re-queued, or another worker holds it)"
            self.store.add_event(job_id, lost, level="warn")
            return job
        if rc == EXIT_PAUSED or job.status is JobStatus.paused:
            ckpt = next(iter(self.store.list_checkpoints(job_id, limit=1)), None)
            where = f"step {ckpt.step_number}" if ckpt else "the start (no checkpoint yet)"
            self.store.add_event(job_id, f"paused; resume continues from {where}")
            return job
        if rc == EXIT_OK and (out_dir / "result.json").exists():
            return self._succeed(job_id, json.loads((out_dir / "result.json").read_text()))
        if rc == EXIT_FAILED and (out_dir / "error.json").exists():
            err = json.loads((out_dir / "error.json").read_text())
            return self._fail(job_id, err.get("code", "invalid_training_job"), err["message"])
        return self._fail(
            job_id,
            "training_crashed",
            f"the training process exited with code {rc}: {_tail(out_dir / 'train.log')}",
        )

    def _succeed(self, job_id: str, result: dict[str, Any]) -> Job:
        warnings = result.get("warnings") or []
        done = f"{result['steps']} steps, final loss {result['final_loss']}, model at {result['model_path']}"
        try:
            job = self.store.transition(
                job_id,
                JobStatus.succeeded,
                fine_tuned_model=result["fine_tuned_model"],
                result_files=result["result_files"],
                trained_tokens=result["trained_tokens"],
                evaluation=result.get("evaluation"),
                warnings=warnings,
                message=None if warnings else f"job succeeded: {done}",
            )
        except IllegalTransition as e:
            log.warning("job %s finished training but could not be marked succeeded: %s", job_id, e)
            return self.store.get_job(job_id)
        if warnings:  # still succeeded (it ran), but never silently: the last event says what is wrong
            why = "; ".join(w["message"] for w in warnings)
            self.store.add_event(job_id, f"job succeeded with warnings: {why} ({done})", level="warn")
        return job

    def _fail(self, job_id: str, code: str, message: str) -> Job:
        try:
            return self.store.transition(
                job_id,
                JobStatus.failed,
                error=JobError(code=code, message=message),
                message=f"job failed: {message}",
            )
        except IllegalTransition as e:
            log.warning("job %s failed (%s) but its state moved on: %s", job_id, message, e)
            return self.store.get_job(job_id)


def _tail(path: Path, lines: int = 8, limit: int = 1500) -> str:
    """Return the last lines of the child's log: the reason a crash gives."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    interesting = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join(interesting)[-limit:] or "(empty log)"


class _Progress:
    """A tqdm bar fed by the job's metrics events (only when stdout is a terminal)."""

    def __init__(self, store: BaseJobStore, job_id: str) -> None:
        from tqdm import tqdm

        self.store, self.job_id = store, job_id
        self.after: str | None = None
        self.bar = tqdm(desc=job_id, unit="step", dynamic_ncols=True)

    def update(self) -> None:
        """Advance the bar to the newest logged step."""
        for ev in self.store.list_events(self.job_id, after=self.after, order="asc", type="metrics", limit=100):
            self.after = ev.id
            data = ev.data or {}
            if data.get("total_steps"):
                self.bar.total = data["total_steps"]
            self.bar.n = int(data.get("step") or self.bar.n)
            self.bar.set_postfix(loss=data.get("train_loss"), tok_s=data.get("tokens_per_second"), refresh=False)
            self.bar.refresh()

    def close(self) -> None:
        """Close the bar."""
        self.bar.close()
