"""Read a job or dataset request (status, list, cancel, pause, resume, validate, evaluation) out of free text.

The embedded model cannot call tools, so the fixed workflow recognises these requests with rules (English and
Korean) and calls the fine-tuning server's tools itself; anything else goes on to the advice/training workflow.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Literal

from ragtune.agents.finetune.situation import extract_jsonl

Action = Literal["get", "list", "cancel", "pause", "resume", "validate", "evaluation"]

JOB_ID = re.compile(r"\bftjob-[A-Za-z0-9_-]+")
FILE_ID = re.compile(r"\bfile-[A-Za-z0-9_-]+")
PATH = re.compile(r"(?<![\w-])(?:~?/[^\s'\"`]+|[\w.~-]+(?:/[\w.~-]+)*\.(?:jsonl|json|csv|txt))(?=[\s'\"`,;.)]|$)")
STATUSES = ("queued", "running", "paused", "succeeded", "failed", "cancelled", "validating_files")
KO_STATUS = {"대기": "queued", "실행 중": "running", "진행 중": "running", "일시 정지된": "paused", "성공": "succeeded"}
LIST = re.compile(r"\blist\b|\b(?:my|all|the|which|what|show)\s+(?:\w+\s+)?jobs\b|작업\s*목록|작업\s*리스트", re.I)
# Order matters: the first family whose words appear wins ("resume" before "status", "evaluation" before "get").
RULES: tuple[tuple[Action, re.Pattern[str]], ...] = (
    ("cancel", re.compile(r"\bcancel\w*|\babort\b|취소|중단", re.I)),
    ("pause", re.compile(r"\bpause\w*|\bsuspend\w*|일시\s*정지|멈춰", re.I)),
    ("resume", re.compile(r"\bresum\w*|\bunpause\b|\bcontinue\b|재개|다시\s*시작", re.I)),
    ("evaluation", re.compile(r"\bevaluat\w*|\beval\b|\bbase vs|평가", re.I)),
    (
        "validate",
        re.compile(r"\bvalidat\w*|검증|점검|\b(?:check|verify)\b.*\b(?:data\s*set|dataset|file|jsonl)\b", re.I | re.S),
    ),
    ("list", LIST),
    ("get", re.compile(r"\bstatus\b|\bstate\b|\bprogress\b|\bhow is\b|상태|진행", re.I)),
)
DATASET_WORDS = re.compile(r"\bdata\s*set|\bdataset|\bfile\b|\bjsonl\b|데이터\s*셋|데이터|파일", re.I)
JOB_WORDS = re.compile(r"\bjobs?\b|작업", re.I)


@dataclass(frozen=True)
class JobRequest:
    """One recognised request: what to do, on which job or dataset, and the user's language."""

    action: Action
    job_id: str | None = None
    file_id: str | None = None
    path: str | None = None
    content: str | None = None  # inline JSONL to validate
    status: str | None = None  # list only: jobs in this state
    korean: bool = False


def parse_request(text: str) -> JobRequest | None:
    """Return the job or dataset request in the text, or None when it asks for something else (advice, training)."""
    rows = extract_jsonl(text)
    prose = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("{"))
    korean = bool(re.search("[가-힣]", prose))
    job = JOB_ID.search(prose)
    action = next((a for a, pattern in RULES if pattern.search(prose)), None)
    if not job and LIST.search(prose):
        action = "list"  # "list my cancelled jobs" lists; it cancels nothing
    if action == "validate":
        return _validate(prose, rows, korean)
    if rows:  # an inline dataset with anything but "validate" is a training request
        return None
    if action == "list" and not job:
        return JobRequest("list", status=_status_filter(prose), korean=korean)
    if job is None:  # "cancel my job": the answer lists the jobs and asks which one
        return JobRequest(action, korean=korean) if action and JOB_WORDS.search(prose) else None
    if action in (None, "list"):
        action = "get"  # a bare job id asks how that job is doing
    return JobRequest(action, job_id=job.group(0), korean=korean)


def _validate(prose: str, rows: list[dict], korean: bool) -> JobRequest | None:
    """A validation request needs a dataset: a file id, a path or inline JSONL; 'check on ftjob-…' is a status."""
    file_id = FILE_ID.search(prose)
    path = PATH.search(FILE_ID.sub(" ", JOB_ID.sub(" ", prose)))
    if file_id or path or rows:
        content = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) if rows else None
        return JobRequest(
            "validate",
            file_id=file_id.group(0) if file_id else None,
            path=path.group(0).rstrip(".,;:") if path and not file_id else None,
            content=content if not (file_id or path) else None,
            korean=korean,
        )
    if job := JOB_ID.search(prose):
        return JobRequest("get", job_id=job.group(0), korean=korean)
    if DATASET_WORDS.search(prose):
        return JobRequest("validate", korean=korean)  # a dataset was meant but not given: say what to send
    return None


def _status_filter(prose: str) -> str | None:
    """Return the job state a list request names ('list my running jobs'), if any."""
    low = prose.lower()
    found = next((s for s in STATUSES if re.search(rf"\b{s}\b", low)), None)
    if found is None and re.search(r"\bcanceled\b", low):
        found = "cancelled"
    return found or next((v for k, v in KO_STATUS.items() if k in prose), None)
