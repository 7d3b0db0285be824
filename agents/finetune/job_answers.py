"""Carry out a recognised job or dataset request with the fine-tuning server's tools and say the result plainly.

English or Korean, as the user wrote; a refusal from the server (unknown id, wrong state) is relayed as it is.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ragtune.agents.finetune import evaluation
from ragtune.agents.finetune.requests import JobRequest
from ragtune.agents.mcp_tools import McpTools, ToolFailed

TOOLS = {
    "get": "finetune_get_job",
    "list": "finetune_list_jobs",
    "cancel": "finetune_cancel_job",
    "pause": "finetune_pause_job",
    "resume": "finetune_resume_job",
    "validate": "finetune_validate_dataset",
    "evaluation": "finetune_get_job",
}
DONE = {
    "cancel": ("is cancelled", "작업을 취소했습니다"),
    "pause": ("is paused", "작업을 일시 정지했습니다"),
    "resume": ("is resumed", "작업을 재개했습니다"),
}
KO_VERB = {"cancel": "취소", "pause": "일시 정지", "resume": "재개"}


def _t(req: JobRequest, en: str, ko: str) -> str:
    return ko if req.korean else en


async def answer(tools: McpTools, req: JobRequest) -> str:
    """Run the request's tool and return the reply, tagged with the tool it used."""
    try:
        body = await _answer(tools, req)
    except ToolFailed as e:
        body = _t(req, f"The fine-tuning server refused: {e}", f"파인튜닝 서버가 거절했습니다: {e}")
    return f"{body}\n\n[mode: rules + {TOOLS[req.action]}]"


async def _answer(tools: McpTools, req: JobRequest) -> str:
    if req.action == "validate":
        return await _validate(tools, req)
    if req.job_id is None and req.action in ("get", "evaluation"):  # "status of my last job": the newest one
        newest = (await tools.call("finetune_list_jobs", limit=1))["jobs"]
        req = replace(req, job_id=newest[0]["id"]) if newest else req
    if req.action == "list" or req.job_id is None:  # cancel/pause/resume without an id: ask which, act on none
        return await _list(tools, req)
    if req.action in DONE:
        job = await tools.call(TOOLS[req.action], job_id=req.job_id)
        en, ko = DONE[req.action]
        return _t(req, f"Job {job['id']} {en} (status: {job['status']}).", f"{ko}: {job['id']} (상태: {job['status']})")
    view = await tools.call("finetune_get_job", job_id=req.job_id)
    if req.action == "evaluation":
        return _evaluation(view["job"], req)
    return _job(view, req)


async def _list(tools: McpTools, req: JobRequest) -> str:
    args: dict[str, Any] = {"limit": 20} | ({"status": req.status} if req.status else {})
    page = await tools.call("finetune_list_jobs", **args)
    jobs = page["jobs"]
    ask = ""
    if req.action in KO_VERB:  # "cancel my job" without an id: show the jobs and ask which one
        example = jobs[0]["id"] if jobs else "ftjob-…"
        ask = _t(
            req,
            f"\nWhich job? Name its id, e.g. “{req.action} {example}”.",
            f"\n어느 작업인가요? 작업 id를 알려 주세요 (예: “{example} {KO_VERB[req.action]}”).",
        )
    if not jobs:
        which = f" ({req.status})" if req.status else ""
        return _t(req, f"No fine-tuning jobs{which} yet.", f"파인튜닝 작업이 없습니다{which}.") + ask
    head = _t(
        req, "| job | status | model | created (UTC) | tuned model |", "| 작업 | 상태 | 모델 | 생성 (UTC) | 튜닝 모델 |"
    )
    rows = [
        f"| {j['id']} | {j['status']} | {j['model']} | {_when(j['created_at'])} | {j.get('fine_tuned_model') or '-'} |"
        for j in jobs
    ]
    more = _t(req, "\n(more jobs exist: ask for them by status)", "\n(작업이 더 있습니다)") if page["has_more"] else ""
    title = _t(req, f"{len(jobs)} fine-tuning job(s), newest first:", f"파인튜닝 작업 {len(jobs)}개 (최신순):")
    return "\n".join([title, head, "|---|---|---|---|---|", *rows]) + more + ask


def _job(view: dict[str, Any], req: JobRequest) -> str:
    job, metrics = view["job"], view.get("latest_metrics") or {}
    lines = [
        _t(req, f"Job {job['id']}: {job['status']}", f"작업 {job['id']}: {job['status']}"),
        _t(req, f"- model: {job['model']}", f"- 모델: {job['model']}"),
        _t(req, f"- created: {_when(job['created_at'])} UTC", f"- 생성: {_when(job['created_at'])} UTC"),
    ]
    steps = (job.get("hyperparameters") or {}).get("max_steps")
    if metrics.get("step") is not None:
        loss = metrics.get("train_loss", metrics.get("loss"))
        progress = f"{metrics['step']}/{steps or '?'}" + (f", loss {loss:.4g}" if isinstance(loss, float) else "")
        lines.append(_t(req, f"- step {progress}", f"- 스텝 {progress}"))
    if job.get("fine_tuned_model"):
        lines.append(_t(req, f"- tuned model: {job['fine_tuned_model']}", f"- 튜닝 모델: {job['fine_tuned_model']}"))
    if job.get("error"):
        lines.append(_t(req, f"- error: {job['error']['message']}", f"- 오류: {job['error']['message']}"))
    lines.append(_t(req, f"Next: {view['next_step']}", f"다음 단계: {view['next_step']}"))
    return "\n".join(lines)


def _evaluation(job: dict[str, Any], req: JobRequest) -> str:
    if not job.get("evaluation"):
        return _t(
            req,
            f"Job {job['id']} has no evaluation yet (status: {job['status']}); it is written when training ends.",
            f"작업 {job['id']}에는 아직 평가가 없습니다 (상태: {job['status']}). 학습이 끝나면 기록됩니다.",
        )
    warnings = [f"- {w.get('message') or w.get('code')}" for w in job.get("warnings") or []]
    head = _t(req, f"Evaluation of job {job['id']}:", f"작업 {job['id']}의 평가:")
    return "\n".join([head, evaluation.table(job["evaluation"]), *warnings])


async def _validate(tools: McpTools, req: JobRequest) -> str:
    if req.path is None and req.content is None:
        return _t(
            req,
            "Which dataset? Give a path under the server's allowed folders (e.g. data/train.jsonl) or paste JSONL "
            "lines. An uploaded file-… id was already validated when it was uploaded.",
            "어느 데이터셋인가요? 서버의 허용 폴더 아래 경로(예: data/train.jsonl)를 주시거나 JSONL 줄을 붙여 넣어 "
            "주세요. 업로드된 file-… id는 업로드할 때 이미 검증되었습니다.",
        )
    source = {"path": req.path} if req.path else {"content": req.content}
    result = await tools.call("finetune_validate_dataset", **source)
    name = req.path or _t(req, "the pasted dataset", "붙여 넣은 데이터셋")
    if result["valid"]:
        return _t(
            req,
            f"{name} is valid: {result['examples']} {result['format']} examples.\n{result['summary']}",
            f"{name}: 검증 통과, {result['format']} 형식 {result['examples']}개.\n{result['summary']}",
        )
    problems = [f"- line {p['line']}: {p['message']}" for p in result.get("problems") or []][:10]
    head = _t(req, f"{name} is not valid: {result['summary']}", f"{name}: 검증 실패 — {result['summary']}")
    return "\n".join([head, *problems])


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M")
