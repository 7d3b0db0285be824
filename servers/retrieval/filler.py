"""Fill missing vectors in a background thread, so ingest returns as soon as text is searchable lexically.

Each collection is filled with its own embedder (Index.embed_pending); one this process cannot load waits.
"""

from __future__ import annotations

import logging
import threading
import time

from ragtune.servers.retrieval import heartbeat
from ragtune.servers.retrieval.index import Index

log = logging.getLogger(__name__)


class VectorFiller:
    """A daemon thread that embeds pending chunks batch by batch whenever the index signals new work."""

    def __init__(self, index: Index, *, idle_seconds: float = 30.0, retry_seconds: float = 10.0) -> None:
        self.index = index
        self.idle_seconds = idle_seconds
        self.retry_seconds = retry_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ragtune-vector-filler", daemon=True)
        self._last_beat = 0.0

    def start(self) -> VectorFiller:
        """Start the thread: it fills every collection whose own embedder this process loads (even with no default)."""
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Ask the thread to stop after its current batch and wait up to `timeout` seconds."""
        self._stop.set()
        self.index.pending.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        heartbeat.clear(self.index.beat_target)

    def _beat(self, embedding: bool, pending: int | None = None) -> None:
        """Tell other processes (`status` in another shell) that this server fills vectors; never fails the loop."""
        try:
            count = self.index.pending_count() if pending is None else pending
            heartbeat.beat(self.index.beat_target, embedding=embedding, pending=count)
            self._last_beat = time.monotonic()
        except Exception:  # a read-only folder must not stop the filling itself
            log.debug("vector filler heartbeat failed", exc_info=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.index.closed:
                self._beat(embedding=False)
            self.index.pending.wait(self.idle_seconds)
            self.index.pending.clear()
            if self._stop.is_set() or self.index.closed:
                return
            try:
                self.index.embedding = True
                self._beat(embedding=True)
                done = self.index.embed_pending(progress=self._progress, stop=self._stop)
                if done:
                    log.info("vector filler embedded %d chunks", done)
            except Exception:  # keep serving lexical search; retry later
                log.exception("vector filler failed; retrying in %.0f s", self.retry_seconds)
                self._stop.wait(self.retry_seconds)
                self.index.pending.set()
            finally:
                self.index.embedding = False

    def _progress(self, done: float, total: float | None, message: str) -> None:
        log.debug("vector filler: %s", message)
        if time.monotonic() - self._last_beat > 2.0:
            self._beat(embedding=True, pending=int((total or done) - done))
