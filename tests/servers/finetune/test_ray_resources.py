"""x_ragtune.resources: validation, the data-parallel layout it implies, and the memory estimate that sizes a Ray
job's GPU request (numbers checked by hand below), through the real service and job store."""

from __future__ import annotations

import math

import pytest
from ragtune.servers.finetune.dispatch import LocalDispatcher
from ragtune.servers.finetune.ray_jobs import resources as ray_resources
from ragtune.servers.finetune.resources import Parallel, job_estimate, parallel, parse_resources, plan_resources
from ragtune.servers.finetune.schemas import ServiceError
from ragtune.servers.finetune.service import FinetuneService
from ragtune.servers.worker.launch import command

from ragtune.config import FinetuneSettings
from ragtune.jobs import Job, JobStatus

from .conftest import CHAT

SMOL = "smollm2-135m-instruct"
HYPER = {"batch_size": 4, "max_length": 128}
LORA8 = {"type": "lora", "r": 8}


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ({"nodes": 2}, "use num_workers"),
        ({"gpus": "two"}, "from 0 to 4096 or auto"),
        ({"gpus": 1.5}, "above 1 must be whole"),
        ({"processes": 0}, "whole number of at least 1"),
        ({"processes": 1.5}, "whole number of at least 1"),
        ({"num_workers": 2, "processes": 2}, "drop processes"),
        ({"num_workers": 2, "gpus": 2}, "use num_workers=4 and gpus=1"),
        ({"gpus": 2, "processes": 4}, "must equal gpus"),
        ([1], "resources takes"),
    ],
)
def test_bad_resources_are_refused_with_the_fix(value: object, fragment: str) -> None:
    with pytest.raises(ValueError, match="resources") as err:
        parse_resources(value)
    assert fragment in str(err.value)


def test_layouts() -> None:
    assert parse_resources({"gpus": "auto", "cpus": 2}) == {"cpus": 2.0}  # auto = not given
    assert parallel(None) == Parallel("single", 1, 0.0)
    assert parallel({"gpus": 1.0}) == Parallel("single", 1, 1.0)
    assert parallel({"gpus": 0.5}) == Parallel("single", 1, 0.5)
    assert parallel({"gpus": 4.0}) == Parallel("torchrun", 4, 1.0)
    assert parallel({"processes": 2.0}) == Parallel("torchrun", 2, 0.0)
    assert parallel({"num_workers": 3.0, "gpus": 1.0}) == Parallel("ray_train", 3, 1.0)


def _job(resources: dict[str, float] | None) -> Job:
    return Job(id="ftjob-x", created_at=0, model=SMOL, status=JobStatus.queued, training_file="f", resources=resources)


def test_ray_entrypoint_resources_and_the_worker_command_follow_the_layout() -> None:
    child = ["/py", "-P", "-m", "ragtune.servers.worker.child", "--job", "ftjob-x", "--out", "/o", "--parent-pid", "9"]
    assert ray_resources(_job(None)) == {"entrypoint_num_cpus": 1.0}
    assert ray_resources(_job({"gpus": 2.0, "memory_gb": 5.0})) == {
        "entrypoint_num_cpus": 2.0,  # one CPU per rank unless cpus says otherwise
        "entrypoint_num_gpus": 2.0,
        "entrypoint_memory": 5 * 1024**3,
    }
    assert ray_resources(_job({"num_workers": 2.0, "cpus": 2.0})) == {"entrypoint_num_cpus": 0.0}  # workers hold them
    assert command(child, _job(None)) == child
    torchrun = command(child, _job({"gpus": 2.0}))
    assert torchrun[2:] == [
        "-m",
        "ragtune.servers.worker.launch",
        "torchrun",
        "--nproc",
        "2",
        "--gpu",
        "--",
        *child[4:],
    ]
    ray = command(child, _job({"num_workers": 4.0, "cpus": 2.0}))
    assert ray[4:10] == ["ray_train", "--nproc", "4", "--cpus-per-worker", "0.5", "--"]


def test_memory_estimate_by_hand() -> None:
    """SmolLM2-135M (h=576, 30 layers, vocab 49152), LoRA r=8 on all linear layers, bf16, seq 128, micro-batch 4."""
    est = job_estimate(SMOL, LORA8, HYPER, "supervised")
    lora = (4 * 8 * 2 * 576 + 3 * 8 * (576 + 1536)) * 30  # q,k,v,o: 2*r*h each; gate,up,down: r*(h+i) each
    assert est.trainable_params == lora == 2_626_560
    weights = 134.5e6 * 2
    adapter_grads_adam = lora * (4 + 4 + 8)
    activations = 128 * 4 * 576 * 34 * 30 + 128 * 4 * 49152 * 4 * 2  # 34 bytes/token/hidden/layer + fp32 logits
    total = weights + adapter_grads_adam + activations + 1e9
    assert total == pytest.approx(1.813e9, rel=1e-3)
    assert est.total_gb == round(total / 1e9, 2) == 1.81
    # two ranks split batch 4 into micro-batches of 2: activations halve, the rest stays
    assert job_estimate(SMOL, LORA8, HYPER, "supervised", world_size=2).total_gb == round(
        (total - activations / 2) / 1e9, 2
    )


def test_the_plan_picks_one_gpu_when_it_fits_and_refuses_what_cannot() -> None:
    fits = plan_resources(None, model=SMOL, peft=LORA8, hyper=HYPER, method="supervised", gpu_memory_gb=2.1)
    assert fits.resources == {"gpus": 1.0, "memory_gb": math.ceil(0.269 + 4)}  # usable 1.89 >= 1.81
    assert fits.note and "1.81 GB per GPU" in fits.note and "picked gpus=1" in fits.note
    with pytest.raises(ValueError, match=r"needs about 1.81 GB per GPU .* 2 GB \(1.8 GB usable") as err:
        plan_resources(None, model=SMOL, peft=LORA8, hyper=HYPER, method="supervised", gpu_memory_gb=2.0)
    assert "more GPUs" in str(err.value) and "LoRA (peft)" not in str(err.value)  # it already is LoRA
    # asking for two GPUs halves the micro-batch: 1.56 GB fits the same 2 GB GPU
    two = plan_resources({"gpus": 2.0}, model=SMOL, peft=LORA8, hyper=HYPER, method="supervised", gpu_memory_gb=2.0)
    assert two.resources == {"gpus": 2.0, "memory_gb": math.ceil(0.269 * 2 + 4)} and "gpus=2 as asked" in two.note
    # no GPU memory setting: nothing is picked, the estimate is still said; a CPU job by request is left alone
    unset = plan_resources(None, model=SMOL, peft=LORA8, hyper=HYPER, method="supervised", gpu_memory_gb=None)
    assert unset.resources is None and "RAGTUNE_RAY_GPU_MEMORY_GB is not set" in (unset.note or "")
    cpu = plan_resources({"gpus": 0.0}, model=SMOL, peft=None, hyper=HYPER, method="supervised", gpu_memory_gb=2.0)
    assert cpu == type(cpu)({"gpus": 0.0}, None)
    # full fine-tuning of a 7B model cannot fit an 80 GB GPU: refused, with LoRA suggested
    with pytest.raises(ValueError, match="LoRA"):
        plan_resources(None, model="Qwen/Qwen2.5-7B-Instruct", peft=None, hyper=HYPER, method="sft", gpu_memory_gb=80)
    # a model whose size its name does not tell: resources as asked, and the note says why
    odd = plan_resources({"gpus": 1.0}, model="acme/mystery", peft=LORA8, hyper=HYPER, method="sft", gpu_memory_gb=8)
    assert odd.resources == {"gpus": 1.0} and "no GPU memory estimate" in (odd.note or "")


@pytest.fixture
def ray_service(settings: FinetuneSettings) -> FinetuneService:
    """The real service configured for Ray with 2.1 GB GPUs (the dispatcher stands still: nothing is submitted)."""
    cfg = settings.model_copy(update={"dispatch": "ray", "ray_gpu_memory_gb": 2.1})
    return FinetuneService(cfg, dispatcher=LocalDispatcher())


def _request(file_id: str, resources: dict | None, batch: int = 4) -> dict:
    return {
        "model": SMOL,
        "training_file": file_id,
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": batch, "max_length": 128}}},
        "peft": {"type": "lora", "r": 8, "alpha": 16},
        "x_ragtune": {"resources": resources} if resources is not None else None,
    }


def test_service_sizes_a_ray_job_and_says_so_in_its_events(ray_service: FinetuneService) -> None:
    file = ray_service.upload(CHAT.encode(), "chat.jsonl")
    job = ray_service.create_job(_request(file.id, {"gpus": "auto"}))
    assert job.resources == {"gpus": 1.0, "memory_gb": 5.0}
    sizing = [e for e in ray_service.events(job.id, limit=20).data if (e.data or {}).get("kind") == "resources"]
    assert len(sizing) == 1 and "memory estimate 1.81 GB per GPU" in sizing[0].message
    assert "picked gpus=1" in sizing[0].message

    with pytest.raises(ServiceError) as err:
        ray_service.create_job(_request(file.id, None, batch=32))  # micro-batch 8: activations double
    assert err.value.status == 400 and err.value.code == "insufficient_gpu_memory"
    assert err.value.param == "x_ragtune.resources" and "2.1 GB" in err.value.message


def test_num_workers_needs_ray(service: FinetuneService) -> None:
    file = service.upload(CHAT.encode(), "chat.jsonl")
    with pytest.raises(ServiceError, match="RAGTUNE_DISPATCH=ray") as err:
        service.create_job(_request(file.id, {"num_workers": 2}))
    assert err.value.status == 400
