"""The decoder: a causal transformer block and a GPT-style language model (Part I);
the block grows an optional cross-attention sublayer in Part III.

Shapes: B batch, T length (new tokens), P cached positions, D d_model, H heads, V vocab.

A decoder block is causal by construction: position t never sees positions > t.
Pre-LN (``norm_first=True``) is the default, as in GPT-2 and most modern models;
post-LN (``norm_first=False``) is what the 2017 paper "Attention Is All You Need" used.
"""

import torch
from torch import nn

from tinyformer.attention import KVCache, MultiHeadAttention, broadcasts_to, causal_mask
from tinyformer.layers import (
    FeedForward,
    TokenEmbedding,
    positional_module,
)


class DecoderBlock(nn.Module):
    """One decoder layer: causal self-attention, then a position-wise feed-forward network.

    Pre-LN (default, ``norm_first=True``):  x = x + SelfAttn(LN1(x));  x = x + FF(LN2(x))
    Post-LN (``norm_first=False``, the 2017 paper's): x = LN1(x + SelfAttn(x)); x = LN2(x + FF(x))

    Without cross attention this is exactly ``nn.TransformerEncoderLayer(batch_first=True)``
    run under a causal mask (see ``tinyformer.compat.load_block_from_torch``).

    With ``cross_attention=True`` (Part III) a third sublayer sits between the two, reading
    the encoder's output ``memory`` (m):
    pre-LN:  x = x + SelfAttn(LN1(x));  x = x + CrossAttn(LN3(x), m);  x = x + FF(LN2(x))
    post-LN: x = LN1(x + SelfAttn(x));  x = LN3(x + CrossAttn(x, m));  x = LN2(x + FF(x))
    That is ``nn.TransformerDecoderLayer(batch_first=True)`` (see
    ``tinyformer.compat.load_decoder_layer_from_torch``; its norm2 is our norm3 and vice versa:
    Part I named the feed-forward norm ``norm2`` before cross attention existed).

    Args:
        d_model: D, the width of the residual stream.
        n_heads: H; must divide D.
        d_ff: hidden width of the feed-forward network (4 D in the paper).
        dropout: applied to attention weights, inside the feed-forward network and on
            each sublayer's output before the residual sum.
        norm_first: True for pre-LN, False for post-LN.
        activation: "relu" (the paper) or "gelu" (GPT-2).
        cross_attention: add the cross-attention sublayer (submodules ``cross_attn``, a
            MultiHeadAttention, and ``norm3``); both are None when False.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = True,
        activation: str = "relu",
        cross_attention: bool = False,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, bias=True, dropout=dropout)
        self.norm1 = nn.LayerNorm(d_model)
        # Part III: the cross-attention sublayer, between self-attention and the feed-forward
        # network. Its queries come from the decoder, its keys and values from the encoder's
        # output (the "memory"). Part I's decoder-only model has none.
        if cross_attention:
            self.cross_attn = MultiHeadAttention(d_model, n_heads, bias=True, dropout=dropout)
            self.norm3 = nn.LayerNorm(d_model)
            self.dropout3 = nn.Dropout(dropout)
        else:
            self.cross_attn = self.norm3 = self.dropout3 = None
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        return_weights: bool = False,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
    ):
        """x (B, T, D) -> (B, T, D), or (out, self-attention weights (B, H, T, P + T)).

        The causal mask is always applied. ``mask`` (bool, True = may attend, broadcastable
        to (B, H, T, P + T)) is an *extra* restriction combined with it, e.g. a padding mask.
        With ``cache`` (a KVCache holding P earlier positions) x holds the T new positions:
        their keys/values are appended to the cache and they attend to all P + T positions.

        A block built with ``cross_attention=True`` also needs ``memory`` (B, S, D), the
        encoder's output, and takes ``memory_mask`` (bool, True = may attend, broadcastable
        to (B, H, T, S); usually the source's ``padding_mask`` (B, 1, 1, S)). Cross attention
        has no causal mask: every target position may read every (real) source position.
        With ``return_weights`` such a block returns a triple
        ``(out, self-attention weights (B, H, T, P + T), cross-attention weights (B, H, T, S))``.
        The KV cache is for self-attention only; cross attention reads ``memory`` afresh.
        """
        if x.dim() != 3:
            raise ValueError(f"expected x of shape (B, T, D), got shape {tuple(x.shape)}")
        B, T, _ = x.shape
        past = cache.length if cache is not None else 0
        attn_mask, is_causal = self._self_attention_mask(B, T, past, mask, x.device)
        self._check_memory(x, memory, memory_mask)

        cross_weights = None
        if self.norm_first:
            a, weights = self._self_attention(
                self.norm1(x), attn_mask, is_causal, cache, return_weights
            )
            x = x + a
            if self.cross_attn is not None:
                c, cross_weights = self._cross_attention(
                    self.norm3(x), memory, memory_mask, return_weights
                )
                x = x + c
            x = x + self.dropout2(self.ff(self.norm2(x)))
        else:
            a, weights = self._self_attention(x, attn_mask, is_causal, cache, return_weights)
            x = self.norm1(x + a)
            if self.cross_attn is not None:
                c, cross_weights = self._cross_attention(x, memory, memory_mask, return_weights)
                x = self.norm3(x + c)
            x = self.norm2(x + self.dropout2(self.ff(x)))
        if not return_weights:
            return x
        return (x, weights, cross_weights) if self.cross_attn is not None else (x, weights)

    def _self_attention(self, x, mask, is_causal, cache, return_weights):
        """(dropout(attention output), weights or None): weights only when asked for, since
        computing them rules out PyTorch's fused attention kernel."""
        out = self.self_attn(
            x, mask=mask, cache=cache, return_weights=return_weights, is_causal=is_causal
        )
        out, weights = out if return_weights else (out, None)
        return self.dropout1(out), weights

    def _cross_attention(self, x, memory, memory_mask, return_weights):
        # The same MultiHeadAttention as self-attention: queries from x, keys/values from memory.
        out = self.cross_attn(x, context=memory, mask=memory_mask, return_weights=return_weights)
        out, weights = out if return_weights else (out, None)
        return self.dropout3(out), weights

    def _check_memory(self, x, memory, memory_mask):
        """memory is required with cross attention and refused without; check its shape."""
        if self.cross_attn is None:
            if memory is not None or memory_mask is not None:
                raise ValueError(
                    "this block has no cross attention (cross_attention=False), "
                    "got memory or memory_mask"
                )
            return
        D = self.cross_attn.d_model
        if not isinstance(memory, torch.Tensor):
            raise ValueError(
                f"expected memory (B, T_src, {D}) for a block with cross attention, "
                f"got {type(memory).__name__}"
            )
        if memory.dim() != 3 or memory.shape[-1] != D:
            raise ValueError(
                f"expected memory of shape (B, T_src, {D}), got shape {tuple(memory.shape)}"
            )
        if memory.shape[0] != x.shape[0]:
            raise ValueError(
                f"expected memory with the batch size of x, got x of shape {tuple(x.shape)} "
                f"and memory of shape {tuple(memory.shape)}"
            )
        if not memory.is_floating_point():
            raise ValueError(f"expected memory to be a floating-point tensor, got {memory.dtype}")
        if memory_mask is None:
            return
        if memory_mask.dtype != torch.bool:
            raise ValueError(
                f"expected a memory_mask of dtype torch.bool (True = may attend), "
                f"got {memory_mask.dtype}"
            )
        target = (x.shape[0], self.cross_attn.n_heads, x.shape[1], memory.shape[1])
        if not broadcasts_to(memory_mask.shape, target):
            raise ValueError(
                f"expected a memory_mask broadcastable to (B, H, T, T_src) = {target}, "
                f"got shape {tuple(memory_mask.shape)}"
            )

    def _self_attention_mask(self, B, T, past, mask, device):
        """(mask, is_causal) for self-attention: the causal mask, AND the caller's extra
        mask after checking it broadcasts. Without an extra mask or cached positions the
        causal mask is left to the attention (is_causal=True), which need not build it."""
        if mask is None and T == 1:
            return None, False  # one new query after the cache: it may read every key
        if mask is None and past == 0:
            return None, True
        causal = causal_mask(T, device=device, offset=past)  # (T, P + T)
        if mask is None:
            return causal, False
        if mask.dtype != torch.bool:
            raise ValueError(
                f"expected a mask of dtype torch.bool (True = may attend), got {mask.dtype}"
            )
        target = (B, self.self_attn.n_heads, T, past + T)
        if not broadcasts_to(mask.shape, target):
            raise ValueError(
                f"expected a mask broadcastable to (B, H, T_q, T_k) = {target}, "
                f"got shape {tuple(mask.shape)}"
            )
        return causal & mask, False


class DecoderLM(nn.Module):
    """A GPT-style decoder-only language model.

    ids (B, T) -> token embedding + position -> n_layers DecoderBlocks -> final LayerNorm
    (pre-LN only; post-LN blocks already end in one) -> LM head -> logits (B, T, V).

    With ``tie_weights`` the LM head shares its (V, D) matrix with the token embedding
    (Press & Wolf, 2017), so it is counted once in ``num_parameters()``.

    No padding mask is needed for right-padded batches: under the causal mask a real token
    only sees earlier (real) tokens, and ``lm_loss`` ignores the predictions at pad targets.

    Attributes: tok_emb, pos, drop, blocks, norm_f (nn.Identity under post-LN), lm_head,
    and the hyper-parameters vocab_size, d_model, n_heads, n_layers, d_ff, max_len.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 256,
        max_len: int = 32,
        dropout: float = 0.0,
        norm_first: bool = True,
        positional: str = "learned",
        tie_weights: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        self.vocab_size, self.d_model, self.n_heads = vocab_size, d_model, n_heads
        self.n_layers, self.d_ff, self.max_len = n_layers, d_ff, max_len
        self.norm_first, self.positional, self.tie_weights = norm_first, positional, tie_weights

        self.tok_emb = TokenEmbedding(vocab_size, d_model)
        self.pos = positional_module(positional, max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(d_model, n_heads, d_ff, dropout, norm_first, activation)
            for _ in range(n_layers)
        )
        # Post-LN blocks end with a LayerNorm already; only pre-LN needs a final one.
        self.norm_f = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        if tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def new_cache(self) -> list[KVCache]:
        """An empty KV cache for ``forward(..., cache=...)``: one KVCache per layer."""
        return [KVCache() for _ in self.blocks]

    def num_parameters(self) -> int:
        """Number of trainable numbers; a tied matrix counts once."""
        return sum(p.numel() for p in self.parameters())

    def forward(
        self, ids: torch.Tensor, cache: list[KVCache] | None = None, return_attention=False
    ):
        """ids (B, T) long -> logits (B, T, V) [, list of n_layers weights (B, H, T, P + T)].

        With ``cache`` (from ``new_cache()``, holding P earlier positions) ids are the T
        *new* tokens: they get positions P .. P + T - 1 and attend to the cached keys/values,
        which are extended in place. Feeding a sequence in pieces through one cache gives
        the same logits as one full forward pass.
        """
        past = self._check_input(ids, cache)
        # The T new tokens sit at absolute positions P .. P + T - 1.
        x = self.drop(self.pos(self.tok_emb(ids), offset=past))  # (B, T, D)

        attention = []
        for i, block in enumerate(self.blocks):
            layer_cache = cache[i] if cache is not None else None
            if return_attention:
                x, weights = block(x, cache=layer_cache, return_weights=True)
                attention.append(weights)
            else:
                x = block(x, cache=layer_cache)
        logits = self.lm_head(self.norm_f(x))
        return (logits, attention) if return_attention else logits

    def _check_input(self, ids, cache) -> int:
        """Validate ids and cache; return the number of cached positions P."""
        if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long:
            got = ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"expected token ids of dtype torch.long, got {got}")
        if ids.dim() != 2:
            raise ValueError(
                f"expected token ids of shape (B, T) with 2 dimensions, "
                f"got shape {tuple(ids.shape)} with {ids.dim()}"
            )
        T = ids.shape[1]
        if T == 0:
            raise ValueError("expected at least one token per sequence, got T = 0")
        past = 0
        if cache is not None:
            if len(cache) != len(self.blocks):
                raise ValueError(
                    f"expected a cache with one KVCache per layer ({len(self.blocks)}), "
                    f"got {len(cache)}; use model.new_cache()"
                )
            past = cache[0].length
        if past + T > self.max_len:
            what = f"{past} cached + {T} new positions = {past + T}" if past else f"length {T}"
            raise ValueError(
                f"sequence of {what} exceeds the model's context of {self.max_len} positions"
            )
        return past


def expected_num_parameters(
    vocab_size: int,
    d_model: int,
    n_layers: int,
    d_ff: int,
    max_len: int,
    positional: str = "learned",
    norm_first: bool = True,
    tie_weights: bool = True,
) -> int:
    """The parameter count of ``DecoderLM`` from its hyper-parameters (n_heads does not matter).

    Equals ``DecoderLM(...).num_parameters()``. Per block, with D = d_model and F = d_ff:
    attention 4 (D^2 + D) [W_Q, W_K, W_V, W_O with biases] + feed-forward 2 D F + F + D
    + two LayerNorms 4 D.
    """
    D, F, V = d_model, d_ff, vocab_size
    embeddings = V * D + (max_len * D if positional == "learned" else 0)
    attention = 4 * (D * D + D)
    feed_forward = D * F + F + F * D + D
    layer_norms = 2 * 2 * D
    per_block = attention + feed_forward + layer_norms
    final_norm = 2 * D if norm_first else 0
    head = 0 if tie_weights else V * D
    return embeddings + n_layers * per_block + final_norm + head
