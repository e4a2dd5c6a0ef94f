"""The toy translation (Part III): a target language that differs from the source in word
order, vocabulary and length, with the word alignment of every pair as (target, source) links."""

from __future__ import annotations

from collections import Counter

import pytest

from tinyformer.language import (
    TARGET_CONTRACTIONS,
    TARGET_LEXICON,
    ToyLanguage,
    translate_tree,
)


@pytest.fixture(scope="module")
def lang():
    return ToyLanguage()


@pytest.fixture(scope="module")
def pairs(lang):
    return lang.sample_pairs(3000, seed=21)


def test_alignment_links_are_valid(pairs):
    """Links are (j, i) pairs inside both sentences, sorted, without repeats, and every
    target word has at least one."""
    for source, target, alignment in pairs:
        assert alignment == sorted(set(alignment))
        assert all(0 <= j < len(target) and 0 <= i < len(source) for j, i in alignment)
        assert {j for j, _ in alignment} == set(range(len(target)))


def test_lengths_differ(pairs):
    differs = [len(s) != len(t) for s, t, _ in pairs]
    assert 0.4 < sum(differs) / len(differs) < 0.9  # often, not always
    assert any(len(t) < len(s) for s, t, _ in pairs)
    assert any(len(t) > len(s) for s, t, _ in pairs)


def test_some_source_words_are_unaligned(pairs):
    """A "the" that does not follow a preposition has no counterpart; every other source
    word is aligned."""
    n_unaligned = 0
    for source, target, alignment in pairs:
        aligned = {i for _, i in alignment}
        for i, w in enumerate(source):
            after_preposition = i > 0 and source[i - 1] in TARGET_CONTRACTIONS
            if w == "the" and not after_preposition:
                assert i not in aligned
                n_unaligned += 1
            else:
                assert i in aligned, (source, target, alignment, i)
    assert n_unaligned > 1000


def test_one_to_many_and_many_to_one_links(lang, pairs):
    """A plural noun gives two target words (stem + "ta"); "near the" gives one."""
    one_to_many = many_to_one = 0
    for source, target, alignment in pairs:
        per_source = Counter(i for _, i in alignment)
        per_target = Counter(j for j, _ in alignment)
        for i, n in per_source.items():
            is_plural_noun = lang.number(source[i]) == "pl" and TARGET_LEXICON[source[i]].endswith(
                " ta"
            )
            assert (n == 2) == is_plural_noun
            one_to_many += n == 2
        for j, n in per_target.items():
            assert n <= 2
            if n == 2:
                many_to_one += 1
                (i1, i2) = sorted(i for jj, i in alignment if jj == j)
                assert source[i1] in TARGET_CONTRACTIONS and source[i2] == "the"
                assert target[j] == TARGET_CONTRACTIONS[source[i1]]
    assert one_to_many > 1000 and many_to_one > 100


def test_alignment_is_not_a_permutation_but_word_counts_add_up(pairs):
    for source, target, _ in pairs:
        n_the_dropped = sum(
            w == "the" and not (i > 0 and source[i - 1] in TARGET_CONTRACTIONS)
            for i, w in enumerate(source)
        )
        n_contracted = sum(
            w == "the" and i > 0 and source[i - 1] in TARGET_CONTRACTIONS
            for i, w in enumerate(source)
        )
        n_plural_nouns = sum(TARGET_LEXICON[w].endswith(" ta") for w in source)
        assert len(target) == len(source) - n_the_dropped - n_contracted + n_plural_nouns


def test_translation_is_deterministic_given_the_tree(lang):
    trees = lang.sample_trees(300, seed=22)
    again = lang.sample_trees(300, seed=22)
    for tree, same in zip(trees, again, strict=True):
        assert translate_tree(tree) == translate_tree(same) == translate_tree(tree)
        assert lang.translate(tree.words()) == translate_tree(tree)  # parse, then translate


def test_examples(lang):
    assert lang.translate("the dog sleeps".split()) == (["hun", "dorma"], [(0, 1), (1, 2)])
    target, alignment = lang.translate("the dogs behind the cat chase a mouse".split())
    assert target == "mis dopa hun ta mur un xasan".split()
    assert alignment == [(0, 4), (1, 2), (1, 3), (2, 1), (3, 1), (4, 7), (5, 6), (6, 5)]


def test_target_vocabulary(lang, pairs):
    vocab = set(lang.target_words)
    assert len(vocab) == len(lang.target_words)
    assert not vocab & set(lang.words)
    used = {w for _, t, _ in pairs for w in t}
    assert used == vocab  # every target word occurs, and only these


def test_grammar_options_translate_too():
    """Sentences of the english_rules options (relative clauses, fronted PPs) have a
    translation with valid links."""
    lang = ToyLanguage(p_modifier=(0.2, 0.2, 0.2, 0.4), p_fronted_pp=0.3, p_object_rc=(0.3, 0.3))
    for source, target, alignment in lang.sample_pairs(300, seed=23):
        assert {j for j, _ in alignment} == set(range(len(target)))
        assert all(0 <= i < len(source) for _, i in alignment)
        assert lang.translate(source) == (target, alignment)
