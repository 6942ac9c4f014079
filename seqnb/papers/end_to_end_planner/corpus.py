"""A generated corpus whose sentences follow a latent plan (notebook 02, spec planner.md section 9.1).

Each sentence has one of six latent types (weather, food, ...). A document's type sequence is a second-order
Markov chain: after the first two (distinct, uniform) types, the next type is one of two successors of the
(previous, current) pair, drawn from a table that is fixed by the corpus seed. The first word of a sentence is a
type word, so the type is unknown at a sentence's first token and revealed right after it.
"""

from __future__ import annotations

import random

TYPE_WORDS = {
    "weather": "sun rain cloud wind snow storm fog frost heat sky".split(),
    "food": "bread soup cheese apple rice cake tea milk salt honey".split(),
    "travel": "train ship road map bridge ticket hotel harbor plane border".split(),
    "work": "office desk report meeting boss email salary project deadline contract".split(),
    "music": "song drum guitar piano choir melody rhythm violin concert chord".split(),
    "sport": "ball goal team coach match race score field runner medal".split(),
}
TYPES = tuple(TYPE_WORDS)
SHARED_WORDS = "the a of and then with for was is very so it on in".split()


def successor_table(seed: int, n_types: int = len(TYPES)) -> dict[tuple[int, int], tuple[int, int]]:
    """Two distinct successors for every (previous, current) type pair, fixed by `seed`."""
    rng = random.Random(seed)
    return {(a, b): tuple(rng.sample(range(n_types), 2)) for a in range(n_types) for b in range(n_types)}


def sample_types(rng: random.Random, table, n_sents: int, p_first: float) -> list[int]:
    """A type sequence: two distinct uniform types, then the table's first successor with probability p_first."""
    types = rng.sample(range(len(TYPES)), 2)
    while len(types) < n_sents:
        first, second = table[types[-2], types[-1]]
        types.append(first if rng.random() < p_first else second)
    return types[:n_sents]


def sample_sentence(rng: random.Random, type_id: int, p_type_word: float = 0.55) -> str:
    """5-8 words: a type word, then type words with probability p_type_word, else shared words; ends with '.'."""
    words = TYPE_WORDS[TYPES[type_id]]
    out = [rng.choice(words)]
    for _ in range(rng.randint(5, 8) - 1):
        out.append(rng.choice(words) if rng.random() < p_type_word else rng.choice(SHARED_WORDS))
    return " ".join(out) + "."


def plan_corpus(n_train: int, n_test: int, *, seed: int, n_sents: int = 8, p_first: float = 0.5,
                table_seed: int = 0) -> dict[str, list[dict]]:
    """{"train": [...], "test": [...]} documents `{"sentences": [str], "types": [int]}`; the successor table
    (the corpus' grammar) comes from `table_seed` and is the same for both splits."""
    if n_sents < 3:
        raise ValueError(f"parameter 'n_sents': need at least 3 sentences per document for a plan, got {n_sents}")
    if not 0.0 <= p_first <= 1.0:
        raise ValueError(f"parameter 'p_first': a probability in [0, 1], got {p_first}")
    table = successor_table(table_seed)
    rng = random.Random(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        docs = []
        for _ in range(n):
            types = sample_types(rng, table, n_sents, p_first)
            docs.append({"sentences": [sample_sentence(rng, t) for t in types], "types": types})
        out[split] = docs
    return out
