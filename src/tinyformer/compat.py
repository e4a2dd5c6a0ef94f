"""Bridges to PyTorch's built-in transformer modules, so we can check ours against them.

    !!! MASK CONVENTIONS ARE OPPOSITE !!!
    tinyformer (and F.scaled_dot_product_attention): True = MAY attend.
    nn.MultiheadAttention / nn.Transformer* ``attn_mask`` and ``key_padding_mask``:
    True = NOT allowed to attend. Convert with :func:`to_torch_mask`.

Weight layouts:

* ``nn.MultiheadAttention`` keeps the three input projections in one ``in_proj_weight`` of
  shape ``(3D, D)``: the rows are ``[W_q; W_k; W_v]`` stacked (likewise ``in_proj_bias``).
  Ours are three separate ``nn.Linear(D, D)``: ``q_proj``, ``k_proj``, ``v_proj``.
* ``nn.TransformerEncoderLayer`` = ``self_attn`` + ``linear1``/``linear2`` + ``norm1``/``norm2``;
  our ``DecoderBlock`` = ``self_attn`` + ``ff.linear1``/``ff.linear2`` + ``norm1``/``norm2``.
  Under a causal mask the encoder layer computes exactly what a decoder block without cross
  attention computes (the "decoder" of GPT is an encoder layer with a causal mask).
"""

from __future__ import annotations

import torch
from torch import nn

from tinyformer.attention import MultiHeadAttention

__all__ = ["load_block_from_torch", "load_mha_from_torch", "to_torch_mask"]


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


@torch.no_grad()
def load_block_from_torch(ours: nn.Module, theirs: nn.TransformerEncoderLayer) -> None:
    """Copy an ``nn.TransformerEncoderLayer`` into our ``DecoderBlock`` (in place).

    Both must agree on ``norm_first`` and the activation (relu/gelu); a mismatch raises
    ValueError rather than silently computing something different.
    """
    our_norm_first = getattr(ours, "norm_first", None)
    if our_norm_first is not None and our_norm_first != theirs.norm_first:
        raise ValueError(
            f"norm_first differs: ours has norm_first={our_norm_first}, "
            f"theirs has norm_first={theirs.norm_first}"
        )
    their_act = {1: "relu", 2: "gelu"}.get(getattr(theirs, "activation_relu_or_gelu", 0))
    our_act = {nn.ReLU: "relu", nn.GELU: "gelu"}.get(type(ours.ff.activation))
    if their_act is None or their_act != our_act:
        raise ValueError(f"activation differs: ours is {our_act}, theirs is {their_act}")

    load_mha_from_torch(ours.self_attn, theirs.self_attn)
    _copy_linear(ours.ff.linear1, theirs.linear1, "linear1")
    _copy_linear(ours.ff.linear2, theirs.linear2, "linear2")
    _copy_layer_norm(ours.norm1, theirs.norm1, "norm1")
    _copy_layer_norm(ours.norm2, theirs.norm2, "norm2")
