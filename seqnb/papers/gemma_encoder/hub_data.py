"""The paper preset's data and backbone: a hub Gemma decoder, GLUE tasks and MS MARCO re-ranking by hub id or
from a local copy (`dataset_dir`), loaded through seqnb's offline-aware loaders. Never used by the tiny preset;
the tests rehearse it on tiny local folders in the hub's layout."""

from __future__ import annotations

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from seqnb.config import ConfigError
from seqnb.models import load_pretrained
from seqnb.papers.gemma_encoder.config import Config
from seqnb.tasks import load_hub_dataset
from seqnb.papers.gemma_encoder.data import encode_texts

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


def check_columns(rows: Dataset, needed: tuple[str, ...], cfg: Config, split: str) -> None:
    """A local `dataset_dir` holding another task's files fails here with the parameter to fix."""
    missing = [c for c in needed if c not in rows.column_names]
    if missing:
        raise ConfigError(
            "dataset_dir", f"split {split!r} of {cfg.dataset_dir or 'the hub dataset'!r} has columns "
            f"{rows.column_names}, not the {missing} that task {cfg.task!r} needs",
            f"point dataset_dir at a copy of task {cfg.task!r} (or pass -p dataset_dir '' to load it from the hub)")


def hub_setup(cfg: Config) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict[str, Dataset]]:
    """The decoder (in fp32: a bf16 checkpoint such as Gemma 3's would otherwise train in pure bf16, where most
    updates at lr 1e-5 round away) and its tokenizer, and the task's `train` / `test` sets. `cfg.dataset_dir`, if
    set, is read instead of the hub id: a hub download (`hf download ... --repo-type dataset`) or a
    `save_to_disk` copy of the task."""
    decoder, tokenizer = load_pretrained(cfg.model_name)  # fp32, load_pretrained's default
    if cfg.task == "msmarco":
        data = load_hub_dataset(cfg.dataset_dir or MSMARCO_ID, "v1.1", param="dataset_dir")
        splits, needed = (("train", "train"), ("test", "validation")), ("query", "passages")
    else:
        data = load_hub_dataset(cfg.dataset_dir or GLUE_ID, cfg.task, param="dataset_dir")
        splits, needed = (("train", "train"), ("test", GLUE[cfg.task][1])), GLUE[cfg.task][0] + ("label",)
    sets = {}
    for split, name in splits:
        if name not in data:
            raise ConfigError("dataset_dir", f"{cfg.dataset_dir or 'the hub dataset'!r} has no split {name!r} "
                              f"(it has {list(data)})", f"point dataset_dir at a copy of task {cfg.task!r}")
        check_columns(data[name], needed, cfg, name)
        sets[split] = (msmarco_set(data[name], tokenizer, cfg.max_len, cfg.group_size) if cfg.task == "msmarco"
                       else glue_set(data[name], cfg.task, tokenizer, cfg.max_len))
    return decoder, tokenizer, sets
