"""End-to-end planner + language model (Cornille et al., arXiv 2410.12492; building on arXiv 2404.00614).

- Writing actions: split text into sentences, embed them, k-means; a sentence's action is its cluster id and
  the cluster centre its action embedding (`split_sentences`, `tfidf_embedder`, `fit_actions`).
- A planner reads the embeddings of the sentences before sentence j and predicts a distribution over the k
  actions of sentence j (`SentencePlanner`, P1's bidirectional mean-pooled encoder).
- The LM is conditioned on an action embedding e_j = w_j^T C_l for every token whose *target* lies in sentence j,
  added in each conditioned layer l after the attention heads are merged, before the attention output projection
  (`ActionConditionedLM`; one codebook C_l per layer, as in P1's code).
  The interface weights w_j (`interface_weights`) are one-hot (oracle, hard argmax), straight-through, the
  planner's probabilities (soft mixture, the paper's end-to-end interface) or uniform; oracle mixing replaces
  w_j by the oracle one-hot with probability r per sentence (`oracle_mix`, `mix_ratio_at`).

Taught in notebooks/02_end_to_end_planner.ipynb, § "Writing actions: k-means over sentence embeddings"; § "Stage 0 and stage 1: every arm from the same start, with the same budget".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqnb.collate import to_device
from seqnb.runtime import generator_state, model_device, restore_generator, seeded_generator

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
    # p = softmax(z / tau): the planner's distribution over the k actions of each sentence
    p = torch.softmax(logits / tau, dim=-1)
    if interface == "soft":  # the paper's end-to-end interface: e_j = sum_a p_a c_a (the codebook mixture)
        return p
    hard = F.one_hot(p.argmax(-1), k).to(p.dtype)
    if interface == "hard":
        return hard.detach()
    if interface == "st":  # straight-through: onehot(argmax p) forward, d p backward
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


def sinusoidal_positions(n: int, d: int, device=None) -> torch.Tensor:
    """(n, d) sinusoidal position encodings (Vaswani et al.): sin on even, cos on odd dimensions."""
    pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    angle = pos * torch.exp(torch.arange(0, d, 2, device=device).float() * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d, device=device)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(angle), torch.cos(angle)[:, : d // 2]
    return pe


class SentencePlanner(nn.Module):
    """P1's planner (official code, `SentenceBasedModelF`): sentence embeddings (B, S, d_e) -> logits (B, S, k).

    The context of sentence j is a learned start vector followed by the embeddings of sentences 0..j-1, plus
    sinusoidal positions, then a linear projection; a bidirectional transformer encoder reads that context alone
    and its outputs are mean-pooled; the policy head is initialised from the codebook, so that at the start the
    logit of action a is the pooled context's dot product with the cluster centre c_a. Its width is d_e.
    """

    def __init__(self, codebook: torch.Tensor, *, n_head: int = 2, n_layer: int = 1, ff_dim: int = 2048):
        super().__init__()
        codebook = torch.as_tensor(codebook, dtype=torch.float32)
        k, d = codebook.shape
        self.start = nn.Parameter(torch.zeros(d))
        self.inp = nn.Linear(d, d)
        layer = nn.TransformerEncoderLayer(d, n_head, ff_dim, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.head = nn.Linear(d, k)
        self.n_head = n_head
        with torch.no_grad():
            self.head.weight.copy_(codebook)

    def forward(self, sent_emb: torch.Tensor) -> torch.Tensor:
        b, s, d = sent_emb.shape
        x = torch.cat([self.start.expand(b, 1, d), sent_emb[:, :-1]], dim=1)
        x = self.inp(x + sinusoidal_positions(s, d, x.device))
        # one copy of the sequence per target sentence j; copy j hides positions > j (bidirectional within them).
        # The mask is given per attention head, (copies x heads, query, key): torch's key-padding path is slower
        i = torch.arange(s, device=x.device)
        hidden = i[None, :] > i[:, None]  # (j, position)
        mask = hidden[:, None, :].expand(s, s, s).repeat(b, 1, 1).repeat_interleave(self.n_head, 0)
        h = self.encoder(x[:, None].expand(b, s, s, d).reshape(b * s, s, d), mask=mask).view(b, s, s, d)
        seen = (~hidden).to(h.dtype)
        pooled = (h * seen[None, :, :, None]).sum(2) / seen.sum(1)[None, :, None]
        return self.head(pooled)


def _add_action(module, args):
    """Forward pre-hook on an attention output projection: add the adapter's W e + b (set for one forward)."""
    cond = module.action_cond
    return None if cond is None else (args[0] + cond.to(args[0].dtype),)


# where a decoder keeps its attention output projections: (blocks of the base model, attention, projection)
ATTENTION_OUTPUTS = {
    "GPT-2": ("h", "attn", "c_proj"),
    "Llama-style (Llama, SmolLM2, Qwen2, Mistral, Gemma)": ("layers", "self_attn", "o_proj"),
}


def decoder_blocks(lm: nn.Module) -> list[nn.Module]:
    """The attention output projections of a decoder LM, one per layer (where the action embedding is added):
    GPT-2's `transformer.h[i].attn.c_proj` or a Llama-style `model.layers[i].self_attn.o_proj`."""
    body = lm.base_model
    for blocks, attention, projection in ATTENTION_OUTPUTS.values():
        layers = getattr(body, blocks, None)
        if layers is not None and all(hasattr(getattr(b, attention, None), projection) for b in layers):
            return [getattr(getattr(b, attention), projection) for b in layers]
    raise TypeError(
        f"ActionConditionedLM does not know where {type(lm).__name__} keeps its attention output projections "
        f"(it knows {list(ATTENTION_OUTPUTS)}). Fix: add its (blocks, attention, projection) attribute names, as in "
        "`lm.base_model.<blocks>[i].<attention>.<projection>`, to ATTENTION_OUTPUTS in "
        "seqnb/papers/end_to_end_planner/method.py")


def _input_width(projection: nn.Module) -> int:
    """The width a projection reads (nn.Linear, or GPT-2's transposed Conv1D): the adapter's output size."""
    return projection.in_features if isinstance(projection, nn.Linear) else projection.weight.shape[0]


class ActionConditionedLM(nn.Module):
    """A decoder LM plus a planner and, in every conditioned layer l, a trainable codebook C_l (initialised from the
    k-means centres; P1's code keeps one per attention module) and an adapter W_l e + b_l.

    `forward(..., interface=...)` picks how the planner's logits become weights ("none": the plain LM);
    `mix_ratio` (with its `generator`) mixes in oracle actions in training. `forward(..., weights=W)` conditions
    on given weights (B, S, k) instead (the explorer's forced action). The model holds no schedule: a training
    step passes them (`PlannerLMStep`).
    """

    def __init__(self, lm: nn.Module, planner: SentencePlanner, codebook: torch.Tensor, *, layers: list[int],
                 window: int = 0, adapter_init: str = "zeros", tau: float = 1.0):
        super().__init__()
        self.lm, self.planner = lm, planner
        self.config = lm.config
        codebook = torch.as_tensor(codebook, dtype=torch.float32)
        self.layers = list(layers)
        self.targets = [decoder_blocks(lm)[layer] for layer in self.layers]
        self.codebooks = nn.ParameterList(nn.Parameter(codebook.clone()) for _ in self.layers)
        self.k, d_e = codebook.shape
        self.adapters = nn.ModuleList(nn.Linear(d_e, _input_width(target)) for target in self.targets)
        for a in self.adapters:
            (nn.init.zeros_ if adapter_init == "zeros" else nn.init.xavier_normal_)(a.weight)
            nn.init.zeros_(a.bias)
        self.window, self.tau = window, tau
        for target in self.targets:
            target.action_cond = None
            target.register_forward_pre_hook(_add_action)

    def plan(self, sent_emb: torch.Tensor, actions: torch.Tensor | None, interface: str, mix_ratio: float = 0.0,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Interface weights (B, S, k) (oracle mixing only in training)."""
        logits = self.planner(sent_emb)
        w = interface_weights(logits, interface, tau=self.tau, oracle=actions)
        if self.training and mix_ratio > 0 and interface not in ("oracle", "uniform"):
            w = oracle_mix(w, actions, mix_ratio, generator)
        return w

    def attention_mask(self, t: int, device) -> torch.Tensor | None:
        """Banded causal mask (1, 1, T, T): a token sees itself and the `window - 1` tokens before it."""
        if not self.window:
            return None
        i = torch.arange(t, device=device)
        return ((i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] < self.window))[None, None]

    def forward(self, input_ids, labels=None, sentence_idx=None, sent_emb=None, actions=None, weights=None, *,
                interface: str = "none", mix_ratio: float = 0.0, generator: torch.Generator | None = None,
                **_unused):
        """LM output (logits, loss) conditioned per token; extra batch keys (pos_in_sent, ...) are ignored."""
        if interface != "none" or weights is not None:
            w = self.plan(sent_emb, actions, interface, mix_ratio, generator) if weights is None else weights
            # layer l: e_j = w_j C_l (the action embedding of sentence j in that layer's codebook) is given to every
            # token of sentence j, and W_l e + b_l is added to the layer's attention output
            for target, adapter, codebook in zip(self.targets, self.adapters, self.codebooks):
                target.action_cond = adapter(expand_to_tokens(w @ codebook, sentence_idx))
        try:
            mask = self.attention_mask(input_ids.shape[1], input_ids.device)
            if mask is not None:
                mask = mask.expand(input_ids.shape[0], -1, -1, -1)
            return self.lm(input_ids=input_ids, attention_mask=mask, labels=labels)
        finally:
            for target in self.targets:
                target.action_cond = None


def set_trainable(model: ActionConditionedLM, *, lm: bool, planner: bool) -> None:
    """Base LM weights and planner on or off; adapters and codebooks are always trainable."""
    for p in model.lm.parameters():
        p.requires_grad_(lm)
    for p in model.planner.parameters():
        p.requires_grad_(planner)
    for p in [*model.adapters.parameters(), *model.codebooks]:
        p.requires_grad_(True)


@dataclass
class PlannerLMStep:
    """`step_fn(model, batch, step)` for an `ActionConditionedLM` trained through `interface`: teacher forcing,
    with oracle actions mixed in at ratio `mix_ratio_at(step, total_steps, mix_ratio, schedule)`. The mixing
    generator is seeded with `seed` on the batch's device at the first mixed step; `state_dict` carries it.

    Example::

        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from seqnb.papers.end_to_end_planner.experiment import collate, encode_doc
        from seqnb.papers.end_to_end_planner.method import (ActionConditionedLM, PlannerLMStep, SentencePlanner,
                                                            fit_actions, tfidf_embedder)

        lm = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M", dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M")
        docs = [["The cat sat down.", "It purred.", "Then it slept."],
                ["Rain fell all day.", "The river rose.", "Roads closed."]]
        embed = tfidf_embedder([s for d in docs for s in d], dim=4, seed=0)  # sentence embeddings
        kmeans = fit_actions(embed([s for d in docs for s in d]), k=3, seed=0)  # the writing actions: k-means clusters
        batch = collate([encode_doc(tokenizer, d, embed(d), kmeans.predict(embed(d)).tolist()) for d in docs],
                        pad_id=tokenizer.eos_token_id)
        codebook = kmeans.cluster_centers_
        model = ActionConditionedLM(lm, SentencePlanner(codebook), codebook, layers=[28, 29])  # top 2 of 30
        step = PlannerLMStep("soft")  # the planner's probabilities weight the action embeddings
        loss, logs = step(model, batch, 0)
        loss.backward()
    """

    interface: str
    mix_ratio: float = 0.0
    schedule: str = "const"
    total_steps: int = 1
    seed: int = 0
    generator: torch.Generator | None = field(default=None, init=False, repr=False)

    def __call__(self, model: ActionConditionedLM, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        ratio = mix_ratio_at(step, self.total_steps, self.mix_ratio, self.schedule)
        if ratio > 0 and self.generator is None:
            self.generator = seeded_generator(self.seed, batch["input_ids"].device)
        loss = model(**batch, interface=self.interface, mix_ratio=ratio, generator=self.generator).loss
        return loss, {"loss": loss.detach()}

    def state_dict(self) -> dict:
        return {"generator": generator_state(self.generator)}

    def load_state_dict(self, state: dict) -> None:
        self.generator = restore_generator(state["generator"])


def planner_step(planner: SentencePlanner, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
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
    model.eval()
    total, count, by_pos = 0.0, 0, {}
    for batch in batches:
        batch = to_device(batch, model_device(model))
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}, interface=interface).logits[:, :-1]
        labels = batch["labels"][:, 1:]
        nll = F.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
        real = labels != -100
        total, count = total + nll[real].sum().item(), count + real.sum().item()
        pos = batch["pos_in_sent"][:, 1:]
        for p in pos[real].unique().tolist():
            sel = real & (pos == p)
            s, n = by_pos.get(p, (0.0, 0))
            by_pos[p] = (s + nll[sel].sum().item(), n + sel.sum().item())
    return {"nll": total / count, "ppl": float(np.exp(total / count)),
            "nll_by_pos": [by_pos[p][0] / by_pos[p][1] for p in sorted(by_pos)]}
