"""Fine-tune the retriever: multilingual-e5-small on (query, positive[, negative]) pairs, exported as an embedder.

Loss: multiple-negatives ranking (InfoNCE, scale 20 = temperature 0.05) over in-batch positives plus hard
negatives (the file's own, or bm25 hits mined from the collection the job names). Every layer trains except the
frozen 4-bit word embeddings (embedding_model.py). On success the layers go to RAGTUNE_HOME/embedders/<slug>/
with ragtune-embedder.json, after base and tuned were scored on held-out queries in the serving int8 engine.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.config import FinetuneSettings
from ragtune.embedders.tuned import (
    BASE_EMBEDDER,
    TunedEmbedderError,
    TunedManifest,
    load_tensors,
    resolve_embedding_base,
    save_tuned,
    tuned_dir,
)
from ragtune.jobs import Job, fine_tuned_model_name

from .base import (
    RecipeError,
    RunCallbacks,
    RunResult,
    TrainingOptions,
    TrainJob,
    config_from,
    require_format,
    resolve_learning_rate,
    write_json,
)
from .eval_report import skipped

FULL_LR = 2e-5
HINT = 'pairs records {"query": ..., "positive": ...} with an optional "negative"'


@dataclass
class EmbeddingJobConfig(TrainingOptions):
    """Options of the `embedding` recipe; max_length is the longest token sequence a text is cut to."""

    learning_rate: float = FULL_LR
    batch_size: int = 32
    max_length: int = 256
    scale: float = 20.0  # similarity scale of the InfoNCE loss (1 / temperature)
    collection: str = ""  # mine bm25 hard negatives from (and add its chunks to the evaluation corpus)
    hard_negatives: bool = True
    eval_chunks: int = 2000  # most collection chunks added to the evaluation corpus
    dropout: float = 0.1
    warmup_ratio: float = 0.1
    # Recompute each layer's activations in the backward pass: a batch of 32 pairs + negatives at 256 tokens
    # holds ~12 GB of activations without it and ~1 GB with it, for ~30% more compute.
    gradient_checkpointing: bool = True

    @property
    def per_device_batch_size(self) -> int:
        """The whole batch in one step: in-batch negatives need every pair of the batch together."""
        return max(1, int(self.batch_size))

    @property
    def gradient_accumulation_steps(self) -> int:
        """No accumulation (it would shrink the set of in-batch negatives)."""
        return 1


def config(job: TrainJob) -> EmbeddingJobConfig:
    """Resolve the job's options into an EmbeddingJobConfig."""
    options = resolve_learning_rate(job.options, FULL_LR)
    return config_from(EmbeddingJobConfig, options, seed=options.get("seed", job.job.get("seed", 0)))


def home() -> Path:
    """RAGTUNE_HOME, where tuned embedders are exported (the worker's child inherits its environment)."""
    return FinetuneSettings().home


def resolve_model(name: str | None, models_dir: Path) -> tuple[str, str]:
    """Resolve an embedding job's base: (`e5-small`, packaged file) or (tuned id, its folder)."""
    from ragtune.embedders.e5_file import ModelFileError, packaged_model_path

    try:
        base = resolve_embedding_base(name, home())
        return base, str(packaged_model_path() if base == BASE_EMBEDDER else tuned_dir(home(), base))
    except (TunedEmbedderError, ModelFileError) as e:
        raise RecipeError(str(e)) from e


def clean_pairs(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep query, positive and a usable negative (one equal to the positive teaches the wrong thing)."""
    out = []
    for rec in records:
        pair = {"query": rec["query"], "positive": rec["positive"]}
        if rec.get("negative") and " ".join(rec["negative"].split()) != " ".join(rec["positive"].split()):
            pair["negative"] = rec["negative"]
        out.append(pair)
    return out


def run(job: TrainJob, out_dir: Path, callbacks: RunCallbacks) -> RunResult:
    """Train the `embedding` recipe, score it against its base on held-out queries, export it."""
    require_format(job.records, "query", "embedding", HINT)
    cfg = config(job)
    records = clean_pairs(job.records)
    chunks: list[str] = []
    if cfg.collection:
        from .embedding_corpus import collection_chunks, mine_negatives

        if cfg.hard_negatives:
            records, mined = mine_negatives(records, cfg.collection)
            callbacks.event(
                f"mined {mined} bm25 hard negatives from collection {cfg.collection!r} for {len(records)} pairs",
                data={"kind": "hard_negatives", "mined": mined, "pairs": len(records)},
            )
        chunks = [c.text for c in collection_chunks(cfg.collection, cfg.eval_chunks)]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(
        out_dir / "config.json", {"recipe": "embedding", "base_model": job.model_name, **dataclasses.asdict(cfg)}
    )
    model, trainer, cb, seconds = train_pairs(job, records, cfg, out_dir, callbacks)
    state = trainer.state
    tokens = int(state.num_input_tokens_seen or 0)
    if cb.pause_requested:
        return RunResult(
            model_path="", trained_tokens=tokens, steps=state.global_step, final_loss=cb.last_loss, paused=True
        )
    model_id = fine_tuned_model_name(Job.model_validate(job.job))
    staging = out_dir / "embedder"
    training = {
        "pairs": len(records),
        "steps": state.global_step,
        "max_length": cfg.max_length,
        "seconds": round(seconds, 1),
    }
    manifest = TunedManifest(model_id=model_id, base_model=job.model_name, job_id=job.job.get("id"), training=training)
    save_tuned(staging, model.export(), manifest)
    report = evaluate(job, records, chunks, staging, callbacks)
    manifest = TunedManifest.model_validate(
        {**manifest.to_json(), "verdict": report["verdict"], "metrics": _manifest_metrics(report)}
    )
    target = tuned_dir(home(), model_id)
    save_tuned(staging, load_tensors(staging), manifest)
    _publish(staging, target)
    callbacks.event(f"tuned embedder {model_id} exported to {target} (verdict {manifest.verdict})")
    result = RunResult(
        model_path=str(target),
        trained_tokens=tokens,
        steps=state.global_step,
        final_loss=cb.last_loss,
        extra={"evaluation": {**report, "train_examples": len(records)}, "embedder": model_id},
    )
    return result


def train_pairs(
    job: TrainJob, records: list[dict[str, Any]], cfg: EmbeddingJobConfig, out_dir: Path, callbacks: RunCallbacks
) -> tuple[Any, Any, Any, float]:
    """Run the InfoNCE Trainer on the pairs (resuming from a checkpoint); return model, trainer, callback, seconds."""
    from datasets import Dataset
    from transformers import TrainingArguments

    from ragtune.embedders.e5_file import load_e5_file
    from ragtune.embedders.e5_tokenizer import E5Tokenizer

    from .common import device_settings, job_callback, train_resuming
    from .embedding_model import E5Trainable, InfoNCETrainer, PairCollator

    device = device_settings(job.threads)
    e5 = load_e5_file()
    init = None if job.model_name == BASE_EMBEDDER else load_tensors(Path(job.model_path))
    model = E5Trainable(e5, init, dropout=cfg.dropout)
    if cfg.gradient_checkpointing:
        enable_checkpointing(model.bert)
    save_steps = int(cfg.save_steps or 0) or 100  # a full copy of the layers (+ optimizer) per checkpoint
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        max_steps=int(cfg.max_steps or -1),
        num_train_epochs=float(cfg.n_epochs),
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=1,
        learning_rate=float(cfg.learning_rate),
        lr_scheduler_type=cfg.lr_scheduler,
        warmup_steps=int(cfg.warmup_steps) or float(cfg.warmup_ratio),  # a float below 1 is a share of the steps
        logging_steps=1,
        save_strategy="steps" if save_steps > 0 else "no",
        save_steps=max(save_steps, 1),
        save_total_limit=cfg.save_total_limit or (None if cfg.save_steps else 2),
        save_only_model=False,
        seed=int(cfg.seed),
        data_seed=int(cfg.seed),
        use_cpu=device["use_cpu"],
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        dataloader_drop_last=len(records) > cfg.per_device_batch_size,  # a batch of one has no negatives
    )
    cb = job_callback(callbacks, out_dir)
    trainer = InfoNCETrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(records),
        data_collator=PairCollator(E5Tokenizer(e5), int(cfg.max_length)),
        callbacks=[cb],
        scale=float(cfg.scale),
    )
    started = time.monotonic()
    train_resuming(trainer, out_dir, callbacks)
    return model, trainer, cb, time.monotonic() - started


def enable_checkpointing(bert: Any) -> None:
    """Turn on activation recomputation (transformers renamed the call in 5.x; both spellings work)."""
    kwargs = {"use_reentrant": False}
    bert.config.use_cache = False
    if hasattr(bert, "activation_checkpointing_enable"):
        bert.activation_checkpointing_enable(kwargs)
    else:
        bert.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def evaluate(
    job: TrainJob, records: list[dict[str, Any]], chunks: list[str], tuned_path: Path, callbacks: RunCallbacks
) -> dict[str, Any]:
    """Score base and tuned (both in the serving int8 engine) on the held-out queries; skipped without any."""
    from ragtune.embedders.fast_e5 import TorchE5
    from ragtune.embedders.tuned import TunedE5

    from .embedding_eval import RetrievalSet, rank, report

    held = [r for r in job.validation_records if r.get("query") and r.get("positive")]
    if not held:
        return skipped(job.eval_source.get("reason") or "no held-out pairs to evaluate on", job.eval_source)
    data = RetrievalSet.build(held, records, chunks)
    threads = max(1, job.threads or os.cpu_count() or 1)
    callbacks.event(
        f"evaluating base and tuned embedder on {len(data.queries)} held-out queries against {len(data.corpus)} "
        "passages (nDCG@10, Recall@100)"
    )
    started = time.monotonic()
    base: Any = TorchE5(threads=threads) if job.model_name == BASE_EMBEDDER else TunedE5(job.model_path, threads)
    tuned = TunedE5(tuned_path, threads=threads)
    base_rank = rank(data, base.embed_queries, base.embed_passages)
    tuned_rank = rank(data, tuned.embed_queries, tuned.embed_passages)
    return report(data, base_rank, tuned_rank, job.eval_source, seconds=time.monotonic() - started)


def _manifest_metrics(report: dict[str, Any]) -> dict[str, Any]:
    from .embedding_eval import manifest_metrics

    return manifest_metrics(report)


def _publish(staging: Path, target: Path) -> None:
    """Move the finished export into RAGTUNE_HOME/embedders (replacing an older export of the same id)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    shutil.move(str(staging), str(target))
