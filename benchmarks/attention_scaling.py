"""How the cost of causal self-attention grows with the sequence length T.

For each T, one forward + backward pass of multi-head causal self-attention, timed for
three implementations of the same function, side by side in one process:

- ``plain``: the attention of the book written out here in plain torch,
  softmax(Q K^T / sqrt(d_k)) with the causal mask, times V;
- ``tinyformer``: ``tinyformer.attention.MultiHeadAttention`` with ``causal_mask(T)``,
  inside ``record_attention``, which keeps its weights as the chapters do to draw them (so
  on its written-out path; outside ``record_attention`` the module hands the core to
  ``F.scaled_dot_product_attention``);
- ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention(..., is_causal=True)``,
  PyTorch's fused kernel.

All three use the same four projection matrices (those of the tinyformer module), so they
compute the same numbers and differ only in how the attention core is computed. A fourth
series, ``feed_forward``, times the position-wise feed-forward network (D -> 4 D -> D) at
the same T: a cost linear in T, for comparison. The slope of log(time) against log(T)
over the longest lengths is fitted for each series: about 2 means the T x T score matrix
dominates, about 1 means the per-position work does.

Run: ``python benchmarks/attention_scaling.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from common import log, measure, parse_args, pick_device, synchronize, write_json

from tinyformer.attention import MultiHeadAttention, causal_mask, record_attention
from tinyformer.layers import FeedForward

LENGTHS = (64, 128, 256, 512, 1024, 2048)
QUICK_LENGTHS = (64, 128)
BATCH, D_MODEL, N_HEADS = 1, 128, 4
SLOPE_POINTS = 3  # fit the slope over this many of the longest lengths


def plain_attention(q, k, v, mask):
    """softmax(q k^T / sqrt(d_k)) v with a boolean mask (True = may attend), written out.

    q, k, v: (B, H, T, d_k); mask: (T, T) -> (B, H, T, d_k).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, H, T, T)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def multi_head(mha: MultiHeadAttention, x: torch.Tensor, core) -> torch.Tensor:
    """The projections of ``mha`` around another attention core: x (B, T, D) -> (B, T, D)."""
    q = mha._split_heads(mha.q_proj(x))  # (B, H, T, d_k)
    k = mha._split_heads(mha.k_proj(x))
    v = mha._split_heads(mha.v_proj(x))
    return mha.out_proj(mha._merge_heads(core(q, k, v)))


def recorded(mha: MultiHeadAttention, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mha(x, mask=mask)`` inside ``record_attention``: the written-out path, weights kept."""
    with record_attention(mha):
        return mha(x, mask=mask)


def forward_backward(module: torch.nn.Module, x: torch.Tensor, forward, grad: torch.Tensor):
    """One training-style pass: forward, backward into the input and the weights."""

    def step():
        module.zero_grad(set_to_none=True)
        x.grad = None
        forward(x).backward(grad)

    return step


def slope(lengths, seconds) -> float:
    """Least-squares slope of log(seconds) against log(T)."""
    return float(np.polyfit(np.log(lengths), np.log(seconds), 1)[0])


def peak_memory(step, device: torch.device) -> int | None:
    """Peak GPU memory (bytes) allocated by one call beyond what was allocated before."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = pick_device()
    lengths = QUICK_LENGTHS if args.quick else LENGTHS
    repeats = 3 if args.quick else 7
    torch.manual_seed(0)
    mha = MultiHeadAttention(D_MODEL, N_HEADS).to(device)
    ff = FeedForward(D_MODEL, 4 * D_MODEL).to(device)

    series = {name: [] for name in ("plain", "tinyformer", "sdpa", "feed_forward")}
    memory = {name: [] for name in series}
    max_abs_diff = []
    for T in lengths:
        x = torch.randn(BATCH, T, D_MODEL, device=device, requires_grad=True)
        grad = torch.randn(BATCH, T, D_MODEL, device=device)
        mask = causal_mask(T, device=device)  # (T, T), True = may attend

        forwards = {
            "plain": lambda x, mask=mask: multi_head(
                mha, x, lambda q, k, v: plain_attention(q, k, v, mask)
            ),
            "tinyformer": lambda x, mask=mask: recorded(mha, x, mask),
            "sdpa": lambda x: multi_head(
                mha, x, lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)
            ),
            "feed_forward": ff,
        }
        with torch.no_grad():
            outs = [forwards[name](x) for name in ("plain", "tinyformer", "sdpa")]
        max_abs_diff.append(max(float((o - outs[0]).abs().max()) for o in outs[1:]))

        for name, forward in forwards.items():
            module = ff if name == "feed_forward" else mha
            step = forward_backward(module, x, forward, grad)
            timing = measure(step, device, repeats=repeats, budget=10.0)
            series[name].append(timing)
            memory[name].append(peak_memory(step, device))
            log(f"T={T:5d}  {name:12s} {timing['median_s'] * 1e3:9.3f} ms  (forward + backward)")

    n = min(SLOPE_POINTS, len(lengths))
    slopes = {
        name: slope(lengths[-n:], [t["median_s"] for t in timings[-n:]])
        for name, timings in series.items()
    }
    for name, s in slopes.items():
        log(f"slope of log time vs log T over T = {list(lengths[-n:])}: {name:12s} {s:.2f}")

    element = torch.finfo(torch.float32).bits // 8
    write_json(
        "attention_scaling",
        {
            "quick": args.quick,
            "what": "forward + backward of causal multi-head self-attention, seconds per call",
            "config": {
                "batch": BATCH,
                "d_model": D_MODEL,
                "n_heads": N_HEADS,
                "d_k": D_MODEL // N_HEADS,
                "d_ff": 4 * D_MODEL,
                "dtype": "float32",
                "device": device.type,
            },
            "lengths": list(lengths),
            "results": {
                name: {
                    "median_s": [t["median_s"] for t in timings],
                    "min_s": [t["min_s"] for t in timings],
                    "calls": [len(t["rounds_s"]) * t["number"] for t in timings],
                    "peak_memory_bytes": memory[name],
                }
                for name, timings in series.items()
            },
            "slope_lengths": list(lengths[-n:]),
            "slopes": slopes,
            # One (T, T) matrix of float32 scores per head and sequence, per layer.
            "score_matrix_bytes": [BATCH * N_HEADS * T * T * element for T in lengths],
            "max_abs_diff_between_implementations": max_abs_diff,
        },
        args.out,
        device,
    )


if __name__ == "__main__":
    main()
