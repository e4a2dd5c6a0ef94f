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
# Colab only: install the course's package, tinyformer, from its repository, and clone the
# repository itself: this page runs scripts/train_ddp.py and reads benchmarks/results/.
# Everywhere else this cell does nothing (`make test` and `make notebooks` install it).
import os
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
    CLONE = "/content/transformers-from-scratch"
    if not os.path.isdir(CLONE):
        subprocess.run(
            [
                "git",
                "clone",
                "--depth",
                "1",
                "https://github.com/tinyformer/transformers-from-scratch",
                CLONE,
            ],
            check=True,
        )
    os.chdir(CLONE)

# %% [markdown]
# # Past one machine
#
# <a class="colab-badge" href="https://colab.research.google.com/github/tinyformer/transformers-from-scratch/blob/main/book/appendix/past_one_machine.ipynb">Open in Colab</a> · runs in about 12 s on two CPU cores
#
# Every model in this course trains on one CPU in about a minute. Real language models
# train on thousands of GPUs for weeks, and the first step on that road is short: run the
# same training on several processes at once, each on its own slice of every batch, and
# keep their models identical. That is **data parallelism**, and PyTorch's
# `DistributedDataParallel` (DDP) {cite}`li2020ddp` is its standard implementation. This
# page explains what DDP does, trains a small version of
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s language model
# with it on two CPU processes, and checks the one promise that matters: two processes
# end with the weights one process would have reached. It ends where data parallelism
# runs out, when one device cannot hold the model's training state, and with a
# measurement of mixed precision and compiling on one two-core CPU.
#
# **Learning goals.** After this page you can
#
# - say what DDP copies to every process, what it averages between them, and when;
# - normalise a language-model loss so that $N$ processes compute the gradient of the
#   global batch, although each holds a different number of tokens;
# - launch a training script with `torchrun` on one machine and on several;
# - estimate the memory a model's training state needs, and say when FSDP is the next
#   step.

# %%
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib_inline.backend_inline import set_matplotlib_formats
from tinyformer.config import TransformerConfig
from tinyformer.decoder import DecoderLM
from tinyformer.language import ToyLanguage
from tinyformer.objectives import lm_loss
from tinyformer.vocab import Vocab

set_matplotlib_formats("retina")  # PNG at twice the pixels: sharp in the book and Colab


def find_repository(start: Path) -> Path:
    """The repository's root (holding scripts/train_ddp.py): ``start`` or above it."""
    for folder in [start, *start.parents]:
        if (folder / "scripts" / "train_ddp.py").is_file():
            return folder
    raise FileNotFoundError(
        f"found no scripts/train_ddp.py in {start} or above it: this page runs it "
        "and reads the measurements stored in the repository, so run it from a clone"
    )


ROOT = find_repository(Path.cwd())
RESULTS = ROOT / "benchmarks" / "results"
lang = ToyLanguage()
vocab = Vocab(lang.words)
print(f"vocabulary: {len(vocab)} tokens")

# %% [markdown]
# ## What DDP does
#
# Start $N$ processes, one per device (a GPU, or here a share of a CPU). Each process is
# called a **rank**, numbered $0 \dots N-1$, and runs the same training script. DDP then
# keeps three promises:
#
# 1. **The model is replicated.** Every rank holds a complete copy of the model. When
#    the model is wrapped, `DDP(model)`, rank 0's parameters and buffers are broadcast
#    to all the others, so they start identical even if they were initialised
#    differently. DDP knows nothing of the optimiser: each rank builds its own, with its
#    own state (AdamW's two moments for every parameter), from its own copy of the
#    parameters.
# 2. **Gradients are averaged, during the backward pass.** Each rank runs the forward
#    and backward pass on its own slice of the batch. As gradients appear, DDP divides
#    each by $N$ and sums them across the ranks with an **all-reduce**, a collective
#    operation after which every rank holds the sum, here the average. It does not wait
#    for the whole backward pass: the parameters are grouped into **buckets**, the first
#    capped at 1 MiB and the others at 25 MiB by default, in roughly the reverse of the
#    order in which the model registers its parameters, a guess at the order in which
#    backward produces their gradients. After the first iteration DDP rebuilds the
#    buckets in the order the gradients actually became ready. A bucket's all-reduce
#    starts as soon as its last gradient is ready, while backward carries on with
#    earlier layers, so communication hides behind computation {cite}`li2020ddp`.
# 3. **Nothing else is sent at each step.** After `loss.backward()` every rank holds the
#    same averaged gradient, so every rank's optimiser makes the same update to the same
#    weights, and the replicas stay identical without ever exchanging weights again.
#    Gradient clipping, the learning-rate schedule and the optimiser step are ordinary
#    local code. Apart from one-time setup (a check at wrap time that every rank's
#    parameters have the same shapes, the broadcast, the rebuild of the buckets), DDP
#    sends only a model's *buffers*, tensors it keeps but does not train, such as a
#    batch norm's running statistics, which it re-sends from rank 0 before each forward
#    pass; our model has none. Our script adds two all-reduces of its own: the token
#    count of every step (next section) and the training loss at the steps it logs.
#
# The figure draws one training step on two ranks. It is a schematic, for a model large
# enough to fill several buckets:
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s model, with 107,200
# parameters or 0.41 MiB of float32 gradients, fits in the first bucket, so its single
# all-reduce starts when backward ends and overlaps nothing. Between the processes, the
# all-reduce travels through a communication library: NCCL between NVIDIA GPUs, gloo
# between CPU processes (what this page uses).

# %% mystnb={"figure": {"caption": "One DDP training step on two ranks (a schematic of a model that fills three buckets, not a measurement). Each rank runs forward and backward on its own half of the batch. Backward produces the gradients of the last layers first; as soon as a bucket of them is complete its all-reduce starts, while backward continues with earlier layers. The last bucket is complete only when backward ends, so its all-reduce overlaps nothing; the optimiser step waits for it and is the same on both ranks.", "name": "fig-ddp-step"}, "image": {"alt": "Timeline with two ranks. On each, a forward bar, then backward bars for layers 4, 3, 2 and 1, then an optimiser step. Below them, three all-reduce bars for buckets of gradients, each starting when its layers' backward is done: the first two overlap the backward of earlier layers, the third starts when backward ends, overlaps nothing, and ends just before the optimiser step."}} tags=["hide-input"]
fig, ax = plt.subplots(figsize=(8, 2.9))
colors = {
    "forward": "#9ecae1",
    "backward": "#3182bd",
    "all-reduce": "#fd8d3c",
    "step": "#74c476",
}
backward = [("layer 4", 3.0), ("layer 3", 4.2), ("layer 2", 5.4), ("layer 1", 6.6)]
buckets = [("bucket 1", 4.2, 5.3), ("bucket 2", 6.6, 7.5), ("bucket 3", 7.8, 8.6)]
for y, rank in ((2.0, "rank 0"), (1.0, "rank 1")):
    ax.broken_barh([(0, 3.0)], (y, 0.6), color=colors["forward"])
    ax.text(1.5, y + 0.3, "forward", ha="center", va="center")
    for name, start in backward:
        ax.broken_barh([(start, 1.2)], (y, 0.6), color=colors["backward"])
        ax.text(start + 0.6, y + 0.3, name, ha="center", va="center", color="white")
    ax.broken_barh([(8.6, 1.0)], (y, 0.6), color=colors["step"])
    ax.text(9.1, y + 0.3, "step", ha="center", va="center")
    ax.text(-0.2, y + 0.3, rank, ha="right", va="center")
for name, start, end in buckets:
    ax.broken_barh([(start, end - start)], (0.1, 0.6), color=colors["all-reduce"])
    ax.text((start + end) / 2, 0.4, name, ha="center", va="center")
ax.text(-0.2, 0.4, "all-reduce\n(both ranks)", ha="right", va="center")
ax.set_xlim(-2.3, 9.8)
ax.set_ylim(0, 2.8)
ax.set_yticks([])
ax.set_xticks([])
ax.set_xlabel("time →")
for side in ("top", "right", "left"):
    ax.spines[side].set_visible(False)
ax.set_title("One training step with DistributedDataParallel")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The global batch, and which mean the loss takes
#
# Say the global batch has $B$ sentences and there are $N$ ranks. Each rank takes
# $B / N$ of them, and the optimiser should see the gradient one process would compute on
# all $B$: the **global batch** is what the optimiser sees, whatever $N$ is. So the
# learning rate, the warmup and everything else tuned for batch $B$ carry over unchanged.
#
# There is a trap in "DDP averages the gradients". Our loss is a mean over *tokens*:
# $L = \frac{1}{n} \sum_{i} \ell_i$ over the $n$ real targets of the batch. Rank $r$
# holds $n_r$ of them, and its sentences are not the same length as the other ranks', so
# the $n_r$ differ. If each rank takes the mean over its own tokens, DDP computes
#
# $$\frac{1}{N} \sum_r \frac{1}{n_r} \sum_{i \in r} \nabla \ell_i
#   \;\ne\; \frac{1}{n} \sum_{i} \nabla \ell_i,$$
#
# which weighs a token on a rank with short sentences more than one on a rank with long
# ones. The fix: rank $r$ divides its *sum* by the global count $n = \sum_r n_r$ (one
# extra all-reduce of a single number) and multiplies by $N$, to cancel DDP's division:
#
# $$L_r = \frac{N}{n} \sum_{i \in r} \ell_i, \qquad
#   \frac{1}{N} \sum_r \nabla L_r = \frac{1}{n} \sum_i \nabla \ell_i.$$
#
# The cell checks both on one batch of 12 sentences cut into two halves, without any
# processes: it computes each half's gradient in turn and averages them, as DDP would.

# %%
torch.manual_seed(0)
config = TransformerConfig(vocab_size=len(vocab), max_len=17, tie_weights=False)
model = DecoderLM(config)
params = list(model.parameters())
ids = vocab.batch(lang.sample(12, seed=7), bos=True, eos=True)  # (12, T + 1)
inputs, targets = ids[:, :-1], ids[:, 1:]  # (12, T) each
halves = [(inputs[:6], targets[:6]), (inputs[6:], targets[6:])]  # two "ranks"
n_r = [int((t != vocab.pad_id).sum()) for _, t in halves]
n, N = sum(n_r), len(halves)


def grads(loss):
    return torch.cat([g.flatten() for g in torch.autograd.grad(loss, params)])


def half_loss(x, y):
    return lm_loss(model(x), y, vocab.pad_id)  # mean over this half's real targets


target = grads(lm_loss(model(inputs), targets, vocab.pad_id))  # one process, 12 rows
naive = sum(grads(half_loss(x, y)) for x, y in halves) / N
fixed = (
    sum(grads(half_loss(x, y) * n_r[r] / n * N) for r, (x, y) in enumerate(halves)) / N
)
size = target.norm()
naive_error = ((naive - target).norm() / size).item()
fixed_error = ((fixed - target).norm() / size).item()
print(f"real targets per rank: {n_r} (n = {n})")
print(f"per-rank means:     off by {naive_error:.1%} of the gradient")
print(f"global token count: off by less than 1e-6: {fixed_error < 1e-6}")

# %% [markdown]
# The wrong mean is off by a few percent here, not a disaster, but a difference one
# process would never make, and it grows as the ranks' batches get smaller and their
# lengths more unequal. (Padding is the same issue in disguise: the loss ignores pad
# targets, so the counts are of *real* tokens.)
#
# ## The script: Chapter 5 on two processes
#
# `scripts/train_ddp.py` trains [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s decoder this way. Each rank builds the model
# from the same seed and wraps it in `DDP`; every global batch comes from a stream keyed
# by the seed and the step (with `--seed 0 --global-batch 64`, the batches of [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s
# first 900 steps), and rank $r$ keeps rows $rB/N$ to $(r+1)B/N - 1$, so any number of
# processes sees exactly the sentences one process sees. The loss is normalised as above.
# The process group uses gloo on a CPU and NCCL on GPUs. Rank 0 writes the final weights,
# `final.pt`, and `result.json`: the final training loss, the validation loss on the
# 5000 validation sentences of [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)
# over the entropy limit, and tokens per second. On two CPU cores:
#
# ```bash
# torchrun --standalone --nproc_per_node=2 scripts/train_ddp.py \
#     --steps 300 --global-batch 64 --out runs/ddp
# ```
#
# `--dtype bf16` trains under bfloat16 autocast, `--compile` compiles the model, and
# `--device` picks CPU or CUDA (default: CUDA when there is a GPU). A global batch the
# world size does not divide makes every rank stop at once, before any rank waits on
# another, each with a message that says so; once the first rank has exited, though,
# torchrun ends the others (with SIGTERM), so a slower rank may be stopped before it
# prints its message.
#
# The promise to check: one process and two processes, same seed, same global batch, end
# with the same weights. The next cell runs both, a small model for 10 steps of 12
# sentences, side by side. On two CPU cores nearly all of the cell's time goes to
# starting the two launchers and their three processes (each imports PyTorch): the
# training loops themselves take a fraction of a second (the cell after the check prints
# both times).

# %%
SCRIPT = ROOT / "scripts" / "train_ddp.py"
TINY = [
    "--steps",
    "10",
    "--global-batch",
    "12",
    "--warmup",
    "3",
    "--d-model",
    "32",
    "--n-heads",
    "2",
    "--n-layers",
    "1",
    "--d-ff",
    "64",
    "--val-sentences",
    "50",
]


def torchrun(nproc: int, out: Path) -> subprocess.Popen:
    """Start torchrun in a process group of its own, so that it can be ended whole."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(SCRIPT),
        *TINY,
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


started = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    launches = {}
    try:
        for nproc in (1, 2):
            launches[nproc] = torchrun(nproc, Path(tmp) / str(nproc))
        for launch in launches.values():
            log, _ = launch.communicate(timeout=300)
            assert launch.returncode == 0, log.decode()[-3000:]
    finally:  # after a timeout or a failure, end each launch and every rank it started
        for launch in launches.values():
            if launch.poll() is None:
                os.killpg(launch.pid, signal.SIGKILL)
                launch.wait()
    cell_seconds = time.perf_counter() - started
    final = {
        nproc: torch.load(Path(tmp) / str(nproc) / "final.pt", weights_only=True)
        for nproc in launches
    }
    runs = {
        nproc: json.loads((Path(tmp) / str(nproc) / "result.json").read_text())
        for nproc in launches
    }


def is_key_bias(name: str) -> bool:
    return name.endswith("k_proj.bias")


diff = {name: (final[1][name] - final[2][name]).abs().max().item() for name in final[1]}
weights_gap = max(d for name, d in diff.items() if not is_key_bias(name))
key_bias_gap = max(d for name, d in diff.items() if is_key_bias(name))
small = DecoderLM(
    TransformerConfig(
        vocab_size=len(vocab),
        d_model=32,
        n_heads=2,
        n_layers=1,
        d_ff=64,
        max_len=17,
        tie_weights=False,
    )
)
probe = vocab.batch(lang.sample(200, seed=12345), bos=True, eos=True)[:, :-1]
log_probs = []
for nproc in (1, 2):
    small.load_state_dict(final[nproc])
    with torch.no_grad():
        log_probs.append(small(probe).log_softmax(-1))
function_gap = (log_probs[0] - log_probs[1]).abs().max().item()
for nproc, result in runs.items():
    print(
        f"{nproc} process(es): {result['per_rank_batch']:2d} sentences per rank, "
        f"training loss of the {result['final_train_loss_steps']} steps "
        f"{result['final_train_loss']:.3f}"
    )
print(f"every weight except the key biases agrees to within 1e-5: {weights_gap < 1e-5}")
print(f"log-probabilities of 200 sentences agree to within 1e-5: {function_gap < 1e-5}")

# %% tags=["nbval-ignore-output"]
print(f"largest difference, weights except the key biases: {weights_gap:.1e}")
print(f"largest difference, key biases:                    {key_bias_gap:.1e}")
print(f"largest difference, log-probabilities:             {function_gap:.1e}")
loops = max(result["seconds_total"] for result in runs.values())
print(f"the launches took {cell_seconds:.0f} s, the longer training loop {loops:.2f} s")

# %%
assert weights_gap < 1e-5 and function_gap < 1e-5
assert key_bias_gap < 1e-2  # rounding noise scaled up by Adam (see below), never more

# %% [markdown]
# The two runs add the same gradients in a different order (two halves, then the
# all-reduce), so they agree to rounding, within about $10^{-6}$ in float32, with one
# exception, shown in the section "Fused AdamW, and the rounding it brings" of the
# appendix [Cost and speed](performance.ipynb): the **key biases**. Their gradient is
# exactly zero in exact arithmetic (a constant added to a whole row of scores changes no
# softmax), so what is computed is rounding noise, in float32 around $10^{-9}$ to
# $10^{-8}$. Adam's step is the learning rate times the gradient's running mean divided
# by its running size plus a small $\epsilon$, $10^{-8}$ by default (as here). Noise of
# $10^{-9}$ to $10^{-8}$ is comparable to $\epsilon$, so that quotient is a sizeable
# fraction of 1, and the noise becomes steps of a sizeable fraction of the learning
# rate. The key biases of two runs drift apart, by around $10^{-3}$ here, while
# the functions the models compute stay equal, as the log-probabilities show. In float64
# the noise is about $10^{-17}$, far below $\epsilon$, so the steps it causes are
# negligible: `tests/test_ddp.py` finds every weight, key biases included, equal to
# within $10^{-9}$ (the test's bound).
#
# ### Checkpoints
#
# A job on many machines is interrupted more often than a job on one, so the script
# writes a checkpoint every `--ckpt-every` steps: the model, the optimiser's state
# (AdamW's moments and step counts), the schedule, and the step. The step is all the data
# stream needs, because each batch is a function of the seed and the step. When
# `OUT/checkpoint.pt` exists, the script continues from it by itself, so a job that
# `torchrun` restarts after a failure picks up at its last checkpoint, not at step 0:
#
# ```bash
# TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --standalone --nproc_per_node=2 \
#     --max-restarts=3 scripts/train_ddp.py --steps 300 --out runs/ddp
# ```
#
# (The variable keeps the workers off the store torchrun uses to organise the restarts;
# without it, restarted ranks sometimes hung here while setting up their process group,
# much as [pytorch/pytorch#135712](https://github.com/pytorch/pytorch/issues/135712)
# reports for NCCL.) `--resume DIR` continues from another run's
# `DIR/checkpoint.pt`. A checkpoint made with other settings (another batch, learning
# rate, model size or dtype) stops every rank with a message. Resumed with the same
# settings, the same number of processes and the same `--compile` and `--device` (which
# the checkpoint does not record), a run ends with the weights of a run that was never
# stopped, to within $10^{-7}$ (the test's bound): `tests/test_ddp.py` makes every rank
# exit after step 5 (the testing option `--kill-after-step 5`), lets torchrun restart
# them, and compares. Resumed with a different number of processes, it adds the same
# gradients in another order, so the weights agree only up to rounding, with the key
# biases drifting as above.
#
# ## Launching: one machine, several machines
#
# `torchrun` (the same as `python -m torch.distributed.run`) starts the processes and
# tells each one where it stands through environment variables: `RANK` (its number among
# all processes), `LOCAL_RANK` (among those on its machine: which GPU to use),
# `WORLD_SIZE`, and `MASTER_ADDR` and `MASTER_PORT`, where the processes meet to set up
# the process group. The script reads `RANK` and `WORLD_SIZE` itself, to check its
# arguments against the launch, and `LOCAL_RANK` to pick its GPU; `init_process_group`,
# with its default `env://` initialisation, reads `MASTER_ADDR`, `MASTER_PORT`, `RANK`
# and `WORLD_SIZE` to set up the group.
#
# **One machine with $N$ GPUs** (or $N$ CPU processes): `--standalone` makes the machine
# its own meeting point, on a free port.
#
# ```bash
# torchrun --standalone --nproc_per_node=8 scripts/train_ddp.py \
#     --global-batch 512 --out runs/a
# ```
#
# **Several machines, a fixed set.** Run the same command on every machine, each with its
# own `--node_rank`, all pointing at machine 0:
#
# ```bash
# # on machine 0 (address 10.0.0.1); on machine 1 the same with --node_rank=1
# torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 \
#     --master_addr=10.0.0.1 --master_port=29500 \
#     scripts/train_ddp.py --global-batch 1024 --out runs/b
# ```
#
# **Several machines, found at start-up.** With a *rendezvous* the machines find each
# other through a store on one of them and torchrun assigns the ranks; the command is
# identical everywhere. `--nnodes=1:4` makes the job *elastic*: it runs on one to four
# machines, and when a machine joins or fails, torchrun stops every rank and restarts
# them all with the new world size (a failure counts against `--max-restarts`):
#
# ```bash
# TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --nnodes=1:4 --nproc_per_node=8 \
#     --max-restarts=3 --rdzv-id=job42 --rdzv-backend=c10d \
#     --rdzv-endpoint=10.0.0.1:29400 \
#     scripts/train_ddp.py --global-batch 1536 --out /shared/runs/c
# ```
#
# The world size can then be 8, 16, 24 or 32, and the global batch must divide by each
# of them, or `check_launch` stops every rank: 1536 does (192, 96, 64 or 48 sentences
# per rank), 1024 would fail on three machines. A restarted rank continues from
# `OUT/checkpoint.pt`, so `--out` must be on a file system every machine shares; the
# script checks that all ranks see the same checkpoint and stops them if they do not.
# After a change of world size the same gradients are summed in another order, so the
# run continues up to rounding, as above. Across machines the gradients travel over the
# network between them, so the all-reduce takes longer, and its overlap with the
# backward pass matters more.
#
# ## When one device cannot hold the model: FSDP
#
# DDP puts a complete copy of the training state on every device. For AdamW in float32
# that is, per parameter: the weight (4 bytes), its gradient (4), and the optimiser's two
# running moments (4 + 4): **16 bytes per parameter**, before a single activation is
# stored for the backward pass. Mixed-precision training with autocast (the script's
# `--dtype bf16`) does not reduce it: the float32 master weights, their gradients and
# the moments all stay, 16 bytes per parameter again. Autocast casts the weights to
# bfloat16 as the forward pass uses them; the copies that backward needs are saved with
# the activations until backward is done, so, like the activations, they add to the
# peak memory, not to the training state. (Some frameworks instead keep a permanent
# bfloat16 copy of the weights next to the float32 ones: Exercise 3 counts that
# variant.) The cell prices the models of `benchmarks/training_throughput.py` and
# GPT-2's smallest model: 117 million parameters in the paper's table
# {cite}`radford2019language`, 124,439,808 in the weights that were released, which is
# the count the cell computes.

# %%
BYTES_PER_PARAMETER = 4 + 4 + 4 + 4  # weight, gradient, AdamW's two moments (fp32)


def gpt2_parameters(V=50257, T=1024, D=768, L=12):
    """GPT-2: token and position tables, L blocks (12 D^2 + 13 D each), final norm."""
    return V * D + T * D + L * (12 * D * D + 13 * D) + 2 * D


throughput = json.loads((RESULTS / "training_throughput.json").read_text())
sizes = {
    f"encoder-decoder, D={row['config']['d_model']}": row["parameters"]["tinyformer"]
    for row in throughput["results"]
}
sizes["GPT-2 small"] = gpt2_parameters()
for name, count in sizes.items():
    state = count * BYTES_PER_PARAMETER
    print(
        f"{name:22s} {count:>11,} parameters {state / 1e6:7.1f} MB"
        f" | FSDP, 8 ranks: {state / 8 / 1e6:6.1f} MB each"
    )
assert sizes["GPT-2 small"] == 124_439_808

# %% [markdown]
# GPT-2 small needs about 2 GB of training state: it fits on any GPU, and DDP is the
# right tool. But the state grows with the parameters, and a model of 7 billion
# parameters needs $16 \times 7 \cdot 10^9$ bytes, about 112 GB, more than most single
# GPUs hold even before activations. That is where **FSDP**, PyTorch's Fully Sharded Data
# Parallel {cite}`zhao2023fsdp`, comes in. It is still data parallelism, each rank on its
# own slice of the batch, but no rank keeps the whole state: each holds a $1/N$ **shard**
# of the weights, gradients and optimiser state. Before a layer (or a group of layers,
# FSDP's unit) runs, its full weights are gathered from all ranks (an all-gather) and
# dropped again after use; after its backward pass the gradients are summed and cut so
# that each rank receives only its own shard's (a reduce-scatter), and each rank updates
# only its shard. Memory per rank falls from $16P$ bytes to about $16P/N$, plus the full
# weights and gradients of the unit being computed. The price is more communication: the
# weights now travel at every step, gathered for the forward pass and again for the
# backward pass, not only the gradients.
#
# Rule of thumb: use DDP while the model's training state fits on one device, and FSDP
# when it does not. FSDP shards the weights, gradients and optimiser state, not the
# activations: when a batch's activations do not fit, the remedy is a smaller batch per
# rank with gradient accumulation (several backward passes summed before one optimiser
# step), or activation checkpointing (recomputing activations during backward instead of
# storing them).
#
# ## Mixed precision and compiling, measured here
#
# Two cheaper ways to run each step, independent of how many processes there are:
#
# - **bfloat16 autocast**: `torch.autocast(device, dtype=torch.bfloat16)` runs the matrix
#   products in bfloat16, a 16-bit format with float32's range and fewer digits, while
#   weights, gradients and the optimiser stay float32 (unlike float16, bfloat16 needs no
#   loss scaling). It is made for GPUs: those with tensor cores are designed to run
#   16-bit matrix products several times faster than float32 ones. On a CPU the gain
#   depends on the processor.
# - **`torch.compile`**: captures the model's forward pass as a graph, derives the graph of
#   its backward pass ahead of time (AOTAutograd), and generates fused kernels for both.
#   Only the model's forward and backward are compiled: the loss, gradient clipping, the
#   schedule, the optimiser step and, under DDP, the all-reduces stay eager. The first
#   step pays for the compilation.
#
# `benchmarks/mixed_precision.py` trains
# [Chapter 5](../part1_decoder/05_training_and_generation.ipynb)'s model (batches of 64
# sentences) all three ways from the same weights on the same batches, in interleaved
# rounds (float32, bfloat16, compiled, float32, ...), and records the tokens per second
# of every round and the validation loss after the same number of steps. A machine's
# speed drifts from round to round, even with little else running, so each variant is
# compared with the float32 round of the same cycle: the ratio below is the median over
# the rounds of these paired ratios.
#
# <div class="admonition warning">
# <p class="admonition-title">Not a speed claim</p>
# <p>The stored numbers come from a machine with two CPU cores, measured with two threads while the load average over one minute was about 1.3 at the start and 1.5 at the end: below the number of cores, so on average no process was waiting for a core (the cell prints what the file records). Even so, the speed of single rounds varied: each variant's fastest round was 1.3 to 1.5 times as fast as its slowest. They record one measurement on that machine on that day, not what mixed precision or compiling do for this model in general. <code>python benchmarks/mixed_precision.py</code> on your machine, or on a GPU, measures yours.</p>
# </div>

# %%
mixed = json.loads((RESULTS / "mixed_precision.json").read_text())
assert not mixed["quick"], (
    "mixed_precision.json holds a --quick smoke test: run it for real"
)
m, setup, load = mixed["machine"], mixed["setup"], mixed["load_average"]
rows = mixed["results"]
print(
    f"{m['device_name']}, {m['logical_cores']} cores, {m['torch_threads']} torch "
    f"thread(s), torch {m['torch']}, {m['date'][:10]}"
)
print(
    f"load average over 1 minute: {load['start'][0]:.1f} at the start, "
    f"{load['end'][0]:.1f} at the end"
)
print(
    f"{setup['rounds']} rounds of {setup['steps_per_round']} steps after "
    f"{setup['untimed_steps']} untimed ones: {setup['steps']} steps each"
)
for name, row in rows.items():
    speed = row["round_spread"]["tokens_per_s"]
    ratio = row["round_spread"]["ratio_vs_fp32"]
    print(
        f"{name:8s} {speed['min']:5.0f} to {speed['max']:5.0f} tokens/s per round; "
        f"validation loss {row['val_loss']:.4f} ({row['loss_diff_vs_fp32']:+.4f})"
    )
    paired = row["median_round_ratio_vs_fp32"]
    print(
        f"{'':8s} paired ratio to fp32: median {paired:.2f}, "
        f"rounds {ratio['min']:.2f} to {ratio['max']:.2f}"
    )

# %% mystnb={"figure": {"caption": "Training speed of bfloat16 autocast and torch.compile relative to eager float32, for Chapter 5's model on a two-core CPU with little other load (benchmarks/results/mixed_precision.json). Bars: the median over the rounds of each round's speed divided by that of the float32 round of the same cycle; dots: the single rounds. The scatter of the dots is the round-to-round drift of the machine's speed: a record of one measurement on one machine, not a speed claim.", "name": "fig-mixed-precision"}, "image": {"alt": "Bar chart of training speed relative to eager float32 for three ways of running the same training: eager float32, at 1, bfloat16 autocast, at about 0.46, and torch.compile, at about 0.84. Each bar is the median of the per-round ratios, the single rounds are drawn as dots spread around it, and a dashed line marks 1: all bfloat16 dots and all but one torch.compile dot lie below it."}} tags=["hide-input"]
names = list(rows)
medians = [rows[name]["median_round_ratio_vs_fp32"] for name in names]
labels = [
    f"{label}\nmedian {median:.2f}×"
    for label, median in zip(
        ["eager fp32", "bf16 autocast", "torch.compile"], medians, strict=True
    )
]
fig, ax = plt.subplots(figsize=(6, 3))
ax.bar(labels, medians, color="#9ecae1")
for i, name in enumerate(names):
    ratios = rows[name]["round_ratios_vs_fp32"]
    ax.plot([i] * len(ratios), ratios, "o", color="#08519c", alpha=0.5, markersize=4)
ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
ax.set_ylabel("speed / fp32's, per round")
ax.set_ylim(0, 1.1 * max(max(row["round_ratios_vs_fp32"]) for row in rows.values()))
ax.set_title("Chapter 5's model, batches of 64 sentences, two CPU cores")
fig.tight_layout()
plt.show()

# %%
first = {name: row["first_step_s"] for name, row in rows.items()}
print(
    f"first step, compiling included: {first['compile']:.0f} s compiled, "
    f"{first['fp32']:.1f} s eager fp32"
)
assert all(row["median_round_ratio_vs_fp32"] > 0 for row in rows.values())
assert all(abs(row["loss_diff_vs_fp32"]) < 0.05 for row in rows.values())  # same loss
assert first["compile"] > first["fp32"]  # compiling costs time once

# %% [markdown]
# In this run both were slower than eager float32. With bfloat16 autocast, training ran
# at about 0.46 times float32's speed (the median of the paired ratios), with rounds
# between 0.35 and 0.51: on this CPU the bfloat16 step was the slower one in every
# round. The compiled model ran at about 0.84 times the speed of float32, with rounds
# between 0.75 and 1.01: slower in 19 of the 20 rounds, so for this small model on this
# CPU compiling did not pay. Its first step, compilation included, took about 8 s,
# against about 0.02 s for eager float32's first step. The validation losses after the
# same 205 steps differ by less than a thousandth of a nat (+0.0002 with bfloat16,
# -0.0004 compiled): bfloat16's rounding did not hurt this training. These are one
# machine's numbers: how fast either would be on another CPU, or on a GPU, which is what
# both were made for, they do not say.
#
# ## What we learned
#
# - DDP broadcasts rank 0's parameters and buffers when it wraps the model, then
#   averages the gradients with bucketed all-reduces that can overlap the backward pass,
#   and at each step sends nothing else. Each rank's own optimiser then makes the same
#   update from the same gradient, so the replicas stay identical.
# - The optimiser sees the global batch. For a mean over tokens, each rank divides its
#   summed loss by the global token count and multiplies by $N$; per-rank means weigh
#   tokens unequally.
# - One process and two processes, same seed and global batch, end with the same model;
#   only the key biases, whose true gradient is zero, drift apart by rounding.
# - `torchrun` starts the processes: `--standalone` on one machine, `--nnodes` with
#   `--node_rank` or a c10d rendezvous across several.
# - Training state costs 16 bytes per parameter with AdamW in float32; when that no longer
#   fits one device, FSDP shards it across the ranks.
#
# ## Exercises
#
# 1. With $B = 64$ sentences and $N = 2$ ranks, how many sentences does each rank see per
#    step, and what changes if you launch $N = 4$ with the same `--global-batch`?
# 2. A colleague keeps per-rank means and argues that with many sentences per rank the
#    token counts are nearly equal anyway. When is that true, and when does it fail?
# 3. How many bytes per parameter does the training state take with AdamW if, next to
#    the float32 weights, a permanent bfloat16 copy of them is kept for the forward and
#    backward passes, and the gradients are accumulated in float32?
#
# <details>
# <summary>Solutions</summary>
#
# 1. 32 sentences per rank with $N = 2$, 16 with $N = 4$. The optimiser sees the same 64
#    sentences per step either way, so the training (and the final weights, up to
#    rounding and the key biases aside) does not change; only the time per step does.
# 2. The counts of two ranks differ by roughly the spread of a sentence's length times
#    $\sqrt{B/N}$, a relative difference shrinking like $1/\sqrt{B/N}$, so for large
#    per-rank batches of similar documents the error is small. It fails with small
#    per-rank batches, with lengths that vary a lot (code, chat), and whenever the data
#    are sorted or bucketed by length, so that one rank systematically gets the long
#    sequences.
# 3. 4 (float32 weight) + 2 (bfloat16 copy) + 4 (gradient, in float32) + 8 (two moments)
#    = 18 bytes; with bfloat16 gradients, 16. Autocast, which keeps no permanent copy,
#    stays at 16 bytes, as for float32 training; its bfloat16 copies count toward the
#    peak memory with the activations. Mixed precision can save time (on hardware made
#    for it: on the CPU measured above it cost time) and activation memory (activations
#    stored in bfloat16 take half the bytes), not training state.
#
# </details>
