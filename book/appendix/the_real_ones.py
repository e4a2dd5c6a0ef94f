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
# # The real ones
#
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/appendix/the_real_ones.ipynb">Open in Colab</a> · runs in about 15 s on two CPU cores
#
# Each part of the course built one kind of transformer, and each kind has a famous real
# member: Part I's decoder is GPT-2 {cite}`radford2019language`, Part II's encoder is BERT
# {cite}`devlin2019bert`, and Part III's encoder-decoder has a whole family: the
# transformer translators trained with the Marian toolkit {cite}`junczys2018marian`,
# released as OPUS-MT {cite}`tiedemann2020opus` for hundreds of language pairs (we call
# them Marian models, as `transformers` does). Their weights are available on the Hugging
# Face Hub in the format of the `transformers` library {cite}`wolf2020transformers`
# (converted from their original releases).
#
# This page shows that our `tinyformer` models *are* these models: the same computation,
# up to a handful of switches in `TransformerConfig`. `tinyformer.pretrained` reads a
# `transformers` checkpoint, renames its weights into ours, and the two libraries then
# compute the same logits to better than $10^{-5}$ (float32 rounding). Everything below
# runs offline on small, randomly initialised models of each architecture. Only the last
# section, when you ask for it (it runs by itself in Colab), downloads the real weights
# and lets our code write, fill in a blank and translate.
#
# **Learning goals.** After this page you can
#
# - name what each family changed from the course's defaults, and the chapter where we
#   built the idea it changes;
# - read a `transformers` state dict and say which `tinyformer` parameter each tensor
#   becomes, including the ones that must be transposed or split;
# - check that a converted model computes the same logits, with padding, and generates
#   the same tokens;
# - load GPT-2, BERT or an OPUS-MT translator with
#   `tinyformer.pretrained.load_pretrained`.

# %%
import importlib.util
import os
import socket
import sys
import tempfile
import textwrap
import threading
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import torch

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm, in Jupyter
import transformers  # noqa: E402  (after the filter)
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.decode import generate, greedy_decode
from tinyformer.layers import SinusoidalPositionalEncoding
from tinyformer.pretrained import config_from_hf, load_pretrained
from tinyformer.train import set_seed

# PNG at twice the pixels: sharp in the book, on GitHub and in Colab
set_matplotlib_formats("retina")
transformers.logging.set_verbosity_error()  # no warnings about the tiny random models
transformers.logging.disable_progress_bar()
set_seed(0)
WORK = Path(tempfile.mkdtemp())  # where the small checkpoints are saved

# %% [markdown]
# ## Three families, one stack
#
# Every model of the course is a `TransformerStack` (embeddings, blocks, final norm) plus
# a head, built from one `TransformerConfig`. The defaults are the course's own choices.
# The real families chose differently in a few places, and each choice is a switch of the
# config:
#
# | what | course default | GPT-2 | BERT | Marian (OPUS-MT) | built in |
# |---|---|---|---|---|---|
# | block | pre-LN | pre-LN | post-LN | post-LN | [Chapter 4](../part1_decoder/04_the_decoder_block.ipynb) |
# | final LayerNorm | with pre-LN | yes | no | no | [Chapter 4](../part1_decoder/04_the_decoder_block.ipynb) |
# | attention | causal | causal | bidirectional | both + cross | Chapters [3](../part1_decoder/03_self_attention.ipynb), [6](../part2_encoder/06_bidirectional_attention.ipynb), [9](../part3_cross_attention/09_cross_attention.ipynb) |
# | positions | learned | learned | learned | sinusoidal, halves | [Chapter 2](../part1_decoder/02_embeddings_and_positions.ipynb) |
# | token vectors × $\sqrt{D}$ | yes | no | no | yes | [Chapter 2](../part1_decoder/02_embeddings_and_positions.ipynb) |
# | LayerNorm after embeddings | no | no | yes | no | Chapters [2](../part1_decoder/02_embeddings_and_positions.ipynb), [4](../part1_decoder/04_the_decoder_block.ipynb) |
# | segment embeddings | none | none | 2 types | none | Chapters [6](../part2_encoder/06_bidirectional_attention.ipynb), [8](../part2_encoder/08_sentence_classification.ipynb) |
# | feed-forward activation | ReLU | GELU (tanh) | GELU (erf) | SiLU | [Chapter 4](../part1_decoder/04_the_decoder_block.ipynb) |
# | LayerNorm $\epsilon$ | $10^{-5}$ | $10^{-5}$ | $10^{-12}$ | $10^{-5}$ | [Chapter 4](../part1_decoder/04_the_decoder_block.ipynb) |
# | output layer | tied | tied | tied, + bias | tied, + bias | Chapters [4](../part1_decoder/04_the_decoder_block.ipynb), [7](../part2_encoder/07_masked_language_modelling.ipynb), [10](../part3_cross_attention/10_the_encoder_decoder.ipynb) |
# | embeddings shared src/tgt | — | — | — | yes | [Chapter 10](../part3_cross_attention/10_the_encoder_decoder.ipynb) |
#
# Why each choice:
#
# - **Pre-LN or post-LN**
#   ([Chapter 4](../part1_decoder/04_the_decoder_block.ipynb)). The 2017 paper
#   {cite}`vaswani2017attention`, BERT and Marian normalise *after* each residual sum;
#   GPT-2 moved the norm *before* each sublayer and added one at the end, which trains
#   deep stacks more stably {cite}`xiong2020layer`. A post-LN stack already ends in a
#   norm, so it needs no final one.
# - **Positions** ([Chapter 2](../part1_decoder/02_embeddings_and_positions.ipynb)).
#   GPT-2 and BERT learn a table of 1024 and 512 positions. Marian keeps the fixed
#   sinusoids of the 2017 paper, but stores the sines of all frequencies first and then
#   all the cosines (`positional="sinusoidal_halves"`), where the chapter interleaved
#   them. To a model trained with one layout the other is a different encoding, so
#   loading weights must get it right (figure below).
# - **Embedding scale** (the same chapter). Multiplying token vectors by $\sqrt{D}$ keeps
#   them as large as the sinusoids, whose entries are of size 1. GPT-2 and BERT learn
#   their positions: they initialise the token and the position tables at the same small
#   scale (standard deviation 0.02; GPT-2's original code used 0.01 for the positions), so
#   neither drowns the other and no factor is needed.
# - **BERT's extra embeddings** (Chapters
#   [6](../part2_encoder/06_bidirectional_attention.ipynb) and
#   [8](../part2_encoder/08_sentence_classification.ipynb)). BERT adds a *segment* vector
#   saying whether a token belongs to the first or the second sentence of a pair (its
#   pre-training task paired sentences), and normalises the sum of the three embeddings.
# - **GELU and SiLU** ([Chapter 4](../part1_decoder/04_the_decoder_block.ipynb)). Smooth
#   cousins of ReLU: GELU, $x\,\Phi(x)$ {cite}`hendrycks2016gaussian`, which GPT-2
#   computes with a tanh approximation, and SiLU ("swish"), $x\,\sigma(x)$
#   {cite}`ramachandran2017searching`. The tanh form and the exact one differ by up to
#   $5 \times 10^{-4}$, far more than rounding, so the config names both (exercise 1).
# - **Output layer** (Chapters [4](../part1_decoder/04_the_decoder_block.ipynb),
#   [7](../part2_encoder/07_masked_language_modelling.ipynb) and
#   [10](../part3_cross_attention/10_the_encoder_decoder.ipynb)). All three tie it to the
#   token embedding {cite}`press2017using`. BERT's masked-LM head and Marian add a bias
#   per vocabulary entry; Marian shares one matrix between source embedding, target
#   embedding and output, since OPUS-MT uses one vocabulary for both languages.
#
# `config_from_hf` reads a `transformers` config and fills in ours. Here it is on three
# small configs of the real architectures (the repr shows only what differs from the
# course's defaults):

# %%
V = 97  # a small vocabulary for the random models: id 1 is <eos>, id 96 <pad>
EOS, PAD = 1, V - 1
small = dict(vocab_size=V, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=EOS)
hf_configs = {
    "gpt2": transformers.GPT2Config(
        n_embd=64, n_layer=2, n_head=4, n_positions=64, **small
    ),
    "bert": transformers.BertConfig(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        **{**small, "pad_token_id": 0},
    ),
    "marian": transformers.MarianConfig(
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_position_embeddings=64,
        activation_function="swish",  # as in the OPUS-MT checkpoints
        scale_embedding=True,
        decoder_start_token_id=PAD,
        forced_eos_token_id=None,
        **small,
    ),
}
for family, hf_config in hf_configs.items():
    print(
        textwrap.fill(
            f"{family}: {config_from_hf(hf_config)}", 86, subsequent_indent="  "
        )
    )

# %% [markdown]
# Now a model of each family, with random weights, saved to disk exactly as a published
# checkpoint is (`save_pretrained` writes `config.json` and `model.safetensors`), and
# loaded back by `load_pretrained`. The random initialisation of `transformers` leaves
# every LayerNorm at gain 1 and bias 0 and every bias at 0; we randomise all of them, so
# that a conversion that mixed up a gain and a bias could not go unnoticed.


# %%
def randomise(model, seed):
    """Every parameter random (LayerNorm gains around 1), and Marian's output bias."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:  # Marian's sinusoids: a formula, not weights
                continue
            noise = torch.randn(p.shape, generator=g)
            if p.dim() == 1:
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.2 * noise)
            else:
                p.copy_(2 * noise / p.shape[-1] ** 0.5)
        if hasattr(model, "final_logits_bias"):
            bias = model.final_logits_bias
            bias.copy_(torch.randn(bias.shape, generator=g))
    return model.eval()


hf_classes = {
    "gpt2": transformers.GPT2LMHeadModel,
    "bert": transformers.BertForPreTraining,  # like bert-base-uncased: MLM + pooler
    "marian": transformers.MarianMTModel,
}
theirs, ours = {}, {}
for seed, (family, cls) in enumerate(hf_classes.items()):
    theirs[family] = randomise(cls(hf_configs[family]), seed)
    theirs[family].save_pretrained(WORK / family)
    ours[family] = load_pretrained(WORK / family)
    print(f"{family:7s} -> {type(ours[family]).__name__:15s}", end=" ")
    print(f"{ours[family].num_parameters():,} parameters")

# %% [markdown]
# ## The parameter names, side by side
#
# A checkpoint is a dictionary from names to tensors. The cell below pairs each module of
# our model (the embeddings, the first block, the head) with the checkpoint tensor its
# weight came from, found by value: the weights are random, so a tensor matches only its
# own source. "transposed" and "q third" mark the two places where GPT-2 stores a weight
# differently from `nn.Linear`.


# %%
def source_of(t, hf_state):
    """(Hugging Face name, how) of the checkpoint tensor that ``t`` was made from."""
    for name, h in hf_state.items():
        if h.shape == t.shape and torch.equal(h, t):
            return name, "same"
    for name, h in hf_state.items():
        if h.dim() == 2 and h.t().shape == t.shape and torch.equal(h.t(), t):
            return name, "transposed"
        if h.numel() == t.numel() and torch.equal(h.reshape(t.shape), t):
            return name, f"reshaped from {tuple(h.shape)}"
        if h.shape[-1] == 3 * t.shape[0]:  # GPT-2's c_attn: q, k, v side by side
            for which, part in zip("qkv", h.t().chunk(3), strict=True):
                if torch.equal(part, t):
                    return name, f"{which} third" + (
                        ", transposed" if h.dim() == 2 else ""
                    )
    return "(none)", ""


def side_by_side(family, ours_block, hf_block):
    """One row per module of ours (of the blocks, the first only): its source.

    A bias is shown only where it does not come from the same module as its weight."""
    hf_state = theirs[family].state_dict()
    seen, weight_source = set(), {}
    print(f"{'tinyformer':22s}{'transformers':38s}{'shape':7s}how")
    for name, t in ours[family].state_dict().items():
        module, kind = name.rsplit(".", 1)
        if ".blocks." in name and not name.startswith(ours_block):
            continue
        source, how = source_of(t, hf_state)
        source_module = source.rsplit(".", 1)[0]
        if kind == "weight":
            weight_source[module] = source_module
        elif weight_source.get(module) == source_module:
            continue
        else:
            module, source_module = name, source  # e.g. Marian's final_logits_bias
        if t.data_ptr() in seen:
            how += " (tied)"
        seen.add(t.data_ptr())
        if module.startswith(ours_block):
            if module.endswith("self_attn.q_proj"):  # the block's first module
                print(f"block 0: {ours_block}* <- {hf_block}*")
            module = "  " + module[len(ours_block) :]
            source_module = "  " + source_module[len(hf_block) :]
        shape = "x".join(map(str, t.shape))
        print(f"{module:22s}{source_module:38s}{shape:7s}{how}")


side_by_side("gpt2", "decoder.blocks.0.", "transformer.h.0.")

# %% [markdown]
# GPT-2 was written with a `Conv1D` module that computes $y = x W + b$ with $W$ of shape
# `(D_in, D_out)`: the transpose of `nn.Linear`'s `(D_out, D_in)`. And it keeps the query,
# key and value projections of [Chapter 3](../part1_decoder/03_self_attention.ipynb) in
# one `(D, 3D)` matrix `c_attn`, which we cut in three. Our `lm_head.weight` is the token
# embedding itself (tied), so the checkpoint need not store it. BERT's names are longer
# but its matrices need no transposing; its MLM head
# ([Chapter 7](../part2_encoder/07_masked_language_modelling.ipynb)) is `head.dense`,
# `head.norm` and the tied `head.output`, and the checkpoint also has a *pooler*, the
# `tanh` layer over the first token that its next-sentence task used, which becomes
# `model.pooler`:

# %%
side_by_side("bert", "encoder.blocks.0.", "bert.encoder.layer.0.")

# %% [markdown]
# Marian's decoder block has the three sublayers of
# [Chapter 10](../part3_cross_attention/10_the_encoder_decoder.ipynb): `self_attn`,
# `encoder_attn` (our `cross_attn`) and the feed-forward `fc1`, `fc2`, each with its
# post-LN norm.
# `model.shared` is the one matrix behind the source embedding, the target embedding and
# the output layer, and `final_logits_bias` the output layer's bias:

# %%
side_by_side("marian", "decoder.blocks.0.", "model.decoder.layers.0.")

# %% [markdown]
# The sinusoidal positions appear in neither column: they are a formula, computed when the
# model is built. Marian computes the same numbers as
# [Chapter 2](../part1_decoder/02_embeddings_and_positions.ipynb) but stores them in
# another order, which is why `TransformerConfig` needs `positional="sinusoidal_halves"`:

# %% mystnb={"figure": {"caption": "The same sinusoidal encoding (D = 64, 48 positions) in two layouts. Left: the 2017 layout, with sine and cosine of each frequency side by side. Right: Marian's, with the sines of all 32 frequencies first, then the 32 cosines. Same values, columns permuted.", "name": "fig-real-ones-sinusoid-layouts"}, "image": {"alt": "Two heatmaps of 48 positions by 64 dimensions with values from -1 to 1. Left: fine stripes that alternate column by column and slow down towards the right. Right: two halves side by side, sines then cosines, each slowing down towards its right edge; at the low frequencies on the right of each half the sine half fades to white (0) while the cosine half fades to dark blue (1)."}} tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
for ax, halves in zip(axes, (False, True), strict=True):
    pe = SinusoidalPositionalEncoding(64, 48, halves=halves).pe
    image = ax.imshow(pe, cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set_xlabel("dimension")
    ax.set_title(
        "all sines, then all cosines (Marian)" if halves else "the 2017 layout"
    )
axes[0].set_ylabel("position")
fig.colorbar(image, ax=axes, fraction=0.03)
plt.show()

# %% [markdown]
# ## Same logits
#
# Now the test that matters: the same input through both libraries. A batch of three
# sequences of lengths 16, 9 and 4, right-padded. `transformers` takes the padding as an
# `attention_mask`; our decoder needs none
# ([Chapter 5](../part1_decoder/05_training_and_generation.ipynb): under the causal mask
# a real token never sees the padding after it) and our encoders build the mask from
# `ids == pad_id` ([Chapter 6](../part2_encoder/06_bidirectional_attention.ipynb)).
# The padded positions compute meaningless values in both libraries, so we compare the
# real positions only.

# %%
lengths = torch.tensor([16, 9, 4])
real = torch.arange(16)[None, :] < lengths[:, None]  # (B, T) True at real tokens


def random_batch(pad, low=2, high=V - 1):
    ids = torch.randint(low, high, (3, 16))
    return ids.masked_fill(~real, pad), real.long()


def report(family, expected, got, mask):
    """Print the largest gap between the logits at the real positions; return it."""
    gap = (expected - got).abs()[mask].max().item()
    spread = expected[mask].std().item()
    bound = "< 1e-5" if gap < 1e-5 else f"= {gap:.1e}"  # float32 rounding: < 1e-5
    print(f"{family:7s} max |Δlogit| {bound}  (logits' std {spread:.1f})")
    return gap


ids, mask = random_batch(PAD)
with torch.no_grad():
    gap_gpt2 = report(
        "GPT-2",
        theirs["gpt2"](ids, attention_mask=mask).logits,
        ours["gpt2"](ids),
        real,
    )
    ids, mask = random_batch(pad=0)
    types = (torch.arange(16) >= 6).long().expand(3, 16)  # sentence A, then sentence B
    gap_bert = report(
        "BERT",
        theirs["bert"](
            ids, attention_mask=mask, token_type_ids=types
        ).prediction_logits,
        ours["bert"](ids, token_type_ids=types),
        real,
    )
    src, src_mask = random_batch(PAD)
    tgt = torch.randint(2, V - 1, (3, 10))
    tgt[:, 0] = hf_configs["marian"].decoder_start_token_id
    gap_marian = report(
        "Marian",
        theirs["marian"](
            input_ids=src, attention_mask=src_mask, decoder_input_ids=tgt
        ).logits,
        ours["marian"](src, tgt),
        torch.ones(3, 10, dtype=torch.bool),
    )

# %% [markdown]
# The logits range over several units and agree to better than $10^{-5}$: what is left is
# float32 rounding, from adding the same numbers in a different order. (The Marian batch
# has padded *sources*; every target position is real.)
#
# ## Same tokens
#
# Equal logits give equal greedy choices, unless two candidates tie to within rounding,
# which random logits of this spread essentially never do. So our `generate` at
# temperature 0 ([Chapter 5](../part1_decoder/05_training_and_generation.ipynb)) must
# continue a prompt exactly as `transformers`' `generate` with `do_sample=False`, and our
# `greedy_decode` ([Chapter 11](../part3_cross_attention/11_translation.ipynb)) must
# translate exactly as its `generate` with `num_beams=1`. Marian starts every translation
# from `decoder_start_token_id`, which is its `<pad>` token: our `bos_id`.

# %%
prompt = torch.randint(2, V - 1, (3, 6))
with torch.no_grad():
    expected = theirs["gpt2"].generate(
        prompt,
        attention_mask=torch.ones_like(prompt),
        do_sample=False,
        max_new_tokens=24,
        pad_token_id=PAD,
    )
got = generate(ours["gpt2"], prompt, 24, temperature=0, eos_id=EOS, pad_id=PAD)
print("GPT-2, first prompt, continued:", got[0, 6:18].tolist(), "...")
print("same tokens as transformers:", torch.equal(got, expected))

start = ours["marian"].hf_config.decoder_start_token_id
with torch.no_grad():
    expected = theirs["marian"].generate(
        input_ids=src, attention_mask=src_mask, do_sample=False, num_beams=1,
        max_new_tokens=30,
    )  # fmt: skip
got, _ = greedy_decode(ours["marian"], src, 30, bos_id=start, eos_id=EOS, pad_id=PAD)
print("Marian, first source, translated:", got[0, :12].tolist(), "...")
print("same tokens as transformers:", torch.equal(got, expected))

# %% [markdown]
# Random weights write dull text: one token over and over, with the odd exception. What
# matters here is that both libraries write the *same* dull text, token for token.

# %%
assert max(gap_gpt2, gap_bert, gap_marian) < 1e-5

# %% [markdown]
# <div class="admonition note">
# <p class="admonition-title">What <code>load_pretrained</code> refuses</p>
# <p>A checkpoint whose tensors do not match its config (one missing, one left over, one
# of the wrong shape) raises an error that names them; nothing is silently left at its
# random initial value. So does a family or an option that our blocks cannot compute,
# such as GPT-2's <code>scale_attn_by_inverse_layer_idx</code> or BERT's relative
# positions: better no model than a model that computes something else.</p>
# </div>

# %%
try:
    config_from_hf(transformers.BertConfig(position_embedding_type="relative_key"))
except ValueError as err:
    print(textwrap.fill(f"ValueError: {err}", 86))

# %% [markdown]
# ## With the real weights
#
# The three cells below download real checkpoints from the Hugging Face Hub, about 550 MB,
# 440 MB and 300 MB, with their tokenizers, and run them through our code next to
# `transformers`. They are opt-in: they run by themselves only in Colab, and elsewhere
# only when the environment variable `TINYFORMER_ONLINE` is `1`, `true` or `yes` (e.g.
# `TINYFORMER_ONLINE=1 jupyter lab`). The book's build, the tests and `make test` never
# set it, so there each cell prints one line saying that it skipped and how to run it.
# Even when asked, a cell runs only if `huggingface.co` answers within 3 seconds.


# %%
def online_requested():
    """True in Colab, or when TINYFORMER_ONLINE is 1, true or yes."""
    flag = os.environ.get("TINYFORMER_ONLINE", "").strip().lower()
    return "google.colab" in sys.modules or flag in {"1", "true", "yes"}


def hub_reachable(timeout=3.0):
    """Whether huggingface.co accepts a connection within ``timeout`` seconds.

    The connection runs in a thread that we wait for at most ``timeout`` seconds:
    ``create_connection``'s own timeout does not cover the DNS lookup before it."""
    answered = []

    def connect():
        try:
            socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
            answered.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answered)


WHY_NOT = ""  # why the cells below skip, if they do
if not online_requested():
    WHY_NOT = (
        "the real-weight cells are opt-in; to run them, open this page in Colab "
        "or set TINYFORMER_ONLINE=1 before starting Jupyter"
    )
elif os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes"}:
    WHY_NOT = "HF_HUB_OFFLINE is set, so nothing can be downloaded"
elif not hub_reachable():
    WHY_NOT = "huggingface.co cannot be reached from this machine"
HUB = not WHY_NOT

# %% tags=["nbval-ignore-output"]
# REAL WEIGHTS (downloads gpt2, ~550 MB): GPT-2 continues a sentence.
if not HUB:
    print(f"skipped GPT-2: {WHY_NOT}")
else:
    tokenizer = transformers.AutoTokenizer.from_pretrained("gpt2")
    gpt2 = load_pretrained("gpt2")
    reference = transformers.AutoModelForCausalLM.from_pretrained("gpt2").eval()
    prompt = tokenizer("The transformer is a model that", return_tensors="pt").input_ids
    eos = gpt2.hf_config.eos_token_id  # <|endoftext|>, also used as padding
    got = generate(gpt2, prompt, 25, temperature=0, eos_id=eos, pad_id=eos)
    with torch.no_grad():
        expected = reference.generate(
            prompt, do_sample=False, max_new_tokens=25, pad_token_id=eos
        )
    print(tokenizer.decode(got[0]))
    print("same tokens as transformers:", torch.equal(got, expected))
    assert torch.equal(got, expected)

# %% tags=["nbval-ignore-output"]
# REAL WEIGHTS (downloads bert-base-uncased, ~440 MB): BERT fills in a blank.
if not HUB:
    print(f"skipped BERT: {WHY_NOT}")
else:
    tokenizer = transformers.AutoTokenizer.from_pretrained("bert-base-uncased")
    bert = load_pretrained("bert-base-uncased")
    reference = transformers.BertForMaskedLM.from_pretrained("bert-base-uncased").eval()
    batch = tokenizer(
        ["The capital of France is [MASK].", "She poured the [MASK] into a cup."],
        return_tensors="pt",
        padding=True,
    )
    with torch.no_grad():
        got = bert(batch.input_ids, token_type_ids=batch.token_type_ids)
        expected = reference(**batch).logits
    where = batch.input_ids == tokenizer.mask_token_id
    for row in range(2):
        top = got[row][where[row]][0].topk(5).indices
        print(tokenizer.decode(batch.input_ids[row][batch.attention_mask[row] == 1]))
        print("   ours:", tokenizer.convert_ids_to_tokens(top))
    gap = (got - expected).abs()[batch.attention_mask == 1].max().item()
    print(f"max |Δlogit| at real positions: {gap:.1e}")
    assert gap < 1e-3

# %% tags=["nbval-ignore-output"]
# REAL WEIGHTS (downloads Helsinki-NLP/opus-mt-en-de, ~300 MB): Marian translates.
if not HUB:
    print(f"skipped Marian: {WHY_NOT}")
elif importlib.util.find_spec("sentencepiece") is None:
    print(
        "skipped Marian: its tokenizer needs sentencepiece: pip install sentencepiece"
    )
else:
    name = "Helsinki-NLP/opus-mt-en-de"
    tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    marian = load_pretrained(name)
    reference = transformers.MarianMTModel.from_pretrained(name).eval()
    batch = tokenizer(
        ["The cat sat on the mat.", "Attention is all you need, they said."],
        return_tensors="pt",
        padding=True,
    )
    ids = marian.hf_config
    # Marian's generation settings never let it output <pad> (bad_words_ids); the same
    # for ours: an output bias of -inf for <pad>.
    with torch.no_grad():
        marian.lm_head.bias[ids.pad_token_id] = float("-inf")
    got, _ = greedy_decode(
        marian,
        batch.input_ids,
        64,
        bos_id=ids.decoder_start_token_id,
        eos_id=ids.eos_token_id,
        pad_id=ids.pad_token_id,
    )
    with torch.no_grad():
        expected = reference.generate(
            **batch, do_sample=False, num_beams=1, max_new_tokens=64
        )
    for line in tokenizer.batch_decode(got, skip_special_tokens=True):
        print(line)
    print("same tokens as transformers:", torch.equal(got, expected))
    assert torch.equal(got, expected)

# %% [markdown]
# ## What we learned
#
# - GPT-2, BERT and Marian are the three models of the course. What separates them from
#   our defaults and from each other is a short list of switches: where the LayerNorm
#   sits, how positions are made and laid out, whether token vectors are scaled, which
#   activation, which epsilon, which extra embeddings, and which matrices are shared.
# - A checkpoint is names and tensors. Converting one is renaming, plus two changes of
#   layout in GPT-2 (transposed `Conv1D` weights, and q, k, v in one matrix).
# - Loading is exact or it is a bug: `load_pretrained` fills every parameter of a model
#   built from the config (`load_state_dict(strict=True)`) and refuses checkpoints and
#   options it cannot reproduce.
# - Equal logits, to float32 rounding, mean equal greedy generations and translations:
#   the code we wrote chapter by chapter runs the published models.
#
# ## Exercises
#
# **1. The other GELU.** Load the small GPT-2 checkpoint above, then build a second model
# from `dataclasses.replace(model.config, activation="gelu")` with the same weights. How
# far apart are the logits of the two? Is the difference a rounding error?
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# import dataclasses
# from tinyformer.decoder import DecoderLM
#
# model = load_pretrained(WORK / "gpt2")
# exact = DecoderLM(dataclasses.replace(model.config, activation="gelu")).eval()
# exact.load_state_dict(model.state_dict())
# ids = torch.randint(0, V, (2, 16))
# with torch.no_grad():
#     print((model(ids) - exact(ids)).abs().max())
# ```
#
# The two GELUs differ by at most about $5 \times 10^{-4}$ at any input, and the
# difference passes through two blocks and a LayerNorm, so the logits move by around
# $10^{-3}$ here: a hundred times the float32 rounding we measured (under $10^{-5}$).
# Not a rounding error, then, but a different function: close enough that a model trained
# with one still works with the other, not close enough for an exact comparison.
#
# </details>
#
# **2. Interleaved instead of halves.** Build the small Marian model with
# `positional="sinusoidal"` instead of `"sinusoidal_halves"`, with the loaded weights.
# How far do its logits move? At which positions?
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# import dataclasses
# from tinyformer.seq2seq import EncoderDecoder
#
# model = load_pretrained(WORK / "marian")
# wrong = EncoderDecoder(dataclasses.replace(model.config, positional="sinusoidal"))
# wrong.load_state_dict(model.state_dict())
# with torch.no_grad():
#     print((model(src, tgt) - wrong.eval()(src, tgt)).abs().max())
# ```
#
# The logits move by whole units, at every position, position 0 included: there the
# interleaved encoding is $(0, 1, 0, 1, \dots)$ and Marian's $(0, \dots, 0, 1, \dots, 1)$.
# Every token vector gets a different position vector from the one the weights were
# trained with, and through attention every output depends on all of them.
#
# </details>
