"""Lexical terms of Korean and English text: Kiwi morphemes for Korean, Snowball stems for Latin-script words.

Whitespace tokens miss Korean words with particles attached ("검색을" vs "검색"), so both the indexed text and the
question go through Kiwi; Latin words and digits are taken by a regex, lowercased and stemmed (PyStemmer). The
retrieval server indexes with these terms and the research agent matches sentences with them, so both live here.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

# Content-bearing Kiwi tags: nouns, verb/adjective stems, roots, Hanja, adverbs, numerals, pronouns. Latin words
# (SL) and digits (SN) come from LATIN_WORD instead.
KIWI_TAGS = ("NN", "VV", "VA", "XR", "SH", "MAG", "NR", "NP")

TOPIC_TAGS = ("NNG", "NNP", "SH")  # common and proper nouns, Hanja

# Only text with Hangul, kana or CJK ideographs needs Kiwi.
NEEDS_KIWI = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u9fff\uac00-\ud7a3\uf900-\ufaff]")
LATIN_WORD = re.compile(r"[A-Za-z]+|\d+")

# A short English stop list: OR-queries over "the"/"of" only add noise to bm25 candidates.
EN_STOPWORDS = frozenset(
    "a an and are as at be but by for from has have if in into is it its of on or such that the their then "
    "there these they this to was were will with what which who how does do did".split()
)


_STEM_LOCK = threading.Lock()  # PyStemmer objects are not thread-safe, and every analyzer shares one stemmer


class TermAnalyzer:
    """Turn text into lexical terms (duplicates kept: bm25 needs term frequency)."""

    def __init__(self, kiwi: Any, stemmer: Any) -> None:
        self._kiwi = kiwi
        self._stemmer = stemmer

    def terms(self, text: str) -> list[str]:
        """Return the lexical terms of `text` (duplicates kept: bm25 needs term frequency)."""
        return self._terms(text, KIWI_TAGS)

    def topic_terms(self, text: str) -> list[str]:
        """Return the terms that name a topic: Latin words and digits, and Korean nouns (no verbs, adverbs or
        pronouns: "혹시", "저", "알아보" say nothing about what a question is about)."""
        return self._terms(text, TOPIC_TAGS)

    def _terms(self, text: str, tags: tuple[str, ...]) -> list[str]:
        if not text.strip():
            return []
        # Latin words and digits come from a regex in every text: Kiwi mangles English at sentence ends
        # ("organization." -> "organizat" + "ion."), and the regex is ~100x faster.
        words = [w.lower() for w in LATIN_WORD.findall(text)]
        with _STEM_LOCK:
            out = [w if w.isdigit() else self._stemmer.stemWord(w) for w in words if w not in EN_STOPWORDS]
            if NEEDS_KIWI.search(text):
                out += [t.form for t in self._kiwi.tokenize(text) if t.tag.startswith(tags)]
        return out

    def lexical(self, text: str) -> str:
        """Return the terms of `text` joined by spaces, ready for a `unicode61` FTS5 column."""
        return " ".join(self.terms(text))


_factory_lock = threading.Lock()


@functools.cache
def _load_parts() -> tuple[Any, Any]:
    import Stemmer
    from kiwipiepy import Kiwi

    return Kiwi(num_workers=1), Stemmer.Stemmer("english")


def analyzer_parts() -> tuple[Any, Any]:
    """Return the process-wide Kiwi and stemmer, loading Kiwi once (about a second) on first use."""
    with _factory_lock:
        return _load_parts()


@functools.cache
def get_term_analyzer() -> TermAnalyzer:
    """Return the process-wide term analyzer (Kiwi and the stemmer load once)."""
    return TermAnalyzer(*analyzer_parts())
