"""The quickstart experiment (notebook 00): a small decoder trained with teacher forcing on addition."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import torch
from datasets import Dataset, DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seqnb.collate import tokenize_pairs
from seqnb.decoding import generate
from seqnb.metrics import accuracy_by
from seqnb.models import build_decoder, load_pretrained
from seqnb.papers.quickstart.config import Config
from seqnb.record import Claim
from seqnb.tasks import addition_answer, addition_example, load_task
from seqnb.tokenizers import char_tokenizer

ALPHABET = "0123456789+="


def build_data(cfg: Config) -> DatasetDict:
    return load_task(
        "addition", n_train=cfg.n_train, train_digits=cfg.train_digits, test_digits=cfg.test_digits,
        n_test_per_length=cfg.n_test_per_length, seed=cfg.seed, reverse_answer=cfg.reverse_answer,
    )


def build_model(cfg: Config) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A fresh GPT-2-style decoder and a character tokenizer, or a pretrained model when `model_name` says so."""
    if cfg.model_name != "scratch":
        return load_pretrained(cfg.model_name)
    tokenizer = char_tokenizer(ALPHABET)
    max_len = 2 * (2 * cfg.test_digits + 2) + 2  # longest test prompt + answer + <bos>/<eos>, with headroom
    model = build_decoder(tokenizer, n_layer=cfg.n_layer, d_model=cfg.d_model, n_head=cfg.n_head,
                          max_len=max_len, dropout=cfg.dropout)
    return model, tokenizer


def train_set(data: DatasetDict, tokenizer: PreTrainedTokenizerBase) -> Dataset:
    return tokenize_pairs(data["train"], tokenizer).select_columns(["input_ids", "labels"])


@dataclass(frozen=True)
class Evaluation:
    predictions: list[str]
    correct: list[bool]
    accuracy_by_length: dict[int, float]

    def accuracy(self, lengths: range) -> float:
        return sum(self.accuracy_by_length[n] for n in lengths) / len(lengths)


def evaluate(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, test: Dataset) -> Evaluation:
    """Greedy answers for every test problem; exact match per operand length."""
    max_new = max(len(t) for t in test["target"]) + 1
    predictions = generate(model, tokenizer, test["prompt"], max_new_tokens=max_new)
    correct = [p.strip() == t for p, t in zip(predictions, test["target"])]
    return Evaluation(predictions, correct, accuracy_by(test["n_digits"], correct))


def eval_fn(tokenizer: PreTrainedTokenizerBase, test: Dataset):
    """The training loop's periodic evaluation: accuracy per operand length."""
    return lambda model: {f"acc_{n}d": a for n, a in evaluate(model, tokenizer, test).accuracy_by_length.items()}


CALIBRATION_SEEDS = (1, 2, 3)  # `seqnb calibrate` on tiny runs at these seeds set the margin; seed 0 checks it


def claims(cfg: Config) -> list[Claim]:
    """Teacher forcing learns the addition it was trained on: asserted at the tiny preset, shown elsewhere."""
    out = [Claim("sft-learns-addition", "Teacher-forced SFT learns in-distribution addition (vs the untrained model)",
                 "accuracy_in_distribution", "untrained", "sft", margin=0.5, asserted=True,
                 calibrated_on=CALIBRATION_SEEDS)]
    return out if cfg.preset == "tiny" else [c.uncalibrated() for c in out]


@dataclass(frozen=True)
class Answer:
    a: int
    b: int
    prompt: str
    raw: str  # what the model wrote
    predicted: int | None

    @property
    def correct(self) -> bool:
        return self.predicted == self.a + self.b


def solve(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, problem: str,
          cfg: Config) -> Answer:
    """Answer a typed problem such as "123 + 45" with the same prompt format as training."""
    m = re.fullmatch(r"\s*(\d+)\s*\+\s*(\d+)\s*=?\s*", problem)
    if not m:
        raise ValueError(f"cannot read {problem!r}: type two non-negative whole numbers like 123+45")
    a, b = int(m[1]), int(m[2])
    width = max(len(str(a)), len(str(b)), cfg.train_digits)
    if width > cfg.test_digits:
        raise ValueError(f"at most {cfg.test_digits} digits per number (the model's position table is that long)")
    example = addition_example(a, b, width, cfg.reverse_answer)
    with torch.no_grad():
        raw = generate(model, tokenizer, [example["prompt"]], max_new_tokens=width + 2)[0].strip()
    return Answer(a, b, example["prompt"], raw, addition_answer(raw, cfg.reverse_answer))


def answer_html(answer: Answer, trained_digits: int) -> str:
    verdict = "✅ correct" if answer.correct else f"❌ wrong (true sum {answer.a + answer.b})"
    longer = max(len(str(answer.a)), len(str(answer.b))) > trained_digits
    note = " <i>(longer than any training problem)</i>" if longer else ""
    return (
        f"<code>{html.escape(answer.prompt)}</code> → model wrote <code>{html.escape(answer.raw)}</code> "
        f"= <b>{answer.predicted}</b> {verdict}{note}"
    )


__all__ = ["Answer", "Evaluation", "answer_html", "build_data", "build_model", "eval_fn", "evaluate", "solve",
           "train_set"]
