"""Tuned e5-small embedders: folder and manifest layout, and the int8 engine running tuned layer tensors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ragtune.embedders.e5_file import ModelFileError, load_e5_file
from ragtune.embedders.fast_e5 import TorchE5
from ragtune.embedders.tuned import (
    MANIFEST,
    TunedE5,
    TunedEmbedderError,
    TunedManifest,
    is_tuned_id,
    list_tuned,
    read_manifest,
    save_tuned,
    slug,
    tuned_dir,
)
from ragtune.embeddings import Embedder

TEXTS = ["아동수당 지급 대상은 만 8세 미만 아동입니다.", "How do I apply for housing benefit?"]


def test_tuned_dir_is_a_safe_folder_under_home(tmp_path: Path) -> None:
    model_id = "ft:e5-small:org-1:my sfx:ftjob-abc"
    folder = tuned_dir(tmp_path, model_id)
    assert folder.parent == tmp_path / "embedders"
    assert folder.name == "ft_e5-small_org-1_my_sfx_ftjob-abc"
    assert is_tuned_id(model_id) and not is_tuned_id("e5-small")
    with pytest.raises(TunedEmbedderError):
        slug(":::")


def test_manifest_round_trips_with_metric_names(tmp_path: Path) -> None:
    manifest = TunedManifest.model_validate(
        {
            "model_id": "ft:e5-small:org::ftjob-1",
            "job_id": "ftjob-1",
            "verdict": "better",
            "metrics": {"base": {"ndcg@10": 0.5, "recall@100": 0.9}, "tuned": {"ndcg@10": 0.6, "recall@100": 0.95}},
        }
    )
    folder = save_tuned(tmp_path / "e", {"x": np.zeros(3, dtype=np.float32)}, manifest)
    on_disk = json.loads((folder / MANIFEST).read_text())
    assert on_disk["metrics"]["tuned"] == {"ndcg@10": 0.6, "recall@100": 0.95}
    assert on_disk["base_model"] == "e5-small" and on_disk["verdict"] == "better"
    back = read_manifest(folder)
    assert back.metrics["base"].ndcg_at_10 == 0.5 and back.job_id == "ftjob-1"
    assert [m.model_id for m in list_tuned(tmp_path)] == []  # not under HOME/embedders
    with pytest.raises(TunedEmbedderError, match="not a tuned embedder"):
        read_manifest(tmp_path)


def test_tuned_engine_with_the_base_tensors_gives_the_base_vectors(tmp_path: Path) -> None:
    base = load_e5_file()
    model_id = "ft:e5-small:org::ftjob-same"
    folder = save_tuned(tuned_dir(tmp_path, model_id), base.tensors, TunedManifest(model_id=model_id))
    tuned = TunedE5(folder)
    assert isinstance(tuned, Embedder)
    assert tuned.model_id == model_id and tuned.dim == 384 and "*" in tuned.languages
    assert [m.model_id for m in list_tuned(tmp_path)] == [model_id]
    same = TorchE5()
    np.testing.assert_allclose(tuned.embed_queries(TEXTS), same.embed_queries(TEXTS), atol=1e-5)
    np.testing.assert_allclose(tuned.embed_passages(TEXTS), same.embed_passages(TEXTS), atol=1e-5)


def test_changed_tensors_change_the_vectors_and_bad_ones_are_refused(tmp_path: Path) -> None:
    base = load_e5_file()
    moved = dict(base.tensors)
    noise = np.random.default_rng(0).normal(scale=0.05, size=base.tensors["l5.fi.w"].shape)
    moved["l5.fi.w"] = np.asarray(base.tensors["l5.fi.w"]) + noise.astype(np.float32)
    folder = save_tuned(tmp_path / "moved", moved, TunedManifest(model_id="ft:e5-small:::moved"))
    a = TunedE5(folder).embed_passages(TEXTS)
    b = TorchE5().embed_passages(TEXTS)
    assert float(np.min(np.sum(a * b, axis=1))) < 0.999
    broken = {k: v for k, v in base.tensors.items() if k != "l3.q.w"}
    folder = save_tuned(tmp_path / "broken", broken, TunedManifest(model_id="ft:e5-small:::broken"))
    with pytest.raises(ModelFileError, match="lack"):
        TunedE5(folder).embed_queries(["x"])
