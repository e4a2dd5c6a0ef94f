"""Embeddings, positional encodings and the position-wise feed-forward network.

Shapes: B batch, T length, D d_model, V vocabulary size.

A note on scale. The token embedding, the positional signal and (with weight tying) the
output layer all share one scale, so we choose it deliberately:

* ``TokenEmbedding`` initialises its table with N(0, 1/D) entries and, by default
  (``scale=True``), multiplies by sqrt(D) on the way in, as Vaswani et al. (2017) do.
  The model therefore *sees* unit-variance token vectors, the same size as the
  sinusoidal encoding (values in [-1, 1]) and the learned positions (N(0, 1)), so neither
  drowns the other. When the same table is reused as the output layer (weight tying),
  the logits are h . e_v with h of unit scale (after LayerNorm) and e_v of size 1/sqrt(D)
  per entry, so the initial logits have standard deviation about 1: the first predictions
  are nearly uniform and the initial loss is close to ln V.
* ``scale=False`` gives the GPT-2 style (no multiplier). Keep it for comparisons; with our
  1/D initialisation the token vectors then start sqrt(D) times smaller than the positions.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "FeedForward",
    "LearnedPositionalEmbedding",
    "SinusoidalPositionalEncoding",
    "TokenEmbedding",
    "positional_module",
]


class TokenEmbedding(nn.Module):
    """Token ids ``(B, T)`` -> vectors ``(B, T, D)``: row ``ids[b, t]`` of a ``(V, D)`` table.

    ``.weight`` is the ``(V, D)`` table, shared with the output layer when weights are tied.
    With ``scale=True`` (default) the looked-up rows are multiplied by sqrt(D); see the
    module docstring for why.
    """

    def __init__(self, vocab_size: int, d_model: int, scale: bool = True):
        super().__init__()
        self.vocab_size = vocab_size
        self.d_model = d_model
        self.scale = scale
        # N(0, 1/D): unit-size rows once multiplied by sqrt(D), O(1) logits when tied.
        self.weight = nn.Parameter(torch.randn(vocab_size, d_model) / math.sqrt(d_model))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype not in (torch.long, torch.int32):
            raise ValueError(f"expected token ids of dtype torch.long, got {ids.dtype}")
        if ids.numel() > 0:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.vocab_size:
                bad = hi if hi >= self.vocab_size else lo
                raise ValueError(
                    f"token ids must lie in [0, {self.vocab_size}) for a vocabulary of size "
                    f"{self.vocab_size}, got id {bad} (min id {lo}, max id {hi})"
                )
        x = self.weight[ids]  # (B, T, D)
        return x * math.sqrt(self.d_model) if self.scale else x

    def extra_repr(self) -> str:
        return f"vocab_size={self.vocab_size}, d_model={self.d_model}, scale={self.scale}"


def _check_positions(x: torch.Tensor, d_model: int, max_len: int, offset: int) -> int:
    """Validate ``x (B, T, D)`` against the context; return T."""
    if x.ndim != 3 or x.shape[-1] != d_model:
        raise ValueError(f"expected x of shape (B, T, {d_model}), got shape {tuple(x.shape)}")
    T = x.shape[1]
    if offset < 0:
        raise ValueError(f"expected a position offset >= 0, got {offset}")
    if offset + T > max_len:
        where = f" starting at position {offset}" if offset else ""
        raise ValueError(
            f"sequence of length {T}{where} exceeds the model's context of {max_len} positions"
        )
    return T


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed encoding of Vaswani et al. (2017):

    PE[pos, 2i] = sin(pos / 10000^(2i/D)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/D)).

    Each pair of dimensions is a rotation at its own frequency, from one turn per 2*pi
    positions (i = 0) down to one per 10000 * 2*pi, so PE[pos + k] is a fixed linear function
    of PE[pos]. Buffer ``pe`` is ``(max_len, D)``.
    """

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        # Computed in float64 for accuracy at large positions, stored in the default dtype.
        pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
        two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # 2i = 0, 2, 4, ...
        angle = pos / 10000.0 ** (two_i / d_model)  # (max_len, ceil(D/2))
        pe = torch.zeros(max_len, d_model, dtype=torch.float64)
        pe[:, 0::2] = torch.sin(angle)
        pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])  # odd D: one fewer cosine column
        # Not persistent: it is a formula, not learned, so checkpoints need not carry it.
        self.register_buffer("pe", pe.to(torch.get_default_dtype()), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x (B, T, D)`` -> ``x + PE[offset : offset + T]``.

        ``offset`` is the position of the first token (the KV-cache length when generating).
        """
        T = _check_positions(x, self.d_model, self.max_len, offset)
        return x + self.pe[offset : offset + T].to(x.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}"


class LearnedPositionalEmbedding(nn.Module):
    """Adds a learned vector per position (GPT, BERT). Parameter ``weight`` is ``(max_len, D)``.

    Initialised N(0, 1), the same scale as the (sqrt(D)-scaled) token embeddings.
    """

    def __init__(self, max_len: int, d_model: int):
        super().__init__()
        self.max_len = max_len
        self.d_model = d_model
        self.weight = nn.Parameter(torch.randn(max_len, d_model))

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x (B, T, D)`` -> ``x + P[offset : offset + T]``."""
        T = _check_positions(x, self.d_model, self.max_len, offset)
        return x + self.weight[offset : offset + T]

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, d_model={self.d_model}"


_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}


class FeedForward(nn.Module):
    """The position-wise network: ``linear2(dropout(activation(linear1(x))))``.

    ``(B, T, D) -> (B, T, d_ff) -> (B, T, D)``, applied to every position independently.
    GELU is the exact (erf) form, as in ``nn.TransformerEncoderLayer(activation="gelu")``.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"expected activation to be one of {sorted(_ACTIVATIONS)}, got {activation!r}"
            )
        self.d_model = d_model
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = _ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.d_model:
            raise ValueError(
                f"expected x with last dimension d_model={self.d_model}, got shape {tuple(x.shape)}"
            )
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


def positional_module(kind: str, max_len: int, d_model: int) -> nn.Module:
    """The positional module every model adds to its token embeddings.

    ``kind`` is ``"learned"`` (a trained ``(max_len, D)`` table, as in GPT-2 and BERT) or
    ``"sinusoidal"`` (the fixed formula of Vaswani et al., 2017).
    """
    if kind == "learned":
        return LearnedPositionalEmbedding(max_len, d_model)
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(d_model, max_len)
    raise ValueError(f"expected positional 'learned' or 'sinusoidal', got {kind!r}")
