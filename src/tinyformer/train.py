"""Training: seeding, the learning-rate schedule, the language-model loss and a small loop.

Shapes: B batch, T length, V vocab.
"""

import math
import random
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


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


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """Mean cross-entropy (nats per token) over every non-pad target.

    logits (B, T, V), targets (B, T) long -> a scalar.

    The caller shifts: for a batch ``ids`` the model reads ``ids[:, :-1]`` and the targets
    are ``ids[:, 1:]``. Every real target counts, <eos> included, so a perfect model of a
    language reaches that language's entropy per token. Pad targets are ignored
    (``pad_id=None`` ignores nothing). Equals ``F.cross_entropy(..., ignore_index=pad_id)``.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, T, V) and targets (B, T), got logits {tuple(logits.shape)} "
            f"and targets {tuple(targets.shape)}"
        )
    ignore_index = -100 if pad_id is None else pad_id
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index
    )


def lm_loss_by_length(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    pad_id: int,
    max_rows: int = 96,
) -> torch.Tensor:
    """``lm_loss(model(inputs), targets, pad_id)``, without running the model on padding.

    inputs, targets (B, T) long, each row's real tokens first and ``pad_id`` after them
    (as ``Vocab.batch`` pads) -> a scalar, differentiable like ``lm_loss``.

    A batch is padded to its longest row, so in a batch of short and long sentences much of
    the work is on padding. Here the rows are sorted by length and cut into
    ceil(B / max_rows) groups of similar length, each trimmed to its own longest row; the
    per-token losses are summed over the groups and divided by the number of real targets.
    For a CAUSAL model this is exact (up to rounding): position t reads positions <= t
    only, so the padding after a row never changes the outputs at its real positions. A
    model that reads the whole row (an encoder) would need its padding masked out instead.

    Each group is a separate forward pass, so small batches (B <= max_rows) gain nothing
    and run as one group.
    """
    if inputs.shape != targets.shape or inputs.dim() != 2 or inputs.shape[0] == 0:
        raise ValueError(
            f"expected inputs and targets of the same shape (B, T) with B >= 1, got "
            f"{tuple(inputs.shape)} and {tuple(targets.shape)}"
        )
    if max_rows < 1:
        raise ValueError(f"expected max_rows >= 1, got {max_rows}")
    real = targets != pad_id  # (B, T)
    if (real[:, 1:] & ~real[:, :-1]).any():
        raise ValueError(
            "expected padding only at the end of each row, got a real target after a pad"
        )
    lengths = real.sum(dim=1)  # (B,) real targets per row
    n_groups = -(-inputs.shape[0] // max_rows)  # ceil(B / max_rows)
    total = 0.0
    for rows in lengths.argsort().chunk(n_groups):  # row indices, shortest rows first
        T_group = max(int(lengths[rows].max()), 1)  # this group's longest row
        logits = model(inputs[rows, :T_group])  # (B_group, T_group, V)
        total = total + F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets[rows, :T_group].reshape(-1),
            ignore_index=pad_id,
            reduction="sum",
        )
    return total / real.sum()


def _adamw(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    # Decay matrices (weights, embeddings) only; biases and LayerNorm gains stay undecayed.
    params = list(model.parameters())  # a tied matrix appears once
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    # The fused kernel updates every parameter in one call instead of a dozen small
    # operations per parameter: the same AdamW, and up to a quarter off a small model's
    # training step on a CPU. It exists for CPU and CUDA tensors only.
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), fused=fused)


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

    optimizer = _adamw(model, lr, weight_decay)
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


@torch.no_grad()
def _evaluate(model, eval_fn, step, history):
    model.eval()
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
