"""The stack: embeddings -> blocks -> final norm, written once for every model.

Shapes: B batch, T length (new positions), P cached positions, S source length,
D d_model, H heads, V vocab.

    ids (B, T) -> token embedding (+ token types) + positions -> dropout
               -> n_layers TransformerBlocks -> final LayerNorm -> h (B, T, D)

A decoder stack is causal; an encoder stack is not, and hides padding keys (``ids ==
pad_id``) from every query. A decoder stack with ``cross_attention`` also reads an encoder's
output in every block. The models of the course are this stack plus a head:
``DecoderLM`` (Part I), ``MaskedLM`` and ``SequenceClassifier`` (Part II),
``EncoderDecoder`` (two stacks, Part III).
"""

from __future__ import annotations

import torch
from torch import nn

from tinyformer.attention import KVCache, padding_mask
from tinyformer.blocks import TransformerBlock
from tinyformer.checks import check_token_ids
from tinyformer.config import TransformerConfig
from tinyformer.layers import TokenEmbedding, positional_module

__all__ = ["Model", "TransformerStack"]


class Model(nn.Module):
    """What every model of the course shares: a ``config``, a parameter count, a short repr.

    ``print(model)`` shows one line (the config's non-default fields and the parameter
    count) instead of PyTorch's tree of every submodule; ``print(model.modules_tree())``
    shows the tree.
    """

    config: TransformerConfig

    def num_parameters(self) -> int:
        """Number of trainable numbers; a tied matrix counts once."""
        return sum(p.numel() for p in self.parameters())

    def modules_tree(self) -> str:
        """PyTorch's full, indented listing of the submodules (nested models in full too)."""
        Model._full_repr = True
        try:
            return nn.Module.__repr__(self)
        finally:
            Model._full_repr = False

    _full_repr = False  # set while modules_tree() runs

    def __repr__(self) -> str:
        if Model._full_repr:
            return nn.Module.__repr__(self)
        extra = self.extra_repr()
        extra = f", {extra}" if extra else ""
        return (
            f"{type(self).__name__}({self.config!r}{extra}, {self.num_parameters():,} parameters)"
        )


class TransformerStack(Model):
    """Embeddings, ``config.n_layers`` TransformerBlocks and a final norm: ids -> h.

    Args:
        config: the hyper-parameters (:class:`~tinyformer.config.TransformerConfig`).
        causal: a decoder stack (True) or an encoder stack (False).
        cross_attention: every block reads an encoder's output (Part III's decoder).

    Submodules: ``tok_emb`` (``.weight`` (V, D)), ``type_emb`` (only with token types),
    ``pos``, ``emb_norm`` (only with ``embedding_norm``), ``drop``, ``blocks``, ``norm_f``
    (a LayerNorm, or nn.Identity when the stack has no final norm: post-LN blocks already
    end in one).
    """

    def __init__(self, config: TransformerConfig, causal: bool, cross_attention: bool = False):
        super().__init__()
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"expected a TransformerConfig, got {type(config).__name__}")
        self.config, self.causal = config, causal
        D = config.d_model
        self.tok_emb = TokenEmbedding(config.vocab_size, D, scale=config.scale_embedding)
        self.pos = positional_module(config.positional, config.max_len, D)
        if config.n_token_types:
            self.type_emb = nn.Embedding(config.n_token_types, D)
        if config.embedding_norm:
            self.emb_norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                D,
                config.n_heads,
                config.d_ff,
                dropout=config.dropout,
                norm_first=config.norm_first,
                activation=config.activation,
                causal=causal,
                cross_attention=cross_attention,
                layer_norm_eps=config.layer_norm_eps,
            )
            for _ in range(config.n_layers)
        )
        self.norm_f = (
            nn.LayerNorm(D, eps=config.layer_norm_eps) if config.has_final_norm else nn.Identity()
        )

    def padding_mask(self, ids: torch.Tensor) -> torch.Tensor | None:
        """An encoder's key-padding mask (B, 1, 1, T), True at real tokens; None for a
        decoder stack or without a pad_id (a decoder needs none: see ``DecoderLM``)."""
        if self.causal or self.config.pad_id is None:
            return None
        return padding_mask(ids, self.config.pad_id)

    def forward(
        self,
        ids: torch.Tensor,
        cache: list[KVCache] | None = None,
        memory: torch.Tensor | None = None,
        memory_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """ids (B, T) long -> h (B, T, D).

        ``cache``: a list of one KVCache per block (decoder stacks), holding P earlier
        positions; ids are then the T new tokens, at positions P .. P + T - 1, and the
        cache grows in place. ``memory`` (B, S, D) and ``memory_mask`` (bool, True = may
        attend, e.g. (B, 1, 1, S)): what the cross-attention blocks read.
        ``token_type_ids`` (B, T): segment ids, with ``n_token_types`` (default: all 0).
        """
        check_token_ids(ids, self.config.vocab_size)
        past = self._check_cache(cache)
        x = self.tok_emb(ids)  # (B, T, D)
        if self.config.n_token_types:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(ids)
            check_token_ids(token_type_ids, self.config.n_token_types, "token_type_ids")
            x = x + self.type_emb(token_type_ids)
        elif token_type_ids is not None:
            raise ValueError("expected no token_type_ids: this model has n_token_types = 0")
        x = self.pos(x, offset=past)  # the T new tokens sit at positions P .. P + T - 1
        if self.config.embedding_norm:
            x = self.emb_norm(x)
        x = self.drop(x)
        mask = self.padding_mask(ids)
        for i, block in enumerate(self.blocks):
            layer_cache = cache[i] if cache is not None else None
            x = block(x, mask=mask, cache=layer_cache, memory=memory, memory_mask=memory_mask)
        return self.norm_f(x)

    def new_cache(self) -> list[KVCache]:
        """An empty KV cache: one KVCache per block."""
        return [KVCache() for _ in self.blocks]

    def _check_cache(self, cache) -> int:
        """The number of cached positions P (0 without a cache)."""
        if cache is None:
            return 0
        if not self.causal:
            raise ValueError("a KV cache is for a causal stack, got one for an encoder stack")
        if not isinstance(cache, list) or len(cache) != len(self.blocks):
            raise ValueError(
                f"expected a cache with one KVCache per layer ({len(self.blocks)}), "
                f"got {cache!r}; use model.new_cache()"
            )
        return cache[0].length

    def extra_repr(self) -> str:
        return f"causal={self.causal}"
