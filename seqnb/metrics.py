"""Metrics: exact match, accuracy by group, perplexity, edit distance, and the text metrics of sacrebleu and
rouge-score."""

from __future__ import annotations

import math
import re
from collections import defaultdict
from typing import Callable, Hashable, Iterable, Sequence

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from .collate import IGNORE_INDEX
from .runtime import model_device


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Fraction of predictions equal to their reference after stripping surrounding white space."""
    _same_length(predictions, references)
    return sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(references)


def accuracy_by(groups: Iterable[Hashable], correct: Iterable[bool]) -> dict:
    """Mean of `correct` within each group, keys sorted (e.g. accuracy per operand length)."""
    hits: dict = defaultdict(list)
    for g, c in zip(groups, correct):
        hits[g].append(bool(c))
    return {g: sum(v) / len(v) for g, v in sorted(hits.items())}


@torch.no_grad()
def mean_token_nll(
    model: torch.nn.Module, data: Dataset, collate_fn: Callable, batch_size: int = 64
) -> float:
    """Mean negative log-likelihood (nats) per label token over `data` (rows with `input_ids` and `labels`)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    total, count = 0.0, 0
    for batch in DataLoader(data, batch_size=batch_size, collate_fn=collate_fn):
        batch = {k: v.to(device) for k, v in batch.items()}
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        if not getattr(model.config, "is_encoder_decoder", False):  # position t predicts token t+1
            logits, labels = logits[:, :-1], labels[:, 1:]
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total += nll.item()
        count += (labels != IGNORE_INDEX).sum().item()
    model.train(was_training)
    if count == 0:
        raise ValueError("parameter 'data': no label tokens to score (empty dataset or all labels -100)")
    return total / count


def perplexity(mean_nll: float) -> float:
    """exp of the mean per-token negative log-likelihood in nats."""
    return math.exp(mean_nll)


def prefix_edit_distances(a: Sequence, b: Sequence) -> list[int]:
    """Levenshtein distances from `a` to every prefix of `b`: entry j is the distance to b[:j] (the last row of
    the dynamic programme, so entry len(b) is the distance to all of b)."""
    row = list(range(len(b) + 1))  # from a[:0]: j insertions
    for i in range(1, len(a) + 1):
        prev, row = row, [i] + [0] * len(b)
        for j in range(1, len(b) + 1):  # delete a[i-1], insert b[j-1], or substitute (free when equal)
            row[j] = min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
    return row


def edit_distance(a: Sequence, b: Sequence) -> int:
    """Levenshtein distance between two sequences (tokens or characters)."""
    return prefix_edit_distances(a, b)[-1]


def normalized_edit_distance(a: Sequence, b: Sequence) -> float:
    """Levenshtein distance over the longer length (0 for two empty sequences)."""
    return edit_distance(a, b) / max(len(a), len(b), 1)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenisation, 0-100)."""
    import sacrebleu

    _same_length(predictions, references)
    return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score


def chrf(predictions: Sequence[str], references: Sequence[str], word_order: int = 0) -> float:
    """Corpus chrF (sacrebleu defaults, 0-100); `word_order=2` gives chrF++."""
    import sacrebleu

    _same_length(predictions, references)
    return sacrebleu.corpus_chrf(list(predictions), [list(references)], word_order=word_order).score


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (rouge-score with Porter stemming, 0-100), as summarisation papers report."""
    from rouge_score import rouge_scorer

    _same_length(predictions, references)
    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    scores = [scorer.score(r, p) for p, r in zip(predictions, references)]
    return {k: 100 * sum(s[k].fmeasure for s in scores) / len(scores) for k in keys}


def _same_length(predictions: Sequence, references: Sequence) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} references")
    if not references:
        raise ValueError("no references to score (empty dataset)")


def gsm8k_final_answer(text: str) -> str | None:
    """The final answer as GSM8K defines it: the number after the last `####` (commas and a trailing period
    dropped), or None when the text has no `####` line."""
    found = re.findall(r"####\s*(-?[\d,]*\.?\d+)", text)
    return found[-1].replace(",", "") if found else None


def gsm8k_accuracy(predictions: Sequence[str], gold_answers: Sequence[str]) -> float:
    """Fraction of predictions whose final answer equals the reference's (given as `gsm8k_final_answer` of the
    dataset's full answer); a prediction without a `####` line is wrong."""
    _same_length(predictions, gold_answers)
    if any(g is None for g in gold_answers):
        raise ValueError("parameter 'gold_answers': every reference needs its final answer (the `####` line)")
    finals = [gsm8k_final_answer(p) for p in predictions]
    return sum(f is not None and float(f) == float(g) for f, g in zip(finals, gold_answers)) / len(gold_answers)
