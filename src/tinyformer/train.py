"""Training: seeding, the learning-rate schedule, eval mode, AdamW and a small loop.

Shapes: B batch, T length, V vocab.
"""

import contextlib
import math
import random
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tinyformer.fast import fused_adamw_ok
from tinyformer.objectives import lm_loss


def set_seed(seed: int, device=None) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch; return a fresh torch.Generator seeded alike.

    Pass the generator to ``generate``/``sample_next`` so that sampling does not depend on
    how many random numbers something else consumed. ``device`` (default: CPU) is where the
    generator lives.
    """
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 -- the legacy global RNG is what np.random.* uses
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator() if device is None else torch.Generator(device=device)
    return generator.manual_seed(seed)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier at ``step`` (0-based): linear warmup, then cosine decay.

    Steps 0 .. warmup_steps - 1 climb linearly to 1 ((step + 1) / warmup_steps, so the
    first update is not wasted at 0); from warmup_steps to total_steps the multiplier
    follows half a cosine from 1 down to ``min_ratio``, and stays there afterwards.
    Use with ``torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, w, n))``.
    """
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(
            f"expected 0 <= warmup_steps <= total_steps, got warmup_steps={warmup_steps}, "
            f"total_steps={total_steps}"
        )
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"expected min_ratio between 0 and 1, got {min_ratio}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """``with evaluating(model):`` runs the model in eval mode (no dropout) and restores
    the mode it had afterwards: the one way the package switches modes."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW as the course trains: matrices decay, biases and LayerNorm gains do not."""
    params = list(model.parameters())  # a tied matrix appears once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), fused=fused_adamw_ok(params))


_PER_UPDATE = ("step", "loss", "lr", "grad_norm")  # history keys with one entry per update
_RESERVED = _PER_UPDATE + ("eval_step",)


def train(
    model: nn.Module,
    get_batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]],
    steps: int,
    lr: float,
    warmup_steps: int = 0,
    weight_decay: float = 0.1,
    grad_clip: float | None = 1.0,
    min_lr_ratio: float = 0.1,
    pad_id: int | None = 0,
    loss_fn: Callable | None = None,
    eval_fn: Callable[[nn.Module], float | dict] | None = None,
    eval_every: int = 100,
    log_every: int = 50,
    progress: bool = True,
) -> dict[str, list]:
    """Train ``model`` for ``steps`` updates with AdamW and a warmup-cosine schedule.

    get_batch(step) -> (inputs, targets): e.g. ``ids[:, :-1], ids[:, 1:]``.
    loss_fn(model, inputs, targets) -> scalar loss; the default is the language-model loss
        ``lm_loss(model(inputs), targets, pad_id)``.
    eval_fn(model) -> a float or a dict of floats, run (in eval mode, without gradients)
        before the first update, every ``eval_every`` updates and after the last one.

    Gradients are clipped to norm ``grad_clip`` (None: no clipping); the learning rate
    warms up over ``warmup_steps`` and decays to ``min_lr_ratio * lr``. With ``progress``
    one line is printed every ``log_every`` updates and after the last: the mean train loss
    since the previous line, the learning rate, and eval_fn's results if it ran at that step.

    Returns the history, a dict of lists:
        "step", "loss", "lr", "grad_norm": one entry per update; step = number of updates
            made before that batch's loss was measured (0 .. steps - 1);
        "eval_step": when eval_fn ran (0, eval_every, ..., steps), with its results in
            "eval" (a float result) or under each key of a dict result.
    The model is left in the train/eval mode it had before.
    """
    if loss_fn is None:

        def loss_fn(model, inputs, targets):
            return lm_loss(model(inputs), targets, pad_id)

    optimizer = adamw(model, lr, weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup_steps, steps, min_lr_ratio)
    )
    history = {key: [] for key in _RESERVED}
    was_training = model.training

    if eval_fn is not None:
        _evaluate(model, eval_fn, 0, history)
    for step in range(steps):
        model.train()
        inputs, targets = get_batch(step)
        loss = loss_fn(model, inputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = grad_clip if grad_clip is not None else float("inf")
        grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        history["lr"].append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

        history["step"].append(step)
        history["loss"].append(loss.item())
        history["grad_norm"].append(grad_norm.item())
        done = step + 1  # updates made so far
        if eval_fn is not None and (done % eval_every == 0 or done == steps):
            _evaluate(model, eval_fn, done, history)
        if progress and (done % log_every == 0 or done == steps):
            _print_progress(done, steps, history, log_every)

    model.train(was_training)
    return history


def _evaluate(model, eval_fn, step, history):
    with evaluating(model), torch.no_grad():
        result = eval_fn(model)
    results = result if isinstance(result, dict) else {"eval": result}
    history["eval_step"].append(step)
    for key, value in results.items():
        if key in _RESERVED:
            raise ValueError(f"eval_fn returned the reserved key {key!r}; rename it")
        history.setdefault(key, []).append(float(value))


def _print_progress(done, steps, history, log_every):
    recent = history["loss"][-log_every:]
    line = f"step {done:>{len(str(steps))}}/{steps} | loss {sum(recent) / len(recent):.4f}"
    line += f" | lr {history['lr'][-1]:.2e}"
    if history["eval_step"] and history["eval_step"][-1] == done:  # evaluated just now
        for key in history:
            if key not in _RESERVED:
                line += f" | {key} {history[key][-1]:.4f}"
    print(line, flush=True)
