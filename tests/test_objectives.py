"""Tests of tinyformer.objectives: the LM loss, BERT's masking (15 %, 80/10/10), the MLM loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from tinyformer.objectives import IGNORE_INDEX, lm_loss, mask_tokens, mlm_loss
from tinyformer.vocab import Vocab

PAD = 0

# --- lm_loss ------------------------------------------------------------------------------------


def padded_batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=g)
    targets = torch.randint(1, 7, (3, 5), generator=g)
    targets[0, 3:] = PAD
    targets[2, 1:] = PAD
    return logits, targets


def test_lm_loss_equals_cross_entropy_with_ignore_index():
    logits, targets = padded_batch()
    expected = F.cross_entropy(logits.reshape(-1, 7), targets.reshape(-1), ignore_index=PAD)
    torch.testing.assert_close(lm_loss(logits, targets, PAD), expected)


def test_lm_loss_is_mean_over_real_tokens():
    logits, targets = padded_batch()
    log_probs = logits.log_softmax(-1).gather(-1, targets[..., None])[..., 0]
    real = targets != PAD
    expected = -(log_probs * real).sum() / real.sum()
    torch.testing.assert_close(lm_loss(logits, targets, PAD), expected)


def test_lm_loss_ignores_logits_at_pad_targets():
    logits, targets = padded_batch()
    changed = logits.clone()
    changed[targets == PAD] = torch.randn(int((targets == PAD).sum()), 7) * 100
    assert torch.equal(lm_loss(changed, targets, PAD), lm_loss(logits, targets, PAD))


def test_lm_loss_of_uniform_prediction_is_log_vocab():
    logits = torch.zeros(2, 4, 9)
    targets = torch.randint(1, 9, (2, 4))
    assert lm_loss(logits, targets, PAD).item() == pytest.approx(math.log(9))


def test_lm_loss_shape_mismatch():
    with pytest.raises(ValueError, match=r"logits \(2, 4, 9\) and targets \(2, 5\)"):
        lm_loss(torch.zeros(2, 4, 9), torch.zeros(2, 5, dtype=torch.long), PAD)


def test_a_batch_without_real_targets_is_an_error_not_nan():
    with pytest.raises(ValueError, match=r"at least one target that is not pad_id=0"):
        lm_loss(torch.zeros(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), PAD)
    with pytest.raises(ValueError, match=r"at least one masked position"):
        mlm_loss(torch.zeros(2, 3, 5), torch.full((2, 3), IGNORE_INDEX))


def test_loss_arguments_are_checked():
    with pytest.raises(TypeError, match=r"targets to be a torch\.Tensor, got list"):
        lm_loss(torch.zeros(1, 2, 5), [[1, 2]], PAD)
    with pytest.raises(ValueError, match=r"targets of dtype torch\.long, got torch\.float32"):
        lm_loss(torch.zeros(1, 2, 5), torch.ones(1, 2), PAD)
    with pytest.raises(ValueError, match=r"\(B, T, V\).*\(3, 8, 11\).*\(3, 7\)"):
        mlm_loss(torch.zeros(3, 8, 11), torch.zeros(3, 7, dtype=torch.long))


def test_mlm_loss_is_cross_entropy_at_the_chosen_positions():
    logits = torch.randn(2, 4, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.full((2, 4), IGNORE_INDEX)
    labels[0, 2], labels[1, 1] = 6, 3
    expected = F.cross_entropy(logits[[0, 1], [2, 1]], torch.tensor([6, 3]))
    torch.testing.assert_close(mlm_loss(logits, labels), expected)


# --- mask_tokens: BERT's 15 % with 80/10/10 ---------------------------------------------------


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
    with pytest.raises(ValueError, match=r"ids in \[0, 25\).*got id 25"):
        mask_tokens(ids, VOCAB)
