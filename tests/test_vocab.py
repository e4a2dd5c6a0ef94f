"""Tests of the vocabulary: fixed special ids, encode/decode round trips, padded batches."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyformer.language import ToyLanguage
from tinyformer.vocab import BOS, EOS, MASK, PAD, SPECIALS, UNK, Vocab

WORDS = ToyLanguage().words
VOCAB = Vocab(WORDS)

FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None)

sentences = st.lists(st.sampled_from(WORDS), max_size=20)
# Word-like strings, some of them close to a special token ("<pad", "<>"), never equal to one.
ordinary_words = st.text(alphabet="abdpz<>é", min_size=1, max_size=6).filter(
    lambda w: w not in SPECIALS
)


def test_special_ids_are_fixed():
    assert SPECIALS == ("<pad>", "<bos>", "<eos>", "<unk>", "<mask>")
    assert (PAD, BOS, EOS, UNK, MASK) == SPECIALS
    for v in (VOCAB, Vocab([]), Vocab(["zebra"])):
        assert [v.stoi[t] for t in SPECIALS] == [0, 1, 2, 3, 4]
        assert (v.pad_id, v.bos_id, v.eos_id, v.unk_id, v.mask_id) == (0, 1, 2, 3, 4)
        assert v.itos[:5] == list(SPECIALS)
        assert v.special_ids == {0, 1, 2, 3, 4}


def test_words_follow_the_specials_in_order():
    assert len(VOCAB) == len(WORDS) + 5 == 47
    assert VOCAB.itos[5:] == WORDS
    assert all(VOCAB.stoi[w] == 5 + i for i, w in enumerate(WORDS))
    assert "dog" in VOCAB and "<eos>" in VOCAB and "zebra" not in VOCAB
    assert repr(VOCAB) == "Vocab(47 tokens: 5 special + 42 words)"
    small = Vocab(["the", "dog", "sleeps"])
    assert small.encode(["the", "dog", "sleeps"], bos=True, eos=True) == [1, 5, 6, 7, 2]


@FAST
@given(sentences, st.booleans(), st.booleans())
def test_encode_decode_round_trip(words, bos, eos):
    ids = VOCAB.encode(words, bos=bos, eos=eos)
    assert len(ids) == len(words) + bos + eos
    assert all(isinstance(i, int) and 5 <= i < len(VOCAB) for i in ids[bos : len(ids) - eos])
    assert ids[:1] == ([1] if bos else ids[:1])
    assert ids[-1:] == ([2] if eos else ids[-1:])
    assert VOCAB.decode(ids) == words
    assert VOCAB.decode(torch.tensor(ids, dtype=torch.long)) == words
    assert VOCAB.decode(ids, strip_special=False) == [BOS] * bos + words + [EOS] * eos


@FAST
@given(st.lists(ordinary_words, max_size=12, unique=True), st.data())
def test_any_vocabulary_round_trips(words, data):
    v = Vocab(words)
    assert len(v) == 5 + len(words)
    sentence = data.draw(st.lists(st.sampled_from(words), max_size=10)) if words else []
    assert v.decode(v.encode(sentence, bos=True, eos=True)) == sentence


@FAST
@given(st.lists(sentences, min_size=1, max_size=6), st.booleans(), st.booleans(), st.data())
def test_batch_shape_padding_and_lengths(batch, bos, eos, data):
    encoded = [VOCAB.encode(s, bos=bos, eos=eos) for s in batch]
    longest = max(len(e) for e in encoded)
    extra = data.draw(st.integers(0, 3))
    for length in (None, longest + extra):
        x = VOCAB.batch(batch, bos=bos, eos=eos, length=length)
        T = longest if length is None else length
        assert x.dtype == torch.long
        assert x.shape == (len(batch), T)
        for row, e, s in zip(x, encoded, batch, strict=True):
            assert row[: len(e)].tolist() == e  # content and length preserved
            assert (row[len(e) :] == VOCAB.pad_id).all()  # padded with <pad>
            assert VOCAB.decode(row) == s
        assert torch.equal(x, VOCAB.pad(encoded, length=length))


def test_pad_lengths_without_specials():
    x = VOCAB.pad([[7, 8, 9], [], [5]])
    assert x.tolist() == [[7, 8, 9], [0, 0, 0], [5, 0, 0]]
    # A real word id never equals pad_id, so the mask of real tokens recovers the lengths.
    assert (x != VOCAB.pad_id).sum(dim=1).tolist() == [3, 0, 1]


def test_unknown_token():
    with pytest.raises(KeyError, match="zebra"):
        VOCAB.encode(["the", "zebra", "sleeps"])
    with pytest.raises(KeyError, match="zebra"):
        VOCAB.batch([["the", "dog", "sleeps"], ["the", "zebra", "sleeps"]])
    ids = VOCAB.encode(["the", "zebra", "sleeps"], unk=True)
    assert ids == [VOCAB.stoi["the"], 3, VOCAB.stoi["sleeps"]]
    assert VOCAB.decode(ids) == ["the", UNK, "sleeps"]


def test_encode_rejects_a_string():
    with pytest.raises(ValueError, match="string"):
        VOCAB.encode("the dog sleeps")


def test_decode_stops_at_eos_and_skips_pad_and_bos():
    the, dog, sleeps = (VOCAB.stoi[w] for w in ("the", "dog", "sleeps"))
    ids = [1, the, 0, dog, sleeps, 2, the, the, 0]
    assert VOCAB.decode(ids) == ["the", "dog", "sleeps"]
    assert VOCAB.decode(ids, strip_special=False) == [VOCAB.itos[i] for i in ids]
    assert VOCAB.decode([2, the]) == []
    assert VOCAB.decode([]) == []
    assert VOCAB.decode([the, 3, 4, dog]) == ["the", UNK, MASK, "dog"]  # <unk>, <mask> kept
    assert VOCAB.decode(torch.tensor([1, the, 2, dog])) == ["the"]


@FAST
@given(st.lists(st.integers(0, len(VOCAB) - 1), max_size=20))
def test_decode_any_ids(ids):
    out = VOCAB.decode(ids)
    prefix = ids[: ids.index(2)] if 2 in ids else ids
    assert out == [VOCAB.itos[i] for i in prefix if i not in (0, 1)]


@pytest.mark.parametrize("bad", [-1, 47, 1000])
def test_decode_out_of_range_id(bad):
    with pytest.raises(ValueError, match=str(bad)):
        VOCAB.decode([5, bad])
    with pytest.raises(ValueError, match="47"):  # names the valid range
        VOCAB.decode([bad])


def test_decode_rejects_2d_tensor():
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        VOCAB.decode(torch.zeros(2, 3, dtype=torch.long))


@pytest.mark.parametrize(
    "words, named",
    [
        (["dog", "cat", "dog"], "dog"),
        (["a", "b", "a", "b"], "b"),
        (["dog", "<pad>"], "<pad>"),
        (["<eos>", "dog"], "<eos>"),
        (["<mask>"], "<mask>"),
    ],
)
def test_bad_word_lists(words, named):
    with pytest.raises(ValueError, match=named):
        Vocab(words)


def test_vocab_accepts_any_iterable():
    assert Vocab(iter(["x", "y"])).itos == [*SPECIALS, "x", "y"]


def test_pad_errors():
    with pytest.raises(ValueError, match=r"longest sequence \(3\).*2"):
        VOCAB.pad([[5, 6, 7], [5]], length=2)
    with pytest.raises(ValueError, match=r"\(5\).*4"):
        VOCAB.batch([["the", "dog", "sleeps"]], bos=True, eos=True, length=4)
    with pytest.raises(ValueError, match="none"):
        VOCAB.pad([])
