"""Checks at the door: the shared helpers the public entry points use to validate input.

Every public function or ``forward`` checks its arguments once, with these helpers, and
raises an error naming the argument, what was expected and what arrived. The code behind
the door trusts its callers.
"""

from __future__ import annotations

import math

import torch

__all__ = ["check_positive_int", "check_token_ids", "check_vocab_id"]


def check_positive_int(value, name: str) -> int:
    """An int >= 1 (not a bool, not a float): returned unchanged, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected {name} to be a positive int, got {value!r}")
    return value


def check_vocab_id(value, name: str, vocab_size: int) -> int:
    """A token id of a vocabulary of ``vocab_size``: an int in [0, vocab_size)."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < vocab_size:
        raise ValueError(f"expected {name} to be an int in [0, {vocab_size}), got {value!r}")
    return value


def check_token_ids(ids, vocab_size: int, name: str = "ids") -> torch.Tensor:
    """Token ids must be a (B, T) long tensor, T >= 1, every id in [0, vocab_size).

    The range check reads the ids' minimum and maximum. On the CPU that is cheap; on a GPU
    it would make the host wait for the device at every call (a synchronisation), which
    slows training. So on other devices the range is not checked here: an id out of range
    then fails inside the embedding lookup (on CUDA, a "device-side assert"); run the same
    batch on the CPU, or call this function on it, to get the clear message. The same holds
    inside ``torch.compile``, where reading a value would split the compiled graph.
    """
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"expected {name} to be a torch.Tensor (B, T), got {type(ids).__name__}")
    if ids.dtype != torch.long:
        raise ValueError(f"expected {name} of dtype torch.long, got {ids.dtype}")
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise ValueError(
            f"expected {name} of shape (B, T) with T >= 1, got shape {tuple(ids.shape)}"
        )
    # Inside torch.compile the check would break the graph: compiled code skips it.
    if ids.device.type == "cpu" and ids.numel() > 0 and not torch.compiler.is_compiling():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab_size:
            bad = hi if hi >= vocab_size else lo
            raise ValueError(
                f"expected {name} in [0, {vocab_size}) for a vocabulary of size {vocab_size}, "
                f"got id {bad}"
            )
    return ids


def check_temperature(value) -> float:
    """A sampling temperature: 0 (greedy) or a finite float large enough to divide by."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"expected temperature to be a number >= 0, got {value!r}")
    if value < 0 or math.isinf(value):
        raise ValueError(f"expected a finite temperature >= 0 (0 = greedy), got {value!r}")
    if 0 < value < 1e-4:
        # logits / 1e-5 overflow float32's range for logits of size ~1e34; long before that
        # the softmax is one-hot anyway. Say greedy instead.
        raise ValueError(
            f"expected temperature 0 (greedy) or >= 1e-4, got {value!r}: below 1e-4 sampling "
            "is greedy decoding with a risk of overflow"
        )
    return float(value)
