"""The toy grammar's options for Chapter 8: relative clauses on subjects and objects, fronted PPs.

The default grammar must stay exactly as it was (every other chapter depends on it); the
options must keep the grammar unambiguous, so that probabilities, parsing, analysis and
broken agreement stay exact.
"""

import math

import pytest

from tinyformer.language import Grammar, ToyLanguage, english_rules

#: Chapter 8's setting.
HARD = dict(
    p_modifier=(0.2, 0.3, 0.2, 0.3), p_fronted_pp=0.3, p_object_rc=(0.3, 0.3), p_transitive=0.7
)

#: ToyLanguage().sample(8, seed=1234), recorded from the code before the options existed.
DEFAULT_SAMPLE = [
    "these red old dogs near these foxes see the mouse",
    "a fox behind the cat chases some dogs",
    "a fox waits",
    "the cats that sleep see the birds",
    "the happy birds under the birds sing",
    "some small children near the mice follow the cat",
    "this small mouse near the bird follows the red children",
    "this bird behind the happy mice runs",
]
DEFAULT_RULES = 68
DEFAULT_ENTROPY_PER_TOKEN = 1.8479443296361955


@pytest.fixture(scope="module")
def hard():
    return ToyLanguage(**HARD)


# --------------------------------------------------------------------- default unchanged
def test_default_grammar_is_unchanged():
    lang = ToyLanguage()
    assert [" ".join(s) for s in lang.sample(8, seed=1234)] == DEFAULT_SAMPLE
    assert len(lang.grammar.rules) == DEFAULT_RULES
    assert lang.entropy_per_token() == pytest.approx(DEFAULT_ENTROPY_PER_TOKEN, abs=1e-12)


def test_options_switched_off_give_the_default_rules():
    assert (
        english_rules(p_modifier=(0.4, 0.3, 0.3, 0.0), p_fronted_pp=0.0, p_object_rc=(0.0, 0.0))
        == english_rules()
    )


def test_options_add_no_words(hard):
    assert hard.words == ToyLanguage().words


# ------------------------------------------------------------------ unique derivations
def test_samples_have_exactly_one_derivation(hard):
    trees = hard.sample_trees(300, seed=5)
    kinds = {"fronted": 0, "object_rc": 0, "on_object": 0}
    for tree in trees:
        words = tree.words()
        parses = hard.grammar.parses(words)
        assert len(parses) == 1, " ".join(words)
        assert parses[0] == tree
        kinds["fronted"] += any(r.lhs == "S" and r.rhs[0] == "PP" for r in tree.rules())
        kinds["object_rc"] += any(r.lhs == "ORC" for r in tree.rules())
        kinds["on_object"] += any(r.lhs == "Obj" and len(r.rhs) == 2 for r in tree.rules())
    assert min(kinds.values()) > 30, kinds  # the options are exercised


def test_sample_and_sample_trees_agree(hard):
    assert hard.sample(50, seed=9) == [t.words() for t in hard.sample_trees(50, seed=9)]


def test_log_prob_of_samples_is_the_tree_log_prob(hard):
    for tree in hard.sample_trees(200, seed=11):
        assert hard.log_prob(tree.words()) == pytest.approx(tree.log_prob(), abs=1e-9)


def _derivations(grammar, symbol):
    """Every (words, log-probability) that ``symbol`` derives: brute force, small grammars."""
    if symbol not in grammar.by_lhs:
        return [((symbol,), 0.0)]
    out = []
    for rule in grammar.by_lhs[symbol]:
        partial = [((), math.log(rule.prob))]
        for s in rule.rhs:
            partial = [
                (w + w2, lp + lp2) for w, lp in partial for w2, lp2 in _derivations(grammar, s)
            ]
        out.extend(partial)
    return out


@pytest.mark.parametrize(
    "options",
    [
        dict(p_modifier=(0.25, 0.25, 0.25, 0.25), p_adjectives=(0.7, 0.3, 0.0), p_fronted_pp=0.4),
        # relative clauses on objects too (fewer other options: the list grows fast)
        dict(p_modifier=(0.4, 0.0, 0.3, 0.3), p_adjectives=(1.0, 0.0, 0.0), p_object_rc=(0.2, 0.3)),
    ],
)
def test_small_grammar_with_options_enumerates_to_one(options):
    """With few words per category the whole language can be listed: probabilities sum to
    1, no sentence has two derivations, and the parser's log_prob and the entropy match."""
    rules = english_rules(
        nouns=[("dog", "dogs"), ("cat", "cats")],
        intransitive=[("sleeps", "sleep")],
        transitive=[("sees", "see")],
        adjectives=["big"],
        prepositions=["near"],
        determiners={"sg": {"the": 0.5, "a": 0.5}, "pl": {"the": 0.5, "some": 0.5}},
        **options,
    )
    grammar = Grammar(rules)
    derivations = _derivations(grammar, "S")
    total = sum(math.exp(lp) for _, lp in derivations)
    assert total == pytest.approx(1.0, abs=1e-9)
    sentences = {}
    for words, lp in derivations:
        assert words not in sentences, f"two derivations of {' '.join(words)!r}"
        sentences[words] = lp
    entropy = -sum(math.exp(lp) * lp for lp in sentences.values())
    assert grammar.sentence_entropy() == pytest.approx(entropy, rel=1e-9)
    for words, lp in list(sentences.items())[::97]:  # a spread of them, for speed
        assert grammar.log_prob(words) == pytest.approx(lp, abs=1e-9)


# ------------------------------------------------------------- analysis and agreement
@pytest.mark.parametrize(
    ("sentence", "subject", "verb", "attractors", "number", "mismatched"),
    [
        ("near the cats the dog sleeps", 4, 5, (), "sg", False),
        ("the dog that the cats chase sleeps", 1, 6, (4,), "sg", True),
        ("the dogs that the cat sees sleep", 1, 6, (4,), "pl", True),
        (
            "under a bird the happy dogs that these cats like see the mouse",
            5,
            10,
            (8,),
            "pl",
            False,
        ),
        ("near the cat the dog near the cats sleeps", 4, 8, (7,), "sg", True),
        ("behind the mice the fox that sees the bird runs", 4, 9, (8,), "sg", False),
        # relative clauses on objects: the last verb is not the main verb
        ("the dog sees the cats that sleep", 1, 2, (), "sg", False),
        ("the dogs that the cat sees chase the bird that the mice follow", 1, 6, (4,), "pl", True),
        ("the fox that likes the birds that sing waits", 1, 8, (5,), "sg", True),
    ],
)
def test_analyse_new_structures(hard, sentence, subject, verb, attractors, number, mismatched):
    a = hard.analyse(sentence.split())
    assert (a.subject, a.verb, a.attractors, a.number) == (subject, verb, attractors, number)
    assert a.has_mismatched_attractor is mismatched


def test_main_verb_agrees_with_the_analysed_subject(hard):
    for words in hard.sample(300, seed=13):
        a = hard.analyse(words)
        assert hard.number(words[a.verb]) == hard.number(words[a.subject]) == a.number
        assert all(a.subject < i < a.verb for i in a.attractors)


def test_break_agreement_makes_sentences_ungrammatical(hard):
    for words in hard.sample(300, seed=17):
        broken = hard.break_agreement(words)
        a = hard.analyse(words)
        assert [i for i, (x, y) in enumerate(zip(words, broken, strict=True)) if x != y] == [a.verb]
        assert not hard.is_grammatical(broken)


def test_embedded_verb_agrees_with_embedded_subject(hard):
    assert hard.is_grammatical("the dog that the cats chase sleeps".split())
    assert not hard.is_grammatical("the dog that the cats chases sleeps".split())
    assert not hard.is_grammatical("the dog that the cats chase the bird sleeps".split())
    assert hard.is_grammatical("the dog sees the cats that sleep".split())
    assert not hard.is_grammatical("the dog sees the cats that sleeps".split())
    assert hard.is_grammatical("the dog sees the cat that the birds chase".split())
    assert not hard.is_grammatical("the dog sees the cat that the birds chase the fox".split())


def test_masked_distribution_with_options(hard):
    dist = hard.masked_distribution("near the cats the dog that the birds chase sleeps".split(), 4)
    assert sum(dist.values()) == pytest.approx(1.0)
    assert set(dist) == {"dog", "cat", "bird", "fox", "child", "mouse"}  # singular: sleeps


@pytest.mark.parametrize(
    "options",
    [
        dict(p_modifier=(0.5, 0.5)),
        dict(p_fronted_pp=1.0),
        dict(p_fronted_pp=-0.1),
        dict(p_modifier=(0.4, 0.3, 0.3, 0.3)),
        dict(p_object_rc=(0.5, 0.5)),
        dict(p_object_rc=(-0.1, 0.2)),
        dict(p_object_rc=(0.3,)),
    ],
)
def test_bad_options_are_rejected(options):
    with pytest.raises(ValueError):
        ToyLanguage(**options)
