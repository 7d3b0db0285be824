"""SERVING.md: how to serve a finished job's model elsewhere (vLLM, Ollama, transformers/PEFT), with exact commands."""

from __future__ import annotations

import logging
from pathlib import Path

from ragtune.jobs import Job, fine_tuned_model_name
from ragtune.models import SMOLLM2, SMOLLM2_HF_ID

log = logging.getLogger(__name__)

FILENAME = "SERVING.md"
SNIPPET_MARK = "```python"


def serving_markdown(model_id: str, base: str, base_path: str, weights: Path, *, lora: bool) -> str:
    """Return SERVING.md for a tuned model: its weights, and the commands three engines need."""
    hub_base = SMOLLM2_HF_ID if base == SMOLLM2 else base
    gguf_note = (
        f"The embedded base ships as a GGUF: `FROM {_gguf()}` uses that file; `FROM smollm2:135m` pulls "
        "the same base from the Ollama library."
        if base == SMOLLM2
        else "Name the same base model in `FROM` (a GGUF file, or the Ollama library's copy of it)."
    )
    parts = [
        f"# Serving {model_id}\n",
        f"- Weights: `{weights}` ({'a LoRA adapter' if lora else 'full model weights'})",
        f"- Base model: `{base}` (loaded here from `{base_path}`; public id `{hub_base}`)",
        '- On this service: `client.chat.completions.create(model="' + model_id + '", messages=[...])` with '
        "`base_url=http://<host>:8702/v1` (the same base URL as fine-tuning).\n",
        "## vLLM\n",
    ]
    if lora:
        parts += [
            "```bash",
            f"vllm serve {base_path} --enable-lora --max-lora-rank 64 --lora-modules {_name(model_id)}={weights}",
            "```",
            f'Then call `model="{_name(model_id)}"` on `http://127.0.0.1:8000/v1`. To add adapters to a running '
            "server, start it with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True` and `POST /v1/load_lora_adapter` "
            f'`{{"lora_name": "{_name(model_id)}", "lora_path": "{weights}"}}` (RAGTUNE_SERVING_ENGINE=vllm does '
            "this for you).\n",
            "## Ollama\n",
            "```",
            f"FROM {_gguf() if base == SMOLLM2 else hub_base}",
            f"ADAPTER {weights}",
            "```",
            "Save that as `Modelfile`, then `ollama create my-tuned -f Modelfile && ollama run my-tuned`. The adapter "
            "only works on the base it was trained from (the same architecture and weights), and Ollama needs "
            f"that base as GGUF (or from its library). {gguf_note}\n",
        ]
    else:
        parts += [
            "```bash",
            f"vllm serve {weights} --served-model-name {_name(model_id)}",
            "```\n",
            "## Ollama\n",
            "Convert the folder to GGUF first (llama.cpp's `convert_hf_to_gguf.py "
            f"{weights} --outtype q8_0 --outfile tuned.gguf`), then a `Modelfile` with `FROM ./tuned.gguf` and "
            "`ollama create my-tuned -f Modelfile`. Keep q8_0 or f16: re-quantizing to Q4 can erase a fine-tune.\n",
        ]
    parts += ["## transformers / PEFT\n", SNIPPET_MARK, _snippet(base_path, weights, lora=lora), "```", ""]
    return "\n".join(parts)


def write_serving_md(out_dir: Path, model_id: str, base: str, base_path: str, weights: Path, *, lora: bool) -> Path:
    """Write SERVING.md into a job's output folder and return its path."""
    path = out_dir / FILENAME
    path.write_text(serving_markdown(model_id, base, base_path, weights, lora=lora), encoding="utf-8")
    return path


def _snippet(base_path: str, weights: Path, *, lora: bool) -> str:
    load = (
        f'model = AutoModelForCausalLM.from_pretrained("{base_path}")\n'
        f'model = PeftModel.from_pretrained(model, "{weights}")'
        if lora
        else f'model = AutoModelForCausalLM.from_pretrained("{weights}")'
    )
    imports = "from peft import PeftModel\n" if lora else ""
    return (
        f"{imports}from transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        f'tok = AutoTokenizer.from_pretrained("{weights}")\n'
        f"{load}\n"
        'messages = [{"role": "user", "content": "Hello!"}]\n'
        'ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)\n'
        "out = model.generate(**ids, max_new_tokens=64, do_sample=False)\n"
        'print(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))'
    )


def _name(model_id: str) -> str:
    """Return a short served name (vLLM and shells dislike ':' in names): the job id part."""
    return model_id.rsplit(":", 1)[-1] if model_id.startswith("ft:") else model_id


def _gguf() -> str:
    from ragtune.models import UnknownModel, smollm2_gguf

    try:
        return str(smollm2_gguf())
    except UnknownModel:
        return "/path/to/SmolLM2-135M-Instruct.Q4_1.gguf"


def write_job_handoff(job: Job, weights_path: str, out_dir: Path, models_dir: Path) -> Path | None:
    """Write SERVING.md for a finished job (the worker's training child calls this); None when it cannot."""
    from ragtune.servers.worker.recipes.common import resolve_model_path

    ref, base_path = resolve_model_path(job.model, models_dir)  # converted for training already: no work here
    weights = Path(weights_path)
    lora = (weights / "adapter_config.json").exists()
    try:
        return write_serving_md(out_dir, fine_tuned_model_name(job), ref.name, base_path, weights, lora=lora)
    except OSError as e:  # the model is trained and usable; only the hand-off note is missing
        log.warning("could not write %s in %s: %s", FILENAME, out_dir, e)
        return None
