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
# # 2. Embeddings and positions
#
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/part1_decoder/02_embeddings_and_positions.ipynb">Open in Colab</a> · runs in about 5 s on two CPU cores
#
# A transformer computes with vectors, but our sentences are lists of token ids. This
# chapter builds the first layer of the model, the one that turns ids into vectors, and
# shows why that layer must also say *where* each token stands.
#
# **Learning goals.** After this chapter you can
#
# - explain a {term}`token embedding` as a table lookup, and as a {term}`one-hot vector` times
#   a matrix;
# - show that attention without positional information cannot tell word order apart
#   (it is {term}`permutation equivariant <permutation equivariance>`);
# - write the sinusoidal {term}`positional encoding` of Vaswani et al. {cite}`vaswani2017attention`
#   and show its key property: a shift by $k$ positions is a rotation;
# - compare it with a {term}`learned table of positions <learned positional embedding>`, as in
#   GPT-2 and BERT;
# - say why positions are *added* to token vectors rather than concatenated;
# - separate what the 2017 paper claimed about longer sequences from what it showed.

# %%
import math
import textwrap

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.attention import MultiHeadAttention, causal_mask, record_attention
from tinyformer.language import ToyLanguage
from tinyformer.layers import (
    LearnedPositionalEmbedding,
    SinusoidalPositionalEncoding,
    TokenEmbedding,
)
from tinyformer.train import set_seed
from tinyformer.vocab import Vocab
from torch import nn

# PNG figures at twice the pixels (same size on the page): the same in the book, on
# GitHub and in Colab.
set_matplotlib_formats("retina")
set_seed(0)

lang = ToyLanguage()
vocab = Vocab(lang.words)
V = len(vocab)  # vocabulary size: 5 special tokens + 42 words
D = 64  # d_model, the width of every vector in the model
print(f"V = {V} tokens, D = {D}")

# %% [markdown]
# ## Token embeddings: a row per token
#
# An *embedding* gives every token of the vocabulary its own vector of $D$ numbers. All
# $V$ of them are stored as the rows of one matrix $W \in \mathbb{R}^{V \times D}$, and
# token id $t$ is turned into row $t$:
#
# $$\mathrm{embed}(t) = W[t] = \mathrm{onehot}(t)\, W,$$
#
# where $\mathrm{onehot}(t) \in \{0, 1\}^V$ is all zeros except a 1 at place $t$. The
# two forms are the same thing: multiplying by a one-hot vector picks out one row. The
# second form says that an embedding is a linear layer without bias, fed one-hot inputs;
# the first is how it is computed, because indexing skips $V - 1$ multiplications by zero.
#
# The rows of $W$ are parameters. They start random and training moves them, so that
# tokens that behave alike end up with similar vectors.
#
# Let us write both forms out for one sentence, of $T = 5$ tokens.

# %%
sentence = "the dog chases the cat".split()
ids = torch.tensor(vocab.encode(sentence))  # (T,)
W = torch.randn(V, D) / math.sqrt(D)  # (V, D): the embedding table

one_hot = F.one_hot(ids, num_classes=V).float()  # (T, V)
by_matmul = one_hot @ W  # (T, V) @ (V, D) -> (T, D)
by_index = W[ids]  # (T, D): row ids[t] for each t

print("ids      ", ids.tolist())
print(
    "one_hot  ",
    tuple(one_hot.shape),
    " row 1 has its 1 at place",
    int(one_hot[1].argmax()),
)
print("embedded ", tuple(by_index.shape))
assert torch.allclose(by_matmul, by_index, rtol=0, atol=1e-7)
print("one-hot @ W equals W[ids]")

# %% [markdown]
# The same word gets the same vector wherever it stands: *the* at positions 0 and 3 has
# one row of $W$, so rows 0 and 3 of the output are equal. Keep that in mind; it is the
# problem of the second half of this chapter.

# %%
print("rows 0 and 3 (both 'the') equal:", torch.equal(by_index[0], by_index[3]))

# %% [markdown]
# ### The package version, and PyTorch's
#
# `tinyformer.layers.TokenEmbedding` holds the table as `.weight` (shape $(V, D)$) and
# does the lookup on a batch of ids, $(B, T) \to (B, T, D)$. It has one twist, taken from
# the paper (section 3.4): it multiplies the looked-up rows by $\sqrt{D}$. The table is
# initialised with entries of variance $1/D$, so after the multiplication each entry has
# variance about 1, the same size as the positional signals we add later in this chapter.
# `scale=False` turns the multiplication off, and then the module is exactly
# PyTorch's `nn.Embedding`.
#
# The same table often serves a second time, as the output layer that turns the model's
# last vectors into one score per token (*tied weights* {cite}`press2017using`,
# [Chapter 4](04_the_decoder_block.ipynb)). There the scale has a side effect that the
# module's docstring spells out: a freshly initialised tied model does *not* start from
# the uniform guess's loss of $\ln V$, but well above it, because each position's vector
# still carries its own input token's embedding;
# [Chapter 4](04_the_decoder_block.ipynb) measures by how much.

# %%
emb = TokenEmbedding(V, D)  # scale=True by default
emb_plain = TokenEmbedding(V, D, scale=False)
with torch.no_grad():
    emb.weight.copy_(W)
    emb_plain.weight.copy_(W)
torch_emb = nn.Embedding.from_pretrained(W)  # PyTorch's built-in, same table

ids_b = ids.unsqueeze(0)  # (B=1, T)
assert torch.equal(emb_plain(ids_b)[0], W[ids])
assert torch.equal(torch_emb(ids_b), emb_plain(ids_b))
assert torch.allclose(emb(ids_b)[0], W[ids] * math.sqrt(D))
print("TokenEmbedding(scale=False) == nn.Embedding == W[ids]")
print(
    f"TokenEmbedding(scale=True)  == W[ids] * sqrt(D), and sqrt(D) = {math.sqrt(D):.0f}"
)
print(
    f"entry std: table {W.std().item():.3f},",
    f"after scaling {emb(ids_b).std().item():.3f}",
)

# %% [markdown]
# Now a whole batch. `Vocab.batch` turns $B$ sentences into a padded $(B, T)$ tensor of
# ids (here with `<bos>` in front, as a language model reads them), and the embedding
# turns it into a $(B, T, D)$ tensor: one $D$-vector per token.

# %%
emb = TokenEmbedding(V, D)  # a fresh, randomly initialised embedding for the rest
sentences = lang.sample(4, seed=0)
batch = vocab.batch(sentences, bos=True)  # (B, T)
x = emb(batch)  # (B, T, D)
for s in sentences:
    print(" ".join(s))
print("ids", tuple(batch.shape), "-> vectors", tuple(x.shape))
print(f"parameters in the table: V * D = {V} * {D} = {emb.weight.numel()}")

# %% [markdown]
# <div class="admonition note">
# <p class="admonition-title">Padding has a vector too</p>
# <p>Padding (<code>&lt;pad&gt;</code>, id 0) also gets a vector: the embedding does not
# know it is special. Attention is told to ignore padded positions with a
# {term}`padding mask` (<code>tinyformer.attention.padding_mask</code>), and the loss
# skips them.</p>
# </div>
#
# One more property of the lookup: the gradient of the loss with respect to $W$ is zero
# in every row whose token did not occur in the batch. A plain gradient step only moves the
# rows of the tokens it saw (AdamW's momentum and weight decay also nudge the others
# {cite}`loshchilov2019decoupled`).

# %%
emb.weight.grad = None
emb(batch).sum().backward()
touched = emb.weight.grad.abs().sum(dim=1) > 0  # (V,)
present = torch.zeros(V, dtype=torch.bool)
present[batch.unique()] = True
assert torch.equal(touched, present)
print(
    f"rows with a gradient: {int(touched.sum())} of {V},",
    "exactly the tokens in the batch",
)

# %% [markdown]
# ## Why positions are needed
#
# The next chapter, [Chapter 3](03_self_attention.ipynb), builds {term}`self-attention`,
# the heart of the transformer. For now one
# sentence of intuition is enough: each position's output is a weighted average of
# (projections of) all positions' vectors, with weights computed from how well their
# contents match. Nothing in that recipe refers to *where* a vector stands.
#
# We can test that without opening the box. Take `tinyformer.attention.MultiHeadAttention`
# with random weights and no mask, and feed it a sequence $x$ of shape $(B, T, D)$ and the
# same sequence with its positions shuffled by a permutation $\pi$. If attention ignores
# order, shuffling the input just shuffles the output:
#
# $$f(x_{\pi}) = f(x)_{\pi}.$$
#
# This is called *permutation equivariance*. Note that it is not *invariance*, which would
# be $f(x_{\pi}) = f(x)$: the outputs do change, they move along with their inputs.

# %%
set_seed(0)
attn = MultiHeadAttention(D, n_heads=4).eval()  # random weights, no mask

with torch.no_grad():
    x = emb(batch)  # (B, T, D) token vectors only, no positions
    perm = torch.randperm(x.shape[1])  # a random order of the T positions
    out = attn(x)  # (B, T, D)
    out_of_shuffled = attn(x[:, perm])  # f(x_pi)

print("permutation of the positions:", perm.tolist())
gap = (out_of_shuffled - out[:, perm]).abs().max().item()
print("f(x_pi) equals f(x)_pi up to rounding (max |difference| < 1e-5):", gap < 1e-5)
assert torch.allclose(out_of_shuffled, out[:, perm], atol=1e-5)

# %% [markdown]
# The difference is rounding error. Now the linguistic consequence. *the cat chases the
# dog* is *the dog chases the cat* with the words at positions 1 and 4 swapped, so
# attention returns the same set of vectors for both, only in another order. The vector
# it computes for *dog* is the same whether the dog chases or is chased.

# %%
a = "the dog chases the cat".split()
b = "the cat chases the dog".split()
swap = torch.tensor([0, 4, 2, 3, 1])  # b is a with positions 1 and 4 swapped
assert [a[i] for i in swap] == b

with torch.no_grad():
    out_a = attn(emb(torch.tensor([vocab.encode(a)])))  # (1, 5, D)
    out_b = attn(emb(torch.tensor([vocab.encode(b)])))  # (1, 5, D)

for word in ("dog", "cat", "chases"):
    va, vb = out_a[0, a.index(word)], out_b[0, b.index(word)]
    print(
        f"{word:7} same vector in both sentences (max |difference| < 1e-5):",
        (va - vb).abs().max().item() < 1e-5,
    )
assert torch.allclose(out_b, out_a[:, swap], atol=1e-5)

# %% [markdown]
# Who chases whom is lost. The fix is to make the *input* vectors depend on position: add
# to the vector at position $p$ a vector $P[p]$ that encodes $p$. Then the same word at two
# places enters attention as two different vectors. With the sinusoidal encoding of the
# next section added, the two sentences are no longer mirror images of each other. We
# measure how much the output vector of each word changes between the two sentences,
# $\lVert v_a - v_b \rVert / \lVert v_a \rVert$:

# %%
pos_enc = SinusoidalPositionalEncoding(D, max_len=32)
with torch.no_grad(), record_attention(attn) as maps:
    out_a = attn(pos_enc(emb(torch.tensor([vocab.encode(a)]))))
    weights_a = maps[""]  # (B, H, T, T): a bare attention layer records under ""
    out_b = attn(pos_enc(emb(torch.tensor([vocab.encode(b)]))))
for word in ("dog", "cat", "chases"):
    va, vb = out_a[0, a.index(word)], out_b[0, b.index(word)]
    change = ((va - vb).norm() / va.norm()).item()
    print(
        f"{word:7} vectors in the two sentences differ by {change:.0%} of their length"
    )
    assert change > 0.03
lo, hi = weights_a.min().item(), weights_a.max().item()
print(f"attention weights (B, H, T, T) all lie between {lo:.2f} and {hi:.2f}")

# %% [markdown]
# The changes are modest because this attention layer is untrained: its random weights
# spread each position's attention over all five words (an even spread would be 0.2 each),
# so every output is a blend of much the same vectors. But the changes are no longer zero,
# and training can make them as large as it needs.
#
# <div class="admonition note">
# <p class="admonition-title">A causal mask is also a source of order</p>
# <p>A decoder masks the future (the {term}`causal mask`), so position $t$ averages over
# the $t + 1$ vectors up to and including itself: the first <em>the</em> sees one token
# and the second sees four, and their outputs differ even without positional vectors
# (the cell below checks it). Causal language models trained with no positional encoding
# at all turn out to be competitive with those that have one, and to learn where their
# tokens are, probably by sensing how many tokens each position can see
# {cite}`haviv2022transformer`. Still, like the 2017 paper, every model in this course
# adds positions explicitly (and the {term}`encoder` of Part II has no causal mask to
# lean on).</p>
# </div>

# %%
with torch.no_grad():
    ids_a = torch.tensor([vocab.encode(a)])
    plain = attn(emb(ids_a))  # no mask
    masked = attn(emb(ids_a), mask=causal_mask(len(a)))  # position t sees 0..t
print(
    "both 'the' vectors equal without a mask:",
    torch.allclose(plain[0, 0], plain[0, 3], atol=1e-6),
)
print(
    "both 'the' vectors equal with a causal mask:",
    torch.allclose(masked[0, 0], masked[0, 3], atol=1e-6),
)

# %% [markdown]
# ## Sinusoidal positional encodings
#
# Vaswani et al. {cite}`vaswani2017attention` (section 3.5) add a fixed, not learned,
# vector to the token vector at position $pos$. Its entries come in pairs, one pair per
# $i = 0, 1, \dots, D/2 - 1$:
#
# $$PE[pos, 2i] = \sin(\omega_i \, pos), \qquad PE[pos, 2i + 1] = \cos(\omega_i \, pos),
# \qquad \omega_i = \frac{1}{10000^{2i / D}}.$$
#
# Each pair is a point going round the unit circle as $pos$ grows, at its own angular
# speed $\omega_i$, so pair $i$ repeats every $2\pi / \omega_i = 2\pi \cdot 10000^{2i/D}$
# positions: its *wavelength*. The first pair ($i = 0$) turns by one radian per position,
# a wavelength of $2\pi \approx 6.3$ positions. The wavelengths grow geometrically, by a
# factor $10000^{2/D}$ from one pair to the next, up to $2\pi \cdot 10000^{(D-2)/D}$ for
# the last pair ($i = D/2 - 1$). The paper describes the range as "from $2\pi$ to
# $10000 \cdot 2\pi$"; that upper end is the limit the last pair approaches as $D$ grows,
# and it falls short of it: for $D = 64$ its wavelength is $2\pi \cdot 10000^{62/64}$,
# about three quarters of $10000 \cdot 2\pi$ (the cell below computes it). Fast pairs
# tell neighbouring positions apart; slow pairs tell far-apart positions apart, like the
# hands of a clock.
#
# Here is the formula written out. We compute it in float64 and keep float32 for the
# model, as the package does.


# %%
def sinusoidal_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """PE of Vaswani et al. (2017), shape (max_len, d_model); d_model even."""
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)  # (max_len, 1)
    i = torch.arange(d_model // 2, dtype=torch.float64)  # (D/2,) pair index
    omega = 1.0 / 10000.0 ** (2 * i / d_model)  # (D/2,) angular speed of pair i
    angle = pos * omega  # (max_len, D/2): broadcasting
    pe = torch.empty(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)  # even dimensions 2i
    pe[:, 1::2] = torch.cos(angle)  # odd dimensions 2i + 1
    return pe.float()


max_len = 32  # this chapter's context: room for every sentence (at most 17 positions)
PE = sinusoidal_encoding(max_len, D)  # (max_len, D)
print("PE", tuple(PE.shape))
print(
    "PE[0] starts", [round(v, 3) for v in PE[0, :6].tolist()], "(sin 0 = 0, cos 0 = 1)"
)
print("PE[1] starts", [round(v, 3) for v in PE[1, :6].tolist()])

wavelength = 2 * math.pi * 10000.0 ** (2 * torch.arange(D // 2) / D)  # (D/2,) per pair
print(
    f"wavelengths: first pair {wavelength[0].item():.2f}, last pair "
    f"{wavelength[-1].item():,.0f} positions = "
    f"{wavelength[-1].item() / (10000 * 2 * math.pi):.2f} x (10000 * 2 pi)"
)

# %% [markdown]
# `tinyformer.layers.SinusoidalPositionalEncoding(d_model, max_len)` precomputes the
# same table as a buffer `pe` of shape (`max_len`, $D$), and its forward pass adds
# the first $T$ rows to a $(B, T, D)$ input. (A buffer is a tensor that belongs to the
# module, moves with it to a GPU, but is not a parameter: the optimiser never touches it.)

# %%
pos_enc = SinusoidalPositionalEncoding(D, max_len)
assert torch.allclose(pos_enc.pe, PE, atol=1e-6)
print(
    "buffer 'pe' equals our table; trainable parameters:",
    sum(p.numel() for p in pos_enc.parameters()),
)

x = emb(batch)  # (B, T, D)
T = x.shape[1]
assert torch.allclose(pos_enc(x), x + PE[:T], atol=1e-6)
print(
    "forward: (B, T, D) =",
    tuple(x.shape),
    "-> x + PE[:T], same shape",
    tuple(pos_enc(x).shape),
)
PE_long = sinusoidal_encoding(64, D)  # (64, D): 64 positions, for the pictures below

# %% [markdown]
# Two pictures of the table. The heatmap has one row per position and one column per
# dimension: the left columns (fast pairs) flicker from row to row, the right columns
# (slow pairs) hardly change over 64 positions, so that every row is a different pattern.

# %% mystnb={"figure": {"caption": "The sinusoidal positional encoding for D = 64 and 64 positions. Columns on the left (fast pairs) change from one position to the next; columns on the right (slow pairs) barely change, so every row is a different pattern.", "name": "fig-ch02-pe-heatmap"}, "image": {"alt": "Heatmap with 64 positions as rows and 64 dimensions as columns, values from -1 (red) to 1 (blue): stripes alternate quickly in the left columns and the right columns are nearly constant down the rows."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 4.5))
image = ax.imshow(PE_long, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
ax.set_xlabel("dimension (pairs 2i, 2i + 1: sin, cos)")
ax.set_ylabel("position")
ax.set_title(f"Sinusoidal positional encoding, D = {D}")
fig.colorbar(image, ax=ax, label="PE[position, dimension]")
plt.show()

# %% [markdown]
# Reading down single columns shows the waves. Each sine dimension $2i$ is a sine of
# wavelength $2\pi \cdot 10000^{2i/D}$; the encoding only ever samples it at whole
# positions (the dots).

# %% mystnb={"figure": {"caption": "Four sine dimensions of the encoding as continuous waves (lines) and the values the encoding actually uses at whole positions (dots). The wavelength grows from 6.3 positions for dimension 0 to about 200 positions for dimension 24.", "name": "fig-ch02-waves"}, "image": {"alt": "Line plot over positions 0 to 63 of four sine waves, for dimensions 0, 8, 16 and 24, with dots at whole positions; the legend gives their wavelengths: 6.3, 19.9, 62.8 and 198.7 positions."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(8, 3.5))
grid = torch.linspace(0, 63, 631, dtype=torch.float64)
for dim in (0, 8, 16, 24):
    omega = 1.0 / 10000.0 ** (dim / D)  # dim = 2i
    (line,) = ax.plot(
        grid,
        torch.sin(omega * grid),
        linewidth=1,
        label=f"dim {dim}: wavelength {2 * math.pi / omega:.1f}",
    )
    ax.plot(range(64), PE_long[:, dim], "o", markersize=2.5, color=line.get_color())
ax.set_xlabel("position")
ax.set_ylabel("PE[position, dim]")
ax.set_title("Four sine dimensions: one wave each, sampled at whole positions")
ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
plt.show()

# %% [markdown]
# ### A shift is a rotation
#
# Why sines *and* cosines? Because of the angle-addition formulas. For pair $i$, write
# $\theta = \omega_i \, pos$ and $\phi = \omega_i k$. Then
#
# $$\begin{pmatrix} \sin(\theta + \phi) \\ \cos(\theta + \phi) \end{pmatrix}
# = \begin{pmatrix} \cos\phi & \sin\phi \\ -\sin\phi & \cos\phi \end{pmatrix}
# \begin{pmatrix} \sin\theta \\ \cos\theta \end{pmatrix}.$$
#
# The $2 \times 2$ matrix is a rotation by angle $\phi = \omega_i k$, and it depends on the
# offset $k$ but **not** on $pos$. Stack one such block per pair into a block-diagonal
# $D \times D$ matrix $M_k$ and
#
# $$PE[pos + k] = M_k \, PE[pos] \quad \text{for every } pos.$$
#
# This is what the paper means by "for any fixed offset $k$, $PE_{pos+k}$ can be
# represented as a linear function of $PE_{pos}$". Let us build $M_k$ and check it on
# every position at once.


# %%
def shift_matrix(k: int, d_model: int) -> torch.Tensor:
    """Block-diagonal (D, D) rotation M_k with PE[pos + k] = M_k @ PE[pos]."""
    i = torch.arange(d_model // 2, dtype=torch.float64)
    phi = k / 10000.0 ** (2 * i / d_model)  # (D/2,) rotation angle of each pair
    M = torch.zeros(d_model, d_model, dtype=torch.float64)
    M[0::2, 0::2] = torch.diag(torch.cos(phi))  # new sin <- cos(phi) * sin ...
    M[0::2, 1::2] = torch.diag(torch.sin(phi))  #          + sin(phi) * cos
    M[1::2, 0::2] = torch.diag(-torch.sin(phi))  # new cos <- -sin(phi) * sin ...
    M[1::2, 1::2] = torch.diag(torch.cos(phi))  #           + cos(phi) * cos
    return M.float()


for k in (1, 3, 10):
    M = shift_matrix(k, D)
    predicted = PE[:-k] @ M.T  # row pos: M_k @ PE[pos], for pos = 0 .. max_len - k - 1
    err = (predicted - PE[k:]).abs().max().item()
    orthogonal = torch.allclose(M @ M.T, torch.eye(D), atol=1e-5)
    print(
        f"k = {k:2}: M_k PE[pos] == PE[pos + k] at every pos, to 1e-5: {err < 1e-5};",
        f"M_k orthogonal: {orthogonal}",
    )
    assert err < 1e-5

# %% [markdown]
# One matrix per offset works at every position. Attention is built from linear maps of its
# inputs, so the authors hoped it could use maps like $M_k$ to look "$k$ positions back"
# wherever it stands: they "hypothesized it would allow the model to easily learn to attend
# by relative positions" {cite}`vaswani2017attention`. Note the word: a hypothesis, and a
# reason for the design, not a measured result.
#
# > The same rotation, applied to {term}`queries <query>` and {term}`keys <key>` inside attention instead of added to the
# > input, is the {term}`rotary position embedding` (RoPE) {cite}`su2021roformer` used by many
# > current language models.
#
# ### Similarity depends on distance only
#
# A consequence of the rotation property: the dot product of two encodings depends only
# on how far apart they are,
#
# $$PE[p] \cdot PE[q] = \sum_{i} \big(\sin\omega_i p \sin\omega_i q
# + \cos\omega_i p \cos\omega_i q\big) = \sum_{i=0}^{D/2 - 1} \cos\big(\omega_i (p - q)\big).$$
#
# At distance 0 every cosine is 1 and the sum is $D/2 = 32$; as the distance grows the fast
# pairs fall out of step first and the sum drops. The left panel below is the matrix of all
# dot products (constant along every diagonal); the right panel is the sum of cosines
# against the distance, out to 200 positions.

# %%
S = PE_long @ PE_long.T  # (64, 64) dot products between positions
k = torch.arange(201, dtype=torch.float64)
omega = 1.0 / 10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D)  # (D/2,)
S_of_k = torch.cos(k[:, None] * omega).sum(dim=1)  # (201,) similarity at distance k

# constant along diagonals: S[p, q] depends on p - q only
for offset in (1, 5, 20):
    diag = torch.diagonal(S, offset)
    assert torch.allclose(diag, torch.full_like(diag, S_of_k[offset].item()), atol=1e-4)
distances = (0, 1, 2, 5, 10, 50, 100, 200)
print("distance:  ", " ".join(f"{d:5}" for d in distances))
print("similarity:", " ".join(f"{S_of_k[d].item():5.1f}" for d in distances))

# %% mystnb={"figure": {"caption": "Left: the dot product of the encodings of every two positions, constant along each diagonal because it depends only on the distance. Right: that dot product against the distance, out to 200 positions: a fast fall over the first few positions, then a slow one with ripples.", "name": "fig-ch02-similarity"}, "image": {"alt": "Two panels. Left, a 64 by 64 heatmap of PE[p] dot PE[q], brightest on the diagonal at 32 and fading away from it in bands. Right, a line plot of the dot product against distance from 0 to 200: it drops from 32 to about 21 by distance 10, then wanders down with ripples to about 11 at distance 200."}} tags=["hide-input"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
image = ax1.imshow(S, cmap="viridis")
ax1.set_xlabel("position q")
ax1.set_ylabel("position p")
ax1.set_title("PE[p] · PE[q]")
fig.colorbar(image, ax=ax1, fraction=0.046)
ax2.plot(k, S_of_k)
ax2.axhline(0, color="gray", linewidth=0.5)
ax2.set_xlabel("distance |p - q|")
ax2.set_ylabel("PE[p] · PE[q]")
ax2.set_title("Similarity against distance (D = 64)")
ax2.grid(True, alpha=0.3)
plt.tight_layout()
plt.show()

# %% [markdown]
# The similarity falls fast over the first few positions and then slowly, with ripples
# (it is not monotone: distance 100 scores higher than distance 50). So nearby positions
# look alike and distant ones less so, which is a sensible prior for language. The dot
# product is also symmetric: $PE[p] \cdot PE[p + k] = PE[p] \cdot PE[p - k]$, so on its own
# it cannot say whether a word is to the left or to the right; the model must learn
# direction through its query and key projections.

# %%
assert all(S_of_k[d] < S_of_k[0] for d in range(1, 201))
near, far = S_of_k[1:11].mean().item(), S_of_k[50:201].mean().item()
print(f"mean similarity at distance 1-10: {near:.1f}; at distance 50-200: {far:.1f}")
assert near > far

# %% [markdown]
# ## Learned positional embeddings
#
# The simpler alternative: treat positions like tokens. Keep a second table
# $P \in \mathbb{R}^{L \times D}$ of parameters ($L$ = `max_len`), one row per position, and add
# row $p$ to the token vector at position $p$. The first GPT {cite}`radford2018improving`
# (512 positions) and BERT {cite}`devlin2019bert` (512 positions) do this, and GPT-2 kept
# GPT's design with 1024 positions {cite}`radford2019language`. Written out, it is an
# embedding of the position ids $0, 1, \dots, T - 1$:

# %%
set_seed(0)
learned = LearnedPositionalEmbedding(max_len, D)  # parameter .weight, (max_len, D)
P = learned.weight  # (max_len, D), initialised N(0, 1)

x = emb(batch)  # (B, T, D)
T = x.shape[1]
positions = torch.arange(T)  # (T,) position ids 0 .. T - 1
by_hand = x + P[positions]  # (B, T, D) + (T, D): broadcast over the batch
assert torch.allclose(learned(x), by_hand)
print("LearnedPositionalEmbedding(x) == x + P[0:T]")
print(
    f"table {tuple(P.shape)}: {P.numel()} trainable parameters",
    "(the sinusoidal one has 0)",
)

# %% [markdown]
# Before training, the learned rows are random vectors, so no position is more similar to
# its neighbour than to any other: "nearby" means nothing yet, and the model has to learn
# it from data. The sinusoidal table has that structure built in. Compare the cosine
# similarity between positions in the two tables:


# %%
def cosine_matrix(table: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, N) cosine similarity between rows."""
    unit = table / table.norm(dim=1, keepdim=True)
    return unit @ unit.T


neighbours = torch.diagonal(cosine_matrix(P.detach()), 1)
print(
    "learned (untrained): cosine between neighbours, mean",
    f"{neighbours.mean().item():.2f}",
)
sin_neighbours = torch.diagonal(cosine_matrix(PE), 1)
print(
    f"sinusoidal:          cosine between neighbours {sin_neighbours[0].item():.2f}"
    " (all equal)"
)
assert torch.allclose(sin_neighbours, sin_neighbours[0], atol=1e-5)

# %% mystnb={"figure": {"caption": "Cosine similarity between the vectors of every two positions, for the sinusoidal table (left) and an untrained learned table (right). The sinusoidal one is smooth: neighbours are alike, and similarity fades with distance. The learned one is noise around zero off the diagonal until training gives it structure.", "name": "fig-ch02-position-cosines"}, "image": {"alt": "Two 32 by 32 heatmaps of cosine similarity from -1 (red) to 1 (blue). Left, sinusoidal: dark blue on the diagonal, fading smoothly with distance but positive everywhere (no cosine below about 0.5). Right, learned and untrained: a blue diagonal on a speckled pale background."}} tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, table, title in (
    (axes[0], PE, "sinusoidal"),
    (axes[1], P.detach(), "learned, untrained"),
):
    image = ax.imshow(cosine_matrix(table), cmap="RdBu", vmin=-1, vmax=1)
    ax.set_xlabel("position q")
    ax.set_ylabel("position p")
    ax.set_title(f"cosine(P[p], P[q]): {title}")
fig.colorbar(image, ax=axes, fraction=0.025, label="cosine similarity")
plt.show()

# %% [markdown]
# Which is better? In the paper, neither: the two "produced nearly identical results"
# (Table 3, row E: the same development perplexity, 4.92, and 25.7 against 25.8 BLEU).
# We come back to that choice at the end of the chapter.
#
# ## Added, not concatenated
#
# Both kinds of position are *added* to the token vectors: $x_p = E[t_p] + P[p]$, still of
# width $D$. The obvious alternative, concatenating $[E[t_p]; P[p]]$, keeps the two cleanly
# apart, but makes the vectors wider, and every weight matrix after it grows with them.
# Adding costs no width at all. Does it not garble the two signals?
#
# Not in high dimension. Two random directions in $\mathbb{R}^D$ are nearly orthogonal:
# their cosine has mean 0 and standard deviation about $1/\sqrt{D}$. So a token vector and a
# position vector mostly occupy different directions, and the model's linear layers can
# learn to read one while ignoring the other (or training can push them into separate
# subspaces outright). Let us measure the cosines between all $V$ token vectors and all 32
# sinusoidal position vectors, for $D = 64$ and, to see the trend, for $D = 512$.


# %%
def token_position_cosines(d_model: int, seed: int) -> torch.Tensor:
    """Cosines between the V token vectors of a fresh TokenEmbedding and the PE rows."""
    set_seed(seed)
    tokens = TokenEmbedding(V, d_model)(
        torch.arange(V)
    ).detach()  # (V, D), scaled by sqrt(D)
    pe = SinusoidalPositionalEncoding(d_model, max_len).pe  # (max_len, D)
    unit_t = tokens / tokens.norm(dim=1, keepdim=True)
    unit_p = pe / pe.norm(dim=1, keepdim=True)
    return (unit_t @ unit_p.T).flatten()  # (V * max_len,)


cos64, cos512 = token_position_cosines(64, seed=0), token_position_cosines(512, seed=0)
for d, c in ((64, cos64), (512, cos512)):
    print(
        f"D = {d:3}: std of the cosines {c.std().item():.3f}"
        f" (1/sqrt(D) = {1 / math.sqrt(d):.3f}),"
        f" largest |cosine| {c.abs().max().item():.2f}"
    )

# %% mystnb={"figure": {"caption": "Cosines between every token vector and every position vector, for D = 64 and D = 512. Both are centred on zero with a spread of about 1/sqrt(D): token and position vectors are nearly orthogonal, more so the wider the model.", "name": "fig-ch02-token-position"}, "image": {"alt": "Two overlaid histograms of cosine similarity between -0.5 and 0.5: for D = 64 a roughly bell-shaped histogram centred at 0, with shoulders near plus and minus 0.13 and standard deviation about 0.12, for D = 512 a narrower, taller bell with standard deviation about 0.04."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(7, 3.5))
bins = torch.linspace(-0.5, 0.5, 61)
ax.hist(cos64.numpy(), bins=bins.numpy(), alpha=0.6, density=True, label="D = 64")
ax.hist(cos512.numpy(), bins=bins.numpy(), alpha=0.6, density=True, label="D = 512")
ax.set_xlabel("cosine(token vector, position vector)")
ax.set_ylabel("density")
ax.set_title(f"All {V} x {max_len} token-position pairs: nearly orthogonal")
ax.legend()
plt.show()

# %% [markdown]
# Near-orthogonality is what makes the sum *decodable*. A direct test: for every token $t$
# and every position $p$, form $x = E[t] + PE[p]$ (that is $47 \times 32 = 1504$ vectors of
# width 64). Can a single linear map read the token back out of $x$? And a second one the
# position? We fit each by least squares (a linear layer trained in closed form) and count
# how often its largest output is the right answer.

# %%
set_seed(0)
E = TokenEmbedding(V, D)(torch.arange(V)).detach().double()  # (V, D)
X = (E[:, None, :] + PE.double()[None, :, :]).reshape(
    -1, D
)  # (V * max_len, D): every sum
X1 = torch.cat(
    [X, torch.ones(len(X), 1, dtype=torch.float64)], dim=1
)  # add a bias column
token_of = torch.arange(V).repeat_interleave(max_len)  # (V * max_len,)
position_of = torch.arange(max_len).repeat(V)  # (V * max_len,)

for name, target, n_classes in (
    ("token", token_of, V),
    ("position", position_of, max_len),
):
    Y = F.one_hot(target, n_classes).double()  # (N, n_classes)
    readout = torch.linalg.lstsq(X1, Y).solution  # (D + 1, n_classes): a linear layer
    accuracy = ((X1 @ readout).argmax(dim=1) == target).double().mean().item()
    print(f"linear read-out of the {name:8} from E[t] + PE[p]: accuracy {accuracy:.3f}")
    assert accuracy > 0.99

# %% [markdown]
# Both come back perfectly, from 64 numbers that hold both signals at once. Concatenation
# would have needed separate room for each (exercise 2 looks at the trade-off).
#
# ## What the paper claimed about longer sequences
#
# Section 3.5 of the paper gives two reasons for the sinusoids. The first is the rotation
# property, for which the authors "hypothesized it would allow the model to easily learn to
# attend by relative positions". The second decided between the two versions that worked
# equally well: "We chose the sinusoidal version because it may allow the model to
# extrapolate to sequence lengths longer than the ones encountered during training"
# {cite}`vaswani2017attention`.
#
# Read it closely: *may allow*. The paper reports no experiment on either idea; its only
# comparison is Table 3, row E, where learned embeddings did as well as sinusoids on
# sequences of the lengths seen in training. The extrapolation claim was a hypothesis, and
# it was tested later. Press, Smith and Lewis {cite}`press2022train` trained language models
# on inputs of a fixed length $L$ and evaluated them on longer inputs: the perplexity of the
# sinusoidal model got worse soon after the input passed $L$ tokens. They proposed {term}`ALiBi`,
# which adds no positional vectors at all and instead biases each attention score by a
# penalty proportional to the distance between query and key, and showed that it does
# extrapolate.
#
# One reason sinusoids can fail: the formula gives a vector for any position, but a trained
# model has only seen the angles its training positions produced. In 32 positions most pairs
# never complete a turn, so positions 32, 33, ... rotate them into angles the model has never
# seen.

# %%
omega = 1.0 / 10000.0 ** (2 * torch.arange(D // 2, dtype=torch.float64) / D)  # (D/2,)
angle_at_31 = 31 * omega  # (D/2,) angle reached by each pair at the last position
never_full_turn = int((angle_at_31 < 2 * math.pi).sum())
print(
    "pairs that do not complete a turn within positions 0..31:",
    f"{never_full_turn} of {D // 2}",
)
print(
    "angle reached by the slowest pair at position 31:",
    f"{angle_at_31[-1].item():.4f} rad (a full turn is {2 * math.pi:.4f})",
)

# %% [markdown]
# The package makes the limit explicit. Both positional modules know their `max_len`, and
# a longer sequence is an error, not silently wrapped or truncated. (A learned table has no
# row to offer; the sinusoidal module could compute one, but refuses too: the model around
# it was not trained there.)

# %%
too_long = torch.zeros(1, 40, D)  # (B=1, T=40, D), longer than max_len = 32
for module in (
    SinusoidalPositionalEncoding(D, max_len),
    LearnedPositionalEmbedding(max_len, D),
):
    try:
        module(too_long)
    except ValueError as error:
        message = f"{type(module).__name__}: ValueError: {error}"
        print(textwrap.fill(message, width=80, subsequent_indent="  "))

# %% [markdown]
# Our sentences have at most 17 positions with `<bos>` and `<eos>`, so this chapter's
# context of 32 is never exceeded; the language model of
# [Chapter 5](05_training_and_generation.ipynb) uses a context of exactly 17.
#
# ## What we learned
#
# - A token embedding is a $(V, D)$ table; looking up row $t$ equals multiplying the one-hot
#   vector of $t$ by the table. `TokenEmbedding` does it for a batch, $(B, T) \to (B, T, D)$,
#   and scales by $\sqrt D$ as the 2017 paper does; without the scale it is `nn.Embedding`.
# - Attention without positions is permutation equivariant: shuffling the input shuffles the
#   output. *The dog chases the cat* and *the cat chases the dog* give the same set of vectors.
# - The sinusoidal encoding gives each pair of dimensions a rotation at its own speed. A
#   shift by $k$ positions is one fixed rotation $M_k$ at every position, and the dot product
#   of two encodings depends only on their distance, falling (with ripples) as it grows.
# - A learned positional table (GPT-2, BERT) is a second embedding, of position ids; before
#   training it has no notion of "nearby". In the paper the two did equally well.
# - Positions are added, not concatenated: in 64 dimensions random token and position vectors
#   are nearly orthogonal, and a linear map recovers both the token and the position from the
#   sum.
# - The paper *hoped* sinusoids would extrapolate to longer sequences; it did not test it, and
#   later work {cite}`press2022train` found that they extrapolate poorly. `tinyformer` refuses
#   sequences longer than `max_len`.
#
# From now on we import `TokenEmbedding`, `SinusoidalPositionalEncoding` and
# `LearnedPositionalEmbedding` from `tinyformer.layers`.
# [Chapter 3](03_self_attention.ipynb) opens the attention box.
#
# ## Exercises
#
# **1. Constant norm.** Show that every row of the sinusoidal table has the same length,
# $\lVert PE[pos] \rVert = \sqrt{D/2}$, first on paper, then numerically for $D = 64$ and
# 1000 positions. Why is a constant norm a good property for a signal that is added to
# every token vector?
#
# <details class="solution"><summary>Solution</summary>
#
# Each pair contributes $\sin^2(\omega_i\, pos) + \cos^2(\omega_i\, pos) = 1$, and there are
# $D/2$ pairs, so $\lVert PE[pos] \rVert^2 = D/2$ for every $pos$. For $D = 64$ that is
# $\sqrt{32} \approx 5.657$. Because the norm is the same everywhere, no position is "louder"
# than another: the encoding shifts the token vectors by the same amount at every position,
# and only its direction carries the position. (With the $\sqrt D$ scaling, token vectors
# have norm about $\sqrt D = 8$, so the two signals are of comparable size.)
#
# ```python
# norms = sinusoidal_encoding(1000, 64).norm(dim=1)
# print(norms.min().item(), norms.max().item(), math.sqrt(64 / 2))  # all about 5.657
# ```
#
# </details>
#
# **2. Concatenate instead?** Suppose the model width is fixed at $D = 64$ and we
# concatenate a 16-dimensional position vector to a token vector instead of adding. What
# does the token part lose? And show that concatenation is a special case of addition.
#
# <details class="solution"><summary>Solution</summary>
#
# At a fixed width the position takes its dimensions from the token: each token vector gets
# only $64 - 16 = 48$ numbers, and the split is fixed in advance, whether position needs 16
# dimensions or 2. To keep 64 numbers per token we would have to widen the model to 80; the
# {term}`residual stream` keeps one width through the whole model, so every weight matrix grows, and
# attention and {term}`feed-forward <feed-forward network>` layers cost roughly $D^2$ each.
#
# Concatenation is addition of zero-padded vectors, $[e; p] = [e; 0] + [0; p]$. So a model
# that adds can, if it helps, learn token vectors that vanish in some dimensions and position
# vectors that live only there; a model that concatenates is stuck with the split it was
# given. Adding is at least as expressive at the same width.
#
# ```python
# e, p = torch.randn(48), torch.randn(16)
# padded_e, padded_p = torch.cat([e, torch.zeros(16)]), torch.cat([torch.zeros(48), p])
# assert torch.equal(torch.cat([e, p]), padded_e + padded_p)  # concatenation = addition
# ```
#
# </details>
#
# **3. The same word twice.** In *the dog sees the cat*, *the* occurs at positions 0 and 3.
# Show that its two vectors are equal after the token embedding, different after adding
# the sinusoidal encoding, and that attention (random weights, no mask) keeps them equal in
# the first case and different in the second. Why does a language model need them to differ?
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# ids = torch.tensor([vocab.encode("the dog sees the cat".split())])  # (1, 5)
# pe = SinusoidalPositionalEncoding(D, max_len)
# with torch.no_grad():
#     tok = emb(ids)                   # (1, 5, D)
#     print(torch.equal(tok[0, 0], tok[0, 3]))                                # True
#     print(torch.allclose(pe(tok)[0, 0], pe(tok)[0, 3]))                     # False
#     print(torch.allclose(attn(tok)[0, 0], attn(tok)[0, 3], atol=1e-6))      # True
#     print(torch.allclose(attn(pe(tok))[0, 0], attn(pe(tok))[0, 3], atol=1e-6))  # False
# ```
#
# Without positions the two *the*s are the same input, and (with no mask) they see the same
# set of vectors, so every layer gives them the same output. But they play different roles:
# the first opens the subject, the second the object. A language model must know which is
# which: after the subject's noun come a verb, a preposition or *that*, and the verb must
# agree with that noun; after the object's noun the sentence ends. The position added at the
# input is what lets it tell them apart (the causal mask of a decoder helps too, as we saw).
#
# </details>
