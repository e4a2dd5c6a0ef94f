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
# # 5. Training and generation
#
# Chapter 4 ended with a complete language model, `DecoderLM`, that had only been trained
# for a few quick experiments. In this chapter we train it properly on the toy language and
# ask how good it is, with numbers we can trust: the exact entropy of the language from
# Chapter 1 tells us how close to perfect the model gets. Then we use the model: we
# *generate* sentences from it, test whether it has learned subject–verb {term}`agreement`
# across an attractor, and make generation faster with a {term}`KV cache`.
#
# **Learning goals.** After this chapter you can
#
# - write the training step of a language model (loss, backward pass, clipping, AdamW,
#   learning-rate schedule) and train on fresh sentences at every step;
# - plot a {term}`warmup` + cosine learning-rate schedule and say why it ends near zero;
# - judge a validation loss against the entropy limit, and separate the model's own
#   shortfall from the noise of a finite validation set;
# - sample with {term}`temperature` and {term}`top-k sampling`, and explain why only
#   temperature 1 without top-k samples the model's own distribution;
# - measure agreement across an attractor with one batched forward pass, and read an
#   attention map without over-reading it;
# - explain the KV cache, check that it changes nothing but the speed, and measure the
#   speed-up.

# %%
import copy
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.decoder import DecoderLM
from tinyformer.generate import generate, sample_next
from tinyformer.language import ToyLanguage
from tinyformer.plot import plot_attention, plot_loss_curve
from tinyformer.train import lm_loss, lm_loss_by_length, set_seed, train, warmup_cosine
from tinyformer.vocab import Vocab

set_matplotlib_formats(
    "png"
)  # PNG figures: the same in the book, on GitHub and in Colab

lang = ToyLanguage()
vocab = Vocab(lang.words)
V = len(vocab)
limit = lang.entropy_per_token()  # Chapter 1: the lowest loss any model can reach
nouns = {r.rhs[0] for r in lang.grammar.rules if r.lhs in ("N.sg", "N.pl")}
# The words that start a subject's modifier: a preposition (PP) or "that" (relative clause).
modifier_starts = {r.rhs[0] for r in lang.grammar.rules if r.lhs == "P"} | {"that"}
print(f"vocabulary: {V} tokens; entropy limit: {limit:.4f} nats/token")

# %% [markdown]
# ## Data: fresh sentences at every step
#
# Most datasets are finite, so training loops over them in *epochs* and a model can
# memorise its training set. Our language is unlimited: the grammar can produce as many
# new sentences as we ask for. So every training step gets a **fresh batch** of
# sentences, drawn with its own seed (`TRAIN_SEED + step`: the run is deterministic, and
# batch 700 is the same batch whenever we ask for it). The batches hold 64 sentences in
# the first half of training and 256 in the second; the training section says why.
#
# Each batch is a `(B, T + 1)` tensor of ids, `<bos> w1 … wn <eos>`, padded with `<pad>`
# to its longest sentence. The model reads the first $T$ columns and predicts the last
# $T$ (Chapter 1's shift by one):
#
# - inputs  `(B, T)`: `<bos> w1 … wn`
# - targets `(B, T)`: `w1 … wn <eos>`, with `<pad>` where there is nothing to predict.

# %%
SMALL_BATCH, LARGE_BATCH, SWITCH = (
    64,
    256,
    900,
)  # 64 sentences before step 900, then 256
TRAIN_SEED = 1000  # batch `step` uses seed TRAIN_SEED + step


def batch_size(step):
    return SMALL_BATCH if step < SWITCH else LARGE_BATCH


def get_batch(step):
    """The batch for training step `step`: inputs, targets, each (B, T)."""
    sentences = lang.sample(batch_size(step), seed=TRAIN_SEED + step)
    ids = vocab.batch(sentences, bos=True, eos=True)  # (B, T + 1)
    return ids[:, :-1], ids[:, 1:]


inputs, targets = get_batch(0)
print("inputs:", tuple(inputs.shape), " targets:", tuple(targets.shape))
print("row 0 input: ", vocab.decode(inputs[0], strip_special=False))
print("row 0 target:", vocab.decode(targets[0], strip_special=False))

# %% [markdown]
# Fresh data has a pleasant consequence: the model never sees a batch twice, so it cannot
# overfit, and the training loss of each batch (measured *before* the model updates on
# it) is itself an honest estimate of the model's loss on the language.
#
# We still keep a fixed **validation set**, 5000 sentences drawn with a seed that no
# training batch uses, so that every evaluation during training scores the same
# sentences and the curve is smooth.
#
# ### How noisy is a validation loss?
#
# A finite validation set is a sample, and its loss is a sample mean. Even the *true*
# distribution of the language would not score exactly 1.8479 on it: some validation sets
# happen to hold slightly more surprising sentences than average, some less. We can
# measure this directly, because we know the language's exact probabilities. The sampler
# gives us each sentence's derivation, and since the grammar is unambiguous, the
# derivation's log-probability *is* the sentence's log-probability (Chapter 1), with no
# parsing needed. The language's own loss on the validation set is
#
# $$L_{\text{true}} = \frac{\sum_i -\log p(s_i)}{\sum_i T_i},$$
#
# with $T_i$ = words + 1 (the `<eos>`) as always.

# %%
VAL_SEED = 1_000_000
N_VAL = 5000
val_trees = lang.sample_trees(N_VAL, seed=VAL_SEED)
val_sentences = [t.words() for t in val_trees]
val_ids = vocab.batch(val_sentences, bos=True, eos=True)  # (N_VAL, T + 1)
val_nll = np.array([-t.log_prob() for t in val_trees])  # -log p(s_i), exact
val_tokens = np.array([len(s) + 1 for s in val_sentences])  # T_i
for s, t in zip(val_sentences[:3], val_trees[:3], strict=True):
    assert math.isclose(lang.log_prob(s), t.log_prob())  # parsing agrees

true_val_loss = val_nll.sum() / val_tokens.sum()
# The ratio's standard error: the spread of -log p(s) - limit * T over sentences.
excess = val_nll - limit * val_tokens
noise = excess.std() / math.sqrt(N_VAL) / val_tokens.mean() / limit
print("validation ids:", tuple(val_ids.shape))
print(f"the language's own loss on this set: {true_val_loss:.4f} nats/token")
print(f"  ratio to the entropy limit:        {true_val_loss / limit:.4f}")
print(f"  standard error of that ratio:      {noise:.4f}")

# %%
assert abs(true_val_loss / limit - 1) < 4 * noise
assert noise < 0.0015

# %% [markdown]
# So on this validation set the *perfect* model would score 0.03 % *below* the limit (this
# set happens to be slightly easier than average), and a validation set of this size has a
# noise of about $\pm$0.09 % (one standard error). That sets the precision of every ratio
# in this chapter. We will report the model's validation loss two ways:
#
# - **divided by the entropy limit** (1.8479): the number we promised to bring close to 1;
# - **divided by the language's own loss on the same sentences**, $L_{\text{true}}$. The
#   validation set's luck (a few more long or rare sentences than average) hits model and
#   language alike, so this ratio cancels most of the sampling noise. What is left
#   measures the model's shortfall: its KL divergence from the language, per token.

# %% [markdown]
# ## The training step, written out
#
# One step of training is five lines. For a batch of inputs and targets `(B, T)`:
#
# 1. **forward**: logits = model(inputs), `(B, T, V)`;
# 2. **loss**: the cross-entropy of the logits against the targets, averaged over every
#    real (non-`<pad>`) target, `<eos>` included, so it is in nats per token like the
#    entropy limit;
# 3. **backward**: `loss.backward()` fills every parameter's `.grad`;
# 4. **clip**: if the gradient's total norm exceeds 1, scale it down to norm 1 (a guard
#    against the occasional huge step);
# 5. **update**: AdamW {cite}`loshchilov2019decoupled` moves each parameter, with the
#    learning rate the schedule gives for this step.
#
# The loss first. `lm_loss` is PyTorch's cross-entropy with `ignore_index=<pad>`; by hand
# it is the mean of $-\log q(\text{target})$ over the real targets. (The untrained model
# below scores about as well as a uniform guess, $\log V$: its logits start small and
# nearly equal. Its LM head is *untied*, for reasons we give when we train it.)

# %%
set_seed(0)
model = DecoderLM(
    V, d_model=64, n_heads=4, n_layers=2, d_ff=256, max_len=17, tie_weights=False
)
logits = model(inputs)  # (B, T, V)
log_q = logits.log_softmax(dim=-1)  # (B, T, V)
nll = -log_q.gather(-1, targets[..., None]).squeeze(-1)  # (B, T): -log q(target)
real = targets != vocab.pad_id  # (B, T)
by_hand = nll[real].sum() / real.sum()
print(
    f"by hand: {by_hand.item():.4f}   lm_loss: {lm_loss(logits, targets, vocab.pad_id).item():.4f}"
)
print(f"(a uniform guess would cost log V = {math.log(V):.4f})")
assert torch.allclose(by_hand, lm_loss(logits, targets, vocab.pad_id))

# %% [markdown]
# ### The learning-rate schedule
#
# The learning rate rises linearly from near 0 to its peak over the first `WARMUP`
# steps ({term}`warmup`), then follows half a cosine down to 0 at the last step:
#
# $$\eta(s) = \eta_{\max} \cdot \begin{cases} (s + 1)/W & s < W \\
#   \tfrac12\big(1 + \cos(\pi\, \tfrac{s - W}{S - W})\big) & W \le s \le S \end{cases}$$
#
# for step $s$, warmup $W$ and $S$ steps in all (the cosine shape comes from
# {cite}`loshchilov2017sgdr`). Warmup protects the first updates, when
# Adam's running estimates of the gradient's scale are still based on very few steps
# (Chapter 4 showed what a high learning rate without warmup can do). The decay matters
# just as much here, for the opposite reason: every batch is a random sample, so each
# gradient is noisy, and at a fixed learning rate the weights keep jittering around the
# optimum. Shrinking the steps at the end averages that noise away, and the last few
# hundredths of a percent of loss come from there. `tinyformer.train.warmup_cosine` gives
# the multiplier, for `torch.optim.lr_scheduler.LambdaLR`.

# %%
STEPS, WARMUP, LR = 1800, 100, 1e-2

schedule = [LR * warmup_cosine(s, WARMUP, STEPS, min_ratio=0.0) for s in range(STEPS)]
fig, ax = plt.subplots(figsize=(6, 2.8))
ax.plot(schedule)
ax.axvline(WARMUP, color="grey", linestyle=":", label=f"end of warmup (step {WARMUP})")
ax.set_xlabel("training step")
ax.set_ylabel("learning rate")
ax.set_title("Linear warmup, then cosine decay to 0")
ax.legend()
fig.tight_layout()
plt.show()
print(f"step 0: {schedule[0]:.1e}, step {WARMUP}: {schedule[WARMUP]:.1e}, "
      f"last step: {schedule[-1]:.1e}")  # fmt: skip

# %% [markdown]
# Now the loop itself. We write it out, run it for 10 steps, and check that
# `tinyformer.train.train` does the same thing: same initial weights, same batches, same
# updates, so the same losses at every step and the same model at the end. (We use no
# weight decay in this chapter; `train` would decay only the weight matrices, not biases
# and LayerNorm gains.)


# %%
def train_by_hand(model, steps, lr, warmup):
    """Train in place; return the loss of every step."""
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup, steps, min_ratio=0.0)
    )
    losses = []
    for step in range(steps):
        inputs, targets = get_batch(step)  # (B, T) each
        logits = model(inputs)  # (B, T, V)
        loss = lm_loss(logits, targets, vocab.pad_id)  # mean over real targets
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()  # AdamW update at the current learning rate
        scheduler.step()  # next step's learning rate
        losses.append(loss.item())
    return losses


set_seed(0)
start = DecoderLM(
    V, d_model=64, n_heads=4, n_layers=2, d_ff=256, max_len=17, tie_weights=False
)
ours, theirs = copy.deepcopy(start), copy.deepcopy(start)
our_losses = train_by_hand(ours, steps=10, lr=LR, warmup=3)
their_history = train(theirs, get_batch, steps=10, lr=LR, warmup_steps=3, weight_decay=0.0,
                      grad_clip=1.0, min_lr_ratio=0.0, progress=False)  # fmt: skip
loss_gap = max(
    abs(a - b) for a, b in zip(our_losses, their_history["loss"], strict=True)
)
probe, _ = get_batch(STEPS)  # a batch that neither run trained on
with torch.no_grad():
    output_gap = (
        (ours(probe).log_softmax(-1) - theirs(probe).log_softmax(-1)).abs().max().item()
    )
print(f"the losses of all 10 steps agree to within 1e-5: {loss_gap < 1e-5}")
print(f"the two models' log-probabilities agree to within 1e-4: {output_gap < 1e-4}")
assert loss_gap < 1e-5 and output_gap < 1e-4

# %% [markdown]
# Why compare losses and predictions rather than the weights themselves? Floating-point
# results depend on how the arithmetic is arranged, and ours and `train`'s differ: `train`
# asks PyTorch for its *fused* AdamW, the same update done in one kernel for all
# parameters (faster, with its own rounding). Even the same code is not bit-for-bit
# repeatable: on a CPU with several threads, PyTorch may add up a sum in a different order
# from one run to the next, so two runs can differ in the last bits. That is harmless
# almost everywhere, with one instructive exception. The key projection's bias $b_K$ has a
# gradient that is exactly zero in exact arithmetic: it adds $q_t \cdot b_K$ to *every*
# score in row $t$, and softmax ignores a constant added to a whole row. So its computed
# gradient is pure rounding noise, around $10^{-10}$, and Adam, which divides each
# gradient by a running estimate of its own size, turns that noise into steps of a
# sizeable fraction of the learning rate. The key biases of two runs can then drift apart
# by $10^{-4}$ while the functions the models compute stay the same to about $10^{-6}$.
# (For the same reason the key bias is redundant: a model without it can compute exactly
# the same functions.) Everything this course prints from a trained model is rounded, or
# checked with a tolerance, for the same reason: the last digits of a long training run
# depend on the machine.

# %% [markdown]
# ## Training
#
# The model is Chapter 4's `DecoderLM` at its default size, $D = 64$, 4 heads, 2 blocks,
# $d_{ff} = 256$, learned positions, pre-LN, and a context of 17 positions (the longest
# sentence with `<bos>` and `<eos>`), with one change: the LM head has its own `(V, D)`
# matrix instead of sharing the token embedding's. We train it for 1800 steps, the first
# 900 on batches of 64 fresh sentences and the last 900 on batches of 256 (288,000
# sentences, about 2.3 million predicted tokens), with AdamW at a peak learning rate of
# $10^{-2}$, no weight decay, gradients clipped at norm 1. These settings came from a
# small search over learning rate ($5 \cdot 10^{-3}$ to $2 \cdot 10^{-2}$), batch sizes
# (64 to 512), number of steps, model width and tying, with the share of ungrammatical
# samples (see below) as the hardest bar to clear and a minute or so of training on two
# CPU cores as the budget. `train` evaluates the validation loss every 200 steps and
# prints one line each time.
#
# Why change the batch size halfway? Each batch's gradient is a noisy estimate of the
# gradient on the whole language, with a noise that shrinks as $1/\sqrt{B}$. Early on,
# far from a good model, the direction matters more than its precision, and small
# batches buy more updates for the same time. Near the end, that noise is what keeps the
# weights from settling, which is also why the learning rate decays; a bigger batch
# removes noise directly. Smith et al. {cite}`smith2018dont` showed that raising the batch
# size plays much the same role as decaying the learning rate. In our runs, each model
# judged on 16,000 samples, 2000 steps of 128 sentences left 0.53–0.58 % of samples
# ungrammatical (two runs), and 64 then 256, at about the same training time, 0.31–0.44 %
# (seven runs); the extra loss per sentence over the language (measured below) went from
# 0.0066–0.0087 nats (five runs) to 0.0048–0.0066 (four). Those runs had 1000 steps of
# each size. To keep this chapter within 90 seconds we shortened both phases to 900
# steps, which left 0.34–0.46 % ungrammatical (eleven runs, 0.39 % on average).
# Shortening further costs grammar on average: with 1000 small steps and only 800 large
# ones the share was 0.37–0.44 % (0.41 % on average), and with 800 small and 900 large
# 0.40–0.48 % (0.44 %; three runs each).
#
# Why untie? Chapter 4's reason for tying, saving $V \cdot D$ parameters, is worth
# 38.6 million parameters in GPT-2 but only $47 \times 64 = 3008$ here, and in our runs the
# untied model learned somewhat faster. With 2000 steps of 128 sentences, its extra loss
# per sentence was 0.0066–0.0087 nats in five runs, against 0.0080–0.0089 in two runs of
# the tied model, and it left 0.53–0.58 % of its samples ungrammatical against
# 0.63–0.75 %. The ranges overlap, because runs of one recipe differ by about as much as
# the two recipes do, so take it as a tendency we measured, not a law. A plausible
# reason, which we have not tested: a tied matrix must serve two purposes at once,
# placing each token where the blocks can read it and scoring every possible next token,
# and the second needs large, precise gaps between the logits of allowed and forbidden
# tokens.


# %%
@torch.no_grad()
def val_loss(model):
    """Mean loss per real target token on the whole validation set."""
    # In chunks of 1000 sentences: the same logits, from smaller intermediate tensors (all
    # 5000 at once need 80 MB for one feed-forward activation), which measured about a
    # third faster on our machine.
    logits = torch.cat([model(chunk) for chunk in val_ids[:, :-1].split(1000)])
    return lm_loss(logits, val_ids[:, 1:], vocab.pad_id).item()


set_seed(0)
model = DecoderLM(
    V, d_model=64, n_heads=4, n_layers=2, d_ff=256, max_len=17, tie_weights=False
)
print(f"{model.num_parameters():,} parameters")

# %% [markdown]
# ### Skipping the padding
#
# One more thing before we train, because it takes about a fifth off every step on a
# batch of 256. A batch is as long as its longest sentence, and in a batch of 256
# sentences that is nearly always one of the longest the language makes, while the
# average sentence has 7 words. So a large share of the positions the model computes are
# padding, and the loss throws their outputs away. For a causal model the padding is not
# even needed: position $t$ reads positions $\le t$ only, so the outputs at a sentence's
# real positions are the same whether padding follows them or not.
#
# `tinyformer.train.lm_loss_by_length` uses that. It sorts the batch's sentences by
# length, cuts them into groups of at most 96 (three groups for a batch of 256), trims each
# group to its own longest sentence, runs the model on each group and adds up the
# per-token losses, divided by the number of real targets in the whole batch. That is the
# same mean as before, so the loss and its gradient are the same, up to rounding; the cell
# checks both on the first batch of 256, and times a forward and backward pass each way.
# (Smaller groups would skip more padding, but every group is a pass of its own with a
# fixed cost; for batches of 64 one group is as fast as any, and the function then does
# nothing new. It would be wrong for a model that reads the whole row, such as Part II's
# encoder, unless that model masks its padding out.)


# %%
def plain_loss(model, inputs, targets):
    return lm_loss(model(inputs), targets, vocab.pad_id)


def loss_by_length(model, inputs, targets):
    return lm_loss_by_length(model, inputs, targets, vocab.pad_id, max_rows=96)


inputs, targets = get_batch(SWITCH)  # the first batch of 256 sentences
real = targets != vocab.pad_id  # (B, T)
print(
    f"batch {tuple(inputs.shape)}: {1 - real.float().mean():.0%} of its positions are padding"
)
params = list(model.parameters())
loss_a, loss_b = (
    plain_loss(model, inputs, targets),
    loss_by_length(model, inputs, targets),
)
grads_a, grads_b = (
    torch.autograd.grad(loss_a, params),
    torch.autograd.grad(loss_b, params),
)
grad_gap = max(
    (a - b).abs().max().item() for a, b in zip(grads_a, grads_b, strict=True)
)
print(f"loss: {loss_a.item():.6f} with padding, {loss_b.item():.6f} without")
print(f"gradients agree to within 1e-6: {grad_gap < 1e-6}")
assert torch.allclose(loss_a, loss_b) and grad_gap < 1e-6


# %%
# NBVAL_IGNORE_OUTPUT
def best_time(fn, repeats=3):
    """The shortest of `repeats` wall-clock times of fn(), in seconds: the least disturbed."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


timing_batches = [
    get_batch(step) for step in range(SWITCH, SWITCH + 5)
]  # 5 batches of 256


def step_time(loss_fn):
    """Best time (s) of a forward and backward pass, per batch of 256."""

    def forward_backward():
        for inputs, targets in timing_batches:
            torch.autograd.grad(loss_fn(model, inputs, targets), params)

    return best_time(forward_backward) / len(timing_batches)


t_plain, t_by_length = step_time(plain_loss), step_time(loss_by_length)
print(f"forward + backward, batch of 256: {1e3 * t_plain:.0f} ms with padding, "
      f"{1e3 * t_by_length:.0f} ms without ({1 - t_by_length / t_plain:.0%} less)")  # fmt: skip

# %% [markdown]
# The training run below uses `loss_by_length`; `train` accepts any such function as its
# `loss_fn`.

# %%
# NBVAL_IGNORE_OUTPUT
history = train(
    model, get_batch, steps=STEPS, lr=LR, warmup_steps=WARMUP, weight_decay=0.0,
    grad_clip=1.0, min_lr_ratio=0.0, loss_fn=loss_by_length,
    eval_fn=lambda m: {"val": val_loss(m)}, eval_every=200, log_every=200,
)  # fmt: skip
_ = model.eval()  # no dropout here, but evaluation mode is the right habit

# %% [markdown]
# The two ratios we promised:

# %%
# NBVAL_IGNORE_OUTPUT
final_val = history["val"][-1]
ratio_limit = final_val / limit
ratio_true = final_val / true_val_loss
print(f"validation loss:                         {final_val:.4f} nats/token")
print(f"  / entropy limit ({limit:.4f}):          {ratio_limit:.4f}")
print(f"  / language's own loss on the set ({true_val_loss:.4f}): {ratio_true:.4f}")
# The model's shortfall per sentence: its extra loss summed over the set, per sentence.
kl_per_sentence = (final_val - true_val_loss) * val_tokens.sum() / N_VAL
print(f"model's extra loss per sentence (≈ KL divergence): {kl_per_sentence:.4f} nats")

# %%
assert ratio_limit <= 1.003
assert 1.0 - 4 * noise < ratio_true < 1.003

# %% [markdown]
# The model's validation loss is within a few hundredths of a percent of the entropy
# limit. Measured against the language's own loss on the same sentences, the excess is the
# model's real shortfall, an estimate of its KL divergence from the language: well under a
# thousandth of a nat per token, a few thousandths of a nat per sentence. The difference
# between the two ratios is the validation set's luck, inside its noise of $\pm$0.09 %. We
# will meet the extra loss per sentence again when we count ungrammatical samples.
#
# The curves, against the limit. On the left the losses themselves, on the right the
# distance to the limit on a log scale, where the end of training is visible:

# %%
eval_steps = np.array(history["eval_step"])
val_curve = np.array(history["val"])
window = 50  # moving average of the per-batch training losses
train_smooth = np.convolve(history["loss"], np.ones(window) / window, mode="valid")
train_steps = np.arange(window - 1, STEPS)

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
plot_loss_curve(
    train_steps, train_smooth, ax=ax1, label=f"training (mean of {window} batches)"
)
plot_loss_curve(eval_steps, val_curve, limit=limit, ax=ax1, label="validation")
ax1.set_ylim(1.83, 2.0)
ax1.set_title("Loss against the entropy limit")
ax1.annotate(
    f"final: {val_curve[-1]:.4f}\n= {val_curve[-1] / limit:.4f} × limit",
    xy=(eval_steps[-1], val_curve[-1]), xytext=(0.55, 0.55), textcoords="axes fraction",
    arrowprops=dict(arrowstyle="->"),
)  # fmt: skip

ax2.semilogy(
    eval_steps[1:], val_curve[1:] - limit, "o-", label="validation − entropy limit"
)
ax2.semilogy(eval_steps[1:], val_curve[1:] - true_val_loss, "s--",
             label="validation − language's own loss")  # fmt: skip
ax2.set_xlabel("training step")
ax2.set_ylabel("excess loss (nats/token)")
ax2.set_title("Distance to the limit (log scale)")
ax2.grid(True, which="both", alpha=0.3)
ax2.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# Most of the learning happens in the first few hundred steps: from about 4 nats/token
# (a uniform guess costs 3.85) to within a few percent of the limit. On the log scale the
# rest is a steady decline of the gap, steepest in the last third, while the learning rate
# decays towards zero: as the steps shrink, the weights stop jittering with the noise of
# each batch, as the schedule section promised. The two curves on the right differ by the
# validation set's luck, a constant. The training curve on the left (per-batch losses on
# fresh sentences) lies on top of the validation curve: there is no overfitting to see.

# %% [markdown]
# ## Generating sentences
#
# A language model gives, at every position, a distribution over the next token. To
# *generate*, start from `<bos>`, draw a token from that distribution, append it, and
# repeat until `<eos>` (or the context is full). Drawing a token from the logits
# $z \in \mathbb{R}^V$ has two common knobs:
#
# - **temperature** $\tau$: sample from $\operatorname{softmax}(z / \tau)$. $\tau < 1$
#   sharpens the distribution towards the most likely tokens, $\tau > 1$ flattens it,
#   $\tau \to 0$ is greedy decoding (always the most likely token);
# - **top-k** {cite}`fan2018hierarchical`: keep only the $k$ largest logits, set the
#   others to $-\infty$, and renormalise.
#
# Written out, for a batch of logits `(B, V)`:


# %%
def sample_next_by_hand(logits, temperature=1.0, top_k=None, generator=None):
    logits = logits / temperature  # (B, V)
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[
            :, -1:
        ]  # (B, 1): the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(dim=-1)  # (B, V)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(
        -1
    )  # (B,)


z = torch.randn(8, V, generator=torch.Generator().manual_seed(0))
for temperature, top_k in [(1.0, None), (0.5, None), (1.5, 5)]:
    a = sample_next_by_hand(z, temperature, top_k, torch.Generator().manual_seed(1))
    b = sample_next(z, temperature, top_k, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
print("sample_next_by_hand agrees with tinyformer.generate.sample_next")

# %% [markdown]
# And the generation loop. Every sentence of the batch starts as `<bos>`, so the prompt is
# `(B, 1)`; each step runs the model on everything generated so far, keeps the logits of
# the last position `(B, V)`, and appends one token per row. A row that has produced
# `<eos>` emits `<pad>` from then on, and the loop stops when every row is done.


# %%
# NBVAL_IGNORE_OUTPUT
@torch.no_grad()
def generate_by_hand(
    model, n, max_new_tokens, temperature=1.0, top_k=None, generator=None
):
    ids = torch.full((n, 1), vocab.bos_id)  # (B, 1)
    finished = torch.zeros(n, dtype=torch.bool)  # (B,)
    for _ in range(max_new_tokens):
        logits = model(ids)[:, -1]  # (B, V): the prediction after the last token
        next_id = sample_next(logits, temperature, top_k, generator)  # (B,)
        next_id = next_id.masked_fill(finished, vocab.pad_id)
        finished |= next_id == vocab.eos_id
        ids = torch.cat([ids, next_id[:, None]], dim=1)  # (B, t + 1)
        if finished.all():
            break
    return ids


MAX_NEW = model.max_len - 1  # 16: up to 15 words and <eos>
bos = torch.full((8, 1), vocab.bos_id)
a = generate_by_hand(model, 8, MAX_NEW, generator=torch.Generator().manual_seed(0))
b = generate(model, bos, MAX_NEW, eos_id=vocab.eos_id, pad_id=vocab.pad_id,
             generator=torch.Generator().manual_seed(0), use_cache=False)  # fmt: skip
assert torch.equal(a, b)
print("generated ids (B, T):", tuple(a.shape))
print(a[:3])

# %% [markdown]
# To judge samples we turn each row back into words: everything after `<bos>` up to the
# `<eos>`. A row that never produced `<eos>` is unfinished and counts as ungrammatical, and
# so does one with a special token inside (the language has no `<pad>` mid-sentence).


# %%
# NBVAL_IGNORE_OUTPUT
def to_words(row):
    """The words of one generated row (<bos> first), or None if it has no <eos>."""
    tokens = vocab.decode(row[1:], strip_special=False)
    return tokens[: tokens.index("<eos>")] if "<eos>" in tokens else None


def sample_sentences(n, temperature=1.0, top_k=None, seed=0, use_cache=True):
    prompt = torch.full((n, 1), vocab.bos_id)
    ids = generate(model, prompt, MAX_NEW, temperature, top_k, eos_id=vocab.eos_id,
                   pad_id=vocab.pad_id, generator=torch.Generator().manual_seed(seed),
                   use_cache=use_cache)  # fmt: skip
    return ids, [to_words(row) for row in ids]


_, sentences = sample_sentences(10, seed=1)
for s in sentences:
    print(
        " ".join(s) if s is not None else "(unfinished)",
        "   ✓" if lang.is_grammatical(s or []) else "   ✗",
    )

# %% [markdown]
# ### Temperature, top-k, and what they cost
#
# We now draw sentences with four settings (16,000 at $\tau = 1$, the setting we care most
# about, and 300 with each of the others) and measure:
#
# - the share of **grammatical** sentences (the grammar can derive them: `lang.is_grammatical`);
# - their mean **length** in words; the language's is 7.1;
# - their mean **surprise per token** under the *language*, $\sum -\log p(s) / \sum T$,
#   over the grammatical samples. For samples that follow the language this is its entropy
#   per token, 1.848 nats; lower means more predictable word choices, that is, less
#   diverse text.
#
# Parsing is the slow part (about a millisecond per sentence), so each distinct sentence
# is parsed once.

# %%
# NBVAL_IGNORE_OUTPUT
parsed = {}  # sentence -> -log p(s) under the language (inf: ungrammatical)


def surprise(words):
    if words is None or not set(words) <= set(
        lang.words
    ):  # unfinished, or <pad> inside
        return math.inf
    key = " ".join(words)
    if (
        key not in parsed
    ):  # one parse: log_prob is -inf when the grammar cannot derive it
        parsed[key] = -lang.log_prob(words)
    return parsed[key]


SETTINGS = {"τ = 1": (1.0, None, 16000), "τ = 0.5": (0.5, None, 300),
            "τ = 1.5": (1.5, None, 300), "τ = 1, top-k = 5": (1.0, 5, 300)}  # fmt: skip
table, samples_at = {}, {}
for name, (temperature, top_k, n) in SETTINGS.items():
    _, samples = sample_sentences(n, temperature, top_k, seed=2)
    nll = np.array([surprise(x) for x in samples])
    ok = np.isfinite(nll)
    lengths = np.array([len(x) for x, good in zip(samples, ok, strict=True) if good])
    table[name] = (ok.mean(), lengths.mean(), nll[ok].sum() / (lengths + 1).sum())
    samples_at[name] = samples
print(f"{'setting':18} {'grammatical':>11} {'mean length':>12} {'surprise/token':>15}")
print(
    f"{'(the language)':18} {1:11.3f} {lang.expected_length() - 1:12.2f} {limit:15.3f}"
)
for name, (rate, length, per_token) in table.items():
    print(f"{name:18} {rate:11.3f} {length:12.2f} {per_token:15.3f}")
grammatical_rate = table["τ = 1"][0]

# %%
assert abs(table["τ = 1"][1] - 7.1) < 0.3  # τ = 1: the language's length ...
assert abs(table["τ = 1"][2] - limit) < 0.03  # ... and its surprise per token
for name in ("τ = 0.5", "τ = 1, top-k = 5"):
    assert (
        table[name][0] >= grammatical_rate
    )  # colder or truncated: at least as grammatical
    assert table[name][2] < limit - 0.01  # ... but more predictable, less diverse
    assert table[name][1] > 7.1 + 0.5  # ... and, here, longer
assert table["τ = 1.5"][0] < grammatical_rate  # hotter: more mistakes

# %% [markdown]
# At temperature 1 the samples look like the language: their mean length and their surprise
# per token match the language's own. Only **temperature 1 without top-k** samples the
# model's own distribution; both knobs change the distribution we draw from:
#
# - $\tau < 1$ and top-k move probability from unlikely tokens to likely ones. The samples
#   get "safer", all or almost all grammatical, but their surprise per token drops: the
#   word choices are more predictable, the text less diverse.
# - $\tau > 1$ moves probability towards unlikely tokens, including the small probability
#   the model leaves on ungrammatical ones, so many more samples break the grammar.
#
# The lengths show that the distortion is not just "the same, but sharper". Cold and
# truncated samples are *longer* than the language's sentences. The knobs act on each
# token separately, and they favour a continuation that is one likely token over one that
# is spread over many words. After a subject such as *the dog*, the language continues with
# *that* with probability 0.3, but with any one particular verb with at most 0.06 (the 0.4
# for "the verb comes next" is shared by eight verbs). Sharpening per token therefore
# picks *that*, and so a relative clause, far more often than the language does, and a
# verb far less often; keeping the top 5 tokens cuts the verbs almost entirely and hands
# their share to *that* and the three prepositions. Here are the model's probabilities
# after `<bos> the dog`:

# %%
# NBVAL_IGNORE_OUTPUT
prefix = torch.tensor([vocab.encode(["the", "dog"], bos=True)])  # (1, 3)
with torch.no_grad():
    z = model(prefix)[0, -1]  # (V,): logits of the next token
verbs = [w for w in lang.words if lang.number(w) == "sg" and w not in nouns]  # 8 verbs
groups = {
    "that": ["that"],
    "a preposition": ["near", "behind", "under"],
    "a verb": verbs,
}
print(f"{'next token':14} {'τ = 1':>7} {'τ = 0.5':>8} {'top-k = 5':>10}")
top5 = z.masked_fill(z < z.topk(5).values[-1], float("-inf"))
dists = [z.softmax(-1), (z / 0.5).softmax(-1), top5.softmax(-1)]
for label, words in groups.items():
    ids_ = [vocab.stoi[w] for w in words]
    print(f"{label:14}" + "".join(f"{d[ids_].sum().item():>9.3f}" for d in dists))

# %% [markdown]
# In a real language model the same bias is why low temperatures and small $k$ give
# fluent but bland and sometimes repetitive text {cite}`holtzman2020curious`. When you
# want to know what a model has *learned*, sample at $\tau = 1$ with no truncation; the
# other settings are for when you want a good-looking sample, not a faithful one.
# (Exercise 2 works out a tiny example.)
#
# ### How many ungrammatical samples should we expect?
#
# At $\tau = 1$ a small share of the samples is ungrammatical. Here they are:

# %%
# NBVAL_IGNORE_OUTPUT
bad = [x for x in samples_at["τ = 1"] if not math.isfinite(surprise(x))]
print(
    f"{len(bad)} of {len(samples_at['τ = 1'])} samples are ungrammatical; the first ten:"
)
for x in bad[:10]:
    print("  ", " ".join(x) if x is not None else "(unfinished)")

# %% [markdown]
# They are small slips, one forbidden token each: typically two nouns in a row, a missing
# noun or verb, a verb or determiner that disagrees in number, or one adjective too many
# (the grammar allows two). Each is a token to which the model gives a small probability
# where the language gives exactly zero. A softmax can never give exactly zero, so some
# probability always leaks.
#
# How much can leak is bounded by the validation loss. Group all sentences into two
# outcomes, grammatical or not. The language puts all its mass on "grammatical"; if the
# model puts $1 - \varepsilon$ there, then grouping outcomes can only lose information, so
#
# $$D_{\mathrm{KL}}(p \,\|\, q) \;\ge\; 1 \cdot \log \frac{1}{1 - \varepsilon}
#   \quad\Longrightarrow\quad \varepsilon \;\le\; 1 - e^{-D_{\mathrm{KL}}} .$$
#
# The model's extra loss per sentence on the validation set estimates $D_{\mathrm{KL}}$
# per sentence, so it gives the bound. We compare it with the measured share, which has
# its own noise: a binomial standard error of $\sqrt{\varepsilon (1 - \varepsilon) / n}$
# for $n = 16{,}000$ samples.

# %%
# NBVAL_IGNORE_OUTPUT
bound = 1 - math.exp(-kl_per_sentence)
share = 1 - grammatical_rate
n = len(samples_at["τ = 1"])
print(f"bound from the validation loss: at most {bound:.4f} ungrammatical")
print(
    f"measured at τ = 1:              {share:.4f} ± {math.sqrt(share * (1 - share) / n):.4f}"
)

# %% [markdown]
# The measured share lies below the bound, as it must up to its noise, and within a factor
# of about two of it: much of what separates this model from a perfect one is this leak
# onto ungrammatical sentences. Read the other way, the bound says what a small loss
# guarantees. An extra loss below $-\log(0.995) \approx 0.005$ nats per sentence, a
# validation loss within about 0.03 % of the language's own, guarantees at most 0.5 %
# ungrammatical samples. Our model's extra loss is close to that (see the printout above),
# on one side or the other depending on the run, so the bound alone cannot be relied on
# to promise 0.5 %; only the measurement can tell, and it is close:
# in our tuning runs, judged on 16,000 samples each, models whose validation loss was
# within 0.03–0.06 % of the language's own left between 0.35 % and 0.75 % of their samples
# ungrammatical. A loss ratio that looks perfect, 1.0005, can still hide several mistakes
# in a thousand samples.

# %% [markdown]
# ## Agreement across an attractor
#
# The hardest thing in our language is subject–verb agreement with an {term}`attractor` of
# the other number in between: *the dog near the cats **sleeps***. A model that copies the
# number of the nearest noun gets every one of these wrong.
#
# The test: take held-out sentences that have a mismatched attractor, and at the main
# verb compare the model's probability of the correct form with the other form
# (`lang.flip_number`). The model is right if the correct form gets the higher
# probability. Because the model is causal, one forward pass over the whole sentence gives
# the prediction at every position: the logits at input position $v$ (which has read
# `<bos>` and words $0 \dots v - 1$) are the prediction of word $v$. So 1000 sentences
# take a single batched forward pass.
#
# Finding the sentences: `lang.analyse` parses a sentence, which is slow, so we first skip
# the sentences that cannot have a mismatched attractor: those whose subject has neither a
# prepositional phrase nor a relative clause (no preposition, no *that*: only subjects
# take them), and those whose nouns all have the same number.

# %%
AGREE_SEED = 2_000_000
N_AGREE = 1000

held_out, analyses = [], []
batch_seed = AGREE_SEED
while len(held_out) < N_AGREE:
    for words in lang.sample(500, seed=batch_seed):
        if not any(w in modifier_starts for w in words):  # no PP or relative clause ...
            continue
        if (
            len({lang.number(w) for w in words if w in nouns}) < 2
        ):  # ... or nouns of one number
            continue
        analysis = lang.analyse(words)
        if analysis.has_mismatched_attractor and len(held_out) < N_AGREE:
            held_out.append(words)
            analyses.append(analysis)
    batch_seed += 1
print(f"{len(held_out)} held-out sentences with a mismatched attractor, e.g.")
for words, a in list(zip(held_out, analyses, strict=True))[:3]:
    print(
        f"  {' '.join(words)}   (subject '{words[a.subject]}', verb '{words[a.verb]}')"
    )

# %%
# NBVAL_IGNORE_OUTPUT
ids = vocab.batch(held_out, bos=True, eos=True)  # (N, T + 1)
verb_pos = torch.tensor(
    [a.verb for a in analyses]
)  # input position that predicts the verb
right = torch.tensor(
    [vocab.stoi[w[a.verb]] for w, a in zip(held_out, analyses, strict=True)]
)
wrong = torch.tensor(
    [
        vocab.stoi[lang.flip_number(w[a.verb])]
        for w, a in zip(held_out, analyses, strict=True)
    ]
)
rows = torch.arange(len(held_out))
with torch.no_grad():
    logits, attention = model(
        ids[:, :-1], return_attention=True
    )  # (N, T, V), [(N, H, T, T)]


def verb_margin(logits):
    """log q(right form) - log q(wrong form) at the main verb, per sentence: (N,)."""
    at_verb = logits[rows, verb_pos]  # (N, V): the prediction of the main verb
    return at_verb[rows, right] - at_verb[rows, wrong]


margin = verb_margin(logits)
agreement_accuracy = (margin > 0).float().mean().item()
p_right = torch.sigmoid(margin)  # P(right form | one of the two forms)
print(f"agreement accuracy with a mismatched attractor: {agreement_accuracy:.4f}")
print(f"median P(right form | one of the two forms):     {p_right.median().item():.4f}")

# %%
assert agreement_accuracy >= 0.99

# %% [markdown]
# ### What the attention looks like
#
# Which positions does the model read when it predicts the verb? Here are the
# {term}`attention weights` of all 8 heads (2 layers × 4 heads) on one held-out sentence.
# Each row is a query position; the row that predicts the main verb is outlined. For this
# sentence that row sits on the attractor itself, the word just before the verb.

# %%
example = min(range(len(held_out)), key=lambda i: (len(held_out[i]), i))  # a short one
words = held_out[example]
a = analyses[example]
tokens = ["<bos>"] + words  # the input positions: <bos> w0 ... w_{n-1}
T = len(tokens)
print(" ".join(words), f"   subject: '{words[a.subject]}', verb: '{words[a.verb]}'")

fig, axes = plt.subplots(2, 4, figsize=(16, 8))
for layer in range(2):
    for head in range(4):
        ax = axes[layer, head]
        plot_attention(attention[layer][example, head, :T, :T], tokens, tokens, ax=ax,
                       title=f"layer {layer + 1}, head {head + 1}")  # fmt: skip
        ax.add_patch(
            plt.Rectangle((-0.5, a.verb - 0.5), T, 1, fill=False, edgecolor="red", lw=2)
        )
fig.suptitle("Attention of every head; red: the row that predicts the main verb")
fig.tight_layout()
plt.show()

# %% [markdown]
# One sentence is an anecdote. The same question on all 1000 held-out sentences: at the
# row that predicts the verb, how much weight does each head put on the subject noun, on
# the subject's determiner, on the attractor noun(s), and on everything else?

# %%
# NBVAL_IGNORE_OUTPUT
subject_pos = torch.tensor([a.subject + 1 for a in analyses])  # +1: <bos> comes first
det_pos = torch.ones(
    len(held_out), dtype=torch.long
)  # the subject's determiner: word 0
attractor_mask = torch.zeros(len(held_out), ids.shape[1] - 1, dtype=torch.bool)
for i, a in enumerate(analyses):
    for j in a.attractors:
        attractor_mask[i, j + 1] = True
head_stats = {}
print(
    f"{'head':16} {'subject noun':>12} {'determiner':>10} {'attractor(s)':>12} {'elsewhere':>9}"
)
for layer in range(2):
    for head in range(4):
        w = attention[layer][rows, head, verb_pos]  # (N, T): the verb row of this head
        on_subject = w[rows, subject_pos].mean().item()
        on_attractor = (w * attractor_mask).sum(-1).mean().item()
        on_det = w[rows, det_pos].mean().item()
        elsewhere = max(
            0.0, 1 - on_subject - on_attractor - on_det
        )  # no rounding to -0.000
        head_stats[layer, head] = (on_subject, on_attractor, on_det)
        print(f"layer {layer + 1}, head {head + 1} {on_subject:12.3f} {on_det:10.3f} "
              f"{on_attractor:12.3f} {elsewhere:9.3f}")  # fmt: skip

# %% [markdown]
# Attention weights say where a head *reads from*, not whether the model *uses* what it
# reads. A more direct test is an intervention: silence one head (set its output to zero
# before the output projection $W_O$, with a hook on `out_proj`) and measure the agreement
# accuracy again.


# %%
# NBVAL_IGNORE_OUTPUT
def silence_head(layer, head):
    """Zero one head's output (its d_k columns of the concatenated heads, before W_O)."""
    d_k = model.d_model // model.n_heads

    def hook(module, args):
        (x,) = args  # (B, T, D): the H heads' outputs side by side
        x = x.clone()
        x[..., head * d_k : (head + 1) * d_k] = 0
        return (x,)

    return model.blocks[layer].self_attn.out_proj.register_forward_pre_hook(hook)


silenced_accuracy = {}
print(f"{'silenced head':16} {'agreement accuracy':>18}")
for layer in range(2):
    for head in range(4):
        handle = silence_head(layer, head)
        with torch.no_grad():
            accuracy = (verb_margin(model(ids[:, :-1])) > 0).float().mean().item()
        handle.remove()
        silenced_accuracy[layer, head] = accuracy
        print(f"layer {layer + 1}, head {head + 1} {accuracy:18.3f}")
critical = [
    f"layer {i + 1}, head {h + 1}"
    for (i, h), acc in silenced_accuracy.items()
    if acc < 0.9
]
print(
    "heads whose silencing alone costs over 10 points:", ", ".join(critical) or "none"
)

# %% [markdown]
# Read all these numbers with care. Three cautions:
#
# - Number is written in more than one place: the subject noun, and often its determiner
#   (*a*, *this*, *some*, *these*, but not *the*). A head that reads the determiner can
#   carry the same information as one that reads the noun.
# - By layer 2, each position's vector is no longer just its own token: layer 1 has mixed
#   information from earlier positions into it. So a layer-2 head that reads some other
#   position may still be reading the subject's number, second-hand.
# - A head can put weight on a position and then have its output ignored by everything
#   downstream; and silencing one head can be compensated by others that carry the
#   same information. An intervention shows what the model's decision *depends on*, and
#   only for the intervention we made.
#
# With those cautions, read the two tables. In every run we made, at least one head puts
# nearly all of its weight at the verb row on the subject noun and almost none on the
# attractor right next to the verb, so the model does not simply copy the nearest noun.
# What silencing one head does varies from run to run. In some runs a single head does
# the job, and silencing it alone drops the accuracy from 100 % to about 50 %, a coin toss
# between the two forms (below 50 % would mean the model then follows the attractor more
# often than the subject). In others several heads read the subject, and silencing any one
# of them changes almost nothing, because the others carry the same information. The last
# line under the table says which kind of run is stored with this page; the last digits of
# a long training run depend on the machine (the summation order of a multi-threaded CPU,
# for one), so yours may be the other kind. The sturdier test silences, all at once, every
# head that puts at least a quarter of its verb-row weight on the subject's number, noun or
# determiner:


# %%
# NBVAL_IGNORE_OUTPUT
readers = [
    k
    for k, (on_subject, _, on_det) in head_stats.items()
    if on_subject + on_det >= 0.25
]
handles = [silence_head(layer, head) for layer, head in readers]
with torch.no_grad():
    readers_silenced = (verb_margin(model(ids[:, :-1])) > 0).float().mean().item()
for handle in handles:
    handle.remove()
print(
    "heads that read the subject's number:",
    [f"layer {i + 1}, head {h + 1}" for i, h in readers],
)
print(f"agreement accuracy with all of them silenced: {readers_silenced:.3f}")

# %% [markdown]
# With every such head silenced, agreement falls to about chance (50 %) or below: whatever
# the run, the verb's number comes from heads that read the subject, not from the
# attractor next to it. What we have *not* shown is how the number travels from those
# heads' outputs to the verb's logits; answering that takes more careful interventions
# than zeroing heads.

# %%
subject_head = max(
    head_stats, key=lambda k: head_stats[k][0]
)  # most weight on the subject
assert head_stats[subject_head][0] > 0.5 > head_stats[subject_head][1]
assert readers_silenced < 0.7  # from 1.0 to about a coin toss (0.5) or below

# %% [markdown]
# ## The KV cache
#
# Look at the generation loop again. At step $t$ the model runs on all $t$ tokens so far,
# although only the last position's logits are used. Everything it computes for the
# earlier positions was already computed at the previous step, and it cannot have
# changed: the model is causal, so position $s$ depends only on tokens $0 \dots s$, and
# those are fixed.
#
# Inside each attention layer, what a new position needs from the earlier ones is their
# **keys and values**. A **KV cache** keeps them. At each step we feed only the newest
# token, `(B, 1)`: each layer computes its query, key and value `(B, H, 1, d_k)`, appends
# the key and value to its cache, which grows to `(B, H, t, d_k)`, and attends from the
# one new query to all $t$ cached keys. The feed-forward network, the LayerNorms and the
# projections run on one position instead of $t$. (`DecoderLM.forward(ids, cache=...)`
# also starts the positional embedding at the cache's length: the new token is at position
# $t - 1$, not 0.)
#
# First the check that matters: the cache changes the cost, never the result. Feeding a
# sentence one token at a time through the cache gives the logits of a full forward pass:

# %%
ids_one = vocab.batch([held_out[example]], bos=True, eos=True)[:, :-1]  # (1, T)
cache = model.new_cache()  # one KVCache per layer, empty
with torch.no_grad():
    full = model(ids_one)  # (1, T, V)
    stepwise = torch.cat(
        [model(ids_one[:, t : t + 1], cache=cache) for t in range(ids_one.shape[1])],
        dim=1,
    )
print("cached keys per layer (B, H, T, d_k):", tuple(cache[0].k.shape))
print(
    "same logits as the full forward pass:", torch.allclose(full, stepwise, atol=1e-5)
)
assert torch.allclose(full, stepwise, atol=1e-5)

# %% [markdown]
# And generation with the cache draws exactly the same sentences, token for token, as
# generation without it (same random numbers, same logits up to rounding):

# %%
with_cache, _ = sample_sentences(500, seed=3, use_cache=True)
without_cache, _ = sample_sentences(500, seed=3, use_cache=False)
print(
    "identical tokens with and without the cache:",
    torch.equal(with_cache, without_cache),
)
assert torch.equal(with_cache, without_cache)

# %% [markdown]
# Now the speed. We time the generation of 1000 sentences both ways (the better of two
# runs each, with `best_time` from the training section):

# %%
# NBVAL_IGNORE_OUTPUT
t_cache = best_time(lambda: sample_sentences(1000, seed=2, use_cache=True), repeats=2)
t_full = best_time(lambda: sample_sentences(1000, seed=2, use_cache=False), repeats=2)
speedup = t_full / t_cache
print(f"speed-up of the KV cache, 1000 sentences of up to 16 tokens: {speedup:.1f}×")

# %%
assert speedup > 1.2

# %% [markdown]
# The speed-up is real, a few times on our machine, but smaller than counting suggests.
# Without the cache, step $t$ processes $t$ positions, so 16 steps cost $1 + 2 + \dots +
# 16 = 136$ position-passes instead of 16: 8.5 times more work for the feed-forward
# networks and projections (and 6 times more query–key pairs, Exercise 3). But the model
# is tiny, and a good part of each step is fixed overhead (launching dozens of small
# operations, sampling, bookkeeping) that the cache does not remove. With long contexts
# and big models the cached arithmetic dominates, and the cache is what makes generation
# affordable at all; the price is memory, $2 \times$ layers $\times\, B \times T \times D$
# numbers for the keys and values.

# %% [markdown]
# ## What we learned
#
# - A training step is forward, loss (mean cross-entropy over real targets, `<eos>`
#   included), backward, clip, AdamW update, schedule step; `tinyformer.train.train` does
#   exactly that.
# - Our language is unlimited, so every step gets fresh sentences: no epochs, no
#   overfitting, and the training loss is an honest estimate of the loss on the language.
# - Warmup protects the first updates; the cosine decay to 0 averages out the gradient
#   noise at the end, which is where the last fraction of a percent of loss comes from.
#   A bigger batch late in training cuts that noise too, at its source.
# - A causal model never reads the padding after a sentence, so a batch can be cut into
#   groups of similar length, each trimmed to its own longest sentence: the same loss and
#   gradient, with about a fifth less work on our batches of 256.
# - A 107-thousand-parameter decoder, trained for 1800 steps, reaches a validation loss
#   within a few hundredths of a percent of the entropy limit. The validation set's own noise
#   is about $\pm$0.09 %; dividing by the language's own loss on the same sentences
#   removes it and leaves the model's real shortfall.
# - Temperature 1 without top-k samples the model's distribution: the samples match the
#   language's length and surprise per token. Lower temperature and top-k make samples
#   safer but less diverse, and here longer; higher temperature makes mistakes.
# - A few samples in a thousand at temperature 1 are still ungrammatical. The validation loss
#   bounds that share, $\varepsilon \le 1 - e^{-D_{\mathrm{KL}}}$, and the share is not far
#   below the bound: much of the model's small shortfall is probability leaking onto
#   impossible tokens. A loss ratio of 1.001 can still mean visible mistakes.
# - The model puts the verb in the right number in over 99 % of held-out sentences with a
#   mismatched attractor. Attention maps and head-silencing show which heads read the
#   subject and which ones the decision depends on, but neither alone explains how the
#   model decides.
# - The KV cache stores each layer's keys and values so each generation step processes one
#   new position; it gives identical tokens, and here a modest speed-up, because the
#   model is tiny and the sentences short.
#
# Part II turns the decoder around: an *encoder* that sees the whole sentence at once.

# %% [markdown]
# ## Exercises
#
# **1. Don't decay to zero.** `tinyformer.train.train` by default decays the learning rate
# only to 10 % of its peak (`min_lr_ratio=0.1`). Retrain the model with that floor,
# everything else as above. What happens to the final ratio to the entropy limit, and why?
#
# <details><summary>Solution</summary>
#
# ```python
# set_seed(0)
# model2 = DecoderLM(V, d_model=64, n_heads=4, n_layers=2, d_ff=256, max_len=17, tie_weights=False)
# h2 = train(model2, get_batch, steps=STEPS, lr=LR, warmup_steps=WARMUP, weight_decay=0.0,
#            min_lr_ratio=0.1, eval_fn=lambda m: {"val": val_loss(m)}, eval_every=STEPS)
# h2["val"][-1] / limit
# ```
#
# The ratio gets clearly worse. In one of our tuning runs (1500 steps at a peak learning
# rate of $6 \cdot 10^{-3}$, same model and validation set) it went from
# 1.0008 with decay to zero to 1.0023 with the floor: nearly three times as far from the
# limit. With a floor the last updates are still large, so the weights keep jittering
# with the noise of each random batch instead of settling near the optimum. Decaying to
# zero averages that noise away.
#
# </details>
#
# **2. Temperature acts on tokens, not sentences.** A tiny language has four sentences,
# *a c*, *a d*, *b c*, *b e*, with probabilities 0.4, 0.2, 0.2, 0.2 (so after *a*, *c* and
# *d* come with 2/3 and 1/3; after *b*, *c* or *e* with 1/2 each). Sample it token by token
# at temperature $\tau = 1/2$ (square each next-token probability and renormalise). What
# probability does each sentence get? Compare with squaring the *sentence* probabilities
# and renormalising.
#
# <details><summary>Solution</summary>
#
# First token: $P(a) = 0.6$, $P(b) = 0.4$, squared and renormalised
# $0.36 / 0.52 = 9/13$ and $0.16/0.52 = 4/13$. After *a*: $(2/3)^2 : (1/3)^2 = 4 : 1$, so
# $4/5$ and $1/5$. After *b*: $1/2$ each (squaring changes nothing). Token by token:
# *a c* $= 36/65 \approx 0.554$, *a d* $= 9/65 \approx 0.138$, *b c* $=$ *b e*
# $= 2/13 \approx 0.154$.
#
# Squaring the sentence probabilities: $0.16 : 0.04 : 0.04 : 0.04$, so *a c* $= 4/7
# \approx 0.571$ and the other three $1/7 \approx 0.143$ each. The two differ: token-level
# temperature favours *b e* over *a d* although the language gives them the same
# probability, because *b*'s continuations are evenly split and *a*'s are not. Sampling
# with $\tau \ne 1$ is not "the same distribution, sharper"; it is a different
# distribution that depends on how the probability is spread along the way.
#
# </details>
#
# **3. Counting the work saved by the cache.** Generating $T$ tokens one at a time,
# how many (query, key) pairs does attention score in one layer, with and without a KV
# cache? How many positions go through the feed-forward network? Evaluate for $T = 16$
# and $T = 1024$.
#
# <details><summary>Solution</summary>
#
# Without a cache, step $t$ ($t = 1 \dots T$) runs the model on $t$ positions; the causal
# mask leaves $1 + 2 + \dots + t = t(t+1)/2$ pairs to score (PyTorch computes the full
# $t^2$ and masks, but count the useful ones). Summed over the steps:
# $\sum_t t(t+1)/2 = T(T+1)(T+2)/6$ pairs and $\sum_t t = T(T+1)/2$ feed-forward
# positions. With the cache, step $t$ has one query against $t$ keys: $\sum_t t =
# T(T+1)/2$ pairs and $T$ feed-forward positions.
#
# For $T = 16$: 816 pairs against 136, and 136 feed-forward positions against 16, about
# 6 and 8.5 times less. For $T = 1024$: about 179 million pairs against 525 thousand
# (342 times less), and 525 thousand feed-forward positions against 1024 (513 times less).
# The saving grows with the length, which is why every serious implementation of
# generation uses a cache.
#
# </details>

# %% [markdown]
# ## Results
#
# The chapter's three measured targets, one per line. The course's targets are a loss
# within 0.3 % of the entropy limit, at least 99.5 % grammatical samples at temperature 1,
# and at least 99 % agreement across an attractor. The first and the last are met with
# room to spare. The grammatical share is the close one: our runs of this recipe left
# 0.34–0.46 % of samples ungrammatical, and the last digits of training differ from run
# to run and machine to machine, and so does the model. A count over 1000 samples would
# have a standard error of about 0.2 %, half the share itself, so we count over 16,000
# (about 0.05 %). The assert leaves a margin for both: it asks for 99.3 %, which even a
# model that leaks 0.5 % passes all but about once in three thousand runs; the number
# printed is the measurement.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"val_loss_over_entropy_limit: {ratio_limit:.4f}")
print(f"grammatical_sample_rate: {grammatical_rate:.4f}")
print(f"agreement_accuracy: {agreement_accuracy:.4f}")
assert ratio_limit <= 1.003
assert grammatical_rate >= 0.993  # target 0.995, less a margin for noise (see Results)
assert agreement_accuracy >= 0.99
