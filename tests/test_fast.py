"""Tests of tinyformer.fast: each optimisation computes what its simple twin computes."""

import pytest
import torch
from conftest import make_lm

from tinyformer.attention import KVCache, MultiHeadAttention, causal_mask
from tinyformer.decode import generate
from tinyformer.fast import BufferedKVCache, fused_adamw_ok, lm_loss_by_length
from tinyformer.objectives import lm_loss
from tinyformer.train import adamw, set_seed

PAD = 0

# --- BufferedKVCache == KVCache --------------------------------------------------------------


def test_buffered_cache_returns_what_the_simple_cache_returns():
    simple, buffered = KVCache(), BufferedKVCache()
    k, v = torch.randn(2, 3, 9, 4), torch.randn(2, 3, 9, 4)
    with torch.no_grad():
        for start, stop in [(0, 2)] + [(t, t + 1) for t in range(2, 9)]:
            a = simple.append(k[:, :, start:stop], v[:, :, start:stop])
            b = buffered.append(k[:, :, start:stop], v[:, :, start:stop])
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert simple.length == buffered.length == 9
    # The buffer doubled (2 -> 4 -> 8 -> 16): 3 copies of the past, not one per token.
    assert buffered._k.shape[-2] == 16
    rows = torch.tensor([1, 1, 0])
    simple.select(rows)
    buffered.select(rows)
    assert torch.equal(simple.k, buffered.k) and torch.equal(simple.v, buffered.v)
    with torch.no_grad():
        simple.append(torch.zeros(3, 3, 1, 4), torch.zeros(3, 3, 1, 4))
        buffered.append(torch.zeros(3, 3, 1, 4), torch.zeros(3, 3, 1, 4))
    assert torch.equal(simple.k, buffered.k) and buffered.length == 10


def test_buffered_cache_in_a_model_and_under_autograd():
    model = make_lm().eval()
    ids = torch.randint(0, 11, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)
        cache = [BufferedKVCache() for _ in model.decoder.blocks]
        steps = [model(ids[:, t : t + 1], cache=cache) for t in range(9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)
    # With gradients recorded it concatenates, so every step's graph stays valid.
    mha = MultiHeadAttention(16, 2)
    x = torch.randn(2, 5, 16, requires_grad=True)
    mha(x, mask=causal_mask(5)).square().sum().backward()
    full_grad, x.grad = x.grad, None
    cache = BufferedKVCache()
    torch.cat([mha(x[:, t : t + 1], cache=cache) for t in range(5)], 1).square().sum().backward()
    torch.testing.assert_close(x.grad, full_grad, rtol=1e-4, atol=1e-5)


# --- fused AdamW == AdamW -----------------------------------------------------------------


def test_generate_with_a_buffered_cache_draws_the_same_tokens():
    model = make_lm()
    prompt = torch.ones(2, 1, dtype=torch.long)

    def draw(**kw):
        return generate(model, prompt, 10, generator=torch.Generator().manual_seed(3), **kw)

    buffered = [BufferedKVCache() for _ in model.decoder.blocks]
    assert torch.equal(draw(cache=buffered), draw())
    with pytest.raises(ValueError, match="use_cache=True"):
        draw(cache=[BufferedKVCache() for _ in model.decoder.blocks], use_cache=False)


def test_fused_adamw_takes_the_same_steps_as_the_plain_one():
    assert fused_adamw_ok(list(make_lm().parameters()))
    assert not fused_adamw_ok([torch.nn.Parameter(torch.zeros(2, device="meta"))])
    ids = torch.randint(1, 11, (4, 9), generator=torch.Generator().manual_seed(1))
    models = []
    for fused in (True, False):
        set_seed(0)
        model = make_lm()
        optimizer = adamw(model, lr=1e-2, weight_decay=0.1)
        for group in optimizer.param_groups:
            group["fused"] = fused
        # One step from the same gradients. (Over many steps the two drift apart by more
        # than rounding: Adam divides by sqrt(v), which amplifies the rounding differences of
        # tiny gradients; the appendix "Cost and speed" measures the effect on training.)
        lm_loss(model(ids[:, :-1]), ids[:, 1:], PAD).backward()
        optimizer.step()
        models.append(model)
    for p, q in zip(models[0].parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


# --- lm_loss_by_length == lm_loss --------------------------------------------------------------


# --- lm_loss_by_length --------------------------------------------------------------------------


def ragged_batch(B=11, T=9, V=7, seed=0):
    """Rows of random lengths 1..T, right-padded: inputs and targets (B, T)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, V, (B, T + 1), generator=g)
    lengths = torch.randint(2, T + 2, (B,), generator=g)  # real ids per row, <bos> included
    ids[torch.arange(T + 1) >= lengths[:, None]] = PAD
    ids[0, :] = torch.randint(1, V, (T + 1,), generator=g)  # one row of the full length
    return ids[:, :-1], ids[:, 1:]


@pytest.mark.parametrize("max_rows", [1, 3, 4, 11, 100])
def test_lm_loss_by_length_equals_lm_loss_for_a_causal_model(max_rows):
    set_seed(0)
    model = make_lm(7, max_len=9)
    inputs, targets = ragged_batch()
    expected = lm_loss(model(inputs), targets, PAD)
    grads_expected = torch.autograd.grad(expected, list(model.parameters()))
    loss = lm_loss_by_length(model, inputs, targets, PAD, max_rows=max_rows)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, expected)
    for g, g_expected in zip(grads, grads_expected, strict=True):
        torch.testing.assert_close(g, g_expected, rtol=1e-4, atol=1e-6)


def test_lm_loss_by_length_runs_the_model_on_trimmed_groups():
    set_seed(0)
    model = make_lm(7, n_layers=1, max_len=9)
    inputs, targets = ragged_batch()
    shapes = []
    model.register_forward_hook(lambda m, args, out: shapes.append(tuple(args[0].shape)))
    lm_loss_by_length(model, inputs, targets, PAD, max_rows=4)
    lengths = sorted((targets != PAD).sum(1).tolist())
    assert shapes == [(4, max(lengths[:4])), (4, max(lengths[4:8])), (3, max(lengths[8:]))]
    assert sum(b * t for b, t in shapes) < inputs.numel()  # less than the padded batch


def test_lm_loss_by_length_is_not_exact_for_a_model_that_reads_the_padding():
    # A non-causal model (mean over the whole row) sees the padding: trimming changes it.
    class MeanOverRow(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(7, 7)

        def forward(self, ids):
            x = self.embed(ids)
            return x + x.mean(dim=1, keepdim=True)

    set_seed(0)
    model = MeanOverRow()
    inputs, targets = ragged_batch()
    full = lm_loss(model(inputs), targets, PAD)
    assert not torch.allclose(lm_loss_by_length(model, inputs, targets, PAD, max_rows=3), full)


def test_lm_loss_by_length_bad_input():
    model = make_lm(7, n_layers=1, max_len=9)
    inputs, targets = ragged_batch()
    with pytest.raises(ValueError, match=r"same shape \(B, T\).*\(11, 9\) and \(11, 8\)"):
        lm_loss_by_length(model, inputs, targets[:, :-1], PAD)
    with pytest.raises(ValueError, match=r"max_rows >= 1, got 0"):
        lm_loss_by_length(model, inputs, targets, PAD, max_rows=0)
    holey = targets.clone()
    holey[0, 2] = PAD  # a pad before real targets
    with pytest.raises(ValueError, match=r"padding only at the end of each row"):
        lm_loss_by_length(model, inputs, holey, PAD)
