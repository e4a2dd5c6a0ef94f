"""Training speed of Chapter 5's decoder in float32, under bfloat16 autocast, and compiled.

Three ways to run the same training, each from the same initial weights on the same batches:

- ``fp32``: eager PyTorch in float32 (the course's way);
- ``bf16``: the same, with the forward pass under ``torch.autocast(dtype=torch.bfloat16)``:
  matrix products in bfloat16, weights, gradients and optimiser state still float32, the
  loss computed in float32;
- ``compile``: float32, the model wrapped in ``torch.compile`` (the first step compiles it;
  that time is recorded separately and not counted in the throughput). Compiling with the
  default backend (inductor) took about 8 s in the stored run (results/mixed_precision.json,
  ``first_step_s``: two threads, on a two-core CPU with a load average near 1.5) and up to
  two minutes in earlier runs on the same machine under heavy load; ``--quick`` uses the
  ``aot_eager`` backend instead: it traces the same graphs but generates no code,
  which smoke-tests the script in seconds and says nothing about speed.

A training step is forward, cross-entropy loss, backward, gradient clipping and an AdamW
update at Chapter 5's learning rate (warmup, then cosine decay). Every batch holds 64 fresh
sentences, padded to the full context so that the compiled model sees one shape. After a few
untimed steps, timed rounds of the three are interleaved, A B C A B C ..., in one process.
Throughput counts the real (non-padding) target tokens per second. Ratios are against
``fp32``: ``median_round_ratio_vs_fp32``, the median over rounds of (this variant's speed /
fp32's speed in the same round), compares each variant with the fp32 run next to it in
time, so it is the ratio to read on a busy machine, where the speed of the whole machine
drifts from round to round; ``ratio_vs_fp32`` (the ratio of the two medians) is kept for
reference. ``round_spread`` records the quartiles and extremes of both, and
``load_average`` the machine's load (``os.getloadavg()``) at the start and the end: a load
above the number of cores means other work competed for the processor. After the last
step each model's validation loss (float32, on 2000 sentences of Chapter 5's validation
set) shows what the cheaper arithmetic cost in accuracy: ``loss_diff_vs_fp32`` is that loss
minus the float32 model's.

Run: ``python benchmarks/mixed_precision.py [--quick] [--out DIR] [--rounds R]
[--steps-per-round S] [--untimed U]`` (defaults: 20 rounds of 10 steps after 5 untimed
ones; fewer make a shorter run on a slow machine, and the JSON records what was run). The
stored results/mixed_precision.json is a default run at torch's default two threads on a
two-core CPU with little other load (float32: 41,338 tokens/s); earlier runs on the same
machine under heavy load measured as little as 222 tokens/s, which is why the paired ratios,
not the absolute speeds, are the numbers to compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from common import RESULTS, log, pick_device, synchronize, write_json
from torch import nn

from tinyformer.config import TransformerConfig
from tinyformer.decoder import DecoderLM
from tinyformer.language import ToyLanguage
from tinyformer.objectives import lm_loss
from tinyformer.train import warmup_cosine
from tinyformer.vocab import Vocab

CONFIG = dict(d_model=64, n_heads=4, n_layers=2, d_ff=256, max_len=17)  # Chapter 5
BATCH, LR, SEED = 64, 1e-2, 0
TRAIN_SEED, VAL_SEED, VAL_SENTENCES = 1000, 1_000_000, 2000  # Chapter 5's seeds
VARIANTS = ("fp32", "bf16", "compile")


def build_model(vocab_size: int) -> nn.Module:
    """Chapter 5's DecoderLM (learned positions, pre-LN, untied LM head)."""
    return DecoderLM(TransformerConfig(vocab_size=vocab_size, tie_weights=False, **CONFIG))


class Run:
    """One way of training: its own model, optimiser and schedule, stepped on demand."""

    def __init__(self, variant, vocab_size, total_steps, warmup, device, batches, backend):
        torch.manual_seed(SEED)
        self.model = build_model(vocab_size).to(device)  # the same weights for every variant
        compiled = variant == "compile"
        self.forward = torch.compile(self.model, backend=backend) if compiled else self.model
        self.autocast = (
            torch.autocast(device.type, dtype=torch.bfloat16)
            if variant == "bf16"
            else nullcontext()
        )
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=LR, betas=(0.9, 0.98))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: warmup_cosine(s, warmup, total_steps, 0.0)
        )
        self.batches, self.step_index = batches, 0
        self.losses: list[float] = []

    def step(self) -> None:
        inputs, targets, pad_id = self.batches(self.step_index)
        with self.autocast:
            logits = self.forward(inputs)  # (B, T, V)
        loss = lm_loss(logits.float(), targets, pad_id)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.scheduler.step()
        self.losses.append(loss.detach())
        self.step_index += 1


def parse_args() -> argparse.Namespace:
    """common.parse_args's ``--quick`` and ``--out``, and the length of the timed run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a smoke test: 2 rounds of 3 steps, no codegen"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS,
        help=f"folder for the JSON result (default: {RESULTS})",
    )
    parser.add_argument("--rounds", type=int, help="timed rounds (default 20; quick: 2)")
    parser.add_argument(
        "--steps-per-round", type=int, help="steps per round (default 10; quick: 3)"
    )
    parser.add_argument("--untimed", type=int, help="untimed first steps (default 5; quick: 2)")
    args = parser.parse_args()
    defaults = (2, 2, 3) if args.quick else (5, 20, 10)
    for name, default in zip(("untimed", "rounds", "steps_per_round"), defaults, strict=True):
        value = getattr(args, name)
        if value is None:
            setattr(args, name, default)
        elif value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    return args


def spread(values: list[float]) -> dict:
    """Smallest, quartiles and largest of the rounds' values."""
    q1, median, q3 = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return {"min": min(values), "q1": q1, "median": median, "q3": q3, "max": max(values)}


def load_average() -> list[float] | None:
    """Runnable processes averaged over 1, 5 and 15 minutes (None where unknown)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def main() -> None:
    args = parse_args()
    device = pick_device()
    load_at_start = load_average()
    untimed, rounds, steps_per_round = args.untimed, args.rounds, args.steps_per_round
    total = untimed + rounds * steps_per_round
    warmup = max(1, total // 10)

    lang = ToyLanguage()
    vocab = Vocab(lang.words)
    cache = {}

    def batches(step: int):
        """Chapter 5's batch of ``step`` (64 sentences), padded to the full context."""
        if step not in cache:
            sentences = lang.sample(BATCH, seed=TRAIN_SEED + step)
            ids = vocab.batch(sentences, bos=True, eos=True, length=CONFIG["max_len"] + 1)
            cache[step] = (ids[:, :-1].to(device), ids[:, 1:].to(device), vocab.pad_id)
        return cache[step]

    tokens = [int((batches(s)[1] != vocab.pad_id).sum()) for s in range(total)]
    backend = "aot_eager" if args.quick else "inductor"
    runs = {v: Run(v, len(vocab), total, warmup, device, batches, backend) for v in VARIANTS}

    first_step_s = {}
    for name, run in runs.items():
        synchronize(device)
        start = time.perf_counter()
        run.step()  # the compiled model compiles here
        synchronize(device)
        first_step_s[name] = time.perf_counter() - start
        for _ in range(untimed - 1):
            run.step()
        log(f"{name:8s} first step {first_step_s[name]:.2f} s")

    per_round = {name: [] for name in runs}  # tokens/s of each round
    for r in range(rounds):  # A B C A B C ...
        first = untimed + r * steps_per_round
        round_tokens = sum(tokens[first : first + steps_per_round])
        for name, run in runs.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps_per_round):
                run.step()
            synchronize(device)
            per_round[name].append(round_tokens / (time.perf_counter() - start))
        if (r + 1) % 5 == 0 or r + 1 == rounds:
            log(f"round {r + 1}/{rounds}")

    val_ids = vocab.batch(lang.sample(VAL_SENTENCES, seed=VAL_SEED), bos=True, eos=True)
    val_ids = val_ids.to(device)
    results = {}
    for name, run in runs.items():
        run.model.eval()
        with torch.no_grad():
            logits = torch.cat([run.model(chunk) for chunk in val_ids[:, :-1].split(1000)])
            val = lm_loss(logits, val_ids[:, 1:], vocab.pad_id).item()
        results[name] = {
            "tokens_per_s": statistics.median(per_round[name]),
            "tokens_per_s_rounds": per_round[name],
            "first_step_s": first_step_s[name],
            "final_train_loss": run.losses[-1].item(),
            "val_loss": val,
        }
    base = results["fp32"]
    for name, row in results.items():
        round_ratios = [a / b for a, b in zip(per_round[name], per_round["fp32"], strict=True)]
        row["ratio_vs_fp32"] = row["tokens_per_s"] / base["tokens_per_s"]
        row["median_round_ratio_vs_fp32"] = statistics.median(round_ratios)
        row["round_ratios_vs_fp32"] = round_ratios
        row["round_spread"] = {
            "tokens_per_s": spread(per_round[name]),
            "ratio_vs_fp32": spread(round_ratios),
        }
        row["loss_diff_vs_fp32"] = row["val_loss"] - base["val_loss"]
        log(
            f"{name:8s} {row['tokens_per_s']:9.0f} tok/s  paired x"
            f"{row['median_round_ratio_vs_fp32']:.2f} (rounds "
            f"{min(round_ratios):.2f}..{max(round_ratios):.2f})  "
            f"val loss {row['val_loss']:.4f} ({row['loss_diff_vs_fp32']:+.4f})"
        )
    load_at_end = load_average()
    log(f"load average (1, 5, 15 min): start {load_at_start}, end {load_at_end}")

    write_json(
        "mixed_precision",
        {
            "quick": args.quick,
            "what": "training steps of Chapter 5's decoder per second (real target tokens/s): "
            "eager float32, bfloat16 autocast, torch.compile (float32); validation loss after "
            "the same steps",
            "setup": {
                "model": CONFIG,
                "tie_weights": False,
                "batch": BATCH,
                "padded_length": CONFIG["max_len"],
                "lr": LR,
                "warmup": warmup,
                "steps": total,
                "untimed_steps": untimed,
                "rounds": rounds,
                "steps_per_round": steps_per_round,
                "val_sentences": VAL_SENTENCES,
                "order": "interleaved: fp32, bf16, compile, fp32, ...",
                "compile_backend": backend,
                "device": device.type,
            },
            "load_average": {
                "what": "os.getloadavg(): runnable processes over 1, 5, 15 minutes",
                "cores": os.cpu_count(),
                "start": load_at_start,
                "end": load_at_end,
            },
            "results": results,
        },
        args.out,
        device,
    )


if __name__ == "__main__":
    main()
