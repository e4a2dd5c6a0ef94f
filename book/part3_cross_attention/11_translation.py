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
# # 11. Translating the toy language
#
# Chapter 10 built the whole 2017 transformer {cite}`vaswani2017attention`, an encoder and
# a decoder joined by cross attention, and left it untrained. In this chapter we train it to
# translate the toy language into its head-final twin, and then ask the questions one asks
# of a translation model: how often is it exactly right, how should we decode, where does
# its cross attention look, what happens without it, and what happens on sentences longer
# than any it was trained on.
#
# The toy task has one great advantage over real translation: the right answer is known
# exactly. Every source sentence has exactly one translation, and the language hands us
# the true {term}`word alignment`. So we can hold the model to 100 % and check its
# attention against the truth, not against our intuition.
#
# **Learning goals.** After this chapter you can
#
# - train an encoder-decoder with {term}`teacher forcing` on fresh sentence pairs, and say
#   what exposure bias is;
# - explain {term}`label smoothing`, compute the floor it puts under the loss and the cap it
#   puts on the model's confidence, and decide whether to use it;
# - translate a batch with {term}`greedy decoding` and {term}`beam search`, and measure
#   exact match and token accuracy on held-out sentences;
# - read cross-attention maps against the true alignment, and measure an *alignment
#   accuracy* without fooling yourself by choosing the layer on the test set;
# - cut the cross attention and explain what is left of the model;
# - test a model on sentences longer than any it saw, and explain why learned positions
#   fail there.

# %%
import math

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.language import ToyLanguage
from tinyformer.plot import plot_attention, plot_loss_curve
from tinyformer.seq2seq import EncoderDecoder, beam_search, greedy_decode
from tinyformer.train import lm_loss, set_seed, train
from tinyformer.vocab import Vocab

set_seed(0)  # seeds Python, NumPy and torch
set_matplotlib_formats(
    "png"
)  # PNG figures: the same in the book, on GitHub and in Colab
device = "cuda" if torch.cuda.is_available() else "cpu"

# %% [markdown]
# ## The task
#
# The source is the toy language of Part I; the target language (Chapter 9) has its own
# words and puts every head last: the verb ends the sentence, prepositional phrases and
# relative clauses come before their noun, adjectives and determiners after it. One pair,
# with its alignment (`alignment[j]` = the source index of target word `j`):

# %%
lang = ToyLanguage()
src_vocab, tgt_vocab = Vocab(lang.words), Vocab(lang.target_words)
PAD, BOS, EOS = tgt_vocab.pad_id, tgt_vocab.bos_id, tgt_vocab.eos_id
assert (src_vocab.pad_id, src_vocab.bos_id) == (
    PAD,
    BOS,
)  # the same special ids on both sides

source, target, alignment = lang.sample_pairs(1, seed=3)[0]
print("source:   ", " ".join(source))
print("target:   ", " ".join(target))
print("alignment:", alignment)
for j, i in enumerate(alignment):
    print(f"  target word {j:2d} {target[j]:>6}  <-  source word {i:2d} {source[i]}")

# %% [markdown]
# **What the encoder reads.** Chapters 9 and 10 framed the source as
# `<bos> w_1 … w_n <eos>`, as Part II's encoder did, where `<bos>` served as a summary
# position for classification. Here we feed the encoder the source words alone,
# `w_1 … w_n` (right-padded in a batch). Nothing reads a summary position in translation;
# the encoder sees the whole sentence at once, so it needs no start signal; and the padding
# mask already tells every layer where the sentence ends. Without the frame, source position
# $i$ *is* source word $i$, so the alignment indexes the cross-attention columns directly.
# (Framing works too; it only costs two positions and an index shift.)
#
# **What the decoder reads** is teacher forcing, as set up in Chapter 10: the input is
# `<bos> y_1 … y_n`, the labels are `y_1 … y_n <eos>`. Decoder position $j$ reads
# `<bos>` or $y_j$'s predecessor and must *predict* target word $y_{j+1}$ in 1-based
# words, that is target word `j` in the 0-based indexing of `alignment`. We keep that
# fact for later: the cross attention *at position* `j` is the one that produces target
# word `j`.


# %%
def make_batch(pairs):
    """pairs of (source, target, alignment) -> src (B, S), tgt_in (B, T), tgt_out (B, T),
    gold (B, T): the source index of each label (-1 at <eos> and padding)."""
    src = src_vocab.batch(
        [s for s, _, _ in pairs]
    )  # (B, S): w_1 .. w_n, no <bos>/<eos>
    tgt = tgt_vocab.batch([t for _, t, _ in pairs], bos=True, eos=True)  # (B, T + 1)
    gold = torch.full(tgt[:, 1:].shape, -1)
    for b, (_, _, a) in enumerate(pairs):
        gold[b, : len(a)] = torch.tensor(a)
    return (
        src.to(device),
        tgt[:, :-1].to(device),
        tgt[:, 1:].to(device),
        gold.to(device),
    )


src, tgt_in, tgt_out, gold = make_batch(lang.sample_pairs(3, seed=3))
print(
    "src",
    tuple(src.shape),
    "tgt_in",
    tuple(tgt_in.shape),
    "tgt_out",
    tuple(tgt_out.shape),
)
print("decoder input:", tgt_vocab.decode(tgt_in[0], strip_special=False))
print("labels:       ", tgt_vocab.decode(tgt_out[0], strip_special=False))
print("gold source index of each label:", gold[0].tolist())

# %% [markdown]
# ## Teacher forcing and exposure bias
#
# Teacher forcing trains every target position in one parallel pass: position $j$ is
# handed the *true* prefix $y_{<j}$, whatever the model would have produced there. At test
# time there is no teacher: the decoder reads its own previous outputs. So during training
# the model never sees a prefix that contains one of its own mistakes, and if it makes one
# at test time it is in a situation it was never trained for, where one error can pull the
# next ones after it. This train/test mismatch is called **exposure bias**
# {cite}`ranzato2016sequence`; remedies such as scheduled sampling
# {cite}`bengio2015scheduled` feed the model some of its own predictions during training.
# We do not need them here: a model that makes no mistakes is never off the trained path.
# But keep the idea in mind for the long sentences at the end of the chapter.
#
# ## Label smoothing
#
# The 2017 transformer was trained with **label smoothing** {cite}`szegedy2016rethinking`,
# $\varepsilon_{ls} = 0.1$. Instead of the one-hot target, the loss at each position uses
#
# $$q_k = (1 - \varepsilon)\,[k = y] + \frac{\varepsilon}{V},$$
#
# a mix of the one-hot vector and the uniform distribution over all $V$ classes (the true
# one included; this is also what `F.cross_entropy(..., label_smoothing=ε)` does). The loss
# is the cross-entropy against $q$:
#
# $$\mathcal{L}(p) = -\sum_k q_k \log p_k = H(q) + D_\mathrm{KL}(q \,\|\, p) \;\ge\; H(q).$$
#
# Two consequences follow from that one line.
#
# - **The loss has a floor above 0.** The best the model can do is $p = q$, and then it
#   still pays the entropy of $q$:
#   $$H(q) = -\Big(1 - \varepsilon + \tfrac{\varepsilon}{V}\Big)
#   \log\Big(1 - \varepsilon + \tfrac{\varepsilon}{V}\Big)
#   - (V - 1)\,\tfrac{\varepsilon}{V} \log \tfrac{\varepsilon}{V}.$$
# - **The model's confidence is capped.** At the optimum the true token gets
#   $1 - \varepsilon + \varepsilon / V$, never more; pushing it higher *raises* the loss.
#
# For our target vocabulary ($V = 47$: 42 words and 5 special tokens, which all get their
# share of $\varepsilon$) and $\varepsilon = 0.1$:

# %%
V = len(tgt_vocab)
eps = 0.1
p_true = 1 - eps + eps / V  # the smoothed target's weight on the true class
p_other = eps / V
floor = -p_true * math.log(p_true) - (V - 1) * p_other * math.log(p_other)
print(f"V = {V}, eps = {eps}")
print(f"largest useful probability of the true token: {p_true:.4f}")
print(f"loss floor H(q): {floor:.4f} nats/token")

# The same numbers from PyTorch: the loss of a model that predicts q exactly.
q = torch.full((1, V), p_other)
q[0, 7] = p_true  # class 7 plays the true token
smoothed_at_q = F.cross_entropy(q.log(), torch.tensor([7]), label_smoothing=eps)
print(f"F.cross_entropy(log q, label_smoothing=0.1): {smoothed_at_q.item():.4f}")
assert abs(smoothed_at_q.item() - floor) < 1e-5

# %% [markdown]
# That floor is large: 0.695 nats per token, a perplexity of 2.0 for a task whose true
# conditional entropy is zero. Now let a free vector of logits minimise the smoothed loss
# by gradient descent, and watch the probability it gives the true token:

# %%
logits = torch.zeros(1, V, requires_grad=True)
opt = torch.optim.Adam([logits], lr=0.1)
for _ in range(500):
    loss = F.cross_entropy(logits, torch.tensor([7]), label_smoothing=eps)
    opt.zero_grad()
    loss.backward()
    opt.step()
p_learned = logits.softmax(-1)[0, 7].item()
print(f"after 500 steps: p(true) = {p_learned:.4f}, loss = {loss.item():.4f}")
assert abs(p_learned - p_true) < 1e-3 and abs(loss.item() - floor) < 1e-4

# %% [markdown]
# The figure shows the loss as a function of the probability $p$ the model puts on the
# true token (spreading $1 - p$ evenly over the other $V - 1$ classes). Without smoothing
# the loss $-\log p$ falls all the way to 0 at $p = 1$; with $\varepsilon = 0.1$ it has its
# minimum at $p = 0.902$ and rises steeply towards $p = 1$, where the $\varepsilon / V$ owed
# to each other class meets a probability near zero.

# %%
p = np.linspace(0.3, 0.9999, 400)
fig, ax = plt.subplots(figsize=(7, 4))
for e, colour in [(0.0, "tab:blue"), (0.1, "tab:orange")]:
    rest = (1 - p) / (V - 1)
    loss_curve = -(1 - e + e / V) * np.log(p) - (V - 1) * (e / V) * np.log(rest)
    ax.plot(p, loss_curve, color=colour, label=f"ε = {e}")
ax.axhline(
    floor, color="tab:orange", linestyle="--", linewidth=1, label=f"floor {floor:.3f}"
)
ax.axvline(
    p_true, color="tab:orange", linestyle=":", linewidth=1, label=f"p = {p_true:.3f}"
)
ax.set_xlabel("probability of the true token, p")
ax.set_ylabel("loss (nats)")
ax.set_ylim(0, 2)
ax.set_title(f"Cross-entropy with and without label smoothing (V = {V})")
ax.legend()
fig.tight_layout()

# %% [markdown]
# **Do we use it?** Label smoothing is a regulariser: it stops a model from becoming
# arbitrarily sure of labels that may be wrong, or of one answer among several good ones,
# on a training set it could memorise. The 2017 paper reports that it hurt perplexity but
# helped BLEU. None of its reasons apply here: the translation is deterministic (one right
# answer, no label noise), every training step draws fresh sentences (nothing to
# memorise), and we want the loss to read as "0 = perfect" and the probabilities that beam
# search adds up to mean what they say. So we train **without** label smoothing; Exercise 1
# trains with it and compares.
#
# ## Training
#
# The model is Chapter 10's `EncoderDecoder` at the width of Part I's language model,
# $D = 64$ with 4 heads, pre-LN and learned positions, but with a lopsided stack: **one
# encoder block and three decoder blocks**, with $d_{ff} = 128$. The shape came from a small
# search (depths, widths, learning rate, batch size, steps; under a minute of training).
# The encoder only has to give each word a little context; the decoder does the hard part,
# fetching the source words in a new order, and in our search the decoder's depth and the
# batch size were what mattered (Exercise 5 lets you try a balanced 2 + 2 stack). Every
# step draws a fresh batch with its own seed, so the data are unlimited and reproducible.
#
# We train for 600 steps, more than the loss curve below seems to need, because the last
# few errors are fragile. At 400 steps, two of seven initial seeds left one or two of the
# 1,000 test sentences wrong, and on another CPU, whose different floating-point rounding
# sends training down a slightly different path, our own seed left three. At 600 steps all
# eight seeds we tried translated every test sentence.
#
# One restriction, for the experiment at the end of the chapter: we train only on
# sentences of **at most 11 words** (about 97 % of the language, as the next cell counts;
# the longest sentence has 15), and keep the longer ones unseen. The context `max_len = 16` is still big enough for every
# sentence: the encoder reads up to 15 words, the decoder `<bos>` plus up to 15 words.
#
# `get_batch` also records every training source, so that our test sentences can be
# checked against them. A small development set (teacher-forced loss during training,
# and later the choice of attention layer) is drawn with its own seed.

# %%
MAX_TRAIN_WORDS = 11
MAX_LEN = 16  # 15 source words for the encoder; <bos> + 15 target words for the decoder
STEPS, BATCH, LR, WARMUP = 600, 128, 5e-3, 50
TRAIN_SEED, DEV_SEED, TEST_SEED = 10_000, 1, 2

train_sources = set()


def get_batch(step):
    """A fresh batch for every step: ((src, tgt_in), tgt_out), sentences of <= 11 words."""
    pairs = lang.sample_pairs(BATCH, seed=TRAIN_SEED + step)
    pairs = [p for p in pairs if len(p[0]) <= MAX_TRAIN_WORDS]
    train_sources.update(tuple(s) for s, _, _ in pairs)
    src, tgt_in, tgt_out, _ = make_batch(pairs)
    return (src, tgt_in), tgt_out


def translation_loss(model, inputs, targets):
    """Mean cross-entropy per target token (words and <eos>); pads are ignored."""
    return lm_loss(model(*inputs), targets, PAD)  # logits (B, T, V); Part I's loss


dev_pairs = [
    p for p in lang.sample_pairs(300, seed=DEV_SEED) if len(p[0]) <= MAX_TRAIN_WORDS
]
dev_batch = make_batch(dev_pairs)


@torch.no_grad()
def dev_loss(model):
    src, tgt_in, tgt_out, _ = dev_batch
    return translation_loss(model, (src, tgt_in), tgt_out).item()


def new_model(**changes):
    """The chapter's model; keyword arguments change its configuration (see the exercises)."""
    config = dict(d_model=64, n_heads=4, n_encoder_layers=1, n_decoder_layers=3, d_ff=128,
                  max_len=MAX_LEN) | changes  # fmt: skip
    return EncoderDecoder(len(src_vocab), len(tgt_vocab), **config).to(device)


set_seed(0)
model = new_model()
# Kept for the last section: the position tables before training.
initial_positions = {
    "encoder": model.encoder.pos.weight.detach().clone(),
    "decoder": model.pos.weight.detach().clone(),
}
print(f"{model.num_parameters():,} parameters; {len(dev_pairs)} development sentences")
short_share = np.mean([len(s) <= MAX_TRAIN_WORDS for s in lang.sample(10_000, seed=5)])
print(
    f"share of sentences with <= {MAX_TRAIN_WORDS} words: {short_share:.3f} (10,000 samples)"
)

# %%
# NBVAL_IGNORE_OUTPUT
history = train(
    model, get_batch, steps=STEPS, lr=LR, warmup_steps=WARMUP, loss_fn=translation_loss,
    eval_fn=lambda m: {"dev_loss": dev_loss(m)}, eval_every=50, log_every=50,
)  # fmt: skip
model.eval()

# %% [markdown]
# The loss on a log scale: the target is 0, since the translation is deterministic (the
# conditional entropy of the target given the source is zero), and a log scale shows how
# many orders of magnitude of the way there the model has come.

# %%
window = 10
train_loss = np.convolve(history["loss"], np.ones(window) / window, mode="valid")
fig, ax = plt.subplots(figsize=(7, 4))
plot_loss_curve(
    history["step"][window - 1 :],
    train_loss,
    ax=ax,
    label=f"training (mean of {window})",
)
plot_loss_curve(
    history["eval_step"], history["dev_loss"], ax=ax, label="development set"
)
ax.set_yscale("log")
ax.set_xlabel("update")
ax.set_ylabel("cross-entropy (nats/token, log scale)")
ax.set_title("Training the translation model")
ax.legend()
fig.tight_layout()

# %%
assert history["dev_loss"][-1] < 0.02  # far below the 3.8 nats/token of a uniform guess

# %% [markdown]
# ## Held-out test sentences
#
# With fresh sampling, short sentences come back again and again: there are only
# $2 \cdot 3 \cdot 6 \cdot 4 = 144$ three-word sentences (two numbers, three determiners
# each, six nouns, four intransitive verbs), and they make up about a tenth of all samples.
# A test set drawn the same way would partly test memory. So we draw test sentences with
# their own seed, keep those of at most 11 words, and **drop every one whose source was
# seen in training** (or is in the development set), then keep the first 1,000. We report
# how many we dropped, by length.

# %%
candidates = [
    p for p in lang.sample_pairs(2_000, seed=TEST_SEED) if len(p[0]) <= MAX_TRAIN_WORDS
]
dev_sources = {tuple(s) for s, _, _ in dev_pairs}
seen = [tuple(s) in train_sources or tuple(s) in dev_sources for s, _, _ in candidates]
test_pairs = [p for p, was_seen in zip(candidates, seen, strict=True) if not was_seen][
    :1_000
]
print(f"{len(train_sources):,} distinct training sources")
print(f"{len(candidates)} candidates with <= {MAX_TRAIN_WORDS} words, {sum(seen)} seen before "
      f"({sum(seen) / len(candidates):.1%}); test set: {len(test_pairs)} unseen sentences")  # fmt: skip
for low, high in [(3, 5), (6, 8), (9, 11)]:
    group = [was_seen for (s, _, _), was_seen in zip(candidates, seen, strict=True)
             if low <= len(s) <= high]  # fmt: skip
    print(
        f"  {low:2d}-{high:2d} words: {np.mean(group):6.1%} of {len(group)} seen in training"
    )
lengths = [len(s) for s, _, _ in test_pairs]
print(f"mean source length: test {np.mean(lengths):.2f} words, "
      f"all candidates {np.mean([len(s) for s, _, _ in candidates]):.2f}")  # fmt: skip
assert len(test_pairs) == 1_000

# %% [markdown]
# Dropping the seen sentences removes mostly short ones, so the test set is a little
# *harder* than the language's own mix, which is what we want from a test.
#
# ## Decoding: greedy and beam search
#
# `greedy_decode` translates the whole batch at once, one token per step, feeding each
# sentence's prediction back in (with a {term}`KV cache` for the decoder's self-attention);
# a sentence that has produced `<eos>` emits padding until all are done. `beam_search`
# keeps the $K$ most probable prefixes of every sentence instead of one. We measure
#
# - **exact match**: the share of sentences whose output equals the reference exactly
#   (every word and the final `<eos>`);
# - **token accuracy**: the share of reference tokens (words and `<eos>`) that the output
#   has at the same position.


# %%
def correct_tokens(output, tgt_out):
    """output (B, 1 + n) from a decoder, tgt_out (B, T) -> (correct, real), each (B, T):
    which reference tokens the output has at the same position, and which are not padding."""
    generated = output[:, 1:]  # drop <bos>
    T = tgt_out.shape[
        1
    ]  # pad a batch that stopped early to the reference's width, or cut
    generated = F.pad(generated, (0, max(0, T - generated.shape[1])), value=PAD)[:, :T]
    real = tgt_out != PAD
    return (generated == tgt_out) & real, real


def scores(output, tgt_out):
    """-> (exact match, token accuracy) of a decoder's output against the reference."""
    correct, real = correct_tokens(output, tgt_out)
    exact = (correct | ~real).all(dim=1).float().mean().item()
    token = (correct.sum() / real.sum()).item()
    return exact, token


src, tgt_in, tgt_out, gold = make_batch(test_pairs)  # the 1,000 test sentences
ids = dict(bos_id=BOS, eos_id=EOS, pad_id=PAD)
greedy_out = greedy_decode(model, src, max_new_tokens=MAX_LEN, **ids)
beam_out, beam_scores = beam_search(
    model, src, beam_size=4, max_new_tokens=MAX_LEN, **ids
)
exact_match, token_accuracy = scores(greedy_out, tgt_out)
beam_exact, beam_token = scores(beam_out, tgt_out)
beam_differs = sum(
    tgt_vocab.decode(g) != tgt_vocab.decode(b)
    for g, b in zip(greedy_out, beam_out, strict=True)
)

# %%
# NBVAL_IGNORE_OUTPUT
print(
    f"greedy:     exact match {exact_match:.4f}   token accuracy {token_accuracy:.4f}"
)
print(f"beam (K=4): exact match {beam_exact:.4f}   token accuracy {beam_token:.4f}")
print(f"sentences where beam search changed the output: {beam_differs}")

# %%
assert exact_match >= 0.998 and beam_exact >= 0.998

# %% [markdown]
# Beam search has nothing to fix: the model is so sure of every next word that the most
# probable continuation at each step is also the start of the most probable sentence. Beam
# search earns its cost when the model's next-word distributions are flat and a word that
# looks worse now leads to a better sentence later. A few translations:

# %%
# NBVAL_IGNORE_OUTPUT
for (s, t, _), out in list(zip(test_pairs, greedy_out, strict=True))[:5]:
    prediction = tgt_vocab.decode(out)
    print(
        f"{' '.join(s)}\n  -> {' '.join(prediction)}  [{'ok' if prediction == t else 'WRONG'}]"
    )

# %% [markdown]
# ## Where does cross attention look?
#
# To produce target word $j$ the model must fetch source word `alignment[j]`. If cross
# attention does that fetching, the attention at the decoder position that *predicts*
# word $j$ should fall on that source word. We run the decoder with teacher forcing (the
# true prefix, exactly the inputs it was trained on) and read the cross-attention weights
# `(B, H, T_tgt, S)` of each layer: row $j$ (input `<bos>` or $y_{j-1}$) is the query that
# produces $y_j$, so its gold column is `alignment[j]`. The last row, which predicts
# `<eos>`, aligns with no word and is left out.
#
# Our model has three decoder layers of 4 heads each; which should we read? Choosing the best
# one *on the test sentences* would flatter the result (we would pick whichever happened to
# do best there). So we measure every head and every layer's head average on the
# **development** sentences, choose there, and report the choice on the 1,000 test
# sentences.


# %%
# NBVAL_IGNORE_OUTPUT
@torch.no_grad()
def cross_attention(model, batch):
    """Teacher-forced cross attention: (n_layers, B, H, T_tgt, S)."""
    src, tgt_in, _, _ = batch
    _, attention = model(src, tgt_in, return_attention=True)
    return torch.stack(attention["cross"])


def alignment_accuracy(weights, gold):
    """weights (B, T_tgt, S), gold (B, T_tgt) -> the share of target words whose
    strongest attention falls on their aligned source word."""
    words = gold >= 0
    return ((weights.argmax(-1) == gold) & words).sum().item() / words.sum().item()


dev_attention = cross_attention(model, dev_batch)  # (L, B, H, T, S)
n_layers, n_heads = dev_attention.shape[0], dev_attention.shape[2]
print("alignment accuracy on the development set")
print("layer  " + "  ".join(f"head {h}" for h in range(n_heads)) + "  head average")
layer_scores = []
for layer in range(n_layers):
    per_head = [
        alignment_accuracy(dev_attention[layer, :, h], dev_batch[3])
        for h in range(n_heads)
    ]
    averaged = alignment_accuracy(dev_attention[layer].mean(1), dev_batch[3])
    layer_scores.append(averaged)
    print(
        f"{layer + 1:5d}  "
        + "  ".join(f"{a:6.3f}" for a in per_head)
        + f"  {averaged:12.3f}"
    )

# %%
# NBVAL_IGNORE_OUTPUT
ALIGN_LAYER = int(np.argmax(layer_scores))
print(f"chosen: layer {ALIGN_LAYER + 1}, its {n_heads} heads averaged")

# %%
assert (
    ALIGN_LAYER > 0 and layer_scores[0] < max(layer_scores) - 0.2
)  # the first layer lags

# %% [markdown]
# The first decoder layer lags far behind the later ones. It cannot know yet what its
# position must produce: at that point its query has seen only the previous target word
# and its position (through one self-attention). The later layers have had one or two
# whole blocks to work that out, and their heads largely agree on where to look. (Which
# of the later layers comes out best can change from run to run; the cell above prints the
# choice.) Averaging a layer's heads is the natural summary when we do not
# want to hand-pick a head: it is one attention distribution per position, and the choice
# to make is only the layer.
#
# Now the heatmaps, for two test sentences with long-distance reordering: one whose
# subject carries a prepositional phrase, one with a relative clause. Left, the chosen
# layer's head-averaged cross attention; right, the true alignment drawn as a 0/1 matrix
# `(T_tgt, S)`: a 1 at row $j$, column `alignment[j]`.

# %%
test_attention = cross_attention(model, (src, tgt_in, tgt_out, gold))  # (L, B, H, T, S)
chosen = test_attention[ALIGN_LAYER].mean(
    1
)  # (B, T, S): the chosen layer, heads averaged


def first_with(word_set, min_words):
    return next(
        b for b, (s, _, _) in enumerate(test_pairs)
        if len(s) >= min_words and any(w in word_set for w in s)
    )  # fmt: skip


examples = [first_with({"near", "behind", "under"}, 9), first_with({"that"}, 10)]
fig, axes = plt.subplots(2, 2, figsize=(13, 11))
for row, b in enumerate(examples):
    s, t, a = test_pairs[b]
    true_matrix = torch.zeros(len(t), len(s))
    true_matrix[torch.arange(len(t)), torch.tensor(a)] = 1.0
    plot_attention(chosen[b, : len(t), : len(s)], s, t, ax=axes[row, 0],
                   title=f"cross attention, layer {ALIGN_LAYER + 1} (heads averaged)")  # fmt: skip
    plot_attention(true_matrix, s, t, ax=axes[row, 1], title="true alignment")
    for ax in axes[row]:
        ax.set_xlabel("source word")
        ax.set_ylabel("target word (the one this row predicts)")
fig.tight_layout()

# %% [markdown]
# Read a row of the left map as "to produce this target word, the decoder looked here".
# The bright cells follow the true alignment across the reorderings: the verb that comes
# last in the target is fetched from the middle of the source, the noun of the
# prepositional phrase from the end of the subject, and so on. Over all 1,000 test
# sentences:

# %%
# NBVAL_IGNORE_OUTPUT
alignment_acc = alignment_accuracy(chosen, gold)
other_layers = [
    alignment_accuracy(test_attention[layer].mean(1), gold) for layer in range(n_layers)
]
print(
    f"alignment accuracy, layer {ALIGN_LAYER + 1} heads averaged (test): {alignment_acc:.4f}"
)
print(
    "every layer's head average on the test set:", [round(a, 3) for a in other_layers]
)

# %%
assert alignment_acc >= 0.90

# %% [markdown]
# > **An attention map is not an explanation.** High alignment accuracy says the strongest
# > attention weight lands on the right source word. It does not say that the model uses
# > only that word: values are vectors mixed by the encoder, so the memory at position $i$
# > carries information about other words too. The next experiment asks the cruder but
# > firmer question: what does the model do *without* cross attention?
#
# ## Cutting the cross attention
#
# We switch the cross-attention sublayers off at inference: a forward hook replaces each
# one's output by zeros, so the residual stream passes through as if the sublayer were not
# there. The source then has no path into the decoder at all.


# %%
class CrossAttentionCut:
    """Within `with CrossAttentionCut(model):` every cross-attention sublayer outputs zeros."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        def zero_output(module, inputs, output):
            if isinstance(output, tuple):  # (out, weights) when weights were asked for
                return (torch.zeros_like(output[0]), *output[1:])
            return torch.zeros_like(output)

        self.hooks = [
            blk.cross_attn.register_forward_hook(zero_output)
            for blk in self.model.blocks
        ]
        return self.model

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


@torch.no_grad()
def teacher_forced_accuracy(model, batch):
    src, tgt_in, tgt_out, _ = batch
    predicted = model(src, tgt_in).argmax(-1)
    real = tgt_out != PAD
    return ((predicted == tgt_out) & real).sum().item() / real.sum().item()


test_batch = (src, tgt_in, tgt_out, gold)
with CrossAttentionCut(model):
    cut_out = greedy_decode(model, src, max_new_tokens=MAX_LEN, **ids)
    cut_exact, cut_token = scores(cut_out, tgt_out)
    cut_forced = teacher_forced_accuracy(model, test_batch)
full_forced = teacher_forced_accuracy(model, test_batch)
distinct = {tuple(tgt_vocab.decode(o)) for o in cut_out}

# %%
# NBVAL_IGNORE_OUTPUT
print(f"with cross attention:    exact match {exact_match:.4f}  token accuracy {token_accuracy:.4f}"
      f"  teacher-forced accuracy {full_forced:.4f}")  # fmt: skip
print(f"without cross attention: exact match {cut_exact:.4f}  token accuracy {cut_token:.4f}"
      f"  teacher-forced accuracy {cut_forced:.4f}")  # fmt: skip
print(f"distinct outputs for {len(test_pairs)} different sources: {len(distinct)}")
print("the one output:", " ".join(next(iter(distinct))))

# %%
assert cut_exact < 0.01 and len(distinct) == 1 and cut_forced < full_forced - 0.5

# %% [markdown]
# Translation collapses: without cross attention the decoder produces **one and the same**
# sentence for every source, so exact match is (almost) 0. What is left is a *target-side
# language model*, $p(y_j \mid y_{<j})$: the decoder still knows the target language's
# habits (which kind of word tends to follow which), so with the true prefix in hand it
# still guesses some next words right (the teacher-forced accuracy is far above the 1/42
# of a blind guess), but it has no idea *which* sentence it is translating. Everything the
# decoder knows about the source came through cross attention.
#
# ## Longer than anything seen in training
#
# Our model has never seen a sentence of more than 11 words. How does it do on 12 to 15?
# Long sentences are rare (3 % of the language; 15 words, 1 in 5,000), so we sample them
# from the *same grammar with different rule probabilities*: every subject gets a
# prepositional phrase or relative clause, every verb an object, every noun an adjective or
# two. Every such sentence is a sentence of our language (we check, and check its
# translation), just a long one. For comparison the same plot shows lengths 3 to 11 from
# the test set.

# %%
long_lang = ToyLanguage(
    p_modifier=(0.0, 0.5, 0.5), p_transitive=1.0, p_adjectives=(0.0, 0.5, 0.5)
)
long_pairs = [
    p for p in long_lang.sample_pairs(600, seed=4) if len(p[0]) > MAX_TRAIN_WORDS
]
for s, t, a in long_pairs[
    :50
]:  # each is a sentence of the toy language, translated alike
    assert lang.is_grammatical(s) and lang.translate(s) == (t, a)
long_src, _, long_tgt_out, _ = long_batch = make_batch(long_pairs)
long_out = greedy_decode(model, long_src, max_new_tokens=MAX_LEN, **ids)


def exact_by_length(pairs, output, tgt_out):
    """{source length: (exact match, number of sentences)}."""
    correct, real = correct_tokens(output, tgt_out)
    exact = (correct | ~real).all(dim=1).tolist()
    by_length = {}
    for (s, _, _), ok in zip(pairs, exact, strict=True):
        by_length.setdefault(len(s), []).append(ok)
    return {n: (np.mean(v), len(v)) for n, v in sorted(by_length.items())}


by_length = exact_by_length(test_pairs, greedy_out, tgt_out) | exact_by_length(
    long_pairs, long_out, long_tgt_out
)

# %%
# NBVAL_IGNORE_OUTPUT
for n, (acc, count) in by_length.items():
    print(f"{n:2d} words: exact match {acc:.3f}  ({count} sentences)")

# %%
fig, ax = plt.subplots(figsize=(8, 4))
lengths = list(by_length)
ax.bar(lengths, [by_length[n][0] for n in lengths],
       color=["tab:blue" if n <= MAX_TRAIN_WORDS else "tab:red" for n in lengths])  # fmt: skip
ax.axvline(MAX_TRAIN_WORDS + 0.5, color="black", linestyle="--", linewidth=1)
ax.text(MAX_TRAIN_WORDS + 0.6, 0.9, "longer than any\ntraining sentence", fontsize=9)
ax.set_xticks(lengths)
ax.set_xlabel("source length (words)")
ax.set_ylabel("exact match (greedy)")
ax.set_ylim(0, 1.05)
ax.set_title("Exact match by sentence length")
fig.tight_layout()

# %%
assert set(range(MAX_TRAIN_WORDS + 1, 16)) <= set(
    by_length
)  # every unseen length is probed
assert all(acc >= 0.95 for n, (acc, _) in by_length.items() if n <= MAX_TRAIN_WORDS)
assert all(acc <= 0.5 for n, (acc, _) in by_length.items() if n > MAX_TRAIN_WORDS)

# %% [markdown]
# A cliff, not a slope. Why? Look at what a sentence of 12 or more words needs that no
# training sentence ever provided: encoder positions 11 to 14 (0-based; training sources
# used 0 to 10) and decoder positions 12 to 15 (training used `<bos>` plus at most 11
# words, positions 0 to 11). The rows of the **learned positional embeddings** for those
# positions never received a gradient. They are still their random initial vectors, shrunk
# a little by weight decay, which AdamW applies to every matrix whether it is used or not.
# We can check that exactly: a row that never got a gradient equals its initial value times
# $\prod_t (1 - \eta_t \lambda)$, with $\eta_t$ the learning rate of step $t$ and
# $\lambda = 0.1$ the weight decay.

# %%
decay = float(np.prod([1 - lr * 0.1 for lr in history["lr"]]))
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=True)
for ax, (side, used) in zip(
    axes, [("encoder", MAX_TRAIN_WORDS), ("decoder", MAX_TRAIN_WORDS + 1)], strict=True
):
    W0 = initial_positions[side]
    W = (model.encoder.pos if side == "encoder" else model.pos).weight.detach()
    moved = (
        (W - W0).norm(dim=1) / W0.norm(dim=1)
    ).cpu()  # relative change per position
    ax.bar(
        range(MAX_LEN),
        moved,
        color=["tab:blue"] * used + ["tab:red"] * (MAX_LEN - used),
    )
    ax.axhline(
        1 - decay, color="black", linestyle=":", linewidth=1, label="weight decay only"
    )
    ax.set_xlabel(f"{side} position")
    ax.set_title(
        f"{side}: positions 0-{used - 1} trained, {used}-{MAX_LEN - 1} never used"
    )
    ax.legend()
    # The unused rows are exactly the initial rows times the decay factor:
    assert torch.allclose(W[used:], W0[used:] * decay, atol=1e-6)
axes[0].set_ylabel("|P - P_init| / |P_init|")
fig.suptitle("How far each learned position vector moved during training")
fig.tight_layout()
print(f"weight-decay factor on the unused rows: {decay:.4f}")

# %% [markdown]
# So from position 11 on, the encoder adds a random vector instead of a position the
# attention layers know how to read, and from position 12 on so does the decoder. No
# amount of grammar knowledge helps a model that cannot tell where a word is. And
# exposure bias makes things worse: once the decoder has produced one wrong word, every
# later position reads a prefix it never saw in training. Learned positions do not
# extrapolate, by construction. Positions that are a fixed function of the index
# (sinusoids) or relative ones (Chapter 2) are at least *defined* beyond the training
# range, but that does not make a model use them well there; length generalisation is a
# known weakness of transformers, and Exercise 3 lets you try sinusoids. The honest summary:
# this model translates the sentences it was trained on perfectly, and its competence
# ends at the longest one.
#
# ## Results

# %%
# NBVAL_IGNORE_OUTPUT
print(f"exact_match: {exact_match:.4f}")
print(f"token_accuracy: {token_accuracy:.4f}")
print(f"alignment_accuracy: {alignment_acc:.4f}")
assert exact_match >= 0.998, exact_match
assert alignment_acc >= 0.90, alignment_acc

# %% [markdown]
# ## What we learned
#
# - Teacher forcing trains all target positions in one pass on the true prefix; at test
#   time the decoder reads its own outputs, a mismatch called exposure bias.
# - Label smoothing trains against $(1 - \varepsilon)$ one-hot $+ \varepsilon / V$
#   uniform: the loss can no longer reach 0 (its floor is $H(q)$, 0.695 nats for
#   $\varepsilon = 0.1$, $V = 47$) and the loss is lowest when the true token gets
#   $1 - \varepsilon + \varepsilon / V = 0.902$, not 1. It regularises; a deterministic task with
#   unlimited data does not need it.
# - A small encoder-decoder (one encoder block, three decoder blocks) learns the
#   head-final translation from fresh samples in a few hundred steps and translates 1,000 unseen sentences (almost) perfectly; beam
#   search changes nothing when the model is this sure.
# - Read at the position that *predicts* each target word, a later decoder layer's
#   cross attention (heads averaged, chosen on a development set) lands on the aligned
#   source word more than 90 % of the time: the model learned the word alignment without
#   ever being shown it.
# - Without cross attention the decoder is a target-side language model: one output for
#   every source, exact match 0.
# - Learned positions that were never used in training are random vectors: a model
#   trained on sentences of up to 11 words fails on every longer one.
#
# ## Exercises
#
# **1. Label smoothing in practice.** Train the same model with
# `F.cross_entropy(..., label_smoothing=0.1)` in `translation_loss`. What does the
# training loss converge to, what is the model's largest next-token probability on the
# test set, and does exact match change?
#
# <details><summary>Solution</summary>
#
# ```python
# def smoothed_loss(model, inputs, targets):
#     logits = model(*inputs)
#     return F.cross_entropy(logits.flatten(0, 1), targets.flatten(),
#                            ignore_index=PAD, label_smoothing=0.1)
#
# set_seed(0)
# smoothed = new_model()
# h = train(smoothed, get_batch, steps=STEPS, lr=LR, warmup_steps=WARMUP,
#           loss_fn=smoothed_loss, log_every=100)
# smoothed.eval()
# with torch.no_grad():
#     top = smoothed(src, tgt_in).softmax(-1).max(-1).values[tgt_out != PAD]
# print(np.mean(h["loss"][-20:]))  # ≈ 0.70 (the floor 0.695)
# print(top.mean().item(), top.max().item())  # ≈ 0.90 (the optimum 0.902), ≈ 0.92
# print(scores(greedy_decode(smoothed, src, max_new_tokens=MAX_LEN, **ids), tgt_out))
# ```
#
# The loss levels off just above the floor 0.695 nats/token computed above, never near 0,
# and the predicted token's probability settles around the optimum 0.902 (mean about 0.90;
# even the largest stays near 0.92, far from 1). The argmax, and so greedy
# decoding, is unaffected by the cap, so exact match stays (close to) perfect: on this
# task label smoothing costs little and buys nothing, and it makes the loss curve harder
# to read.
# </details>
#
# **2. Exposure bias, by hand.** Take a test sentence, change one word of the decoder's
# input prefix (teacher forcing with one wrong word at position $j$), and look at the
# predictions at the positions after $j$. Does the model recover?
#
# <details><summary>Solution</summary>
#
# ```python
# b, j = examples[1], 3
# corrupted = tgt_in[b : b + 1].clone()
# corrupted[0, j] = tgt_vocab.encode(["hun"])[0]  # any wrong word
# with torch.no_grad():
#     before = model(src[b : b + 1], tgt_in[b : b + 1]).argmax(-1)[0]
#     after = model(src[b : b + 1], corrupted).argmax(-1)[0]
# print(tgt_vocab.decode(before, strip_special=False))
# print(tgt_vocab.decode(after, strip_special=False))
# ```
#
# Usually the model keeps translating the source correctly at most later positions: it
# reads the source through cross attention and the position through the positional
# embedding, so one wrong input word does not derail it. Positions that depend on the
# wrong word (e.g. the word right after it, or a plural ending that agrees with it) can
# change. The stronger the conditioning on the source, the weaker the exposure bias;
# a target-side language model (the cut model above) has nothing else to go on.
# </details>
#
# **3. Sinusoidal positions and length.** Retrain with `positional="sinusoidal"` and redo
# the length probe. Do sentences of 12 to 15 words fare better?
#
# <details><summary>Solution</summary>
#
# Build the model with `new_model(positional="sinusoidal")`, train it with the same
# `get_batch`, and rerun the length-probe cells. The sinusoidal vectors for positions 11 to
# 15 are well defined, unlike the untrained learned rows, but the attention layers never
# saw them during training: expect, at best, some success at 12 words and a quick fall
# after. A fixed formula for positions does not by itself teach a model to use positions
# it has never seen; that needs relative positions designed to extrapolate (ALiBi, Chapter
# 2) and usually training on varied lengths, too.
# </details>
#
# **4. Why not the first layer?** In the development table the first decoder layer's
# alignment accuracy is much lower than the later layers'. Look at its heatmap for the relative
# clause example. Where does it look instead?
#
# <details><summary>Solution</summary>
#
# ```python
# first = test_attention[0].mean(1)
# b = examples[1]
# s, t, _ = test_pairs[b]
# plot_attention(first[b, : len(t), : len(s)], s, t, title="layer 1, heads averaged")
# ```
#
# Its rows tend to look at the source word aligned with the decoder's *input* (the previous
# target word, which the query already knows), or to spread over several words. A first
# layer has had only one self-attention step to work out what comes next, so it cannot yet
# ask for the right word; it gathers context that the later layers use to ask precisely.
# </details>
#
# **5. Where should the layers go?** Train a balanced model, `new_model(n_encoder_layers=2,
# n_decoder_layers=2)`, with the same budget, and compare exact match and the alignment
# table. Which stack matters more for this task, and why?
#
# <details><summary>Solution</summary>
#
# ```python
# set_seed(0)
# balanced = new_model(n_encoder_layers=2, n_decoder_layers=2)
# train(balanced, get_batch, steps=STEPS, lr=LR, warmup_steps=WARMUP,
#       loss_fn=translation_loss, log_every=100)
# balanced.eval()
# print(scores(greedy_decode(balanced, src, max_new_tokens=MAX_LEN, **ids), tgt_out))
# ```
#
# Compare the printed exact match with the chapter's model. The encoder's job here is
# light: each source word is translated by itself, so the encoder mostly has to pass each
# word through, with a little context (a noun's number for its determiner, say). The
# decoder has to work out, from the prefix it has written, *which* source word comes next
# in the head-final order, fetch it, and translate it; that search over positions is where
# depth helps. In our run the balanced model translated 999 of the 1,000 test sentences
# exactly, against the chapter model's 1,000, and its last decoder layer again aligned
# best on the development set (0.99, against 0.81 for its first).
# </details>
