"""Tests of tinyformer.blocks.TransformerBlock, the one block class: causal (Part I), not
causal (Part II), with cross attention (Part III); pre-LN and post-LN; parity with PyTorch.

Mask conventions are OPPOSITE: ours True = may attend; PyTorch's masks True = blocked.
Comparisons convert with to_torch_mask.
"""

import pytest
import torch
from conftest import make_block, probe, randomise
from torch import nn

from tinyformer.attention import causal_mask, padding_mask
from tinyformer.blocks import TransformerBlock
from tinyformer.torch_bridge import (
    load_block_from_torch,
    load_decoder_layer_from_torch,
    to_torch_mask,
)

D, H, F_DIM = 16, 2, 32
PAD = 0
# Rows of real lengths 6, 3 and 1 (the rest is <pad>).
IDS = torch.tensor([[1, 5, 6, 7, 8, 2, 0, 0], [1, 9, 2, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]])
REAL = IDS != PAD


def gradient_reach(block, T=6, **kwargs):
    """(T, T) bool: entry [t, s] says whether output t depends on input s (by gradients)."""
    reach = torch.zeros(T, T, dtype=torch.bool)
    for t in range(T):
        x = torch.randn(1, T, D, generator=torch.Generator().manual_seed(t), requires_grad=True)
        (grad,) = torch.autograd.grad(block(x, **kwargs)[0, t] @ probe(D), x)
        reach[t] = grad[0].abs().sum(-1) > 0
    return reach


# --- one class, three uses -------------------------------------------------------------------


def test_one_block_class_in_the_package():
    import tinyformer.blocks as blocks

    classes = [
        c for c in vars(blocks).values() if isinstance(c, type) and c.__module__ == blocks.__name__
    ]
    assert classes == [TransformerBlock]


def test_norms_are_named_by_role():
    assert {n for n, _ in make_block().named_children()} == {
        "self_attn", "attn_norm", "ff", "ff_norm", "dropout",
    }  # fmt: skip
    crossed = make_block(cross_attention=True)
    assert {"cross_attn", "cross_norm"} <= {n for n, _ in crossed.named_children()}
    assert make_block().cross_attn is None and make_block().cross_norm is None


@pytest.mark.parametrize("norm_first", [True, False])
def test_causal_block_sees_only_the_past(norm_first):
    reach = gradient_reach(make_block(norm_first=norm_first).eval())
    assert torch.equal(reach, causal_mask(6))  # exactly: every past position, no future one


@pytest.mark.parametrize("norm_first", [True, False])
def test_non_causal_block_sees_everything(norm_first):
    reach = gradient_reach(make_block(norm_first=norm_first, causal=False).eval())
    assert reach.all()


def test_causal_and_non_causal_blocks_share_weights_and_differ_only_by_the_mask():
    causal = make_block().eval()
    encoder = make_block(causal=False).eval()
    encoder.load_state_dict(causal.state_dict())  # the same parameter names and shapes
    x = torch.randn(2, 5, D)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x, mask=causal_mask(5)), causal(x))
        assert not torch.allclose(encoder(x), causal(x))


def test_padding_mask_hides_pads_from_real_tokens_exactly():
    block = make_block(causal=False).eval()
    x = torch.randn(3, 8, D)
    noisy = torch.where(REAL[..., None], x, 10 * torch.randn(x.shape))
    mask = padding_mask(IDS, PAD)
    with torch.no_grad():
        assert torch.equal(block(x, mask=mask)[REAL], block(noisy, mask=mask)[REAL])
        assert not torch.equal(block(x)[REAL], block(noisy)[REAL])  # the control: no mask


def test_causal_block_combines_an_extra_mask_with_the_causal_one():
    block = make_block().eval()
    ids = torch.tensor([[5, 6, 7, 0, 0]])
    reach = gradient_reach(block, T=5, mask=padding_mask(ids, PAD))
    # Every position reads the real past; a pad position still reads itself, through the
    # residual connection, not through attention.
    expected = (causal_mask(5) & (ids != PAD)) | torch.eye(5, dtype=torch.bool)
    assert torch.equal(reach, expected)


# --- cross attention ----------------------------------------------------------------------


def test_cross_attention_reads_every_real_memory_position_and_no_pad():
    block = make_block(cross_attention=True).eval()
    x = torch.randn(3, 4, D)
    memory = torch.randn(3, 8, D, requires_grad=True)
    out = block(x, memory=memory, memory_mask=padding_mask(IDS, PAD))
    (grad,) = torch.autograd.grad((out @ probe(D)).sum(), memory)
    assert torch.all(grad[~REAL] == 0)
    assert torch.all(grad[REAL].abs().sum(-1) > 0)


def test_memory_is_required_exactly_when_there_is_cross_attention():
    x = torch.randn(1, 3, D)
    with pytest.raises(ValueError, match=r"memory.*cross_attention=True.*memory=None"):
        make_block(cross_attention=True)(x)
    with pytest.raises(ValueError, match=r"cross_attention=False.*memory=a tensor"):
        make_block()(x, memory=torch.randn(1, 2, D))


def test_memory_of_the_wrong_shape():
    block = make_block(cross_attention=True)
    with pytest.raises(ValueError, match=r"context of shape \(B, T, 16\), got shape \(1, 2, 8\)"):
        block(torch.randn(1, 3, D), memory=torch.randn(1, 2, 8))
    with pytest.raises(ValueError, match=r"same batch size"):
        block(torch.randn(1, 3, D), memory=torch.randn(2, 2, D))


# --- parity with PyTorch -------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_block_equals_torch_encoder_layer(causal, norm_first, activation):
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(
        D, H, F_DIM, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    randomise(theirs)
    ours = make_block(norm_first=norm_first, activation=activation, causal=causal).eval()
    load_block_from_torch(ours, theirs)
    x = torch.randn(3, 8, D)
    with torch.no_grad():
        if causal:  # nn.* masks: True = blocked, the inverse of ours
            expected = theirs(x, src_mask=to_torch_mask(causal_mask(8)))
            got = ours(x)
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
        else:
            pads = to_torch_mask(padding_mask(IDS, PAD))[:, 0, 0]  # (B, T), True = pad
            expected = theirs(x, src_key_padding_mask=pads)
            got = ours(x, mask=padding_mask(IDS, PAD))
            # PyTorch's fast path may leave pad rows as zeros: compare real positions only.
            torch.testing.assert_close(got[REAL], expected[REAL], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_cross_attention_block_equals_torch_decoder_layer(norm_first):
    torch.manual_seed(0)
    theirs = nn.TransformerDecoderLayer(
        D, H, F_DIM, dropout=0.0, batch_first=True, norm_first=norm_first
    ).eval()
    randomise(theirs)
    ours = make_block(norm_first=norm_first, cross_attention=True).eval()
    load_decoder_layer_from_torch(ours, theirs)
    x, memory = torch.randn(3, 5, D), torch.randn(3, 8, D)
    with torch.no_grad():
        expected = theirs(
            x,
            memory,
            tgt_mask=to_torch_mask(causal_mask(5)),
            memory_key_padding_mask=to_torch_mask(padding_mask(IDS, PAD))[:, 0, 0],
        )
        got = ours(x, memory=memory, memory_mask=padding_mask(IDS, PAD))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_loading_refuses_a_different_kind_of_layer():
    theirs = nn.TransformerEncoderLayer(D, H, F_DIM, batch_first=True, norm_first=False)
    with pytest.raises(ValueError, match=r"norm_first differs"):
        load_block_from_torch(make_block(norm_first=True), theirs)
    with pytest.raises(ValueError, match=r"activation differs: ours is gelu, theirs is relu"):
        load_block_from_torch(make_block(norm_first=False, activation="gelu"), theirs)
    with pytest.raises(ValueError, match=r"with cross attention"):
        load_decoder_layer_from_torch(make_block(), nn.TransformerDecoderLayer(D, H, F_DIM))


# --- the KV cache ---------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [True, False])
def test_cached_steps_equal_one_full_pass(norm_first):
    from tinyformer.attention import KVCache

    block = make_block(norm_first=norm_first).eval()
    x = torch.randn(2, 7, D)
    cache = KVCache()
    with torch.no_grad():
        pieces = [block(x[:, :3], cache=cache)] + [
            block(x[:, t : t + 1], cache=cache) for t in range(3, 7)
        ]
        torch.testing.assert_close(torch.cat(pieces, dim=1), block(x), rtol=1e-5, atol=1e-6)
    assert cache.length == 7


# --- bad input -----------------------------------------------------------------------------


def test_mask_that_does_not_broadcast_or_is_not_bool():
    block = make_block()
    x = torch.randn(2, 5, D)
    with pytest.raises(ValueError, match=r"\(3, 5, 5\).*\(2, 2, 5, 5\)"):
        block(x, mask=torch.ones(3, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"torch\.bool.*torch\.float32"):
        block(x, mask=torch.ones(5, 5))
    encoder = make_block(causal=False)
    with pytest.raises(ValueError, match=r"torch\.bool.*torch\.float32"):
        encoder(x, mask=torch.ones(5, 5))


def test_heads_must_divide_d_model():
    with pytest.raises(ValueError, match=r"d_model=10.*n_heads=3"):
        TransformerBlock(10, 3, 32)
