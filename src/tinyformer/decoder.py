"""The decoder-only language model of Part I (GPT-style): a causal stack and an LM head.

Shapes: B batch, T length (new tokens), P cached positions, D d_model, V vocab.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyformer.attention import KVCache
from tinyformer.config import TransformerConfig
from tinyformer.stack import Model, TransformerStack

__all__ = ["DecoderLM", "expected_num_parameters"]


class DecoderLM(Model):
    """A GPT-style language model: ids (B, T) -> logits (B, T, V) for the next token.

    ``decoder`` is a causal :class:`~tinyformer.stack.TransformerStack` (embeddings ->
    blocks -> final norm); ``lm_head`` maps each position's vector to V logits. With
    ``config.tie_weights`` the head shares its (V, D) matrix with the token embedding
    (Press & Wolf, 2017), counted once in ``num_parameters()``.

    No padding mask is needed for right-padded batches: under the causal mask a real token
    only sees earlier (real) tokens, and ``lm_loss`` ignores the predictions at pad targets.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.decoder = TransformerStack(config, causal=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=config.head_bias)
        if config.tie_weights:
            self.lm_head.weight = self.decoder.tok_emb.weight

    def forward(self, ids: torch.Tensor, cache: list[KVCache] | None = None) -> torch.Tensor:
        """ids (B, T) long -> logits (B, T, V).

        With ``cache`` (from ``new_cache()``, holding P earlier positions) ids are the T
        *new* tokens: they get positions P .. P + T - 1 and attend to the cached keys/values,
        which are extended in place. Feeding a sequence in pieces through one cache gives
        the same logits as one full forward pass.
        """
        return self.lm_head(self.decoder(ids, cache=cache))

    def new_cache(self) -> list[KVCache]:
        """An empty KV cache for ``forward(..., cache=...)``: one KVCache per layer."""
        return self.decoder.new_cache()


def expected_num_parameters(config: TransformerConfig) -> int:
    """The parameter count of ``DecoderLM(config)``, from the formula (n_heads does not matter).

    Per block, with D = d_model and F = d_ff: attention 4 (D^2 + D) [W_Q, W_K, W_V, W_O
    with biases] + feed-forward 2 D F + F + D + two LayerNorms 4 D. (Options for real
    checkpoints, such as token types, are not counted.)
    """
    D, F, V = config.d_model, config.d_ff, config.vocab_size
    embeddings = V * D + (config.max_len * D if config.positional == "learned" else 0)
    attention = 4 * (D * D + D)
    feed_forward = D * F + F + F * D + D
    layer_norms = 2 * 2 * D
    per_block = attention + feed_forward + layer_norms
    final_norm = 2 * D if config.has_final_norm else 0
    head = (0 if config.tie_weights else V * D) + (V if config.head_bias else 0)
    return embeddings + config.n_layers * per_block + final_norm + head
