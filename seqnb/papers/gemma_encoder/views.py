"""Figures and the explorer of the encoder notebook (05).

Each figure function returns a matplotlib Figure (save with seqnb.views.save_figure). The explorer: type two texts,
see the fine-tuned classifier's topic for each and the bi-encoder's similarity score between them; `compare` is
the tested function, `PairExplorer` a thin ipywidgets view over it."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import ipywidgets as widgets

import numpy as np
import torch
from matplotlib.figure import Figure
from transformers import PreTrainedTokenizerBase

from seqnb.views import plt  # noqa: F401  (seqnb.views picks the headless backend)
from seqnb.papers.gemma_encoder.data import EncoderCollator
from seqnb.papers.gemma_encoder.masks import mask_matrix
from seqnb.papers.gemma_encoder.method import GemmaEncoderModel
from seqnb.papers.gemma_encoder.pooling import first_k, last_k, mean, weighted_mean


def _padded_mask(length: int, n_pad: int, side: str) -> torch.Tensor:
    real = [1] * (length - n_pad)
    return torch.tensor([[0] * n_pad + real if side == "left" else real + [0] * n_pad])


def plot_masks(config, length: int = 12, n_pad: int = 3) -> Figure:
    """The boolean masks transformers builds (query rows × key columns) for causal and bidirectional attention,
    one padded row under right and left padding."""
    fig, axes = plt.subplots(2, 2, figsize=(7, 7))
    for i, mode in enumerate(("causal", "bidirectional")):
        for j, side in enumerate(("right", "left")):
            ax = axes[i, j]
            ax.imshow(mask_matrix(config, _padded_mask(length, n_pad, side), mode)[0], cmap="Blues", vmin=0, vmax=1.4)
            ax.set_xticks(range(length))
            ax.set_yticks(range(length))
            ax.set_title(f"{mode}, {side} padding", fontsize=10)
            ax.set_xlabel("key position (attended to)")
            ax.set_ylabel("query position")
    fig.suptitle(f"attention masks from transformers' mask functions ({n_pad} pads; blue = may attend)")
    fig.tight_layout()
    return fig


def plot_probe_influence(deltas: Mapping[str, Sequence[float]], position: int, tokens: Sequence[str]) -> Figure:
    """‖Δh_t‖ at every position when the token at `position` is replaced, one bar group per attention mode."""
    fig, ax = plt.subplots(figsize=(8, 3.2))
    x = np.arange(len(tokens))
    width = 0.8 / len(deltas)
    for i, (mode, d) in enumerate(deltas.items()):
        ax.bar(x + (i - (len(deltas) - 1) / 2) * width, d, width, label=mode)
    ax.axvline(position, color="k", ls=":", lw=1)
    ax.set_xticks(x, tokens, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("‖Δ hidden state‖")
    ax.set_title(f"which positions change when token {position} is replaced")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def pooling_weights(mask: torch.Tensor, k: int = 2) -> dict[str, torch.Tensor]:
    """How much each position contributes to the pooled vector, per parameter-free strategy (pooling the
    identity matrix as hidden states reads the weights off directly)."""
    eye = torch.eye(mask.shape[1]).expand(mask.shape[0], -1, -1)
    return {"first_k1": first_k(eye, mask, 1), f"first_k{k}": first_k(eye, mask, k), "last_k1": last_k(eye, mask, 1),
            "mean": mean(eye, mask), "weighted_mean": weighted_mean(eye, mask),
            "first_naive": eye[:, 0], "last_naive": eye[:, -1]}


def plot_pooling_weights(length: int = 8, n_pad: int = 3) -> Figure:
    """Which positions each pooling reads, on one padded row under right and left padding."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, side in zip(axes, ("right", "left")):
        mask = _padded_mask(length, n_pad, side)
        weights = pooling_weights(mask)
        ax.imshow(torch.stack([w[0] for w in weights.values()]), cmap="Oranges", vmin=0, vmax=1)
        ax.set_yticks(range(len(weights)), list(weights))
        ax.set_xticks(range(length), ["pad" if m == 0 else f"t{r}" for m, r in zip(mask[0], mask[0].cumsum(0) - 1)],
                      fontsize=8)
        ax.set_title(f"{side} padding")
    fig.suptitle("pooling weight per position (darker = more); only the naive variants depend on the padding side")
    fig.tight_layout()
    return fig


def _stats(per_seed: Mapping[str, Sequence[float]], names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    values = [np.asarray(per_seed[n], dtype=float) for n in names]
    means = np.array([v.mean() for v in values])
    spread = np.array([[m - v.min() for m, v in zip(means, values)], [v.max() - m for m, v in zip(means, values)]])
    return means, spread


def plot_pooling_by_mask(per_seed: Mapping[str, Sequence[float]], poolings: Sequence[str], *, metric: str = "accuracy",
                         chance: float | None = None, title: str = "") -> Figure:
    """Seed mean (bar) and min–max over seeds (whisker) per pooling strategy, causal beside bidirectional.
    `per_seed` maps variant names `"<mask>|<pooling>"` to one value per seed."""
    fig, ax = plt.subplots(figsize=(1.4 * len(poolings) + 3, 3.6))
    x = np.arange(len(poolings))
    for i, mode in enumerate(("causal", "bidirectional")):
        means, spread = _stats(per_seed, [f"{mode}|{p}" for p in poolings])
        ax.bar(x + (i - 0.5) * 0.38, means, 0.38, yerr=spread, capsize=3, label=mode)
    if chance is not None:
        ax.axhline(chance, color="k", ls=":", lw=1, label="majority class")
    ax.set_xticks(x, poolings)
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_variants(per_seed: Mapping[str, Sequence[float]], labels: Mapping[str, str], *, metric: str = "accuracy",
                  title: str = "") -> Figure:
    """Horizontal bars (seed mean, whisker min–max) for the variants named in `labels` (variant → label)."""
    names = list(labels)
    means, spread = _stats(per_seed, names)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.4))
    ax.barh(range(len(names)), means, xerr=spread, capsize=3, color="tab:blue")
    for i, m in enumerate(means):  # the value just right of the whisker
        ax.annotate(f"{m:.3f}", (m + spread[1, i], i), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.set_yticks(range(len(names)), [labels[n] for n in names])
    ax.invert_yaxis()
    ax.set_xlabel(metric)
    ax.set_xlim(0, min(1.0, (means + spread[1]).max() * 1.25 + 0.02))
    ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_probe_attention(tokens: Sequence[str], weights: Sequence[float], *, per_line: int = 16, title: str = "") -> Figure:
    """Tokens coloured by the attention-pooling weight they receive, the colour stretched from the smallest
    (white) to the largest weight (dark); the title gives both and the uniform weight 1/n for comparison."""
    weights = np.asarray(weights, dtype=float)
    lo, hi = weights.min(), weights.max()
    lines = (len(tokens) + per_line - 1) // per_line
    fig, ax = plt.subplots(figsize=(11, 0.45 * lines + 0.8))
    cmap = plt.get_cmap("Reds")
    for i, (tok, w) in enumerate(zip(tokens, (weights - lo) / max(hi - lo, 1e-12))):
        ax.text(i % per_line, -(i // per_line), tok, ha="center", va="center", fontsize=8,
                color="white" if w > 0.6 else "black", bbox=dict(boxstyle="round,pad=0.2", fc=cmap(w), ec="none"))
    ax.set_xlim(-0.7, per_line - 0.3)
    ax.set_ylim(-lines + 0.5, 0.5)
    ax.axis("off")
    ax.set_title(title or f"attention-pooling weights: {lo:.3f} (white) to {hi:.3f} (dark); uniform = {1 / len(weights):.3f}")
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class Comparison:
    topics: tuple[str, str]  # the classifier's top class for each text
    probabilities: tuple[dict[str, float], dict[str, float]]
    similarity: float  # cosine of the bi-encoder embeddings


@torch.no_grad()
def compare(text_a: str, text_b: str, classifier: GemmaEncoderModel, embedder: GemmaEncoderModel,
            tokenizer: PreTrainedTokenizerBase, class_names: list[str], max_len: int) -> Comparison:
    if not text_a.strip() or not text_b.strip():
        raise ValueError("type some text in both boxes")
    ids = tokenizer([text_a, text_b], truncation=True, max_length=max_len)["input_ids"]
    batch = EncoderCollator(tokenizer.pad_token_id)([{"input_ids": x} for x in ids])
    classifier.eval(), embedder.eval()

    def run(model: GemmaEncoderModel) -> torch.Tensor:  # the batch on the model's device, the output on the CPU
        return model(**{k: v.to(model.device) for k, v in batch.items()}).logits.float().cpu()

    probs = run(classifier).softmax(-1)
    emb = run(embedder)
    tables = tuple({name: float(p) for name, p in zip(class_names, row)} for row in probs)
    return Comparison(tuple(class_names[int(i)] for i in probs.argmax(-1)), tables, float(emb[0] @ emb[1]))


def comparison_html(c: Comparison) -> str:
    rows = "".join(
        f"<tr><td>{label}</td><td><b>{html.escape(topic)}</b></td><td>"
        + ", ".join(f"{html.escape(k)} {v:.2f}" for k, v in sorted(p.items(), key=lambda kv: -kv[1])[:3])
        + "</td></tr>"
        for label, topic, p in zip(("A", "B"), c.topics, c.probabilities)
    )
    return (f"<table><tr><th>text</th><th>topic</th><th>top probabilities</th></tr>{rows}</table>"
            f"similarity (cosine of the bi-encoder embeddings): <b>{c.similarity:.3f}</b>")


class PairExplorer(widgets.VBox):
    """Two text areas and a button; pressing it shows `respond(a, b)` (an HTML fragment). `ask(a, b)` types and
    presses in one call and returns the HTML shown; bad input is shown, not raised."""

    def __init__(self, respond: Callable[[str, str], str], *, value_a: str = "", value_b: str = ""):
        self.respond = respond
        layout = widgets.Layout(width="420px", height="70px")
        self.text_a = widgets.Textarea(value=value_a, description="text A", layout=layout)
        self.text_b = widgets.Textarea(value=value_b, description="text B", layout=layout)
        self.button = widgets.Button(description="Compare", button_style="primary")
        self.result = widgets.HTML()
        self.button.on_click(lambda _: self._update())
        super().__init__([self.text_a, self.text_b, self.button, self.result])

    def _update(self) -> None:
        try:
            self.result.value = self.respond(self.text_a.value, self.text_b.value)
        except ValueError as e:
            self.result.value = f"<span style='color:#b00'>{html.escape(str(e))}</span>"

    def ask(self, text_a: str, text_b: str) -> str:
        self.text_a.value, self.text_b.value = text_a, text_b
        self.button.click()
        return self.result.value
