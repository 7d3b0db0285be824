"""The jobs the service writes are the jobs the worker's recipes read (no training: config only)."""

from __future__ import annotations

import pytest
from ragtune.servers.finetune.service import FinetuneService
from ragtune.servers.worker.recipes import RECIPES, TrainJob

from .conftest import CHAT, PREFERENCE, TEXT


@pytest.mark.parametrize(
    ("method", "data", "expect"),
    [
        (
            {
                "type": "supervised",
                "supervised": {"hyperparameters": {"n_epochs": 2, "max_steps": 5, "warmup_steps": 1}},
            },
            CHAT,
            {"n_epochs": 2, "max_steps": 5, "warmup_steps": 1, "learning_rate": 2e-4, "batch_size": 1},
        ),
        (
            {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3, "learning_rate_multiplier": 2}}},
            PREFERENCE,
            {"beta": 0.3, "learning_rate": 1e-4},
        ),
        (
            {"type": "cpt", "cpt": {"hyperparameters": {"max_length": 64, "packing": True}}},
            TEXT,
            {"max_length": 64, "packing": True, "learning_rate": 5e-5},
        ),
        (
            {
                "type": "rejection_sampling",
                "rejection_sampling": {"n_samples": 3, "reward": "contains:=", "max_new_tokens": 16},
            },
            CHAT,
            {"n_samples": 3, "reward": "contains:=", "max_new_tokens": 16, "temperature": 0.8},
        ),
    ],
)
def test_recipe_config_from_a_service_job(service: FinetuneService, method: dict, data: str, expect: dict) -> None:
    file = service.upload(data.encode(), "d.jsonl")
    job = service.create_job({"training_file": file.id, "method": method, "seed": 5})
    recipe = RECIPES[method["type"]]
    assert file.format == recipe.data_format
    module = __import__(recipe.run.__module__, fromlist=["config"])
    cfg = module.config(TrainJob(job=job.model_dump(mode="json"), records=[], model_name=job.model, model_path=""))
    for key, value in expect.items():
        assert getattr(cfg, key) == pytest.approx(value), key
    assert cfg.seed == 5
