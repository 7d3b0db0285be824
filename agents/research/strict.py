"""The strict grounding check: every number, name, path, port, setting and quoted token a draft states must appear
in the sentences it cites. A small model that writes "port 8711" from a passage saying 8702 fails here."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*")
# Identifiers: RAGTUNE_HOME, servers/retrieval, .ragtune, e5-small, retrieval.db, http://127.0.0.1:8702/mcp
IDENTIFIER = re.compile(r"(?:--?|\.|/|~)?[A-Za-z0-9][\w]*(?:[_./:\\-]+[\w]+)+/?|--?[A-Za-z][\w-]+|\.[A-Za-z]\w+")
QUOTED = re.compile(r"`([^`]+)`|\"([^\"]{1,60})\"|“([^”]{1,60})”|'([^'\s]{1,40})'")
# Names: a capital inside a word (LoRA, SmolLM2), all caps (GPU, DPO), or a capitalised word mid-sentence (Claude).
NAME = re.compile(r"\b[A-Za-z]*[a-z][A-Z]\w*|\b[A-Z]{2,}\w*|(?<=[a-z,;:] )[A-Z][a-z]+\w*")
IGNORED = frozenset({"e.g", "i.e", "etc", "vs"})
THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
CITATION = re.compile(r"\[\d+(?:[,\s]+\d+)*\]")


@dataclass
class CheckResult:
    """What the check found: the stated tokens, and those missing from the cited sentences."""

    stated: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when nothing the draft states is missing from the sources."""
        return not self.missing

    def line(self) -> str:
        """Return the check's result in one line, for the answer."""
        if self.passed:
            return "grounding check: passed"
        return "grounding check: failed: " + ", ".join(f"{m} not in sources" for m in self.missing[:5])


def _norm(token: str) -> str:
    """Compare tokens without case, markdown ticks, trailing punctuation or thousands separators."""
    token = token.strip("`*'\"“”‘’()[]{}<>.,;:!? ").lower()
    return THOUSANDS.sub("", token)


def stated(draft: str) -> list[str]:
    """Return the checkable tokens of a draft: numbers, identifiers, paths, flags, settings, quoted text, names."""
    text = CITATION.sub(" ", draft)
    found: list[str] = []
    for m in QUOTED.finditer(text):
        found.append(next(g for g in m.groups() if g))
    found += IDENTIFIER.findall(text)
    found += NUMBER.findall(text)
    found += NAME.findall(text)
    out = [t for t in dict.fromkeys(_norm(t) for t in found) if t and t not in IGNORED]
    return out


def new_facts(question: str, text: str) -> set[str]:
    """Return what a text states beyond the question's words: its numbers, identifiers and names."""
    asked = set(stated(question)) | {_norm(w) for w in question.split()}
    return {t for t in stated(text) if t not in asked}


def check(draft: str, sources: list[str]) -> CheckResult:
    """Check that every token the draft states appears in the cited source sentences."""
    source = _norm_text(" ".join(sources))
    tokens = stated(draft)
    missing = [t for t in tokens if not _appears(t, source)]
    return CheckResult(tokens, missing)


def _norm_text(text: str) -> str:
    """Lower-case the sources and drop markdown ticks and thousands separators, as `_norm` does for tokens."""
    text = text.replace("`", "").replace("**", "").lower()
    return THOUSANDS.sub("", text)


def _appears(token: str, source: str) -> bool:
    """Tell whether a token occurs in the source as a whole token (8702 must not match 87020). Only ASCII letters
    and digits bound a token: a Korean particle may follow it ("`RAGTUNE_HOME`을"), a unit a number ("7B")."""
    if not token[:1].isalnum():
        return token in source
    after = r"(?![0-9])" if re.fullmatch(r"[\d.,]+", token) else r"(?![A-Za-z0-9_])"
    return re.search(r"(?<![A-Za-z0-9])" + re.escape(token) + after, source) is not None
