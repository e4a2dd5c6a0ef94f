"""Tests of tinyformer.encoder: padding invariance, no causality, PyTorch parity, MLM masking,
classification pooling, bad input.

Mask conventions are OPPOSITE: ours True = may attend; PyTorch's src_key_padding_mask
True = pad (blocked). Comparisons convert with to_torch_mask.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tinyformer.attention import MultiHeadAttention, padding_mask
from tinyformer.compat import load_block_from_torch, to_torch_mask
from tinyformer.encoder import (
    Encoder,
    EncoderBlock,
    MaskedLM,
    MLMHead,
    SequenceClassifier,
    mask_tokens,
    mlm_loss,
)
from tinyformer.vocab import Vocab

D, H, F_DIM, V = 16, 4, 32, 11
PAD = 0
# Rows of real lengths 6, 3 and 1 (the rest is <pad>); ids 5..10 are words.
IDS = torch.tensor(
    [
        [1, 5, 6, 7, 8, 2, 0, 0],
        [1, 9, 2, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0, 0],
    ]
)
REAL = IDS != PAD  # (B, T)


def make_block(norm_first=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    return EncoderBlock(D, H, F_DIM, norm_first=norm_first, **kwargs).eval()


def make_encoder(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = dict(vocab_size=V, d_model=D, n_heads=H, n_layers=2, d_ff=F_DIM, max_len=12)
    return Encoder(**{**config, **kwargs}).eval()


def probe(n, seed=3):
    """A fixed random direction: LayerNorm makes plain sums of outputs constant."""
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def noise_at_pads(x, seed=1):
    """x with its padded positions (REAL False) replaced by large random values."""
    noise = 10 * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return torch.where(REAL.unsqueeze(-1), x, noise)


def embedded_forward(model, x, ids=IDS):
    """Run ``model(ids)`` with its token embeddings replaced by ``x`` (B, T, D)."""
    handle = model.tok_emb.register_forward_hook(lambda module, inputs, output: x)
    try:
        return model(ids)
    finally:
        handle.remove()


# --- padding invariance: a pad token has no influence on a real one -------------------------


@pytest.mark.parametrize("use_mask", [True, False])
def test_attention_ignores_padded_keys_exactly(use_mask):
    torch.manual_seed(0)
    attn = MultiHeadAttention(D, H).eval()
    x = torch.randn(3, 8, D)
    mask = padding_mask(IDS, PAD) if use_mask else None
    with torch.no_grad():
        out, changed = attn(x, mask=mask), attn(noise_at_pads(x), mask=mask)
    same = torch.equal(out[REAL], changed[REAL])
    # The control: without the mask, real tokens read the pads and their outputs move.
    assert same == use_mask


@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize("norm_first", [True, False])
def test_block_ignores_padding_exactly(norm_first, use_mask):
    block = make_block(norm_first)
    x = torch.randn(3, 8, D)
    mask = padding_mask(IDS, PAD) if use_mask else None
    with torch.no_grad():
        out, changed = block(x, mask=mask), block(noise_at_pads(x), mask=mask)
    assert torch.equal(out[REAL], changed[REAL]) == use_mask
    assert not torch.equal(out[~REAL], changed[~REAL])  # pad rows do change (and are ignored)


@pytest.mark.parametrize("use_mask", [True, False])
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_encoder_ignores_padding_exactly(norm_first, positional, use_mask):
    # pad_id=None builds no mask: the same weights, but pads are read like words.
    model = make_encoder(norm_first=norm_first, positional=positional)
    model.pad_id = PAD if use_mask else None
    with torch.no_grad():
        h = model(IDS)
        x = model.tok_emb(IDS)
        h_noise = embedded_forward(model, noise_at_pads(x))
        # Another way in: change the <pad> row of the embedding table.
        model.tok_emb.weight[PAD] += 5.0
        h_pad_row = model(IDS)
    assert torch.equal(h[REAL], h_noise[REAL]) == use_mask
    assert torch.equal(h[REAL], h_pad_row[REAL]) == use_mask


@pytest.mark.parametrize("norm_first", [True, False])
def test_padded_embeddings_get_zero_gradient(norm_first):
    """d(real outputs)/d(pad embeddings) is exactly zero; d/d(real embeddings) is not."""
    model = make_encoder(norm_first=norm_first)
    x = model.tok_emb(IDS).detach().requires_grad_()
    h = embedded_forward(model, x)
    (grad,) = torch.autograd.grad((h @ probe(D))[REAL].sum(), x)
    assert torch.all(grad[~REAL] == 0)
    assert torch.all(grad[REAL].abs().sum(-1) > 0)


def test_more_padding_does_not_change_real_outputs():
    """A sentence encoded alone equals the same sentence padded into a longer batch."""
    model = make_encoder()
    with torch.no_grad():
        alone = model(IDS[:1, :6])  # no pad at all
        batched = model(IDS)
    torch.testing.assert_close(batched[0, :6], alone[0], rtol=1e-5, atol=1e-6)


# --- no causality: every position reads the whole sentence ----------------------------------


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_is_not_causal(norm_first):
    block = make_block(norm_first)
    x = torch.randn(1, 6, D, requires_grad=True)
    out = block(x)
    (grad,) = torch.autograd.grad(out[0, 0] @ probe(D), x)
    assert torch.all(grad[0].abs().sum(-1) > 0)  # position 0 depends on positions 1..5


def test_encoder_is_not_causal():
    model = make_encoder()
    x = model.tok_emb(IDS[:1]).detach().requires_grad_()
    h = embedded_forward(model, x, IDS[:1])
    (grad,) = torch.autograd.grad(h[0, 0] @ probe(D), x)
    assert torch.all(grad[0, :6].abs().sum(-1) > 0)  # every real position, later ones too


def test_attention_weights_are_full_rows_over_real_keys():
    model = make_encoder(n_layers=3)
    h, attention = model(IDS, return_attention=True)
    assert h.shape == (3, 8, D) and len(attention) == 3
    for weights in attention:
        assert weights.shape == (3, H, 8, 8)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, H, 8))
        pad_keys = (~REAL)[:, None, None, :].expand_as(weights)
        assert torch.all(weights[pad_keys] == 0)  # pad keys get nothing
        assert torch.all(weights[0, :, 0, :6] > 0)  # <bos> reads every real token
    # Without the weights the attention runs in PyTorch's fused kernel: same up to rounding.
    torch.testing.assert_close(model(IDS), h)


# --- parity with PyTorch --------------------------------------------------------------------


def torch_layer(norm_first, activation="relu"):
    return nn.TransformerEncoderLayer(
        D, H, F_DIM, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()


def randomise(module, seed=0):
    """PyTorch initialises biases and LayerNorms to 0/1; randomise so every copy is tested."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(p + 0.1 * torch.randn(p.shape, generator=generator))


@pytest.mark.parametrize("activation", ["relu", "gelu"])
@pytest.mark.parametrize("norm_first", [True, False])
def test_block_equals_torch_encoder_layer(norm_first, activation):
    torch.manual_seed(0)
    theirs = torch_layer(norm_first, activation)
    randomise(theirs)
    ours = EncoderBlock(D, H, F_DIM, norm_first=norm_first, activation=activation).eval()
    load_block_from_torch(ours, theirs)
    x = torch.randn(3, 8, D)
    with torch.no_grad():
        # PyTorch's src_key_padding_mask is (B, T) with True = pad: the inverse of ours.
        expected = theirs(x, src_key_padding_mask=to_torch_mask(padding_mask(IDS, PAD))[:, 0, 0])
        got = ours(x, mask=padding_mask(IDS, PAD))
    # PyTorch's fast path may leave pad rows as zeros: compare real positions only.
    torch.testing.assert_close(got[REAL], expected[REAL], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_equals_torch_transformer_encoder(norm_first):
    torch.manual_seed(0)
    n_layers = 3
    theirs = nn.TransformerEncoder(
        torch_layer(norm_first),
        n_layers,
        # Pre-LN stacks need a final LayerNorm (our norm_f); post-LN blocks end in one.
        norm=nn.LayerNorm(D) if norm_first else None,
        enable_nested_tensor=False,
    ).eval()
    randomise(theirs)
    ours = make_encoder(norm_first=norm_first, n_layers=n_layers)
    with torch.no_grad():
        for block, layer in zip(ours.blocks, theirs.layers, strict=True):
            load_block_from_torch(block, layer)
        if norm_first:
            ours.norm_f.load_state_dict(theirs.norm.state_dict())
        x = ours.pos(ours.tok_emb(IDS))  # PyTorch's encoder starts after the embeddings
        expected = theirs(x, src_key_padding_mask=IDS == PAD)
        got = ours(IDS)
    torch.testing.assert_close(got[REAL], expected[REAL], rtol=1e-5, atol=1e-5)


# --- mask_tokens: BERT's 15% with 80/10/10 --------------------------------------------------


WORDS = [f"w{i}" for i in range(20)]
VOCAB = Vocab(WORDS)
N_WORDS = len(WORDS)


def word_batch(n_rows=10_000, seed=0):
    """<bos> 20 words <eos> <pad> <pad> per row: 200k maskable tokens, 5 specials per row."""
    generator = torch.Generator().manual_seed(seed)
    words = torch.randint(5, 5 + N_WORDS, (n_rows, 20), generator=generator)
    bos = torch.full((n_rows, 1), VOCAB.bos_id)
    eos = torch.full((n_rows, 1), VOCAB.eos_id)
    pad = torch.full((n_rows, 2), VOCAB.pad_id)
    return torch.cat([bos, words, eos, pad], dim=1)


def within_4_se(count, n, p):
    """Is the observed count a 4-standard-error match for Binomial(n, p)?"""
    se = math.sqrt(n * p * (1 - p))
    return abs(count - n * p) <= 4 * se


def test_mask_tokens_proportions():
    ids = word_batch()
    inputs, labels = mask_tokens(ids, VOCAB, generator=torch.Generator().manual_seed(0))
    chosen = labels != -100
    n_maskable, n_chosen = int((ids >= 5).sum()), int(chosen.sum())
    assert n_maskable == 200_000
    assert within_4_se(n_chosen, n_maskable, 0.15)

    masked = int((inputs[chosen] == VOCAB.mask_id).sum())
    kept = int((inputs[chosen] == ids[chosen]).sum())
    replaced = int(((inputs[chosen] != ids[chosen]) & (inputs[chosen] != VOCAB.mask_id)).sum())
    assert masked + kept + replaced == n_chosen
    assert within_4_se(masked, n_chosen, 0.8)
    # A random word is the original one 1 time in N_WORDS: it then counts as kept.
    assert within_4_se(replaced, n_chosen, 0.1 * (1 - 1 / N_WORDS))
    assert within_4_se(kept, n_chosen, 0.1 + 0.1 / N_WORDS)


def test_mask_tokens_labels_and_specials():
    ids = word_batch(n_rows=2_000)
    ids[:, 5] = VOCAB.unk_id  # an <unk> and a <mask> in the input are special too
    ids[:, 6] = VOCAB.mask_id
    inputs, labels = mask_tokens(ids, VOCAB, p=0.5, generator=torch.Generator().manual_seed(1))
    chosen = labels != -100
    special = ids < 5
    assert not chosen[special].any()  # <pad> <bos> <eos> <unk> <mask> are never chosen
    assert torch.equal(inputs[~chosen], ids[~chosen])  # nothing else is touched
    assert torch.equal(labels[chosen], ids[chosen])  # the label is the original token
    assert torch.all(labels[~chosen] == -100)
    changed = chosen & (inputs != ids) & (inputs != VOCAB.mask_id)
    assert changed.any() and torch.all(inputs[changed] >= 5)  # random tokens are words


def test_mask_tokens_is_deterministic_with_a_generator():
    ids = word_batch(n_rows=50)
    a = mask_tokens(ids, VOCAB, generator=torch.Generator().manual_seed(7))
    b = mask_tokens(ids, VOCAB, generator=torch.Generator().manual_seed(7))
    c = mask_tokens(ids, VOCAB, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mask_tokens_extremes_and_errors():
    ids = word_batch(n_rows=20)
    inputs, labels = mask_tokens(ids, VOCAB, p=0.0)
    assert torch.equal(inputs, ids) and torch.all(labels == -100)
    _, labels = mask_tokens(ids, VOCAB, p=1.0)
    assert torch.equal(labels != -100, ids >= 5)
    with pytest.raises(ValueError, match=r"torch\.long.*torch\.float32"):
        mask_tokens(ids.float(), VOCAB)
    with pytest.raises(ValueError, match=r"\[0, 1\].*1\.5"):
        mask_tokens(ids, VOCAB, p=1.5)
    ids[0, 1] = len(VOCAB)
    with pytest.raises(ValueError, match=r"\[0, 25\).*to 25"):
        mask_tokens(ids, VOCAB)


# --- the masked-LM model ---------------------------------------------------------------------


def test_masked_lm_shapes_tying_and_loss():
    model = MaskedLM(make_encoder())
    assert model.head.output.weight is model.encoder.tok_emb.weight
    untied = MaskedLM(make_encoder(), tie_weights=False)
    assert untied.head.output.weight is not untied.encoder.tok_emb.weight
    assert untied.num_parameters() == model.num_parameters() + V * D

    logits, attention = model(IDS, return_attention=True)
    assert logits.shape == (3, 8, V) and len(attention) == 2
    labels = torch.full_like(IDS, -100)
    labels[0, 2], labels[1, 1] = 6, 9
    expected = F.cross_entropy(logits[[0, 1], [2, 1]], torch.tensor([6, 9]))
    torch.testing.assert_close(mlm_loss(logits, labels), expected)
    with pytest.raises(ValueError, match="at least one masked position"):
        mlm_loss(logits, torch.full_like(IDS, -100))
    with pytest.raises(ValueError, match=r"\(B, T, V\).*\(3, 8, 11\).*\(3, 7\)"):
        mlm_loss(logits, labels[:, :7])
    with pytest.raises(ValueError, match=r"\(11, 16\).*\(12, 16\)"):
        MLMHead(D, V, embedding_weight=nn.Parameter(torch.zeros(12, D)))


# --- classification --------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_shapes_and_pooling(pooling):
    model = SequenceClassifier(make_encoder(), n_classes=3, pooling=pooling).eval()
    logits = model(IDS)
    assert logits.shape == (3, 3)
    h = model.encoder(IDS)
    pooled = model.pool(h, IDS)
    assert pooled.shape == (3, D)
    if pooling == "cls":
        assert torch.equal(pooled, h[:, 0])
    else:
        for b, n in enumerate(REAL.sum(1).tolist()):
            torch.testing.assert_close(pooled[b], h[b, :n].mean(0))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_ignores_pads_exactly(pooling):
    model = SequenceClassifier(make_encoder(), n_classes=2, pooling=pooling).eval()
    with torch.no_grad():
        before = model(IDS)
        model.encoder.tok_emb.weight[PAD] += 5.0  # every pad row of h changes...
        after = model(IDS)
    assert torch.equal(before, after)  # ...and no logit does


# --- bad input ------------------------------------------------------------------------------


def test_float_token_ids():
    with pytest.raises(ValueError, match=r"torch\.long.*torch\.float32"):
        make_encoder()(IDS.float())


def test_token_ids_must_be_2d():
    with pytest.raises(ValueError, match=r"\(B, T\).*\(8,\) with 1"):
        make_encoder()(IDS[0])
    with pytest.raises(ValueError, match=r"\(B, T, D\).*\(8, 16\)"):
        make_block()(torch.randn(8, D))


def test_sequence_longer_than_context():
    with pytest.raises(ValueError, match=r"length 8 exceeds.*context of 6"):
        make_encoder(max_len=6)(IDS)


def test_heads_must_divide_d_model():
    with pytest.raises(ValueError, match=r"d_model=10.*n_heads=3"):
        EncoderBlock(10, 3, 32)
    with pytest.raises(ValueError, match=r"d_model=10.*n_heads=3"):
        Encoder(V, d_model=10, n_heads=3)


def test_bad_mask_and_options():
    block = make_block()
    x = torch.randn(3, 8, D)
    with pytest.raises(ValueError, match=r"torch\.bool.*torch\.int64"):
        block(x, mask=padding_mask(IDS, PAD).long())
    with pytest.raises(ValueError, match=r"\(2, 1, 1, 8\).*\(3, 4, 8, 8\)"):
        block(x, mask=padding_mask(IDS[:2], PAD))
    with pytest.raises(ValueError, match=r"'learned' or 'sinusoidal'.*'rotary'"):
        make_encoder(positional="rotary")
    with pytest.raises(ValueError, match=r"'cls' or 'mean'.*'max'"):
        SequenceClassifier(make_encoder(), 2, pooling="max")
    with pytest.raises(ValueError, match=r"vocabulary of size 11.*id 11"):
        make_encoder()(torch.full((1, 3), V))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    model = MaskedLM(make_encoder()).cuda()
    ids = IDS.cuda()
    inputs, labels = mask_tokens(ids, Vocab(WORDS[:6]), generator=torch.Generator().manual_seed(0))
    assert inputs.device.type == "cuda" and labels.device.type == "cuda"
    assert model(inputs).shape == (3, 8, V)
