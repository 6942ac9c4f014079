"""Prompt/target pairs to model inputs: tokenise once with `datasets.map`, pad per batch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label value that the cross-entropy skips


def tokenize_pairs(data: Dataset, tokenizer: PreTrainedTokenizerBase, *, seq2seq: bool = False) -> Dataset:
    """Add `input_ids` and `labels` for (`prompt`, `target`) rows.

    Decoder-only: `input_ids = prompt + target + <eos>` with the prompt's labels set to -100, so the loss is
    teacher-forced on the answer only. Encoder-decoder: `input_ids = prompt`, `labels = target + <eos>`.
    """
    eos = tokenizer.eos_token_id

    def encode(batch):
        prompts = tokenizer(batch["prompt"])["input_ids"]
        targets = tokenizer(batch["target"], add_special_tokens=False)["input_ids"]
        if seq2seq:
            return {"input_ids": prompts, "labels": [t + [eos] for t in targets]}
        return {
            "input_ids": [p + t + [eos] for p, t in zip(prompts, targets)],
            "labels": [[IGNORE_INDEX] * len(p) + t + [eos] for p, t in zip(prompts, targets)],
        }

    return data.map(encode, batched=True, desc="tokenize")


@dataclass(frozen=True)
class PadCollator:
    """Right-pads `input_ids` (with the pad id) and `labels` (with -100) and builds the attention mask."""

    pad_token_id: int

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_sequences([r["input_ids"] for r in rows], self.pad_token_id, mask=True)
        out = {"input_ids": ids, "attention_mask": mask}
        if "labels" in rows[0]:
            out["labels"] = pad_sequences([r["labels"] for r in rows], IGNORE_INDEX)
        return out


def pad_sequences(seqs: Sequence[Sequence[int]], value: int, device=None, *, side: str = "right",
                  mask: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Pad integer sequences with `value` on `side` ("right" or "left") to the longest one: a (len(seqs), longest)
    long tensor; with `mask=True` also the attention mask (1 on the sequences' tokens, 0 on the padding). Padded
    as Python lists, then one tensor (a tensor per row cost more than the padding)."""
    if side not in ("right", "left"):
        raise ValueError(f"parameter 'side': unknown {side!r}, use 'right' or 'left'")
    rows = [s.tolist() if hasattr(s, "tolist") else list(s) for s in seqs]
    longest = max(map(len, rows), default=0)
    fill = [[value] * (longest - len(r)) for r in rows]
    padded = torch.tensor([r + f if side == "right" else f + r for r, f in zip(rows, fill)], dtype=torch.long,
                          device=device).view(len(rows), longest)
    if not mask:
        return padded
    return padded, pad_sequences([[1] * len(r) for r in rows], 0, device, side=side)


def to_device(batch: dict, device: torch.device | str) -> dict:
    """The batch with every tensor on `device` (other values as they are): what a model call receives."""
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
