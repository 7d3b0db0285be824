"""Read a described situation, a dataset and a training intent out of a free-text request (no model needed)."""

from __future__ import annotations

import json
import re
from typing import Any

_NUM = r"(\d[\d,]*(?:\.\d+)?)\s*(k|천|만)?"
_COUNT = re.compile(
    _NUM + r"\s*(?:[a-z-]+\s+){0,2}(?:examples?|pairs?|rows?|records?|samples?|transcripts?|conversations?|"
    r"questions?|documents?|tickets?|dialogues?|개|건|쌍)",
    re.I,
)
_GPU = re.compile(r"(\d+)\s*(?:gb|gib|기가)", re.I)
_PARAMS = re.compile(r"(\d+(?:\.\d+)?)\s*b\b(?:\s*(?:param|model))?", re.I)
_STEPS = re.compile(r"(\d+)\s*(?:steps?|스텝)", re.I)
_YES = re.compile(r"^\s*(y|yes|yeah|yep|ok|okay|sure|go|go ahead|launch|start|confirm|네|예|응|좋아|시작)\b", re.I)
_TRAIN = re.compile(
    r"\b(train|launch|start|run|submit|instruction[- ]tune|fine[- ]tune (?:it|a model|the model|smollm)|"
    r"kick off)\b|학습시켜|훈련시켜|학습을 시작|튜닝해",
    re.I,
)
_ADVICE_ONLY = re.compile(
    r"\b(should i|shall i|do i need|is it worth|which method|what method|advice|recommend)\b|"
    r"해야 하나요|할까요|추천",
    re.I,
)
GOALS = (
    (
        "preference",
        r"prefer|better answers?|worse answers?|chosen|rejected|quality of (?:the )?answers|선호|답변 품질",
    ),
    ("style", r"style|tone|voice|format|persona|house style|brand|말투|어조|문체|형식"),
    (
        "knowledge",
        r"knowledge|facts?|terminology|jargon|domain terms|documents?|manuals?|policies|지식|용어|문서",
    ),
)


def parse_situation(text: str, n_examples: int | None = None) -> dict[str, Any]:
    """Return `finetune_recommend_method` arguments inferred from the text (goal, data size, hardware, flags)."""
    low = text.lower()
    goal = next((g for g, pat in GOALS if re.search(pat, low)), "task")
    s: dict[str, Any] = {"goal": goal, "n_examples": n_examples if n_examples is not None else _count(low)}
    s["data_changes_often"] = bool(
        re.search(
            r"chang\w* (?:often|daily|weekly|every|frequently|all the time)|"
            r"updated? (?:daily|weekly|often)|자주 바뀌|매주|매일",
            low,
        )
    )
    s["has_preference_pairs"] = bool(
        re.search(r"preference pairs?|chosen|rejected|better and (?:a )?worse|선호 쌍", low)
    )
    s["has_reference_answers"] = bool(re.search(r"reference answers?|gold answers?|정답", low))
    s["domain_terms_missing"] = bool(
        re.search(
            r"(?:doesn't|does not|never) know|unknown terms|jargon|"
            r"new terminology|모르는 용어|전문 용어",
            low,
        )
    )
    s["base_is_instruct"] = not re.search(r"\bbase model\b|베이스 모델", low)
    if m := _GPU.search(low):
        s["gpu_memory_gb"] = float(m.group(1))
    if m := _PARAMS.search(low):
        s["model_params_b"] = float(m.group(1))
    return s


def _count(low: str) -> int:
    m = _COUNT.search(low)
    if not m:
        return 0
    n = float(m.group(1).replace(",", ""))
    return int(n * {"k": 1000, "천": 1000, "만": 10000}.get((m.group(2) or "").lower(), 1))


def extract_jsonl(text: str) -> list[dict[str, Any]]:
    """Return the JSON object lines in the text (an inline dataset, fenced or not)."""
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    return rows


def wants_training(text: str, has_dataset: bool) -> bool:
    """Tell whether the request asks to launch training, not only for advice."""
    body = "\n".join(line for line in text.splitlines() if not line.strip().startswith("{"))
    if _ADVICE_ONLY.search(body) and not has_dataset:
        return False
    return has_dataset or bool(_TRAIN.search(body))


def requested_steps(text: str) -> int | None:
    """Return the number of training steps the request names, if any."""
    m = _STEPS.search(text)
    return int(m.group(1)) if m else None


def is_yes(text: str) -> bool:
    """Tell whether a confirmation reply says yes (English or Korean)."""
    return bool(_YES.match(text))
