"""Parity of our MultiHeadAttention with nn.MultiheadAttention, and the torch_bridge helpers.

Mask conventions are OPPOSITE: ours True = may attend; nn.MultiheadAttention's attn_mask and
key_padding_mask True = blocked. Every comparison below converts with to_torch_mask.
(Block and model parity with nn.Transformer* live in test_blocks.py and test_models.py.)
"""

import pytest
import torch
from conftest import attend
from torch import nn

from tinyformer.attention import MultiHeadAttention, causal_mask, padding_mask
from tinyformer.torch_bridge import load_mha_from_torch, to_torch_mask

D, H = 16, 4


def make_pair(bias=True, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    theirs = nn.MultiheadAttention(D, H, bias=bias, batch_first=True).to(dtype).eval()
    # Their default init leaves biases at zero; randomise so the bias copy is tested too.
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    ours = MultiHeadAttention(D, H, bias=bias).to(dtype).eval()
    load_mha_from_torch(ours, theirs)
    return ours, theirs


def compare(ours, theirs, x, context=None, mask=None, attn_mask=None, key_padding_mask=None):
    """Run both; check outputs and head-averaged weights agree."""
    kv = x if context is None else context
    out, w = attend(ours, x, context=context, mask=mask, return_weights=True)
    their_out, their_w = theirs(
        x, kv, kv, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=True
    )  # their_w is averaged over heads: (B, T_q, T_k)
    atol = 1e-6 if x.dtype == torch.float32 else 1e-12
    assert torch.allclose(out, their_out, atol=atol)
    assert torch.allclose(w.mean(dim=1), their_w, atol=atol)
    return out


def test_weights_are_copied_from_packed_in_proj():
    ours, theirs = make_pair()
    w_q, w_k, w_v = theirs.in_proj_weight.split(D)
    assert torch.equal(ours.q_proj.weight, w_q)
    assert torch.equal(ours.k_proj.weight, w_k)
    assert torch.equal(ours.v_proj.weight, w_v)
    assert torch.equal(ours.v_proj.bias, theirs.in_proj_bias[2 * D :])
    assert torch.equal(ours.out_proj.weight, theirs.out_proj.weight)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_self_attention_matches_torch(bias, dtype):
    ours, theirs = make_pair(bias=bias, dtype=dtype)
    x = torch.randn(3, 6, D, dtype=dtype)
    compare(ours, theirs, x)


def test_causal_self_attention_matches_torch():
    ours, theirs = make_pair()
    x = torch.randn(3, 6, D)
    mask = causal_mask(6)
    compare(ours, theirs, x, mask=mask, attn_mask=to_torch_mask(mask))


def test_padded_causal_self_attention_matches_torch():
    ours, theirs = make_pair()
    ids = torch.tensor([[5, 6, 7, 8, 0, 0], [5, 6, 7, 8, 9, 10], [5, 6, 0, 0, 0, 0]])
    x = torch.randn(3, 6, D)
    pad = padding_mask(ids, pad_id=0)  # (B, 1, 1, T)
    causal = causal_mask(6)
    real = ids != 0
    out, their_out = (
        ours(x, mask=pad & causal),
        theirs(
            x,
            x,
            x,
            attn_mask=to_torch_mask(causal),
            key_padding_mask=to_torch_mask(pad)[:, 0, 0, :],
            need_weights=False,
        )[0],
    )
    # Only real query rows: every one of them can see at least itself, so none is all-masked.
    assert torch.allclose(out[real], their_out[real], atol=1e-6)


def test_cross_attention_with_padding_matches_torch():
    ours, theirs = make_pair()
    x = torch.randn(2, 5, D)  # decoder side: 5 queries
    ctx = torch.randn(2, 8, D)  # encoder side: 8 keys/values
    ctx_ids = torch.tensor([[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 0, 0, 0, 0, 0]])
    pad = padding_mask(ctx_ids, pad_id=0)
    compare(ours, theirs, x, ctx, mask=pad, key_padding_mask=to_torch_mask(pad)[:, 0, 0, :])
    compare(ours, theirs, x, ctx)


def test_per_head_3d_attn_mask_matches_torch():
    """PyTorch's 3-d attn_mask is (B*H, T_q, T_k); ours is (B, H, T_q, T_k)."""
    ours, theirs = make_pair()
    x = torch.randn(2, 5, D)
    g = torch.Generator().manual_seed(3)
    mask = torch.rand(2, H, 5, 5, generator=g) < 0.5
    mask[..., 0] = True
    compare(ours, theirs, x, mask=mask, attn_mask=to_torch_mask(mask).reshape(2 * H, 5, 5))


def test_to_torch_mask_inverts_and_rejects_non_bool():
    m = causal_mask(3)
    assert torch.equal(to_torch_mask(m), ~m)
    assert torch.equal(to_torch_mask(m), torch.ones(3, 3, dtype=torch.bool).triu(1))
    with pytest.raises(ValueError, match=r"torch\.bool.*torch\.float32"):
        to_torch_mask(m.float())


def test_without_inversion_the_outputs_differ():
    """Forgetting to invert is a real bug this parity catches."""
    ours, theirs = make_pair()
    x = torch.randn(1, 4, D)
    mask = causal_mask(4)
    wrong, _ = theirs(x, x, x, attn_mask=mask, need_weights=False)  # not inverted
    assert not torch.allclose(ours(x, mask=mask)[:, 1:], wrong[:, 1:], atol=1e-3)


def test_load_mha_errors():
    ours = MultiHeadAttention(D, H)
    with pytest.raises(ValueError, match=r"d_model=16, n_heads=4.*embed_dim=16, num_heads=2"):
        load_mha_from_torch(ours, nn.MultiheadAttention(D, 2))
    with pytest.raises(ValueError, match=r"ours has bias=True, theirs has bias=False"):
        load_mha_from_torch(ours, nn.MultiheadAttention(D, H, bias=False))
    with pytest.raises(ValueError, match=r"kdim=8, vdim=8"):
        load_mha_from_torch(ours, nn.MultiheadAttention(D, H, kdim=8, vdim=8))
    with pytest.raises(ValueError, match="add_bias_kv"):
        load_mha_from_torch(ours, nn.MultiheadAttention(D, H, add_bias_kv=True))


def test_load_block_refuses_mismatched_layers():
    from tinyformer.blocks import TransformerBlock
    from tinyformer.torch_bridge import load_block_from_torch

    def layer(**kwargs):
        return nn.TransformerEncoderLayer(D, H, 32, dropout=0.0, batch_first=True, **kwargs)

    ours = TransformerBlock(D, H, 32, norm_first=True, activation="relu")
    with pytest.raises(ValueError, match=r"ours has norm_first=True, theirs has norm_first=False"):
        load_block_from_torch(ours, layer(norm_first=False))
    with pytest.raises(ValueError, match=r"ours is relu, theirs is gelu"):
        load_block_from_torch(ours, layer(norm_first=True, activation="gelu"))
    with pytest.raises(ValueError, match=r"linear1.*\(32, 16\).*\(64, 16\)"):
        load_block_from_torch(
            ours, nn.TransformerEncoderLayer(D, H, 64, batch_first=True, norm_first=True)
        )
    with pytest.raises(ValueError, match=r"attn_norm / norm1.*eps=1e-05.*eps=1e-06"):
        load_block_from_torch(ours, layer(norm_first=True, layer_norm_eps=1e-6))
