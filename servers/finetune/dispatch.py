"""Where queued jobs go: `local` (workers lease them from the job store) or `ray` (one Ray job per attempt).

The service never trains. With `local`, `python -m ragtune.servers.worker` processes poll the store; with `ray`,
each queued job is also submitted to a Ray cluster through the Ray Jobs API as
`python -m ragtune.servers.worker --once --job <id>`, which leases exactly that job from the shared store.
"""

from __future__ import annotations

import importlib
import logging
import shlex
from collections.abc import Callable
from typing import Any, Protocol

from ragtune.config import FinetuneSettings
from ragtune.jobs import Job

log = logging.getLogger(__name__)


class DispatchError(RuntimeError):
    """Raised when a job cannot be handed to its executor."""


class Dispatcher(Protocol):
    """Hands a queued job to whatever will run it; returns a note for the job's events."""

    name: str

    def submit(self, job: Job) -> str: ...


class LocalDispatcher:
    """Jobs wait in the store until a local `python -m ragtune.servers.worker` leases them."""

    name = "local"

    def submit(self, job: Job) -> str:
        """Nothing to do: workers poll the store."""
        return "queued; a worker (python -m ragtune.servers.worker) will pick it up"


class RayDispatcher:
    """Submit each queued job to a Ray cluster as a one-job worker run (needs the `ray` extra)."""

    name = "ray"

    def __init__(
        self,
        address: str | None,
        *,
        env: dict[str, str] | None = None,
        client_factory: Callable[[str | None], Any] | None = None,
    ) -> None:
        self.address = address
        self.env = env or {}
        self._factory = client_factory or _ray_client
        self._client: Any = None

    def submit(self, job: Job) -> str:
        """Submit `python -m ragtune.servers.worker --once --job <id>` and return the Ray submission id."""
        if self._client is None:
            self._client = self._factory(self.address)
        entrypoint = shlex.join(["python", "-m", "ragtune.servers.worker", "--once", "--job", job.id])
        submission = f"ragtune-{job.id}-{job.attempts + 1}"
        try:
            sid = self._client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission,
                runtime_env={"env_vars": self.env},
                metadata={"ragtune_job": job.id},
            )
        except Exception as e:  # the Ray client raises plain RuntimeError/requests errors
            raise DispatchError(f"Ray did not accept job {job.id}: {e}") from e
        return f"submitted to Ray at {self.address or 'auto'} as {sid}"


def _ray_client(address: str | None) -> Any:
    try:
        module = importlib.import_module("ray.job_submission")
    except ImportError as e:
        raise DispatchError(
            "RAGTUNE_DISPATCH=ray needs Ray: pip install 'ragtune[ray]' (or set "
            "RAGTUNE_DISPATCH=local and run python -m ragtune.servers.worker)"
        ) from e
    return module.JobSubmissionClient(address)


def make_dispatcher(settings: FinetuneSettings) -> Dispatcher:
    """Build the dispatcher RAGTUNE_DISPATCH names, passing the store location to Ray workers."""
    if settings.dispatch == "ray":
        env = {
            "RAGTUNE_HOME": str(settings.home.resolve()),
            "RAGTUNE_JOBS_DB": str(settings.db_path().resolve()),
        }
        return RayDispatcher(settings.ray_address, env=env)
    return LocalDispatcher()
