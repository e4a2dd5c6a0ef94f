"""The encoder-decoder transformer of "Attention Is All You Need" (Part III).

Shapes: B batch, S source length, T target length, P cached target positions, D d_model,
H heads, V_src / V_tgt the two vocabularies.

    src (B, S) --encoder stack--> memory (B, S, D) --------------------.
                                                                      | cross attention
    tgt_in (B, T) --decoder stack (self-attn -> cross-attn -> FFN)----'--> logits (B, T, V_tgt)

The encoder reads the whole source at once (no causal mask, pads hidden). The decoder is a
causal language model over the target that, in every block, also reads the memory through
cross attention; its only mask there is the source's key-padding mask: every target
position may read every real source position.

Training uses teacher forcing: ``tgt_in = <bos> y1 .. yn`` predicts ``y1 .. yn <eos>``.
At test time the target is produced one token at a time (``tinyformer.decode``).
"""

from __future__ import annotations

import torch
from torch import nn

from tinyformer.attention import KVCache
from tinyformer.config import TransformerConfig
from tinyformer.stack import Model, TransformerStack

__all__ = ["EncoderDecoder"]


class EncoderDecoder(Model):
    """The 2017 transformer: an encoder stack, a decoder stack with cross attention, a head.

    ``config.vocab_size`` is the target vocabulary, ``config.src_vocab_size`` the source's;
    ``config.n_layers`` decoder blocks and ``config.n_encoder_layers`` encoder blocks.
    Submodules: ``encoder`` (causal=False), ``decoder`` (causal, cross_attention=True),
    ``lm_head`` (tied to the target embedding with ``tie_weights``; with
    ``share_embeddings`` one matrix serves source, target and head, as in Marian).

    Target sequences need no padding mask of their own: right-padded targets only sit after
    the real tokens, which the causal mask already hides them from, and the loss ignores the
    predictions at pad targets (``tinyformer.objectives.lm_loss``).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.encoder = TransformerStack(config.encoder_config(), causal=False)
        self.decoder = TransformerStack(config, causal=True, cross_attention=True)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=config.head_bias)
        if config.share_embeddings:
            self.decoder.tok_emb.weight = self.encoder.tok_emb.weight
        if config.tie_weights or config.share_embeddings:
            self.lm_head.weight = self.decoder.tok_emb.weight

    def new_cache(self) -> list[KVCache]:
        """An empty KV cache for the decoder's self-attention: one KVCache per decoder layer."""
        return self.decoder.new_cache()

    def encode(self, src: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """src (B, S) long -> ``(memory (B, S, D), src_mask (B, 1, 1, S) bool)``.

        ``src_mask`` is True at real source tokens (None without a pad_id); pass it on to
        :meth:`decode`.
        """
        return self.encoder(src), self.encoder.padding_mask(src)

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None,
        cache: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """tgt_in (B, T) long, memory (B, S, D) -> logits (B, T, V_tgt).

        ``src_mask`` (bool, True = real source token, broadcastable to (B, H, T, S); usually
        the (B, 1, 1, S) from :meth:`encode`) hides source padding from cross attention.
        With ``cache`` (from :meth:`new_cache`, holding P earlier target positions) tgt_in
        holds the T *new* tokens, at positions P .. P + T - 1; the cache grows in place.
        """
        h = self.decoder(tgt_in, cache=cache, memory=memory, memory_mask=src_mask)
        return self.lm_head(h)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """src (B, S) long, tgt_in (B, T) long -> logits (B, T, V_tgt) (teacher forcing)."""
        if (
            isinstance(src, torch.Tensor)
            and isinstance(tgt_in, torch.Tensor)
            and src.dim() == tgt_in.dim() == 2
            and src.shape[0] != tgt_in.shape[0]
        ):
            raise ValueError(
                f"expected source and target batches of the same size B, got src of shape "
                f"{tuple(src.shape)} and tgt_in of shape {tuple(tgt_in.shape)}"
            )
        memory, src_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_mask)
