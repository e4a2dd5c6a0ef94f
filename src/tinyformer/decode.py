"""Producing text with a trained model, one token at a time.

Shapes: B batch, T0 prompt length, S source length, V vocab, K beam size.

One loop does every left-to-right decoding of the course: :func:`generate` (Part I's
language model: sampling with temperature and top-k, or greedy) and :func:`greedy_decode`
(Part III's translation) both run :func:`decode_loop`, which asks the model for the next
token's logits, picks a token and appends it. :func:`beam_search` keeps the K most likely
prefixes instead of one.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tinyformer.checks import (
    check_positive_int,
    check_temperature,
    check_token_ids,
    check_vocab_id,
)
from tinyformer.train import evaluating

__all__ = [
    "beam_search",
    "decode_loop",
    "generate",
    "greedy_decode",
    "sample_next",
    "sequence_log_prob",
]


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token of each sequence from its logits (B, V) -> ids (B,) long.

    temperature = 0 is greedy decoding (argmax; no random numbers are drawn; a tie goes to
    the lowest id). Otherwise the logits are divided by the temperature (< 1 sharpens,
    > 1 flattens), all but the ``top_k`` largest are removed (when given), and one token is
    drawn from the softmax. Ties at the top-k boundary are all kept: every token whose logit
    equals the k-th largest stays, so more than k tokens can remain. Random numbers come
    from ``generator`` (or torch's global one), drawn on the generator's device.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"expected logits of shape (B, V), got {got}")
    temperature = check_temperature(temperature)
    V = logits.shape[-1]
    if top_k is not None and (check_positive_int(top_k, "top_k") > V):
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


def decode_loop(
    next_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    max_new_tokens: int,
    pick: Callable[[torch.Tensor], torch.Tensor],
    eos_id: int | None = None,
    pad_id: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The step loop: extend ``tokens (B, T0)`` by up to ``max_new_tokens`` tokens.

    ``next_logits(tokens, new)`` gets every token so far (B, T) and the ones added since its
    last call (B, T_new) (the prompt, then one token: what a KV cache needs) and returns the
    next token's logits (B, V). ``pick(logits) -> (B,)`` chooses. After ``eos_id`` a
    sequence emits ``pad_id``; the loop stops once every sequence has ended.

    Returns ``(tokens (B, T0 + n), scores (B,))``: the score is the sum of the chosen
    tokens' log-probabilities (up to and including <eos>).
    """
    B = tokens.shape[0]
    scores = torch.zeros(B, device=tokens.device)
    finished = torch.zeros(B, dtype=torch.bool, device=tokens.device)
    new = tokens
    for _ in range(max_new_tokens):
        logits = next_logits(tokens, new).float()  # (B, V)
        next_id = pick(logits)  # (B,)
        gained = F.log_softmax(logits, dim=-1).gather(1, next_id[:, None]).squeeze(1)
        scores = scores + gained.masked_fill(finished, 0.0)  # nothing counts after <eos>
        if eos_id is not None:
            next_id = next_id.masked_fill(finished, pad_id)
            finished = finished | (next_id == eos_id)
        tokens = torch.cat([tokens, next_id[:, None]], dim=1)
        new = next_id[:, None]
        if eos_id is not None and bool(finished.all()):
            break
    return tokens, scores


def _check_end_ids(eos_id, pad_id, vocab_size: int) -> None:
    if eos_id is not None:
        check_vocab_id(eos_id, "eos_id", vocab_size)
        if pad_id is None:
            raise ValueError(f"expected a pad_id to emit after eos_id={eos_id}, got pad_id=None")
    if pad_id is not None:
        check_vocab_id(pad_id, "pad_id", vocab_size)


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
    cache: list | None = None,
) -> torch.Tensor:
    """Continue each prompt (B, T0) long by up to ``max_new_tokens`` tokens -> (B, T0 + n) long.

    ``model`` is a language model (``DecoderLM``): ids -> logits, with ``new_cache()`` and
    a ``config``. It runs in eval mode (no dropout), its previous mode restored afterwards.
    All prompts share one length T0 (e.g. a single <bos> each): there is no left padding.
    Tokens are picked by :func:`sample_next` (``temperature=0``: greedy).

    With ``eos_id``, a sequence that has produced <eos> emits ``pad_id`` from then on, and
    generation stops early (n < max_new_tokens) once every sequence has ended.

    ``use_cache=True`` feeds only the newest token per step and keeps keys/values in a
    KV cache (``model.new_cache()``); ``use_cache=False`` re-runs the whole sequence each
    step. Both draw the same random numbers, so they give identical tokens for the same
    generator seed. ``cache``, one empty cache per layer, replaces ``model.new_cache()``
    (e.g. ``[fast.BufferedKVCache() for _ in model.decoder.blocks]``).
    """
    V, max_len = model.config.vocab_size, model.config.max_len
    check_token_ids(prompt, V, "prompt")
    check_positive_int(max_new_tokens, "max_new_tokens")
    sample_next(torch.zeros(1, V), temperature, top_k)  # checks temperature and top_k
    _check_end_ids(eos_id, pad_id, V)
    T0 = prompt.shape[1]
    if T0 + max_new_tokens > max_len:
        raise ValueError(
            f"prompt of {T0} tokens + {max_new_tokens} new tokens = {T0 + max_new_tokens} "
            f"exceeds the model's context of {max_len} positions"
        )
    if cache is not None and not use_cache:
        raise ValueError("expected use_cache=True with a cache, got use_cache=False")
    if use_cache and cache is None:
        cache = model.new_cache()

    def next_logits(tokens, new):
        return (model(new, cache=cache) if use_cache else model(tokens))[:, -1]

    def pick(logits):
        return sample_next(logits, temperature, top_k, generator)

    with evaluating(model), torch.no_grad():
        tokens, _ = decode_loop(next_logits, prompt, max_new_tokens, pick, eos_id, pad_id)
    return tokens


# ---------------------------------------------------------------- encoder-decoder (Part III)


def _check_translation_args(model, src, max_new_tokens, bos_id, eos_id, pad_id) -> None:
    if model.config.src_vocab_size is None:
        raise TypeError(f"expected an encoder-decoder model, got {type(model).__name__}")
    check_token_ids(src, model.config.src_vocab_size, "src")
    check_positive_int(max_new_tokens, "max_new_tokens")
    if max_new_tokens > model.config.max_len:
        # The decoder reads <bos> plus every generated token but the last: max_new_tokens
        # positions in all.
        raise ValueError(
            f"expected max_new_tokens <= the model's context of {model.config.max_len} "
            f"positions, got {max_new_tokens}"
        )
    V = model.config.vocab_size
    for name, value in (("bos_id", bos_id), ("eos_id", eos_id), ("pad_id", pad_id)):
        check_vocab_id(value, name, V)


def greedy_decode(
    model: nn.Module,
    src: torch.Tensor,
    max_new_tokens: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    use_cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Translate a batch by always taking the most likely next token.

    Args:
        model: an ``EncoderDecoder`` (run in eval mode; its mode is restored).
        src: (B, S) long source ids, right-padded with the model's pad_id.
        max_new_tokens: at most this many tokens per sentence (<eos> included); at most
            the model's context, since the decoder reads <bos> and all but the last of them.
        bos_id, eos_id, pad_id: target-vocabulary ids. A sentence that has produced <eos>
            emits pad_id from then on; decoding stops once every sentence has ended.
        use_cache: keep the decoder's self-attention keys/values in a KV cache and feed
            one token per step (True), or re-run the whole prefix every step (False). Both
            give the same tokens. Cross attention recomputes its keys/values from the
            memory at every step (simple; the memory is short).

    Returns:
        ``(tokens (B, 1 + n), scores (B,))``: ``<bos> y1 .. <eos> <pad> ..`` with
        n <= max_new_tokens, and each output's log-probability under the model,
        sum of log p(y_t | y_<t, src) up to and including <eos> (not normalised by length).
    """
    _check_translation_args(model, src, max_new_tokens, bos_id, eos_id, pad_id)
    with evaluating(model), torch.no_grad():
        memory, src_mask = model.encode(src)
        cache = model.new_cache() if use_cache else None

        def next_logits(tokens, new):
            return model.decode(new if use_cache else tokens, memory, src_mask, cache)[:, -1]

        start = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
        return decode_loop(
            next_logits, start, max_new_tokens, lambda logits: logits.argmax(-1), eos_id, pad_id
        )


def beam_search(
    model: nn.Module,
    src: torch.Tensor,
    beam_size: int,
    max_new_tokens: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    length_penalty: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Translate a batch, keeping the ``beam_size`` most likely prefixes of each sentence.

    A hypothesis scores the sum of its tokens' log-probabilities,
    log p(y | src) = sum_t log p(y_t | y_<t, src), up to and including <eos>. At each step
    every live prefix is extended by every token. Those extended by <eos> are finished:
    they go to a separate pool, which keeps the K best finished hypotheses found so far
    (ranked as below). The K best continuations that do *not* end become the new live
    prefixes. A finished hypothesis is therefore never pushed out by live prefixes: the
    result is the best finished hypothesis the search ever held (or, if none finished
    within ``max_new_tokens``, the best live prefix, returned as it is).

    A sentence's search stops when no live prefix can still beat its best finished
    hypothesis: a prefix's score can only fall as it grows (each token adds a log-probability
    <= 0). All B sentences are searched together (row b*K + k is hypothesis k of sentence
    b, one decoder call per step, a KV cache reordered so that every survivor continues its
    parent's keys and values); a finished sentence leaves the batch.

    Length. A sum of log-probabilities favours short outputs. ``length_penalty = alpha``
    ranks hypotheses by ``score / length ** alpha`` (length = generated tokens, <eos>
    included; Wu et al., 2016, use a smoothed variant): 0 (default) the plain sum, 1 the
    mean per token. The returned score is always the plain sum.

    ``beam_size=1`` follows greedy decoding's path, but remembers the finished hypotheses
    it passes: it returns greedy's output or an earlier ending that scores higher.

    Beam search is still a heuristic: the prefix of the best sentence can be pruned by
    prefixes that later turn out worse, so it can miss the most probable output.

    Returns:
        ``(tokens (B, 1 + n) long, scores (B,))``: for each sentence the chosen output,
        ``<bos> y1 .. <eos> <pad> ..`` (n <= max_new_tokens), and its log-probability.
    """
    _check_translation_args(model, src, max_new_tokens, bos_id, eos_id, pad_id)
    check_positive_int(beam_size, "beam_size")
    if (
        isinstance(length_penalty, bool)
        or not isinstance(length_penalty, (int, float))
        or not 0 <= length_penalty < float("inf")
    ):
        raise ValueError(f"expected a finite length_penalty >= 0, got {length_penalty!r}")
    with evaluating(model), torch.no_grad():
        memory, src_mask = model.encode(src)
        return _beam(
            model, memory, src_mask, beam_size, max_new_tokens, bos_id, eos_id, pad_id,
            float(length_penalty),
        )  # fmt: skip


def _beam(model, memory, src_mask, K, max_new_tokens, bos_id, eos_id, pad_id, alpha):
    """The beam loop on an encoded batch -> (best tokens (B, 1 + n), their scores (B,))."""
    B, V, device = memory.shape[0], model.config.vocab_size, memory.device
    width = 1 + max_new_tokens
    neg_inf = float("-inf")
    out_tokens = torch.full((B, width), pad_id, dtype=torch.long, device=device)
    out_scores = torch.zeros(B, device=device)
    active = torch.arange(B, device=device)  # the sentences still searched (A of them)
    memory = memory.repeat_interleave(K, dim=0)  # (A*K, S, D): each hypothesis reads its source
    if src_mask is not None:
        src_mask = src_mask.repeat_interleave(K, dim=0)
    cache = model.new_cache()
    tokens = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)  # live prefixes
    # At the start the K prefixes are the same "<bos>": only one may expand, or the beam
    # would fill with K copies of it.
    scores = torch.full((B, K), neg_inf, device=device)  # (A, K) live scores
    scores[:, 0] = 0.0
    # The pool of finished hypotheses: K per sentence, with their scores and ranks.
    pool_tokens = torch.full((B, K, width), pad_id, dtype=torch.long, device=device)
    pool_scores = torch.full((B, K), neg_inf, device=device)
    pool_ranks = torch.full((B, K), neg_inf, device=device)

    for step in range(max_new_tokens):
        A, n = len(active), step + 1  # n: generated tokens after this step
        logits = model.decode(tokens[:, -1:], memory, src_mask, cache=cache)[:, -1]
        candidates = scores[..., None] + F.log_softmax(logits.float(), dim=-1).view(A, K, V)

        # 1. Prefixes that end here join the pool, which keeps its K best.
        ended = candidates[..., eos_id]  # (A, K)
        ended_tokens = F.pad(
            torch.cat([tokens, torch.full_like(tokens[:, :1], eos_id)], dim=1),
            (0, width - n - 1),
            value=pad_id,
        ).view(A, K, width)
        all_ranks = torch.cat([pool_ranks, ended / n**alpha], dim=1)  # (A, 2K)
        pool_ranks, pick = all_ranks.topk(K, dim=1)
        pool_scores = torch.cat([pool_scores, ended], dim=1).gather(1, pick)
        all_tokens = torch.cat([pool_tokens, ended_tokens], dim=1)  # (A, 2K, width)
        pool_tokens = all_tokens.gather(1, pick[..., None].expand(-1, -1, width))

        # 2. The K best continuations that do not end stay live.
        candidates[..., eos_id] = neg_inf
        scores, index = candidates.view(A, K * V).topk(K, dim=-1)  # (A, K), best first
        parent, next_id = index // V, index % V
        rows = (torch.arange(A, device=device)[:, None] * K + parent).view(-1)
        tokens = torch.cat([tokens[rows], next_id.view(-1, 1)], dim=1)  # (A*K, 1 + n)
        for layer_cache in cache:  # each survivor continues its parent's keys/values
            layer_cache.select(rows)

        # 3. Done: no live prefix can beat the best finished hypothesis. A live score s <= 0
        # can only fall; with alpha > 0 its best possible rank is s / max_new_tokens**alpha.
        best_live = scores[:, 0] / (max_new_tokens**alpha if alpha > 0 else 1.0)
        done = pool_ranks[:, 0] >= best_live
        last = step == max_new_tokens - 1
        if last:
            done = torch.ones_like(done)
        if bool(done.any()):
            idx = done.nonzero().squeeze(1)
            best_tokens, best_scores = pool_tokens[idx, 0], pool_scores[idx, 0]
            if last:  # unfinished prefixes compete too, as they are
                live_tokens = F.pad(tokens.view(A, K, -1)[idx, 0], (0, width - n - 1), value=pad_id)
                live_better = scores[idx, 0] / n**alpha > pool_ranks[idx, 0]
                best_tokens = torch.where(live_better[:, None], live_tokens, best_tokens)
                best_scores = torch.where(live_better, scores[idx, 0], best_scores)
            out_tokens[active[idx]] = best_tokens
            out_scores[active[idx]] = best_scores
            keep = ~done
            keep_rows = keep.repeat_interleave(K)
            active, scores = active[keep], scores[keep]
            pool_tokens, pool_scores, pool_ranks = (
                pool_tokens[keep],
                pool_scores[keep],
                pool_ranks[keep],
            )
            tokens, memory = tokens[keep_rows], memory[keep_rows]
            if src_mask is not None:
                src_mask = src_mask[keep_rows]
            for layer_cache in cache:
                layer_cache.select(keep_rows)
            if len(active) == 0:
                break
    # Drop the columns that are padding in every output.
    used = int((out_tokens != pad_id).any(dim=0).nonzero().max()) + 1
    return out_tokens[:, :used], out_scores


def _real_targets(generated: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(N, n) generated ids -> (N, n) bool: True up to and including the first <eos>."""
    is_eos = (generated == eos_id).long()
    # eos_before[t] = number of <eos> strictly before position t; real while it is 0.
    eos_before = is_eos.cumsum(dim=1) - is_eos
    return eos_before == 0


def sequence_log_prob(
    model: nn.Module, src: torch.Tensor, tokens: torch.Tensor, eos_id: int
) -> torch.Tensor:
    """The model's log-probability of given outputs, by teacher forcing: -> (B,).

    ``tokens (B, 1 + n)`` is ``<bos> y1 .. yn`` as returned by the decoders; the result is
    sum_t log p(y_t | y_<t, src) over t up to and including the first <eos> (what follows
    it, padding, is ignored). Equals the scores :func:`greedy_decode` and
    :func:`beam_search` return for their outputs.
    """
    check_token_ids(tokens, model.config.vocab_size, "tokens")
    if tokens.shape[1] < 2:
        raise ValueError(f"expected tokens (B, 1 + n) with n >= 1, got {tuple(tokens.shape)}")
    check_vocab_id(eos_id, "eos_id", model.config.vocab_size)
    with evaluating(model), torch.no_grad():
        logits = model(src, tokens[:, :-1])  # (B, n, V)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    targets = tokens[:, 1:]
    per_token = log_probs.gather(2, targets[..., None]).squeeze(-1)  # (B, n)
    return per_token.masked_fill(~_real_targets(targets, eos_id), 0.0).sum(dim=1)
