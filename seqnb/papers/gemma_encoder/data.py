"""Data for the encoder notebook: BBC News as topic classification, as sentence-position regression and as
title → article retrieval, a text stream for causal pretraining, and a collator that pads on either side.

Lengths vary on purpose (every example is cut to a random length), so every batch contains padding and the
pooling strategies have to find the real tokens.
"""

from __future__ import annotations

import random
import re
import zlib
from dataclasses import dataclass

import torch
from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from seqnb.collate import pad_sequences
from seqnb.tasks import bbc_news

PADDING_SIDES = ("right", "left")


def bbc_topics(test_size: int = 400) -> DatasetDict:
    """BBC News with `text = title + " . " + body`, `title`, `body`, `label`; a fixed split (shuffle seed 0)."""
    data = bbc_news(seed=0, test_fraction=(test_size + 0.5) / 2225)

    def parts(row):
        body = row["text"][len(row["title"]):].strip()
        return {"text": f"{row['title']} . {body}", "body": body}

    return data.map(parts, desc="title . body")


def truncate(ids: list[int], rng: random.Random, min_len: int) -> list[int]:
    """The first n tokens, n drawn uniformly from [min_len, len(ids)]."""
    return ids[: rng.randint(min(min_len, len(ids)), len(ids))]


def encode_texts(texts: list[str], tokenizer: PreTrainedTokenizerBase, max_len: int) -> list[list[int]]:
    return tokenizer(list(texts), truncation=True, max_length=max_len)["input_ids"]


def classification_set(data: Dataset, tokenizer: PreTrainedTokenizerBase, max_len: int, *, min_len: int = 8,
                       truncation_seed: int | None = None) -> Dataset:
    """`input_ids` (≤ max_len, with BOS) and `labels`. With `truncation_seed`, each row is cut once to a random
    length from that seed (the fixed test set); without, the collator cuts training rows afresh per batch."""
    ids = encode_texts(data["text"], tokenizer, max_len)
    if truncation_seed is not None:
        rng = random.Random(truncation_seed)
        ids = [truncate(x, rng, min_len) for x in ids]
    return Dataset.from_dict({"input_ids": ids, "labels": data["label"]})


SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'])")


def sentence_position_set(data: Dataset, tokenizer: PreTrainedTokenizerBase, max_len: int, *, seed: int) -> Dataset:
    """Regression: one sentence drawn from each article's body, `labels` = its relative position (0 = the first
    sentence, 1 = the last); articles with fewer than 3 sentences are skipped. News is written top-down (the
    lead sentence summarises, later ones quote and add background), so the position is partly readable."""
    rng = random.Random(seed)
    texts, positions = [], []
    for body in data["body"]:
        sentences = SENTENCE_END.split(body)
        if len(sentences) >= 3:
            i = rng.randrange(len(sentences))
            texts.append(sentences[i])
            positions.append(i / (len(sentences) - 1))
    return Dataset.from_dict({"input_ids": encode_texts(texts, tokenizer, max_len), "labels": positions})


def retrieval_set(data: Dataset, tokenizer: PreTrainedTokenizerBase, *, query_len: int = 16,
                  passage_words: int = 48) -> Dataset:
    """Title → article pairs for a bi-encoder: `q_input_ids` (the title) and `p_input_ids` (the body's first
    `passage_words` words)."""
    passages = [" ".join(b.split()[:passage_words]) for b in data["body"]]
    return Dataset.from_dict({
        "q_input_ids": encode_texts(data["title"], tokenizer, query_len),
        "p_input_ids": encode_texts(passages, tokenizer, 2 * passage_words),
    })


def lm_stream(texts: list[str], tokenizer: PreTrainedTokenizerBase, length: int) -> Dataset:
    """The texts as one token stream, cut into rows of `length` tokens (`<bos>` + length-1), for next-token
    pretraining: `input_ids` and `labels` (the same ids; the model shifts them)."""
    stream = [t for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"] for t in ids]
    step = length - 1
    rows = [[tokenizer.bos_token_id] + stream[i:i + step] for i in range(0, len(stream) - step + 1, step)]
    return Dataset.from_dict({"input_ids": rows, "labels": rows})


@dataclass(frozen=True)
class EncoderCollator:
    """Pads every `*input_ids` column on `padding_side` and adds its `*attention_mask`; other columns become
    tensors. With `min_len`, each sequence is first cut to a random length ≥ min_len, drawn from an RNG seeded
    by the batch's content, so a resumed run sees the same cuts."""

    pad_token_id: int
    padding_side: str = "right"
    min_len: int | None = None

    def __post_init__(self):
        if self.padding_side not in PADDING_SIDES:
            raise ValueError(f"parameter 'padding_side': unknown value {self.padding_side!r}; use 'right' or 'left'")

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        if rows and isinstance(rows[0].get("input_ids", [0])[0], list):  # re-ranking groups: one row per candidate
            rows = [{"input_ids": ids, "labels": rel} for r in rows for ids, rel in zip(r["input_ids"], r["labels"])]
        rng = random.Random(zlib.crc32(repr([r.get("input_ids", r.get("q_input_ids")) for r in rows]).encode()))
        out = {}
        for key in rows[0]:
            values = [r[key] for r in rows]
            if key.endswith("input_ids"):
                if self.min_len is not None:
                    values = [truncate(v, rng, self.min_len) for v in values]
                out[key], out[key.replace("input_ids", "attention_mask")] = pad_sequences(
                    values, self.pad_token_id, side=self.padding_side, mask=True)
            else:
                out[key] = torch.tensor(values)
        return out
