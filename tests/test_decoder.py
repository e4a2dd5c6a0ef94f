"""Tests of tinyformer.decoder: causality, PyTorch parity, KV cache, errors, parameter count."""

import pytest
import torch
from torch import nn

from tinyformer.attention import causal_mask, padding_mask
from tinyformer.compat import load_block_from_torch, to_torch_mask
from tinyformer.decoder import DecoderBlock, DecoderLM, expected_num_parameters

D, H, F_DIM, V = 16, 4, 32, 11


def make_block(norm_first=True, seed=0):
    torch.manual_seed(seed)
    return DecoderBlock(D, H, F_DIM, norm_first=norm_first).eval()


def make_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = dict(vocab_size=V, d_model=D, n_heads=H, n_layers=2, d_ff=F_DIM, max_len=12)
    return DecoderLM(**{**config, **kwargs}).eval()


def assert_causal(f, x, T):
    """out[:, t] = f(x)[:, t] must have exactly zero gradient w.r.t. x[:, s] for s > t."""
    for t in range(T):
        x_leaf = x.detach().requires_grad_()
        out = f(x_leaf)
        probe = torch.randn(out.shape[-1], generator=torch.Generator().manual_seed(t))
        (grad,) = torch.autograd.grad(out[0, t] @ probe, x_leaf)
        assert torch.all(grad[0, t + 1 :] == 0), f"position {t} sees the future"
        assert torch.all(grad[0, : t + 1].abs().sum(-1) > 0), f"position {t} ignores the past"


# --- causality, checked through gradients ---------------------------------------------------


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_is_causal(norm_first):
    block = make_block(norm_first)
    T = 6
    x = torch.randn(1, T, D)
    assert_causal(block, x, T)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_model_is_causal(norm_first, positional):
    model = make_model(norm_first=norm_first, positional=positional)
    T = 7
    ids = torch.randint(0, V, (1, T), generator=torch.Generator().manual_seed(1))
    x = model.tok_emb(ids).detach()
    embedded = {}

    def swap_in_leaf(module, inputs, output):
        # Replace the token embeddings with the tensor whose gradient we inspect.
        return embedded["x"]

    handle = model.tok_emb.register_forward_hook(swap_in_leaf)
    try:

        def logits_from_embeddings(x):
            embedded["x"] = x
            return model(ids)

        assert_causal(logits_from_embeddings, x, T)
    finally:
        handle.remove()


def test_extra_padding_mask_keeps_causality_and_hides_pad():
    block = make_block()
    ids = torch.tensor([[5, 6, 7, 0, 0]])  # two pad positions at the end
    x = torch.randn(1, 5, D)
    out, weights = block(x, mask=padding_mask(ids, pad_id=0), return_weights=True)
    assert torch.all(weights[..., 3:] == 0)  # pad keys get no weight
    assert torch.all(weights.triu(diagonal=1) == 0)  # still causal
    # An explicit causal mask changes nothing: the block is causal anyway.
    assert torch.equal(block(x), block(x, mask=causal_mask(5)))


# --- parity with PyTorch ------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_equals_torch_encoder_layer_under_causal_mask(norm_first):
    torch.manual_seed(0)
    theirs = nn.TransformerEncoderLayer(
        D, H, F_DIM, dropout=0.0, activation="relu", batch_first=True, norm_first=norm_first
    ).eval()
    ours = DecoderBlock(D, H, F_DIM, norm_first=norm_first).eval()
    load_block_from_torch(ours, theirs)
    T = 9
    x = torch.randn(3, T, D)
    # PyTorch's attn_mask uses the opposite convention: True = blocked.
    their_mask = to_torch_mask(causal_mask(T))
    with torch.no_grad():
        expected = theirs(x, src_mask=their_mask)
        got = ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    assert torch.allclose(got, expected, atol=1e-5)


# --- attention maps and the KV cache --------------------------------------------------------


def test_return_attention_gives_per_layer_weights():
    model = make_model(n_layers=3)
    ids = torch.randint(0, V, (2, 5))
    logits, attention = model(ids, return_attention=True)
    assert logits.shape == (2, 5, V)
    assert len(attention) == 3
    for weights in attention:
        assert weights.shape == (2, H, 5, 5)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, H, 5))
        assert torch.all(weights.triu(diagonal=1) == 0)
    # Without the weights the attention runs in PyTorch's fused kernel: same up to rounding.
    torch.testing.assert_close(model(ids), logits)


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_cached_logits_equal_full_forward(norm_first, positional):
    model = make_model(norm_first=norm_first, positional=positional)
    ids = torch.randint(0, V, (3, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        pieces = [model(ids[:, :4], cache=cache)]  # a prompt, then one token at a time
        for t in range(4, 10):
            pieces.append(model(ids[:, t : t + 1], cache=cache))
    assert [c.length for c in cache] == [10, 10]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_cached_attention_weights_cover_all_positions():
    model = make_model()
    ids = torch.randint(0, V, (1, 6))
    cache = model.new_cache()
    model(ids[:, :5], cache=cache)
    _, attention = model(ids[:, 5:], cache=cache, return_attention=True)
    _, full_attention = model(ids, return_attention=True)
    for step, full in zip(attention, full_attention, strict=True):
        assert step.shape == (1, H, 1, 6)
        torch.testing.assert_close(step[:, :, 0], full[:, :, 5], rtol=1e-5, atol=1e-6)


def test_tied_weights_are_one_tensor():
    model = make_model()
    assert model.lm_head.weight is model.tok_emb.weight
    untied = make_model(tie_weights=False)
    assert untied.lm_head.weight is not untied.tok_emb.weight


# --- parameter count ------------------------------------------------------------------------


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("tie_weights", [True, False])
def test_parameter_formula_matches_model(positional, norm_first, tie_weights):
    config = dict(vocab_size=23, d_model=24, n_layers=3, d_ff=40, max_len=17)
    model = DecoderLM(
        n_heads=6,
        positional=positional,
        norm_first=norm_first,
        tie_weights=tie_weights,
        **config,
    )
    # Count every parameter tensor once, however many modules hold it (the tied head).
    unique = {id(p): p.numel() for _, p in model.named_parameters(remove_duplicate=False)}
    assert model.num_parameters() == sum(unique.values())
    expected = expected_num_parameters(
        **config, positional=positional, norm_first=norm_first, tie_weights=tie_weights
    )
    assert model.num_parameters() == expected


# --- bad input ------------------------------------------------------------------------------


def test_sequence_longer_than_context():
    model = make_model(max_len=8)
    with pytest.raises(ValueError, match=r"length 9.*context of 8"):
        model(torch.zeros(1, 9, dtype=torch.long))


def test_cache_plus_new_tokens_longer_than_context():
    model = make_model(max_len=8)
    cache = model.new_cache()
    model(torch.zeros(1, 6, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"6 cached \+ 3 new positions = 9.*context of 8"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)


def test_float_token_ids():
    model = make_model()
    with pytest.raises(ValueError, match=r"torch\.long.*torch\.float32"):
        model(torch.zeros(1, 4))


def test_token_ids_must_be_2d():
    model = make_model()
    with pytest.raises(ValueError, match=r"\(B, T\).*\(4,\)"):
        model(torch.zeros(4, dtype=torch.long))


def test_heads_must_divide_d_model():
    with pytest.raises(ValueError, match=r"d_model=10.*n_heads=3"):
        DecoderBlock(10, 3, 32)
    with pytest.raises(ValueError, match=r"d_model=10.*n_heads=3"):
        DecoderLM(V, d_model=10, n_heads=3)


def test_mask_that_does_not_broadcast():
    block = make_block()
    x = torch.randn(2, 5, D)
    with pytest.raises(ValueError, match=r"\(2, 4, 5, 5\).*\(3, 5, 5\)"):
        block(x, mask=torch.ones(3, 5, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"torch\.bool.*torch\.float32"):
        block(x, mask=torch.ones(5, 5))


def test_unknown_positional_and_wrong_cache():
    with pytest.raises(ValueError, match=r"'learned' or 'sinusoidal'.*'rotary'"):
        make_model(positional="rotary")
    model = make_model()
    with pytest.raises(ValueError, match=r"one KVCache per layer \(2\), got 1"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=model.new_cache()[:1])


# --- determinism and devices ----------------------------------------------------------------


def test_same_seed_same_weights():
    a, b = make_model(seed=3), make_model(seed=3)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    c = make_model(seed=4)
    assert not torch.equal(a.tok_emb.weight, c.tok_emb.weight)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    model = make_model().cuda()
    ids = torch.randint(0, V, (2, 6), device="cuda")
    cache = model.new_cache()
    full = model(ids)
    stepwise = torch.cat([model(ids[:, t : t + 1], cache=cache) for t in range(6)], dim=1)
    assert full.device.type == "cuda"
    torch.testing.assert_close(stepwise, full, rtol=1e-4, atol=1e-4)
