"""Re-embed a collection with another embedder in the background, then switch over in one transaction.

Storage. A collection's live vectors sit in the vector table of their dimension, keyed by chunk id, and answer
every search until the switch. A tuned e5 has the same dimension (384) as its base, so the new vectors cannot go
into that table beside the old ones (same key, same dimension). They go to a staging set instead: one per
collection and run, `reembed_vectors` (chunk id -> new vector), next to a `reembeds` row recording the target
(embedder id, model id, dimension, languages) and the state (running, done, cancelled, failed). When every chunk of
the collection has a staged vector, `store.reembed_switch` runs one transaction that deletes the old vectors, moves
the staged ones into the live table of the target dimension, and records the target embedder on the collection:
a search sees the old embedder with the old vectors or the new one with the new vectors, never a mix.

Chunks ingested meanwhile get both: a live vector from the filler (current embedder) and a staged one from here;
staged vectors of deleted or replaced chunks are left out at the switch (chunk ids are never reused). The state
lives in the index, so a restart resumes (ReembedRunner picks up every running reembed when the server starts, the
CLI resumes the same run); cancel drops the staged vectors and leaves the collection as it was. A tuned embedder
whose evaluation verdict is `worse` is refused unless force=True, so no agent or user switches to it by accident.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

import numpy as np
from ragtune.servers.retrieval.chunking import passage_text
from ragtune.servers.retrieval.errors import EmbedderMismatch, ReembedError
from ragtune.servers.retrieval.models import Coverage, ReembedInfo
from ragtune.servers.retrieval.stores.base import ReembedRow

from ragtune.embeddings import Embedder, MissingEmbedder

if TYPE_CHECKING:
    from ragtune.servers.retrieval.index import Index, Progress

log = logging.getLogger(__name__)


def start_reembed(index: Index, collection: str | None, embedder: str, *, force: bool = False) -> ReembedInfo:
    """Start (or resume, when the same target is running) re-embedding `collection` with `embedder`."""
    name = index.resolve_collection(collection)
    row = index.require_collection(name)
    if not embedder or not embedder.strip():
        raise ReembedError("name the embedder to re-embed with, e.g. e5-small, minilm or ft:e5-small:...")
    target = _target(index, embedder, force)
    running = index.store.reembed_get(name)
    if running is not None and running.state == "running" and running.target_model != target.model_id:
        raise ReembedError(
            f"collection {name!r} is being re-embedded with {running.embedder} already: wait for it, or cancel it "
            "first (retrieval_reembed_cancel / `reembed --cancel`)"
        )
    if (row.embedder_model, row.dim) == (target.model_id, target.dim):
        raise ReembedError(f"collection {name!r} already uses {target.model_id} (dim {target.dim}): nothing to do")
    now = time.time()
    run = index.store.reembed_begin(
        ReembedRow(
            collection=name,
            embedder=embedder.strip(),
            from_model=row.embedder_model,
            from_dim=row.dim,
            target_model=target.model_id,
            target_dim=target.dim,
            target_languages=sorted(target.languages),
            started_at=now,
            updated_at=now,
        )
    )
    index.reembed_wake.set()
    return describe_run(index, run)


def _target(index: Index, embedder: str, force: bool) -> Embedder:
    """Load the target embedder: unknown ids and tuned embedders that scored worse are refused, `none` too."""
    target = index.load_embedder(embedder, force=force)
    if target is None:
        raise ReembedError(
            "reembed needs an embedder to make the new vectors; for lexical-only search use mode='lexical' or a "
            "collection created with embedder 'none'"
        )
    return target


def reembed_info(index: Index, collection: str | None) -> ReembedInfo | None:
    """Describe the collection's latest reembed (None: never re-embedded)."""
    run = index.store.reembed_get(index.resolve_collection(collection))
    return describe_run(index, run) if run is not None else None


def cancel_reembed(index: Index, collection: str | None) -> ReembedInfo:
    """Cancel a running reembed: its staged vectors are dropped, the collection keeps its embedder and vectors."""
    name = index.resolve_collection(collection)
    index.require_collection(name)
    run = index.store.reembed_get(name)
    if run is None or run.state != "running":
        raise ReembedError(f"collection {name!r} has no running reembed to cancel")
    index.store.reembed_end(name, "cancelled")
    done = index.store.reembed_get(name)
    assert done is not None
    return describe_run(index, done)


def reembed_step(index: Index, collection: str, batch: int | None = None) -> ReembedInfo:
    """Embed one batch of the collection's chunks with the target embedder; switch over when none is left."""
    run = index.store.reembed_get(collection)
    if run is None:
        raise ReembedError(f"collection {collection!r} has no reembed: start one first")
    if run.state != "running":
        return describe_run(index, run)
    chunks = index.store.reembed_claim(collection, batch or index.config.embed_batch)
    if not chunks:
        if index.store.reembed_switch(collection):
            log.info("collection %r now uses %s (dim %d)", collection, run.target_model, run.target_dim)
            index.pending.set()  # chunks ingested during the switch wait for the new embedder
        run = index.store.reembed_get(collection) or run
        return describe_run(index, run)
    target = _loaded_target(index, run)
    texts = [passage_text(c.text, c.title, c.heading_path) for c in chunks]
    vectors = np.asarray(target.embed_passages(texts), dtype=np.float32)
    if vectors.shape != (len(chunks), run.target_dim):
        raise EmbedderMismatch(f"embedder returned shape {vectors.shape}, expected ({len(chunks)}, {run.target_dim})")
    index.store.reembed_store(collection, list(zip(chunks, vectors, strict=True)))
    return describe_run(index, index.store.reembed_get(collection) or run)


def _loaded_target(index: Index, run: ReembedRow) -> Embedder:
    """Load the run's target embedder; a run whose embedder is gone or changed is marked failed."""
    try:
        target = index.embedders.resolve(run.embedder)
    except (MissingEmbedder, RuntimeError) as e:
        index.store.reembed_end(run.collection, "failed", str(e))
        raise ReembedError(f"reembed of {run.collection!r} failed: {e}") from e
    if target is None or (target.model_id, target.dim) != (run.target_model, run.target_dim):
        got = f"{target.model_id} (dim {target.dim})" if target else "no embedder"
        error = f"{run.embedder} now loads {got}, not {run.target_model} (dim {run.target_dim})"
        index.store.reembed_end(run.collection, "failed", error)
        raise ReembedError(f"reembed of {run.collection!r} failed: {error}; start it again")
    return target


def run_reembed(
    index: Index,
    collection: str | None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
) -> ReembedInfo:
    """Run a started reembed batch by batch until it switches over, fails, is cancelled or `stop` is set."""
    name = index.resolve_collection(collection)
    info = _current(index, name)
    idle = stop or threading.Event()
    while info.state == "running" and not idle.is_set() and not index.closed:
        before = info.coverage.embedded
        info = reembed_step(index, name)
        if progress:
            progress(info.coverage.embedded, info.coverage.total, info.message)
        if info.state == "running" and info.coverage.embedded == before:
            idle.wait(0.5)  # another process holds the last chunks (PostgreSQL claims): do not spin
    return info


def _current(index: Index, name: str) -> ReembedInfo:
    info = reembed_info(index, name)
    if info is None:
        raise ReembedError(f"collection {name!r} has no reembed: start one first")
    return info


def describe_run(index: Index, run: ReembedRow) -> ReembedInfo:
    """Describe a run with the coverage of its new vectors."""
    if run.state == "running":
        total, staged = index.store.reembed_counts(run.collection)
        coverage = Coverage.of(staged, total)
        message = (
            f"re-embedding {run.collection!r} with {run.embedder}: {staged}/{total} chunks have new vectors; "
            f"searches use the old vectors ({run.from_model or 'none'}) until all do"
        )
    else:
        total = index.coverage(run.collection).total
        embedded = total if run.state == "done" else 0
        coverage = Coverage.of(embedded, total)
        message = {
            "done": f"{run.collection!r} now uses {run.target_model} (dim {run.target_dim})",
            "cancelled": f"re-embedding {run.collection!r} with {run.embedder} was cancelled; it keeps "
            f"{run.from_model or 'no embedder'}",
            "failed": f"re-embedding {run.collection!r} with {run.embedder} failed: {run.error}",
        }[run.state]
    return ReembedInfo(
        collection=run.collection,
        embedder=run.embedder,
        from_model=run.from_model,
        from_dim=run.from_dim,
        target_model=run.target_model,
        target_dim=run.target_dim,
        state=run.state,  # type: ignore[arg-type]
        coverage=coverage,
        error=run.error,
        started_at=run.started_at,
        updated_at=run.updated_at,
        finished_at=run.finished_at,
        message=message,
    )


class ReembedRunner:
    """A daemon thread that runs every running reembed of the index, resuming those a restart interrupted."""

    def __init__(self, index: Index, *, idle_seconds: float = 30.0, retry_seconds: float = 10.0) -> None:
        self.index = index
        self.idle_seconds = idle_seconds
        self.retry_seconds = retry_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ragtune-reembed", daemon=True)

    def start(self) -> ReembedRunner:
        """Start the thread; it sleeps until a reembed is started (or finds one left running)."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop after its current batch and wait up to `timeout` seconds."""
        self._stop.set()
        self.index.reembed_wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set() and not self.index.closed:
            self.index.reembed_wake.clear()
            try:
                running = self.index.store.reembed_running()
            except Exception:  # the index closed under us
                log.debug("reembed runner could not list runs", exc_info=True)
                return
            for run in running:
                self._one(run.collection)
            if not running:
                self.index.reembed_wake.wait(self.idle_seconds)

    def _one(self, collection: str) -> None:
        try:
            info = run_reembed(self.index, collection, stop=self._stop)
            log.info("reembed of %r: %s", collection, info.message)
        except ReembedError as e:
            log.warning("%s", e)
        except Exception:  # an endpoint down, a locked file: keep the run and retry later
            log.exception("reembed of %r failed; retrying in %.0f s", collection, self.retry_seconds)
            self._stop.wait(self.retry_seconds)
