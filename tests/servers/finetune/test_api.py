"""The REST API driven by the official openai SDK over real HTTP (and TestClient for raw status checks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import openai
import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from pydantic import SecretStr
from ragtune.servers.finetune.app import build_app

from ragtune.config import FinetuneSettings
from ragtune.jobs import JobStore

from .conftest import BAD, CHAT, PREFERENCE, TEXT


def client(url: str, key: str = "unused") -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=20)


def test_upload_create_and_follow_a_job_with_the_openai_sdk(
    settings: FinetuneSettings, serve: Callable[[FinetuneSettings], str]
) -> None:
    api = client(serve(settings))
    file = api.files.create(file=("train.jsonl", CHAT.encode()), purpose="fine-tune")
    assert file.id.startswith("file-") and file.bytes == len(CHAT.encode()) and file.purpose == "fine-tune"
    assert api.files.retrieve(file.id).filename == "train.jsonl"
    assert api.files.content(file.id).content == CHAT.encode()
    assert [f.id for f in api.files.list().data] == [file.id]

    job = api.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=file.id,
        suffix="adder",
        seed=7,
        metadata={"team": "qa"},
        method={
            "type": "supervised",
            "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": 0.5}},
        },
    )
    assert job.status == "queued" and job.model == "smollm2-135m-instruct" and job.seed == 7
    assert job.method.type == "supervised"
    hp = job.method.supervised.hyperparameters
    assert (hp.n_epochs, hp.batch_size, hp.learning_rate_multiplier) == (
        2,
        1,
        0.5,
    )  # auto batch: 12 examples -> 1
    extra = job.model_extra or {}
    assert extra["peft"]["type"] == "lora" and extra["output_dir"].endswith(job.id)
    assert job.hyperparameters.model_extra["learning_rate"] == pytest.approx(1e-4)  # 0.5 x LoRA base 2e-4

    assert api.fine_tuning.jobs.retrieve(job.id).user_provided_suffix == "adder"
    assert [j.id for j in api.fine_tuning.jobs.list(metadata={"team": "qa"}).data] == [job.id]
    assert api.fine_tuning.jobs.list(metadata={"team": "other"}).data == []
    assert api.fine_tuning.jobs.pause(job.id).status == "paused"
    assert api.fine_tuning.jobs.resume(job.id).status == "queued"

    store = JobStore(settings.db_path())  # what a worker does: lease, log metrics, checkpoint
    assert store.lease_next("w1", 30).id == job.id  # type: ignore[union-attr]
    store.add_event(job.id, "step 1", type="metrics", data={"step": 1, "train_loss": 2.5})
    store.add_checkpoint(job.id, 1, str(Path(settings.home) / "ck-1"), {"step": 1, "train_loss": 2.5})
    store.close()

    events = api.fine_tuning.jobs.list_events(job.id, limit=3)
    assert events.data[0].type == "metrics" and events.data[0].data == {"step": 1, "train_loss": 2.5}
    assert events.has_more
    older = api.fine_tuning.jobs.list_events(job.id, after=events.data[-1].id, limit=50)
    messages = [e.message for e in older.data]
    assert "resumed by request; queued to continue from the last checkpoint" in messages
    assert messages[-1].startswith("created fine-tuning job: supervised of smollm2-135m-instruct")
    ckpts = api.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in ckpts.data] == [1] and ckpts.data[0].fine_tuning_job_id == job.id

    cancelled = api.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at
    with pytest.raises(openai.ConflictError, match="is cancelled; it cannot become cancelled"):
        api.fine_tuning.jobs.cancel(job.id)
    api.files.delete(file.id)
    assert api.files.list().data == []


def test_bad_dataset_is_refused_with_line_numbers_and_creates_nothing(
    settings: FinetuneSettings, serve: Callable[[FinetuneSettings], str]
) -> None:
    api = client(serve(settings))
    with pytest.raises(openai.BadRequestError) as info:
        api.files.create(file=("bad.jsonl", BAD.encode()), purpose="fine-tune")
    assert info.value.status_code == 400
    body = info.value.body
    assert isinstance(body, dict)
    assert body["code"] == "invalid_file" and body["param"] == "file"
    assert [p["line"] for p in body["problems"]] == [13, 14]
    assert "line 13: no assistant turn" in body["message"] and "line 14: bad JSON" in body["message"]
    assert api.files.list().data == []
    assert list((settings.home / "files").iterdir()) == []
    with pytest.raises(openai.BadRequestError, match="purpose 'batch' is not supported"):
        api.files.create(file=("ok.jsonl", CHAT.encode()), purpose="batch")


def test_job_requests_that_cannot_run_are_400s(
    settings: FinetuneSettings, serve: Callable[[FinetuneSettings], str]
) -> None:
    api = client(serve(settings))
    chat = api.files.create(file=("c.jsonl", CHAT.encode()), purpose="fine-tune").id
    with pytest.raises(openai.BadRequestError, match="unknown base model 'gpt-7-turbo'.*smollm2-135m-instruct") as e:
        api.fine_tuning.jobs.create(model="gpt-7-turbo", training_file=chat)
    assert e.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="method 'dpo' needs preference records"):
        api.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=chat, method={"type": "dpo"})
    with pytest.raises(openai.BadRequestError, match="does not exist; upload it first"):
        api.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file="file-missing")
    with pytest.raises(openai.BadRequestError, match="n_epochs must be"):
        api.fine_tuning.jobs.create(
            model="smollm2-135m-instruct",
            training_file=chat,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": -1}}},
        )
    with pytest.raises(openai.BadRequestError, match="unknown peft type 'prefix'"):
        api.fine_tuning.jobs.create(
            model="smollm2-135m-instruct", training_file=chat, extra_body={"peft": {"type": "prefix"}}
        )
    assert api.fine_tuning.jobs.list().data == []


def test_dpo_cpt_and_rejection_sampling_jobs_resolve_their_settings(
    settings: FinetuneSettings, serve: Callable[[FinetuneSettings], str]
) -> None:
    api = client(serve(settings))
    pref = api.files.create(file=("p.jsonl", PREFERENCE.encode()), purpose="fine-tune").id
    text = api.files.create(file=("t.jsonl", TEXT.encode()), purpose="fine-tune").id
    chat = api.files.create(file=("c.jsonl", CHAT.encode()), purpose="fine-tune").id
    dpo = api.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=pref,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2}}},
        extra_body={"peft": {"type": "lora", "r": 4}},
    )
    assert dpo.status == "queued" and dpo.method.dpo.hyperparameters.beta == 0.2
    assert (dpo.model_extra or {})["peft"]["r"] == 4
    assert dpo.hyperparameters.n_epochs == 9  # auto: ceil(100 / 12 examples)
    cpt = api.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=text, method={"type": "cpt"})  # type: ignore[typeddict-item]
    assert cpt.status == "queued" and (cpt.model_extra or {})["peft"] is None  # CPT defaults to full
    lora_cpt = api.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=chat,
        method={"type": "cpt"},  # type: ignore[typeddict-item]
        extra_body={"x_ragtune": {"peft": {"type": "lora"}}},
    )
    events = [e.message for e in api.fine_tuning.jobs.list_events(lora_cpt.id, limit=20).data]
    assert any("flattened to plain text" in m for m in events)
    rs = api.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=chat,
        method={
            "type": "rejection_sampling",  # type: ignore[typeddict-item]
            "rejection_sampling": {"n_samples": 3, "reward": r"regex:\d+ \+ \d+ = \d+"},
        },
        extra_body={"peft": {"type": "full"}},
    )
    assert rs.status == "queued" and (rs.model_extra or {})["peft"] is None
    assert rs.hyperparameters.model_extra["reward"].startswith("regex:")
    assert rs.hyperparameters.model_extra["n_samples"] == 3
    with pytest.raises(openai.BadRequestError, match="reward regex does not compile"):
        api.fine_tuning.jobs.create(
            model="smollm2-135m-instruct",
            training_file=chat,
            method={"type": "rejection_sampling", "rejection_sampling": {"reward": "regex:("}},
        )  # type: ignore[typeddict-item]
    page = api.fine_tuning.jobs.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    rest = api.fine_tuning.jobs.list(after=page.data[-1].id, limit=10)
    assert [j.id for j in page.data + rest.data] == [rs.id, lora_cpt.id, cpt.id, dpo.id]


def test_unknown_ids_are_404(settings: FinetuneSettings, serve: Callable[[FinetuneSettings], str]) -> None:
    api = client(serve(settings))
    for call in (
        lambda: api.fine_tuning.jobs.retrieve("ftjob-nope"),
        lambda: api.fine_tuning.jobs.cancel("ftjob-x"),
        lambda: api.fine_tuning.jobs.list_events("ftjob-x"),
        lambda: api.files.retrieve("file-nope"),
        lambda: api.files.delete("file-nope"),
    ):
        with pytest.raises(openai.NotFoundError):
            call()


def test_token_is_required_when_set(settings: FinetuneSettings, serve: Callable[[FinetuneSettings], str]) -> None:
    secured = settings.model_copy(update={"api_token": SecretStr("s3cret")})
    url = serve(secured)
    with pytest.raises(openai.AuthenticationError, match="bearer token"):
        client(url, "wrong").files.list()
    assert client(url, "s3cret").files.list().data == []
    import httpx

    assert httpx.get(f"{url}/health", timeout=5).json()["status"] == "ok"
    assert httpx.get(f"{url}/v1/files", timeout=5).status_code == 401


def test_limits_and_in_use_files_with_testclient(settings: FinetuneSettings) -> None:
    small = settings.model_copy(update={"finetune_max_file_mb": 0.001})
    with TestClient(build_app(small)) as http:
        r = http.post("/v1/files", files={"file": ("big.jsonl", CHAT.encode())}, data={"purpose": "fine-tune"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
    with TestClient(build_app(settings)) as http:
        fid = http.post("/v1/files", files={"file": ("c.jsonl", CHAT.encode())}, data={"purpose": "fine-tune"}).json()[
            "id"
        ]
        assert "path" not in http.get(f"/v1/files/{fid}").json()  # the server's disk layout stays private
        job = http.post("/v1/fine_tuning/jobs", json={"training_file": fid}).json()
        assert job["model"] == "smollm2-135m-instruct" and job["status"] == "queued" and job["seed"] == 0
        r = http.delete(f"/v1/files/{fid}")
        assert r.status_code == 409 and job["id"] in r.json()["error"]["message"]
        r = http.post("/v1/fine_tuning/jobs", json={"training_file": fid, "bogus": 1})
        assert r.status_code == 400 and r.json()["error"]["param"] == "bogus"
        r = http.post("/v1/ragtune/validate", files={"file": ("b.jsonl", BAD.encode())})
        assert r.status_code == 400 and [p["line"] for p in r.json()["error"]["problems"]] == [13, 14]
        est = http.post("/v1/ragtune/estimate_memory", json={"params_b": 7, "method": "full"}).json()
        assert est["weights_gb"] == 14.0
        rec = http.post("/v1/ragtune/recommend", json={"goal": "style", "n_examples": 500}).json()
        assert rec["method"] == "lora_sft" and rec["job_method"]["type"] == "supervised"


# OpenAI's file and fine-tuning shapes plus ragtune's extras; file content is raw bytes and the evaluation is not
# typed yet (its own model is pending), so both are left out.
TYPED_PREFIXES = ("/v1/files", "/v1/fine_tuning/jobs", "/v1/ragtune/")
UNTYPED = ("/content", "/evaluation")


def test_openapi_describes_the_fine_tuning_answers_with_schemas(settings: FinetuneSettings) -> None:
    with TestClient(build_app(settings)) as http:
        spec = http.get("/openapi.json").json()
    checked, untyped = [], []
    for path, ops in spec["paths"].items():
        if not path.startswith(TYPED_PREFIXES) or path.endswith(UNTYPED):
            continue
        for verb, op in ops.items():
            ok = op.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {})
            checked.append(path)
            if "$ref" not in str(ok.get("schema", {})):
                untyped.append(f"{verb.upper()} {path}")
    assert len(checked) >= 14 and untyped == []
    job = spec["components"]["schemas"]["Job"]["properties"]
    assert {"id", "status", "fine_tuned_model", "method"} <= job.keys() and "path" not in spec["components"]["schemas"][
        "FileObject"
    ]["properties"]


def test_prompt_only_files_serve_rejection_sampling_with_a_rule_reward(
    settings: FinetuneSettings, serve: Callable[[FinetuneSettings], str]
) -> None:
    api = client(serve(settings))
    prompts = "".join(f'{{"messages": [{{"role": "user", "content": "Count to {i}."}}]}}\n' for i in range(3, 15))
    with pytest.raises(openai.BadRequestError, match="line 1: no assistant turn"):
        api.files.create(file=("p.jsonl", prompts.encode()), purpose="fine-tune")
    file = api.files.create(
        file=("p.jsonl", prompts.encode()), purpose="fine-tune", extra_body={"allow_prompt_only": "true"}
    )
    assert (file.model_extra or {})["report"]["prompt_only"] == 12
    with pytest.raises(openai.BadRequestError, match="12 examples without an assistant answer"):
        api.fine_tuning.jobs.create(model="smollm2-135m-instruct", training_file=file.id)
    with pytest.raises(openai.BadRequestError, match="without an assistant answer"):
        api.fine_tuning.jobs.create(
            model="smollm2-135m-instruct", training_file=file.id, method={"type": "rejection_sampling"}
        )  # type: ignore[typeddict-item]
    job = api.fine_tuning.jobs.create(
        model="smollm2-135m-instruct",
        training_file=file.id,
        method={"type": "rejection_sampling", "rejection_sampling": {"reward": r"regex:\d"}},
    )  # type: ignore[typeddict-item]
    assert job.status == "queued"


def test_a_file_changed_on_disk_fails_the_job_with_the_reason(settings: FinetuneSettings) -> None:
    with TestClient(build_app(settings)) as http:
        file = http.post("/v1/files", files={"file": ("c.jsonl", CHAT.encode())}, data={"purpose": "fine-tune"}).json()
        stored = next((settings.home / "files").iterdir())
        stored.write_text(CHAT + CHAT)  # someone edited the upload behind the service's back
        job = http.post("/v1/fine_tuning/jobs", json={"training_file": file["id"]}).json()
        assert job["status"] == "failed" and job["error"]["code"] == "invalid_training_file"
        assert "changed or vanished on disk" in job["error"]["message"]
