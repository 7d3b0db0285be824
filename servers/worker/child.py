"""The training child: runs one job's recipe in its own process, so cancel can stop it and a crash is contained.

The worker starts it as `python -m ragtune.servers.worker.child [--db FILE] --job ...` (no --db: the PostgreSQL
store at RAGTUNE_DATABASE_URL); it writes events, metrics and checkpoints to the job store itself and tells the
worker how it ended through its exit code and `result.json` / `error.json` in the job's output folder. SIGUSR1
asks it to checkpoint and stop (pause).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ragtune.servers.finetune.serving.handoff import write_job_handoff

from ragtune.config import configure_logging
from ragtune.datasets import DatasetError, load_dataset
from ragtune.job_stores import open_job_store_at
from ragtune.jobs import BaseJobStore, EventLevel, Job, fine_tuned_model_name

from .launch import rank, world_size
from .recipes import RecipeError, RunResult, TrainJob, get_recipe
from .recipes.base import write_json
from .recipes.eval_report import review
from .recipes.metrics import split_holdout
from .recipes.plot import plot_loss

EXIT_OK, EXIT_FAILED, EXIT_PAUSED, EXIT_ORPHANED = 0, 2, 3, 70
log = logging.getLogger("ragtune.worker.child")


class StoreCallbacks:
    """Report a recipe's progress into the job store (events, metrics, checkpoints); watch for pause.

    Under data parallel only rank 0 writes (one set of events and checkpoints); every rank reads the job's
    status to see a pause, since the worker's SIGUSR1 reaches only a single child, not torchrun's or Ray's ranks.
    """

    PAUSE_POLL_SECONDS = 1.0

    def __init__(self, store: BaseJobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self.pause = threading.Event()
        self.writes = rank() == 0
        self._polled = 0.0

    def event(self, message: str, *, level: EventLevel = "info", data: dict[str, Any] | None = None) -> None:
        """Append a message event."""
        if self.writes:
            self.store.add_event(self.job_id, message, level=level, data=data)

    def metrics(self, data: dict[str, Any]) -> None:
        """Append a metrics event (the SDK's list_events shows it; the service plots it)."""
        if not self.writes:
            return
        loss = data.get("train_loss")
        text = f"step {data.get('step')}/{data.get('total_steps')}" + (f": loss {loss:.4f}" if loss is not None else "")
        self.store.add_event(self.job_id, text, type="metrics", data=data)

    def checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        """Record a saved checkpoint."""
        if not self.writes:
            return
        self.store.add_checkpoint(self.job_id, step, path, metrics)
        self.store.add_event(self.job_id, f"checkpoint saved at step {step}")

    def should_pause(self) -> bool:
        """Return True once the worker has asked for a pause (SIGUSR1) or the job shows `paused` (checked each 1 s)."""
        now = time.monotonic()
        if not self.pause.is_set() and now - self._polled >= self.PAUSE_POLL_SECONDS:
            self._polled = now
            if self.store.get_job(self.job_id).status.value == "paused":
                self.pause.set()
        return self.pause.is_set()


def load_records(store: BaseJobStore, job: Job, data_format: str) -> tuple[list[dict], list[dict]]:
    """Load and validate the job's training (and validation) file into canonical records."""
    allow_prompt_only = job.method.get("type") == "rejection_sampling"
    want = None if data_format == "text" else data_format  # cpt also takes chat records (flattened)
    train = load_dataset(store.get_file(job.training_file).path, format=want, allow_prompt_only=allow_prompt_only)
    valid: list[dict] = []
    if job.validation_file:
        valid = load_dataset(store.get_file(job.validation_file).path, format=want).records
    return train.records, valid


def train(
    store: BaseJobStore, job: Job, out_dir: Path, models_dir: Path, threads: int, callbacks: StoreCallbacks
) -> RunResult:
    """Resolve the recipe, the data and the base model, then run the recipe."""
    from .recipes.common import resolve_model_path

    recipe = get_recipe(job.method.get("type", "supervised"))
    records, valid = load_records(store, job, recipe.data_format)
    records, valid, source = held_out(job, records, valid, callbacks)
    if rank() != 0:  # every rank trains on the same split; only rank 0 scores tuned vs base
        valid = []
    callbacks.event(f"loading base model {job.model}")
    if recipe.resolve_model is not None:  # not a causal LM (embedding: e5-small or a tuned embedder)
        model_name, model_path = recipe.resolve_model(job.model, models_dir)
    else:
        ref, model_path = resolve_model_path(job.model, models_dir)
        model_name = ref.name
    callbacks.event(f"training {recipe.name} on {len(records)} records with {model_name}")
    train_job = TrainJob(
        job=job.model_dump(mode="json"),
        records=records,
        model_name=model_name,
        model_path=model_path,
        threads=threads,
        validation_records=valid,
        eval_source=source,
    )
    return recipe.run(train_job, out_dir, callbacks)


def held_out(
    job: Job, records: list[dict], valid: list[dict], callbacks: StoreCallbacks
) -> tuple[list[dict], list[dict], dict[str, Any]]:
    """Pick the evaluation data: the validation file, else a seeded slice of the training file never trained on."""
    if valid:
        return records, valid, {"type": "validation_file", "file_id": job.validation_file, "count": len(valid)}
    train, held, source = split_holdout(records, job.seed)
    if not held:
        reason = f"too few training records to hold some out ({len(records)} < 10): pass a validation_file"
        callbacks.event(f"no evaluation: {reason}")
        return records, [], {**source, "reason": reason}
    callbacks.event(
        f"held out {len(held)} of {len(records)} training records for evaluation (seed {job.seed}); "
        f"training on {len(train)}",
        data={"kind": "held_out", **source},
    )
    return train, held, source


def gather_ranks(result: RunResult) -> list[dict[str, Any]]:
    """Collect what each rank trained (optimizer steps it ran, its pid and host) on every rank; one entry if alone."""
    import socket

    mine = {"rank": rank(), "steps_run": result.extra.pop("steps_run", None), "pid": os.getpid()}
    mine["host"] = socket.gethostname()
    if world_size() <= 1:
        return [mine]
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized():
        return [mine]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    return sorted(everyone, key=lambda r: r["rank"])


def watch_parent(parent: int) -> None:
    """Exit when the worker that started us is gone, so an orphan never trains a re-queued job."""

    def loop() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(EXIT_ORPHANED)
            time.sleep(0.5)

    threading.Thread(target=loop, daemon=True, name="parent-watch").start()


def main(argv: list[str] | None = None) -> int:
    """Run one job's training and exit 0 (done), 2 (failed, error.json), 3 (paused)."""
    p = argparse.ArgumentParser(prog="python -m ragtune.servers.worker.child", description=__doc__)
    p.add_argument(
        "--db",
        default=None,
        help="job store: a SQLite file or a postgresql:// URL (default: RAGTUNE_DATABASE_URL, kept out of argv)",
    )
    p.add_argument("--job", required=True, help="job id")
    p.add_argument("--out", required=True, help="the job's output folder")
    p.add_argument("--models-dir", required=True, help="cache of converted base models")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    p.add_argument("--parent-pid", type=int, default=0, help="exit when this process goes away")
    args = p.parse_args(argv)
    configure_logging(os.environ.get("RAGTUNE_LOG_LEVEL", "INFO"))
    # under torchrun our parent is its launcher, not the worker (which watches over the launcher)
    parent = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else args.parent_pid
    if parent:
        watch_parent(parent)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = args.db or os.environ.get("RAGTUNE_DATABASE_URL")
    if not target:
        p.error("no job store: pass --db FILE or set RAGTUNE_DATABASE_URL")
    store = open_job_store_at(target)
    job = store.get_job(args.job)
    callbacks = StoreCallbacks(store, job.id)
    if threading.current_thread() is threading.main_thread():  # a Ray Train worker runs us in a thread
        signal.signal(signal.SIGUSR1, lambda *_: callbacks.pause.set())
    threads = args.threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    if world_size() > 1:
        how = "Ray Train" if "TORCHELASTIC_RUN_ID" not in os.environ else "torchrun"
        callbacks.event(
            f"data parallel: {world_size()} processes ({how}), batch_size split across them",
            data={"kind": "parallel", "world_size": world_size(), "launcher": how},
        )
    try:
        result = train(store, job, out_dir, Path(args.models_dir), threads, callbacks)
    except (RecipeError, DatasetError) as e:
        if rank() == 0:
            write_json(out_dir / "error.json", {"code": "invalid_training_job", "message": str(e)})
        return EXIT_FAILED
    ranks = gather_ranks(result)
    if result.paused:
        return EXIT_PAUSED
    if rank() != 0:
        return EXIT_OK
    ids = {"job_id": job.id, "method": job.method.get("type", "supervised"), "base_model": job.model}
    evaluation, warnings = review(
        out_dir,
        result.extra.pop("evaluation", None),
        {**ids, "fine_tuned_model": fine_tuned_model_name(job)},
        callbacks,
    )
    png = plot_loss(out_dir / "metrics.jsonl", out_dir / "loss.png", title=f"{job.id} loss")
    files = [
        result.model_path,
        *([result.merged_path] if result.merged_path else []),
        *result.result_files,
        str(out_dir / "metrics.jsonl"),
        str(out_dir / "config.json"),
        *([str(png)] if png else []),
    ]
    if get_recipe(ids["method"]).resolve_model is None:  # an embedder is served by retrieval, not vLLM
        write_job_handoff(job, result.model_path, out_dir, Path(args.models_dir))  # SERVING.md
    write_json(
        out_dir / "result.json",
        {
            **result.to_json(),
            "result_files": [*files, str(out_dir / "EVAL.md")],
            "fine_tuned_model": fine_tuned_model_name(job),
            "world_size": world_size(),
            "ranks": ranks,
            "evaluation": evaluation,
            "warnings": warnings,
        },
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
