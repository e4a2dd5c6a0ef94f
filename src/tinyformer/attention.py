"""Attention: the one operation that lets every position read from every other.

Shapes used throughout: B batch, T length (T_q queries, T_k keys), D d_model, H heads,
d_k = D // H the width of one head.

Masks are boolean and ``True`` means "may attend", the same convention as
``torch.nn.functional.scaled_dot_product_attention``. A mask broadcasts to
``(B, H, T_q, T_k)``: row i says which keys query i may read.
(``nn.MultiheadAttention`` uses the opposite convention, True = blocked; see
``tinyformer.torch_bridge.to_torch_mask``.)
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "KVCache",
    "MultiHeadAttention",
    "broadcasts_to",
    "causal_mask",
    "check_mask",
    "padding_mask",
    "record_attention",
    "scaled_dot_product_attention",
]


def scaled_dot_product_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    dropout_p: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(q k^T / sqrt(d_k)) v, written out.

    Args:
        q: queries ``(..., T_q, d_k)``.
        k: keys ``(..., T_k, d_k)``.
        v: values ``(..., T_k, d_v)``.
        mask: optional bool tensor broadcastable to ``(..., T_q, T_k)``; True = may attend.
        dropout_p: probability of dropping an attention weight (training only; the
            caller decides, pass 0.0 at evaluation).

    Returns:
        ``(out, weights)``: ``out`` is ``(..., T_q, d_v)``, ``weights`` is ``(..., T_q, T_k)``,
        the softmax probabilities actually used (after dropout, if any).

    A query whose keys are *all* masked has nothing to read: its weights are all zero
    and its output is zero (no NaN), as in ``F.scaled_dot_product_attention``.
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"queries and keys must have the same last dimension d_k, got q {tuple(q.shape)} "
            f"and k {tuple(k.shape)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            f"keys and values must have the same length T_k (dim -2), got k {tuple(k.shape)} "
            f"and v {tuple(v.shape)}"
        )

    d_k = q.shape[-1]
    # Dividing by sqrt(d_k) keeps the scores at unit variance when q and k have unit-variance
    # entries; otherwise the softmax saturates as d_k grows and its gradients vanish.
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)

    if mask is not None:
        check_mask(mask, scores.shape)
        # exp(-inf) = 0: a blocked key gets exactly zero weight.
        scores = scores.masked_fill(~mask, float("-inf"))

    weights = torch.softmax(scores, dim=-1)

    if mask is not None:
        # A row with every key blocked is softmax(-inf, ..., -inf) = 0/0 = NaN. Such a query
        # has nothing to attend to, so we define its weights as zero (and hence its output).
        # Blocked positions are already 0 in every other row, so this changes nothing else.
        weights = weights.masked_fill(~mask, 0.0)

    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p)

    out = weights @ v  # (..., T_q, d_v)
    return out, weights


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether a tensor of ``shape`` broadcasts to exactly ``target``.

    The broadcasting rule, checked by hand (``torch.broadcast_shapes`` costs ~0.2 ms per
    call, on every attention call): aligned from the right, each size is 1 or the target's.
    """
    shape, target = tuple(shape), tuple(target)
    return len(shape) <= len(target) and all(
        a in (1, b) for a, b in zip(reversed(shape), reversed(target), strict=False)
    )


def check_mask(mask: torch.Tensor, scores_shape: tuple[int, ...]) -> None:
    """Raise a ValueError unless ``mask`` is a bool tensor broadcastable to ``scores_shape``."""
    if mask.dtype != torch.bool:
        raise ValueError(
            f"expected a mask of dtype torch.bool (True = may attend), got {mask.dtype}"
        )
    if not broadcasts_to(mask.shape, scores_shape):
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not broadcast to the attention scores "
            f"of shape {tuple(scores_shape)} (..., T_q, T_k)"
        )


def causal_mask(
    T: int, device: torch.device | str | None = None, *, offset: int = 0
) -> torch.Tensor:
    """The mask that lets position i attend to positions 0..i only.

    Returns a ``(T, offset + T)`` bool tensor, True on and below the diagonal. With the
    default ``offset=0`` it is square ``(T, T)``. ``offset`` is the number of earlier
    positions already in a KV cache: query i (absolute position offset + i) may then read
    keys 0..offset + i.
    """
    if T < 0 or offset < 0:
        raise ValueError(f"expected T >= 0 and offset >= 0, got T={T} and offset={offset}")
    query_pos = torch.arange(T, device=device).unsqueeze(1) + offset  # (T, 1)
    key_pos = torch.arange(offset + T, device=device).unsqueeze(0)  # (1, offset + T)
    return key_pos <= query_pos


def padding_mask(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Mask out padding keys: ``ids (B, T)`` -> ``(B, 1, 1, T)`` bool, True at real tokens.

    The two singleton dimensions broadcast over heads and queries: every query of every
    head ignores the same padded keys.
    """
    if ids.ndim != 2:
        raise ValueError(f"expected token ids of shape (B, T), got shape {tuple(ids.shape)}")
    return (ids != pad_id)[:, None, None, :]


class KVCache:
    """Keys and values of the positions seen so far, for ONE attention layer.

    During generation each new token only needs its own query; the keys and values of
    earlier tokens do not change (causal attention), so we keep them instead of recomputing.
    ``k`` and ``v`` are ``(B, H, T_past, d_k)``, or None while empty. A model keeps a list of
    these, one per layer (``model.new_cache()``).

    This is the simple version: each step concatenates, copying the T_past cached positions.
    ``tinyformer.fast.BufferedKVCache`` writes into a buffer that grows by doubling instead
    (the same keys and values; the benchmarks use it for long sequences).
    """

    def __init__(self) -> None:
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Number of cached positions T_past (0 when empty)."""
        return 0 if self.k is None else self.k.shape[-2]

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add keys/values ``(B, H, T_new, d_k)``; return all ``(B, H, T_past + T_new, d_k)``."""
        if self.k is None:
            self.k, self.v = k_new, v_new
        else:
            self.k = torch.cat([self.k, k_new], dim=-2)
            self.v = torch.cat([self.v, v_new], dim=-2)
        return self.k, self.v

    def select(self, rows: torch.Tensor) -> None:
        """Keep batch rows ``rows`` (a long tensor, repeats allowed), in that order.

        Beam search calls this after each step: every surviving hypothesis continues from
        its parent's keys and values.
        """
        if self.k is not None:
            self.k, self.v = self.k[rows], self.v[rows]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(length={self.length})"


class MultiHeadAttention(nn.Module):
    """H attention heads side by side, each in its own d_k = D / H dimensional subspace.

    Submodules ``q_proj``, ``k_proj``, ``v_proj``, ``out_proj`` are ``nn.Linear(D, D)``;
    the rows of the first three are the H heads' projections stacked (head h owns rows
    h*d_k .. (h+1)*d_k - 1).
    """

    def __init__(self, d_model: int, n_heads: int, bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if n_heads <= 0 or d_model % n_heads != 0:
            raise ValueError(
                f"d_model must be divisible by n_heads, got d_model={d_model} and n_heads={n_heads}"
            )
        self.d_model = d_model
        self.n_heads = n_heads
        self.d_k = d_model // n_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)
        # Set by record_attention: called with this module's weights, or None.
        self.record: Callable[[torch.Tensor], None] | None = None

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, H, T, d_k)."""
        B, T, _ = x.shape
        return x.view(B, T, self.n_heads, self.d_k).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, T, d_k) -> (B, T, D): the heads' outputs concatenated."""
        B, _, T, _ = x.shape
        return x.transpose(1, 2).reshape(B, T, self.d_model)

    def _check_input(self, name: str, t: torch.Tensor) -> None:
        if t.ndim != 3 or t.shape[-1] != self.d_model:
            raise ValueError(
                f"expected {name} of shape (B, T, {self.d_model}), got shape {tuple(t.shape)}"
            )
        if not t.is_floating_point():
            raise ValueError(f"expected {name} to be a floating-point tensor, got {t.dtype}")

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Attend from ``x`` to ``context`` (or to ``x`` itself): -> ``out (B, T_q, D)``.

        Args:
            x: ``(B, T_q, D)``, gives the queries.
            context: ``(B, T_k, D)``, gives keys and values; None means self-attention
                (``context = x``). Cross attention passes the encoder's output here.
            mask: bool, broadcastable to ``(B, H, T_q, T_k)``, True = may attend. None = no mask.
            cache: a :class:`KVCache` (self-attention only). The keys/values of ``x`` are
                appended to it and the queries attend over all cached positions, so
                T_k = cache length after appending. The mask, if any, must then cover
                (T_q, T_past + T_q), e.g. ``causal_mask(T_q, offset=T_past)``; feeding one
                token at a time needs no mask.
            is_causal: apply the causal mask, ``causal_mask(T)``, without building it; for
                self-attention over T_q = T_k positions (no mask, no cached positions).

        The attention itself runs in ``F.scaled_dot_product_attention``, which computes
        what :func:`scaled_dot_product_attention` writes out, fused into one kernel that
        never stores the ``(B, H, T_q, T_k)`` weights (the tests check both agree). To see
        the weights, run the model inside :func:`record_attention`: this module then uses
        the written-out version and keeps its weights.
        """
        self._check_input("x", x)
        if context is None:
            context = x
        else:
            if cache is not None:
                raise ValueError(
                    "a KV cache is for self-attention only, got both a cache and a context"
                )
            self._check_input("context", context)
            if context.shape[0] != x.shape[0]:
                raise ValueError(
                    f"x and context must have the same batch size, got x {tuple(x.shape)} "
                    f"and context {tuple(context.shape)}"
                )

        q = self._split_heads(self.q_proj(x))  # (B, H, T_q, d_k)
        k = self._split_heads(self.k_proj(context))  # (B, H, T_k, d_k)
        v = self._split_heads(self.v_proj(context))  # (B, H, T_k, d_k)
        if cache is not None:
            k, v = cache.append(k, v)  # (B, H, T_past + T_q, d_k)
        T_q, T_k = q.shape[-2], k.shape[-2]
        if is_causal and (mask is not None or T_k != T_q):
            raise ValueError(
                f"is_causal=True is the causal mask of T_q = T_k positions and takes no mask, "
                f"got T_q={T_q}, T_k={T_k} and {'a mask' if mask is not None else 'no mask'}"
            )
        if mask is not None:
            check_mask(mask, (*q.shape[:-1], T_k))

        dropout_p = self.dropout if self.training else 0.0
        if self.record is not None:
            if is_causal:
                mask = causal_mask(T_q, device=q.device)
            out, weights = scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p)
            self.record(weights.detach())
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
            )
        return self.out_proj(self._merge_heads(out))  # (B, T_q, D)

    def extra_repr(self) -> str:
        return f"d_model={self.d_model}, n_heads={self.n_heads}, d_k={self.d_k}"


@contextlib.contextmanager
def record_attention(model: nn.Module):
    """See the attention weights of any model: ``with record_attention(model) as maps:``.

    Inside the block, every :class:`MultiHeadAttention` in ``model`` keeps the weights it
    uses. ``maps`` is a dict from each attention module's name (``"decoder.blocks.0.self_attn"``,
    ``"decoder.blocks.1.cross_attn"``, ...) to its weights ``(B, H, T_q, T_k)``; it is filled
    as the model runs. A module called more than once (say, once per generated token) keeps
    the weights of its last call. The model's outputs are unchanged: the module computes the
    same attention, written out (:func:`scaled_dot_product_attention`), instead of fused.
    """
    modules = {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, MultiHeadAttention)
    }
    if not modules:
        raise ValueError(
            f"expected a model with MultiHeadAttention modules, got {type(model).__name__}"
        )
    maps: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        module.record = functools.partial(maps.__setitem__, name)
    try:
        yield maps
    finally:
        for module in modules.values():
            module.record = None
