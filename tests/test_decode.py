"""Tests of tinyformer.decode: sampling rules, the step loop (KV cache == no cache), greedy
translation, beam search (its finished pool, checked against brute force), bad arguments."""

import itertools
from types import SimpleNamespace

import pytest
import torch
from conftest import make_lm, make_seq2seq
from torch import nn

from tinyformer.config import TransformerConfig
from tinyformer.decode import (
    beam_search,
    generate,
    greedy_decode,
    sample_next,
    sequence_log_prob,
)
from tinyformer.train import set_seed

V, BOS, EOS, PAD = 13, 1, 2, 0
N_NEW = 8


def lm(seed=0, **overrides):
    return make_lm(V, seed=seed, **{"max_len": 24, **overrides}).eval()


def bos_prompt(B=4):
    return torch.full((B, 1), BOS, dtype=torch.long)


# --- sample_next ------------------------------------------------------------------------------


def test_temperature_zero_is_argmax_and_top_1_is_argmax():
    logits = torch.randn(5, V)
    assert torch.equal(sample_next(logits, temperature=0.0), logits.argmax(-1))
    got = sample_next(logits, temperature=3.0, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, logits.argmax(-1))


def test_top_k_only_samples_the_k_largest():
    logits = torch.randn(3, V, generator=torch.Generator().manual_seed(1))
    allowed = torch.topk(logits, 3, dim=-1).indices
    drawn = sample_next(logits.repeat(300, 1), 5.0, 3, torch.Generator().manual_seed(2))
    for row in range(3):
        assert set(drawn.view(300, 3)[:, row].tolist()) == set(allowed[row].tolist())


def test_top_k_keeps_every_token_tied_with_the_kth():
    # Logits 3, 2, 2, 2, 0: with top_k=2 the k-th largest is 2, shared by three tokens.
    logits = torch.tensor([[3.0, 2.0, 2.0, 2.0, 0.0]])
    drawn = sample_next(logits.repeat(2000, 1), 1.0, 2, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0, 1, 2, 3}  # the tied ones all stay; token 4 never
    # Greedy's tie rule: the lowest id.
    assert sample_next(torch.tensor([[1.0, 5.0, 5.0]]), temperature=0).item() == 1


def test_sampling_follows_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).log_softmax(-1)
    draws = sample_next(logits.repeat(4000, 1), generator=torch.Generator().manual_seed(3))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    torch.testing.assert_close(freq, logits[0].softmax(-1), atol=0.03, rtol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-1), r"temperature >= 0.*got -1"),
        (dict(temperature=float("nan")), r"temperature to be a number >= 0, got nan"),
        (dict(temperature=float("inf")), r"finite temperature"),
        (dict(temperature=1e-6), r"temperature 0 \(greedy\) or >= 1e-4, got 1e-06"),
        (dict(temperature=True), r"temperature to be a number"),
        (dict(top_k=0), r"top_k to be a positive int, got 0"),
        (dict(top_k=True), r"top_k to be a positive int, got True"),
        (dict(top_k=2.5), r"top_k to be a positive int, got 2.5"),
        (dict(top_k=V + 1), rf"top_k between 1 and the vocabulary size {V}, got {V + 1}"),
    ],
)
def test_sample_next_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        sample_next(torch.zeros(1, V), **kwargs)


def test_sample_next_bad_logits():
    with pytest.raises(ValueError, match=r"\(B, V\).*\(2, 3, 4\)"):
        sample_next(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match=r"\(B, V\), got list"):
        sample_next([[0.0, 1.0]])


# --- generate: the KV cache changes nothing --------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(
    "temperature, top_k", [(1.0, None), (1.0, 5), (0.7, 3), (0.0, None)], ids=str
)
def test_cached_generation_equals_uncached(seed, temperature, top_k):
    model = lm(seed)
    prompt = torch.randint(3, V, (3, 4), generator=torch.Generator().manual_seed(seed))
    kwargs = dict(max_new_tokens=15, temperature=temperature, top_k=top_k)
    cached = generate(model, prompt, generator=set_seed(seed), use_cache=True, **kwargs)
    uncached = generate(model, prompt, generator=set_seed(seed), use_cache=False, **kwargs)
    assert cached.shape == (3, 19) and torch.equal(cached[:, :4], prompt)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("positional, norm_first", [("sinusoidal", True), ("learned", False)])
def test_cached_generation_equals_uncached_other_architectures(positional, norm_first):
    model = lm(5, positional=positional, norm_first=norm_first)
    kwargs = dict(max_new_tokens=20, top_k=6, eos_id=EOS, pad_id=PAD)
    cached = generate(model, bos_prompt(), generator=set_seed(7), **kwargs)
    uncached = generate(model, bos_prompt(), generator=set_seed(7), use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_seeds_reproduce_samples():
    model = lm()
    a = generate(model, bos_prompt(8), 20, generator=set_seed(11))
    b = generate(model, bos_prompt(8), 20, generator=set_seed(11))
    c = generate(model, bos_prompt(8), 20, generator=set_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)


def eos_heavy_model():
    """A model that says <eos> with probability ~0.3 at every step."""
    model = lm()
    with torch.no_grad():
        model.lm_head = nn.Linear(16, V, bias=True)
        model.lm_head.weight.zero_()
        model.lm_head.bias.zero_()
        model.lm_head.bias[EOS] = 2.5
    return model


def test_pad_after_eos_and_early_stop():
    out = generate(eos_heavy_model(), bos_prompt(6), 20, eos_id=EOS, pad_id=PAD,
                   generator=set_seed(0))  # fmt: skip
    for row in out[:, 1:].tolist():
        assert EOS in row
        end = row.index(EOS)
        assert all(t == PAD for t in row[end + 1 :]) and PAD not in row[:end]
    assert (out[:, -1] == EOS).any() and out.shape[1] < 21  # stopped when the last one ended


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(max_new_tokens=0), ValueError, r"max_new_tokens to be a positive int, got 0"),
        (dict(max_new_tokens=2.0), ValueError, r"max_new_tokens to be a positive int, got 2.0"),
        (dict(eos_id=EOS), ValueError, r"pad_id to emit after eos_id=2, got pad_id=None"),
        (dict(eos_id=V, pad_id=PAD), ValueError, rf"eos_id to be an int in \[0, {V}\), got {V}"),
        (dict(eos_id=EOS, pad_id=-1), ValueError, rf"pad_id to be an int in \[0, {V}\), got -1"),
        (dict(temperature=float("nan")), ValueError, r"temperature"),
        (dict(top_k=True), ValueError, r"top_k to be a positive int, got True"),
        (dict(max_new_tokens=24), ValueError, r"1 tokens \+ 24 new tokens = 25.*context of 24"),
    ],
)
def test_generate_checks_every_argument_before_generating(kwargs, error, message):
    args = {"max_new_tokens": 5, **kwargs}
    with pytest.raises(error, match=message):
        generate(lm(), bos_prompt(), **args)


def test_generate_bad_prompts():
    with pytest.raises(ValueError, match=r"prompt of dtype torch\.long, got torch\.float32"):
        generate(lm(), torch.ones(1, 3), 2)
    with pytest.raises(TypeError, match=r"prompt to be a torch\.Tensor"):
        generate(lm(), [[1, 2]], 2)
    with pytest.raises(ValueError, match=rf"prompt in \[0, {V}\).*id {V}"):
        generate(lm(), torch.full((1, 2), V), 2)


def test_generate_restores_training_mode_and_returns_an_ordinary_tensor():
    model = lm(dropout=0.1).train()
    a = generate(model, bos_prompt(), 5, generator=set_seed(0))
    b = generate(model, bos_prompt(), 5, generator=set_seed(0), use_cache=False)
    assert model.training and torch.equal(a, b)  # dropout was off while generating
    model(a[:, :-1]).logsumexp(-1).mean().backward()  # the output can feed a training step


# --- translation: greedy ---------------------------------------------------------------------


def decoding_model(seed, norm_first=True, tgt_vocab_size=11, gain=2.0, eos_bias=1.0):
    """An untrained encoder-decoder whose outputs depend on the source and end at varied
    lengths: larger random weights make its next-token distributions vary, and a bias on
    <eos> makes outputs end at varied lengths, so decoding has real choices to make."""
    model = make_seq2seq(13, tgt_vocab_size, seed=seed, norm_first=norm_first, tie_weights=False,
                         head_bias=True)  # fmt: skip
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * gain / p.shape[1] ** 0.5)
        model.lm_head.bias.zero_()
        model.lm_head.bias[EOS] = eos_bias
    return model.eval()


def random_sources(n, seed, max_len=8):
    """n right-padded source sentences: <bos> words <eos>, real lengths 2..max_len."""
    g = torch.Generator().manual_seed(seed)
    src = torch.full((n, max_len), PAD)
    for i, length in enumerate(torch.randint(2, max_len + 1, (n,), generator=g).tolist()):
        src[i, 0], src[i, length - 1] = BOS, EOS
        src[i, 1 : length - 1] = torch.randint(5, 13, (length - 2,), generator=g)
    return src


def output_lengths(tokens, n):
    """Generated tokens up to and including <eos> (n when there is none)."""
    ended = (tokens[:, 1:] == EOS).any(1)
    return torch.where(ended, (tokens[:, 1:] == EOS).float().argmax(1) + 1, n)


DECODING_SEEDS = [(1, True), (3, True), (3, False)]


@pytest.mark.parametrize(("seed", "norm_first"), DECODING_SEEDS)
def test_greedy_with_kv_cache_equals_greedy_without(seed, norm_first):
    model = decoding_model(seed, norm_first)
    src = random_sources(48, seed=10 + seed)
    tokens, scores = greedy_decode(model, src, N_NEW, BOS, EOS, PAD)
    tokens_nc, scores_nc = greedy_decode(model, src, N_NEW, BOS, EOS, PAD, use_cache=False)
    assert torch.equal(tokens, tokens_nc)
    torch.testing.assert_close(scores, scores_nc)
    assert len(set(output_lengths(tokens, N_NEW).tolist())) >= 3  # varied lengths were tested
    assert len(set(map(tuple, tokens.tolist()))) >= 8  # and varied outputs


def test_greedy_output_format_and_scores():
    model = decoding_model(*DECODING_SEEDS[0])
    src = random_sources(48, seed=11)
    tokens, scores = greedy_decode(model, src, N_NEW, BOS, EOS, PAD)
    assert tokens.dtype == torch.long and tokens[:, 0].eq(BOS).all()
    for row in tokens.tolist():
        if EOS in row:
            assert all(tok == PAD for tok in row[row.index(EOS) + 1 :])
    torch.testing.assert_close(scores, sequence_log_prob(model, src, tokens, EOS))
    with torch.no_grad():  # each greedy token is the argmax given its prefix
        logits = model(src, tokens[:, :-1])
    steps = torch.arange(tokens.shape[1] - 1)
    real = steps[None, :] < output_lengths(tokens, tokens.shape[1] - 1)[:, None]
    assert torch.equal(logits.argmax(-1)[real], tokens[:, 1:][real])


def test_decoding_restores_training_mode():
    model = make_seq2seq(dropout=0.1).train()
    src = random_sources(3, seed=0)
    greedy_decode(model, src, 4, BOS, EOS, PAD)
    beam_search(model, src, 2, 4, BOS, EOS, PAD)
    assert model.training


# --- beam search: the finished pool, against brute force ---------------------------------------


class TableModel(nn.Module):
    """A stand-in encoder-decoder whose next-token log-probabilities come from a fixed table
    indexed by the previous token: p(y_t | y_<t) = table[y_{t-1}]. Small enough to enumerate
    every output, so beam search can be checked against brute force."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = table.log()  # (V, V): row = previous token
        V = table.shape[0]
        self.config = TransformerConfig(vocab_size=V, src_vocab_size=V, max_len=16, d_model=4,
                                        n_heads=1)  # fmt: skip

    def encode(self, src):
        return src[..., None].float(), None  # (B, S, 1): unused

    def new_cache(self):
        return [SimpleNamespace(select=lambda rows: None)]

    def decode(self, tgt_in, memory, src_mask, cache=None):
        return self.table[tgt_in]  # (B, T, V)

    def forward(self, src, tgt_in):
        return self.decode(tgt_in, None, None)


def brute_force_best(model, n, alpha=0.0):
    """The best (rank, score, output) over every output of at most n generated tokens: a
    finished one (words, then <eos>) or, when the budget runs out, n words without <eos>."""
    V = model.config.vocab_size
    words = [t for t in range(V) if t not in (EOS, PAD)]
    outputs = [[BOS, *body, EOS] for L in range(n) for body in itertools.product(words, repeat=L)]
    outputs += [[BOS, *body] for body in itertools.product(words, repeat=n)]
    best = (float("-inf"), None, None)
    for seq in outputs:
        score = sum(float(model.table[a, b]) for a, b in itertools.pairwise(seq))
        rank = score / (len(seq) - 1) ** alpha
        if rank > best[0]:
            best = (rank, score, seq)
    return best


def trap_table():
    """From <bos>: <eos> with 0.3, else 'a' or 'b' with 0.35 each; after 'a' or 'b' the next
    token is spread over many words. The best output is '<eos>' at once (0.3), but with K = 2
    the two live prefixes 'a' and 'b' outrank it at the first step: a search that keeps
    finished hypotheses in the beam drops it, a separate pool keeps it."""
    V = 9  # 0 pad, 1 bos, 2 eos, 3 a, 4 b, 5..8 other words
    table = torch.full((V, V), 1e-9)
    table[BOS, EOS], table[BOS, 3], table[BOS, 4] = 0.3, 0.35, 0.35
    for prev in range(3, V):
        table[prev, 3:] = 0.9 / (V - 3)
        table[prev, EOS] = 0.1
    table[EOS, PAD] = table[PAD, PAD] = 1.0
    return table / table.sum(-1, keepdim=True)


def test_beam_keeps_a_finished_hypothesis_that_live_prefixes_outrank():
    model = TableModel(trap_table())
    src = torch.ones(1, 3, dtype=torch.long)
    tokens, score = beam_search(model, src, beam_size=2, max_new_tokens=4, bos_id=BOS,
                                eos_id=EOS, pad_id=PAD)  # fmt: skip
    rank, best_score, best = brute_force_best(model, 4)
    assert tokens[0].tolist()[:2] == [BOS, EOS] == best
    torch.testing.assert_close(score[0], torch.tensor(best_score))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_wide_enough_finds_the_brute_force_best(seed, alpha):
    V, n = 6, 4
    g = torch.Generator().manual_seed(seed)
    table = torch.rand(V, V, generator=g) ** 3 + 1e-3
    table[:, BOS] = table[:, PAD] = 1e-9
    table = table / table.sum(-1, keepdim=True)
    model = TableModel(table)
    src = torch.ones(1, 2, dtype=torch.long)
    rank, best_score, best = brute_force_best(model, n, alpha)
    # A beam as wide as the number of prefixes keeps them all: the search is exhaustive.
    tokens, score = beam_search(model, src, V ** (n - 1), n, BOS, EOS, PAD, alpha)
    torch.testing.assert_close(score[0], torch.tensor(best_score), rtol=1e-5, atol=1e-5)
    # The output is one of the best (several outputs can tie: same transitions, other order).
    found = [t for t in tokens[0].tolist() if t != PAD]
    own = sum(float(model.table[a, b]) for a, b in itertools.pairwise(found))
    assert own == pytest.approx(best_score, abs=1e-5) and (EOS in found) == (EOS in best)
    # A narrow beam never claims more than the true best.
    _, narrow = beam_search(model, src, 2, n, BOS, EOS, PAD, alpha)
    assert narrow[0] <= best_score + 1e-5 or alpha > 0


@pytest.mark.parametrize(("seed", "norm_first"), DECODING_SEEDS)
def test_beam_of_one_is_greedy_that_remembers_finished_hypotheses(seed, norm_first):
    """K = 1 follows greedy's path (the best word that does not end), and ends with greedy's
    output or with a finished hypothesis met on the way that scores higher."""
    model = decoding_model(seed, norm_first)
    src = random_sources(48, seed=10 + seed)
    tokens, scores = beam_search(model, src, 1, N_NEW, BOS, EOS, PAD)
    greedy_tokens, greedy_scores = greedy_decode(model, src, N_NEW, BOS, EOS, PAD)
    assert torch.all(scores >= greedy_scores - 1e-5)
    same = scores <= greedy_scores + 1e-5
    width = tokens.shape[1]
    assert torch.equal(tokens[same], greedy_tokens[same, :width])
    assert 0 < int((~same).sum())  # the pool did rescue some sentences
    # A rescued output is a prefix of greedy's path, ended early by <eos>.
    for row, greedy_row in zip(tokens[~same].tolist(), greedy_tokens[~same].tolist(), strict=True):
        end = row.index(EOS)
        assert row[:end] == greedy_row[:end]


@pytest.mark.parametrize(("seed", "beam_size"), [(1, 2), (1, 4), (3, 3)])
def test_beam_scores_are_the_models_own_and_mostly_beat_greedy(seed, beam_size):
    model = decoding_model(seed)
    src = random_sources(48, seed=20 + seed)
    tokens, scores = beam_search(model, src, beam_size, N_NEW, BOS, EOS, PAD)
    _, greedy_scores = greedy_decode(model, src, N_NEW, BOS, EOS, PAD)
    torch.testing.assert_close(scores, sequence_log_prob(model, src, tokens, EOS))
    assert (scores > greedy_scores + 1e-3).float().mean() > 0.2  # the search finds better


def test_length_penalty_prefers_longer_outputs():
    model = decoding_model(*DECODING_SEEDS[1])
    src = random_sources(48, seed=5)
    plain, plain_scores = beam_search(model, src, 4, N_NEW, BOS, EOS, PAD)
    longer, longer_scores = beam_search(model, src, 4, N_NEW, BOS, EOS, PAD, length_penalty=1.0)
    assert torch.all(longer_scores <= plain_scores + 1e-5)
    assert torch.all(output_lengths(longer, N_NEW) >= output_lengths(plain, N_NEW))
    assert torch.any(output_lengths(longer, N_NEW) > output_lengths(plain, N_NEW))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_batched_beam_equals_one_sentence_at_a_time(length_penalty):
    """Sentences leave the batch as they finish; that must not change any answer."""
    model = decoding_model(*DECODING_SEEDS[1])
    src = random_sources(8, seed=7)
    tokens, scores = beam_search(model, src, 3, N_NEW, BOS, EOS, PAD, length_penalty)
    assert 1 < len(set(output_lengths(tokens, N_NEW).tolist()))
    for i in range(len(src)):
        one, one_score = beam_search(model, src[i : i + 1], 3, N_NEW, BOS, EOS, PAD, length_penalty)
        width = one.shape[1]
        assert torch.equal(tokens[i, :width], one[0]) and torch.all(tokens[i, width:] == PAD)
        torch.testing.assert_close(scores[i], one_score[0], rtol=1e-5, atol=1e-5)


# --- bad arguments ---------------------------------------------------------------------------


def test_bad_translation_arguments():
    model = make_seq2seq(max_len=6)
    src = random_sources(3, seed=0, max_len=6)
    with pytest.raises(ValueError, match=r"beam_size to be a positive int, got 0"):
        beam_search(model, src, 0, 4, BOS, EOS, PAD)
    with pytest.raises(ValueError, match=r"eos_id to be an int in \[0, 11\), got 11"):
        greedy_decode(model, src, 4, BOS, 11, PAD)
    with pytest.raises(ValueError, match=r"finite length_penalty >= 0, got -1"):
        beam_search(model, src, 2, 4, BOS, EOS, PAD, length_penalty=-1.0)
    with pytest.raises(ValueError, match=r"max_new_tokens <= the model's context of 6.*got 7"):
        greedy_decode(model, src, 7, BOS, EOS, PAD)
    with pytest.raises(ValueError, match=r"src of dtype torch\.long, got torch\.float32"):
        greedy_decode(model, src.float(), 4, BOS, EOS, PAD)
    with pytest.raises(TypeError, match=r"encoder-decoder model, got DecoderLM"):
        greedy_decode(lm(), src, 4, BOS, EOS, PAD)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decoding_on_cuda_matches_cpu():
    model = decoding_model(*DECODING_SEEDS[0])
    src = random_sources(32, seed=3)
    cpu_greedy, _ = greedy_decode(model, src, N_NEW, BOS, EOS, PAD)
    cpu_beam, cpu_scores = beam_search(model, src, 4, N_NEW, BOS, EOS, PAD)
    model = model.cuda()
    gpu_greedy, _ = greedy_decode(model, src.cuda(), N_NEW, BOS, EOS, PAD)
    gpu_beam, gpu_scores = beam_search(model, src.cuda(), 4, N_NEW, BOS, EOS, PAD)
    assert torch.equal(gpu_greedy.cpu(), cpu_greedy) and torch.equal(gpu_beam.cpu(), cpu_beam)
    torch.testing.assert_close(gpu_scores.cpu(), cpu_scores, rtol=1e-4, atol=1e-4)
    lm_cuda = lm().cuda()
    kwargs = dict(max_new_tokens=15, top_k=5, eos_id=EOS, pad_id=PAD)
    cached = generate(lm_cuda, bos_prompt().cuda(), generator=set_seed(3), **kwargs)
    uncached = generate(lm_cuda, bos_prompt().cuda(), generator=set_seed(3), use_cache=False,
                        **kwargs)  # fmt: skip
    assert torch.equal(cached, uncached)
