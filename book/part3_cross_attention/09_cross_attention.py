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
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/part3_cross_attention/09_cross_attention.ipynb">Open in Colab</a> · runs in about 6 s on two CPU cores
#
# Part I built a decoder: every position reads the positions *before* it, in its own
# sequence. Part II built an encoder: every position reads *all* positions of its own
# sequence. Translation needs something neither has: while it writes the target sentence,
# the decoder must read a *different* sequence, the source sentence. The operation that
# does this is {term}`cross attention`, and it is the last new piece of the original
# transformer {cite}`vaswani2017attention`.
#
# The surprise of this chapter is how little is new. Cross attention is the attention of
# [Chapter 3](../part1_decoder/03_self_attention.ipynb) with one change of input: the
# queries come from the decoder, the keys and values from the encoder's output.
#
# **Learning goals.** After this chapter you can
#
# - write cross attention with its shapes: queries `(B, H, T, d_k)` from the $T$ target
#   positions, keys and values `(B, H, S, d_k)` from the $S$ source positions, weights
#   `(B, H, T, S)`, a *rectangular* attention matrix;
# - check it against `tinyformer`'s `MultiHeadAttention(x, context=memory)` and PyTorch's
#   `nn.MultiheadAttention`;
# - hide source padding with a key-padding mask, and prove that padded positions have no
#   influence at all;
# - explain why cross attention has no causal mask, and show through gradients that every
#   target position depends on every source position;
# - switch on the third sublayer of the course's one block class, `TransformerBlock`;
# - draw the whole encoder-decoder transformer and say where cross attention sits in it;
# - say what attention really fixed in the encoder-decoders that came before it (and what
#   it did not).
#
# Notation: $S$ is the source length and $T$ the target length (in positions), $M$ the
# memory, `(B, S, D)`; the [notation page](../appendix/notation.md) lists every symbol.

# %%
import matplotlib.pyplot as plt
import torch
from matplotlib.patches import Circle, FancyArrowPatch, FancyBboxPatch
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.attention import (
    MultiHeadAttention,
    padding_mask,
    record_attention,
    scaled_dot_product_attention,
)
from tinyformer.blocks import TransformerBlock
from tinyformer.config import TransformerConfig
from tinyformer.language import ToyLanguage
from tinyformer.layers import LearnedPositionalEmbedding, TokenEmbedding
from tinyformer.plot import plot_attention
from tinyformer.stack import TransformerStack
from tinyformer.torch_bridge import load_mha_from_torch, to_torch_mask
from tinyformer.train import set_seed
from tinyformer.vocab import Vocab
from torch import nn

set_seed(0)  # seeds Python, NumPy and torch
set_matplotlib_formats("retina")  # PNG figures at twice the pixels, on every screen
torch.set_printoptions(precision=2, sci_mode=False)

# %% [markdown]
# ## Two sequences
#
# The toy language of [Chapter 1](../part1_decoder/01_the_toy_language.ipynb) comes with a
# translation into a second made-up language. The target language is *head-final*: the
# verb comes last, prepositions become postpositions, adjectives and determiners follow
# their noun. It is not a word-for-word cipher:
#
# - **"the" has no counterpart**: the target marks a definite noun by nothing;
# - **a plural noun becomes two words**, the noun and the plural particle `ta`;
# - **"near the", "behind the", "under the" fuse into one postposition**, as German fuses
#   "zu dem" into "zum".
#
# So the two sentences of a pair usually differ in length, and the language's
# {term}`word alignment` is a list of *links* `(j, i)`: target word `j` translates (part
# of) source word `i`. A target word can have two links, a source word two or none.

# %%
lang = ToyLanguage()
pairs = lang.sample_pairs(8, seed=0)
source, target, alignment = pairs[7]
print("source   :", " ".join(source), f"({len(source)} words)")
print("target   :", " ".join(target), f"({len(target)} words)")
print("alignment:", alignment)
for j, word in enumerate(target):
    links = [f"source word {i} {source[i]!r}" for jj, i in alignment if jj == j]
    print(f"  target word {j} {word!r:8} <- " + " and ".join(links))
aligned = {i for _, i in alignment}
print(
    "no counterpart:", [f"{i} {w!r}" for i, w in enumerate(source) if i not in aligned]
)

# %% [markdown]
# Each language gets its own vocabulary. The encoder reads the source framed as in Part
# II, `<bos> w_1 … w_n <eos>` (position 0, `<bos>`, is the summary position). The decoder
# reads the target the way Part I's language model read a sentence: `<bos> y_1 … y_m`,
# and at position $t$ it must predict $y_{t+1}$ (the last position predicts `<eos>`;
# [Chapter 10](10_the_encoder_decoder.ipynb) says more). We batch three pairs of different
# lengths; each side is right-padded to its own longest sentence.

# %%
src_vocab = Vocab(lang.words)
tgt_vocab = Vocab(lang.target_words)
PAD = src_vocab.pad_id
assert PAD == tgt_vocab.pad_id == 0  # both vocabularies share the special tokens

batch = [pairs[3], pairs[7], pairs[6]]  # 10, 7 and 3 source words
src_ids = src_vocab.batch([s for s, _, _ in batch], bos=True, eos=True)  # (B, S)
tgt_in = tgt_vocab.batch([t for _, t, _ in batch], bos=True)  # (B, T)
B, S = src_ids.shape
T = tgt_in.shape[1]
print("source and target words:", [(len(s), len(t)) for s, t, _ in batch])
print("source ids (B, S) =", tuple(src_ids.shape))
print(src_ids)
print("target input ids (B, T) =", tuple(tgt_in.shape))
print(tgt_in)

# %% [markdown]
# The two lengths differ: $S = 12$ (the longest source, 10 words, plus `<bos>` and
# `<eos>`) and $T = 10$ (`<bos>` plus the longest target, 9 words). Sentence by sentence
# the word counts differ too (10 → 9, 7 → 6), and nothing below cares: cross attention
# never needs the two lengths to agree.

# %% [markdown]
# ## The idea: ask questions of another sequence
#
# In self-attention ([Chapter 3](../part1_decoder/03_self_attention.ipynb)) one sequence
# $X$ plays all three roles: $Q = XW_Q$, $K = XW_K$, $V = XW_V$. Cross attention takes the
# two sequences of a translation model:
#
# - $Y$, `(T, D)`: the decoder's current vectors, one per target position;
# - $M$, `(S, D)`: the encoder's final output, one vector per source position. PyTorch
#   and this book call it the {term}`memory`.
#
# The queries come from the decoder, the keys and values from the memory:
#
# $$Q = Y W_Q, \qquad K = M W_K, \qquad V = M W_V, \qquad
#   \operatorname{CrossAttention}(Y, M)
#   = \operatorname{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}}\right) V .$$
#
# $QK^\top$ is now `(T, S)`: row $t$ scores target position $t$'s question against every
# source position. The softmax runs over the source positions, and the output has one row
# per *target* position, `(T, d_v)`: each target position receives a weighted average of
# source information. $W_K$ and $W_V$ belong to the cross-attention layer itself: the
# encoder hands over only $M$, and every layer that reads it makes its own keys and values
# from it.
#
# Vaswani et al. call this "encoder-decoder attention": "the queries come from the
# previous decoder layer, and the memory keys and values come from the output of the
# encoder. This allows every position in the decoder to attend over all positions in the
# input sequence" {cite}`vaswani2017attention` (Section 3.2.3). The shorter name *cross
# attention* has no single origin that we can point to: it spread through later papers
# and code, and code still varies (Hugging Face's BERT decoder calls the sublayer
# `crossattention`; PyTorch's `nn.TransformerDecoderLayer` calls it plainly
# `multihead_attn`). The name says what distinguishes it from *self*-attention: the
# attention crosses from one sequence to another.
#
# To have something to attend to, we need a memory. We take Part II's encoder, a
# non-causal `TransformerStack` (random weights: this chapter is about the plumbing, not
# about what a trained model knows) and, for the decoder side, the target's token
# embeddings plus learned positions, as in Part I.

# %%
set_seed(0)
D, H = 32, 4
d_k = D // H
encoder_config = TransformerConfig(
    vocab_size=len(src_vocab), d_model=D, n_heads=H, n_layers=2, d_ff=64
)
encoder = TransformerStack(encoder_config, causal=False).eval()
tgt_embed = TokenEmbedding(len(tgt_vocab), D)
tgt_pos = LearnedPositionalEmbedding(max_len=32, d_model=D)

with torch.no_grad():
    memory = encoder(src_ids)  # (B, S, D): one vector per source position
    y = tgt_pos(tgt_embed(tgt_in))  # (B, T, D): one vector per target position
print("memory (B, S, D) =", tuple(memory.shape))
print("y      (B, T, D) =", tuple(y.shape))

# %% [markdown]
# ## Cross attention, written out
#
# Here are the few lines, with the shape at every step. They borrow the four projections
# of a `tinyformer` `MultiHeadAttention` (so that we can compare), and for the attention
# itself they call the *same* `scaled_dot_product_attention` that self-attention uses:
# there is no second attention function. The only difference from
# [Chapter 3](../part1_decoder/03_self_attention.ipynb) is the argument that feeds `k_proj`
# and `v_proj`.

# %%
set_seed(1)
cross = MultiHeadAttention(D, H).eval()
src_mask = padding_mask(src_ids, PAD)  # (B, 1, 1, S), True at real source tokens


def split_heads(t):
    """(B, length, D) -> (B, H, length, d_k)."""
    return t.view(t.shape[0], t.shape[1], H, d_k).transpose(1, 2)


with torch.no_grad():
    q = split_heads(cross.q_proj(y))  # (B, H, T, d_k)   questions from the target
    k = split_heads(cross.k_proj(memory))  # (B, H, S, d_k)   keys from the source
    v = split_heads(cross.v_proj(memory))  # (B, H, S, d_k)   values from the source
    heads, weights = scaled_dot_product_attention(q, k, v, src_mask)  # (B, H, T, S)
    out = cross.out_proj(heads.transpose(1, 2).reshape(B, T, D))  # (B, T, D)

for name, t in [("q", q), ("k", k), ("v", v), ("weights", weights), ("heads", heads)]:
    print(f"{name:8}", tuple(t.shape))
print("out     ", tuple(out.shape), "  <- one vector per TARGET position")

# %% [markdown]
# The weights are `(B, H, T, S) = (3, 4, 10, 12)`: ten rows (target positions) by twelve
# columns (source positions), not square. Now the same layer three ways: our lines above,
# the package's `MultiHeadAttention` called with `context=memory` (its weights seen through
# `record_attention`, the helper that records every attention map of a model), and
# PyTorch's `nn.MultiheadAttention(query, key, value)` with the memory as key and value.
# PyTorch takes the padding as a `(B, S)` `key_padding_mask` in the **opposite**
# convention (`True` = blocked); `to_torch_mask` converts ours.

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
    written = cross.out_proj(heads.transpose(1, 2).reshape(B, T, D))
    # the package: the self-attention layer of Chapter 3, given a context
    with record_attention(cross) as maps:
        pkg = cross(y, context=memory, mask=src_mask)
    pkg_weights = maps[""]  # a bare MultiHeadAttention's key is ""
    # PyTorch: key_padding_mask (B, S), True = blocked
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
# The shortest source in the batch has 3 words, so its row of `src_ids` ends in seven
# `<pad>` tokens. The encoder computes vectors for those positions too (Part II), but they
# stand for nothing, and no target position may read them. The mask that hides them is the
# same key-padding mask as in the encoder, built from the **source** ids:
# `padding_mask(src_ids, pad_id)` has shape `(B, 1, 1, S)` and broadcasts to the weights'
# `(B, H, T, S)`: every head and every target position of sentence $b$ ignores the same
# padded source columns.

# %%
print("src_mask", tuple(src_mask.shape), "-> broadcasts to", tuple(weights.shape))
print("sentence 2:", src_vocab.decode(src_ids[2], strip_special=False))
print("mask      :", src_mask[2, 0, 0].int().tolist())
pad_columns = ~src_mask.expand_as(weights)  # (B, H, T, S), True at pads
print("largest weight on a padded source position:", weights[pad_columns].max().item())
print("rows sum to 1:", torch.allclose(weights.sum(-1), torch.ones(B, H, T)))

# %% [markdown]
# Zero weight means zero influence, and we can check that without trusting the weights:
# overwrite the memory at every padded source position with large random numbers and run
# cross attention again. The output is not just close, it is bit-for-bit the same
# (`torch.equal`). Without the mask, the same change moves every output.

# %%
set_seed(3)
is_pad = (src_ids == PAD)[..., None]  # (B, S, 1)
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
# <div class="admonition note">
# <p class="admonition-title">Padding on the target side</p>
# <p>The <em>target</em> rows of the shorter sentences are padded too (rows of
# <code>tgt_in</code> ending in 0). Their queries still attend, to real source positions,
# and produce vectors; nothing reads them, because the decoder's causal self-attention
# only looks back from real positions, and the loss ignores predictions at pad targets.
# So cross attention needs a mask on its <em>keys</em> (the source) only.</p>
# </div>
#
# The loss that skips pad targets is set up in [Chapter 10](10_the_encoder_decoder.ipynb).

# %% [markdown]
# ## No causal mask on cross attention
#
# The decoder's self-attention is causal: while predicting target word $t + 1$ the decoder
# may not look at target words after $t$, because at generation time they do not exist
# yet. The source is different. It is given in full before the first target word is
# written, so no source position is "the future". Every target position may read every
# (real) source position, and it often must: in our head-final language the *first*
# target word often translates a word far into the source (in the pair above, `mur`
# translates `mouse`, source word 5 of 0 to 6), and when the verb has an object, the
# verb that ends the target translates a word from the middle of the source. So cross
# attention's only mask is the padding mask; causality is needed only among target
# positions, and the decoder keeps it in its self-attention sublayer.
#
# Gradients make this visible. We need a decoder block that reads the memory, and the
# course has exactly one block class, `tinyformer.blocks.TransformerBlock`:
# [Chapter 4](../part1_decoder/04_the_decoder_block.ipynb) built it causal (GPT's block),
# [Chapter 6](../part2_encoder/06_bidirectional_attention.ipynb) switched its causal mask
# off (BERT's). Its last option, `cross_attention=True`, adds a third sublayer between
# the two it had: a cross-attention layer `cross_attn` with its own LayerNorm
# `cross_norm`. Same class, same two sublayers, one more:

# %%
set_seed(4)
plain = TransformerBlock(D, H, d_ff=64)  # Chapter 4's block
block = TransformerBlock(D, H, d_ff=64, cross_attention=True).eval()
print("TransformerBlock(D, H, d_ff)                      :",
      [name for name, _ in plain.named_children()])  # fmt: skip
print("TransformerBlock(D, H, d_ff, cross_attention=True):",
      [name for name, _ in block.named_children()])  # fmt: skip
print("cross_attn is a", type(block.cross_attn).__name__, "like self_attn")

# %% [markdown]
# [Chapter 10](10_the_encoder_decoder.ipynb) writes the grown block out. Here we feed it
# the target vectors $y$ and the memory $M$ of one sentence, and measure how strongly each
# output position $t$ depends on each input:
# $\lVert \partial\,\text{out}_t / \partial y_s \rVert$ over target positions $s$, and
# $\lVert \partial\,\text{out}_t / \partial M_s \rVert$ over source positions $s$.
# We use the 7-word sentence of the batch, so the source has real and padded positions.

# %%
b = 1  # the 7-word sentence: 9 real source positions (<bos>, 7 words, <eos>), 3 pads
n_src, n_tgt = int(src_mask[b].sum()), len(batch[b][1]) + 1
y_b, memory_b, mask_b = y[b : b + 1, :n_tgt], memory[b : b + 1], src_mask[b : b + 1]


def dependence(y_in, memory_in):
    """(n_tgt, n_tgt) and (n_tgt, S) matrices of || d out_t / d input_s ||."""
    jac_y, jac_m = torch.autograd.functional.jacobian(
        lambda y_, m_: block(y_, memory=m_, memory_mask=mask_b), (y_in, memory_in)
    )  # (1, n_tgt, D, 1, n_tgt, D) and (1, n_tgt, D, 1, S, D)
    norm = lambda j: j[0, :, :, 0].pow(2).sum(dim=(1, 3)).sqrt()  # noqa: E731
    return norm(jac_y), norm(jac_m)


dep_target, dep_source = dependence(y_b, memory_b)
print("d out / d target   :", tuple(dep_target.shape), "(target x target)")
print("d out / d source   :", tuple(dep_source.shape), "(target x source)")
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

# %% mystnb={"figure": {"caption": "How strongly each output of a decoder block with cross attention depends on each input (random weights). Left: on the target inputs, only on the same or earlier positions (the causal mask). Right: on every real source position, and not at all on the three padded ones.", "name": "fig-ch09-dependence"}, "image": {"alt": "Two heatmaps side by side. Left: a 7 by 7 lower-triangular pattern, target output positions against target input positions, zero above the diagonal. Right: a 7 by 12 matrix, target output positions against source positions, coloured everywhere except the last three columns, the padding, which are zero."}} tags=["hide-input"]
tgt_tokens = tgt_vocab.decode(tgt_in[b, :n_tgt], strip_special=False)
src_tokens = src_vocab.decode(src_ids[b], strip_special=False)
fig, axes = plt.subplots(
    1, 2, figsize=(10, 4.4), gridspec_kw={"width_ratios": [n_tgt, S]}
)
panels = [
    (dep_target, tgt_tokens, "target input position s", "on target inputs:\ncausal"),
    (dep_source, src_tokens, "source position s", "on the memory: every\nreal source"),
]
for ax, (dep, labels, xlabel, title) in zip(axes, panels, strict=True):
    image = ax.imshow(dep, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(labels)), labels=labels, rotation=90)
    ax.set_yticks(range(n_tgt), labels=tgt_tokens)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("output at target position t")
    ax.set_title(f"‖∂ out_t / ∂ input_s‖ {title}", fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
fig.suptitle("One decoder block with cross attention (random weights)")
fig.tight_layout()

# %% [markdown]
# The left panel is the causal mask, measured: target position $t$ depends on target
# inputs $0..t$ and exactly not on later ones. The right panel is full: every target
# position, the first (`<bos>`) included, depends on every real source position, and the
# three padded columns are exactly zero.

# %%
assert (dep_target[future] == 0).all() and (dep_target[~future] > 0).all()
assert (dep_source[:, :n_src] > 0).all() and (dep_source[:, n_src:] == 0).all()

# %% [markdown]
# ## Where cross attention looks, before training
#
# The weights of one cross-attention layer form a `(T, S)` map: row $t$ says which source
# positions target position $t$ reads while predicting the next target word. Since the toy
# language knows the word alignment, we can mark the source words that the next target
# word translates. Row $t$ (its input is `<bos>` for $t = 0$, else `target[t - 1]`)
# predicts `target[t]`, so it produces target word $j = t$; for each link `(j, i)` of that
# word, its source word `source[i]` sits at position `i + 1` of the framed source
# (position 0 is `<bos>`).
#
# <div class="admonition warning">
# <p class="admonition-title">These weights are random, so the map means nothing yet</p>
# <p>Nothing has been trained: the colours are an accident of the initialisation. What
# <em>is</em> meaningful is the shape of the matrix (rectangular) and the blank padded
# columns.</p>
# </div>
#
# [Chapter 11](11_translation.ipynb) trains a translation model and sets its cross
# attention beside the true alignment, drawn there as a separate 0/1 map, so we can see
# whether the trained attention falls on the aligned source words that the red squares
# mark here.

# %%
with torch.no_grad(), record_attention(cross) as maps:
    cross(y, context=memory, mask=src_mask)
w = maps[""]  # (B, H, T, S)
print("recorded cross-attention weights (B, H, T, S) =", tuple(w.shape))

# %% mystnb={"figure": {"caption": "Head 0 of an untrained cross-attention layer for two sentences of the batch; red squares mark the true alignment links. The pattern is random, but the shape is not: the matrix is rectangular, the padded source columns of the short sentence are blank, and source words with no counterpart (\"the\") have no red square.", "name": "fig-ch09-untrained-maps"}, "image": {"alt": "Two attention heatmaps, target input positions (rows) against framed source positions (columns). Left: the 10-word sentence, with red squares on the aligned cells scattered in a reordered pattern. Right: the 3-word sentence, whose columns after its eos and rows after its last target word are padding; the padded columns are white."}} tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(10, 5))
for ax, b in zip(axes, [0, 2], strict=True):
    src_tokens = src_vocab.decode(src_ids[b], strip_special=False)
    tgt_tokens = tgt_vocab.decode(tgt_in[b], strip_special=False)
    plot_attention(w[b, 0], src_tokens, tgt_tokens, ax=ax)
    ax.set_xlabel("source position (key)")
    ax.set_ylabel("target input position (query)")
    for t, i in batch[b][2]:  # row t predicts target[t], which translates source[i]
        ax.add_patch(
            plt.Rectangle((i + 1 - 0.5, t - 0.5), 1, 1, fill=False, ec="red", lw=2)
        )
    ax.set_title(f"sentence {b}: {len(batch[b][0])} source words, head 0", fontsize=10)
fig.suptitle(
    f"Untrained cross-attention weights, T × S = {T} × {S} (red: the alignment)"
)
fig.tight_layout()

# %% [markdown]
# On the right, the 3-word sentence: its source columns 5 to 11 are padding and stay
# white (weight exactly 0) in every row; its target rows 4 to 9 are target padding, whose
# outputs nobody reads. How much weight does the untrained layer put on the aligned source
# words? On average about what a uniform guess over the real source positions would give:

# %%
aligned_weight, uniform_guess = [], []
for b, (_, _, links) in enumerate(batch):
    for t, i in links:
        aligned_weight.append(w[b, :, t, i + 1].mean().item())  # heads averaged
        uniform_guess.append(1 / int(src_mask[b].sum()))
mean_aligned = sum(aligned_weight) / len(aligned_weight)
mean_uniform = sum(uniform_guess) / len(uniform_guess)
print(f"mean weight on an aligned source word: {mean_aligned:.3f}")
print(f"uniform over the real source positions: {mean_uniform:.3f}")
assert abs(mean_aligned - mean_uniform) < 0.05

# %% [markdown]
# ## The whole picture
#
# Cross attention is the bridge between the two halves of the original transformer. The
# diagram below is the model we assemble in [Chapter 10](10_the_encoder_decoder.ipynb),
# drawn with the course's conventions (pre-LN, two blocks per stack, as in our
# experiments):
#
# - **Encoder** (left, Part II): source ids → token embedding + positions → $N$ encoder
#   blocks (self-attention over the whole source, padding masked; feed-forward network)
#   → final LayerNorm → the memory $M$, `(B, S, D)`.
# - **Decoder** (right, Part I plus one sublayer): target ids → token embedding +
#   positions → $N$ decoder blocks, each with three sublayers: causal (masked)
#   self-attention, **cross attention** reading the memory, feed-forward → final
#   LayerNorm → LM head → logits `(B, T, V_tgt)`.
# - **The memory enters every decoder block**, not only the first: each block's cross
#   attention computes its own keys and values from the same final encoder output,
#   $K = M W_K$ and $V = M W_V$ with that block's own $W_K, W_V$.
# - Every sublayer is wrapped the same way: LayerNorm, then the sublayer, then a residual
#   sum $x + \text{sublayer}(\text{LN}(x))$ (the $\oplus$ circles; the grey lines are the
#   residual connections). The 2017 paper placed the LayerNorm *after* the residual sum
#   instead (post-LN, "Add & Norm"); [Chapter 10](10_the_encoder_decoder.ipynb) builds
#   both.
#
# The drawing code is in the cell (unfold it in the book); it is plain matplotlib boxes
# and arrows.

# %% mystnb={"figure": {"caption": "The encoder-decoder transformer as this course builds it (pre-LN, two blocks per stack). The memory M, the encoder's output, runs into the cross attention of every decoder block, where that block computes its own keys and values from it.", "name": "fig-ch09-architecture"}, "image": {"alt": "Architecture diagram. Left column, the encoder: source ids, token embedding plus positions, two encoder blocks each with self-attention and feed-forward sublayers wrapped in LayerNorm and a residual sum, a final LayerNorm, and the memory of shape (B, S, D). Right column, the decoder: target ids, embedding plus positions, two decoder blocks each with masked self-attention, cross-attention and feed-forward sublayers, a final LayerNorm, the LM head and the logits (B, T, V_tgt). A red line carries the memory from the encoder into the cross-attention sublayer of both decoder blocks."}} tags=["hide-input"]
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
        fontsize=9,
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
        fontsize=9,
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
    ax.text(enc_x, 0.0, "source ids  (B, S)", ha="center", va="center", fontsize=10)
    ax.text(
        dec_x,
        0.0,
        "target ids: <bos> + target  (B, T)",
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
            "whole source, pads masked",
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
        ax, enc_x, y_enc, "memory M  (B, S, D)", COLORS["cross"], bold=True
    )

    cross_heights = []
    for layer in range(n_layers):  # decoder blocks, residuals on the right
        start = y_dec
        y_dec, _ = sublayer(
            ax,
            dec_x,
            y_dec,
            "masked self-attention",
            "causal: earlier positions",
            COLORS["self"],
            +1,
        )
        y_dec, middle = sublayer(
            ax,
            dec_x,
            y_dec,
            "cross-attention",
            "Q: decoder;  K, V: from M",
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
        "logits  (B, T, V_tgt)",
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
            "M",
            color=MEMORY_RED,
            fontsize=9,
            va="bottom",
        )
    return max(y_dec + 0.8, y_mem)


fig, ax = plt.subplots(figsize=(9, 11.6))
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
# <div class="admonition note">
# <p class="admonition-title">Folklore check: what attention fixed</p>
# <p>One still reads that attention (or cross attention in particular) was invented to
# cure vanishing gradients, or to stop the decoder from "forgetting" the source. Neither
# is quite what happened.</p>
# <p><strong>Gradients.</strong> What keeps the gradients of a deep transformer healthy
# are the residual connections {cite}`he2016deep`, which give every layer an identity
# path to the loss, and layer normalisation {cite}`ba2016layer`, which keeps each
# sublayer's input at a fixed scale. Part I's decoder-block chapter measured it (the
# link follows the box): through 24 stacked feed-forward layers, the gradient at the
# input of the residual stack never fell below the gradient sent back from the output,
# whatever the scale of the weights, while the plain stack's changed by tens of orders
# of magnitude. In the recurrent networks that came before, gated units such as the LSTM
# {cite}`hochreiter1997long` played that role.</p>
# <p><strong>The bottleneck.</strong> The recurrent encoder-decoders of 2014
# {cite}`sutskever2014sequence,cho2014learning` compressed the whole source sentence into
# <em>one fixed-length vector</em>, the encoder's final state, and the decoder saw nothing
# else. Cho et al. found that the quality of such models fell quickly as sentences grew
# longer {cite}`cho2014properties`. (Not every such model did: Sutskever et al., whose
# deep LSTMs read the source reversed, report that theirs did well on long sentences.)
# Bahdanau, Cho and Bengio {cite}`bahdanau2015neural` let the decoder, at every step,
# take a weighted average of <em>all</em> the encoder's states, with weights computed from
# the decoder's state: the first encoder-decoder attention, and the ancestor of this
# chapter's layer. The source no longer has to fit into one vector; its representation
# grows with its length, <code>(S, D)</code>, and each target word reads the part it
# needs.</p>
# <p><strong>"Forgetting".</strong> For a recurrent decoder, forgetting the source
# <em>is</em> the bottleneck, seen from the decoder's side: its only access to the source
# is one fixed vector (its initial state in Sutskever et al.; an input at every step in
# Cho et al.), which must hold everything about the source that the whole output needs;
# where it is only the initial state, the decoder must also carry it, rewritten at every
# step, through the whole output. A transformer decoder has nothing to carry: every block
# re-reads the whole memory through its own cross attention, at every target position,
# as the dependence figure above showed (every output depends on every real source
# position).</p>
# <p>A side effect of attention is that each target word is a few steps from each source
# word, which does shorten gradient paths; but that was not the problem the authors set
# out to solve, and within a deep transformer the residual stream does that work. In the
# transformer, cross attention is simply the <em>only</em> channel between the two
# stacks: the encoder learns from the translation loss only through the gradients that
# flow back through the decoder's cross attention.</p>
# </div>
#
# The gradient measurement the box cites is in
# [Chapter 4](../part1_decoder/04_the_decoder_block.ipynb), section "Residual
# connections".

# %% [markdown]
# ## What we learned
#
# - Cross attention is self-attention with the keys and values taken from another
#   sequence: queries `(B, H, T, d_k)` from the decoder, keys and values `(B, H, S, d_k)`
#   made by the layer's own $W_K, W_V$ from the encoder's output (the memory $M$), weights
#   `(B, H, T, S)`, output `(B, T, D)`, one vector per target position. The attention
#   matrix is rectangular ($10 \times 12$ in our batch).
# - It needs no new function: `MultiHeadAttention(y, context=memory)` and our written-out
#   lines around `scaled_dot_product_attention` agree with each other and with
#   `nn.MultiheadAttention(y, memory, memory)`.
# - Its mask is the source key-padding mask `padding_mask(src_ids, pad_id)`,
#   `(B, 1, 1, S)`. Padded source positions get weight exactly 0; overwriting them with
#   garbage leaves the output bit-for-bit unchanged.
# - It has no causal mask: the source is known in full before decoding starts. The
#   Jacobian showed it: in a decoder block, output $t$ depends on target inputs $0..t$
#   only, but on every real source position.
# - The course's one block class grows it as a third sublayer:
#   `TransformerBlock(..., cross_attention=True)` adds `cross_attn` and `cross_norm`. In
#   the full model the memory feeds the cross attention of every decoder block.
# - The toy translation is not word for word: "the" has no counterpart, plural nouns take
#   a particle, "near the" fuses; so lengths differ and the alignment is a list of links.
# - Attention entered encoder-decoders to remove the fixed-length bottleneck of recurrent
#   models, not to cure vanishing gradients; residual connections and layer normalisation
#   keep a transformer's gradients healthy.
#
# Next, [Chapter 10](10_the_encoder_decoder.ipynb) writes out the grown decoder block and
# assembles the full encoder-decoder transformer, checked against PyTorch's
# `nn.Transformer`.

# %% [markdown]
# ## Exercises
#
# **1. A causal cross mask?** Suppose someone applies a "causal" mask to cross attention,
# letting target row $t$ read framed source positions $0..t$ only. Count, over 1000
# sentence pairs of the toy language, how many alignment links would then be hidden from
# the row that needs them. (As above, row $t$ predicts `target[t]`, target word $j = t$;
# a link `(j, i)` needs `source[i]`, at framed position `i + 1`.)
#
# <details class="solution"><summary>Solution</summary>
#
# A link `(j, i)` is read by row $t = j$, so it is hidden when `i + 1 > j`.
#
# ```python
# hidden = total = 0
# for source, target, alignment in lang.sample_pairs(1000, seed=1):
#     hidden += sum(i + 1 > j for j, i in alignment)
#     total += len(alignment)
# print(f"{hidden / total:.0%} of the links would be hidden")  # 61%
# ```
#
# 61 % of them: the head-final target reverses most phrases, so the word a target
# position needs is often *later* in the source. Even for a language with the same word
# order the mask would be pointless: the whole source is known before decoding starts, so
# there is nothing to hide.
#
# </details>
#
# **2. Shuffle the memory.** Show that permuting the source positions of the memory (the
# same permutation for the mask) leaves the cross-attention output unchanged. What does
# this say about where the decoder gets the source's word order from?
#
# <details class="solution"><summary>Solution</summary>
#
# Permuting the memory rows permutes the keys and the values *together*, so each score
# still meets its own value, and a weighted sum does not depend on the order of its terms.
#
# ```python
# perm = torch.randperm(S)
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
#
# </details>
#
# **3. Parameters.** How many parameters does one cross-attention layer have, compared
# with a self-attention layer of the same width? What changes if the encoder's width
# $D_\text{enc}$ differs from the decoder's $D$?
#
# <details class="solution"><summary>Solution</summary>
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
#
# </details>
#
# **4. Computing the memory's keys once.** When the decoder generates a translation one
# token at a time, which of cross attention's tensors change from step to step, and which
# could be computed once per sentence?
#
# <details class="solution"><summary>Solution</summary>
#
# The memory does not change while decoding (the encoder runs once), so every decoder
# block's cross-attention keys $K = MW_K$ and values $V = MW_V$, `(B, H, S, d_k)`, are
# the same at every step: they can be computed once and kept, like a KV cache that is
# full from the start. Only the query of the new target position is new,
# `(B, H, 1, d_k)`, and its weights `(B, H, 1, S)`. (Self-attention's cache, by contrast,
# grows by one position per step.) `tinyformer.decode.greedy_decode` keeps it simple and
# recomputes them from the short memory at every step; for long sources the saving
# matters.
#
# </details>
