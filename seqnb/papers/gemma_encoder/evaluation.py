"""Evaluation: batched predictions in a fixed order, task metrics, and retrieval ranks with ties counted
against the query (so an encoder that maps everything to one vector scores at chance, not perfectly)."""

from __future__ import annotations

import numpy as np
import torch
from datasets import Dataset
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef

from seqnb.runtime import model_device
from seqnb.papers.gemma_encoder.data import EncoderCollator


@torch.no_grad()
def predict(model: torch.nn.Module, data: Dataset, collator: EncoderCollator, *, prefix: str = "",
            batch_size: int = 128) -> torch.Tensor:
    """`model(...).logits` for every row of `data` in order (for `prefix="q_"`, the `q_input_ids` column)."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    column = f"{prefix}input_ids"
    outputs = []
    for start in range(0, len(data), batch_size):
        batch = collator([{"input_ids": ids} for ids in data[start:start + batch_size][column]])
        outputs.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu())
    model.train(was_training)
    return torch.cat(outputs)


def classification_metrics(logits: torch.Tensor, labels: list[int]) -> dict[str, float]:
    """Accuracy; for two classes also F1 and Matthews correlation (`mcc`, GLUE's metric for CoLA)."""
    pred, gold = logits.argmax(-1).cpu().numpy(), np.asarray(labels)
    out = {"acc": float((pred == gold).mean())}
    if logits.shape[-1] == 2:
        out["f1"] = float(f1_score(gold, pred))
        out["mcc"] = float(matthews_corrcoef(gold, pred))
    return out


def regression_metrics(scores: torch.Tensor, targets: list[float]) -> dict[str, float]:
    s = scores.detach().reshape(-1).float().cpu().numpy()
    return {"pearson": float(pearsonr(s, targets)[0]), "spearman": float(spearmanr(s, targets)[0])}


def retrieval_ranks(queries: torch.Tensor, passages: torch.Tensor) -> torch.Tensor:
    """Rank of each query's own passage (query i ↔ passage i) among all passages by dot product, 1 = best.
    A tie counts against the query: rank = #{j : s_ij ≥ s_ii}."""
    scores = queries @ passages.T
    return (scores >= scores.diagonal()[:, None]).sum(-1)


def retrieval_metrics(queries: torch.Tensor, passages: torch.Tensor, k: int = 10) -> dict[str, float]:
    """MRR@k and recall@1 of title → article retrieval over the whole candidate pool."""
    ranks = retrieval_ranks(queries, passages).float()
    return {f"mrr{k}": float(torch.where(ranks <= k, 1 / ranks, torch.zeros_like(ranks)).mean()),
            "r1": float((ranks == 1).float().mean())}


def group_mrr(scores: torch.Tensor, relevance: torch.Tensor, k: int = 10) -> float:
    """MRR@k of re-ranking: `scores, relevance [N, G]`, rank of the best-scored relevant candidate, ties
    counted against the query."""
    best = torch.where(relevance > 0, scores, torch.full_like(scores, float("-inf"))).amax(-1, keepdim=True)
    ranks = (scores >= best).sum(-1).float()
    return float(torch.where(ranks <= k, 1 / ranks, torch.zeros_like(ranks)).mean())
