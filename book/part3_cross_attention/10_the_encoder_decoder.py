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
# # 10. The encoder-decoder transformer
#
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/part3_cross_attention/10_the_encoder_decoder.ipynb">Open in Colab</a> · runs in about 5 s on two CPU cores
#
# We now have every piece of the original transformer {cite}`vaswani2017attention`: Part
# II's encoder, Part I's decoder, and [Chapter 9](09_cross_attention.ipynb)'s cross
# attention that connects them. This chapter puts them together. The course's one block
# class grows its third sublayer, the blocks are stacked into a translation model, and we
# check the result, number for number, against PyTorch's `nn.TransformerDecoderLayer` and
# `nn.Transformer`.
#
# **Learning goals.** After this chapter you can
#
# - write a decoder block with cross attention (self-attention → cross attention →
#   feed-forward, each with a residual connection and LayerNorm), in its pre-LN and
#   post-LN forms, and check it against `tinyformer`'s `TransformerBlock` and
#   `nn.TransformerDecoderLayer`;
# - follow one batch through the whole model, naming the shape at every stage;
# - derive the model's parameter count from its hyper-parameters;
# - load the same weights into `nn.Transformer` and get the same outputs, and say exactly
#   where the two differ in structure;
# - set up the inputs and labels of {term}`teacher forcing`, which
#   [Chapter 11](11_translation.ipynb) trains with.
#
# As in [Chapter 9](09_cross_attention.ipynb), $S$ is the source length, $T$ the target
# length and $M$ the memory.

# %%
import math
import textwrap
import warnings

import matplotlib.pyplot as plt
import torch
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.attention import causal_mask, padding_mask, record_attention
from tinyformer.blocks import TransformerBlock
from tinyformer.config import TransformerConfig
from tinyformer.language import ToyLanguage
from tinyformer.objectives import lm_loss
from tinyformer.plot import plot_attention
from tinyformer.seq2seq import EncoderDecoder
from tinyformer.stack import TransformerStack
from tinyformer.torch_bridge import (
    load_decoder_layer_from_torch,
    load_transformer_from_torch,
    to_torch_mask,
)
from tinyformer.train import set_seed
from tinyformer.vocab import Vocab
from torch import nn

set_seed(0)  # seeds Python, NumPy and torch
set_matplotlib_formats("retina")  # PNG figures at twice the pixels, on every screen
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## The block grows a sublayer
#
# The block of [Chapter 4](../part1_decoder/04_the_decoder_block.ipynb), the one
# `TransformerBlock` class of the course, had two sublayers, causal self-attention and a
# feed-forward network (FFN); [Chapter 6](../part2_encoder/06_bidirectional_attention.ipynb)
# turned its causal mask off to make the encoder block. A decoder that translates needs a
# third sublayer, between the two: cross attention to the encoder's output, the memory
# $M$ `(B, S, D)`. With the {term}`pre-LN` wrapping that `tinyformer` uses by default, a
# block maps $x$ `(B, T, D)` to
#
# $$\begin{aligned}
# x &\leftarrow x + \operatorname{SelfAttn}(\operatorname{LN}_\text{attn}(x)) && \text{causal mask}\\
# x &\leftarrow x + \operatorname{CrossAttn}(\operatorname{LN}_\text{cross}(x),\, M) && \text{source padding mask}\\
# x &\leftarrow x + \operatorname{FFN}(\operatorname{LN}_\text{ff}(x)) .
# \end{aligned}$$
#
# The 2017 paper used {term}`post-LN` instead, normalising *after* each residual sum
# ("Add & Norm"):
# $x \leftarrow \operatorname{LN}_\text{attn}(x + \operatorname{SelfAttn}(x))$,
# then $x \leftarrow \operatorname{LN}_\text{cross}(x + \operatorname{CrossAttn}(x, M))$,
# then $x \leftarrow \operatorname{LN}_\text{ff}(x + \operatorname{FFN}(x))$.
#
# Two details. The memory is *not* normalised inside the block: it already left the
# encoder through a LayerNorm (the encoder's final one under pre-LN, its last block's
# under post-LN), and every block reads the same memory. And the LayerNorms are named by
# the sublayer they serve: `attn_norm` and `ff_norm` kept their jobs, and the new sublayer
# brings `cross_norm`. PyTorch numbers its three norms in execution order instead
# (`norm1`, `norm2`, `norm3` for self-attention, cross attention, FFN); the loader in
# `tinyformer.torch_bridge` maps them by role.
#
# Written out, with a block's submodules (`self_attn`, `cross_attn`, `ff` and the three
# norms) and the package's masks:


# %%
def decoder_block(block, x, memory, src_mask):
    """x (B, T, D), memory (B, S, D), src_mask (B, 1, 1, S) -> (B, T, D)."""
    causal = causal_mask(x.shape[1], device=x.device)  # (T, T), True = may attend

    def self_attention(h):
        return block.self_attn(h, mask=causal)  # target reads earlier target positions

    def cross_attention(h):
        return block.cross_attn(h, context=memory, mask=src_mask)  # reads the source

    if block.norm_first:  # pre-LN: x + sublayer(LN(x))
        x = x + self_attention(block.attn_norm(x))
        x = x + cross_attention(block.cross_norm(x))
        x = x + block.ff(block.ff_norm(x))
    else:  # post-LN (2017): LN(x + sublayer(x))
        x = block.attn_norm(x + self_attention(x))
        x = block.cross_norm(x + cross_attention(x))
        x = block.ff_norm(x + block.ff(x))
    return x


# %% [markdown]
# We check it against `TransformerBlock(cross_attention=True)` and against PyTorch's
# `nn.TransformerDecoderLayer` loaded with the same weights by
# `load_decoder_layer_from_torch`. A freshly built PyTorch layer starts its attention
# biases at 0 and every LayerNorm at $\gamma = 1, \beta = 0$ (only the feed-forward
# layers' biases start random, as in any `nn.Linear`), as the next cell lists. A copy that
# mixed up two attention biases or two norms would still agree on such a layer, so we
# randomise all its parameters first.
#
# <div class="admonition warning">
# <p class="admonition-title">Masks, once more</p>
# <p>PyTorch's <code>tgt_mask</code> and <code>memory_key_padding_mask</code> use the
# <strong>opposite</strong> convention to ours: <code>True</code> = <em>blocked</em>.
# <code>to_torch_mask</code> inverts ours; the key-padding mask is <code>(B, S)</code>,
# so we also drop the two broadcast dimensions.</p>
# </div>

# %%
B, T, S, D, H, F = 3, 6, 8, 32, 4, 64
fresh = nn.TransformerDecoderLayer(D, H, F, batch_first=True)
biases = {n: p for n, p in fresh.named_parameters() if n.endswith("bias")}
print("biases that start at 0  :", [n for n, p in biases.items() if not p.any()])
print("biases that start random:", [n for n, p in biases.items() if p.any()])
gains = [
    p for n, p in fresh.named_parameters() if n.startswith("norm") and "weight" in n
]
print("LayerNorm gains all 1   :", all(bool((p == 1).all()) for p in gains))

# %%
src_demo = (
    torch.tensor(  # source ids with 8, 5 and 3 real tokens: only the padding matters
        [[1, 5, 6, 7, 8, 9, 10, 2], [1, 5, 6, 7, 2, 0, 0, 0], [1, 5, 2, 0, 0, 0, 0, 0]]
    )
)
src_mask = padding_mask(src_demo, pad_id=0)  # (B, 1, 1, S)


def randomise(module, seed):
    """Random values for every parameter (norm gains near 1): every copy matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            centre = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))


g = set_seed(0)
x = torch.randn(B, T, D, generator=g)  # (B, T, D) decoder input
memory = torch.randn(B, S, D, generator=g)  # (B, S, D) encoder output
for norm_first in (True, False):
    theirs = nn.TransformerDecoderLayer(
        D, H, F, dropout=0.0, batch_first=True, norm_first=norm_first
    ).eval()
    randomise(theirs, seed=1)
    ours = TransformerBlock(D, H, F, norm_first=norm_first, cross_attention=True).eval()
    load_decoder_layer_from_torch(ours, theirs)
    with torch.no_grad():
        written = decoder_block(ours, x, memory, src_mask)
        pkg = ours(x, memory=memory, memory_mask=src_mask)
        torch_out = theirs(
            x,
            memory,
            tgt_mask=to_torch_mask(causal_mask(T)),  # True = blocked: the future
            memory_key_padding_mask=to_torch_mask(src_mask)[:, 0, 0, :],  # True = pad
        )
    name = "pre-LN " if norm_first else "post-LN"
    same_pkg = torch.allclose(written, pkg, atol=1e-5)
    same_torch = torch.allclose(written, torch_out, atol=1e-5)
    print(f"{name}: written == TransformerBlock: {same_pkg} | "
          f"== nn.TransformerDecoderLayer: {same_torch}")  # fmt: skip
    assert same_pkg and same_torch

# %% [markdown]
# Run inside `record_attention`, the block also shows both of its attention maps, keyed
# by the module's name: self-attention `(B, H, T, T)` and cross attention `(B, H, T, S)`.

# %%
with torch.no_grad(), record_attention(ours) as maps:
    out = ours(x, memory=memory, memory_mask=src_mask)
print("out", tuple(out.shape), {name: tuple(w.shape) for name, w in maps.items()})

# %% [markdown]
# ## Assembling the model
#
# `tinyformer.seq2seq.EncoderDecoder` is nothing but the parts we have, put together
# differently:
#
# - `model.encoder` is Part II's encoder, a `TransformerStack(causal=False)`: source
#   embedding + positions, encoder blocks, final LayerNorm (pre-LN). It builds the source
#   padding mask from `src == pad_id`.
# - `model.decoder` is Part I's decoder stack, a `TransformerStack(causal=True)`, with its
#   own target embedding and positions; `cross_attention=True` gives each of its blocks
#   the third sublayer. Then the final LayerNorm, and `model.lm_head`, tied to the target
#   embedding.
#
# One `TransformerConfig` describes it: `vocab_size` is the target vocabulary,
# `src_vocab_size` the source's, `n_layers` the decoder blocks and `n_encoder_layers` the
# encoder blocks. `model.encode(src)` returns the memory and the source mask,
# `model.decode(tgt_in, memory, src_mask)` the logits; `model(src, tgt_in)` does both. Let
# us build a small one for the toy translation task and push one batch of three sentence
# pairs through it, writing each stage out with the model's own submodules.

# %%
lang = ToyLanguage()
src_vocab, tgt_vocab = Vocab(lang.words), Vocab(lang.target_words)
pairs = lang.sample_pairs(8, seed=0)
batch = [pairs[3], pairs[7], pairs[6]]  # 10, 7 and 3 source words: Chapter 9's batch
src = src_vocab.batch([s for s, _, _ in batch], bos=True, eos=True)  # (B, S)
tgt_in = tgt_vocab.batch([t for _, t, _ in batch], bos=True)  # (B, T)

set_seed(0)
config = TransformerConfig(
    vocab_size=len(tgt_vocab), src_vocab_size=len(src_vocab), d_model=32, n_heads=4,
    n_layers=2, n_encoder_layers=2, d_ff=64, max_len=32,
)  # fmt: skip
model = EncoderDecoder(config).eval()
print(model)
print("encoder:", type(model.encoder).__name__, "causal =", model.encoder.causal)
print("decoder:", type(model.decoder).__name__, "causal =", model.decoder.causal)
print(
    "every decoder block is a TransformerBlock with cross attention:",
    all(
        isinstance(blk, TransformerBlock) and blk.cross_attn is not None
        for blk in model.decoder.blocks
    ),
)
assert isinstance(model.encoder, TransformerStack)

# %%
rows = []  # (stage, tensor)
with torch.no_grad(), record_attention(model) as maps:
    enc, dec = model.encoder, model.decoder
    rows.append(("source ids", src))
    h = enc.drop(enc.pos(enc.tok_emb(src)))
    rows.append(("source embeddings + positions", h))
    src_mask = padding_mask(src, model.config.pad_id)
    rows.append(("source padding mask", src_mask))
    for i, block in enumerate(enc.blocks):
        h = block(h, mask=src_mask)
        rows.append((f"encoder block {i + 1}: output", h))
        rows.append((f"encoder block {i + 1}: self-attention weights",
                     maps[f"encoder.blocks.{i}.self_attn"]))  # fmt: skip
    memory = enc.norm_f(h)
    rows.append(("memory (after the final LayerNorm)", memory))
    rows.append(("target input ids", tgt_in))
    x = dec.drop(dec.pos(dec.tok_emb(tgt_in)))
    rows.append(("target embeddings + positions", x))
    for i, block in enumerate(dec.blocks):
        x = block(x, memory=memory, memory_mask=src_mask)
        rows.append((f"decoder block {i + 1}: output", x))
        for kind in ("self_attn", "cross_attn"):
            rows.append((f"decoder block {i + 1}: {kind} weights",
                         maps[f"decoder.blocks.{i}.{kind}"]))  # fmt: skip
    x = dec.norm_f(x)
    rows.append(("final LayerNorm", x))
    logits = model.lm_head(x)
    rows.append(("logits", logits))

B, S = src.shape
T, D, H, V_tgt = tgt_in.shape[1], config.d_model, config.n_heads, len(tgt_vocab)
names = {B: "B", S: "S", T: "T", D: "D", H: "H", V_tgt: "V_tgt", 1: "1"}
assert len(names) == 7  # the sizes all differ, so each can be named
print(f"B={B}, S={S}, T={T}, D={D}, H={H}, V_src={len(src_vocab)}, V_tgt={V_tgt}\n")
print(f"{'stage':45} {'shape':16} in symbols")
for stage, t in rows:
    symbolic = "(" + ", ".join(names.get(n, str(n)) for n in t.shape) + ")"
    print(f"{stage:45} {str(tuple(t.shape)):16} {symbolic}")

# %% [markdown]
# Read it from top to bottom: the source lives at length $S = 12$ until it becomes the
# memory; the target lives at length $T = 10$; the two meet only in the cross-attention
# weights `(B, H, T, S)`. The stage-by-stage result is the model's own forward pass, and
# `record_attention(model)` hands over all six attention maps of that pass by module name:

# %%
with torch.no_grad(), record_attention(model) as attention:
    direct = model(src, tgt_in)
print(
    "written-out stages == model(src, tgt_in):",
    torch.allclose(logits, direct, atol=1e-6),
)
for name, w in attention.items():
    print(f"  {name:28} {tuple(w.shape)}")
assert torch.allclose(logits, direct, atol=1e-6)

# %% [markdown]
# The three kinds of attention in one picture, for the first sentence (head 0 of the first
# layer; the model is untrained, so the patterns are random, but their shapes are not):
# the encoder's self-attention is square and full, `(S, S)`; the decoder's self-attention
# is square and causal, `(T, T)`; cross attention is rectangular, `(T, S)`.

# %% mystnb={"figure": {"caption": "The three attentions of an untrained encoder-decoder transformer (first layer, head 0, first sentence): the encoder's self-attention is square and full, the decoder's is square and causal, cross attention is rectangular.", "name": "fig-ch10-three-attentions"}, "image": {"alt": "Three attention heatmaps. First, encoder self-attention, 12 by 12 source positions, weights everywhere. Second, decoder self-attention, 10 by 10 target positions, zero above the diagonal. Third, cross attention, 10 target rows by 12 source columns, weights everywhere."}} tags=["hide-input"]
b = 0
src_tokens = src_vocab.decode(src[b], strip_special=False)
tgt_tokens = tgt_vocab.decode(tgt_in[b], strip_special=False)
panels = [
    ("encoder.blocks.0.self_attn", src_tokens, src_tokens, "encoder self-attention"),
    ("decoder.blocks.0.self_attn", tgt_tokens, tgt_tokens, "decoder self-attention"),
    ("decoder.blocks.0.cross_attn", src_tokens, tgt_tokens, "cross attention"),
]
shapes = ["(S × S)", "(T × T)", "(T × S)"]
fig, axes = plt.subplots(2, 2, figsize=(10, 9.5))
for ax, (name, keys, queries, title), shape in zip(
    axes.flat, panels, shapes, strict=False
):
    plot_attention(
        attention[name][b, 0], keys, queries, ax=ax, title=f"{title}\n{shape}"
    )
axes[1, 1].axis("off")
fig.suptitle("The three attentions of an encoder-decoder transformer (untrained)")
fig.tight_layout()

# %% [markdown]
# ## Counting parameters
#
# Write $D$ for `d_model`, $F$ for `d_ff`, $L$ for `max_len`, $N_e$ and $N_d$ for the
# numbers of encoder and decoder blocks, $V_s$ and $V_t$ for the two vocabularies. The
# pieces, each a weight matrix plus a bias vector or a LayerNorm's $\gamma$ and $\beta$:
#
# - one attention layer: $W_Q, W_K, W_V, W_O$, each `(D, D)` with a bias: $4D^2 + 4D$;
# - one feed-forward network: `(D, F)` and `(F, D)` with biases: $2DF + F + D$;
# - one LayerNorm: $2D$;
# - an encoder block: one attention, one FFN, two LayerNorms:
#   $P_e = 4D^2 + 4D + 2DF + F + D + 4D$;
# - a decoder block: *two* attentions, one FFN, *three* LayerNorms:
#   $P_d = 2(4D^2 + 4D) + 2DF + F + D + 6D$, that is $P_e + 4D^2 + 6D$;
# - each side's embeddings: $V_s D + L D$ and $V_t D + L D$ (learned positions; sinusoids
#   have no parameters); the LM head is tied to the target embedding, so it adds nothing;
# - pre-LN adds a final LayerNorm to each stack: $2 \cdot 2D$.
#
# $$N_\text{params} = (V_s + V_t + 2L)\,D + N_e P_e + N_d P_d + 4D \;[\text{pre-LN}]
#   + V_t D \;[\text{untied head}].$$


# %%
def expected_parameters(
    V_s, V_t, D, F, L, n_enc, n_dec, norm_first=True, tie_weights=True,
    positional="learned",
):  # fmt: skip
    """The formula above."""
    attention = 4 * D * D + 4 * D
    ffn = 2 * D * F + F + D
    layer_norm = 2 * D
    encoder_block = attention + ffn + 2 * layer_norm
    decoder_block = 2 * attention + ffn + 3 * layer_norm
    positions = 2 * L * D if positional == "learned" else 0
    embeddings = (V_s + V_t) * D + positions
    final_norms = 2 * layer_norm if norm_first else 0
    head = 0 if tie_weights else V_t * D
    return (
        embeddings + n_enc * encoder_block + n_dec * decoder_block + final_norms + head
    )


V_s, V_t = len(src_vocab), len(tgt_vocab)
print(f"V_s = {V_s}, V_t = {V_t}")
for changes in [
    dict(),
    dict(norm_first=False),
    dict(tie_weights=False),
    dict(positional="sinusoidal"),
    dict(d_model=64, d_ff=256, n_encoder_layers=3, n_layers=1),
]:
    c = TransformerConfig(
        vocab_size=V_t, src_vocab_size=V_s, n_heads=4, max_len=32,
        **(dict(d_model=32, d_ff=64, n_layers=2, n_encoder_layers=2) | changes),
    )  # fmt: skip
    m = EncoderDecoder(c)
    formula = expected_parameters(
        V_s, V_t, c.d_model, c.d_ff, c.max_len, c.n_encoder_layers, c.n_layers,
        norm_first=c.norm_first, tie_weights=c.tie_weights, positional=c.positional,
    )  # fmt: skip
    label = ", ".join(f"{k}={v}" for k, v in changes.items()) or "default"
    print(f"{label:53} model {m.num_parameters():7d}   formula {formula:7d}")
    assert m.num_parameters() == formula

# %% [markdown]
# Where do the parameters of our small model live? Almost all of them in the blocks, and a
# decoder block costs about half as much again as an encoder block: its second attention
# layer and third LayerNorm, $4D^2 + 6D$ on top of the encoder block's
# $4D^2 + 2DF + F + 9D$.

# %% mystnb={"figure": {"caption": "Where the parameters of the small encoder-decoder (D = 32, d_ff = 64, two blocks per stack) are: most are in the blocks, and the two decoder blocks hold about half as much again as the two encoder blocks.", "name": "fig-ch10-parameters"}, "image": {"alt": "Horizontal bar chart of parameter counts: source embedding 1,504; target embedding (tied with the LM head) 1,408; positions 2,048; encoder blocks 17,088; decoder blocks 25,664; final LayerNorms 128."}} tags=["hide-input"]
D, F, L = 32, 64, 32
parts = {
    "source embedding": V_s * D,
    "target embedding\n(= LM head, tied)": V_t * D,
    "positions (2 tables)": 2 * L * D,
    "encoder blocks (2)": sum(p.numel() for p in model.encoder.blocks.parameters()),
    "decoder blocks (2)": sum(p.numel() for p in model.decoder.blocks.parameters()),
    "final LayerNorms": 4 * D,
}
assert sum(parts.values()) == model.num_parameters()
fig, ax = plt.subplots(figsize=(8, 3.6))
bars = ax.barh(list(parts), list(parts.values()), color="tab:blue")
ax.bar_label(bars, labels=[f"{v:,}" for v in parts.values()], padding=3)
ax.invert_yaxis()
ax.set_xlabel("parameters")
ax.set_title(f"Where the {model.num_parameters():,} parameters are (D = 32, d_ff = 64)")
ax.set_xlim(0, max(parts.values()) * 1.2)
fig.tight_layout()

# %% [markdown]
# ## The same model in PyTorch: `nn.Transformer`
#
# PyTorch's `nn.Transformer` is the encoder and decoder stacks only: no embeddings, no
# positions, no LM head. So we give it *our* embedded source and target and apply *our* LM
# head to its output. `load_transformer_from_torch` copies its encoder layers, decoder
# layers and final norms into our model; then the logits must agree.
#
# It needs three masks, all in PyTorch's convention (`True` = blocked): the causal
# `tgt_mask` `(T, T)`, and the source padding twice, as `src_key_padding_mask` for the
# encoder's self-attention and as `memory_key_padding_mask` for the decoder's cross
# attention (both `(B, S)`).


# %%
def torch_logits(model, theirs, src, tgt_in):
    """Our embeddings -> nn.Transformer -> our LM head: logits (B, T, V_tgt)."""
    enc, dec = model.encoder, model.decoder
    src_emb = enc.pos(enc.tok_emb(src))  # (B, S, D)
    tgt_emb = dec.pos(dec.tok_emb(tgt_in))  # (B, T, D)
    pad = to_torch_mask(padding_mask(src, model.config.pad_id))[:, 0, 0, :]  # (B, S)
    future = to_torch_mask(causal_mask(tgt_in.shape[1]))  # (T, T), True = blocked
    out = theirs(
        src_emb,
        tgt_emb,
        tgt_mask=future,
        src_key_padding_mask=pad,
        memory_key_padding_mask=pad,
    )  # (B, T, D)
    return model.lm_head(out)


def make_torch_transformer(norm_first, final_norms=True):
    kwargs = dict(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0)
    kwargs |= dict(batch_first=True, norm_first=norm_first)
    if final_norms:  # the default nn.Transformer: a LayerNorm after each stack
        with warnings.catch_warnings():  # PyTorch notes its fast path is off for pre-LN
            warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
            return nn.Transformer(num_encoder_layers=2, num_decoder_layers=2, **kwargs)
    # post-LN as in 2017: build the stacks ourselves, norm=None (no final LayerNorm)
    enc_layer = nn.TransformerEncoderLayer(**kwargs)
    dec_layer = nn.TransformerDecoderLayer(**kwargs)
    return nn.Transformer(
        custom_encoder=nn.TransformerEncoder(
            enc_layer, 2, norm=None, enable_nested_tensor=False
        ),
        custom_decoder=nn.TransformerDecoder(dec_layer, 2, norm=None),
        **kwargs,
    )


def our_model(norm_first):
    return EncoderDecoder(
        TransformerConfig(
            vocab_size=V_t, src_vocab_size=V_s, d_model=32, n_heads=4, n_layers=2,
            n_encoder_layers=2, d_ff=64, norm_first=norm_first,
        )
    )  # fmt: skip


for norm_first, final_norms in [(True, True), (False, False)]:
    set_seed(0)
    theirs = make_torch_transformer(norm_first, final_norms).eval()
    randomise(theirs, seed=2)
    ours = our_model(norm_first).eval()
    load_transformer_from_torch(ours, theirs)
    with torch.no_grad():
        ours_logits = ours(src, tgt_in)
        diff = (
            (ours_logits - torch_logits(ours, theirs, src, tgt_in)).abs().max().item()
        )
    name = "pre-LN " if norm_first else "post-LN"
    same = diff < 1e-5
    print(f"{name}: same logits as nn.Transformer (max |difference| < 1e-5): {same}")
    assert diff < 1e-5

# %% [markdown]
# Both agree to float precision. One structural difference needed care, and it is worth
# knowing:
#
# - **`nn.Transformer` always ends each stack with a LayerNorm** (`encoder.norm`,
#   `decoder.norm`), whatever `norm_first` says. Under pre-LN that is exactly right: the
#   residual stream of a pre-LN stack is never normalised, so both our encoder and our
#   decoder stack have a final LayerNorm (`norm_f`), and the loader copies theirs into
#   ours. Under post-LN each block already *ends* in a LayerNorm; the 2017 model, and
#   ours, add nothing after the last block, but the default `nn.Transformer` normalises a
#   second time. That is a different function (with trained $\gamma, \beta$ it is not a
#   no-op), so the loader refuses it, and for post-LN we built the reference from
#   `nn.TransformerEncoder` and `nn.TransformerDecoder` with `norm=None`:

# %%
try:
    load_transformer_from_torch(
        our_model(norm_first=False),
        make_torch_transformer(norm_first=False, final_norms=True),
    )
except ValueError as error:
    print("ValueError:", textwrap.fill(str(error), width=86))

# %% [markdown]
# Two smaller differences do not change the function: PyTorch keeps each attention's
# three input projections in one stacked `in_proj_weight` `(3D, D)` where we have three
# `nn.Linear(D, D)`, and it numbers the decoder layer's norms in execution order (its
# `norm2` is our `cross_norm`, its `norm3` our `ff_norm`). The loader handles both.

# %% [markdown]
# ## Teacher forcing, a preview
#
# How will this model learn to translate? Exactly as Part I's language model learned the
# source language: predict the next token, for every position at once. The decoder's input
# is the target shifted right behind `<bos>`; its labels are the target followed by
# `<eos>`:
#
# - decoder input: `<bos> y_1 y_2 … y_m`
# - labels:        `y_1 y_2 … y_m <eos>`
#
# Position $t$ reads the true target words before it (not the model's own guesses: hence
# "teacher forcing") and the whole source through cross attention, and predicts the next
# word. The causal mask guarantees that it cannot peek at the label it must predict
# ([Chapter 9](09_cross_attention.ipynb) checked it with gradients), so one forward pass
# trains all $m + 1$ positions. The last label, `<eos>`, is a decision like any other:
# the target's length is not the source's (7 source words become 6 target words below),
# so the decoder must learn when the translation is complete.

# %%
source, target, _ = batch[1]
decoder_input = ["<bos>"] + target
labels = target + ["<eos>"]
print("source :", " ".join(source))
print(f"{'t':>2}  {'decoder input':14} {'label':10}")
for t, (inp, lab) in enumerate(zip(decoder_input, labels, strict=True)):
    print(f"{t:>2}  {inp:14} {lab:10}")

# %% [markdown]
# For the batch: the decoder inputs are `tgt_vocab.batch(targets, bos=True)` (what we used
# all along) and the labels `tgt_vocab.batch(targets, eos=True)`, both `(B, T)`; the pads
# are ignored by the loss (`lm_loss(..., pad_id)`). An untrained model knows nothing about
# the target, so its loss should be near $\ln V_\text{tgt}$, the cross-entropy of a
# uniform guess over the target vocabulary, and somewhat above it: its random logits are
# not flat, and confident wrong guesses cost more than a uniform one. Here it is 4.42
# nats against $\ln V_\text{tgt} = 3.78$, about 0.6 nats above:

# %%
targets = [t for _, t, _ in batch]
tgt_in = tgt_vocab.batch(targets, bos=True)  # (B, T): <bos> y_1 .. y_m
tgt_out = tgt_vocab.batch(targets, eos=True)  # (B, T): y_1 .. y_m <eos>
real = tgt_in[:, 1:] != tgt_vocab.pad_id  # labels are the inputs shifted left by one
assert torch.equal(tgt_in[:, 1:][real], tgt_out[:, :-1][real])
with torch.no_grad():
    logits = model(src, tgt_in)  # (B, T, V_tgt): all positions in one pass
    loss = lm_loss(logits, tgt_out, pad_id=tgt_vocab.pad_id)
print("input  ", tuple(tgt_in.shape), "| labels", tuple(tgt_out.shape))
print(f"untrained loss {loss.item():.2f} nats/token; ln V_tgt = {math.log(V_t):.2f}")
assert math.log(V_t) < loss.item() < math.log(V_t) + 1.5

# %% [markdown]
# [Chapter 11](11_translation.ipynb) trains an encoder-decoder like this one (wider, and
# with one encoder and three decoder blocks instead of two and two) on the toy
# translation task and then decodes with it: one token at a time, feeding each
# prediction back in, since at test time there is no teacher.

# %% [markdown]
# ## What we learned
#
# - A decoder block with cross attention has three sublayers: causal self-attention,
#   cross attention to the memory, feed-forward; each wrapped as $x + f(\text{LN}(x))$
#   (pre-LN) or $\text{LN}(x + f(x))$ (post-LN, the 2017 paper's). It is the course's one
#   `TransformerBlock` with `cross_attention=True` (new submodules `cross_attn` and
#   `cross_norm`); our written-out block equals it and `nn.TransformerDecoderLayer` in
#   both forms.
# - `EncoderDecoder(TransformerConfig(vocab_size=V_tgt, src_vocab_size=V_src, ...))` is
#   two `TransformerStack`s, the encoder's non-causal, the decoder's causal with cross
#   attention in every block, plus an LM head. Shapes: source ids `(B, S)` → memory
#   `(B, S, D)`; target ids `(B, T)` → decoder blocks `(B, T, D)` with self-attention
#   `(B, H, T, T)` and cross attention `(B, H, T, S)` → logits `(B, T, V_tgt)`.
# - Its parameter count is
#   $(V_s + V_t + 2L)D + N_e P_e + N_d P_d + 4D$ (pre-LN, tied head), with
#   $P_e = 4D^2 + 2DF + F + 9D$ and $P_d = 8D^2 + 2DF + F + 15D$; asserted for five
#   configurations.
# - With the same weights, it equals `nn.Transformer` (our embeddings and LM head around
#   it), pre-LN and post-LN; `nn.Transformer` always adds final LayerNorms, which is right
#   for pre-LN and a second, extra normalisation for post-LN.
# - Teacher forcing: decoder input `<bos> + target`, labels `target + <eos>`; the
#   untrained loss is about 0.6 nats above $\ln V_\text{tgt}$, the cost of a uniform
#   guess (4.42 against 3.78).

# %% [markdown]
# ## Exercises
#
# **1. The 2017 base model.** The base transformer of Vaswani et al. has $N_e = N_d = 6$,
# $D = 512$, $F = 2048$, sinusoidal positions, and one vocabulary of about 37 000 tokens
# shared by source and target, with the two embeddings and the output layer all tied (one
# matrix). Use the formula to estimate its size. The paper reports 65 million parameters.
#
# <details class="solution"><summary>Solution</summary>
#
# With one shared embedding matrix the embeddings count $VD$ once, and post-LN has no
# final norms:
#
# ```python
# D, F, V = 512, 2048, 37_000
# P_e = 4 * D**2 + 2 * D * F + F + 9 * D
# P_d = 8 * D**2 + 2 * D * F + F + 15 * D
# print(V * D + 6 * P_e + 6 * P_d)  # 63082496
# ```
#
# About 63 million: the blocks hold 44 million, the shared embedding 19 million. That is
# within 3 % of the reported 65 million; the paper gives its vocabulary size only roughly
# (each thousand tokens more adds half a million parameters) and does not break its count
# down, so we cannot say exactly where the rest comes from.
#
# </details>
#
# **2. Swap two sublayers.** Put cross attention *before* self-attention in every decoder
# block. Is the model still a valid translation model (can it be trained with teacher
# forcing and used to generate)? Why?
#
# <details class="solution"><summary>Solution</summary>
#
# Yes. What makes teacher forcing legitimate is that target position $t$ never depends on
# target positions after $t$. Cross attention mixes information across *source* positions
# only: each target position's output depends on its own input and the memory. So any
# order of the three sublayers keeps the causal structure, as long as the self-attention
# stays causal. The order self → cross → FFN is a design choice (a position first gathers
# its target context, then asks the source), and it is the one PyTorch and the paper use.
#
# </details>
#
# **3. Why is the memory not normalised inside the block?** In the pre-LN block the
# decoder's stream goes through `cross_norm` before cross attention, but the memory does
# not. Where is the memory normalised, and what would change if each decoder block applied
# its own LayerNorm to the memory too?
#
# <details class="solution"><summary>Solution</summary>
#
# The memory is the encoder's output *after* its final LayerNorm
# (`model.encoder.norm_f`), so it arrives normalised once, and every decoder block reads
# the same tensor. A per-block LayerNorm on the memory would give each block its own
# $\gamma, \beta$ for the memory (a few parameters), and is one more normalisation of
# something already normalised. Only its $\gamma$ and $\beta$ could be folded into the
# block's $W_K, W_V$ and their biases (a per-feature scale and a shift); its per-row
# re-centring and re-scaling, which subtract each memory vector's own mean and divide by
# its own standard deviation, depend on the row and are not linear, so they could not.
# `nn.TransformerDecoderLayer` does not do it either, which is why the parity check above
# holds.
#
# </details>
#
# **4. Sharing the vocabulary.** Our source and target have separate vocabularies of 47
# and 44 tokens. If we used one joint vocabulary (all 81 words plus the 5 special tokens)
# for both sides and tied the source embedding, the target embedding and the LM head
# (`share_embeddings=True`), how many parameters would our $D = 32$ model save or add?
#
# <details class="solution"><summary>Solution</summary>
#
# Separate: $(47 + 44) \cdot 32 = 2912$ embedding parameters (the head is already tied to
# the target embedding). Joint and shared: one `(86, 32)` matrix, $2752$. We save $160$
# parameters, the five special tokens' second copy, and the LM head now scores all 86
# tokens, including every source word, which the model must learn never to output.
# Sharing pays off when the languages share many tokens (subwords, names, numbers), as in
# the 2017 paper's English-German vocabulary of byte-pair-encoded subwords
# {cite}`sennrich2016neural`.
#
# ```python
# joint = len(lang.words) + len(lang.target_words) + 5
# shared = EncoderDecoder(TransformerConfig(
#     vocab_size=joint, src_vocab_size=joint, share_embeddings=True, d_model=32,
#     n_heads=4, n_layers=2, n_encoder_layers=2, d_ff=64, max_len=32))
# print(model.num_parameters() - shared.num_parameters())  # 160
# ```
#
# </details>
