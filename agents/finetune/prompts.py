"""What the fine-tuning agent says: advice, confirmation, progress lines, the outcome."""

from __future__ import annotations

from typing import Any

METHOD_NAMES = {
    "prompt_rag": "no fine-tuning: prompting + retrieval (RAG) first",
    "lora_sft": "LoRA supervised fine-tuning",
    "full_sft": "full supervised fine-tuning",
    "cpt_then_sft": "continued pretraining, then instruction tuning",
    "dpo": "DPO on preference pairs",
    "rejection_sampling_sft": "rejection sampling + SFT",
}

CONFIRM = (
    "{advice}\n\nReady to launch: LoRA SFT of the embedded smollm2-135m-instruct on {n} examples for {steps} steps "
    "(CPU, a few minutes){held}. Reply “yes” to launch, anything else to stop."
)
DECLINED = "Not launched. The dataset stays uploaded as {file_id}; ask again when you want to train on it."
NO_DATASET = (
    'I need training data before launching: send JSONL chat records ({"messages": [...]}) or Q/A pairs '
    '({"question": ..., "answer": ...}), or ask me to build Q/A pairs from your documents.'
)
STILL_RUNNING = "Job {job_id} is still running; follow it with finetune_get_job / finetune_job_events."


def held_out(n: int, held: int) -> str:
    """Say how many examples are kept out of training to compare the tuned model with its base."""
    if not held:
        return ""
    return f"; {held} of the {n} are held out (never trained on) to compare the tuned model with its base"


def advice(rec: dict[str, Any]) -> str:
    """Render a `finetune_recommend_method` answer as a short paragraph with its reasons."""
    lines = [f"Recommendation: {METHOD_NAMES.get(rec.get('method', ''), rec.get('method'))}."]
    lines += [f"- {r}" for r in rec.get("reasons") or []]
    lines += [f"- Warning: {w}" for w in rec.get("warnings") or []]
    if rec.get("then"):
        lines.append(f"- Then: {rec['then']}")
    if rec.get("docs"):
        lines.append(f"(see {rec['docs']})")
    return "\n".join(lines)


def event_line(ev: dict[str, Any]) -> str:
    """Render one job event as a progress line (metrics as step/loss)."""
    d = ev.get("data") or {}
    if ev.get("type") == "metrics" and "step" in d:
        total = f"/{d['total_steps']}" if d.get("total_steps") else ""
        loss = f" loss {d['train_loss']:.3f}" if isinstance(d.get("train_loss"), int | float) else ""
        speed = f" {d['tokens_per_second']:.0f} tok/s" if isinstance(d.get("tokens_per_second"), int | float) else ""
        return f"step {d['step']}{total}{loss}{speed}"
    return str(ev.get("message", ""))


def outcome(job: dict[str, Any], metrics: dict[str, Any] | None) -> str:
    """Render the finished job: status, final loss, where the output is."""
    loss = (metrics or {}).get("train_loss")
    parts = [f"Job {job['id']} {job['status']}."]
    if loss is not None:
        parts.append(f"Final training loss: {loss:.3f} (step {(metrics or {}).get('step')}).")
    if job.get("output_dir"):
        parts.append(f"Output: {job['output_dir']}")
    if job.get("fine_tuned_model"):
        parts.append(f"Model: {job['fine_tuned_model']}")
    if job.get("error"):
        parts.append(f"Error: {job['error'].get('message') if isinstance(job['error'], dict) else job['error']}")
    return " ".join(parts) + "\n\n[mode: fixed workflow]"
