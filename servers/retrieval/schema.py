"""Schema of the retrieval index: collections, documents, chunks, FTS5 over Kiwi/stemmed terms.

Vectors live in one sqlite-vec `vec0` table per dimension (`vec_<dim>`), created when a collection with that
dimension is created, so collections made with different embedders can share one file.
"""

from __future__ import annotations

from ragtune.db import Connection

REEMBED_MIGRATION = """
create table reembeds (
  collection text primary key,
  embedder text not null,
  from_model text,
  from_dim integer,
  target_model text not null,
  target_dim integer not null,
  target_languages text not null default '[]',
  state text not null,
  error text,
  started_at real not null,
  updated_at real not null,
  finished_at real
);
create table reembed_vectors (
  chunk_id integer primary key,
  collection text not null,
  embedding blob not null
);
create index reembed_vectors_collection on reembed_vectors(collection);
"""

MIGRATIONS = [
    """
    create table collections (
      name text primary key,
      embedder_model text,
      dim integer,
      languages text not null default '[]',
      created_at real not null
    );
    create table documents (
      id integer primary key autoincrement,
      doc_id text not null unique,
      collection text not null references collections(name),
      source text not null,
      title text not null,
      content_hash text not null,
      text text not null,
      metadata text not null default '{}',
      created_at real not null,
      updated_at real not null,
      unique (collection, source)
    );
    create table chunks (
      id integer primary key autoincrement,
      doc_id integer not null references documents(id),
      collection text not null,
      ordinal integer not null,
      text text not null,
      heading_path text not null default '[]',
      char_start integer not null,
      char_end integer not null,
      lex_head text not null,
      lex_body text not null,
      embedded integer not null default 0
    );
    create index chunks_doc on chunks(doc_id, ordinal);
    create index chunks_pending on chunks(collection, embedded);
    create virtual table chunks_fts using fts5(
      lex_head, lex_body, content='chunks', content_rowid='id', tokenize='unicode61 remove_diacritics 2'
    );
    create trigger chunks_ai after insert on chunks begin
      insert into chunks_fts(rowid, lex_head, lex_body) values (new.id, new.lex_head, new.lex_body);
    end;
    create trigger chunks_ad after delete on chunks begin
      insert into chunks_fts(chunks_fts, rowid, lex_head, lex_body)
        values ('delete', old.id, old.lex_head, old.lex_body);
    end;
    """,
    # Per-term document frequencies, read by search to leave very common terms out of large-index queries.
    "create virtual table chunks_vocab using fts5vocab(chunks_fts, 'row');",
    # Reembed (reembed.py): the latest run per collection and its staged vectors, outside the live vec0 tables.
    REEMBED_MIGRATION,
]


def vec_table(dim: int) -> str:
    """Name the vec0 table for `dim`-dimensional vectors."""
    return f"vec_{int(dim)}"


def ensure_vec_table(conn: Connection, dim: int) -> str:
    """Create the vec0 table for `dim` if missing (cosine distance, collection filtered inside the KNN)."""
    if not 1 <= int(dim) <= 8192:
        raise ValueError(f"embedding dimension {dim} is out of range")
    name = vec_table(dim)
    conn.execute(
        f"create virtual table if not exists {name} using vec0("
        f"chunk_id integer primary key, embedding float[{int(dim)}] distance_metric=cosine, collection text)"
    )
    return name
