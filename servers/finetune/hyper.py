"""Turn a job request's `method`, `peft` and "auto" hyperparameters into the concrete values a worker runs.

Rules (documented in docs/guide; mirror of OpenAI's where OpenAI has one):
- n_epochs "auto": 3, raised so that epochs x examples >= 100 (at most 25 epochs) and lowered so that
  it stays <= 25,000 (at least 1), as OpenAI's fine-tuning guide does.
- batch_size "auto": examples // 50, rounded down to a power of two, between 1 and 32.
- learning_rate_multiplier "auto": 1.0; learning_rate = multiplier x the base rate of the method and PEFT
  type (`BASE_LR`), unless the request gives `learning_rate` itself.
- max_length "auto": the longest example's (estimated) tokens + 25%, rounded up to a power of two, 256..4096.
- dpo beta "auto": 0.1. rejection_sampling: n_samples 4, temperature 0.8, reward "reference_similarity",
  max_new_tokens 64 (rewards: reference_similarity | regex:<pattern> | contains:<text> | length[:<max words>];
  "length_penalty" is accepted as "length").
- peft: LoRA (r 16, alpha 32, dropout 0.05, all linear projections) unless `{"type": "full"}`; cpt defaults to
  full fine-tuning (it teaches new text to every weight), the other methods to LoRA.
- embedding (tunes the e5-small retriever on pairs; always full fine-tuning of its layers): batch_size "auto" 32
  (at most half the pairs, at least 2: in-batch negatives need a full batch), max_length "auto" the longest
  text + 25% as a power of two, 64..256 (e5 reads at most 512), learning rate 2e-5; options `collection`
  (mine bm25 hard negatives there), `hard_negatives` (default true), `scale` (InfoNCE, default 20).
"""

from __future__ import annotations

import math
from typing import Any

import regex

METHODS = ("supervised", "dpo", "cpt", "rejection_sampling", "embedding")
ACCEPTS: dict[str, tuple[str, ...]] = {
    "supervised": ("chat",),
    "rejection_sampling": ("chat",),
    "dpo": ("preference",),
    "cpt": ("text", "chat"),
    "embedding": ("pairs",),
}
# The same base rates as the worker's recipes (LORA_LR / FULL_LR there; a test keeps them equal).
BASE_LR: dict[tuple[str, str], float] = {
    ("supervised", "lora"): 2e-4,
    ("supervised", "full"): 2e-5,
    ("rejection_sampling", "lora"): 2e-4,
    ("rejection_sampling", "full"): 2e-5,
    ("dpo", "lora"): 5e-5,
    ("dpo", "full"): 5e-5,
    ("cpt", "lora"): 2e-4,
    ("cpt", "full"): 5e-5,
    ("embedding", "full"): 2e-5,
}
EMBEDDING_MAX_LENGTH = 512  # e5-small's positions
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
DEFAULT_LORA: dict[str, Any] = {
    "type": "lora",
    "r": 16,
    "alpha": 32,
    "dropout": 0.05,
    "target_modules": LORA_TARGETS,
}
# Upper bounds (issue #12 accepted n_epochs 1e9): OpenAI's ranges where it has one (n_epochs 1-50,
# batch_size 1-256, learning_rate_multiplier <= 10, dpo beta <= 2), generous sanity limits elsewhere.
MAX_LORA_R = 256
MAX_LENGTH = 131_072
REWARDS = ("reference_similarity", "regex:<pattern>", "contains:<text>", "length[:<max words>]")
# What the worker's recipes read (servers/worker/recipes: TrainingOptions and each recipe's config).
_HYPER_KEYS = {
    "n_epochs",
    "batch_size",
    "learning_rate_multiplier",
    "learning_rate",
    "max_steps",
    "max_length",
    "beta",
    "loss_type",
    "lr_scheduler",
    "warmup_steps",
    "save_steps",
    "save_total_limit",
    "merge",
    "packing",
}
# Hyperparameters only one method reads (the embedding recipe's EmbeddingJobConfig).
_METHOD_HYPER = {"embedding": {"collection", "hard_negatives", "scale", "eval_chunks"}}
_OPTIONS = {
    "embedding": {"collection", "hard_negatives", "scale"},
    "dpo": {"beta", "loss_type"},
    "rejection_sampling": {"n_samples", "reward", "temperature", "top_p", "max_new_tokens", "threshold"},
}


class RequestError(ValueError):
    """A job request that cannot run as written; `param` names the offending field."""

    def __init__(self, message: str, *, param: str | None = None, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def parse_method(method: dict[str, Any] | str | None, legacy: dict[str, Any] | None = None) -> tuple[str, dict]:
    """Return (type, options) from OpenAI's `method` object; top-level `hyperparameters` (deprecated) merge in."""
    if method is None or isinstance(method, str):
        method = {"type": method or "supervised"}
    if not isinstance(method, dict):
        raise RequestError('method must be an object such as {"type": "supervised"}', param="method")
    kind = method.get("type", "supervised")
    if kind == "reinforcement":
        raise RequestError(
            "method 'reinforcement' is not supported here; use rejection_sampling (sample, score "
            "with a reward, keep the best, then SFT)",
            param="method.type",
            code="unsupported_method",
        )
    if kind not in METHODS:
        raise RequestError(f"unknown method type {kind!r}; use one of {', '.join(METHODS)}", param="method.type")
    options = dict(method.get(kind) or {})
    hyper = {**(legacy or {}), **(options.pop("hyperparameters", None) or {})}
    known = _HYPER_KEYS | _METHOD_HYPER.get(kind, set())
    unknown = set(hyper) - known
    if unknown:
        raise RequestError(
            f"unknown hyperparameters {sorted(unknown)}; known for {kind}: {sorted(known)}",
            param=f"method.{kind}.hyperparameters",
        )
    extra = set(options) - _OPTIONS.get(kind, set())
    if extra:
        raise RequestError(
            f"unknown {kind} options {sorted(extra)}; known: {sorted(_OPTIONS.get(kind, set()))}",
            param=f"method.{kind}",
        )
    if "beta" in options:
        hyper["beta"] = options.pop("beta")
    for key in _METHOD_HYPER.get(kind, set()) & set(options):  # embedding options may sit beside hyperparameters
        hyper.setdefault(key, options.pop(key))
    for key in ("beta", "loss_type"):
        if key in hyper and kind != "dpo":
            raise RequestError(f"{key} only applies to method dpo, not {kind}", param=f"method.{kind}.hyperparameters")
    return kind, {"hyperparameters": hyper, **options}


def parse_peft(peft: dict[str, Any] | str | None, kind: str) -> dict[str, Any] | None:
    """Return the job's LoRA settings, or None for full fine-tuning."""
    if kind == "embedding":
        if peft not in (None, "full") and (not isinstance(peft, dict) or peft.get("type", "lora") != "full"):
            raise RequestError(
                "embedding jobs train every layer of e5-small (it is small); LoRA is not supported: leave peft out",
                param="peft",
            )
        return None
    if peft is None:
        return None if kind == "cpt" else dict(DEFAULT_LORA)
    if isinstance(peft, str):
        peft = {"type": peft}
    ptype = peft.get("type", "lora")
    if ptype == "full":
        return None
    if ptype != "lora":
        raise RequestError(f"unknown peft type {ptype!r}; use 'lora' or 'full'", param="peft.type")
    out = {**DEFAULT_LORA, **peft}
    unknown = set(out) - set(DEFAULT_LORA)
    if unknown:
        raise RequestError(
            f"unknown LoRA settings {sorted(unknown)}; use r, alpha, dropout, target_modules", param="peft"
        )
    _check_number(out["r"], "peft.r", integer=True, low=1, high=MAX_LORA_R)
    _check_number(out["alpha"], "peft.alpha", low=0, high=4 * MAX_LORA_R)
    _check_number(out["dropout"], "peft.dropout", low=0, high=1)
    if not (
        out["target_modules"] == "all-linear"
        or (isinstance(out["target_modules"], list) and all(isinstance(t, str) for t in out["target_modules"]))
    ):
        raise RequestError(
            "peft.target_modules must be a list of module names or 'all-linear'", param="peft.target_modules"
        )
    return out


def resolve(kind: str, options: dict[str, Any], peft: dict[str, Any] | None, report: dict[str, Any]) -> dict:
    """Return concrete hyperparameters for the job (every "auto" replaced by the documented rule)."""
    given = options["hyperparameters"]
    n = int(report.get("examples", 0))
    out: dict[str, Any] = {}
    out["n_epochs"] = _value(given, "n_epochs", lambda: _auto_epochs(n), integer=True, low=1, high=50)
    auto_batch = (lambda: _auto_embedding_batch(n)) if kind == "embedding" else (lambda: _auto_batch(n))
    out["batch_size"] = _value(given, "batch_size", auto_batch, integer=True, low=1, high=256)
    out["learning_rate_multiplier"] = _value(given, "learning_rate_multiplier", lambda: 1.0, low=0, high=10)
    base = BASE_LR[(kind, "lora" if peft else "full")]
    out["learning_rate"] = _value(given, "learning_rate", lambda: base * out["learning_rate_multiplier"], low=0, high=1)
    longest = int(report.get("tokens", {}).get("max", 0))
    if kind == "embedding":
        out["max_length"] = _value(
            given,
            "max_length",
            lambda: _auto_embedding_length(longest),
            integer=True,
            low=16,
            high=EMBEDDING_MAX_LENGTH,
        )
        _embedding_options(given, out)
    else:
        out["max_length"] = _value(
            given, "max_length", lambda: _auto_length(longest), integer=True, low=16, high=MAX_LENGTH
        )
    for key in _HYPER_KEYS - set(out) - {"beta"}:
        if key in given and given[key] != "auto":
            out[key] = given[key]
    for key, high in (("max_steps", 1_000_000), ("warmup_steps", 1_000_000), ("save_steps", 1_000_000)):
        if key in out:
            _check_number(out[key], key, integer=True, low=1 if key != "warmup_steps" else 0, high=high)
    if kind == "dpo":
        out["beta"] = _value(given, "beta", lambda: 0.1, low=0, high=2)
    if kind == "rejection_sampling":
        out["n_samples"] = _value(options, "n_samples", lambda: 4, integer=True, low=2, high=32)
        out["temperature"] = _value(options, "temperature", lambda: 0.8, low=0, high=2)
        out["max_new_tokens"] = _value(options, "max_new_tokens", lambda: 64, integer=True, low=1, high=4096)
        out["reward"] = _reward(options.get("reward", "reference_similarity"))
        for key in ("top_p", "threshold"):
            if key in options:
                out[key] = _value(options, key, lambda: None, low=0)
    return out


def _embedding_options(given: dict[str, Any], out: dict[str, Any]) -> None:
    """Check the embedding recipe's own options: collection (a name), hard_negatives (bool), scale, eval_chunks."""
    if given.get("collection") not in (None, "auto"):
        if not isinstance(given["collection"], str) or not given["collection"].strip():
            raise RequestError("collection must be the name of a retrieval collection", param="collection")
        out["collection"] = given["collection"].strip()
    if "hard_negatives" in given:
        if not isinstance(given["hard_negatives"], bool):
            raise RequestError("hard_negatives must be true or false", param="hard_negatives")
        out["hard_negatives"] = given["hard_negatives"]
    if given.get("scale") not in (None, "auto"):
        out["scale"] = _value(given, "scale", lambda: 20.0, low=1, high=100)
    if given.get("eval_chunks") not in (None, "auto"):
        out["eval_chunks"] = _value(given, "eval_chunks", lambda: 2000, integer=True, low=0, high=100_000)


def _reward(reward: Any) -> str:
    """Check a reward name against the ones the worker implements (servers/worker/recipes/rewards.py)."""
    if not isinstance(reward, str):
        raise RequestError(f"reward must be one of {', '.join(REWARDS)}", param="reward")
    name, _, arg = reward.partition(":")
    if reward in ("length_penalty", "length") or (name == "length" and arg.strip().isdigit()):
        return "length" if reward == "length_penalty" else reward
    if name == "regex":
        try:  # the worker runs it with the `regex` engine and a time limit per answer (rewards.py)
            regex.compile(arg)
        except regex.error as e:
            raise RequestError(f"reward regex does not compile: {e}", param="reward") from e
        return reward
    if reward == "reference_similarity" or (name == "contains" and arg):
        return reward
    raise RequestError(f"unknown reward {reward!r}; use one of {', '.join(REWARDS)}", param="reward")


def _value(
    given: dict[str, Any],
    key: str,
    auto: Any,
    *,
    integer: bool = False,
    low: float | None = None,
    high: float | None = None,
) -> Any:
    value = given.get(key, "auto")
    if value == "auto" or value is None:
        return auto()
    _check_number(value, key, integer=integer, low=low, high=high)
    return int(value) if integer else value


def _check_number(
    value: Any, key: str, *, integer: bool = False, low: float | None = None, high: float | None = None
) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and (not integer or float(value).is_integer())
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        kind = "an integer" if integer else "a number"
        bounds = f" >= {low}" if low is not None else ""
        bounds += f" and <= {high}" if high is not None else ""
        raise RequestError(f'{key} must be "auto" or {kind}{bounds}, got {value!r}', param=key)


def _auto_epochs(n: int) -> int:
    epochs = 3
    if n and n * epochs < 100:
        epochs = min(25, math.ceil(100 / n))
    elif n * epochs > 25_000:
        epochs = max(1, 25_000 // n)
    return epochs


def _auto_batch(n: int) -> int:
    return max(1, min(32, 2 ** int(math.log2(max(1, n // 50)))))


def _auto_embedding_batch(n: int) -> int:
    return max(2, min(32, 2 ** int(math.log2(max(2, n // 2)))))


def _auto_embedding_length(longest: int) -> int:
    return max(64, min(256, 2 ** math.ceil(math.log2(max(1, longest * 1.25)))))


def _auto_length(longest: int) -> int:
    return max(256, min(4096, 2 ** math.ceil(math.log2(max(1, longest * 1.25)))))
