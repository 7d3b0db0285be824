"""Data parallel inside one job: start the training child as N torchrun processes or as Ray Train workers.

The worker runs `python -m ragtune.servers.worker.launch {torchrun|ray_train} --nproc N -- <child args>` in place of
the child when the job's `x_ragtune.resources` asks for more than one process (servers/finetune/resources.py).
Every rank runs the same child; only rank 0 writes events, metrics, checkpoints and result.json (child.py), and
pause reaches every rank through the job store, agreed on at each step (recipes/common.py), because a signal to
this launcher would not reach torchrun's or Ray's processes. Cancel stops this launcher (SIGTERM), which stops its
ranks: torchrun terminates its workers, and Ray kills a driver's Train workers when the driver exits.
This launcher exits with rank 0's exit code (0 done, 2 failed with error.json, 3 paused), as the child does.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ragtune.servers.finetune.resources import parallel

from ragtune.jobs import Job

log = logging.getLogger("ragtune.worker.launch")
CHILD_MODULE = "ragtune.servers.worker.child"
EXIT_CRASHED = 1


def rank() -> int:
    """Return this process's global rank (0 when not distributed): torchrun and Ray Train both set RANK."""
    return int(os.environ.get("RANK", "0") or 0)


def world_size() -> int:
    """Return how many processes train this job together (1 when not distributed)."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def command(child: list[str], job: Job) -> list[str]:
    """Return the command that trains `job`: the child command itself, or this launcher wrapping its arguments."""
    plan = parallel(job.resources)
    if plan.layout == "single":
        return child
    args = child[child.index(CHILD_MODULE) + 1 :]
    opts = ["--nproc", str(plan.world_size)]
    if plan.gpus_per_process:
        opts.append("--gpu")
    if plan.layout == "ray_train":
        cpus = (job.resources or {}).get("cpus")
        opts += ["--cpus-per-worker", f"{(cpus / plan.world_size) if cpus else 1.0:g}"]
    return [sys.executable, "-P", "-m", "ragtune.servers.worker.launch", plan.layout, *opts, "--", *args]


def _option(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def _watch_parent(pid: int) -> None:
    """Exit when the worker that started us is gone; the ranks, orphaned, then exit by their own watch."""

    def loop() -> None:
        while os.getppid() == pid:
            time.sleep(0.5)
        os._exit(70)

    threading.Thread(target=loop, daemon=True, name="parent-watch").start()


# ------------------------------------------------------------------------------------------------ torchrun
def run_torchrun(nproc: int, child_args: list[str]) -> int:
    """Run the child as `nproc` local processes under torch's elastic launcher (torchrun); return rank 0's code."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import elastic_launch
    from torch.distributed.run import config_from_args, parse_args

    # what `torchrun --standalone` does: a private c10d rendezvous on a free loopback port
    rdzv = ["--rdzv-backend=c10d", "--rdzv-endpoint=127.0.0.1:0", f"--rdzv-id={uuid.uuid4().hex}"]
    args = parse_args([*rdzv, f"--nproc-per-node={nproc}", "--max-restarts=0", "-m", CHILD_MODULE])
    config, cmd, cmd_args = config_from_args(args)
    try:
        elastic_launch(config=config, entrypoint=cmd)(*cmd_args, *child_args)
    except ChildFailedError as e:
        from .child import EXIT_FAILED, EXIT_PAUSED

        codes = {int(r): f.exitcode for r, f in e.failures.items()}
        log.warning("torchrun ranks ended with %s", codes)
        if codes.get(0) in (EXIT_FAILED, EXIT_PAUSED):  # every rank stopped on purpose: error.json or a pause
            return codes[0]
        first = min(e.failures.values(), key=lambda f: f.timestamp)  # the rank that broke, not those torchrun ended
        return first.exitcode if first.exitcode > 0 else EXIT_CRASHED
    except SignalException as e:  # cancel: torchrun has already stopped the ranks
        return 128 + int(e.sigval)
    return 0


# ------------------------------------------------------------------------------------------------ Ray Train
def ray_train_loop(config: dict[str, Any]) -> None:
    """Ray Train's per-worker function: run the child, then report its exit code (rank 0 with a checkpoint)."""
    import ray.train

    from .child import main as child_main

    os.environ.update(config.get("env", {}))  # a Train worker inherits the raylet's env, not this job's
    rc = child_main(config["argv"])
    ctx = ray.train.get_context()
    metrics = {"rc": rc, "rank": ctx.get_world_rank(), "world_size": ctx.get_world_size()}
    if ctx.get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:  # Ray 2.60 (Train V2) keeps final metrics only with a checkpoint
        (Path(d) / "rc.txt").write_text(str(rc))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


FORWARDED_ENV = ("RAGTUNE_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "OMP_NUM_THREADS")


def forwarded_env() -> dict[str, str]:
    """Return the settings a Train worker needs to see this job's store, home and model cache (RAGTUNE_*, HF_*)."""
    return {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}


def run_ray_train(nproc: int, gpu: bool, cpus_per_worker: float, child_args: list[str]) -> int:
    """Run the child on `nproc` Ray Train workers of the cluster this Ray job runs on; return rank 0's code."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    out = Path(_option(child_args, "--out") or ".")
    job = _option(child_args, "--job") or "job"
    argv = list(child_args)
    if "--parent-pid" in argv:  # a Train worker may sit on another node: the worker's pid means nothing there
        argv[argv.index("--parent-pid") + 1] = "0"
    ray.init(address=os.environ.get("RAY_ADDRESS") or "auto", log_to_driver=True)
    resources = {"CPU": cpus_per_worker, **({"GPU": 1.0} if gpu else {})}
    trainer = TorchTrainer(
        ray_train_loop,
        train_loop_config={"argv": argv, "env": forwarded_env()},
        scaling_config=ScalingConfig(num_workers=nproc, use_gpu=gpu, resources_per_worker=resources),
        run_config=RunConfig(storage_path=str((out / "ray-train").resolve()), name=f"{job}-{int(time.time())}"),
    )
    try:
        result = trainer.fit()
    except Exception as e:  # a worker raised or died: the worker reports a crash with our log's tail
        log.error("Ray Train failed: %s: %s", type(e).__name__, e)
        return EXIT_CRASHED
    metrics = result.metrics or {}
    log.info("Ray Train finished: %s", metrics)
    return int(metrics.get("rc", EXIT_CRASHED))


def main(argv: list[str] | None = None) -> int:
    """Parse `LAYOUT --nproc N [--gpu] [--cpus-per-worker C] -- CHILD_ARGS` and run the ranks."""
    raw = list(sys.argv[1:] if argv is None else argv)
    split = raw.index("--") if "--" in raw else len(raw)
    p = argparse.ArgumentParser(prog="python -m ragtune.servers.worker.launch", description=__doc__)
    p.add_argument("layout", choices=["torchrun", "ray_train"])
    p.add_argument("--nproc", type=int, required=True, help="training processes (ranks)")
    p.add_argument("--gpu", action="store_true", help="one GPU per rank")
    p.add_argument("--cpus-per-worker", type=float, default=1.0, help="Ray Train: CPUs each worker reserves")
    args = p.parse_args(raw[:split])
    child_args = raw[split + 1 :]
    logging.basicConfig(level=os.environ.get("RAGTUNE_LOG_LEVEL", "INFO"))
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)  # pause goes through the job store to every rank
    parent = int(_option(child_args, "--parent-pid") or 0)
    if parent:
        _watch_parent(parent)
    if args.layout == "torchrun":
        return run_torchrun(args.nproc, child_args)
    return run_ray_train(args.nproc, args.gpu, args.cpus_per_worker, child_args)


if __name__ == "__main__":
    sys.exit(main())
