"""The encoder models of Part II (BERT-style): masked language modelling and classification.

Shapes: B batch, T length, D d_model, V vocab, C classes.

An encoder is a :class:`~tinyformer.stack.TransformerStack` built with ``causal=False``:
the same blocks as Part I's decoder, without the causal mask, so every position reads every
other, before and after it. The only positions hidden are padding: a batch of sentences of
different lengths is right-padded with ``<pad>``, and the stack's key-padding mask stops
every query from reading a pad key, so a real token's output does not depend on how much
padding its row carries.

Pre-LN (``norm_first=True``) is the course's default; post-LN (``norm_first=False``) is
what the 2017 paper and BERT (Devlin et al., 2019) used.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyformer.config import TransformerConfig
from tinyformer.layers import ACTIVATIONS
from tinyformer.stack import Model, TransformerStack

__all__ = ["MLMHead", "MaskedLM", "SequenceClassifier"]


class MLMHead(nn.Module):
    """BERT's masked-LM head: h (B, T, D) -> logits (B, T, V).

    logits = LN(act(dense(h))) @ E^T + b: a small transform, then the output layer, whose
    (V, D) matrix E is tied to the input embedding when ``config.tie_weights`` (as in BERT);
    the bias b is always its own. The activation is ``config.activation`` (BERT: GELU).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        D = config.d_model
        self.dense = nn.Linear(D, D)
        self.activation = ACTIVATIONS[config.activation]()
        self.norm = nn.LayerNorm(D, eps=config.layer_norm_eps)
        self.output = nn.Linear(D, config.vocab_size)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.output(self.norm(self.activation(self.dense(h))))


class MaskedLM(Model):
    """An encoder stack with an MLM head: ids (B, T) -> logits (B, T, V) at every position.

    Train it on :func:`~tinyformer.objectives.mask_tokens` output with
    :func:`~tinyformer.objectives.mlm_loss`: only the chosen positions carry labels.
    Submodules: ``encoder`` (TransformerStack, causal=False), ``head`` (MLMHead).
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.encoder = TransformerStack(config, causal=False)
        self.head = MLMHead(config)
        if config.tie_weights:
            self.head.output.weight = self.encoder.tok_emb.weight

    def forward(
        self, ids: torch.Tensor, token_type_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """ids (B, T) long -> logits (B, T, V)."""
        return self.head(self.encoder(ids, token_type_ids=token_type_ids))


class SequenceClassifier(Model):
    """An encoder stack with a linear classifier on one pooled vector: ids (B, T) -> (B, C).

    ``pooling="cls"`` reads position 0: the sentence's ``<bos>`` token plays BERT's [CLS],
    so batches must start with <bos> (``vocab.batch(..., bos=True)``). ``pooling="mean"``
    averages h over the real (non-pad) positions of each sentence.
    Submodules: ``encoder`` (shared with a pre-trained MaskedLM, or new), ``classifier``
    (nn.Linear(D, C)).
    """

    def __init__(self, encoder: TransformerStack, n_classes: int, pooling: str = "cls"):
        super().__init__()
        if not isinstance(encoder, TransformerStack) or encoder.causal:
            raise TypeError(
                f"expected an encoder: a TransformerStack with causal=False, got {encoder!r}"
            )
        if pooling not in ("cls", "mean"):
            raise ValueError(f"expected pooling 'cls' or 'mean', got {pooling!r}")
        self.config = encoder.config
        self.encoder = encoder
        self.pooling = pooling
        self.classifier = nn.Linear(encoder.config.d_model, n_classes)

    def pool(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """h (B, T, D) -> one vector per sentence (B, D)."""
        if self.pooling == "cls":
            return h[:, 0]
        if self.config.pad_id is None:
            return h.mean(dim=1)
        real = (ids != self.config.pad_id).unsqueeze(-1)  # (B, T, 1)
        # masked_fill, not a product: a pad row contributes an exact zero whatever it holds.
        total = h.masked_fill(~real, 0.0).sum(dim=1)  # (B, D)
        count = real.sum(dim=1).clamp(min=1)  # (B, 1); an all-pad row pools to zero
        return total / count

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) long -> logits (B, C)."""
        return self.classifier(self.pool(self.encoder(ids), ids))

    def extra_repr(self) -> str:
        return f"n_classes={self.classifier.out_features}, pooling={self.pooling!r}"
