"""The paper preset's data and backbone: a hub Gemma decoder, GLUE tasks and MS MARCO re-ranking by hub id
(loaded through seqnb's offline-aware loaders; never used by the tiny preset or the tests)."""

from __future__ import annotations

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ..models import load_pretrained
from ..presets.gemma_encoder import GemmaEncoderRunConfig
from ..tasks import load_hub_dataset
from .data import encode_texts

# task: (text columns, evaluation split); pairs are joined with a newline (Gemma has no segment ids; our choice)
GLUE = {
    "sst2": (("sentence",), "validation"), "cola": (("sentence",), "validation"),
    "mrpc": (("sentence1", "sentence2"), "validation"), "stsb": (("sentence1", "sentence2"), "validation"),
    "rte": (("sentence1", "sentence2"), "validation"), "qnli": (("question", "sentence"), "validation"),
    "qqp": (("question1", "question2"), "validation"), "mnli": (("premise", "hypothesis"), "validation_matched"),
}
GLUE_ID, MSMARCO_ID = "nyu-mll/glue", "microsoft/ms_marco"


def head_type(task: str) -> str:
    return {"stsb": "regression", "msmarco": "ranking"}.get(task, "classification")


def glue_set(rows: Dataset, task: str, tokenizer: PreTrainedTokenizerBase, max_len: int) -> Dataset:
    columns, _ = GLUE[task]
    texts = ["\n".join(parts) for parts in zip(*(rows[c] for c in columns))]
    labels = [x / 5.0 for x in rows["label"]] if task == "stsb" else rows["label"]  # STS-B 0–5 → [0, 1]
    return Dataset.from_dict({"input_ids": encode_texts(texts, tokenizer, max_len), "labels": labels})


def msmarco_set(rows: Dataset, tokenizer: PreTrainedTokenizerBase, max_len: int, group_size: int) -> Dataset:
    """Re-ranking groups: each query with one selected passage first and `group_size - 1` unselected ones
    (queries without enough of both are dropped). `input_ids` and `labels` (relevance) are lists per group."""
    groups, relevance = [], [1] + [0] * (group_size - 1)
    for query, passages in zip(rows["query"], rows["passages"]):
        texts, selected = passages["passage_text"], passages["is_selected"]
        positives = [t for t, s in zip(texts, selected) if s]
        negatives = [t for t, s in zip(texts, selected) if not s][: group_size - 1]
        if positives and len(negatives) == group_size - 1:
            groups.append(encode_texts([f"{query}\n{t}" for t in positives[:1] + negatives], tokenizer, max_len))
    return Dataset.from_dict({"input_ids": groups, "labels": [relevance] * len(groups)})


def hub_setup(cfg: GemmaEncoderRunConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Dataset]]:
    """The hub decoder and tokenizer, and the task's `train` / `test` sets."""
    decoder, tokenizer = load_pretrained(cfg.model_name)
    if cfg.task == "msmarco":
        data = load_hub_dataset(MSMARCO_ID, "v1.1", param="task")
        sets = {split: msmarco_set(data[name], tokenizer, cfg.max_len, cfg.group_size)
                for split, name in (("train", "train"), ("test", "validation"))}
    else:
        data = load_hub_dataset(GLUE_ID, cfg.task, param="task")
        sets = {split: glue_set(data[name], cfg.task, tokenizer, cfg.max_len)
                for split, name in (("train", "train"), ("test", GLUE[cfg.task][1]))}
    return decoder, tokenizer, sets
