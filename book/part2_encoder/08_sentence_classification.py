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
# # 8. Sentence classification
#
# Chapter 7 trained an encoder to fill in hidden words, and it came within a hair of the
# best possible guess. Nobody needs a model that fills in blanks in a toy language. What
# we want is the *knowledge* that filling in blanks forced into the encoder, reused for a
# task we care about. That is the recipe of BERT {cite}`devlin2019bert`: **pre-train** on
# plenty of unlabelled text, then **fine-tune** on a few labelled examples.
#
# Our task: is a sentence grammatical, or has its {term}`agreement` been broken? It is the
# test that Linzen and colleagues used to probe what sequence models know about syntax
# {cite}`linzen2016assessing`, turned into a classifier.
#
# **Learning goals.** After this chapter you can
#
# - build a balanced data set of grammatical and broken-agreement sentences, and explain
#   why the only way to solve it is to find the subject and check the verb;
# - put a classification head on an encoder, pooling `(B, T, D)` into `(B, D)` either at
#   the `<bos>` position (BERT's `[CLS]`) or by a mean over real tokens, and check it
#   against `tinyformer.encoder.SequenceClassifier`;
# - fine-tune a pre-trained masked-language-model encoder and compare it with the same
#   network trained from scratch, as a function of the number of labelled examples;
# - reach more than 99.5 % accuracy on held-out sentences, including the hard ones where
#   an {term}`attractor` of the other number stands between subject and verb.

# %%
import copy
import random

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.encoder import (
    Encoder,
    MaskedLM,
    SequenceClassifier,
    mask_tokens,
    mlm_loss,
)
from tinyformer.language import ToyLanguage
from tinyformer.plot import plot_attention
from tinyformer.train import set_seed, train
from tinyformer.vocab import Vocab

set_seed(0)  # seeds Python, NumPy and torch
set_matplotlib_formats(
    "png"
)  # PNG figures: the same in the book, on GitHub and in Colab
torch.set_printoptions(precision=3, sci_mode=False)

lang = ToyLanguage()
vocab = Vocab(lang.words)

# %% [markdown]
# ## The task: is the agreement right?
#
# In the toy language the main verb takes the number of its subject's head noun: *the
# dog near the cats **sleeps***, *the dogs near the cat **sleep***. `lang.break_agreement`
# flips the main verb to the other number, which always makes the sentence
# ungrammatical:

# %%
sentence = "the dog near the cats sleeps".split()
broken = lang.break_agreement(sentence)
print(" ".join(sentence), "->", lang.is_grammatical(sentence))
print(" ".join(broken), "  ->", lang.is_grammatical(broken))

# %% [markdown]
# A data set is a list of sentences with labels, 1 for grammatical and 0 for broken. We
# draw the grammatical half with `lang.sample` and the broken half by breaking *other*
# samples, so a sentence and its own broken twin never meet (if they did, a model could
# learn to compare near-duplicates; and a test sentence's twin could sit in the training
# set). The halves are equal, so always answering "grammatical" scores exactly 50 %.
#
# For every sentence we keep `lang.analyse`'s answer too: where the subject and the main
# verb are, and whether an attractor noun of the other number stands between them. The
# broken sentences no longer parse, so they are analysed before being broken; the flip
# changes the verb only, so subject, verb position and attractors stay the same.


# %%
def make_dataset(n, seed, analyse_all=True):
    """n sentences, half grammatical (label 1) and half broken (label 0), shuffled.

    Returns (sentences, labels, analyses): analyses[i] describes sentence i's subject,
    main verb and attractors (for a broken sentence, those of the sentence it came from).
    Parsing is the slow part, so with analyse_all=False only the broken half is analysed
    (the others get None).
    """
    good = lang.sample(n // 2, seed=seed)
    to_break = lang.sample(n - n // 2, seed=seed + 1)  # other sentences
    infos = [lang.analyse(s) for s in to_break]
    # lang.break_agreement, written with the analysis we already have (saves a parse)
    bad = [
        s[: a.verb] + [lang.flip_number(s[a.verb])] + s[a.verb + 1 :]
        for s, a in zip(to_break, infos, strict=True)
    ]
    assert bad[:10] == [
        lang.break_agreement(s) for s in to_break[:10]
    ]  # the same thing
    infos = [lang.analyse(s) if analyse_all else None for s in good] + infos
    sentences, labels = good + bad, [1] * len(good) + [0] * len(bad)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return (
        [sentences[i] for i in order],
        [labels[i] for i in order],
        [infos[i] for i in order],
    )


N_TRAIN, N_TEST = 4096, 2000
train_sents, train_labels, _ = make_dataset(N_TRAIN, seed=10, analyse_all=False)
test_sents, test_labels, test_info = make_dataset(N_TEST, seed=20)

for s, y in list(zip(train_sents, train_labels, strict=True))[:6]:
    print(y, " ".join(s))
print("training:", len(train_sents), "sentences,", sum(train_labels), "grammatical")
print("held out:", len(test_sents), "sentences,", sum(test_labels), "grammatical")

# %% [markdown]
# ### Only agreement tells the classes apart
#
# Breaking agreement swaps a verb for its other-number form, and the two numbers are
# equally likely, so every word is as frequent in broken sentences as in grammatical
# ones. A model that counts words, ignoring their order and relations, is at chance:


# %%
def word_frequencies(sentences):
    """Relative frequency of every word of the language in a list of sentences."""
    counts = dict.fromkeys(lang.words, 0)
    for s in sentences:
        for w in s:
            counts[w] += 1
    total = sum(counts.values())
    return {w: c / total for w, c in counts.items()}


good_freq = word_frequencies(
    [s for s, y in zip(train_sents, train_labels, strict=True) if y == 1]
)
bad_freq = word_frequencies(
    [s for s, y in zip(train_sents, train_labels, strict=True) if y == 0]
)
for w in ["dog", "dogs", "sleeps", "sleep", "near"]:
    print(f"{w:7s} grammatical {good_freq[w]:.4f}   broken {bad_freq[w]:.4f}")
largest = max(abs(good_freq[w] - bad_freq[w]) for w in lang.words)
print(f"largest difference over all {len(lang.words)} words: {largest:.4f}")

# %% [markdown]
# The differences are sampling noise (a few thousandths). What separates the classes is
# a **relation** between two words: the subject's head noun and the main verb. To find
# the subject the model must parse, at least roughly: skip the determiner and adjectives,
# and skip a prepositional phrase or relative clause that may stand in between.
#
# How much does the "roughly" cost? A tempting shortcut is to check the verb against the
# **closest noun before it**. We even grant it the main verb's position. It is right
# whenever the closest noun is the subject or agrees with it, and wrong exactly when an
# attractor of the other number stands in between:


# %%
def closest_noun_guess(words, info):
    """1 if the main verb agrees with the closest noun before it, else 0.

    The nouns between subject and verb are the attractors, so the closest noun is the
    last attractor, or the subject when there is none.
    """
    noun = info.attractors[-1] if info.attractors else info.subject
    return int(lang.number(words[noun]) == lang.number(words[info.verb]))


test_y = torch.tensor(test_labels)  # (N_TEST,)
hard = torch.tensor([a.has_mismatched_attractor for a in test_info])  # (N_TEST,) bool
guess = torch.tensor(
    [closest_noun_guess(s, a) for s, a in zip(test_sents, test_info, strict=True)]
)
right = (guess == test_y).float()
print(f"held-out sentences with a mismatched attractor: {hard.float().mean():.3f}")
print(f"closest-noun rule, all held-out sentences:      {right.mean():.3f}")
print(f"closest-noun rule, mismatched attractor:        {right[hard].mean():.3f}")
print(f"closest-noun rule, all others:                  {right[~hard].mean():.3f}")

# %% [markdown]
# About a quarter of the sentences carry a mismatched attractor, and on those the rule is
# always wrong: it calls *the dog near the cats sleeps* broken and *the dog near the cats
# sleep* grammatical. These are the **hard case**, and we report accuracy on them
# separately throughout. A classifier that reaches 99.5 % overall must get them right.

# %% [markdown]
# ## A classification head
#
# The encoder turns ids `(B, T)` into vectors $h$ `(B, T, D)`, one per token. A
# classifier needs **one** vector per sentence, so we **pool** the $T$ vectors into one,
# `(B, D)`, and apply a linear layer to get one logit per class, `(B, C)` with $C = 2$:
#
# $$\text{logits} = W g + b, \qquad
#   g = \begin{cases} h_0 & \text{[CLS] pooling} \\[2pt]
#   \frac{1}{n} \sum_{t \,\text{real}} h_t & \text{mean pooling} \end{cases}$$
#
# where $W$ is `(C, D)` and $n$ counts the real (non-pad) tokens of the sentence.
#
# - **[CLS] pooling** reads position 0. BERT puts a special `[CLS]` token there
#   {cite}`devlin2019bert`; our `<bos>` plays that role (Chapter 6). Its output has read
#   the whole sentence in every layer, and fine-tuning teaches it what to gather.
# - **Mean pooling** averages the outputs of the real tokens. The pad rows are computed
#   but meaningless (Chapter 6), so they must be left out of the average.
#
# The loss is the cross-entropy of the logits against the label. Written out:


# %%
def pool(h, ids, pooling):
    """h (B, T, D) -> g (B, D): the <bos> vector, or the mean over real tokens."""
    if pooling == "cls":
        return h[:, 0]  # (B, D): position 0 holds <bos> in every sentence
    real = (ids != vocab.pad_id).unsqueeze(-1)  # (B, T, 1): 1 at real tokens
    return (h * real).sum(dim=1) / real.sum(dim=1)  # (B, D)


def classify(encoder, linear, ids, pooling):
    """ids (B, T) -> logits (B, C)."""
    return linear(pool(encoder(ids), ids, pooling))  # (B, D) -> (B, C)


# %% [markdown]
# `tinyformer.encoder.SequenceClassifier(encoder, n_classes, pooling)` is the same thing
# as a module, with the linear layer as `.classifier`. We check ours against it with the
# same weights, on a padded batch that starts with `<bos>`:

# %%
set_seed(0)
ids = vocab.batch(train_sents[:4], bos=True, eos=True)  # (B, T), right-padded
print(
    "ids",
    tuple(ids.shape),
    "| first column is <bos>:",
    bool((ids[:, 0] == vocab.bos_id).all()),
)
for pooling in ("cls", "mean"):
    model = SequenceClassifier(Encoder(len(vocab)), n_classes=2, pooling=pooling).eval()
    with torch.no_grad():
        ours = classify(model.encoder, model.classifier, ids, pooling)  # (B, 2)
        theirs = model(ids)  # (B, 2)
    print(
        f"{pooling:4s} logits {tuple(theirs.shape)}, ours == tinyformer:",
        torch.allclose(ours, theirs, atol=1e-6),
    )
    assert torch.allclose(ours, theirs, atol=1e-6)

# %% [markdown]
# Both poolings give a sentence the same logits whether it sits alone or in a padded
# batch: the encoder's key-padding mask keeps pads out of every real token, and mean
# pooling leaves the pad rows out.

# %%
short = min(range(len(ids)), key=lambda b: len(train_sents[b]))  # the most padded row
with torch.no_grad():
    in_batch = model(ids)[short]  # (2,)
    alone = model(vocab.batch([train_sents[short]], bos=True, eos=True))[
        0
    ]  # no padding
print("pads in that row:", int((ids[short] == vocab.pad_id).sum()))
print(
    "same logits alone and in a padded batch:",
    torch.allclose(alone, in_batch, atol=1e-5),
)
assert torch.allclose(alone, in_batch, atol=1e-5)

# %% [markdown]
# ## Pre-training: the Chapter 7 encoder
#
# We need the pre-trained encoder of Chapter 7. Rather than load a file, we train it
# again here with **exactly the same recipe**, seeds included: $D = 64$, 4 heads, 2
# blocks, $d_{ff} = 256$; 300 steps of 128 fresh sentences masked by BERT's rule
# (`mask_tokens`: 15 % of the words chosen, of which 80 % become `<mask>`, 10 % a random
# word, 10 % stay as they are); the masked-LM loss on the chosen positions; AdamW at a
# peak learning rate of $4 \times 10^{-3}$ with 30 warmup steps and a cosine decay. On the
# same CPU it gives the very same weights as Chapter 7. The sentences carry no labels:
# pre-training never sees a broken one.

# %%
ENCODER = dict(
    d_model=64, n_heads=4, n_layers=2, d_ff=256, max_len=32
)  # Chapter 7's size
BATCH, STEPS, LR, WARMUP = 128, 300, 4e-3, 30  # Chapter 7's recipe
TRAIN_SEED = 100_000  # batch `step` holds lang.sample(BATCH, seed=TRAIN_SEED + step)

generator = set_seed(0)  # seeds the initialisation; `generator` drives the masking
mlm = MaskedLM(
    Encoder(len(vocab), **ENCODER)
)  # encoder + MLM head (tied to the embedding)


def get_mlm_batch(step):
    """Fresh sentences, masked: (inputs, labels), each (BATCH, T)."""
    ids = vocab.batch(lang.sample(BATCH, seed=TRAIN_SEED + step), bos=True, eos=True)
    return mask_tokens(ids, vocab, p=0.15, generator=generator)


def mlm_objective(model, inputs, labels):
    return mlm_loss(model(inputs), labels)


print(f"encoder: {mlm.encoder.num_parameters():,} parameters")

# %%
# NBVAL_IGNORE_OUTPUT
_ = train(
    mlm, get_mlm_batch, steps=STEPS, lr=LR, warmup_steps=WARMUP, loss_fn=mlm_objective,
    log_every=100,
)  # fmt: skip

# %% [markdown]
# As in Chapter 7 we measure it on held-out sentences with **one** word hidden in each,
# against the {term}`Bayes-optimal` prediction from `lang.masked_distribution`. Two
# accuracies, on the same hidden words:
#
# - the **empirical** accuracy: how often the model's top word is the word that was there;
# - the **expected** accuracy: $P(\text{model's top word} \mid \text{rest})$ under the
#   language's true distribution, averaged over sentences. It is what the empirical
#   accuracy tends to over many draws, without the noise of which word happened to be
#   drawn, and the Bayes-optimal predictor's expected accuracy is
#   $\max_w P(w \mid \text{rest})$.
#
# We report and test the expected accuracy: comparing it with the Bayes-optimal one on
# the same positions is almost free of sampling noise.

# %%
mlm_sents = lang.sample(
    1000, seed=2024
)  # the first 1000 of Chapter 7's held-out sentences
rng = random.Random(0)
mlm_positions = [
    rng.randrange(len(s)) for s in mlm_sents
]  # one hidden word per sentence
truth = [
    lang.masked_distribution(s, i)
    for s, i in zip(mlm_sents, mlm_positions, strict=True)
]

mlm_ids = vocab.batch(mlm_sents, bos=True, eos=True)  # (N, T)
rows, cols = torch.arange(len(mlm_sents)), torch.tensor(mlm_positions) + 1  # +1: <bos>
hidden = mlm_ids[rows, cols].clone()  # (N,) the true words
mlm_ids[rows, cols] = vocab.mask_id
mlm.eval()
with torch.no_grad():
    top = mlm(mlm_ids)[rows, cols].argmax(dim=-1)  # (N,) the model's top word
top_words = [vocab.itos[i] for i in top.tolist()]

mlm_bayes_accuracy = sum(max(p.values()) for p in truth) / len(truth)
mlm_accuracy = sum(p.get(w, 0.0) for p, w in zip(truth, top_words, strict=True)) / len(
    truth
)
mlm_empirical = (top == hidden).float().mean().item()

# %%
# NBVAL_IGNORE_OUTPUT
print(f"Bayes-optimal expected accuracy: {mlm_bayes_accuracy:.4f}")
print(f"model's expected accuracy:       {mlm_accuracy:.4f}")
print(f"model's empirical accuracy:      {mlm_empirical:.4f}")

# %%
assert mlm_bayes_accuracy - mlm_accuracy < 0.01  # within 1 percentage point of the best
print("the pre-trained encoder is within 1 point of Bayes-optimal on masked words")

# %% [markdown]
# A Bayes-optimal accuracy of about a third looks low, but most hidden words are one of
# several equally likely choices: any of six nouns, four verbs, five adjectives fits.
# What the encoder *can* learn, and has, is everything the rest of the sentence does
# determine: the word's category and, for nouns, verbs and determiners, its number. To
# predict a hidden verb's number it must find the subject; that is exactly the skill our
# classifier needs.

# %% [markdown]
# ## Fine-tuning on all the labels
#
# **Fine-tuning** copies the pre-trained encoder, puts a fresh linear head on it, and
# trains *everything* (encoder and head) on the labelled sentences with the
# cross-entropy loss. The MLM head is thrown away. Training **from scratch** does the
# same with a randomly initialised encoder of the same size.
#
# We encode the sentences once. A run with `n_labels` labels picks that many training
# sentences at random and draws its batches from them; held-out sentences are scored in
# batches of similar length, so that they carry little padding (Chapter 6, exercise 4).

# %%
train_ids = vocab.batch(train_sents, bos=True, eos=True)  # (N_TRAIN, 17)
train_y = torch.tensor(train_labels)  # (N_TRAIN,)


def trim(ids):
    """Drop the columns that are padding in every row: (B, T) -> (B, T')."""
    return ids[:, : int((ids != vocab.pad_id).sum(dim=1).max())]


by_length = sorted(range(N_TEST), key=lambda i: len(test_sents[i]))
test_batches = [  # (indices, ids (b, T_b)) with T_b the longest sentence of the batch
    (torch.tensor(idx), vocab.batch([test_sents[i] for i in idx], bos=True, eos=True))
    for idx in (by_length[k : k + 500] for k in range(0, N_TEST, 500))
]


@torch.no_grad()
def predict(model):
    """The predicted class (0 or 1) of every held-out sentence, (N_TEST,)."""
    was_training = model.training
    model.eval()
    pred = torch.empty(N_TEST, dtype=torch.long)
    for idx, ids in test_batches:
        pred[idx] = model(ids).argmax(dim=-1)
    model.train(was_training)
    return pred


def accuracy(model):
    """Held-out accuracy: all sentences, and those with a mismatched attractor."""
    right = (predict(model) == test_y).float()
    return right.mean().item(), right[hard].mean().item()


def classification_loss(model, ids, y):
    return F.cross_entropy(model(ids), y)  # logits (B, 2), y (B,)


FT_STEPS, FT_BATCH, FT_LR, FT_WARMUP = 100, 32, 1e-3, 10


def fine_tune(
    n_labels, pretrained, pooling="cls", seed=0, steps=FT_STEPS, lr=FT_LR, **kw
):
    """Train a classifier on n_labels random training sentences; return it and its history.

    pretrained: start from a copy of the MLM encoder, else from a random encoder.
    """
    g = set_seed(seed)
    encoder = (
        copy.deepcopy(mlm.encoder) if pretrained else Encoder(len(vocab), **ENCODER)
    )
    model = SequenceClassifier(encoder, n_classes=2, pooling=pooling)
    pick = torch.randperm(N_TRAIN, generator=g)[:n_labels]  # which labelled sentences
    batch = min(FT_BATCH, n_labels)

    def get_batch(step):
        rows = pick[torch.randint(n_labels, (batch,), generator=g)]
        return trim(train_ids[rows]), train_y[rows]

    history = train(
        model, get_batch, steps=steps, lr=lr, warmup_steps=FT_WARMUP, weight_decay=0.01,
        loss_fn=classification_loss, progress=False, **kw,
    )  # fmt: skip
    return model, history


# %% [markdown]
# First, all 4096 labelled sentences, starting from the pre-trained encoder, once with
# each pooling. Both runs get the same budget: 100 steps of 32 sentences (under an
# epoch). We score the held-out sentences every 20 steps.

# %%
# NBVAL_IGNORE_OUTPUT
runs = {}
for pooling in ("cls", "mean"):
    runs[pooling] = fine_tune(
        N_TRAIN,
        pretrained=True,
        pooling=pooling,
        eval_fn=lambda m: accuracy(m)[0],
        eval_every=20,
    )
    model, history = runs[pooling]
    print(f"{pooling:4s} pooling: held-out accuracy every 20 steps",
          [round(a, 3) for a in history["eval"]])  # fmt: skip

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
for pooling, label in (("cls", "[CLS] (<bos>) pooling"), ("mean", "mean pooling")):
    history = runs[pooling][1]
    ax.plot(history["eval_step"], history["eval"], "o-", label=label)
ax.axhline(0.5, color="gray", linestyle=":", label="chance")
ax.set_xlabel("fine-tuning step (batches of 32)")
ax.set_ylabel("held-out accuracy")
ax.set_title("Fine-tuning the pre-trained encoder on 4096 labels")
ax.grid(True, alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# How good is the [CLS] classifier at the end, overall and on the hard case?

# %%
# NBVAL_IGNORE_OUTPUT
classifier = runs["cls"][0]
classification_accuracy, hard_accuracy = accuracy(classifier)
mean_accuracy, mean_hard_accuracy = accuracy(runs["mean"][0])
print(
    f"[CLS] pooling: {classification_accuracy:.4f} held out, {hard_accuracy:.4f} with a mismatched attractor"
)
print(
    f"mean pooling:  {mean_accuracy:.4f} held out, {mean_hard_accuracy:.4f} with a mismatched attractor"
)

# %%
assert classification_accuracy >= 0.995 and hard_accuracy >= 0.99
print("[CLS] classifier: at least 99.5 % held out, at least 99 % on the hard case")

# %% [markdown]
# ## How many labels does pre-training save?
#
# Now the question that decides whether pre-training is worth its cost: with *few*
# labelled sentences, does starting from the MLM encoder help? We fine-tune on 16, 64,
# 256, 1024 and 4096 labelled sentences, from the pre-trained encoder and from scratch,
# each with the same budget as above: 100 steps of up to 32 sentences, [CLS] pooling, the
# same learning rate. Two seeds each; a seed picks the labelled subset, the initial
# weights of the head (and of the from-scratch encoder) and the order of the batches.

# %%
# NBVAL_IGNORE_OUTPUT
LABEL_COUNTS, SEEDS = [16, 64, 256, 1024, 4096], [0, 1]
curve = {True: {}, False: {}}  # pretrained? -> n_labels -> [held-out accuracy per seed]
for n in LABEL_COUNTS:
    for pretrained in (True, False):
        curve[pretrained][n] = [
            classification_accuracy  # this run is the [CLS] classifier above: no need to redo it
            if (n, pretrained, seed) == (N_TRAIN, True, 0)
            else accuracy(fine_tune(n, pretrained, seed=seed)[0])[0]
            for seed in SEEDS
        ]
    print(f"{n:5d} labels | pre-trained {[round(a, 3) for a in curve[True][n]]}"
          f" | from scratch {[round(a, 3) for a in curve[False][n]]}")  # fmt: skip

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
for pretrained, label in (
    (True, "fine-tuned from the MLM encoder"),
    (False, "trained from scratch"),
):
    runs_at = [curve[pretrained][n] for n in LABEL_COUNTS]
    ax.plot(LABEL_COUNTS, [sum(r) / len(r) for r in runs_at], "o-", label=label)
    ax.fill_between(
        LABEL_COUNTS, [min(r) for r in runs_at], [max(r) for r in runs_at], alpha=0.25
    )
ax.axhline(0.5, color="gray", linestyle=":", label="chance")
ax.set_xscale("log", base=2)
ax.set_xticks(LABEL_COUNTS, labels=[str(n) for n in LABEL_COUNTS])
ax.set_xlabel("labelled training sentences (log scale)")
ax.set_ylabel("held-out accuracy")
ax.set_title(
    f"Label efficiency: 100 steps per run, mean and range of {len(SEEDS)} seeds"
)
ax.grid(True, alpha=0.3)
ax.legend()
plt.show()

# %%
mean_pre = {n: sum(curve[True][n]) / len(SEEDS) for n in LABEL_COUNTS}
best_scratch = {n: max(curve[False][n]) for n in LABEL_COUNTS}
assert (
    mean_pre[64] > best_scratch[64] + 0.05
)  # the smallest count at which either learns
assert mean_pre[256] > best_scratch[256] + 0.3
assert (
    max(best_scratch.values()) < 0.6
)  # from scratch: chance at every count, in this budget
print(
    "pre-training pays at 64 labels and decisively at 256; from scratch stays at chance"
)

# %% [markdown]
# With 16 labels neither model learns anything; from 64 labels on, the pre-trained
# encoder pulls away, and by 256 it is above 95 % while the from-scratch model, with the
# same steps, is still at chance at every label count. Pre-training pays most where
# labels are scarce: it does not tell the model what the task is (16 examples cannot),
# but once a few dozen examples do, the machinery to solve it is already there.
#
# > **Is the from-scratch model hopeless?** No: given all 4096 labels and four times the
# > steps at a higher learning rate, it does learn agreement (exercise 3). But it sits at
# > chance for a long while before its accuracy takes off, when depends on the seed, and
# > with 1024 labels it gets only part of the way. The pre-trained encoder paid for its
# > head start once, with unlabelled text, and every task fine-tuned from it reuses that
# > payment.

# %% [markdown]
# ## Where does [CLS] look?
#
# The classifier reads its decision from position 0, so the last layer's attention of
# `<bos>` shows what it gathers. Here are the four heads of the last layer on a hard pair,
# the same sentence grammatical and broken, with an attractor of the other number:

# %%
pair = ["the dog near the cats sleeps".split(), "the dog near the cats sleep".split()]
pair_ids = vocab.batch(pair, bos=True, eos=True)  # (2, T)
classifier.eval()
with torch.no_grad():
    logits, attention = classifier(pair_ids, return_attention=True)
p_grammatical = logits.softmax(dim=-1)[:, 1]  # (2,)

fig, axes = plt.subplots(1, 2, figsize=(13, 3.4), layout="constrained")
for b, ax in enumerate(axes):
    toks = vocab.decode(pair_ids[b], strip_special=False)
    plot_attention(
        attention[-1][b, :, 0],  # (H, T): last layer, query <bos>, every head
        toks,
        [f"head {h}" for h in range(ENCODER["n_heads"])],
        ax=ax,
        title=f"P(grammatical) = {p_grammatical[b]:.3f}",
    )
    ax.set_ylabel("head (query: <bos>)")
fig.suptitle("Last layer: where the [CLS] position reads")
plt.show()

# %% [markdown]
# Most heads concentrate on one or two words, and the attractor *cats* is not among them:
# the weight goes to the subject *dog*, the verb, and the preposition that opens the
# phrase to skip. One example proves little, so we average over every held-out sentence
# with a mismatched attractor: how much does `<bos>` read (mean over the last layer's
# heads) from the subject's head noun, the main verb and the attractor?

# %%
hard_idx = (
    hard.nonzero().squeeze(1).tolist()
)  # held-out sentences with a mismatched attractor
hard_ids = vocab.batch(
    [test_sents[i] for i in hard_idx], bos=True, eos=True
)  # (B_h, T)
with torch.no_grad():
    _, attention = classifier(hard_ids, return_attention=True)
w = attention[-1][:, :, 0].mean(
    dim=1
)  # (B_h, T): last layer, query <bos>, mean over heads


def weight_at(positions):
    """Mean attention of <bos> on one word per sentence (word index, +1 for <bos>)."""
    return w[torch.arange(len(hard_idx)), torch.tensor(positions) + 1].mean().item()


infos = [test_info[i] for i in hard_idx]
on_subject = weight_at([a.subject for a in infos])
on_verb = weight_at([a.verb for a in infos])
on_attractor = weight_at(
    [
        next(
            j
            for j, n in zip(a.attractors, a.attractor_numbers, strict=True)
            if n != a.number
        )
        for a in infos
    ]
)
on_average = (1 / (hard_ids != vocab.pad_id).sum(dim=1).float()).mean().item()

# %%
# NBVAL_IGNORE_OUTPUT
print(f"{len(hard_idx)} held-out sentences with a mismatched attractor; <bos> reads")
print(f"  the subject's head noun {on_subject:.3f}")
print(f"  the main verb           {on_verb:.3f}")
print(f"  the attractor           {on_attractor:.3f}")
print(f"  (an average token       {on_average:.3f})")

# %%
assert on_subject + on_verb > 3 * on_attractor
print("[CLS] reads subject and verb far more than the attractor")

# %% [markdown]
# On average the summary position reads the two words that agreement is about well above
# an average token, and the attractor well below it. Attention weights are not a full
# explanation (the values that are read were themselves computed by the first layer from
# the whole sentence), but the picture fits the task: find the subject, check the verb,
# ignore the noun in between.

# %% [markdown]
# ## What we learned
#
# - Grammatical and broken-agreement sentences have the same word frequencies; what
#   tells them apart is the relation between the subject's head noun and the main verb.
#   The "closest noun" shortcut scores about 76 %: it fails on every sentence with a
#   mismatched attractor, about a quarter of them.
# - A classification head pools the encoder's `(B, T, D)` output into `(B, D)`, either
#   at position 0 (`<bos>` as BERT's `[CLS]`) or by a mean over the real tokens, then
#   maps it to `(B, C)` logits. Ours equals `tinyformer.encoder.SequenceClassifier`, and
#   padding does not change a sentence's logits.
# - Fine-tuned from the Chapter 7 encoder (re-trained here with the same recipe, within a
#   point of Bayes-optimal on masked words), the classifier exceeds 99.5 % on held-out
#   sentences after 100 steps, and above 99 % on the hard case. Both poolings get there;
#   here they learned at about the same pace.
# - Pre-training buys label efficiency: with the same 100 steps, the pre-trained encoder
#   is ahead at 64 labels, above 95 % at 256 and near-perfect from 1024 on, while the
#   from-scratch model stays at chance. With 16 labels neither learns. Given four times
#   the steps and all 4096 labels, the from-scratch model learns too (exercise 3).
# - The fine-tuned `<bos>` position reads the subject and the verb, and mostly ignores
#   the attractor.
#
# Part III joins an encoder like this one to a decoder with cross attention, to
# translate.

# %% [markdown]
# ## Exercises
#
# **1. A classifier with no labels.** The MLM encoder already predicts a hidden verb's
# number from its subject. Turn that into a grammaticality judge without fine-tuning:
# hide each word in turn, take $\log P(\text{the word that was there} \mid \text{rest})$
# from the MLM, and call a sentence broken when its least likely word falls below a
# threshold. How accurate is it on the held-out set?
#
# <details><summary>Solution</summary>
#
# ```python
# @torch.no_grad()
# def least_likely_word(mlm, ids):
#     """(B,) the lowest log P(w_t | every other word) over the words of each sentence."""
#     mlm.eval()
#     lowest = torch.zeros(len(ids))
#     is_word = ids > vocab.mask_id  # ids 0-4 are the special tokens
#     for t in range(1, ids.shape[1]):
#         hidden = ids.clone()
#         hidden[is_word[:, t], t] = vocab.mask_id  # hide word t of every sentence that has one
#         log_p = mlm(hidden)[:, t].log_softmax(dim=-1)  # (B, V)
#         here = log_p.gather(1, ids[:, t : t + 1]).squeeze(1)  # (B,)
#         lowest = torch.where(is_word[:, t], torch.minimum(lowest, here), lowest)
#     return lowest
#
# score = least_likely_word(mlm, vocab.batch(test_sents, bos=True, eos=True))
# for threshold in (-3, -4, -5):
#     right = ((score > threshold).long() == test_y).float()
#     print(threshold, round(right.mean().item(), 3), round(right[hard].mean().item(), 3))
# ```
#
# In our run a threshold of $-4$ (a probability of about 2 %) scores about 98.7 %, on the
# hard case too, with no labels at all (a handful would do to pick the threshold). A
# broken verb is one the MLM finds nearly impossible: with its subject in view, the other
# number has probability close to 0. Scoring sentences by the masked probabilities of
# their words is an established use of masked language models {cite}`salazar2020masked`
# (they sum the log-probabilities; the minimum suits a single broken word). The knowledge
# the classifier needs is in the pre-trained encoder; fine-tuning only has to route it to
# one output.
# </details>
#
# **2. A linear probe.** Freeze the pre-trained encoder and train only the linear head,
# on all 4096 labels. Is the answer linearly readable from the `<bos>` vector?
#
# <details><summary>Solution</summary>
#
# ```python
# g = set_seed(0)
# probe = SequenceClassifier(copy.deepcopy(mlm.encoder).requires_grad_(False), n_classes=2)
#
# def get_batch(step):
#     rows = torch.randint(N_TRAIN, (32,), generator=g)
#     return trim(train_ids[rows]), train_y[rows]
#
# train(probe, get_batch, steps=300, lr=1e-2, warmup_steps=10,
#       loss_fn=classification_loss, progress=False)
# print(accuracy(probe))
# ```
#
# In our runs the probe reaches only 55–60 % (with mean pooling too). The encoder
# "knows" agreement (exercise 1), but no single pooled vector of the pre-trained encoder
# carries "the verb disagrees with the subject" along a fixed direction: the MLM never
# needed that feature. Fine-tuning the whole encoder builds it in a few dozen steps.
# This is why BERT-style models are usually fine-tuned end to end rather than probed.
# </details>
#
# **3. From scratch, with more compute.** Train the from-scratch classifier on all 4096
# labels for 400 steps at a learning rate of $3 \times 10^{-3}$, printing the held-out
# accuracy every 50 steps; then on 1024 labels. Compare the compute with that of
# pre-training plus fine-tuning.
#
# <details><summary>Solution</summary>
#
# ```python
# model, history = fine_tune(N_TRAIN, pretrained=False, steps=400, lr=3e-3,
#                            eval_fn=lambda m: accuracy(m)[0], eval_every=50)
# print([round(a, 3) for a in history["eval"]])
# ```
#
# In our runs the accuracy sits at chance for 100 to 250 steps, depending on the seed,
# then climbs within about 100 steps, ending between 96 % and 99.5 %. With 1024 labels it
# climbs later and more slowly and ends near 83 %: with fewer examples, memorising them
# competes with finding agreement. In compute, the from-scratch run is cheaper:
# 400 batches of 32 sentences, against 300 batches of 128 for pre-training alone. So with
# thousands of labels for *one* task, pre-training is not needed; it pays when labels are
# scarce, and when one pre-trained encoder serves many tasks.
# </details>
#
# **4. Pooling with few labels.** Repeat the label-efficiency experiment with mean
# pooling, at 64, 256 and 1024 labels and three seeds. Does the choice of pooling matter
# more when labels are scarce?
#
# <details><summary>Solution</summary>
#
# ```python
# for n in (64, 256, 1024):
#     for pooling in ("cls", "mean"):
#         runs_n = [accuracy(fine_tune(n, True, pooling=pooling, seed=s)[0])[0] for s in range(3)]
#         print(n, pooling, [round(a, 3) for a in runs_n])
# ```
#
# In our runs the two were within a point or two of each other everywhere (at 256 labels
# about 97.7 % for `[CLS]` and 96.3 % for mean pooling), less than the spread between
# seeds. Each has its argument: `[CLS]` lets attention choose which words to read, which
# suits a decision that hinges on two words; the mean gives every word a direct path to
# the output, and sentence-embedding models such as Sentence-BERT use it
# {cite}`reimers2019sentence`. For this task and budget it hardly matters.
# </details>

# %% [markdown]
# ## Results
#
# The chapter's numbers in one place, and the targets they must meet:
#
# - `mlm_accuracy`: the pre-trained encoder's **expected** accuracy on one hidden word per
#   held-out sentence (the probability, under the language's true conditional, of the
#   model's top word; the low-noise measure above);
# - `mlm_bayes_accuracy`: the Bayes-optimal expected accuracy on the same hidden words;
#   `mlm_accuracy` must be within one percentage point of it;
# - `classification_accuracy`: the fine-tuned `[CLS]` classifier on the 2000 held-out
#   sentences; it must be at least 99.5 %.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"mlm_accuracy: {mlm_accuracy:.4f}")
print(f"mlm_bayes_accuracy: {mlm_bayes_accuracy:.4f}")
print(f"classification_accuracy: {classification_accuracy:.4f}")
assert mlm_bayes_accuracy - mlm_accuracy < 0.01
assert classification_accuracy >= 0.995
