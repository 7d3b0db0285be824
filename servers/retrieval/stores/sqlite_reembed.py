"""The SQLite side of reembed (servers/retrieval/reembed.py): a staging set of new vectors beside the live ones.

`reembeds` holds one row per collection (the latest run: target embedder, state) and `reembed_vectors` the new
vectors as float32 blobs keyed by chunk id, outside the vec0 tables, so the live vectors (same dimension, same chunk
ids) keep answering searches. `reembed_switch` moves them into the live vec0 table in one transaction. The tables
are made by schema.REEMBED_MIGRATION, without foreign keys so deleting a collection is never blocked.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ragtune.servers.retrieval.schema import ensure_vec_table, vec_table
from ragtune.servers.retrieval.stores.base import PendingChunk, ReembedRow

if TYPE_CHECKING:
    import contextlib
    import threading

    from ragtune.db import Connection


class SqliteReembed:
    """Reembed primitives of SqliteStore (mixed in: it provides conn, lock, _write and _dropped)."""

    conn: Connection
    lock: threading.RLock
    closed: bool
    _dropped: set[str]

    if TYPE_CHECKING:

        def _write(self) -> contextlib.AbstractContextManager[Connection]: ...

    def reembed_begin(self, row: ReembedRow) -> ReembedRow:
        """Record a running reembed; an earlier run's staged vectors are dropped unless it has the same target."""
        with self.lock, self._write():
            old = self.reembed_get(row.collection)
            same = old is not None and (old.target_model, old.target_dim) == (row.target_model, row.target_dim)
            if old is not None and old.state == "running" and same:
                return old
            if not same:
                self.conn.execute("delete from reembed_vectors where collection = ?", (row.collection,))
            self.conn.execute(
                "insert or replace into reembeds(collection, embedder, from_model, from_dim, target_model,"
                " target_dim, target_languages, state, error, started_at, updated_at, finished_at)"
                " values (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.collection,
                    row.embedder,
                    row.from_model,
                    row.from_dim,
                    row.target_model,
                    row.target_dim,
                    json.dumps(sorted(row.target_languages)),
                    "running",
                    None,
                    row.started_at,
                    row.started_at,
                    None,
                ),
            )
        got = self.reembed_get(row.collection)
        assert got is not None
        return got

    def reembed_get(self, collection: str) -> ReembedRow | None:
        """Return the collection's latest reembed, or None."""
        with self.lock:
            r = self.conn.execute("select * from reembeds where collection = ?", (collection,)).fetchone()
        return _reembed_row(r) if r is not None else None

    def reembed_running(self) -> list[ReembedRow]:
        """Return every reembed still running (to resume them after a restart)."""
        with self.lock:
            rows = self.conn.execute("select * from reembeds where state = 'running' order by started_at").fetchall()
        return [_reembed_row(r) for r in rows]

    def reembed_claim(self, collection: str, limit: int) -> list[PendingChunk]:
        """Return up to `limit` chunks of the collection that have no staged vector yet, oldest first."""
        with self.lock:
            rows = self.conn.execute(
                "select c.id, c.text, c.heading_path, c.collection, d.title from chunks c "
                "join documents d on d.id = c.doc_id left join reembed_vectors s on s.chunk_id = c.id "
                "where c.collection = ? and s.chunk_id is null order by c.id limit ?",
                (collection, limit),
            ).fetchall()
        return [
            PendingChunk(r["id"], r["collection"], r["text"], json.loads(r["heading_path"]), r["title"]) for r in rows
        ]

    def reembed_store(self, collection: str, items: Sequence[tuple[PendingChunk, np.ndarray]]) -> int:
        """Stage new vectors for chunks that still exist (ingest may have replaced them); return how many."""
        written = 0
        with self.lock:
            if self.closed:
                return 0
            with self._write():
                for chunk, vec in items:
                    if self.conn.execute("select 1 from chunks where id = ?", (chunk.id,)).fetchone() is None:
                        continue
                    blob = np.asarray(vec, dtype=np.float32).reshape(-1).tobytes()
                    self.conn.execute(
                        "insert or replace into reembed_vectors(chunk_id, collection, embedding) values (?,?,?)",
                        (chunk.id, collection, blob),
                    )
                    written += 1
                self.conn.execute("update reembeds set updated_at = ? where collection = ?", (time.time(), collection))
        return written

    def reembed_counts(self, collection: str) -> tuple[int, int]:
        """Return (chunks, chunks with a staged vector) of the collection."""
        with self.lock:
            total, staged = self.conn.execute(
                "select count(*), count(s.chunk_id) from chunks c left join reembed_vectors s on s.chunk_id = c.id "
                "where c.collection = ?",
                (collection,),
            ).fetchone()
        return int(total), int(staged)

    def reembed_switch(self, collection: str) -> bool:
        """Swap in the staged vectors and the target embedder in one transaction; False while any chunk lacks one."""
        with self.lock:
            run = self.reembed_get(collection)
            if run is None or run.state != "running":
                return False
            with self._write():
                total, staged = self.reembed_counts(collection)
                if staged < total:
                    return False
                old = self.conn.execute("select dim from collections where name = ?", (collection,)).fetchone()
                if old is not None and old["dim"] is not None:
                    self.conn.execute(f"delete from {vec_table(old['dim'])} where collection = ?", (collection,))
                table = ensure_vec_table(self.conn, run.target_dim)
                self.conn.execute(
                    f"insert into {table}(chunk_id, embedding, collection) "
                    "select s.chunk_id, s.embedding, s.collection from reembed_vectors s "
                    "join chunks c on c.id = s.chunk_id where s.collection = ?",
                    (collection,),
                )
                self.conn.execute("update chunks set embedded = 1 where collection = ?", (collection,))
                self.conn.execute(
                    "update collections set embedder_model = ?, dim = ?, languages = ? where name = ?",
                    (run.target_model, run.target_dim, json.dumps(sorted(run.target_languages)), collection),
                )
                self.conn.execute("delete from reembed_vectors where collection = ?", (collection,))
                now = time.time()
                self.conn.execute(
                    "update reembeds set state = 'done', updated_at = ?, finished_at = ? where collection = ?",
                    (now, now, collection),
                )
                self._dropped.add(collection)  # the in-memory matrix reloads from the new vectors
        return True

    def reembed_end(self, collection: str, state: str, error: str | None = None) -> None:
        """Mark a running reembed cancelled or failed and drop its staged vectors (the live ones stay)."""
        with self.lock, self._write():
            now = time.time()
            self.conn.execute(
                "update reembeds set state = ?, error = ?, updated_at = ?, finished_at = ? "
                "where collection = ? and state = 'running'",
                (state, error, now, now, collection),
            )
            self.conn.execute("delete from reembed_vectors where collection = ?", (collection,))

    def reembed_forget(self, collection: str) -> None:
        """Delete a collection's reembed rows and staged vectors (inside delete_collection's transaction)."""
        self.conn.execute("delete from reembed_vectors where collection = ?", (collection,))
        self.conn.execute("delete from reembeds where collection = ?", (collection,))


def _reembed_row(r: Any) -> ReembedRow:
    return ReembedRow(
        collection=r["collection"],
        embedder=r["embedder"],
        from_model=r["from_model"],
        from_dim=r["from_dim"],
        target_model=r["target_model"],
        target_dim=r["target_dim"],
        target_languages=json.loads(r["target_languages"]),
        state=r["state"],
        error=r["error"],
        started_at=r["started_at"],
        updated_at=r["updated_at"],
        finished_at=r["finished_at"],
    )
