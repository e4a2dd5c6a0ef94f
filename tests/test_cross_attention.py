"""Tests of the decoder block's cross-attention sublayer (Part III).

Mask conventions are OPPOSITE: ours True = may attend; PyTorch's tgt_mask and
memory_key_padding_mask True = blocked (pad). Comparisons convert with to_torch_mask.
"""

import pytest
import torch
from torch import nn

from tinyformer.attention import KVCache, causal_mask, padding_mask
from tinyformer.compat import load_block_from_torch, load_decoder_layer_from_torch, to_torch_mask
from tinyformer.decoder import DecoderBlock, DecoderLM

D, H, F_DIM = 16, 4, 32
PAD = 0
# Source rows of real lengths 7, 4 and 1 (then <pad>): the memory's key-padding mask.
SRC = torch.tensor(
    [
        [1, 5, 6, 7, 8, 9, 2, 0],
        [1, 5, 6, 2, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0, 0],
    ]
)
SRC_REAL = SRC != PAD  # (B, S)
B, S, T = 3, 8, 6


def make_block(norm_first=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    return DecoderBlock(D, H, F_DIM, norm_first=norm_first, cross_attention=True, **kwargs).eval()


def inputs(seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g), torch.randn(B, S, D, generator=g)


def probe(n, seed=3):
    """A fixed random direction (plain sums of LayerNorm outputs are constant)."""
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def randomise(module, seed=0):
    """PyTorch leaves biases and LayerNorm affines at 0/1; randomise so every copy is tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            centre = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))


# --- parity with nn.TransformerDecoderLayer ----------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_block_equals_torch_decoder_layer(norm_first, activation):
    torch.manual_seed(0)
    theirs = nn.TransformerDecoderLayer(
        D, H, F_DIM, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    randomise(theirs)
    ours = DecoderBlock(
        D, H, F_DIM, norm_first=norm_first, activation=activation, cross_attention=True
    ).eval()
    load_decoder_layer_from_torch(ours, theirs)
    x, memory = inputs()
    src_mask = padding_mask(SRC, PAD)  # (B, 1, 1, S), True = real token
    with torch.no_grad():
        expected = theirs(
            x,
            memory,
            tgt_mask=to_torch_mask(causal_mask(T)),  # True = blocked (the future)
            memory_key_padding_mask=to_torch_mask(src_mask)[:, 0, 0, :],  # True = pad
        )
        got = ours(x, memory=memory, memory_mask=src_mask)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_norms_are_mapped_by_role_not_by_name():
    """theirs.norm2 is cross attention's LayerNorm, ours is norm3; theirs.norm3 is ours.norm2."""
    theirs = nn.TransformerDecoderLayer(D, H, F_DIM, batch_first=True, norm_first=True)
    randomise(theirs)
    ours = make_block()
    load_decoder_layer_from_torch(ours, theirs)
    assert torch.equal(ours.norm1.weight, theirs.norm1.weight)
    assert torch.equal(ours.norm3.weight, theirs.norm2.weight)
    assert torch.equal(ours.norm2.weight, theirs.norm3.weight)
    w_q, w_k, w_v = theirs.multihead_attn.in_proj_weight.chunk(3)
    assert torch.equal(ours.cross_attn.k_proj.weight, w_k)


def test_loader_refuses_mismatches():
    def layer(**kwargs):
        return nn.TransformerDecoderLayer(D, H, F_DIM, batch_first=True, **kwargs)

    with pytest.raises(ValueError, match=r"ours has norm_first=True, theirs has norm_first=False"):
        load_decoder_layer_from_torch(make_block(norm_first=True), layer(norm_first=False))
    with pytest.raises(ValueError, match=r"ours is relu, theirs is gelu"):
        load_decoder_layer_from_torch(make_block(), layer(norm_first=True, activation="gelu"))
    with pytest.raises(ValueError, match=r"cross_attention=True"):
        load_decoder_layer_from_torch(DecoderBlock(D, H, F_DIM), layer(norm_first=True))


# --- the sublayer order and what each position may read ---------------------------------------


@pytest.mark.parametrize("norm_first", [True, False])
def test_causal_on_the_target_but_reads_every_real_source_position(norm_first):
    block = make_block(norm_first)
    x, memory = inputs()
    src_mask = padding_mask(SRC, PAD)
    for t in range(T):
        x_leaf, m_leaf = x.clone().requires_grad_(), memory.clone().requires_grad_()
        out = block(x_leaf, memory=m_leaf, memory_mask=src_mask)
        grad_x, grad_m = torch.autograd.grad((out[:, t] @ probe(D, t)).sum(), (x_leaf, m_leaf))
        assert torch.all(grad_x[:, t + 1 :] == 0), f"target position {t} sees the future"
        assert torch.all(grad_x[:, : t + 1].abs().sum(-1) > 0), f"position {t} ignores the past"
        reads = grad_m.abs().sum(-1) > 0  # (B, S): which source positions influence out[:, t]
        assert torch.equal(reads, SRC_REAL), f"target position {t} reads {reads}"


def test_padded_memory_rows_have_exactly_no_influence():
    block = make_block()
    x, memory = inputs()
    src_mask = padding_mask(SRC, PAD)
    garbage = 100 * torch.randn(memory.shape, generator=torch.Generator().manual_seed(9))
    changed = torch.where(SRC_REAL[..., None], memory, garbage)
    with torch.no_grad():
        out, w_self, w_cross = block(x, memory=memory, memory_mask=src_mask, return_weights=True)
        out2, _, _ = block(x, memory=changed, memory_mask=src_mask, return_weights=True)
        # and on the fused path (no weights asked for), exactly the same way:
        fused, fused2 = (block(x, memory=m, memory_mask=src_mask) for m in (memory, changed))
    assert torch.equal(out, out2)
    assert torch.equal(fused, fused2)
    assert torch.all(w_cross.masked_select(~SRC_REAL[:, None, None, :]) == 0)


def test_return_weights_gives_self_then_cross():
    block = make_block()
    x, memory = inputs()
    out, w_self, w_cross = block(
        x, memory=memory, memory_mask=padding_mask(SRC, PAD), return_weights=True
    )
    assert out.shape == (B, T, D)
    assert w_self.shape == (B, H, T, T)
    assert w_cross.shape == (B, H, T, S)
    torch.testing.assert_close(w_cross.sum(-1), torch.ones(B, H, T))
    assert torch.all(w_self.triu(diagonal=1) == 0)  # self-attention stays causal
    # Cross attention is not causal: target position 0 reads every real source position.
    assert torch.all(w_cross[0, :, 0, :7] > 0)


def test_kv_cache_with_cross_attention_equals_full_pass():
    block = make_block()
    x, memory = inputs()
    src_mask = padding_mask(SRC, PAD)
    with torch.no_grad():
        full = block(x, memory=memory, memory_mask=src_mask)
        cache = KVCache()
        steps = [
            block(x[:, t : t + 1], cache=cache, memory=memory, memory_mask=src_mask)
            for t in range(T)
        ]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-6)


# --- Part I is unchanged -----------------------------------------------------------------------


def test_block_without_cross_attention_is_part_one_block():
    plain = DecoderBlock(D, H, F_DIM)
    assert plain.cross_attn is None and plain.norm3 is None
    names = sorted(name.split(".")[0] for name in plain.state_dict())
    assert set(names) == {"self_attn", "norm1", "ff", "norm2"}
    theirs = nn.TransformerEncoderLayer(D, H, F_DIM, dropout=0.0, batch_first=True, norm_first=True)
    load_block_from_torch(plain, theirs)  # Part I's loader still fits
    model = DecoderLM(11, d_model=D, n_heads=H, d_ff=F_DIM, max_len=8)
    assert all(block.cross_attn is None for block in model.blocks)


def test_cross_attention_adds_one_attention_and_one_layer_norm():
    plain, crossed = DecoderBlock(D, H, F_DIM), make_block()
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(crossed) - count(plain) == 4 * (D * D + D) + 2 * D


# --- bad input ---------------------------------------------------------------------------------


def test_memory_batch_size_must_match():
    block = make_block()
    x, memory = inputs()
    with pytest.raises(ValueError, match=r"batch size.*\(3, 6, 16\).*\(2, 8, 16\)"):
        block(x, memory=memory[:2])


def test_memory_width_must_be_d_model():
    block = make_block()
    x, _ = inputs()
    with pytest.raises(ValueError, match=r"\(B, T_src, 16\).*\(3, 8, 12\)"):
        block(x, memory=torch.randn(3, 8, 12))


def test_memory_required_with_cross_attention_and_refused_without():
    x, memory = inputs()
    with pytest.raises(ValueError, match=r"expected memory.*got None"):
        make_block()(x)
    with pytest.raises(ValueError, match=r"cross_attention=False.*got memory"):
        DecoderBlock(D, H, F_DIM)(x, memory=memory)


def test_memory_mask_must_be_bool_and_broadcast():
    block = make_block()
    x, memory = inputs()
    with pytest.raises(ValueError, match=r"torch\.bool.*torch\.int64"):
        block(x, memory=memory, memory_mask=padding_mask(SRC, PAD).long())
    with pytest.raises(ValueError, match=r"\(3, 4, 6, 8\).*\(3, 1, 1, 5\)"):
        block(x, memory=memory, memory_mask=torch.ones(3, 1, 1, 5, dtype=torch.bool))


def test_integer_memory_is_refused():
    block = make_block()
    x, _ = inputs()
    with pytest.raises(ValueError, match=r"floating-point.*torch\.int64"):
        block(x, memory=torch.zeros(3, 8, D, dtype=torch.long))
