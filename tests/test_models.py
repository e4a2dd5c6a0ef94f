"""Tests of the models: the stack written once (tinyformer.stack) and what is built from it —
DecoderLM (Part I), MaskedLM and SequenceClassifier (Part II), EncoderDecoder (Part III);
the config; compact printing; parity with nn.TransformerEncoder and nn.Transformer.

Mask conventions are OPPOSITE: ours True = may attend; PyTorch's masks True = blocked (pad).
"""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import (
    make_encoder,
    make_lm,
    make_mlm,
    make_seq2seq,
    probe,
    randomise,
    small_config,
)
from torch import nn

from tinyformer.attention import causal_mask
from tinyformer.config import TransformerConfig
from tinyformer.decoder import DecoderLM, expected_num_parameters
from tinyformer.encoder import SequenceClassifier
from tinyformer.objectives import mlm_loss
from tinyformer.stack import TransformerStack
from tinyformer.torch_bridge import (
    load_block_from_torch,
    load_transformer_from_torch,
    to_torch_mask,
)

D, H, V = 16, 2, 11
PAD = 0
IDS = torch.tensor([[1, 5, 6, 7, 8, 2, 0, 0], [1, 9, 2, 0, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]])
REAL = IDS != PAD
V_SRC = 13
SRC = torch.tensor([[1, 5, 6, 7, 8, 9, 2, 0], [1, 10, 6, 2, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0]])
SRC_REAL = SRC != PAD
TGT_IN = torch.tensor([[1, 5, 6, 7, 8, 9], [1, 7, 2, 0, 0, 0], [1, 9, 9, 3, 4, 5]])


def embedding_leaf(stack: TransformerStack, ids: torch.Tensor):
    """(leaf, remove): the stack's token embeddings of ids as a leaf tensor that its forward
    uses instead, so that gradients say which input positions an output depends on."""
    leaf = stack.tok_emb(ids).detach().requires_grad_()
    handle = stack.tok_emb.register_forward_hook(lambda module, inputs, output: leaf)
    return leaf, handle.remove


# --- the config --------------------------------------------------------------------------------


def test_config_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match=r"n_heads to divide d_model.*d_model=10.*n_heads=3"):
        TransformerConfig(vocab_size=5, d_model=10, n_heads=3)
    with pytest.raises(ValueError, match=r"vocab_size to be a positive int, got True"):
        TransformerConfig(vocab_size=True)
    with pytest.raises(ValueError, match=r"positional in .*'rotary'"):
        TransformerConfig(vocab_size=5, positional="rotary")
    with pytest.raises(ValueError, match=r"activation in .*'tanh'"):
        TransformerConfig(vocab_size=5, activation="tanh")
    with pytest.raises(ValueError, match=r"pad_id in \[0, 5\) or None, got 7"):
        TransformerConfig(vocab_size=5, pad_id=7)
    with pytest.raises(ValueError, match=r"dropout in \[0, 1\), got 1.5"):
        TransformerConfig(vocab_size=5, dropout=1.5)
    with pytest.raises(ValueError, match=r"share_embeddings needs src_vocab_size == vocab_size"):
        TransformerConfig(vocab_size=5, src_vocab_size=6, share_embeddings=True)
    with pytest.raises(ValueError, match=r"src_vocab_size for an encoder-decoder"):
        TransformerConfig(vocab_size=5).encoder_config()
    with pytest.raises(TypeError, match=r"TransformerConfig, got int"):
        DecoderLM(5)


def test_models_print_in_one_line():
    for model in (make_lm(), make_mlm(), make_seq2seq(), make_encoder()):
        text = repr(model)
        assert "\n" not in text and len(text) < 200, text
        assert f"{model.num_parameters():,} parameters" in text
        assert "ModuleList" in model.modules_tree()  # the full tree is still there
    assert repr(small_config(7, d_ff=64)) == (
        "TransformerConfig(vocab_size=7, d_model=16, n_heads=2, d_ff=64, max_len=12)"
    )


def test_encoder_config_shares_everything_but_vocabulary_and_depth():
    config = small_config(11, src_vocab_size=13, n_encoder_layers=3, norm_first=False)
    enc = config.encoder_config()
    assert (enc.vocab_size, enc.n_layers, enc.src_vocab_size) == (13, 3, None)
    same = [f.name for f in dataclasses.fields(config) if f.name not in (
        "vocab_size", "n_layers", "src_vocab_size", "n_encoder_layers", "share_embeddings"
    )]  # fmt: skip
    assert all(getattr(enc, n) == getattr(config, n) for n in same)


# --- composition: one stack, heads on top --------------------------------------------------------


def test_every_model_is_a_stack_plus_a_head():
    lm, mlm, s2s = make_lm(), make_mlm(), make_seq2seq()
    assert [type(m.decoder) for m in (lm, s2s)] == [TransformerStack] * 2
    assert type(mlm.encoder) is TransformerStack and type(s2s.encoder) is TransformerStack
    assert lm.decoder.causal and s2s.decoder.causal
    assert not mlm.encoder.causal and not s2s.encoder.causal
    assert s2s.decoder.blocks[0].cross_attn is not None and lm.decoder.blocks[0].cross_attn is None


def test_forward_returns_a_tensor_everywhere():
    outputs = [
        make_lm()(IDS),
        make_mlm()(IDS),
        make_encoder()(IDS),
        SequenceClassifier(make_encoder(), 3)(IDS),
        make_seq2seq()(SRC, TGT_IN),
    ]
    assert all(type(out) is torch.Tensor for out in outputs)
    assert [tuple(o.shape) for o in outputs] == [
        (3, 8, V), (3, 8, V), (3, 8, D), (3, 3), (3, 6, V)
    ]  # fmt: skip


# --- DecoderLM -------------------------------------------------------------------------------


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_decoder_lm_is_causal(norm_first, positional):
    model = make_lm(norm_first=norm_first, positional=positional).eval()
    ids = torch.randint(0, V, (1, 7), generator=torch.Generator().manual_seed(1))
    x, remove = embedding_leaf(model.decoder, ids)
    try:
        logits = model(ids)
        for t in range(7):
            (grad,) = torch.autograd.grad(logits[0, t] @ probe(V), x, retain_graph=True)
            assert torch.all(grad[0, t + 1 :] == 0), f"position {t} sees the future"
            assert torch.all(grad[0, : t + 1].abs().sum(-1) > 0), f"position {t} ignores the past"
    finally:
        remove()


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_cached_logits_equal_full_forward(norm_first, positional):
    model = make_lm(norm_first=norm_first, positional=positional).eval()
    ids = torch.randint(0, V, (3, 10), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(ids)
        cache = model.new_cache()
        pieces = [model(ids[:, :4], cache=cache)] + [
            model(ids[:, t : t + 1], cache=cache) for t in range(4, 10)
        ]
    assert [c.length for c in cache] == [10, 10]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_tied_and_untied_heads():
    model = make_lm()
    assert model.lm_head.weight is model.decoder.tok_emb.weight
    untied = make_lm(tie_weights=False)
    assert untied.lm_head.weight is not untied.decoder.tok_emb.weight
    assert untied.num_parameters() == model.num_parameters() + V * D


@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("tie_weights", [True, False])
def test_parameter_formula_matches_model(positional, norm_first, tie_weights):
    config = TransformerConfig(
        vocab_size=23, d_model=24, n_heads=6, n_layers=3, d_ff=40, max_len=17,
        positional=positional, norm_first=norm_first, tie_weights=tie_weights,
    )  # fmt: skip
    model = DecoderLM(config)
    # Count every parameter tensor once, however many modules hold it (the tied head).
    unique = {id(p): p.numel() for _, p in model.named_parameters(remove_duplicate=False)}
    assert model.num_parameters() == sum(unique.values()) == expected_num_parameters(config)


def test_same_seed_same_weights():
    a, b, c = make_lm(seed=3), make_lm(seed=3), make_lm(seed=4)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    assert not torch.equal(a.decoder.tok_emb.weight, c.decoder.tok_emb.weight)


# --- bad input at the door -----------------------------------------------------------------------


def test_bad_token_ids_are_named():
    model = make_lm(max_len=8)
    with pytest.raises(ValueError, match=r"length 9.*context of 8"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(ValueError, match=r"ids of dtype torch\.long, got torch\.float32"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"ids of shape \(B, T\) with T >= 1, got shape \(4,\)"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"ids to be a torch\.Tensor \(B, T\), got list"):
        model([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"ids in \[0, 11\) for a vocabulary of size 11.*id 11"):
        model(torch.full((1, 3), V))
    with pytest.raises(ValueError, match=r"id -1"):
        model(torch.full((1, 3), -1))


def test_cache_errors():
    model = make_lm(max_len=8)
    cache = model.new_cache()
    model(torch.zeros(1, 6, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"3 starting at position 6.*context of 8"):
        model(torch.zeros(1, 3, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match=r"one KVCache per layer \(2\)"):
        model(torch.zeros(1, 2, dtype=torch.long), cache=model.new_cache()[:1])
    with pytest.raises(ValueError, match=r"a KV cache is for a causal stack"):
        make_encoder()(IDS, cache=[])


# --- encoders: padding never reaches a real token -------------------------------------------------


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("positional", ["learned", "sinusoidal"])
def test_encoder_real_outputs_ignore_padding_through_gradients(norm_first, positional):
    model = make_encoder(norm_first=norm_first, positional=positional).eval()
    x, remove = embedding_leaf(model, IDS)
    try:
        (grad,) = torch.autograd.grad((model(IDS) @ probe(D))[REAL].sum(), x)
    finally:
        remove()
    assert torch.all(grad[~REAL] == 0)
    assert torch.all(grad[REAL].abs().sum(-1) > 0)  # and every real token is read


def test_encoder_without_pad_id_reads_the_padding():
    model = make_encoder(pad_id=None).eval()
    x, remove = embedding_leaf(model, IDS)
    try:
        (grad,) = torch.autograd.grad((model(IDS) @ probe(D))[REAL].sum(), x)
    finally:
        remove()
    assert torch.all(grad[~REAL].abs().sum(-1) > 0)  # the control: pads are read


def test_more_padding_does_not_change_real_outputs():
    model = make_encoder().eval()
    with torch.no_grad():
        torch.testing.assert_close(model(IDS)[0, :6], model(IDS[:1, :6])[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_first", [True, False])
def test_encoder_stack_equals_torch_transformer_encoder(norm_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        D, H, 32, dropout=0.0, batch_first=True, norm_first=norm_first
    )
    theirs = nn.TransformerEncoder(
        layer, 2, norm=nn.LayerNorm(D) if norm_first else None, enable_nested_tensor=False
    ).eval()
    randomise(theirs)
    ours = make_encoder(norm_first=norm_first).eval()
    with torch.no_grad():
        for block, their_layer in zip(ours.blocks, theirs.layers, strict=True):
            load_block_from_torch(block, their_layer)
        if norm_first:
            ours.norm_f.load_state_dict(theirs.norm.state_dict())
        x = ours.pos(ours.tok_emb(IDS))  # PyTorch's encoder starts after the embeddings
        expected = theirs(x, src_key_padding_mask=IDS == PAD)  # True = pad
        got = ours(IDS)
    torch.testing.assert_close(got[REAL], expected[REAL], rtol=1e-5, atol=1e-5)


# --- MaskedLM and SequenceClassifier -----------------------------------------------------------


def test_masked_lm_tying_and_loss():
    model = make_mlm()
    assert model.head.output.weight is model.encoder.tok_emb.weight
    untied = make_mlm(tie_weights=False)
    assert untied.num_parameters() == model.num_parameters() + V * D
    logits = model(IDS)
    labels = torch.full_like(IDS, -100)
    labels[0, 2], labels[1, 1] = 6, 9
    expected = F.cross_entropy(logits[[0, 1], [2, 1]], torch.tensor([6, 9]))
    torch.testing.assert_close(mlm_loss(logits, labels), expected)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_classifier_pooling_and_padding(pooling):
    model = SequenceClassifier(make_encoder(), n_classes=3, pooling=pooling).eval()
    with torch.no_grad():
        h = model.encoder(IDS)
        pooled = model.pool(h, IDS)
        if pooling == "cls":
            assert torch.equal(pooled, h[:, 0])
        else:
            for b, n in enumerate(REAL.sum(1).tolist()):
                torch.testing.assert_close(pooled[b], h[b, :n].mean(0))
        before = model(IDS)
        model.encoder.tok_emb.weight[PAD] += 5.0  # every pad row of h changes...
        assert torch.equal(before, model(IDS))  # ...and no logit does


def test_classifier_bad_arguments():
    with pytest.raises(ValueError, match=r"'cls' or 'mean'.*'max'"):
        SequenceClassifier(make_encoder(), 2, pooling="max")
    with pytest.raises(TypeError, match=r"causal=False"):
        SequenceClassifier(make_lm().decoder, 2)


# --- EncoderDecoder --------------------------------------------------------------------------


def test_encode_then_decode_equals_forward():
    model = make_seq2seq().eval()
    memory, src_mask = model.encode(SRC)
    assert memory.shape == (3, 8, D) and src_mask.shape == (3, 1, 1, 8)
    assert torch.equal(model.decode(TGT_IN, memory, src_mask), model(SRC, TGT_IN))


@pytest.mark.parametrize("norm_first", [True, False])
def test_seq2seq_decode_with_cache_equals_full_decode(norm_first):
    model = make_seq2seq(norm_first=norm_first).eval()
    with torch.no_grad():
        memory, src_mask = model.encode(SRC)
        full = model.decode(TGT_IN, memory, src_mask)
        cache = model.new_cache()
        pieces = [model.decode(TGT_IN[:, :2], memory, src_mask, cache=cache)] + [
            model.decode(TGT_IN[:, t : t + 1], memory, src_mask, cache=cache) for t in range(2, 6)
        ]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_seq2seq_embeddings_tied_shared_or_separate():
    model = make_seq2seq()
    assert model.lm_head.weight is model.decoder.tok_emb.weight
    assert model.decoder.tok_emb.weight is not model.encoder.tok_emb.weight
    assert make_seq2seq(tie_weights=False).num_parameters() == model.num_parameters() + V * D
    shared = make_seq2seq(11, 11, share_embeddings=True)
    assert shared.encoder.tok_emb.weight is shared.decoder.tok_emb.weight is shared.lm_head.weight


@pytest.mark.parametrize("norm_first", [True, False])
def test_decoder_is_causal_and_reads_every_real_source_position(norm_first):
    model = make_seq2seq(norm_first=norm_first).eval()
    src_x, remove_src = embedding_leaf(model.encoder, SRC)
    tgt_x, remove_tgt = embedding_leaf(model.decoder, TGT_IN)
    try:
        logits = model(SRC, TGT_IN)
        for t in range(6):
            grad_tgt, grad_src = torch.autograd.grad(
                (logits[:, t] @ probe(V, seed=t)).sum(), (tgt_x, src_x), retain_graph=True
            )
            assert torch.all(grad_tgt[:, t + 1 :] == 0), f"target position {t} sees the future"
            assert torch.all(grad_tgt[:, : t + 1].abs().sum(-1) > 0)
            assert torch.equal(grad_src.abs().sum(-1) > 0, SRC_REAL)
    finally:
        remove_src()
        remove_tgt()


def test_seq2seq_batch_sizes_must_match():
    with pytest.raises(ValueError, match=r"same size B.*\(3, 8\).*\(2, 6\)"):
        make_seq2seq()(SRC, TGT_IN[:2])
    with pytest.raises(ValueError, match=r"ids in \[0, 13\).*id 13"):
        make_seq2seq()(torch.full((1, 3), V_SRC), TGT_IN[:1])


def torch_transformer(norm_first, seed=0):
    """nn.Transformer shaped like make_seq2seq(), weights randomised. Post-LN: nn.Transformer
    always appends a final LayerNorm to each stack, which the 2017 model (and ours) does not
    have; custom stacks with norm=None compute the same function as ours."""
    torch.manual_seed(seed)
    kwargs = dict(dropout=0.0, batch_first=True, norm_first=norm_first)
    if norm_first:
        theirs = nn.Transformer(D, H, 2, 2, 32, **kwargs)
    else:
        enc_layer = nn.TransformerEncoderLayer(D, H, 32, **kwargs)
        dec_layer = nn.TransformerDecoderLayer(D, H, 32, **kwargs)
        theirs = nn.Transformer(
            D, H,
            custom_encoder=nn.TransformerEncoder(enc_layer, 2, norm=None, enable_nested_tensor=False),
            custom_decoder=nn.TransformerDecoder(dec_layer, 2, norm=None),
            **kwargs,
        )  # fmt: skip
    return randomise(theirs, seed).eval()


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm_first", [True, False])
def test_seq2seq_equals_torch_transformer(norm_first):
    theirs = torch_transformer(norm_first)
    ours = make_seq2seq(norm_first=norm_first).eval()
    load_transformer_from_torch(ours, theirs)
    with torch.no_grad():
        # nn.Transformer has no embeddings: feed it ours, then apply our output layer.
        src_x = ours.encoder.pos(ours.encoder.tok_emb(SRC))
        tgt_x = ours.decoder.pos(ours.decoder.tok_emb(TGT_IN))
        h = theirs(
            src_x, tgt_x,
            tgt_mask=to_torch_mask(causal_mask(6)),  # True = blocked
            src_key_padding_mask=SRC == PAD,  # True = pad
            memory_key_padding_mask=SRC == PAD,
        )  # fmt: skip
        torch.testing.assert_close(ours(SRC, TGT_IN), ours.lm_head(h), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_post_ln_torch_transformer_with_its_extra_final_norms_is_refused():
    theirs = nn.Transformer(D, H, 2, 2, 32, batch_first=True, norm_first=False)
    with pytest.raises(ValueError, match=r"no final encoder LayerNorm.*norm=None"):
        load_transformer_from_torch(make_seq2seq(norm_first=False), theirs)
    with pytest.raises(ValueError, match=r"ours has 2 encoder and 2 decoder layers.*3 and 2"):
        load_transformer_from_torch(
            make_seq2seq(), nn.Transformer(D, H, 3, 2, 32, batch_first=True, norm_first=True)
        )


# --- options for real checkpoints ---------------------------------------------------------------


def test_options_for_real_checkpoints_build_what_they_say():
    bert_like = make_encoder(
        norm_first=False, embedding_norm=True, n_token_types=2, layer_norm_eps=1e-12,
        scale_embedding=False, activation="gelu",
    )  # fmt: skip
    assert bert_like.emb_norm.eps == 1e-12 and bert_like.type_emb.num_embeddings == 2
    assert isinstance(bert_like.norm_f, nn.Identity)
    types = torch.zeros_like(IDS)
    types[:, 4:] = 1
    assert not torch.equal(bert_like(IDS, token_type_ids=types), bert_like(IDS))
    gpt2_like = make_lm(activation="gelu_tanh", scale_embedding=False)
    assert gpt2_like.decoder.blocks[0].ff.activation.approximate == "tanh"
    marian_like = make_seq2seq(
        11, 11, norm_first=False, positional="sinusoidal_halves", activation="silu",
        share_embeddings=True, head_bias=True,
    )  # fmt: skip
    assert marian_like.lm_head.bias is not None
    pe = marian_like.decoder.pos.pe  # (max_len, D): sines, then cosines
    torch.testing.assert_close(
        pe[:, : D // 2], torch.sin(pe.new_tensor(0) + pe[:, : D // 2].asin())
    )
    torch.testing.assert_close(pe[0], torch.cat([torch.zeros(D // 2), torch.ones(D // 2)]))
    with pytest.raises(ValueError, match=r"no token_type_ids"):
        make_encoder()(IDS, token_type_ids=types)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_models_run_on_cuda():
    model = make_lm().cuda()
    ids = torch.randint(0, V, (2, 6), device="cuda")
    cache = model.new_cache()
    stepwise = torch.cat([model(ids[:, t : t + 1], cache=cache) for t in range(6)], dim=1)
    torch.testing.assert_close(stepwise, model(ids), rtol=1e-4, atol=1e-4)
    assert make_seq2seq().cuda()(SRC.cuda(), TGT_IN.cuda()).device.type == "cuda"
