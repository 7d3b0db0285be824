"""Read a GPU memory question ("7B", "70억", "bf16", "4-bit", "QLoRA") into `finetune_estimate_memory` arguments.

Memory questions go to the estimator, not to the method advisor (issue #9: "How much GPU memory do I need to
fine-tune a 7B model with LoRA?" was answered with "prompting + retrieval first").
"""

from __future__ import annotations

import re
from typing import Any

MEMORY = re.compile(r"memory|vram|\bgpu ram\b|메모리|몇\s*gb|how many gb|\bgb of\b", re.I)
GPU = re.compile(r"\d+\s*gb(?![a-z])|\bgpu\b|\b(?:h100|h200|a100|a10|l4|t4|rtx ?\d{4})(?![a-z])", re.I)
FITS = re.compile(r"\benough\b|\bfits?\b|\bcan i\b|가능|충분|들어가|돌릴 수", re.I)
SIZE = re.compile(
    r"(?<![\w.])(\d+(?:\.\d+)?)\s*(b|m|billion|million)(?![a-z])|(\d+(?:\.\d+)?)\s*(억|천만)|"
    r"\b(?:llama|qwen|mistral|gemma|smollm)[\w.-]*",
    re.I,
)
TRAINING = re.compile(
    r"\b(?:train\w*|fine[- ]?tun\w*|finetun\w*)|(?<![a-z])(?:q?lora|sft|dpo)(?![a-z])|학습|훈련|튜닝", re.I
)
KNOWN_MODELS = re.compile(
    r"\b(llama-?3(?:\.\d)?-(?:8|70)b|qwen2\.5-7b|mistral-7b|gemma-2-9b|smollm2-135m)(?:-instruct)?\b", re.I
)
_SCALE = {"b": 1.0, "billion": 1.0, "m": 1e-3, "million": 1e-3, "억": 0.1, "천만": 0.01}
_PRECISION = (
    ("int4", r"\b4[- ]?bit|\bint4\b|\bnf4\b|4비트"),
    ("int8", r"\b8[- ]?bit|\bint8\b|8비트"),
    ("fp32", r"\bfp32\b|\bfloat32\b|32[- ]?bit|32비트"),
    ("fp16", r"\bfp16\b|\bfloat16\b|\bhalf precision\b"),
    ("bf16", r"\bbf16\b|\bbfloat16\b|16[- ]?bit|16비트"),
)
_FULL = re.compile(r"\bfull\b|full[- ]parameter|전체|풀\s*파인튜닝|전(?:체)?\s*파라미터", re.I)
_GPU_GB = re.compile(r"(\d+(?:\.\d+)?)\s*(?:gb|gib|기가)", re.I)
_SEQ = re.compile(r"(\d{3,6})\s*(?:tokens?|토큰)|(?:seq(?:uence)?[_ ]len(?:gth)?|context)\D{0,4}(\d{3,6})", re.I)
_BATCH = re.compile(r"batch(?: size)?\D{0,4}(\d{1,4})|배치\D{0,4}(\d{1,4})", re.I)


def is_memory_question(text: str) -> bool:
    """Tell whether the request asks how much GPU memory training (a model of some size) takes."""
    capacity = bool(GPU.search(text) and FITS.search(text) and SIZE.search(text))  # "a 7B model on a 24 GB GPU?"
    return bool((MEMORY.search(text) or capacity) and (SIZE.search(text) or TRAINING.search(text)))


def model_size_b(text: str) -> float | None:
    """Return the model size in billions of parameters named in the text ("7B", "1.5b", "135M", "70억")."""
    for m in SIZE.finditer(text):
        if m.group(1):
            return float(m.group(1)) * _SCALE[m.group(2).lower()]
        if m.group(3):
            return float(m.group(3)) * _SCALE[m.group(4)]
    return None


def method_of(text: str) -> str:
    """Return 'qlora', 'full' or 'lora' (the default) from the request; LoRA on 4-bit weights is QLoRA."""
    if re.search(r"(?<![a-z])qlora(?![a-z])", text, re.I):
        return "qlora"
    if _FULL.search(text) and not re.search(r"(?<![a-z])lora(?![a-z])", text, re.I):
        return "full"
    return "qlora" if precision_of(text) == "int4" else "lora"


def precision_of(text: str) -> str | None:
    """Return the weight precision the request names (bf16, fp16, fp32, int8, int4), if any."""
    return next((name for name, pat in _PRECISION if re.search(pat, text, re.I)), None)


def parse_memory_request(text: str) -> dict[str, Any]:
    """Return `finetune_estimate_memory` arguments read from the text; size defaults to none (ask or assume)."""
    args: dict[str, Any] = {"method": method_of(text)}
    if known := KNOWN_MODELS.search(text):
        args["model"] = known.group(1).lower().replace("llama3", "llama-3")
    elif (size := model_size_b(text)) is not None:
        args["params_b"] = size
    precision = precision_of(text)
    if precision and not (args["method"] == "qlora" and precision != "int4"):
        args["precision"] = precision
    if args["method"] == "full" and precision in ("int8", "int4"):
        args["method"] = "qlora" if precision == "int4" else "lora"
    if m := _SEQ.search(text):
        args["seq_len"] = int(m.group(1) or m.group(2))
    if m := _BATCH.search(text):
        args["batch"] = int(m.group(1) or m.group(2))
    return args


def gpu_memory_gb(text: str) -> float | None:
    """Return the GPU memory the user says they have ("a 24 GB GPU"), if any."""
    m = _GPU_GB.search(text)
    return float(m.group(1)) if m else None


def render_estimate(est: dict[str, Any], gpu_gb: float | None = None, assumed: str = "", korean: bool = False) -> str:
    """Render a `finetune_estimate_memory` result: the total, its parts, which GPUs hold it, the assumptions."""
    name = est["model"] if est["model"] != f"{est['params_b']:g}B" else ("모델" if korean else "a model")
    fits = (
        ", ".join(est["fits"])
        if est.get("fits")
        else ("일반 GPU 한 장으로는 부족" if korean else "no single common GPU")
    )
    if korean:
        head = (
            f"{name}({est['params_b']:g}B 파라미터)를 {est['method']}, {est['precision']}로 학습하는 데 필요한 "
            f"GPU 메모리는 약 {est['total_gb']:g} GB입니다."
        )
    else:
        head = (
            f"Estimated GPU memory to train {name} ({est['params_b']:g}B parameters) with "
            f"{est['method']} in {est['precision']}: about {est['total_gb']:g} GB."
        )
    lines = [
        head,
        f"- weights {est['weights_gb']:g} GB, adapter {est['adapter_gb']:g} GB, gradients {est['gradients_gb']:g} GB, "
        f"optimizer {est['optimizer_gb']:g} GB, activations {est['activations_gb']:g} GB, "
        f"overhead {est['overhead_gb']:g} GB",
        f"- {'들어가는 GPU' if korean else 'fits on'}: {fits}",
    ]
    if gpu_gb is not None:
        fit = est["total_gb"] <= gpu_gb * 0.9
        verdict = ("들어갑니다" if fit else "부족합니다") if korean else ("fits" if fit else "does not fit")
        lines.append(f"- {gpu_gb:g} GB GPU: {verdict} (90% usable)")
    if assumed:
        lines.append(f"- {assumed}")
    lines += [f"- {a}" for a in est.get("assumptions") or []]
    return "\n".join(lines)
