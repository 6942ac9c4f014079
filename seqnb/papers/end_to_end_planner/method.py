"""End-to-end planner + language model (Cornille et al., arXiv 2410.12492; building on arXiv 2404.00614).

- Writing actions: split text into sentences, embed them, k-means; a sentence's action is its cluster id and
  the cluster centre its action embedding (`split_sentences`, `tfidf_embedder`, `fit_actions`).
- A planner reads the embeddings of the sentences before sentence j and predicts a distribution over the k
  actions of sentence j (`SentencePlanner`).
- The LM is conditioned on an action embedding e_j = w_j^T C for every token whose *target* lies in sentence j,
  added after the attention heads are merged, before the attention output projection (`ActionConditionedLM`).
  The interface weights w_j (`interface_weights`) are one-hot (oracle, hard argmax), straight-through, the
  planner's probabilities (soft mixture, the paper's end-to-end interface) or uniform; oracle mixing replaces
  w_j by the oracle one-hot with probability r per sentence (`oracle_mix`, `mix_ratio_at`).
"""

from __future__ import annotations

import re
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqnb.collate import to_device
from seqnb.runtime import model_device, seeded_generator

INTERFACES = ("none", "uniform", "oracle", "hard", "st", "soft")
_SENT_END = re.compile(r"(?<=[.!?])\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences at '.', '!' or '?' followed by white space (a regex stand-in for spaCy's sentencizer)."""
    return [s.strip() for s in _SENT_END.split(text) if s.strip()]


def tfidf_embedder(sentences: list[str], dim: int, seed: int) -> Callable[[list[str]], np.ndarray]:
    """Fit tf-idf over words (final punctuation dropped) -> truncated SVD to `dim` -> L2 norm; returns embed()."""
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(token_pattern=r"[A-Za-z]+")
    svd = TruncatedSVD(dim, random_state=seed).fit(vec.fit_transform(sentences))

    def embed(texts: list[str]) -> np.ndarray:
        e = svd.transform(vec.transform(texts))
        return (e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-9)).astype(np.float32)

    return embed


def fit_actions(embeddings: np.ndarray, k: int, seed: int):
    """k-means (k-means++, seeded) over sentence embeddings; `.predict` assigns actions, `.cluster_centers_` is
    the codebook."""
    from sklearn.cluster import KMeans

    if k < 2 or k > len(embeddings):
        raise ValueError(f"parameter 'k': need 2 <= k <= number of sentences ({len(embeddings)}), got {k}")
    return KMeans(n_clusters=k, init="k-means++", n_init="auto", random_state=seed).fit(embeddings)


def interface_weights(logits: torch.Tensor, interface: str, *, tau: float = 1.0,
                      oracle: torch.Tensor | None = None) -> torch.Tensor:
    """Weights over the k actions per sentence, shape of `logits` (..., k).

    oracle: onehot(oracle); hard: onehot(argmax), no gradient; st: onehot(argmax) - sg(p) + p (forward = one-hot,
    backward = softmax Jacobian); soft: p = softmax(logits / tau); uniform: 1/k.
    """
    if tau <= 0:
        raise ValueError(f"parameter 'tau': the softmax temperature must be > 0, got {tau}")
    k = logits.shape[-1]
    if interface == "oracle":
        if oracle is None:
            raise ValueError("interface 'oracle' needs the oracle actions")
        return F.one_hot(oracle.clamp(min=0), k).to(logits.dtype)
    if interface == "uniform":
        return torch.full_like(logits, 1.0 / k)
    p = torch.softmax(logits / tau, dim=-1)
    if interface == "soft":
        return p
    hard = F.one_hot(p.argmax(-1), k).to(p.dtype)
    if interface == "hard":
        return hard.detach()
    if interface == "st":
        return hard - p.detach() + p
    raise ValueError(f"parameter 'interface': unknown {interface!r}, use one of {INTERFACES[1:]}")


def oracle_mix(w: torch.Tensor, oracle: torch.Tensor, ratio: float, generator: torch.Generator | None = None):
    """Per sentence, with probability `ratio`, replace w by the oracle one-hot (no gradient flows there)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"parameter 'mix_ratio': a probability in [0, 1], got {ratio}")
    if ratio == 0.0:
        return w
    m = torch.rand(oracle.shape, generator=generator, device=w.device) < ratio
    return torch.where(m[..., None], F.one_hot(oracle.clamp(min=0), w.shape[-1]).to(w.dtype), w)


def mix_ratio_at(step: int, total: int, r0: float, schedule: str = "const") -> float:
    """The oracle-mixing ratio at `step` of `total`: constant r0, or linear decay from r0 (step 0) to 0 (last)."""
    if schedule == "const":
        return r0
    if schedule == "linear":
        return r0 * (1.0 - step / max(total - 1, 1))
    raise ValueError(f"parameter 'mix_schedule': unknown {schedule!r}, use 'const' or 'linear'")


def expand_to_tokens(e_sent: torch.Tensor, sentence_idx: torch.Tensor) -> torch.Tensor:
    """(B, S, d) sentence embeddings -> (B, T, d): row t takes the sentence `sentence_idx[b, t]`."""
    return torch.gather(e_sent, 1, sentence_idx.clamp(min=0)[..., None].expand(-1, -1, e_sent.shape[-1]))


class SentencePlanner(nn.Module):
    """Sentence embeddings (B, S, d_e) -> logits (B, S, k); row j sees only sentences < j (a start vector takes
    the place of sentence -1; a causal 1-layer transformer over the shifted sequence)."""

    def __init__(self, d_e: int, k: int, *, d_model: int = 64, n_head: int = 2, n_layer: int = 1,
                 max_sents: int = 64):
        super().__init__()
        self.inp = nn.Linear(d_e, d_model)
        self.start = nn.Parameter(torch.zeros(d_model))
        self.pos = nn.Embedding(max_sents, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_head, 4 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, k)

    def forward(self, sent_emb: torch.Tensor) -> torch.Tensor:
        b, s, _ = sent_emb.shape
        h = torch.cat([self.start.expand(b, 1, -1), self.inp(sent_emb[:, :-1])], dim=1)
        h = h + self.pos(torch.arange(s, device=h.device))
        mask = nn.Transformer.generate_square_subsequent_mask(s, device=h.device)
        return self.head(self.encoder(h, mask=mask, is_causal=True))


def _add_action(module, args):
    """Forward pre-hook on an attention output projection: add the adapter's W e + b (set for one forward)."""
    cond = module.action_cond
    return None if cond is None else (args[0] + cond.to(args[0].dtype),)


def decoder_blocks(lm: nn.Module) -> list[nn.Module]:
    """The attention output projections of a GPT-2-style decoder (where the action embedding is added)."""
    return [block.attn.c_proj for block in lm.transformer.h]


class ActionConditionedLM(nn.Module):
    """A decoder LM plus a planner, a trainable codebook and one adapter W_l e + b_l per conditioned layer.

    `interface` picks how the planner's logits become weights; `mix_ratio` mixes in oracle actions in training.
    `forward(..., weights=W)` conditions on given weights (B, S, k) instead (the explorer's forced action).
    """

    def __init__(self, lm: nn.Module, planner: SentencePlanner, codebook: torch.Tensor, *, layers: list[int],
                 window: int = 0, adapter_init: str = "zeros", tau: float = 1.0, seed: int = 0):
        super().__init__()
        self.lm, self.planner = lm, planner
        self.config = lm.config
        self.codebook = nn.Parameter(torch.as_tensor(codebook, dtype=torch.float32).clone())
        d_model, d_e = lm.config.hidden_size, self.codebook.shape[1]
        self.layers = list(layers)
        self.adapters = nn.ModuleList(nn.Linear(d_e, d_model) for _ in self.layers)
        for a in self.adapters:
            (nn.init.zeros_ if adapter_init == "zeros" else nn.init.xavier_normal_)(a.weight)
            nn.init.zeros_(a.bias)
        self.window, self.tau = window, tau
        self.interface, self.mix_ratio = "none", 0.0
        self.reseed(seed)
        self.targets = [decoder_blocks(lm)[layer] for layer in self.layers]
        for target in self.targets:
            target.action_cond = None
            target.register_forward_pre_hook(_add_action)

    def reseed(self, seed: int) -> None:
        """Restart the oracle-mixing draws from `seed` (the generator is made on the model's device when used)."""
        self.seed, self.generator = seed, None

    def plan(self, sent_emb: torch.Tensor, actions: torch.Tensor | None = None) -> torch.Tensor:
        """Interface weights (B, S, k) for the current interface (oracle mixing only in training)."""
        logits = self.planner(sent_emb)
        w = interface_weights(logits, self.interface, tau=self.tau, oracle=actions)
        if self.training and self.mix_ratio > 0 and self.interface not in ("oracle", "uniform"):
            if self.generator is None:
                self.generator = seeded_generator(self.seed, w.device)
            w = oracle_mix(w, actions, self.mix_ratio, self.generator)
        return w

    def attention_mask(self, t: int, device) -> torch.Tensor | None:
        """Banded causal mask (1, 1, T, T): a token sees itself and the `window - 1` tokens before it."""
        if not self.window:
            return None
        i = torch.arange(t, device=device)
        return ((i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < self.window))[None, None]

    def forward(self, input_ids, labels=None, sentence_idx=None, sent_emb=None, actions=None, weights=None,
                **_unused):
        """LM output (logits, loss) conditioned per token; extra batch keys (pos_in_sent, ...) are ignored."""
        if self.interface != "none" or weights is not None:
            w = self.plan(sent_emb, actions) if weights is None else weights
            e_tok = expand_to_tokens(w @ self.codebook, sentence_idx)
            for target, adapter in zip(self.targets, self.adapters):
                target.action_cond = adapter(e_tok)
        try:
            mask = self.attention_mask(input_ids.shape[1], input_ids.device)
            if mask is not None:
                mask = mask.expand(input_ids.shape[0], -1, -1, -1)
            return self.lm(input_ids=input_ids, attention_mask=mask, labels=labels)
        finally:
            for target in self.targets:
                target.action_cond = None


def set_trainable(model: ActionConditionedLM, *, lm: bool, planner: bool) -> None:
    """Base LM weights and planner on or off; adapters and codebook are always trainable."""
    for p in model.lm.parameters():
        p.requires_grad_(lm)
    for p in model.planner.parameters():
        p.requires_grad_(planner)
    for p in [*model.adapters.parameters(), model.codebook]:
        p.requires_grad_(True)


def planner_step(planner: SentencePlanner, batch: dict) -> tuple[torch.Tensor, dict]:
    """Planner pre-training: cross-entropy of the k-means action of every real sentence."""
    logits = planner(batch["sent_emb"])
    loss = F.cross_entropy(logits.flatten(0, 1), batch["actions"].flatten(), ignore_index=-1)
    return loss, {"loss": loss.detach()}


@torch.no_grad()
def planner_metrics(planner: SentencePlanner, batch: dict) -> dict[str, float]:
    """Accuracy of the argmax against the k-means actions and mean entropy (nats), over real sentences."""
    batch = to_device(batch, model_device(planner))
    logits = planner(batch["sent_emb"])
    real = batch["actions"] >= 0
    logp = torch.log_softmax(logits, -1)
    acc = (logits.argmax(-1) == batch["actions"])[real].float().mean()
    ent = -(logp.exp() * logp).sum(-1)[real].mean()
    return {"planner_acc": acc.item(), "planner_entropy": ent.item()}


@torch.no_grad()
def score(model: ActionConditionedLM, batches, interface: str) -> dict[str, float | list]:
    """Perplexity with the given interface at evaluation (predicted actions unless 'oracle'), and the mean NLL by
    token position within the target sentence (0 = a sentence's first token)."""
    was, model.interface = model.interface, interface
    model.eval()
    total, count, by_pos = 0.0, 0, {}
    try:
        for batch in batches:
            batch = to_device(batch, model_device(model))
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1]
            labels = batch["labels"][:, 1:]
            nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
            real = labels != -100
            total, count = total + nll[real].sum().item(), count + real.sum().item()
            pos = batch["pos_in_sent"][:, 1:]
            for p in pos[real].unique().tolist():
                sel = real & (pos == p)
                s, n = by_pos.get(p, (0.0, 0))
                by_pos[p] = (s + nll[sel].sum().item(), n + sel.sum().item())
    finally:
        model.interface = was
    return {"nll": total / count, "ppl": float(np.exp(total / count)),
            "nll_by_pos": [by_pos[p][0] / by_pos[p][1] for p in sorted(by_pos)]}
