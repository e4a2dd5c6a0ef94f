"""The encoder: bidirectional self-attention, masked language modelling, classification (Part II).

Shapes: B batch, T length, D d_model, H heads, V vocab, C classes.

An encoder block is the decoder block without the causal mask: every position reads every
other position, before and after it. The only positions hidden are padding: a batch of
sentences of different lengths is right-padded with ``<pad>``, and the key-padding mask
``padding_mask(ids, pad_id)`` ``(B, 1, 1, T)`` stops every query from reading a pad key, so
a real token's output does not depend on how much padding its row carries.

Pre-LN (``norm_first=True``) is the default; post-LN (``norm_first=False``) is what the
2017 paper and BERT (Devlin et al., 2019) used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinyformer.attention import MultiHeadAttention, padding_mask
from tinyformer.layers import (
    FeedForward,
    TokenEmbedding,
    positional_module,
)
from tinyformer.vocab import Vocab

__all__ = [
    "Encoder",
    "EncoderBlock",
    "MLMHead",
    "MaskedLM",
    "SequenceClassifier",
    "mask_tokens",
    "mlm_loss",
]

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: "no label here"


class EncoderBlock(nn.Module):
    """One encoder layer: (non-causal) self-attention, then a position-wise feed-forward network.

    Pre-LN (default, ``norm_first=True``):  x = x + SelfAttn(LN1(x));  x = x + FF(LN2(x))
    Post-LN (``norm_first=False``, the 2017 paper's and BERT's): x = LN1(x + SelfAttn(x));
    x = LN2(x + FF(x))

    The layout (self_attn, ff.linear1/linear2, norm1, norm2) is that of
    ``nn.TransformerEncoderLayer(batch_first=True)``, so
    ``tinyformer.compat.load_block_from_torch`` copies one into it.

    Args:
        d_model: D, the width of the residual stream.
        n_heads: H; must divide D.
        d_ff: hidden width of the feed-forward network.
        dropout: on attention weights, inside the feed-forward network and on each
            sublayer's output before the residual sum.
        norm_first: True for pre-LN, False for post-LN.
        activation: "relu" (the paper) or "gelu" (BERT).
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, bias=True, dropout=dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, return_weights: bool = False
    ):
        """x (B, T, D) -> (B, T, D), or (out, self-attention weights (B, H, T, T)).

        ``mask``: bool, broadcastable to (B, H, T, T), True = may attend; typically
        ``padding_mask(ids, pad_id)`` of shape (B, 1, 1, T). No causal mask is applied.
        (A 2-D mask is read as (T_q, T_k), not as PyTorch's (B, T) key_padding_mask.)
        """
        if x.dim() != 3:
            raise ValueError(f"expected x of shape (B, T, D), got shape {tuple(x.shape)}")
        if self.norm_first:
            a, weights = self._self_attention(self.norm1(x), mask, return_weights)
            x = x + self.dropout1(a)
            x = x + self.dropout2(self.ff(self.norm2(x)))
        else:
            a, weights = self._self_attention(x, mask, return_weights)
            x = self.norm1(x + self.dropout1(a))
            x = self.norm2(x + self.dropout2(self.ff(x)))
        return (x, weights) if return_weights else x

    def _self_attention(self, x, mask, return_weights):
        """(attention output, weights or None): weights only when asked for, since computing
        them rules out PyTorch's fused attention kernel."""
        out = self.self_attn(x, mask=mask, return_weights=return_weights)
        return out if return_weights else (out, None)


def _check_ids(ids, max_len: int) -> None:
    """Token ids must be a (B, T) long tensor with 1 <= T <= max_len."""
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
    if T > max_len:
        raise ValueError(
            f"sequence of length {T} exceeds the model's context of {max_len} positions"
        )


class Encoder(nn.Module):
    """A BERT-style encoder: ids (B, T) -> contextual vectors h (B, T, D).

    ids -> token embedding + position -> n_layers EncoderBlocks -> final LayerNorm (pre-LN
    only; post-LN blocks already end in one). Every block gets the key-padding mask built
    from ``ids != pad_id``, so pads are never read; their own output rows are computed but
    meaningless (heads and losses must ignore them). ``pad_id=None`` builds no mask: every
    position is treated as real (useful to show what padding does without the mask).

    Attributes: tok_emb, pos, drop, blocks, norm_f (nn.Identity under post-LN), and the
    hyper-parameters vocab_size, d_model, n_heads, n_layers, d_ff, max_len, pad_id.
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
        pad_id: int | None = 0,
        activation: str = "relu",
    ):
        super().__init__()
        self.vocab_size, self.d_model, self.n_heads = vocab_size, d_model, n_heads
        self.n_layers, self.d_ff, self.max_len = n_layers, d_ff, max_len
        self.norm_first, self.positional, self.pad_id = norm_first, positional, pad_id

        self.tok_emb = TokenEmbedding(vocab_size, d_model)
        self.pos = positional_module(positional, max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            EncoderBlock(d_model, n_heads, d_ff, dropout, norm_first, activation)
            for _ in range(n_layers)
        )
        self.norm_f = nn.LayerNorm(d_model) if norm_first else nn.Identity()

    def num_parameters(self) -> int:
        """Number of trainable numbers."""
        return sum(p.numel() for p in self.parameters())

    def mask(self, ids: torch.Tensor) -> torch.Tensor | None:
        """The key-padding mask (B, 1, 1, T), True at real tokens; None when pad_id is None."""
        return None if self.pad_id is None else padding_mask(ids, self.pad_id)

    def forward(self, ids: torch.Tensor, return_attention: bool = False):
        """ids (B, T) long -> h (B, T, D) [, list of n_layers weights (B, H, T, T)]."""
        _check_ids(ids, self.max_len)
        mask = self.mask(ids)
        x = self.drop(self.pos(self.tok_emb(ids)))  # (B, T, D)
        attention = []
        for block in self.blocks:
            if return_attention:
                x, weights = block(x, mask=mask, return_weights=True)
                attention.append(weights)
            else:
                x = block(x, mask=mask)
        h = self.norm_f(x)
        return (h, attention) if return_attention else h


class MLMHead(nn.Module):
    """BERT's masked-LM head: h (B, T, D) -> logits (B, T, V).

    logits = LN(GELU(dense(h))) @ E^T + b: a small transform, then the output layer. Pass
    ``embedding_weight`` (the encoder's ``tok_emb.weight``, (V, D)) to tie the output
    matrix to the input embedding, as BERT does; the bias b stays its own.
    """

    def __init__(self, d_model: int, vocab_size: int, embedding_weight: nn.Parameter | None = None):
        super().__init__()
        self.dense = nn.Linear(d_model, d_model)
        self.activation = nn.GELU()
        self.norm = nn.LayerNorm(d_model)
        self.output = nn.Linear(d_model, vocab_size)
        if embedding_weight is not None:
            if tuple(embedding_weight.shape) != (vocab_size, d_model):
                raise ValueError(
                    f"expected a tied embedding weight of shape (V, D) = {(vocab_size, d_model)}, "
                    f"got {tuple(embedding_weight.shape)}"
                )
            self.output.weight = embedding_weight

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.output(self.norm(self.activation(self.dense(h))))


class MaskedLM(nn.Module):
    """An encoder with an MLM head: ids (B, T) -> logits (B, T, V) at every position.

    Train it on ``mask_tokens`` output with ``mlm_loss``: only the chosen positions carry
    labels. Submodules: encoder, head (MLMHead, tied to ``encoder.tok_emb`` by default).
    """

    def __init__(self, encoder: Encoder, tie_weights: bool = True):
        super().__init__()
        self.encoder = encoder
        tied = encoder.tok_emb.weight if tie_weights else None
        self.head = MLMHead(encoder.d_model, encoder.vocab_size, tied)

    def num_parameters(self) -> int:
        """Number of trainable numbers; a tied matrix counts once."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, ids: torch.Tensor, return_attention: bool = False):
        """ids (B, T) long -> logits (B, T, V) [, the encoder's attention weights]."""
        if not return_attention:
            return self.head(self.encoder(ids))
        h, attention = self.encoder(ids, return_attention=True)
        return self.head(h), attention


def mask_tokens(
    ids: torch.Tensor,
    vocab: Vocab,
    p: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt ids for masked language modelling, the recipe of BERT (Devlin et al., 2019).

    Each maskable position (an ordinary word: never ``<pad>``, ``<bos>``, ``<eos>``,
    ``<unk>`` or ``<mask>``) is chosen independently with probability ``p``. A chosen token
    is replaced by ``<mask>`` 80% of the time, by a uniformly random word (never a special
    token; it may happen to be the original word, as in BERT) 10% of the time, and left
    unchanged 10% of the time. The model must predict the original at every chosen
    position; as it cannot tell the unchanged ones apart, it has to represent every input
    word well, not only ``<mask>`` (which never appears at fine-tuning time).

    Args:
        ids: (B, T) long token ids (any shape works).
        vocab: the Vocab that made them (for the special and word ids).
        p: the probability of choosing a maskable position.
        generator: a torch.Generator for reproducible masks (on ids' device, or on the CPU).

    Returns:
        ``(inputs, labels)``, both shaped like ids: the corrupted ids, and the original id
        at chosen positions, -100 (``F.cross_entropy``'s ignore_index) elsewhere.
    """
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.long:
        got = ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"expected token ids of dtype torch.long, got {got}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"expected a masking probability p in [0, 1], got {p}")
    if ids.numel() > 0 and (int(ids.min()) < 0 or int(ids.max()) >= len(vocab)):
        raise ValueError(
            f"expected ids in [0, {len(vocab)}) for this vocabulary, "
            f"got ids from {int(ids.min())} to {int(ids.max())}"
        )
    special = torch.tensor(sorted(vocab.special_ids), device=ids.device)
    words = torch.tensor(
        [i for i in range(len(vocab)) if i not in vocab.special_ids], device=ids.device
    )
    maskable = ~torch.isin(ids, special)

    # Draw on the generator's device (CPU generators work for any ids), then move.
    rng_device = generator.device if generator is not None else ids.device

    def uniform():
        return torch.rand(ids.shape, generator=generator, device=rng_device).to(ids.device)

    chosen = maskable & (uniform() < p)
    action = uniform()  # one draw decides: < 0.8 mask, < 0.9 random word, else keep
    random_word = words[
        torch.randint(len(words), ids.shape, generator=generator, device=rng_device).to(ids.device)
    ]

    inputs = ids.masked_fill(chosen & (action < 0.8), vocab.mask_id)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_word, inputs)
    labels = ids.masked_fill(~chosen, IGNORE_INDEX)
    return inputs, labels


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per token) over the chosen positions (labels != -100).

    logits (B, T, V), labels (B, T) long from ``mask_tokens`` -> a scalar.
    """
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, T, V) and labels (B, T), got logits {tuple(logits.shape)} "
            f"and labels {tuple(labels.shape)}"
        )
    if not bool((labels != IGNORE_INDEX).any()):
        raise ValueError("expected at least one masked position (label != -100), got none")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


class SequenceClassifier(nn.Module):
    """An encoder with a linear classifier on one pooled vector: ids (B, T) -> logits (B, C).

    ``pooling="cls"`` reads position 0: the sentence's ``<bos>`` token plays BERT's [CLS],
    so batches must start with <bos> (``vocab.batch(..., bos=True)``). ``pooling="mean"``
    averages h over the real (non-pad) positions of each sentence.
    Submodules: encoder, classifier (nn.Linear(D, C)).
    """

    def __init__(self, encoder: Encoder, n_classes: int, pooling: str = "cls"):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"expected pooling 'cls' or 'mean', got {pooling!r}")
        self.encoder = encoder
        self.pooling = pooling
        self.classifier = nn.Linear(encoder.d_model, n_classes)

    def pool(self, h: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """h (B, T, D) -> one vector per sentence (B, D)."""
        if self.pooling == "cls":
            return h[:, 0]
        if self.encoder.pad_id is None:
            return h.mean(dim=1)
        real = (ids != self.encoder.pad_id).unsqueeze(-1)  # (B, T, 1)
        # masked_fill, not a product: a pad row contributes an exact zero whatever it holds.
        total = h.masked_fill(~real, 0.0).sum(dim=1)  # (B, D)
        count = real.sum(dim=1).clamp(min=1)  # (B, 1); an all-pad row pools to zero
        return total / count

    def forward(self, ids: torch.Tensor, return_attention: bool = False):
        """ids (B, T) long -> logits (B, C) [, the encoder's attention weights]."""
        if not return_attention:
            return self.classifier(self.pool(self.encoder(ids), ids))
        h, attention = self.encoder(ids, return_attention=True)
        return self.classifier(self.pool(h, ids)), attention
