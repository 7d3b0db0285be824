"""Lexical analysis for FTS5: Kiwi morphemes for Korean, Snowball stems for Latin-script words.

Whitespace tokens miss Korean words with particles attached ("검색을" vs "검색"), so both the indexed text
and the query go through Kiwi; Kiwi tags Latin words `SL`, which we lowercase and stem with PyStemmer.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

# Content-bearing tag prefixes: nouns, verb/adjective stems, roots, foreign words, numbers, adverbs, pronouns.
KEEP_TAGS = ("NN", "VV", "VA", "XR", "SL", "SN", "SH", "MAG", "NR", "NP")

# A short English stop list: OR-queries over "the"/"of" only add noise to bm25 candidates.
EN_STOPWORDS = frozenset(
    "a an and are as at be but by for from has have if in into is it its of on or such that the their then "
    "there these they this to was were will with what which who how does do did".split()
)


class Analyzer:
    """Turn text into the space-joined terms FTS5 indexes, and a question into an FTS5 OR-query."""

    def __init__(self, kiwi: Any, stemmer: Any) -> None:
        self._kiwi = kiwi
        self._stemmer = stemmer
        self._lock = threading.Lock()  # PyStemmer objects are not thread-safe

    def terms(self, text: str) -> list[str]:
        """Return the lexical terms of `text`, in order (duplicates kept: bm25 needs term frequency)."""
        if not text.strip():
            return []
        out: list[str] = []
        with self._lock:
            for token in self._kiwi.tokenize(text):
                if not token.tag.startswith(KEEP_TAGS):
                    continue
                form = token.form.lower()
                if token.tag == "SL":
                    if form in EN_STOPWORDS:
                        continue
                    form = self._stemmer.stemWord(form)
                out.append(form)
        return out

    def lexical(self, text: str) -> str:
        """Return the terms of `text` joined by spaces, ready for a `unicode61` FTS5 column."""
        return " ".join(self.terms(text))

    def fts_query(self, text: str) -> str:
        """Return an FTS5 query that ORs the quoted, de-duplicated terms of `text` ('' when none)."""
        unique = dict.fromkeys(self.terms(text))
        return " OR ".join('"' + term.replace('"', '""') + '"' for term in unique)


_factory_lock = threading.Lock()


@functools.cache
def _load_analyzer() -> Analyzer:
    import Stemmer
    from kiwipiepy import Kiwi

    return Analyzer(Kiwi(num_workers=1), Stemmer.Stemmer("english"))


def get_analyzer() -> Analyzer:
    """Return the process-wide analyzer, loading Kiwi once (about a second) on first use."""
    with _factory_lock:
        return _load_analyzer()
