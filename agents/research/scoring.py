"""Score candidate sentences against a question: dense similarity from the embedder plus lexical overlap (Kiwi).

The embedder is the retrieval server's (`ragtune.embeddings`), loaded once per agent process; sentence vectors are
cached, since the same passages come back question after question.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from ragtune.agents.research.sentences import Sentence

from ragtune.embeddings import Embedder
from ragtune.text import TermAnalyzer, get_term_analyzer

# Question words say nothing about the topic: "what", "how", "무엇", "어떻게", "어디"...
QUESTION_TERMS = frozenset(
    "can should would could i my me you your we our tell explain please need want about there here where when "
    "use valu happen mani much give draw get make go "
    "무엇 어떻 어떤 어디 언제 얼마 왜 어느 하 있 되 나 수 알 주 보 것 거 뭐 무슨 싶 번 몇".split()
)
# The kind of answer a question asks for: a number (port, version, size, count) or an identifier (file, setting,
# flag, path, format). A sentence holding that kind of token is preferred over one that only shares its words.
ASKS_NUMBER = re.compile(
    r"\bhow (?:many|much|long|big)\b|\b(?:port|version|size|default|minimum|maximum|percent)\b|"
    r"몇|얼마|포트|버전|기본값",
    re.I,
)
ASKS_IDENTIFIER = re.compile(
    r"\b(?:which|what) (?:files?|formats?|settings?|flags?|scripts?|tools?|package|wheel|command|url|name|"
    r"image|endpoint|values?|record)\b|\bwhere\b|형식|설정|어디|이름|명령|파일",
    re.I,
)
HAS_NUMBER = re.compile(r"(?<![A-Za-z_])\d")
HAS_IDENTIFIER = re.compile(r"`[^`]+`|\S+[/_.]\S*[A-Za-z]|\{")
TYPE_BONUS = 0.05  # what a sentence holding the asked-for kind of token gains
INTRO = re.compile(r"(?::|다음과 같습니다\.?)$")  # "The config file lives at:" introduces facts but holds none
HEADING_WEIGHT = 0.5  # a question term found only in the section's heading counts half
CACHE_SIZE = 20_000
# Korean loanwords the guides write in Latin letters: "리눅스" must find "Linux" for the lexical score and must not
# count as a term no passage mentions.
LOANWORDS = {
    "리눅스": "Linux",
    "도커": "Docker",
    "파이썬": "Python",
    "윈도우": "Windows",
    "우분투": "Ubuntu",
    "깃허브": "GitHub",
    "쿠버네티스": "Kubernetes",
    "엔비디아": "NVIDIA",
    "파이토치": "PyTorch",
    "허깅페이스": "Hugging Face",
    "클로드": "Claude",
    "맥OS": "macOS",
}
LOANWORD = re.compile("|".join(sorted(map(re.escape, LOANWORDS), key=len, reverse=True)))


@dataclass(frozen=True)
class Scored:
    """A sentence with its scores: dense cosine, lexical share of the question's terms, and their blend."""

    sentence: Sentence
    dense: float
    lexical: float
    score: float


class SentenceScorer:
    """Rank sentences for a question; blend = dense cosine + `lexical_weight` x lexical overlap."""

    def __init__(
        self, embedder: Embedder | None, analyzer: TermAnalyzer | None = None, lexical_weight: float = 0.25
    ) -> None:
        self.embedder = embedder
        self.analyzer = analyzer or get_term_analyzer()
        self.lexical_weight = lexical_weight
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Load Kiwi and the embedder now, so the first question does not wait for them."""
        self.analyzer.terms("검색 준비 warm up")
        if self.embedder is not None:
            self.embedder.embed_queries(["warm up"])

    def question_terms(self, question: str) -> set[str]:
        """Return the content terms of a question (question words dropped, Korean loanwords in Latin letters)."""
        return {t for t in self.analyzer.terms(transliterate(question)) if t not in QUESTION_TERMS}

    def unseen(self, question: str, texts: Sequence[str]) -> list[str]:
        """Return the question's topic terms (nouns, Latin words) that occur in none of the texts: the documents never
        mention them ("Kubernetes", "김치찌개")."""
        seen: set[str] = set()
        for text in texts:
            seen.update(self.analyzer.terms(text))
        topics = {t for t in self.analyzer.topic_terms(transliterate(question)) if t not in QUESTION_TERMS}
        return sorted(t for t in topics if t not in seen)

    def lexical(self, terms: set[str], sentence: Sentence) -> float:
        """Return the share of the question's terms found in the sentence (those only in its heading count half)."""
        if not terms:
            return 0.0
        said = set(self.analyzer.terms(sentence.text))
        heading = set(self.analyzer.terms(f"{sentence.hit.title} {sentence.hit.heading}"))
        found = sum(1.0 if t in said else HEADING_WEIGHT if t in heading else 0.0 for t in terms)
        return found / len(terms)

    def dense(self, question: str, sentences: Sequence[Sentence]) -> np.ndarray:
        """Return the cosine of the question with each sentence (zeros without an embedder)."""
        if self.embedder is None or not sentences:
            return np.zeros(len(sentences), dtype=np.float32)
        query = self.embedder.embed_queries([question])[0]
        return self._passages([passage_text(s) for s in sentences]) @ query

    def _passages(self, texts: list[str]) -> np.ndarray:
        """Embed passages, reusing cached vectors (bounded LRU)."""
        assert self.embedder is not None
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = self.embedder.embed_passages(missing)
            with self._lock:
                for text, vector in zip(missing, vectors, strict=True):
                    self._cache[text] = vector
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        with self._lock:
            return np.stack([self._cache.get(t, np.zeros(self.embedder.dim, np.float32)) for t in texts])

    def rank(self, question: str, sentences: Sequence[Sentence]) -> list[Scored]:
        """Return the sentences scored against the question, best first."""
        sentences = [s for s in sentences if not quotes_question(question, s.text)]
        terms = self.question_terms(question)
        cosines = self.dense(question, sentences)
        scored = [
            Scored(s, float(c), lex, float(c) + self.lexical_weight * lex + kind_bonus(question, s.text))
            for s, c, lex in zip(sentences, cosines, (self.lexical(terms, s) for s in sentences), strict=True)
        ]
        return sorted(scored, key=lambda x: -x.score)


def transliterate(text: str) -> str:
    """Write common Korean loanwords as the guides do ("리눅스에서" -> "Linux 에서"), so their terms match."""
    return LOANWORD.sub(lambda m: f" {LOANWORDS[m.group(0)]} ", text)


def passage_text(sentence: Sentence) -> str:
    """Return what is embedded for a sentence: its section heading, then the sentence."""
    heading = sentence.hit.heading.split(" › ")[-1] if sentence.hit.heading else sentence.hit.title
    return f"{heading}: {sentence.text}"


def kind_bonus(question: str, text: str) -> float:
    """Return the bonus (or, for a list's introduction, the malus) of a sentence for the kind of answer asked."""
    if INTRO.search(text):
        return -TYPE_BONUS
    wants_number = ASKS_NUMBER.search(question) is not None
    wants_identifier = ASKS_IDENTIFIER.search(question) is not None
    if (wants_number and HAS_NUMBER.search(text)) or (wants_identifier and HAS_IDENTIFIER.search(text)):
        return TYPE_BONUS
    return 0.0


def asks_number(question: str) -> bool:
    """Tell whether a question asks for a number or a setting's value: a port, a size, a count, a default."""
    return ASKS_NUMBER.search(question) is not None


def holds_value(text: str) -> bool:
    """Tell whether a sentence states a value: a number, or an identifier (path, `setting`, file name)."""
    return HAS_NUMBER.search(text) is not None or HAS_IDENTIFIER.search(text) is not None


def quotes_question(question: str, text: str) -> bool:
    """Tell whether a sentence merely quotes the question (a guide's example question is not its answer)."""
    core = question.strip().rstrip("?？.").strip()
    return len(core) >= 8 and core in text
