"""Load weights from PyTorch's built-in transformer modules into ours, to check we compute the same.

    !!! MASK CONVENTIONS ARE OPPOSITE !!!
    tinyformer (and F.scaled_dot_product_attention): True = MAY attend.
    nn.MultiheadAttention / nn.Transformer* ``attn_mask`` and ``key_padding_mask``:
    True = NOT allowed to attend. Convert with :func:`to_torch_mask`.

Weight layouts:

* ``nn.MultiheadAttention`` keeps the three input projections in one ``in_proj_weight`` of
  shape ``(3D, D)``: the rows are ``[W_q; W_k; W_v]`` stacked (likewise ``in_proj_bias``).
  Ours are three separate ``nn.Linear(D, D)``: ``q_proj``, ``k_proj``, ``v_proj``.
* ``nn.TransformerEncoderLayer`` = ``self_attn`` + ``linear1``/``linear2`` + ``norm1``/``norm2``;
  our ``TransformerBlock`` = ``self_attn`` + ``ff.linear1``/``ff.linear2`` + ``attn_norm``/
  ``ff_norm``. Under a causal mask the encoder layer computes exactly what a causal block
  without cross attention computes (the "decoder" of GPT is an encoder layer with a causal
  mask).
* ``nn.TransformerDecoderLayer`` = ``self_attn``, ``multihead_attn`` (cross attention),
  ``linear1``/``linear2`` and ``norm1``/``norm2``/``norm3``, which belong to self-attention,
  cross attention and the feed-forward network in that order. Ours are named by role:
  ``attn_norm``, ``cross_norm``, ``ff_norm``.
* ``nn.Transformer`` = ``encoder`` (``layers`` + a final ``norm``) and ``decoder`` (``layers``
  + a final ``norm``), no embeddings and no output layer. It ALWAYS ends each stack with a
  LayerNorm, post-LN too; see :func:`load_transformer_from_torch` for what that means.
"""

from __future__ import annotations

import torch
from torch import nn

from tinyformer.attention import MultiHeadAttention

__all__ = [
    "load_block_from_torch",
    "load_decoder_layer_from_torch",
    "load_mha_from_torch",
    "load_transformer_from_torch",
    "to_torch_mask",
]


def to_torch_mask(mask: torch.Tensor) -> torch.Tensor:
    """Invert a tinyformer mask (True = may attend) into PyTorch's (True = blocked).

    The result is for ``nn.MultiheadAttention``'s ``attn_mask`` / ``key_padding_mask`` and
    the ``nn.Transformer*`` masks. Shapes are unchanged; PyTorch wants ``attn_mask`` as
    ``(T_q, T_k)`` or ``(B*H, T_q, T_k)`` and ``key_padding_mask`` as ``(B, T_k)``, so a
    ``padding_mask`` of shape ``(B, 1, 1, T_k)`` becomes ``to_torch_mask(m)[:, 0, 0, :]``.
    (``F.scaled_dot_product_attention`` uses OUR convention: do not invert for it.)
    """
    if mask.dtype != torch.bool:
        raise ValueError(f"expected a mask of dtype torch.bool, got {mask.dtype}")
    return ~mask


@torch.no_grad()
def load_mha_from_torch(ours: MultiHeadAttention, theirs: nn.MultiheadAttention) -> None:
    """Copy the weights of ``theirs`` into ``ours`` (in place), so both compute the same."""
    if theirs.embed_dim != ours.d_model or theirs.num_heads != ours.n_heads:
        raise ValueError(
            f"shapes differ: ours has d_model={ours.d_model}, n_heads={ours.n_heads}; "
            f"theirs has embed_dim={theirs.embed_dim}, num_heads={theirs.num_heads}"
        )
    if theirs.in_proj_weight is None:
        raise ValueError(
            "expected nn.MultiheadAttention with a packed in_proj_weight (kdim = vdim = "
            f"embed_dim), got kdim={theirs.kdim}, vdim={theirs.vdim}"
        )
    if theirs.bias_k is not None or theirs.add_zero_attn:
        raise ValueError("add_bias_kv / add_zero_attn have no counterpart in tinyformer")
    their_bias = theirs.in_proj_bias is not None
    our_bias = ours.q_proj.bias is not None
    if their_bias != our_bias:
        raise ValueError(f"bias differs: ours has bias={our_bias}, theirs has bias={their_bias}")

    # in_proj_weight (3D, D) = [W_q; W_k; W_v]: the first D rows make the queries, and so on.
    w_q, w_k, w_v = theirs.in_proj_weight.chunk(3, dim=0)
    ours.q_proj.weight.copy_(w_q)
    ours.k_proj.weight.copy_(w_k)
    ours.v_proj.weight.copy_(w_v)
    ours.out_proj.weight.copy_(theirs.out_proj.weight)
    if our_bias:
        b_q, b_k, b_v = theirs.in_proj_bias.chunk(3, dim=0)
        ours.q_proj.bias.copy_(b_q)
        ours.k_proj.bias.copy_(b_k)
        ours.v_proj.bias.copy_(b_v)
        ours.out_proj.bias.copy_(theirs.out_proj.bias)


def _copy_weight_and_bias(ours: nn.Module, theirs: nn.Module, name: str) -> None:
    our_bias, their_bias = ours.bias is not None, theirs.bias is not None
    if our_bias != their_bias:
        raise ValueError(f"{name}: ours has bias={our_bias}, theirs has bias={their_bias}")
    ours.weight.copy_(theirs.weight)
    if our_bias:
        ours.bias.copy_(theirs.bias)


def _copy_linear(ours: nn.Linear, theirs: nn.Linear, name: str) -> None:
    if ours.weight.shape != theirs.weight.shape:
        raise ValueError(
            f"{name}: expected weight of shape {tuple(ours.weight.shape)}, "
            f"got {tuple(theirs.weight.shape)}"
        )
    _copy_weight_and_bias(ours, theirs, name)


def _copy_layer_norm(ours: nn.LayerNorm, theirs: nn.LayerNorm, name: str) -> None:
    if ours.normalized_shape != theirs.normalized_shape or ours.eps != theirs.eps:
        raise ValueError(
            f"{name}: ours has shape {ours.normalized_shape}, eps={ours.eps}; "
            f"theirs has shape {theirs.normalized_shape}, eps={theirs.eps}"
        )
    _copy_weight_and_bias(ours, theirs, name)


def _check_same_kind(ours: nn.Module, theirs: nn.Module) -> None:
    """Both layers must agree on pre-/post-LN and the activation, or we refuse to copy."""
    if ours.norm_first != theirs.norm_first:
        raise ValueError(
            f"norm_first differs: ours has norm_first={ours.norm_first}, "
            f"theirs has norm_first={theirs.norm_first}"
        )
    their_act = _torch_activation_name(theirs.activation)
    our_act = _torch_activation_name(ours.ff.activation)
    if their_act is None or their_act != our_act:
        raise ValueError(f"activation differs: ours is {our_act}, theirs is {their_act}")


def _torch_activation_name(activation) -> str | None:
    """'relu' / 'gelu' for the activations PyTorch's transformer layers accept, else None."""
    if activation is torch.nn.functional.relu or isinstance(activation, nn.ReLU):
        return "relu"
    if activation is torch.nn.functional.gelu:
        return "gelu"
    if isinstance(activation, nn.GELU) and activation.approximate == "none":
        return "gelu"
    return None


@torch.no_grad()
def load_block_from_torch(ours: nn.Module, theirs: nn.TransformerEncoderLayer) -> None:
    """Copy an ``nn.TransformerEncoderLayer`` into our ``TransformerBlock`` (in place).

    Causal or not, without cross attention. Both must agree on ``norm_first`` and the
    activation (relu/gelu); a mismatch raises ValueError rather than silently computing
    something different.
    """
    if ours.cross_attn is not None:
        raise ValueError("expected a TransformerBlock without cross attention, got one with it")
    _check_same_kind(ours, theirs)
    load_mha_from_torch(ours.self_attn, theirs.self_attn)
    _copy_linear(ours.ff.linear1, theirs.linear1, "linear1")
    _copy_linear(ours.ff.linear2, theirs.linear2, "linear2")
    _copy_layer_norm(ours.attn_norm, theirs.norm1, "attn_norm / norm1")
    _copy_layer_norm(ours.ff_norm, theirs.norm2, "ff_norm / norm2")


@torch.no_grad()
def load_decoder_layer_from_torch(ours: nn.Module, theirs: nn.TransformerDecoderLayer) -> None:
    """Copy an ``nn.TransformerDecoderLayer`` into our ``TransformerBlock(cross_attention=True)``.

    Self-attention, cross attention (theirs ``multihead_attn``, ours ``cross_attn``) and the
    feed-forward network are copied one to one, and the norms by role: attn_norm <- norm1,
    cross_norm <- norm2, ff_norm <- norm3. Both must agree on ``norm_first`` and the
    activation; a mismatch raises ValueError.
    """
    if ours.cross_attn is None:
        raise ValueError(
            "expected a TransformerBlock with cross attention (cross_attention=True), "
            "got one without: nn.TransformerDecoderLayer always has cross attention"
        )
    _check_same_kind(ours, theirs)
    load_mha_from_torch(ours.self_attn, theirs.self_attn)
    load_mha_from_torch(ours.cross_attn, theirs.multihead_attn)
    _copy_linear(ours.ff.linear1, theirs.linear1, "linear1")
    _copy_linear(ours.ff.linear2, theirs.linear2, "linear2")
    _copy_layer_norm(ours.attn_norm, theirs.norm1, "attn_norm / norm1")
    _copy_layer_norm(ours.cross_norm, theirs.norm2, "cross_norm / norm2")
    _copy_layer_norm(ours.ff_norm, theirs.norm3, "ff_norm / norm3")


@torch.no_grad()
def load_transformer_from_torch(ours: nn.Module, theirs: nn.Transformer) -> None:
    """Copy an ``nn.Transformer`` (batch_first=True) into our ``EncoderDecoder`` (in place).

    nn.Transformer has no embeddings and no output layer: those stay ours. What is copied:
    every encoder layer (:func:`load_block_from_torch`), every decoder layer
    (:func:`load_decoder_layer_from_torch`) and the final LayerNorms.

    Final LayerNorms. nn.Transformer always builds ``encoder.norm`` and ``decoder.norm``.
    Under pre-LN they are exactly our ``encoder.norm_f`` and ``decoder.norm_f`` (a pre-LN stack
    must normalise its output). Under post-LN every layer already ends in a LayerNorm; the
    2017 model, and ours, add nothing after the last one, whereas nn.Transformer's default
    applies a second LayerNorm on top. That is a different function, so we refuse it: build
    the post-LN reference with ``custom_encoder=nn.TransformerEncoder(layer, N, norm=None)``
    and ``custom_decoder=nn.TransformerDecoder(layer, N, norm=None)``.
    """
    enc, dec = theirs.encoder, theirs.decoder
    ours_enc, ours_dec = len(ours.encoder.blocks), len(ours.decoder.blocks)
    norm_first = ours.config.norm_first
    if len(enc.layers) != ours_enc or len(dec.layers) != ours_dec:
        raise ValueError(
            f"layer counts differ: ours has {ours_enc} encoder and {ours_dec} decoder layers, "
            f"theirs has {len(enc.layers)} and {len(dec.layers)}"
        )
    for name, their_norm in (("encoder", enc.norm), ("decoder", dec.norm)):
        if norm_first and their_norm is None:
            raise ValueError(
                f"expected a final {name} LayerNorm for a pre-LN model (ours has norm_f), "
                "got norm=None"
            )
        if not norm_first and their_norm is not None:
            raise ValueError(
                f"expected no final {name} LayerNorm for a post-LN model (ours, like the 2017 "
                f"paper, has none), got {their_norm}; build nn.Transformer with custom_encoder="
                "nn.TransformerEncoder(layer, N, norm=None) and custom_decoder="
                "nn.TransformerDecoder(layer, N, norm=None)"
            )
    for i, (block, layer) in enumerate(zip(ours.encoder.blocks, enc.layers, strict=True)):
        try:
            load_block_from_torch(block, layer)
        except ValueError as error:
            raise ValueError(f"encoder layer {i}: {error}") from None
    for i, (block, layer) in enumerate(zip(ours.decoder.blocks, dec.layers, strict=True)):
        try:
            load_decoder_layer_from_torch(block, layer)
        except ValueError as error:
            raise ValueError(f"decoder layer {i}: {error}") from None
    if norm_first:
        _copy_layer_norm(ours.encoder.norm_f, enc.norm, "encoder final norm")
        _copy_layer_norm(ours.decoder.norm_f, dec.norm, "decoder final norm")
