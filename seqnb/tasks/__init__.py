"""The task registry: `load_task(name, **kwargs)` returns a `datasets.DatasetDict` with train/test splits."""

from __future__ import annotations

from typing import Callable

from datasets import DatasetDict

from .hub import DatasetNotAvailableError, load_hub_dataset
from .synthetic import (
    SEP, add_or_sub_in_base, addition, arithmetic_answer, addition_answer, addition_example, is_permutation_answer, permutation,
    sort_digits, sort_example, to_base,
)
from .text import bbc_news

TASKS: dict[str, Callable[..., DatasetDict]] = {
    "addition": addition,
    "sort": sort_digits,
    "permutation": permutation,
    "add_or_sub_in_base": add_or_sub_in_base,
    "bbc_news": bbc_news,
}


def load_task(name: str, **kwargs) -> DatasetDict:
    """Build a registered task. Hub datasets go through `load_hub_dataset` instead."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}: use one of {sorted(TASKS)}, or load_hub_dataset(id) for hub data")
    data = TASKS[name](**kwargs)
    for split, ds in data.items():
        if len(ds) == 0:
            raise ValueError(f"task {name!r} produced an empty {split!r} split with {kwargs}: ask for more examples")
    return data


__all__ = [
    "SEP", "TASKS", "add_or_sub_in_base", "arithmetic_answer", "to_base", "DatasetNotAvailableError", "addition", "addition_answer", "addition_example", "bbc_news", "is_permutation_answer",
    "load_hub_dataset", "load_task", "permutation", "sort_digits", "sort_example",
]
