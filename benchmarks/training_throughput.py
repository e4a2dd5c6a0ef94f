"""Training speed of tinyformer's EncoderDecoder against torch.nn.Transformer of the same size.

Both models are the same function: pre-LN, ReLU, dropout 0, learned positions, separate
(untied) source and target embeddings and output layer. The torch model is
``nn.Transformer`` wrapped in the same embeddings and output layer, and starts from the
same weights (copied with ``tinyformer.torch_bridge.load_transformer_from_torch``; the script
checks that both give the same logits). Both get the same masks: a causal mask on the
target and a key-padding mask built from the source.

A training step is forward, cross-entropy loss, backward and an AdamW update. The two
models' timed rounds are interleaved, A B A B ..., in one process, so a machine that
slows down or speeds up during the run affects both alike. Throughput counts target tokens
(the positions the loss is computed on) per second; the result is the ratio
tinyformer / torch per model size (1.0 = as fast; the course's target is >= 0.9).

Run: ``python benchmarks/training_throughput.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings

import torch
import torch.nn.functional as F
from common import log, parse_args, pick_device, synchronize, write_json
from torch import nn

from tinyformer.config import TransformerConfig
from tinyformer.seq2seq import EncoderDecoder
from tinyformer.torch_bridge import load_transformer_from_torch

VOCAB = 64  # source and target vocabulary sizes (id 0 is the padding token)
BATCH, SRC_LEN, TGT_LEN, MAX_LEN = 32, 24, 24, 32
CONFIGS = (
    {"d_model": 64, "n_heads": 4, "n_encoder_layers": 2, "n_decoder_layers": 2, "d_ff": 256},
    {"d_model": 128, "n_heads": 4, "n_encoder_layers": 2, "n_decoder_layers": 2, "d_ff": 512},
)


class TorchSeq2Seq(nn.Module):
    """``nn.Transformer`` inside the embeddings and output layer of our EncoderDecoder."""

    def __init__(self, d_model, n_heads, n_encoder_layers, n_decoder_layers, d_ff):
        super().__init__()
        self.d_model = d_model
        self.src_emb = nn.Embedding(VOCAB, d_model)
        self.src_pos = nn.Parameter(torch.randn(MAX_LEN, d_model))
        self.tgt_emb = nn.Embedding(VOCAB, d_model)
        self.tgt_pos = nn.Parameter(torch.randn(MAX_LEN, d_model))
        with warnings.catch_warnings():
            # "enable_nested_tensor is True, but ... norm_first was True": the nested-tensor
            # fast path is for inference only, and training never takes it anyway.
            warnings.filterwarnings("ignore", message="enable_nested_tensor")
            self.transformer = nn.Transformer(
                d_model,
                n_heads,
                n_encoder_layers,
                n_decoder_layers,
                d_ff,
                dropout=0.0,
                batch_first=True,
                norm_first=True,
            )
        self.lm_head = nn.Linear(d_model, VOCAB, bias=False)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        """src (B, S), tgt_in (B, T) long -> logits (B, T, V)."""
        S, T = src.shape[1], tgt_in.shape[1]
        scale = math.sqrt(self.d_model)  # as tinyformer's TokenEmbedding
        x_src = self.src_emb(src) * scale + self.src_pos[:S]
        x_tgt = self.tgt_emb(tgt_in) * scale + self.tgt_pos[:T]
        # PyTorch's masks say True = blocked (tinyformer's say True = may attend).
        causal = torch.ones(T, T, dtype=torch.bool, device=src.device).triu(1)
        pad = src == 0  # (B, S)
        h = self.transformer(
            x_src,
            x_tgt,
            tgt_mask=causal,
            src_key_padding_mask=pad,
            memory_key_padding_mask=pad,
            tgt_is_causal=True,
        )
        return self.lm_head(h)


def build_pair(config: dict, device: torch.device):
    """tinyformer's model and the torch model, holding the same weights."""
    ours = EncoderDecoder(
        TransformerConfig(
            vocab_size=VOCAB,
            src_vocab_size=VOCAB,
            d_model=config["d_model"],
            n_heads=config["n_heads"],
            n_layers=config["n_decoder_layers"],
            n_encoder_layers=config["n_encoder_layers"],
            d_ff=config["d_ff"],
            max_len=MAX_LEN,
            dropout=0.0,
            norm_first=True,
            positional="learned",
            pad_id=0,
            tie_weights=False,
            activation="relu",
        )
    )
    theirs = TorchSeq2Seq(**config)
    load_transformer_from_torch(ours, theirs.transformer)
    with torch.no_grad():
        theirs.src_emb.weight.copy_(ours.encoder.tok_emb.weight)
        theirs.src_pos.copy_(ours.encoder.pos.weight)
        theirs.tgt_emb.weight.copy_(ours.decoder.tok_emb.weight)
        theirs.tgt_pos.copy_(ours.decoder.pos.weight)
        theirs.lm_head.weight.copy_(ours.lm_head.weight)
    return ours.to(device), theirs.to(device)


def make_step(model: nn.Module, batch):
    """One training step: forward, loss, backward, AdamW update."""
    src, tgt_in, tgt_out = batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(src, tgt_in)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt_out.reshape(-1))
        loss.backward()
        optimizer.step()

    return step


def timed_round(step, steps: int, device: torch.device) -> float:
    """Seconds per step, over ``steps`` consecutive steps."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - start) / steps


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = pick_device()
    rounds, steps_per_round, warmup = (3, 2, 1) if args.quick else (15, 5, 3)

    results = []
    for config in CONFIGS:
        torch.manual_seed(0)
        ours, theirs = build_pair(config, device)
        n_ours = sum(p.numel() for p in ours.parameters())
        n_theirs = sum(p.numel() for p in theirs.parameters())
        g = torch.Generator().manual_seed(1)
        src = torch.randint(1, VOCAB, (BATCH, SRC_LEN), generator=g)
        tgt = torch.randint(1, VOCAB, (BATCH, TGT_LEN + 1), generator=g)
        batch = (src.to(device), tgt[:, :-1].to(device), tgt[:, 1:].to(device))
        with torch.no_grad():
            diff = float((ours(*batch[:2]) - theirs(*batch[:2])).abs().max())

        steps = {"tinyformer": make_step(ours, batch), "torch": make_step(theirs, batch)}
        for step in steps.values():
            for _ in range(warmup):
                step()
        per_step = {name: [] for name in steps}
        for _ in range(rounds):  # A B A B ...
            for name, step in steps.items():
                per_step[name].append(timed_round(step, steps_per_round, device))

        tokens = BATCH * TGT_LEN
        medians = {name: statistics.median(times) for name, times in per_step.items()}
        tokens_per_s = {name: tokens / seconds for name, seconds in medians.items()}
        ratio = tokens_per_s["tinyformer"] / tokens_per_s["torch"]
        # Ratio within each round (adjacent A and B), robust to drift across the run.
        round_ratios = [
            b / a for a, b in zip(per_step["tinyformer"], per_step["torch"], strict=True)
        ]
        log(
            f"d_model={config['d_model']:4d}: tinyformer {tokens_per_s['tinyformer']:9.0f} tok/s, "
            f"torch {tokens_per_s['torch']:9.0f} tok/s, ratio {ratio:.3f}"
        )
        results.append(
            {
                "config": config,
                "parameters": {"tinyformer": n_ours, "torch": n_theirs},
                "max_abs_logit_diff_at_start": diff,
                "seconds_per_step": per_step,
                "median_seconds_per_step": medians,
                "tokens_per_s": tokens_per_s,
                "ratio_tinyformer_over_torch": ratio,
                "median_round_ratio": statistics.median(round_ratios),
            }
        )

    write_json(
        "training_throughput",
        {
            "quick": args.quick,
            "what": "training steps (forward, loss, backward, AdamW) per second, as target tokens/s",
            "setup": {
                "batch": BATCH,
                "src_len": SRC_LEN,
                "tgt_len": TGT_LEN,
                "vocab": VOCAB,
                "max_len": MAX_LEN,
                "dropout": 0.0,
                "norm_first": True,
                "rounds": rounds,
                "steps_per_round": steps_per_round,
                "warmup_steps": warmup,
                "order": "interleaved: tinyformer, torch, tinyformer, torch, ...",
                "device": device.type,
            },
            "target_ratio": 0.9,
            "results": results,
        },
        args.out,
        device,
    )


if __name__ == "__main__":
    main()
