"""Task losses: cross-entropy (classification), MSE (regression), listwise softmax (cross-encoder ranking,
as RankT5) and InfoNCE with in-batch negatives (bi-encoder ranking).

Taught in notebooks/05_gemma_encoder.ipynb, § "Ranking: a bi-encoder with in-batch negatives"."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)


def regression_loss(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(scores.float().reshape(-1), targets.float().reshape(-1))


def listwise_loss(scores: torch.Tensor, relevance: torch.Tensor) -> torch.Tensor:
    """Softmax cross-entropy over each group of candidates: `scores, relevance [N, G]`; the target distribution
    is the relevance normalised per group (one positive: plain cross-entropy towards it)."""
    # q_j = rel_j / sum_g rel_g;   L = - sum_j q_j log softmax(s)_j, averaged over groups
    target = relevance.float() / relevance.float().sum(-1, keepdim=True).clamp_min(1e-9)
    return -(target * scores.float().log_softmax(-1)).sum(-1).mean()


def in_batch_contrastive_loss(queries: torch.Tensor, passages: torch.Tensor, temperature: float = 0.05) -> torch.Tensor:
    """InfoNCE: query i's positive is passage i, every other passage in the batch is a negative."""
    # s_ij = <q_i, p_j> / tau;   L = - 1/N sum_i log (exp s_ii / sum_j exp s_ij)
    scores = queries.float() @ passages.float().T / temperature
    return F.cross_entropy(scores, torch.arange(len(queries), device=scores.device))
