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
            "tinyformer @ git+https://github.com/tinyformer/transformers-from-scratch@main",
        ],
        check=True,
    )

# %% [markdown]
# # 4. The decoder block
#
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/part1_decoder/04_the_decoder_block.ipynb">Open in Colab</a> · runs in about 25 s on two CPU cores
#
# Self-attention moves information *between* positions. On its own it is not a model:
# it has no non-linearity of its own beyond the softmax, and nothing in it transforms a
# position's vector once it has gathered what it reads. The transformer wraps it in
# three more ideas, a position-wise **feed-forward network**, **residual connections**
# and **layer normalisation**, into one **block**, and stacks $N$ identical blocks
# {cite}`vaswani2017attention`. This
# chapter builds that block, `tinyformer.blocks.TransformerBlock`, stacks it into a
# complete GPT-style language model, `DecoderLM`, and checks every piece against
# `tinyformer` and PyTorch.
#
# **Learning goals.** After this chapter you can
#
# - write the feed-forward network and layer normalisation in a few lines each;
# - say what residual connections buy, with a measurement: a gradient path that does not
#   depend on getting the initial weight scale exactly right;
# - tell {term}`pre-LN` from {term}`post-LN`, say which one the 2017 paper used, and show
#   what goes wrong with post-LN when training starts at a high learning rate without
#   warmup;
# - see why PyTorch calls a GPT block an *encoder* layer;
# - write a training loop in six lines and check that `tinyformer.train.train` does the
#   same;
# - count the parameters of the whole model from its hyper-parameters;
# - prove through gradients that the whole model is causal.

# %%
import copy
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.attention import causal_mask
from tinyformer.blocks import TransformerBlock
from tinyformer.config import TransformerConfig
from tinyformer.decoder import DecoderLM, expected_num_parameters
from tinyformer.language import ToyLanguage
from tinyformer.layers import FeedForward
from tinyformer.objectives import lm_loss
from tinyformer.plot import plot_loss_curve
from tinyformer.stack import TransformerStack
from tinyformer.torch_bridge import load_block_from_torch, to_torch_mask
from tinyformer.train import adamw, evaluating, set_seed, train
from tinyformer.vocab import Vocab
from torch import nn

set_seed(0)  # seeds Python, NumPy and torch
# One thread: on two, the embedding's backward pass adds up its gradient in an order
# that changes from run to run, and training turns that rounding into different
# numbers. On one thread every run gives exactly the numbers printed here.
torch.set_num_threads(1)
set_matplotlib_formats("retina")  # PNG at twice the pixels: sharp in the book and Colab

# %% [markdown]
# ## The block at a glance
#
# A decoder block maps a `(B, T, D)` tensor to a `(B, T, D)` tensor. It has two
# **sublayers**, each wrapped in a residual connection and a LayerNorm:
#
# ```
#   x ──► causal self-attention ──► + ──► feed-forward network ──► + ──► out
#   │                               ▲  │                           ▲
#   └───────────────────────────────┘  └───────────────────────────┘
#          (plus a LayerNorm per sublayer: before it, or after the +)
# ```
#
# Attention lets each position read from earlier positions; the feed-forward network
# then processes each position *on its own*. Because input and output have the same
# shape, blocks stack. We take the pieces one at a time.
#
# ## The feed-forward network
#
# The second sublayer is a two-layer perceptron applied to every position separately
# and identically {cite}`vaswani2017attention` (section 3.3):
#
# $$\operatorname{FFN}(x) = \max(0,\; x W_1 + b_1)\, W_2 + b_2,
#   \qquad W_1 \in \mathbb{R}^{D \times d_{ff}},\; W_2 \in \mathbb{R}^{d_{ff} \times D}.$$
#
# The hidden layer is wider than the model: the paper uses $D = 512$ and
# $d_{ff} = 2048 = 4D$, and so do we by default ($D = 64$, $d_{ff} = 256$). Shapes:
# `(B, T, D) → (B, T, d_ff) → (B, T, D)`. Written out:


# %%
def feed_forward(x, W1, b1, W2, b2):
    """x (B, T, D) -> (B, T, D) through a ReLU hidden layer of width d_ff."""
    h = torch.relu(x @ W1 + b1)  # (B, T, D) @ (D, d_ff) -> (B, T, d_ff)
    return h @ W2 + b2  # (B, T, d_ff) @ (d_ff, D) -> (B, T, D)


B, T, D, d_ff = 2, 5, 64, 256
ff = FeedForward(D, d_ff)  # the package's version
x = torch.randn(B, T, D)

# nn.Linear stores its weight as (out, in), so x @ W1 needs the transpose.
W1, b1 = ff.linear1.weight.T, ff.linear1.bias  # (D, d_ff), (d_ff,)
W2, b2 = ff.linear2.weight.T, ff.linear2.bias  # (d_ff, D), (D,)
out = feed_forward(x, W1, b1, W2, b2)
hidden = tuple((x @ W1).shape)
print("x", tuple(x.shape), "-> hidden", hidden, "-> out", tuple(out.shape))
assert torch.allclose(out, ff(x), atol=1e-6)
print("feed_forward == tinyformer.layers.FeedForward")

# %% [markdown]
# "Position-wise" means no information crosses positions: running the network on one
# position alone gives the same vector as running it on the whole sequence. All mixing
# between positions happens in attention.

# %%
alone = feed_forward(x[:, 2:3], W1, b1, W2, b2)  # position 2 only: (B, 1, D)
assert torch.allclose(alone, out[:, 2:3], atol=1e-6)
n_ff = sum(p.numel() for p in ff.parameters())
print(f"position 2 alone == position 2 in context; parameters: {n_ff}")
print(f"2 * D * d_ff + d_ff + D = {2 * D * d_ff + d_ff + D}")

# %% [markdown]
# The network holds most of a block's parameters ($2 \cdot D \cdot d_{ff} = 8D^2$, twice
# attention's $4D^2$). A common reading is that attention *gathers* information from
# other positions and the feed-forward network *processes* it at each position.
#
# ## Residual connections
#
# Each sublayer $f$ does not replace its input, it adds to it: $x \leftarrow x + f(x)$.
# This idea comes from residual networks in vision {cite}`he2016deep`. The Jacobian of
# $x + f(x)$ is $I + \partial f/\partial x$, so through $N$ stacked sublayers the
# gradient is a product of $N$ such factors, and expanding that product always leaves
# the plain identity term: a **direct path** from the output back to the input that
# passes through no weight matrix. Without the $I$, the gradient is a product of $N$
# Jacobians and gets multiplied by roughly the same factor at every layer.
#
# A measurement: 24 feed-forward networks composed plainly, $f_{24}(\dots f_1(x))$, with
# residual connections, $x + f(x)$, or with pre-LN residual connections,
# $x + f(\operatorname{LN}(x))$ (LayerNorm is the next section). We send a random
# gradient, `probe`, back from the output and measure the gradient that reaches the
# input. We do it for two initialisations of the networks' weights:
#
# - **PyTorch's default** for `nn.Linear`: uniform, with variance $1/(3\,n_{in})$
#   for a layer with $n_{in}$ inputs (biases uniform too);
# - **He (Kaiming) initialisation** {cite}`he2015delving`: normal with variance
#   $2/n_{in}$ for a layer followed by a ReLU, which halves the mean square of a
#   zero-mean signal, and $1/n_{in}$ for the last, linear layer; biases zero. A layer
#   then keeps the mean square of its input.

# %%
set_seed(0)
depth = 24
norms = [nn.LayerNorm(D) for _ in range(depth)]
x = torch.randn(8, D, requires_grad=True)  # 8 input vectors
probe = torch.randn(8, D)  # the gradient we send back from the output


def make_layers(init, scale=1.0):
    """`depth` FeedForward networks, initialised by PyTorch ("default") or He ("he")."""
    layers = [FeedForward(D, d_ff) for _ in range(depth)]
    if init == "he":
        with torch.no_grad():
            for f in layers:
                nn.init.kaiming_normal_(f.linear1.weight, nonlinearity="relu")
                nn.init.kaiming_normal_(f.linear2.weight, nonlinearity="linear")
                f.linear1.weight.mul_(scale)  # scale = 1: He's initialisation
                f.linear2.weight.mul_(scale)
                nn.init.zeros_(f.linear1.bias)
                nn.init.zeros_(f.linear2.bias)
    return layers


def input_gradient(layers, step):
    """Norm of d(probe . h)/dx after h <- step(f, norm, h) through all the layers."""
    h = x
    for f, norm in zip(layers, norms, strict=True):
        h = step(f, norm, h)
    (grad,) = torch.autograd.grad((h * probe).sum(), x)
    return grad.norm().item()


stacks = {
    "plain     f(x)": lambda f, norm, h: f(h),
    "residual  x + f(x)": lambda f, norm, h: h + f(h),
    "pre-LN    x + f(LN(x))": lambda f, norm, h: h + f(norm(h)),
}
inits = {"default": make_layers("default"), "he": make_layers("he")}
grads = {
    (name, init): input_gradient(layers, step)
    for name, step in stacks.items()
    for init, layers in inits.items()
}
print(f"gradient sent back from the output: norm {probe.norm():.3g}")
print("gradient norm at the input     PyTorch default init     He init")
for name in stacks:
    print(f"{name:25s} {grads[name, 'default']:18.3g} {grads[name, 'he']:13.3g}")

# %% [markdown]
# With PyTorch's default initialisation the gradient through the plain stack has all but
# vanished, to about $10^{-14}$. That is the initialisation, not depth alone: with He
# initialisation the same plain stack of 24 layers passes the gradient through with the
# same order of magnitude it had at the output. The arithmetic: a default-initialised
# layer multiplies the mean square of the signal passing through it by $\tfrac13$ (first
# linear map) $\cdot \tfrac12$ (ReLU) $\cdot \tfrac13$ (second), $\tfrac1{18}$ in all,
# and the mean square of the gradient passing back by the same $\tfrac1{18}$. So the
# gradient's size shrinks by a factor of about 0.24 per layer, and
# $0.24^{24} \approx 10^{-15}$. He's variances make the factor 1, both ways.
#
# So what do residual connections buy, if a careful initialisation also works? A plain
# stack multiplies the gradient by about the same factor at every layer, so it only
# survives if that factor is very close to 1. Scale every weight of the He
# initialisation by $c$ and each layer's factor becomes about $c^2$, the whole stack's
# $c^{48}$. The figure below sweeps $c$ from 0.35 to 2.

# %%
scales = 2.0 ** np.linspace(-1.5, 1, 11)  # 0.35 ... 2
sweep = {name: [] for name in stacks}  # name -> gradient norm at each scale
for c in scales:
    layers = make_layers("he", scale=c)
    for name, step in stacks.items():
        sweep[name].append(input_gradient(layers, step))
default_c = (1 / 18) ** 0.25  # the scale whose layer factor c**4 is PyTorch's 1/18
print(f"PyTorch's default initialisation is like c = {default_c:.2f}")
for name, g in sweep.items():
    print(f"{name:25s} from {min(g):.2g} to {max(g):.2g}")
slope = np.polyfit(np.log(scales), np.log(sweep["plain     f(x)"]), 1)[0]
print(f"plain stack: gradient at the input ~ c^{slope:.0f}")

# %% mystnb={"figure": {"caption": "The gradient that reaches the input of 24 stacked feed-forward networks, against the scale c of their initial weights (c = 1: He initialisation). The plain stack's gradient changes by tens of orders of magnitude over this range; with residual connections it never falls below the gradient sent back from the output (grey), and with pre-LN residual connections it stays within a factor of about 20 of it.", "name": "fig-ch04-init-scale"}, "image": {"alt": "Log-log line plot of gradient norm at the input (from about 1e-21 to 1e16) against the weight scale c from 0.35 to 2. The plain stack's line rises steeply and straight from about 3e-21 to about 6e15; the residual stack's line stays near 30 for small c and rises to about 1e16 at c = 2; the pre-LN line rises gently from about 30 to about 400. A grey horizontal line marks the gradient at the output, about 23; dotted vertical lines mark PyTorch's default (c = 0.49) and He (c = 1)."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 4.5))
for (name, g), colour in zip(sweep.items(), ("C3", "C2", "C0"), strict=True):
    ax.plot(scales, g, "o-", color=colour, label=name.split()[0] + ": " + name[10:])
ax.axhline(probe.norm().item(), color="grey", label="gradient at the output")
for c, text in ((default_c, "PyTorch default"), (1.0, "He")):
    ax.axvline(c, color="black", linestyle=":", linewidth=1)
    ax.text(c / 1.03, 1e-12, text, rotation=90, va="bottom", ha="right")  # off the data
ax.set_xscale("log", base=2)
ax.set_yscale("log")
ax.set_xlabel("scale c of the initial weights (c = 1: He initialisation)")
ax.set_ylabel("gradient norm at the input")
ax.set_title("24 stacked feed-forward networks")
ax.legend(loc="upper left")
ax.grid(True, alpha=0.3)
fig.tight_layout()

# %% [markdown]
# Three regimes, one per line:
#
# - **Plain**: a straight line on this log-log plot, of slope 48 as predicted: halving
#   the scale divides the gradient at the input by $2^{48} \approx 3 \cdot 10^{14}$, and a
#   scale only 30% too small divides it by $0.7^{-48} \approx 3 \cdot 10^{7}$. He
#   initialisation sits in the narrow band where the gradient keeps its size.
# - **Residual** $x + f(x)$: the gradient never falls below the gradient at the output,
#   whatever the scale. That is the direct path. It does not stop the gradient from
#   *growing*: each layer adds an $f(x)$ of size about $c^2 \lVert x \rVert$, so the
#   signal and the gradient grow geometrically with depth when the branches are large.
# - **Pre-LN residual** $x + f(\operatorname{LN}(x))$: each branch reads a normalised
#   vector, so its output has the same size however large the stream has become; the
#   stream grows by addition, not multiplication, and over the whole range the gradient
#   at the input stays between about 1 and 20 times the gradient at the output.
#
# That is what residual connections buy, stated precisely: not "gradients cannot vanish
# in a deep network" (a well-initialised plain stack does not vanish either, at the
# start), but a gradient path that does not depend on each layer's scale being exactly
# right, at initialisation or later, as training changes the weights. With a LayerNorm
# in front of each branch, the path neither vanishes nor explodes. A second reading: a
# sublayer only has to learn a *change* to the vector it reads. The stream of vectors
# flowing past the sublayers, the **residual stream**, carries each sublayer's input
# forward unchanged, plus what the sublayer adds.

# %%
plain = sweep["plain     f(x)"]
assert grads["plain     f(x)", "default"] < 1e-10  # vanishes with PyTorch's default
assert 0.1 < grads["plain     f(x)", "he"] / probe.norm() < 10  # not with He's
assert max(plain) / min(plain) > 1e20  # the plain stack: tens of orders of magnitude
assert 45 < slope < 51  # ~ c^48
assert min(sweep["residual  x + f(x)"]) > 0.9 * probe.norm()  # never below the output's
pre_ln = np.array(sweep["pre-LN    x + f(LN(x))"]) / probe.norm().item()
assert pre_ln.min() > 0.9 and pre_ln.max() < 30  # within a factor of about 20

# %% [markdown]
# ## Layer normalisation
#
# LayerNorm {cite}`ba2016layer` rescales each vector to zero mean and unit variance over
# its $D$ features, then applies a learned gain $\gamma$ and bias $\beta$ (both
# $D$-vectors, initialised to 1 and 0):
#
# $$\operatorname{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,
#   \qquad \mu = \frac{1}{D}\sum_{i=1}^{D} x_i,\quad
#   \sigma^2 = \frac{1}{D}\sum_{i=1}^{D} (x_i - \mu)^2 .$$
#
# The statistics are taken over the **last dimension only**: every position of every
# sequence is normalised on its own, so LayerNorm never mixes positions (which would
# break causality; see Exercise 4). $\epsilon = 10^{-5}$ guards against division by zero.
# Note the variance divides by $D$, not $D - 1$.


# %%
def layer_norm(x, gain, bias, eps=1e-5):
    """x (..., D) -> (..., D), each vector normalised over its D features."""
    mu = x.mean(dim=-1, keepdim=True)  # (..., 1)
    var = x.var(dim=-1, keepdim=True, unbiased=False)  # (..., 1), divides by D
    return gain * (x - mu) / torch.sqrt(var + eps) + bias


ln = nn.LayerNorm(D)  # PyTorch's LayerNorm, also what tinyformer's blocks use
with torch.no_grad():  # random gain and bias, so the check covers them too
    ln.weight.normal_()
    ln.bias.normal_()
x = 3 + 2 * torch.randn(B, T, D)  # (B, T, D), mean 3, std 2
assert torch.allclose(layer_norm(x, ln.weight, ln.bias), ln(x), atol=1e-5)
print("layer_norm == nn.LayerNorm")

z = layer_norm(x, torch.ones(D), torch.zeros(D))  # gain 1, bias 0: just normalise
std_x, std_z = x.std(-1, unbiased=False).mean(), z.std(-1, unbiased=False).mean()
print(f"before: mean {x.mean(-1).mean():.2f}, std {std_x:.2f}")
print(f"after:  mean {z.mean(-1).abs().max():.4f}, std {std_z:.4f}")
unbiased = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + 1e-5)
error = (unbiased - z).abs().max()
print(f"with torch.var's default (unbiased) variance, max error: {error:.4f}")

# %% [markdown]
# The last line is a classic bug: `torch.var` divides by $D - 1$ by default, which is off
# by a factor $\sqrt{D/(D-1)}$, here about 0.8%.
#
# ## Pre-LN and post-LN
#
# Where does the LayerNorm go? There are two answers, and they train differently.
#
# **Post-LN**, the 2017 paper's choice: "the output of each sub-layer is
# $\operatorname{LayerNorm}(x + \operatorname{Sublayer}(x))$" {cite}`vaswani2017attention`
# (section 3.1). The normalisation sits *on* the residual stream, after each addition:
#
# $$x \leftarrow \operatorname{LN}_{attn}\big(x + \operatorname{Attn}(x)\big), \qquad
#   x \leftarrow \operatorname{LN}_{ff}\big(x + \operatorname{FFN}(x)\big).$$
#
# **Pre-LN**, used by GPT-2 {cite}`radford2019language` and many later models, and
# `tinyformer`'s default: normalise the *input of each sublayer* and leave the residual
# stream itself untouched:
#
# $$x \leftarrow x + \operatorname{Attn}\big(\operatorname{LN}_{attn}(x)\big), \qquad
#   x \leftarrow x + \operatorname{FFN}\big(\operatorname{LN}_{ff}(x)\big).$$
#
# In pre-LN the path from the output back to the input is a pure sum: exactly the
# direct path of the previous section. In post-LN every gradient must pass through
# every LayerNorm on the way down. Xiong et al. {cite}`xiong2020layer` analysed this:
# at initialisation, post-LN has large gradients for the parameters near the output,
# which they argue makes a large learning rate unstable at the start; the learning-rate
# *warmup* of the 2017 paper is what makes post-LN trainable. With pre-LN the gradients
# are well behaved at initialisation, and warmup can often be dropped. (We test this
# below, and meet a second explanation.)
#
# One more difference: in pre-LN the residual stream is never normalised, so the model
# needs one **final LayerNorm** before the output layer. A post-LN block already ends in
# one.
#
# Both arrangements are one small function, the **residual sublayer**, and a block is two
# calls of it, one per sublayer. Attention is `tinyformer`'s `MultiHeadAttention` from
# [Chapter 3](03_self_attention.ipynb) with the causal mask; the feed-forward network
# and the LayerNorms are our functions from above, reading the weights of a
# `TransformerBlock`. Its LayerNorms are named by the sublayer they serve: `attn_norm`
# and `ff_norm`.


# %%
def residual(x, norm, sublayer, norm_first):
    """One residual sublayer: pre-LN x + f(LN(x)), or post-LN LN(x + f(x))."""
    if norm_first:  # pre-LN: normalise what goes INTO the sublayer
        return x + sublayer(norm(x))
    return norm(x + sublayer(x))  # post-LN (2017): normalise the stream AFTER the sum


def decoder_block(x, block, norm_first):
    """x (B, T, D) -> (B, T, D): one decoder block, using the weights of `block`."""
    mask = causal_mask(x.shape[1])  # (T, T), True = may attend

    def attn(h):  # causal self-attention, (B, T, D) -> (B, T, D)
        return block.self_attn(h, mask=mask)

    def ffn(h):  # position-wise, (B, T, D) -> (B, T, D)
        l1, l2 = block.ff.linear1, block.ff.linear2
        return feed_forward(h, l1.weight.T, l1.bias, l2.weight.T, l2.bias)

    def attn_norm(h):
        return layer_norm(h, block.attn_norm.weight, block.attn_norm.bias)

    def ff_norm(h):
        return layer_norm(h, block.ff_norm.weight, block.ff_norm.bias)

    x = residual(x, attn_norm, attn, norm_first)  # sublayer 1: attention
    return residual(x, ff_norm, ffn, norm_first)  # sublayer 2: feed-forward


n_heads = 4
x = torch.randn(B, T, D)
for norm_first in (True, False):
    block = TransformerBlock(D, n_heads, d_ff, norm_first=norm_first)  # causal=True
    assert torch.allclose(decoder_block(x, block, norm_first), block(x), atol=1e-5)
    print(f"decoder_block == TransformerBlock (norm_first={norm_first})")
print("its submodules:", ", ".join(name for name, _ in block.named_children()))

# %% [markdown]
# `tinyformer.blocks.TransformerBlock` is built the same way: one method,
# `TransformerBlock.residual`, holds the only lines where pre-LN and post-LN differ, and
# `forward` calls it once per sublayer. It is causal by default (`causal=True`): in
# `forward` it combines the causal mask with any mask the caller passes. This one class
# serves the whole course. [Chapter 6](../part2_encoder/06_bidirectional_attention.ipynb)
# turns the causal mask off on the same class (`causal=False`), which makes it an
# encoder block, and [Chapters 9](../part3_cross_attention/09_cross_attention.ipynb) and
# [10](../part3_cross_attention/10_the_encoder_decoder.ipynb) add a third sublayer
# between the two, cross attention (`cross_attention=True`).
#
# ### A GPT block is PyTorch's *encoder* layer
#
# PyTorch has `nn.TransformerDecoderLayer`, but it is the decoder of the 2017
# encoder–decoder model: it has a *third* sublayer, cross attention to an encoder's
# output (Part III of this course). A GPT-style decoder has no encoder, so its block is
# just self-attention plus a feed-forward network: exactly the structure of
# `nn.TransformerEncoderLayer`. The only thing that makes it a *decoder* is the causal
# mask. So a GPT block "is" an encoder layer run under a causal mask.
#
# `tinyformer.torch_bridge.load_block_from_torch` copies the weights of an
# `nn.TransformerEncoderLayer` into our block (their `norm1` and `norm2` become our
# `attn_norm` and `ff_norm`). Mind the masks: PyTorch's `nn.*` modules use the opposite
# convention from ours, **`True` = blocked** (ours and `F.scaled_dot_product_attention`:
# `True` = may attend), so `to_torch_mask` inverts our causal mask before PyTorch sees it.

# %%
for norm_first in (True, False):
    theirs = nn.TransformerEncoderLayer(
        D, n_heads, d_ff, dropout=0.0, batch_first=True, norm_first=norm_first
    ).eval()
    ours = TransformerBlock(D, n_heads, d_ff, norm_first=norm_first).eval()
    load_block_from_torch(ours, theirs)
    mask = causal_mask(T)  # ours: True = may attend
    with torch.no_grad():
        their_out = theirs(x, src_mask=to_torch_mask(mask))  # theirs: True = blocked
        assert torch.allclose(ours(x), their_out, atol=1e-5)
        assert torch.allclose(decoder_block(x, ours, norm_first), their_out, atol=1e-5)
    print(f"decoder_block == TransformerBlock == nn.TransformerEncoderLayer "
          f"under a causal mask (norm_first={norm_first})")  # fmt: skip

# %% [markdown]
# ## Stacking blocks into a language model
#
# A `TransformerStack` is the part every model of the course shares, written once:
#
# 1. token ids `(B, T)` → token embeddings `(B, T, D)` (multiplied by $\sqrt{D}$) +
#    positions ([Chapter 2](02_embeddings_and_positions.ipynb));
# 2. $N$ blocks, `(B, T, D) → (B, T, D)`;
# 3. a final LayerNorm (pre-LN only), `norm_f`.
#
# `DecoderLM` is a causal stack plus the **LM head**, a linear map
# `(B, T, D) → (B, T, V)`: one logit per vocabulary token, the scores for the *next*
# token at every position. Both are built from one `TransformerConfig`, which holds every
# hyper-parameter. Written out with the model's own modules, and checked against its
# `forward`:

# %%
lang = ToyLanguage()
vocab = Vocab(lang.words)
V = len(vocab)


def decoder_lm(ids, model):
    """ids (B, T) long -> logits (B, T, V), written out."""
    stack = model.decoder  # a TransformerStack(config, causal=True)
    x = stack.pos(stack.tok_emb(ids))  # (B, T, D): token vectors + position vectors
    for block in stack.blocks:
        x = decoder_block(x, block, model.config.norm_first)  # (B, T, D)
    if model.config.norm_first:  # pre-LN: the residual stream was never normalised
        x = layer_norm(x, stack.norm_f.weight, stack.norm_f.bias)
    return x @ model.lm_head.weight.T  # (B, T, D) @ (D, V) -> (B, T, V)


ids = vocab.batch(lang.sample(4, seed=0), bos=True)  # (B, T)
for norm_first in (True, False):
    config = TransformerConfig(
        vocab_size=V, d_model=64, n_heads=4, n_layers=4, d_ff=256, norm_first=norm_first
    )
    model = DecoderLM(config)
    logits = model(ids)
    assert isinstance(model.decoder, TransformerStack) and model.decoder.causal
    assert torch.allclose(decoder_lm(ids, model), logits, atol=1e-4)
    print(f"decoder_lm == DecoderLM (norm_first={norm_first}): ids {tuple(ids.shape)} "
          f"-> logits {tuple(logits.shape)}")  # fmt: skip
print(model)  # one line: the config's non-default fields and the parameter count

# %% [markdown]
# ### Weight tying
#
# The token embedding is a `(V, D)` table mapping tokens to vectors; the LM head is a
# `(V, D)` matrix scoring vectors against tokens. Press and Wolf
# {cite}`press2017using` proposed using **one** matrix for both ({term}`weight tying`),
# and the 2017 transformer does the same (section 3.4). It saves $V \cdot D$ parameters
# and ties the two views of a token together: the logit of token $v$ is the dot product
# of the final vector with $v$'s own embedding. In `tinyformer` it is the default
# (`tie_weights=True`), and it really is one tensor:

# %%
model = DecoderLM(TransformerConfig(vocab_size=V))  # defaults: 2 layers, tied
tied = model.lm_head.weight is model.decoder.tok_emb.weight
print("lm_head.weight is decoder.tok_emb.weight:", tied)
assert tied

# %% [markdown]
# <div class="admonition note">
# <p class="admonition-title">Tying and residuals at initialisation</p>
# <p>A freshly initialised tied model does not start from the uniform guess's loss of
# $\ln V$. Each row $e_v$ of the table starts with entries of variance $1/D$, so
# $\lVert e_v \rVert \approx 1$. The final LayerNorm makes the model's vector $h$ at a
# position unit-size per coordinate, $\lVert h \rVert \approx \sqrt{D}$, and the logit of
# token $v$ is $h \cdot e_v$: for a token unrelated to $h$ that is a sum of $D$ terms of
# size about $1/\sqrt D$, a number of order 1. But $h$ is not unrelated to the token the
# model just read: the residual stream carries that token's own embedding (multiplied by
# $\sqrt D$) straight through the blocks. So the <em>current</em> token's logit is several
# units larger than the others, the model predicts that the next token repeats the current
# one, which it almost never does (at 0.7% of positions, below), and the loss starts well
# above $\ln V$.</p>
# <p>An untied head is an independent <code>nn.Linear</code>, whose logits are small and
# unrelated to the input: its loss starts near $\ln V$. Training unlearns the echo at once:
# in the training loop below, one update takes a tied model's loss from above 5 nats to
# below $\ln V$.</p>
# </div>
#
# The measurement, on 256 sentences, for a 4-block model:

# %%
sample_ids = vocab.batch(lang.sample(256, seed=2), bos=True, eos=True)  # (256, T + 1)
inputs, targets = sample_ids[:, :-1], sample_ids[:, 1:]
real = targets != vocab.pad_id  # (256, T): positions with a real target
repeats = (targets == inputs)[real].float().mean().item()
print(f"the next token repeats the current one at {repeats:.1%} of positions")
for tie in (True, False):
    set_seed(0)
    fresh = DecoderLM(TransformerConfig(vocab_size=V, n_layers=4, tie_weights=tie))
    with torch.no_grad():
        logits = fresh(inputs)  # (256, T, V)
    loss = lm_loss(logits, targets, vocab.pad_id).item()
    echo = (logits.argmax(-1) == inputs)[real].float().mean().item()
    own = logits.gather(-1, inputs[..., None])[..., 0][real]  # the current token's
    others = logits[real][nn.functional.one_hot(inputs[real], V) == 0]  # all the rest
    print(
        f"tie_weights={tie!s:5}: initial loss {loss:.2f} nats "
        f"(ln V = {math.log(V):.2f}); predicts its own input token at {echo:.0%}"
    )
    mean, std = others.mean(), others.std()
    print(f"  logit of the current token: mean {own.mean():.2f}; "
          f"other tokens: mean {mean:.2f}, std {std:.2f}")  # fmt: skip

# %% [markdown]
# With tied weights the current token's logit averages about 5 while the other tokens'
# logits have mean about 0 and standard deviation about 1: every position predicts its
# own input token, and the loss starts at about 5.7 nats against $\ln 47 = 3.85$. The
# untied model's logits are small (standard deviation about 0.6) and give the current
# token no special place (it is the top prediction at 4% of positions), so its loss
# starts at about 4.0, just above $\ln V$.
#
# ## Counting parameters
#
# With $V$ tokens, $D$ = `d_model`, $N$ blocks, hidden width $d_{ff}$ and $L$ positions
# (`max_len`):
#
# | part | parameters |
# |---|---|
# | token embedding (shared with the LM head) | $V D$ |
# | learned positions | $L D$ (0 for sinusoidal) |
# | per block: attention, $W_Q, W_K, W_V, W_O$ with biases | $4D^2 + 4D$ |
# | per block: feed-forward network, $W_1, b_1, W_2, b_2$ | $2 D\, d_{ff} + d_{ff} + D$ |
# | per block: two LayerNorms, $\gamma$ and $\beta$ each | $4D$ |
# | final LayerNorm (pre-LN only) | $2D$ |
# | LM head | $0$ when tied, else $V D$ |
#
# The number of heads does not appear: splitting $D$ into $H$ heads of $d_k = D/H$
# changes shapes, not parameter counts ([Chapter 3](03_self_attention.ipynb)).


# %%
def count_parameters(V, D, n_layers, d_ff, max_len, norm_first=True, tie=True):
    """The table above, as a sum."""
    embeddings = V * D + max_len * D  # tokens + learned positions
    attention = 4 * D * D + 4 * D
    feed_forward_ = 2 * D * d_ff + d_ff + D
    layer_norms = 2 * (2 * D)
    final_norm = 2 * D if norm_first else 0
    head = 0 if tie else V * D
    per_block = attention + feed_forward_ + layer_norms
    return embeddings + n_layers * per_block + final_norm + head


for changes in [
    dict(n_layers=4),
    dict(n_layers=4, norm_first=False),
    dict(n_layers=4, tie_weights=False),
    dict(n_layers=12, d_model=128, d_ff=512, max_len=64),
]:
    c = TransformerConfig(vocab_size=V, **changes)
    model = DecoderLM(c)
    actual = sum(p.numel() for p in model.parameters())  # a shared tensor counts once
    formula = count_parameters(
        V, c.d_model, c.n_layers, c.d_ff, c.max_len, c.norm_first, c.tie_weights
    )
    assert formula == actual == model.num_parameters() == expected_num_parameters(c)
    print(f"{str(changes):55s} formula {formula:>9,} = counted {actual:>9,}")

# %% [markdown]
# `tinyformer.decoder.expected_num_parameters(config)` is the same formula, and the
# check above holds for it too. The 4-layer model we train below has about 205 thousand
# parameters. Almost all of them live in the blocks, and two thirds of each block is the
# feed-forward network.
#
# ## Pre-LN versus post-LN in practice
#
# Now the claim of Xiong et al. {cite}`xiong2020layer`, on our own models, in three
# steps: gradients at initialisation, what the optimiser does with them, then training.
#
# ### Gradients at initialisation
#
# We build models of each kind with $N = 1, 2, 4, 8$ and 16 blocks, compute the loss on
# one batch of toy sentences, and measure the gradient norm of each block's parameters
# (three seeds each). While we hold each fresh model we also make one update the way
# training will below (gradients clipped to norm 1, then AdamW at a learning rate of
# $10^{-2}$) and record what it does; we come back to that in the next subsection.

# %%
grad_batch = vocab.batch(lang.sample(32, seed=3), bos=True, eos=True)  # (32, T + 1)


def at_initialisation(norm_first, seed, n_layers):
    """A fresh model: gradient norm of each block, then what one AdamW update does."""
    set_seed(seed)
    config = TransformerConfig(vocab_size=V, n_layers=n_layers, norm_first=norm_first)
    model = DecoderLM(config)
    inputs, targets = grad_batch[:, :-1], grad_batch[:, 1:]
    logits = model(inputs)  # (32, T, V)
    lm_loss(logits, targets, vocab.pad_id).backward()
    block_norms = [
        torch.cat([p.grad.flatten() for p in b.parameters()]).norm().item()
        for b in model.decoder.blocks
    ]
    before = [p.detach().clone() for p in model.parameters()]
    grad_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0).item()
    adamw(model, lr=1e-2, weight_decay=0.1).step()  # the optimiser `train` uses
    pairs = zip(model.parameters(), before, strict=True)
    update = torch.cat([(p.detach() - p0).abs().flatten() for p, p0 in pairs])
    with torch.no_grad():  # how far the update moved the logits (root mean square)
        moved = (model(inputs) - logits).pow(2).mean().sqrt().item()
    return block_norms, grad_norm, update.median().item(), moved


seeds = (0, 1, 2)
depths = (1, 2, 4, 8, 16)
results = {
    (nf, n, s): at_initialisation(nf, s, n)
    for nf in (True, False)
    for n in depths
    for s in seeds
}
grad_norms = {  # (norm_first, N) -> array (seeds, N)
    (nf, n): np.array([results[nf, n, s][0] for s in seeds])
    for nf in (True, False)
    for n in depths
}
for nf in (True, False):
    g = grad_norms[nf, 16].mean(0)
    name = "pre-LN:" if nf else "post-LN:"
    print(f"{name:8s} 16 blocks, first block {g[0]:.2f}, last block {g[-1]:.2f}")
for nf in (True, False):  # the block next to the output, for each depth
    last = [grad_norms[nf, n][:, -1].mean() for n in depths]
    name = "pre-LN:" if nf else "post-LN:"
    by_depth = ", ".join(f"N={n} {g:.2f}" for n, g in zip(depths, last, strict=True))
    print(f"{name:8s} last block, {by_depth}")

# %% mystnb={"figure": {"caption": "Gradient norms of each block's parameters at initialisation, mean over 3 seeds (bands: min to max). Left: every block of a 16-block model; post-LN's gradients are larger everywhere and the gap is widest at the output. Right: the block next to the output as the model gets deeper; from 1 to 8 blocks both fall by about the same fraction, and only at 16 blocks do they part (pre-LN's falls further, post-LN's rises a little): one point, weak evidence.", "name": "fig-ch04-grad-init"}, "image": {"alt": "Two line plots of gradient norm. Left, against block 1 to 16 of a 16-block model: post-LN (orange) roughly level between about 1.45 and 1.55, pre-LN (blue) falling from about 1.0 at block 1 to about 0.7 at block 16. Right, the last block's gradient norm against the number of blocks 1, 2, 4, 8, 16: post-LN falling from about 1.62 at N = 1 to about 1.36 at N = 8, then back up to about 1.45 at N = 16; pre-LN falling steadily from about 1.05 to about 0.88 at N = 8 and about 0.73 at N = 16."}} tags=["hide-input"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
styles = {True: ("C0", "pre-LN"), False: ("C1", "post-LN")}
for nf, (colour, label) in styles.items():
    g = grad_norms[nf, 16]  # (seeds, 16)
    blocks = np.arange(1, 17)
    ax1.plot(blocks, g.mean(0), "o-", color=colour, label=label)
    ax1.fill_between(blocks, g.min(0), g.max(0), color=colour, alpha=0.2)
    last = np.array([grad_norms[nf, n][:, -1] for n in depths])  # (depths, seeds)
    ax2.plot(depths, last.mean(1), "o-", color=colour, label=label)
    ax2.fill_between(depths, last.min(1), last.max(1), color=colour, alpha=0.2)
ax1.set_xlabel("block (1: next to the input, 16: next to the output)")
ax1.set_title("A 16-block model: every block")
ax2.set_xscale("log", base=2)
ax2.set_xticks(depths, labels=[str(n) for n in depths])
ax2.set_xlabel("number of blocks N")
ax2.set_title("The block next to the output")
for ax in (ax1, ax2):
    ax.set_ylabel("gradient norm of the block")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
fig.tight_layout()

# %% [markdown]
# What we see in our models:
#
# - Post-LN's gradients are larger than pre-LN's in every block, and the gap is widest
#   at the output: pre-LN's gradients shrink towards the output, because each pre-LN
#   block reads a *normalised* copy of a residual stream that grows with depth, so its
#   share of the output is smaller. Post-LN's stay roughly level across the blocks.
# - As the model gets deeper, the gradient of the last block falls for both kinds
#   alike at first: from 1 to 8 blocks, pre-LN's from 1.05 to 0.88 and post-LN's from
#   1.62 to 1.36, about 16% each. Only the 16-block models depart from that: pre-LN's
#   falls further, to 0.73 (30% below one block), while post-LN's is back up at 1.45.
#   That one point, with three seeds, is weak evidence of a difference. Xiong et al.
#   {cite}`xiong2020layer` derived that the last layer's gradient is of order
#   $1/\sqrt{N}$ for pre-LN and independent of $N$ for post-LN; our small models do not
#   reproduce that scaling ($1/\sqrt{N}$ would be a factor of 4 from 1 to 16 blocks, and
#   post-LN's gradient falls as much as pre-LN's up to 8 blocks).
# - Across the blocks of one model, too, ours differ from theirs: Xiong et al. report
#   pre-LN's gradients staying level across the layers and post-LN's *growing* towards
#   the output; in our 16-block models pre-LN's shrink towards the output and post-LN's
#   are level.

# %%
post16, pre16 = grad_norms[False, 16].mean(0), grad_norms[True, 16].mean(0)
assert (post16 > pre16).all()  # larger in every block
assert pre16[-4:].mean() < 0.9 * pre16[:4].mean()  # pre-LN shrinks towards the output
ratio = post16 / pre16
assert ratio[-4:].mean() > ratio[:4].mean()  # the gap is widest at the output
pre_last = [grad_norms[True, n][:, -1].mean() for n in depths]
post_last = [grad_norms[False, n][:, -1].mean() for n in depths]
for last in (pre_last, post_last):
    # within a factor of 2 across depths (1/sqrt(N) would be 4), and from 1 to 8
    # blocks both fall, by a similar share
    assert max(last) < 2 * min(last)
    assert 0.7 < last[3] / last[0] < 0.95
assert all(a > b for a, b in zip(post_last, pre_last, strict=True))  # post-LN larger
assert pre_last[-1] < 0.8 * pre_last[0]  # pre-LN at 16 blocks: 30% below one block

# %% [markdown]
# ### What the optimiser does with those gradients
#
# Larger gradients near the output would mean larger *updates* there if we trained with
# plain gradient descent, where the step is the learning rate times the gradient. We do
# not. We train with AdamW {cite}`loshchilov2019decoupled`, and Adam
# {cite}`kingma2015adam` divides each coordinate of the gradient by a running estimate
# of that coordinate's own size: on the first step, after bias correction, the update of
# a coordinate with gradient $g$ is exactly $\mathrm{lr} \cdot g / (|g| + \epsilon)$,
# that is $\pm\,\mathrm{lr}$, whatever $|g|$ (AdamW adds a small weight-decay term,
# $\mathrm{lr} \cdot 0.1 \cdot \theta$); later updates stay of order $\mathrm{lr}$ too.
# Clipping the gradient's norm to 1 rescales all coordinates by the same factor, which
# Adam's division largely undoes. So under AdamW with clipping a parameter moves by about
# the learning rate per step whether its gradient is large or small: the figure above is
# suggestive, but it cannot be the mechanism by itself.
#
# The update we made on every fresh model shows it: the typical (median) coordinate
# moved by the learning rate, for pre-LN and post-LN alike, although their gradients
# differ. What differs is how much the same-size step changes the model's output:

# %%
print("blocks | gradient norm     | median update / lr | logits moved (RMS)")
print("       | pre-LN   post-LN  | pre-LN   post-LN   | pre-LN   post-LN")
summary = {}  # (norm_first, N) -> mean over seeds of (grad norm, update, moved)
for n in depths:
    for nf in (True, False):
        summary[nf, n] = np.mean([results[nf, n, s][1:] for s in seeds], axis=0)
    g_pre, u_pre, m_pre = summary[True, n]
    g_post, u_post, m_post = summary[False, n]
    print(f"{n:6d} | {g_pre:6.2f}   {g_post:6.2f}   | {u_pre / 1e-2:6.2f}   "
          f"{u_post / 1e-2:6.2f}    | {m_pre:6.2f}   {m_post:6.2f}")  # fmt: skip

# %% [markdown]
# Every model's typical coordinate moved by the learning rate, although post-LN's
# gradient norms were up to 1.6 times pre-LN's. What differs is the effect of that step:
# at every depth we tried, it moved post-LN's logits further than pre-LN's, by 10 to 30%
# in these small models (not steadily more with depth).
#
# This is, in miniature, the explanation Liu et al. give {cite}`liu2020understanding`:
# under Adam, unbalanced gradients are not the root cause of post-LN's instability.
# Instead each post-LN layer depends heavily on its residual branch, and that
# dependency *amplifies* small changes of the parameters (such as an update) into large
# changes of the output; by their analysis the effect grows with depth, and warmup keeps
# the early updates small while it matters. Pre-LN's output depends on each branch more
# lightly, so the same step moves it less. Our one-step measurement only shows the
# direction of the effect; the training run below shows its consequence.

# %%
for n in depths:
    for nf in (True, False):
        assert abs(summary[nf, n][1] / 1e-2 - 1) < 0.05  # the median update is ~ lr
    assert summary[False, n][0] > summary[True, n][0]  # post-LN: larger gradients
    assert summary[False, n][2] > 1.05 * summary[True, n][2]  # its logits move more

# %% [markdown]
# ### A training loop, written out
#
# Before we train, here is everything a training step does, in six lines: clear the old
# gradients, run the model forward, measure the loss, compute the gradients, clip them,
# update the weights. The data: 4000 training sentences, and a fixed batch of 32 of them
# for every step number, so every run sees the same batches in the same order.

# %%
train_ids = vocab.batch(lang.sample(4000, seed=1), bos=True, eos=True)  # (4000, T + 1)
val_ids = sample_ids  # the 256 sentences from above: another sample (seed 2)
limit = lang.entropy_per_token()  # the best loss any model can reach
BATCH, STEPS, LR = 32, 100, 1e-2


def get_batch(step):
    """The same batch for a given step in every run: inputs, targets (BATCH, T)."""
    g = torch.Generator().manual_seed(step)
    ids = train_ids[torch.randint(len(train_ids), (BATCH,), generator=g)]
    return ids[:, :-1], ids[:, 1:]


def train_by_hand(model, steps, lr):
    """Train in place at a constant learning rate; return the loss of every step."""
    # tinyformer's AdamW: betas (0.9, 0.98); weight decay 0.1 on the weight matrices,
    # none on biases and LayerNorm gains
    optimizer = adamw(model, lr, weight_decay=0.1)
    losses = []
    for step in range(steps):
        inputs, targets = get_batch(step)  # (BATCH, T) each
        optimizer.zero_grad()  # 1. forget the previous step's gradients
        logits = model(inputs)  # 2. forward: (BATCH, T, V)
        loss = lm_loss(logits, targets, vocab.pad_id)  # 3. mean loss over real targets
        loss.backward()  # 4. gradients of the loss
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # 5. clip to norm 1
        optimizer.step()  # 6. update the weights
        losses.append(loss.item())
    return losses


set_seed(0)
ours = DecoderLM(TransformerConfig(vocab_size=V, n_layers=4, norm_first=False))
theirs = copy.deepcopy(ours)  # the same initial weights
our_losses = train_by_hand(ours, steps=5, lr=LR)
history = train(theirs, get_batch, steps=5, lr=LR, warmup_steps=0, min_lr_ratio=1.0,
                progress=False)  # fmt: skip
print("by hand:              ", [round(loss, 3) for loss in our_losses])
print("tinyformer.train.train:", [round(loss, 3) for loss in history["loss"]])
loss_gap = max(abs(a - b) for a, b in zip(our_losses, history["loss"], strict=True))
print(f"the losses of all 5 steps agree to within 1e-5: {loss_gap < 1e-5}")
assert loss_gap < 1e-5
assert our_losses[0] > 5 and our_losses[1] < math.log(V)  # the echo, unlearned at once

# %% [markdown]
# The first loss, 5.38 nats, is the echo of a fresh tied model that we met above; after
# one update the loss is already below $\ln V = 3.85$.
#
# `tinyformer.train.train` makes exactly these six moves per step. It adds a
# learning-rate schedule (here switched off: `warmup_steps=0` and `min_lr_ratio=1.0`
# keep the rate constant), a history of losses and gradient norms, and evaluation on
# held-out data. The two runs' losses agree at all five steps (the check allows
# $10^{-5}$ for rounding, and the printed losses are the same to three decimals);
# [Chapter 5](05_training_and_generation.ipynb) writes the schedule out.
#
# ### Training without warmup
#
# Now the experiment. Two 4-layer models that differ **only** in where the LayerNorms
# sit: same seed, hence the same initial weights (LayerNorms start at $\gamma = 1$,
# $\beta = 0$ and take no random numbers), and the same batches in the same order. We
# train with AdamW at a high, constant learning rate of $10^{-2}$, **no warmup**, with
# gradients clipped at norm 1 (`train`'s default), for 100 steps of 32 sentences, and
# repeat for three seeds.

# %%
SIZE = dict(d_model=64, n_heads=4, n_layers=4, d_ff=256)


@torch.no_grad()
def val_loss(model):
    return lm_loss(model(val_ids[:, :-1]), val_ids[:, 1:], vocab.pad_id).item()


set_seed(0)
a = DecoderLM(TransformerConfig(vocab_size=V, norm_first=True, **SIZE))
set_seed(0)
b = DecoderLM(TransformerConfig(vocab_size=V, norm_first=False, **SIZE))
shared = [name for name, _ in b.named_parameters()]
assert all(torch.equal(a.get_parameter(n), b.get_parameter(n)) for n in shared)
print(f"same initial weights in all {len(shared)} shared parameter tensors")

# a model that ignores the context predicts the token frequencies: its loss is their
# entropy
targets_seen = train_ids[:, 1:][train_ids[:, 1:] != vocab.pad_id]
unigram = torch.bincount(targets_seen).float()
unigram = unigram[unigram > 0] / unigram.sum()
unigram_entropy = -(unigram * unigram.log()).sum().item()

# %% tags=["nbval-ignore-output"]
runs = {}  # (norm_first, seed) -> (model, history)
for seed in seeds:
    for norm_first in (True, False):
        print(f"{'pre-LN ' if norm_first else 'post-LN'} seed {seed}: ", end="")
        set_seed(seed)
        model = DecoderLM(
            TransformerConfig(vocab_size=V, norm_first=norm_first, **SIZE)
        )
        history = train(
            model, get_batch, steps=STEPS, lr=LR, warmup_steps=0, min_lr_ratio=1.0,
            eval_fn=val_loss, eval_every=STEPS, log_every=STEPS,
        )  # fmt: skip
        runs[norm_first, seed] = model, history

# %% mystnb={"figure": {"caption": "Training loss (moving average over 10 steps) of pre-LN and post-LN models at a constant learning rate of 1e-2 with no warmup, three seeds each. Pre-LN heads for the entropy limit; post-LN's curves flatten within about 40 steps, two of them at the loss of a model that ignores the context.", "name": "fig-ch04-no-warmup"}, "image": {"alt": "Line plot of training loss from step 9 to 99. Three blue pre-LN curves fall together from about 3.5 to about 2.0 to 2.1. Of three orange post-LN curves, two flatten at about 3.45 after step 20, on a grey dotted line at 3.44 (ignores context); the third drops to about 3.05 by step 40 and stays there. A black dashed line marks the limit at 1.848."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 4))
window = 10  # moving average over 10 steps, to make the curves readable
for (norm_first, seed), (_, history) in runs.items():
    smooth = np.convolve(history["loss"], np.ones(window) / window, mode="valid")
    label = None if seed else ("pre-LN" if norm_first else "post-LN")
    plot_loss_curve(np.arange(window - 1, STEPS), smooth, ax=ax, label=label)
    ax.lines[-1].set_color("C0" if norm_first else "C1")
ax.axhline(unigram_entropy, color="grey", linestyle=":", label="ignores context")
ax.axhline(limit, color="black", linestyle="--", lw=1, label=f"limit {limit:.3f}")
ax.set_ylim(1.5, 5)
ax.set_title("No warmup, learning rate 1e-2, 4 blocks, 3 seeds")
ax.legend()
fig.tight_layout()

# %% tags=["nbval-ignore-output"]
print(f"the language's entropy {limit:.3f}; "
      f"a model that ignores context: {unigram_entropy:.3f}")  # fmt: skip
final = {key: history["eval"][-1] for key, (_, history) in runs.items()}
for seed in seeds:
    pre, post = final[True, seed], final[False, seed]
    print(f"seed {seed}: validation loss after {STEPS} steps: "
          f"pre-LN {pre:.2f}, post-LN {post:.2f}")  # fmt: skip

# %% [markdown]
# What we measured (the numbers above, and the asserts below that hold on any CPU):
#
# - **Pre-LN** trains smoothly with every seed and ends within 0.2 nats of the
#   language's entropy (1.848) after only 100 steps.
# - **Post-LN** ends clearly worse with every seed (by 1.0 to 1.5 nats in our run),
#   and is stuck near a plateau. In our run two seeds
#   stalled within 0.1 nats of the dotted line (3.44 nats), the loss of a model that
#   predicts token frequencies and ignores the context entirely, and the third ended at
#   3.03. The loss curves show it reaching that plateau within the first few dozen steps
#   and staying there.
#
# Three seeds of a small model and a short run: read this as an illustration, not a
# benchmark. The lesson it illustrates is the one Xiong et al. and Liu et al. drew in
# their own ways {cite}`xiong2020layer,liu2020understanding`: post-LN needs the
# careful learning-rate warmup of the 2017 paper; pre-LN tolerates a high learning rate
# from the first step. Exercise 1 adds the warmup
# back; Exercise 2 lowers the learning rate instead.

# %%
for seed in seeds:
    assert final[True, seed] < limit + 0.25  # pre-LN learns with every seed
    assert final[False, seed] > final[True, seed] + 0.5  # post-LN: worse, every seed
assert sum(final[False, s] > unigram_entropy - 0.2 for s in seeds) >= 1  # stalled

# %% [markdown]
# ## The whole model is causal
#
# [Chapter 3](03_self_attention.ipynb) proved through the Jacobian that one masked
# attention layer cannot see the future. Does that survive the full model, with its
# embeddings, LayerNorms, feed-forward networks, residual connections and four blocks?
# Every other part works position by position, so it should. We check it *exactly*, on
# the trained pre-LN model: the gradient of position $t$'s logits with respect to the
# input embedding at any later position $s > t$ must be exactly zero.
#
# The model's `forward` takes token ids, which cannot be differentiated. A forward hook
# on the token embedding swaps its output for a tensor $e$ of our own, `(1, T, D)`, so
# we can differentiate the model's real `forward` with respect to $e$.

# %%
model = runs[True, 0][0]  # trained pre-LN, seed 0
longest = max(lang.sample(200, seed=4), key=len)
ids = vocab.batch([longest], bos=True)  # (1, T): <bos> and the words
T = ids.shape[1]
tok_emb = model.decoder.tok_emb
emb = tok_emb(ids).detach()  # (1, T, D)


def logits_from_embeddings(e):
    """The model's own forward, with the token embeddings replaced by e (1, T, D)."""
    handle = tok_emb.register_forward_hook(lambda module, args, output: e)
    try:
        return model(ids)  # (1, T, V)
    finally:
        handle.remove()


with evaluating(model):  # eval mode (no dropout) inside, the previous mode after
    # vectorize=True: all T * V backward passes at once (much faster than a loop)
    jac = torch.autograd.functional.jacobian(
        logits_from_embeddings, emb, vectorize=True
    )  # (1, T, V, 1, T, D)
dep = jac[0, :, :, 0].pow(2).sum(dim=(1, 3)).sqrt()  # (T, T): ||d logits_t / d e_s||
future = ~causal_mask(T)  # True where s > t
print(f"T = {T}; Jacobian {tuple(jac.shape)}")
print(f"largest influence of a later input on an earlier output: {dep[future].max()}")
print("every earlier-or-same input has an influence:", bool((dep[~future] > 0).all()))
assert (dep[future] == 0).all()  # exactly zero, not merely small
assert (dep[~future] > 0).all()

# %% mystnb={"figure": {"caption": "How much each input embedding (columns) influences each position's logits (rows) in the trained pre-LN model, on a log scale. Every cell above the diagonal is exactly zero (white): no position's prediction depends on a later token.", "name": "fig-ch04-causal"}, "image": {"alt": "A 14 by 14 heatmap with the tokens of one sentence, from <bos>, along both axes. The lower triangle and the diagonal are coloured (log10 of the gradient norm, between about -2.3 and 0.9); the upper triangle is white."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 6))
shown = np.ma.masked_where(future.numpy(), np.log10(dep.clamp_min(1e-30).numpy()))
image = ax.imshow(shown, cmap="viridis")
tokens = vocab.decode(ids[0], strip_special=False)
ax.set_xticks(range(T), labels=tokens, rotation=90)
ax.set_yticks(range(T), labels=tokens)
ax.set_xlabel("input embedding at position s")
ax.set_ylabel("logits at position t")
ax.set_title("log10 ‖∂ logits_t / ∂ e_s‖ of the trained model\n(white: exactly 0)")
fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
fig.tight_layout()

# %% [markdown]
# Every entry above the diagonal is exactly zero: the logits at position $t$, which
# predict token $t + 1$, are a function of tokens $0..t$ only. That is what makes the
# training loss honest. The model is trained to predict every position of a sentence in
# one forward pass, and no position can peek at the token it is asked to predict.
#
# ## What we learned
#
# - The **feed-forward network** is a two-layer ReLU network applied to each position
#   on its own, `(B, T, D) → (B, T, 4D) → (B, T, D)`; it has $2 D d_{ff} + d_{ff} + D$
#   parameters, twice as many as attention.
# - **Residual connections** $x + f(x)$ give the gradient a direct path that passes
#   through no weight matrix. A plain stack of 24 feed-forward networks passes its
#   gradient only if each layer's scale is just right: with PyTorch's default
#   initialisation the gradient at the input vanished to about $10^{-14}$, with He
#   initialisation it did not, and it scales as $c^{48}$ with the weights' scale $c$.
#   With residual connections it never fell below the output's gradient; with pre-LN
#   residual connections it stayed within 1 to 20 times the output's for every scale
#   from 0.35 to 2.
# - **LayerNorm** normalises each position's vector over its $D$ features (biased
#   variance, $\epsilon = 10^{-5}$), then applies a gain and a bias; it never mixes
#   positions.
# - The 2017 paper used **post-LN**, $\operatorname{LN}(x + f(x))$; `tinyformer`
#   defaults to **pre-LN**, $x + f(\operatorname{LN}(x))$, plus a final LayerNorm. Both
#   are one residual-sublayer function, called once per sublayer.
# - At initialisation post-LN's gradients are larger, most of all near the output. From 1
#   to 8 blocks the last block's gradient fell by about 16% in both kinds; only at 16
#   blocks did pre-LN's fall further (weak evidence, not Xiong et al.'s scaling).
#   AdamW moves every parameter by about the learning rate whatever its gradient; what
#   differs is that the same step moves post-LN's output further (in the direction of
#   the amplification effect of Liu et al.). Trained at a learning rate of $10^{-2}$ with no warmup, post-LN ended clearly
#   behind pre-LN with every seed: two of three runs at the loss of a model that ignores
#   context, the third 0.4 below it.
# - `tinyformer.blocks.TransformerBlock` is the one block class of the course: causal
#   here, `causal=False` in [Chapter 6](../part2_encoder/06_bidirectional_attention.ipynb),
#   with cross attention in Part III. A GPT block is `nn.TransformerEncoderLayer` under
#   a causal mask (PyTorch's mask: `True` = blocked); our written-out block,
#   `TransformerBlock` and PyTorch's layer agree, pre-LN and post-LN.
# - `DecoderLM(TransformerConfig(...))` = a causal `TransformerStack` (embeddings +
#   positions → $N$ blocks → final LayerNorm) → LM head, with the head's weight **tied**
#   to the token embedding. Its parameter count is
#   $VD + LD + N(4D^2 + 4D + 2Dd_{ff} + d_{ff} + 5D) + 2D$, checked against the model.
#   Tied, it starts above $\ln V$: each position's vector still carries its own input
#   token's embedding.
# - A training step is six moves (zero the gradients, forward, loss, backward, clip,
#   update); `tinyformer.train.train` makes the same ones.
# - The whole model is causal: the gradient of position $t$'s logits with respect to
#   any later input is exactly zero.
#
# Next, [Chapter 5](05_training_and_generation.ipynb) trains this model on the toy
# language for real and measures how close it gets to the entropy limit.
#
# ## Exercises
#
# **1. Warmup rescues post-LN.** Repeat the post-LN runs of the experiment with a linear
# warmup over the first 30 steps (`warmup_steps=30`), everything else unchanged. Where
# do they end after 100 steps, compared with post-LN without warmup and with pre-LN?
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# for seed in seeds:
#     set_seed(seed)
#     model = DecoderLM(TransformerConfig(vocab_size=V, norm_first=False, **SIZE))
#     history = train(model, get_batch, steps=STEPS, lr=LR, warmup_steps=30,
#                     min_lr_ratio=1.0, eval_fn=val_loss, eval_every=STEPS,
#                     progress=False)
#     print(f"seed {seed}: post-LN with warmup {history['eval'][-1]:.2f}")
# ```
#
# In our runs post-LN with warmup ended at 2.21, 2.17 and 2.27 nats (seeds 0, 1, 2): far
# better than the stalled runs without warmup (3.0 to 3.5), though still behind pre-LN
# without warmup (about 2.0) after only 100 steps, since the first 30 steps crawl.
# Warmup keeps the first updates small; Xiong et al. and Liu et al. both explain the
# 2017 paper's warmup this way {cite}`xiong2020layer,liu2020understanding`.
#
# </details>
#
# **2. A lower learning rate.** Instead of warming up, lower the constant learning rate
# to $3 \cdot 10^{-3}$ and train both kinds again (no warmup, 100 steps, three seeds).
# Is post-LN still behind?
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# for seed in seeds:
#     for norm_first in (True, False):
#         set_seed(seed)
#         config = TransformerConfig(vocab_size=V, norm_first=norm_first, **SIZE)
#         model = DecoderLM(config)
#         history = train(model, get_batch, steps=STEPS, lr=3e-3, warmup_steps=0,
#                         min_lr_ratio=1.0, eval_fn=val_loss, eval_every=STEPS,
#                         progress=False)
#         print(f"seed {seed}, norm_first={norm_first}: {history['eval'][-1]:.2f}")
# ```
#
# No. In our runs every model ended between 1.95 and 1.99 nats: pre-LN at 1.97, 1.98 and
# 1.98, post-LN at 1.99, 1.97 and 1.95 (seeds 0, 1, 2). At this learning rate post-LN
# trains as well as pre-LN, even without warmup: the difference in the experiment is
# about stability at a high learning rate, not about what post-LN can learn. (Pre-LN at
# $10^{-2}$ reached about the same loss in the same 100 steps.)
#
# </details>
#
# **3. GPT-2 small.** GPT-2's smallest model {cite}`radford2019language` has
# $V = 50257$, $D = 768$, $N = 12$ pre-LN blocks with $d_{ff} = 3072$, 1024 learned
# positions and a tied head. (It uses GELU instead of ReLU, which has no parameters.)
# How many parameters is that, and what fraction sits in the token embedding?
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# gpt2 = TransformerConfig(vocab_size=50257, d_model=768, n_heads=12, n_layers=12,
#                          d_ff=3072, max_len=1024, activation="gelu_tanh")
# n = expected_num_parameters(gpt2)
# print(f"{n:,}  embedding share {50257 * 768 / n:.0%}")
# ```
#
# $124{,}439{,}808$ (printed as `124,439,808  embedding share 31%`): the "124M" of GPT-2
# small. Almost a third of it is the token embedding; without tying, a second
# $V \times D$ matrix would add another 38.6 million. In our toy model the embedding is
# only $47 \cdot 64 = 3008$ of about 205 thousand parameters, because the vocabulary is
# tiny.
#
# </details>
#
# **4. Normalising the wrong way.** Suppose that instead of LayerNorm (statistics over
# the $D$ features of one position) we normalised each feature over the $T$ positions of
# the sequence. Would the causality check still pass? Try it on one block by replacing
# `layer_norm` with a version that takes the mean and variance over `dim=1`.
#
# <details class="solution"><summary>Solution</summary>
#
# No. The mean over positions at position $t$ includes positions after $t$, so the
# future leaks into every position's normalised vector, and the gradient with respect to
# later inputs is no longer zero, whatever the attention mask does. (BatchNorm, which
# takes its statistics over the sentences and positions of a batch, would leak the
# future in the same way.) The code prints `True`:
#
# ```python
# def time_norm(x, gain, bias, eps=1e-5):  # statistics over the T positions: WRONG here
#     mu = x.mean(dim=1, keepdim=True)
#     var = x.var(dim=1, keepdim=True, unbiased=False)
#     return gain * (x - mu) / torch.sqrt(var + eps) + bias
#
# block = TransformerBlock(D, n_heads, d_ff)
# x = torch.randn(1, T, D, requires_grad=True)
# norm = block.attn_norm
# h = x + block.self_attn(time_norm(x, norm.weight, norm.bias), mask=causal_mask(T))
# h[0, 0].sum().backward()  # the output at position 0
# print(bool(x.grad[0, 1:].abs().max() > 0))  # True: it sees the future
# ```
#
# </details>
