"""The training child: runs one job's recipe in its own process, so cancel can stop it and a crash is contained.

The worker starts it as `python -m ragtune.servers.worker.child --db ... --job ...`; it writes events, metrics and
checkpoints to the job store itself and tells the worker how it ended through its exit code and
`result.json` / `error.json` in the job's output folder. SIGUSR1 asks it to checkpoint and stop (pause).
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
from ragtune.jobs import EventLevel, Job, JobStore, fine_tuned_model_name

from .recipes import RecipeError, RunResult, TrainJob, get_recipe
from .recipes.base import write_json
from .recipes.eval_report import review
from .recipes.metrics import split_holdout
from .recipes.plot import plot_loss

EXIT_OK, EXIT_FAILED, EXIT_PAUSED, EXIT_ORPHANED = 0, 2, 3, 70
log = logging.getLogger("ragtune.worker.child")


class StoreCallbacks:
    """Report a recipe's progress into the job store (events, metrics, checkpoints); watch for pause."""

    def __init__(self, store: JobStore, job_id: str) -> None:
        self.store, self.job_id = store, job_id
        self.pause = threading.Event()

    def event(self, message: str, *, level: EventLevel = "info", data: dict[str, Any] | None = None) -> None:
        """Append a message event."""
        self.store.add_event(self.job_id, message, level=level, data=data)

    def metrics(self, data: dict[str, Any]) -> None:
        """Append a metrics event (the SDK's list_events shows it; the service plots it)."""
        loss = data.get("train_loss")
        text = f"step {data.get('step')}/{data.get('total_steps')}" + (f": loss {loss:.4f}" if loss is not None else "")
        self.store.add_event(self.job_id, text, type="metrics", data=data)

    def checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        """Record a saved checkpoint."""
        self.store.add_checkpoint(self.job_id, step, path, metrics)
        self.store.add_event(self.job_id, f"checkpoint saved at step {step}")

    def should_pause(self) -> bool:
        """Return True once the worker has asked for a pause (SIGUSR1)."""
        return self.pause.is_set()


def load_records(store: JobStore, job: Job, data_format: str) -> tuple[list[dict], list[dict]]:
    """Load and validate the job's training (and validation) file into canonical records."""
    allow_prompt_only = job.method.get("type") == "rejection_sampling"
    want = None if data_format == "text" else data_format  # cpt also takes chat records (flattened)
    train = load_dataset(store.get_file(job.training_file).path, format=want, allow_prompt_only=allow_prompt_only)
    valid: list[dict] = []
    if job.validation_file:
        valid = load_dataset(store.get_file(job.validation_file).path, format=want).records
    return train.records, valid


def train(
    store: JobStore, job: Job, out_dir: Path, models_dir: Path, threads: int, callbacks: StoreCallbacks
) -> RunResult:
    """Resolve the recipe, the data and the base model, then run the recipe."""
    from .recipes.common import resolve_model_path

    recipe = get_recipe(job.method.get("type", "supervised"))
    records, valid = load_records(store, job, recipe.data_format)
    records, valid, source = held_out(job, records, valid, callbacks)
    callbacks.event(f"loading base model {job.model}")
    ref, model_path = resolve_model_path(job.model, models_dir)
    callbacks.event(f"training {recipe.name} on {len(records)} records with {ref.name}")
    train_job = TrainJob(
        job=job.model_dump(mode="json"),
        records=records,
        model_name=ref.name,
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
    p.add_argument("--db", required=True, help="job store SQLite file")
    p.add_argument("--job", required=True, help="job id")
    p.add_argument("--out", required=True, help="the job's output folder")
    p.add_argument("--models-dir", required=True, help="cache of converted base models")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (0 = all cores)")
    p.add_argument("--parent-pid", type=int, default=0, help="exit when this process goes away")
    args = p.parse_args(argv)
    configure_logging(os.environ.get("RAGTUNE_LOG_LEVEL", "INFO"))
    if args.parent_pid:
        watch_parent(args.parent_pid)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    store = JobStore(args.db)
    job = store.get_job(args.job)
    callbacks = StoreCallbacks(store, job.id)
    signal.signal(signal.SIGUSR1, lambda *_: callbacks.pause.set())
    try:
        result = train(store, job, out_dir, Path(args.models_dir), args.threads, callbacks)
    except (RecipeError, DatasetError) as e:
        write_json(out_dir / "error.json", {"code": "invalid_training_job", "message": str(e)})
        return EXIT_FAILED
    if result.paused:
        return EXIT_PAUSED
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
    write_job_handoff(job, result.model_path, out_dir, Path(args.models_dir))  # SERVING.md
    write_json(
        out_dir / "result.json",
        {
            **result.to_json(),
            "result_files": [*files, str(out_dir / "EVAL.md")],
            "fine_tuned_model": fine_tuned_model_name(job),
            "evaluation": evaluation,
            "warnings": warnings,
        },
    )
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
