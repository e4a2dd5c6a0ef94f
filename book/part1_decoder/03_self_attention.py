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
# Colab only: install the course's package, tinyformer, from its repository.
# Everywhere else this cell does nothing (`make test` and `make notebooks` install it).
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
            "tinyformer @ "
            "git+https://github.com/tinyformer/transformers-from-scratch@main",
        ],
        check=True,
    )

# %% [markdown]
# # 3. Self-attention
#
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/part1_decoder/03_self_attention.ipynb">Open in Colab</a> · runs in about 8 s on two CPU cores
#
# After the last chapter every token is a vector that knows *what* it is and *where* it
# is, but nothing about its neighbours. A verb cannot agree with its subject if it cannot
# see the subject. This chapter builds the one operation of the transformer that moves
# information between positions: **self-attention** {cite}`vaswani2017attention`.
#
# **Learning goals.** After this chapter you can
#
# - compute queries, keys and {term}`values <value>` from a `(B, T, D)` input and write
#   {term}`scaled dot-product attention` in four lines;
# - explain, with a measurement, why the scores are divided by $\sqrt{d_k}$;
# - build the causal mask, say which convention it uses, and prove through gradients that
#   position $t$ cannot see the future;
# - split attention into {term}`heads <attention head>` and merge them back, naming the shape at every step;
# - check all of it against `tinyformer` and against PyTorch's own
#   `F.scaled_dot_product_attention` and `nn.MultiheadAttention`.

# %%
import math
import textwrap

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import LogNorm
from matplotlib.patches import Patch
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.attention import (
    MultiHeadAttention,
    causal_mask,
    record_attention,
    scaled_dot_product_attention,
)
from tinyformer.language import ToyLanguage
from tinyformer.layers import SinusoidalPositionalEncoding, TokenEmbedding
from tinyformer.plot import plot_attention
from tinyformer.torch_bridge import load_mha_from_torch, to_torch_mask
from tinyformer.train import set_seed
from tinyformer.vocab import Vocab
from torch import nn

set_seed(0)  # seeds Python, NumPy and torch
# PNG figures at twice the pixels (same size on the page): the same in the book, on
# GitHub and in Colab.
set_matplotlib_formats("retina")
torch.set_printoptions(precision=2, sci_mode=False)

# %% [markdown]
# ## The idea: every position asks a question
#
# Take a sequence of $T$ vectors, stacked as a matrix $X$ of shape `(T, D)` (with a batch
# in front, `(B, T, D)`). Self-attention lets position $t$ build its new vector as a
# *weighted average* of all positions' vectors, with weights it chooses itself. Three
# linear maps of the **same** input play three roles:
#
# - the **query** $q_t = x_t W_Q$: what position $t$ is looking for;
# - the **key** $k_s = x_s W_K$: what position $s$ offers, to be matched against queries;
# - the **value** $v_s = x_s W_V$: what position $s$ hands over when it is chosen.
#
# Position $t$ scores every position $s$ by the dot product $q_t \cdot k_s$, turns the
# scores into probabilities with a {term}`softmax` over $s$, and returns the weighted sum of the
# values. For all positions at once, with $Q = XW_Q$, $K = XW_K$, $V = XW_V$:
#
# $$\operatorname{Attention}(Q, K, V)
#   = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V .$$
#
# $QK^\top$ is a `(T, T)` matrix of scores: row $t$ holds query $t$ against every key.
# The softmax runs along each row (over the keys), so each row of weights sums to 1.
# We come back to the $\sqrt{d_k}$ below.
#
# Let us follow the shapes on a small random batch: $B = 2$ sequences of $T = 5$ positions,
# $D = 8$ features, projected to $d_k = 4$.

# %%
B, T, D, d_k = 2, 5, 8, 4
x = torch.randn(B, T, D)  # (B, T, D)

W_q = nn.Linear(D, d_k, bias=False)  # three projections of the same input
W_k = nn.Linear(D, d_k, bias=False)
W_v = nn.Linear(D, d_k, bias=False)
q, k, v = W_q(x), W_k(x), W_v(x)  # each (B, T, d_k)

scores = (
    q @ k.transpose(-2, -1) / math.sqrt(d_k)
)  # (B, T, d_k) @ (B, d_k, T) -> (B, T, T)
weights = scores.softmax(dim=-1)  # softmax over the keys (last dim)
out = weights @ v  # (B, T, T) @ (B, T, d_k) -> (B, T, d_k)

print("x      ", tuple(x.shape))
print("q, k, v", tuple(q.shape))
print("scores ", tuple(scores.shape))
print("out    ", tuple(out.shape))
print(
    "each row of weights sums to 1:", torch.allclose(weights.sum(-1), torch.ones(B, T))
)

# %% [markdown]
# Row $t$ of `weights[0]` (the {term}`attention weights`) is how position $t$ of the first
# sequence splits its attention over the 5 positions:

# %%
weights[0].detach()

# %% [markdown]
# ## Scaled dot-product attention, written out
#
# Here is the whole operation as a function. It works for any leading dimensions
# `(...)`, which is what we need for heads later. The optional `mask` is boolean and
# `True` means **may attend**; a blocked score becomes $-\infty$, and $e^{-\infty} = 0$.


# %%
def attention(q, k, v, mask=None):
    """q (..., T_q, d_k), k (..., T_k, d_k), v (..., T_k, d_v).

    Returns (out (..., T_q, d_v), weights (..., T_q, T_k)).
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (..., T_q, T_k)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # blocked keys get weight 0
    weights = scores.softmax(dim=-1)  # (..., T_q, T_k), rows sum to 1
    return weights @ v, weights  # (..., T_q, d_v)


# %% [markdown]
# It should agree with the package version, `tinyformer.attention.scaled_dot_product_attention`,
# and with PyTorch's built-in `torch.nn.functional.scaled_dot_product_attention`, which
# uses the **same** mask convention as we do (`True` = may attend). We check without a
# mask, and with a mask: here the causal mask of the next sections, which lets position
# $t$ see positions $0, \dots, t$ only.

# %%
mask = causal_mask(T)  # (T, T) bool; broadcasts over the batch

ours, ours_w = attention(q, k, v)
pkg, pkg_w = scaled_dot_product_attention(q, k, v)
torch_out = F.scaled_dot_product_attention(q, k, v)
print(
    "no mask   : tinyformer",
    torch.allclose(ours, pkg, atol=1e-6),
    "| weights",
    torch.allclose(ours_w, pkg_w, atol=1e-6),
    "| F.scaled_dot_product_attention",
    torch.allclose(ours, torch_out, atol=1e-6),
)

ours, ours_w = attention(q, k, v, mask)
pkg, pkg_w = scaled_dot_product_attention(q, k, v, mask)
torch_out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
torch_causal = F.scaled_dot_product_attention(q, k, v, is_causal=True)
print(
    "with mask : tinyformer",
    torch.allclose(ours, pkg, atol=1e-6),
    "| weights",
    torch.allclose(ours_w, pkg_w, atol=1e-6),
    "| F.scaled_dot_product_attention",
    torch.allclose(ours, torch_out, atol=1e-6),
)
print(
    "            F.scaled_dot_product_attention with is_causal=True, no mask:",
    torch.allclose(ours, torch_causal, atol=1e-6),
)

# %% [markdown]
# ## Why divide by $\sqrt{d_k}$?
#
# Suppose the entries of $q$ and $k$ are independent, with mean 0 and variance 1. Then
# $q \cdot k = \sum_{i=1}^{d_k} q_i k_i$ is a sum of $d_k$ independent terms, each of
# mean 0 and variance
# $\operatorname{Var}(q_i k_i) = \operatorname{E}[q_i^2]\,\operatorname{E}[k_i^2] = 1$.
# So $\operatorname{Var}(q \cdot k) = d_k$: the scores' typical size grows like
# $\sqrt{d_k}$. Dividing by $\sqrt{d_k}$ brings the variance back to 1, whatever the
# width. This is exactly the argument of {cite}`vaswani2017attention` (Section 3.2.1 and
# its footnote 4): for large $d_k$ the dot products grow large in magnitude, "pushing the
# softmax function into regions where it has extremely small gradients".
#
# Why would large scores hurt? A softmax of large, spread-out scores puts almost all its
# weight on the largest one: it {term}`saturates <saturation>` into a hard one-hot choice, and a one-hot
# softmax barely moves when its inputs move. Its Jacobian is
# $\partial p_i / \partial s_j = p_i(\delta_{ij} - p_j)$, which is 0 everywhere when
# $p$ is one-hot. A saturated attention layer passes (almost) no gradient to its queries
# and keys, so it cannot learn where to look.
#
# Let us measure all three claims. For each $d_k$ from 4 to 1024 we draw 1000 queries,
# each against $T_k = 16$ keys, all with unit-variance entries, and compare raw scores
# $q \cdot k$ with scaled scores $q \cdot k / \sqrt{d_k}$. For each softmax row we record
#
# - the largest weight (1 = one-hot, $1/16$ = uniform);
# - the entropy $-\sum_j p_j \ln p_j$ (0 = one-hot, $\ln 16 \approx 2.77$ = uniform);
# - the gradient norm $\lVert \partial L / \partial s \rVert$ for a loss $L = \sum_j c_j p_j$
#   with a random direction $c$, i.e. how much signal reaches the scores. We report the
#   median over the 1000 rows: the typical row.

# %%
generator = set_seed(0)
d_ks = [4, 8, 16, 32, 64, 128, 256, 512, 1024]
N, T_k = 1000, 16

results = {False: [], True: []}  # scaled? -> one dict per d_k
for dk in d_ks:
    q_ = torch.randn(N, 1, dk, generator=generator, dtype=torch.float64)  # (N, 1, d_k)
    k_ = torch.randn(
        N, T_k, dk, generator=generator, dtype=torch.float64
    )  # (N, T_k, d_k)
    c = torch.randn(
        N, T_k, generator=generator, dtype=torch.float64
    )  # random upstream grad
    raw = (q_ @ k_.transpose(-2, -1)).squeeze(1)  # (N, T_k): the dot products q . k
    for scaled in (False, True):
        s = (raw / math.sqrt(dk) if scaled else raw).detach().requires_grad_()
        p = s.softmax(dim=-1)  # (N, T_k)
        (p * c).sum().backward()  # s.grad = dL/ds for L = sum_j c_j p_j, row by row
        entropy = -(p * p.clamp_min(1e-300).log()).sum(-1)
        results[scaled].append(
            {
                "var": s.detach().var().item(),
                "max_w": p.max(-1).values.mean().item(),
                "entropy": entropy.mean().item(),
                "grad": s.grad.norm(dim=-1).median().item(),
            }
        )

columns = ["variance", "max weight", "entropy", "median grad"]
widths = [14, 12, 12, 17]
print(
    " " * 4, "|", " | ".join(f"{c:>{w}}" for c, w in zip(columns, widths, strict=True))
)
print(" d_k", "|", " | ".join(f"{'raw / scaled':>{w}}" for w in widths))
for dk, r, sc in zip(d_ks, results[False], results[True], strict=True):
    cells = [
        f"{r['var']:.1f} / {sc['var']:.2f}",
        f"{r['max_w']:.2f} / {sc['max_w']:.2f}",
        f"{r['entropy']:.2f} / {sc['entropy']:.2f}",
        f"{r['grad']:.1e} / {sc['grad']:.1e}",
    ]
    print(
        f"{dk:4d} |",
        " | ".join(f"{c:>{w}}" for c, w in zip(cells, widths, strict=True)),
    )

# %% [markdown]
# The table says it in numbers; the figure says it at a glance. Top left: the variance
# of raw scores follows the line $\operatorname{Var} = d_k$ (so their standard deviation
# grows like $\sqrt{d_k}$) while scaled scores stay at 1. Top right and bottom left:
# without scaling the largest weight creeps towards 1 and the entropy falls towards 0
# (saturation). Bottom right: the typical gradient reaching the scores collapses by
# orders of magnitude. With scaling all three curves are flat.

# %% mystnb={"figure": {"caption": "Raw scores q\u00b7k against scaled scores q\u00b7k/\u221ad_k, for d_k from 4 to 1024 (1000 queries, 16 keys each). The variance of raw scores grows like d_k; without scaling the softmax saturates (largest weight towards 1, entropy towards 0) and the gradient reaching the scores vanishes. Scaled, all four stay flat.", "name": "fig-ch03-scaling"}, "image": {"alt": "Four line plots against d_k on a log scale, red for raw scores and blue for scaled ones. Variance: red follows the dashed line Var = d_k up to about 1000, blue stays at 1. Mean largest weight: red rises from 0.43 to 0.96, blue stays near 0.25. Mean entropy: red falls from 1.75 to 0.09 nats, blue stays near 2.36. Median gradient norm, log scale: red falls from about 0.3 to 4e-6, blue stays near 0.27."}} tags=["hide-input"]
fig, axes = plt.subplots(2, 2, figsize=(10, 7.5))
axes = axes.ravel()
style = {
    False: dict(label="raw  q·k", marker="o", color="tab:red"),
    True: dict(label="scaled  q·k/√d_k", marker="s", color="tab:blue"),
}
panels = [
    ("var", "variance of the scores", "log"),
    ("max_w", "mean largest weight", "linear"),
    ("entropy", "mean entropy (nats)", "linear"),
    ("grad", "median ‖∂L/∂s‖", "log"),
]
for ax, (key, ylabel, yscale) in zip(axes, panels, strict=True):
    for scaled in (False, True):
        ax.plot(d_ks, [r[key] for r in results[scaled]], **style[scaled])
    ax.set_xscale("log", base=2)
    ax.set_yscale(yscale)
    ax.set_xlabel("$d_k$")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
axes[0].plot(d_ks, d_ks, "k--", linewidth=1, label="$d_k$")
axes[1].axhline(1 / T_k, color="gray", linestyle=":", label="uniform 1/16")
axes[2].axhline(math.log(T_k), color="gray", linestyle=":", label="uniform ln 16")
for ax in axes[:3]:
    ax.legend(fontsize=10)
axes[0].set_title("variance grows like $d_k$ (std like $\\sqrt{d_k}$)")
axes[1].set_title("softmax saturates...")
axes[2].set_title("...its entropy collapses...")
axes[3].set_title("...and its gradient vanishes")
fig.tight_layout()

# %% [markdown]
# The same claims, as assertions (with tolerances, since they are statistics of 1000
# random rows):

# %%
raw, scaled = results[False], results[True]
assert all(
    0.9 < r["var"] / dk < 1.1 for r, dk in zip(raw, d_ks, strict=True)
)  # Var = d_k
assert all(0.9 < r["var"] < 1.1 for r in scaled)  # Var = 1 after scaling
assert raw[-1]["entropy"] < 0.2 < 2.2 < scaled[-1]["entropy"]  # saturated vs not
assert (
    raw[-1]["grad"] < 1e-3 * scaled[-1]["grad"]
)  # 1000 times less gradient at d_k = 1024
print(
    "Var(q.k) = d_k, scaling restores 1;",
    "unscaled softmax saturates and its gradient vanishes",
)

# %% [markdown]
# <div class="admonition note">
# <p class="admonition-title">A normalisation at the start, not a law</p>
# <p>In a trained model $q$ and $k$ are not independent unit Gaussians, so the scaling is
# a sensible <em>initial</em> normalisation rather than a law: it makes the scores start
# with unit variance whatever $d_k$ is, so that no head width starts out saturated. What
# the scores become during training is up to the learned projections.</p>
# </div>

# %% [markdown]
# ## The causal mask
#
# A language model predicts token $t + 1$ from tokens $0, \dots, t$. If position $t$
# could attend to position $t + 1$, it could simply read the answer. So in a decoder,
# query $t$ may attend to keys $s \le t$ only. That is the **causal mask**: a `(T, T)`
# boolean matrix, `True` on and below the diagonal.
#
# Our convention, the same as `F.scaled_dot_product_attention`: **`True` = may attend.**

# %%
T = 6
mask = causal_mask(T)  # (T, T): row = query position, column = key position
print(mask.int())

# %% [markdown]
# The `(T, T)` mask broadcasts against scores of shape `(B, T, T)`, or `(B, H, T, T)` once
# we have heads: every sequence and every head uses the same mask.
#
# Masking a score to $-\infty$ makes its weight *exactly* zero, so the future should have
# *exactly* no influence on the past. We can prove it without trusting the code: compute
# the Jacobian of the output with respect to the input, and measure
# $\lVert \partial\, \text{out}_t / \partial x_s \rVert$ for every pair of positions.
# With the mask it must be exactly 0 whenever $s > t$.

# %%
torch.manual_seed(0)
D = 16
mha = MultiHeadAttention(d_model=D, n_heads=4)  # the package's layer; written out below
x = torch.randn(1, T, D)  # (1, T, D)


def dependence(mask):
    """(T, T) matrix: entry [t, s] = || d out_t / d x_s ||, from the full Jacobian."""
    jac = torch.autograd.functional.jacobian(
        lambda x: mha(x, mask=mask), x
    )  # (1,T,D,1,T,D)
    return jac[0, :, :, 0, :, :].pow(2).sum(dim=(1, 3)).sqrt()  # (T, T)


dep_causal = dependence(causal_mask(T))
dep_full = dependence(None)
future = ~causal_mask(T)  # True where s > t
print(
    "with the causal mask, largest influence of the future:",
    dep_causal[future].max().item(),
)
print("  ... and every s <= t has an influence:", bool((dep_causal[~future] > 0).all()))
print(
    "without a mask, smallest influence of the future:",
    round(dep_full[future].min().item(), 3),
)

# %% mystnb={"figure": {"caption": "How much each output position t depends on each input position s, measured through the Jacobian, with the causal mask (left) and without a mask (right). The colours use one logarithmic scale for both panels, over the non-zero entries. Exact zeros (grey, hatched) are outside the colour scale. With the mask, the grey triangle above the diagonal is exactly the set the mask blocks; without it no entry is zero.", "name": "fig-ch03-jacobian"}, "image": {"alt": "Two 6 by 6 heatmaps of the norm of the derivative of output t with respect to input s, on a shared logarithmic colour scale from about 0.2 to 1.45, output position t on the vertical axis and input position s on the horizontal axis. Left, with the causal mask: coloured cells on and below the diagonal, brightest at the top-left cell and fading down the rows, and every cell above the diagonal grey and hatched, meaning exactly zero. Right, without a mask: every cell coloured, all between about 0.2 and 0.33, none zero."}} tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
panels = [
    (dep_causal, "with the causal mask"),
    (dep_full, "without a mask"),
]
nonzero = torch.cat([dep_causal[dep_causal > 0], dep_full[dep_full > 0]])
# One log scale for both panels, over the non-zero entries: the (0, 0) entry is several
# times larger than the rest and would flatten a linear scale.
norm = LogNorm(vmin=nonzero.min().item(), vmax=nonzero.max().item())
cmap = plt.get_cmap("viridis").with_extremes(bad="#d9d9d9")  # masked cells: grey
for ax, (m, title) in zip(axes, panels, strict=True):
    m = m.detach().numpy()
    exact_zero = m == 0
    image = ax.imshow(np.ma.masked_where(exact_zero, m), cmap=cmap, norm=norm)
    for t, s in zip(*exact_zero.nonzero(), strict=True):  # hatch the exact zeros too
        ax.add_patch(
            plt.Rectangle((s - 0.5, t - 0.5), 1, 1, fill=False, hatch="///", lw=0)
        )
    ax.set_title(f"‖∂ out_t / ∂ x_s‖, {title}")
    ax.set_xlabel("input / key position s")
    ax.set_ylabel("output / query position t")
    ax.set_xticks(range(T))
    ax.set_yticks(range(T))
colorbar = fig.colorbar(
    image, ax=axes, fraction=0.03, pad=0.03, label="‖∂ out_t / ∂ x_s‖ (log scale)"
)
ticks = [0.25, 0.35, 0.5, 0.7, 1.0, 1.4]
colorbar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
colorbar.ax.minorticks_off()
axes[0].legend(
    handles=[Patch(facecolor="#d9d9d9", hatch="///", label="exactly 0")],
    loc="upper center",
    bbox_to_anchor=(0.5, -0.18),
    frameon=False,
)
plt.show()

# %% [markdown]
# The left panel is the mask again, this time *measured*: output $t$ depends on
# inputs $0, \dots, t$ and on nothing after. The upper triangle is not small, it is
# exactly zero (grey).

# %%
assert (dep_causal[future] == 0).all() and (dep_causal[~future] > 0).all()
assert (dep_full > 0).all()

# %% [markdown]
# ### PyTorch's `nn.MultiheadAttention` and its mask
#
# <div class="admonition warning">
# <p class="admonition-title">nn.MultiheadAttention uses the opposite mask convention</p>
# <p><strong>In <code>torch.nn.MultiheadAttention</code> (and <code>nn.Transformer</code>,
# <code>nn.TransformerEncoderLayer</code>, <code>nn.TransformerDecoderLayer</code>), a
# boolean <code>attn_mask</code> or <code>key_padding_mask</code> means <code>True</code>
# = NOT allowed to attend.</strong> That is the inverse of tinyformer and of
# <code>F.scaled_dot_product_attention</code>, where <code>True</code> = may attend.
# Nothing checks this for you: both are boolean <code>(T, T)</code> tensors, so passing
# one convention where the other is expected runs without error and silently computes
# something else. <code>tinyformer.torch_bridge.to_torch_mask</code> converts ours into
# theirs (it is <code>~mask</code>).</p>
# </div>
#
# Here is what happens if you forget. We give `nn.MultiheadAttention` our causal mask
# without converting it and look at the first head's weights (head 1 of 4):

# %%
torch.manual_seed(0)
theirs = nn.MultiheadAttention(D, num_heads=4, batch_first=True).eval()
with torch.no_grad():
    _, wrong = theirs(
        x,
        x,
        x,
        attn_mask=causal_mask(T),  # WRONG: our convention
        need_weights=True,
        average_attn_weights=False,
    )
    _, right = theirs(
        x,
        x,
        x,
        attn_mask=to_torch_mask(causal_mask(T)),  # converted
        need_weights=True,
        average_attn_weights=False,
    )
print("our mask passed unconverted (head 1):")
print(wrong[0, 0])
print("to_torch_mask(causal_mask(T)) (head 1):")
print(right[0, 0])

# %% [markdown]
# With the unconverted mask every position reads **only the future** (the upper
# triangle), exactly what the causal mask was meant to forbid, and the last position,
# which has no future, is left with nothing to attend to: NaN. Converted, the weights are
# lower-triangular, as they should be.

# %% [markdown]
# ## Multi-head attention
#
# One attention gives each position *one* weighted average. But a word may need several
# things at once: a verb wants its subject's number *and* the word just before it.
# **{term}`Multi-head attention <multi-head attention>`** runs $H$ attentions side by side, each in its own
# $d_k = D / H$ dimensional slice, then concatenates their outputs and mixes them with an
# output projection $W_O$:
#
# $$\operatorname{MultiHead}(X) = \operatorname{Concat}(\text{head}_1, \dots, \text{head}_H)\, W_O,
# \qquad \text{head}_h = \operatorname{Attention}(X W_Q^{h}, X W_K^{h}, X W_V^{h}).$$
#
# We do not need $3H$ separate small matrices: one `(D, D)` projection computes all
# heads' queries at once, and a reshape hands each head its own $d_k$ columns: head $h$
# (numbered 1 to $H$, as in the formula and in [Chapter 5](05_training_and_generation.ipynb)'s
# figures) owns columns
# $(h - 1)\,d_k$ to $h\,d_k - 1$, and sits at index `h - 1` of the heads dimension in code,
# where Python counts from 0. The shapes:
#
# ```
# x                      (B, T, D)
# q = q_proj(x)          (B, T, D)
#   .view(B, T, H, d_k)  (B, T, H, d_k)     split D into H heads of d_k
#   .transpose(1, 2)     (B, H, T, d_k)     heads become a batch dimension
# attention(q, k, v)     (B, H, T, d_k)     H independent attentions, scores (B, H, T, T)
#   .transpose(1, 2)     (B, T, H, d_k)
#   .reshape(B, T, D)    (B, T, D)          concatenate the heads
# out_proj(...)          (B, T, D)          mix them
# ```
#
# Written out, borrowing the four `nn.Linear(D, D)` layers of a `tinyformer`
# `MultiHeadAttention` so that we can compare:


# %%
def multi_head_attention(x, mha, mask=None):
    """x (B, T, D) -> (B, T, D), using mha's q_proj, k_proj, v_proj, out_proj."""
    B, T, D = x.shape
    H = mha.n_heads
    d_k = D // H

    def split(t):  # (B, T, D) -> (B, H, T, d_k)
        return t.view(B, T, H, d_k).transpose(1, 2)

    q, k, v = split(mha.q_proj(x)), split(mha.k_proj(x)), split(mha.v_proj(x))
    out, _ = attention(
        q, k, v, mask
    )  # (B, H, T, d_k); a (T, T) mask broadcasts over B, H
    out = out.transpose(1, 2).reshape(B, T, D)  # merge: concatenate the H heads
    return mha.out_proj(out)  # (B, T, D)


# %% [markdown]
# Now three implementations of one layer: ours above, `tinyformer.attention.MultiHeadAttention`,
# and `torch.nn.MultiheadAttention(batch_first=True)`. PyTorch stores the three input
# projections stacked in one `(3D, D)` matrix `in_proj_weight`;
# `tinyformer.torch_bridge.load_mha_from_torch` splits it into our `q_proj`, `k_proj`, `v_proj`
# so that all three compute with the same numbers. We pass the causal mask in each one's
# own convention: ours as is, PyTorch's through `to_torch_mask`.

# %%
B, T, D, H = 3, 7, 32, 4
torch.manual_seed(0)
theirs = nn.MultiheadAttention(D, num_heads=H, batch_first=True).eval()
mha = MultiHeadAttention(d_model=D, n_heads=H).eval()
load_mha_from_torch(mha, theirs)  # same weights in both

x = torch.randn(B, T, D)  # (B, T, D)
mask = causal_mask(T)  # (T, T), True = may attend
with torch.no_grad():
    ours = multi_head_attention(x, mha, mask)
    pkg = mha(x, mask=mask)
    torch_out, _ = theirs(x, x, x, attn_mask=to_torch_mask(mask), need_weights=False)
print("output shape", tuple(ours.shape))
print(
    "written out == tinyformer MultiHeadAttention:",
    torch.allclose(ours, pkg, atol=1e-6),
)
print(
    "written out == nn.MultiheadAttention        :",
    torch.allclose(ours, torch_out, atol=1e-6),
)

# %% [markdown]
# The parameter count does not depend on $H$: four `(D, D)` weight matrices
# ($W_Q, W_K, W_V, W_O$) and four bias vectors of length $D$, so $4D^2 + 4D$. Splitting
# into heads costs no parameters; it only changes how the $D$ columns are grouped.


# %%
def n_params(module):
    return sum(p.numel() for p in module.parameters())


for heads in (1, 2, 4, 8):
    print(f"H = {heads}: {n_params(MultiHeadAttention(D, heads))} parameters")
print(f"4 D^2 + 4 D = {4 * D**2 + 4 * D};  nn.MultiheadAttention: {n_params(theirs)}")
assert n_params(mha) == n_params(theirs) == 4 * D**2 + 4 * D

# %% [markdown]
# ## Attention on a toy sentence
#
# Time for the toy language. We take a sentence of
# [Chapter 1](01_the_toy_language.ipynb), put `<bos>` in front (the decoder's input),
# embed it with [Chapter 2](02_embeddings_and_positions.ipynb)'s token embedding and
# sinusoidal positions, and run one causal multi-head attention layer over it. The layer
# itself returns only its output; to see the weights `(B, H, T, T)` we run it inside
# `tinyformer.attention.record_attention`, which makes every attention layer of a model
# keep the weights it used, under the layer's name (`""` for a bare layer like this one;
# names such as `"decoder.blocks.0.self_attn"` in a whole model). We number the heads
# 1 to $H$, as in the formula above.
#
# <div class="admonition warning">
# <p class="admonition-title">The weights are random, so the pattern means nothing yet</p>
# <p>Nothing has been trained: which word looks at which is an accident of the
# initialisation. What <em>is</em> meaningful is the structure the mask imposes.</p>
# </div>
#
# [Chapter 5](05_training_and_generation.ipynb) looks at the heads of a trained model,
# which have learned where to look. It does not draw this full map but a summary: for
# each of its 8 heads, how much weight the position that predicts the verb puts on four
# kinds of word (the subject noun, its determiner, the attractor noun(s), the rest).

# %%
lang = ToyLanguage()
vocab = Vocab(lang.words)
sentence = lang.sample(5, seed=0)[3]
tokens = ["<bos>"] + sentence
print(" ".join(tokens))

set_seed(0)
D, H = 32, 4
embed = TokenEmbedding(len(vocab), D)
position = SinusoidalPositionalEncoding(D, max_len=32)
mha = MultiHeadAttention(D, H).eval()

ids = torch.tensor([vocab.encode(sentence, bos=True)])  # (1, T)
T = ids.shape[1]
with torch.no_grad(), record_attention(mha) as maps:
    h = position(embed(ids))  # (1, T, D)
    out = mha(h, mask=causal_mask(T))  # (1, T, D)
w = maps[""]  # (1, H, T, T): the weights the layer used
print(
    "ids",
    tuple(ids.shape),
    "-> h",
    tuple(h.shape),
    "-> out",
    tuple(out.shape),
    "| weights",
    tuple(w.shape),
)

# %% mystnb={"figure": {"caption": "The attention weights of heads 1 to 4 of one untrained causal attention layer on a toy sentence. Which word looks at which is an accident of the random initialisation; the structure is not: every map is lower-triangular, and the first row puts all its weight on <bos>.", "name": "fig-ch03-heads"}, "image": {"alt": "Four 11 by 11 heatmaps of attention weights, one per head, with the tokens of '<bos> the cat that sees some red mice likes the cat' as row (query) and column (key) labels. In every map the cells above the diagonal are white (weight 0), the top-left cell is dark (weight 1), and the weights in the lower rows are spread thinly over many earlier tokens."}} tags=["hide-input"]
fig, axes = plt.subplots(2, 2, figsize=(10, 9.5))
for head, ax in enumerate(axes.flat):
    plot_attention(
        w[0, head], tokens, tokens, ax=ax, title=f"head {head + 1} (random weights)"
    )
fig.suptitle("Causal self-attention on a toy sentence, before any training")
fig.tight_layout()

# %% [markdown]
# Every head is lower-triangular: `<bos>` can only look at itself (weight 1), the second
# token splits its attention between two positions, and so on. Above the diagonal the
# weights are not small but exactly zero, and every row is still a probability
# distribution:

# %%
upper = ~causal_mask(T)
print("largest weight above the diagonal:", w[0][:, upper].max().item())
print("rows sum to 1:", torch.allclose(w.sum(-1), torch.ones(1, H, T)))
print("<bos> attends only to itself:", bool((w[0, :, 0, 0] == 1).all()))
assert (w[0][:, upper] == 0).all()

# %% [markdown]
# ## Clear errors for bad input
#
# Two mistakes are common enough that `tinyformer` checks for them and says what it
# expected and what it got: a number of heads that does not divide `d_model`, and a mask
# whose shape does not fit the scores (here, a mask built for the wrong length).

# %%
try:
    MultiHeadAttention(d_model=32, n_heads=5)
except ValueError as error:
    print(textwrap.fill(f"ValueError: {error}", width=80, subsequent_indent="  "))

try:
    mha(h, mask=causal_mask(T + 1))  # mask for T + 1 positions, input has T
except ValueError as error:
    print(textwrap.fill(f"ValueError: {error}", width=80, subsequent_indent="  "))

# %% [markdown]
# ## What we learned
#
# - Self-attention computes queries, keys and values as three linear maps of the same
#   `(B, T, D)` input; the scores $QK^\top$ are `(B, T, T)`; a softmax over the keys turns
#   each row into weights that average the values.
# - Our four-line `attention` equals `tinyformer.attention.scaled_dot_product_attention`
#   and `F.scaled_dot_product_attention`, with and without a mask.
# - With unit-variance entries $\operatorname{Var}(q \cdot k) = d_k$; dividing by
#   $\sqrt{d_k}$ keeps it at 1. Without it, at $d_k = 1024$, the softmax is nearly one-hot
#   and the typical gradient reaching the scores is more than 1000 times smaller.
# - The causal mask is `True` on and below the diagonal (`True` = may attend). Through
#   the Jacobian we saw that output $t$ depends on inputs $0..t$ and *exactly* not on later
#   ones. `nn.MultiheadAttention` uses the opposite convention: convert with
#   `to_torch_mask`, or it silently attends to the future.
# - Multi-head attention reshapes `(B, T, D) → (B, H, T, d_k)`, attends in each head,
#   and merges back to `(B, T, D)`; it equals `tinyformer`'s `MultiHeadAttention` and
#   PyTorch's `nn.MultiheadAttention`, and has $4D^2 + 4D$ parameters whatever $H$ is.
#
# Next, [Chapter 4](04_the_decoder_block.ipynb) wraps this layer with a feed-forward network,
# {term}`residual connections <residual connection>` and {term}`layer normalisation` into a
# {term}`decoder block`, and stacks blocks into a language model.

# %% [markdown]
# ## Exercises
#
# **1. All keys equal.** Suppose every key is the same vector, $k_s = k$ for all $s$.
# What are the attention weights, and what does each position output, with and without
# the causal mask? Check your answer in code.
#
# <details class="solution"><summary>Solution</summary>
#
# Every score in row $t$ is the same number $q_t \cdot k / \sqrt{d_k}$, and a softmax of
# equal numbers is uniform. Without a mask each position outputs the plain mean of all
# values, $\frac{1}{T}\sum_s v_s$, the same for every position whatever its query. With the
# causal mask, position $t$ outputs the running mean $\frac{1}{t+1}\sum_{s \le t} v_s$.
# Attention can only discriminate between positions through differences between keys.
#
# ```python
# q, v = torch.randn(1, 5, 4), torch.randn(1, 5, 4)
# k = torch.randn(1, 1, 4).expand(1, 5, 4)              # five copies of one key
# out, w = attention(q, k, v, causal_mask(5))
# running_mean = v.cumsum(1) / torch.arange(1, 6).view(1, 5, 1)
# print(torch.allclose(out, running_mean, atol=1e-6))  # True
# ```
#
# </details>
#
# **2. Cost in $T$.** How do the time and memory of one attention layer grow with the
# sequence length $T$ (for fixed $D$)? Which part dominates for our toy sentences
# ($T \le 17$, $D = 64$), and which for a document of $T = 100\,000$ tokens?
#
# <details class="solution"><summary>Solution</summary>
#
# The projections cost about $4TD^2$ multiply-adds (four `(D, D)` matrices applied to $T$
# vectors): linear in $T$. The scores $QK^\top$ and the product with $V$ cost about
# $2T^2 D$ (summed over heads, since $H d_k = D$), and the weights take $H T^2$ numbers of
# memory per sequence: quadratic in $T$. The quadratic part wins when $T > 2D$. For our
# sentences ($T \le 17 < 128$) the projections dominate; at $T = 100\,000$ the score
# matrix alone holds $10^{10}$ entries per head, which is why long-context models use
# memory-efficient kernels that never store the whole `(T, T)` matrix
# {cite}`dao2022flashattention` or restrict which
# positions may attend to which.
#
# </details>
#
# **3. Why several heads?** Multi-head attention has the same $4D^2 + 4D$ parameters as a
# single head of width $D$. What can $H = 4$ heads do that one head cannot?
#
# <details class="solution"><summary>Solution</summary>
#
# One head gives each position one probability distribution over the positions, so its
# output is one weighted average of values. If a verb needs to read the number of its
# subject (far back) *and* the word just before it, a single softmax must either split
# its weight, blurring both, or choose one. $H$ heads give each position $H$ independent
# distributions, each reading its own $d_k$-dimensional slice of the values, and $W_O$
# combines what they found. The price is that each head's scores come from only
# $d_k = D/H$ dimensions. (You can test the "no extra parameters" part with `n_params`
# above for any $H$ that divides $D$.)
#
# </details>
#
# **4. Why $-\infty$ and not 0?** The causal mask sets blocked scores to $-\infty$ before
# the softmax. What would go wrong if we set them to 0 instead? And what if we instead set
# blocked *weights* to 0 after the softmax?
#
# <details class="solution"><summary>Solution</summary>
#
# A score of 0 is an ordinary score, not a prohibition: it gets weight $e^0 / Z > 0$, so
# the future still leaks into the past (and can even receive *more* weight than allowed
# positions whose scores are negative). Only $-\infty$ gives $e^{-\infty} = 0$ exactly, as
# the Jacobian experiment showed. Zeroing weights after the softmax does remove the
# future, but the rows then sum to less than 1, and by an amount that depends on the
# future's scores, so the *size* of the output still leaks information about the future
# (and its gradient flows back into future positions). You would have to renormalise each
# row, which is exactly what a softmax over $-\infty$-masked scores does in one step.
#
# ```python
# q, k, v = (torch.randn(1, 5, 4, requires_grad=True) for _ in range(3))
# scores = (q @ k.transpose(-2, -1) / 2).masked_fill(~causal_mask(5), 0.0)  # 0, not -inf
# (scores.softmax(-1) @ v)[0, 0].sum().backward()
# print(v.grad[0, 1:].abs().max() > 0)  # tensor(True): position 0 reads future values
# ```
#
# </details>
