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
# # 7. Masked language modelling
#
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/part2_encoder/07_masked_language_modelling.ipynb">Open in Colab</a> · runs in about 20 s on two CPU cores
#
# [Chapter 6](06_bidirectional_attention.ipynb) built an encoder, a stack that gives every token a vector informed by the
# whole sentence, and showed that it cannot be trained like Part I's decoder: asked for
# the next token, it would copy it from its input. BERT's answer {cite}`devlin2019bert`
# is a fill-in-the-blanks game. Hide some words of a sentence, and train the encoder to
# recover them from what is left, on **both** sides. This is
# {term}`masked language modelling` (MLM).
#
# The toy language lets us do something BERT's authors could not: compute the **best
# possible** answer for every hidden word, and measure how close our model comes to it.
#
# **Learning goals.** After this chapter you can
#
# - state BERT's recipe (choose 15 % of the tokens; replace 80 % of those by `<mask>`, 10 %
#   by a random word, keep 10 %) and say what each part is for;
# - write the corruption out and check it against `tinyformer.objectives.mask_tokens`;
# - train a masked language model on fresh toy sentences;
# - compare its accuracy and cross-entropy with the {term}`Bayes-optimal` ceiling for one
#   hidden word, using a low-noise measure of accuracy, on test positions that no choice
#   of ours has seen;
# - measure what the right-hand context is worth, by predicting the same words with
#   Part I's decoder from the left only;
# - read a trained encoder's attention map, and test what it suggests.

# %%
import math
import random

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.attention import record_attention
from tinyformer.config import TransformerConfig
from tinyformer.decoder import DecoderLM
from tinyformer.encoder import MaskedLM
from tinyformer.language import ToyLanguage
from tinyformer.objectives import IGNORE_INDEX, mask_tokens, mlm_loss
from tinyformer.plot import plot_attention
from tinyformer.train import evaluating, set_seed, train
from tinyformer.vocab import Vocab

set_seed(0)  # seeds Python, NumPy and torch
# One thread: on two, the embedding's backward pass adds up its gradient in an order
# that changes from run to run, and training turns that rounding into different
# numbers (in one test run, different enough to fail a check below). On one thread
# every run gives exactly the numbers printed here.
torch.set_num_threads(1)
# PNG figures at twice the pixels (same size on the page): the same in the book, on
# GitHub and in Colab.
set_matplotlib_formats("retina")

lang = ToyLanguage()
vocab = Vocab(lang.words)
V = len(vocab)
print(vocab)

# %% [markdown]
# ## The objective
#
# Take a sentence $w_1 \dots w_n$, choose a random set $M$ of positions, and corrupt the
# input there, giving $\tilde w$. The encoder reads $\tilde w$ (all of it, both directions)
# and outputs a distribution $q(\cdot \mid \tilde w)$ at every position; the loss is the
# cross-entropy at the chosen positions only:
#
# $$\mathcal{L} = -\frac{1}{|M|} \sum_{i \in M} \log q(w_i \mid \tilde w).$$
#
# Positions outside $M$ contribute nothing, not even those the model could trivially copy.
#
# How well could *any* model do? Hide a single word $w_i$ and show all the others,
# $w_{-i}$. The best possible prediction is the language's own conditional distribution
# $P(w \mid w_{-i})$, which `ToyLanguage.masked_distribution` computes exactly (by
# parsing the sentence with a wildcard at position $i$). From it:
#
# - the best possible **accuracy** is $\max_w P(w \mid w_{-i})$: always guess the most
#   probable word, and you are right that often;
# - the lowest possible **cross-entropy** is the conditional entropy
#   $H(W_i \mid w_{-i}) = -\sum_w P(w \mid w_{-i}) \log P(w \mid w_{-i})$.
#
# For example, in *the dog near the cats sleeps*:

# %%
sentence = "the dog near the cats sleeps".split()
for i in (1, 4, 5):
    hidden = sentence[:i] + ["<mask>"] + sentence[i + 1 :]
    dist = lang.masked_distribution(sentence, i)
    best = max(dist.values())
    entropy = -sum(p * math.log(p) for p in dist.values())
    shown = ", ".join(f"{w} {p:.3f}" for w, p in list(dist.items())[:6])
    print(" ".join(hidden))
    print(f"   P: {shown}{', ...' if len(dist) > 6 else ''}")
    print(f"   best accuracy {best:.3f}, conditional entropy {entropy:.3f} nats")

# %% [markdown]
# The subject noun is one of six singular nouns, each with probability $1/6$: *sleeps*
# rules out the plurals, but nothing says which dog-like creature it was. The attractor's
# slot takes any of the twelve nouns, singular or plural, $1/12$ each: nothing in the
# sentence constrains an attractor's number, and *the* goes with both. The verb must be
# singular and intransitive (nothing follows it). The ceiling is low because the language is random, not because the task
# is badly posed; a model that reaches it has learned all there is to learn.

# %% [markdown]
# ## BERT's recipe: 15 %, then 80/10/10
#
# BERT {cite}`devlin2019bert` (section 3.1) chooses **15 %** of the token positions at
# random. Then, of the chosen positions,
#
# - **80 %** are replaced by `<mask>`,
# - **10 %** by a random word,
# - **10 %** are left unchanged,
#
# and the model must predict the original word at every chosen position. Why so
# complicated?
#
# - **Why hide only 15 %?** A language model learns from every token of a sentence; an MLM
#   learns only from the chosen ones, so a small rate makes training slower. A large rate
#   removes too much context: the more words are hidden, the less is left to predict them
#   from, and the further the training inputs are from real sentences. 15 % is BERT's
#   compromise.
# - **Why not always `<mask>`?** Because `<mask>` never occurs after pre-training, when
#   the encoder reads real sentences ([Chapter 8](08_sentence_classification.ipynb)). BERT's authors call this "a mismatch
#   between pre-training and fine-tuning". If every chosen word became `<mask>`, the model
#   could learn that only `<mask>` positions ever need a prediction, and put little effort
#   into the vectors of ordinary words, exactly the vectors that fine-tuning uses.
# - **Why random words?** A chosen word that looks like an ordinary word forces the model
#   to doubt every input word: "the Transformer encoder does not know which words it will
#   be asked to predict or which have been replaced by random words, so it is forced to
#   keep a distributional contextual representation of every input token"
#   {cite}`devlin2019bert`. Only $15\% \times 10\% = 1.5\%$ of all tokens become random
#   words, too few to damage the model's grasp of the language.
# - **Why keep some unchanged?** To "bias the representation towards the actual observed
#   word": at an unchanged position the right answer is the word that is there, so the
#   model learns that its input is usually trustworthy.
#
# In their ablation (Appendix C.2) the mix mattered little when the whole model was
# fine-tuned, and more when the encoder's vectors were used as fixed features, where
# always using `[MASK]` did worst. Special tokens are never chosen: `<bos>`, `<eos>` and
# `<pad>` carry no word to predict.
#
# ### Written out
#
# One uniform number per position decides whether it is chosen, a second decides what
# happens to it, and a third draw picks the random word. Labels are the original ids at
# chosen positions and $-100$ elsewhere, `F.cross_entropy`'s default `ignore_index`, so
# the loss skips them without any extra masking.


# %%
def corrupt(ids, vocab, p=0.15, generator=None):
    """ids (B, T) -> (inputs, labels), both (B, T): BERT's 15 % and 80/10/10."""
    special = torch.tensor(sorted(vocab.special_ids))
    words = torch.tensor([i for i in range(len(vocab)) if i not in vocab.special_ids])
    maskable = ~torch.isin(ids, special)  # ordinary words only, never <bos>/<eos>/<pad>

    chosen = maskable & (torch.rand(ids.shape, generator=generator) < p)
    action = torch.rand(
        ids.shape, generator=generator
    )  # <0.8 mask, <0.9 random, else keep
    random_word = words[torch.randint(len(words), ids.shape, generator=generator)]

    inputs = ids.masked_fill(chosen & (action < 0.8), vocab.mask_id)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_word, inputs)
    labels = ids.masked_fill(~chosen, -100)  # -100: no prediction asked here
    return inputs, labels


ids = vocab.batch(lang.sample(6, seed=3), bos=True, eos=True)  # (B, T)
ours = corrupt(ids, vocab, generator=torch.Generator().manual_seed(1))
theirs = mask_tokens(ids, vocab, generator=torch.Generator().manual_seed(1))
print(
    "corrupt == tinyformer.objectives.mask_tokens:", all(map(torch.equal, ours, theirs))
)
assert all(map(torch.equal, ours, theirs))

# %% [markdown]
# A masked batch, row by row: the sentence, what the encoder reads, and the labels (`·`
# marks $-100$, no prediction).

# %%
inputs, labels = mask_tokens(ids, vocab, generator=torch.Generator().manual_seed(1))
print(
    "ids",
    tuple(ids.shape),
    "-> inputs",
    tuple(inputs.shape),
    "and labels",
    tuple(labels.shape),
)
for row in range(4):
    words = vocab.decode(ids[row], strip_special=False)
    seen = vocab.decode(inputs[row], strip_special=False)
    asked = [vocab.itos[i] if i != -100 else "·" for i in labels[row].tolist()]
    width = [
        max(len(a), len(b), len(c)) for a, b, c in zip(words, seen, asked, strict=True)
    ]
    for name, toks in (("sentence", words), ("input", seen), ("labels", asked)):
        print(
            f"{name:>9}: "
            + " ".join(t.ljust(w) for t, w in zip(toks, width, strict=True))
        )
    print()

# %% [markdown]
# Six sentences are too few to see the proportions; 8,000 are plenty. A random
# replacement is drawn from all 42 words, so it hits the original word $1/42$ of the time
# (BERT does the same); we count those among the unchanged.

# %%
big = vocab.batch(lang.sample(8000, seed=5), bos=True, eos=True)  # (8000, T)
inputs, labels = mask_tokens(big, vocab, generator=torch.Generator().manual_seed(0))
maskable = big > max(vocab.special_ids)  # ordinary words (ids 0-4 are the specials)
chosen = labels != -100
to_mask = chosen & (inputs == vocab.mask_id)
to_other = chosen & (inputs != vocab.mask_id) & (inputs != big)
unchanged = chosen & (inputs == big)
n_chosen = chosen.sum().item()
print(
    f"word positions chosen:   {n_chosen / maskable.sum().item():.3f}  (expected 0.150)"
)
print(f"special tokens chosen:   {(chosen & ~maskable).sum().item()}")
print(
    f"chosen -> <mask>:        {to_mask.sum().item() / n_chosen:.3f}  (expected 0.800)"
)
print(f"chosen -> another word:  {to_other.sum().item() / n_chosen:.3f}", end="  ")
print(f"(expected {0.1 * 41 / 42:.3f})")
print(f"chosen -> unchanged:     {unchanged.sum().item() / n_chosen:.3f}", end="  ")
print(f"(expected {0.1 + 0.1 / 42:.3f})")
none = (chosen.sum(dim=1) == 0).double().mean().item()
print(f"words per sentence: {maskable.sum().item() / len(big):.2f},", end=" ")
print(f"chosen: {n_chosen / len(big):.2f}")
print(f"sentences with no chosen word: {none:.3f}")

# %%
assert abs(n_chosen / maskable.sum().item() - 0.15) < 0.005
assert (chosen & ~maskable).sum() == 0
assert abs(to_mask.sum().item() / n_chosen - 0.8) < 0.015
assert abs(to_other.sum().item() / n_chosen - 0.1 * 41 / 42) < 0.015
assert abs(unchanged.sum().item() / n_chosen - (0.1 + 0.1 / 42)) < 0.015

# %% [markdown]
# An average sentence has about 7 words, so about one of them is chosen per sentence, and
# a third of the sentences have none at all (for a sentence of $n$ words that happens with
# probability $0.85^n$). That third is an artefact of our simplification, not of MLM:
# we choose every position independently, while BERT's released code
# (github.com/google-research/bert, `create_pretraining_data.py`) chooses exactly
# $\max(1, \operatorname{round}(0.15\, n))$ positions of each training sequence,
# capped at `max_predictions_per_seq` (20 for 128-token sequences). And its sequences
# are long, packed with several sentences: 90 % of BERT's pre-training steps used
# sequences of 128 tokens and the rest 512 {cite}`devlin2019bert`, so no sequence goes
# without a prediction. What MLM does cost is
# the rate: per sentence, a decoder learns from 8 predictions (its 7 words and `<eos>`),
# the encoder from about one.

# %% [markdown]
# ## The model
#
# A `MaskedLM` is [Chapter 6](06_bidirectional_attention.ipynb)'s encoder (a
# `TransformerStack` with `causal=False`) with BERT's output head on top:
#
# ```
# ids (corrupted)                         (B, T)
# encoder stack                           (B, T, D)
# dense -> GELU -> LayerNorm              (B, T, D)    BERT's small "transform"
# @ E^T + b  (E: the token embedding)     (B, T, V)    logits at every position
# ```
#
# The output matrix is the token embedding itself (weight tying, as in Part I and in
# BERT), with its own bias. We use Part I's default size, $D = 64$, 4 heads, 2 blocks,
# $d_{ff} = 256$, pre-LN, learned positions (`TransformerConfig`'s defaults). The loss,
# `tinyformer.objectives.mlm_loss`, is the mean cross-entropy over the positions whose
# label is not $-100$ (`IGNORE_INDEX`).

# %%
generator = set_seed(0)  # seeds the initialisation; `generator` drives the masking
config = TransformerConfig(vocab_size=V, d_model=64, n_heads=4, n_layers=2, d_ff=256)
model = MaskedLM(config)
print(model)
print(
    "output layer tied to the token embedding:",
    model.head.output.weight is model.encoder.tok_emb.weight,
)

inputs, labels = mask_tokens(
    big[:1000], vocab, generator=torch.Generator().manual_seed(1)
)
with torch.no_grad():
    logits = model(inputs)  # (B, T, V)
loss = mlm_loss(logits, labels)
same = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1), ignore_index=-100)
sigma = logits[labels != IGNORE_INDEX].std().item()  # spread of the initial logits
print("logits", tuple(logits.shape), "| labels", tuple(labels.shape))
print(f"initial loss {loss.item():.2f} nats;", end=" ")
print(f"ln V + sigma^2 / 2 = {math.log(V) + sigma**2 / 2:.2f}")
assert torch.equal(loss, same) and abs(loss.item() - math.log(V) - sigma**2 / 2) < 0.2

# %% [markdown]
# Before training the loss is close to that of a uniform guess, $\ln V = 3.85$ nats, plus
# a little: with random logits of standard deviation $\sigma$ around 1, the expected loss is
# about $\ln V + \sigma^2 / 2$.

# %% [markdown]
# ## The ceiling, measured on held-out sentences
#
# To compare with the Bayes-optimal predictor we need positions where the model sees
# *every other word*, so the evaluation hides **one** word per sentence, not 15 %: we draw
# fresh sentences (seeds no training batch uses), pick one word position in each
# uniformly at random, and replace it by `<mask>`. For each we compute the exact
# conditional distribution, and stack them into a `(N, V)` matrix `P_true`.
#
# What exactly does that ceiling condition on? On every other word **and on the length**
# of the sentence: one `<mask>` stands for exactly one word, so the model knows how many
# words there are. It is the best possible prediction of *one* hidden word. It is not
# the floor of the training loss: in training about 15 % of the words are chosen at once
# and a tenth of those become random words, so there is less, and less reliable,
# context, and the lowest achievable training loss is higher (and not something
# `ToyLanguage` computes).
#
# We build two such sets. The **validation** positions (1,000 sentences, seed 2024) are
# the ones the training settings below were tuned on, and the ones the training curves
# show. The **test** positions (2,000 sentences, seed 2025) are used only for the final
# comparison, so that no choice of ours has been fitted to them. This takes a few
# seconds: 3,000 sentences parsed with a wildcard.


# %%
def hidden_word_set(n, seed, position_seed):
    """n sentences with one hidden word each, and the exact P(w | every other word)."""
    sentences = lang.sample(n, seed=seed)
    rng = random.Random(position_seed)
    positions = [rng.randrange(len(s)) for s in sentences]  # word index, 0-based
    P = torch.zeros(n, V, dtype=torch.float64)  # (N, V)
    for k, (s, i) in enumerate(zip(sentences, positions, strict=True)):
        for word, p in lang.masked_distribution(s, i).items():
            P[k, vocab.stoi[word]] = p
    ids = vocab.batch(sentences, bos=True, eos=True)  # (N, T)
    rows, cols = torch.arange(n), torch.tensor(positions) + 1  # + 1: <bos> comes first
    inputs = ids.clone()
    inputs[rows, cols] = vocab.mask_id  # exactly one <mask> per sentence
    return {"P_true": P, "ids": ids, "inputs": inputs, "rows": rows, "cols": cols,
            "targets": ids[rows, cols]}  # fmt: skip


val = hidden_word_set(1000, seed=2024, position_seed=0)  # for choices: settings, curves
test = hidden_word_set(2000, seed=2025, position_seed=1)  # for the report only
N_EVAL = len(test["ids"])
P_true, eval_ids, eval_inputs = test["P_true"], test["ids"], test["inputs"]
rows, cols, targets = test["rows"], test["cols"], test["targets"]  # (N,) each


def ceiling(P):
    """(Bayes-optimal expected accuracy, conditional entropy) of hidden words P."""
    accuracy = P.max(dim=1).values.mean().item()
    return accuracy, -torch.special.xlogy(P, P).sum(dim=1).mean().item()


bayes_accuracy, bayes_entropy = ceiling(P_true)  # test positions
val_bayes_accuracy, val_bayes_entropy = ceiling(val["P_true"])
print(
    "eval inputs",
    tuple(eval_inputs.shape),
    "- first row:",
    " ".join(vocab.decode(eval_inputs[0])),
)
print(f"test: Bayes-optimal accuracy    E[max_w P(w | rest)]: {bayes_accuracy:.4f}")
print(f"test: Bayes conditional entropy E[H(W | rest)]:       {bayes_entropy:.4f} nats")
assert torch.allclose(P_true.sum(1), torch.ones(N_EVAL, dtype=torch.float64))

# %% [markdown]
# ### Two ways to measure a model's accuracy
#
# Let $\hat w_n$ be the model's prediction (its argmax) at the hidden position of
# sentence $n$. Then
#
# - its **empirical accuracy** is the fraction of sentences where $\hat w_n$ equals the
#   word that was actually there;
# - its **expected accuracy** is $\frac{1}{N} \sum_n P_{\text{true}}(\hat w_n \mid
#   \text{rest}_n)$: how often $\hat w_n$ would be right, on average over every word that
#   could have stood there.
#
# Both estimate the same thing, but the empirical one adds a coin flip per sentence:
# whether the word the language happened to draw was the most likely one. With $N = 2000$
# and an accuracy near 0.3 that flip alone gives a standard error of
# $\sqrt{0.3 \times 0.7 / 2000} \approx 0.010$, a whole percentage point. The expected
# accuracy removes it, and it is measured on the **same** positions as the Bayes-optimal
# accuracy, which is simply the expected accuracy of the best possible guess. So the
# difference *Bayes minus expected* is exactly the accuracy the model gives away, with
# no coin flips in it. The same goes for cross-entropy: the model's **expected
# cross-entropy** $-\sum_w P_{\text{true}}(w) \log q(w)$ equals the conditional entropy
# plus the KL divergence of the model from the truth.


# %%
@torch.no_grad()
def evaluate(logits, data=test):
    """logits (N, V) at the hidden positions of `data` -> this section's measures."""
    P, rows, targets = data["P_true"], data["rows"], data["targets"]
    prediction = logits.argmax(dim=-1)  # (N,)
    log_q = F.log_softmax(logits.double(), dim=-1)  # (N, V)
    return {
        "empirical_accuracy": (prediction == targets).double().mean().item(),
        "expected_accuracy": P[rows, prediction].mean().item(),
        "cross_entropy": -log_q[rows, targets].mean().item(),
        "expected_cross_entropy": -(P * log_q).sum(dim=1).mean().item(),
    }


def mlm_logits(model, data=test):
    """The MLM's logits (N, V) at the one hidden position of each sentence of `data`."""
    return model(data["inputs"])[data["rows"], data["cols"]]


# Sanity check: fed the true distribution itself, the measures give the ceiling.
check = evaluate(P_true.clamp_min(1e-30).log().float())  # log 0 -> about -69
assert abs(check["expected_accuracy"] - bayes_accuracy) < 1e-9
assert abs(check["expected_cross_entropy"] - bayes_entropy) < 1e-6
print(
    f"the truth itself: empirical accuracy {check['empirical_accuracy']:.4f}, ", end=""
)
print(f"cross-entropy {check['cross_entropy']:.4f} on the words actually drawn")

# %% [markdown]
# Even the truth itself scores a little off its own expectation on the words actually
# drawn: that is the noise the expected measures remove.
#
# ## Training
#
# Every step draws **fresh sentences** from the language, 128 of them with seed
# `100_000 + step` (so the run is reproducible and never sees a batch twice), and masks
# them with `mask_tokens` and a seeded generator. We train for 300 steps with AdamW at a
# peak learning rate of $4 \times 10^{-3}$, 30 warmup steps and a cosine decay, and
# evaluate on the validation positions every 50 steps. These settings came from a small
# search, on the validation positions, for the cheapest run that gets within a
# percentage point of the ceiling; they take well under a minute on a laptop CPU.

# %%
BATCH, STEPS, LR, WARMUP = 128, 300, 4e-3, 30
TRAIN_SEED = 100_000  # batch `step` holds lang.sample(BATCH, seed=TRAIN_SEED + step)


def get_batch(step):
    """Fresh sentences, masked: (inputs, labels), each (BATCH, T)."""
    ids = vocab.batch(lang.sample(BATCH, seed=TRAIN_SEED + step), bos=True, eos=True)
    return mask_tokens(ids, vocab, p=0.15, generator=generator)


def loss_fn(model, inputs, labels):
    return mlm_loss(model(inputs), labels)


def eval_fn(model):
    m = evaluate(mlm_logits(model, val), val)  # validation positions, not the test
    return {"masked_ce": m["cross_entropy"], "expected_acc": m["expected_accuracy"]}


# %% tags=["nbval-ignore-output"]
history = train(
    model, get_batch, steps=STEPS, lr=LR, warmup_steps=WARMUP, loss_fn=loss_fn,
    eval_fn=eval_fn, eval_every=50, log_every=50,
)  # fmt: skip

# %% [markdown]
# The training loss (over the 15 % chosen positions of each batch) and the two
# validation measures, against their one-mask ceilings:

# %% mystnb={"figure": {"caption": "Training the masked language model. Left: the training loss (15 % of the words chosen) and the validation cross-entropy with one hidden word, against the one-mask conditional entropy. Right: the expected accuracy at the hidden word is within about a point and a half of the Bayes-optimal line by step 150, while the validation loss is still about 0.3 nats above its floor.", "name": "fig-ch07-training"}, "image": {"alt": "Two line plots against training step. Left: training loss and validation cross-entropy fall from about 4 to about 1.5 nats, above a dashed line at the conditional entropy. Right: expected accuracy rises to the dashed Bayes-optimal line near 0.31."}} tags=["hide-input"]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
ax1.plot(
    history["step"], history["loss"], alpha=0.5, label="training loss (15 % chosen)"
)
ax1.plot(
    history["eval_step"], history["masked_ce"], "o-", label="validation, one <mask>"
)
ax1.axhline(
    val_bayes_entropy,
    color="black",
    linestyle="--",
    linewidth=1,
    label="conditional entropy",
)
ax1.set_ylim(1.0, 4.0)
ax1.set_xlabel("training step")
ax1.set_ylabel("cross-entropy (nats)")
ax1.set_title("loss at hidden positions")
ax1.legend()
ax2.plot(
    history["eval_step"], history["expected_acc"], "o-", label="MLM, expected accuracy"
)
ax2.axhline(
    val_bayes_accuracy,
    color="black",
    linestyle="--",
    linewidth=1,
    label="Bayes-optimal",
)
ax2.set_xlabel("training step")
ax2.set_ylabel("accuracy")
ax2.set_title("accuracy at the hidden position")
ax2.legend()
for ax in (ax1, ax2):
    ax.grid(True, alpha=0.3)
fig.tight_layout()

# %% [markdown]
# The training loss ends slightly above the validation loss, and it measures a slightly
# harder task: in training about 15 % of the words are hidden or corrupted at once, so
# there is a little less context to go on than with a single `<mask>`, and the random
# words must be detected before they can be corrected. By step 150 the expected
# accuracy (0.301) is within about a point and a half of its ceiling (about 0.31),
# while the validation cross-entropy (1.75) is still about 0.3 nats above its floor
# (about 1.4); we come back to that.
#
# ## How close to the best possible?
#
# Now, once, the test positions:

# %% tags=["nbval-ignore-output"]
with evaluating(model), torch.no_grad():  # eval mode: no dropout here, but the habit
    mlm = evaluate(mlm_logits(model))
se = math.sqrt(bayes_accuracy * (1 - bayes_accuracy) / N_EVAL)
print(f"Bayes-optimal accuracy:                 {bayes_accuracy:.4f}")
print(f"MLM expected accuracy (P_true of guess): {mlm['expected_accuracy']:.4f}")
empirical = mlm["empirical_accuracy"]
print(f"MLM empirical accuracy:                  {empirical:.4f}  (± {se:.3f})")
for kind in ("expected", "empirical"):
    gap = 100 * (bayes_accuracy - mlm[f"{kind}_accuracy"])
    print(f"  gap to Bayes, {kind + ':':10} {gap:.2f} points")
print()
print(f"Bayes conditional entropy:      {bayes_entropy:.4f} nats")
print(f"MLM expected cross-entropy:     {mlm['expected_cross_entropy']:.4f} nats")
print(f"MLM cross-entropy (words drawn): {mlm['cross_entropy']:.4f} nats")
kl = mlm["expected_cross_entropy"] - bayes_entropy
print(f"  KL divergence from the truth:  {kl:.4f} nats")

# %%
gap = bayes_accuracy - mlm["expected_accuracy"]
assert 0 <= gap < 0.01  # within one percentage point of the ceiling (low-noise measure)
assert abs(mlm["empirical_accuracy"] - bayes_accuracy) < 4 * se  # consistent, but noisy
assert 0 < mlm["expected_cross_entropy"] - bayes_entropy < 0.2
print(
    "MLM within 1 point of the Bayes-optimal accuracy; KL from the truth under 0.2 nats"
)

# %% [markdown]
# After 300 steps (38,400 sentences, about 40,000 predicted words) the model's guesses are
# worth almost exactly as much as the best possible guesses: its expected accuracy is
# within a fraction of a percentage point of the Bayes-optimal one. Its empirical
# accuracy is within noise of it too, but that number alone could not say so to better
# than about $\pm$2 points (two standard errors).
#
# The cross-entropy is further from its floor than the accuracy is from its ceiling. To
# be accurate, the model only has to rank the right kind of word first; to reach the
# conditional entropy it must also spread exactly the right probability over the words
# that tie, e.g. $1/6$ on each of the six singular nouns. The remaining KL divergence is
# mostly that finer calibration, which keeps improving with more training.
#
# ## Left context only: what the right-hand side is worth
#
# How much of this does the encoder owe to seeing both sides? Part I's decoder predicts
# each word from the words before it only. We train a `DecoderLM` of the same size on the
# **same stream** of fresh sentences, with the language-model loss. It learns from every
# word of every sentence, eight times as many predictions per sentence as the MLM, so 200
# steps of 64 sentences are enough to bring its loss close to the language's entropy.

# %%
set_seed(0)
decoder = DecoderLM(config)  # the same TransformerConfig: size, positions, vocabulary


def get_lm_batch(step):
    """The same fresh sentences, as language-model inputs and targets (B, T)."""
    ids = vocab.batch(lang.sample(64, seed=TRAIN_SEED + step), bos=True, eos=True)
    return ids[:, :-1], ids[:, 1:]


# %% tags=["nbval-ignore-output"]
lm_history = train(
    decoder, get_lm_batch, steps=200, lr=4e-3, warmup_steps=20, log_every=50
)
with evaluating(decoder), torch.no_grad():
    lm_logits = decoder(eval_ids[:, :-1])  # (N, T - 1, V): position t predicts t + 1
    test_loss = F.cross_entropy(
        lm_logits.reshape(-1, V), eval_ids[:, 1:].reshape(-1), ignore_index=0
    )
    dec = evaluate(lm_logits[rows, cols - 1])  # the hidden word from its left only
entropy = lang.entropy_per_token()
print(f"decoder loss on the test sentences: {test_loss.item():.4f} nats/token", end=" ")
print(f"(entropy {entropy:.4f})")

# %%
assert test_loss.item() - entropy < 0.1

# %% [markdown]
# The decoder's loss is within a few hundredths of a nat of the entropy, so it is close
# to the best possible left-to-right predictor: its accuracy from the left context is
# close to the left-context ceiling. (That ceiling is not one `ToyLanguage` computes: it
# would need the probability of every continuation of a prefix.) We score it on the
# **same** hidden words, with the same measures. Its "expected accuracy" is still taken
# under the *bidirectional* truth $P_{\text{true}}(\hat w \mid \text{rest})$: it is the
# probability that its guess, made from the left, is the word that was there.

# %% tags=["nbval-ignore-output"]
print(f"{'':32}{'expected acc':>13}{'empirical acc':>15}{'cross-entropy':>15}")
print(f"{'Bayes-optimal, both sides':32}{bayes_accuracy:13.4f}", end="")
print(f"{'':>15}{bayes_entropy:15.4f}")
print(f"{'MLM encoder, both sides':32}{mlm['expected_accuracy']:13.4f}", end="")
print(f"{mlm['empirical_accuracy']:15.4f}{mlm['cross_entropy']:15.4f}")
print(f"{'decoder, left context only':32}{dec['expected_accuracy']:13.4f}", end="")
print(f"{dec['empirical_accuracy']:15.4f}{dec['cross_entropy']:15.4f}")

# %%
assert mlm["expected_accuracy"] - dec["expected_accuracy"] > 0.05
assert dec["cross_entropy"] - mlm["cross_entropy"] > 0.3
print("the right-hand context is worth more than 5 points of accuracy and 0.3 nats")

# %% [markdown]
# Seeing the right-hand side is worth about eight points of accuracy and about two thirds
# of a nat of cross-entropy per hidden word. Where does it help? We split the hidden words by
# their part of speech.

# %%
# Each word belongs to exactly one category of the grammar ("that": relative clauses).
category_of = {}
for rule in lang.grammar.rules:
    if len(rule.rhs) == 1 and rule.rhs[0] in vocab:
        kind = rule.lhs.partition(".")[0]
        category_of[rule.rhs[0]] = {"Vi": "verb", "Vt": "verb"}.get(kind, kind)
names = {
    "Det": "determiner",
    "Adj": "adjective",
    "N": "noun",
    "verb": "verb",
    "P": "preposition",
}
categories = [
    names.get(category_of.get(vocab.itos[t], "that"), "that") for t in targets.tolist()
]
order = ["determiner", "adjective", "noun", "verb", "preposition", "that"]


def per_category(logits):
    """Expected accuracy per category at the hidden positions."""
    hits = P_true[rows, logits.argmax(-1)].numpy()
    return [hits[[c == k for c in categories]].mean() for k in order]


best = P_true.max(dim=1).values.numpy()
with evaluating(model), torch.no_grad():
    mlm_hidden = mlm_logits(model)  # (N, V)
table = {
    "Bayes-optimal (both sides)": [
        best[[c == k for c in categories]].mean() for k in order
    ],
    "MLM encoder (both sides)": per_category(mlm_hidden),
    "decoder (left only)": per_category(lm_logits[rows, cols - 1]),
}
counts = [categories.count(k) for k in order]

# %% tags=["nbval-ignore-output"]
print(f"{'':28}" + "".join(f"{k:>12}" for k in order))
print(f"{'hidden words':28}" + "".join(f"{c:12d}" for c in counts))
for name, values in table.items():
    print(f"{name:28}" + "".join(f"{v:12.3f}" for v in values))

# %% mystnb={"figure": {"caption": "Expected accuracy at the hidden word by part of speech, on the test positions: the exact Bayes-optimal ceiling, the masked language model (both sides) and the decoder (left context only). The encoder sits on the ceiling in every category; the right-hand context helps most for prepositions, verbs, adjectives and nouns.", "name": "fig-ch07-by-category"}, "image": {"alt": "Grouped bar chart with six groups (determiner, adjective, noun, verb, preposition, that) and three bars each: Bayes-optimal, MLM encoder and decoder. Encoder bars match the ceiling; decoder bars are lower for adjectives, nouns and verbs and zero for prepositions."}} tags=["hide-input"]
x = np.arange(len(order))
fig, ax = plt.subplots(figsize=(10, 3.8))
for j, (name, values) in enumerate(table.items()):
    ax.bar(x + (j - 1) * 0.27, values, width=0.27, label=name)
ax.set_xticks(
    x, labels=[f"{k}\n({c} words)" for k, c in zip(order, counts, strict=True)]
)
ax.set_ylabel("expected accuracy")
ax.set_title("Accuracy at the hidden word, by part of speech")
ax.legend()
ax.grid(True, axis="y", alpha=0.3)
fig.tight_layout()

# %%
ceiling_acc, encoder_acc, decoder_acc = (np.array(v) for v in table.values())
assert (
    np.abs(encoder_acc - ceiling_acc).max() < 0.03
)  # the encoder is at the ceiling everywhere
assert (
    decoder_acc[order.index("preposition")] < 0.05
)  # never a preposition from the left

# %% [markdown]
# The ceilings (blue) are exact, and the chart reads like a grammar lesson:
#
# - **Determiners**: no gain at all. *the* has probability 1/2 in either number, so it is
#   the best guess whatever the right-hand side says. The right context does rule out
#   half of the other determiners, which lowers the cross-entropy, but accuracy cannot
#   see it.
# - **that**: nobody misses. Between a subject noun and two verbs only *that* fits, and
#   from the left alone *that* is also the single most likely word after a subject noun
#   phrase (probability 0.3, the chance of a relative clause).
# - **Prepositions**: the decoder never gets one. After *the dog* a preposition comes with
#   probability 0.3, but shared among three words, 0.1 each, while *that* alone has 0.3:
#   from the left, *that* is always the better bet. From both sides, a noun phrase
#   followed by a verb leaves only a preposition.
# - **Verbs**: from the left, the main verb competes with *that* and the prepositions for
#   the slot after the subject; from both sides the slot is certainly a verb, and whether
#   an object follows says whether it is transitive, 4 candidates instead of 8.
# - **Adjectives and nouns**: after a determiner either may come; the word to the right
#   says which (an adjective is followed by another adjective or a noun), and the verb says
#   a subject noun's number when the determiner (*the*) does not.
#
# Everywhere, our encoder sits on its ceiling: whatever the right context can tell, it
# has learned to read.

# %% [markdown]
# ## What does the trained encoder look at?
#
# Back to the sentence of the first section, with the subject hidden:
# *the `<mask>` near the cats sleeps*. The determiner *the* does not say whether the
# subject is singular; the attractor *cats* is plural; only the verb *sleeps*, four words
# to the right, says "singular". A left-to-right model cannot know. What does the encoder
# predict, and where do its heads look from the `<mask>`?

# %%
masked = "the <mask> near the cats sleeps".split()
ids = torch.tensor([vocab.encode(["<bos>"] + masked + ["<eos>"])])  # (1, T)
tokens = vocab.decode(ids[0], strip_special=False)
with evaluating(model), torch.no_grad(), record_attention(model) as maps:
    logits = model(ids)  # (1, T, V)
attention = [maps[f"encoder.blocks.{i}.self_attn"] for i in range(2)]  # (1, H, T, T)
q = logits[0, 2].softmax(-1)  # the model's distribution at the <mask>
truth = lang.masked_distribution("the dog near the cats sleeps".split(), 1)
singular = [vocab.stoi[w] for w in truth]  # the six singular nouns
plural = [vocab.stoi[lang.flip_number(w)] for w in truth]  # and their plurals

# %% tags=["nbval-ignore-output"]
top = q.topk(8)
print(
    "model:", ", ".join(f"{vocab.itos[i]} {p:.3f}" for p, i in zip(*top, strict=True))
)
print("truth:", ", ".join(f"{w} {p:.3f}" for w, p in truth.items()))
print(f"model's probability on singular nouns {q[singular].sum():.2f},", end=" ")
print(f"on plural nouns {q[plural].sum():.2f}")

# %% [markdown]
# The figure shows, for each of the 8 heads (2 layers of 4), the row of its attention map
# that belongs to the `<mask>` query: how that head splits the `<mask>`'s attention over
# the sentence.

# %% mystnb={"figure": {"caption": "Where the <mask> position looks in 'the <mask> near the cats sleeps', one row per head of the trained masked language model. The exact weights depend on the run; in ours, three heads of the last layer give the verb sleeps, the word that carries the subject's number, between a quarter and two fifths of the <mask>'s attention.", "name": "fig-ch07-mask-attention"}, "image": {"alt": "A heatmap with eight rows (layer 0 and layer 1, heads 0 to 3) and one column per token of the sentence; each row is the attention of the <mask> query, and three last-layer rows are shaded at the column of sleeps."}} tags=["hide-input", "nbval-ignore-output"]
mask_rows = torch.cat([attention[layer][0, :, 2] for layer in range(2)])  # (8, T)
heads = [f"layer {layer}, head {h}" for layer in range(2) for h in range(4)]
fig, ax = plt.subplots(figsize=(7, 4.2))
plot_attention(mask_rows, tokens, heads, ax=ax, title="query: the <mask> (position 2)")
ax.set_ylabel("head")
fig.tight_layout()

# %% [markdown]
# In our run, two of the first layer's heads pick out single words around the `<mask>`
# (its own determiner *the*, the next word *near*), while in the last layer three of the
# four heads give the verb *sleeps*, the very word that carries the subject's number,
# between a quarter and two fifths of the `<mask>`'s attention, and one of them looks
# mostly at *near*, which says that the noun phrase ends there. The weights of the
# `<mask>` row on *sleeps*:

# %% tags=["nbval-ignore-output"]
verb = tokens.index("sleeps")
to_verb = torch.stack(
    [attention[layer][0, :, 2, verb] for layer in range(2)]
)  # (layers, H)
for layer in range(2):
    print(
        f"layer {layer}, heads 0-3: "
        + ", ".join(f"{w:.2f}" for w in to_verb[layer].tolist())
    )

# %%
assert to_verb[-1].max() > 0.3  # some head of the last layer reads the verb

# %% [markdown]
# But an attention map is a hint, not a proof: a head can attend to a word whose value
# the model then ignores, and information can reach the `<mask>` indirectly, through
# other positions in the first layer. The direct test is to **change** a word and see
# whether the prediction follows. We flip the verb (*sleeps* ↔ *sleep*) and, separately,
# the attractor (*cats* ↔ *cat*), and measure the probability the model puts on plural
# subject nouns. The language's answer is 0 with *sleeps* and 1 with *sleep*, whatever the
# attractor.

# %% tags=["nbval-ignore-output"]
follows_verb = []
for attractor in ("cats", "cat"):
    for verb_form in ("sleeps", "sleep"):
        words = f"<bos> the <mask> near the {attractor} {verb_form} <eos>".split()
        with evaluating(model), torch.no_grad():
            q_ = model(torch.tensor([vocab.encode(words)]))[0, 2].softmax(-1)
        guess = vocab.itos[q_.argmax().item()]
        follows_verb.append(lang.number(guess) == lang.number(verb_form))
        print(
            f"the <mask> near the {attractor:4} {verb_form:6}: P(plural noun) "
            f"{q_[plural].sum():.2f}, guess {guess!r}"
        )

# %%
assert all(follows_verb)  # the guess agrees with the verb in all four sentences

# %% [markdown]
# Flipping the verb moves the probability of a plural subject from about a quarter or a
# third to about nine tenths; flipping the attractor changes it only a little. So the
# model has learned the right dependency: the verb, four words away, decides the
# subject's number, and its guess always agrees with the verb. But it has not learned it
# *completely*: with *sleeps*, a quarter to a third of its probability still sits on
# plural nouns, which the language rules out. Accuracy cannot see this (the argmax is right); the cross-entropy
# can, and this is a piece of the KL divergence we measured above. More training shrinks
# it.

# %% [markdown]
# ## What we learned
#
# - Masked language modelling trains an encoder to recover hidden words from both sides.
#   BERT chooses 15 % of the word positions; of those, 80 % become `<mask>`, 10 % a random
#   word and 10 % stay, so that the model cannot rely on `<mask>` (which never appears
#   after pre-training) and must keep a good vector for every word. Our `corrupt` equals
#   `mask_tokens`, and the measured proportions match. Choosing positions independently
#   leaves a third of our short sentences without a prediction; BERT chooses an exact
#   count per packed sequence, so none goes without.
# - For a single hidden word, given every other word and the length, the toy language
#   gives the Bayes-optimal distribution, hence the best possible accuracy (about 0.31:
#   the language is random) and the lowest possible cross-entropy (the conditional
#   entropy, about 1.42 nats). That is the one-mask optimum, not the floor of the 15 %,
#   80/10/10 training loss, which sees less context.
# - The *expected* accuracy $P_{\text{true}}(\text{guess} \mid \text{rest})$ measures a
#   model on the same positions as the ceiling without the noise of which word happened
#   to be drawn; the empirical accuracy carries a standard error of about a point.
# - After 300 steps on fresh sentences our MLM is within a fraction of a point of the
#   Bayes-optimal accuracy on test positions that played no part in choosing the
#   settings; its cross-entropy is still about 0.1 nats above the conditional entropy
#   (finer calibration).
# - A decoder of the same size, predicting the same words from the left only, is about
#   eight points less accurate. The right context tells the part of speech of the hidden
#   word, its number and its transitivity; determiners gain nothing in accuracy.
# - Attention maps suggest where a model looks; changing a word tests it. Flip the verb
#   and the hidden subject flips number, though not with full confidence yet.
#
# [Chapter 8](08_sentence_classification.ipynb) puts a pre-trained encoder to work: it
# fine-tunes it to tell grammatical sentences from ungrammatical ones.

# %% [markdown]
# ## Exercises
#
# **1. A context-free baseline.** What is the best accuracy a predictor can reach at our
# hidden positions if it ignores the sentence and always guesses the same word? Which
# word, and how does it compare with the decoder and the encoder?
#
# <details class="solution"><summary>Solution</summary>
#
# Always guessing word $w$ has expected accuracy equal to the mean of column $w$ of
# `P_true`, so the best constant guess is the column with the largest mean:
#
# ```python
# column_means = P_true.mean(dim=0)
# print(vocab.itos[column_means.argmax()], column_means.max().item())  # 'the', about 0.15
# ```
#
# It is *the*: about 30 % of the hidden words are determiners, and *the* is half of
# them. Context is worth the rest: from about 0.15 to 0.24 with the left context, and to
# 0.31 with both sides.
#
# </details>
#
# **2. Does the model trust its input?** Ten per cent of the chosen positions are left
# unchanged and ten per cent get a random word. Measure what the trained model predicts
# (a) at every word of sentences without any corruption, (b) at a position where we put a
# random word, separately for intruders that keep the sentence grammatical and those
# that break it. What do the two 10 % shares teach the model?
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# ids = vocab.batch(lang.sample(2000, seed=77), bos=True, eos=True)
# with torch.no_grad():
#     pred = model(ids).argmax(-1)
# words = ids > max(vocab.special_ids)
# same = (pred == ids)[words].double().mean().item()
# print("(a) argmax == input word:", same)  # ~0.97
#
# sentences = lang.sample(2000, seed=78)
# ids = vocab.batch(sentences, bos=True, eos=True)
# r = random.Random(0)
# pos = torch.tensor([r.randrange(len(s)) for s in sentences]) + 1
# n = torch.arange(len(sentences))
# g3 = torch.Generator().manual_seed(3)
# intruder = torch.randint(5, V, (len(sentences),), generator=g3)
# changed = intruder != ids[n, pos]
# corrupted = ids.clone()
# corrupted[n, pos] = intruder
# with torch.no_grad():
#     guess = model(corrupted)[n, pos].argmax(-1)
# grammatical = torch.tensor([lang.is_grammatical(vocab.decode(c)) for c in corrupted])
# for name, sel in (
#     ("grammatical", changed & grammatical),
#     ("ungrammatical", changed & ~grammatical),
# ):
#     kept = (guess == intruder)[sel].double().mean().item()
#     print(f"(b) {name} intruder kept:", kept)
# ```
#
# In our run the model returns the input word about 97 % of the time on clean sentences,
# keeps an intruder that still makes a grammatical sentence about 98 % of the time, and
# replaces an intruder that breaks the sentence about 95 % of the time. The unchanged
# share taught it that an ordinary word is usually right; the random share taught it to
# check every word against its context. Both are what a fine-tuned model needs: sensible
# vectors for ordinary words, in context.
#
# </details>
#
# **3. Two masks at once.** The MLM predicts every hidden word separately, from the same
# input. Hide both the noun and the verb of a three-word sentence, *the `<mask>`
# `<mask>`*. Compute the language's exact joint distribution of the two words (use
# `lang.prob` on all completions) and the probability that they agree in number. Then
# take the model's two predicted distributions and compute the same probability as if
# the two words were drawn independently from them. What goes wrong, and why can no
# per-position prediction fix it?
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# nouns = [w for w in lang.words if category_of.get(w) == "N"]
# verbs = [w for w in lang.words if w in ("sleeps", "runs", "sings", "waits",
#                                         "sleep", "run", "sing", "wait")]
# joint = {(n, v): lang.prob(["the", n, v]) for n in nouns for v in verbs}
# total = sum(joint.values())
# print("language:", sum(p for (n, v), p in joint.items()
#                         if lang.number(n) == lang.number(v)) / total)  # 1.0
#
# ids = torch.tensor([vocab.encode("<bos> the <mask> <mask> <eos>".split())])
# with torch.no_grad():
#     q = model(ids)[0].softmax(-1)  # (T, V)
# sg_noun = sum(q[2, vocab.stoi[n]] for n in nouns if lang.number(n) == "sg")
# pl_noun = sum(q[2, vocab.stoi[n]] for n in nouns if lang.number(n) == "pl")
# sg_verb = sum(q[3, vocab.stoi[v]] for v in verbs if lang.number(v) == "sg")
# pl_verb = sum(q[3, vocab.stoi[v]] for v in verbs if lang.number(v) == "pl")
# print("independent:", (sg_noun * sg_verb + pl_noun * pl_verb).item())  # under 0.5
# ```
#
# Every complete sentence agrees (probability 1), but *the* leaves the number open, so
# each hidden word on its own is singular or plural with probability about 1/2. Drawing
# the two independently makes them disagree about half the time (*the dogs sleeps*); in
# our run the independent draws agree less than half the time, as the model also keeps a
# little probability for other words. Each marginal can be perfect and their product
# still wrong, because the hidden words depend on *each other*, not just on the visible
# context. Filling in several blanks consistently needs one at a time (fill one, then
# predict the next given it), which is what a decoder does.
#
# </details>
#
# **4. The masking rate.** With $p = 0.15$ and independent choices, a third of our
# sentences had no chosen word.
# Compute, from the sentence lengths of `big`, the expected fraction of sentences without
# a chosen word and the expected number of chosen words per sentence for
# $p = 0.05, 0.15, 0.3, 0.5$. What do you gain and lose by raising $p$?
#
# <details class="solution"><summary>Solution</summary>
#
# A sentence of $n$ words has no chosen word with probability $(1 - p)^n$ and $pn$
# chosen words on average:
#
# ```python
# n = (big > max(vocab.special_ids)).sum(dim=1).double()  # words per sentence
# for p in (0.05, 0.15, 0.3, 0.5):
#     print(p, ((1 - p) ** n).mean().item(), (p * n).mean().item())
# ```
#
# Raising $p$ gives more predictions per sentence, so more learning per unit of compute,
# but each prediction sees less of the sentence: at $p = 0.5$ half the context is gone,
# and the task drifts from "understand this sentence" towards "guess half of a
# sentence". The evaluation here hides one word, so the model is also tested further
# from how it was trained. BERT's 15 % is a compromise, not a law.
#
# </details>
