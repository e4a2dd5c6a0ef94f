"""One place for a model's hyper-parameters: :class:`TransformerConfig`.

Every model of the course is built from one config: ``DecoderLM(config)`` (Part I),
``MaskedLM(config)`` (Part II), ``EncoderDecoder(config)`` (Part III). The defaults are
the course's choices; the options after ``pad_id`` exist so that the real checkpoints of
the appendix *The real ones* (GPT-2, BERT, Marian) load exactly, and each says which family
needs it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from tinyformer.layers import ACTIVATIONS

__all__ = ["TransformerConfig"]

POSITIONALS = ("learned", "sinusoidal", "sinusoidal_halves")


@dataclass(frozen=True)
class TransformerConfig:
    """The hyper-parameters of one transformer (for an encoder-decoder: of both stacks).

    Args:
        vocab_size: V, the (target) vocabulary size.
        d_model: D, the width of the residual stream.
        n_heads: H, attention heads per layer; must divide D.
        n_layers: blocks in the stack (the decoder's, for an encoder-decoder).
        d_ff: hidden width of the feed-forward network (4 D in the 2017 paper).
        max_len: the context: the most positions the model reads.
        dropout: on attention weights, inside the feed-forward network, on each sublayer's
            output and on the embeddings.
        norm_first: pre-LN (True, GPT-2 and most modern models) or post-LN (False: the
            2017 paper, BERT, Marian).
        positional: ``"learned"`` (a table, GPT-2 and BERT), ``"sinusoidal"`` (the 2017
            formula, sines and cosines interleaved) or ``"sinusoidal_halves"`` (the same
            numbers with all sines first, then all cosines: Marian's layout).
        activation: of the feed-forward network: ``"relu"`` (2017), ``"gelu"`` (BERT, exact
            erf form), ``"gelu_tanh"`` (GPT-2's tanh approximation), ``"silu"`` (Marian).
        tie_weights: the output layer shares the token-embedding matrix.
        pad_id: the padding id; encoders hide keys where ``ids == pad_id``. None: no mask.
        scale_embedding: multiply token vectors by sqrt(D) (the 2017 paper, Marian; the
            course's default). GPT-2 and BERT do not.
        layer_norm_eps: the LayerNorms' epsilon (BERT: 1e-12).
        embedding_norm: a LayerNorm right after the embeddings (BERT).
        n_token_types: segment ("token type") embeddings added to the input (BERT: 2).
        final_norm: a LayerNorm at the end of the stack. None (default): exactly when
            pre-LN, whose residual stream is never normalised otherwise.
        head_bias: a bias on the output layer (Marian's ``final_logits_bias``; BERT's
            MLM output bias is always there).
        src_vocab_size: encoder-decoder only: the source vocabulary size.
        n_encoder_layers: encoder-decoder only: encoder blocks (None: ``n_layers``).
        share_embeddings: encoder-decoder only: one matrix for the source embedding, the
            target embedding and the output layer (Marian); needs equal vocabularies.
    """

    vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 256
    max_len: int = 32
    dropout: float = 0.0
    norm_first: bool = True
    positional: str = "learned"
    activation: str = "relu"
    tie_weights: bool = True
    pad_id: int | None = 0
    # Options that real checkpoints need (appendix "The real ones").
    scale_embedding: bool = True
    layer_norm_eps: float = 1e-5
    embedding_norm: bool = False
    n_token_types: int = 0
    final_norm: bool | None = None
    head_bias: bool = False
    # Encoder-decoder only (Part III).
    src_vocab_size: int | None = None
    n_encoder_layers: int | None = None
    share_embeddings: bool = False

    def __post_init__(self) -> None:
        positive = ("vocab_size", "d_model", "n_heads", "n_layers", "d_ff", "max_len")
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"expected {name} to be a positive int, got {value!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(
                f"expected n_heads to divide d_model, got d_model={self.d_model} and "
                f"n_heads={self.n_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"expected dropout in [0, 1), got {self.dropout!r}")
        if self.positional not in POSITIONALS:
            raise ValueError(f"expected positional in {POSITIONALS}, got {self.positional!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"expected activation in {tuple(ACTIVATIONS)}, got {self.activation!r}"
            )
        if self.pad_id is not None and not 0 <= self.pad_id < self.vocab_size:
            raise ValueError(
                f"expected pad_id in [0, {self.vocab_size}) or None, got {self.pad_id!r}"
            )
        if self.n_token_types < 0:
            raise ValueError(f"expected n_token_types >= 0, got {self.n_token_types!r}")
        for name in ("src_vocab_size", "n_encoder_layers"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"expected {name} to be a positive int or None, got {value!r}")
        if self.share_embeddings and self.src_vocab_size != self.vocab_size:
            raise ValueError(
                f"share_embeddings needs src_vocab_size == vocab_size, got "
                f"{self.src_vocab_size} and {self.vocab_size}"
            )

    @property
    def has_final_norm(self) -> bool:
        """Whether the stack ends in a LayerNorm (``final_norm``, or pre-LN when None)."""
        return self.norm_first if self.final_norm is None else self.final_norm

    def encoder_config(self) -> TransformerConfig:
        """The config of an encoder-decoder's encoder stack: the source vocabulary and
        ``n_encoder_layers`` blocks, everything else shared."""
        if self.src_vocab_size is None:
            raise ValueError("expected src_vocab_size for an encoder-decoder, got None")
        return dataclasses.replace(
            self,
            vocab_size=self.src_vocab_size,
            n_layers=self.n_encoder_layers or self.n_layers,
            src_vocab_size=None,
            n_encoder_layers=None,
            share_embeddings=False,
        )

    def __repr__(self) -> str:
        """Only the fields that differ from the defaults: one short line."""
        changed = [
            f"{f.name}={getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
            if f.name == "vocab_size" or getattr(self, f.name) != f.default
        ]
        return f"TransformerConfig({', '.join(changed)})"
