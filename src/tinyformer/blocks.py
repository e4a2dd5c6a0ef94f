"""The transformer block: the one layer every model of the course stacks.

Shapes: B batch, T length (new positions), P cached positions, S source length,
D d_model, H heads.

One class grows through the course:

* Chapter 4 builds it causal: self-attention that only looks back, then a feed-forward
  network (GPT's decoder block).
* Chapter 6 turns the causal mask off (``causal=False``): the same weights, now an
  encoder block (BERT's), whose only mask hides padding.
* Chapters 9-10 add a cross-attention sublayer (``cross_attention=True``) between the two,
  which reads the encoder's output, the "memory": the decoder block of the 2017 paper.

Each sublayer is a residual branch, in one of two arrangements:

    pre-LN  (``norm_first=True``, GPT-2 and most modern models):  x = x + f(norm(x))
    post-LN (``norm_first=False``, the 2017 paper and BERT):      x = norm(x + f(x))

The norms are named by the sublayer they serve: ``attn_norm``, ``cross_norm``, ``ff_norm``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from tinyformer.attention import KVCache, MultiHeadAttention, causal_mask, check_mask
from tinyformer.layers import FeedForward

__all__ = ["TransformerBlock"]


class TransformerBlock(nn.Module):
    """Self-attention, optional cross attention, feed-forward; each a residual sublayer.

    pre-LN:  x = x + SelfAttn(attn_norm(x));  [x = x + CrossAttn(cross_norm(x), m);]
             x = x + FF(ff_norm(x))
    post-LN: x = attn_norm(x + SelfAttn(x));  [x = cross_norm(x + CrossAttn(x, m));]
             x = ff_norm(x + FF(x))

    Without cross attention this computes exactly ``nn.TransformerEncoderLayer`` (under a
    causal mask when ``causal``); with it, ``nn.TransformerDecoderLayer`` (see
    ``tinyformer.torch_bridge``).

    Args:
        d_model: D, the width of the residual stream.
        n_heads: H; must divide D.
        d_ff: hidden width of the feed-forward network (4 D in the 2017 paper).
        dropout: on attention weights, inside the feed-forward network and on each
            sublayer's output before the residual sum.
        norm_first: True for pre-LN, False for post-LN.
        activation: the feed-forward activation ("relu", "gelu", "gelu_tanh", "silu").
        causal: position t may only read positions <= t (a decoder); False: every
            position reads every other (an encoder).
        cross_attention: add the cross-attention sublayer (submodules ``cross_attn`` and
            ``cross_norm``; both None without it).
        layer_norm_eps: the LayerNorms' epsilon.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = True,
        activation: str = "relu",
        causal: bool = True,
        cross_attention: bool = False,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.causal = causal
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.attn_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        # Cross attention (Part III): queries from this stream, keys and values from the
        # encoder's output. Part I's and Part II's blocks have none.
        if cross_attention:
            self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
            self.cross_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        else:
            self.cross_attn = self.cross_norm = None
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.ff_norm = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.dropout = nn.Dropout(dropout)  # on each sublayer's output

    def residual(
        self, x: torch.Tensor, norm: nn.LayerNorm, sublayer: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """One residual sublayer, pre-LN or post-LN: the only place the two differ."""
        if self.norm_first:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """x (B, T, D) -> (B, T, D).

        ``mask`` (bool, True = may attend, broadcastable to (B, H, T, P + T)) restricts
        self-attention, e.g. a padding mask (B, 1, 1, T); in a causal block it is combined
        with the causal mask. With ``cache`` (a KVCache holding P earlier positions) x holds
        the T new positions: their keys/values are appended and they read all P + T.

        A block with cross attention needs ``memory`` (B, S, D), the encoder's output, and
        takes ``memory_mask`` (bool, broadcastable to (B, H, T, S); usually the source's
        padding mask (B, 1, 1, S)). Cross attention has no causal mask: every target
        position may read every (real) source position.
        """
        if (memory is not None) != (self.cross_attn is not None):
            raise ValueError(
                "expected memory (B, S, D) for a block with cross attention and none without, "
                f"got cross_attention={self.cross_attn is not None} and "
                f"memory={'a tensor' if memory is not None else None}"
            )
        past = cache.length if cache is not None else 0
        self_mask, is_causal = self.self_attention_mask(x, past, mask)
        x = self.residual(
            x,
            self.attn_norm,
            lambda h: self.self_attn(h, mask=self_mask, cache=cache, is_causal=is_causal),
        )
        if self.cross_attn is not None:
            x = self.residual(
                x, self.cross_norm, lambda h: self.cross_attn(h, context=memory, mask=memory_mask)
            )
        return self.residual(x, self.ff_norm, self.ff)

    def self_attention_mask(
        self, x: torch.Tensor, past: int, mask: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, bool]:
        """``(mask, is_causal)`` for self-attention of x (B, T, D) over P = ``past`` cached
        positions and its own T.

        Non-causal: the caller's mask as it is. Causal: the causal mask AND the caller's.
        Without a caller's mask and cache the causal mask is left to the attention kernel
        (``is_causal=True``), which skips the blocked scores instead of reading a mask; one
        new token after the cache may read every key, so it needs no mask at all.
        """
        if not self.causal:
            return mask, False
        B, T, _ = x.shape
        if mask is not None:  # checked here, before it is combined with the causal mask
            check_mask(mask, (B, self.self_attn.n_heads, T, past + T))
        if mask is None and past == 0:
            return None, True
        if mask is None and T == 1:
            return None, False
        causal = causal_mask(T, device=x.device, offset=past)  # (T, P + T)
        return (causal if mask is None else causal & mask), False
