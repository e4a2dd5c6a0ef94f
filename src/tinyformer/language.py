"""The toy language: one small, seeded world whose exact probabilities we know.

The language is a probabilistic context-free grammar (PCFG). A sentence is made by
expanding the start symbol ``S`` with randomly chosen rules until only words are
left. The grammar is *unambiguous*: every sentence has exactly one derivation, so

    P(sentence) = product of the probabilities of the rules in its derivation,

and its entropy can be computed exactly from the rules. That is the number every
chapter of the course measures its models against: no language model can reach a
lower cross-entropy on this language than its entropy per token.

What the grammar has (see :func:`english_rules`):

- determiners, adjectives, nouns with singular and plural forms;
- verbs that agree in number with their subject (``the dog sleeps``, ``the dogs sleep``);
- prepositional phrases and relative clauses that put an *attractor* noun between the
  subject and its verb (``the dog near the cats sleeps``): a model must look past the
  nearest noun to get the agreement right;
- at most 15 words, so the longest sentence with ``<bos>``/``<eos>`` fits in 17 positions
  (with the default options; Chapter 8's options, fronted prepositional phrases and
  relative clauses inside subjects and objects, make sentences longer).

Derivations are kept as :class:`Tree` objects, so later chapters can read off where the
subject, verb and attractor are, break agreement on purpose, or translate a sentence
rule by rule into a second language with its word alignment.
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right
from collections import defaultdict
from dataclasses import dataclass
from functools import cached_property
from itertools import accumulate

import numpy as np

__all__ = [
    "Rule",
    "Tree",
    "Grammar",
    "ToyLanguage",
    "Analysis",
    "english_rules",
    "translate_tree",
    "TARGET_ORDER",
    "TARGET_LEXICON",
]


@dataclass(frozen=True)
class Rule:
    """One rewrite rule ``lhs -> rhs`` chosen with probability ``prob`` among the rules of ``lhs``."""

    lhs: str
    rhs: tuple[str, ...]
    prob: float

    def __str__(self) -> str:
        return f"{self.lhs} -> {' '.join(self.rhs)}  [{self.prob:g}]"


@dataclass(frozen=True)
class Tree:
    """A derivation: the rule used at this node and the subtrees (or words) it produced."""

    rule: Rule
    children: tuple[Tree | str, ...]

    @property
    def label(self) -> str:
        return self.rule.lhs

    def words(self) -> list[str]:
        """The sentence this tree derives (its leaves, left to right)."""
        out: list[str] = []
        for child in self.children:
            out.extend([child] if isinstance(child, str) else child.words())
        return out

    def rules(self) -> list[Rule]:
        """Every rule used in the derivation, in pre-order."""
        out = [self.rule]
        for child in self.children:
            if isinstance(child, Tree):
                out.extend(child.rules())
        return out

    def log_prob(self) -> float:
        """Natural-log probability of this derivation: the sum of its rules' log-probabilities."""
        return sum(math.log(r.prob) for r in self.rules())

    def spans(self, start: int = 0) -> list[tuple[str, int, int]]:
        """``(label, i, j)`` for every node: the node derives words ``i .. j-1`` (pre-order)."""
        out = []
        end = start
        inner = []
        for child in self.children:
            if isinstance(child, str):
                end += 1
            else:
                sub = child.spans(end)
                inner.extend(sub)
                end = sub[0][2]
        out.append((self.label, start, end))
        return out + inner

    def pretty(self, indent: str = "") -> str:
        """A multi-line drawing of the tree, one node per line."""
        lines = [indent + self.label]
        for child in self.children:
            if isinstance(child, str):
                lines.append(indent + "  " + repr(child))
            else:
                lines.append(child.pretty(indent + "  "))
        return "\n".join(lines)


class Grammar:
    """A probabilistic context-free grammar with exact probabilities and entropy.

    Symbols that appear on the left of some rule are *nonterminals*; every other symbol
    is a word (a *terminal*). The probabilities of the rules sharing a left-hand side must
    sum to one. Rules may not be empty (every symbol derives at least one word).
    """

    def __init__(self, rules: list[Rule], start: str = "S"):
        if not rules:
            raise ValueError("expected at least one rule, got an empty list")
        self.rules = list(rules)
        self.start = start
        self.by_lhs: dict[str, list[Rule]] = defaultdict(list)
        for rule in self.rules:
            if not rule.rhs:
                raise ValueError(
                    f"expected a non-empty right-hand side, got an empty one for {rule.lhs}"
                )
            if not 0.0 < rule.prob <= 1.0:
                raise ValueError(
                    f"expected a probability in (0, 1], got {rule.prob} for rule {rule}"
                )
            self.by_lhs[rule.lhs].append(rule)
        self.by_lhs = dict(self.by_lhs)
        if start not in self.by_lhs:
            raise ValueError(f"expected rules for the start symbol {start!r}, found none")
        for lhs, alternatives in self.by_lhs.items():
            total = sum(r.prob for r in alternatives)
            if abs(total - 1.0) > 1e-9:
                raise ValueError(f"expected the rules of {lhs!r} to sum to 1, they sum to {total}")
        self.nonterminals = list(self.by_lhs)
        words = {s for r in self.rules for s in r.rhs if s not in self.by_lhs}
        # Keep words in the order the rules first mention them: a stable, readable vocabulary.
        order = {}
        for r in self.rules:
            for s in r.rhs:
                if s in words and s not in order:
                    order[s] = len(order)
        self.words = sorted(words, key=order.__getitem__)
        self._length_range  # noqa: B018 -- fails early on a symbol that never finishes
        # A PCFG whose trees grow forever with positive probability does not define a
        # distribution over sentences: the expected number of children must shrink.
        radius = max(abs(np.linalg.eigvals(self._expansion_matrix()[0])))
        if radius >= 1.0:
            raise ValueError(
                f"expected a consistent grammar (expected growth < 1 per level), got {radius:.3f}"
            )

    # ----------------------------------------------------------------- sampling
    @cached_property
    def _cum_weights(self) -> dict[str, list[float]]:
        """Cumulative rule probabilities per symbol, so each draw needs no summing."""
        return {lhs: list(accumulate(r.prob for r in alts)) for lhs, alts in self.by_lhs.items()}

    def _draw(self, rng: random.Random, symbol: str) -> Rule:
        """One rule of ``symbol``, drawn with the rules' probabilities.

        Exactly what ``rng.choices(rules, cum_weights=cw)[0]`` computes, from the same single
        ``rng.random()``, so the same rule; without that function's per-call checks it is
        about twice as fast, and every training step draws thousands of rules.
        """
        rules, cum_weights = self.by_lhs[symbol], self._cum_weights[symbol]
        return rules[bisect_right(cum_weights, rng.random() * cum_weights[-1], 0, len(rules) - 1)]

    def sample_tree(self, rng: random.Random, symbol: str | None = None) -> Tree:
        """Expand ``symbol`` (default: the start symbol) by drawing rules from ``rng``."""
        rule = self._draw(rng, self.start if symbol is None else symbol)
        children = tuple(self.sample_tree(rng, s) if s in self.by_lhs else s for s in rule.rhs)
        return Tree(rule, children)

    def sample_words(self, rng: random.Random, symbol: str | None = None) -> list[str]:
        """The words of :meth:`sample_tree` for the same ``rng`` state, without building the tree.

        Same draws in the same order, so the same sentence; about twice as fast, which
        matters when every training step samples a fresh batch.
        """
        out: list[str] = []
        stack = [self.start if symbol is None else symbol]
        while stack:  # depth first, left to right: the order sample_tree expands in
            s = stack.pop()
            if s in self.by_lhs:
                stack.extend(reversed(self._draw(rng, s).rhs))
            else:
                out.append(s)
        return out

    # ------------------------------------------------------------------ parsing
    @cached_property
    def _length_range(self) -> dict[str, tuple[int, float]]:
        """Shortest and longest yield of each nonterminal; the parser skips spans outside it."""
        inf = math.inf
        lo = {s: inf for s in self.nonterminals}
        hi = {s: 0.0 for s in self.nonterminals}
        # Each pass lets yields grow by one level of the tree; a grammar without recursion
        # is settled after as many passes as it has nonterminals.
        for _ in range(len(self.nonterminals) + 1):
            for lhs, alternatives in self.by_lhs.items():
                lo[lhs] = min(sum(lo.get(s, 1) for s in r.rhs) for r in alternatives)
                hi[lhs] = max(sum(hi.get(s, 1) for s in r.rhs) for r in alternatives)
        settled = all(
            hi[lhs] == max(sum(hi.get(s, 1) for s in r.rhs) for r in alts)
            for lhs, alts in self.by_lhs.items()
        )
        if not settled:  # recursive grammar: unbounded yields, prune by the minimum only
            hi = {s: inf for s in self.nonterminals}
        endless = [s for s in self.nonterminals if lo[s] == inf]
        if endless:
            raise ValueError(
                f"expected every symbol to derive some sentence, got none from {endless}"
            )
        return {s: (int(lo[s]), hi[s]) for s in self.nonterminals}

    @cached_property
    def _edge_words(self) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        """The words each nonterminal's yield can start with, and those it can end with.

        No rule is empty, so a yield starts where its rule's first symbol's yield starts;
        repeating that step until nothing changes covers recursive grammars too.
        """
        first = {s: set() for s in self.nonterminals}
        last = {s: set() for s in self.nonterminals}
        changed = True
        while changed:
            changed = False
            for edge, position in ((first, 0), (last, -1)):
                for rule in self.rules:
                    symbol = rule.rhs[position]
                    words = edge[symbol] if symbol in self.by_lhs else {symbol}
                    if not words <= edge[rule.lhs]:
                        edge[rule.lhs] |= words
                        changed = True
        return first, last

    def parses(self, words: list[str] | tuple[str, ...]) -> list[Tree]:
        """Every derivation of ``words`` from the start symbol (empty if it is not a sentence).

        A memoised top-down chart parser: ``derive(symbol, i, j)`` lists the trees by which
        ``symbol`` derives ``words[i:j]``. It skips spans that are too short or too long
        for the symbol, or whose first or last word the symbol cannot start or end with
        (about 0.2 ms per sentence of the toy language; three times that without the
        end-word check). Fine for sentences of a few dozen words.
        A ``None`` in ``words`` is a wildcard that matches any word.
        """
        words = tuple(words)
        n = len(words)
        lengths = self._length_range
        derive_memo: dict[tuple[str, int, int], list[Tree]] = {}
        # Keyed by id(rule): hashing the Rule dataclass itself took a quarter of the parse time.
        seq_memo: dict[tuple[int, int, int, int], list[tuple]] = {}

        first, last = self._edge_words

        def fits(symbol: str, i: int, j: int) -> bool:
            """Whether ``symbol`` could derive ``words[i:j]``, judged by length and end words."""
            if symbol not in self.by_lhs:
                return j - i == 1
            lo, hi = lengths[symbol]
            return (
                lo <= j - i <= hi
                and (words[i] is None or words[i] in first[symbol])
                and (words[j - 1] is None or words[j - 1] in last[symbol])
            )

        def derive(symbol: str, i: int, j: int) -> list[Tree]:
            key = (symbol, i, j)
            if key not in derive_memo:
                trees = []
                for rule in self.by_lhs[symbol]:
                    for children in sequence(rule, 0, i, j):
                        trees.append(Tree(rule, children))
                derive_memo[key] = trees
            return derive_memo[key]

        def sequence(rule: Rule, k: int, i: int, j: int) -> list[tuple]:
            """All ways ``rule.rhs[k:]`` derives ``words[i:j]``, as tuples of children."""
            key = (id(rule), k, i, j)
            if key in seq_memo:
                return seq_memo[key]
            rest = rule.rhs[k:]
            out: list[tuple] = []
            if not rest:
                out = [()] if i == j else []
            else:
                symbol = rest[0]
                min_rest = sum(lengths[s][0] if s in self.by_lhs else 1 for s in rest[1:])
                for m in range(i + 1, j - min_rest + 1):
                    if not fits(symbol, i, m):
                        continue
                    if symbol in self.by_lhs:
                        heads = derive(symbol, i, m)
                    else:
                        # None is a wildcard: any word may stand there (masked prediction).
                        heads = [symbol] if words[i] in (symbol, None) else []
                    if heads:
                        tails = sequence(rule, k + 1, m, j)
                        out.extend((h,) + t for h in heads for t in tails)
            seq_memo[key] = out
            return out

        if n == 0 or not fits(self.start, 0, n):
            return []
        return derive(self.start, 0, n)

    def log_prob(self, words: list[str] | tuple[str, ...]) -> float:
        """Exact natural-log probability of a sentence: ``-inf`` if the grammar cannot derive it.

        Sums over all derivations (the inside probability), so it is exact even for an
        ambiguous grammar; for ours there is exactly one.
        """
        trees = self.parses(words)
        if not trees:
            return -math.inf
        logs = [t.log_prob() for t in trees]
        top = max(logs)
        return top + math.log(sum(math.exp(x - top) for x in logs))

    # ------------------------------------------------------------------ entropy
    def _expected(self, per_rule_cost) -> dict[str, float]:
        """Solve ``E[A] = sum_r p_r (cost(r) + sum_{B in rhs(r)} E[B])`` for every nonterminal A.

        A linear system ``(I - M) E = c`` with ``M[A, B]`` the expected number of B's that
        one expansion of A produces; exact for recursive grammars too.
        """
        M, index = self._expansion_matrix()
        c = np.zeros(len(index))
        for lhs, alternatives in self.by_lhs.items():
            for r in alternatives:
                c[index[lhs]] += r.prob * per_rule_cost(r)
        E = np.linalg.solve(np.eye(len(index)) - M, c)
        return {s: float(E[i]) for s, i in index.items()}

    def _expansion_matrix(self) -> tuple[np.ndarray, dict[str, int]]:
        """``M[A, B]``: expected number of B's that one expansion of A produces."""
        index = {s: i for i, s in enumerate(self.nonterminals)}
        M = np.zeros((len(index), len(index)))
        for lhs, alternatives in self.by_lhs.items():
            for r in alternatives:
                for s in r.rhs:
                    if s in index:
                        M[index[lhs], index[s]] += r.prob
        return M, index

    def sentence_entropy(self) -> float:
        """H(S) in nats: the expected ``-log P(sentence)``.

        Because each sentence has one derivation, H(sentence) = H(derivation), and the
        derivation's entropy adds up the entropy of every rule choice made along the way.
        """
        return self._expected(lambda r: -math.log(r.prob))[self.start]

    def expected_words(self) -> float:
        """E[number of words in a sentence]."""
        return self._expected(lambda r: sum(1 for s in r.rhs if s not in self.by_lhs))[self.start]


# ---------------------------------------------------------------------------------------
# The English-like toy grammar
# ---------------------------------------------------------------------------------------

#: Nouns as (singular, plural).
NOUNS = [("dog", "dogs"), ("cat", "cats"), ("bird", "birds"), ("fox", "foxes"),
         ("child", "children"), ("mouse", "mice")]  # fmt: skip
#: Intransitive verbs as (singular, plural): "the dog sleeps", "the dogs sleep".
INTRANSITIVE = [("sleeps", "sleep"), ("runs", "run"), ("sings", "sing"), ("waits", "wait")]
#: Transitive verbs as (singular, plural): "the dog sees the cat".
TRANSITIVE = [("sees", "see"), ("chases", "chase"), ("likes", "like"), ("follows", "follow")]
ADJECTIVES = ["big", "small", "red", "old", "happy"]
PREPOSITIONS = ["near", "behind", "under"]
#: Determiners with their probabilities, per number.
DETERMINERS = {"sg": {"the": 0.5, "a": 0.25, "this": 0.25},
               "pl": {"the": 0.5, "some": 0.25, "these": 0.25}}  # fmt: skip


def english_rules(
    nouns=NOUNS,
    intransitive=INTRANSITIVE,
    transitive=TRANSITIVE,
    adjectives=ADJECTIVES,
    prepositions=PREPOSITIONS,
    determiners=DETERMINERS,
    p_modifier: tuple[float, ...] = (0.4, 0.3, 0.3),
    p_transitive: float = 0.6,
    p_adjectives: tuple[float, float, float] = (0.6, 0.3, 0.1),
    p_fronted_pp: float = 0.0,
    p_object_rc: tuple[float, float] = (0.0, 0.0),
) -> list[Rule]:
    """The rules of the toy grammar. Number (``sg``/``pl``) is part of the nonterminal names.

    ::

        S       -> Subj.n VP.n                      (n = sg or pl, 1/2 each)
        Subj.n  -> NP.n | NP.n PP | NP.n RC.n       (p_modifier)
        PP      -> P NP.m                           (attractor noun of either number)
        RC.n    -> that VP.n                        ("the dog that sees the cats ...")
        VP.n    -> Vi.n | Vt.n Obj                  (1 - p_transitive, p_transitive)
        Obj     -> NP.sg | NP.pl
        NP.n    -> Det.n Nom.n
        Nom.n   -> N.n | Adj N.n | Adj Adj N.n      (p_adjectives)

    Only the subject takes a prepositional phrase or a relative clause, and objects take
    neither (unless ``p_object_rc`` says so, and then only a relative clause with no
    object of its own), so no sentence has two derivations (no attachment ambiguity).
    Words are uniform within their category, except determiners.

    Three options, off by default (the default grammar is exactly the one above), make the
    subject and the main verb harder to find by position (Chapter 8 uses them):

    - ``p_modifier`` with a fourth entry, the probability of an *object* relative clause
      ``Subj.n -> NP.n ORC`` with ``ORC -> that NP.m Vt.m`` (m = sg or pl, 1/2 each):
      "the dog that the cats chase sleeps". The embedded verb agrees with the embedded
      subject, not with the first noun, and it has no object (the gap is the head noun).
      After "that" an object relative clause starts with a determiner and a subject
      relative clause with a verb, so the two never share a derivation.
    - ``p_fronted_pp``: ``S -> PP Subj.n VP.n``: "near the cats the dog sleeps", a
      prepositional phrase before the subject, so the first noun is not the subject.
      A sentence starts with a preposition exactly when it has one.
    - ``p_object_rc = (p_short, p_orc)``: relative clauses on *objects*, so the main verb
      is not always the last verb. With probability ``p_short`` an object takes
      ``ShortRC.m -> that Vi.m`` ("the dog sees the cats that sleep": *sleep* agrees with
      *cats*), with probability ``p_orc`` the object relative clause ``ORC`` above ("the
      dog sees the cat that the birds chase"). Neither contains an object, so the
      grammar stays finite (no rule calls itself); "that" right after an object starts
      that object's clause, since nothing else that follows an object starts with
      "that" (an object may sit inside a subject's relative clause: "the dog that sees
      the cats that sleep runs").
    """
    rules: list[Rule] = []

    def add(lhs: str, rhs: tuple[str, ...], prob: float) -> None:
        rules.append(Rule(lhs, rhs, prob))

    def uniform(lhs: str, words) -> None:
        for w in words:
            add(lhs, (w,), 1.0 / len(words))

    if len(p_modifier) not in (3, 4):
        raise ValueError(
            f"expected p_modifier = (plain, PP, RC) or (plain, PP, RC, object RC), got {p_modifier}"
        )
    p_plain, p_pp, p_rc, p_orc = (*p_modifier, 0.0)[:4]
    if not 0.0 <= p_fronted_pp < 1.0:
        raise ValueError(f"expected p_fronted_pp in [0, 1), got {p_fronted_pp}")
    if len(p_object_rc) != 2 or min(p_object_rc) < 0 or sum(p_object_rc) >= 1:
        raise ValueError(
            f"expected p_object_rc = (short RC, object RC), each >= 0, sum < 1, got {p_object_rc}"
        )
    p_obj_short, p_obj_orc = p_object_rc
    for n in ("sg", "pl"):
        add("S", (f"Subj.{n}", f"VP.{n}"), 0.5 * (1.0 - p_fronted_pp))
    for n in ("sg", "pl"):  # after the default rules, so the default draws stay the same
        add("S", ("PP", f"Subj.{n}", f"VP.{n}"), 0.5 * p_fronted_pp)
    for n in ("sg", "pl"):
        add(f"Subj.{n}", (f"NP.{n}",), p_plain)
        add(f"Subj.{n}", (f"NP.{n}", "PP"), p_pp)
        add(f"Subj.{n}", (f"NP.{n}", f"RC.{n}"), p_rc)
        add(f"Subj.{n}", (f"NP.{n}", "ORC"), p_orc)
        add(f"RC.{n}", ("that", f"VP.{n}"), 1.0)
        add(f"VP.{n}", (f"Vi.{n}",), 1.0 - p_transitive)
        add(f"VP.{n}", (f"Vt.{n}", "Obj"), p_transitive)
        add(f"NP.{n}", (f"Det.{n}", f"Nom.{n}"), 1.0)
        p0, p1, p2 = p_adjectives
        add(f"Nom.{n}", (f"N.{n}",), p0)
        add(f"Nom.{n}", ("Adj", f"N.{n}"), p1)
        add(f"Nom.{n}", ("Adj", "Adj", f"N.{n}"), p2)
    for m in ("sg", "pl"):
        add("PP", ("P", f"NP.{m}"), 0.5)
        add("Obj", (f"NP.{m}",), 0.5 * (1.0 - p_obj_short - p_obj_orc))
    for m in ("sg", "pl"):  # after the default rules, so the default draws stay the same
        add("Obj", (f"NP.{m}", f"ShortRC.{m}"), 0.5 * p_obj_short)
        add(f"ShortRC.{m}", ("that", f"Vi.{m}"), 1.0 if p_obj_short > 0 else 0.0)
        add("Obj", (f"NP.{m}", "ORC"), 0.5 * p_obj_orc)
    if p_orc > 0 or p_obj_orc > 0:  # "that the cats chase": its own subject and verb
        for m in ("sg", "pl"):
            add("ORC", ("that", f"NP.{m}", f"Vt.{m}"), 0.5)
    for i, n in enumerate(("sg", "pl")):
        for word, p in determiners[n].items():
            add(f"Det.{n}", (word,), p)
        uniform(f"N.{n}", [pair[i] for pair in nouns])
        uniform(f"Vi.{n}", [pair[i] for pair in intransitive])
        uniform(f"Vt.{n}", [pair[i] for pair in transitive])
    uniform("Adj", adjectives)
    uniform("P", prepositions)
    # Drop zero-probability rules (a p_modifier or p_adjectives entry of 0 disables that option).
    return [r for r in rules if r.prob > 0]


# ---------------------------------------------------------------------------------------
# The target language: head-final word order, its own words, a plural particle
# ---------------------------------------------------------------------------------------

#: How each rule's right-hand side is reordered in the target language, keyed by the
#: categories of the right-hand side (number stripped). Rules not listed keep their order.
#: The result is head-final, like Japanese or Turkish: the verb comes last, modifiers come
#: before what they modify (prepositional phrases and relative clauses before their noun),
#: adjectives and determiners after the noun, prepositions become postpositions.
#: (Examples in source words; see TARGET_LEXICON for what becomes of "the".)
TARGET_ORDER: dict[tuple[str, ...], tuple[int, ...]] = {
    ("NP", "PP"): (1, 0),  # the dog [near the cat]   -> [cat the near] dog the
    ("NP", "RC"): (1, 0),  # the dog [that sleeps]    -> [sleeps that] dog the
    ("that", "VP"): (1, 0),  # that sees the cat       -> cat the sees that
    ("Vt", "Obj"): (1, 0),  # sees the cat             -> cat the sees
    ("P", "NP"): (1, 0),  # near the cat               -> cat the near
    ("Det", "Nom"): (1, 0),  # the big dog             -> dog big the
    ("Adj", "N"): (1, 0),  # big dog                   -> dog big
    ("Adj", "Adj", "N"): (2, 0, 1),  # big red dog     -> dog big red
    # the object relative clause (an english_rules option): "that" last, as in "RC"
    ("NP", "ORC"): (1, 0),  # the dog [that the cats chase] -> [the cats chase that] dog the
    ("that", "NP", "Vt"): (1, 2, 0),  # that the cats chase -> the cats chase that
    # the short relative clause on an object (an english_rules option)
    ("NP", "ShortRC"): (1, 0),  # the cats [that sleep] -> [sleep that] cats the
    ("that", "Vi"): (1, 0),  # that sleep               -> sleep that
}

#: Word-for-word translations; a value may be several target words, or none.
#: - "the" has no counterpart: the target marks definiteness by nothing ("the dog" -> "hun"),
#:   except after a postposition, where it fuses with it (TARGET_CONTRACTIONS).
#: - A plural noun is its singular stem followed by the plural particle "ta" ("dogs" ->
#:   "hun ta"): one source word, two target words. (The source's irregular "children" and
#:   "mice" become regular.) Verbs keep their own plural form, the singular + "n".
TARGET_LEXICON: dict[str, str] = {
    # determiners ("the": no word)
    "the": "", "a": "un", "this": "ti", "some": "su", "these": "te",
    # adjectives
    "big": "grom", "small": "pik", "red": "ros", "old": "vek", "happy": "fel",
    # nouns: singular, plural = singular + the particle "ta"
    "dog": "hun", "dogs": "hun ta", "cat": "mis", "cats": "mis ta", "bird": "pav",
    "birds": "pav ta", "fox": "rek", "foxes": "rek ta", "child": "kin",
    "children": "kin ta", "mouse": "mur", "mice": "mur ta",
    # verbs: singular, plural = singular + "n"
    "sleeps": "dorma", "sleep": "dorman", "runs": "kura", "run": "kuran",
    "sings": "kanta", "sing": "kantan", "waits": "spera", "wait": "speran",
    "sees": "vida", "see": "vidan", "chases": "xasa", "chase": "xasan",
    "likes": "ama", "like": "aman", "follows": "sega", "follow": "segan",
    # postpositions and the relative marker
    "near": "pres", "behind": "dop", "under": "sot", "that": "ke",
}  # fmt: skip

#: A preposition whose noun phrase starts with "the" fuses with it into one postposition:
#: "near the cat" -> "mis presa" (like German "zu dem" -> "zum"): two source words, one
#: target word, aligned to both.
TARGET_CONTRACTIONS: dict[str, str] = {"near": "presa", "behind": "dopa", "under": "sota"}


def _category(symbol: str) -> str:
    """``NP.sg`` -> ``NP``; words stay as they are."""
    return symbol.partition(".")[0]


def translate_tree(tree: Tree) -> tuple[list[str], list[tuple[int, int]]]:
    """Translate a derivation rule by rule: ``(target words, alignment)``.

    Each node translates its children, then reorders them by :data:`TARGET_ORDER`; each word
    is looked up in :data:`TARGET_LEXICON` (zero, one or two target words), and a
    preposition followed by "the" becomes one word (:data:`TARGET_CONTRACTIONS`).

    ``alignment`` is the list of links ``(j, i)``: target word ``j`` translates (part of)
    source word ``i``, sorted by ``j`` then ``i``. Every target word has at least one link;
    a source "the" outside a contraction has none; a plural noun has two (its stem and the
    particle "ta"); a contracted postposition is linked to two source words.
    """
    counter = iter(range(len(tree.words())))

    def walk(node: Tree | str) -> list[tuple[str | None, tuple[int, ...]]]:
        """(target word, source indices) in target order; None stands for a source word
        with no target word (kept so that a contraction can claim it)."""
        if isinstance(node, str):
            if node not in TARGET_LEXICON:
                raise KeyError(f"expected a word with a translation, got {node!r}")
            i = next(counter)
            return [(w, (i,)) for w in TARGET_LEXICON[node].split()] or [(None, (i,))]
        parts = [walk(child) for child in node.children]  # left to right: source order
        categories = tuple(_category(s) for s in node.rule.rhs)
        if categories == ("P", "NP"):
            preposition, phrase = node.children[0].words()[0], node.children[1]
            if phrase.words()[0] == "the" and preposition in TARGET_CONTRACTIONS:
                first = min(i for _, idx in parts[1] for i in idx)  # the index of "the"
                parts[1] = [part for part in parts[1] if part != (None, (first,))]
                p = parts[0][0][1][0]  # the preposition's index
                parts[0] = [(TARGET_CONTRACTIONS[preposition], (p, first))]
        order = TARGET_ORDER.get(categories, range(len(parts)))
        return [pair for k in order for pair in parts[k]]

    pairs = [(w, idx) for w, idx in walk(tree) if w is not None]
    return [w for w, _ in pairs], [(j, i) for j, (_, idx) in enumerate(pairs) for i in idx]


@dataclass(frozen=True)
class Analysis:
    """Where the agreement happens in a sentence (word indices, 0-based, no ``<bos>``).

    ``subject``: the head noun of the subject; ``verb``: the main verb, which agrees with it;
    ``attractors``: nouns that stand between the two (inside a prepositional phrase or a
    relative clause, subject or object relative); a fronted prepositional phrase's noun
    comes before the subject and is not one; ``number``: the subject's number, ``"sg"`` or ``"pl"``;
    ``attractor_numbers``: the number of each attractor.
    """

    subject: int
    verb: int
    attractors: tuple[int, ...]
    number: str
    attractor_numbers: tuple[str, ...]

    @property
    def has_mismatched_attractor(self) -> bool:
        """True when some attractor noun has the opposite number to the subject."""
        return any(a != self.number for a in self.attractor_numbers)


class ToyLanguage:
    """The course's language: a :class:`Grammar` plus what the chapters need of it.

    >>> lang = ToyLanguage()
    >>> sentences = lang.sample(3, seed=0)
    >>> all(lang.is_grammatical(s) for s in sentences)
    True
    """

    def __init__(self, **grammar_options):
        self.grammar = Grammar(english_rules(**grammar_options))
        words = self.grammar.words
        # Number of each noun and verb form, to find agreement and to break it on purpose.
        self._number: dict[str, str] = {}
        self._flip: dict[str, str] = {}
        for r in self.grammar.rules:
            kind, _, number = r.lhs.partition(".")
            if kind in ("N", "Vi", "Vt"):
                self._number[r.rhs[0]] = number
        for pairs in (grammar_options.get("nouns", NOUNS),
                      grammar_options.get("intransitive", INTRANSITIVE),
                      grammar_options.get("transitive", TRANSITIVE)):  # fmt: skip
            for sg, pl in pairs:
                self._flip[sg], self._flip[pl] = pl, sg
        # The vocabulary in reading order: determiners, adjectives, nouns, verbs, prepositions, "that".
        category_order = ["Det", "Adj", "N", "Vi", "Vt", "P"]

        def category(word: str) -> int:
            kinds = {r.lhs.partition(".")[0] for r in self.grammar.rules if r.rhs == (word,)}
            return min((category_order.index(k) for k in kinds if k in category_order),
                       default=len(category_order))  # fmt: skip

        self.words: list[str] = sorted(words, key=lambda w: (category(w), words.index(w)))

    # --------------------------------------------------------------- sampling
    def sample_trees(self, n: int, seed: int) -> list[Tree]:
        """``n`` derivations drawn independently; the same seed gives the same trees."""
        if n < 0:
            raise ValueError(f"expected a non-negative number of sentences, got {n}")
        rng = random.Random(seed)
        return [self.grammar.sample_tree(rng) for _ in range(n)]

    def sample(self, n: int, seed: int) -> list[list[str]]:
        """``n`` sentences (lists of words) drawn independently with ``seed``.

        The same sentences as ``sample_trees(n, seed)``, without keeping the trees.
        """
        if n < 0:
            raise ValueError(f"expected a non-negative number of sentences, got {n}")
        rng = random.Random(seed)
        return [self.grammar.sample_words(rng) for _ in range(n)]

    # ----------------------------------------------------------- probabilities
    def log_prob(self, words: list[str]) -> float:
        """Exact natural-log probability of a sentence; ``-inf`` when it is not in the language."""
        self._check_words(words)
        return self.grammar.log_prob(words)

    def prob(self, words: list[str]) -> float:
        """Exact probability of a sentence (0.0 when ungrammatical)."""
        return math.exp(self.log_prob(words))

    def is_grammatical(self, words: list[str]) -> bool:
        """True when the grammar derives ``words``. Unknown words make a sentence ungrammatical."""
        return all(w in self._known for w in words) and bool(self.grammar.parses(words))

    def parse(self, words: list[str]) -> Tree:
        """The derivation of a grammatical sentence; ``ValueError`` if there is none."""
        self._check_words(words)
        trees = self.grammar.parses(words)
        if not trees:
            raise ValueError(f"expected a grammatical sentence, got {' '.join(words)!r}")
        return trees[0]

    def entropy_per_sentence(self) -> float:
        """H(sentence) in nats."""
        return self.grammar.sentence_entropy()

    def expected_length(self) -> float:
        """Expected number of tokens a language model predicts per sentence: the words plus ``<eos>``."""
        return self.grammar.expected_words() + 1.0

    def entropy_per_token(self) -> float:
        """The entropy rate in nats per predicted token: H(sentence) / E[words + 1].

        A language model reads ``<bos> w1 ... wn`` and predicts ``w1 ... wn <eos>``; its
        cross-entropy, averaged over all predicted tokens of many sentences, tends to
        (sum of -log q(sentence)) / (total tokens) >= H(sentence) / E[tokens], with equality
        only when the model's probabilities are the language's own. So this is the lowest
        validation loss any model can reach.
        """
        return self.entropy_per_sentence() / self.expected_length()

    # --------------------------------------------------------------- agreement
    def number(self, word: str) -> str | None:
        """``"sg"`` or ``"pl"`` for nouns and verbs, ``None`` for every other word."""
        return self._number.get(word)

    def analyse(self, words: list[str]) -> Analysis:
        """Find the subject's head noun, the main verb and the attractor nouns between them."""
        tree = self.parse(words)
        spans = tree.spans()
        subj = next((i, j) for label, i, j in spans if label.startswith("Subj."))
        verb = next(i for label, i, j in spans if label.startswith("VP.") and i >= subj[1])
        subject = next(  # the first noun inside the subject (a fronted PP comes before it)
            i for label, i, _ in spans if label.startswith("N.") and subj[0] <= i < subj[1]
        )
        attractors = tuple(
            i for label, i, _ in spans if label.startswith("N.") and subject < i < verb
        )
        return Analysis(
            subject=subject,
            verb=verb,
            attractors=attractors,
            number=self._number[words[subject]],
            attractor_numbers=tuple(self._number[words[i]] for i in attractors),
        )

    def flip_number(self, word: str) -> str:
        """The same noun or verb in the other number: ``sleeps`` <-> ``sleep``, ``mouse`` <-> ``mice``."""
        if word not in self._flip:
            raise KeyError(f"expected a noun or verb, got {word!r}")
        return self._flip[word]

    def break_agreement(self, words: list[str]) -> list[str]:
        """The sentence with its main verb in the wrong number: always ungrammatical."""
        verb = self.analyse(words).verb
        return words[:verb] + [self.flip_number(words[verb])] + words[verb + 1 :]

    # ---------------------------------------------------------- masked prediction
    def masked_distribution(self, words: list[str], position: int) -> dict[str, float]:
        """The exact distribution of the word at ``position`` given every other word.

        ``P(w | rest) = P(sentence with w there) / sum over w' of P(sentence with w' there)``:
        the Bayes-optimal masked-token prediction (no model can predict that word better).
        One parse with a wildcard at ``position`` finds every word that fits and the
        probability of each completed sentence. Raises ``ValueError`` when no word fits.
        """
        self._check_words(words)
        if not 0 <= position < len(words):
            raise ValueError(f"expected a position in [0, {len(words)}), got {position}")
        masked = list(words)
        masked[position] = None
        scores: dict[str, float] = defaultdict(float)
        for tree in self.grammar.parses(masked):
            scores[tree.words()[position]] += math.exp(tree.log_prob())
        total = sum(scores.values())
        if total == 0.0:
            raise ValueError(f"expected a sentence that some word completes, got {words!r}")
        return {w: p / total for w, p in sorted(scores.items(), key=lambda kv: -kv[1])}

    # --------------------------------------------------------------- translation
    def translate(self, words: list[str]) -> tuple[list[str], list[tuple[int, int]]]:
        """Translate a sentence into the target language, with its word alignment.

        Returns ``(target, alignment)``: ``alignment`` lists the links ``(j, i)``, target
        word ``j`` translates source word ``i`` (see :func:`translate_tree`). The languages
        differ in word order (:data:`TARGET_ORDER`), vocabulary (:data:`TARGET_LEXICON`) and
        length: "the" mostly has no counterpart, a plural noun becomes two words and
        "near the" one, so the alignment is not a permutation.
        """
        return translate_tree(self.parse(words))

    def sample_pairs(
        self, n: int, seed: int
    ) -> list[tuple[list[str], list[str], list[tuple[int, int]]]]:
        """``n`` triples ``(source, target, alignment)`` drawn with ``seed``."""
        return [(t.words(), *translate_tree(t)) for t in self.sample_trees(n, seed)]

    @cached_property
    def target_words(self) -> list[str]:
        """The target language's vocabulary, in the order of the source words they translate
        (each contracted postposition right after its plain form)."""
        out: dict[str, None] = {}
        for w in self.words:
            out.update(dict.fromkeys(TARGET_LEXICON[w].split()))
            if w in TARGET_CONTRACTIONS:
                out[TARGET_CONTRACTIONS[w]] = None
        return list(out)

    # ------------------------------------------------------------------ helpers
    @cached_property
    def _known(self) -> set[str]:
        return set(self.words)

    def _check_words(self, words) -> None:
        if isinstance(words, str):
            raise ValueError(f"expected a list of words, got the string {words!r} (use .split())")
        unknown = [w for w in words if w not in self._known]
        if unknown:
            raise KeyError(f"expected words of the toy language, got unknown word(s) {unknown}")
