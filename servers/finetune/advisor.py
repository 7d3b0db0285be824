"""Advice before training: which method fits the situation, and how much GPU memory a run needs.

`RULES` is the decision table (first match wins) and `SCENARIOS` the canonical cases with their expected
answers; docs/guide must agree with both (a test checks). Pure functions, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field
from ragtune.servers.finetune.hyper import DEFAULT_LORA

Goal = Literal["knowledge", "style", "task", "preference", "retrieval"]
Method = Literal["prompt_rag", "lora_sft", "full_sft", "cpt_then_sft", "dpo", "rejection_sampling_sft", "embedding"]
TINY_DATA = 50  # below this, few-shot prompting or retrieval beats training (OpenAI suggests starting at ~50)
PLENTIFUL_DATA = 10_000  # from here full fine-tuning pays for its memory
DOCS = "docs/guide/choosing-a-method.md"


class Situation(BaseModel):
    """What the user knows about their problem, data and hardware."""

    goal: Goal = Field(
        description="knowledge (facts/terms), style (tone/format), task (narrow skill), "
        "preference (answer quality: better vs worse answers), retrieval (search misses the passages that "
        "answer users' questions, e.g. everyday words against official terms)"
    )
    n_examples: int = Field(
        ge=0, description="How many training examples (preference pairs; for retrieval: question-passage pairs)"
    )
    data_changes_often: bool = Field(default=False, description="The facts change weekly or faster")
    has_preference_pairs: bool = Field(default=False, description="Pairs of a better and a worse answer exist")
    has_reference_answers: bool = Field(default=False, description="A correct reference answer exists per prompt")
    domain_terms_missing: bool = Field(default=False, description="The base model does not know the domain's terms")
    base_is_instruct: bool = Field(default=True, description="The base model is already instruction-tuned")
    gpu_memory_gb: float | None = Field(default=None, gt=0, description="Memory of the training GPU, if known")
    model_params_b: float | None = Field(default=None, gt=0, description="Base model size in billions of parameters")


class Recommendation(BaseModel):
    """The advised method, the job settings that implement it, and why."""

    method: Method
    rule: str
    job_method: dict[str, Any] | None = Field(
        description="`method` for fine_tuning.jobs.create, or null for prompt/RAG"
    )
    peft: dict[str, Any] | None = Field(description="`peft` extra for the job; null means full fine-tuning")
    reasons: list[str]
    warnings: list[str] = Field(default_factory=list)
    then: str | None = Field(default=None, description="A follow-up step, e.g. instruction tuning after CPT")
    docs: str


@dataclass(frozen=True)
class Rule:
    """One row of the decision table."""

    name: str
    when: str
    method: Method
    reason: str
    applies: Callable[[Situation], bool]


RULES: tuple[Rule, ...] = (
    Rule(
        "retrieval_misses",
        "goal is retrieval: search misses the passages that answer users' questions",
        "embedding",
        "When the right passage is not retrieved, no LLM tuning can fix the answer; tuning the retriever "
        "(e5-small) on question -> passage pairs from your own corpus teaches it your users' words.",
        lambda s: s.goal == "retrieval",
    ),
    Rule(
        "changing_data",
        "goal is knowledge and the facts change often",
        "prompt_rag",
        "Fine-tuning freezes facts at training time; retrieval reads the current documents at question time.",
        lambda s: s.goal == "knowledge" and s.data_changes_often,
    ),
    Rule(
        "tiny_data",
        f"fewer than {TINY_DATA} examples",
        "prompt_rag",
        f"With under {TINY_DATA} examples, put them in the prompt as few-shot examples or retrieve them; "
        "training on so few overfits.",
        lambda s: s.n_examples < TINY_DATA,
    ),
    Rule(
        "missing_terms",
        "goal is knowledge and the model lacks the domain's terms",
        "cpt_then_sft",
        "Continued pretraining on raw domain text teaches vocabulary and facts the base model has never seen.",
        lambda s: s.goal == "knowledge" and s.domain_terms_missing,
    ),
    Rule(
        "knowledge_lookup",
        "goal is knowledge the model can already read",
        "prompt_rag",
        "The model understands the domain; retrieval supplies the facts with sources and stays current.",
        lambda s: s.goal == "knowledge",
    ),
    Rule(
        "preference_pairs",
        "goal is answer quality and preference pairs exist",
        "dpo",
        "DPO learns directly from better/worse answer pairs without a reward model.",
        lambda s: s.goal == "preference" and s.has_preference_pairs,
    ),
    Rule(
        "preference_references",
        "goal is answer quality with reference answers or a rule to score them",
        "rejection_sampling_sft",
        "Sample several answers per prompt, keep the best by a reward (similarity to the reference, or a rule), "
        "then instruction-tune on the winners.",
        lambda s: s.goal == "preference",
    ),
    Rule(
        "plentiful_data",
        f"style or task with {PLENTIFUL_DATA}+ examples",
        "full_sft",
        "With plenty of data, full fine-tuning can use it all; adapters cap what the model can absorb.",
        lambda s: s.n_examples >= PLENTIFUL_DATA,
    ),
    Rule(
        "narrow_task",
        "style or task with a small data set",
        "lora_sft",
        "Instruction tuning with LoRA fits a narrow task or style from a few hundred examples, cheaply, "
        "and keeps the base model's general skills.",
        lambda s: True,
    ),
)


def recommend_method(situation: Situation) -> Recommendation:
    """Pick a method with the first matching rule, then adjust for memory and the kind of base model."""
    rule = next(r for r in RULES if r.applies(situation))
    reasons, warnings, then = [f"{rule.when}: {rule.reason}"], [], None
    method = rule.method
    peft: dict[str, Any] | None = dict(DEFAULT_LORA)
    if method == "full_sft" and situation.gpu_memory_gb and situation.model_params_b:
        need = estimate_memory(params=situation.model_params_b * 1e9, method="full").total_gb
        if need > situation.gpu_memory_gb:
            method = "lora_sft"
            reasons.append(
                f"full fine-tuning needs about {need:.0f} GB but the GPU has {situation.gpu_memory_gb:g} "
                "GB, so LoRA instead"
            )
    if method == "full_sft":
        peft = None
    if method == "cpt_then_sft":
        peft = None if (situation.model_params_b or 0) < 3 else dict(DEFAULT_LORA)
        warnings.append(
            "continued pretraining can hurt instruction following; run instruction tuning "
            "(supervised) on its result afterwards"
        )
        then = "supervised fine-tuning (LoRA) on instruction examples, starting from the CPT result"
        if situation.base_is_instruct:
            warnings.append("CPT works best on a base (non-instruct) model; an instruct model loses its chat skills")
    if method in ("lora_sft", "full_sft") and not situation.base_is_instruct:
        warnings.append(
            "the base model is not instruction-tuned; start from its instruct variant for a narrow "
            "task or style, or expect to need more data"
        )
    if method == "rejection_sampling_sft" and not situation.has_reference_answers:
        warnings.append(
            "no reference answers: use a rule reward such as regex:<pattern>, contains:<text> or length, "
            "or collect preference pairs for DPO"
        )
    if method in ("dpo", "rejection_sampling_sft") and situation.base_is_instruct is False:
        warnings.append("preference tuning expects an instruction-tuned model; run supervised tuning first")
    if method in ("lora_sft", "full_sft") and situation.data_changes_often:
        reasons.append(
            "the facts change often: keep them in retrieval (RAG) and train only the style or task, "
            "so the model never answers from stale memorised facts"
        )
        then = "serve the tuned model with retrieval (retrieval_search) supplying the current facts"
    if method == "embedding":
        peft = None
        if situation.n_examples < TINY_DATA:
            warnings.append(
                f"fewer than {TINY_DATA} labelled question -> passage pairs: build pairs from the collection "
                "itself with finetune_build_embedding_pairs (titles and sentences; questions only from a "
                "configured chat model)"
            )
        then = (
            "check the job's evaluation (verdict better), then switch the collection with retrieval_reembed; "
            "it refuses a tuned embedder that scored worse than its base"
        )
    if method == "prompt_rag":
        peft = None
    return Recommendation(
        method=method,
        rule=rule.name,
        job_method=_job_method(method, situation),
        peft=peft,
        reasons=reasons,
        warnings=warnings,
        then=then,
        docs=f"{DOCS}#{method.replace('_', '-')}",
    )


def _job_method(method: Method, situation: Situation) -> dict[str, Any] | None:
    auto = {"n_epochs": "auto", "batch_size": "auto", "learning_rate_multiplier": "auto"}
    if method == "prompt_rag":
        return None
    if method == "dpo":
        return {"type": "dpo", "dpo": {"hyperparameters": {**auto, "beta": 0.1}}}
    if method == "rejection_sampling_sft":
        reward = "reference_similarity" if situation.has_reference_answers else "length"
        return {
            "type": "rejection_sampling",
            "rejection_sampling": {
                "hyperparameters": auto,
                "n_samples": 4,
                "reward": reward,
                "temperature": 0.8,
            },
        }
    if method == "cpt_then_sft":
        return {"type": "cpt", "cpt": {"hyperparameters": auto}}
    if method == "embedding":
        # name the collection in hyperparameters.collection to mine bm25 hard negatives from it
        return {"type": "embedding", "embedding": {"hyperparameters": {"n_epochs": "auto", "batch_size": "auto"}}}
    return {"type": "supervised", "supervised": {"hyperparameters": auto}}


# canonical scenarios the docs guide must match ------------------------------------------------------
SCENARIOS: tuple[tuple[str, dict[str, Any], Method], ...] = (
    (
        "Users ask in everyday words, the documents use official terms; 1,500 questions with their passage",
        {"goal": "retrieval", "n_examples": 1500},
        "embedding",
    ),
    (
        "Search misses colloquial questions and we have only the documents",
        {"goal": "retrieval", "n_examples": 0},
        "embedding",
    ),
    (
        "Product prices that change every week",
        {"goal": "knowledge", "n_examples": 5000, "data_changes_often": True},
        "prompt_rag",
    ),
    ("Twenty examples of the house style", {"goal": "style", "n_examples": 20}, "prompt_rag"),
    (
        "3,000 support chats in our house style; the product facts change weekly",
        {"goal": "style", "n_examples": 3000, "data_changes_often": True},
        "lora_sft",
    ),
    (
        "Medical notes full of terms the model never saw",
        {"goal": "knowledge", "n_examples": 50000, "domain_terms_missing": True, "base_is_instruct": False},
        "cpt_then_sft",
    ),
    (
        "Questions about our handbook, which the model can read",
        {"goal": "knowledge", "n_examples": 800},
        "prompt_rag",
    ),
    ("500 support tickets answered in our format", {"goal": "style", "n_examples": 500}, "lora_sft"),
    ("2,000 examples of extracting fields from invoices", {"goal": "task", "n_examples": 2000}, "lora_sft"),
    (
        "50,000 labelled task examples, memory no constraint",
        {"goal": "task", "n_examples": 50000},
        "full_sft",
    ),
    (
        "50,000 examples, 70B model, one 24 GB GPU",
        {"goal": "task", "n_examples": 50000, "model_params_b": 70, "gpu_memory_gb": 24},
        "lora_sft",
    ),
    (
        "Raters picked the better of two answers 3,000 times",
        {"goal": "preference", "n_examples": 3000, "has_preference_pairs": True},
        "dpo",
    ),
    (
        "Answers are often wrong; we have a reference answer per question",
        {"goal": "preference", "n_examples": 1000, "has_reference_answers": True},
        "rejection_sampling_sft",
    ),
)


# memory estimate ----------------------------------------------------------------------------------
Precision = Literal["fp32", "bf16", "fp16", "int8", "int4"]
BYTES: dict[str, float] = {"fp32": 4, "bf16": 2, "fp16": 2, "int8": 1, "int4": 0.5}
GPUS: dict[str, float] = {
    "T4": 16,
    "L4": 24,
    "A10": 24,
    "RTX 4090": 24,
    "A100 40GB": 40,
    "A100 80GB": 80,
    "H100": 80,
    "H200": 141,
}
GB = 1e9  # decimal gigabytes, as GPU memory is sold (7B params x 2 bytes = 14 GB)


@dataclass(frozen=True)
class Arch:
    """The shape numbers the activation formula needs."""

    params: float
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int


MODELS: dict[str, Arch] = {
    "smollm2-135m": Arch(134.5e6, 576, 30, 9, 1536, 49152),
    "llama-3-8b": Arch(8.03e9, 4096, 32, 32, 14336, 128256),
    "qwen2.5-7b": Arch(7.62e9, 3584, 28, 28, 18944, 152064),
    "mistral-7b": Arch(7.24e9, 4096, 32, 32, 14336, 32000),
    "gemma-2-9b": Arch(9.24e9, 3584, 42, 16, 14336, 256000),
    "llama-3-70b": Arch(70.6e9, 8192, 80, 64, 28672, 128256),
}


class MemoryEstimate(BaseModel):
    """GPU memory a training run needs, by component, and which common GPUs hold it."""

    model: str
    params_b: float
    method: str
    precision: str
    trainable_params: int
    weights_gb: float = Field(description="Frozen or trained base weights at the given precision")
    adapter_gb: float = Field(description="LoRA adapter weights (fp32); 0 for full fine-tuning")
    gradients_gb: float
    optimizer_gb: float
    activations_gb: float
    overhead_gb: float
    total_gb: float
    fits: list[str] = Field(description="Common GPUs with enough memory (one GPU, 90% usable)")
    assumptions: list[str]


def find_arch(model: str | None = None, params: float | None = None) -> tuple[str, Arch]:
    """Return a known model's shape, or derive one from a parameter count (e.g. 7e9 or '7B')."""
    if model:
        key = re.sub(r"^.*/", "", model.strip().lower()).replace("-instruct", "").replace("_", "-")
        key = {
            "smollm2-135m-instruct": "smollm2-135m",
            "meta-llama-3-8b": "llama-3-8b",
            "mistral-7b-v0.1": "mistral-7b",
        }.get(key, key)
        if key in MODELS:
            return key, MODELS[key]
        size = re.search(r"(\d+(?:\.\d+)?)\s*([bm])\b", key)
        if size and params is None:
            params = float(size.group(1)) * (1e9 if size.group(2) == "b" else 1e6)
        if params is None:
            raise ValueError(f"unknown model {model!r}; name one of {', '.join(MODELS)} or give a parameter count")
    if params is None or params <= 0:
        raise ValueError("give a model name or a positive parameter count (e.g. 7e9)")
    hidden = max(256, int(round((params * 128 / 12) ** (1 / 3) / 128)) * 128)  # params ~ 12 L h^2, L ~ h/128
    layers = max(1, round(params / (12 * hidden * hidden)))
    return model or f"{params / 1e9:g}B", Arch(params, hidden, layers, max(1, hidden // 128), int(hidden * 3.5), 32000)


def estimate_memory(
    model: str | None = None,
    *,
    params: float | None = None,
    method: Literal["full", "lora", "qlora"] = "lora",
    precision: Precision = "bf16",
    seq_len: int = 2048,
    batch: int = 1,
    optimizer: Literal["adamw", "adamw8bit", "sgd"] = "adamw",
    gradient_checkpointing: bool = True,
    lora_r: int = 16,
) -> MemoryEstimate:
    """Estimate training memory: weights + gradients + optimizer state + activations + CUDA overhead."""
    name, arch = find_arch(model, params)
    notes = [
        "GB = 10^9 bytes",
        "activations: Korthikanti et al. 2022 per-layer formula with memory-efficient "
        "attention (s*b*h*34 bytes per layer in 16-bit; ~2*s*b*h with gradient checkpointing) + fp32 logits",
    ]
    if method == "qlora":
        precision = "int4"
        notes.append("QLoRA keeps the frozen base weights in 4-bit")
    if method == "full" and precision in ("int8", "int4"):
        raise ValueError("full fine-tuning needs fp32, bf16 or fp16 weights; use method='qlora' for 4-bit")
    weights = arch.params * BYTES[precision]
    if method == "full":
        trainable = arch.params
        grad_bytes = 4 if precision == "fp32" else 2
        master = 0 if precision == "fp32" else 4  # mixed precision keeps an fp32 master copy
        notes.append("full fine-tuning in mixed precision keeps fp32 master weights (counted as optimizer state)")
    else:
        per_layer = 4 * lora_r * 2 * arch.hidden + 3 * lora_r * (arch.hidden + arch.intermediate)
        trainable = per_layer * arch.layers
        grad_bytes, master = 4, 0
        notes.append(f"LoRA r={lora_r} on all linear layers, adapter weights and gradients in fp32")
    state = {"adamw": 8, "adamw8bit": 2, "sgd": 4}[optimizer] + master
    act_bytes = 2 if precision != "fp32" else 4
    per_layer_act = seq_len * batch * arch.hidden * (2 if gradient_checkpointing else 34) * act_bytes / 2
    activations = per_layer_act * arch.layers + seq_len * batch * arch.vocab * 4 * 2
    if gradient_checkpointing:
        activations += seq_len * batch * arch.hidden * 34 * act_bytes / 2  # one layer recomputed at a time
    overhead = 1.0 * GB
    adapter = 0 if method == "full" else trainable * 4
    parts = [weights, adapter, trainable * grad_bytes, trainable * state, activations, overhead]
    total = sum(parts)
    fits = [gpu for gpu, mem in GPUS.items() if total <= mem * GB * 0.9]
    if not fits:
        notes.append("no single common GPU holds this: shard over several (FSDP/DeepSpeed) or use QLoRA")
    r = [round(p / GB, 2) for p in parts]
    return MemoryEstimate(
        model=name,
        params_b=round(arch.params / 1e9, 3),
        method=method,
        precision=precision,
        trainable_params=int(trainable),
        weights_gb=r[0],
        adapter_gb=r[1],
        gradients_gb=r[2],
        optimizer_gb=r[3],
        activations_gb=r[4],
        overhead_gb=r[5],
        total_gb=round(total / GB, 2),
        fits=fits,
        assumptions=notes,
    )


def parse_params(text: str) -> float:
    """Read a parameter count such as '7B', '135M' or '7e9'."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?(?:e\d+)?)\s*([bBmMkK]?)\s*", text)
    if not m:
        raise ValueError(f"cannot read a parameter count from {text!r}; write e.g. 7B, 135M or 7e9")
    scale = {"b": 1e9, "m": 1e6, "k": 1e3, "": 1.0}[m.group(2).lower()]
    value = float(m.group(1)) * scale
    return value * 1e9 if not m.group(2) and value < 1e5 else value  # a bare "7" means 7B
