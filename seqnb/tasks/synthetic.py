"""Algorithmic tasks generated from a seed: every example is a (prompt, target) pair of strings."""

from __future__ import annotations

import random
import re

from datasets import Dataset, DatasetDict

SEP = "="


def _operand(rng: random.Random, n_digits: int) -> int:
    return rng.randint(0 if n_digits == 1 else 10 ** (n_digits - 1), 10**n_digits - 1)


def addition_example(a: int, b: int, width: int, reverse_answer: bool = True) -> dict:
    """`a+b=` with both operands zero-padded to `width` digits -> the sum as `width + 1` digits, least
    significant first when `reverse_answer`. Aligned digits and a reversed answer make each answer digit depend
    only on two operand digits at fixed offsets and a carry, which a small transformer learns quickly."""
    if a < 0 or b < 0 or max(len(str(a)), len(str(b))) > width:
        raise ValueError(f"operands {a}, {b} must be non-negative with at most {width} digits")
    total = str(a + b).zfill(width + 1)
    return {"prompt": f"{a:0{width}d}+{b:0{width}d}{SEP}", "target": total[::-1] if reverse_answer else total}


def addition_answer(target: str, reverse_answer: bool = True) -> int | None:
    """The integer an addition target spells (None if it is not all digits)."""
    digits = target.strip()[::-1] if reverse_answer else target.strip()
    return int(digits) if digits.isdigit() else None


def addition(
    *, n_train: int, train_digits: int, test_digits: int, n_test_per_length: int, seed: int,
    reverse_answer: bool = True,
) -> DatasetDict:
    """Multi-digit addition. Train: operands of 1..`train_digits` digits (lengths drawn uniformly), padded to
    `train_digits`. Test: `n_test_per_length` problems for every length 1..`test_digits`, padded to
    max(length, train_digits), so lengths above `train_digits` are longer sequences than any seen in training.
    `n_digits` is the longer operand's length. Train and test never overlap."""
    _check_counts(n_train=n_train, n_test_per_length=n_test_per_length)
    rng = random.Random(seed)

    def draw(n_max_digits: int, exact: bool) -> tuple[int, int, int]:
        la = n_max_digits if exact else rng.randint(1, n_max_digits)
        lb = rng.randint(1, n_max_digits)
        if exact and rng.random() < 0.5:
            la, lb = lb, la
        return _operand(rng, la), _operand(rng, lb), max(la, lb)

    test, seen = [], set()
    for n in range(1, test_digits + 1):
        for _ in range(n_test_per_length):
            a, b, nd = draw(n, exact=True)
            seen.add((a, b))
            test.append({**addition_example(a, b, max(n, train_digits), reverse_answer), "n_digits": nd})
    train = []
    while len(train) < n_train:
        a, b, nd = draw(train_digits, exact=False)
        if (a, b) not in seen:
            train.append({**addition_example(a, b, train_digits, reverse_answer), "n_digits": nd})
    return DatasetDict(train=Dataset.from_list(train), test=Dataset.from_list(test))


def sort_example(digits: list[int]) -> dict:
    return {"prompt": "".join(map(str, digits)) + SEP, "target": "".join(map(str, sorted(digits)))}


def sort_digits(*, n_train: int, n_test: int, length: int, seed: int) -> DatasetDict:
    """Sort `length` i.i.d. digits: a long structured output where one wrong token shifts everything after it."""
    _check_counts(n_train=n_train, n_test=n_test, length=length)
    rng = random.Random(seed)
    rows = [sort_example([rng.randrange(10) for _ in range(length)]) for _ in range(n_train + n_test)]
    return DatasetDict(train=Dataset.from_list(rows[:n_train]), test=Dataset.from_list(rows[n_train:]))


def permutation(*, n_train: int, n_test: int, min_k: int, max_k: int, seed: int) -> DatasetDict:
    """`k` distinct digits (k uniform in min_k..max_k) -> a uniformly random permutation of them.

    Every permutation is a correct answer, so sampling at temperature 1 is the natural decoding and a model's
    own sampled errors (a repeated or foreign digit) are what compounds; see `is_permutation_answer`. No test
    prompt appears in training (short prompts would often: there are only 5,040 of four digits).
    """
    _check_counts(n_train=n_train, n_test=n_test, min_k=min_k)
    if not min_k <= max_k <= 10:
        raise ValueError(f"parameters 'min_k'/'max_k': need min_k <= max_k <= 10, got {min_k}, {max_k}")
    rng = random.Random(seed)

    def draw() -> dict:
        digits = rng.sample("0123456789", rng.randint(min_k, max_k))
        return {"prompt": "".join(digits) + SEP, "target": "".join(rng.sample(digits, len(digits)))}

    train = [draw() for _ in range(n_train)]
    seen, test = {r["prompt"] for r in train}, []
    while len(test) < n_test:
        row = draw()
        if row["prompt"] not in seen:
            test.append(row)
    return DatasetDict(train=Dataset.from_list(train), test=Dataset.from_list(test))


def is_permutation_answer(prompt: str, answer: str) -> bool:
    return sorted(answer) == sorted(prompt.removesuffix(SEP))


def to_base(n: int, base: int) -> str:
    """`n` written in `base` (2-16, digits 0-9a-f), with a leading '-' when negative."""
    digits = "0123456789abcdef"
    if not 2 <= base <= 16:
        raise ValueError(f"base must be 2..16, got {base}")
    m, out = abs(n), ""
    while True:
        m, r = divmod(m, base)
        out = digits[r] + out
        if m == 0:
            return ("-" if n < 0 else "") + out


def add_or_sub_in_base(*, n_train: int, n_test: int, max_value: int, seed: int) -> DatasetDict:
    """Questions in the style of the DeepMind mathematics sub-task `arithmetic__add_or_sub_in_base` (Saxton et
    al. 2019), regenerated here: "In base 7, what is -52 + 4?" -> "-45". Bases 2-16, |operands| <= max_value."""
    _check_counts(n_train=n_train, n_test=n_test, max_value=max_value)
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n_train + n_test:
        base, x, y, op = rng.randint(2, 16), rng.randint(-max_value, max_value), rng.randint(-max_value, max_value), rng.choice("+-")
        if (base, x, y, op) in seen:
            continue
        seen.add((base, x, y, op))
        answer = x + y if op == "+" else x - y
        rows.append({"prompt": f"In base {base}, what is {to_base(x, base)} {op} {to_base(y, base)}? ",
                     "target": to_base(answer, base)})
    return DatasetDict(train=Dataset.from_list(rows[:n_train]), test=Dataset.from_list(rows[n_train:]))


def arithmetic_answer(question: str) -> str:
    """The reference answer to an `add_or_sub_in_base` question (ValueError if it is not one)."""
    m = re.fullmatch(r"\s*In base (\d+), what is (-?[0-9a-f]+) ([+-]) (-?[0-9a-f]+)\?\s*", question)
    if not m or not 2 <= int(m[1]) <= 16:
        raise ValueError(f"not an add-or-sub-in-base question: {question!r}")
    base = int(m[1])
    x, y = int(m[2], base), int(m[4], base)
    return to_base(x + y if m[3] == "+" else x - y, base)


def _check_counts(**counts: int) -> None:
    for name, n in counts.items():
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"parameter {name!r}: must be a positive int, got {n!r} (an empty dataset cannot train)")
