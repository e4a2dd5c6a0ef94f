"""Shared helpers for the tests: where the repository is, what its config says."""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"


@functools.cache
def book_config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


@functools.cache
def toc_files() -> list[str]:
    """Every file listed in _toc.yml (root first), as repository-relative paths without suffix."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections", []))

    for part in toc.get("parts", []):
        walk(part.get("chapters", []))
    walk(toc.get("chapters", []))
    return files


def notebooks() -> list[Path]:
    """Every committed chapter notebook under book/."""
    return sorted(p for p in BOOK.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


# --- small models for the package tests -------------------------------------------------------
# Every model test builds its models here, so a change of constructor is made in one place.

import torch  # noqa: E402

from tinyformer.blocks import TransformerBlock  # noqa: E402
from tinyformer.config import TransformerConfig  # noqa: E402
from tinyformer.decoder import DecoderLM  # noqa: E402
from tinyformer.encoder import MaskedLM  # noqa: E402
from tinyformer.seq2seq import EncoderDecoder  # noqa: E402
from tinyformer.stack import TransformerStack  # noqa: E402

SMALL = dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, max_len=12)


def small_config(vocab_size: int = 11, **overrides) -> TransformerConfig:
    """A small TransformerConfig: the SMALL sizes, with ``overrides``."""
    return TransformerConfig(vocab_size=vocab_size, **{**SMALL, **overrides})


def make_lm(vocab_size: int = 11, seed: int | None = 0, **overrides) -> DecoderLM:
    """A small DecoderLM; seed=None leaves torch's RNG as the caller set it."""
    if seed is not None:
        torch.manual_seed(seed)
    return DecoderLM(small_config(vocab_size, **overrides))


def make_encoder(vocab_size: int = 11, seed: int = 0, **overrides) -> TransformerStack:
    torch.manual_seed(seed)
    return TransformerStack(small_config(vocab_size, **overrides), causal=False)


def make_mlm(vocab_size: int = 11, seed: int = 0, **overrides) -> MaskedLM:
    torch.manual_seed(seed)
    return MaskedLM(small_config(vocab_size, **overrides))


def make_seq2seq(
    src_vocab_size: int = 13, tgt_vocab_size: int = 11, seed: int = 0, **overrides
) -> EncoderDecoder:
    torch.manual_seed(seed)
    return EncoderDecoder(small_config(tgt_vocab_size, src_vocab_size=src_vocab_size, **overrides))


def make_block(seed: int = 0, d_model: int = 16, n_heads: int = 2, d_ff: int = 32, **kwargs):
    torch.manual_seed(seed)
    return TransformerBlock(d_model, n_heads, d_ff, **kwargs)


@torch.no_grad()
def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """PyTorch leaves biases and LayerNorm affines at 0/1: give every parameter random
    values around its kind's centre, so that every copied tensor is tested."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        centre = 1.0 if "norm" in name and name.endswith("weight") else 0.0
        p.copy_(centre + 0.3 * torch.randn(p.shape, generator=g))
    return module


def probe(*shape: int, seed: int = 3) -> torch.Tensor:
    """A fixed random direction: LayerNorm makes plain sums of outputs constant, so tests
    dot outputs with this instead."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def attend(module: torch.nn.Module, *args, return_weights: bool = True, **kwargs):
    """Call a MultiHeadAttention; with return_weights, inside record_attention, so that it
    runs the written-out attention, and return ``(out, weights)`` as the module saw them."""
    from tinyformer.attention import record_attention

    if not return_weights:
        return module(*args, **kwargs)
    with record_attention(module) as maps:
        out = module(*args, **kwargs)
    return out, maps[""]
