"""What the models are trained to do: the language-model loss (Part I), masked language
modelling's corruption and loss (Part II). One ``IGNORE_INDEX`` marks "no label here".

Shapes: B batch, T length, V vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tinyformer.checks import check_token_ids
from tinyformer.vocab import Vocab

__all__ = ["IGNORE_INDEX", "lm_loss", "mask_tokens", "mlm_loss"]

IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: "no label here"


def _check_logits_and_targets(logits, targets, name: str) -> None:
    for arg, value in (("logits", logits), (name, targets)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"expected {arg} to be a torch.Tensor, got {type(value).__name__}")
    if logits.dim() != 3 or targets.shape != logits.shape[:2]:
        raise ValueError(
            f"expected logits (B, T, V) and {name} (B, T), got logits {tuple(logits.shape)} "
            f"and {name} {tuple(targets.shape)}"
        )
    if targets.dtype != torch.long:
        raise ValueError(f"expected {name} of dtype torch.long, got {targets.dtype}")


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """Mean cross-entropy (nats per token) over every non-pad target.

    logits (B, T, V), targets (B, T) long -> a scalar.

    The caller shifts: for a batch ``ids`` the model reads ``ids[:, :-1]`` and the targets
    are ``ids[:, 1:]``. Every real target counts, <eos> included, so a perfect model of a
    language reaches that language's entropy per token. Pad targets are ignored
    (``pad_id=None`` ignores nothing). Equals ``F.cross_entropy(..., ignore_index=pad_id)``.
    A batch with no real target raises ValueError (a mean over nothing would be NaN).
    """
    _check_logits_and_targets(logits, targets, "targets")
    ignore_index = IGNORE_INDEX if pad_id is None else pad_id
    if targets.device.type == "cpu" and not bool((targets != ignore_index).any()):
        raise ValueError(f"expected at least one target that is not pad_id={pad_id}, got none")
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index
    )


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy (nats per token) over the chosen positions (labels != IGNORE_INDEX).

    logits (B, T, V), labels (B, T) long from :func:`mask_tokens` -> a scalar.
    """
    _check_logits_and_targets(logits, labels, "labels")
    if labels.device.type == "cpu" and not bool((labels != IGNORE_INDEX).any()):
        raise ValueError(
            f"expected at least one masked position (label != {IGNORE_INDEX}), got none"
        )
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def mask_tokens(
    ids: torch.Tensor,
    vocab: Vocab,
    p: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt ids for masked language modelling, the recipe of BERT (Devlin et al., 2019).

    Each maskable position (an ordinary word: never ``<pad>``, ``<bos>``, ``<eos>``,
    ``<unk>`` or ``<mask>``) is chosen independently with probability ``p``. (BERT itself
    chooses exactly 15 % of the positions of a long sequence packed with several
    sentences; choosing independently is simpler, and on our short sentences it leaves some
    sentences with no chosen word at all: Chapter 7 measures how many.) A chosen token
    is replaced by ``<mask>`` 80% of the time, by a uniformly random word (never a special
    token; it may happen to be the original word, as in BERT) 10% of the time, and left
    unchanged 10% of the time. The model must predict the original at every chosen
    position; as it cannot tell the unchanged ones apart, it has to represent every input
    word well, not only ``<mask>`` (which never appears at fine-tuning time).

    Args:
        ids: (B, T) long token ids.
        vocab: the Vocab that made them (for the special and word ids).
        p: the probability of choosing a maskable position.
        generator: a torch.Generator for reproducible masks (on ids' device, or on the CPU).

    Returns:
        ``(inputs, labels)``, both shaped like ids: the corrupted ids, and the original id
        at chosen positions, ``IGNORE_INDEX`` elsewhere.
    """
    if not isinstance(vocab, Vocab):
        raise TypeError(f"expected vocab to be a Vocab, got {type(vocab).__name__}")
    check_token_ids(ids, len(vocab))
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"expected a masking probability p in [0, 1], got {p!r}")
    special = torch.tensor(sorted(vocab.special_ids), device=ids.device)
    words = torch.tensor(
        [i for i in range(len(vocab)) if i not in vocab.special_ids], device=ids.device
    )
    maskable = ~torch.isin(ids, special)

    # Draw on the generator's device (CPU generators work for any ids), then move.
    rng_device = generator.device if generator is not None else ids.device

    def uniform():
        return torch.rand(ids.shape, generator=generator, device=rng_device).to(ids.device)

    chosen = maskable & (uniform() < p)
    action = uniform()  # one draw decides: < 0.8 mask, < 0.9 random word, else keep
    random_word = words[
        torch.randint(len(words), ids.shape, generator=generator, device=rng_device).to(ids.device)
    ]

    inputs = ids.masked_fill(chosen & (action < 0.8), vocab.mask_id)
    inputs = torch.where(chosen & (action >= 0.8) & (action < 0.9), random_word, inputs)
    labels = ids.masked_fill(~chosen, IGNORE_INDEX)
    return inputs, labels
