"""Unit tests of tinyformer.attention: parity with PyTorch, masks, causality, KV cache, errors."""

import pytest
import torch
import torch.nn.functional as F
from conftest import attend

from tinyformer.attention import (
    KVCache,
    MultiHeadAttention,
    causal_mask,
    padding_mask,
    scaled_dot_product_attention,
)


def make_qkv(*batch, T_q=5, T_k=7, d_k=8, d_v=6, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(*batch, T_q, d_k, generator=g, dtype=dtype)
    k = torch.randn(*batch, T_k, d_k, generator=g, dtype=dtype)
    v = torch.randn(*batch, T_k, d_v, generator=g, dtype=dtype)
    return q, k, v


def make_mha(d_model=16, n_heads=4, seed=0, **kwargs):
    torch.manual_seed(seed)
    return MultiHeadAttention(d_model, n_heads, **kwargs).eval()


# --- scaled_dot_product_attention -------------------------------------------------------------


def test_sdpa_matches_torch_without_mask():
    q, k, v = make_qkv(2, 3)
    out, weights = scaled_dot_product_attention(q, k, v)
    assert out.shape == (2, 3, 5, 6) and weights.shape == (2, 3, 5, 7)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 3, 5), atol=1e-6)


def test_sdpa_matches_torch_with_random_bool_mask():
    q, k, v = make_qkv(2, 3)
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(2, 3, 5, 7, generator=g) < 0.6
    mask[..., 0] = True  # every query may read at least one key
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.all(weights[~mask] == 0)


def test_sdpa_matches_torch_with_causal_mask():
    q, k, v = make_qkv(2, T_q=6, T_k=6)
    out, weights = scaled_dot_product_attention(q, k, v, causal_mask(6))
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(out, expected, atol=1e-6)
    assert torch.all(weights.triu(diagonal=1) == 0)


@pytest.mark.parametrize("mask_shape", [(7,), (5, 7), (1, 5, 7), (2, 1, 1, 7), (2, 3, 5, 1)])
def test_sdpa_broadcasts_mask(mask_shape):
    q, k, v = make_qkv(2, 3)
    g = torch.Generator().manual_seed(2)
    mask = torch.rand(mask_shape, generator=g) < 0.7
    mask.view(-1)[0] = True
    full = mask.expand(2, 3, 5, 7)
    ours, _ = scaled_dot_product_attention(q, k, v, mask)
    theirs = F.scaled_dot_product_attention(q, k, v, attn_mask=full)
    assert torch.allclose(ours, theirs, atol=1e-6)


def test_sdpa_float64_matches_torch():
    q, k, v = make_qkv(2, dtype=torch.float64)
    mask = causal_mask(5, offset=2)  # (5, 7)
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert out.dtype == torch.float64 and weights.dtype == torch.float64
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(out, expected, atol=1e-12)


def test_fully_masked_query_gets_zero_weights_output_and_gradient_without_nan():
    q, k, v = make_qkv(2)
    q.requires_grad_(True)
    mask = torch.ones(5, 7, dtype=torch.bool)
    mask[2] = False  # query 2 may read nothing
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert torch.all(weights[:, 2] == 0) and torch.all(out[:, 2] == 0)
    assert not torch.isnan(out).any() and not torch.isnan(weights).any()
    assert torch.allclose(weights[:, [0, 1, 3, 4]].sum(-1), torch.ones(2, 4), atol=1e-6)
    # F.scaled_dot_product_attention makes the same choice.
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)
    out.sum().backward()
    assert not torch.isnan(q.grad).any()
    assert torch.all(q.grad[:, 2] == 0)


def test_sdpa_causality_through_gradients():
    T = 6
    x = torch.randn(1, T, 8, dtype=torch.float64, requires_grad=True)
    for t in range(T):
        x.grad = None
        out, _ = scaled_dot_product_attention(x, x, x, causal_mask(T))
        out[0, t].sum().backward()
        assert torch.all(x.grad[0, t + 1 :] == 0), f"position {t} sees the future"
        assert torch.all(x.grad[0, : t + 1].abs().sum(-1) > 0), f"position {t} ignores its past"


def test_sdpa_errors_name_both_shapes():
    q, k, v = make_qkv(2)
    with pytest.raises(ValueError, match=r"\(2, 5, 8\).*\(2, 7, 4\)"):
        scaled_dot_product_attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match=r"\(2, 7, 8\).*\(2, 6, 6\)"):
        scaled_dot_product_attention(q, k, v[:, :6])
    with pytest.raises(ValueError, match=r"torch\.bool.*torch\.int64"):
        scaled_dot_product_attention(q, k, v, torch.ones(5, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(5, 5\).*\(2, 5, 7\)"):
        scaled_dot_product_attention(q, k, v, causal_mask(5))
    # Broadcastable, but to a bigger shape than the scores: also an error.
    with pytest.raises(ValueError, match=r"\(3, 1, 5, 7\).*\(2, 5, 7\)"):
        scaled_dot_product_attention(q, k, v, torch.ones(3, 1, 5, 7, dtype=torch.bool))


# --- mask builders -----------------------------------------------------------------------------


def test_causal_mask_values():
    expected = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(3), expected)
    # With 2 cached positions: query i sits at absolute position 2 + i.
    expected_offset = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(causal_mask(2, offset=2), expected_offset)
    assert torch.equal(causal_mask(4, offset=3)[:, 3:], causal_mask(4))
    with pytest.raises(ValueError, match="-1"):
        causal_mask(-1)


def test_padding_mask_values_and_shape():
    ids = torch.tensor([[5, 6, 0, 0], [7, 0, 8, 9]])
    m = padding_mask(ids, pad_id=0)
    assert m.shape == (2, 1, 1, 4) and m.dtype == torch.bool
    assert torch.equal(m[:, 0, 0], torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1]], dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        padding_mask(ids[0], pad_id=0)


def test_mask_builders_follow_the_device():
    # The meta device has no data: anything created on a hard-coded "cpu" would show up here.
    assert causal_mask(3, device="meta").device.type == "meta"
    ids = torch.zeros(2, 3, dtype=torch.long, device="meta")
    assert padding_mask(ids, 0).device.type == "meta"


# --- MultiHeadAttention ------------------------------------------------------------------------


def test_mha_shapes_self_and_cross():
    mha = make_mha()
    x, ctx = torch.randn(2, 5, 16), torch.randn(2, 9, 16)
    out, w = attend(mha, x, return_weights=True)
    assert out.shape == (2, 5, 16) and w.shape == (2, 4, 5, 5)
    out, w = attend(mha, x, context=ctx, return_weights=True)
    assert out.shape == (2, 5, 16) and w.shape == (2, 4, 5, 9)
    assert torch.allclose(w.sum(-1), torch.ones(2, 4, 5), atol=1e-6)
    assert isinstance(mha(x), torch.Tensor)


def test_mha_equals_heads_written_out():
    """Each head is attention in its own slice of the projections; out_proj mixes the concat."""
    mha = make_mha(d_model=12, n_heads=3)
    x = torch.randn(2, 4, 12)
    q, k, v = mha.q_proj(x), mha.k_proj(x), mha.v_proj(x)
    heads = []
    for h in range(3):
        s = slice(4 * h, 4 * (h + 1))
        heads.append(scaled_dot_product_attention(q[..., s], k[..., s], v[..., s])[0])
    expected = mha.out_proj(torch.cat(heads, dim=-1))
    assert torch.allclose(mha(x), expected, atol=1e-6)


@pytest.mark.parametrize("mask_kind", ["none", "causal", "padding", "fully_masked_row"])
def test_mha_fused_path_equals_written_out_path(mask_kind):
    """Without return_weights the module uses F.scaled_dot_product_attention: same outputs,
    same gradients, as the written-out attention it uses when the weights are wanted."""
    mha = make_mha().double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 9, 10, 0]])
    mask = {
        "none": None,
        "causal": causal_mask(5),
        "padding": padding_mask(ids, pad_id=0) & causal_mask(5),  # (2, 1, 5, 5)
        "fully_masked_row": torch.ones(5, 5, dtype=torch.bool).index_fill(
            0, torch.tensor([2]), False
        ),
    }[mask_kind]
    grads = []
    for return_weights in (False, True):
        x_ = x.clone().requires_grad_(True)
        mha.zero_grad()
        out = attend(mha, x_, mask=mask, return_weights=return_weights)
        out = out[0] if return_weights else out
        out.pow(2).sum().backward()
        grads.append((out.detach(), x_.grad, mha.q_proj.weight.grad.clone()))
    for fused, written_out in zip(*grads, strict=True):
        assert torch.allclose(fused, written_out, atol=1e-10)
        assert not fused.isnan().any()


@pytest.mark.parametrize("return_weights", [False, True])
def test_mha_is_causal_equals_the_causal_mask(return_weights):
    """is_causal=True (no mask built) gives the outputs and gradients of mask=causal_mask(T),
    in the fused kernel and in the written-out path alike."""
    mha = make_mha().double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    results = []
    for kwargs in ({"mask": causal_mask(6)}, {"is_causal": True}):
        x_ = x.clone().requires_grad_(True)
        mha.zero_grad()
        out = attend(mha, x_, return_weights=return_weights, **kwargs)
        out, weights = out if return_weights else (out, None)
        out.pow(2).sum().backward()
        results.append((out.detach(), x_.grad, mha.k_proj.weight.grad.clone(), weights))
    for with_mask, causal in zip(*results, strict=True):
        if with_mask is not None:
            assert torch.allclose(with_mask, causal, atol=1e-12)


def test_mha_is_causal_refuses_a_mask_or_cached_positions():
    mha = make_mha()
    x = torch.randn(1, 3, 16)
    with pytest.raises(ValueError, match=r"is_causal.*T_q=3, T_k=3 and a mask"):
        mha(x, mask=causal_mask(3), is_causal=True)
    cache = KVCache()
    mha(x, cache=cache, is_causal=True)  # the prefill: 3 queries, 3 keys
    with pytest.raises(ValueError, match=r"is_causal.*T_q=2, T_k=5"):
        mha(torch.randn(1, 2, 16), cache=cache, is_causal=True)


def test_mha_causality_through_gradients():
    mha = make_mha().double()
    T = 6
    x = torch.randn(2, T, 16, dtype=torch.float64, requires_grad=True)
    for t in range(T):
        x.grad = None
        mha(x, mask=causal_mask(T))[:, t].sum().backward()
        assert torch.all(x.grad[:, t + 1 :] == 0), f"position {t} sees the future"
        assert torch.all(x.grad[:, : t + 1].abs().sum(-1) > 0), f"position {t} ignores its past"


def test_mha_without_mask_sees_the_future():
    """The control for the causality test: without the mask, gradients do reach the future."""
    mha = make_mha()
    x = torch.randn(1, 4, 16, requires_grad=True)
    mha(x)[:, 0].sum().backward()
    assert torch.all(x.grad[0, 1:].abs().sum(-1) > 0)


def test_changing_padded_keys_leaves_real_outputs_unchanged():
    mha = make_mha()
    ids = torch.tensor([[4, 5, 6, 0, 0], [7, 8, 9, 10, 0]])
    mask = padding_mask(ids, pad_id=0) & causal_mask(5)  # (B, 1, T, T)
    x = torch.randn(2, 5, 16)
    x2 = x.clone()
    x2[ids == 0] = 100.0 * torch.randn(int((ids == 0).sum()), 16)
    out, out2 = mha(x, mask=mask), mha(x2, mask=mask)
    real = ids != 0
    assert torch.equal(out[real], out2[real])
    assert not torch.equal(out[~real], out2[~real])  # the test can tell a difference


def test_padding_has_no_gradient_influence_in_cross_attention():
    mha = make_mha()
    ctx_ids = torch.tensor([[3, 4, 0], [5, 0, 0]])
    ctx = torch.randn(2, 3, 16, requires_grad=True)
    x = torch.randn(2, 4, 16)
    mha(x, context=ctx, mask=padding_mask(ctx_ids, 0)).sum().backward()
    assert torch.all(ctx.grad[ctx_ids == 0] == 0)
    assert torch.all(ctx.grad[ctx_ids != 0].abs().sum(-1) > 0)


def test_mha_without_positions_is_permutation_equivariant():
    mha = make_mha().double()
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    assert torch.allclose(mha(x[:, perm]), mha(x)[:, perm], atol=1e-12)
    # Not equivariant once a causal mask breaks the symmetry (sanity check of the test).
    mask = causal_mask(6)
    assert not torch.allclose(mha(x[:, perm], mask=mask), mha(x, mask=mask)[:, perm], atol=1e-6)


def test_kv_cache_one_token_at_a_time_equals_full_causal_forward():
    mha = make_mha()
    x = torch.randn(2, 7, 16)
    full, full_w = attend(mha, x, mask=causal_mask(7), return_weights=True)
    cache = KVCache()
    steps = []
    for t in range(7):
        out, w = attend(mha, x[:, t : t + 1], cache=cache, return_weights=True)
        assert cache.length == t + 1 and w.shape == (2, 4, 1, t + 1)
        assert torch.allclose(w[:, :, 0], full_w[:, :, t, : t + 1], atol=1e-6)
        steps.append(out)
    assert torch.allclose(torch.cat(steps, dim=1), full, atol=1e-6)
    assert cache.k.shape == (2, 4, 7, 4) and cache.v.shape == (2, 4, 7, 4)


def test_kv_cache_prefill_then_chunks_with_offset_mask():
    mha = make_mha()
    x = torch.randn(2, 7, 16)
    full = mha(x, mask=causal_mask(7))
    cache = KVCache()
    a = mha(x[:, :4], cache=cache, mask=causal_mask(4))  # prompt, empty cache
    b = mha(x[:, 4:], cache=cache, mask=causal_mask(3, offset=4))
    assert torch.allclose(torch.cat([a, b], dim=1), full, atol=1e-6)


def test_kv_cache_select_reorders_rows():
    cache = KVCache()
    k, v = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    cache.append(k, v)
    rows = torch.tensor([2, 2, 0])
    cache.select(rows)
    assert torch.equal(cache.k, k[rows]) and torch.equal(cache.v, v[rows])
    cache.append(torch.zeros(3, 2, 1, 4), torch.zeros(3, 2, 1, 4))  # and it still grows
    assert cache.length == 5 and torch.equal(cache.k[:, :, :4], k[rows])


def test_kv_cache_under_autograd_backpropagates_like_the_full_forward():
    # A cached forward can be backpropagated: the gradients match one full forward pass.
    mha = make_mha()
    x = torch.randn(2, 5, 16, requires_grad=True)
    mha(x, mask=causal_mask(5)).square().sum().backward()
    full_grad, x.grad = x.grad, None
    cache = KVCache()
    steps = [mha(x[:, t : t + 1], cache=cache) for t in range(5)]
    torch.cat(steps, dim=1).square().sum().backward()
    assert torch.allclose(x.grad, full_grad, atol=1e-5)


def test_kv_cache_starts_empty_and_is_for_self_attention_only():
    cache = KVCache()
    assert cache.length == 0 and cache.k is None
    mha = make_mha()
    with pytest.raises(ValueError, match="self-attention only"):
        mha(torch.randn(1, 1, 16), context=torch.randn(1, 3, 16), cache=KVCache())


def test_mha_errors_name_expected_and_received():
    with pytest.raises(ValueError, match=r"d_model=10.*n_heads=4"):
        MultiHeadAttention(10, 4)
    mha = make_mha()
    with pytest.raises(ValueError, match=r"\(B, T, 16\).*\(2, 5, 12\)"):
        mha(torch.randn(2, 5, 12))
    with pytest.raises(ValueError, match=r"\(B, T, 16\).*\(2, 16\)"):
        mha(torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"context.*\(B, T, 16\).*\(2, 3, 8\)"):
        mha(torch.randn(2, 5, 16), context=torch.randn(2, 3, 8))
    with pytest.raises(ValueError, match=r"\(2, 5, 16\).*\(3, 4, 16\)"):
        mha(torch.randn(2, 5, 16), context=torch.randn(3, 4, 16))
    with pytest.raises(ValueError, match=r"floating-point.*torch\.int64"):
        mha(torch.zeros(2, 5, 16, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(2, 4, 5, 5\)"):
        mha(torch.randn(2, 5, 16), mask=causal_mask(4))
    with pytest.raises(ValueError, match=r"torch\.bool.*torch\.float32"):
        mha(torch.randn(2, 5, 16), mask=causal_mask(5).float())


def test_mha_float64_and_device_follow_the_input():
    mha = make_mha().double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    out, w = attend(mha, x, mask=causal_mask(5), return_weights=True)
    assert out.dtype == torch.float64 and w.dtype == torch.float64
    # On the meta device nothing can silently be created on the CPU.
    mha_meta = make_mha().to("meta")
    x_meta = torch.empty(2, 5, 16, device="meta")
    out = mha_meta(x_meta, mask=causal_mask(5, device="meta"), cache=KVCache())
    assert out.device.type == "meta" and out.shape == (2, 5, 16)


def test_mha_dropout_only_in_training():
    mha = make_mha(dropout=0.5)
    x = torch.randn(2, 5, 16)
    mha.eval()
    assert torch.equal(mha(x), mha(x))
    mha.train()
    torch.manual_seed(0)
    _, w = attend(mha, x, return_weights=True)
    assert (w == 0).any()  # some weights were dropped
    assert not torch.allclose(mha(x), mha(x))


# --- record_attention: the one way to see attention maps -------------------------------------


def test_record_attention_names_every_attention_module_and_changes_no_output():
    from conftest import make_lm, make_seq2seq

    from tinyformer.attention import record_attention

    model = make_seq2seq(n_layers=2, n_encoder_layers=3).eval()
    src = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 2, 0, 0]])
    tgt = torch.tensor([[1, 4, 5], [1, 6, 2]])
    plain = model(src, tgt)
    with record_attention(model) as maps:
        recorded = model(src, tgt)
    torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-6)
    assert sorted(maps) == sorted(
        [f"encoder.blocks.{i}.self_attn" for i in range(3)]
        + [f"decoder.blocks.{i}.{kind}" for i in range(2) for kind in ("self_attn", "cross_attn")]
    )
    assert maps["encoder.blocks.0.self_attn"].shape == (2, 2, 5, 5)
    assert maps["decoder.blocks.1.cross_attn"].shape == (2, 2, 3, 5)
    cross = maps["decoder.blocks.0.cross_attn"]
    assert torch.all(cross[1, :, :, 3:] == 0)  # source pads get no weight
    assert torch.all(maps["decoder.blocks.0.self_attn"].triu(1) == 0)  # causal
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 2, 3))
    # Outside the block nothing is recorded any more, and the fused path is back.
    assert all(m.record is None for m in model.modules() if isinstance(m, MultiHeadAttention))
    lm = make_lm()
    with record_attention(lm) as maps:
        cache = lm.new_cache()
        lm(torch.tensor([[1, 2, 3]]), cache=cache)
        lm(torch.tensor([[4]]), cache=cache)
    assert maps["decoder.blocks.0.self_attn"].shape == (1, 2, 1, 4)  # the last call's


def test_record_attention_needs_attention_modules():
    from tinyformer.attention import record_attention

    with pytest.raises(ValueError, match=r"MultiHeadAttention modules, got Linear"):
        with record_attention(torch.nn.Linear(2, 2)):
            pass
