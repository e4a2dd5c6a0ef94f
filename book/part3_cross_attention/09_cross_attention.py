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
# # 9. Cross attention
#
# Part I built a decoder: every position reads the positions *before* it, in its own
# sequence. Part II built an encoder: every position reads *all* positions of its own
# sequence. Translation needs something neither has: while it writes the target sentence,
# the decoder must read a *different* sequence, the source sentence. The operation that
# does this is {term}`cross attention`, and it is the last new piece of the original
# transformer {cite}`vaswani2017attention`.
#
# The surprise of this chapter is how little is new. Cross attention is the attention of
# Chapter 3 with one change of input: the queries come from the decoder, the keys and
# values from the encoder.
#
# **Learning goals.** After this chapter you can
#
# - write cross attention with its shapes: queries `(B, T_tgt, d_k)`, keys and values
#   `(B, T_src, d_k)`, weights `(B, H, T_tgt, T_src)`, a *rectangular* attention matrix;
# - check it against `tinyformer`'s `MultiHeadAttention(x, context=memory)` and PyTorch's
#   `nn.MultiheadAttention`;
# - hide source padding with a key-padding mask, and prove that padded positions have no
#   influence at all;
# - explain why cross attention has no causal mask, and show through gradients that every
#   target position depends on every source position;
# - draw the whole encoder-decoder transformer and say where cross attention sits in it;
# - say what attention really fixed in the encoder-decoders that came before it (and what
#   it did not).

# %%
import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.attention import (
    MultiHeadAttention,
    padding_mask,
    scaled_dot_product_attention,
)
from tinyformer.compat import load_mha_from_torch, to_torch_mask
from tinyformer.decoder import DecoderBlock
from tinyformer.encoder import Encoder
from tinyformer.language import ToyLanguage
from tinyformer.layers import LearnedPositionalEmbedding, TokenEmbedding
from tinyformer.plot import plot_attention
from tinyformer.train import set_seed
from tinyformer.vocab import Vocab
from torch import nn

set_seed(0)  # seeds Python, NumPy and torch
set_matplotlib_formats(
    "png"
)  # PNG figures: the same in the book, on GitHub and in Colab
torch.set_printoptions(precision=2, sci_mode=False)

# %% [markdown]
# ## Two sequences
#
# The toy language of Chapter 1 comes with a translation into a second made-up language.
# The target language is *head-final*: the verb comes last, prepositions become
# postpositions, adjectives and determiners follow their noun. Every source word has exactly
# one translation, and the language knows which source word each target word translates:
# the {term}`word alignment`, `alignment[j]` = the source index of target word `j`.

# %%
lang = ToyLanguage()
pairs = lang.sample_pairs(8, seed=0)
source, target, alignment = pairs[0]
print("source   :", " ".join(source))
print("target   :", " ".join(target))
print("alignment:", alignment)
for j, i in enumerate(alignment):
    print(f"  target word {j} {target[j]!r:9} translates source word {i} {source[i]!r}")

# %% [markdown]
# Each language gets its own vocabulary. The encoder reads the source framed as in Part II,
# `<bos> w_1 … w_n <eos>` (position 0, `<bos>`, is the summary position). The decoder reads
# the target the way Part I's language model read a sentence: `<bos> y_1 … y_n`, and at
# position $t$ it must predict $y_{t+1}$ (the last position predicts `<eos>`; Chapter 10
# says more). We batch three pairs of different lengths; each side is right-padded to its
# own longest sentence.

# %%
src_vocab = Vocab(lang.words)
tgt_vocab = Vocab(lang.target_words)
PAD = src_vocab.pad_id
assert PAD == tgt_vocab.pad_id == 0  # both vocabularies share the special tokens

batch = [pairs[0], pairs[2], pairs[6]]  # 8, 6 and 3 words
src_ids = src_vocab.batch([s for s, _, _ in batch], bos=True, eos=True)  # (B, T_src)
tgt_in = tgt_vocab.batch([t for _, t, _ in batch], bos=True)  # (B, T_tgt)
B, T_src = src_ids.shape
T_tgt = tgt_in.shape[1]
print("source ids (B, T_src) =", tuple(src_ids.shape))
print(src_ids)
print("target input ids (B, T_tgt) =", tuple(tgt_in.shape))
print(tgt_in)

# %% [markdown]
# The two lengths differ: $T_\text{src} = 10$ (the longest source, 8 words, plus `<bos>`
# and `<eos>`) and $T_\text{tgt} = 9$ (`<bos>` plus 8 words). In this toy translation the
# word counts match and only the framing differs; in real translation the lengths differ
# freely. Nothing below cares: cross attention never needs the two lengths to agree.

# %% [markdown]
# ## The idea: ask questions of another sequence
#
# In self-attention (Chapter 3) one sequence $X$ plays all three roles: $Q = XW_Q$,
# $K = XW_K$, $V = XW_V$. Cross attention takes the two sequences of a translation model:
#
# - $Y$, `(T_tgt, D)`: the decoder's current vectors, one per target position;
# - $M$, `(T_src, D)`: the encoder's final output, one vector per source position. PyTorch
#   and this book call it the {term}`memory`.
#
# The queries come from the decoder, the keys and values from the memory:
#
# $$Q = Y W_Q, \qquad K = M W_K, \qquad V = M W_V, \qquad
#   \operatorname{CrossAttention}(Y, M)
#   = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V .$$
#
# $QK^\top$ is now `(T_tgt, T_src)`: row $t$ scores target position $t$'s question against
# every source position. The softmax runs over the source positions, and the output has one
# row per *target* position, `(T_tgt, d_v)`: each target position receives a weighted
# average of source information. Vaswani et al. call this "encoder-decoder attention": "the
# queries come from the previous decoder layer, and the memory keys and values come from the
# output of the encoder. This allows every position in the decoder to attend over all
# positions in the input sequence" {cite}`vaswani2017attention` (Section 3.2.3).
#
# To have something to attend to, we need a memory. We take Part II's encoder (random
# weights: this chapter is about the plumbing, not about what a trained model knows) and,
# for the decoder side, the target's token embeddings plus learned positions, as in Part I.

# %%
set_seed(0)
D, H = 32, 4
d_k = D // H
encoder = Encoder(len(src_vocab), d_model=D, n_heads=H, n_layers=2, d_ff=64).eval()
tgt_embed = TokenEmbedding(len(tgt_vocab), D)
tgt_pos = LearnedPositionalEmbedding(max_len=32, d_model=D)

with torch.no_grad():
    memory = encoder(src_ids)  # (B, T_src, D): one vector per source position
    y = tgt_pos(tgt_embed(tgt_in))  # (B, T_tgt, D): one vector per target position
print("memory (B, T_src, D) =", tuple(memory.shape))
print("y      (B, T_tgt, D) =", tuple(y.shape))

# %% [markdown]
# ## Cross attention, written out
#
# Here are the few lines, with the shape at every step. They borrow the four projections of
# a `tinyformer` `MultiHeadAttention` (so that we can compare), and for the attention itself
# they call the *same* `scaled_dot_product_attention` that self-attention uses: there is no
# second attention function. The only difference from Chapter 3 is the argument that feeds
# `k_proj` and `v_proj`.

# %%
set_seed(1)
cross = MultiHeadAttention(D, H).eval()
src_mask = padding_mask(src_ids, PAD)  # (B, 1, 1, T_src), True at real source tokens


def split_heads(t):
    """(B, T, D) -> (B, H, T, d_k)."""
    return t.view(t.shape[0], t.shape[1], H, d_k).transpose(1, 2)


with torch.no_grad():
    q = split_heads(cross.q_proj(y))  # (B, H, T_tgt, d_k)   questions from the target
    k = split_heads(cross.k_proj(memory))  # (B, H, T_src, d_k)   keys from the source
    v = split_heads(cross.v_proj(memory))  # (B, H, T_src, d_k)   values from the source
    heads, weights = scaled_dot_product_attention(
        q, k, v, src_mask
    )  # weights (B,H,T_tgt,T_src)
    out = cross.out_proj(heads.transpose(1, 2).reshape(B, T_tgt, D))  # (B, T_tgt, D)

for name, t in [("q", q), ("k", k), ("v", v), ("weights", weights), ("heads", heads)]:
    print(f"{name:8}", tuple(t.shape))
print("out     ", tuple(out.shape), "  <- one vector per TARGET position")

# %% [markdown]
# The weights are `(B, H, T_tgt, T_src) = (3, 4, 9, 10)`: nine rows (target positions) by
# ten columns (source positions), not square. Now the same layer three ways: our lines
# above, the package's `MultiHeadAttention` called with `context=memory`, and PyTorch's
# `nn.MultiheadAttention(query, key, value)` with the memory as key and value. PyTorch
# takes the padding as a `(B, T_src)` `key_padding_mask` in the **opposite** convention
# (`True` = blocked); `to_torch_mask` converts ours.

# %%
set_seed(2)
theirs = nn.MultiheadAttention(D, H, batch_first=True).eval()
load_mha_from_torch(cross, theirs)  # the same weights in ours and theirs

with torch.no_grad():
    # ours, written out again with the loaded weights
    q, k, v = (
        split_heads(p(t))
        for p, t in [(cross.q_proj, y), (cross.k_proj, memory), (cross.v_proj, memory)]
    )
    heads, weights = scaled_dot_product_attention(q, k, v, src_mask)
    written = cross.out_proj(heads.transpose(1, 2).reshape(B, T_tgt, D))
    # the package: the self-attention layer of Chapter 3, given a context
    pkg, pkg_weights = cross(y, context=memory, mask=src_mask, return_weights=True)
    # PyTorch: key_padding_mask (B, T_src), True = blocked
    key_padding = to_torch_mask(src_mask)[:, 0, 0, :]
    torch_out, torch_weights = theirs(
        y, memory, memory, key_padding_mask=key_padding, average_attn_weights=False
    )

checks = [
    ("written out == MultiHeadAttention(y, context=memory)", written, pkg),
    ("  and the weights", weights, pkg_weights),
    ("written out == nn.MultiheadAttention(y, memory, memory)", written, torch_out),
    ("  and the weights", weights, torch_weights),
]
for name, ours_t, ref_t in checks:
    print(f"{name:56}", torch.allclose(ours_t, ref_t, atol=1e-6))
    assert torch.allclose(ours_t, ref_t, atol=1e-6)

# %% [markdown]
# And self-attention *is* this layer with the context set to the sequence itself:
# `MultiHeadAttention(y)` means `MultiHeadAttention(y, context=y)`.

# %%
with torch.no_grad():
    print(
        "cross(y) == cross(y, context=y):", torch.equal(cross(y), cross(y, context=y))
    )

# %% [markdown]
# ## The source padding mask
#
# The shortest source in the batch has 3 words, so its row of `src_ids` ends in five
# `<pad>` tokens. The encoder computes vectors for those positions too (Part II), but they
# stand for nothing, and no target position may read them. The mask that hides them is the
# same key-padding mask as in the encoder, built from the **source** ids:
# `padding_mask(src_ids, pad_id)` has shape `(B, 1, 1, T_src)` and broadcasts to the weights'
# `(B, H, T_tgt, T_src)`: every head and every target position of sentence $b$ ignores the
# same padded source columns.

# %%
print("src_mask", tuple(src_mask.shape), "-> broadcasts to", tuple(weights.shape))
print("sentence 2:", src_vocab.decode(src_ids[2], strip_special=False))
print("mask      :", src_mask[2, 0, 0].int().tolist())
pad_columns = ~src_mask.expand_as(weights)  # (B, H, T_tgt, T_src), True at pads
print("largest weight on a padded source position:", weights[pad_columns].max().item())
print("rows sum to 1:", torch.allclose(weights.sum(-1), torch.ones(B, H, T_tgt)))

# %% [markdown]
# Zero weight means zero influence, and we can check that without trusting the weights:
# overwrite the memory at every padded source position with large random numbers and run
# cross attention again. The output is not just close, it is bit-for-bit the same
# (`torch.equal`). Without the mask, the same change moves every output.

# %%
set_seed(3)
is_pad = (src_ids == PAD)[..., None]  # (B, T_src, 1)
garbage = torch.where(
    is_pad, 100 * torch.randn_like(memory), memory
)  # pads overwritten

with torch.no_grad():
    before = cross(y, context=memory, mask=src_mask)
    after = cross(y, context=garbage, mask=src_mask)
    unmasked_before = cross(y, context=memory)
    unmasked_after = cross(y, context=garbage)
print("with the mask   : output unchanged (torch.equal):", torch.equal(before, after))
print(
    "without the mask: largest change in sentence 2's output:",
    round((unmasked_after - unmasked_before)[2].abs().max().item()),
)
assert torch.equal(before, after)
assert (unmasked_after - unmasked_before)[2].abs().max() > 1.0

# %% [markdown]
# > **Padding on the target side.** The *target* rows of the shorter sentences are padded
# > too (rows of `tgt_in` ending in 0). Their queries still attend, to real source positions,
# > and produce vectors; nothing reads them, because the decoder's causal self-attention
# > only looks back from real positions, and the loss ignores predictions at pad targets
# > (Chapter 10). So cross attention needs a mask on its *keys* (the source) only.

# %% [markdown]
# ## No causal mask on cross attention
#
# The decoder's self-attention is causal: while predicting target word $t + 1$ the decoder
# may not look at target words after $t$, because at generation time they do not exist yet.
# The source is different. It is given in full before the first target word is written, so
# no source position is "the future". Every target position may read every (real) source
# position, and it often must: in our head-final language the *first* target word
# translates a word far into the source (in the pair above, `kuran` translates source word
# 3), and the verb that ends the target translates a word from the middle of the source.
# So cross attention's only mask is the padding mask; causality is needed only among target
# positions, and the decoder keeps it in its self-attention sublayer.
#
# Gradients make this visible. We take a decoder block with a cross-attention sublayer,
# `tinyformer.decoder.DecoderBlock(cross_attention=True)` (Chapter 10 writes it out), feed it
# the target vectors $y$ and the memory $M$ of one sentence, and measure how strongly each
# output position $t$ depends on each input:
# $\lVert \partial\,\text{out}_t / \partial y_s \rVert$ over target positions $s$, and
# $\lVert \partial\,\text{out}_t / \partial M_s \rVert$ over source positions $s$.
# We use the 6-word sentence of the batch, so the source has real and padded positions.

# %%
set_seed(4)
block = DecoderBlock(D, H, d_ff=64, cross_attention=True).eval()
b = 1  # the 6-word sentence: 8 real source positions (<bos>, 6 words, <eos>), 2 pads
n_src, n_tgt = int(src_mask[b].sum()), len(batch[b][1]) + 1
y_b, memory_b, mask_b = y[b : b + 1, :n_tgt], memory[b : b + 1], src_mask[b : b + 1]


def dependence(y_in, memory_in):
    """(T_tgt, T_tgt) and (T_tgt, T_src) matrices of || d out_t / d input_s ||."""
    jac_y, jac_m = torch.autograd.functional.jacobian(
        lambda y_, m_: block(y_, memory=m_, memory_mask=mask_b), (y_in, memory_in)
    )  # (1, T_tgt, D, 1, T_tgt, D) and (1, T_tgt, D, 1, T_src, D)
    norm = lambda j: j[0, :, :, 0].pow(2).sum(dim=(1, 3)).sqrt()  # noqa: E731
    return norm(jac_y), norm(jac_m)


dep_target, dep_source = dependence(y_b, memory_b)
print("d out / d target   :", tuple(dep_target.shape), "(T_tgt x T_tgt)")
print("d out / d source   :", tuple(dep_source.shape), "(T_tgt x T_src)")
future = torch.triu(torch.ones(n_tgt, n_tgt, dtype=torch.bool), diagonal=1)
print(
    "largest dependence on a FUTURE target position  :", dep_target[future].max().item()
)
print(
    "smallest dependence on a past/own target position:",
    round(dep_target[~future].min().item(), 2),
)
print(
    "smallest dependence on a REAL source position   :",
    round(dep_source[:, :n_src].min().item(), 2),
)
print(
    "largest dependence on a PADDED source position  :",
    dep_source[:, n_src:].max().item(),
)

# %%
tgt_tokens = tgt_vocab.decode(tgt_in[b, :n_tgt], strip_special=False)
src_tokens = src_vocab.decode(src_ids[b], strip_special=False)
fig, axes = plt.subplots(
    1, 2, figsize=(12.5, 4.6), gridspec_kw={"width_ratios": [n_tgt, T_src]}
)
panels = [
    (dep_target, tgt_tokens, "target input position s", "on target inputs: causal"),
    (
        dep_source,
        src_tokens,
        "source position s",
        "on the memory: every real source position",
    ),
]
for ax, (dep, labels, xlabel, title) in zip(axes, panels, strict=True):
    image = ax.imshow(dep, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(labels)), labels=labels, rotation=90)
    ax.set_yticks(range(n_tgt), labels=tgt_tokens)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("output at target position t")
    ax.set_title(f"‖∂ out_t / ∂ input_s‖ — {title}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
fig.suptitle("One decoder block with cross attention (random weights)")
fig.tight_layout()

# %% [markdown]
# The left panel is the causal mask, measured: target position $t$ depends on target
# inputs $0..t$ and exactly not on later ones. The right panel is full: every target
# position, the first (`<bos>`) included, depends on every real source position, and the
# two padded columns are exactly zero.

# %%
assert (dep_target[future] == 0).all() and (dep_target[~future] > 0).all()
assert (dep_source[:, :n_src] > 0).all() and (dep_source[:, n_src:] == 0).all()

# %% [markdown]
# ## Where cross attention looks, before training
#
# The weights of one cross-attention layer form a `(T_tgt, T_src)` map: row $t$ says which
# source positions target position $t$ reads while predicting the next target word. Since
# the toy language knows the word alignment, we can mark the source word that the next
# target word translates. Row $t$ (its input is `<bos>` for $t = 0$, else `target[t - 1]`)
# predicts `target[t]`, which translates `source[alignment[t]]`, found at position
# `alignment[t] + 1` of the framed source (position 0 is `<bos>`).
#
# > **These weights are random, so the map means nothing yet.** Nothing has been trained:
# > the colours are an accident of the initialisation. What *is* meaningful is the shape of
# > the matrix (rectangular) and the blank padded columns. Chapter 11 trains a translation
# > model, and we will see whether its cross attention learns to look at the red squares.

# %%
with torch.no_grad():
    _, w = cross(
        y, context=memory, mask=src_mask, return_weights=True
    )  # (B, H, T_tgt, T_src)

fig, axes = plt.subplots(1, 2, figsize=(13, 5.6))
for ax, b in zip(axes, [0, 2], strict=True):
    src_tokens = src_vocab.decode(src_ids[b], strip_special=False)
    tgt_tokens = tgt_vocab.decode(tgt_in[b], strip_special=False)
    plot_attention(w[b, 0], src_tokens, tgt_tokens, ax=ax)
    ax.set_xlabel("source position (key)")
    ax.set_ylabel("target input position (query)")
    aligned = batch[b][2]
    for t, i in enumerate(
        aligned
    ):  # row t predicts target[t], which translates source[i]
        ax.add_patch(
            plt.Rectangle((i + 1 - 0.5, t - 0.5), 1, 1, fill=False, ec="red", lw=2)
        )
    n_words = len(aligned)
    ax.set_title(f"sentence {b}: {n_words} words, head 0 (untrained)")
fig.suptitle(
    "Cross-attention weights, T_tgt × T_src = 9 × 10 (red: the true alignment)"
)
fig.tight_layout()

# %% [markdown]
# On the right, the 3-word sentence: its source columns 5 to 9 are padding and stay white
# (weight exactly 0) in every row; its target rows 4 to 8 are target padding, whose outputs
# nobody reads. How much weight does the untrained layer put on the aligned source word? On
# average about what a uniform guess over the real source positions would give:

# %%
aligned_weight, uniform_guess = [], []
for b, (_, _, aligned) in enumerate(batch):
    for t, i in enumerate(aligned):
        aligned_weight.append(
            w[b, :, t, i + 1].mean().item()
        )  # averaged over the heads
        uniform_guess.append(1 / int(src_mask[b].sum()))
mean_aligned = sum(aligned_weight) / len(aligned_weight)
mean_uniform = sum(uniform_guess) / len(uniform_guess)
print(f"mean weight on the aligned source word: {mean_aligned:.3f}")
print(f"uniform over the real source positions : {mean_uniform:.3f}")
assert abs(mean_aligned - mean_uniform) < 0.05

# %% [markdown]
# ## The whole picture
#
# Cross attention is the bridge between the two halves of the original transformer. The
# diagram below is the model we assemble in Chapter 10, drawn with the course's
# conventions (pre-LN, two blocks per stack, as in our experiments):
#
# - **Encoder** (left, Part II): source ids → token embedding + positions → $N$ encoder
#   blocks (self-attention over the whole source, padding masked; feed-forward network) →
#   final LayerNorm → the memory `(B, T_src, D)`.
# - **Decoder** (right, Part I plus one sublayer): target ids → token embedding + positions →
#   $N$ decoder blocks, each with three sublayers: causal (masked) self-attention, **cross
#   attention** reading the memory, feed-forward → final LayerNorm → LM head → logits
#   `(B, T_tgt, V_tgt)`.
# - **The memory enters every decoder block**, not only the first: each block's cross
#   attention computes its own keys and values from the same final encoder output.
# - Every sublayer is wrapped the same way: LayerNorm, then the sublayer, then a residual
#   sum $x + \text{sublayer}(\text{LN}(x))$ (the $\oplus$ circles; the grey lines are the
#   residual connections). The 2017 paper placed the LayerNorm *after* the residual sum
#   instead (post-LN, "Add & Norm"); Chapter 10 builds both.
#
# The drawing code is in the cell (unfold it in the book); it is plain matplotlib boxes
# and arrows.

# %% tags=["hide-input"]
COLORS = {
    "embed": "#d9f0d3",
    "self": "#fde0c5",
    "cross": "#f6b8b8",
    "ffn": "#cfe3f7",
    "norm": "#e4e4e4",
    "head": "#e5d8f0",
}
BOX_W = 3.8  # width of every box in a column (data units)
MEMORY_RED = "#b22222"


def rounded_box(ax, x, y, w, h, fc, ec="black", lw=1.2, ls="-", z=2):
    """A rounded rectangle with lower-left corner (x, y)."""
    style = "round,pad=0,rounding_size=0.12"
    ax.add_patch(
        FancyBboxPatch(
            (x, y), w, h, boxstyle=style, fc=fc, ec=ec, lw=lw, ls=ls, zorder=z
        )
    )


def draw_arrow(ax, start, end, color="black", lw=1.4, size=12):
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=size,
            color=color,
            lw=lw,
            zorder=3,
            shrinkA=0,
            shrinkB=0,
        )
    )


def labelled_box(ax, cx, y, label, fc, h=0.62, fontsize=10.5, bold=False):
    """An arrow up from y, then a box centred on cx; returns the box's top."""
    draw_arrow(ax, (cx, y), (cx, y + 0.28))
    y += 0.28
    rounded_box(ax, cx - BOX_W / 2, y, BOX_W, h, fc)
    weight = "bold" if bold else "normal"
    ax.text(
        cx,
        y + h / 2,
        label,
        ha="center",
        va="center",
        fontsize=fontsize,
        fontweight=weight,
        zorder=4,
    )
    return y + h


def sublayer(ax, cx, y, label, note, fc, residual_side):
    """A pre-LN sublayer: LayerNorm -> sublayer -> (+), the residual bypassing both.

    Returns (the top of the (+), the height of the box's middle)."""
    h_norm, h_main = 0.34, 0.72
    x0, y0 = cx - BOX_W / 2, y + 0.28
    draw_arrow(ax, (cx, y), (cx, y0))
    rounded_box(ax, x0, y0, BOX_W, h_norm + h_main, fc)
    ax.add_patch(
        FancyBboxPatch(
            (x0 + 0.06, y0 + 0.05),
            BOX_W - 0.12,
            h_norm - 0.08,
            boxstyle="round,pad=0,rounding_size=0.06",
            fc=COLORS["norm"],
            ec="none",
            zorder=3,
        )
    )
    ax.text(
        cx,
        y0 + h_norm / 2 + 0.01,
        "LayerNorm",
        ha="center",
        va="center",
        fontsize=8.5,
        color="#444444",
        zorder=4,
    )
    ax.text(
        cx,
        y0 + h_norm + h_main / 2 + 0.1,
        label,
        ha="center",
        va="center",
        fontsize=10.5,
        fontweight="bold",
        zorder=4,
    )
    ax.text(
        cx,
        y0 + h_norm + 0.15,
        note,
        ha="center",
        va="center",
        fontsize=8.5,
        style="italic",
        color="#333333",
        zorder=4,
    )
    top = y0 + h_norm + h_main
    plus_y = top + 0.38
    draw_arrow(ax, (cx, top), (cx, plus_y - 0.16))
    ax.add_patch(Circle((cx, plus_y), 0.16, fc="white", ec="black", lw=1.2, zorder=4))
    ax.text(cx, plus_y - 0.01, "+", ha="center", va="center", fontsize=12, zorder=5)
    side_x = cx + residual_side * (BOX_W / 2 + 0.3)  # the residual runs beside the box
    ax.plot(
        [cx, side_x, side_x],
        [y + 0.12, y + 0.12, plus_y],
        color="#555555",
        lw=1.2,
        zorder=3,
    )
    draw_arrow(
        ax,
        (side_x, plus_y),
        (cx + residual_side * 0.16, plus_y),
        color="#555555",
        lw=1.2,
    )
    return plus_y + 0.16, y0 + h_norm + h_main / 2


def block_frame(ax, cx, y0, y1, label, side):
    """A dashed frame around one block, labelled on its outer side."""
    pad = 0.62
    rounded_box(
        ax,
        cx - BOX_W / 2 - pad,
        y0 + 0.05,
        BOX_W + 2 * pad,
        y1 - y0 + 0.02,
        "none",
        ec="#777777",
        lw=1.0,
        ls="--",
        z=1,
    )
    ax.text(
        cx + side * (BOX_W / 2 + pad + 0.14),
        (y0 + y1) / 2,
        label,
        rotation=90,
        ha="center",
        va="center",
        fontsize=9.5,
        color="#555555",
    )


def draw_encoder_decoder(ax, n_layers=2, enc_x=2.8, dec_x=10.2, bus_x=6.5):
    """Draw the encoder-decoder transformer on ax; returns the top y used."""
    ax.text(enc_x, 0.0, "source ids  (B, T_src)", ha="center", va="center", fontsize=10)
    ax.text(
        dec_x,
        0.0,
        "target ids: <bos> + target  (B, T_tgt)",
        ha="center",
        va="center",
        fontsize=10,
    )
    y_enc = labelled_box(ax, enc_x, 0.2, "token embedding + positions", COLORS["embed"])
    y_dec = labelled_box(ax, dec_x, 0.2, "token embedding + positions", COLORS["embed"])

    for layer in range(n_layers):  # encoder blocks, residuals on the left
        start = y_enc
        y_enc, _ = sublayer(
            ax,
            enc_x,
            y_enc,
            "self-attention",
            "all source positions, pads masked",
            COLORS["self"],
            -1,
        )
        y_enc, _ = sublayer(
            ax,
            enc_x,
            y_enc,
            "feed-forward (FFN)",
            "each position on its own",
            COLORS["ffn"],
            -1,
        )
        block_frame(ax, enc_x, start, y_enc, f"encoder block {layer + 1}", side=-1)
        y_enc += 0.12
    y_enc = labelled_box(
        ax, enc_x, y_enc, "final LayerNorm", COLORS["norm"], h=0.45, fontsize=9.5
    )
    y_mem = labelled_box(
        ax, enc_x, y_enc, "memory  (B, T_src, D)", COLORS["cross"], bold=True
    )

    cross_heights = []
    for layer in range(n_layers):  # decoder blocks, residuals on the right
        start = y_dec
        y_dec, _ = sublayer(
            ax,
            dec_x,
            y_dec,
            "masked self-attention",
            "causal: earlier target positions",
            COLORS["self"],
            +1,
        )
        y_dec, middle = sublayer(
            ax,
            dec_x,
            y_dec,
            "cross-attention",
            "Q: decoder,  K, V: memory",
            COLORS["cross"],
            +1,
        )
        cross_heights.append(middle)
        y_dec, _ = sublayer(
            ax,
            dec_x,
            y_dec,
            "feed-forward (FFN)",
            "each position on its own",
            COLORS["ffn"],
            +1,
        )
        block_frame(ax, dec_x, start, y_dec, f"decoder block {layer + 1}", side=+1)
        y_dec += 0.12
    y_dec = labelled_box(
        ax, dec_x, y_dec, "final LayerNorm", COLORS["norm"], h=0.45, fontsize=9.5
    )
    y_dec = labelled_box(ax, dec_x, y_dec, "LM head: linear D → V_tgt", COLORS["head"])
    draw_arrow(ax, (dec_x, y_dec), (dec_x, y_dec + 0.35))
    ax.text(
        dec_x,
        y_dec + 0.55,
        "logits  (B, T_tgt, V_tgt)",
        ha="center",
        va="center",
        fontsize=10,
    )

    # The memory runs along a "bus" into the cross attention of EVERY decoder block.
    memory_y = y_mem - 0.31
    heights = [*cross_heights, memory_y]
    ax.plot(
        [enc_x + BOX_W / 2, bus_x],
        [memory_y, memory_y],
        color=MEMORY_RED,
        lw=2.4,
        zorder=3,
    )
    ax.plot(
        [bus_x, bus_x], [min(heights), max(heights)], color=MEMORY_RED, lw=2.4, zorder=3
    )
    for height in cross_heights:
        draw_arrow(
            ax,
            (bus_x, height),
            (dec_x - BOX_W / 2, height),
            color=MEMORY_RED,
            lw=2.4,
            size=16,
        )
        ax.text(
            bus_x + 0.35,
            height + 0.12,
            "keys, values",
            color=MEMORY_RED,
            fontsize=9,
            va="bottom",
        )
    return max(y_dec + 0.8, y_mem)


fig, ax = plt.subplots(figsize=(10.5, 13.5))
top = draw_encoder_decoder(ax)
ax.text(2.8, top, "ENCODER", ha="center", fontsize=14, fontweight="bold")
ax.text(10.2, top, "DECODER", ha="center", fontsize=14, fontweight="bold")
ax.set_title(
    "The encoder-decoder transformer (pre-LN, N = 2 blocks per stack)", fontsize=13
)
ax.set_xlim(-0.7, 13.7)
ax.set_ylim(-0.5, top + 0.5)
ax.set_aspect("equal")
ax.axis("off")
fig.tight_layout()

# %% [markdown]
# > **Folklore check: cross attention does not cure vanishing gradients.** One still reads
# > that attention (or cross attention in particular) was invented to fix vanishing
# > gradients. It was not, and it is not what keeps a transformer trainable. What keeps the
# > gradients of a deep stack healthy are the residual connections {cite}`he2016deep`, which
# > give every layer an identity path to the loss, and layer normalisation {cite}`ba2016layer`,
# > which keeps each sublayer's input at a fixed scale; in the recurrent networks that came
# > before, gated units such as the LSTM {cite}`hochreiter1997long` played that role.
# >
# > What attention fixed in encoder-decoders was a **bottleneck**. The recurrent
# > encoder-decoders of 2014 {cite}`sutskever2014sequence,cho2014learning` compressed the
# > whole source sentence into *one fixed-length vector*, the encoder's final state, and
# > the decoder saw nothing else; their quality fell quickly as sentences grew longer
# > {cite}`cho2014properties`. Bahdanau, Cho and Bengio {cite}`bahdanau2015neural` let the
# > decoder, at every step, take a weighted average of *all* the encoder's states, with
# > weights computed from the decoder's state: the first encoder-decoder attention, and the
# > ancestor of this chapter's layer. The source no longer has to fit into one vector; its
# > representation grows with its length, `(T_src, D)`, and each target word reads the part
# > it needs. (A side effect is that each target word is a few steps from each source word,
# > which does shorten gradient paths; but that was not the problem the authors set out to
# > solve, and within a deep transformer the residual stream does that work.)
# >
# > In the transformer, cross attention is simply the *only* channel between the two
# > stacks: the encoder learns from the translation loss only through the gradients that
# > flow back through the decoder's cross attention.

# %% [markdown]
# ## What we learned
#
# - Cross attention is self-attention with the keys and values taken from another
#   sequence: queries `(B, T_tgt, d_k)` from the decoder, keys and values `(B, T_src, d_k)`
#   from the encoder's output (the memory), weights `(B, H, T_tgt, T_src)`, output
#   `(B, T_tgt, D)`, one vector per target position. The attention matrix is rectangular
#   ($9 \times 10$ in our batch).
# - It needs no new function: `MultiHeadAttention(y, context=memory)` and our written-out
#   lines around `scaled_dot_product_attention` agree with each other and with
#   `nn.MultiheadAttention(y, memory, memory)`.
# - Its mask is the source key-padding mask `padding_mask(src_ids, pad_id)`, `(B, 1, 1, T_src)`.
#   Padded source positions get weight exactly 0; overwriting them with garbage leaves the
#   output bit-for-bit unchanged.
# - It has no causal mask: the source is known in full before decoding starts. The
#   Jacobian showed it: in a decoder block, output $t$ depends on target inputs $0..t$ only,
#   but on every real source position.
# - In the full model the memory feeds the cross attention of every decoder block.
# - Attention entered encoder-decoders to remove the fixed-length bottleneck of recurrent
#   models, not to cure vanishing gradients; residual connections and layer normalisation
#   keep a transformer's gradients healthy.
#
# Next, Chapter 10 adds the cross-attention sublayer to the decoder block and assembles the
# full encoder-decoder transformer, checked against PyTorch's `nn.Transformer`.

# %% [markdown]
# ## Exercises
#
# **1. A causal cross mask?** Suppose someone applies a "causal" mask to cross attention,
# letting target position $t$ read source positions $0..t$ only. Count, over 1000 sentence
# pairs of the toy language, how many target words then could not see the source word they
# translate. (As above, row $t$ predicts `target[t]`, which translates
# `source[alignment[t]]`, at framed position `alignment[t] + 1`.)
#
# <details><summary>Solution</summary>
#
# `target[j]` is predicted at row $j$, which could read framed source positions
# $0..j$; its source word sits at framed position `alignment[j] + 1`. It is hidden when
# `alignment[j] + 1 > j`.
#
# ```python
# hidden = total = 0
# for source, target, alignment in lang.sample_pairs(1000, seed=1):
#     hidden += sum(alignment[j] + 1 > j for j in range(len(target)))
#     total += len(target)
# print(f"{hidden / total:.0%} of target words could not see their source word")
# ```
#
# About 60% of them: the head-final target reverses most phrases, so the word a target position
# needs is often *later* in the source. Even for a language with the same word order the
# mask would be pointless: the whole source is known before decoding starts, so there is
# nothing to hide.
# </details>
#
# **2. Shuffle the memory.** Show that permuting the source positions of the memory (the
# same permutation for the mask) leaves the cross-attention output unchanged. What does
# this say about where the decoder gets the source's word order from?
#
# <details><summary>Solution</summary>
#
# Permuting the memory rows permutes the keys and the values *together*, so each score
# still meets its own value, and a weighted sum does not depend on the order of its terms.
#
# ```python
# perm = torch.randperm(T_src)
# with torch.no_grad():
#     a = cross(y, context=memory, mask=src_mask)
#     b = cross(y, context=memory[:, perm], mask=src_mask[..., perm])
# print(torch.allclose(a, b, atol=1e-6))  # True
# ```
#
# Cross attention is blind to the order of the source positions (it is permutation
# *invariant* in them). The only reason the decoder can tell "the dog chases the cat" from
# "the cat chases the dog" is that the encoder added positional information to the source
# before its own self-attention mixed it into every memory vector.
# </details>
#
# **3. Parameters.** How many parameters does one cross-attention layer have, compared
# with a self-attention layer of the same width? What changes if the encoder's width
# $D_\text{enc}$ differs from the decoder's $D$?
#
# <details><summary>Solution</summary>
#
# The same: $W_Q, W_K, W_V, W_O$ are `(D, D)` with biases, $4D^2 + 4D$, whatever the two
# lengths are (lengths never enter the parameter count). If the memory had width
# $D_\text{enc}$, only $W_K$ and $W_V$ would change shape, to `(D_enc, D)`:
# $2D^2 + 2 D_\text{enc} D + 4D$. PyTorch's `nn.MultiheadAttention` supports that with its
# `kdim` and `vdim` arguments; `tinyformer` keeps one width $D$ everywhere.
#
# ```python
# print(sum(p.numel() for p in cross.parameters()), 4 * D**2 + 4 * D)  # 4224 4224
# ```
# </details>
#
# **4. Computing the memory's keys once.** When the decoder generates a translation one
# token at a time, which of cross attention's tensors change from step to step, and which
# could be computed once per sentence?
#
# <details><summary>Solution</summary>
#
# The memory does not change while decoding (the encoder runs once), so every decoder
# block's cross-attention keys $K = MW_K$ and values $V = MW_V$, `(B, H, T_src, d_k)`, are
# the same at every step: they can be computed once and kept, like a KV cache that is full
# from the start. Only the query of the new target position is new, `(B, H, 1, d_k)`, and
# its weights `(B, H, 1, T_src)`. (Self-attention's cache, by contrast, grows by one
# position per step.) `tinyformer.seq2seq.greedy_decode` keeps it simple and recomputes
# them from the short memory; for long sources the saving matters.
# </details>
