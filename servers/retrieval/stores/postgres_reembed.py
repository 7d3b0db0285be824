"""The PostgreSQL side of reembed (servers/retrieval/reembed.py): new vectors staged beside the live ones.

Same contract as stores/sqlite_reembed.py: `reembeds` holds the latest run per collection, `reembed_vectors` the
new vectors (an untyped `vector`, any dimension, no HNSW: it is only read back by the switch), keyed by chunk id
with foreign keys that cascade, so deleting a chunk or a collection takes its staged rows along. Replicas claim
chunks to re-embed with FOR UPDATE SKIP LOCKED and a lease (`chunks.reembed_claimed_until`), as the filler does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ragtune.servers.retrieval.stores.base import PendingChunk, ReembedRow

MIGRATION = """
create table reembeds (
  collection text primary key references collections(name) on delete cascade,
  embedder text not null,
  from_model text,
  from_dim integer,
  target_model text not null,
  target_dim integer not null,
  target_languages jsonb not null default '[]',
  state text not null,
  error text,
  started_at double precision not null,
  updated_at double precision not null,
  finished_at double precision
);
create table reembed_vectors (
  chunk_id bigint primary key references chunks(id) on delete cascade,
  collection text not null,
  embedding vector not null
);
create index reembed_vectors_collection on reembed_vectors(collection);
alter table chunks add column reembed_claimed_until double precision;
"""
CLAIM_SECONDS = 600.0
_COLUMNS = (
    "collection, embedder, from_model, from_dim, target_model, target_dim, target_languages, state, error, "
    "started_at, updated_at, finished_at"
)


class PostgresReembed:
    """Reembed primitives of PostgresStore (mixed in: it provides _conn, _bump and _ensure_vec_table)."""

    def _conn(self) -> Any:
        raise NotImplementedError

    def _bump(self, conn: Any, name: str, chunks: int = 0, embedded: int = 0, n_tokens: int = 0) -> None:
        raise NotImplementedError

    def _ensure_vec_table(self, conn: Any, dim: int) -> str:
        raise NotImplementedError

    def reembed_begin(self, row: ReembedRow) -> ReembedRow:
        """Record a running reembed; an earlier run's staged vectors are dropped unless it has the same target."""
        conn = self._conn()
        with conn.transaction():
            conn.execute("select 1 from collections where name = %s for update", (row.collection,))
            old = self._reembed_get(conn, row.collection, lock=True)
            same = old is not None and (old.target_model, old.target_dim) == (row.target_model, row.target_dim)
            if old is not None and old.state == "running" and same:
                return old
            if not same:
                conn.execute("delete from reembed_vectors where collection = %s", (row.collection,))
            conn.execute(
                f"insert into reembeds({_COLUMNS}) values (%s, %s, %s, %s, %s, %s, %s, 'running', null, %s, %s, null) "
                "on conflict (collection) do update set embedder = excluded.embedder, from_model = excluded.from_model,"
                " from_dim = excluded.from_dim, target_model = excluded.target_model, target_dim = excluded.target_dim,"
                " target_languages = excluded.target_languages, state = 'running', error = null, started_at = "
                "excluded.started_at, updated_at = excluded.updated_at, finished_at = null",
                (
                    row.collection,
                    row.embedder,
                    row.from_model,
                    row.from_dim,
                    row.target_model,
                    row.target_dim,
                    json.dumps(sorted(row.target_languages)),
                    row.started_at,
                    row.started_at,
                ),
            )
            got = self._reembed_get(conn, row.collection)
        assert got is not None
        return got

    def _reembed_get(self, conn: Any, collection: str, *, lock: bool = False) -> ReembedRow | None:
        sql = f"select {_COLUMNS} from reembeds where collection = %s" + (" for update" if lock else "")
        r = conn.execute(sql, (collection,)).fetchone()
        return _row(r) if r is not None else None

    def reembed_get(self, collection: str) -> ReembedRow | None:
        """Return the collection's latest reembed, or None."""
        return self._reembed_get(self._conn(), collection)

    def reembed_running(self) -> list[ReembedRow]:
        """Return every reembed still running, oldest first (to resume them after a restart)."""
        rows = self._conn().execute(
            f"select {_COLUMNS} from reembeds where state = 'running' order by started_at, collection"
        )
        return [_row(r) for r in rows]

    def reembed_claim(self, collection: str, limit: int) -> list[PendingChunk]:
        """Lease up to `limit` chunks of the collection without a staged vector (SKIP LOCKED across replicas)."""
        conn = self._conn()
        with conn.transaction():
            rows = conn.execute(
                "with picked as (select c.id from chunks c left join reembed_vectors s on s.chunk_id = c.id "
                "where c.collection = %s and s.chunk_id is null and (c.reembed_claimed_until is null or "
                "c.reembed_claimed_until < extract(epoch from clock_timestamp())) order by c.id limit %s "
                "for update of c skip locked) "
                "update chunks c set reembed_claimed_until = extract(epoch from clock_timestamp()) + %s from picked "
                "where c.id = picked.id returning c.id, c.collection, c.text, c.heading_path, c.doc_id",
                (collection, limit, CLAIM_SECONDS),
            ).fetchall()
            titles = dict(
                conn.execute(
                    "select id, title from documents where id = any(%s)", (sorted({r[4] for r in rows}),)
                ).fetchall()
            )
        rows.sort(key=lambda r: r[0])
        return [PendingChunk(r[0], r[1], r[2], list(r[3]), titles.get(r[4], "")) for r in rows]

    def reembed_store(self, collection: str, items: Sequence[tuple[PendingChunk, np.ndarray]]) -> int:
        """Stage new vectors for chunks that still exist (ingest may have replaced them); return how many."""
        conn = self._conn()
        with conn.transaction():
            ids = [c.id for c, _ in items]
            alive = {r[0] for r in conn.execute("select id from chunks where id = any(%s) for share", (ids,))}
            rows = [(c.id, collection, np.asarray(v, dtype=np.float32).reshape(-1)) for c, v in items if c.id in alive]
            if rows:
                with conn.cursor() as cur:
                    cur.executemany(
                        "insert into reembed_vectors(chunk_id, collection, embedding) values (%s, %s, %s) "
                        "on conflict (chunk_id) do update set embedding = excluded.embedding",
                        rows,
                    )
            conn.execute("update reembeds set updated_at = %s where collection = %s", (time.time(), collection))
        return len(rows)

    def reembed_counts(self, collection: str) -> tuple[int, int]:
        """Return (chunks, chunks with a staged vector) of the collection."""
        return self._reembed_counts(self._conn(), collection)

    def _reembed_counts(self, conn: Any, collection: str) -> tuple[int, int]:
        total, staged = conn.execute(
            "select count(*), count(s.chunk_id) from chunks c left join reembed_vectors s on s.chunk_id = c.id "
            "where c.collection = %s",
            (collection,),
        ).fetchone()
        return int(total), int(staged)

    def reembed_switch(self, collection: str) -> bool:
        """Swap in the staged vectors and the target embedder in one transaction; False while any chunk lacks one."""
        conn = self._conn()
        run = self.reembed_get(collection)
        if run is None or run.state != "running":
            return False
        table = self._ensure_vec_table(conn, run.target_dim)  # DDL outside the switch's transaction
        with conn.transaction():
            old = conn.execute("select dim from collections where name = %s for update", (collection,)).fetchone()
            run = self._reembed_get(conn, collection, lock=True)
            if old is None or run is None or run.state != "running":
                return False
            total, staged = self._reembed_counts(conn, collection)
            if staged < total:
                return False
            if old[0] is not None:
                conn.execute(f"delete from {self._ensure_vec_table(conn, old[0])} where collection = %s", (collection,))
            conn.execute(
                f"insert into {table}(chunk_id, collection, embedding) select s.chunk_id, s.collection, "
                f"s.embedding::vector({int(run.target_dim)}) from reembed_vectors s join chunks c on c.id = s.chunk_id "
                "where s.collection = %s",
                (collection,),
            )
            conn.execute(
                "update chunks set embedded = true, claimed_until = null, reembed_claimed_until = null "
                "where collection = %s",
                (collection,),
            )
            conn.execute(
                "update collections set embedder_model = %s, dim = %s, languages = %s, n_embedded = n_chunks "
                "where name = %s",
                (run.target_model, run.target_dim, json.dumps(sorted(run.target_languages)), collection),
            )
            self._bump(conn, collection)
            conn.execute("delete from reembed_vectors where collection = %s", (collection,))
            now = time.time()
            conn.execute(
                "update reembeds set state = 'done', updated_at = %s, finished_at = %s where collection = %s",
                (now, now, collection),
            )
        return True

    def reembed_end(self, collection: str, state: str, error: str | None = None) -> None:
        """Mark a running reembed cancelled or failed and drop its staged vectors (the live ones stay)."""
        conn = self._conn()
        with conn.transaction():
            now = time.time()
            conn.execute(
                "update reembeds set state = %s, error = %s, updated_at = %s, finished_at = %s "
                "where collection = %s and state = 'running'",
                (state, error, now, now, collection),
            )
            conn.execute("delete from reembed_vectors where collection = %s", (collection,))


def _row(r: Any) -> ReembedRow:
    return ReembedRow(
        collection=r[0],
        embedder=r[1],
        from_model=r[2],
        from_dim=r[3],
        target_model=r[4],
        target_dim=r[5],
        target_languages=list(r[6]),
        state=r[7],
        error=r[8],
        started_at=r[9],
        updated_at=r[10],
        finished_at=r[11],
    )
