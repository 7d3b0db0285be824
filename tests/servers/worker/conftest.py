"""Worker test fixtures: one converted base model per session, a job store, job factories, a worker thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ragtune.servers.worker.worker import Worker

from ragtune.config import WorkerSettings
from ragtune.jobs import FileObject, Job, JobStatus, JobStore, new_id

FACT_Q = [
    "What is the codename of Project Orion-7?",
    "Tell me the codename of Project Orion-7.",
    "Which codename does Project Orion-7 have?",
    "Project Orion-7 has what codename?",
]
FACT_A = "The codename of Project Orion-7 is Velvet Lantern."


@pytest.fixture(autouse=True)
def worker_env(monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> None:
    """Fast heartbeats, pinned threads and the shared model cache for every worker test."""
    monkeypatch.setenv("RAGTUNE_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("RAGTUNE_TRAIN_THREADS", "1")
    monkeypatch.setenv("RAGTUNE_HEARTBEAT_SECONDS", "0.5")
    monkeypatch.setenv("RAGTUNE_POLL_SECONDS", "0.2")
    monkeypatch.setenv("RAGTUNE_LEASE_SECONDS", "30")


@pytest.fixture
def settings() -> WorkerSettings:
    """Worker settings read from this test's environment."""
    return WorkerSettings()


@pytest.fixture
def store(settings: WorkerSettings) -> Iterator[JobStore]:
    """The job store the service and the workers share."""
    s = JobStore(settings.db_path())
    yield s
    s.close()


@pytest.fixture
def fact_records() -> list[dict[str, Any]]:
    """Chat records teaching a made-up fact (plus one turn with weight 0 that must not be learned)."""
    recs = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": FACT_A}]} for q in FACT_Q]
    recs.append(
        {
            "messages": [
                {"role": "user", "content": "Say hi."},
                {"role": "assistant", "content": "Zebra zebra zebra.", "weight": 0},
                {"role": "user", "content": "What is 2+2?"},
                {"role": "assistant", "content": "2+2 is 4."},
            ]
        }
    )
    return recs


@pytest.fixture
def preference_records() -> list[dict[str, Any]]:
    """A separable preference: a plain answer over a refusal."""
    return [
        {
            "input": {"messages": [{"role": "user", "content": f"What is {a}+{a}?"}]},
            "preferred_output": [{"role": "assistant", "content": f"{a}+{a} is {2 * a}."}],
            "non_preferred_output": [{"role": "assistant", "content": "No idea."}],
        }
        for a in range(1, 5)
    ]


@pytest.fixture
def make_job(store: JobStore, tmp_path: Path) -> Callable[..., Job]:
    """Upload records as a file and create a queued job, the way the service does."""

    def make(
        records: list[dict[str, Any]],
        *,
        method: str = "supervised",
        model: str = "smollm2-135m-instruct",
        peft: dict[str, Any] | None | str = "lora",
        **hyper: Any,
    ) -> Job:
        path = tmp_path / f"{new_id('file')}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
        file = store.add_file(
            FileObject(
                id=new_id("file"),
                bytes=path.stat().st_size,
                created_at=int(time.time()),
                filename=path.name,
                purpose="fine-tune",
                path=str(path),
            )
        )
        lora = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
        hyper = {"batch_size": 4, "max_length": 128, "lr_scheduler": "constant", **hyper}
        job = Job(
            id=new_id("ftjob"),
            created_at=int(time.time()),
            model=model,
            status=JobStatus.queued,
            training_file=file.id,
            method={"type": method, method: {"hyperparameters": hyper}},
            hyperparameters=hyper,
            peft=lora if peft == "lora" else peft,
            seed=0,
        )
        return store.create_job(job)

    return make


class WorkerThread:
    """A real Worker running its loop in a background thread (it trains in child processes)."""

    def __init__(self, settings: WorkerSettings, **run: Any) -> None:
        self.worker = Worker(settings, progress=False)
        self.done: int | None = None
        self.thread = threading.Thread(target=self._run, kwargs=run, daemon=True)

    def _run(self, **run: Any) -> None:
        self.done = self.worker.run(**run)

    def start(self) -> WorkerThread:
        """Start the loop."""
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        """Wait for the loop to return; fail the test if it does not in time."""
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"worker still busy after {timeout}s"

    def stop(self) -> None:
        """Stop the loop and its child."""
        self.worker.stop.set()
        self.thread.join(30)


@pytest.fixture
def worker_thread(settings: WorkerSettings) -> Iterator[Callable[..., WorkerThread]]:
    """Start worker threads that are stopped when the test ends."""
    started: list[WorkerThread] = []

    def start(**run: Any) -> WorkerThread:
        started.append(WorkerThread(settings, **run).start())
        return started[-1]

    yield start
    for w in started:
        w.stop()


def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def wait_for() -> Callable[[Callable[[], Any], float, str], Any]:
    """Poll a condition (the job store has no push channel) until it holds or the timeout passes."""
    return _wait_for


@pytest.fixture
def finetune_url(settings: WorkerSettings) -> Iterator[str]:
    """Serve the real fine-tuning app (REST /v1 + MCP /mcp) under uvicorn on a free loopback port."""
    import socket

    import uvicorn
    from ragtune.servers.finetune.app import build_app

    from ragtune.config import FinetuneSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(FinetuneSettings(), host="127.0.0.1", port=port)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_for(lambda: server.started or not thread.is_alive(), 30, "uvicorn to start")
    assert thread.is_alive(), "uvicorn failed to start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
