"""Evaluation sets for the retrieval bench (read in place from ../shared/data, never copied into the repo)."""

from __future__ import annotations

import csv
import json
import os
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class DataMissing(RuntimeError):
    """Raised when the evaluation data folder is absent; the bench skips the section with this message."""


@dataclass
class EvalSet:
    """A corpus, queries and graded relevance (BEIR style), possibly subsampled."""

    name: str
    lang: str
    corpus: dict[str, str]  # doc id -> text (title + " " + body)
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    note: str = ""
    titles: dict[str, str] = field(default_factory=dict)  # doc id -> title, where the set has titles

    def sample(self, n_queries: int | None, corpus_size: int | None, seed: int = 42) -> EvalSet:
        """Keep `n_queries` random queries and a corpus of `corpus_size` docs that holds all their relevant docs."""
        rng = random.Random(seed)
        qids = sorted(self.queries)
        if n_queries and n_queries < len(qids):
            qids = sorted(rng.sample(qids, n_queries))
        needed = {d for q in qids for d in self.qrels.get(q, {}) if d in self.corpus}
        doc_ids = sorted(self.corpus)
        if corpus_size and corpus_size < len(doc_ids):
            others = sorted(set(doc_ids) - needed)
            keep = needed | set(rng.sample(others, max(0, min(len(others), corpus_size - len(needed)))))
            doc_ids = sorted(keep)
        note = f"{len(qids)}/{len(self.queries)} train queries, {len(doc_ids)}/{len(self.corpus)} docs"
        if len(doc_ids) < len(self.corpus):
            note += " (every relevant doc of the sampled queries + random others)"
        return EvalSet(
            self.name,
            self.lang,
            {d: self.corpus[d] for d in doc_ids},
            {q: self.queries[q] for q in qids},
            {q: self.qrels.get(q, {}) for q in qids},
            note + f", seed {seed}",
        )


def data_dir(explicit: str | None = None) -> Path:
    """Locate the shared data: --data, RAGTUNE_BENCH_DATA, or <repo>/../shared/data."""
    path = Path(explicit or os.environ.get("RAGTUNE_BENCH_DATA") or REPO.parent / "shared" / "data")
    if not path.is_dir():
        raise DataMissing(
            f"no evaluation data at {path}: set RAGTUNE_BENCH_DATA or pass --data (scifact/ and ko-welfare/ inside)"
        )
    return path


def load_scifact(root: Path) -> EvalSet:
    """SciFact train split: 5,183 abstracts, 809 claims (CC BY-NC 2.0)."""
    folder = root / "scifact"
    if not folder.is_dir():
        raise DataMissing(f"{folder} is missing")
    corpus, titles = {}, {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            corpus[str(doc["_id"])] = f"{doc.get('title', '')} {doc['text']}".strip()
            titles[str(doc["_id"])] = doc.get("title") or ""
    qrels: dict[str, dict[str, int]] = defaultdict(dict)
    with open(folder / "qrels_train.tsv", encoding="utf-8") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            qrels[row["query-id"]][row["corpus-id"]] = int(row["score"])
    queries = {}
    with open(folder / "queries_train.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if str(q["_id"]) in qrels:
                queries[str(q["_id"])] = q["text"]
    return EvalSet("scifact", "en", corpus, queries, dict(qrels), titles=titles)


def load_ko_welfare(root: Path) -> EvalSet:
    """Korean welfare docs: 464 docs, 7,637 GPT-generated train queries (internal evaluation only)."""
    folder = root / "ko-welfare"
    if not folder.is_dir():
        raise DataMissing(f"{folder} is missing")
    corpus = json.loads((folder / "corpus.json").read_text(encoding="utf-8"))
    queries = json.loads((folder / "train_queries.json").read_text(encoding="utf-8"))
    relevant = json.loads((folder / "train_relevant_docs.json").read_text(encoding="utf-8"))
    qrels = {q: dict.fromkeys(docs, 1) for q, docs in relevant.items() if q in queries}
    return EvalSet("ko-welfare", "ko", corpus, {q: queries[q] for q in qrels}, qrels)
