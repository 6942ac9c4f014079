"""The explorer: type two texts, see the fine-tuned classifier's topic for each and the bi-encoder's similarity
score between them. `compare` is the tested function; `PairExplorer` is a thin ipywidgets view over it."""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Callable

import ipywidgets as widgets
import torch
from transformers import PreTrainedTokenizerBase

from .data import EncoderCollator
from .modeling import GemmaEncoderModel


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
