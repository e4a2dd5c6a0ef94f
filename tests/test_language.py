"""Tests of the toy language: exact probabilities, entropy, grammaticality, agreement."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from tinyformer.language import Grammar, Rule, ToyLanguage, Tree, english_rules

# Small enough to enumerate (588 sentences), big enough to use every rule of the grammar:
# both numbers, 0-2 adjectives, PP and RC attractors, transitive and intransitive verbs.
SMALL_OPTIONS = dict(
    nouns=[("dog", "dogs")],
    intransitive=[("sleeps", "sleep")],
    transitive=[("sees", "see")],
    adjectives=["big"],
    prepositions=["near"],
    determiners={"sg": {"the": 1.0}, "pl": {"the": 1.0}},
)


def enumerate_derivations(grammar: Grammar, symbol: str | None = None):
    """Every derivation of ``symbol`` as (words, probability, log-probability), by brute force.

    Independent of the grammar's parser: expands each rule's right-hand side as the
    Cartesian product of the derivations of its symbols. Only for non-recursive grammars.
    """
    symbol = grammar.start if symbol is None else symbol
    out = []
    for rule in grammar.by_lhs[symbol]:
        parts = [
            enumerate_derivations(grammar, s) if s in grammar.by_lhs else [((s,), 1.0, 0.0)]
            for s in rule.rhs
        ]
        for combo in itertools.product(*parts):
            words = tuple(w for part in combo for w in part[0])
            prob = rule.prob * math.prod(part[1] for part in combo)
            logp = math.log(rule.prob) + sum(part[2] for part in combo)
            out.append((words, prob, logp))
    return out


@pytest.fixture(scope="module")
def lang() -> ToyLanguage:
    return ToyLanguage()


@pytest.fixture(scope="module")
def small() -> ToyLanguage:
    return ToyLanguage(**SMALL_OPTIONS)


@pytest.fixture(scope="module")
def small_derivations(small):
    return enumerate_derivations(small.grammar)


@pytest.fixture(scope="module")
def samples(lang):
    return lang.sample(500, seed=1234)


# ------------------------------------------------------------------ exact enumeration
def test_small_language_options_exist():
    # The options the small language uses are real keyword arguments of english_rules.
    words = Grammar(english_rules(**SMALL_OPTIONS)).words
    expected = "the dog dogs sleeps sleep sees see big near that".split()
    assert sorted(words) == sorted(expected)


def test_small_grammar_probabilities_sum_to_one(small, small_derivations):
    # Count by hand: Nom.n = 1+1+1 = 3, NP.n = 3, Obj = 6, VP.n = 1+6 = 7, PP = 6, RC.n = 7,
    # Subj.n = 3 + 3*6 + 3*7 = 42, S = 2 * 42 * 7.
    assert len(small_derivations) == 2 * 42 * 7
    sentences = {words for words, _, _ in small_derivations}
    # Unambiguous: every derivation gives a different sentence.
    assert len(sentences) == len(small_derivations)
    assert math.fsum(p for _, p, _ in small_derivations) == pytest.approx(1.0, abs=1e-12)
    # The parser's inside probability of every sentence is its one derivation's probability.
    total = 0.0
    for words, p, logp in small_derivations:
        lp = small.grammar.log_prob(list(words))
        assert lp == pytest.approx(logp, abs=1e-12)
        assert math.exp(logp) == pytest.approx(p, rel=1e-12)
        total += math.exp(lp)
    assert total == pytest.approx(1.0, abs=1e-12)
    assert max(len(w) for w in sentences) == 15


def test_small_grammar_each_sentence_has_one_parse(small, small_derivations):
    used = set()
    for words, _, logp in small_derivations[::3]:
        trees = small.grammar.parses(list(words))
        assert len(trees) == 1
        assert trees[0].words() == list(words)
        assert trees[0].log_prob() == pytest.approx(logp, abs=1e-12)
        used.update(trees[0].rules())
    assert used == set(small.grammar.rules)  # the small language exercises every rule


def test_small_grammar_exact_entropy_and_length(small, small_derivations):
    entropy = -math.fsum(p * lp for _, p, lp in small_derivations)
    length = math.fsum(p * len(w) for w, p, _ in small_derivations)
    assert small.grammar.sentence_entropy() == pytest.approx(entropy, rel=1e-10)
    assert small.grammar.expected_words() == pytest.approx(length, rel=1e-10)
    assert small.entropy_per_sentence() == pytest.approx(entropy, rel=1e-10)
    assert small.expected_length() == pytest.approx(length + 1.0, rel=1e-10)
    assert small.entropy_per_token() == pytest.approx(entropy / (length + 1.0), rel=1e-10)


def test_ambiguous_grammar_sums_over_derivations():
    # "a b" has two derivations of probability 1/2 each: the inside probability adds them.
    g = Grammar(
        [
            Rule("S", ("A", "b"), 0.5),
            Rule("S", ("a", "B"), 0.5),
            Rule("A", ("a",), 1.0),
            Rule("B", ("b",), 1.0),
        ]
    )
    assert len(g.parses(["a", "b"])) == 2
    assert g.log_prob(["a", "b"]) == pytest.approx(0.0, abs=1e-12)
    assert g.log_prob(["b", "a"]) == -math.inf


@pytest.mark.parametrize(
    "rules",
    [
        [Rule("S", ("a", "S"), 0.5), Rule("S", ("b",), 0.5)],  # right recursion
        [Rule("S", ("S", "a"), 0.5), Rule("S", ("b",), 0.5)],  # left recursion
    ],
)
def test_recursive_grammar_exact(rules):
    # P(k a's and one b) = 2^-(k+1): H = E[k+1] log 2 = 2 log 2, E[words] = 2.
    g = Grammar(rules)
    assert g.sentence_entropy() == pytest.approx(2 * math.log(2), rel=1e-12)
    assert g.expected_words() == pytest.approx(2.0, rel=1e-12)
    for k in range(6):
        words = ["a"] * k + ["b"] if rules[0].rhs[0] == "a" else ["b"] + ["a"] * k
        assert len(g.parses(words)) == 1
        assert g.log_prob(words) == pytest.approx(-(k + 1) * math.log(2), abs=1e-12)
    assert g.log_prob(["a", "b", "a"]) == -math.inf


# ------------------------------------------------------------- the course's language
def test_full_language_facts(lang):
    assert len(lang.words) == 42
    assert len(set(lang.words)) == 42
    assert set(lang.words) == set(lang.grammar.words)
    assert lang.expected_length() == pytest.approx(8.1, abs=1e-12)
    assert lang.entropy_per_token() == pytest.approx(1.8479, abs=1e-4)
    assert lang.entropy_per_token() == pytest.approx(
        lang.entropy_per_sentence() / lang.expected_length(), rel=1e-12
    )


def test_samples_are_grammatical_and_parse_back(lang):
    trees = lang.sample_trees(500, seed=7)
    for k, tree in enumerate(trees):
        words = tree.words()
        assert 3 <= len(words) <= 15
        parses = lang.grammar.parses(words)
        assert len(parses) == 1
        assert parses[0] == tree
        if k % 4 == 0:  # each call parses again: check the public methods on a quarter
            assert lang.is_grammatical(words)
            assert lang.parse(words) == tree
            assert lang.log_prob(words) == pytest.approx(tree.log_prob(), abs=1e-12)
    assert [t.words() for t in trees] == lang.sample(500, seed=7)


def test_parser_pruning_by_edge_words(lang):
    """The parser skips spans whose first or last word cannot start or end the symbol;
    those word sets must contain every edge that occurs (else it would reject sentences)."""
    first, last = lang.grammar._edge_words
    determiners = {r.rhs[0] for r in lang.grammar.rules if r.lhs.startswith("Det")}
    verbs = {r.rhs[0] for r in lang.grammar.rules if r.lhs[:2] in ("Vi", "Vt")}
    nouns = {r.rhs[0] for r in lang.grammar.rules if r.lhs.startswith("N.")}
    assert first["S"] == determiners
    assert last["S"] == {r.rhs[0] for r in lang.grammar.rules if r.lhs.startswith("Vi")} | nouns
    assert first["VP.sg"] <= verbs and last["PP"] == nouns
    for tree in lang.sample_trees(300, seed=11):
        for label, i, j in tree.spans():
            words = tree.words()
            assert words[i] in first[label] and words[j - 1] in last[label]


def test_tree_spans_cover_the_words(lang):
    for tree in lang.sample_trees(50, seed=3):
        spans = tree.spans()
        assert spans[0] == ("S", 0, len(tree.words()))
        assert len(spans) == len(tree.rules())
        assert [label for label, _, _ in spans] == [r.lhs for r in tree.rules()]
        assert tree.pretty().splitlines()[0] == "S"


def test_same_seed_same_sentences_different_seed_different(lang):
    assert lang.sample(50, seed=0) == lang.sample(50, seed=0)
    assert ToyLanguage().sample(50, seed=0) == lang.sample(50, seed=0)
    assert lang.sample(50, seed=0) != lang.sample(50, seed=1)
    assert lang.sample(0, seed=0) == []
    with pytest.raises(ValueError, match="-1"):
        lang.sample(-1, seed=0)


def test_sampling_does_not_touch_global_random_state(lang):
    random.seed(5)
    expected = random.random()
    random.seed(5)
    lang.sample(20, seed=0)
    assert random.random() == expected


# ------------------------------------------------------------------- ungrammaticality
def test_broken_agreement_is_ungrammatical(lang, samples):
    for words in samples[:200]:
        broken = lang.break_agreement(words)
        a = lang.analyse(words)
        assert len(broken) == len(words)
        assert [i for i in range(len(words)) if broken[i] != words[i]] == [a.verb]
        assert lang.number(broken[a.verb]) != lang.number(words[a.verb])
        assert not lang.is_grammatical(broken)
        assert lang.log_prob(broken) == -math.inf
    assert lang.prob(lang.break_agreement(samples[0])) == 0.0
    assert lang.prob(samples[0]) > 0.0


def test_flipped_subject_noun_is_ungrammatical(lang, samples):
    for words in samples[:200]:
        subject = lang.analyse(words).subject
        flipped = list(words)
        flipped[subject] = lang.flip_number(words[subject])
        assert not lang.is_grammatical(flipped)
        assert lang.log_prob(flipped) == -math.inf


def test_shuffled_sentences_are_mostly_ungrammatical(lang, samples):
    rng = random.Random(0)
    shuffled = []
    for words in samples[:300]:
        s = list(words)
        rng.shuffle(s)
        if s != words:
            shuffled.append(s)
    assert len(shuffled) > 250
    bad = sum(not lang.is_grammatical(s) for s in shuffled)
    assert bad / len(shuffled) > 0.9
    for s in shuffled:  # is_grammatical and log_prob agree
        assert lang.is_grammatical(s) == (lang.log_prob(s) > -math.inf)


def test_edge_cases_are_ungrammatical(lang):
    assert not lang.is_grammatical([])
    assert lang.log_prob([]) == -math.inf
    assert not lang.is_grammatical(["the", "dog"])
    assert not lang.is_grammatical(["the", "dog", "sleeps", "sleeps"])
    assert not lang.is_grammatical(["the", "dog", "purrs"])  # unknown word: False, no error
    assert lang.is_grammatical(["the", "dog", "sleeps"])
    with pytest.raises(ValueError, match="dog the sleeps"):
        lang.parse(["dog", "the", "sleeps"])


# --------------------------------------------------------------------------- analyse
@pytest.mark.parametrize(
    "sentence, subject, verb, attractors, number, attractor_numbers",
    [
        ("the dog near the cats sleeps", 1, 5, (4,), "sg", ("pl",)),
        ("the dogs that chase the cat run", 1, 6, (5,), "pl", ("sg",)),
        ("a fox sings", 1, 2, (), "sg", ()),
        ("some big old mice behind these children see a cat", 3, 7, (6,), "pl", ("pl",)),
    ],
)
def test_analyse_examples(lang, sentence, subject, verb, attractors, number, attractor_numbers):
    a = lang.analyse(sentence.split())
    assert (a.subject, a.verb, a.attractors) == (subject, verb, attractors)
    assert a.number == number
    assert a.attractor_numbers == attractor_numbers
    assert a.has_mismatched_attractor == any(n != number for n in attractor_numbers)


def test_analyse_agreement_on_samples(lang, samples):
    nouns = {w for r in lang.grammar.rules if r.lhs.startswith("N.") for w in r.rhs}
    verbs = {w for r in lang.grammar.rules if r.lhs.startswith(("Vi.", "Vt.")) for w in r.rhs}
    mismatched = 0
    for words in samples:
        a = lang.analyse(words)
        assert words[a.subject] in nouns
        assert words[a.verb] in verbs
        assert lang.number(words[a.verb]) == lang.number(words[a.subject]) == a.number
        # The attractors are exactly the nouns between subject and verb.
        assert a.attractors == tuple(i for i in range(a.subject + 1, a.verb) if words[i] in nouns)
        assert a.attractor_numbers == tuple(lang.number(words[i]) for i in a.attractors)
        mismatched += a.has_mismatched_attractor
    # A PP (0.3) or an RC with an object (0.3 * 0.6) whose noun has the other number (1/2).
    p = 0.5 * (0.3 + 0.3 * 0.6)
    assert abs(mismatched / len(samples) - p) < 4 * math.sqrt(p * (1 - p) / len(samples))


def test_number_and_flip(lang):
    assert lang.number("dog") == "sg"
    assert lang.number("mice") == "pl"
    assert lang.number("sleeps") == "sg"
    assert lang.number("chase") == "pl"
    assert lang.number("the") is None
    assert lang.number("that") is None
    assert lang.flip_number("mouse") == "mice"
    assert lang.flip_number("sleep") == "sleeps"
    with pytest.raises(KeyError, match="big"):
        lang.flip_number("big")


# -------------------------------------------------------------------- Monte Carlo
def test_entropy_matches_monte_carlo(lang):
    n = 4000
    trees = lang.sample_trees(n, seed=2024)
    surprisal = [-t.log_prob() for t in trees]  # equals -log_prob(words): tested above
    tokens = [len(t.words()) + 1 for t in trees]  # words + <eos>

    def mean_and_se(xs):
        m = sum(xs) / len(xs)
        var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
        return m, math.sqrt(var / len(xs))

    h, h_se = mean_and_se(surprisal)
    assert abs(h - lang.entropy_per_sentence()) < 4 * h_se
    length, length_se = mean_and_se(tokens)
    assert abs(length - lang.expected_length()) < 4 * length_se
    # Ratio estimator of the entropy per token, standard error by the delta method.
    ratio = sum(surprisal) / sum(tokens)
    residual = [x - ratio * y for x, y in zip(surprisal, tokens, strict=True)]
    _, residual_se = mean_and_se(residual)
    assert abs(ratio - lang.entropy_per_token()) < 4 * residual_se / length
    assert residual_se / length < 0.02  # the check is tight enough to mean something


# ------------------------------------------------------------------------ bad input
def test_grammar_probabilities_must_sum_to_one():
    with pytest.raises(ValueError, match=r"'S'.*0\.9"):
        Grammar([Rule("S", ("a",), 0.5), Rule("S", ("b",), 0.4)])
    with pytest.raises(ValueError, match=r"1\.5"):
        Grammar([Rule("S", ("a",), 1.5)])
    with pytest.raises(ValueError, match=r"\b0\b"):
        Grammar([Rule("S", ("a",), 0.0), Rule("S", ("b",), 1.0)])


def test_grammar_rejects_empty_rhs_missing_start_and_no_rules():
    with pytest.raises(ValueError, match="empty.*S"):
        Grammar([Rule("S", (), 1.0)])
    with pytest.raises(ValueError, match="'S'"):
        Grammar([Rule("X", ("a",), 1.0)])
    with pytest.raises(ValueError, match="'Q'"):
        Grammar([Rule("S", ("a",), 1.0)], start="Q")
    with pytest.raises(ValueError, match="empty"):
        Grammar([])


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="sum to"):
        ToyLanguage(p_modifier=(0.5, 0.3, 0.3))


def test_unknown_word_and_string_input(lang):
    with pytest.raises(KeyError, match="purrs"):
        lang.log_prob(["the", "dog", "purrs"])
    with pytest.raises(KeyError, match="purrs"):
        lang.parse(["the", "dog", "purrs"])
    with pytest.raises(ValueError, match="string"):
        lang.log_prob("the dog sleeps")
    with pytest.raises(ValueError, match="string"):
        lang.parse("the dog sleeps")


def test_tree_is_a_value():
    r = Rule("S", ("a",), 1.0)
    assert Tree(r, ("a",)) == Tree(r, ("a",))
    assert Tree(r, ("a",)).words() == ["a"]
    assert str(r) == "S -> a  [1]"


def test_grammar_rejects_endless_and_inconsistent_grammars():
    # A symbol that can never finish a sentence.
    with pytest.raises(ValueError, match=r"derive some sentence.*'S'"):
        Grammar([Rule("S", ("S", "b"), 1.0)])
    # Trees that grow forever with positive probability: 2 * 0.6 = 1.2 children per level.
    with pytest.raises(ValueError, match=r"consistent grammar.*1\.200"):
        Grammar([Rule("S", ("S", "S"), 0.6), Rule("S", ("a",), 0.4)])


# ------------------------------------------------------------------ masked prediction


def test_masked_distribution_equals_brute_force(lang):
    """Bayes-optimal masked prediction = substitute every word, renormalise exact probabilities."""
    for words in lang.sample(25, seed=11):
        for position in (0, len(words) // 2, len(words) - 1):
            fast = lang.masked_distribution(words, position)
            brute = {}
            for w in lang.words:
                candidate = words[:position] + [w] + words[position + 1 :]
                p = lang.prob(candidate)
                if p > 0:
                    brute[w] = p
            total = sum(brute.values())
            assert fast.keys() == brute.keys()
            for w in brute:
                assert math.isclose(fast[w], brute[w] / total, rel_tol=1e-9)
            assert words[position] in fast  # the true word always fits


def test_masked_distribution_examples_and_errors(lang):
    # The noun after "the" in "the ___ sleeps" must be singular, and all six are equally likely.
    dist = lang.masked_distribution("the dog sleeps".split(), 1)
    assert set(dist) == {"dog", "cat", "bird", "fox", "child", "mouse"}
    assert all(math.isclose(p, 1 / 6) for p in dist.values())
    # The verb of "the dogs near the cat ___" agrees with "dogs", not with the attractor.
    dist = lang.masked_distribution("the dogs near the cat sleep".split(), 5)
    assert set(dist) == {"sleep", "run", "sing", "wait"}
    with pytest.raises(ValueError, match=r"position in \[0, 3\), got 3"):
        lang.masked_distribution("the dog sleeps".split(), 3)
    with pytest.raises(ValueError, match="some word completes"):
        lang.masked_distribution("the dog the cat sleeps".split(), 0)


# ------------------------------------------------------------------------ translation


def test_translation_examples(lang):
    target, alignment = lang.translate("the dog near the cats sleeps".split())
    assert target == "mis ta presa hun dorma".split()
    assert alignment == [(0, 4), (1, 4), (2, 2), (2, 3), (3, 1), (4, 5)]
    target, alignment = lang.translate("a big red fox sees these mice".split())
    assert target == "rek grom ros un mur ta te vida".split()
    assert alignment == [(0, 3), (1, 1), (2, 2), (3, 0), (4, 6), (5, 6), (6, 5), (7, 4)]


def _category(lang, word):
    """Source category of a word (Det, Adj, N, Vi, Vt, P, or 'that')."""
    kinds = {r.lhs.partition(".")[0] for r in lang.grammar.rules if r.rhs == (word,)}
    return kinds.pop() if kinds else word


def test_alignment_links_are_type_consistent(lang):
    """Each link joins a target word to a source word it translates (tests/test_translation.py
    checks the links' structure)."""
    from tinyformer.language import TARGET_CONTRACTIONS, TARGET_LEXICON

    for source, target, alignment in lang.sample_pairs(500, seed=12):
        for j, i in alignment:
            w = source[i]
            assert (
                target[j] in TARGET_LEXICON[w].split()
                or (w in TARGET_CONTRACTIONS and target[j] == TARGET_CONTRACTIONS[w])
                or (w == "the" and target[j] in TARGET_CONTRACTIONS.values())
            ), (source, target, (j, i))
        # Number survives translation: a plural noun is followed by the particle "ta",
        # a plural verb ends in "n".
        for j, i in alignment:
            if lang.number(source[i]) == "pl":
                kind = _category(lang, source[i])
                assert target[j] == "ta" or kind != "N" or target[j + 1] == "ta"
                assert kind == "N" or target[j].endswith("n")


def test_translation_is_deterministic_injective_and_head_final(lang):
    pairs = lang.sample_pairs(2000, seed=13)
    by_target = {}
    for source, target, alignment in pairs:
        assert by_target.setdefault(tuple(target), tuple(source)) == tuple(source)
        assert lang.translate(source) == (target, alignment)  # parse + translate = sampled pair
        assert alignment[-1] == (len(target) - 1, lang.analyse(source).verb)  # verb last
    assert len(set(lang.target_words)) == len(lang.target_words)
    assert not set(lang.target_words) & set(lang.words)


def test_sample_equals_the_words_of_sample_trees(lang):
    """The fast word sampler makes the same draws as the tree sampler."""
    for seed in (0, 1, 99):
        assert lang.sample(300, seed=seed) == [t.words() for t in lang.sample_trees(300, seed)]


def test_rule_draws_are_those_of_random_choices(lang):
    """_draw is random.choices with cumulative weights, minus its checks: same rule, same state.

    So the sentences every seed gives (and every stored notebook output) stay as they were.
    """
    grammar = lang.grammar
    ours, theirs = random.Random(7), random.Random(7)
    for symbol in itertools.islice(itertools.cycle(sorted(grammar.by_lhs)), 5000):
        rules = grammar.by_lhs[symbol]
        cum_weights = list(itertools.accumulate(r.prob for r in rules))
        assert grammar._draw(ours, symbol) is theirs.choices(rules, cum_weights=cum_weights)[0]
    assert ours.getstate() == theirs.getstate()
