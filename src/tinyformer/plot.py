"""Figures used throughout the book: attention heatmaps and loss curves.

Matplotlib only. Nothing here changes global style (no ``plt.style.use``, no rcParams):
every function draws on the axes it is given, or on a new figure it creates.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes

__all__ = ["plot_attention", "plot_loss_curve"]


def _to_numpy(a) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def plot_attention(
    weights,
    x_labels: Sequence[str],
    y_labels: Sequence[str],
    ax: Axes | None = None,
    title: str | None = None,
) -> Axes:
    """Heatmap of one head's attention weights ``(T_q, T_k)``.

    Row i shows where query ``y_labels[i]`` looks; column j is key ``x_labels[j]``.
    The colour scale is fixed to [0, 1] (weights are probabilities), so heatmaps drawn
    side by side are comparable.
    """
    w = _to_numpy(weights)
    if w.ndim != 2:
        raise ValueError(f"expected weights of shape (T_q, T_k), got shape {w.shape}")
    T_q, T_k = w.shape
    if len(x_labels) != T_k or len(y_labels) != T_q:
        raise ValueError(
            f"expected {T_k} x_labels (keys) and {T_q} y_labels (queries) for weights of shape "
            f"{w.shape}, got {len(x_labels)} and {len(y_labels)}"
        )
    if ax is None:
        size = 0.35 * max(T_q, T_k) + 2.0
        _, ax = plt.subplots(figsize=(size + 1.0, size))

    image = ax.imshow(w, cmap="Blues", vmin=0.0, vmax=1.0, aspect="equal")
    ax.set_xticks(range(T_k), labels=list(x_labels), rotation=90)
    ax.set_yticks(range(T_q), labels=list(y_labels))
    ax.set_xlabel("key (attended to)")
    ax.set_ylabel("query (attending)")
    if title is not None:
        ax.set_title(title)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="attention weight")
    return ax


def plot_loss_curve(
    steps,
    losses,
    limit: float | None = None,
    ax: Axes | None = None,
    label: str | None = None,
) -> Axes:
    """Loss (nats/token) against training step, with an optional dashed line at ``limit``.

    ``limit`` is the best achievable loss, e.g. the toy language's entropy per token.
    Call again with the same ``ax`` to add more curves (train, validation, ...).
    """
    steps, losses = _to_numpy(steps), _to_numpy(losses)
    if steps.shape != losses.shape or steps.ndim != 1:
        raise ValueError(
            f"expected steps and losses as two 1-d sequences of equal length, got shapes "
            f"{steps.shape} and {losses.shape}"
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(6.0, 3.5))

    ax.plot(steps, losses, label=label)
    # Draw the limit once, even when several curves share the axes.
    drawn = any(line.get_gid() == f"limit={limit}" for line in ax.get_lines())
    if limit is not None and not drawn:
        ax.axhline(
            limit,
            color="black",
            linestyle="--",
            linewidth=1.0,
            label=f"limit {limit:.3f}",
            gid=f"limit={limit}",
        )
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(True, alpha=0.3)
    if label is not None or limit is not None:
        ax.legend()
    return ax
