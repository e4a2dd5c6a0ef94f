"""Tokens <-> integer ids, the special tokens, and padded batches.

The toy language has a closed vocabulary of words, so a "tokenizer" is a lookup table.
Five special tokens come first, with fixed ids, so every model in the course agrees on them:

=====  ==========  ===============================================================
id     token       used for
=====  ==========  ===============================================================
0      ``<pad>``   filling short sequences up to the batch's length (never attended to)
1      ``<bos>``   beginning of sequence: the decoder's first input
2      ``<eos>``   end of sequence: the decoder's last prediction
3      ``<unk>``   a word outside the vocabulary (only if asked for: see :meth:`Vocab.encode`)
4      ``<mask>``  the hidden word of masked language modelling (Part II)
=====  ==========  ===============================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

__all__ = ["Vocab", "SPECIALS", "PAD", "BOS", "EOS", "UNK", "MASK"]

PAD, BOS, EOS, UNK, MASK = "<pad>", "<bos>", "<eos>", "<unk>", "<mask>"
SPECIALS = (PAD, BOS, EOS, UNK, MASK)


class Vocab:
    """A fixed mapping between tokens and ids; ids 0-4 are :data:`SPECIALS`.

    >>> v = Vocab(["the", "dog", "sleeps"])
    >>> v.encode(["the", "dog", "sleeps"], bos=True, eos=True)
    [1, 5, 6, 7, 2]
    >>> v.decode([1, 5, 6, 7, 2])
    ['the', 'dog', 'sleeps']
    """

    def __init__(self, words: Iterable[str]):
        words = list(words)
        clash = [w for w in words if w in SPECIALS]
        if clash:
            raise ValueError(f"expected ordinary words, got special token(s) {clash} among them")
        if len(set(words)) != len(words):
            dupes = sorted({w for w in words if words.count(w) > 1})
            raise ValueError(f"expected distinct words, got duplicates {dupes}")
        self.itos: list[str] = list(SPECIALS) + words
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        self.pad_id, self.bos_id, self.eos_id, self.unk_id, self.mask_id = range(len(SPECIALS))
        self.special_ids = frozenset(range(len(SPECIALS)))

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __repr__(self) -> str:
        return f"Vocab({len(self)} tokens: {len(SPECIALS)} special + {len(self) - len(SPECIALS)} words)"

    # ---------------------------------------------------------------- one sequence
    def encode(
        self, tokens: Sequence[str], bos: bool = False, eos: bool = False, unk: bool = False
    ) -> list[int]:
        """Ids of ``tokens``, optionally framed by ``<bos>`` and ``<eos>``.

        An unknown token raises ``KeyError`` naming it, unless ``unk=True``, which maps it
        to ``<unk>``: in a closed toy language an unknown word is almost always a bug.
        """
        if isinstance(tokens, str):
            raise ValueError(
                f"expected a sequence of tokens, got the string {tokens!r} (use .split())"
            )
        ids = []
        for t in tokens:
            if t in self.stoi:
                ids.append(self.stoi[t])
            elif unk:
                ids.append(self.unk_id)
            else:
                raise KeyError(
                    f"unknown token {t!r}: expected one of the {len(self)} tokens of the vocabulary "
                    "(pass unk=True to map unknown tokens to <unk>)"
                )
        return ([self.bos_id] if bos else []) + ids + ([self.eos_id] if eos else [])

    def decode(self, ids: Iterable[int] | torch.Tensor, strip_special: bool = True) -> list[str]:
        """Tokens of ``ids``. With ``strip_special`` (the default) drops ``<pad>``, ``<bos>``
        and ``<eos>`` and stops at the first ``<eos>``; ``<unk>`` and ``<mask>`` are kept."""
        if isinstance(ids, torch.Tensor):
            if ids.dim() != 1:
                raise ValueError(f"expected a 1-D tensor of ids, got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= i < len(self):
                raise ValueError(f"expected ids in [0, {len(self)}), got {i}")
            if strip_special and i == self.eos_id:
                break
            if strip_special and i in (self.pad_id, self.bos_id):
                continue
            out.append(self.itos[i])
        return out

    # ------------------------------------------------------------------- batches
    def pad(self, sequences: Sequence[Sequence[int]], length: int | None = None) -> torch.Tensor:
        """Stack id sequences into a ``(B, T)`` long tensor, right-padded with ``<pad>``.

        ``T`` is the longest sequence, or ``length`` if given (which must fit them all).
        """
        if len(sequences) == 0:
            raise ValueError("expected at least one sequence, got none")
        longest = max(len(s) for s in sequences)
        T = longest if length is None else length
        if T < longest:
            raise ValueError(f"expected length >= the longest sequence ({longest}), got {length}")
        # One tensor from padded Python lists: faster than filling a tensor row by row.
        rows = [list(s) + [self.pad_id] * (T - len(s)) for s in sequences]
        return torch.tensor(rows, dtype=torch.long)

    def batch(
        self,
        sentences: Sequence[Sequence[str]],
        bos: bool = False,
        eos: bool = False,
        length: int | None = None,
    ) -> torch.Tensor:
        """Encode and pad a list of sentences: ``(B, T)`` long tensor of ids."""
        return self.pad([self.encode(s, bos=bos, eos=eos) for s in sentences], length=length)
