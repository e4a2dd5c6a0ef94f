"""Unit tests of tinyformer.layers: embeddings, positional encodings, feed-forward."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinyformer.layers import (
    FeedForward,
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)

# --- TokenEmbedding ----------------------------------------------------------------------------


def test_token_embedding_scales_by_sqrt_d_model_by_default():
    torch.manual_seed(0)
    emb = TokenEmbedding(11, 16)
    assert emb.scale is True and emb.weight.shape == (11, 16)
    ids = torch.tensor([[1, 2, 3], [10, 0, 2]])
    out = emb(ids)
    assert out.shape == (2, 3, 16)
    assert torch.allclose(out, emb.weight[ids] * 4.0)  # sqrt(16) = 4


def test_token_embedding_without_scale_is_a_plain_lookup():
    emb = TokenEmbedding(11, 16, scale=False)
    ids = torch.tensor([[1, 2, 3]])
    assert torch.equal(emb(ids), F.embedding(ids, emb.weight))
    assert torch.equal(emb(ids.int()), emb(ids))  # int32 ids are accepted too


def test_token_embedding_scale_choice_unit_inputs_and_order_one_tied_logits():
    """N(0, 1/D) init: scaled inputs have unit variance; tied logits of unit-size h have std ~1."""
    torch.manual_seed(0)
    V, D = 2000, 64
    emb = TokenEmbedding(V, D)
    assert abs(emb.weight.std().item() - 1 / math.sqrt(D)) < 0.01
    x = emb(torch.arange(V).unsqueeze(0))
    assert abs(x.std().item() - 1.0) < 0.05
    h = F.layer_norm(torch.randn(256, D), (D,))  # what the final LayerNorm hands lm_head
    logits = h @ emb.weight.T
    assert 0.9 < logits.std().item() < 1.1


def test_token_id_check_at_the_door():
    """Ids are checked once, where they enter a model (tinyformer.checks), not per layer."""
    from tinyformer.checks import check_token_ids

    with pytest.raises(ValueError, match=r"torch\.long.*torch\.float32"):
        check_token_ids(torch.zeros(1, 3), 10)
    with pytest.raises(ValueError, match=r"size 10, got id 12"):
        check_token_ids(torch.tensor([[1, 12, 3]]), 10)
    with pytest.raises(ValueError, match=r"size 10, got id -1"):
        check_token_ids(torch.tensor([[1, -1]]), 10)
    with pytest.raises(TypeError, match=r"torch\.Tensor \(B, T\), got list"):
        check_token_ids([[1, 2]], 10)
    with pytest.raises(ValueError, match=r"\(B, T\) with T >= 1, got shape \(1, 0\)"):
        check_token_ids(torch.zeros(1, 0, dtype=torch.long), 10)


# --- sinusoidal positions ----------------------------------------------------------------------


def test_sinusoidal_formula_values():
    D, max_len = 12, 50
    pe = SinusoidalPositionalEncoding(D, max_len).pe
    assert pe.shape == (max_len, D)
    for pos in (0, 1, 7, 49):
        for i in range(D // 2):
            angle = pos / 10000 ** (2 * i / D)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * (D // 2)))


def test_sinusoidal_odd_d_model():
    pe = SinusoidalPositionalEncoding(5, 4).pe
    assert pe.shape == (4, 5)
    assert pe[3, 4].item() == pytest.approx(math.sin(3 / 10000 ** (4 / 5)), abs=1e-6)


def test_sinusoidal_forward_adds_first_T_rows_and_offsets():
    pos = SinusoidalPositionalEncoding(8, 32)
    x = torch.randn(2, 5, 8)
    assert torch.equal(pos(x), x + pos.pe[:5])
    assert torch.equal(pos(x, offset=3), x + pos.pe[3:8])
    assert torch.equal(pos(torch.zeros(1, 32, 8))[0], pos.pe)  # exactly max_len is fine


def test_sinusoidal_is_a_rotation_per_frequency():
    """PE[pos + k] is a fixed linear map (a rotation in each (sin, cos) pair) of PE[pos]."""
    D = 8
    pe = SinusoidalPositionalEncoding(D, 40).pe.double()
    k = 5
    for i in range(D // 2):
        w = 1 / 10000 ** (2 * i / D)
        c, s = math.cos(k * w), math.sin(k * w)
        rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
        pair = pe[:, 2 * i : 2 * i + 2]  # rows (sin, cos); (sin, cos)(a) @ rot = (sin, cos)(a + kw)
        assert torch.allclose(pair[:-k] @ rot, pair[k:], atol=1e-5)


def test_sinusoidal_not_in_state_dict_and_follows_dtype():
    pos = SinusoidalPositionalEncoding(8, 16)
    assert "pe" not in pos.state_dict()
    x = torch.randn(1, 3, 8, dtype=torch.float64)
    assert pos(x).dtype == torch.float64
    assert pos.double().pe.dtype == torch.float64


@pytest.mark.parametrize("module", [SinusoidalPositionalEncoding(8, 32), None])
def test_positions_too_long_raise(module):
    module = module or LearnedPositionalEmbedding(32, 8)
    with pytest.raises(
        ValueError, match="sequence of length 40 exceeds the model's context of 32 positions"
    ):
        module(torch.zeros(1, 40, 8))
    with pytest.raises(ValueError, match=r"length 3 starting at position 30 .* 32 positions"):
        module(torch.zeros(1, 3, 8), offset=30)
    with pytest.raises(ValueError, match=r"\(B, T, 8\).*\(1, 4, 6\)"):
        module(torch.zeros(1, 4, 6))
    with pytest.raises(ValueError, match=r"offset >= 0, got -1"):
        module(torch.zeros(1, 4, 8), offset=-1)


# --- learned positions -------------------------------------------------------------------------


def test_learned_positions_add_rows_and_only_used_rows_get_gradient():
    torch.manual_seed(0)
    pos = LearnedPositionalEmbedding(16, 8)
    assert pos.weight.shape == (16, 8)
    x = torch.randn(2, 5, 8)
    assert torch.equal(pos(x), x + pos.weight[:5])
    assert torch.equal(pos(x, offset=4), x + pos.weight[4:9])
    pos(x, offset=4).sum().backward()
    used = torch.zeros(16, dtype=torch.bool)
    used[4:9] = True
    assert torch.all(pos.weight.grad[~used] == 0)
    assert torch.all(pos.weight.grad[used] == 2.0)  # batch of 2, d(sum)/dP = 1 per example


# --- positions break permutation symmetry ------------------------------------------------------


def test_positions_make_attention_order_aware():
    from tinyformer.attention import MultiHeadAttention

    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).double().eval()
    pos = SinusoidalPositionalEncoding(8, 16).double()
    x = torch.randn(1, 6, 8, dtype=torch.float64)
    perm = torch.tensor([5, 4, 3, 2, 1, 0])
    assert torch.allclose(mha(x[:, perm]), mha(x)[:, perm], atol=1e-12)  # no positions
    assert not torch.allclose(mha(pos(x[:, perm])), mha(pos(x))[:, perm], atol=1e-3)


# --- FeedForward -------------------------------------------------------------------------------


@pytest.mark.parametrize("activation,fn", [("relu", F.relu), ("gelu", F.gelu)])
def test_feed_forward_formula(activation, fn):
    torch.manual_seed(0)
    ff = FeedForward(8, 32, activation=activation)
    assert ff.linear1.weight.shape == (32, 8) and ff.linear2.weight.shape == (8, 32)
    x = torch.randn(2, 5, 8)
    expected = fn(x @ ff.linear1.weight.T + ff.linear1.bias) @ ff.linear2.weight.T + ff.linear2.bias
    assert torch.allclose(ff(x), expected, atol=1e-6)


def test_feed_forward_is_position_wise():
    torch.manual_seed(0)
    ff = FeedForward(8, 32)
    x = torch.randn(1, 5, 8)
    x2 = x.clone()
    x2[0, 2] += 1.0
    diff = (ff(x2) - ff(x)).abs().sum(-1)[0]
    assert diff[2] > 0 and torch.all(diff[[0, 1, 3, 4]] == 0)


def test_feed_forward_errors():
    with pytest.raises(ValueError, match=r"'gelu', 'gelu_tanh', 'relu', 'silu'.*'tanh'"):
        FeedForward(8, 32, activation="tanh")


def test_layers_work_in_float64_and_follow_the_device():
    ff = FeedForward(8, 16).double()
    assert ff(torch.randn(2, 3, 8, dtype=torch.float64)).dtype == torch.float64
    emb = TokenEmbedding(10, 8).double()
    assert emb(torch.tensor([[1, 2]])).dtype == torch.float64
    # The meta device has no data: anything created on a hard-coded "cpu" would fail here.
    x = torch.empty(2, 3, 8, device="meta")
    modules = (SinusoidalPositionalEncoding(8, 16), LearnedPositionalEmbedding(16, 8))
    for module in (*modules, FeedForward(8, 16)):
        out = module.to("meta")(x)
        assert out.device.type == "meta" and out.shape == (2, 3, 8)


def test_positional_module_factory():
    from tinyformer.layers import positional_module

    assert isinstance(positional_module("learned", 8, 4), LearnedPositionalEmbedding)
    assert isinstance(positional_module("sinusoidal", 8, 4), SinusoidalPositionalEncoding)
    halves = positional_module("sinusoidal_halves", 8, 4)
    full = positional_module("sinusoidal", 8, 4)
    assert torch.equal(halves.pe[:, :2], full.pe[:, 0::2])  # the sines, then the cosines
    assert torch.equal(halves.pe[:, 2:], full.pe[:, 1::2])
    with pytest.raises(ValueError, match=r"'sinusoidal' or 'sinusoidal_halves', got 'rotary'"):
        positional_module("rotary", 8, 4)
