"""Where queued jobs go: `local` (workers lease them from the job store) or `ray` (one Ray job per attempt).

The service never trains. With `local`, `python -m ragtune.servers.worker` processes poll the store; with `ray`,
each queued job is also submitted to a Ray cluster through the Ray Jobs API as
`python -m ragtune.servers.worker --once --job <id>`, which leases exactly that job from the shared store
(servers/finetune/ray_jobs.py). Either way the service's reaper calls `reconcile` on a timer.
"""

from __future__ import annotations

import threading
from typing import Protocol

from ragtune.config import FinetuneSettings
from ragtune.jobs import BaseJobStore as JobStore  # either backend: SQLite file or PostgreSQL
from ragtune.jobs import Job

from .ray_jobs import DispatchError, RayDispatcher, worker_env

__all__ = ["DispatchError", "Dispatcher", "LocalDispatcher", "RayDispatcher", "make_dispatcher"]


class Dispatcher(Protocol):
    """Hands a queued job to whatever will run it, stops it, and keeps the store in step with its runs."""

    name: str

    def submit(self, job: Job) -> str:
        """Hand a queued job over; return a note for the job's events."""
        ...

    def stop(self, job_id: str) -> list[str]:
        """Stop the job's runs now (cancel); return what was stopped."""
        ...

    def reconcile(self, store: JobStore, lock: threading.RLock) -> list[str]:
        """Map the executor's view of its runs onto the job store; return the job ids changed."""
        ...


class LocalDispatcher:
    """Jobs wait in the store until a local `python -m ragtune.servers.worker` leases them."""

    name = "local"

    def submit(self, job: Job) -> str:
        """Nothing to do: workers poll the store."""
        return "queued; a worker (python -m ragtune.servers.worker) will pick it up"

    def stop(self, job_id: str) -> list[str]:
        """Nothing to do: the worker sees the cancel at its next status check."""
        return []

    def reconcile(self, store: JobStore, lock: threading.RLock) -> list[str]:
        """Nothing beyond the reaper's lease recovery: the store is all there is."""
        return []


def make_dispatcher(settings: FinetuneSettings) -> Dispatcher:
    """Build the dispatcher RAGTUNE_DISPATCH names, passing the store location to Ray workers."""
    if settings.dispatch == "ray":
        token = settings.ray_token.get_secret_value() if settings.ray_token else None  # "" (compose default): none
        return RayDispatcher(
            settings.ray_address, env=worker_env(settings), python=settings.ray_python, token=token or None
        )
    return LocalDispatcher()
