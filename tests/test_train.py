"""Tests of tinyformer.train: seeding, the schedule, the loss, and a tiny training run."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinyformer.decoder import DecoderLM
from tinyformer.train import lm_loss, lm_loss_by_length, set_seed, train, warmup_cosine

PAD = 0

# --- set_seed -----------------------------------------------------------------------------------


def test_set_seed_seeds_everything_and_returns_a_generator():
    def draw(generator):
        legacy_numpy = np.random.rand()  # noqa: NPY002 -- set_seed seeds the global RNG
        return (
            random.random(),
            legacy_numpy,
            torch.rand(1).item(),
            torch.rand(1, generator=generator),
        )

    first = draw(set_seed(123))
    g1 = set_seed(123)
    second = draw(g1)
    assert first == second
    assert isinstance(g1, torch.Generator)


def test_same_seed_same_weights():
    set_seed(0)
    a = DecoderLM(10, d_model=16, n_heads=2, d_ff=32)
    set_seed(0)
    b = DecoderLM(10, d_model=16, n_heads=2, d_ff=32)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


# --- warmup_cosine ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step, expected",
    [
        (0, 0.1),  # first warmup step: 1 / warmup_steps, not 0
        (4, 0.5),
        (9, 1.0),  # warmup reaches the peak
        (10, 1.0),  # cosine starts at the peak
        (60, 0.5 * (1 + 0.2)),  # half-way through the decay: (1 + min_ratio) / 2
        (110, 0.2),  # the end: min_ratio
        (500, 0.2),  # and it stays there
    ],
)
def test_warmup_cosine_key_steps(step, expected):
    assert warmup_cosine(step, warmup_steps=10, total_steps=110, min_ratio=0.2) == pytest.approx(
        expected
    )


def test_warmup_cosine_shape():
    values = [warmup_cosine(s, 10, 110) for s in range(111)]
    assert all(a < b for a, b in zip(values[:9], values[1:10], strict=True))  # rises
    assert all(a >= b for a, b in zip(values[10:], values[11:], strict=False))  # then falls
    assert values[-1] == pytest.approx(0.0)
    assert warmup_cosine(0, 0, 100) == 1.0  # no warmup: start at the peak


def test_warmup_cosine_drives_lambda_lr():
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, 4, 20))
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5])


def test_warmup_cosine_bad_arguments():
    with pytest.raises(ValueError, match=r"warmup_steps=20, total_steps=10"):
        warmup_cosine(0, 20, 10)
    with pytest.raises(ValueError, match=r"min_ratio between 0 and 1, got 1.5"):
        warmup_cosine(0, 0, 10, min_ratio=1.5)


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
    model = DecoderLM(7, d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=9)
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
    model = DecoderLM(7, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=9)
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
    model = DecoderLM(7, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=9)
    inputs, targets = ragged_batch()
    with pytest.raises(ValueError, match=r"same shape \(B, T\).*\(11, 9\) and \(11, 8\)"):
        lm_loss_by_length(model, inputs, targets[:, :-1], PAD)
    with pytest.raises(ValueError, match=r"max_rows >= 1, got 0"):
        lm_loss_by_length(model, inputs, targets, PAD, max_rows=0)
    holey = targets.clone()
    holey[0, 2] = PAD  # a pad before real targets
    with pytest.raises(ValueError, match=r"padding only at the end of each row"):
        lm_loss_by_length(model, inputs, holey, PAD)


# --- a tiny training run ------------------------------------------------------------------------

V, PERIOD, T = 8, 3, 12


def counting_batch(step, B=16):
    """Sequences 1 2 3 1 2 3 ... (tokens 1..PERIOD) from a random phase: a trivial language."""
    g = torch.Generator().manual_seed(step)
    phase = torch.randint(0, PERIOD, (B, 1), generator=g)
    ids = 1 + (phase + torch.arange(T + 1)) % PERIOD
    ids[: B // 4, -3:] = PAD  # some padding at the end, ignored by the loss
    return ids[:, :-1], ids[:, 1:]


def test_training_drives_the_loss_down(capsys):
    set_seed(0)
    model = DecoderLM(V, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=T).eval()
    eval_inputs, eval_targets = counting_batch(10_000)

    def eval_fn(m):
        return {"val_loss": lm_loss(m(eval_inputs), eval_targets, PAD).item()}

    history = train(
        model, counting_batch, steps=60, lr=1e-2, warmup_steps=5, eval_fn=eval_fn,
        eval_every=20, log_every=20,
    )  # fmt: skip
    assert set(history) == {"step", "loss", "lr", "grad_norm", "eval_step", "val_loss"}
    assert history["step"] == list(range(60))
    assert history["eval_step"] == [0, 20, 40, 60]
    assert history["lr"][0] == pytest.approx(1e-2 / 5)
    assert max(history["lr"]) == pytest.approx(1e-2)
    assert history["val_loss"][0] > 1.0  # untrained
    # After the first token the sequence is fully determined: the loss approaches
    # (ln PERIOD) / T per token (only the first prediction is uncertain).
    assert history["val_loss"][-1] < 0.25
    assert history["loss"][-1] < 0.25
    assert not model.training  # the mode it had before is restored
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("step 20/60 | loss ")
    assert all("| val_loss " in line for line in lines)  # evaluated at every logged step


def test_eval_fn_may_not_overwrite_the_history():
    model = torch.nn.Linear(2, 1)
    with pytest.raises(ValueError, match=r"reserved key 'loss'"):
        train(model, lambda s: None, steps=1, lr=0.1, eval_fn=lambda m: {"loss": 1.0})


def test_training_is_deterministic():
    def run():
        set_seed(1)
        model = DecoderLM(V, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=T, dropout=0.1)
        history = train(model, counting_batch, steps=5, lr=1e-2, progress=False)
        return history["loss"], model.state_dict()

    (loss_a, state_a), (loss_b, state_b) = run(), run()
    assert loss_a == loss_b
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def test_custom_loss_fn_and_float_eval():
    set_seed(2)
    model = torch.nn.Linear(3, 1)
    x = torch.randn(64, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]])

    def mse(m, inputs, targets):
        return F.mse_loss(m(inputs), targets)

    history = train(
        model, lambda step: (x, y), steps=200, lr=0.1, loss_fn=mse, weight_decay=0.0,
        eval_fn=lambda m: mse(m, x, y).item(), eval_every=100, progress=False,
    )  # fmt: skip
    assert history["eval_step"] == [0, 100, 200]
    assert history["eval"][-1] < 1e-3 < history["eval"][0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda():
    set_seed(0)
    model = DecoderLM(V, d_model=16, n_heads=2, n_layers=1, d_ff=32, max_len=T).cuda()

    def get_batch(step):
        inputs, targets = counting_batch(step)
        return inputs.cuda(), targets.cuda()

    history = train(model, get_batch, steps=60, lr=1e-2, warmup_steps=5, progress=False)
    assert sum(history["loss"][-10:]) / 10 < 0.5 < history["loss"][0]
