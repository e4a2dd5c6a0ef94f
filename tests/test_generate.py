"""Tests of tinyformer.generate: sampling rules, eos handling, KV cache == no cache, seeds."""

import pytest
import torch

from tinyformer.decoder import DecoderLM
from tinyformer.generate import generate, sample_next
from tinyformer.train import set_seed

V, BOS, EOS, PAD = 13, 1, 2, 0


def make_model(seed=0, **kwargs):
    torch.manual_seed(seed)
    config = dict(vocab_size=V, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=24)
    return DecoderLM(**{**config, **kwargs}).eval()


def bos_prompt(B=4):
    return torch.full((B, 1), BOS, dtype=torch.long)


# --- sample_next ------------------------------------------------------------------------------


def test_temperature_zero_is_argmax():
    logits = torch.randn(5, V)
    assert torch.equal(sample_next(logits, temperature=0.0), logits.argmax(-1))


def test_top_1_is_argmax_at_any_temperature():
    logits = torch.randn(5, V)
    got = sample_next(logits, temperature=3.0, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, logits.argmax(-1))


def test_top_k_only_samples_the_k_largest():
    logits = torch.randn(3, V, generator=torch.Generator().manual_seed(1))
    allowed = torch.topk(logits, 3, dim=-1).indices
    many = logits.repeat(300, 1)  # 300 independent draws per row, in one call
    drawn = sample_next(many, 5.0, top_k=3, generator=torch.Generator().manual_seed(2))
    drawn = drawn.view(300, 3)
    for row in range(3):
        assert set(drawn[:, row].tolist()) == set(allowed[row].tolist())


def test_sampling_follows_the_softmax():
    logits = torch.tensor([[0.0, 1.0, 2.0]]).log_softmax(-1)
    draws = sample_next(logits.repeat(4000, 1), generator=torch.Generator().manual_seed(3))
    freq = torch.bincount(draws, minlength=3).float() / len(draws)
    torch.testing.assert_close(freq, logits[0].softmax(-1), atol=0.03, rtol=0)


def test_sample_next_bad_input():
    with pytest.raises(ValueError, match=r"temperature >= 0.*got -1"):
        sample_next(torch.zeros(1, V), temperature=-1)
    with pytest.raises(ValueError, match=rf"top_k between 1 and the vocabulary size {V}, got 0"):
        sample_next(torch.zeros(1, V), top_k=0)
    with pytest.raises(ValueError, match=r"\(B, V\).*\(2, 3, 4\)"):
        sample_next(torch.zeros(2, 3, 4))


# --- generate: the KV cache changes nothing -----------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize(
    "temperature, top_k", [(1.0, None), (1.0, 5), (0.7, 3), (0.0, None)], ids=str
)
def test_cached_generation_equals_uncached(seed, temperature, top_k):
    model = make_model(seed)
    prompt = torch.randint(3, V, (3, 4), generator=torch.Generator().manual_seed(seed))
    kwargs = dict(max_new_tokens=15, temperature=temperature, top_k=top_k)
    cached = generate(model, prompt, generator=set_seed(seed), use_cache=True, **kwargs)
    uncached = generate(model, prompt, generator=set_seed(seed), use_cache=False, **kwargs)
    assert cached.shape == (3, 19)
    assert torch.equal(cached[:, :4], prompt)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("positional, norm_first", [("sinusoidal", True), ("learned", False)])
def test_cached_generation_equals_uncached_other_architectures(positional, norm_first):
    model = make_model(5, positional=positional, norm_first=norm_first)
    kwargs = dict(max_new_tokens=20, top_k=6, eos_id=EOS, pad_id=PAD)
    cached = generate(model, bos_prompt(), generator=set_seed(7), **kwargs)
    uncached = generate(model, bos_prompt(), generator=set_seed(7), use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_same_seed_same_samples_different_seed_different_samples():
    model = make_model()
    a = generate(model, bos_prompt(8), 20, generator=set_seed(11))
    b = generate(model, bos_prompt(8), 20, generator=set_seed(11))
    c = generate(model, bos_prompt(8), 20, generator=set_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_global_seed_reproduces_without_generator():
    model = make_model()
    set_seed(5)
    a = generate(model, bos_prompt(), 10)
    set_seed(5)
    b = generate(model, bos_prompt(), 10)
    assert torch.equal(a, b)


# --- end of sequence --------------------------------------------------------------------------


def eos_heavy_model():
    """A model that says <eos> with probability ~0.3 at every step."""
    model = make_model()
    with torch.no_grad():
        bias = torch.zeros(V)
        bias[EOS] = 2.5
        model.lm_head = torch.nn.Linear(16, V, bias=True)
        model.lm_head.weight.zero_()
        model.lm_head.bias.copy_(bias)
    return model


def test_pad_after_eos_and_early_stop():
    model = eos_heavy_model()
    out = generate(model, bos_prompt(6), 20, eos_id=EOS, pad_id=PAD, generator=set_seed(0))
    generated = out[:, 1:]
    assert out.shape[1] <= 21
    for row in generated.tolist():
        assert EOS in row, "every sequence ended (eos is likely)"
        end = row.index(EOS)
        assert all(token == PAD for token in row[end + 1 :])
        assert PAD not in row[:end]
    # Stopped as soon as the last sequence ended: the final column holds an eos.
    assert (generated[:, -1] == EOS).any()
    assert out.shape[1] < 21


def test_eos_needs_pad_id():
    with pytest.raises(ValueError, match=r"pad_id to emit after eos_id=2, got pad_id=None"):
        generate(make_model(), bos_prompt(), 5, eos_id=EOS)


def test_generation_cannot_exceed_context():
    model = make_model(max_len=10)
    with pytest.raises(ValueError, match=r"3 tokens \+ 8 new tokens = 11.*context of 10"):
        generate(model, torch.ones(1, 3, dtype=torch.long), 8)
    assert generate(model, torch.ones(1, 3, dtype=torch.long), 7).shape == (1, 10)


def test_bad_prompt():
    with pytest.raises(ValueError, match=r"torch\.long.*torch\.float32"):
        generate(make_model(), torch.ones(1, 3), 2)


def test_generated_ids_can_train_the_model():
    """generate runs in inference mode, but what it returns is an ordinary tensor: it can
    be the input of a training step (an inference tensor would raise in backward)."""
    model = make_model().train()
    ids = generate(model, bos_prompt(), 6, generator=torch.Generator().manual_seed(0))
    assert not ids.is_inference()
    model(ids[:, :-1]).logsumexp(-1).mean().backward()
    assert model.tok_emb.weight.grad is not None


def test_generate_restores_training_mode():
    model = make_model(dropout=0.1).train()
    a = generate(model, bos_prompt(), 5, generator=set_seed(0))
    b = generate(model, bos_prompt(), 5, generator=set_seed(0), use_cache=False)
    assert model.training
    assert torch.equal(a, b)  # dropout was off while generating


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("generator_device", ["cpu", "cuda"])
def test_cached_equals_uncached_on_cuda(generator_device):
    model = make_model().cuda()
    prompt = bos_prompt().cuda()
    kwargs = dict(max_new_tokens=15, top_k=5, eos_id=EOS, pad_id=PAD)
    cached = generate(model, prompt, generator=set_seed(3, generator_device), **kwargs)
    uncached = generate(
        model, prompt, generator=set_seed(3, generator_device), use_cache=False, **kwargs
    )
    assert cached.device.type == "cuda"
    assert torch.equal(cached, uncached)
