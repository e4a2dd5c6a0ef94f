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
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/part2_encoder/08_sentence_classification.ipynb">Open in Colab</a> · runs in about 110 s on two CPU cores
#
# [Chapter 7](07_masked_language_modelling.ipynb) trained an encoder to fill in hidden
# words, and it came within a hair of the best possible guess. Nobody needs a model that
# fills in blanks in a toy language. What we want is the *knowledge* that filling in
# blanks forced into the encoder, reused for a task we care about. That is the recipe of
# BERT {cite}`devlin2019bert`: **pre-train** on plenty of unlabelled text, then
# **fine-tune** on a few labelled examples.
#
# Our task: is a sentence grammatical, or has its {term}`agreement` been broken? It is the
# test that Linzen and colleagues used to probe what sequence models know about syntax
# {cite}`linzen2016assessing`, turned into a classifier. Before we train anything we ask
# how far simple rules get, because a task that a one-line rule solves tells us nothing
# about a transformer.
#
# **Learning goals.** After this chapter you can
#
# - build a balanced data set of grammatical and broken-agreement sentences, and measure
#   the simple rules that could solve it (first noun, nearest noun, word counts, a
#   bag-of-words model) before crediting a model with "finding the subject";
# - see that on the course's default language the rule "every verb agrees with the first
#   noun" is perfect, and make the task honest with language options that put other
#   nouns before the subject and other verbs after the main verb;
# - put a classification head on an encoder, pooling `(B, T, D)` into `(B, D)` either at
#   the `<bos>` position (in the place of BERT's `[CLS]`) or by a mean over real tokens,
#   and check it against `tinyformer.encoder.SequenceClassifier`;
# - find that on the harder language every rule that knows words, numbers and positions
#   stays below 80 %, while rules that know what a relative clause looks like do better,
#   up to exact;
# - fine-tune a pre-trained masked-language-model encoder, beat the simple rules by a
#   wide margin, and compare it with the same network trained from scratch with the
#   same compute, as a function of the number of labelled examples.

# %%
import copy
import random
from collections import Counter, defaultdict

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.attention import record_attention
from tinyformer.config import TransformerConfig
from tinyformer.encoder import MaskedLM, SequenceClassifier
from tinyformer.language import ToyLanguage
from tinyformer.objectives import mask_tokens, mlm_loss
from tinyformer.plot import plot_attention
from tinyformer.stack import TransformerStack
from tinyformer.train import evaluating, set_seed, train
from tinyformer.vocab import Vocab

set_seed(0)  # seeds Python, NumPy and torch
# PNG figures at twice the pixels (same size on the page): the same in the book, on
# GitHub and in Colab.
set_matplotlib_formats("retina")
torch.set_printoptions(precision=3, sci_mode=False)

# %% [markdown]
# ## The task: is the agreement right?
#
# In the toy language the main verb takes the number of its subject's head noun: *the
# dog near the cats **sleeps***, *the dogs near the cat **sleep***. `lang.break_agreement`
# flips the main verb to the other number, which always makes the sentence
# ungrammatical:

# %%
default_lang = ToyLanguage()  # the language of Chapters 1-7
sentence = "the dog near the cats sleeps".split()
broken = default_lang.break_agreement(sentence)
print(" ".join(sentence), "->", default_lang.is_grammatical(sentence))
print(" ".join(broken), "  ->", default_lang.is_grammatical(broken))

# %% [markdown]
# A data set is a list of sentences with labels, 1 for grammatical and 0 for broken. We
# draw the grammatical half with `lang.sample` and the broken half by breaking *other*
# samples, so within one data set a sentence rarely meets its own broken twin (if it
# often did, a model could learn to compare near-duplicates). Across the training and
# held-out sets it can happen: on the harder language below, 15 held-out sentences have
# their twin in the training set, under 1 %, too few to change the picture. The halves
# are equal, so always answering "grammatical" scores 50 %.
#
# For every sentence we keep `lang.analyse`'s answer too: where the subject and the main
# verb are, and which attractor nouns stand between them. The broken sentences no longer
# parse, so they are analysed before being broken; the flip changes the verb only, so
# subject, verb position and attractors stay the same.
#
# A toy language repeats itself: short sentences such as *the dog sleeps* come up again
# and again. A held-out sentence that also occurs in the training set tests memory, not
# generalisation, so we drop every held-out sentence that the training set contains.


# %%
def make_dataset(lang, n, seed):
    """n sentences, half grammatical (label 1) and half broken (label 0), shuffled.

    Returns (sentences, labels, analyses): analyses[i] describes sentence i's subject,
    main verb and attractors (for a broken sentence, those of the sentence it came
    from).
    """
    good = lang.sample(n // 2, seed=seed)
    to_break = lang.sample(n - n // 2, seed=seed + 1)  # other sentences
    infos = [lang.analyse(s) for s in good + to_break]
    # lang.break_agreement, written with the analysis we already have (saves a parse)
    bad = [
        s[: a.verb] + [lang.flip_number(s[a.verb])] + s[a.verb + 1 :]
        for s, a in zip(to_break, infos[len(good) :], strict=True)
    ]
    assert bad[:10] == [lang.break_agreement(s) for s in to_break[:10]]  # the same
    sentences, labels = good + bad, [1] * len(good) + [0] * len(bad)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return tuple([column[i] for i in order] for column in (sentences, labels, infos))


def held_out(lang, train_sents, n, seed):
    """make_dataset(lang, n, seed) without the sentences that occur in train_sents."""
    seen = {tuple(s) for s in train_sents}
    rows = list(zip(*make_dataset(lang, n, seed), strict=True))
    kept = [row for row in rows if tuple(row[0]) not in seen]
    return (*([row[k] for row in kept] for k in range(3)), 1 - len(kept) / n)


N_TRAIN, N_TEST = 4096, 2000
d_train = make_dataset(default_lang, N_TRAIN, seed=10)
*d_test, d_dropped = held_out(default_lang, d_train[0], N_TEST, seed=20)
for s, y in list(zip(*d_train[:2], strict=True))[:5]:
    print(y, " ".join(s))
print(f"held out: {len(d_test[0])} sentences, {sum(d_test[1])} grammatical")
print(f"dropped: {d_dropped:.1%} of the {N_TEST} drawn (they occur in training)")

# %% [markdown]
# ## Four rules, before any model
#
# Which simple rules could tell the two classes apart? Each looks at the words only,
# using each noun's and verb's number (`lang.number`), never the parse:
#
# - **first noun**: the sentence is grammatical when every verb agrees with its first
#   noun;
# - **nearest noun**: when every verb agrees with the closest noun before it;
# - **counts**: count the singular nouns, plural nouns, singular verbs and plural verbs,
#   and answer, for each combination of the four counts, the majority label of the
#   training sentences with that combination: the best any rule on these counts can do
#   on the training set. (A logistic regression on the same four counts is printed too.)
# - **bag of words**: a logistic regression on how often each of the 42 words occurs,
#   trained on the training sentences.
#
# Two more rules use word positions, and we will need them on the harder language
# below. In this language an object never contains a verb, so the main verb is always
# the **last** verb of the sentence:
#
# - **last verb, first noun**: grammatical when the last verb agrees with the first
#   noun;
# - **last verb, first noun after a fronted phrase**: the same, but when the sentence
#   starts with a preposition, the first noun after that phrase (the phrase ends at its
#   first noun).

# %%
KIND = {}  # word -> "noun" or "verb", for the words that have a number
for rule in default_lang.grammar.rules:
    if rule.lhs.split(".")[0] in ("N", "Vi", "Vt"):
        KIND[rule.rhs[0]] = "noun" if rule.lhs.startswith("N.") else "verb"


def first_noun_rule(lang, words):
    """1 when every verb agrees with the first noun of the sentence."""
    nouns = [lang.number(w) for w in words if KIND.get(w) == "noun"]
    return int(all(lang.number(w) == nouns[0] for w in words if KIND.get(w) == "verb"))


def nearest_noun_rule(lang, words):
    """1 when every verb agrees with the closest noun before it."""
    last_noun, ok = None, True
    for w in words:
        if KIND.get(w) == "noun":
            last_noun = lang.number(w)
        elif KIND.get(w) == "verb":
            ok = ok and lang.number(w) == last_noun
    return int(ok)


PREPOSITIONS = {r.rhs[0] for r in default_lang.grammar.rules if r.lhs == "P"}


def last_verb_rule(lang, words, skip_fronted=False):
    """1 when the last verb agrees with the first noun (after a fronted phrase)."""
    nouns = [i for i, w in enumerate(words) if KIND.get(w) == "noun"]
    first = nouns[1] if skip_fronted and words[0] in PREPOSITIONS else nouns[0]
    last_verb = [w for w in words if KIND.get(w) == "verb"][-1]
    return int(lang.number(last_verb) == lang.number(words[first]))


def counts(lang, words):
    """(singular nouns, plural nouns, singular verbs, plural verbs) of a sentence."""
    c = Counter((KIND[w], lang.number(w)) for w in words if w in KIND)
    return (c["noun", "sg"], c["noun", "pl"], c["verb", "sg"], c["verb", "pl"])


def logistic_regression(X, y, Z):
    """Fit P(label 1) = sigmoid(x.w + b) on X (N, F), y (N,) by L-BFGS; predict Z."""
    mu, sd = X.mean(0), X.std(0).clamp_min(1e-6)  # standardise the features
    X, Z = (X - mu) / sd, (Z - mu) / sd
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    y = torch.tensor(y, dtype=torch.float64)
    optimizer = torch.optim.LBFGS([w, b], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = F.binary_cross_entropy_with_logits(X @ w + b, y) + 1e-4 * w.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return ((Z @ w + b) > 0).long().tolist()


def rule_predictions(lang, train_set, test_set):
    """Each rule's predictions (0/1) for every held-out sentence."""
    (train_s, train_y, _), (test_s, _, _) = train_set, test_set
    votes = defaultdict(Counter)  # counts -> labels of the training sentences
    for s, y in zip(train_s, train_y, strict=True):
        votes[counts(lang, s)][y] += 1
    index = {w: i for i, w in enumerate(lang.words)}

    def features(sentences, kind):
        if kind == "counts":
            return torch.tensor(
                [counts(lang, s) for s in sentences], dtype=torch.float64
            )
        X = torch.zeros(len(sentences), len(index), dtype=torch.float64)
        for i, s in enumerate(sentences):
            for w in s:
                X[i, index[w]] += 1
        return X

    def fit(kind):
        return logistic_regression(
            features(train_s, kind), train_y, features(test_s, kind)
        )

    return {
        "first noun": [first_noun_rule(lang, s) for s in test_s],
        "nearest noun": [nearest_noun_rule(lang, s) for s in test_s],
        "counts (best table)": [
            int(votes[counts(lang, s)][1] >= votes[counts(lang, s)][0]) for s in test_s
        ],
        "counts (logistic)": fit("counts"),
        "bag of words (logistic)": fit("bag"),
        "last verb, first noun": [last_verb_rule(lang, s) for s in test_s],
        "last verb, after fronted": [last_verb_rule(lang, s, True) for s in test_s],
    }


def accuracy_of(predictions, labels):
    return sum(int(p == y) for p, y in zip(predictions, labels, strict=True)) / len(
        labels
    )


default_rules = rule_predictions(default_lang, d_train, d_test)
for name, pred in default_rules.items():
    print(f"{name:26s} {accuracy_of(pred, d_test[1]):.3f}")

# %% [markdown]
# On the course's default language, the first-noun rule is **perfect**. The subject is
# always the first noun of the sentence (modifiers only ever follow it), and every verb
# of a grammatical sentence agrees with it, the verb of a relative clause included (*the
# dog that sees the cats sleeps*: *sees* agrees with *dog*). A model could score 100 %
# here without knowing anything about the structure between subject and verb. The
# count table does well too: a broken sentence often has a verb of a number that no noun
# has, or two verbs that disagree, and counts see that. Only rules that ignore how
# numbers combine (the two linear models) are at chance. The two position rules are
# perfect too: here the first noun is always the subject.
#
# So on this language "find the subject" is a claim the task cannot test. We change the
# language.
#
# ## A harder language: the first noun is not always the subject
#
# `ToyLanguage` takes three options, off by default, that put other nouns before the
# subject or between the subject and its verb, and other verbs after the main verb:
#
# - a **fronted prepositional phrase** (`p_fronted_pp`): *near the cats the dog
#   sleeps*. The first noun is the prepositional phrase's, of either number;
# - an **object relative clause** (a fourth entry of `p_modifier`): *the dog that the
#   cats chase sleeps*. The relative clause has its own subject (*cats*) and its own verb
#   (*chase*), which agrees with *cats*, not with *dog*; the main verb agrees with *dog*.
# - **relative clauses on objects** (`p_object_rc`): *the dog sees the cats that
#   sleep*, *the dog sees the cat that the birds chase*. The sentence now ends with a
#   verb that agrees with a noun other than the subject, so the main verb is no longer
#   the last verb.
#
# The grammar stays unambiguous, so everything exact still works: after *that*, a subject
# relative clause starts with a verb and an object relative clause with a determiner; a
# *that* right after an object can only start that object's clause; and a sentence starts
# with a preposition exactly when it has a fronted phrase. We keep subject relative
# clauses and prepositional phrases after the subject too, so attractors stand between
# subject and verb as before, and we make transitive verbs (which have objects) a little
# more common: 70 % instead of 60 %.

# %%
HARD = dict(
    p_modifier=(0.2, 0.3, 0.2, 0.3),  # subject: plain, PP, RC, object RC
    p_fronted_pp=0.3,
    p_object_rc=(0.3, 0.3),  # object: "that sleep", "that the birds chase"
    p_transitive=0.7,
)
lang = ToyLanguage(**HARD)
vocab = Vocab(lang.words)
print("same words as the default language:", lang.words == default_lang.words)
for s in (
    "near the cats the dog sleeps",
    "the dog that the cats chase sleeps",
    "the dog sees the cats that sleep",
):
    words = s.split()
    a = lang.analyse(words)
    print(f"{s!r}: subject {words[a.subject]!r}, verb {words[a.verb]!r},", end=" ")
    print(f"broken: {' '.join(lang.break_agreement(words))!r}")
samples = lang.sample(500, seed=1)
parses = Counter(len(lang.grammar.parses(s)) for s in samples)
print("derivations per sampled sentence:", dict(parses))
print("longest of 500 samples:", max(map(len, samples)), "words")

# %% [markdown]
# Every sampled sentence has exactly one derivation, so `lang.log_prob`,
# `lang.masked_distribution` and `lang.analyse` are exact as before (the package's tests
# check the option further: the default grammar is unchanged, probabilities match, broken
# sentences are ungrammatical). The same data sets, now from this language:

# %%
train_sents, train_labels, _ = train_set = make_dataset(lang, N_TRAIN, seed=10)
*test_set, dropped = held_out(lang, train_sents, N_TEST, seed=20)
test_sents, test_labels, test_info = test_set
N_HELD = len(test_sents)
for s, y in list(zip(train_sents, train_labels, strict=True))[:5]:
    print(y, " ".join(s))
print(f"held out: {N_HELD} sentences, {sum(test_labels)} grammatical")
print(f"dropped: {dropped:.1%} of the {N_TEST} drawn (they occur in training)")
seen_in_training = {tuple(s) for s in train_sents}
twins = sum(
    tuple(s[: a.verb] + [lang.flip_number(s[a.verb])] + s[a.verb + 1 :])
    in seen_in_training
    for s, a in zip(test_sents, test_info, strict=True)
)  # held-out sentences whose twin (main verb flipped) is a training sentence
print(f"held-out sentences whose broken or grammatical twin is in training: {twins}")

# %% [markdown]
# Two kinds of held-out sentence are hard for a rule, and we report them separately
# throughout: those with an **attractor** of the other number between subject and main
# verb (`Analysis.has_mismatched_attractor`), and those whose **first noun is not the
# subject** and has the other number (a fronted phrase's noun).

# %%
test_y = torch.tensor(test_labels)  # (N_HELD,)
hard = torch.tensor([a.has_mismatched_attractor for a in test_info])  # (N_HELD,) bool


def first_noun_mismatch(words, a):
    """True when the first noun is not the subject and has the other number."""
    first = next(i for i, w in enumerate(words) if KIND.get(w) == "noun")
    return first != a.subject and lang.number(words[first]) != a.number


fronted = torch.tensor(
    [first_noun_mismatch(s, a) for s, a in zip(test_sents, test_info, strict=True)]
)
print("held-out sentences with a mismatched attractor:", end="          ")
print(f"{hard.float().mean():.3f}")
print("held-out sentences whose first noun is a mismatched other:", end=" ")
print(f"{fronted.float().mean():.3f}")

rules = rule_predictions(lang, train_set, test_set)
rule_accuracy = {}
for name, pred in rules.items():
    right = (torch.tensor(pred) == test_y).float()
    rule_accuracy[name] = (right.mean().item(), right[hard].mean().item(),
                           right[fronted].mean().item())  # fmt: skip
    everything, attractor, first_noun = rule_accuracy[name]
    print(f"{name:26s} all {everything:.3f} | attractor {attractor:.3f}", end=" | ")
    print(f"first noun {first_noun:.3f}")
best_rule = max(rule_accuracy, key=lambda k: rule_accuracy[k][0])
best_rule_accuracy = rule_accuracy[best_rule][0]
print(f"best rule: {best_rule}, {best_rule_accuracy:.3f}")

# %%
assert best_rule_accuracy <= 0.85  # every rule in the table, position rules included
print("no rule in the table reaches 85 %")

# %% [markdown]
# Every rule in the table now stays below 80 %. The first-noun rule is wrong on most
# sentences whose first noun is a fronted phrase's noun of the other number, and
# whenever a verb of a relative clause agrees with a noun of the other number. The
# nearest-noun rule fails on almost every mismatched attractor. The count table falls to
# about three quarters, because more sentences now hold nouns and verbs of both numbers;
# the linear models stay at chance. And the two position rules, perfect on the default
# language, fall too: the last verb is now often the verb of an object's relative clause
# (*the dog sees the cats that **sleep***), which agrees with the object, so checking it
# says nothing about the main verb.
#
# The rules of the table know two things about the language: which words are nouns and
# verbs of which number, and (the position rules) that a sentence may open with a
# prepositional phrase. A rule that also knows what a relative clause looks like does
# better. The verb of a clause such as *that sleep* or *that sees the cat* comes right
# after *that*; skip those verbs, and compare the last remaining verb with the subject:


# %%
def after_that_rule(lang, words):
    """1 when the last verb not right after "that" agrees with the first noun after a
    fronted phrase."""
    nouns = [i for i, w in enumerate(words) if KIND.get(w) == "noun"]
    subject = nouns[1] if words[0] in PREPOSITIONS else nouns[0]
    verbs = [
        w
        for i, w in enumerate(words)
        if KIND.get(w) == "verb" and words[i - 1] != "that"
    ]
    return int(lang.number(verbs[-1]) == lang.number(words[subject]))


pred = torch.tensor([after_that_rule(lang, s) for s in test_sents])
grammar_rule_accuracy = (pred == test_y).float().mean().item()
print(f"last verb not after 'that', after fronted: {grammar_rule_accuracy:.3f}")

# %% [markdown]
# That rule clears 85 %: it can go wrong only where the last such verb ends a clause
# with a subject of its own (*the dog sees the cat that the birds **chase***). Teach it
# that pattern too, and it is exact (Exercise 3). So rules can solve this task, but only
# rules written by someone who has read the grammar: the more of its clause patterns a
# rule knows, the better it does. That is the honest claim the task can test. The
# table's rules, which know words, numbers and positions but not clauses, all stay below
# 80 % (`best_rule_accuracy`); the question is whether a model learns what the
# rule-writer knew, from labelled sentences alone.

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
#   {cite}`devlin2019bert`; our `<bos>` plays that role
#   ([Chapter 6](06_bidirectional_attention.ipynb)). Its output has read the whole
#   sentence in every layer, and fine-tuning teaches it what to gather. (BERT's `[CLS]`
#   was already trained before fine-tuning, through a tanh "pooler" layer, by
#   next-sentence prediction; ours has had no loss of its own, since masked language
#   modelling never predicts `<bos>`.)
# - **Mean pooling** averages the outputs of the real tokens. The pad rows are computed
#   but meaningless ([Chapter 6](06_bidirectional_attention.ipynb)), so they must be left
#   out of the average. We zero them with `masked_fill` rather than multiplying by a 0/1
#   mask: a pad row may hold anything, and $0 \times \text{NaN}$ is NaN, while
#   `masked_fill` writes an exact 0.
#
# The loss is the cross-entropy of the logits against the label. Written out:


# %%
def pool(h, ids, pooling):
    """h (B, T, D) -> g (B, D): the <bos> vector, or the mean over real tokens."""
    if pooling == "cls":
        return h[:, 0]  # (B, D): position 0 holds <bos> in every sentence
    real = (ids != vocab.pad_id).unsqueeze(-1)  # (B, T, 1): True at real tokens
    total = h.masked_fill(~real, 0.0).sum(dim=1)  # (B, D): pad rows count exactly 0
    return total / real.sum(dim=1)  # (B, D)


def classify(encoder, linear, ids, pooling):
    """ids (B, T) -> logits (B, C)."""
    return linear(pool(encoder(ids), ids, pooling))  # (B, D) -> (B, C)


# %% [markdown]
# `tinyformer.encoder.SequenceClassifier(encoder, n_classes, pooling)` is the same thing
# as a module, with the linear layer as `.classifier`; `encoder` is a `TransformerStack`
# with `causal=False`. We check ours against it with the same weights, on a padded batch
# that starts with `<bos>`:

# %%
set_seed(0)
config = TransformerConfig(
    vocab_size=len(vocab), d_model=64, n_heads=4, n_layers=2, d_ff=256
)  # Chapter 7's size
ids = vocab.batch(train_sents[:4], bos=True, eos=True)  # (B, T), right-padded
print("ids", tuple(ids.shape), "| first column is <bos>:", end=" ")
print(bool((ids[:, 0] == vocab.bos_id).all()))
for pooling in ("cls", "mean"):
    encoder = TransformerStack(config, causal=False)
    model = SequenceClassifier(encoder, n_classes=2, pooling=pooling).eval()
    with torch.no_grad():
        ours = classify(model.encoder, model.classifier, ids, pooling)  # (B, 2)
        theirs = model(ids)  # (B, 2)
    print(f"{pooling:4s} logits {tuple(theirs.shape)}, ours == tinyformer:", end=" ")
    print(torch.allclose(ours, theirs, atol=1e-6))
    assert torch.allclose(ours, theirs, atol=1e-6)

# %% [markdown]
# Both poolings give a sentence the same logits whether it sits alone or in a padded
# batch: the encoder's key-padding mask keeps pads out of every real token, and mean
# pooling leaves the pad rows out.

# %%
short = min(range(len(ids)), key=lambda b: len(train_sents[b]))  # the most padded row
with torch.no_grad():
    in_batch = model(ids)[short]  # (2,)
    alone = model(vocab.batch([train_sents[short]], bos=True, eos=True))[0]  # no pads
print("pads in that row:", int((ids[short] == vocab.pad_id).sum()))
print(
    "same logits alone and in a padded batch:",
    torch.allclose(alone, in_batch, atol=1e-5),
)
assert torch.allclose(alone, in_batch, atol=1e-5)

# %% [markdown]
# ## Pre-training: Chapter 7's recipe on the harder language
#
# We need a pre-trained encoder of *this* language. We train it with [Chapter
# 7](07_masked_language_modelling.ipynb)'s recipe, seeds included, but for 400 steps
# instead of 300 (and 40 warmup steps instead of 30), since this language's sentences
# are longer and its structures more varied: $D = 64$, 4 heads, 2 blocks, $d_{ff} =
# 256$; 400 steps of 128 fresh sentences masked by BERT's rule (`mask_tokens`: 15 % of
# the words chosen, of which 80 % become `<mask>`, 10 % a random word, 10 % stay as they
# are); the masked-LM loss on the chosen positions; AdamW at a peak learning rate of $4
# \times 10^{-3}$ with 40 warmup steps and a cosine decay. The sentences carry no
# labels: pre-training never sees a broken one.

# %%
BATCH, STEPS, LR, WARMUP = 128, 400, 4e-3, 40  # Chapter 7's recipe, 400 steps
TRAIN_SEED = 100_000  # batch `step` holds lang.sample(BATCH, seed=TRAIN_SEED + step)

generator = set_seed(0)  # seeds the initialisation; `generator` drives the masking
mlm = MaskedLM(config)  # encoder stack + MLM head (tied to the embedding)


def get_mlm_batch(step):
    """Fresh sentences, masked: (inputs, labels), each (BATCH, T)."""
    ids = vocab.batch(lang.sample(BATCH, seed=TRAIN_SEED + step), bos=True, eos=True)
    return mask_tokens(ids, vocab, p=0.15, generator=generator)


def mlm_objective(model, inputs, labels):
    return mlm_loss(model(inputs), labels)


print(mlm.encoder)

# %% tags=["nbval-ignore-output"]
_ = train(
    mlm, get_mlm_batch, steps=STEPS, lr=LR, warmup_steps=WARMUP, loss_fn=mlm_objective,
    log_every=100,
)  # fmt: skip

# %% [markdown]
# Pre-training never sees a label, but it does see sentences: a short held-out
# grammatical sentence may also turn up, unlabelled, among the pre-training batches.

# %%
stream = set()  # every sentence of the pre-training batches
for step in range(STEPS):
    stream.update(tuple(s) for s in lang.sample(BATCH, seed=TRAIN_SEED + step))
good_held = [s for s, y in zip(test_sents, test_labels, strict=True) if y == 1]
in_stream = sum(tuple(s) in stream for s in good_held) / len(good_held)
print(
    f"held-out grammatical sentences also in the pre-training stream: {in_stream:.1%}"
)

# %% [markdown]
# In our run 3.9 % of the held-out grammatical sentences occur in the pre-training
# stream. They arrive there without a label, and the broken ones never do, so no answer
# leaks; it means only that a few short test sentences are familiar to the encoder.

# %% [markdown]
# As in [Chapter 7](07_masked_language_modelling.ipynb) we measure it on held-out
# sentences with **one** word hidden in each, against the {term}`Bayes-optimal`
# prediction from `lang.masked_distribution`. Two accuracies, on the same hidden words:
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
mlm_sents = lang.sample(1000, seed=2025)  # a seed no training batch uses
rng = random.Random(1)
mlm_positions = [rng.randrange(len(s)) for s in mlm_sents]  # one hidden word each
truth = [
    lang.masked_distribution(s, i)
    for s, i in zip(mlm_sents, mlm_positions, strict=True)
]

mlm_ids = vocab.batch(mlm_sents, bos=True, eos=True)  # (N, T)
rows, cols = torch.arange(len(mlm_sents)), torch.tensor(mlm_positions) + 1  # +1: <bos>
hidden = mlm_ids[rows, cols].clone()  # (N,) the true words
mlm_ids[rows, cols] = vocab.mask_id
with evaluating(mlm), torch.no_grad():
    top = mlm(mlm_ids)[rows, cols].argmax(dim=-1)  # (N,) the model's top word
top_words = [vocab.itos[i] for i in top.tolist()]

mlm_bayes_accuracy = sum(max(p.values()) for p in truth) / len(truth)
mlm_accuracy = sum(p.get(w, 0.0) for p, w in zip(truth, top_words, strict=True)) / len(
    truth
)
mlm_empirical = (top == hidden).float().mean().item()

# %% tags=["nbval-ignore-output"]
print(f"Bayes-optimal expected accuracy: {mlm_bayes_accuracy:.4f}")
print(f"model's expected accuracy:       {mlm_accuracy:.4f}")
print(f"model's empirical accuracy:      {mlm_empirical:.4f}")

# %%
assert mlm_bayes_accuracy - mlm_accuracy < 0.03  # within 3 percentage points
print("the pre-trained encoder is within 3 points of Bayes-optimal on masked words")

# %% [markdown]
# On this harder language, 400 steps leave the encoder about one and a half points
# short of the ceiling (on the default language,
# [Chapter 7](07_masked_language_modelling.ipynb)'s encoder came within a fraction of a
# point): its sentences are longer and its structures new. That is enough for what
# follows.
#
# A Bayes-optimal accuracy of about a third looks low, but most hidden words are one of
# several equally likely choices: any of six nouns, four verbs, five adjectives fits.
# What the encoder *can* learn is everything the rest of the sentence does determine:
# the word's category and, for nouns, verbs and determiners, its number. To predict a
# hidden verb's number it must find that verb's subject; that is exactly the skill our
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
# batches of similar length, so that they carry little padding
# ([Chapter 6](06_bidirectional_attention.ipynb), exercise 4).

# %%
train_ids = vocab.batch(train_sents, bos=True, eos=True)  # (N_TRAIN, T)
train_y = torch.tensor(train_labels)  # (N_TRAIN,)


def trim(ids):
    """Drop the columns that are padding in every row: (B, T) -> (B, T')."""
    return ids[:, : int((ids != vocab.pad_id).sum(dim=1).max())]


by_length = sorted(range(N_HELD), key=lambda i: len(test_sents[i]))
test_batches = [  # (indices, ids (b, T_b)) with T_b the longest sentence of the batch
    (torch.tensor(idx), vocab.batch([test_sents[i] for i in idx], bos=True, eos=True))
    for idx in (by_length[k : k + 500] for k in range(0, N_HELD, 500))
]


@torch.no_grad()
def predict(model):
    """The predicted class (0 or 1) of every held-out sentence, (N_HELD,)."""
    pred = torch.empty(N_HELD, dtype=torch.long)
    with evaluating(model):
        for idx, ids in test_batches:
            pred[idx] = model(ids).argmax(dim=-1)
    return pred


def accuracy(model):
    """Held-out accuracy: all sentences, mismatched attractor, mismatched first noun."""
    right = (predict(model) == test_y).float()
    return right.mean().item(), right[hard].mean().item(), right[fronted].mean().item()


def classification_loss(model, ids, y):
    return F.cross_entropy(model(ids), y)  # logits (B, 2), y (B,)


FT_STEPS, FT_BATCH, FT_LR, FT_WARMUP = 800, 32, 2e-3, 10


def fine_tune(
    n_labels, pretrained, pooling="cls", seed=0, steps=FT_STEPS, lr=FT_LR, **kw
):
    """Train a classifier on n_labels random training sentences; return it and history.

    pretrained: start from a copy of the MLM encoder, else from a random encoder.
    """
    g = set_seed(seed)
    encoder = (
        copy.deepcopy(mlm.encoder)
        if pretrained
        else TransformerStack(config, causal=False)
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
# each pooling. Both runs get the same budget: 800 steps of 32 sentences (about six
# epochs) at a peak learning rate of $2 \times 10^{-3}$. We score the held-out sentences
# every 100 steps.

# %% tags=["nbval-ignore-output"]
runs = {}
for pooling in ("cls", "mean"):
    runs[pooling] = fine_tune(
        N_TRAIN, pretrained=True, pooling=pooling,
        eval_fn=lambda m: accuracy(m)[0], eval_every=100,
    )  # fmt: skip
    model, history = runs[pooling]
    print(f"{pooling:4s} pooling: held-out accuracy every 100 steps",
          [round(a, 3) for a in history["eval"]])  # fmt: skip

# %% mystnb={"figure": {"caption": "Fine-tuning the pre-trained encoder on 4096 labelled sentences of the harder language, with [CLS] (<bos>) pooling and with mean pooling: held-out accuracy climbs past every rule of the table (dotted: the best of them) within a few hundred steps.", "name": "fig-ch08-fine-tuning"}, "image": {"alt": "Line plot of held-out accuracy against fine-tuning step for two poolings, both starting at chance and rising above 0.98, far above a dotted horizontal line at the best rule's accuracy of about 0.78."}} tags=["hide-input", "nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(6.5, 3.8))
for pooling, label in (("cls", "[CLS] (<bos>) pooling"), ("mean", "mean pooling")):
    history = runs[pooling][1]
    ax.plot(history["eval_step"], history["eval"], "o-", label=label)
ax.axhline(
    best_rule_accuracy, color="gray", linestyle=":", label=f"best rule: {best_rule}"
)
ax.axhline(0.5, color="gray", linestyle="--", linewidth=0.8, label="chance")
ax.set_xlabel("fine-tuning step (batches of 32)")
ax.set_ylabel("held-out accuracy")
ax.set_title("Fine-tuning the pre-trained encoder on 4096 labels")
ax.grid(True, alpha=0.3)
ax.legend()
plt.show()

# %% [markdown]
# The rules and the fine-tuned [CLS] classifier, side by side on the same held-out
# sentences, overall and on the two hard kinds:

# %% tags=["nbval-ignore-output"]
classifier = runs["cls"][0]
classification_accuracy, hard_accuracy, fronted_accuracy = accuracy(classifier)
mean_accuracy, mean_hard_accuracy, mean_fronted_accuracy = accuracy(runs["mean"][0])
table = dict(rule_accuracy)
table["fine-tuned, [CLS] pooling"] = (classification_accuracy, hard_accuracy,
                                      fronted_accuracy)  # fmt: skip
table["fine-tuned, mean pooling"] = (mean_accuracy, mean_hard_accuracy,
                                     mean_fronted_accuracy)  # fmt: skip
print(f"{'':28}{'all':>8}{'attractor':>11}{'first noun':>12}")
print(
    f"{'held-out sentences':28}{N_HELD:8d}{int(hard.sum()):11d}{int(fronted.sum()):12d}"
)
for name, (a, h, f) in table.items():
    print(f"{name:28}{a:8.3f}{h:11.3f}{f:12.3f}")

# %%
assert classification_accuracy >= 0.98 and hard_accuracy >= 0.95
assert classification_accuracy > best_rule_accuracy + 0.1
print("[CLS] classifier: at least 98 % held out, 10 points above every rule")

# %% [markdown]
# Every rule has a blind spot that the fine-tuned encoder does not share. It gets
# 99.2 % of the held-out sentences right, 98.8 % of those with an attractor of the other
# number (where the nearest-noun rule scores 1.7 %), and 98.6 % of those whose first noun
# is a fronted noun of the other number (where the first-noun rule scores 27 %): about 21
# points above the best rule of the table, and 10 above the rule that knows one clause
# pattern, from labels alone.
#
# The two poolings end close to each other (99.2 % and 99.7 %); mean pooling led early
# on (81 % against 71 % after 100 steps). A plausible reason: every
# word's vector has a direct path to a mean-pooled output, while `<bos>` starts
# fine-tuning untrained. BERT's `[CLS]` had been
# trained by next-sentence prediction through a tanh "pooler" before any fine-tuning
# {cite}`devlin2019bert`; ours received no loss at all during masked language modelling.

# %% [markdown]
# ## How many labels does pre-training save?
#
# Now the question that decides whether pre-training is worth its cost: with *few*
# labelled sentences, does starting from the MLM encoder help? We train on 1024 and
# 4096 labelled sentences, from the pre-trained encoder and from scratch, with [CLS]
# pooling. (Two points only: each from-scratch run is the slowest cell of the chapter.)
#
# A fair comparison gives both the same **compute**. Pre-training passed
# $400 \times 128 = 51{,}200$ sentences through the network, as many as 1,600 batches of
# 32, so the from-scratch model gets those 1,600 steps on top of the fine-tuning's own:
# 2,400 steps of 32, at the same learning rate, against the pre-trained encoder's 800.
# (With only the fine-tuning's own steps, the pre-trained model would have had a budget,
# pre-training, that the from-scratch model never got, and the comparison would measure
# the budget, not the value of pre-training.) One seed per
# point: it picks the labelled subset, the initial weights of the head (and of the
# from-scratch encoder) and the order of the batches.

# %% tags=["nbval-ignore-output"]
LABEL_COUNTS = [1024, 4096]
SCRATCH_STEPS = FT_STEPS + STEPS * BATCH // FT_BATCH  # equal compute: 800 + 1600
curve = {True: {}, False: {}}  # pretrained? -> n_labels -> held-out accuracy
for n in LABEL_COUNTS:
    if n == N_TRAIN:  # the [CLS] classifier above: no need to train it again
        curve[True][n] = classification_accuracy
    else:
        curve[True][n] = accuracy(fine_tune(n, pretrained=True)[0])[0]
    scratch_model, _ = fine_tune(n, pretrained=False, steps=SCRATCH_STEPS)
    curve[False][n] = accuracy(scratch_model)[0]
    print(f"{n:5d} labels | pre-trained, {FT_STEPS} steps: {curve[True][n]:.3f}"
          f" | from scratch, {SCRATCH_STEPS} steps: {curve[False][n]:.3f}")  # fmt: skip

# %% mystnb={"figure": {"caption": "Label efficiency at equal compute: held-out accuracy of the classifier fine-tuned from the pre-trained encoder (800 steps) and of the same network trained from scratch (2,400 steps, the compute of pre-training plus fine-tuning), against the number of labelled sentences. The dotted line is the best rule of the table.", "name": "fig-ch08-label-efficiency"}, "image": {"alt": "Line plot of held-out accuracy against the number of labelled sentences, 1024 and 4096 on a log scale, one line for the pre-trained encoder and one for training from scratch, with a dotted horizontal line for the best rule and a dashed one for chance."}} tags=["hide-input", "nbval-ignore-output"]
fig, ax = plt.subplots(figsize=(6.5, 4.8), layout="constrained")
for pretrained, label in (
    (True, f"fine-tuned from the MLM encoder ({FT_STEPS} steps)"),
    (False, f"trained from scratch ({SCRATCH_STEPS} steps)"),
):
    ax.plot(
        LABEL_COUNTS,
        [curve[pretrained][n] for n in LABEL_COUNTS],
        "o",
        markersize=9,
        label=label,
    )
ax.axhline(
    best_rule_accuracy, color="gray", linestyle=":", label=f"best rule: {best_rule}"
)
ax.axhline(0.5, color="gray", linestyle="--", linewidth=0.8, label="chance")
ax.set_xscale("log", base=2)
ax.set_xticks(LABEL_COUNTS, labels=[str(n) for n in LABEL_COUNTS])
ax.set_xlabel("labelled training sentences (log scale)")
ax.set_ylabel("held-out accuracy")
ax.set_title("Label efficiency at equal compute")
ax.grid(True, alpha=0.3)
ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
plt.show()

# %% [markdown]
# At equal compute, the pre-trained encoder is far ahead at both label counts: with 1024
# labels 85 % against 51 % (the from-scratch model has not left chance in 2,400 steps),
# with all 4096 labels 99.2 % against 90 %. The from-scratch model does learn, given
# enough labels: at 4096 it clears every rule in the table, but it is still 9 points
# behind. Each point is one run, and with 1024 labels runs differ: Exercise 4 repeats
# the pre-trained run with the same seed and reaches 92 % (see there why). Pre-training
# does not tell the model what the task is; once enough examples do, the machinery to
# solve it is already there. And the pre-trained encoder paid its head start once, with
# unlabelled text: every task fine-tuned from it reuses that payment.

# %% [markdown]
# ## Where does [CLS] look?
#
# The classifier reads its decision from position 0, so the last layer's attention of
# `<bos>` shows what it gathers. Here are the four heads of the last layer on a hard pair,
# the same sentence grammatical and broken, with a fronted phrase and an object relative
# clause whose nouns both have the other number:

# %%
pair = [
    "near the cats the dog that the birds chase sleeps".split(),
    "near the cats the dog that the birds chase sleep".split(),
]
print([lang.is_grammatical(s) for s in pair])
pair_ids = vocab.batch(pair, bos=True, eos=True)  # (2, T)
with evaluating(classifier), torch.no_grad(), record_attention(classifier) as maps:
    logits = classifier(pair_ids)  # (2, 2)
last = maps[f"encoder.blocks.{config.n_layers - 1}.self_attn"]  # (2, H, T, T)
p_grammatical = logits.softmax(dim=-1)[:, 1]  # (2,)

# %% mystnb={"figure": {"caption": "Where the <bos> ([CLS]) position reads in the last layer, one row per head, for a grammatical sentence and its broken twin. The weights depend on the run; in ours one head puts nearly all its weight on the subject dog and another on the main verb, in both sentences.", "name": "fig-ch08-cls-attention"}, "image": {"alt": "Two heatmaps, one above the other, one per sentence, each with four rows (heads 0 to 3) and one column per token; the title of each gives the model's probability that the sentence is grammatical. In both, head 0's row is dark only at dog and head 1's only at the main verb; head 2 spreads its weight thinly, and head 3 reads the verb in the grammatical sentence and that in the broken one."}} tags=["hide-input", "nbval-ignore-output"]
fig, axes = plt.subplots(2, 1, figsize=(7, 5.2), layout="constrained")
for b, ax in enumerate(axes):
    toks = vocab.decode(pair_ids[b], strip_special=False)
    plot_attention(
        last[b, :, 0],  # (H, T): query <bos>, every head
        toks,
        [f"head {h}" for h in range(config.n_heads)],
        ax=ax,
        title=f"P(grammatical) = {p_grammatical[b]:.3f}",
    )
    ax.set_ylabel("head (query: <bos>)")
    if b == 0:
        ax.set_xlabel("")
plt.show()

# %% [markdown]
# One example proves little, so we average over every held-out sentence with a
# mismatched attractor: how much does `<bos>` read (mean over the last layer's heads)
# from the subject's head noun, the main verb and the attractor?

# %%
hard_idx = hard.nonzero().squeeze(1).tolist()  # sentences with a mismatched attractor
hard_ids = vocab.batch([test_sents[i] for i in hard_idx], bos=True, eos=True)
with evaluating(classifier), torch.no_grad(), record_attention(classifier) as maps:
    classifier(hard_ids)
w = maps[f"encoder.blocks.{config.n_layers - 1}.self_attn"][:, :, 0].mean(dim=1)
# w (B_h, T): last layer, query <bos>, mean over heads


def weight_at(positions):
    """Mean attention of <bos> on one word per sentence (word index, +1 for <bos>)."""
    return w[torch.arange(len(hard_idx)), torch.tensor(positions) + 1].mean().item()


infos = [test_info[i] for i in hard_idx]
on_subject = weight_at([a.subject for a in infos])
on_verb = weight_at([a.verb for a in infos])


def first_mismatched_attractor(a):
    pairs = zip(a.attractors, a.attractor_numbers, strict=True)
    return next(j for j, n in pairs if n != a.number)


on_attractor = weight_at([first_mismatched_attractor(a) for a in infos])
on_average = (1 / (hard_ids != vocab.pad_id).sum(dim=1).float()).mean().item()

# %% tags=["nbval-ignore-output"]
print(f"{len(hard_idx)} held-out sentences with a mismatched attractor; <bos> reads")
print(f"  the subject's head noun {on_subject:.3f}")
print(f"  the main verb           {on_verb:.3f}")
print(f"  the attractor           {on_attractor:.3f}")
print(f"  (an average token       {on_average:.3f})")

# %% tags=["nbval-ignore-output"]
# Not a check: which way this falls depends on the run (two threads vary, see above).
side = "less" if on_attractor < on_average else "more"
print(f"<bos> reads the attractor {side} than an average token")

# %% [markdown]
# In our run the last layer's `<bos>` reads the subject's head noun almost three times
# as much as an average token, the main verb three times as much, and the attractor
# about two thirds as much: the two words that agreement is about get the most weight,
# and the word that would mislead gets less than an average token. That fits a
# classifier that found them, but it does not prove it. The first layer already mixes
# every position, so by the last layer what matters about subject and verb may sit in
# many vectors, and attention weights show where information moves, not what it carries
# or whether the output depends on it {cite}`jain2019attention,wiegreffe2019attention`.
# To test what a model uses, change a word and watch the output, as [Chapter
# 7](07_masked_language_modelling.ipynb) did.

# %% [markdown]
# ## What we learned
#
# - A task must be measured against the simple rules that could solve it. On the
#   course's default language, "every verb agrees with the first noun" scores 100 % on
#   held-out sentences and a table of singular and plural counts about 85 %: grammatical
#   and broken sentences there can be told apart without finding anything.
# - Three language options, fronted prepositional phrases, relative clauses with their
#   own subject (*the dog that the birds chase sleeps*) and relative clauses on objects
#   (*the dog sees the cats that sleep*), keep the grammar unambiguous and exact, and
#   drop every rule in the table below 80 %: first noun, nearest noun, counts,
#   bag-of-words logistic regressions (the linear ones at chance: agreement is an XOR
#   of two numbers, which a linear function of counts cannot express), and the position
#   rules "the last verb agrees with the first noun (after any fronted phrase)". Rules
#   that know what a relative clause looks like do better (89 % for one pattern) and,
#   knowing both patterns, are exact (Exercise 3): the task tests whether a model learns
#   those patterns from labels.
# - Held-out sentences that also occur in the training set are dropped: a toy language
#   repeats its short sentences.
# - A classification head pools the encoder's `(B, T, D)` output into `(B, D)`, either
#   at position 0 (`<bos>` in the place of BERT's `[CLS]`) or by a mean over the real
#   tokens (zeroing pad rows with `masked_fill`), then maps it to `(B, C)` logits. Ours
#   equals `tinyformer.encoder.SequenceClassifier`, and padding does not change a
#   sentence's logits.
# - Fine-tuned from an encoder pre-trained by masked language modelling on the same
#   language, the classifier reaches 99.2 % on held-out sentences, about 21 points above
#   the best rule of the table, and about 99 % on the sentences that defeat the rules.
# - At equal compute (a from-scratch run sees as many sentences as pre-training plus
#   fine-tuning), the pre-trained encoder is far ahead with 1024 labels, where the
#   from-scratch model stays at chance, and 9 points ahead with all 4096.
# - The last layer's `<bos>` attention weighs the subject and the main verb most, and the
#   attractor least; a hint that fits the classifier's success, not an explanation of it.
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
# <details class="solution"><summary>Solution</summary>
#
# ```python
# @torch.no_grad()
# def least_likely_word(mlm, ids):
#     """(B,) the lowest log P(w_t | every other word) over the words of each sentence."""
#     lowest = torch.zeros(len(ids))
#     is_word = ids > vocab.mask_id  # ids 0-4 are the special tokens
#     with evaluating(mlm):
#         for t in range(1, ids.shape[1]):
#             hidden = ids.clone()
#             hidden[is_word[:, t], t] = vocab.mask_id  # hide word t where there is one
#             log_p = mlm(hidden)[:, t].log_softmax(dim=-1)  # (B, V)
#             here = log_p.gather(1, ids[:, t : t + 1]).squeeze(1)  # (B,)
#             lowest = torch.where(is_word[:, t], torch.minimum(lowest, here), lowest)
#     return lowest
#
# score = least_likely_word(mlm, vocab.batch(test_sents, bos=True, eos=True))
# for threshold in (-3, -4, -5):
#     right = ((score > threshold).long() == test_y).float()
#     print(
#         threshold,
#         round(right.mean().item(), 3),
#         round(right[hard].mean().item(), 3),
#     )
# ```
#
# In our run it does poorly: about 67 % at a threshold of $-3$, 57 % at $-4$ and chance
# at $-5$, and on the sentences with a mismatched attractor 45 to 53 %, at or below
# chance at every threshold. The encoder, pre-trained for 400 steps on this harder
# language, is not sure enough of agreement: a threshold low enough to pass the
# grammatical sentences, whose rare words (a fronted phrase's noun is one of twelve)
# also score low, lets the broken verbs through too. Scoring sentences by the masked
# probabilities of their words is an established use of masked language models
# {cite}`salazar2020masked` (they sum the log-probabilities; the minimum suits a single
# broken word), but it needs a model that is sure of what it scores. Fine-tuning with
# labels is what made ours sure.
#
# </details>
#
# **2. A linear probe.** Freeze the pre-trained encoder and train only the linear head,
# on all 4096 labels. Is the answer linearly readable from the `<bos>` vector?
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# g = set_seed(0)
# frozen = copy.deepcopy(mlm.encoder).requires_grad_(False)
# probe = SequenceClassifier(frozen, n_classes=2)
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
# In our run the probe stays at chance, about 50 %. Two reasons.
# First, masked language modelling never puts a loss on `<bos>`: unlike BERT's `[CLS]`,
# trained by next-sentence prediction through a tanh pooler {cite}`devlin2019bert`, our
# `<bos>` vector was never asked to summarise anything. Second, the label is an XOR:
# grammatical means subject and verb both singular or both plural. Even a vector that
# holds the subject's number and the verb's number along two fixed directions does not
# make their agreement linearly readable: no single hyperplane separates
# {(sg, sg), (pl, pl)} from {(sg, pl), (pl, sg)}. A linear probe can only read what is
# already a direction; fine-tuning builds that feature, within a few hundred steps
# above. BERT's own paper fine-tunes every weight for its sentence-level tasks
# {cite}`devlin2019bert`.
#
# </details>
#
# **3. Patch the rule, then make it exact.** The first-noun rule fails on fronted
# phrases. Patch it: skip a sentence-initial prepositional phrase (a preposition, then
# words up to and including the first noun) and check every verb against the first noun
# after it. How far does the patched rule get, and which sentences does it still get
# wrong? Then write a rule that gets every held-out sentence right.
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# def patched_rule(words):
#     start = 0
#     if words[0] in PREPOSITIONS:  # skip the fronted phrase
#         start = next(i for i, w in enumerate(words) if KIND.get(w) == "noun") + 1
#     return first_noun_rule(lang, words[start:])
#
# right = torch.tensor([patched_rule(s) for s in test_sents]) == test_y
# has_that = torch.tensor(["that" in s for s in test_sents])  # a relative clause
# print(right.float().mean().item(), has_that.float().mean().item())
# print(right[has_that].float().mean().item(), right[~has_that].float().mean().item())
# ```
#
# In our run the patched rule scores 80 %: right on every sentence without a relative
# clause, and on 73 % of the 72 % that have one, where a clause's verb agrees with a noun of
# its own (*the dog that the cats **chase** sleeps*, *the dog sees the cats that
# **sleep***). To be exact, a rule must tell the main verb from the verbs of relative
# clauses. In this language a clause's verb either comes right after *that* (*that
# sleep*, *that sees the cat*) or ends a clause with its own subject (*that the birds
# chase*, the verb right after the clause's first noun). Skip both kinds, and the one
# verb left is the main verb:
#
# ```python
# def pattern_rule(words):
#     """1 when the one verb outside every relative clause agrees with the subject."""
#     nouns = [i for i, w in enumerate(words) if KIND.get(w) == "noun"]
#     subject = nouns[1] if words[0] in PREPOSITIONS else nouns[0]
#     in_clause = set()  # positions of the verbs of relative clauses
#     for i, w in enumerate(words):
#         if w == "that" and KIND.get(words[i + 1]) == "verb":  # that sleep
#             in_clause.add(i + 1)
#         elif w == "that":  # that the birds chase: the verb after the clause's noun
#             noun = next(j for j in nouns if j > i)
#             in_clause.add(noun + 1)
#     main = [w for i, w in enumerate(words) if KIND.get(w) == "verb"
#             and i not in in_clause]  # fmt: skip
#     return int(lang.number(main[0]) == lang.number(words[subject]))
#
# print((torch.tensor([pattern_rule(s) for s in test_sents]) == test_y).float().mean())
# ```
#
# It scores 100 %. It needs no parser: this language is finite (no rule calls itself),
# and two patterns and the fronted phrase are enough. But each pattern is knowledge of
# the grammar that the rule-writer brought. The model was given none of it, only 4096
# labelled sentences, and got 99.2 % of the held-out sentences right.
#
# </details>
#
# **4. Pooling with few labels.** Repeat the label-efficiency experiment with mean
# pooling, at 256 and 1024 labels and two seeds. Does the choice of pooling matter more
# when labels are scarce?
#
# <details class="solution"><summary>Solution</summary>
#
# ```python
# for n in (256, 1024):
#     for pooling in ("cls", "mean"):
#         runs_n = [
#             accuracy(fine_tune(n, True, pooling=pooling, seed=s)[0])[0]
#             for s in range(2)
#         ]
#         print(n, pooling, [round(a, 3) for a in runs_n])
# ```
#
# In our runs, at 256 labels both stay near chance (55 to 58 %); at 1024, `[CLS]`
# reached 92 and 94 % and the mean 85 and 89 %. Two seeds are a hint, not a verdict: the
# chapter's own `[CLS]` run at 1024 labels, seed 0 like the first run here, reached 85 %.
# (Same code, same seed, another result: on two threads the arithmetic is not exactly
# the same from run to run, as the pre-training losses show, which differ in the fourth
# decimal between runs, and with few labels fine-tuning amplifies such differences.)
# Each pooling has its argument:
# `[CLS]` lets attention choose which words to read, which suits a decision that hinges
# on two words; the mean gives every word a direct path to the output, and
# sentence-embedding models such as Sentence-BERT use it {cite}`reimers2019sentence`.
# With few labels, on this task, the run-to-run spread is as large as any difference.
#
# </details>

# %% [markdown]
# ## Results
#
# The chapter's numbers in one place, on the harder language, and the targets they must
# meet:
#
# - `mlm_accuracy`: the pre-trained encoder's **expected** accuracy on one hidden word per
#   held-out sentence; `mlm_bayes_accuracy`: the Bayes-optimal one on the same hidden
#   words;
# - `classification_accuracy`: the fine-tuned `[CLS]` classifier on the held-out
#   sentences (those not in the training set); it must be at least 98 %;
# - `best_rule_accuracy`: the best of all the rules in the table on the same sentences;
#   it must stay at or below 85 %.

# %% tags=["nbval-ignore-output"]
print(f"mlm_accuracy: {mlm_accuracy:.4f}")
print(f"mlm_bayes_accuracy: {mlm_bayes_accuracy:.4f}")
print(f"classification_accuracy: {classification_accuracy:.4f}")
print(f"best_rule_accuracy: {best_rule_accuracy:.4f}")
assert mlm_bayes_accuracy - mlm_accuracy < 0.03
assert classification_accuracy >= 0.98 and best_rule_accuracy <= 0.85
