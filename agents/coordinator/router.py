"""Deterministic request router (Korean and English keywords) for when the model cannot be trusted to choose."""

from __future__ import annotations

import re
from typing import Literal

Route = Literal["research", "finetune", "chain"]

_QA = re.compile(r"q\s*/\s*a|q&a|\bqa\b|question.answer|질의응답|질문.답변|문답", re.I)
_TRAIN = re.compile(
    r"\b(train\w*|instruction[- ]tun\w*|fine[- ]?tun\w*|lora|sft|dpo)\b|학습|훈련|튜닝|파인튜닝|미세\s*조정",
    re.I,
)
_ACT = re.compile(
    r"\b(launch|start|run|submit|kick off|job|train (?:a|the|it|on)|instruction[- ]tune (?:a|the|it))\b|"
    r"학습시켜|훈련시켜|시작해|돌려",
    re.I,
)
_DECIDE = re.compile(
    r"\b(should (?:we|i)|do (?:we|i) need|is it worth|worth it|which method|what method|"
    r"recommend\w*|advice|advise|our situation|we have \d|i have \d)\b|\d[\d,]*\s*(?:k\s*)?"
    r"(?:examples|pairs|transcripts|rows|records)|해야 하나요|할까요|추천|필요한가요|상황",
    re.I,
)


def route(text: str) -> Route:
    """Pick the agent for a request: a Q/A-set-then-train chain, fine-tuning (advice or a job), or research."""
    if _QA.search(text) and _TRAIN.search(text):
        return "chain"
    if '{"messages"' in text or '{"question"' in text:
        return "finetune"
    if _TRAIN.search(text) and (_ACT.search(text) or _DECIDE.search(text)):
        return "finetune"
    return "research"
