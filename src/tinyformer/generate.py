"""Sampling from a language model: temperature, top-k, end-of-sequence, KV cache.

Shapes: B batch, T0 prompt length, V vocab.
"""

import torch
from torch import nn


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token of each sequence from its logits (B, V) -> ids (B,) long.

    temperature = 0 is greedy decoding (argmax; no random numbers are drawn).
    Otherwise the logits are divided by the temperature (< 1 sharpens, > 1 flattens),
    all but the ``top_k`` largest are removed (when given), and one token is drawn
    from the softmax. Random numbers come from ``generator`` (or torch's global one);
    the draw happens on the generator's device, so a CPU generator works for a GPU model.
    """
    if logits.dim() != 2:
        raise ValueError(f"expected logits of shape (B, V), got shape {tuple(logits.shape)}")
    if temperature < 0:
        raise ValueError(f"expected temperature >= 0 (0 = greedy), got {temperature}")
    V = logits.shape[-1]
    if top_k is not None and not 1 <= top_k <= V:
        raise ValueError(f"expected top_k between 1 and the vocabulary size {V}, got {top_k}")
    if temperature == 0:
        return logits.argmax(dim=-1)

    logits = logits.float() / temperature
    if top_k is not None:
        kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    device = generator.device if generator is not None else probs.device
    next_ids = torch.multinomial(probs.to(device), num_samples=1, generator=generator)
    return next_ids.squeeze(-1).to(logits.device)


def generate(
    model: nn.Module,
    prompt: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    eos_id: int | None = None,
    pad_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> torch.Tensor:
    """Continue each prompt (B, T0) long by up to ``max_new_tokens`` tokens -> (B, T0 + n) long.

    The model runs in eval mode (no dropout); its previous mode is restored afterwards.
    All prompts in a batch share one length T0 (e.g. a single <bos> each): there is no
    left padding.

    With ``eos_id``, a sequence that has produced <eos> emits ``pad_id`` from then on, and
    generation stops early (n < max_new_tokens) once every sequence has ended.

    ``use_cache=True`` feeds only the newest token per step and keeps keys/values in a
    KV cache (``model.new_cache()``); ``use_cache=False`` re-runs the whole sequence each
    step. Both draw the same random numbers, so they give identical tokens for the same
    generator seed. Raises ValueError if T0 + max_new_tokens exceeds ``model.max_len``.
    """
    if prompt.dim() != 2 or prompt.dtype != torch.long or prompt.shape[1] == 0:
        raise ValueError(
            f"expected a prompt of token ids (B, T0) with T0 >= 1 and dtype torch.long, "
            f"got shape {tuple(prompt.shape)} and dtype {prompt.dtype}"
        )
    if eos_id is not None and pad_id is None:
        raise ValueError(f"expected a pad_id to emit after eos_id={eos_id}, got pad_id=None")
    T0 = prompt.shape[1]
    if T0 + max_new_tokens > model.max_len:
        raise ValueError(
            f"prompt of {T0} tokens + {max_new_tokens} new tokens = {T0 + max_new_tokens} "
            f"exceeds the model's context of {model.max_len} positions"
        )

    was_training = model.training
    model.eval()
    try:
        # Inference mode is no_grad without autograd's bookkeeping (version counters, view
        # tracking): about a tenth off a cached generation step of the 6-layer benchmark model.
        with torch.inference_mode():
            ids = _sample_loop(
                model, prompt, max_new_tokens, temperature, top_k, eos_id, pad_id, generator,
                use_cache,
            )  # fmt: skip
    finally:
        model.train(was_training)
    # A tensor made in inference mode can never enter autograd (say, as the input of a
    # later training step); a copy made outside it is an ordinary tensor.
    return ids.clone()


def _sample_loop(
    model, prompt, max_new_tokens, temperature, top_k, eos_id, pad_id, generator, use_cache
):
    ids = prompt
    finished = torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    cache = model.new_cache() if use_cache else None
    new_input = prompt  # what the cached path feeds next: the prompt, then one token at a time
    for _ in range(max_new_tokens):
        if use_cache:
            logits = model(new_input, cache=cache)[:, -1]
        else:
            logits = model(ids)[:, -1]
        # Every row is sampled every step (finished ones too), so both paths consume
        # the generator identically.
        next_id = sample_next(logits, temperature, top_k, generator)
        if eos_id is not None:
            next_id = next_id.masked_fill(finished, pad_id)
            finished = finished | (next_id == eos_id)
        ids = torch.cat([ids, next_id[:, None]], dim=1)
        new_input = next_id[:, None]
        if eos_id is not None and bool(finished.all()):
            break
    return ids
