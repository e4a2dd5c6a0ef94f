"""The encoder-decoder transformer of "Attention Is All You Need", and how to decode with it.

Shapes: B batch, S source length, T target length, P cached target positions, D d_model,
H heads, V_src / V_tgt the two vocabularies, K beam size.

    src (B, S) --Encoder--> memory (B, S, D) --------------------------.
                                                                      | cross attention
    tgt_in (B, T) --embed--> DecoderBlocks (self-attn -> cross-attn -> FFN) --> logits (B, T, V_tgt)

The encoder reads the whole source at once (no causal mask, pads hidden). The decoder is a
causal language model over the target that, in every block, also reads the memory through
cross attention; its only mask there is the source's key-padding mask: every target
position may read every real source position.

Training uses teacher forcing: ``tgt_in = <bos> y1 .. yn`` predicts ``y1 .. yn <eos>``.
At test time the target is produced one token at a time: :func:`greedy_decode` takes the
most likely next token; :func:`beam_search` keeps the K most likely prefixes.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

from tinyformer.attention import KVCache
from tinyformer.decoder import DecoderBlock
from tinyformer.encoder import Encoder
from tinyformer.layers import (
    TokenEmbedding,
    positional_module,
)

__all__ = ["EncoderDecoder", "beam_search", "greedy_decode", "sequence_log_prob"]


class EncoderDecoder(nn.Module):
    """The 2017 transformer: an :class:`~tinyformer.encoder.Encoder` and a decoder with cross
    attention, for translation from a source vocabulary into a target vocabulary.

    Submodules: ``encoder`` (Encoder, which builds the source key-padding mask from
    ``src == pad_id``); the decoder's ``tok_emb``, ``pos``, ``drop``, ``blocks``
    (DecoderBlocks with ``cross_attention=True``), ``norm_f`` (pre-LN only; nn.Identity under
    post-LN, whose blocks already end in a LayerNorm) and ``lm_head`` (tied to the target
    embedding when ``tie_weights``). Source and target have separate embeddings.

    Target sequences need no padding mask of their own: right-padded targets only sit after
    the real tokens, which the causal mask already hides them from, and the loss ignores the
    predictions at pad targets (``tinyformer.train.lm_loss``).
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        d_model: int = 64,
        n_heads: int = 4,
        n_encoder_layers: int = 2,
        n_decoder_layers: int = 2,
        d_ff: int = 256,
        max_len: int = 32,
        dropout: float = 0.0,
        norm_first: bool = True,
        positional: str = "learned",
        pad_id: int = 0,
        tie_weights: bool = True,
        activation: str = "relu",
    ):
        super().__init__()
        self.src_vocab_size, self.tgt_vocab_size = src_vocab_size, tgt_vocab_size
        self.d_model, self.n_heads, self.d_ff, self.max_len = d_model, n_heads, d_ff, max_len
        self.norm_first, self.pad_id = norm_first, pad_id

        self.encoder = Encoder(
            src_vocab_size,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_encoder_layers,
            d_ff=d_ff,
            max_len=max_len,
            dropout=dropout,
            norm_first=norm_first,
            positional=positional,
            pad_id=pad_id,
            activation=activation,
        )
        # The decoder: DecoderLM's layout, with cross attention in every block.
        self.tok_emb = TokenEmbedding(tgt_vocab_size, d_model)
        self.pos = positional_module(positional, max_len, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            DecoderBlock(
                d_model, n_heads, d_ff, dropout, norm_first, activation, cross_attention=True
            )
            for _ in range(n_decoder_layers)
        )
        self.norm_f = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.lm_head = nn.Linear(d_model, tgt_vocab_size, bias=False)
        if tie_weights:
            self.lm_head.weight = self.tok_emb.weight

    def num_parameters(self) -> int:
        """Number of trainable numbers; a tied matrix counts once."""
        return sum(p.numel() for p in self.parameters())

    def new_cache(self) -> list[KVCache]:
        """An empty KV cache for the decoder's self-attention: one KVCache per decoder layer."""
        return [KVCache() for _ in self.blocks]

    def encode(self, src: torch.Tensor, return_attention: bool = False):
        """src (B, S) long -> ``(memory (B, S, D), src_mask (B, 1, 1, S) bool)``.

        ``src_mask`` is True at real source tokens (None if the encoder has no pad_id); pass
        it on to :meth:`decode`. With ``return_attention`` a third item is the encoder's
        per-layer self-attention weights, a list of (B, H, S, S).
        """
        src_mask = self.encoder.mask(src)
        if not return_attention:
            return self.encoder(src), src_mask
        memory, attention = self.encoder(src, return_attention=True)
        return memory, src_mask, attention

    def decode(
        self,
        tgt_in: torch.Tensor,
        memory: torch.Tensor,
        src_mask: torch.Tensor | None,
        cache: list[KVCache] | None = None,
        return_attention: bool = False,
    ):
        """tgt_in (B, T) long, memory (B, S, D) -> logits (B, T, V_tgt).

        ``src_mask`` (bool, True = real source token, broadcastable to (B, H, T, S); usually
        the (B, 1, 1, S) from :meth:`encode`) hides source padding from cross attention.
        With ``cache`` (from :meth:`new_cache`, holding P earlier target positions) tgt_in
        holds the T *new* tokens, at positions P .. P + T - 1; the cache grows in place.
        With ``return_attention`` also returns ``{"decoder_self": [...], "cross": [...]}``,
        per-layer lists of (B, H, T, P + T) and (B, H, T, S) weights.
        """
        past = self._check_target(tgt_in, cache)
        self._check_memory(memory, src_mask, tgt_in.shape[0])
        x = self.drop(self.pos(self.tok_emb(tgt_in), offset=past))  # (B, T, D)
        self_weights, cross_weights = [], []
        for i, block in enumerate(self.blocks):
            layer_cache = cache[i] if cache is not None else None
            if return_attention:
                x, w_self, w_cross = block(
                    x, cache=layer_cache, return_weights=True, memory=memory, memory_mask=src_mask
                )
                self_weights.append(w_self)
                cross_weights.append(w_cross)
            else:
                x = block(x, cache=layer_cache, memory=memory, memory_mask=src_mask)
        logits = self.lm_head(self.norm_f(x))  # (B, T, V_tgt)
        if return_attention:
            return logits, {"decoder_self": self_weights, "cross": cross_weights}
        return logits

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor, return_attention: bool = False):
        """src (B, S) long, tgt_in (B, T) long -> logits (B, T, V_tgt) (teacher forcing).

        With ``return_attention`` also returns a dict of per-layer weight lists:
        ``"encoder"`` (B, H, S, S), ``"decoder_self"`` (B, H, T, T), ``"cross"`` (B, H, T, S).
        """
        if isinstance(src, torch.Tensor) and isinstance(tgt_in, torch.Tensor):
            if src.dim() >= 1 and tgt_in.dim() >= 1 and src.shape[0] != tgt_in.shape[0]:
                raise ValueError(
                    f"expected source and target batches of the same size B, got src of shape "
                    f"{tuple(src.shape)} and tgt_in of shape {tuple(tgt_in.shape)}"
                )
        if not return_attention:
            memory, src_mask = self.encode(src)
            return self.decode(tgt_in, memory, src_mask)
        memory, src_mask, enc_weights = self.encode(src, return_attention=True)
        logits, weights = self.decode(tgt_in, memory, src_mask, return_attention=True)
        return logits, {"encoder": enc_weights, **weights}

    # ------------------------------------------------------------------ validation
    def _check_target(self, tgt_in, cache) -> int:
        """Validate the target ids and cache; return the number of cached positions P."""
        if not isinstance(tgt_in, torch.Tensor) or tgt_in.dtype != torch.long:
            got = tgt_in.dtype if isinstance(tgt_in, torch.Tensor) else type(tgt_in).__name__
            raise ValueError(f"expected target token ids of dtype torch.long, got {got}")
        if tgt_in.dim() != 2 or tgt_in.shape[1] == 0:
            raise ValueError(
                f"expected target token ids of shape (B, T) with T >= 1, "
                f"got shape {tuple(tgt_in.shape)}"
            )
        past = 0
        if cache is not None:
            if len(cache) != len(self.blocks):
                raise ValueError(
                    f"expected a cache with one KVCache per decoder layer ({len(self.blocks)}), "
                    f"got {len(cache)}; use model.new_cache()"
                )
            past = cache[0].length
        T = tgt_in.shape[1]
        if past + T > self.max_len:
            what = f"{past} cached + {T} new positions = {past + T}" if past else f"length {T}"
            raise ValueError(
                f"target sequence of {what} exceeds the model's context of {self.max_len} positions"
            )
        return past

    def _check_memory(self, memory, src_mask, batch_size: int) -> None:
        if not isinstance(memory, torch.Tensor) or memory.dim() != 3:
            got = tuple(memory.shape) if isinstance(memory, torch.Tensor) else type(memory).__name__
            raise ValueError(f"expected memory of shape (B, S, {self.d_model}), got {got}")
        if memory.shape[0] != batch_size or memory.shape[2] != self.d_model:
            raise ValueError(
                f"expected memory of shape (B, S, D) = ({batch_size}, S, {self.d_model}), "
                f"got {tuple(memory.shape)}"
            )
        if not memory.is_floating_point():
            raise ValueError(f"expected memory to be a floating-point tensor, got {memory.dtype}")
        if src_mask is not None and src_mask.dtype != torch.bool:
            raise ValueError(
                f"expected src_mask of dtype torch.bool (True = real token), got {src_mask.dtype}"
            )


# ---------------------------------------------------------------------------- decoding


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Run the model without dropout; restore its previous mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _check_decode_args(model, src, max_new_tokens, **ids) -> None:
    if not isinstance(src, torch.Tensor) or src.dtype != torch.long or src.dim() != 2:
        got = (
            f"shape {tuple(src.shape)} and dtype {src.dtype}"
            if isinstance(src, torch.Tensor)
            else type(src).__name__
        )
        raise ValueError(f"expected source token ids (B, S) of dtype torch.long, got {got}")
    if not 1 <= max_new_tokens <= model.max_len:
        # The decoder reads <bos> plus every generated token but the last: max_new_tokens
        # positions in all.
        raise ValueError(
            f"expected 1 <= max_new_tokens <= the model's context of {model.max_len} positions, "
            f"got {max_new_tokens}"
        )
    for name, value in ids.items():
        if not 0 <= value < model.tgt_vocab_size:
            raise ValueError(
                f"expected {name} in [0, {model.tgt_vocab_size}) for the target vocabulary, "
                f"got {value}"
            )


@torch.no_grad()
def greedy_decode(
    model: EncoderDecoder,
    src: torch.Tensor,
    max_new_tokens: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    use_cache: bool = True,
    return_scores: bool = False,
):
    """Translate a batch by always taking the most likely next token.

    Args:
        model: an :class:`EncoderDecoder` (run in eval mode; its mode is restored).
        src: (B, S) long source ids, right-padded with the model's pad_id.
        max_new_tokens: at most this many tokens per sentence (<eos> included); at most
            ``model.max_len``, since the decoder reads <bos> and all but the last of them.
        bos_id, eos_id, pad_id: target-vocabulary ids. A sentence that has produced <eos>
            emits pad_id from then on; decoding stops once every sentence has ended.
        use_cache: keep the decoder's self-attention keys/values in a KV cache and feed
            one token per step (True), or re-run the whole prefix every step (False). Both
            give the same tokens. Cross attention recomputes its keys/values from the
            memory at every step (simple; the memory is short).
        return_scores: also return each output's log-probability under the model.

    Returns:
        ``tokens (B, 1 + n)`` long, ``<bos> y1 .. <eos> <pad> ..`` with n <= max_new_tokens,
        and with ``return_scores`` the scores ``(B,)``: sum of log p(y_t | y_<t, src) over the
        generated tokens up to and including <eos> (not normalised by length).
    """
    _check_decode_args(model, src, max_new_tokens, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    with _eval_mode(model):
        memory, src_mask = model.encode(src)
        tokens, scores = _greedy(
            model, memory, src_mask, max_new_tokens, bos_id, eos_id, pad_id, use_cache
        )
    return (tokens, scores) if return_scores else tokens


def _greedy(model, memory, src_mask, max_new_tokens, bos_id, eos_id, pad_id, use_cache=True):
    """The greedy loop on an encoded batch -> (tokens (B, 1 + n), scores (B,))."""
    B, device = memory.shape[0], memory.device
    tokens = torch.full((B, 1), bos_id, dtype=torch.long, device=device)
    scores = torch.zeros(B, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    cache = model.new_cache() if use_cache else None
    for _ in range(max_new_tokens):
        new_input = tokens[:, -1:] if use_cache else tokens
        logits = model.decode(new_input, memory, src_mask, cache=cache)[:, -1]  # (B, V)
        log_probs = F.log_softmax(logits.float(), dim=-1)
        next_id = log_probs.argmax(dim=-1)  # (B,)
        gained = log_probs.gather(1, next_id[:, None]).squeeze(1)
        scores = scores + gained.masked_fill(finished, 0.0)  # nothing is added after <eos>
        next_id = next_id.masked_fill(finished, pad_id)
        finished = finished | (next_id == eos_id)
        tokens = torch.cat([tokens, next_id[:, None]], dim=1)
        if bool(finished.all()):
            break
    return tokens, scores


@torch.no_grad()
def beam_search(
    model: EncoderDecoder,
    src: torch.Tensor,
    beam_size: int,
    max_new_tokens: int,
    bos_id: int,
    eos_id: int,
    pad_id: int,
    length_penalty: float = 0.0,
    include_greedy: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Translate a batch, keeping the ``beam_size`` most likely prefixes of each sentence.

    All B sentences are searched together: the K hypotheses of sentence b are rows
    b*K .. b*K + K - 1 of one (B*K, ...) batch, so a step is one decoder call for all of
    them, with a KV cache for the decoder's self-attention (reordered each step so that
    every survivor continues its parent's keys and values).

    Scoring. A hypothesis scores the sum of its tokens' log-probabilities,
    log p(y | src) = sum_t log p(y_t | y_<t, src), up to and including <eos>. At each
    step every live hypothesis is extended by every token, and the K best of the K * V
    candidates survive. A finished hypothesis (it produced <eos>) stays in the beam with
    its score unchanged (it is "extended" by pad_id at no cost), so finished and live
    hypotheses compete on the same scale. A sentence's search ends when all its hypotheses
    have finished or, with length_penalty 0, as soon as its best one has (the others can
    only lose probability, so none can overtake it); the sentence then leaves the batch, so
    later steps only pay for the sentences still open. Hypotheses that reach
    ``max_new_tokens`` without <eos> are returned as they are.

    Length. A sum of log-probabilities favours short outputs (each token costs a little).
    ``length_penalty = alpha`` only affects the final choice among the hypotheses: the
    winner maximises ``score / length ** alpha`` (length = generated tokens, <eos>
    included). alpha = 0 (default) picks the highest total log-probability; alpha = 1 the
    highest mean log-probability per token. The returned score is always the plain sum.

    Beam search is a heuristic: greedy's prefix can be pruned by prefixes that later turn
    out worse, so a plain beam can end below greedy (it happens with untrained models).
    ``include_greedy=True`` (default) also decodes greedily (one more 1/K of the work) and
    keeps greedy's output where it ranks higher, so the result never ranks below greedy's.
    beam_size=1 is exactly greedy decoding.

    Returns:
        ``(tokens (B, 1 + n) long, scores (B,))``: for each sentence the chosen output,
        ``<bos> y1 .. <eos> <pad> ..`` (n <= max_new_tokens), and its log-probability.
    """
    _check_decode_args(model, src, max_new_tokens, bos_id=bos_id, eos_id=eos_id, pad_id=pad_id)
    if isinstance(beam_size, bool) or not isinstance(beam_size, int) or beam_size < 1:
        raise ValueError(f"expected an integer beam_size >= 1, got {beam_size!r}")
    if length_penalty < 0:
        raise ValueError(f"expected length_penalty >= 0, got {length_penalty}")
    with _eval_mode(model):
        memory, src_mask = model.encode(src)
        tokens, scores = _beam(
            model,
            memory,
            src_mask,
            beam_size,
            max_new_tokens,
            bos_id,
            eos_id,
            pad_id,
            length_penalty,
        )
        if include_greedy and beam_size > 1:
            greedy_tokens, greedy_scores = _greedy(
                model, memory, src_mask, max_new_tokens, bos_id, eos_id, pad_id
            )
            tokens, greedy_tokens = _pad_to_same_width(tokens, greedy_tokens, pad_id)
            use_greedy = _rank(greedy_tokens, greedy_scores, eos_id, length_penalty) > _rank(
                tokens, scores, eos_id, length_penalty
            )
            tokens = torch.where(use_greedy[:, None], greedy_tokens, tokens)
            scores = torch.where(use_greedy, greedy_scores, scores)
    return tokens, scores


def _beam(model, memory, src_mask, K, max_new_tokens, bos_id, eos_id, pad_id, length_penalty):
    """The beam loop on an encoded batch -> (best tokens (B, 1 + n), their scores (B,)).

    The search runs on the A <= B sentences still active; a sentence whose answer can no
    longer change leaves the batch, with its rows of the memory and the caches, so later
    steps cost only what the remaining sentences need.
    """
    B, V, device = memory.shape[0], model.tgt_vocab_size, memory.device
    best_tokens = torch.full((B, 1 + max_new_tokens), pad_id, dtype=torch.long, device=device)
    best_scores = torch.zeros(B, device=device)
    active = torch.arange(B, device=device)  # which sentences are still being searched
    # Row a*K + k is hypothesis k of active sentence a: each hypothesis reads its sentence.
    memory = memory.repeat_interleave(K, dim=0)  # (A*K, S, D)
    if src_mask is not None:
        src_mask = src_mask.repeat_interleave(K, dim=0)  # (A*K, 1, 1, S)
    cache = model.new_cache()
    tokens = torch.full((B * K, 1), bos_id, dtype=torch.long, device=device)
    # At the start the K hypotheses are the same "<bos>": only one may expand, or the beam
    # would fill with K copies of the same prefix.
    scores = torch.full((B, K), float("-inf"), device=device)  # (A, K)
    scores[:, 0] = 0.0
    finished = torch.zeros(B, K, dtype=torch.bool, device=device)  # (A, K)
    # What a finished hypothesis may append: pad_id, at log-probability 0.
    after_end = torch.full((V,), float("-inf"), device=device)
    after_end[pad_id] = 0.0

    for step in range(max_new_tokens):
        A = len(active)
        logits = model.decode(tokens[:, -1:], memory, src_mask, cache=cache)[:, -1]
        log_probs = F.log_softmax(logits.float(), dim=-1).view(A, K, V)
        log_probs = torch.where(finished[..., None], after_end, log_probs)
        candidates = (scores[..., None] + log_probs).view(A, K * V)
        scores, index = candidates.topk(K, dim=-1)  # (A, K), best first
        parent, next_id = index // V, index % V  # which hypothesis, which token
        rows = (torch.arange(A, device=device)[:, None] * K + parent).view(-1)  # parents' rows
        tokens = torch.cat([tokens[rows], next_id.view(-1, 1)], dim=1)  # (A*K, 2 + step)
        finished = finished.gather(1, parent) | (next_id == eos_id)
        for layer_cache in cache:  # each survivor continues its parent's keys/values
            layer_cache.select(rows)

        # A sentence is done when all K hypotheses have finished, or (length_penalty 0)
        # when its best one has: the others can only lose probability, so none overtakes it.
        done = finished.all(dim=1)
        if length_penalty == 0:
            done = done | finished[:, 0]
        if step == max_new_tokens - 1:
            done = torch.ones_like(done)
        if bool(done.any()):
            hypotheses = tokens.view(A, K, -1)[done]  # (A_done, K, 2 + step)
            rank = _rank(hypotheses.flatten(0, 1), scores[done].flatten(), eos_id, length_penalty)
            best = rank.view(-1, K).argmax(dim=1)
            pick = torch.arange(len(best), device=device)
            best_tokens[active[done], : step + 2] = hypotheses[pick, best]
            best_scores[active[done]] = scores[done][pick, best]
            keep, keep_rows = ~done, (~done).repeat_interleave(K)
            active, scores, finished = active[keep], scores[keep], finished[keep]
            tokens, memory = tokens[keep_rows], memory[keep_rows]
            if src_mask is not None:
                src_mask = src_mask[keep_rows]
            for layer_cache in cache:
                layer_cache.select(keep_rows)
            if len(active) == 0:
                break
    return best_tokens[:, : step + 2], best_scores  # the last sentence ended at this step


def _rank(tokens, scores, eos_id, length_penalty):
    """What the final choice maximises: score / length ** length_penalty."""
    if length_penalty == 0:
        return scores
    lengths = _generated_lengths(tokens, eos_id).clamp(min=1).to(scores.dtype)
    return scores / lengths**length_penalty


def _pad_to_same_width(a, b, pad_id):
    """Right-pad two (N, *) token tensors with pad_id to the wider one's width."""
    width = max(a.shape[1], b.shape[1])
    return (F.pad(t, (0, width - t.shape[1]), value=pad_id) for t in (a, b))


def _generated_lengths(tokens: torch.Tensor, eos_id: int) -> torch.Tensor:
    """tokens (N, 1 + n) starting with <bos> -> (N,) number of generated tokens up to and
    including the first <eos> (all n when there is none)."""
    return _real_targets(tokens[:, 1:], eos_id).sum(dim=1)


def _real_targets(generated: torch.Tensor, eos_id: int) -> torch.Tensor:
    """(N, n) generated ids -> (N, n) bool: True up to and including the first <eos>."""
    is_eos = (generated == eos_id).long()
    # eos_before[t] = number of <eos> strictly before position t; real while it is 0.
    eos_before = is_eos.cumsum(dim=1) - is_eos
    return eos_before == 0


@torch.no_grad()
def sequence_log_prob(
    model: EncoderDecoder, src: torch.Tensor, tokens: torch.Tensor, eos_id: int
) -> torch.Tensor:
    """The model's log-probability of given outputs, by teacher forcing: -> (B,).

    ``tokens (B, 1 + n)`` is ``<bos> y1 .. yn`` as returned by the decoders;
    the result is sum_t log p(y_t | y_<t, src) over t up to and including the first <eos>
    (what follows it, padding, is ignored). Equals the scores of :func:`greedy_decode` and
    :func:`beam_search` for their outputs.
    """
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or tokens.shape[1] < 2:
        got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"expected tokens (B, 1 + n) with n >= 1, got {got}")
    with _eval_mode(model):
        logits = model(src, tokens[:, :-1])  # (B, n, V)
    log_probs = F.log_softmax(logits.float(), dim=-1)
    targets = tokens[:, 1:]
    per_token = log_probs.gather(2, targets[..., None]).squeeze(-1)  # (B, n)
    return per_token.masked_fill(~_real_targets(targets, eos_id), 0.0).sum(dim=1)
