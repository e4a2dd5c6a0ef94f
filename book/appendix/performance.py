# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["remove-cell"]
# Colab only: install the course's package, tinyformer, from its repository, and clone the
# repository too: this page reads the measurements in benchmarks/results/.
# Everywhere else this cell does nothing (`make test` and `make notebooks` install it).
import os
import subprocess
import sys

if "google.colab" in sys.modules:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "tinyformer @ git+https://github.com/tinyformer/transformers-from-scratch@main",
        ],
        check=True,
    )
    CLONE = "/content/transformers-from-scratch"
    if not os.path.isdir(CLONE):
        subprocess.run(
            [
                "git",
                "clone",
                "--depth",
                "1",
                "https://github.com/tinyformer/transformers-from-scratch",
                CLONE,
            ],
            check=True,
        )
    os.chdir(CLONE)

# %% [markdown]
# # Cost and speed
#
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/appendix/performance.ipynb">Open in Colab</a> · runs in about 25 s on two CPU cores
#
# The chapters measure models by their loss. This page measures them by the clock: how
# the time of attention grows with the length of the sequence, how fast our hand-written
# `tinyformer` trains next to PyTorch's own `nn.Transformer`, what the {term}`KV cache`
# buys when generating, what each optimisation in `tinyformer.fast` buys, and how long
# each chapter takes to run.
#
# The numbers come from the scripts in the repository's `benchmarks/` folder. Each one
# measures everything it compares in one process, side by side, and stores its results
# as JSON in `benchmarks/results/`, together with a record of the machine it ran on.
# This page reads those files and draws them, so what you see is one machine's
# measurements (the last section shows how to measure your own); only the section on
# `tinyformer.fast` times a few things itself, in its own cells.
#
# **Learning goals.** After this page you can
#
# - count the multiply-adds of a transformer layer, and say which parts grow with the
#   length $T$ and which with $T^2$;
# - read a log-log plot, where a cost proportional to $T^k$ is a straight line of slope
#   $k$;
# - explain why attention's time and memory grow with $T^2$, why the projections and the
#   feed-forward network dominate short sequences, and where the two cross;
# - say what the KV cache saves at every generated token, and what it costs in memory;
# - say what each optimisation in `tinyformer.fast` buys, and why each computes the same
#   thing as its simple twin;
# - re-run the measurements on your own machine and read the results.

# %%
import copy
import json
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.config import TransformerConfig
from tinyformer.decoder import DecoderLM
from tinyformer.fast import lm_loss_by_length
from tinyformer.language import ToyLanguage
from tinyformer.objectives import lm_loss
from tinyformer.train import evaluating, set_seed
from tinyformer.vocab import Vocab

set_matplotlib_formats("retina")  # PNG at twice the pixels: sharp in the book and Colab


def log_axes(ax) -> None:
    """Log-log axes: x in powers of 2, y ticked at 1, 2, 5, 10, 20, ... plainly."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def find_results(start: Path) -> Path:
    """The repository's benchmarks/results folder, in ``start`` or a folder above it."""
    for folder in [start, *start.parents]:
        if (folder / "benchmarks" / "results").is_dir():
            return folder / "benchmarks" / "results"
    raise FileNotFoundError(
        f"found no benchmarks/results folder in {start} or above it: this page reads "
        "the JSON "
        "stored in the repository, so run it from a clone (and `make bench` to measure)"
    )


RESULTS = find_results(Path.cwd())
SUFFIX = ""  # "-cuda" plots the GPU results (benchmarks/results/<name>-cuda.json)
NAMES = ("attention_scaling", "training_throughput", "generation", "notebooks")
bench = {
    name: json.loads((RESULTS / f"{name}{SUFFIX}.json").read_text()) for name in NAMES
}

for name, data in bench.items():
    m = data["machine"]
    load = (
        f"load {m['load_average']:.1f}"
        if m.get("load_average") is not None
        else "load not recorded"
    )
    print(
        f"{name:20s} {m['date'][:10]}  {m['device_name']}, {m['logical_cores']} cores, "
        f"{m['torch_threads']} torch threads, torch {m['torch']}, {load}"
    )

# %%
quick = [name for name, data in bench.items() if data["quick"]]
assert not quick, (
    f"{quick} hold quick-mode smoke tests, not measurements: run `make bench`"
)

# %% [markdown]
# Read these records before the plots. All four files come from one run of `make bench`
# on 2026-12-02, on one two-core machine, every script with PyTorch's default of two
# threads and torch 2.13.0. Each file records the machine's load average over the last
# minute of its run: between 0.9 and 2.0, never above the two cores, so little else
# competed with the benchmarks for the processor. Still, every number below is one
# machine's, from one run, and where this page explains a measurement, read the
# explanation as a hypothesis you can test: the section *Measure your own machine*
# shows how.

# %% [markdown]
# ## Counting the work of one layer
#
# Before measuring, count. Take one transformer layer with model width $D$, $H$ heads of
# width $d_k = D / H$ and a {term}`feed-forward network` of width $d_{ff} = 4D$, applied
# to a sequence of $T$ positions, `(B, T, D)` with $B = 1$. Counting multiply-adds:
#
# - **the four projections** $W_Q, W_K, W_V, W_O$: each is a $D \times D$ matrix applied
#   to each of the $T$ positions, $4 T D^2$ in all;
# - **the feed-forward network**: $D \to 4D \to D$ at every position,
#   $2 \cdot T \cdot D \cdot 4D = 8 T D^2$;
# - **the attention core**: each head scores every query against every key, a `(T, T)`
#   matrix of dot products of length $d_k$, $H \cdot T^2 \cdot d_k = T^2 D$; the
#   weighted sum of the values costs the same again, $2 T^2 D$ in all.
#
# The first two are *linear* in $T$: every position is processed on its own, so twice
# the positions is twice the work. Only the attention core is *quadratic*, because it
# compares every position with every other. (The causal mask makes half the scores
# useless, but a plain implementation computes all $T^2$ and then masks them.) This is
# the "complexity per layer" of Table 1 in {cite}`vaswani2017attention`: $O(T^2 D)$ for
# self-attention.
#
# The ratio of the two parts is $2T^2D / 12TD^2 = T / 6D$. Attention's core overtakes
# the rest of the layer at $T = 6D$: 768 positions for the $D = 128$ of the measurements
# below, 384 for the $D = 64$ of our chapters, whose sentences have at most 17 tokens.
# At the lengths this course trains on, the quadratic part is a few per cent of the
# work.


# %%
def layer_macs(T: int, D: int, d_ff: int) -> dict:
    """Multiply-adds of one layer's forward pass on T positions (batch 1)."""
    return {
        "projections": 4 * T * D * D,
        "feed_forward": 2 * T * D * d_ff,
        "core": 2 * T * T * D,
    }


def core_share(T: int, D: int) -> float:
    """The attention core's share of one layer's multiply-adds, with d_ff = 4 D."""
    macs = layer_macs(T, D, 4 * D)
    return macs["core"] / sum(macs.values())


D = bench["attention_scaling"]["config"]["d_model"]  # 128 in the measurements below
print(
    f"T =   17, D =  64 (our chapters): attention core {core_share(17, 64):5.1%} "
    "of the work"
)
for T in (64, 256, 768, 2048):
    print(f"T = {T:4d}, D = {D}: attention core {core_share(T, D):5.1%} of the work")
assert core_share(17, 64) < 0.05 and core_share(6 * D, D) == 0.5

# %% [markdown]
# Memory follows the same count. The scores are a `(B, H, T, T)` tensor per layer, and
# training keeps the softmax's output for the backward pass. At $T = 2048$ with 4 heads
# that is 16 million numbers, 64 MiB in float32, for one layer of one sequence, while
# the layer's weights, $12 D^2 \approx 200$ thousand numbers, take under 1 MiB. Doubling
# $T$ multiplies it by four:

# %%
att = bench["attention_scaling"]
for T, size in zip(att["lengths"], att["score_matrix_bytes"], strict=True):
    print(f"T = {T:4d}: one layer's attention scores take {size / 2**20:7.2f} MiB")

# %% [markdown]
# ## Measured: attention against the length
#
# `benchmarks/attention_scaling.py` times one forward and backward pass of causal
# {term}`multi-head attention` (batch 1, $D = 128$, 4 heads) at $T = 64 \dots 2048$,
# three ways that compute the same numbers from the same weights (the script checks that
# they agree): the attention of [Chapter 3](../part1_decoder/03_self_attention.ipynb)
# written out in plain PyTorch, `softmax(QK^T/sqrt(d_k))` with the mask, times $V$;
# `tinyformer.attention.MultiHeadAttention`; and PyTorch's
# `F.scaled_dot_product_attention(..., is_causal=True)`. A fourth curve is the
# feed-forward network at the same lengths, the part of the layer that is linear in $T$.
#
# On log-log axes a cost $c \cdot T^k$ is a straight line of slope $k$:
# $\log t = \log c + k \log T$. The grey lines have slopes 1 and 2.

# %%
lengths = np.array(att["lengths"])
series = att["results"]
labels = {
    "plain": "attention, written out",
    "tinyformer": "tinyformer MultiHeadAttention",
    "sdpa": "F.scaled_dot_product_attention",
    "feed_forward": "feed-forward network",
}
counted_ratio = 0.5 + lengths / (4 * D)  # attention layer / feed-forward, counted

# %% mystnb={"figure": {"caption": "Forward and backward time of one causal attention layer against the sequence length, on log-log axes, for three implementations of the same function and for the feed-forward network; the grey dashed lines have slopes 2 and 1.", "name": "fig-perf-attention-scaling"}, "image": {"alt": "Log-log line plot of milliseconds against sequence length from 64 to 2048: the written-out attention and tinyformer's curves bend up to slope 2 and a little steeper at the longest lengths, the fused scaled_dot_product_attention curve stays lower, and the feed-forward curve runs close to slope 1, with grey dashed reference lines of slopes 2 and 1."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 4.5))
for name, label in labels.items():
    ax.plot(lengths, 1e3 * np.array(series[name]["median_s"]), "o-", label=label)
# Reference slopes through the last point of the written-out attention and the network.
for name, k, text, shift in (
    ("plain", 2, "∝ T²", (-8, 4)),
    ("feed_forward", 1, "∝ T", (4, -14)),
):
    last = 1e3 * series[name]["median_s"][-1]
    ref = last * (lengths / lengths[-1]) ** k
    ax.plot(lengths, ref, "--", color="grey", lw=1)
    ax.annotate(text, (lengths[-3], ref[-3]), xytext=shift, textcoords="offset points")
log_axes(ax)
ax.set_xticks(lengths, [str(T) for T in lengths])
ax.set_xlabel("sequence length T")
ax.set_ylabel("forward + backward (ms)")
ax.set_title(
    f"One causal attention layer, D = {D}, {att['config']['n_heads']} heads, batch 1"
)
ax.legend()
fig.tight_layout()
plt.show()

# %%
print(
    "T      "
    + "".join(f"{name:>14s}" for name in labels)
    + "   (ms, forward + backward)"
)
for i, T in enumerate(lengths):
    print(
        f"{T:<7d}" + "".join(f"{1e3 * series[n]['median_s'][i]:14.2f}" for n in labels)
    )
print(f"\nslope of log time against log T over T = {att['slope_lengths']}:")
for name, slope in att["slopes"].items():
    print(f"  {labels[name]:32s} {slope:.2f}")

# %% [markdown]
# Three regimes show in the plot. At the shortest lengths every curve rises more slowly
# than its count: doubling $T$ from 64 to 128 multiplies the feed-forward network's time
# by 1.35 and the written-out attention's by 1.9, where the count says 2 and 2.4. A few
# hundred positions of arithmetic take little time, and much of what is measured is the
# fixed cost of launching the dozens of small operations a layer is made of. Then the
# feed-forward network approaches slope 1, as counted: 0.87 over the three longest
# lengths, where the fixed cost presumably still shows a little. The written-out
# attention bends up to slope 2, the $T^2$ of the score matrix, and over the three
# longest lengths it comes out steeper still, 2.39. A likely reason: once the `(T, T)`
# matrices no longer fit in the processor's caches, every pass over them (scale, mask,
# softmax, and their gradients) waits for main memory.
#
# `tinyformer`'s attention, asked for its weights as the chapters ask it (inside
# `record_attention`, to draw them), is the written-out one plus what a course needs: it
# checks the mask's shape and it zeroes the weights of queries that may read no key at
# all (one more pass over the `(T, T)` matrix). That costs time at most lengths (at
# $T = 256$, half as much again), but it does not change how the time grows: over the
# three longest lengths its slope is 2.53, next to the written-out one's 2.39. When
# nobody asks for the weights, in training and generation, the module hands the core to
# the fused kernel below instead; the tests check that both paths compute the same
# thing.
#
# `F.scaled_dot_product_attention` does the same arithmetic, but fused into one kernel
# that never stores the whole `(T, T)` matrix: it walks through the keys in blocks and
# keeps a running softmax, the FlashAttention algorithm {cite}`dao2022flashattention`.
# The number of multiply-adds is still quadratic; what disappears is the traffic of the
# big matrix to and from memory, and the memory itself. That would explain why its curve
# is so much lower at long $T$ (60 ms against the written-out 361 ms at $T = 2048$), and
# why its slope over the three longest lengths, 1.37, is well below 2: the quadratic
# part is cheaper, so the linear projections still weigh in. The next plot tests that
# reading against the count.

# %%
slopes = att["slopes"]
assert (
    max(att["max_abs_diff_between_implementations"]) < 1e-4
)  # the same function, 3 ways
assert 1.6 < slopes["plain"] < 2.6 and 1.6 < slopes["tinyformer"] < 2.6  # quadratic
assert 0.7 < slopes["feed_forward"] < 1.3  # linear
assert (
    series["sdpa"]["median_s"][-1] < series["plain"]["median_s"][-1]
)  # fused is faster
attention_over_ff = np.array(series["plain"]["median_s"]) / np.array(
    series["feed_forward"]["median_s"]
)
assert (
    attention_over_ff[-1] > 4 * attention_over_ff[0]
)  # attention runs away as T grows

# %% [markdown]
# The count of multiply-adds predicts how the attention layer (projections and core)
# compares with the feed-forward network: $(4TD^2 + 2T^2D) / 8TD^2 = 1/2 + T/4D$. The
# plot below sets that prediction against the measured ratio. At short lengths fixed
# costs lift every measured curve above the count (1.1 to 1.3 at $T = 64$, against a
# counted 0.62). At $T = 2048$ the fused kernel's ratio, 4.3, lands close to the count's
# 4.5, while the written-out versions lie six and seven times above it (26 and 32):
# what they add to the count is, on our reading, the time spent moving the big matrix
# rather than multiplying it.

# %% mystnb={"figure": {"caption": "The attention layer's time divided by the feed-forward network's, measured for three implementations, against the ratio the count of multiply-adds predicts (dashed).", "name": "fig-perf-attention-ratio"}, "image": {"alt": "Log-log line plot against sequence length of attention time over feed-forward time for the written-out attention, tinyformer and the fused kernel, with a black dashed line for the counted ratio one half plus T over 4D; at long lengths the fused kernel is closest to the count and the written-out versions lie far above it."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 4))
for name in ("plain", "tinyformer", "sdpa"):
    ratio = np.array(series[name]["median_s"]) / np.array(
        series["feed_forward"]["median_s"]
    )
    ax.plot(lengths, ratio, "o-", label=labels[name])
ax.plot(lengths, counted_ratio, "k--", label="count: 1/2 + T / 4D")
log_axes(ax)
ax.set_xticks(lengths, [str(T) for T in lengths])
ax.set_xlabel("sequence length T")
ax.set_ylabel("attention time / feed-forward time")
ax.legend()
fig.tight_layout()
plt.show()


# %%
def off_count(name: str) -> float:
    """How far (a factor >= 1) the measured ratio at the longest T is from the count."""
    ratio = series[name]["median_s"][-1] / series["feed_forward"]["median_s"][-1]
    return max(ratio / counted_ratio[-1], counted_ratio[-1] / ratio)


assert off_count("sdpa") < off_count("plain") and off_count("sdpa") < off_count(
    "tinyformer"
)

# %% [markdown]
# ## Training: tinyformer against `nn.Transformer`
#
# `tinyformer` is written to be read: every shape is checked, every sublayer is a small
# module of its own. Does that cost speed? `benchmarks/training_throughput.py` trains
# our `EncoderDecoder` and PyTorch's `nn.Transformer` of the same size side by side: 2
# encoder and 2 decoder layers, 4 heads, $d_{ff} = 4D$, dropout 0, pre-LN, wrapped in
# the same embeddings and output layer, and started from *the same weights* (copied with
# `tinyformer.torch_bridge`, as in
# [Chapter 10](../part3_cross_attention/10_the_encoder_decoder.ipynb)), so both compute
# the same function. A step is a forward pass on a batch of 32 random sentence pairs of
# 24 tokens, the cross-entropy, the backward pass and an AdamW update. The two models'
# timed rounds alternate, ours, PyTorch's, ours, ..., so anything else that happens on
# the machine slows both alike.

# %%
train = bench["training_throughput"]
for row in train["results"]:
    assert row["parameters"]["tinyformer"] == row["parameters"]["torch"]  # same size
    assert row["max_abs_logit_diff_at_start"] < 1e-4  # same function
    tps = row["tokens_per_s"]
    print(
        f"d_model = {row['config']['d_model']:3d}, "
        f"{row['parameters']['torch']:7,d} parameters: "
        f"tinyformer {tps['tinyformer']:7.0f}, "
        f"nn.Transformer {tps['torch']:7.0f} target "
        f"tokens/s, ratio {row['ratio_tinyformer_over_torch']:.2f}"
    )

# %% mystnb={"figure": {"caption": "Training throughput of tinyformer's encoder-decoder and of nn.Transformer of the same size and weights, in target tokens per second, for two model widths, with the ratio of the two above each pair.", "name": "fig-perf-training"}, "image": {"alt": "Bar chart with two pairs of bars, for d_model 64 and 128: tinyformer and nn.Transformer tokens per second side by side, each pair labelled with the ratio of tinyformer's throughput to PyTorch's."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(6, 3.5))
x = np.arange(len(train["results"]))
for offset, name, label in (
    (-0.2, "tinyformer", "tinyformer"),
    (0.2, "torch", "nn.Transformer"),
):
    ax.bar(
        x + offset,
        [r["tokens_per_s"][name] for r in train["results"]],
        0.4,
        label=label,
    )
for i, row in enumerate(train["results"]):
    top = max(row["tokens_per_s"].values())
    ax.annotate(
        f"ratio {row['ratio_tinyformer_over_torch']:.2f}",
        (i, top),
        ha="center",
        va="bottom",
    )
ax.set_xticks(x, [f"d_model = {r['config']['d_model']}" for r in train["results"]])
ax.set_ylabel("target tokens per second (training)")
ax.set_ylim(0, 1.2 * max(max(r["tokens_per_s"].values()) for r in train["results"]))
ax.legend(loc="upper right")
fig.tight_layout()
plt.show()

# %% [markdown]
# Both models spend their time in the same matrix multiplications: at 24 tokens the
# attention core is about $T / 6D$, a few per cent, of the arithmetic, so PyTorch's
# fused attention kernel (which both models use when training: `tinyformer` computes no
# attention weights that nobody asked for) has little to win. What differs is the Python
# around the arithmetic: our checks and our extra modules against PyTorch's own, which
# handle many more options. The ratio above, tinyformer's throughput over PyTorch's, is
# what readability costs on this machine, here nothing: the course's aim was a ratio of
# at least 0.9, and ours comes out at 1.10 for $D = 64$ and 1.05 for $D = 128$. How much
# of that is noise? The JSON keeps the time of each of the 15 alternating rounds, and
# the ratio varies from round to round: for $D = 128$ between 0.87 and 1.16, with
# `tinyformer` faster in 10 rounds of 15, a tie; for $D = 64$ between 0.87 and 1.30,
# with `tinyformer` faster in 14 of 15, so in this run our model was a little faster at
# the smaller width.
#
# ## Generation: what the KV cache changes
#
# Generating $n$ tokens takes $n$ steps, each a pass through the model. Without a cache,
# step $t$ runs all $t$ positions so far through every layer, although only the last
# position's logits are used: $12 t D^2$ multiply-adds per layer for the projections and
# the feed-forward network, and $2t^2 D$ for attention. With the KV cache
# ([Chapter 5](../part1_decoder/05_training_and_generation.ipynb)) step $t$ runs *one*
# position: $12 D^2$ for the projections and the network, and $2 t D$ for its single
# query against the $t$ cached keys and values. The quadratic work per step becomes
# linear, the linear work becomes constant. Summed over $n$ steps (per layer):
#
# $$\text{without: } \sum_{t=1}^{n} (12tD^2 + 2t^2D) \approx 6n^2D^2 + \tfrac{2}{3}n^3 D,
# \qquad \text{with: } \sum_{t=1}^{n} (12D^2 + 2tD) \approx 12nD^2 + n^2 D.$$
#
# The saving is about $n/2$ while attention is the small part, and more beyond.
#
# How the cache stores the keys matters too; the section on `tinyformer.fast` below
# compares two ways.
#
# The price is memory: the cache keeps a key and a value vector for every layer and
# every position, $2 \times N \times T \times D$ numbers per sequence ($N$ layers). That
# grows with the context and with the batch, and for large models it is often what
# limits how many sequences can be generated at once:

# %%
gen = bench["generation"]


def kv_cache_bytes(
    n_layers: int, T: int, d_model: int, bytes_per_number: int = 4
) -> int:
    """Size of the keys and values of every layer for T positions of one sequence."""
    return 2 * n_layers * T * d_model * bytes_per_number


baby = gen["results"]["baby_gpt"]["config"]
print(
    f"baby GPT, 1024 tokens, float32: {kv_cache_bytes(6, 1024, 384) / 2**20:6.1f} MiB"
)
print(
    f"   ... a batch of 32 of them:   "
    f"{32 * kv_cache_bytes(6, 1024, 384) / 2**20:6.1f} MiB"
)
print(
    "32 layers, D = 4096, 4096 tokens, 16-bit: "
    f"{kv_cache_bytes(32, 4096, 4096, 2) / 2**30:.1f} GiB"
)
assert baby["n_layers"] == 6 and baby["d_model"] == 384

# %% [markdown]
# `benchmarks/generation.py` times `tinyformer.decode.generate` from a one-token prompt,
# batch 1, with the cache and without, for two models with random weights:
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s language model
# ($D = 64$, 2 layers, 4 heads) and the shape of the "baby GPT" of Andrej Karpathy's
# nanoGPT repository, https://github.com/karpathy/nanoGPT ($D = 384$, 6 layers, 6
# heads, $d_{ff} = 1536$), for 64, 256 and 1024 new tokens. Each time is the median of
# three runs, except the slowest, the baby GPT's 1024 tokens without a cache (109 s),
# which was timed once. "With the cache" here is the package's simple `KVCache`; the
# script also times `tinyformer.fast.BufferedKVCache`, compared in its own section
# below. All ways must draw exactly the same tokens; the script checks that they do.

# %%
models = {"chapter5": "Chapter 5 model (D = 64, 2 layers)",
          "baby_gpt": "baby GPT (D = 384, 6 layers)"}  # fmt: skip


def counted_speedup(n: int, D: int) -> float:
    """Multiply-adds without the cache over those with it (per layer, counted above)."""
    steps = np.arange(1, n + 1)
    return float(
        np.sum(12 * steps * D**2 + 2 * steps**2 * D) / np.sum(12 * D**2 + 2 * steps * D)
    )


assert gen["identical"]  # the cache changes the cost, never the tokens
for name, title in models.items():
    result = gen["results"][name]
    print(title)
    for row in result["rows"]:
        tps = row["tokens_per_s"]
        count = counted_speedup(row["new_tokens"], result["config"]["d_model"])
        speedup = row["speedup_cache_over_no_cache"]
        print(f"  {row['new_tokens']:5d} new tokens: {tps['cache']:7.1f} tokens/s with "
              f"the cache, {tps['no_cache']:7.1f} without: {speedup:5.1f}× "
              f"(counted {count:6.1f}×)")  # fmt: skip

# %% mystnb={"figure": {"caption": "Generation speed with the KV cache (solid), with tinyformer.fast.BufferedKVCache (dotted) and without a cache (dashed), for Chapter 5's model and the baby GPT (left), and the speed-up over no cache (right). Without a cache, speed falls as the text grows; the speed-up grows with the length, but stays far below the count.", "name": "fig-perf-generation"}, "image": {"alt": "Two log-log line plots against the number of new tokens generated. Left: tokens per second for two models at 64, 256 and 1024 new tokens, each with three lines: the cached ones stay roughly flat, dipping a little at 1024, while the uncached one falls steeply with the length. Right: the speed-up of each cache over no cache, rising with the length for both models."}} tags=["hide-input"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 5), layout="constrained")
for (name, title), color in zip(models.items(), ("C0", "C1"), strict=True):
    rows = gen["results"][name]["rows"]
    n = [row["new_tokens"] for row in rows]
    for way, style in (("cache", "o-"), ("buffered", "o:"), ("no_cache", "o--")):
        ax1.plot(n, [r["tokens_per_s"][way] for r in rows], style, color=color,
                 label=f"{title.split(' (')[0]}, {way.replace('_', ' ')}")  # fmt: skip
    for way, style in (("cache", "o-"), ("buffered", "o:")):
        speedups = [r[f"speedup_{way}_over_no_cache"] for r in rows]
        ax2.plot(n, speedups, style, color=color,
                 label=f"{title.split(' (')[0]}, {way}")  # fmt: skip
for ax in (ax1, ax2):
    log_axes(ax)
    ax.set_xticks(n, [str(k) for k in n])
    ax.set_xlabel("new tokens generated")
ax1.set_ylabel("tokens per second")
ax2.axhline(1, color="grey", lw=1)
ax2.set_ylabel("speed-up over no cache")
for ax in (ax1, ax2):  # legends below the axes, off the data
    ax.legend(fontsize=9, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.15))
plt.show()

# %% [markdown]
# Without the cache, generation slows down as the text grows: each step carries the
# whole prefix, and from 64 to 1024 new tokens the speed falls sixfold for
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s model and tenfold for
# the baby GPT. With it, a step costs nearly the same at every length measured: over the
# same range the speed falls by about a fifth (23 % and 17 %). So the speed-up grows
# with the length, as counted. But it stays far below the count (at 1024 tokens, 13
# times for the baby GPT where the count says 544), for two reasons that counting
# multiply-adds ignores. Every step has a fixed cost, the Python and the launch of
# dozens of small operations per layer, which the cache does not remove; for
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s tiny model it is most
# of the time. And one position at a time turns every matrix product into a
# matrix-*vector* product: each weight is used once per token, for one multiply-add,
# whereas the uncached pass reuses each weight for all $t$ positions, which lets the
# math library keep the arithmetic units busy. For a tiny model and a short text the
# cache barely pays (1.3 times for
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s model at 64 tokens);
# for longer texts and bigger models it wins by more and more, and that is why every
# serious implementation of generation uses one.

# %%
for name in models:
    rows = gen["results"][name]["rows"]
    uncached = [row["tokens_per_s"]["no_cache"] for row in rows]
    assert (
        uncached[-1] < uncached[0]
    )  # without the cache, long texts are slower per token
    speedups = [row["speedup_cache_over_no_cache"] for row in rows]
    assert speedups[-1] > speedups[0] and speedups[-1] > 1  # it grows with the length
    D_model = gen["results"][name]["config"]["d_model"]
    counted = [counted_speedup(row["new_tokens"], D_model) for row in rows]
    assert all(s < c for s, c in zip(speedups, counted, strict=True))  # below the count

# %% [markdown]
# ### What a cached step waits for
#
# With the cache, a step pushes one position through each layer, so every weight matrix
# is read for a single matrix-*vector* product: two arithmetic operations per number
# read, with nothing to reuse. `generation.py` times exactly that work on its own: every
# `nn.Linear` of the model applied once to one position. Next to it, it times a plain
# sum over a tensor of as many bytes, repeated the same way, which shows how fast this
# machine can read them.

# %%
for name, title in models.items():
    reading = gen["results"][name]["weight_reading"]
    row = next(r for r in gen["results"][name]["rows"] if r["new_tokens"] == 256)
    cached_s = 1 / row["tokens_per_s"]["cache"]
    print(
        f"{title}: {reading['weight_bytes'] / 1e6:.1f} MB of weights in "
        f"{reading['linear_layers']} linear layers\n"
        f"  a cached token (256 new tokens): {1e3 * cached_s:6.2f} ms\n"
        f"  its matrix-vector products alone: {1e3 * reading['matvec_s']:6.2f} ms "
        f"({reading['matvec_gb_per_s']:5.1f} GB/s)\n"
        f"  a sum over as many bytes:         {1e3 * reading['sum_s']:6.2f} ms "
        f"({reading['sum_gb_per_s']:5.1f} GB/s)"
    )
    assert reading["matvec_s"] < cached_s  # the products are a part of the cached step

# %% [markdown]
# For the baby GPT, the matrix-vector products took most of a cached step, 5.95 of
# 6.68 ms, and read the weights at 7.2 GB/s, while the plain sum read as many bytes at
# 76 GB/s, ten times faster. So on this machine reading the weights is not what holds
# the products back. (The sum reads one tensor over and over, so part of it may come
# from the processor's caches rather than main memory; the products reread their
# weights in the same way.) What does set their pace? Our reading is the matrix-vector
# routine of the math library PyTorch calls: at 10.6 million weights in 5.95 ms it does
# about 1.8 billion multiply-adds a second, while the uncached generation of 256 tokens,
# which runs the same weights as matrix products over $1 + 2 + \dots + 256 = 32{,}896$
# positions in 6.2 s, reaches at least 56 billion. That compares two timings; it is not
# a profile, so test it on your machine. What holds whatever the machine: a cached step
# reads every weight once per token.
# ([Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s model, 0.4 MB, fits
# in the processor's caches; most of its cached step, 0.36 of 0.48 ms, is not the
# products.) The Results section sets the two timings side by side.

# %% [markdown]
# ## What `tinyformer.fast` buys
#
# The modules the chapters send you to hold the simple version of everything. Three
# optimisations live apart, in `tinyformer.fast`, each computing what a simple twin
# computes (the package's tests check each against it): a KV cache that does not copy, a
# language-model loss that skips padding, and the check that lets `train` use PyTorch's
# fused AdamW. What each buys, measured on
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s model:

# %%
lang = ToyLanguage()
vocab = Vocab(lang.words)
CH5 = TransformerConfig(vocab_size=len(vocab), d_model=64, n_heads=4, n_layers=2,
                        d_ff=256, max_len=17, tie_weights=False)  # fmt: skip


def get_batch(step):
    """Chapter 5's training batch `step`: 64 sentences before step 900, 256 after."""
    sentences = lang.sample(64 if step < 900 else 256, seed=1000 + step)
    ids = vocab.batch(sentences, bos=True, eos=True)
    return ids[:, :-1], ids[:, 1:]  # inputs, targets (B, T)


def best_time(fn, repeats=3):
    """The shortest of `repeats` wall-clock times of fn(), in s: the least disturbed."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


set_seed(0)
ch5_model = DecoderLM(CH5)
print(ch5_model)

# %% [markdown]
# ### A KV cache that does not copy: `BufferedKVCache`
#
# The package's `tinyformer.attention.KVCache`, which
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb) checks its own
# written-out cache against, appends with `torch.cat`: at step $t$ it copies all $t$
# cached keys and values into a new tensor, $2tD$ numbers per layer, as much memory
# traffic as the step's attention itself, and about $n^2/2$ copied positions over $n$
# steps.
# `tinyformer.fast.BufferedKVCache` writes each new key and value into a buffer with
# room to spare, and doubles the buffer when it is full, so over $n$ steps it copies
# fewer than $2n$ positions per layer. (While autograd records, it concatenates like its
# parent: writing into a buffer that earlier steps' graphs still read would corrupt
# their gradients.) `generation.py` times both, with the same step loop and the same
# random draws:

# %%
print(f"{'model':9} {'new tokens':>10} {'KVCache':>9} {'Buffered':>9} {'no cache':>9}"
      "  tokens/s; Buffered / KVCache")  # fmt: skip
for name in models:
    for row in gen["results"][name]["rows"]:
        tps = row["tokens_per_s"]
        print(f"{name:9} {row['new_tokens']:10d} {tps['cache']:9.1f} "
              f"{tps['buffered']:9.1f} {tps['no_cache']:9.1f}  "
              f"{tps['buffered'] / tps['cache']:.2f}")  # fmt: skip
assert gen["identical"]  # all three draw the same tokens

# %% [markdown]
# The last column compares the two caches. Up to 256 new tokens the buffer buys nothing:
# it is within a few per cent of `KVCache` or slower, 22 % slower for
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s model at 64 tokens.
# Presumably its own small operations at every step (writing into a slice of the buffer,
# taking views of it) cost more than concatenating a short cache, in a model whose step
# is mostly such fixed costs. At 1024 new tokens the buffer wins: 1.23 times for
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s model, whose steps
# are cheap enough for the copying to show, and 1.06 times for the baby GPT, whose steps
# go mostly into the matrix-vector products. By the count above the copying grows with
# the cache, to as much memory traffic as the step's attention itself, so the buffer is
# the version for long caches and big batches. The chapters use the simple one: it is
# the one to read, and at the shortest length measured, 64 tokens, it was the faster of
# the two.

# %% [markdown]
# ### Skipping the padding: `lm_loss_by_length`
#
# A batch is as long as its longest sentence, and in a batch of 256 sentences that is
# nearly always one of the longest the language makes, while the average sentence has 7
# words. So a large share of the positions the model computes are padding, and the loss
# throws their outputs away. For a causal model the padding is not even needed: position
# $t$ reads positions $\le t$ only, so the outputs at a sentence's real positions are
# the same whether padding follows them or not.
#
# `tinyformer.fast.lm_loss_by_length` uses that. It sorts the batch's sentences by
# length, cuts them into groups of at most 96 (three groups for a batch of 256), trims
# each group to its own longest sentence, runs the model on each group and adds up the
# per-token losses, divided by the number of real targets in the whole batch: the same
# mean as `lm_loss(model(inputs), ...)`, so the same loss and gradient, up to rounding.
# Smaller groups would skip more padding, but every group is a pass of its own with a
# fixed cost; a batch of 64 runs as one group, and gains nothing. It would be wrong for
# a model that reads the whole row, such as Part II's encoder, unless that model masks
# its padding out. The check, on
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s first batch of 256:


# %%
def plain_loss(model, inputs, targets):
    return lm_loss(model(inputs), targets, vocab.pad_id)


def loss_by_length(model, inputs, targets):
    return lm_loss_by_length(model, inputs, targets, vocab.pad_id, max_rows=96)


inputs, targets = get_batch(900)  # the first batch of 256 sentences
padding = (targets == vocab.pad_id).float().mean()
print(f"batch {tuple(inputs.shape)}: {padding:.0%} of its positions are padding")
params = list(ch5_model.parameters())
losses = [fn(ch5_model, inputs, targets) for fn in (plain_loss, loss_by_length)]
grads = [torch.autograd.grad(loss, params) for loss in losses]
grad_gap = max((a - b).abs().max().item() for a, b in zip(*grads, strict=True))
lengths = (targets != vocab.pad_id).sum(1).sort().values  # real targets per row
groups = lengths.chunk(-(-len(lengths) // 96))  # as lm_loss_by_length cuts them
computed = sum(len(g) * int(g.max()) for g in groups)
print(f"positions computed: {targets.numel()} with padding, {computed} without "
      f"({1 - computed / targets.numel():.0%} fewer)")  # fmt: skip
print(f"loss: {losses[0].item():.6f} with padding, {losses[1].item():.6f} without")
print(f"gradients agree to within 1e-6: {grad_gap < 1e-6}")
assert torch.allclose(*losses) and grad_gap < 1e-6

# %% [markdown]
# How much of that becomes time depends on the machine: every group is a pass of its
# own, with a fixed cost. In the run stored with this page, on our two-core machine, a
# forward and backward pass on a batch of 256 took 0.82 times as long without the
# padding (the printout below): 29 % fewer positions saved 18 % of the time, the rest
# presumably eaten by the fixed cost of three passes instead of one. Earlier runs of
# this page on the same machine, shared then with other jobs, measured anything from
# 1.02 times (no saving at all) to 0.67 times (a third less). The times vary from run
# to run (each is the best of three runs on five batches), so measure your own:

# %% tags=["nbval-ignore-output"]
timing_batches = [get_batch(step) for step in range(900, 905)]


def step_time(loss_fn):
    """Best time (s) of a forward and backward pass, per batch of 256."""

    def forward_backward():
        for inputs, targets in timing_batches:
            torch.autograd.grad(loss_fn(ch5_model, inputs, targets), params)

    return best_time(forward_backward) / len(timing_batches)


t_plain, t_by_length = step_time(plain_loss), step_time(loss_by_length)
print(f"forward + backward, batch of 256: {1e3 * t_plain:.0f} ms with padding, "
      f"{1e3 * t_by_length:.0f} ms without "
      f"({t_by_length / t_plain:.2f} times)")  # fmt: skip

# %% [markdown]
# ### Fused AdamW, and the rounding it brings
#
# AdamW updates every parameter with a dozen small operations (two running averages, a
# square root, a division, the decay). PyTorch's default CPU implementation runs them
# one parameter at a time, or, with `foreach=True`, one operation at a time over all
# parameters; with `fused=True` one kernel does the whole update.
# `tinyformer.train.adamw` asks for the fused kernel whenever
# `tinyformer.fast.fused_adamw_ok` says it exists for the parameters (floating-point CPU
# or CUDA tensors). The same update, timed on
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s model next to a whole
# training step on a batch of 64:


# %% tags=["nbval-ignore-output"]
def optimizer_step_time(**kind):
    """Best time (s) of one AdamW update of a copy of Chapter 5's model."""
    model = copy.deepcopy(ch5_model)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **kind)
    return best_time(lambda: [optimizer.step() for _ in range(20)]) / 20


kinds = {
    "for-loop": {"foreach": False},
    "foreach": {"foreach": True},
    "fused": {"fused": True},
}
update = {name: optimizer_step_time(**kind) for name, kind in kinds.items()}
inputs, targets = get_batch(0)  # a batch of 64
forward_backward = best_time(
    lambda: torch.autograd.grad(plain_loss(ch5_model, inputs, targets), params), 10
)
for name, seconds in update.items():
    print(f"AdamW update, {name:8}: {1e3 * seconds:5.2f} ms")
print(f"fused over for-loop: {update['for-loop'] / update['fused']:.0f} times faster")
print(f"forward + backward, batch of 64: {1e3 * forward_backward:5.2f} ms")
saved = (update["for-loop"] - update["fused"]) / (forward_backward + update["for-loop"])
print(f"fused instead of for-loop: {saved:.0%} off a training step on a batch of 64")

# %%
assert update["fused"] < update["for-loop"]  # one kernel beats a loop over parameters

# %% [markdown]
# In the run stored with this page, on our two-core CPU, the fused update was about 5
# times faster than the loop over parameters, 0.22 ms against 1.07 ms (the printout
# above). The factor varies widely from run to run and machine to machine: earlier runs
# on the same machine, shared then with other jobs, measured about 26 and 72. How much
# of a training step that saves depends on how big the rest of the step is: for this
# small model on a batch of 64, the for-loop update took about a tenth of the step, and
# the fused one takes 9 % off it (the last line above); for a big model on a big batch,
# the forward and backward passes dwarf the update.
#
# The fused kernel rounds differently, and one parameter shows it. Train two copies of
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s model for 10 steps
# from the same weights on the same batches, one with the for-loop AdamW and one fused,
# and compare every parameter:


# %%
def ten_steps(model, fused):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.98),
                                  weight_decay=0.0, fused=fused)  # fmt: skip
    for step in range(10):
        loss = plain_loss(model, *get_batch(step))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return dict(model.named_parameters())


model_a, model_b = copy.deepcopy(ch5_model), copy.deepcopy(ch5_model)
a, b = ten_steps(model_a, False), ten_steps(model_b, True)
gaps = {name: (a[name] - b[name]).abs().max().item() for name in a}
widest = sorted(gaps, key=gaps.get, reverse=True)
drift = gaps[widest[1]] / max(gaps[n] for n in widest[2:])
print("the two largest differences:", sorted(widest[:2]))
print("they are over 100 times any other parameter's:", drift > 100)
grad = torch.autograd.grad(plain_loss(ch5_model, *get_batch(0)), params)
k_bias = dict(zip([n for n, _ in ch5_model.named_parameters()], grad, strict=True))
print("gradient of a key bias below 1e-8:", bool(k_bias[widest[0]].abs().max() < 1e-8))

# %%
assert all("k_proj.bias" in name for name in widest[:2])  # the key biases drift most
assert drift > 100 and k_bias[widest[0]].abs().max() < 1e-8

# %% [markdown]
# Do the two models still compute the same function? Compare their logits on
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s first batch of 256
# sentences, and check that the key bias is redundant: set model A's key biases to zero
# and see what changes.

# %% tags=["nbval-ignore-output"]
check_inputs, _ = get_batch(900)
with evaluating(model_a), evaluating(model_b), torch.no_grad():
    logits_a, logits_b = model_a(check_inputs), model_b(check_inputs)
    for block in model_a.decoder.blocks:
        block.self_attn.k_proj.bias.zero_()
    logits_a0 = model_a(check_inputs)
logit_gap = (logits_a - logits_b).abs().max().item()
no_bias_gap = (logits_a - logits_a0).abs().max().item()
print(f"largest key-bias difference between the runs: {gaps[widest[0]]:.1e}")
print(f"largest logit difference between the runs:    {logit_gap:.1e}")
print(f"model A's logits with its key biases zeroed:  {no_bias_gap:.1e} off")
print(f"logits below 1e-4 apart in both checks: {max(logit_gap, no_bias_gap) < 1e-4}")

# %%
assert logit_gap < 1e-4 and no_bias_gap < 1e-4  # same function, up to rounding

# %% [markdown]
# The key projection's bias $b_K$ has a gradient that is exactly zero in exact
# arithmetic: it adds $q_t \cdot b_K$ to *every* score in row $t$, and softmax ignores a
# constant added to a whole row. So its computed gradient is pure rounding noise (under
# $10^{-8}$, the check above), and Adam, which divides each gradient by a running
# estimate of its own size, turns that noise into steps of a sizeable fraction of the
# learning rate. The two runs' key biases drift apart while the functions the models
# compute stay the same up to rounding (the logits, checked above, agree to well under
# $10^{-4}$), for the same reason the key bias is redundant: zeroing it changes the
# logits only by rounding. That is why everything the course prints from a
# trained model is rounded or checked with a tolerance.
#
# ## The training recipe and its thresholds
#
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb) trains for 1800 steps,
# 900 on batches of 64 sentences and 900 on batches of 256, at a peak learning rate of
# $10^{-2}$, with an untied LM head. The runs behind that choice were made while tuning
# the chapter and are not re-run here, so read them as a record, not as measurements
# this page checks. Each model was judged on 16,000 samples:
#
# | recipe (steps × sentences) | runs | ungrammatical samples | extra loss per sentence |
# |---|---|---|---|
# | 2000 × 128, untied head | 2 (5 for the loss) | 0.53–0.58 % | 0.0066–0.0087 nats |
# | 2000 × 128, tied head | 2 | 0.63–0.75 % | 0.0080–0.0089 nats |
# | 1000 × 64, then 1000 × 256 | 7 (4 for the loss) | 0.31–0.44 % | 0.0048–0.0066 nats |
# | 900 × 64, then 900 × 256 (the chapter's) | 11 | 0.34–0.46 % (mean 0.39 %) | |
# | 1000 × 64, then 800 × 256 | 3 | 0.37–0.44 % (mean 0.41 %) | |
# | 800 × 64, then 900 × 256 | 3 | 0.40–0.48 % (mean 0.44 %) | |
#
# The ranges of one recipe overlap those of the next, because runs of one recipe differ
# (the last digits of training depend on the machine) by about as much as the recipes
# do. What they suggest: the switch to bigger batches helps, shortening either phase
# costs a little grammar on average, and the untied head did slightly better than the
# tied one. In the same tuning runs, models whose validation loss was within 0.03–0.06 %
# of the language's own left between 0.35 % and 0.75 % of their samples ungrammatical.
#
# That is why [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s
# grammatical-share test asks for 99.3 %, not the course's target of 99.5 %. The share
# is the close one of the chapter's three targets: the recipe's runs left 0.34–0.46 % of
# samples ungrammatical, and the model, hence the share, changes from machine to
# machine. A count over 1000 samples would have a standard error of about 0.2 %, half
# the share itself, so the chapter counts 16,000 (about 0.05 %). The assert leaves a
# margin for both: a model that leaks 0.5 %, at the edge of the target, fails 99.3 %
# (113 or more ungrammatical samples out of 16,000) about once in 3,600 runs, by the
# exact binomial tail computed below (the margin is 3.6 standard errors of the count);
# the printed number is the measurement.

# %%
se = (0.005 * 0.995 / 16000) ** 0.5  # the count's standard error at a 0.5 % share
print(f"standard error of a 16,000-sample count at 0.5 %: {se:.2%}")
print(f"the 99.3 % threshold is {(0.007 - 0.005) / se:.1f} standard errors away")
assert 3.5 < (0.007 - 0.005) / se < 3.7


def log_binom_pmf(k: int, n: int, p: float) -> float:
    """log P(K = k) for K ~ Binomial(n, p), from log-gamma: no huge integers."""
    log_comb = math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
    return log_comb + k * math.log(p) + (n - k) * math.log1p(-p)


n_samples, leak = 16000, 0.005
fail_at = math.floor(n_samples * (1 - 0.993)) + 1  # 113 ungrammatical fail 99.3 %
tail = sum(math.exp(log_binom_pmf(k, n_samples, leak))
           for k in range(fail_at, n_samples + 1))  # fmt: skip
print(
    f"P(at least {fail_at} of {n_samples} ungrammatical | 0.5 %): {tail:.1e}, "
    f"about 1 in {round(1 / tail, -2):,.0f}"
)
assert fail_at == 113 and 2.5e-4 < tail < 3.1e-4

# %% [markdown]
# ## How long each chapter takes
#
# `benchmarks/notebooks.py` executes every chapter, and two appendix pages,
# [The real ones](the_real_ones.ipynb) and [Past one machine](past_one_machine.ipynb),
# each in a fresh kernel, in the order of the book, and times it. The course aims at
# under about 90 seconds per chapter and 8 minutes for the whole book, on two CPU cores.

# %%
nbs = bench["notebooks"]
names = [Path(row["notebook"]).stem for row in nbs["notebooks"]]
seconds = [row["seconds"] for row in nbs["notebooks"]]
print(
    f"all {len(names)} chapters: {nbs['total_seconds'] / 60:.1f} minutes (aim: under 8)"
)
print("over 90 s:", [name for name, s in zip(names, seconds, strict=True) if s > 90])
assert nbs["all_ok"]

# %% mystnb={"figure": {"caption": "Seconds to execute each chapter, and two appendix pages, in a fresh kernel, on the machine of the stored results, against the aim of 90 s per chapter (dashed).", "name": "fig-perf-notebooks"}, "image": {"alt": "Horizontal bar chart with one bar per notebook, the eleven chapters and two appendix pages in book order from top to bottom, showing its execution time in seconds, with a dashed vertical line at 90 seconds."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
ax.barh(names[::-1], seconds[::-1])
ax.axvline(90, color="grey", ls="--", lw=1, label="aim: 90 s per chapter")
ax.set_xlabel("seconds to execute, fresh kernel")
ax.legend(loc="lower right")
fig.tight_layout()
plt.show()

# %% [markdown]
# All thirteen took 5.8 minutes, inside the aim of 8, but one chapter misses the aim of
# 90 s: [Chapter 8](../part2_encoder/08_sentence_classification.ipynb) took 111 s. It
# pre-trains an encoder and then trains classifiers on it and from scratch, several
# times over, to compare them.
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb) comes next, at 74 s, on
# purpose: it trains its language model for 1,800 steps (900 on batches of 64
# sentences, then 900 on batches of 256), because the closer its loss comes to the
# language's own, the fewer ungrammatical samples it can leak (the chapter proves the
# bound: its stored run, 0.04 % above the language's own loss, may leak at most 0.62 %;
# a small loss is sufficient for grammar, though not necessary), and it counts 16,000
# samples to measure that share to about $\pm$0.05 %. Fewer steps cost grammar (the
# recipe section above gives the runs). Read these times as one machine's, measured on
# the date the JSON records: chapters changed since then take what they take now (the
# JSON keeps a hash of each notebook's code, to tell). Processors differ by more than
# our margins, and on a shared machine the same chapter can take a quarter longer from
# one run to the next.

# %% [markdown]
# ## Measure your own machine
#
# The stored numbers are one machine's. To measure yours, from a clone of the
# repository:
#
# ```bash
# make bench                                          # every script, over ten minutes
# .venv/bin/python benchmarks/generation.py           # or one of them
# .venv/bin/python benchmarks/generation.py --quick --out /tmp/bench   # a smoke test
# ```
#
# Each script writes `benchmarks/results/<name>.json` (`<name>-cuda.json` when PyTorch
# finds a CUDA GPU: the scripts then measure on the GPU by themselves). Close other
# programs first, and keep the thread count the same for every script
# (`OMP_NUM_THREADS=2 make bench`); the JSON records it, with the processor, the PyTorch
# version, the date and the machine's load. Then re-execute this page,
# `make notebooks NB=book/appendix/performance.py`, to plot your numbers (set
# `SUFFIX = "-cuda"` where the files are loaded to plot the GPU's). On a GPU, expect the
# slow start of every curve, where fixed costs dominate, to last much longer: a GPU
# needs far more work than a few hundred positions to be kept busy.
#
# ## Results
#
# The two speed targets of the course: `tinyformer` trains at least 0.9 times as fast as
# `nn.Transformer` of the same size, and the KV cache makes the baby GPT's generation of
# 256 tokens at least 5 times faster on a CPU. The first is a property of our code, is
# checked, and is met: 1.10 and 1.05. The second depends on the machine as much as on
# the code, and on this machine it is not met: with two threads and little else
# running, the cache made the baby GPT's 256 tokens 3.6 times faster (3.7 with
# `BufferedKVCache`; at 1024 tokens, 13 times). An earlier run, with one thread on a
# machine loaded by other jobs, had measured 6.8: there the uncached generation was 43
# times slower than in this run, the cached one only 23 times.
#
# A bound explains the shortfall. A cached token costs at least its matrix-vector
# products, so an uncached token's time divided by theirs bounds the speed-up. The cell
# prints that ratio next to the measurement: 4.1 (24.2 ms over 6.0 ms), and the
# measured 3.6 lies below it. By this bound no cache reaches 5 on this machine unless
# the matrix-vector products get faster. Both numbers come from separate timings, each
# with its own noise, so the cell checks only that the cache wins.

# %%
ratios = {row["config"]["d_model"]: row["ratio_tinyformer_over_torch"]
          for row in train["results"]}  # fmt: skip
baby_256 = next(
    (r for r in gen["results"]["baby_gpt"]["rows"] if r["new_tokens"] == 256), None
)
assert baby_256 is not None, "generation.json has no row for 256 new tokens: make bench"
for d_model, ratio in ratios.items():
    print(f"training_throughput_ratio_d{d_model}: {ratio:.3f} (target >= 0.9)")
kv_speedup = baby_256["speedup_cache_over_no_cache"]
met = "met" if kv_speedup >= 5 else "not met on this machine"
print(f"kv_cache_speedup_baby_gpt_256: {kv_speedup:.2f} (target >= 5: {met})")
buffered_speedup = baby_256["speedup_buffered_over_no_cache"]
print(f"  with tinyformer.fast.BufferedKVCache: {buffered_speedup:.2f}")
reading = gen["results"]["baby_gpt"]["weight_reading"]
uncached_s = 1 / baby_256["tokens_per_s"]["no_cache"]
print(f"  an uncached token: {1e3 * uncached_s:.1f} ms; the matrix-vector products "
      "of a "
      f"cached one: {1e3 * reading['matvec_s']:.1f} ms; their ratio: "
      f"{uncached_s / reading['matvec_s']:.2f}")  # fmt: skip
assert all(ratio >= 0.9 for ratio in ratios.values())
assert kv_speedup > 1 and buffered_speedup > 1

# %% [markdown]
# ## What we learned
#
# - A transformer layer does $12TD^2$ multiply-adds in its projections and feed-forward
#   network, linear in the length, and $2T^2D$ in the attention core, quadratic. The
#   core takes over at $T = 6D$; below that, the linear part dominates.
# - The measurements follow the count on log-log axes, after a start where fixed costs
#   weigh: a slope near 1 for the feed-forward network (0.87 here), and 2 or a little
#   steeper for written-out attention (2.4 here).
# - The `(T, T)` score matrix costs memory as well as time, per head, per layer, per
#   sequence. A fused kernel (FlashAttention) never stores it, and ran six times faster
#   than the written-out attention at $T = 2048$ in our measurements. Measured against
#   the feed-forward network, the fused kernel took about what the count of
#   multiply-adds predicts, the written-out attention about six times that. Our reading,
#   which `make bench` lets you test, is that moving that matrix, not multiplying it, is
#   what takes the extra time.
# - Readable code need not be slow: at the course's sizes `tinyformer` trains at least
#   as fast as `nn.Transformer` computing the same function (ratios 1.10 and 1.05 here).
# - The KV cache makes each generated token cost nearly the same whatever the length:
#   one position through every layer, one query against the cached keys. It costs
#   $2 N T D$ numbers of memory per sequence, and its speed-up grows with the length but
#   stays far below the count: fixed costs do not shrink with the arithmetic, and the
#   matrix-vector products of a cached step did far fewer multiply-adds per second than
#   the matrix products of an uncached pass. On our two-core machine the baby GPT's
#   speed-up at 256 tokens was 3.6, short of the course's target of 5: measure your own.
# - `tinyformer.fast` holds what is faster but not simpler: a KV cache that writes into
#   spare room instead of copying, a loss that skips the padding a causal model never
#   reads, and the fused AdamW kernel, whose different rounding shows in one redundant
#   parameter, the key bias, and nowhere in what the model computes.
#
# ## Exercises
#
# **1. Where attention takes over.** For the baby GPT shape ($D = 384$, $d_{ff} = 4D$),
# at what length does the attention core cost as many multiply-adds as the rest of the
# layer? Which share of a layer's work is the core at nanoGPT's context of 256 tokens?
#
# <details class="solution"><summary>Solution</summary>
#
# The core costs $2T^2D$, the rest $12TD^2$: equal at $T = 6D = 2304$ tokens. At
# $T = 256$ the ratio is $T / 6D = 256 / 2304 = 1/9$, so the core is $1/10$ of the
# layer's multiply-adds, 10 %. `layer_macs(256, 384, 1536)` gives the same.
#
# </details>
#
# **2. The price of the cache.** How much memory does the KV cache of the baby GPT need
# for a batch of 64 sequences of 1024 tokens in float32? And in 16-bit numbers?
#
# <details class="solution"><summary>Solution</summary>
#
# Per sequence $2 \times 6 \times 1024 \times 384 = 4{,}718{,}592$ numbers, 18 MiB in
# float32 (4 bytes each). For 64 sequences, 1152 MiB, about 1.1 GiB; half of it, 576
# MiB, in 16-bit. The model itself has about 11 million parameters: 11,066,112
# (`gen["results"]["baby_gpt"]["parameters"]`, with a position table for the 1025
# positions the benchmark needs), 44.3 MB or 42 MiB in float32. The cache of a big batch
# of long sequences outweighs the weights many times over.
#
# </details>
#
# **3. Predict a slope.** Say you re-run `attention_scaling.py` with $D = 512$ instead
# of 128 (same lengths). Will the slope of the feed-forward curve change? And that of
# the written-out attention over $T = 512 \dots 2048$? Check your answer with the count.
#
# <details class="solution"><summary>Solution</summary>
#
# The feed-forward network stays at slope 1: it is $8TD^2$, linear in $T$ whatever $D$
# is. The attention layer (with its projections) costs $4TD^2 + 2T^2D$; its quadratic
# part overtakes the linear one at $T = 2D = 1024$ for $D = 512$, instead of 256 for
# $D = 128$. Over $T = 512 \dots 2048$ the curve is then only beginning to bend: its
# slope falls below 2, towards 1.5 (the local slope of $4TD^2 + 2T^2D$ is
# $1 + T / (2D + T)$: 1.33 at $T = 512$, 1.67 at 2048). The wider the model, the longer
# the sequences must be before attention's $T^2$ shows.
#
# </details>
