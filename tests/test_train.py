"""Tests of tinyformer.train: seeding, the schedule, eval mode, and a tiny training run."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_lm

from tinyformer.objectives import lm_loss
from tinyformer.train import evaluating, set_seed, train, warmup_cosine

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
    a = make_lm(10, seed=None)
    set_seed(0)
    b = make_lm(10, seed=None)
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
    model = make_lm(V, seed=None, n_layers=1, max_len=T).eval()
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
        model = make_lm(V, seed=None, n_layers=1, max_len=T, dropout=0.1)
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
    model = make_lm(V, seed=None, n_layers=1, max_len=T).cuda()

    def get_batch(step):
        inputs, targets = counting_batch(step)
        return inputs.cuda(), targets.cuda()

    history = train(model, get_batch, steps=60, lr=1e-2, warmup_steps=5, progress=False)
    assert sum(history["loss"][-10:]) / 10 < 0.5 < history["loss"][0]


def test_evaluating_switches_to_eval_and_restores_the_mode():
    model = make_lm(dropout=0.5).train()
    with evaluating(model):
        assert not model.training and not model.decoder.blocks[0].dropout.training
    assert model.training
    model.eval()
    with pytest.raises(RuntimeError, match="boom"), evaluating(model):
        raise RuntimeError("boom")
    assert not model.training
