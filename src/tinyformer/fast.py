"""Speed: the optimisations the benchmarks use, each equal to a simple version elsewhere.

The modules the chapters send you to hold the simple code. What is here computes the same
thing faster, and ``tests/test_fast.py`` checks each against its simple twin; the appendix
*Cost and speed* measures what each buys.

* :class:`BufferedKVCache` -- ``attention.KVCache`` without copying: keys and values are
  written into a buffer that doubles when full.
* :func:`lm_loss_by_length` -- ``objectives.lm_loss(model(inputs), ...)`` without running a
  causal model on the padding of a batch of mixed lengths.
* :func:`fused_adamw_ok` -- when ``train.adamw`` may use PyTorch's fused AdamW kernel.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tinyformer.attention import KVCache

__all__ = ["BufferedKVCache", "fused_adamw_ok", "lm_loss_by_length"]


class BufferedKVCache(KVCache):
    """A KV cache that writes each new position into spare room instead of concatenating.

    ``KVCache.append`` concatenates, copying all T_past cached positions at every step:
    O(T^2) copying for a T-token sequence. Here the keys live in a buffer with room to
    spare, which doubles when full, and ``k`` is a view of its first T_past positions, so
    one step writes one token's keys. When autograd is recording (a cached forward that
    will be backpropagated) it concatenates like its parent: writing into a buffer that
    earlier steps' graphs still read would invalidate them.

    Use it through ``model.new_cache()``'s result type: ``[BufferedKVCache() for _ in
    model.decoder.blocks]`` (``benchmarks/generation.py`` does).
    """

    def __init__(self) -> None:  # no super().__init__(): k and v are views here
        self._k: torch.Tensor | None = None  # (B, H, capacity, d_k)
        self._v: torch.Tensor | None = None
        self._length = 0

    @property
    def length(self) -> int:
        return self._length

    @property
    def k(self) -> torch.Tensor | None:
        return None if self._k is None else self._k[:, :, : self._length]

    @property
    def v(self) -> torch.Tensor | None:
        return None if self._v is None else self._v[:, :, : self._length]

    def append(self, k_new: torch.Tensor, v_new: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        T_past, T_new = self._length, k_new.shape[-2]
        if torch.is_grad_enabled() and (k_new.requires_grad or v_new.requires_grad):
            self._k = k_new if self._k is None else torch.cat([self.k, k_new], dim=-2)
            self._v = v_new if self._v is None else torch.cat([self.v, v_new], dim=-2)
        else:
            if self._k is None or T_past + T_new > self._k.shape[-2]:
                self._grow(k_new, max(T_past + T_new, 2 * T_past))
            self._k[:, :, T_past : T_past + T_new] = k_new
            self._v[:, :, T_past : T_past + T_new] = v_new
        self._length = T_past + T_new
        return self.k, self.v

    def _grow(self, like: torch.Tensor, capacity: int) -> None:
        """Move the cached positions into new buffers of ``capacity`` positions."""
        B, H, _, d_k = like.shape
        k, v = like.new_empty(B, H, capacity, d_k), like.new_empty(B, H, capacity, d_k)
        if self._k is not None:
            k[:, :, : self._length] = self.k
            v[:, :, : self._length] = self.v
        self._k, self._v = k, v

    def select(self, rows: torch.Tensor) -> None:
        if self._k is not None:
            self._k, self._v = self._k[rows], self._v[rows]


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


def fused_adamw_ok(params: list[nn.Parameter]) -> bool:
    """Whether PyTorch's fused AdamW kernel can update ``params``.

    The fused kernel updates every parameter in one call instead of a dozen small
    operations per parameter: the same AdamW up to float rounding. On our shared 2-core
    CPU the appendix *Cost and speed* measured the fused update tens of times faster
    than PyTorch's for-loop AdamW (the factor varies widely with the machine's load);
    for a small model on a batch of 64 the for-loop update is a large share of a
    training step. It exists for floating-point CPU and CUDA tensors only.
    """
    return all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
