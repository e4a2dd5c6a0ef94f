"""Tests of tinyformer.seq2seq: the encoder-decoder model, its parity with nn.Transformer,
what each position may read, greedy decoding (with and without the KV cache) and beam search.

Mask conventions are OPPOSITE: ours True = may attend; PyTorch's masks True = blocked (pad).
Comparisons convert with to_torch_mask.
"""

import itertools

import pytest
import torch
from torch import nn

from tinyformer.attention import causal_mask
from tinyformer.compat import load_transformer_from_torch, to_torch_mask
from tinyformer.seq2seq import EncoderDecoder, beam_search, greedy_decode, sequence_log_prob

D, H, F_DIM = 16, 4, 32
V_SRC, V_TGT = 13, 11
PAD, BOS, EOS = 0, 1, 2
# Source rows of real lengths 7, 4 and 1 (then <pad>).
SRC = torch.tensor(
    [
        [1, 5, 6, 7, 8, 9, 2, 0],
        [1, 10, 6, 2, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0, 0],
    ]
)
SRC_REAL = SRC != PAD
TGT_IN = torch.tensor(
    [
        [1, 5, 6, 7, 8, 9],
        [1, 7, 2, 0, 0, 0],
        [1, 9, 9, 3, 4, 5],
    ]
)
B, S, T = 3, 8, 6


def make_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = dict(
        src_vocab_size=V_SRC,
        tgt_vocab_size=V_TGT,
        d_model=D,
        n_heads=H,
        n_encoder_layers=2,
        n_decoder_layers=2,
        d_ff=F_DIM,
        max_len=12,
    )
    return EncoderDecoder(**{**config, **kwargs}).eval()


def random_sources(n, seed, max_len=8):
    """n right-padded source sentences: <bos> words <eos>, real lengths 2..max_len."""
    g = torch.Generator().manual_seed(seed)
    src = torch.full((n, max_len), PAD)
    lengths = torch.randint(2, max_len + 1, (n,), generator=g)
    for i, length in enumerate(lengths.tolist()):
        src[i, 0] = BOS
        src[i, 1 : length - 1] = torch.randint(5, V_SRC, (length - 2,), generator=g)
        src[i, length - 1] = EOS
    return src


def probe(n, seed=3):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


# --- shapes and attention maps -----------------------------------------------------------------


def test_forward_shapes_and_attention_dict():
    model = make_model(n_encoder_layers=3, n_decoder_layers=2)
    logits, attention = model(SRC, TGT_IN, return_attention=True)
    assert logits.shape == (B, T, V_TGT)
    assert set(attention) == {"encoder", "decoder_self", "cross"}
    assert [w.shape for w in attention["encoder"]] == [(B, H, S, S)] * 3
    assert [w.shape for w in attention["decoder_self"]] == [(B, H, T, T)] * 2
    assert [w.shape for w in attention["cross"]] == [(B, H, T, S)] * 2
    for w in attention["cross"]:
        assert torch.all(w.masked_select(~SRC_REAL[:, None, None, :]) == 0)  # pads unread
    # Without the weights the attention runs in PyTorch's fused kernel: same up to rounding.
    torch.testing.assert_close(model(SRC, TGT_IN), logits)


def test_encode_then_decode_equals_forward():
    model = make_model()
    memory, src_mask = model.encode(SRC)
    assert memory.shape == (B, S, D) and src_mask.shape == (B, 1, 1, S)
    assert torch.equal(model.decode(TGT_IN, memory, src_mask), model(SRC, TGT_IN))


@pytest.mark.parametrize("norm_first", [True, False])
def test_decode_with_cache_equals_full_decode(norm_first):
    model = make_model(norm_first=norm_first)
    with torch.no_grad():
        memory, src_mask = model.encode(SRC)
        full = model.decode(TGT_IN, memory, src_mask)
        cache = model.new_cache()
        pieces = [model.decode(TGT_IN[:, :2], memory, src_mask, cache=cache)]
        pieces += [
            model.decode(TGT_IN[:, t : t + 1], memory, src_mask, cache=cache) for t in range(2, T)
        ]
    assert [c.length for c in cache] == [T, T]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=1e-5, atol=1e-5)


def test_tied_target_embedding_and_parameter_count():
    model = make_model()
    assert model.lm_head.weight is model.tok_emb.weight
    assert model.tok_emb.weight is not model.encoder.tok_emb.weight  # two vocabularies
    assert make_model(tie_weights=False).num_parameters() == model.num_parameters() + V_TGT * D


# --- parity with nn.Transformer ----------------------------------------------------------------


def torch_transformer(norm_first, seed=0):
    """nn.Transformer with the same shape as make_model(), weights randomised.

    Post-LN: nn.Transformer always appends a final LayerNorm to its encoder and decoder, which
    the 2017 post-LN model (and ours) does not have; we build it with custom stacks whose
    norm is None, so both compute the same function. Pre-LN: the final norms are our norm_f's.
    """
    torch.manual_seed(seed)
    kwargs = dict(dropout=0.0, batch_first=True, norm_first=norm_first)
    if norm_first:
        theirs = nn.Transformer(D, H, 2, 2, F_DIM, **kwargs)
    else:
        enc_layer = nn.TransformerEncoderLayer(D, H, F_DIM, **kwargs)
        dec_layer = nn.TransformerDecoderLayer(D, H, F_DIM, **kwargs)
        theirs = nn.Transformer(
            D,
            H,
            custom_encoder=nn.TransformerEncoder(
                enc_layer, 2, norm=None, enable_nested_tensor=False
            ),
            custom_decoder=nn.TransformerDecoder(dec_layer, 2, norm=None),
            **kwargs,
        )
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # default init leaves biases 0 and LayerNorms 1/0: randomise all
        for name, p in theirs.named_parameters():
            centre = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))
    return theirs.eval()


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
@pytest.mark.parametrize("norm_first", [True, False])
def test_model_equals_torch_transformer(norm_first):
    theirs = torch_transformer(norm_first)
    ours = make_model(norm_first=norm_first)
    load_transformer_from_torch(ours, theirs)
    with torch.no_grad():
        # nn.Transformer has no embeddings: feed it ours, then apply our output layer.
        src_x = ours.encoder.pos(ours.encoder.tok_emb(SRC))
        tgt_x = ours.pos(ours.tok_emb(TGT_IN))
        h = theirs(
            src_x,
            tgt_x,
            tgt_mask=to_torch_mask(causal_mask(T)),  # True = blocked
            src_key_padding_mask=SRC == PAD,  # True = pad
            memory_key_padding_mask=SRC == PAD,
        )
        expected = ours.lm_head(h)
        got = ours(SRC, TGT_IN)
        memory, _ = ours.encode(SRC)
        their_memory = theirs.encoder(src_x, src_key_padding_mask=SRC == PAD)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(memory[SRC_REAL], their_memory[SRC_REAL], rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:enable_nested_tensor is True")
def test_post_ln_torch_transformer_with_its_extra_final_norms_is_refused():
    theirs = nn.Transformer(D, H, 2, 2, F_DIM, batch_first=True, norm_first=False)
    with pytest.raises(ValueError, match=r"no final encoder LayerNorm.*norm=None"):
        load_transformer_from_torch(make_model(norm_first=False), theirs)
    with pytest.raises(ValueError, match=r"ours has 2 encoder and 2 decoder layers.*3 and 2"):
        load_transformer_from_torch(
            make_model(), nn.Transformer(D, H, 3, 2, F_DIM, batch_first=True, norm_first=True)
        )


# --- padding, causality and cross attention, through gradients ---------------------------------


@pytest.mark.parametrize("norm_first", [True, False])
def test_padded_source_tokens_change_nothing(norm_first):
    """What sits at padded source positions (here: the pad embedding) cannot reach the output."""
    model = make_model(norm_first=norm_first)
    with torch.no_grad():
        before = model(SRC, TGT_IN)
        model.encoder.tok_emb.weight[PAD] += 50 * probe(D)
        if model.encoder.positional == "learned":
            model.encoder.pos.weight[S - 1] += 50 * probe(D, 4)  # a position only pads use
        after = model(SRC, TGT_IN)
    assert torch.equal(before, after)


def test_padding_the_source_further_changes_nothing():
    model = make_model()
    longer = torch.cat([SRC, torch.full((B, 3), PAD)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(longer, TGT_IN), model(SRC, TGT_IN), rtol=0, atol=1e-6)
    alone = model(SRC[1:2, :4], TGT_IN[1:2])  # the 4-token sentence without any padding
    torch.testing.assert_close(alone, model(SRC, TGT_IN)[1:2], rtol=0, atol=1e-5)


@pytest.mark.parametrize("norm_first", [True, False])
def test_decoder_is_causal_and_reads_every_real_source_position(norm_first):
    model = make_model(norm_first=norm_first)
    src_x = model.encoder.tok_emb(SRC).detach().requires_grad_()
    tgt_x = model.tok_emb(TGT_IN).detach().requires_grad_()
    src_hook = model.encoder.tok_emb.register_forward_hook(lambda m, i, o: src_x)
    tgt_hook = model.tok_emb.register_forward_hook(lambda m, i, o: tgt_x)
    try:
        logits = model(SRC, TGT_IN)
        for t in range(T):
            grad_tgt, grad_src = torch.autograd.grad(
                (logits[:, t] @ probe(V_TGT, t)).sum(), (tgt_x, src_x), retain_graph=True
            )
            assert torch.all(grad_tgt[:, t + 1 :] == 0), f"target position {t} sees the future"
            assert torch.all(grad_tgt[:, : t + 1].abs().sum(-1) > 0)
            reads = grad_src.abs().sum(-1) > 0  # (B, S)
            assert torch.equal(reads, SRC_REAL), f"target position {t} reads source {reads}"
    finally:
        src_hook.remove()
        tgt_hook.remove()


# --- greedy decoding ---------------------------------------------------------------------------


def decoding_model(seed, norm_first=True, tgt_vocab_size=V_TGT, gain=2.0, eos_bias=1.0):
    """An untrained model whose outputs depend on the source and end at varied lengths.

    A freshly initialised model predicts nearly the same thing everywhere. Larger random
    weights (gain / sqrt(fan_in)) make its next-token distributions vary, and an output
    layer with a bias on <eos> makes outputs end at varied lengths, so decoding has real
    choices to make. (Not every seed gives a lively model; DECODING_SEEDS are ones that do,
    and the tests check the liveliness they rely on.)
    """
    model = make_model(seed=seed, norm_first=norm_first, tgt_vocab_size=tgt_vocab_size)
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * gain / p.shape[1] ** 0.5)
        model.lm_head = nn.Linear(D, tgt_vocab_size)  # untied, with a bias
        model.lm_head.weight.copy_(torch.randn(tgt_vocab_size, D, generator=g) * gain / D**0.5)
        model.lm_head.bias.zero_()
        model.lm_head.bias[EOS] = eos_bias
    return model.eval()


# (seed, norm_first) pairs that give lively decoding models.
DECODING_SEEDS = [(1, True), (3, True), (3, False)]
N_NEW = 8  # max_new_tokens in the decoding tests


def output_lengths(tokens, n):
    """Generated tokens up to and including <eos> (n when there is none)."""
    ended = (tokens[:, 1:] == EOS).any(1)
    return torch.where(ended, (tokens[:, 1:] == EOS).float().argmax(1) + 1, n)


@pytest.mark.parametrize(("seed", "norm_first"), DECODING_SEEDS)
def test_greedy_with_kv_cache_equals_greedy_without(seed, norm_first):
    model = decoding_model(seed, norm_first)
    src = random_sources(48, seed=10 + seed)
    tokens, scores = greedy_decode(model, src, N_NEW, BOS, EOS, PAD, return_scores=True)
    tokens_nc, scores_nc = greedy_decode(
        model, src, N_NEW, BOS, EOS, PAD, use_cache=False, return_scores=True
    )
    assert torch.equal(tokens, tokens_nc)
    torch.testing.assert_close(scores, scores_nc)
    assert len(set(output_lengths(tokens, N_NEW).tolist())) >= 3  # varied lengths were tested
    assert len(set(map(tuple, tokens.tolist()))) >= 10  # and varied outputs


def test_greedy_output_format_and_scores():
    model = decoding_model(*DECODING_SEEDS[0])
    src = random_sources(48, seed=11)
    tokens, scores = greedy_decode(model, src, N_NEW, BOS, EOS, PAD, return_scores=True)
    assert tokens.dtype == torch.long and tokens[:, 0].eq(BOS).all()
    for row in tokens.tolist():
        if EOS in row:
            assert all(tok == PAD for tok in row[row.index(EOS) + 1 :])  # pad after <eos>
    torch.testing.assert_close(scores, sequence_log_prob(model, src, tokens, EOS))
    # Each greedy token is the argmax given its prefix: one teacher-forced pass agrees.
    with torch.no_grad():
        logits = model(src, tokens[:, :-1])
    steps = torch.arange(tokens.shape[1] - 1)
    real = steps[None, :] < output_lengths(tokens, tokens.shape[1] - 1)[:, None]
    assert torch.equal(logits.argmax(-1)[real], tokens[:, 1:][real])


def test_decoding_stops_when_every_sentence_has_ended():
    model = decoding_model(*DECODING_SEEDS[1])
    src = random_sources(48, seed=12)
    tokens = greedy_decode(model, src, N_NEW, BOS, EOS, PAD)
    ended = output_lengths(tokens, N_NEW) < N_NEW
    assert 5 <= int(ended.sum()) < 48
    shortest = greedy_decode(model, src[ended], N_NEW, BOS, EOS, PAD)
    assert shortest.shape[1] == 1 + int(output_lengths(tokens[ended], N_NEW).max()) < 1 + N_NEW
    beam_tokens, _ = beam_search(model, src[ended], 1, N_NEW, BOS, EOS, PAD)
    assert torch.equal(beam_tokens, shortest)


def test_decoding_restores_training_mode():
    model = make_model(dropout=0.1).train()
    greedy_decode(model, SRC, 4, BOS, EOS, PAD)
    beam_search(model, SRC, 2, 4, BOS, EOS, PAD)
    assert model.training


# --- beam search -------------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "norm_first"), DECODING_SEEDS)
def test_beam_of_one_is_greedy(seed, norm_first):
    model = decoding_model(seed, norm_first)
    src = random_sources(48, seed=10 + seed)
    tokens, scores = beam_search(model, src, 1, N_NEW, BOS, EOS, PAD)
    greedy_tokens, greedy_scores = greedy_decode(
        model, src, N_NEW, BOS, EOS, PAD, return_scores=True
    )
    assert torch.equal(tokens, greedy_tokens)
    torch.testing.assert_close(scores, greedy_scores)


@pytest.mark.parametrize(
    ("seed", "norm_first", "beam_size"), [(1, True, 2), (1, True, 4), (3, True, 3), (3, False, 4)]
)
def test_beam_scores_at_least_greedy(seed, norm_first, beam_size):
    model = decoding_model(seed, norm_first)
    src = random_sources(48, seed=20 + seed)
    tokens, scores = beam_search(model, src, beam_size, N_NEW, BOS, EOS, PAD)
    greedy_tokens = greedy_decode(model, src, N_NEW, BOS, EOS, PAD)
    greedy_scores = sequence_log_prob(model, src, greedy_tokens, EOS)  # the model's own
    # The returned score is the model's own log-probability of the returned output.
    torch.testing.assert_close(scores, sequence_log_prob(model, src, tokens, EOS))
    assert torch.all(scores >= greedy_scores - 1e-5)
    assert (scores > greedy_scores + 1e-3).float().mean() > 0.2  # the search finds better


def test_plain_beam_can_fall_below_greedy():
    """Why include_greedy exists: greedy's prefix can be pruned by prefixes that end worse."""
    model = decoding_model(7, True)
    src = random_sources(48, seed=27)
    _, greedy_scores = greedy_decode(model, src, N_NEW, BOS, EOS, PAD, return_scores=True)
    _, plain = beam_search(model, src, 4, N_NEW, BOS, EOS, PAD, include_greedy=False)
    _, guarded = beam_search(model, src, 4, N_NEW, BOS, EOS, PAD)
    worse = plain < greedy_scores - 1e-5
    assert 0 < int(worse.sum()) < 5  # rare, but it happens
    torch.testing.assert_close(guarded[worse], greedy_scores[worse])
    torch.testing.assert_close(guarded[~worse], plain[~worse])


def all_outputs(V, n):
    """Every distinct output of at most n tokens: <bos> y1 .. (cut after the first <eos>)."""
    outputs = set()
    for seq in itertools.product(range(V), repeat=n):
        seq = list(seq)
        if EOS in seq:
            end = seq.index(EOS)
            seq = seq[: end + 1] + [PAD] * (n - end - 1)
        outputs.add(tuple([BOS, *seq]))
    return torch.tensor(sorted(outputs))


@pytest.mark.parametrize("seed", [0, 1])
def test_beam_finds_the_exact_best_output_on_a_tiny_vocabulary(seed):
    """With V = 5 and 4 steps there are at most 5^4 outputs: score them all by teacher forcing."""
    V, n = 5, 4
    model = decoding_model(seed, tgt_vocab_size=V)
    candidates = all_outputs(V, n)  # (N, 1 + n)
    for src in random_sources(3, seed=seed):
        src = src[None]
        scores = sequence_log_prob(model, src.expand(len(candidates), -1), candidates, EOS)
        best = candidates[scores.argmax()]
        # A beam of V^(n-1) keeps every prefix until the last step: the search is exhaustive.
        tokens, score = beam_search(model, src, V ** (n - 1), n, BOS, EOS, PAD)
        width = tokens.shape[1]
        assert tokens[0].tolist() == best[:width].tolist()
        assert all(tok == PAD for tok in best[width:].tolist())
        torch.testing.assert_close(score[0], scores.max())
        # A small beam need not be exact, but never beats the true maximum.
        _, small = beam_search(model, src, 2, n, BOS, EOS, PAD)
        assert small[0] <= scores.max() + 1e-5


def test_length_penalty_prefers_longer_outputs():
    model = decoding_model(*DECODING_SEEDS[1])
    src = random_sources(48, seed=5)
    plain, plain_scores = beam_search(model, src, 4, N_NEW, BOS, EOS, PAD)
    longer, longer_scores = beam_search(model, src, 4, N_NEW, BOS, EOS, PAD, length_penalty=1.0)
    # alpha = 0 maximises the plain sum; alpha = 1 trades some of it for length.
    assert torch.all(longer_scores <= plain_scores + 1e-5)
    assert torch.all(output_lengths(longer, N_NEW) >= output_lengths(plain, N_NEW))
    assert torch.any(output_lengths(longer, N_NEW) > output_lengths(plain, N_NEW))
    torch.testing.assert_close(longer_scores, sequence_log_prob(model, src, longer, EOS))


# --- bad input ---------------------------------------------------------------------------------


def test_source_and_target_batch_sizes_must_match():
    with pytest.raises(ValueError, match=r"same size B.*\(3, 8\).*\(2, 6\)"):
        make_model()(SRC, TGT_IN[:2])


def test_memory_must_fit_the_decoder():
    model = make_model()
    memory, src_mask = model.encode(SRC)
    with pytest.raises(ValueError, match=r"\(3, S, 16\).*\(2, 8, 16\)"):
        model.decode(TGT_IN, memory[:2], src_mask[:2])
    with pytest.raises(ValueError, match=r"\(3, S, 16\).*\(3, 8, 8\)"):
        model.decode(TGT_IN, memory[..., :8], src_mask)
    with pytest.raises(ValueError, match=r"src_mask.*torch\.bool.*torch\.int64"):
        model.decode(TGT_IN, memory, src_mask.long())


def test_too_long_sequences():
    model = make_model(max_len=6)
    with pytest.raises(ValueError, match=r"length 8 exceeds the model's context of 6"):
        model(SRC, TGT_IN)  # the source is too long
    with pytest.raises(ValueError, match=r"target sequence of length 7.*context of 6"):
        model(SRC[:, :6], torch.ones(3, 7, dtype=torch.long))
    with pytest.raises(ValueError, match=r"max_new_tokens <= the model's context of 6.*got 7"):
        greedy_decode(model, SRC[:, :6], 7, BOS, EOS, PAD)
    with pytest.raises(ValueError, match=r"max_new_tokens.*got 7"):
        beam_search(model, SRC[:, :6], 2, 7, BOS, EOS, PAD)


def test_wrong_dtypes():
    model = make_model()
    with pytest.raises(ValueError, match=r"torch\.long, got torch\.float32"):
        model(SRC.float(), TGT_IN)
    with pytest.raises(
        ValueError, match=r"target token ids of dtype torch\.long, got torch\.int32"
    ):
        model(SRC, TGT_IN.int())
    with pytest.raises(ValueError, match=r"source token ids.*torch\.long.*torch\.float32"):
        greedy_decode(model, SRC.float(), 4, BOS, EOS, PAD)
    memory, src_mask = model.encode(SRC)
    with pytest.raises(ValueError, match=r"floating-point.*torch\.int64"):
        model.decode(TGT_IN, memory.long(), src_mask)


def test_bad_decoding_arguments():
    model = make_model()
    with pytest.raises(ValueError, match=r"integer beam_size >= 1, got 0"):
        beam_search(model, SRC, 0, 4, BOS, EOS, PAD)
    with pytest.raises(ValueError, match=r"eos_id in \[0, 11\).*got 11"):
        greedy_decode(model, SRC, 4, BOS, V_TGT, PAD)
    with pytest.raises(ValueError, match=r"length_penalty >= 0, got -1"):
        beam_search(model, SRC, 2, 4, BOS, EOS, PAD, length_penalty=-1.0)


# --- devices -----------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decoding_on_cuda_matches_cpu():
    model = decoding_model(*DECODING_SEEDS[0])
    src = random_sources(32, seed=3)
    cpu_greedy = greedy_decode(model, src, N_NEW, BOS, EOS, PAD)
    cpu_beam, cpu_scores = beam_search(model, src, 4, N_NEW, BOS, EOS, PAD)
    model = model.cuda()
    gpu_greedy = greedy_decode(model, src.cuda(), N_NEW, BOS, EOS, PAD)
    gpu_beam, gpu_scores = beam_search(model, src.cuda(), 4, N_NEW, BOS, EOS, PAD)
    assert gpu_greedy.device.type == "cuda" and gpu_beam.device.type == "cuda"
    assert torch.equal(gpu_greedy.cpu(), cpu_greedy)
    assert torch.equal(gpu_beam.cpu(), cpu_beam)
    torch.testing.assert_close(gpu_scores.cpu(), cpu_scores, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_batched_beam_equals_one_sentence_at_a_time(length_penalty):
    """Sentences leave the batch as they finish; that must not change any answer."""
    model = decoding_model(*DECODING_SEEDS[1])
    src = random_sources(8, seed=7)
    tokens, scores = beam_search(model, src, 3, N_NEW, BOS, EOS, PAD, length_penalty)
    assert 1 < len(set(output_lengths(tokens, N_NEW).tolist()))  # they end at varied steps
    for i in range(len(src)):
        one, one_score = beam_search(model, src[i : i + 1], 3, N_NEW, BOS, EOS, PAD, length_penalty)
        width = one.shape[1]
        assert torch.equal(tokens[i, :width], one[0])
        assert torch.all(tokens[i, width:] == PAD)
        torch.testing.assert_close(scores[i], one_score[0], rtol=1e-5, atol=1e-5)
