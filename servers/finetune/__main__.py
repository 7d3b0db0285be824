"""Command line of the fine-tuning service: serve (stdio | http), validate, recommend, estimate, claude-config."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ragtune.servers.finetune import advisor
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ragtune.config import FinetuneSettings, InsecureBindError, check_bind, configure_logging
from ragtune.datasets import DatasetError, format_report, load_dataset


def main(argv: list[str] | None = None) -> int:
    """Run the command named on the command line; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except InsecureBindError as e:  # one line that says what to do, not a traceback (issue #12)
        print(f"error: {e}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ragtune.servers.finetune", description=__doc__)
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    s = sub.add_parser("serve", help="serve MCP over stdio, or MCP (/mcp) + OpenAI REST (/v1) over HTTP")
    s.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    s.add_argument("--host", help="HTTP host (default RAGTUNE_FINETUNE_HOST, 127.0.0.1)")
    s.add_argument("--port", type=int, help="HTTP port (default RAGTUNE_FINETUNE_PORT, 8702)")
    s.set_defaults(func=_serve)
    v = sub.add_parser("validate", help="check a dataset file; exit 1 listing bad lines")
    v.add_argument("file", type=Path)
    v.add_argument("--format", choices=["chat", "text", "preference"], help="force a format")
    v.add_argument("--max-tokens", type=int, help="model context length to check each example against")
    v.set_defaults(func=_validate)
    r = sub.add_parser("recommend", help="advise prompt/RAG, LoRA, full, CPT, DPO or rejection sampling")
    r.add_argument("--goal", choices=["knowledge", "style", "task", "preference"], required=True)
    r.add_argument("--examples", type=int, required=True, help="number of examples or preference pairs")
    r.add_argument("--changes-often", action="store_true", help="the data changes weekly or faster")
    r.add_argument("--pairs", action="store_true", help="preference pairs (better/worse answers) exist")
    r.add_argument("--references", action="store_true", help="reference answers exist")
    r.add_argument("--terms-missing", action="store_true", help="the model lacks the domain's terms")
    r.add_argument("--base-model", action="store_true", help="the model is a base (not instruct) model")
    r.add_argument("--gpu-gb", type=float, help="GPU memory in GB")
    r.add_argument("--params", help="model size, e.g. 7B")
    r.set_defaults(func=_recommend)
    e = sub.add_parser("estimate", help="estimate GPU memory for a training run")
    e.add_argument("--model", help=f"known model: {', '.join(advisor.MODELS)}")
    e.add_argument("--params", help="or a parameter count, e.g. 7B")
    e.add_argument("--method", choices=["full", "lora", "qlora"], default="lora")
    e.add_argument("--precision", choices=list(advisor.BYTES), default="bf16")
    e.add_argument("--seq-len", type=int, default=2048)
    e.add_argument("--batch", type=int, default=1)
    e.add_argument("--optimizer", choices=["adamw", "adamw8bit", "sgd"], default="adamw")
    e.add_argument("--no-gradient-checkpointing", action="store_true")
    e.set_defaults(func=_estimate)
    c = sub.add_parser("claude-config", help="print a Claude Desktop config entry for the stdio server")
    c.set_defaults(func=_claude_config)
    return p


def _serve(args: argparse.Namespace) -> int:
    settings = FinetuneSettings()
    configure_logging(settings.log_level)
    if args.transport == "stdio":
        from ragtune.servers.finetune.reaper import Reaper
        from ragtune.servers.finetune.server import build_server
        from ragtune.servers.finetune.service import FinetuneService

        svc = FinetuneService(settings)
        reaper = Reaper(svc.reconcile, settings.reaper_seconds).start()  # no job stays running with its worker dead
        try:
            build_server(settings, service=svc).run("stdio")
        finally:
            reaper.stop()
            svc.close()
        return 0
    import uvicorn
    from ragtune.servers.finetune.app import build_app

    host, port = args.host or settings.finetune_host, args.port or settings.finetune_port
    check_bind(host, settings)
    uvicorn.run(build_app(settings, host=host, port=port), host=host, port=port, log_level=settings.log_level.lower())
    return 0


def _validate(args: argparse.Namespace) -> int:
    console = Console()
    try:
        with Progress(console=console, transient=True, disable=not console.is_terminal) as bar:
            task = bar.add_task(f"validating {args.file.name}", total=None)
            loaded = load_dataset(
                args.file,
                format=args.format,
                max_tokens=args.max_tokens,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except DatasetError as err:
        console.print(f"[red]{err.summary()}[/red]", highlight=False)
        return 1
    table = Table(title=f"{args.file.name}: valid", show_header=False)
    for label, value in format_report(loaded.report):
        table.add_row(label, value)
    console.print(table)
    return 0


def _recommend(args: argparse.Namespace) -> int:
    rec = advisor.recommend_method(
        advisor.Situation(
            goal=args.goal,
            n_examples=args.examples,
            data_changes_often=args.changes_often,
            has_preference_pairs=args.pairs,
            has_reference_answers=args.references,
            domain_terms_missing=args.terms_missing,
            base_is_instruct=not args.base_model,
            gpu_memory_gb=args.gpu_gb,
            model_params_b=advisor.parse_params(args.params) / 1e9 if args.params else None,
        )
    )
    console = Console()
    console.print(f"[bold]{rec.method}[/bold] (rule {rec.rule}; see {rec.docs})")
    for line in rec.reasons:
        console.print(f"  because {line}")
    for line in rec.warnings:
        console.print(f"  [yellow]warning:[/yellow] {line}")
    if rec.then:
        console.print(f"  then: {rec.then}")
    if rec.job_method:
        console.print_json(json.dumps({"method": rec.job_method, "peft": rec.peft or {"type": "full"}}))
    return 0


def _estimate(args: argparse.Namespace) -> int:
    try:
        est = advisor.estimate_memory(
            args.model,
            params=advisor.parse_params(args.params) if args.params else None,
            method=args.method,
            precision=args.precision,
            seq_len=args.seq_len,
            batch=args.batch,
            optimizer=args.optimizer,
            gradient_checkpointing=not args.no_gradient_checkpointing,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    table = Table(title=f"{est.model} ({est.params_b:g}B), {est.method}, {est.precision}")
    table.add_column("part")
    table.add_column("GB", justify="right")
    for part in ("weights", "adapter", "gradients", "optimizer", "activations", "overhead", "total"):
        table.add_row(part, f"{getattr(est, part + '_gb'):.2f}")
    console = Console()
    console.print(table)
    console.print(f"fits on: {', '.join(est.fits) or 'no single common GPU'}")
    for note in est.assumptions:
        console.print(f"  [dim]{note}[/dim]")
    return 0


def _claude_config(_: argparse.Namespace) -> int:
    settings = FinetuneSettings()
    env = {"RAGTUNE_HOME": str(settings.home.resolve())}
    env |= {k: v for k, v in os.environ.items() if k == "RAGTUNE_FINETUNE_ROOTS"}
    entry = {
        "command": sys.executable,
        "args": ["-m", "ragtune.servers.finetune", "serve", "--transport", "stdio"],
        "env": env,
    }
    print(json.dumps({"mcpServers": {"ragtune-finetune": entry}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
