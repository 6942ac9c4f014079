"""Pooling: final hidden states `h [B, L, d]` and the attention mask `m [B, L]` (1 = real token) to one vector
per row. Every strategy except the two `*_naive` ones gives the same result under left and right padding,
because tokens are selected by their rank among the real tokens, `r = cumsum(m) - 1`, never by index.

Taught in notebooks/05_gemma_encoder.ipynb, § "Pooling".
"""

from __future__ import annotations

import math

import torch
from torch import nn

POOLINGS = ("first_k", "last_k", "mean", "weighted_mean", "attn_query", "attn_kv", "learnable_tokens",
            "first_naive", "last_naive")


def real_rank(mask: torch.Tensor) -> torch.Tensor:
    """Rank of each real token among the real tokens of its row (0-based); meaningless on pads."""
    return mask.long().cumsum(-1) - 1


def masked_mean(h: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`Σ_t w_t h_t / Σ_t w_t` per row."""
    w = weights.to(h.dtype).unsqueeze(-1)
    return (h * w).sum(1) / w.sum(1).clamp_min(1e-9)


def first_k(h: torch.Tensor, mask: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Mean of the first `k` real tokens (k=1: the first token, BOS for Gemma)."""
    return masked_mean(h, mask.bool() & (real_rank(mask) < k))


def last_k(h: torch.Tensor, mask: torch.Tensor, k: int = 1) -> torch.Tensor:
    """Mean of the last `k` real tokens (k=1: the last real token, wherever the padding is)."""
    n = mask.sum(-1, keepdim=True)
    return masked_mean(h, mask.bool() & (real_rank(mask) >= n - k))


def mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return masked_mean(h, mask)


def weighted_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Position-weighted mean (SGPT / LLM2Vec): weight r+1 on the real token of rank r."""
    return masked_mean(h, (real_rank(mask) + 1) * mask)


class AttentionQueryPool(nn.Module):
    """Query-probe attention pooling: `num_queries` learned queries attend over the real tokens with `num_heads`
    heads; the per-query outputs are concatenated and projected back to d. Keeps the last weights in
    `self.weights [B, heads, queries, L]` (0 on pads, rows sum to 1)."""

    def __init__(self, d: int, num_queries: int = 1, num_heads: int = 4):
        super().__init__()
        if d % num_heads:
            raise ValueError(f"parameter 'num_heads': hidden size {d} is not divisible by {num_heads}")
        self.num_heads = num_heads
        self.queries = nn.Parameter(torch.randn(num_queries, d) / math.sqrt(d))
        self.key, self.value = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.out = nn.Linear(num_queries * d, d, bias=False)
        self.weights: torch.Tensor | None = None

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, d = h.shape
        heads, dh = self.num_heads, d // self.num_heads

        def split(x):  # [.., n, d] -> [.., heads, n, dh]
            return x.unflatten(-1, (heads, dh)).transpose(-3, -2)

        q, k, v = split(self.queries), split(self.key(h)), split(self.value(h))
        # a_pt = softmax_t(q_p . (W_k h_t) / sqrt(d_h)) over the real tokens t; pooled_p = sum_t a_pt W_v h_t
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # [B, heads, P, L]
        scores = scores.masked_fill(~mask.bool()[:, None, None, :], float("-inf"))
        self.weights = scores.softmax(-1)
        pooled = (self.weights @ v).transpose(1, 2).flatten(2)  # [B, P, d]
        return self.out(pooled.flatten(1))


class AttentionKVPool(nn.Module):
    """KV-probe attention pooling (our reading of the name): every real token queries `num_probes` learned
    key/value probes, `u_t = h_t + softmax(h_t W_q K_pᵀ/√d) V_p`, then the mean of `u` over real tokens. `V_p`
    starts at 0 (the pooler starts as mean pooling); `num_probes` must be >= 2 for the attention to do anything:
    over one probe the softmax is 1, `u_t = h_t + V_p`, and `W_q`, `K_p` get no gradient."""

    def __init__(self, d: int, num_probes: int = 8):
        super().__init__()
        self.query = nn.Linear(d, d, bias=False)
        self.keys = nn.Parameter(torch.randn(num_probes, d) / math.sqrt(d))
        self.values = nn.Parameter(torch.zeros(num_probes, d))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # u_t = h_t + softmax(h_t W_q K_p^T / sqrt(d)) V_p;   pooled = mean_t u_t over real tokens
        weights = (self.query(h) @ self.keys.T / math.sqrt(h.shape[-1])).softmax(-1)
        return masked_mean(h + weights @ self.values, mask)


class Pooler(nn.Module):
    """One of `POOLINGS`. `k` is K of first_k/last_k; `num_probes` the learned queries of attn_query (the model
    also uses it as the number of appended learnable tokens); `kv_probes` the key/value probes of attn_kv, a
    count of its own (8, the spec's M): with one probe the softmax is identically 1 and attn_kv is mean pooling
    plus a constant vector. For learnable_tokens the model passes the mask of the appended tokens' positions,
    so pooling is their mean."""

    def __init__(self, strategy: str, d: int, *, k: int = 1, num_probes: int = 1, kv_probes: int = 8,
                 num_heads: int = 4):
        super().__init__()
        if strategy not in POOLINGS:
            raise ValueError(f"parameter 'pooling': unknown strategy {strategy!r}; use one of {list(POOLINGS)}")
        if min(k, num_probes, kv_probes) < 1:
            raise ValueError(f"parameters 'pooling_k', 'num_probes' and 'kv_probes' must be >= 1, got {k}, "
                             f"{num_probes} and {kv_probes}")
        self.strategy, self.k = strategy, k
        if strategy == "attn_query":
            self.attention = AttentionQueryPool(d, num_probes, num_heads)
        elif strategy == "attn_kv":
            self.attention = AttentionKVPool(d, kv_probes)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        s = self.strategy
        if s == "first_k":
            return first_k(h, mask, self.k)
        if s == "last_k":
            return last_k(h, mask, self.k)
        if s in ("mean", "learnable_tokens"):
            return mean(h, mask)
        if s == "weighted_mean":
            return weighted_mean(h, mask)
        if s == "first_naive":
            return h[:, 0]
        if s == "last_naive":
            return h[:, -1]
        return self.attention(h, mask)


class LearnableTokens(nn.Module):
    """`num_tokens` trained embeddings inserted right after the last real token of every row (so they see the
    whole text even under a causal mask): right pads move behind them, left pads stay in front."""

    def __init__(self, d: int, num_tokens: int):
        super().__init__()
        self.embeddings = nn.Parameter(torch.randn(num_tokens, d) * 0.02)

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the longer `embeds` and attention mask, and the mask of the inserted positions."""
        batch, length, d = embeds.shape
        m = self.embeddings.shape[0]
        positions = torch.arange(length, device=mask.device).expand(batch, length).float()
        last_real = (positions * mask).amax(-1, keepdim=True)  # index of the last real token
        probe_keys = last_real + (torch.arange(m, device=mask.device) + 1) / (m + 1)
        order = torch.cat([positions, probe_keys], 1).argsort(dim=-1, stable=True)
        all_embeds = torch.cat([embeds, self.embeddings.to(embeds.dtype).expand(batch, m, d)], 1)
        all_mask = torch.cat([mask, torch.ones(batch, m, dtype=mask.dtype, device=mask.device)], 1)
        is_probe = torch.cat([torch.zeros_like(mask), torch.ones_like(all_mask[:, length:])], 1)
        gather = order.unsqueeze(-1).expand(-1, -1, d)
        return all_embeds.gather(1, gather), all_mask.gather(1, order), is_probe.gather(1, order)
