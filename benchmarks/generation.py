"""Generation speed with and without the KV cache, for two decoder-only models.

``tinyformer.decode.generate`` continues a one-token prompt by N new tokens (batch 1,
sampling at temperature 1 from a generator seeded afresh for every run), three ways:

- ``cache``: ``use_cache=True``, the package's simple ``KVCache`` (``torch.cat`` at every
  step): one new token per step through every layer, attending over the cached keys and
  values;
- ``buffered``: ``generate`` given a cache of ``tinyformer.fast.BufferedKVCache``, one per
  layer (its ``cache`` argument), which writes
  each new key and value into a buffer that doubles when full instead of copying;
- ``no_cache``: ``use_cache=False``, the whole prefix through every layer at every step.

All three must produce the same tokens; the script records whether they did. Models, with
random weights:

- ``chapter5``: the language model of Chapter 5, ``TransformerConfig(V, d_model=64,
  n_heads=4, n_layers=2, d_ff=256, tie_weights=False)`` over the toy language's vocabulary;
- ``baby_gpt``: nanoGPT's "baby GPT" shape, 6 layers, 6 heads, d_model 384, d_ff 1536,
  over a 65-token vocabulary.

Reported: new tokens per second each way and the ratios to ``no_cache`` per N. The
course's target is a ratio of at least 5 for ``baby_gpt`` at N = 256 on a CPU.

Also per model, what bounds a cached step from below (``weight_reading``): with one new
position, every weight matrix is read once for a single matrix-vector product. The script
times all the model's ``nn.Linear`` layers applied to one position, and, for comparison, a
plain sum over a tensor of as many bytes, which shows how fast this machine can read them.

Run: ``python benchmarks/generation.py [--quick] [--out DIR]``.
"""

from __future__ import annotations

import torch
from common import log, measure, parse_args, pick_device, write_json

from tinyformer.config import TransformerConfig
from tinyformer.decode import generate
from tinyformer.decoder import DecoderLM
from tinyformer.fast import BufferedKVCache
from tinyformer.language import ToyLanguage
from tinyformer.vocab import Vocab

NEW_TOKENS = (64, 256, 1024)
QUICK_NEW_TOKENS = (16, 32)
SEED = 0
WAYS = ("cache", "buffered", "no_cache")


def models(max_len: int) -> dict:
    """The two model shapes, as keyword arguments of TransformerConfig."""
    toy_vocab = len(Vocab(ToyLanguage().words))
    return {
        "chapter5": dict(
            vocab_size=toy_vocab,
            d_model=64,
            n_heads=4,
            n_layers=2,
            d_ff=256,
            max_len=max_len,
            tie_weights=False,
        ),
        "baby_gpt": dict(
            vocab_size=65, d_model=384, n_heads=6, n_layers=6, d_ff=1536, max_len=max_len
        ),
    }


def weight_reading(model: torch.nn.Module, device: torch.device, budget: float) -> dict:
    """Time the matrix-vector products of one cached step, and a sum over as many bytes.

    Every ``nn.Linear`` of the model gets one position, (1, 1, in_features), as in a cached
    generation step of batch 1: the products read each weight matrix once, whatever they
    compute. ``sum_s`` times ``torch.sum`` over a fresh float tensor of the same size, a
    plain read of that many bytes.
    """
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(1, 1, m.in_features, device=device) for m in linears]
    weight_bytes = sum(m.weight.numel() * m.weight.element_size() for m in linears)
    flat = torch.randn(weight_bytes // 4, device=device)  # float32: the same number of bytes

    def matvecs():
        for linear, x in zip(linears, inputs, strict=True):
            linear(x)

    with torch.inference_mode():
        matvec = measure(matvecs, device, repeats=7, budget=budget)
        read = measure(flat.sum, device, repeats=7, budget=budget)
    return {
        "linear_layers": len(linears),
        "weight_bytes": weight_bytes,
        "matvec_s": matvec["median_s"],
        "sum_s": read["median_s"],
        "matvec_gb_per_s": weight_bytes / matvec["median_s"] / 1e9,
        "sum_gb_per_s": weight_bytes / read["median_s"] / 1e9,
    }


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = pick_device()
    new_tokens = QUICK_NEW_TOKENS if args.quick else NEW_TOKENS
    repeats, budget = (2, 5.0) if args.quick else (3, 30.0)
    max_len = 1 + max(new_tokens)  # the prompt's token plus every new one

    results = {}
    for name, config in models(max_len).items():
        torch.manual_seed(0)
        model = DecoderLM(TransformerConfig(**config)).to(device).eval()
        prompt = torch.zeros(1, 1, dtype=torch.long, device=device)  # one token, id 0

        def run(n: int, way: str, model=model, prompt=prompt) -> torch.Tensor:
            generator = torch.Generator().manual_seed(SEED)  # the same draws every run
            if way == "buffered":
                cache = [BufferedKVCache() for _ in model.decoder.blocks]
                return generate(model, prompt, n, generator=generator, cache=cache)
            return generate(model, prompt, n, generator=generator, use_cache=way == "cache")

        for way in WAYS:  # warm up every code path
            run(8, way)

        rows = []
        for n in new_tokens:
            outputs, timings = {}, {}
            for way in WAYS:

                def step(n=n, way=way, outputs=outputs):
                    outputs[way] = run(n, way)

                timings[way] = measure(step, device, repeats=repeats, warmup=0, budget=budget)
            identical = all(torch.equal(outputs[way], outputs["no_cache"]) for way in WAYS)
            tokens_per_s = {way: n / t["median_s"] for way, t in timings.items()}
            speedup = tokens_per_s["cache"] / tokens_per_s["no_cache"]
            speedup_buffered = tokens_per_s["buffered"] / tokens_per_s["no_cache"]
            log(
                f"{name:8s} N={n:5d}: cache {tokens_per_s['cache']:9.1f} tok/s, "
                f"buffered {tokens_per_s['buffered']:9.1f} tok/s, "
                f"no cache {tokens_per_s['no_cache']:9.1f} tok/s, ratios {speedup:6.2f} "
                f"and {speedup_buffered:6.2f}, identical {identical}"
            )
            rows.append(
                {
                    "new_tokens": n,
                    "identical": identical,
                    "median_s": {key: t["median_s"] for key, t in timings.items()},
                    "runs": {key: len(t["rounds_s"]) * t["number"] for key, t in timings.items()},
                    "tokens_per_s": tokens_per_s,
                    "speedup_cache_over_no_cache": speedup,
                    "speedup_buffered_over_no_cache": speedup_buffered,
                    # Keys and values, float32, of every layer at the final length, one sequence.
                    "kv_cache_bytes": 2 * config["n_layers"] * (1 + n) * config["d_model"] * 4,
                }
            )
        reading = weight_reading(model, device, budget)
        log(
            f"{name:8s} weights {reading['weight_bytes'] / 1e6:.1f} MB: matrix-vector products "
            f"{1e3 * reading['matvec_s']:.2f} ms ({reading['matvec_gb_per_s']:.1f} GB/s), "
            f"sum {1e3 * reading['sum_s']:.2f} ms ({reading['sum_gb_per_s']:.1f} GB/s)"
        )
        results[name] = {
            "config": config,
            "parameters": model.num_parameters(),
            "rows": rows,
            "weight_reading": reading,
        }

    write_json(
        "generation",
        {
            "quick": args.quick,
            "what": "new tokens per second of tinyformer.decode.generate: with the simple "
            "KVCache, with tinyformer.fast.BufferedKVCache, and without a cache",
            "setup": {
                "batch": 1,
                "prompt_tokens": 1,
                "temperature": 1.0,
                "seed": SEED,
                "new_tokens": list(new_tokens),
                "ways": list(WAYS),
                "device": device.type,
            },
            "target": {"model": "baby_gpt", "new_tokens": 256, "min_speedup": 5.0},
            "identical": all(row["identical"] for r in results.values() for row in r["rows"]),
            "results": results,
        },
        args.out,
        device,
    )


if __name__ == "__main__":
    main()
