"""Embeddings, positional encodings and the position-wise feed-forward network.

Shapes: B batch, T length, D d_model, V vocabulary size.

A note on scale. The token embedding and the positional signal are added, so we choose
their scales together:

* ``TokenEmbedding`` initialises its table with N(0, 1/D) entries and, by default
  (``scale=True``), multiplies by sqrt(D) on the way in, as Vaswani et al. (2017) do.
  The model therefore *sees* unit-variance token vectors, the same size as the
  sinusoidal encoding (values in [-1, 1]) and the learned positions (N(0, 1)), so neither
  drowns the other.
* With weight tying the same (V, D) table is also the output layer: logit_v = h . e_v.
  The final LayerNorm makes h unit-size per coordinate, so a logit is a sum of D terms of
  size about 1/sqrt(D) each -- if h and e_v were independent its standard deviation would
  be about 1. They are not: h still carries the input token's own embedding through the
  residual stream, so the logit of the *current* token (and of tokens whose embeddings
  happen to align with h) is much larger, and the first loss sits above ln V (Chapter 4
  measures it). The initial predictions are not uniform; training fixes that in a few
  steps.
* ``scale=False`` gives the GPT-2 and BERT style (no multiplier): with learned positions they
  initialise the token and the position tables at the same small scale (std 0.02), so neither
  drowns the other and no factor is needed.
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
        """ids (B, T) long -> (B, T, D). Ids are not checked here: the models check them once."""
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

    Each pair of dimensions is a rotation at its own frequency: pair i repeats every
    2*pi * 10000^(2i/D) positions, from 2*pi (i = 0) up to 2*pi * 10000^((D-2)/D), just short
    of 10000 * 2*pi. So PE[pos + k] is a fixed linear function
    of PE[pos]. Buffer ``pe`` is ``(max_len, D)``.

    ``halves=True`` stores the same numbers in another order: all D/2 sines first, then all
    D/2 cosines (Marian's layout, appendix *The real ones*). Which coordinate holds which
    frequency does not matter to a model trained with it; it matters when loading weights.
    """

    def __init__(self, d_model: int, max_len: int, halves: bool = False):
        super().__init__()
        self.d_model = d_model
        self.max_len = max_len
        self.halves = halves
        # Computed in float64 for accuracy at large positions, stored in the default dtype.
        pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
        two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # 2i = 0, 2, 4, ...
        angle = pos / 10000.0 ** (two_i / d_model)  # (max_len, ceil(D/2))
        sin, cos = torch.sin(angle), torch.cos(angle[:, : d_model // 2])
        if halves:
            pe = torch.cat([sin, cos], dim=1)
        else:
            pe = torch.zeros(max_len, d_model, dtype=torch.float64)
            pe[:, 0::2] = sin
            pe[:, 1::2] = cos  # odd D: one fewer cosine column
        # Not persistent: it is a formula, not learned, so checkpoints need not carry it.
        self.register_buffer("pe", pe.to(torch.get_default_dtype()), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``x (B, T, D)`` -> ``x + PE[offset : offset + T]``.

        ``offset`` is the position of the first token (the KV-cache length when generating).
        """
        T = _check_positions(x, self.d_model, self.max_len, offset)
        return x + self.pe[offset : offset + T].to(x.dtype)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, max_len={self.max_len}, halves={self.halves}"


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


def _gelu_tanh() -> nn.Module:
    return nn.GELU(approximate="tanh")


# The feed-forward activations, by the names TransformerConfig uses.
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": _gelu_tanh, "silu": nn.SiLU}


class FeedForward(nn.Module):
    """The position-wise network: ``linear2(dropout(activation(linear1(x))))``.

    ``(B, T, D) -> (B, T, d_ff) -> (B, T, D)``, applied to every position independently.
    ``activation``: "relu" (the 2017 paper), "gelu" (the exact erf form, as in BERT and
    ``nn.TransformerEncoderLayer(activation="gelu")``), "gelu_tanh" (GPT-2's tanh
    approximation) or "silu" (Marian).
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"expected activation to be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        self.linear1 = nn.Linear(d_model, d_ff)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear2(self.dropout(self.activation(self.linear1(x))))


def positional_module(kind: str, max_len: int, d_model: int) -> nn.Module:
    """The positional module every model adds to its token embeddings.

    ``kind`` is ``"learned"`` (a trained ``(max_len, D)`` table, as in GPT-2 and BERT),
    ``"sinusoidal"`` (the fixed formula of Vaswani et al., 2017) or ``"sinusoidal_halves"``
    (the same formula in Marian's layout).
    """
    if kind == "learned":
        return LearnedPositionalEmbedding(max_len, d_model)
    if kind in ("sinusoidal", "sinusoidal_halves"):
        return SinusoidalPositionalEncoding(d_model, max_len, halves=kind == "sinusoidal_halves")
    raise ValueError(
        f"expected positional 'learned', 'sinusoidal' or 'sinusoidal_halves', got {kind!r}"
    )
