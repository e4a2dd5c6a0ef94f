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
# We now have every piece of the original transformer {cite}`vaswani2017attention`: Part
# II's encoder, Part I's decoder, and Chapter 9's cross attention that connects them. This
# chapter puts them together. The decoder block grows its third sublayer, the blocks are
# stacked into a translation model, and we check the result, number for number, against
# PyTorch's `nn.TransformerDecoderLayer` and `nn.Transformer`.
#
# **Learning goals.** After this chapter you can
#
# - write a decoder block with cross attention (self-attention → cross attention →
#   feed-forward, each with a residual connection and LayerNorm), in its pre-LN and post-LN
#   forms, and check it against `tinyformer` and `nn.TransformerDecoderLayer`;
# - follow one batch through the whole model, naming the shape at every stage;
# - derive the model's parameter count from its hyper-parameters;
# - load the same weights into `nn.Transformer` and get the same outputs, and say exactly
#   where the two differ in structure;
# - set up the inputs and labels of {term}`teacher forcing`, which Chapter 11 trains with.

# %%
import math
import textwrap
import warnings

import matplotlib.pyplot as plt
import torch
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.attention import causal_mask, padding_mask
from tinyformer.compat import (
    load_decoder_layer_from_torch,
    load_transformer_from_torch,
    to_torch_mask,
)
from tinyformer.decoder import DecoderBlock
from tinyformer.encoder import Encoder
from tinyformer.language import ToyLanguage
from tinyformer.plot import plot_attention
from tinyformer.seq2seq import EncoderDecoder
from tinyformer.train import lm_loss, set_seed
from tinyformer.vocab import Vocab
from torch import nn

set_seed(0)  # seeds Python, NumPy and torch
set_matplotlib_formats(
    "png"
)  # PNG figures: the same in the book, on GitHub and in Colab
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## The decoder block grows a sublayer
#
# Part I's decoder block had two sublayers, causal self-attention and a feed-forward
# network (FFN). A decoder that translates needs a third, between them: cross attention to
# the encoder's output, the memory $M$ `(B, T_src, D)`. With the {term}`pre-LN` wrapping
# that `tinyformer` uses by default, a block maps $x$ `(B, T_tgt, D)` to
#
# $$\begin{aligned}
# x &\leftarrow x + \operatorname{SelfAttn}(\operatorname{LN}_1(x)) && \text{causal mask}\\
# x &\leftarrow x + \operatorname{CrossAttn}(\operatorname{LN}_3(x),\, M) && \text{source padding mask}\\
# x &\leftarrow x + \operatorname{FFN}(\operatorname{LN}_2(x)) .
# \end{aligned}$$
#
# The 2017 paper used {term}`post-LN` instead, normalising *after* each residual sum
# ("Add & Norm"): $x \leftarrow \operatorname{LN}_1(x + \operatorname{SelfAttn}(x))$, then
# $x \leftarrow \operatorname{LN}_3(x + \operatorname{CrossAttn}(x, M))$, then
# $x \leftarrow \operatorname{LN}_2(x + \operatorname{FFN}(x))$.
#
# Two details. The memory is *not* normalised inside the block: it already left the encoder
# through a LayerNorm (the encoder's final one under pre-LN, its last block's under
# post-LN), and every block reads the same memory. And the LayerNorm names: `norm1` and
# `norm2` kept their Part I jobs (self-attention and FFN), so the new sublayer's norm is
# `norm3`. PyTorch numbers its three norms in execution order instead, so its `norm2` is our
# `norm3` and vice versa; the loader in `tinyformer.compat` maps them.
#
# Written out, with a block's submodules (`self_attn`, `cross_attn`, `ff`, `norm1..3`) and
# the package's masks:


# %%
def decoder_block(block, x, memory, src_mask):
    """x (B, T_tgt, D), memory (B, T_src, D), src_mask (B, 1, 1, T_src) -> (B, T_tgt, D)."""
    causal = causal_mask(
        x.shape[1], device=x.device
    )  # (T_tgt, T_tgt), True = may attend

    def self_attention(h):
        return block.self_attn(h, mask=causal)  # target reads earlier target positions

    def cross_attention(h):
        return block.cross_attn(
            h, context=memory, mask=src_mask
        )  # target reads the source

    if block.norm_first:  # pre-LN: x + sublayer(LN(x))
        x = x + self_attention(block.norm1(x))
        x = x + cross_attention(block.norm3(x))
        x = x + block.ff(block.norm2(x))
    else:  # post-LN (2017): LN(x + sublayer(x))
        x = block.norm1(x + self_attention(x))
        x = block.norm3(x + cross_attention(x))
        x = block.norm2(x + block.ff(x))
    return x


# %% [markdown]
# We check it against `tinyformer.decoder.DecoderBlock(cross_attention=True)` and against
# PyTorch's `nn.TransformerDecoderLayer` loaded with the same weights by
# `load_decoder_layer_from_torch`. PyTorch initialises every bias to 0 and every LayerNorm to
# $\gamma = 1, \beta = 0$; a copy that mixed up two biases or two norms would still agree
# then, so we randomise all its parameters first.
#
# > **Masks, once more.** PyTorch's `tgt_mask` and `memory_key_padding_mask` use the
# > **opposite** convention to ours: `True` = *blocked*. `to_torch_mask` inverts ours;
# > the key-padding mask is `(B, T_src)`, so we also drop the two broadcast dimensions.

# %%
B, T_tgt, T_src, D, H, F = 3, 6, 8, 32, 4, 64
src_demo = torch.tensor(  # source ids with 8, 5 and 3 real tokens: only the padding matters here
    [[1, 5, 6, 7, 8, 9, 10, 2], [1, 5, 6, 7, 2, 0, 0, 0], [1, 5, 2, 0, 0, 0, 0, 0]]
)
src_mask = padding_mask(src_demo, pad_id=0)  # (B, 1, 1, T_src)


def randomise(module, seed):
    """Random values for every parameter (LayerNorm gains around 1), so every copy matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            centre = 1.0 if "norm" in name and name.endswith("weight") else 0.0
            p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))


g = set_seed(0)
x = torch.randn(B, T_tgt, D, generator=g)  # (B, T_tgt, D) decoder input
memory = torch.randn(B, T_src, D, generator=g)  # (B, T_src, D) encoder output
for norm_first in (True, False):
    theirs = nn.TransformerDecoderLayer(
        D, H, F, dropout=0.0, batch_first=True, norm_first=norm_first
    ).eval()
    randomise(theirs, seed=1)
    ours = DecoderBlock(D, H, F, norm_first=norm_first, cross_attention=True).eval()
    load_decoder_layer_from_torch(ours, theirs)
    with torch.no_grad():
        written = decoder_block(ours, x, memory, src_mask)
        pkg = ours(x, memory=memory, memory_mask=src_mask)
        torch_out = theirs(
            x,
            memory,
            tgt_mask=to_torch_mask(causal_mask(T_tgt)),  # True = blocked: the future
            memory_key_padding_mask=to_torch_mask(src_mask)[:, 0, 0, :],  # True = pad
        )
    name = "pre-LN " if norm_first else "post-LN"
    same_pkg = torch.allclose(written, pkg, atol=1e-5)
    same_torch = torch.allclose(written, torch_out, atol=1e-5)
    print(
        f"{name}: written == DecoderBlock: {same_pkg} | == nn.TransformerDecoderLayer: {same_torch}"
    )
    assert same_pkg and same_torch

# %% [markdown]
# With `return_weights=True` the block also returns both attention maps: self-attention
# `(B, H, T_tgt, T_tgt)` and cross attention `(B, H, T_tgt, T_src)`.

# %%
with torch.no_grad():
    out, w_self, w_cross = ours(
        x, memory=memory, memory_mask=src_mask, return_weights=True
    )
print(
    "out",
    tuple(out.shape),
    "| self-attention",
    tuple(w_self.shape),
    "| cross",
    tuple(w_cross.shape),
)

# %% [markdown]
# ## Assembling the model
#
# `tinyformer.seq2seq.EncoderDecoder` is nothing but the parts we have:
#
# - `model.encoder` is Part II's `Encoder`: source embedding + positions, encoder blocks,
#   final LayerNorm (pre-LN). It builds the source padding mask from `src == pad_id`.
# - the decoder is Part I's `DecoderLM` layout with its own target embedding and
#   positions, but its blocks are `DecoderBlock(cross_attention=True)`; then the final
#   LayerNorm and the LM head, tied to the target embedding.
#
# `model.encode(src)` returns the memory and the source mask, `model.decode(tgt_in, memory,
# src_mask)` the logits; `model(src, tgt_in)` does both. Let us build a small one for the
# toy translation task and push one batch of three sentence pairs through it, writing each
# stage out with the model's own submodules.

# %%
lang = ToyLanguage()
src_vocab, tgt_vocab = Vocab(lang.words), Vocab(lang.target_words)
pairs = lang.sample_pairs(8, seed=0)
batch = [pairs[0], pairs[2], pairs[6]]  # 8, 6 and 3 words: the batch of Chapter 9
src = src_vocab.batch([s for s, _, _ in batch], bos=True, eos=True)  # (B, S)
tgt_in = tgt_vocab.batch([t for _, t, _ in batch], bos=True)  # (B, T)

set_seed(0)
model = EncoderDecoder(
    len(src_vocab), len(tgt_vocab), d_model=32, n_heads=4, n_encoder_layers=2,
    n_decoder_layers=2, d_ff=64, max_len=32,
).eval()  # fmt: skip
print("model.encoder is Part II's Encoder:", isinstance(model.encoder, Encoder))
print(
    "decoder blocks are DecoderBlocks with cross attention:",
    all(
        isinstance(blk, DecoderBlock) and blk.cross_attn is not None
        for blk in model.blocks
    ),
)

# %%
rows = []  # (stage, tensor)
with torch.no_grad():
    enc = model.encoder
    rows.append(("source ids", src))
    h = enc.drop(enc.pos(enc.tok_emb(src)))
    rows.append(("source embeddings + positions", h))
    src_mask = padding_mask(src, model.pad_id)
    rows.append(("source padding mask", src_mask))
    for i, block in enumerate(enc.blocks):
        h, w = block(h, mask=src_mask, return_weights=True)
        rows.append((f"encoder block {i + 1}: output", h))
        rows.append((f"encoder block {i + 1}: self-attention weights", w))
    memory = enc.norm_f(h)
    rows.append(("memory (after the final LayerNorm)", memory))
    rows.append(("target input ids", tgt_in))
    x = model.drop(model.pos(model.tok_emb(tgt_in)))
    rows.append(("target embeddings + positions", x))
    for i, block in enumerate(model.blocks):
        x, w_self, w_cross = block(
            x, memory=memory, memory_mask=src_mask, return_weights=True
        )
        rows.append((f"decoder block {i + 1}: output", x))
        rows.append((f"decoder block {i + 1}: self-attention weights", w_self))
        rows.append((f"decoder block {i + 1}: cross-attention weights", w_cross))
    x = model.norm_f(x)
    rows.append(("final LayerNorm", x))
    logits = model.lm_head(x)
    rows.append(("logits", logits))

B, S = src.shape
T, D, H, V_tgt = tgt_in.shape[1], model.d_model, model.n_heads, len(tgt_vocab)
names = {
    B: "B",
    S: "S",
    T: "T",
    D: "D",
    H: "H",
    V_tgt: "V_tgt",
    1: "1",
}  # sizes all differ
assert len(names) == 7
print(f"B={B}, S={S}, T={T}, D={D}, H={H}, V_src={len(src_vocab)}, V_tgt={V_tgt}\n")
print(f"{'stage':48} {'shape':18} in symbols")
for stage, t in rows:
    symbolic = "(" + ", ".join(names.get(n, str(n)) for n in t.shape) + ")"
    print(f"{stage:48} {str(tuple(t.shape)):18} {symbolic}")

# %% [markdown]
# Read it from top to bottom: the source lives at length $S = 10$ until it becomes the
# memory; the target lives at length $T = 9$; the two meet only in the cross-attention
# weights `(B, H, T, S)`. The stage-by-stage result is the model's own forward pass:

# %%
with torch.no_grad():
    direct, attention = model(src, tgt_in, return_attention=True)
print(
    "written-out stages == model(src, tgt_in):",
    torch.allclose(logits, direct, atol=1e-6),
)
print({k: [tuple(w.shape) for w in v] for k, v in attention.items()})
assert torch.allclose(logits, direct, atol=1e-6)

# %% [markdown]
# The three kinds of attention in one picture, for the first sentence (head 0 of the first
# layer; the model is untrained, so the patterns are random, but their shapes are not):
# the encoder's self-attention is square and full, `(S, S)`; the decoder's self-attention is
# square and causal, `(T, T)`; cross attention is rectangular, `(T, S)`.

# %%
b = 0
src_tokens = src_vocab.decode(src[b], strip_special=False)
tgt_tokens = tgt_vocab.decode(tgt_in[b], strip_special=False)
fig, axes = plt.subplots(1, 3, figsize=(17, 5.6))
maps = [
    (
        attention["encoder"][0][b, 0],
        src_tokens,
        src_tokens,
        "encoder self-attention (S × S)",
    ),
    (
        attention["decoder_self"][0][b, 0],
        tgt_tokens,
        tgt_tokens,
        "decoder self-attention (T × T)",
    ),
    (attention["cross"][0][b, 0], src_tokens, tgt_tokens, "cross attention (T × S)"),
]
for ax, (w, keys, queries, title) in zip(axes, maps, strict=True):
    plot_attention(w, keys, queries, ax=ax, title=title)
fig.suptitle(
    "The three attentions of an encoder-decoder transformer (untrained, head 0, layer 1)"
)
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
    V_s,
    V_t,
    D,
    F,
    L,
    n_enc,
    n_dec,
    norm_first=True,
    tie_weights=True,
    positional="learned",
):
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
for kwargs in [
    dict(),
    dict(norm_first=False),
    dict(tie_weights=False),
    dict(positional="sinusoidal"),
    dict(d_model=64, d_ff=256, n_encoder_layers=3, n_decoder_layers=1),
]:
    config = dict(d_model=32, d_ff=64, n_encoder_layers=2, n_decoder_layers=2) | kwargs
    m = EncoderDecoder(V_s, V_t, n_heads=4, max_len=32, **config)
    formula = expected_parameters(
        V_s, V_t, config["d_model"], config["d_ff"], 32,
        config["n_encoder_layers"], config["n_decoder_layers"],
        norm_first=config.get("norm_first", True), tie_weights=config.get("tie_weights", True),
        positional=config.get("positional", "learned"),
    )  # fmt: skip
    label = ", ".join(f"{k}={v}" for k, v in kwargs.items()) or "default"
    print(f"{label:55} model {m.num_parameters():7d}   formula {formula:7d}")
    assert m.num_parameters() == formula

# %% [markdown]
# Where do the parameters of our small model live? Almost all of them in the blocks, and a
# decoder block costs half as much again as an encoder block: its second attention layer and
# third LayerNorm, $4D^2 + 6D$ on top of the encoder block's $4D^2 + 2DF + F + 9D$.

# %%
D, F, L = 32, 64, 32
parts = {
    "source embedding": V_s * D,
    "target embedding\n(= LM head, tied)": V_t * D,
    "positions (2 tables)": 2 * L * D,
    "encoder blocks (2)": sum(p.numel() for p in model.encoder.blocks.parameters()),
    "decoder blocks (2)": sum(p.numel() for p in model.blocks.parameters()),
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
    enc = model.encoder
    src_emb = enc.pos(enc.tok_emb(src))  # (B, S, D)
    tgt_emb = model.pos(model.tok_emb(tgt_in))  # (B, T, D)
    pad = to_torch_mask(padding_mask(src, model.pad_id))[
        :, 0, 0, :
    ]  # (B, S), True = pad
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
    kwargs = dict(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0, batch_first=True,
                  norm_first=norm_first)  # fmt: skip
    if final_norms:  # the default nn.Transformer: a LayerNorm after each stack
        with (
            warnings.catch_warnings()
        ):  # PyTorch notes that its fast path is off for pre-LN
            warnings.filterwarnings("ignore", message="enable_nested_tensor is True")
            return nn.Transformer(num_encoder_layers=2, num_decoder_layers=2, **kwargs)
    # post-LN as in 2017: build the stacks ourselves, with norm=None (no final LayerNorm)
    enc_layer = nn.TransformerEncoderLayer(**kwargs)
    dec_layer = nn.TransformerDecoderLayer(**kwargs)
    return nn.Transformer(
        custom_encoder=nn.TransformerEncoder(
            enc_layer, 2, norm=None, enable_nested_tensor=False
        ),
        custom_decoder=nn.TransformerDecoder(dec_layer, 2, norm=None),
        **kwargs,
    )


for norm_first, final_norms in [(True, True), (False, False)]:
    set_seed(0)
    theirs = make_torch_transformer(norm_first, final_norms).eval()
    randomise(theirs, seed=2)
    ours = EncoderDecoder(
        V_s, V_t, d_model=32, n_heads=4, n_encoder_layers=2, n_decoder_layers=2, d_ff=64,
        norm_first=norm_first,
    ).eval()  # fmt: skip
    load_transformer_from_torch(ours, theirs)
    with torch.no_grad():
        diff = (
            (ours(src, tgt_in) - torch_logits(ours, theirs, src, tgt_in))
            .abs()
            .max()
            .item()
        )
    name = "pre-LN " if norm_first else "post-LN"
    print(
        f"{name}: same logits as nn.Transformer (max |difference| < 1e-5): {diff < 1e-5}"
    )
    assert diff < 1e-5

# %% [markdown]
# Both agree to float precision. One structural difference needed care, and it is worth
# knowing:
#
# - **`nn.Transformer` always ends each stack with a LayerNorm** (`encoder.norm`,
#   `decoder.norm`), whatever `norm_first` says. Under pre-LN that is exactly right: the
#   residual stream of a pre-LN stack is never normalised, so both our `Encoder` and our
#   decoder have a final LayerNorm (`norm_f`), and the loader copies theirs into ours.
#   Under post-LN each block already *ends* in a LayerNorm; the 2017 model, and ours, add
#   nothing after the last block, but the default `nn.Transformer` normalises a second time.
#   That is a different function (with trained $\gamma, \beta$ it is not a no-op), so the
#   loader refuses it, and for post-LN we built the reference from `nn.TransformerEncoder`
#   and `nn.TransformerDecoder` with `norm=None`:

# %%
try:
    load_transformer_from_torch(
        EncoderDecoder(V_s, V_t, d_model=32, n_heads=4, d_ff=64, norm_first=False),
        make_torch_transformer(norm_first=False, final_norms=True),
    )
except ValueError as error:
    print("ValueError:", textwrap.fill(str(error), width=96))

# %% [markdown]
# Two smaller differences do not change the function: PyTorch keeps each attention's three
# input projections in one stacked `in_proj_weight` `(3D, D)` where we have three
# `nn.Linear(D, D)`, and it numbers the decoder layer's norms in execution order (its
# `norm2` is our `norm3`). The loader handles both.

# %% [markdown]
# ## Teacher forcing, a preview
#
# How will this model learn to translate? Exactly as Part I's language model learned the
# source language: predict the next token, for every position at once. The decoder's input
# is the target shifted right behind `<bos>`; its labels are the target followed by `<eos>`:
#
# - decoder input: `<bos> y_1 y_2 … y_n`
# - labels:        `y_1 y_2 … y_n <eos>`
#
# Position $t$ reads the true target words before it (not the model's own guesses: hence
# "teacher forcing") and the whole source through cross attention, and predicts the next
# word. The causal mask guarantees that it cannot peek at the label it must predict
# (Chapter 9 checked it with gradients), so one forward pass trains all $n + 1$ positions.

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
# the target, so its loss should be near $\ln V_\text{tgt}$, the cross-entropy of a uniform
# guess over the target vocabulary, and somewhat above it: its random logits are not flat,
# and confident wrong guesses cost more than a uniform one.

# %%
targets = [t for _, t, _ in batch]
tgt_in = tgt_vocab.batch(targets, bos=True)  # (B, T): <bos> y_1 .. y_n
tgt_out = tgt_vocab.batch(targets, eos=True)  # (B, T): y_1 .. y_n <eos>
real = tgt_in[:, 1:] != tgt_vocab.pad_id  # labels are the inputs shifted left by one
assert torch.equal(tgt_in[:, 1:][real], tgt_out[:, :-1][real])
with torch.no_grad():
    logits = model(src, tgt_in)  # (B, T, V_tgt): all positions in one pass
    loss = lm_loss(logits, tgt_out, pad_id=tgt_vocab.pad_id)
print("input  ", tuple(tgt_in.shape), "| labels", tuple(tgt_out.shape))
print(f"untrained loss {loss.item():.2f} nats/token; ln V_tgt = {math.log(V_t):.2f}")
assert math.log(V_t) < loss.item() < math.log(V_t) + 1.5

# %% [markdown]
# Chapter 11 trains this model on the toy translation task and then decodes with it: one
# token at a time, feeding each prediction back in, since at test time there is no teacher.

# %% [markdown]
# ## What we learned
#
# - A decoder block with cross attention has three sublayers: causal self-attention, cross
#   attention to the memory, feed-forward; each wrapped as $x + f(\text{LN}(x))$ (pre-LN)
#   or $\text{LN}(x + f(x))$ (post-LN, the 2017 paper's). Our written-out block equals
#   `DecoderBlock(cross_attention=True)` and `nn.TransformerDecoderLayer` in both forms.
# - `EncoderDecoder` is Part II's `Encoder` plus Part I's decoder with cross attention in
#   every block. Shapes: source ids `(B, S)` → memory `(B, S, D)`; target ids `(B, T)` →
#   decoder blocks `(B, T, D)` with self-attention `(B, H, T, T)` and cross attention
#   `(B, H, T, S)` → logits `(B, T, V_tgt)`.
# - Its parameter count is
#   $(V_s + V_t + 2L)D + N_e P_e + N_d P_d + 4D$ (pre-LN, tied head), with
#   $P_e = 4D^2 + 2DF + F + 9D$ and $P_d = 8D^2 + 2DF + F + 15D$; asserted for five
#   configurations.
# - With the same weights, it equals `nn.Transformer` (our embeddings and LM head around
#   it), pre-LN and post-LN; `nn.Transformer` always adds final LayerNorms, which is right
#   for pre-LN and a second, extra normalisation for post-LN.
# - Teacher forcing: decoder input `<bos> + target`, labels `target + <eos>`; the untrained
#   loss is a little above $\ln V_\text{tgt}$, the cost of a uniform guess.

# %% [markdown]
# ## Exercises
#
# **1. The 2017 base model.** The base transformer of Vaswani et al. has $N_e = N_d = 6$,
# $D = 512$, $F = 2048$, sinusoidal positions, and one vocabulary of about 37 000 tokens
# shared by source and target, with the two embeddings and the output layer all tied (one
# matrix). Use the formula to estimate its size. The paper reports 65 million parameters.
#
# <details><summary>Solution</summary>
#
# With one shared embedding matrix the embeddings count $VD$ once, and post-LN has no final
# norms:
#
# ```python
# D, F, V = 512, 2048, 37_000
# P_e = 4 * D**2 + 2 * D * F + F + 9 * D
# P_d = 8 * D**2 + 2 * D * F + F + 15 * D
# print(V * D + 6 * P_e + 6 * P_d)  # 63_082_496
# ```
#
# About 63 million: the blocks hold 44 million, the shared embedding 19 million. That is
# within 3% of the reported 65 million; the paper gives its vocabulary size only roughly
# (each thousand tokens more adds half a million parameters) and does not break its count
# down, so we cannot say exactly where the rest comes from.
# </details>
#
# **2. Swap two sublayers.** Put cross attention *before* self-attention in every decoder
# block. Is the model still a valid translation model (can it be trained with teacher
# forcing and used to generate)? Why?
#
# <details><summary>Solution</summary>
#
# Yes. What makes teacher forcing legitimate is that target position $t$ never depends on
# target positions after $t$. Cross attention mixes information across *source* positions
# only: each target position's output depends on its own input and the memory. So any order
# of the three sublayers keeps the causal structure, as long as the self-attention stays
# causal. The order self → cross → FFN is a design choice (a position first gathers its
# target context, then asks the source), and it is the one PyTorch and the paper use; some
# later models interleave differently.
# </details>
#
# **3. Why is the memory not normalised inside the block?** In the pre-LN block the
# decoder's input goes through `norm3` before cross attention, but the memory does not.
# Where is the memory normalised, and what would change if each decoder block applied its
# own LayerNorm to the memory too?
#
# <details><summary>Solution</summary>
#
# The memory is the encoder's output *after* its final LayerNorm (`model.encoder.norm_f`),
# so it arrives normalised once, and every decoder block reads the same tensor. A per-block
# LayerNorm on the memory would give each block its own $\gamma, \beta$ for the memory (a
# few parameters), and is one more normalisation of something already normalised; its
# effect could be folded into each block's $W_K, W_V$ except for the recentring.
# `nn.TransformerDecoderLayer` does not do it either, which is why the parity check above
# holds.
# </details>
#
# **4. Sharing the vocabulary.** Our source and target have separate vocabularies of 47
# tokens each. If we used one joint vocabulary (all 84 words plus 5 specials) for both
# sides and tied the source embedding, the target embedding and the LM head, how many
# parameters would our $D = 32$ model save or add?
#
# <details><summary>Solution</summary>
#
# Separate: $(47 + 47) \cdot 32 = 3008$ embedding parameters (the head is already tied to
# the target embedding). Joint and shared: one `(89, 32)` matrix, $2848$. We save $160$
# parameters, and the LM head now scores all 89 tokens, including every source word, which
# the model must learn never to output. Sharing pays off when the languages share many
# tokens (subwords, names, numbers), as in the 2017 paper's English-German BPE vocabulary.
#
# ```python
# print((V_s + V_t) * 32, (len(lang.words) + len(lang.target_words) + 5) * 32)  # 3008 2848
# ```
# </details>
