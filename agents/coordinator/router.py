"""Intent router (English and Korean keywords) for when no tool-calling model chooses the agent.

Intents, checked in order: an inline dataset, training on the user's own documents (the chain), a GPU memory
question, a job or dataset operation, a choice of method; anything else is a question about the documents.
`tests/agents/coordinator/routing_cases.jsonl` is the labelled set this is measured on (issue #9).
"""

from __future__ import annotations

import re
from typing import Literal

from ragtune.agents.finetune.memory import is_memory_question

Route = Literal["research", "finetune", "chain"]
ROUTES: tuple[Route, ...] = ("research", "finetune", "chain")

_DATASET = re.compile(r'\{\s*"(?:messages|question|prompt|chosen|text)"\s*:')
_TRAIN = re.compile(
    r"\b(train\w*|instruction[- ]tun\w*|fine[- ]?tun\w*|finetun\w*|sft)\b|학습|훈련|튜닝|미세\s*조정",
    re.I,
)
_QA = re.compile(r"q\s*/\s*a|q&a|\bqa\b|question[- ]answer|질의응답|질문.답변|문답", re.I)
_MY_DOCS = re.compile(
    r"\b(?:my|our) (?:own )?(?:docs|documents|notes|files|corpus)\b|내 문서|우리 문서|문서(?:로|에서|를 바탕으로)",
    re.I,
)
_VERB = (
    r"(?:launch|start|run|submit|kick off|fine[- ]?tune|finetune|train|instruction[- ]tune|cancel|stop|pause|"
    r"resume|list|show|validate|check|upload|retrain)"
)
_IMPERATIVE_EN = re.compile(
    rf"^(?:please\s+|(?:can|could|would) you\s+|i want (?:you )?to\s+|let'?s\s+)?{_VERB}\b", re.I
)
_MAKE_EN = re.compile(r"^(?:please\s+)?(?:make|build|create|generate)\b", re.I)
_IMPERATIVE_KO = re.compile(
    r"(?:해|시켜|알려|만들어|보여|검사해|검증해|취소해|중지해|시작해|올려|돌려)\s*(?:줘|주세요|줄래|봐)|시작해|돌려",
)
_OPS_TOPIC = re.compile(
    r"\bjobs?\b|training|\bdata ?sets?\b|\bdata\b|\bmodel\b|\bloss\b|checkpoints?|\bsteps?\b|"
    r"작업|데이터|모델|학습|파인튜닝|튜닝|잡|체크포인트",
    re.I,
)
_JOB_QUERY = re.compile(r"ftjob-\w+|\bstatus of (?:my |the )?(?:last |latest )?(?:\w+ )?job\b|작업 상태", re.I)
_DECIDE = re.compile(
    r"\b(?:should (?:we|i)|shall (?:we|i)|do (?:we|i) need|is it worth|worth it|which method|what method|"
    r"recommend\w*|advice|advise|or use rag|lora or full|lora vs)\b|"
    r"해야 하나요|해야 할까요|할까요|좋을까요|나을까요|추천|어떤 (?:학습 )?방법",
    re.I,
)
_METHOD = re.compile(
    r"\b(?:which|what) method\b|어떤 (?:학습 )?방법|\b(?:q?lora|dpo|cpt|rag|full fine[- ]?tun\w*)\b", re.I
)


def route(text: str) -> Route:
    """Pick the agent for a request: the Q/A-then-train chain, fine-tuning (memory, advice, jobs), or research."""
    body = text.strip()
    if _DATASET.search(body):
        return "finetune"
    acting = bool(_IMPERATIVE_EN.search(body) or _MAKE_EN.search(body) or _IMPERATIVE_KO.search(body))
    if _TRAIN.search(body) and (_QA.search(body) or (acting and _MY_DOCS.search(body))):
        return "chain"
    if is_memory_question(body):
        return "finetune"
    if _JOB_QUERY.search(body) or (acting and _OPS_TOPIC.search(body) and not _MAKE_EN.search(body)):
        return "finetune"
    if _DECIDE.search(body) and (_TRAIN.search(body) or _METHOD.search(body)):
        return "finetune"
    return "research"
