"""Job and dataset requests to the fine-tuning agent's fixed workflow: the intent parser (English and Korean), then
one A2A test per family against the real fine-tuning server (jobs are created with no worker running)."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from ragtune.agents.a2a_peer import A2APeer, PeerEvent
from ragtune.agents.finetune.requests import JobRequest, parse_request
from ragtune.agents.mcp_tools import McpTools

from ragtune.config import FinetuneSettings
from ragtune.jobs import JobStore

PAIRS = "\n".join(json.dumps({"question": f"What is fact {i}?", "answer": f"Fact {i} is LoRA."}) for i in range(12))
CHAT = "\n".join(
    json.dumps({"messages": [{"role": "user", "content": f"{i}+{i}?"}, {"role": "assistant", "content": f"{2 * i}"}]})
    for i in range(12)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is the status of job ftjob-ab12?", JobRequest("get", job_id="ftjob-ab12")),
        ("ftjob-ab12", JobRequest("get", job_id="ftjob-ab12")),
        ("check on ftjob-ab12", JobRequest("get", job_id="ftjob-ab12")),
        ("ftjob-ab12 작업 상태 알려줘", JobRequest("get", job_id="ftjob-ab12", korean=True)),
        ("list my jobs", JobRequest("list")),
        ("show my running jobs", JobRequest("list", status="running")),
        ("작업 목록 보여줘", JobRequest("list", korean=True)),
        ("cancel job ftjob-ab12", JobRequest("cancel", job_id="ftjob-ab12")),
        ("ftjob-ab12 취소해 주세요", JobRequest("cancel", job_id="ftjob-ab12", korean=True)),
        ("pause ftjob-ab12", JobRequest("pause", job_id="ftjob-ab12")),
        ("ftjob-ab12 일시 정지", JobRequest("pause", job_id="ftjob-ab12", korean=True)),
        ("please resume ftjob-ab12", JobRequest("resume", job_id="ftjob-ab12")),
        ("ftjob-ab12 재개해 줘", JobRequest("resume", job_id="ftjob-ab12", korean=True)),
        ("cancel my job", JobRequest("cancel")),  # no id: the answer lists the jobs and asks which
        ("show the evaluation of ftjob-ab12", JobRequest("evaluation", job_id="ftjob-ab12")),
        ("ftjob-ab12 평가 결과", JobRequest("evaluation", job_id="ftjob-ab12", korean=True)),
        ("validate my dataset data/train.jsonl.", JobRequest("validate", path="data/train.jsonl")),
        ("check my dataset ~/d/train.jsonl", JobRequest("validate", path="~/d/train.jsonl")),
        ("데이터셋 검증: /srv/x.jsonl", JobRequest("validate", path="/srv/x.jsonl", korean=True)),
        ("validate file-9f3", JobRequest("validate", file_id="file-9f3")),
        ("validate my dataset", JobRequest("validate")),
        ('validate this:\n{"text": "a"}', JobRequest("validate", content='{"text": "a"}')),
    ],
)
def test_job_and_dataset_requests_are_recognised(text, expected):
    assert parse_request(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Should we fine-tune? Our docs change every week.",
        "Launch a fine-tuning job for me",
        "Train on file-9f3 for 2 steps",
        f"Instruction-tune the model on these pairs for 3 steps:\n{PAIRS}",
        "How much GPU memory does LoRA on a 7B model need?",
        "How should I evaluate a tuned model?",
        "선호 쌍 2만 개가 있어요. 어떤 방법을 추천하나요?",
    ],
)
def test_advice_training_and_memory_requests_are_left_to_the_workflow(text):
    assert parse_request(text) is None


async def ask(url: str, text: str) -> PeerEvent:
    peer = A2APeer(url)
    try:
        with anyio.fail_after(60):
            return await peer.ask(text)
    finally:
        await peer.aclose()


async def new_job(tools: McpTools) -> str:
    file = await tools.call("finetune_upload_dataset", content=CHAT, filename="chat.jsonl")
    job = await tools.call("finetune_create_job", training_file=file["id"], hyperparameters={"max_steps": 2})
    return job["id"]


async def test_status_of_a_job_in_english_and_korean_and_an_unknown_id(finetune_stack):
    url, mcp = finetune_stack
    job_id = await new_job(McpTools(mcp))
    done = await ask(url, f"What is the status of job {job_id}?")
    assert done.state_name == "completed"
    assert f"Job {job_id}: queued" in done.text and "Next: wait for a worker" in done.text
    assert "[mode: rules + finetune_get_job]" in done.text
    ko = await ask(url, f"{job_id} 작업 상태 알려줘")
    assert f"작업 {job_id}: queued" in ko.text and "다음 단계:" in ko.text
    latest = await ask(url, "What is the status of my last job?")
    assert f"Job {job_id}: queued" in latest.text
    missing = await ask(url, "status of ftjob-doesnotexist")
    assert missing.state_name == "completed" and "The fine-tuning server refused" in missing.text
    assert "ftjob-doesnotexist" in missing.text and "advice" not in missing.text.lower()


async def test_list_jobs_as_a_table(finetune_stack):
    url, mcp = finetune_stack
    tools = McpTools(mcp)
    empty = await ask(url, "list my jobs")
    assert "No fine-tuning jobs yet." in empty.text
    first, second = await new_job(tools), await new_job(tools)
    await tools.call("finetune_cancel_job", job_id=first)
    listed = await ask(url, "list my jobs")
    assert "2 fine-tuning job(s), newest first:" in listed.text and "| job | status |" in listed.text
    rows = [line for line in listed.text.splitlines() if line.startswith("| ftjob-")]
    assert [r.split(" | ")[0:2] for r in rows] == [[f"| {second}", "queued"], [f"| {first}", "cancelled"]]
    cancelled = await ask(url, "작업 목록 보여줘, cancelled 만")
    assert "파인튜닝 작업 1개" in cancelled.text and first in cancelled.text and second not in cancelled.text


async def test_cancel_pause_and_resume_a_job(finetune_stack):
    url, mcp = finetune_stack
    tools = McpTools(mcp)
    job_id = await new_job(tools)
    paused = await ask(url, f"pause {job_id}")
    assert f"Job {job_id} is paused (status: paused)." in paused.text
    resumed = await ask(url, f"{job_id} 재개해 주세요")
    assert f"작업을 재개했습니다: {job_id} (상태: queued)" in resumed.text
    which = await ask(url, "cancel my job")
    assert job_id in which.text and f"Which job? Name its id, e.g. “cancel {job_id}”" in which.text
    cancelled = await ask(url, f"cancel job {job_id}")
    assert f"Job {job_id} is cancelled" in cancelled.text
    assert (await tools.call("finetune_get_job", job_id=job_id))["job"]["status"] == "cancelled"
    again = await ask(url, f"pause {job_id}")  # the server's own refusal, relayed
    assert "The fine-tuning server refused" in again.text and "[mode: rules + finetune_pause_job]" in again.text


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder the fine-tuning server may read datasets from (set before the server starts)."""
    root = tmp_path / "datasets"
    root.mkdir()
    monkeypatch.setenv("RAGTUNE_FINETUNE_ROOTS", str(root))
    return root


async def test_validate_a_dataset_by_path_and_inline(data_root, finetune_stack):
    url, _ = finetune_stack
    (data_root / "chat.jsonl").write_text(CHAT + "\n")
    good = await ask(url, f"validate my dataset {data_root / 'chat.jsonl'}")
    assert f"{data_root / 'chat.jsonl'} is valid: 12 chat examples." in good.text
    one_sided = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    bad = await ask(url, f"validate this dataset:\n{CHAT.splitlines()[0]}\n{one_sided}")
    assert "the pasted dataset is not valid" in bad.text and "- line 2: no assistant turn" in bad.text
    outside = await ask(url, "데이터셋 검증: /etc/passwd.jsonl")
    assert (
        "파인튜닝 서버가 거절했습니다" in outside.text and "[mode: rules + finetune_validate_dataset]" in outside.text
    )


async def test_evaluation_of_a_job(finetune_stack):
    url, mcp = finetune_stack
    job_id = await new_job(McpTools(mcp))
    pending = await ask(url, f"show the evaluation of {job_id}")
    assert f"Job {job_id} has no evaluation yet (status: queued)" in pending.text
    row = {"testing_criteria": "loss", "base": 2.5, "tuned": 1.25, "delta": -1.25, "outcome": "better"}
    store = JobStore(FinetuneSettings().db_path())  # what the worker writes when training ends
    store.update_job(
        job_id,
        evaluation={"examples": 4, "per_testing_criteria_results": [row], "verdict": "better", "summary": "lower"},
        warnings=[{"code": "loss_diverged", "message": "the loss rose at the end"}],
    )
    store.close()
    shown = await ask(url, f"{job_id} 평가 보여줘")
    assert f"작업 {job_id}의 평가:" in shown.text and "| loss | 2.500 | 1.250 | -1.250 | better |" in shown.text
    assert "Verdict: better" in shown.text and "- the loss rose at the end" in shown.text
