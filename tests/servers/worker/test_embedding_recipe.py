"""The `embedding` method: real training of the packaged e5-small on CPU, export, evaluation, and a full job.

The corpus is eight formal Korean welfare passages; the queries are colloquial paraphrases ("애 키우는데 ...")
that the base embedder ranks poorly for some passages. Training on three paraphrases per passage must rank the
held-out fourth paraphrase's passage higher than the base did.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from ragtune.servers.finetune.service import FinetuneService, ServiceError
from ragtune.servers.worker.recipes import TrainJob, get_recipe
from ragtune.servers.worker.recipes.embedding_corpus import CollectionChunk
from ragtune.servers.worker.recipes.embedding_eval import RetrievalSet, ndcg_at_10, rank, report
from ragtune.servers.worker.recipes.embedding_pairs import build_pairs, build_pairs_file, parse_questions

from ragtune.config import FinetuneSettings, RetrievalSettings
from ragtune.datasets import load_dataset
from ragtune.embedders.fast_e5 import TorchE5
from ragtune.embedders.tuned import TunedE5, read_manifest, tuned_dir
from ragtune.jobs import JobStatus, JobStore

DOCS = {
    "child": "아동수당 지급 대상은 만 8세 미만의 모든 아동이며, 보호자에게 매월 10만원을 지급합니다.",  # noqa: E501 - Korean text is double width
    "pension": "노령연금은 국민연금 가입기간이 10년 이상인 가입자가 수급개시연령에 도달하면 평생 매월 지급됩니다.",  # noqa: E501 - Korean text is double width
    "housing": "주거급여는 소득인정액이 기준 중위소득 48% 이하인 임차가구에 실제 임차료를 기준임대료 범위에서 지원합니다.",  # noqa: E501 - Korean text is double width
    "unemployment": "구직급여는 고용보험 피보험단위기간이 180일 이상인 비자발적 이직자가 재취업 활동을 하는 기간에 지급됩니다.",  # noqa: E501 - Korean text is double width
    "disability": "장애인 활동지원 서비스는 혼자서 일상생활이 어려운 장애인에게 활동지원사의 신체활동과 가사활동 지원을 제공합니다.",  # noqa: E501 - Korean text is double width
    "medical": "의료급여는 생활이 어려운 저소득 국민의 진료비를 국가가 부담하여 의료 이용을 보장하는 제도입니다.",  # noqa: E501 - Korean text is double width
    "energy": "에너지바우처는 취약계층 가구에 전기, 도시가스, 지역난방 요금을 납부할 수 있는 이용권을 지급합니다.",  # noqa: E501 - Korean text is double width
    "childcare": "보육료 지원은 어린이집을 이용하는 만 0세부터 5세까지의 영유아 보육료를 정부가 부담하는 제도입니다.",  # noqa: E501 - Korean text is double width
}
# The last paraphrase of each passage is held out; the base ranks pension's and housing's 4th (rank 3 of 8).
QUERIES = {
    "child": [
        "애 키우는데 나라에서 돈 나오는 거 있어요?",
        "꼬맹이 있는 집에 매달 주는 돈 뭐예요?",
        "아이 키우면 용돈처럼 주는 돈",
        "우리 애 여섯 살인데 돈 받을 수 있나요?",
    ],
    "pension": [
        "나이 들어서 매달 받는 돈 뭐가 있죠?",
        "은퇴하고 나서 다달이 받는 돈",
        "늙으면 나라에서 주는 돈",
        "회사 그만두고 예순 넘으면 받는 거",
    ],
    "housing": [
        "월세 내기 힘든데 도와주는 거 있나요?",
        "방세 보태주는 제도",
        "집세 지원 받고 싶어요",
        "셋방 사는데 돈 좀 받을 수 있나",
    ],
    "unemployment": [
        "회사에서 잘렸는데 돈 받을 수 있나요?",
        "실직하면 받는 돈",
        "해고당하고 일자리 찾는 동안 생활비",
        "직장 잃었을 때 나오는 돈",
    ],
    "disability": [
        "몸이 불편해서 혼자 밥하기 힘든데 도와주는 사람 있나요?",
        "장애가 있어서 집안일 도와줄 사람",
        "거동 불편한 사람 돌봐주는 서비스",
        "휠체어 타는데 씻는 거 도와주는 분",
    ],
    "medical": [
        "돈이 없어서 병원 못 가요",
        "가난한 사람 병원비 대주는 거",
        "치료비 감당이 안 되는데 어떡하죠",
        "저소득층 진료비 공짜",
    ],
    "energy": [
        "난방비 너무 많이 나와서 힘들어요",
        "겨울에 보일러 값 지원",
        "전기세 도와주는 거 있어요?",
        "가스비 낼 돈이 없어요",
    ],
    "childcare": [
        "어린이집 다니는 비용 나라에서 내주나요?",
        "유치원 말고 어린이집 돈",
        "세 살 애 맡기는 데 드는 돈 지원",
        "영아 어린이집 보내는 비용",
    ],
}
TRAIN = [{"query": q, "positive": DOCS[d]} for d, qs in QUERIES.items() for q in qs[:3]]
HELD_OUT = [{"query": qs[3], "positive": DOCS[d]} for d, qs in QUERIES.items()]
HYPER = {"n_epochs": 3, "batch_size": 8, "max_length": 48, "learning_rate": 5e-5, "lr_scheduler": "linear"}


class ListCallbacks:
    """RunCallbacks that keep everything in lists (what the job store would receive)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.rows: list[dict[str, Any]] = []
        self.checkpoints: list[int] = []

    def event(self, message: str, *, level: str = "info", data: dict[str, Any] | None = None) -> None:
        self.events.append(message)

    def metrics(self, data: dict[str, Any]) -> None:
        self.rows.append(data)

    def checkpoint(self, step: int, path: str, metrics: dict[str, Any]) -> None:
        self.checkpoints.append(step)

    def should_pause(self) -> bool:
        return False


def ranks(embedder: Any, pairs: list[dict[str, str]]) -> list[int]:
    """0-based rank of each pair's passage among the eight, by cosine."""
    docs = list(DOCS.values())
    scores = embedder.embed_queries([p["query"] for p in pairs]) @ embedder.embed_passages(docs).T
    return [
        int(np.flatnonzero(np.argsort(-row) == docs.index(p["positive"]))[0])
        for row, p in zip(scores, pairs, strict=True)
    ]


def test_retrieval_metrics_by_hand() -> None:
    assert ndcg_at_10(0) == 1.0 and ndcg_at_10(1) == pytest.approx(1 / np.log2(3)) and ndcg_at_10(10) == 0.0
    data = RetrievalSet.build(HELD_OUT[:2], TRAIN + [{**TRAIN[0], "negative": "다른 글"}], ["다른 글", "새 글"])
    assert len(data.corpus) == len(DOCS) + 2 and data.extra == 1  # duplicates collapse; one new chunk
    eye = {t: np.eye(len(data.corpus))[i] for i, t in enumerate(data.corpus)}
    own = np.stack([eye[h["positive"]] for h in HELD_OUT[:2]])
    perfect = rank(data, lambda qs: own, lambda ps: np.stack([eye[p] for p in ps]))
    assert perfect.metrics() == {"ndcg@10": 1.0, "recall@100": 1.0}
    flat = rank(data, lambda qs: np.ones((len(qs), 1)), lambda ps: np.ones((len(ps), 1)))  # ties: corpus order
    ev = report(data, flat, perfect, {"type": "held_out"})
    assert [r["outcome"] for r in ev["per_testing_criteria_results"]] == ["better", "same"]
    assert ev["verdict"] == "inconclusive"  # two queries are too few to call it better
    assert ev["result_counts"]["passed"] == 1  # the first query's passage was already first by corpus order


def test_label_free_pairs_from_titles_and_sentences() -> None:
    chunk = CollectionChunk(
        "d1", "주거급여", ("신청 방법",), "주거급여는 임차료를 지원합니다. 신청은 행정복지센터에서 합니다."
    )
    pairs, counts = build_pairs([chunk], seed=0)
    assert counts == {"title": 1, "sentence": 1}
    assert pairs[0] == {"query": "주거급여 > 신청 방법", "positive": chunk.text}
    assert pairs[1]["query"] in chunk.text and pairs[1]["query"] not in pairs[1]["positive"]
    answer = "1. 월세 도와주는 거 있나요?\n- 어디서 신청해요?\n주거급여는 임차료를 지원합니다."
    assert parse_questions(answer, 5) == ["월세 도와주는 거 있나요?", "어디서 신청해요?"]
    with pytest.raises(ValueError, match="needs a chat model"):
        build_pairs([chunk], sources=("question",))


async def test_label_free_pairs_from_a_real_collection_by_function_and_mcp_tool(tmp_path: Path) -> None:
    from mcp import Client
    from ragtune.servers.finetune.server import build_server
    from ragtune.servers.retrieval.index import Index

    index = Index.open(RetrievalSettings(), None)
    for name, text in DOCS.items():
        index.ingest_text(
            f"{name} 안내\n\n{text} 자세한 내용은 주민센터에 문의하세요.", collection="welfare", source=name
        )
    index.close()
    summary = build_pairs_file("welfare", tmp_path / "pairs.jsonl")
    assert summary["chunks"] == len(DOCS) and summary["by_source"]["title"] == len(DOCS)
    loaded = load_dataset(tmp_path / "pairs.jsonl", format="pairs")
    assert len(loaded.records) == summary["pairs"] and loaded.records[0]["query"].endswith("안내")
    service = FinetuneService(FinetuneSettings())
    async with Client(build_server(service.settings, service=service)) as c:
        made = await c.call_tool("finetune_build_embedding_pairs", {"collection": "welfare"})
        missing = await c.call_tool("finetune_build_embedding_pairs", {"collection": "nope"})
    assert not made.is_error and made.structured_content is not None
    assert made.structured_content["format"] == "pairs" and made.structured_content["pairs"] == summary["pairs"]
    assert service.get_file(made.structured_content["id"]).report["examples"] == summary["pairs"]
    assert missing.is_error and "nope" in missing.content[0].text  # type: ignore[union-attr]
    service.close()


def test_embedding_base_rate_matches_the_service_rule() -> None:
    from ragtune.servers.finetune.hyper import BASE_LR
    from ragtune.servers.worker.recipes import embedding

    assert BASE_LR[("embedding", "full")] == embedding.FULL_LR


@pytest.mark.slow  # 9 real training steps, two int8 engines and the evaluation: ~1-2 CPU-minutes
def test_tuned_embedder_ranks_held_out_paraphrases_higher(tmp_path: Path) -> None:
    job = {"id": "ftjob-tiny", "model": "e5-small", "seed": 0, "organization_id": "org-test", "created_at": 0}
    job |= {"status": "running", "training_file": "file-x", "user_provided_suffix": "tiny"}
    job["method"] = {"type": "embedding", "embedding": {"hyperparameters": {**HYPER, "save_steps": 4}}}
    recipe = get_recipe("embedding")
    name, path = recipe.resolve_model("intfloat/multilingual-e5-small", tmp_path)
    assert name == "e5-small" and path.endswith("e5-small-q4.bin")
    train_job = TrainJob(job=job, records=TRAIN, model_name=name, model_path=path, threads=1)
    train_job.validation_records, train_job.eval_source = HELD_OUT, {"type": "validation_file", "count": 8}
    callbacks = ListCallbacks()
    result = recipe.run(train_job, tmp_path / "out", callbacks)

    assert result.steps == 9 and callbacks.checkpoints[:2] == [4, 8]  # (and one at the end)
    assert result.extra["embedder"] == "ft:e5-small:org-test:tiny:ftjob-tiny"
    assert Path(result.model_path) == tuned_dir(FinetuneSettings().home, result.extra["embedder"])
    base, tuned = ranks(TorchE5(), HELD_OUT), ranks(TunedE5(result.model_path), HELD_OUT)
    # Pension's and housing's held-out paraphrases rank below the top for the base model (3 and 3 on the box that wrote
    # this test, 3 and 4 on an AMD EPYC without AVX-512: int8 kernels round differently per CPU); tuning must improve.
    assert base[1] >= 2 and base[2] >= 2, base
    assert tuned[1] < base[1] and tuned[2] < base[2] and sum(tuned) < sum(base), (base, tuned)
    ev = result.extra["evaluation"]
    rows = {r["testing_criteria"]: r for r in ev["per_testing_criteria_results"]}
    assert rows["ndcg@10"]["tuned"] > rows["ndcg@10"]["base"] and ev["verdict"] == "better"
    manifest = read_manifest(Path(result.model_path))
    assert manifest.verdict == "better" and manifest.job_id == "ftjob-tiny"
    assert manifest.metrics["tuned"].ndcg_at_10 == rows["ndcg@10"]["tuned"]
    assert callbacks.rows[0]["train_loss"] > callbacks.rows[-1]["train_loss"]


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def test_service_refuses_what_an_embedding_job_cannot_run() -> None:
    svc = FinetuneService(FinetuneSettings())
    pairs = svc.upload(jsonl(TRAIN), "pairs.jsonl")
    chat = svc.upload(
        jsonl([{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]), "c.jsonl"
    )
    emb = {"training_file": pairs.id, "method": {"type": "embedding"}}
    cases = [
        ({"training_file": chat.id, "method": {"type": "embedding"}}, "invalid_file_format"),
        ({"training_file": pairs.id, "method": {"type": "supervised"}}, "invalid_file_format"),
        ({**emb, "model": "smollm2"}, "model_not_found"),
        ({**emb, "model": "ft:e5-small::ftjob-0"}, "model_not_found"),
        ({**emb, "peft": {"type": "lora"}}, None),
        ({**emb, "method": {"type": "embedding", "embedding": {"beta": 1}}}, None),
    ]
    for request, code in cases:
        with pytest.raises(ServiceError) as info:
            svc.create_job(request)
        assert info.value.status == 400 and (code is None or info.value.code == code), info.value.message
    job = svc.create_job({"training_file": pairs.id, "method": {"type": "embedding"}, "model": "e5-small"})
    assert job.model == "e5-small" and job.peft is None and job.status is JobStatus.queued
    assert job.hyperparameters["batch_size"] == 8 and job.hyperparameters["learning_rate"] == 2e-5  # 24 pairs
    svc.close()


@pytest.mark.slow
def test_embedding_job_runs_through_the_service_and_a_worker(
    finetune_url: str, store: JobStore, worker_thread: Callable[..., Any]
) -> None:
    from ragtune.servers.retrieval.index import Index

    index = Index.open(RetrievalSettings(), None)
    for name, text in DOCS.items():
        index.ingest_text(text, collection="welfare", source=name)
    index.close()
    with httpx.Client(base_url=f"{finetune_url}/v1", timeout=60) as http:
        train = http.post("/files", files={"file": ("t.jsonl", jsonl(TRAIN))}, data={"purpose": "fine-tune"}).json()
        valid = http.post("/files", files={"file": ("v.jsonl", jsonl(HELD_OUT))}, data={"purpose": "fine-tune"}).json()
        assert train["format"] == "pairs", train
        hyper = {**HYPER, "n_epochs": 1, "collection": "welfare"}
        body = {"model": "e5-small", "training_file": train["id"], "validation_file": valid["id"], "suffix": "welfare"}
        body["method"] = {"type": "embedding", "embedding": {"hyperparameters": hyper}}
        created = http.post("/fine_tuning/jobs", json=body)
        assert created.status_code == 200, created.text
        job_id = created.json()["id"]
        worker_thread(once=True).join(300)
        job = http.get(f"/fine_tuning/jobs/{job_id}").json()
        assert job["status"] == "succeeded", job["error"]
        evaluation = http.get(f"/fine_tuning/jobs/{job_id}/evaluation").json()
    assert job["fine_tuned_model"] == f"ft:e5-small:org-ragtune:welfare:{job_id}"
    assert evaluation["status"] == "completed" and evaluation["examples"] == 8
    assert evaluation["data_source"]["collection_chunks"] == 0  # the collection holds the same 8 passages
    assert {r["testing_criteria"] for r in evaluation["per_testing_criteria_results"]} == {"ndcg@10", "recall@100"}
    folder = tuned_dir(FinetuneSettings().home, job["fine_tuned_model"])
    manifest = read_manifest(folder)
    assert manifest.verdict == evaluation["verdict"] and manifest.job_id == job_id
    out = Path(store.get_job(job_id).output_dir or "")
    result = json.loads((out / "result.json").read_text())
    assert result["model_path"] == str(folder) and "ndcg@10" in (out / "EVAL.md").read_text()
    messages = [e.message for e in store.list_events(job_id, limit=100)]
    assert any("bm25 hard negatives from collection 'welfare' for 24 pairs" in m for m in messages), messages
    assert any(m.startswith("evaluation on 8 held-out examples (base -> tuned): ndcg@10") for m in messages), messages


def test_mined_negative_is_never_the_positives_document_and_is_stable(tmp_path: Path) -> None:
    """A second chunk of the positive's document is not a negative; the pick repeats run to run."""
    from ragtune.servers.retrieval.index import Index
    from ragtune.servers.worker.recipes.embedding_corpus import mine_negatives

    index = Index.open(tmp_path / "lexical.db", None)
    try:
        apply = "아동수당 신청은 주민센터에서 아동수당 신청서로 합니다."
        long_doc = "# 아동수당\n\n" + DOCS["child"] + "\n\n## 신청\n\n" + apply
        index.ingest_text(long_doc, collection="w", source="child")
        for name in ("childcare", "medical", "energy"):
            index.ingest_text(DOCS[name], collection="w", source=name)
        child = index.get_document(index.list_documents("w", offset=0, limit=10).documents[0].doc_id)
        assert len(child.chunk_spans) == 2, "the test needs the positive's document in two chunks"
        first = child.text[child.chunk_spans[0].char_start : child.chunk_spans[0].char_end].strip()
        records = [{"query": "아동수당 신청은 어디서 하나요? 보육료나 의료 지원 제도도", "positive": first}]
        mined, count = mine_negatives(records, "w", index=index)
        again, _ = mine_negatives(records, "w", index=index)
    finally:
        index.close()
    assert count == 1
    negative = mined[0]["negative"]
    assert "아동수당 신청은 주민센터" not in negative and "아동수당 지급 대상" not in negative, negative
    assert negative in {DOCS["childcare"], DOCS["medical"], DOCS["energy"]}
    assert again == mined
