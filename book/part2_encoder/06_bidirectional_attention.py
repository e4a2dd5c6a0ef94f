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
# # 6. Bidirectional attention and padding
#
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/part2_encoder/06_bidirectional_attention.ipynb">Open in Colab</a> · runs in about 5 s on two CPU cores
#
# Part I built a decoder: a stack of blocks in which position $t$ reads positions
# $0, \dots, t$ and nothing after. That restriction is what made it a language model.
# Part II removes it. Without the causal mask every position reads the whole sentence,
# left *and* right, and the stack becomes an {term}`encoder`, the architecture of BERT
# {cite}`devlin2019bert` and the first half of the original transformer
# {cite}`vaswani2017attention`.
#
# Removing a mask sounds like a one-line change, and in the package it is: the encoder
# is built from the very class that [Chapter 4](../part1_decoder/04_the_decoder_block.ipynb)
# wrote, `tinyformer.blocks.TransformerBlock`, with `causal=False`. But it brings
# back a problem the decoder quietly avoided: **padding**. In a batch of sentences of
# different lengths, a bidirectional token can read the `<pad>` tokens that fill the
# short rows, and then its output depends on how much padding its row happens to carry.
#
# **Learning goals.** After this chapter you can
#
# - say what changes when the causal mask goes: every position sees the whole sentence
#   (shown through gradients), and the left-to-right factorisation of a sentence's
#   probability is gone;
# - show that an encoder block is the decoder block with the same weights and another
#   mask, and check it against PyTorch's `nn.TransformerEncoderLayer`;
# - show the padding bug in a bidirectional block, fix it with a key-padding mask, and
#   explain why we mask *keys* and not *queries*;
# - write the encoder block and the encoder out from Part I's pieces, and check them
#   against `tinyformer`'s `TransformerBlock` and `TransformerStack` and PyTorch's
#   `nn.TransformerEncoderLayer`, whose padding mask has the opposite convention;
# - explain why an encoder without positional encodings cannot see word order, while a
#   decoder can;
# - name the shapes that come out of an encoder, and the position that will summarise a
#   sentence: `<bos>`, in the place of BERT's `[CLS]`, and say what BERT's `[CLS]` was
#   trained with that ours is not.

# %%
import copy
import dataclasses
import warnings

import matplotlib.pyplot as plt
import torch
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.attention import causal_mask, padding_mask, record_attention
from tinyformer.blocks import TransformerBlock
from tinyformer.config import TransformerConfig
from tinyformer.language import DETERMINERS, ToyLanguage
from tinyformer.plot import plot_attention
from tinyformer.stack import TransformerStack
from tinyformer.torch_bridge import load_block_from_torch, to_torch_mask
from tinyformer.train import set_seed
from tinyformer.vocab import Vocab
from torch import nn

set_seed(0)  # seeds Python, NumPy and torch
# PNG figures at twice the pixels (same size on the page): the same in the book, on
# GitHub and in Colab.
set_matplotlib_formats("retina")
torch.set_printoptions(precision=3, sci_mode=False)

lang = ToyLanguage()
vocab = Vocab(lang.words)

# %% [markdown]
# ## Dropping the causal mask
#
# In [Chapter 3](../part1_decoder/03_self_attention.ipynb) the {term}`causal mask` was
# a `(T, T)` boolean matrix, `True` on and below the diagonal (`True` = may attend). The bidirectional "mask" is simply all `True`: every
# query may read every key. In code we pass no mask at all, which means the same thing.

# %%
T = 6
print("causal (decoder):")
print(causal_mask(T).int())
print("bidirectional (encoder):")
print(torch.ones(T, T, dtype=torch.bool).int())

# %% [markdown]
# An encoder block is a decoder block with that one difference, and in `tinyformer` it
# is literally the same class: `TransformerBlock(..., causal=True)` is Part I's decoder
# block, `TransformerBlock(..., causal=False)` is the encoder block. The two have the same
# sublayers with the same names (`self_attn`, `attn_norm`, `ff`, `ff_norm`), so we can
# load one block's weights into the other and compare them on the same input.

# %%
set_seed(0)
D, H, d_ff = 32, 4, 128
dec_block = TransformerBlock(D, H, d_ff, causal=True).eval()  # Part I's block
enc_block = TransformerBlock(D, H, d_ff, causal=False).eval()  # this part's
enc_block.load_state_dict(dec_block.state_dict())  # the very same weights
print(
    "same parameter names:",
    list(dec_block.state_dict()) == list(enc_block.state_dict()),
)

x = torch.randn(1, T, D)  # (B=1, T, D)
with torch.no_grad():
    out_dec, out_enc = dec_block(x), enc_block(x)  # (1, T, D) each
    # the encoder block, handed the causal mask by the caller, is the decoder block
    out_enc_causal = enc_block(x, mask=causal_mask(T))
print("encoder block == decoder block:          ", torch.equal(out_enc, out_dec))
print("encoder block + causal mask == decoder:  ", torch.equal(out_enc_causal, out_dec))
assert not torch.equal(out_enc, out_dec) and torch.equal(out_enc_causal, out_dec)

# %% [markdown]
# The weights are the same; the outputs differ, and giving the encoder block the causal
# mask by hand makes them equal again, bit for bit. The mask is the *only* difference.
# PyTorch agrees: its `nn.TransformerEncoderLayer`, loaded with the same weights by
# `tinyformer.torch_bridge.load_block_from_torch`, computes the encoder block when given
# no mask and the decoder block when given a causal one (its mask says `True` where a
# query may **not** look, the opposite of ours; more on that trap below).

# %%
theirs = nn.TransformerEncoderLayer(
    D,
    H,
    d_ff,
    dropout=0.0,
    batch_first=True,
    norm_first=True,  # pre-LN, like ours
).eval()
load_block_from_torch(enc_block, theirs)  # their weights into ours...
dec_block.load_state_dict(enc_block.state_dict())  # ...and into the decoder block too
with torch.no_grad():
    torch_causal = to_torch_mask(causal_mask(T))  # (T, T), True = blocked
    gap_enc = (enc_block(x) - theirs(x)).abs().max().item()
    gap_dec = (dec_block(x) - theirs(x, src_mask=torch_causal)).abs().max().item()
print("causal=False == nn.TransformerEncoderLayer, no mask:    ", gap_enc < 1e-5)
print("causal=True  == nn.TransformerEncoderLayer, causal mask:", gap_dec < 1e-5)
assert gap_enc < 1e-5 and gap_dec < 1e-5

# %% [markdown]
# What does the mask change? We ask, through the gradient, which inputs the output at
# **position 0** depends on: $\lVert \partial\, \text{out}_0 / \partial x_s \rVert$ for
# every position $s$.


# %%
def influence_on_position_0(block):
    """|| d out_0 / d x_s || for s = 0 .. T-1: the inputs that reach position 0."""
    x_ = x.clone().requires_grad_()
    block(x_)[0, 0].sum().backward()  # out (1, T, D) -> position 0's D numbers
    return x_.grad[0].norm(dim=-1)  # (T,)


from_decoder = influence_on_position_0(dec_block)
from_encoder = influence_on_position_0(enc_block)
print("input position s        :", list(range(T)))
print("decoder, influence on 0 :", [round(v, 3) for v in from_decoder.tolist()])
print("encoder, influence on 0 :", [round(v, 3) for v in from_encoder.tolist()])

# %%
assert (from_decoder[1:] == 0).all() and from_decoder[0] > 0  # sees only itself
assert (from_encoder > 0).all()  # sees the whole sentence
print(
    "the decoder's position 0 sees itself only; the encoder's sees all", T, "positions"
)

# %% [markdown]
# In the decoder, position 0 (the `<bos>` token of a sentence) can only read itself: the
# gradient from every later position is exactly zero. In the encoder block, with the same
# weights, every position of the sentence reaches position 0. By symmetry, every position
# reaches every other.

# %% [markdown]
# ## What an encoder is for
#
# The decoder's causal mask was not a limitation we tolerated; it was the point. A
# language model factorises the probability of a sentence left to right,
#
# $$P(w_1, \dots, w_n) = \prod_{t=1}^{n+1} P(w_t \mid w_{<t}),$$
#
# with $w_{n+1}$ the `<eos>` token, and position $t$ of the decoder computes the factor
# $P(w_{t+1} \mid w_{\le t})$. That is only honest because position $t$ cannot see
# $w_{t+1}$. In an encoder it can: asked
# to predict the next token, it would simply learn to copy it from the input. So an
# encoder gives us **no left-to-right factorisation**: no exact probability of a
# sentence, and no built-in way to generate one token at a time.
#
# Not *nothing*, though. A masked language model
# ([Chapter 7](07_masked_language_modelling.ipynb)) gives
# $P(w_i \mid \text{all other words})$ for every position, and the sum of those
# log-probabilities, the *pseudo-log-likelihood*, scores sentences well enough to rerank
# speech recognisers' and translators' outputs {cite}`salazar2020masked`; it is not a
# normalised probability, though. And one can generate by starting from `<mask>` tokens
# and repeatedly re-sampling one position given all the others, a Gibbs-like scheme
# {cite}`wang2019bert`, slower and harder to control than a decoder's single left-to-right
# pass.
#
# What it gives instead is, for every position, a vector that describes that token in the
# light of the **whole** sentence. That is what many tasks need:
#
# - filling in a hidden word from both sides (masked language modelling,
#   [Chapter 7](07_masked_language_modelling.ipynb));
# - classifying a sentence, e.g. grammatical or not
#   ([Chapter 8](08_sentence_classification.ipynb));
# - serving as the *memory* that a decoder reads while it translates (Part III).
#
# The toy language shows why both sides matter. Hide the first word of *the dog near the
# cats sleeps*. From the left there is nothing to go on: the first word is a determiner of
# either number. With the whole sentence, *dog* and *sleeps* say it is singular, so *some*
# and *these* are impossible. `ToyLanguage.masked_distribution` gives the exact
# distribution of a hidden word given all the others:

# %%
sentence = "the dog near the cats sleeps".split()
both_sides = lang.masked_distribution(sentence, 0)  # P(w_0 | every other word)
# From the left (nothing), the first word is a determiner of a singular or plural
# subject, each with probability 1/2 (the grammar's first rule), drawn from DETERMINERS.
left_only = {}
for number in ("sg", "pl"):
    for word, p in DETERMINERS[number].items():
        left_only[word] = left_only.get(word, 0.0) + 0.5 * p
print("P(first word | nothing)     :", {w: round(p, 3) for w, p in left_only.items()})
print("P(first word | the rest)    :", {w: round(p, 3) for w, p in both_sides.items()})
assert set(both_sides) == {"the", "a", "this"}  # no plural determiner fits

# %% [markdown]
# ## Padding: the bug
#
# Real batches hold sentences of different lengths. `Vocab.batch` right-pads the short
# ones with `<pad>` (id 0) so that they stack into one `(B, T)` tensor. Here are three
# sentences framed by `<bos>` and `<eos>`:

# %%
sentences = lang.sample(3, seed=1)
ids = vocab.batch(sentences, bos=True, eos=True)  # (B, T) long, right-padded with 0
B, T = ids.shape
is_pad = ids == vocab.pad_id  # (B, T) bool
print("ids", tuple(ids.shape))
print(ids)
for row in ids:
    print(" ".join(vocab.decode(row, strip_special=False)))

# %% [markdown]
# The decoder did not need to care. Under the causal mask a real token only reads earlier
# positions, and in a right-padded row every earlier position is real; the pads come
# after. The loss ignores predictions at pad targets, and the story ends there.
#
# Without the causal mask, a real token reads **every** position of its row, the pads
# included. Let us watch it happen. We build an encoder, a `TransformerStack` with
# `causal=False` (random weights), embed the batch with its token and position
# embeddings, run its first block on it **without** any mask,
# then change what sits in the padding, replacing each `<pad>` by a random word, and run
# it again. A correct block must give the same outputs at the real positions: the real
# tokens have not changed.

# %%
set_seed(0)
config = TransformerConfig(
    vocab_size=len(vocab), d_model=D, n_heads=H, n_layers=2, d_ff=d_ff
)
encoder = TransformerStack(config, causal=False).eval()  # pad_id=0: masks pad keys
block = encoder.blocks[0]  # a TransformerBlock with causal=False
print(encoder)

other_padding = ids.clone()
random_words = torch.randint(len(vocab.special_ids), len(vocab), (int(is_pad.sum()),))
other_padding[is_pad] = random_words  # same real tokens, other content in the pads

with torch.no_grad():
    x = encoder.pos(encoder.tok_emb(ids))  # (B, T, D)
    x_other = encoder.pos(encoder.tok_emb(other_padding))  # (B, T, D)
    out = block(x)  # no mask: every query reads every key
    out_other = block(x_other)

real = ~is_pad
change = (out - out_other)[real].abs().max().item()  # over real positions only
print("padding replaced by:", vocab.decode(random_words, strip_special=False))
print(f"largest change of a real token's output, no mask: {change:.3f}")
assert change > 0.01

# %% [markdown]
# The real tokens' outputs moved, by about a third of a unit on vectors whose entries are
# of order 1. The first sentence, the longest, is unaffected (it has no padding), but the
# other two now depend on junk. The everyday form of the bug is even more insidious: the
# same sentence gets different vectors depending on **which other sentences share its
# batch**, because they decide how much padding it gets. The second sentence alone, with
# no padding at all, disagrees with itself in the batch:

# %%
alone = vocab.batch(sentences[1:2], bos=True, eos=True)  # (1, T_1): no padding
with torch.no_grad():
    out_alone = block(encoder.pos(encoder.tok_emb(alone)))  # (1, T_1, D)
T_1 = alone.shape[1]
gap = (out[1, :T_1] - out_alone[0]).abs().max().item()
print(f"sentence 2 in the batch vs alone, no mask: largest difference {gap:.3f}")
assert gap > 0.01

# %% [markdown]
# ## Padding: the fix
#
# The fix is a **key-padding mask** (a {term}`padding mask` on the keys): no query may
# read a key that is `<pad>`. It depends only on the ids, `ids != pad_id`, shaped
# `(B, 1, 1, T)` so that it broadcasts over the heads and over the queries against the
# `(B, H, T, T)` scores: column $s$ of row $b$ is blocked for every query of every head.
# Written out, and checked against `tinyformer.attention.padding_mask`:

# %%
key_mask = (ids != vocab.pad_id)[:, None, None, :]  # (B, 1, 1, T), True = real token
assert torch.equal(key_mask, padding_mask(ids, vocab.pad_id))
print(
    "padding mask",
    tuple(key_mask.shape),
    "- row of sentence 2:",
    key_mask[1, 0, 0].int(),
)

# %% [markdown]
# With the mask, a pad key gets score $-\infty$ and weight exactly $0$, so its value is
# multiplied by an exact zero. Changing what sits in the padding should then change
# **nothing** at the real positions, not even in the last bit: we check with
# `torch.equal`, not with a tolerance. And the sentence alone should agree with itself
# in the batch (up to rounding: with a different `T` the matrix products add their terms
# in a different order).

# %%
with torch.no_grad():
    out = block(x, mask=key_mask)
    out_other = block(
        x_other, mask=key_mask
    )  # the same mask: it comes from the true ids
    out_alone = block(encoder.pos(encoder.tok_emb(alone)), mask=padding_mask(alone, 0))

print("real outputs bit-for-bit unchanged:", torch.equal(out[real], out_other[real]))
gap = (out[1, :T_1] - out_alone[0]).abs().max().item()
print("sentence 2 in the batch vs alone, up to rounding (< 1e-5):", gap < 1e-5)
assert torch.equal(out[real], out_other[real]) and gap < 1e-5

# %% [markdown]
# The same holds for the whole encoder stack, which builds this mask itself from
# `ids == config.pad_id` and hands it to every block. Through two blocks the pad
# positions' *own* outputs do change with the junk, but at the next block they are keys
# again, and masked again, so nothing leaks. (A config with `pad_id=None` builds no mask:
# the buggy version, kept for demonstrations like this one.)

# %%
no_mask_config = dataclasses.replace(config, pad_id=None)  # no padding mask
no_mask_encoder = TransformerStack(no_mask_config, causal=False).eval()
no_mask_encoder.load_state_dict(encoder.state_dict())
with torch.no_grad():
    h = encoder(ids)  # (B, T, D), masked
    # Feed the junk through the embeddings but keep the mask of the true ids: embeddings
    # and blocks are called by hand, as TransformerStack.forward calls them.
    h_other = x_other
    for blk in encoder.blocks:
        h_other = blk(h_other, mask=key_mask)
    h_other = encoder.norm_f(h_other)
    h_bug = no_mask_encoder(ids)
    h_bug_other = no_mask_encoder(other_padding)
print(
    "encoder with the mask, real outputs unchanged:",
    torch.equal(h[real], h_other[real]),
)
bug = (h_bug - h_bug_other)[real].abs().max().item()
print(f"encoder with pad_id=None, largest change of a real output: {bug:.3f}")
assert torch.equal(h[real], h_other[real]) and bug > 0.01

# %% [markdown]
# ### Why mask keys, not queries?
#
# The padding mask blocks **columns** of the attention matrix (keys), not **rows**
# (queries). The rows of pad positions are computed as usual: a pad query reads the real
# tokens of its sentence and produces some vector. That vector is meaningless, and that
# is fine, because nothing downstream reads it:
#
# - inside the encoder, a pad position only influences others as a *key*, and keys are
#   masked in every block;
# - the losses ignore it: the masked-LM labels are $-100$ there
#   ([Chapter 7](07_masked_language_modelling.ipynb)), the LM loss
#   skips pad targets;
# - pooling ignores it: the `<bos>` summary is position 0, always real, and mean pooling
#   averages over real positions only ([Chapter 8](08_sentence_classification.ipynb)).
#
# Masking the queries instead does not fix anything. A mask of shape `(B, 1, T, 1)` blocks
# the *rows* of pad positions, but a real query still reads every key, pads included:

# %%
query_mask = (ids != vocab.pad_id)[:, None, :, None]  # (B, 1, T, 1): blocks pad ROWS
with torch.no_grad(), record_attention(block.self_attn) as maps:
    out_q = block.self_attn(block.attn_norm(x), mask=query_mask)  # (B, T, D)
    weights_q = maps[""]  # (B, H, T, T): the weights it just used
    out_q_other = block.self_attn(block.attn_norm(x_other), mask=query_mask)
leak = (out_q - out_q_other)[real].abs().max().item()
print(f"query mask: largest change of a real token's attention output {leak:.3f}")
print(
    "   ... and the pad rows read nothing at all: weights of a pad row sum to", end=" "
)
print(weights_q[1, 0, -1].sum().item())
assert leak > 0.01

# %% [markdown]
# It also creates rows whose keys are *all* blocked. A plain softmax over a row of
# $-\infty$ is $0/0$, NaN; `tinyformer`'s attention defines such a row as all zeros (as
# above), but one NaN in a pad row of an unguarded implementation spreads to the loss
# through $0 \times \text{NaN} = \text{NaN}$. Masking keys only never produces such a
# row, because every sentence has at least one real token (`<bos>`).
#
# ### The three masks side by side
#
# The figure puts the three patterns next to each other, as `(T_q, T_k)` pictures for one
# sentence: the decoder's causal mask, the encoder's bidirectional attention on a full row,
# and the encoder on the padded second sentence, where the key-padding mask, broadcast
# over the queries, blocks the pad **columns** and leaves the pad rows alone.

# %% mystnb={"figure": {"caption": "The three attention patterns of this chapter (black: may attend). The decoder's causal mask is a triangle; the encoder lets every query read every key; with padding, the key-padding mask blocks the pad columns for every query and leaves the pad rows alone.", "name": "fig-ch06-three-masks"}, "image": {"alt": "Three black-and-white grids of queries against keys: a lower triangle for the causal mask, a fully black square for bidirectional attention, and a square whose last five columns are white for the key-padding mask on the padded sentence."}} tags=["hide-input"]
causal = causal_mask(T)
full = torch.ones(T, T, dtype=torch.bool)
padded = key_mask[1, 0].expand(T, T)  # (1, T) key mask broadcast over the T queries
labels_full = vocab.decode(ids[0], strip_special=False)
labels_pad = vocab.decode(ids[1], strip_special=False)

fig, axes = plt.subplots(1, 3, figsize=(10, 4.2))
panels = [
    (causal, labels_full, "decoder: causal mask"),
    (full, labels_full, "encoder: bidirectional (no mask)"),
    (padded, labels_pad, "encoder: key-padding mask (sentence 2)"),
]
for ax, (m, labels, title) in zip(axes, panels, strict=True):
    ax.imshow(m.int(), cmap="Greys", vmin=0, vmax=1)
    ax.set_xticks(range(T), labels=labels, rotation=90, fontsize=9)
    ax.set_yticks(range(T), labels=labels, fontsize=9)
    ax.set_xlabel("key (attended to)", fontsize=10)
    ax.set_title(title.replace(": ", ":\n"), fontsize=10)
axes[0].set_ylabel("query (attending)", fontsize=10)
fig.tight_layout()

# %% [markdown]
# ## The encoder block and the encoder, written out
#
# Everything in an {term}`encoder block` comes from Part I: multi-head self-attention
# ([Chapter 3](../part1_decoder/03_self_attention.ipynb)), the feed-forward network,
# residual connections and layer normalisation
# ([Chapter 4](../part1_decoder/04_the_decoder_block.ipynb)). Pre-LN is the default here
# as in the decoder; the 2017 paper and BERT used
# post-LN. The only new ingredient is the mask we pass, a padding mask instead of a
# causal one. Here is the block, borrowing the sublayers of a `tinyformer` block so that
# we can compare, and the whole encoder around it:
#
# ```
# ids                          (B, T)
# tok_emb + pos (+ dropout)    (B, T, D)
# mask = padding_mask(ids)     (B, 1, 1, T)
# n_layers x encoder_block     (B, T, D)
# norm_f (pre-LN only)         (B, T, D)   = h, one vector per token
# ```


# %%
def encoder_block(x, block, mask=None):
    """x (B, T, D) -> (B, T, D): attention over the whole row, then feed-forward."""
    if block.norm_first:  # pre-LN: x + f(LN(x))
        x = x + block.self_attn(block.attn_norm(x), mask=mask)
        x = x + block.ff(block.ff_norm(x))
    else:  # post-LN, the 2017 paper's and BERT's: LN(x + f(x))
        x = block.attn_norm(x + block.self_attn(x, mask=mask))
        x = block.ff_norm(x + block.ff(x))
    return x


def encode(encoder, ids):
    """ids (B, T) long -> h (B, T, D), one contextual vector per token."""
    mask = padding_mask(ids, encoder.config.pad_id)  # (B, 1, 1, T), True at real tokens
    x = encoder.drop(encoder.pos(encoder.tok_emb(ids)))  # (B, T, D); dropout p = 0 here
    for block in encoder.blocks:
        x = encoder_block(x, block, mask)
    return encoder.norm_f(x)  # final LayerNorm under pre-LN, identity under post-LN


with torch.no_grad():
    print(
        "encoder_block == TransformerBlock(causal=False):",
        torch.equal(encoder_block(x, block, key_mask), out),
    )
    print(
        "encode        == TransformerStack(causal=False):",
        torch.equal(encode(encoder, ids), encoder(ids)),
    )
    post_config = dataclasses.replace(config, norm_first=False)
    post_ln = TransformerStack(post_config, causal=False).eval()
    print(
        "post-LN too                                    :",
        torch.equal(encode(post_ln, ids), post_ln(ids)),
    )
    assert torch.equal(encode(encoder, ids), encoder(ids))
    assert torch.equal(encode(post_ln, ids), post_ln(ids))

# %% [markdown]
# ### Checked against PyTorch
#
# PyTorch's `nn.TransformerEncoderLayer` is the same block, and
# `tinyformer.torch_bridge.load_block_from_torch` copies its weights into ours. Its
# padding mask is the `src_key_padding_mask` argument, a `(B, T)` boolean tensor, and here
# is the trap once more:
#
# <div class="admonition warning">
# <p class="admonition-title">PyTorch's padding mask is the inverse of ours</p>
# <p>In <code>nn.TransformerEncoderLayer</code>, <code>src_key_padding_mask</code> is
# <code>True</code> at the pads: <code>True</code> = NOT allowed to attend. That is the
# inverse of <code>tinyformer</code>'s <code>padding_mask</code>, which is
# <code>True</code> at the real tokens. PyTorch's mask is simply
# <code>ids == pad_id</code>; from ours,
# <code>to_torch_mask(padding_mask(ids, pad_id))[:, 0, 0, :]</code>.</p>
# </div>
#
# We compare at the real positions, for post-LN and pre-LN, and then a whole stack with
# `nn.TransformerEncoder`.

# %%
torch_pad_mask = to_torch_mask(key_mask)[:, 0, 0, :]  # (B, T), True = pad = blocked
assert torch.equal(torch_pad_mask, ids == vocab.pad_id)

for norm_first in (False, True):
    set_seed(0)
    theirs = nn.TransformerEncoderLayer(
        D, H, d_ff, dropout=0.0, batch_first=True, norm_first=norm_first
    ).eval()
    ours = TransformerBlock(D, H, d_ff, norm_first=norm_first, causal=False).eval()
    load_block_from_torch(ours, theirs)
    with torch.no_grad():
        gap = (ours(x, mask=key_mask) - theirs(x, src_key_padding_mask=torch_pad_mask))[
            real
        ]
    print(
        f"norm_first={norm_first!s:5}: our block == nn.TransformerEncoderLayer:",
        end=" ",
    )
    print(gap.abs().max().item() < 1e-5)
    assert gap.abs().max().item() < 1e-5

# %% [markdown]
# For the stack, `nn.TransformerEncoder` copies the layer `num_layers` times; we load our
# encoder's blocks into its layers one by one, and our final LayerNorm into its optional
# `norm`. Under pre-LN (our default) the stack then equals our encoder stack after its
# embeddings:

# %%
set_seed(0)
layer = nn.TransformerEncoderLayer(
    D, H, d_ff, dropout=0.0, batch_first=True, norm_first=True
)
torch_encoder = nn.TransformerEncoder(
    layer, num_layers=2, norm=nn.LayerNorm(D), enable_nested_tensor=False
).eval()
ours = copy.deepcopy(
    encoder
)  # a copy: `encoder` keeps its own weights for what follows
for ours_block, their_layer in zip(ours.blocks, torch_encoder.layers, strict=True):
    load_block_from_torch(ours_block, their_layer)
ours.norm_f.load_state_dict(torch_encoder.norm.state_dict())
with torch.no_grad():
    x = ours.pos(ours.tok_emb(ids))  # (B, T, D)
    gap = (ours(ids) - torch_encoder(x, src_key_padding_mask=ids == vocab.pad_id))[real]
print(
    "encoder == nn.TransformerEncoder (real positions):", gap.abs().max().item() < 1e-5
)
assert gap.abs().max().item() < 1e-5

# %% [markdown]
# <div class="admonition note">
# <p class="admonition-title">Pad rows are undefined, and PyTorch may say so</p>
# <p>We compared real positions only. With its default
# <code>enable_nested_tensor=True</code>, in evaluation mode and under post-LN,
# <code>nn.TransformerEncoder</code> takes a fast path that packs the real tokens and
# skips the pads altogether, returning <strong>zeros</strong> at pad positions. Our
# encoder returns whatever the pad queries computed. Both are right, because neither
# number means anything; code that reads pad rows is the bug.</p>
# </div>

# %%
set_seed(0)
post_layer = nn.TransformerEncoderLayer(D, H, d_ff, dropout=0.0, batch_first=True)
fast = nn.TransformerEncoder(post_layer, num_layers=2).eval()  # nested tensors enabled
with torch.no_grad(), warnings.catch_warnings():
    warnings.filterwarnings("ignore", message=".*nested tensors is in prototype stage")
    h_fast = fast(x, src_key_padding_mask=ids == vocab.pad_id)  # (B, T, D)
print("PyTorch's fast path: pad rows all zero:", bool((h_fast[is_pad] == 0).all()))
print("our encoder: pad rows all zero:", bool((encoder(ids)[is_pad] == 0).all()))

# %% [markdown]
# ## Without positions an encoder cannot see word order
#
# [Chapter 2](../part1_decoder/02_embeddings_and_positions.ipynb) showed that attention
# without positional information is
# {term}`permutation equivariant <permutation equivariance>`: shuffling the input
# positions only shuffles the outputs, $f(x_\pi) = f(x)_\pi$. The feed-forward network and LayerNorm act on each
# position alone, so a whole stack of encoder blocks inherits the property. An encoder
# without positional encodings is a **bag-of-words** model with extra steps: *the dog
# chases the cat* and *the cat chases the dog* give the same set of vectors.
#
# We run our encoder's blocks on token embeddings alone, skipping `pos`:


# %%
def encode_without_positions(encoder, ids):
    """Like encode, but the token vectors get no positional encoding."""
    x = encoder.tok_emb(ids)  # (B, T, D): only *what* each token is
    for block in encoder.blocks:
        x = block(x, mask=padding_mask(ids, encoder.config.pad_id))
    return encoder.norm_f(x)


a = "the dog chases the cat".split()
b = "the cat chases the dog".split()
swap = torch.tensor(
    [0, 1, 5, 3, 4, 2, 6]
)  # with <bos>/<eos>: b is a with words 2 and 5 swapped
ids_a = torch.tensor([vocab.encode(a, bos=True, eos=True)])  # (1, 7)
ids_b = torch.tensor([vocab.encode(b, bos=True, eos=True)])
assert torch.equal(ids_a[:, swap], ids_b)

with torch.no_grad():
    h_a, h_b = (
        encode_without_positions(encoder, ids_a),
        encode_without_positions(encoder, ids_b),
    )
    print(
        "no positions: f(x_pi) == f(x)_pi:",
        torch.allclose(h_b, h_a[:, swap], atol=1e-5),
    )
    dog_a, dog_b = h_a[0, a.index("dog") + 1], h_b[0, b.index("dog") + 1]
    print("no positions: 'dog' gets the same vector as chaser and as chased:", end=" ")
    print(torch.allclose(dog_a, dog_b, atol=1e-5))
    with_pos = (encoder(ids_b) - encoder(ids_a)[:, swap]).abs().max().item()
    print(f"with positions: largest |f(x_pi) - f(x)_pi| = {with_pos:.3f}")
assert torch.allclose(h_b, h_a[:, swap], atol=1e-5) and with_pos > 0.01

# %% [markdown]
# The decoder is different, and the difference is instructive. Its causal mask is itself
# a source of order: position $t$ averages over exactly $t + 1$ tokens, so the first
# token sees one vector and the last sees all of them. Permuting the input changes *what*
# each position can see, not just *where* it sits. That is why decoder-only language
# models trained without any positional encoding still learn about position
# {cite}`haviv2022transformer`. The two blocks of the first section (one decoder, one
# encoder, with the same weights), no positions, and the same swap:

# %%
with torch.no_grad():
    x_a, x_b = encoder.tok_emb(ids_a), encoder.tok_emb(ids_b)  # no positions
    dec_gap = (dec_block(x_b) - dec_block(x_a)[:, swap]).abs().max().item()
    enc_gap = (enc_block(x_b) - enc_block(x_a)[:, swap]).abs().max().item()
print(
    f"encoder block, no positions: largest |f(x_pi) - f(x)_pi| < 1e-5: {enc_gap < 1e-5}"
)
print(f"decoder block, no positions: largest |f(x_pi) - f(x)_pi| = {dec_gap:.3f}")
assert enc_gap < 1e-5 and dec_gap > 0.01

# %% [markdown]
# For an encoder, then, the positional encoding is the *only* source of word order. Our
# encoder adds learned positions by default (`TransformerConfig(positional="learned")`, as
# BERT does), or [Chapter 2](../part1_decoder/02_embeddings_and_positions.ipynb)'s
# sinusoids with `positional="sinusoidal"`.

# %% [markdown]
# ## What comes out, and the summary position
#
# An encoder maps `(B, T)` ids to `(B, T, D)` vectors: one per token, each computed from
# the whole sentence. Its attention weights, one `(B, H, T, T)` tensor per block, are
# read with `record_attention`, keyed by the attention module's name.

# %%
with torch.no_grad(), record_attention(encoder) as maps:
    h = encoder(ids)  # (B, T, D)
attention = [maps[f"blocks.{i}.self_attn"] for i in range(len(encoder.blocks))]
print("ids      ", tuple(ids.shape), "(B, T)")
print("h        ", tuple(h.shape), "(B, T, D)")
print("maps     ", list(maps), "each", tuple(attention[0].shape), "(B, H, T, T)")

# %% [markdown]
# Many tasks need *one* vector per sentence, not $T$ of them. BERT reserves a special
# token, `[CLS]`, at the first position and reads the sentence's summary from its output
# {cite}`devlin2019bert`. We already have such a token: **`<bos>`** sits at position 0 of
# every sentence. In the decoder it was the least informed position (it saw only
# itself); in the encoder it reads the whole sentence in every layer, and because it is
# always the same token at the same position, a trained model can turn it into a
# dedicated "summary" query. [Chapter 8](08_sentence_classification.ipynb) trains a
# classifier on `h[:, 0]`.
#
# The analogy has a limit worth knowing now. BERT's `[CLS]` vector was *trained* before
# any fine-tuning: it went through a small "pooler" (a linear layer and a tanh) into a
# second pre-training task, next-sentence prediction (are these two segments
# consecutive in the corpus?) {cite}`devlin2019bert`. Under masked language modelling
# alone, which is all [Chapter 7](07_masked_language_modelling.ipynb) does, `<bos>` is
# never masked and never predicted: no loss is computed at its position, so its output
# vector is shaped only as a by-product, as a key and value that other positions read.
# It becomes a summary only when a task trains it to be one.
#
# Here is what one head of our **untrained** encoder does with the padded second sentence.

# %% mystnb={"figure": {"caption": "Attention of an untrained encoder on a padded sentence: the pad columns are empty, the pad rows are ordinary distributions over the real tokens, and there is no causal triangle. The colour scale runs from 0 to the largest weight in the map (not to 1), since these weights are all small.", "name": "fig-ch06-random-attention"}, "image": {"alt": "A heatmap of attention weights, queries in rows and keys in columns, for the tokens of the second sentence followed by five pad tokens; the pad columns are white and every row spreads its weight over the real tokens."}} tags=["hide-input"]
b, layer_i, head = 1, 0, 0
labels = vocab.decode(ids[b], strip_special=False)
weights = attention[layer_i][b, head]  # (T, T)
ax = plot_attention(
    weights,
    labels,
    labels,
    title=f"layer {layer_i}, head {head}: random weights, padded sentence",
)
# plot_attention's colour scale runs from 0 to 1; these weights are far smaller, so we
# scale the colours to the largest weight instead (the colour bar follows)
ax.images[0].set_clim(0, weights.max().item())

# %% [markdown]
# <div class="admonition note">
# <p class="admonition-title">The weights are random, so the pattern means nothing yet</p>
# <p>Which word looks at which is an accident of the initialisation. What the picture
# does show is the structure: there is no triangle any more, the
# <code>&lt;bos&gt;</code> row (the summary position) spreads over the whole sentence,
# the <code>&lt;pad&gt;</code> columns are empty, and the <code>&lt;pad&gt;</code> rows
# are ordinary distributions over the real tokens, computed and then ignored.</p>
# </div>
#
# [Chapter 7](07_masked_language_modelling.ipynb) draws such maps for a trained encoder.

# %%
w = attention[layer_i][b]  # (H, T, T) for sentence 2
pad_cols = is_pad[b]
print("largest weight on a pad key, all heads:", w[:, :, pad_cols].max().item())
print(
    "<bos> reads every real token in every head:", bool((w[:, 0, ~pad_cols] > 0).all())
)
print(
    "every row, pad rows included, sums to 1:",
    torch.allclose(w.sum(-1), torch.ones(H, T)),
)
assert (w[:, :, pad_cols] == 0).all() and (w[:, 0, ~pad_cols] > 0).all()

# %% [markdown]
# ## What we learned
#
# - An encoder block is a decoder block without the causal mask: in `tinyformer` the same
#   class, `TransformerBlock(causal=False)`. With the same weights, the two differ only by
#   the mask (hand the encoder block the causal mask and it *is* the decoder block), and
#   both equal `nn.TransformerEncoderLayer` with and without a causal mask. The decoder's
#   position 0 depends on itself only, the encoder's on every position.
# - Without a causal mask there is no left-to-right factorisation: no exact sentence
#   probability and no one-pass generation (pseudo-log-likelihood scores and Gibbs-like
#   sampling exist, at a cost). An encoder instead gives every token a vector informed by
#   the whole sentence, for filling in words, classifying, or feeding a decoder.
# - Bidirectional attention reads padding. Without a mask, replacing the pads by other
#   words changed real tokens' outputs (by up to about 0.35 here), and a sentence's vectors
#   depended on its batch. The key-padding mask `padding_mask(ids, pad_id)`, `(B, 1, 1, T)`
#   and `True` at real tokens, fixes it exactly: real outputs stay bit-for-bit equal.
# - We mask keys, not queries: pad rows are computed but never read (masked as keys in
#   every block, ignored by losses and pooling); a query mask leaves the leak open.
# - Our written-out encoder block and encoder equal `TransformerBlock(causal=False)` and
#   `TransformerStack(config, causal=False)`, and PyTorch's `nn.TransformerEncoderLayer` /
#   `nn.TransformerEncoder`, whose `src_key_padding_mask` is `True` at the **pads**, the
#   inverse of ours.
# - Without positions an encoder is permutation equivariant, a bag of words; a decoder is
#   not, because its causal mask already encodes order.
# - An encoder returns `(B, T, D)`; the `<bos>` token at position 0 will serve as the
#   sentence summary in the place of BERT's `[CLS]`, though unlike `[CLS]` it gets no
#   training signal of its own before fine-tuning (BERT's came from next-sentence
#   prediction).
#
# [Chapter 7](07_masked_language_modelling.ipynb) gives the encoder something to learn: masked language modelling, measured
# against the best possible prediction of a hidden word.

# %% [markdown]
# ## Exercises
#
# **1. Left padding.** Our batches are right-padded, and Part I's `DecoderLM` uses no
# padding mask. Why is that safe? What would break if the batch were **left**-padded
# (pads first, then the sentence)?
#
# <details class="solution"><summary>Solution</summary>
#
# Under the causal mask, a real token at position $t$ reads positions $0..t$, which in a
# right-padded row are all real; pads come later and only read real tokens and each other,
# and the loss ignores their predictions. With left padding, every real token would read
# the pads in front of it, the bug of this chapter. It would also shift the positions:
# `<bos>` would sit at position 3 in one row and 0 in another, so the learned positional
# embeddings would see the same word at different positions depending on the batch. A
# left-padded decoder needs both a key-padding mask (combined with the causal one) and
# position ids that start at the first real token.
#
# </details>
#
# **2. Mean pooling and padding.** A simple sentence vector is the average of $h$ over
# the positions. Show that averaging over all $T$ positions makes the vector of sentence 2
# depend on the padding, and that averaging over real positions only does not. Compare
# with `tinyformer.encoder.SequenceClassifier`'s `pool`.
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# from tinyformer.encoder import SequenceClassifier
#
# with torch.no_grad():
#     h = encoder(ids)                                       # (B, T, D)
#     h_alone = encoder(alone)                               # (1, T_1, D)
# naive = h[1].mean(0)                                       # includes T - T_1 pad rows
# real_mean = h[1][real[1]].mean(0)                          # real rows only
# print((naive - h_alone[0].mean(0)).abs().max())            # clearly > 0
# print((real_mean - h_alone[0].mean(0)).abs().max())        # ~1e-7
# pool = SequenceClassifier(encoder, n_classes=2, pooling="mean").pool
# print(torch.allclose(pool(h, ids)[1], real_mean, atol=1e-6))  # True
# ```
#
# The pad rows are the meaningless vectors of this chapter; averaging them in is the
# padding bug again, one level up.
#
# </details>
#
# **3. A bag of words.** Show that *mean-pooled* outputs of an encoder **without**
# positions are permutation **invariant**: $g(x_\pi) = g(x)$. What can such a sentence
# classifier never learn in the toy language?
#
# <details class="solution"><summary>Solution</summary>
#
# Equivariance says the outputs are permuted; averaging over positions forgets the order
# of a set, so the average is unchanged.
#
# ```python
# with torch.no_grad():
#     g_a = encode_without_positions(encoder, ids_a).mean(1)
#     g_b = encode_without_positions(encoder, ids_b).mean(1)
# print(torch.allclose(g_a, g_b, atol=1e-5))  # True
# ```
#
# It can never tell apart two sentences with the same words in a different order, and
# grammaticality can hinge on order: *the dog sees the cats* is grammatical, *the cats
# sees the dog* is not (*cats* is now the subject), yet both are the same bag of words.
# Agreement is about *which* noun is the subject, and that is a matter of order.
#
# </details>
#
# **4. Wasted work.** In the batch above, what fraction of the $B \times T \times T$
# attention scores involves a pad key or a pad query? Why do real systems sort sentences
# by length before batching, or pack them?
#
# <details class="solution"><summary>Solution</summary>
#
# The useful scores are those between two real tokens of the same row, $\sum_b n_b^2$ for
# real lengths $n_b$:
#
# ```python
# lengths = real.sum(1)                                  # (B,)
# useful = (lengths**2).sum().item()
# print(1 - useful / (B * T * T))                        # about 0.32 here
# ```
#
# Attention costs $O(T^2)$ per row whatever the padding, so one long sentence makes every
# row of its batch pay for its length. Sorting (bucketing) sentences of similar length into
# the same batch reduces the padding; packing, as PyTorch's nested-tensor fast path does,
# skips the pads altogether.
#
# </details>
