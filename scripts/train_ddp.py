"""Train Chapter 5's decoder on several processes with PyTorch's DistributedDataParallel.

Launch with torchrun, which starts one process per rank and tells each its rank:

    torchrun --standalone --nproc_per_node=2 scripts/train_ddp.py --steps 300 --out runs/ddp

(one machine, two processes: on a CPU they talk through gloo, on GPUs through NCCL, one GPU
per process). ``python scripts/train_ddp.py ...`` without torchrun runs one process.

What each process does:

- builds the same model from the same seed (DDP also copies rank 0's weights to every rank
  when it wraps the model), and its own AdamW and learning-rate schedule;
- draws every global batch of ``--global-batch`` sentences from a stream keyed by
  (``--seed``, step) and keeps its own slice: rank r of N takes rows r*B/N .. (r+1)*B/N - 1.
  So N processes see exactly the sentences one process sees, whatever N is. With
  ``--seed 0`` the batches are Chapter 5's (``lang.sample(B, seed=1000 + step)``);
- scales its loss so that the gradient DDP produces (the mean of the ranks' gradients) is
  the gradient of the mean loss over ALL real target tokens of the global batch: rank r's
  loss is (sum of its token losses) / (tokens in the global batch, all-reduced) * N;
- clips and steps the optimiser on the averaged gradient, the same on every rank.

Rank 0 writes ``OUT/final.pt`` (the model's state dict; ``torch.load(..., weights_only=True)``
reads it) and ``OUT/result.json`` (steps, world size, global batch, final training loss, the
validation loss on Chapter 5's validation set and its ratio to the language's entropy limit,
tokens per second of the steps after the first, so neither compiling nor checkpoint
writes are counted). Every ``--ckpt-every`` steps it writes ``OUT/checkpoint.pt`` (model,
optimiser, schedule and the step, which is all the data stream needs).

Resuming: when ``OUT/checkpoint.pt`` exists, the script continues from it automatically, so
a job that torchrun restarts after a failure (``--max-restarts``) picks up at the last
checkpoint instead of step 0. Launch such a job with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``
in torchrun's environment: without it, restarted ranks here sometimes hung while gloo set up
the new process group (1 restart in 3; with it, 3 in 3 went through), most likely because
the store torchrun shares with its workers still held the previous attempt's keys
(pytorch/pytorch#135712). ``--resume DIR`` continues from ``DIR/checkpoint.pt`` (another
run's folder) when OUT holds no checkpoint yet. A checkpoint made with other settings (see
RUN_SETTINGS: everything that changes the weights, the dtype included) stops every rank
with a message. Resumed with the same number of processes, a run ends with exactly the
weights of a run that was never interrupted; with another number, the same gradients are
summed in another order, so the weights agree up to rounding (and the key biases, whose
true gradient is zero, drift by more: see the appendix "Past one machine"). On several
machines, every rank must see OUT and DIR: a shared file system.

``--dtype bf16`` runs the forward pass under bfloat16 autocast (weights, gradients and the
optimiser stay float32, the loss is computed in float32); ``--dtype fp64`` trains in float64,
slowly, for exact comparisons between runs. ``--compile`` wraps the DDP model in
``torch.compile`` (and pads every batch to the full context, so it compiles one shape).

Testing aid: ``--kill-after-step K`` writes the checkpoint of step K and then makes every rank
exit with status 3, as if the job had crashed there (tests/test_ddp.py uses it).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from tinyformer.config import TransformerConfig
from tinyformer.decoder import DecoderLM
from tinyformer.language import ToyLanguage
from tinyformer.objectives import lm_loss
from tinyformer.train import set_seed, warmup_cosine
from tinyformer.vocab import Vocab


def build_model(vocab_size: int, args: argparse.Namespace) -> nn.Module:
    """Chapter 5's DecoderLM: learned positions, pre-LN, an untied LM head."""
    config = TransformerConfig(
        vocab_size=vocab_size,
        d_model=args.d_model,
        n_heads=args.n_heads,
        n_layers=args.n_layers,
        d_ff=args.d_ff,
        max_len=args.max_len,
        tie_weights=False,
    )
    return DecoderLM(config)


TRAIN_SEED = 1000  # Chapter 5: the batch of step s is lang.sample(B, seed=1000 + s)
SEED_STRIDE = 10_000_000  # --seed k shifts the stream by k * 10^7 batches
VAL_SEED = 1_000_000  # Chapter 5's validation set (a seed no batch of --seed 0 uses)
CHECKPOINT = "checkpoint.pt"
KILLED = 3  # exit status of --kill-after-step
# What a checkpoint must agree on to be continued: everything that changes the weights.
RUN_SETTINGS = (
    "steps",
    "global_batch",
    "seed",
    "lr",
    "warmup",
    "min_lr_ratio",
    "weight_decay",
    "grad_clip",
    "d_model",
    "n_heads",
    "n_layers",
    "d_ff",
    "max_len",
    "dtype",
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--steps", type=int, default=1800, help="optimiser updates (default 1800)")
    p.add_argument(
        "--global-batch",
        type=int,
        default=64,
        help="sentences per update, summed over all ranks; a multiple of the world size",
    )
    p.add_argument("--seed", type=int, default=0, help="initial weights and data stream")
    p.add_argument("--out", type=Path, required=True, help="folder for the results")
    p.add_argument(
        "--resume",
        type=Path,
        help="continue from DIR/checkpoint.pt (OUT/checkpoint.pt, if any, comes first)",
    )
    p.add_argument("--ckpt-every", type=int, default=100, help="checkpoint period (0: never)")
    p.add_argument(
        "--kill-after-step",
        type=int,
        help="testing aid: checkpoint after this step, then every rank exits with status 3",
    )
    p.add_argument("--lr", type=float, default=1e-2, help="peak learning rate")
    p.add_argument("--warmup", type=int, default=100, help="linear warmup steps")
    p.add_argument("--min-lr-ratio", type=float, default=0.0, help="final lr / peak lr")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--grad-clip", type=float, default=1.0, help="max gradient norm (0: off)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--n-heads", type=int, default=4)
    p.add_argument("--n-layers", type=int, default=2)
    p.add_argument("--d-ff", type=int, default=256)
    p.add_argument("--max-len", type=int, default=17, help="context (17 fits every sentence)")
    p.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp64"),
        default="fp32",
        help="bf16: fp32 weights, bf16 autocast; fp64: for exact comparisons (slow)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile the DDP model")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--val-sentences", type=int, default=5000, help="Chapter 5: 5000")
    p.add_argument("--log-every", type=int, default=100, help="steps between log lines")
    p.add_argument(
        "--timeout", type=float, default=600, help="seconds a collective may wait for a rank"
    )
    return p.parse_args(argv)


def fail(rank: int, message: str) -> None:
    """Every rank reaches its checks before any collective: each one says why and exits."""
    print(f"[rank {rank}] error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


def check_launch(args, rank: int, world: int) -> torch.device:
    """Validate the arguments against the launch; return this rank's device."""
    if args.global_batch < 1:
        fail(
            rank,
            f"--global-batch must be a positive number of sentences, got {args.global_batch}",
        )
    if args.global_batch % world != 0:
        fail(
            rank,
            f"--global-batch {args.global_batch} is not divisible by the world size {world} "
            f"(processes started by torchrun): every rank takes an equal slice of each batch, "
            f"so use a positive multiple of {world}",
        )
    if args.steps < 1 or not 0 <= args.warmup <= args.steps:
        fail(
            rank,
            f"expected --steps >= 1 and 0 <= --warmup <= --steps, got {args.steps}, {args.warmup}",
        )
    if args.log_every < 1:
        fail(rank, f"--log-every must be at least 1, got {args.log_every}")
    if args.ckpt_every < 0:
        fail(rank, f"--ckpt-every must be at least 1 (or 0: never), got {args.ckpt_every}")
    if args.val_sentences < 1:
        fail(rank, f"--val-sentences must be at least 1, got {args.val_sentences}")
    if args.timeout <= 0:
        fail(rank, f"--timeout must be positive, got {args.timeout}")
    if args.kill_after_step is not None and not 1 <= args.kill_after_step < args.steps:
        fail(rank, f"expected 1 <= --kill-after-step < --steps, got {args.kill_after_step}")
    if args.resume is not None and not (args.resume / CHECKPOINT).is_file():
        fail(rank, f"--resume {args.resume}: no {CHECKPOINT} there")
    cuda = torch.cuda.is_available()
    if args.device == "cuda" and not cuda:
        fail(rank, "--device cuda, but PyTorch sees no CUDA GPU")
    if args.device == "cpu" or not cuda:
        return torch.device("cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if local_rank >= torch.cuda.device_count():
        fail(
            rank,
            f"local rank {local_rank} has no GPU: this node has "
            f"{torch.cuda.device_count()}; start at most that many processes per node",
        )
    return torch.device("cuda", local_rank)


def find_checkpoint(args, rank: int, device) -> Path | None:
    """The checkpoint to continue from: OUT's own (a restart), else --resume's, else None.

    OUT/checkpoint.pt comes first, so that a job torchrun restarts (``--max-restarts``)
    continues from its latest checkpoint even if it was first launched with --resume.
    Every rank must see the same files: a rank that did not (a folder that is not on a
    shared file system) would start from another step and wait forever for the others, so
    the ranks compare what they found (one all-reduce) and all stop if they disagree.
    """
    own = args.out / CHECKPOINT
    path = own if own.is_file() else None
    if path is None and args.resume is not None:
        path = args.resume / CHECKPOINT  # check_launch made sure it exists
    found = torch.tensor([path == own, path is not None], dtype=torch.int64, device=device)
    lowest, highest = found.clone(), found.clone()
    dist.all_reduce(lowest, op=dist.ReduceOp.MIN)
    dist.all_reduce(highest, op=dist.ReduceOp.MAX)
    if not torch.equal(lowest, highest):
        fail(
            rank,
            f"the ranks do not see the same checkpoint (this one: {path}): put --out "
            "and --resume on a file system that every machine shares",
        )
    return path


def batch_seed(seed: int, step: int) -> int:
    return TRAIN_SEED + step + SEED_STRIDE * seed


def local_batch(lang, vocab, args, step: int, rank: int, world: int):
    """This rank's slice of the global batch of ``step``: inputs, targets (B / N, T).

    Every rank draws the same global batch from the stream and keeps rows
    rank * B/N .. (rank + 1) * B/N - 1. Under --compile every batch is padded to the full
    context, so the compiled graph always sees one shape.
    """
    sentences = lang.sample(args.global_batch, seed=batch_seed(args.seed, step))
    share = args.global_batch // world
    mine = sentences[rank * share : (rank + 1) * share]
    length = args.max_len + 1 if args.compile else None
    ids = vocab.batch(mine, bos=True, eos=True, length=length)  # (B / N, T + 1)
    return ids[:, :-1], ids[:, 1:]


def adamw(model: nn.Module, args) -> torch.optim.AdamW:
    """Chapter 5's optimiser (betas 0.9, 0.98); decay, if any, on matrices only."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98))


@torch.no_grad()
def validation_loss(model, lang, vocab, n: int, device) -> float:
    """Chapter 5's validation loss: mean per real target over ``n`` sentences (fp32)."""
    ids = vocab.batch(lang.sample(n, seed=VAL_SEED), bos=True, eos=True).to(device)
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for chunk in ids.split(1000):
        inputs, targets = chunk[:, :-1], chunk[:, 1:]
        real = int((targets != vocab.pad_id).sum())
        total += lm_loss(model(inputs).float(), targets, vocab.pad_id).item() * real
        count += real
    model.train(was_training)
    return total / count


def save_atomically(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def main(argv=None) -> int:
    args = parse_args(argv)
    launched = "RANK" in os.environ  # torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    device = check_launch(args, rank, world)  # may exit: before any collective

    backend = "nccl" if device.type == "cuda" else "gloo"
    timeout = datetime.timedelta(seconds=args.timeout)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if launched:
        dist.init_process_group(backend, timeout=timeout)
    else:  # plain `python scripts/train_ddp.py`: a group of one
        dist.init_process_group(
            backend, store=dist.HashStore(), rank=0, world_size=1, timeout=timeout
        )

    lang = ToyLanguage()
    vocab = Vocab(lang.words)
    set_seed(args.seed)
    model = build_model(len(vocab), args).to(device)  # the same weights on every rank
    if args.dtype == "fp64":
        model = model.double()
    optimizer = adamw(model, args)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, args.warmup, args.steps, args.min_lr_ratio)
    )
    settings = {key: getattr(args, key) for key in RUN_SETTINGS}
    start_step, resumed_from = 0, None
    source = find_checkpoint(args, rank, device)  # the same answer on every rank
    if source is not None:
        state = torch.load(source, map_location=device, weights_only=True)
        different = {
            k: (state["settings"].get(k), v)
            for k, v in settings.items()
            if state["settings"].get(k) != v
        }
        if different:  # every rank read the same file, so every rank stops here
            fail(
                rank,
                f"{source} was made with other settings (checkpoint, now): {different}; "
                "resume with the same settings, or train into another --out",
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_step = resumed_from = state["step"]

    # DDP broadcasts rank 0's parameters, then all-reduces gradients during backward.
    ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(ddp_model) if args.compile else ddp_model
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()
    )
    out = args.out
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"{world} process(es) on {device.type} ({backend}), global batch "
            f"{args.global_batch} ({args.global_batch // world} per rank), {n_params:,} "
            f"parameters, steps {start_step}..{args.steps}",
            flush=True,
        )

    def checkpoint(step: int) -> None:
        if rank == 0:
            state = {
                "step": step,
                "settings": settings,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
            }
            save_atomically(state, out / CHECKPOINT)
        dist.barrier()  # nobody moves on (or exits) before the file is complete

    def now() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    model.train()
    window_loss = torch.zeros(2, dtype=torch.float64, device=device)  # token-loss sum, tokens
    tokens_seen, last_loss, last_window, logged = 0, None, 0, start_step
    clip = args.grad_clip if args.grad_clip > 0 else math.inf
    # Throughput is timed from the end of this launch's first step (which compiles, under
    # --compile, and warms up), and checkpoint writes are left out: the training's speed.
    timed_tokens = torch.zeros((), dtype=torch.int64, device=device)
    timed_steps, checkpoint_s, timer = 0, 0.0, None
    started = time.perf_counter()
    for step in range(start_step, args.steps):
        inputs, targets = local_batch(lang, vocab, args, step, rank, world)
        inputs, targets = inputs.to(device), targets.to(device)
        n_local = (targets != vocab.pad_id).sum()
        n_global = n_local.clone()
        dist.all_reduce(n_global)  # real targets in the whole global batch
        with autocast:
            logits = forward(inputs)  # (B / N, T, V)
        if args.dtype == "bf16":
            logits = logits.float()  # the loss in fp32
        mean_local = lm_loss(logits, targets, vocab.pad_id)  # over this rank's tokens
        # sum over this rank's tokens / all tokens, times N: DDP's mean over the N ranks
        # then gives the gradient of the mean over every token of the global batch.
        loss = mean_local * n_local / n_global * world
        if timer is not None:
            timed_tokens += n_global
            timed_steps += 1
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # DDP all-reduces (averages) the gradients here, bucket by bucket
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        scheduler.step()

        window_loss += torch.stack([mean_local.detach().double() * n_local, n_local.double()])
        done = step + 1
        if done % args.log_every == 0 or done == args.steps:
            dist.all_reduce(window_loss)
            last_loss = (window_loss[0] / window_loss[1]).item()
            last_window, logged = done - logged, done
            tokens_seen += int(window_loss[1].item())
            window_loss.zero_()
            if rank == 0:
                print(
                    f"step {done}/{args.steps} | loss {last_loss:.4f} | lr "
                    f"{scheduler.get_last_lr()[0]:.2e}",
                    flush=True,
                )
        if (args.ckpt_every and done % args.ckpt_every == 0) or done == args.kill_after_step:
            before = now() if timer is not None else 0.0
            checkpoint(done)
            checkpoint_s += now() - before if timer is not None else 0.0
        if timer is None:
            timer = now()  # the first step is done
        if done == args.kill_after_step:
            if rank == 0:
                print(f"--kill-after-step {done}: exiting with status {KILLED}", flush=True)
            dist.destroy_process_group()
            return KILLED
    dist.all_reduce(window_loss)  # what is left of the last window (nothing if it was logged)
    tokens_seen += int(window_loss[1].item())
    ended = now()
    total_s = ended - started
    seconds = ended - timer - checkpoint_s if timer is not None else 0.0
    timed = int(timed_tokens.item())

    if rank == 0:
        torch.save(model.state_dict(), out / "final.pt")
        val = validation_loss(model, lang, vocab, args.val_sentences, device)
        limit = lang.entropy_per_token()
        result = {
            "steps": args.steps,
            "world_size": world,
            "global_batch": args.global_batch,
            "per_rank_batch": args.global_batch // world,
            "seed": args.seed,
            "device": device.type,
            "backend": backend,
            "dtype": args.dtype,
            "compile": args.compile,
            "resumed_from_step": resumed_from,
            "final_train_loss": last_loss,  # over every token of the last log window
            "final_train_loss_steps": last_window,
            "val_sentences": args.val_sentences,
            "val_loss": val,
            "entropy_limit": limit,
            "val_over_limit": val / limit,
            "tokens": tokens_seen,  # real target tokens trained on in this launch
            "seconds_total": total_s,  # every step of this launch, checkpoints included
            # the speed: steps after the first, checkpoint writes left out
            "timed_steps": timed_steps,
            "timed_tokens": timed,
            "seconds": seconds,
            "tokens_per_s": timed / seconds if timed_steps and seconds > 0 else None,
            "settings": settings,
        }
        (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        loss_text = "-" if last_loss is None else f"{last_loss:.4f}"
        speed = result["tokens_per_s"] or 0.0
        print(
            f"final train loss {loss_text}, validation loss {val:.4f} = "
            f"{val / limit:.4f} x the entropy limit; {speed:.0f} tokens/s; "
            f"wrote {out / 'final.pt'}",
            flush=True,
        )
    dist.barrier()
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
