"""Lexical analysis for FTS5: Kiwi morphemes for Korean, Snowball stems for Latin-script words.

Whitespace tokens miss Korean words with particles attached ("검색을" vs "검색"), so both the indexed text
and the query go through Kiwi; Latin words and digits are taken by a regex, lowercased and stemmed (PyStemmer).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

# The term logic lives in ragtune/text.py (the research agent matches sentences with the same terms); these names
# stay importable from here.
from ragtune.text import EN_STOPWORDS, KIWI_TAGS, LATIN_WORD, NEEDS_KIWI, TermAnalyzer, analyzer_parts

__all__ = ["EN_STOPWORDS", "KIWI_TAGS", "LATIN_WORD", "NEEDS_KIWI", "Analyzer", "get_analyzer", "or_query"]


class Analyzer(TermAnalyzer):
    """Turn text into the space-joined terms FTS5 indexes, and a question into an FTS5 OR-query."""

    def fts_query(self, text: str) -> str:
        """Return an FTS5 query that ORs the quoted, de-duplicated terms of `text` ('' when none)."""
        return or_query(dict.fromkeys(self.terms(text)))


def or_query(terms: Iterable[str]) -> str:
    """Return the FTS5 OR-query of `terms`, each quoted so FTS5 syntax in a term ("AND", "*", a quote) is literal."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


@functools.cache
def get_analyzer() -> Analyzer:
    """Return the process-wide analyzer (Kiwi loads once, about a second, on first use)."""
    return Analyzer(*analyzer_parts())
