"""Which models exist: the engine's base models plus every succeeded job's `fine_tuned_model` whose weights remain."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Literal

from ragtune.servers.finetune.service import FinetuneService, ServiceError

from ragtune.jobs import Job, JobStatus
from ragtune.models import UnknownModel, resolve_base_model

from .engine import ServedModel, ServingError

DELETED_MARK = "DELETED"


def not_found(model_id: str, why: str = "") -> ServingError:
    """Return the 404 OpenAI answers for an unknown model."""
    return ServingError(
        404,
        f"the model {model_id!r} does not exist{why}; GET /v1/models lists the base and tuned models",
        param="model",
        code="model_not_found",
    )


def tuned_model(job: Job) -> ServedModel | None:
    """Return the served model of a succeeded job, or None when it has no weights (any more)."""
    if job.status is not JobStatus.succeeded or not job.fine_tuned_model or not job.result_files:
        return None
    weights = Path(job.result_files[0])
    if not (weights / "config.json").exists() and not (weights / "adapter_config.json").exists():
        return None
    kind: Literal["lora", "full"] = "lora" if (weights / "adapter_config.json").exists() else "full"
    try:
        base = resolve_base_model(job.model).name
    except UnknownModel:
        base = job.model
    created = job.finished_at or job.created_at
    return ServedModel(job.fine_tuned_model, kind, created, base, str(weights), job.id)


class Catalog:
    """List, find and delete models over the fine-tuning service's job store."""

    def __init__(self, service: FinetuneService, base_names: list[str]) -> None:
        self.service = service
        self.base_names = base_names

    def bases(self) -> list[ServedModel]:
        """Return the base models."""
        return [ServedModel(name, "base", _created(name), name) for name in self.base_names]

    def tuned(self) -> list[ServedModel]:
        """Return every tuned model with weights, newest first."""
        found, after = [], None
        while True:
            page = self.service.list_jobs(after=after, limit=100, status=JobStatus.succeeded.value)
            found += [m for m in map(tuned_model, page.data) if m]
            if not page.has_more or not page.data:
                return found
            after = page.data[-1].id

    def all(self) -> list[ServedModel]:
        """Return base models, then tuned ones."""
        return self.bases() + self.tuned()

    def get(self, model_id: str) -> ServedModel:
        """Return a model by id or raise a 404 `model_not_found`."""
        base = self._base(model_id)
        if base is not None:
            return base
        job = self._job(model_id)
        model = tuned_model(job) if job else None
        if model is None:
            gone = job is not None and job.output_dir and (Path(job.output_dir) / DELETED_MARK).exists()
            raise not_found(model_id, " (it was deleted)" if gone else "")
        return model

    def delete(self, model_id: str) -> ServedModel:
        """Delete a tuned model's weights (adapter, full or merged folders); base models stay."""
        if self._base(model_id) is not None:
            raise ServingError(
                400,
                f"{model_id!r} is a base model and cannot be deleted; only tuned models (ft:...) can",
                param="model",
                code="model_not_deletable",
            )
        model = self.get(model_id)
        job = self._job(model_id)
        assert job is not None  # get() found it
        for path in job.result_files:
            folder = Path(path)
            if folder.is_dir() and folder.name in ("adapter", "model", "merged"):
                shutil.rmtree(folder, ignore_errors=True)
        if job.output_dir:
            (Path(job.output_dir) / DELETED_MARK).write_text(f"{model_id} deleted at {int(time.time())}\n")
        return model

    def _base(self, model_id: str) -> ServedModel | None:
        """Return the base model `model_id` names (aliases such as `smollm2` included), if it is one."""
        name = model_id
        if model_id not in self.base_names and not model_id.startswith("ft:"):
            try:
                name = resolve_base_model(model_id, allow_hub=False).name
            except UnknownModel:
                return None
        return ServedModel(name, "base", _created(name), name) if name in self.base_names else None

    def _job(self, model_id: str) -> Job | None:
        if not model_id.startswith("ft:"):
            return None
        try:
            job = self.service.get_job(model_id.rsplit(":", 1)[-1])
        except ServiceError:
            return None
        return job if job.fine_tuned_model == model_id else None


def _created(name: str) -> int:
    try:
        return int(Path(resolve_base_model(name).path).stat().st_mtime)
    except (UnknownModel, OSError):
        return 0
